//! Finishing a slow kernel request after the plugin has answered: a forked
//! child sends one prepared netlink datagram and exits. The child lets go of
//! the runtime's pipes before anything else, so the runtime reads EOF as
//! soon as the plugin itself exits, not when the kernel is done.

use std::os::fd::RawFd;

#[derive(Debug, thiserror::Error)]
pub enum BackgroundError {
    #[error("cannot read the thread count from /proc/self/stat: {0}")]
    Stat(std::io::Error),
    #[error("/proc/self/stat has no thread count: {0:?}")]
    StatFormat(String),
    #[error("the plugin runs {0} threads; forking is only safe with one")]
    Threads(usize),
    #[error("the netlink socket is descriptor {0}, one of stdin/stdout/stderr (the runtime started the plugin with them closed)")]
    StdFd(RawFd),
    #[error("fork: {0}")]
    Fork(std::io::Error),
}

/// Thread count (field 20) from the text of /proc/<pid>/stat. The command
/// name (field 2) may hold spaces and parentheses: count after the last ')'.
pub fn num_threads(stat: &str) -> Option<usize> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name: field 20 is the 18th.
    rest.split_ascii_whitespace().nth(17)?.parse().ok()
}

/// Milliseconds the detached child waits before its request (tests only).
pub const TEST_DELAY_ENV: &str = "FLANNEL_RS_TEST_DETACHED_DELAY_MS";

/// Sends `datagram` on netlink socket `fd` from a detached child and
/// returns the child's pid without waiting for it. The kernel carries out
/// an rtnetlink request inside the sender's `send`, so the child's `send`
/// is where the wait moves to. Refuses (and sends nothing) when forking is
/// not safe; the caller then does the request itself.
/// `delay_ms` makes the child wait before sending (for tests only, through
/// `TEST_DELAY_ENV`: they need the kernel's work to outlast the plugin).
pub fn send_detached(
    fd: RawFd,
    datagram: &[u8],
    delay_ms: u32,
) -> Result<libc::pid_t, BackgroundError> {
    if fd <= 2 {
        return Err(BackgroundError::StdFd(fd));
    }
    // fork copies only the calling thread: with others running, a lock one
    // of them held stays locked forever in the child.
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(BackgroundError::Stat)?;
    match num_threads(&stat) {
        Some(1) => {}
        Some(n) => return Err(BackgroundError::Threads(n)),
        None => return Err(BackgroundError::StatFormat(stat)),
    }
    // SAFETY: the process is single-threaded (checked above), so the child
    // may run anything; it still only makes raw system calls on memory
    // that is valid in both processes, and leaves with _exit so no Rust
    // destructor or stdio buffer runs twice.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(BackgroundError::Fork(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        unsafe { child(fd, datagram, delay_ms) }
    }
    Ok(pid)
}

/// The child's whole life.
///
/// # Safety
/// Only after fork, in the child.
unsafe fn child(fd: RawFd, datagram: &[u8], delay_ms: u32) -> ! {
    // First the runtime's pipes: it reads stdout and stderr until EOF.
    let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
    for std_fd in 0..=2 {
        if null >= 0 {
            libc::dup2(null, std_fd);
        } else {
            libc::close(std_fd);
        }
    }
    // Everything else but the socket: the IPAM lock file in particular
    // (flock belongs to the open file, an inherited copy would hold it).
    let fd = fd as libc::c_uint;
    if fd > 3 {
        libc::syscall(libc::SYS_close_range, 3u32, fd - 1, 0u32);
    }
    libc::syscall(libc::SYS_close_range, fd + 1, libc::c_uint::MAX, 0u32);
    // Its own session: a signal to the runtime's process group (a timeout
    // killing the plugin's group, a ^C) does not cut the deletion short.
    libc::setsid();
    if delay_ms > 0 {
        let t = libc::timespec {
            tv_sec: libc::time_t::from(delay_ms / 1000),
            tv_nsec: libc::c_long::from((delay_ms % 1000) * 1_000_000),
        };
        libc::nanosleep(&t, std::ptr::null_mut());
    }
    // The reply (ACK or error) is not read: nobody is left to tell, and
    // a failure leaves only a down, renamed link (see del.rs).
    libc::send(fd as RawFd, datagram.as_ptr().cast(), datagram.len(), 0);
    libc::_exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_count_from_stat() {
        let stat = "4242 (flannel-rs) R 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 123 4096 200 18446744073709551615";
        assert_eq!(num_threads(stat), Some(1));
        // A name with spaces and parentheses does not shift the fields.
        let stat = "7 (a) b (c) S 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 5 0 9 0 0";
        assert_eq!(num_threads(stat), Some(5));
        assert_eq!(num_threads("7 (x) S 1"), None);
        assert_eq!(num_threads("garbage"), None);
    }

    #[test]
    fn this_process_is_read_correctly() {
        // The test harness runs several threads: the count must say so,
        // which is what makes send_detached refuse here.
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let n = num_threads(&stat).unwrap();
        let listed = std::fs::read_dir("/proc/self/task").unwrap().count();
        assert!(n >= 1 && n.abs_diff(listed) <= 2, "{n} vs {listed}");
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || stopped.recv());
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(num_threads(&stat).unwrap() >= 2);
        let refused = send_detached(100, &[], 0);
        drop(stop);
        let _ = worker.join();
        assert!(
            matches!(refused, Err(BackgroundError::Threads(_))),
            "{refused:?}"
        );
    }
}
