//! A private containerd for `ctr run --cni`, confined to a node namespace.
//!
//! - The daemon runs in the node's network namespace and in a private mount
//!   namespace with a tmpfs on /run, so its shim sockets and rootfs mounts
//!   never appear on the host; root, state and socket live in a temp dir.
//!   The CRI plugin is disabled (not needed by ctr; it would want
//!   `restrict_oom_score_adj` on this VM).
//! - `ctr` reads its CNI config only from /etc/cni/net.d and plugins only
//!   from /opt/cni/bin. Each `ctr` call therefore runs in its own private
//!   mount namespace where the test's dirs are mounted over those paths; the
//!   host's /etc/cni/net.d is never written.
//! - Containers run in the foreground (`ctr run --rm`), one child process
//!   each, because only then does ctr send CNI DEL when they exit
//!   (`ctr run -d` never does).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use testkit::cmd::{self, CmdError};
use testkit::netns::Netns;

#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error(transparent)]
    Temp(#[from] testkit::temp::TempError),
    #[error(transparent)]
    Oci(#[from] crate::oci::OciError),
    #[error("ctr/containerd: {0}")]
    Cmd(#[from] CmdError),
    #[error("containerd state file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not start containerd: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("containerd did not answer within {0:?}; its log: {1}")]
    NotReady(Duration, String),
    #[error("/etc/cni/net.d does not exist: ctr only reads CNI config there, and the test mounts its own dir over it (install podman or create the directory)")]
    NoCniConfDir,
    #[error("{what} did not happen within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
}

pub const IMAGE: &str = "localhost/fct-busybox:latest";
const HOST_CNI_CONF_DIR: &str = "/etc/cni/net.d";

pub struct Containerd<'a> {
    node: &'a Netns,
    dir: tempfile::TempDir,
    namespace: String,
    daemon: Child,
    runs: Mutex<Vec<(String, Child)>>,
}

/// containerd's config: everything under `dir`, CRI off.
pub fn config_toml(dir: &Path) -> String {
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{d}/containerd.sock"
"#,
        d = dir.display()
    )
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ContainerdError + '_ {
    move |source| ContainerdError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl<'a> Containerd<'a> {
    /// Starts containerd in `node`, with `plugins` (name, binary) as the only
    /// contents of the CNI plugin dir ctr will see.
    pub fn start(node: &'a Netns, plugins: &[(String, PathBuf)]) -> Result<Self, ContainerdError> {
        if !Path::new(HOST_CNI_CONF_DIR).is_dir() {
            return Err(ContainerdError::NoCniConfDir);
        }
        let dir = testkit::temp::temp_dir("containerd")?;
        let d = dir.path();
        for sub in ["root", "state", "net.d", "bin", "fifo", "runc"] {
            let p = d.join(sub);
            std::fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        for (name, target) in plugins {
            let link = d.join("bin").join(name);
            std::os::unix::fs::symlink(target, &link).map_err(io_err(&link))?;
        }
        let conf = d.join("config.toml");
        std::fs::write(&conf, config_toml(d)).map_err(io_err(&conf))?;
        let log_path = d.join("containerd.log");
        let log = std::fs::File::create(&log_path).map_err(io_err(&log_path))?;
        let log2 = log.try_clone().map_err(io_err(&log_path))?;
        let daemon = node
            .enter("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t tmpfs -o mode=0755 fct-containerd-run /run && exec containerd --config "$1""#)
            .arg("sh")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(ContainerdError::Spawn)?;
        let c = Containerd {
            node,
            dir,
            namespace: testkit::names::unique("ctr"),
            daemon,
            runs: Mutex::new(Vec::new()),
        };
        c.wait_ready(Duration::from_secs(20))?;
        Ok(c)
    }

    fn wait_ready(&self, timeout: Duration) -> Result<(), ContainerdError> {
        if testkit::wait::until(timeout, || cmd::run(self.ctr().arg("version")).is_ok()) {
            return Ok(());
        }
        let log =
            std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        Err(ContainerdError::NotReady(timeout, log))
    }

    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CNI namespace prefix ctr puts in CNI_CONTAINERID (`<ns>-<id>`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `ctr` talking to this daemon, in the node namespace, with the test's
    /// CNI config and plugin dirs mounted where ctr looks, and a private /run.
    pub fn ctr(&self) -> Command {
        let d = self.dir.path();
        let mut c = self.node.enter("unshare");
        c.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(concat!(
                r#"mount -t tmpfs -o mode=0755 fct-ctr-run /run && "#,
                r#"mount --bind "$1" /etc/cni/net.d && "#,
                r#"mount -t tmpfs -o mode=0755 fct-ctr-opt /opt && mkdir -p /opt/cni && "#,
                r#"ln -s "$2" /opt/cni/bin && shift 2 && exec ctr -a "$@""#
            ))
            .arg("sh")
            .arg(d.join("net.d"))
            .arg(d.join("bin"))
            .arg(d.join("containerd.sock"))
            .args(["-n", &self.namespace]);
        c
    }

    /// Installs the conflist ctr will use (it takes the first one only).
    pub fn set_conflist(&self, conflist: &serde_json::Value) -> Result<(), ContainerdError> {
        let path = self.dir.path().join("net.d").join("10-fct.conflist");
        std::fs::write(&path, conflist.to_string()).map_err(io_err(&path))
    }

    /// Builds the busybox OCI archive and imports it as [`IMAGE`].
    pub fn import_busybox(&self) -> Result<(), ContainerdError> {
        let work = self.dir.path().join("image");
        std::fs::create_dir_all(&work).map_err(io_err(&work))?;
        let archive = crate::oci::busybox_archive(&work, IMAGE)?;
        cmd::run(
            self.ctr()
                .args(["images", "import", "--snapshotter", "native"])
                .arg(&archive),
        )?;
        Ok(())
    }

    /// `ctr run --rm --cni` in the foreground, as a child process.
    pub fn run(&self, id: &str, argv: &[&str]) -> Result<(), ContainerdError> {
        let d = self.dir.path();
        let child = self
            .ctr()
            .args([
                "run",
                "--rm",
                "--cni",
                "--null-io",
                "--snapshotter",
                "native",
            ])
            .arg("--fifo-dir")
            .arg(d.join("fifo"))
            .arg("--runc-root")
            .arg(d.join("runc"))
            .arg(IMAGE)
            .arg(id)
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(ContainerdError::Spawn)?;
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id.to_string(), child));
        Ok(())
    }

    /// `ctr task exec` in container `id`; fails on a non-zero exit.
    pub fn exec(&self, id: &str, argv: &[&str]) -> Result<String, ContainerdError> {
        let exec_id = testkit::names::unique("exec");
        Ok(cmd::run(
            self.ctr()
                .args(["task", "exec", "--exec-id", &exec_id])
                .arg("--fifo-dir")
                .arg(self.dir.path().join("fifo"))
                .arg(id)
                .args(argv),
        )?)
    }

    /// Kills container `id` and waits for its `ctr run` to exit, which is
    /// when ctr sends CNI DEL (with an empty CNI_NETNS).
    pub fn stop(&self, id: &str, timeout: Duration) -> Result<(), ContainerdError> {
        // A task that already exited cannot be killed; its `ctr run` still
        // has to be waited for, so the error only counts if it never exits.
        let killed = cmd::run(self.ctr().args(["task", "kill", "-s", "KILL", id]));
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pos) = runs.iter().position(|(r, _)| r == id) else {
            return killed.map(|_| ()).map_err(ContainerdError::from);
        };
        let (_, mut child) = runs.remove(pos);
        if testkit::wait::until(timeout, || matches!(child.try_wait(), Ok(Some(_)))) {
            return Ok(());
        }
        let _ = child.kill();
        let _ = child.wait();
        killed?;
        Err(ContainerdError::Timeout {
            what: format!("`ctr run` of {id} exiting after its task was killed"),
            timeout,
        })
    }
}

impl Drop for Containerd<'_> {
    fn drop(&mut self) {
        let ids: Vec<String> = self
            .runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if let Err(e) = self.stop(&id, Duration::from_secs(10)) {
                eprintln!("warning: stopping container {id}: {e}");
            }
        }
        // SIGTERM lets containerd close cleanly.
        // SAFETY: kill has no memory preconditions.
        unsafe {
            libc::kill(self.daemon.id() as i32, libc::SIGTERM);
        }
        let exited = testkit::wait::until(Duration::from_secs(5), || {
            matches!(self.daemon.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = self.daemon.kill();
            let _ = self.daemon.wait();
        }
        // Shims outlive the daemon by design; they name the socket in our
        // temp dir, which is removed right after this.
        testkit::procs::wait_or_kill_mentioning(
            &self.dir.path().display().to_string(),
            Duration::from_secs(2),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_everything_in_the_dir_and_disables_cri() {
        let c = config_toml(Path::new("/x"));
        assert!(c.contains(r#"root = "/x/root""#));
        assert!(c.contains(r#"state = "/x/state""#));
        assert!(c.contains(r#"address = "/x/containerd.sock""#));
        assert!(c.contains(r#"disabled_plugins = ["io.containerd.grpc.v1.cri"]"#));
    }
}
