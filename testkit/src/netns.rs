//! Network namespaces for tests: the [`Netns`] guard (created as
//! `ip netns add fct-...`, its processes killed and the namespace deleted on
//! drop, also when the test panics), [`in_netns`] to run code inside any
//! namespace without moving the test's own thread, and [`command_in`] to
//! start a program directly inside one. [`setns_fd`] is the one place the
//! test code calls `setns(2)`.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cmd::{self, CmdError};

/// Where `ip netns add` bind-mounts named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error(transparent)]
    NotRoot(#[from] crate::root::NotRoot),
    #[error("opening network namespace file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("entering network namespace {path}: {source}")]
    Enter {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("network namespace {name}: {source}")]
    Cmd {
        name: String,
        #[source]
        source: CmdError,
    },
}

/// The file of the named namespace `name` (what CNI_NETNS expects).
pub fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

fn open(path: &Path) -> Result<File, NetnsError> {
    File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// Moves the calling thread into the network namespace `fd` refers to.
///
/// Only this thread moves (and threads it starts later); it is
/// async-signal-safe, so it may run between fork and exec.
pub fn setns_fd(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    // SAFETY: setns only reads the descriptor, which the borrow keeps open.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Moves the calling thread into the namespace at `path` for good. Meant
/// for a thread that exists only to live there (e.g. a fake server's thread);
/// anything else wants [`in_netns`].
pub fn enter_on_this_thread(path: &Path) -> Result<(), NetnsError> {
    let file = open(path)?;
    setns_fd(file.as_fd()).map_err(|source| NetnsError::Enter {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs `f` on a fresh thread inside the namespace at `ns` (a [`Netns`] or
/// any namespace file) and returns its value. The caller's thread never
/// changes namespace, so an early return or a panic cannot leave it in the
/// wrong one; a panic in `f` is resumed on the caller's thread. Sockets
/// opened by `f` stay in that namespace after it returns.
pub fn in_netns<T: Send>(
    ns: impl AsRef<Path>,
    f: impl FnOnce() -> T + Send,
) -> Result<T, NetnsError> {
    let path = ns.as_ref();
    let file = open(path)?;
    std::thread::scope(|s| {
        let joined = s
            .spawn(|| {
                setns_fd(file.as_fd())?;
                Ok(f())
            })
            .join();
        match joined {
            Ok(r) => r.map_err(|source| NetnsError::Enter {
                path: path.to_path_buf(),
                source,
            }),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// `program` started directly inside the namespace at `ns` (setns between
/// fork and exec): no wrapper process, so the child's pid is the program's
/// and timings measure only the program. The mount namespace (and /sys)
/// stays the caller's.
pub fn command_in(
    ns: impl AsRef<Path>,
    program: impl AsRef<std::ffi::OsStr>,
) -> Result<Command, NetnsError> {
    let path = ns.as_ref();
    let file = open(path)?;
    let mut c = Command::new(program);
    // SAFETY: the closure only calls setns, which is async-signal-safe; it
    // owns the file, so the fd is open until the child execs (O_CLOEXEC, so
    // the program does not inherit it).
    unsafe {
        c.pre_exec(move || setns_fd(file.as_fd()));
    }
    Ok(c)
}

/// A network namespace made by a test, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
    deleted: bool,
}

impl Netns {
    /// Creates `fct-<what>-<pid>-<n>` with its loopback up; fails (naming
    /// the fix) when not root.
    pub fn create(what: &str) -> Result<Self, NetnsError> {
        crate::root::require_root("creating a network namespace")?;
        let name = crate::names::unique(what);
        cmd::run(Command::new("ip").args(["netns", "add", &name])).map_err(|source| {
            NetnsError::Cmd {
                name: name.clone(),
                source,
            }
        })?;
        // From here on the guard owns it: an error below still deletes it.
        let ns = Netns {
            path: path_of(&name),
            name,
            deleted: false,
        };
        ns.run("ip", &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// [`Netns::create`] for tests: panics with the error (e.g. not root).
    pub fn new(what: &str) -> Self {
        Self::create(what).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file, what CNI_NETNS expects.
    pub fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// [`Netns::path`] as text, for environment variables and JSON.
    pub fn path_str(&self) -> &str {
        // Made from NETNS_DIR and an ASCII name: always UTF-8.
        self.path.to_str().unwrap_or_default()
    }

    /// `ip netns exec <ns> <program>`: also gets a private mount namespace
    /// with this namespace's /sys, right for tools that read /sys/class/net.
    pub fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// `nsenter --net=<path> <program>`: only the network namespace changes.
    /// Use this for container runtimes: they bind-mount the namespaces they
    /// create under /run/netns, and a later call must still see those mounts,
    /// which a private mount namespace (`ip netns exec`) would hide.
    pub fn enter(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path.display())).arg(program);
        c
    }

    /// [`command_in`] this namespace.
    pub fn spawn_in(&self, program: &Path) -> Result<Command, NetnsError> {
        command_in(&self.path, program)
    }

    /// Runs `program args` inside the namespace, failing on a non-zero exit.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, NetnsError> {
        cmd::run(self.exec(program).args(args)).map_err(|source| NetnsError::Cmd {
            name: self.name.clone(),
            source,
        })
    }

    /// Runs `argv` inside the namespace where failing is an expected
    /// outcome: whether it exited 0, and its stdout then stderr.
    pub fn try_run(&self, argv: &[&str]) -> (bool, String) {
        let Some((program, args)) = argv.split_first() else {
            return (false, "empty command".into());
        };
        match cmd::output_with_stdin(self.exec(program).args(args), None) {
            Ok(out) => {
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                (out.status.success(), text)
            }
            Err(e) => (false, e.to_string()),
        }
    }

    /// Whether a link called `name` exists here.
    pub fn has_link(&self, name: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.name, "link", "show", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `ip -o link`: one line a link, for counting and error messages.
    pub fn links(&self) -> String {
        cmd::run(Command::new("ip").args(["-n", &self.name, "-o", "link"])).unwrap_or_default()
    }

    /// Pids of processes whose network namespace is this one.
    pub fn pids(&self) -> Vec<i32> {
        cmd::run(Command::new("ip").args(["netns", "pids", &self.name]))
            .map(|out| parse_pids(&out))
            .unwrap_or_default()
    }

    /// Kills the processes inside and deletes the namespace now (the guard
    /// then has nothing left to do). For tests of what happens once a
    /// namespace is gone.
    pub fn delete(&mut self) {
        if std::mem::replace(&mut self.deleted, true) {
            return;
        }
        for pid in self.pids() {
            // SAFETY: kill has no memory preconditions; a pid that is gone
            // already gives ESRCH, which is fine here.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        if let Err(e) = cmd::run(Command::new("ip").args(["netns", "del", &self.name])) {
            // Drop cannot fail; say what is left so it can be cleaned by hand.
            eprintln!(
                "warning: could not delete network namespace {}: {e} \
                 (scripts/clean-test-netns.sh removes leftovers)",
                self.name
            );
        }
    }
}

/// Two namespaces `fct-<what>-...` joined by a veth pair named `ifname` on
/// both sides, with the addresses `addrs` (CIDR, e.g. `198.51.100.1/24`)
/// and up: the smallest underlay two nodes can share.
pub fn linked_pair(
    what: &str,
    ifname: &str,
    addrs: [&str; 2],
) -> Result<(Netns, Netns), NetnsError> {
    let a = Netns::create(what)?;
    let b = Netns::create(what)?;
    a.run(
        "ip",
        &[
            "link",
            "add",
            ifname,
            "type",
            "veth",
            "peer",
            "name",
            ifname,
            "netns",
            b.name(),
        ],
    )?;
    for (ns, addr) in [(&a, addrs[0]), (&b, addrs[1])] {
        ns.run("ip", &["addr", "add", addr, "dev", ifname])?;
        ns.run("ip", &["link", "set", ifname, "up"])?;
    }
    Ok((a, b))
}

impl AsRef<Path> for Netns {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

fn parse_pids(out: &str) -> Vec<i32> {
    out.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_parse_ignores_junk() {
        assert_eq!(parse_pids("12\n34\n\nx\n"), vec![12, 34]);
        assert!(parse_pids("").is_empty());
    }

    #[test]
    fn missing_namespace_is_an_open_error_naming_the_path() {
        let err = in_netns("/run/netns/fct-no-such-namespace", || ()).unwrap_err();
        assert!(matches!(err, NetnsError::Open { .. }), "{err}");
        assert!(err.to_string().contains("fct-no-such-namespace"), "{err}");
    }
}
