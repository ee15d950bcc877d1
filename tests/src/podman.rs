//! Podman with its CNI backend, fully private: its own containers.conf
//! (through CONTAINERS_CONF), storage root, run root, CNI config dir and
//! plugin dirs in a temp dir, run inside a node network namespace so the
//! bridge our plugin makes lands there and not on the host.
//!
//! Containers run from an exploded busybox rootfs (`--rootfs`) rather than an
//! imported image: podman 4.3's `import`/`load` writes a blob cache to
//! /var/lib/containers/cache whatever `--root` says, and the host's podman
//! state must stay untouched.

use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::cmd::{self, CmdError};
use testkit::netns::Netns;

#[derive(Debug, thiserror::Error)]
pub enum PodmanError {
    #[error(transparent)]
    Temp(#[from] testkit::temp::TempError),
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
    #[error("podman: {0}")]
    Cmd(#[from] CmdError),
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub struct Podman<'a> {
    node: &'a Netns,
    dir: tempfile::TempDir,
    conf: PathBuf,
}

/// containers.conf for a private, CNI-backed podman. `default_ulimits` is set
/// (empty) because this VM lacks CAP_SYS_RESOURCE, which podman's default
/// nofile/nproc limits would need.
pub fn containers_conf(state: &Path, net_dir: &Path, plugin_dirs: &[&Path]) -> String {
    let dirs: Vec<String> = plugin_dirs
        .iter()
        .map(|d| format!("{:?}", d.display().to_string()))
        .collect();
    format!(
        r#"[containers]
default_ulimits = []

[network]
network_backend = "cni"
cni_plugin_dirs = [{dirs}]
network_config_dir = "{net}"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{state}/events.log"
tmp_dir = "{state}/tmp"
volume_path = "{state}/volumes"
runtime = "runc"
"#,
        dirs = dirs.join(", "),
        net = net_dir.display(),
        state = state.display(),
    )
}

impl<'a> Podman<'a> {
    /// A podman confined to `node`, looking for CNI plugins in `plugin_dirs`.
    pub fn new(node: &'a Netns, plugin_dirs: &[&Path]) -> Result<Self, PodmanError> {
        let dir = testkit::temp::temp_dir("podman")?;
        let root = dir.path();
        for d in ["net.d", "root", "runroot", "tmp", "volumes", "rootfs"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(|source| PodmanError::Io { path: p, source })?;
        }
        let conf = root.join("containers.conf");
        let text = containers_conf(root, &root.join("net.d"), plugin_dirs);
        std::fs::write(&conf, text).map_err(|source| PodmanError::Io {
            path: conf.clone(),
            source,
        })?;
        Ok(Podman { node, dir, conf })
    }

    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Installs a conflist; podman reads the directory on every command.
    pub fn add_conflist(
        &self,
        network: &str,
        conflist: &serde_json::Value,
    ) -> Result<(), PodmanError> {
        let path = self
            .dir
            .path()
            .join("net.d")
            .join(format!("{network}.conflist"));
        std::fs::write(&path, conflist.to_string())
            .map_err(|source| PodmanError::Io { path, source })
    }

    /// `podman` with the private configuration, inside the node namespace.
    pub fn command(&self) -> Command {
        let mut c = self.node.enter("podman");
        let root = self.dir.path();
        c.env("CONTAINERS_CONF", &self.conf)
            .arg("--root")
            .arg(root.join("root"))
            .arg("--runroot")
            .arg(root.join("runroot"))
            .args(["--storage-driver", "vfs"]);
        c
    }

    pub fn run(&self, args: &[&str]) -> Result<String, PodmanError> {
        Ok(cmd::run(self.command().args(args))?)
    }

    /// Starts container `name` on `network` from a fresh busybox rootfs,
    /// running `argv`. Returns the container ID (CNI_CONTAINERID).
    pub fn run_detached(
        &self,
        name: &str,
        network: &str,
        extra: &[&str],
        argv: &[&str],
    ) -> Result<String, PodmanError> {
        let rootfs = self.dir.path().join("rootfs").join(name);
        crate::rootfs::busybox_rootfs(&rootfs)?;
        let mut c = self.command();
        c.args(["run", "-d", "--name", name, "--network", network])
            .args(extra)
            .arg("--rootfs")
            .arg(&rootfs)
            .args(argv);
        Ok(cmd::run(&mut c)?.trim().to_string())
    }

    /// The IPv4 address podman recorded for `name` on `network`.
    pub fn ip_of(&self, name: &str, network: &str) -> Result<String, PodmanError> {
        let fmt = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        Ok(self
            .run(&["inspect", "--format", &fmt, name])?
            .trim()
            .to_string())
    }

    pub fn exec(&self, name: &str, argv: &[&str]) -> Result<String, PodmanError> {
        let mut args = vec!["exec", name];
        args.extend_from_slice(argv);
        self.run(&args)
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        // Runs CNI DEL for whatever is left and stops the containers, so
        // their namespaces under /run/netns go too.
        if let Err(e) = cmd::run(
            self.command()
                .args(["rm", "--all", "--force", "--time", "0"]),
        ) {
            eprintln!(
                "warning: podman cleanup in {} failed: {e}",
                self.dir.path().display()
            );
        }
        // conmon runs `podman container cleanup` on its own after a
        // container exits; it would recreate files in the state dir while
        // the temp dir is being removed. Let those finish, then kill stragglers.
        testkit::procs::wait_or_kill_mentioning(
            &self.dir.path().display().to_string(),
            std::time::Duration::from_secs(5),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_lists_plugin_dirs_and_cni_backend() {
        let c = containers_conf(
            Path::new("/s"),
            Path::new("/s/net.d"),
            &[Path::new("/a"), Path::new("/usr/lib/cni")],
        );
        assert!(
            c.contains(r#"cni_plugin_dirs = ["/a", "/usr/lib/cni"]"#),
            "{c}"
        );
        assert!(c.contains(r#"network_backend = "cni""#));
        assert!(c.contains(r#"network_config_dir = "/s/net.d""#));
        assert!(c.contains("default_ulimits = []"));
    }
}
