//! Finding and stopping stray processes by their command line: runtime
//! helpers (conmon, `podman container cleanup`, containerd shims) that
//! outlive the command that started them and still name the test's state dir.

use std::time::{Duration, Instant};

/// Pids (other than ours) whose command line contains `needle`.
pub fn pids_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Waits up to `grace` for every process mentioning `needle` to exit, then
/// SIGKILLs the rest.
pub fn wait_or_kill_mentioning(needle: &str, grace: Duration) {
    let start = Instant::now();
    loop {
        let pids = pids_mentioning(needle);
        if pids.is_empty() {
            return;
        }
        if start.elapsed() > grace {
            for pid in pids {
                // SAFETY: kill has no memory preconditions; a pid that is
                // already gone gives ESRCH.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_kills_processes_by_command_line() {
        let mut child = std::process::Command::new("sleep")
            .arg("30.0123456")
            .spawn()
            .unwrap();
        // Until the child has exec'd, its cmdline is still ours: poll.
        let mut found = Vec::new();
        for _ in 0..100 {
            found = pids_mentioning("30.0123456");
            if !found.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(found, vec![child.id() as i32]);
        wait_or_kill_mentioning("30.0123456", Duration::from_millis(100));
        let status = child.wait().unwrap();
        assert!(!status.success(), "sleep should have been killed");
    }
}
