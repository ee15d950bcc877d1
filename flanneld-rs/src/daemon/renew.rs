//! When to renew the lease (pure): at expiry minus the margin, like
//! flannel; when the TTL is shorter than the margin (short lab TTLs), at half
//! the time left. After a failure, retry every minute, or sooner when less
//! time is left, so a short lease is not lost to one failed attempt.

use std::time::{Duration, SystemTime};

/// Flannel's retry interval after a failed renewal.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(60);
const MIN_RETRY: Duration = Duration::from_secs(1);

fn remaining(now: SystemTime, expiration: SystemTime) -> Duration {
    expiration.duration_since(now).unwrap_or(Duration::ZERO)
}

/// How long to wait before renewing; `None` for a reservation (no TTL).
pub fn renew_delay(
    now: SystemTime,
    expiration: Option<SystemTime>,
    margin: Duration,
) -> Option<Duration> {
    let left = remaining(now, expiration?);
    Some(if left > margin {
        left - margin
    } else {
        left / 2
    })
}

/// How long to wait after a failed renewal.
pub fn retry_delay(now: SystemTime, expiration: Option<SystemTime>) -> Duration {
    match expiration {
        None => RETRY_INTERVAL,
        Some(exp) => (remaining(now, exp) / 4).clamp(MIN_RETRY, RETRY_INTERVAL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn renews_at_expiry_minus_margin() {
        let d = renew_delay(at(0), Some(at(24 * H)), Duration::from_secs(H));
        assert_eq!(d, Some(Duration::from_secs(23 * H)));
    }

    #[test]
    fn short_ttl_renews_at_half_the_time_left() {
        let d = renew_delay(at(100), Some(at(130)), Duration::from_secs(H));
        assert_eq!(d, Some(Duration::from_secs(15)));
        // Already expired: renew now.
        let d = renew_delay(at(200), Some(at(130)), Duration::from_secs(H));
        assert_eq!(d, Some(Duration::ZERO));
    }

    #[test]
    fn reservations_are_not_renewed() {
        assert_eq!(renew_delay(at(0), None, Duration::from_secs(H)), None);
    }

    #[test]
    fn retries_every_minute_or_faster_for_short_leases() {
        assert_eq!(retry_delay(at(0), Some(at(H))), Duration::from_secs(60));
        assert_eq!(retry_delay(at(0), Some(at(40))), Duration::from_secs(10));
        assert_eq!(retry_delay(at(50), Some(at(40))), Duration::from_secs(1));
        assert_eq!(retry_delay(at(0), None), Duration::from_secs(60));
    }
}
