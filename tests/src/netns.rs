//! An RAII guard for a network namespace made by a test: created with
//! `ip netns add fct-...`, and on drop its processes are killed and it is
//! deleted, also when the test panics.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd::{self, CmdError};

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
    #[error("network namespace {name}: {source}")]
    Cmd {
        name: String,
        #[source]
        source: CmdError,
    },
}

#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `fct-<what>-<pid>-<n>` with its loopback up.
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
        let ns = Netns { name };
        ns.run("ip", &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file, what CNI_NETNS expects.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip netns exec <ns> <program>`: also gets a private mount namespace
    /// with this namespace's /sys, right for tools that read /sys/class/net.
    pub fn exec(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// `nsenter --net=<path> <program>`: only the network namespace changes.
    /// Use this for container runtimes: they bind-mount the namespaces they
    /// create under /run/netns, and a later call must still see those mounts,
    /// which a private mount namespace (`ip netns exec`) would hide.
    pub fn enter(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display()))
            .arg(program);
        c
    }

    /// `program` started directly inside the namespace (setns between fork
    /// and exec): no wrapper process, so timings measure only the program.
    /// Like [`Netns::enter`], the mount namespace (and /sys) stays the host's.
    pub fn spawn_in(&self, program: &Path) -> Result<Command, NetnsError> {
        let path = self.path();
        let file =
            std::fs::File::open(&path).map_err(|source| NetnsError::Open { path, source })?;
        let mut c = Command::new(program);
        // SAFETY: the closure only calls setns, which is async-signal-safe;
        // it owns the file, so the fd is open until the child execs (it is
        // O_CLOEXEC, so the child does not inherit it).
        unsafe {
            c.pre_exec(move || {
                if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(c)
    }

    /// Runs `program args` inside the namespace, failing on a non-zero exit.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, NetnsError> {
        cmd::run(self.exec(program).args(args)).map_err(|source| NetnsError::Cmd {
            name: self.name.clone(),
            source,
        })
    }

    /// Pids of processes whose network namespace is this one.
    pub fn pids(&self) -> Vec<i32> {
        cmd::run(Command::new("ip").args(["netns", "pids", &self.name]))
            .map(|out| parse_pids(&out))
            .unwrap_or_default()
    }
}

fn parse_pids(out: &str) -> Vec<i32> {
    out.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

impl Drop for Netns {
    fn drop(&mut self) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_parse_ignores_junk() {
        assert_eq!(parse_pids("12\n34\n\nx\n"), vec![12, 34]);
        assert!(parse_pids("").is_empty());
    }
}
