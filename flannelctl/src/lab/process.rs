//! Long-running lab processes (daemons, etcd): started detached inside a
//! namespace with output to a log file, identified by pid plus start time so
//! a recycled pid is never killed, stopped with SIGTERM then SIGKILL.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot create log file {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start `{cmd}`: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("process {pid} did not exit within {secs} s of SIGKILL")]
    Unkillable { pid: i32, secs: u64 },
}

/// A process the lab started, as recorded in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcInfo {
    pub pid: i32,
    /// Field 22 of /proc/<pid>/stat (clock ticks since boot).
    pub start_time: u64,
    /// The namespace it runs in and the command, to start it again.
    pub netns: String,
    pub argv: Vec<String>,
    pub log: PathBuf,
    /// Set for processes of a Kubernetes lab node (containerd, kubelet,
    /// kube-proxy): the node's persistent mount namespace, entered together
    /// with the network namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_ns: Option<PathBuf>,
}

/// Process state letter and start time from the text of /proc/<pid>/stat.
/// The command name is in parentheses and may itself contain spaces and
/// parentheses, so fields are counted from the last ')'.
pub fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); starttime is field 22.
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

fn read_stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

impl ProcInfo {
    /// True while the recorded process still runs (not a zombie, not a
    /// different process that got the same pid).
    pub fn alive(&self) -> bool {
        matches!(read_stat(self.pid), Some((s, t)) if s != 'Z' && t == self.start_time)
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. A process already gone is
    /// success.
    pub fn stop(&self, grace: Duration) -> Result<(), ProcessError> {
        if !self.alive() {
            return Ok(());
        }
        signal(self.pid, libc::SIGTERM);
        if wait_gone(self, grace) {
            return Ok(());
        }
        signal(self.pid, libc::SIGKILL);
        if wait_gone(self, Duration::from_secs(5)) {
            Ok(())
        } else {
            Err(ProcessError::Unkillable {
                pid: self.pid,
                secs: 5,
            })
        }
    }

    /// SIGKILL without grace (a crash, for tests of recovery).
    pub fn kill(&self) {
        if self.alive() {
            signal(self.pid, libc::SIGKILL);
            wait_gone(self, Duration::from_secs(5));
        }
    }
}

fn wait_gone(p: &ProcInfo, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !p.alive() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !p.alive()
}

pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory preconditions; ESRCH for a process that
    // is already gone is harmless here.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Starts `argv` inside namespace `netns`, in its own session (so it
/// outlives `flannelctl` and a Ctrl-C in the terminal does not reach it),
/// stdout and stderr appended to `log`.
pub fn spawn_detached(netns: &str, argv: &[String], log: &Path) -> Result<ProcInfo, ProcessError> {
    spawn(netns, None, argv, log)
}

/// Like [`spawn_detached`], also inside the persistent mount namespace
/// `mount_ns`. Entered with nsenter rather than `ip netns exec`, which
/// remounts /sys and so hides the cgroup hierarchies kubelet and runc need.
pub fn spawn_in_node(
    netns: &str,
    mount_ns: &Path,
    argv: &[String],
    log: &Path,
) -> Result<ProcInfo, ProcessError> {
    spawn(netns, Some(mount_ns), argv, log)
}

/// A node's UTS namespace (its own hostname) is pinned next to its mount
/// namespace: `<mount_ns>.uts`.
pub fn uts_file(mount_ns: &Path) -> PathBuf {
    mount_ns.with_extension("uts")
}

fn spawn(
    netns: &str,
    mount_ns: Option<&Path>,
    argv: &[String],
    log: &Path,
) -> Result<ProcInfo, ProcessError> {
    let file = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|source| ProcessError::Log {
            path: log.to_path_buf(),
            source,
        })?;
    let file2 = file.try_clone().map_err(|source| ProcessError::Log {
        path: log.to_path_buf(),
        source,
    })?;
    let mut cmd = match mount_ns {
        None => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", netns]);
            c
        }
        Some(mnt) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{netns}"))
                .arg(format!("--mount={}", mnt.display()));
            let uts = uts_file(mnt);
            if uts.exists() {
                c.arg(format!("--uts={}", uts.display()));
            }
            c.arg("--");
            c
        }
    };
    cmd.args(argv)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file2);
    // SAFETY: setsid is async-signal-safe and touches no memory of the
    // parent; it runs in the child between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| ProcessError::Spawn {
        cmd: crate::lab::sh::describe(&cmd),
        source,
    })?;
    // `ip netns exec` and nsenter (without --pid) exec the program in
    // place: the pid is the program's.
    let pid = child.id() as i32;
    let start_time = read_stat(pid).map(|(_, t)| t).unwrap_or(0);
    Ok(ProcInfo {
        pid,
        start_time,
        netns: netns.to_string(),
        argv: argv.to_vec(),
        log: log.to_path_buf(),
        mount_ns: mount_ns.map(Path::to_path_buf),
    })
}

/// The last `n` lines of a log file, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "1234 (flanneld (rs)) S 1 1234 1234 0 -1 4194560 500 0 0 0 \
        17 9 0 0 20 0 4 0 987654 12345678 900 18446744073709551615";

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        assert_eq!(parse_stat(STAT), Some(('S', 987654)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn our_own_process_is_alive_and_a_wrong_start_time_is_not() {
        let pid = std::process::id() as i32;
        let (_, start) = read_stat(pid).unwrap();
        let me = ProcInfo {
            pid,
            start_time: start,
            netns: String::new(),
            argv: vec![],
            log: PathBuf::new(),
            mount_ns: None,
        };
        assert!(me.alive());
        let other = ProcInfo {
            start_time: start + 1,
            ..me
        };
        assert!(!other.alive());
    }
}
