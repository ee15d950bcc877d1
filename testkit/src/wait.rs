//! Polling until a condition holds, with a deadline and a message that says
//! what was awaited, for how long, and what was last seen (or the logs of
//! the processes involved).

use std::time::{Duration, Instant};

/// How often the blocking waits look again: cheap enough for checks that
/// run `ip` or open a socket, fine enough for convergence timings.
pub const POLL: Duration = Duration::from_millis(50);

/// How often [`wait_for_async`] looks again: its checks read in-process
/// state, and the runtime keeps the code under test running in between.
#[cfg(feature = "tokio")]
pub const POLL_ASYNC: Duration = Duration::from_millis(20);

/// A wait that ran out of time.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {within:?} waiting for {what}; last seen: {last}")]
pub struct Timeout {
    pub what: String,
    pub within: Duration,
    /// The last `Err` the check returned.
    pub last: String,
}

/// Calls `check` every [`POLL`] until it returns `Ok`, giving the value and
/// how long it took, or [`Timeout`] with the last error once `within` has
/// passed. `check` runs at least once.
pub fn try_wait_for<T>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<(T, Duration), Timeout> {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return Ok((v, start.elapsed())),
            Err(last) if start.elapsed() >= within => {
                return Err(Timeout {
                    what: what.to_string(),
                    within,
                    last,
                })
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Whether `check` turned true within `within` (polled every [`POLL`]), for
/// tests that assert with a message of their own.
pub fn until(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    try_wait_for("", within, || check().then_some(()).ok_or_else(String::new)).is_ok()
}

/// For test bodies: polls `check` until it gives `Some`, and panics after
/// `within` with what was awaited and `logs()` (e.g. the daemons' logs).
pub fn wait_for<T>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Option<T>,
    logs: &dyn Fn() -> String,
) -> T {
    match try_wait_for(what, within, || check().ok_or_else(String::new)) {
        Ok((v, _)) => v,
        Err(t) => panic!(
            "timed out after {:?} waiting for {}; logs:\n{}",
            t.within,
            t.what,
            logs()
        ),
    }
}

/// [`wait_for`] inside a tokio runtime: sleeps asynchronously between
/// checks so the tasks under test keep running (also on a current-thread
/// runtime), and panics after `within` naming `what`.
#[cfg(feature = "tokio")]
pub async fn wait_for_async(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_ASYNC).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_once_the_check_passes() {
        let mut n = 0;
        let (v, took) = try_wait_for("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            if n >= 3 {
                Ok(n)
            } else {
                Err(format!("n is {n}"))
            }
        })
        .unwrap();
        assert_eq!(v, 3);
        assert!(took >= POLL * 2, "{took:?}");
    }

    #[test]
    fn timeout_names_what_how_long_and_the_last_observation() {
        let start = Instant::now();
        let err = try_wait_for("the moon", Duration::from_millis(200), || {
            Err::<(), _>("still cheese".to_string())
        })
        .unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(200));
        assert_eq!(
            err.to_string(),
            "timed out after 200ms waiting for the moon; last seen: still cheese"
        );
    }

    #[test]
    fn until_reports_success_and_timeout() {
        let start = Instant::now();
        let mut n = 0;
        assert!(until(Duration::from_secs(5), || {
            n += 1;
            n == 2
        }));
        assert!(!until(Duration::from_millis(100), || false));
        assert!(start.elapsed() >= Duration::from_millis(100));
    }

    #[test]
    fn wait_for_panics_with_the_logs() {
        let panic = std::panic::catch_unwind(|| {
            wait_for(
                "a ready daemon",
                Duration::from_millis(100),
                || None::<()>,
                &|| "daemon said: no config".to_string(),
            )
        })
        .unwrap_err();
        let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            msg.starts_with("timed out after 100ms waiting for a ready daemon; logs:\n"),
            "{msg}"
        );
        assert!(msg.ends_with("daemon said: no config"), "{msg}");
    }

    #[cfg(feature = "tokio")]
    #[tokio::test]
    async fn async_wait_lets_other_tasks_run() {
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = flag.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            f.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        wait_for_async("the task", Duration::from_secs(5), || {
            flag.load(std::sync::atomic::Ordering::SeqCst)
        })
        .await;
    }
}
