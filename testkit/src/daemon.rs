//! A long-running process under test (a daemon, etcd, a ping): output to a
//! log file the test can show when an assertion fails, SIGTERM with a
//! deadline, and SIGKILL on drop so a failing test leaves nothing running.
//!
//! The program comes in as a ready [`Command`] (e.g. from
//! [`crate::netns::Netns::exec`] with the binary path the test crate knows,
//! `env!("CARGO_BIN_EXE_flanneld-rs")`), so this crate depends on no
//! binary of the workspace.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::describe;

/// How long [`Daemon::terminate`] waits after SIGTERM before SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("creating log file {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not start `{cmd}`: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
}

/// A running process; SIGKILLed and reaped on drop if still running.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `cmd` with stdin closed and stdout and stderr appended to
    /// `log` (appended, so a restart keeps the earlier run's lines).
    ///
    /// When `cmd` is `ip netns exec`, the pid is the program's own: `ip`
    /// execs it, so signals reach the program.
    pub fn spawn(cmd: &mut Command, log: impl Into<PathBuf>) -> Result<Daemon, DaemonError> {
        let log = log.into();
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|source| DaemonError::Log {
                    path: log.clone(),
                    source,
                })
        };
        let (out, err) = (open()?, open()?);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| DaemonError::Spawn {
                cmd: describe(cmd),
                source,
            })?;
        Ok(Daemon {
            child: Some(child),
            log,
        })
    }

    /// [`Daemon::spawn`] for test bodies: panics with the error.
    pub fn start(cmd: &mut Command, log: impl Into<PathBuf>) -> Daemon {
        Self::spawn(cmd, log).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Everything the process wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The pid while it runs (not yet terminated or waited for).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process has not exited yet (and was not terminated or
    /// waited for).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// SIGTERM, then the exit status; panics with the log (after SIGKILL)
    /// if the process ignores it for [`TERM_GRACE`].
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .expect("terminate: the process is not running");
        let pid = i32::try_from(child.id()).expect("pid fits i32");
        // SAFETY: kill has no memory preconditions; the child is not yet
        // reaped, so the pid is still ours.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + TERM_GRACE;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                outcome => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "{} did not exit within {TERM_GRACE:?} of SIGTERM ({outcome:?}); log:\n{}",
                        self.log.display(),
                        self.log()
                    );
                }
            }
        }
    }

    /// Polls `GET /readyz` on 127.0.0.1:`port` inside `ns` until it answers
    /// 200; panics with this process's log after `within`.
    pub fn wait_ready(&self, ns: impl AsRef<Path>, port: u16, within: Duration) {
        let ns = ns.as_ref();
        crate::wait::wait_for(
            &format!("/readyz 200 on port {port} in {}", ns.display()),
            within,
            || {
                crate::http::status(ns, port, "/readyz")
                    .ok()
                    .filter(|c| *c == 200)
            },
            &|| self.log(),
        );
    }

    /// Waits for the process to exit by itself.
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let mut child = self.child.take().expect("wait: the process is not running");
        child.wait()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn output_goes_to_the_log_and_sigterm_ends_it() {
        let dir = crate::temp::temp_dir("daemon").unwrap();
        let log = dir.path().join("d.log");
        let mut d = Daemon::start(
            &mut sh("echo started; echo oops >&2; trap 'echo bye; exit 0' TERM; while :; do sleep 0.05; done"),
            &log,
        );
        crate::wait::wait_for(
            "the trap to be set",
            Duration::from_secs(5),
            || d.log().contains("oops").then_some(()),
            &|| d.log(),
        );
        assert!(d.rss_kib().is_some());
        assert!(d.is_running());
        let status = d.terminate();
        assert_eq!(status.code(), Some(0), "{}", d.log());
        assert_eq!(d.log(), "started\noops\nbye\n");
        assert!(d.pid().is_none());
    }

    #[test]
    fn drop_kills_a_running_process() {
        let dir = crate::temp::temp_dir("daemon").unwrap();
        let d = Daemon::start(Command::new("sleep").arg("30"), dir.path().join("s.log"));
        let pid = d.pid().unwrap();
        drop(d);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "sleep {pid} still running after drop"
        );
    }

    #[test]
    fn a_missing_program_is_named() {
        let dir = crate::temp::temp_dir("daemon").unwrap();
        let err = Daemon::spawn(
            &mut Command::new("/nonexistent/fct-daemon"),
            dir.path().join("unused.log"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/fct-daemon"), "{err}");
    }
}
