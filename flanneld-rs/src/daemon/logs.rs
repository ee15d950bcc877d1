//! Keeping the log readable when the network or the store misbehave (pure):
//! bounded, single-line error text, warnings rate-limited by their text,
//! rejected leases reported once, and values formatted for people and log
//! pipelines rather than with Rust's Debug.

use std::collections::{BTreeSet, HashMap};
use std::fmt::{self, Write as _};
use std::time::{Duration, Instant, SystemTime};

use ipnet::Ipv4Net;

use super::validate::{Reason, Rejection};

/// The longest error text written to the log (bytes, before the marker).
pub const ERROR_TEXT_MAX: usize = 512;

/// Displays `inner` cut to `max` bytes (on a character boundary) with a
/// marker when cut, control characters escaped so one log record stays
/// one line. Formatting stops at the limit: a megabyte-long value costs
/// no megabyte-long string.
pub struct Bounded<'a, T: ?Sized> {
    inner: &'a T,
    max: usize,
}

impl<'a, T: fmt::Display + ?Sized> Bounded<'a, T> {
    pub fn new(inner: &'a T, max: usize) -> Self {
        Bounded { inner, max }
    }
}

/// An error from the network or the store, bounded for the log.
pub fn err<T: fmt::Display + ?Sized>(e: &T) -> Bounded<'_, T> {
    Bounded::new(e, ERROR_TEXT_MAX)
}

struct Cut<'f, 'b> {
    out: &'f mut fmt::Formatter<'b>,
    left: usize,
    cut: bool,
}

impl fmt::Write for Cut<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if self.cut {
                // Stop the formatting early: nothing more will be shown.
                return Err(fmt::Error);
            }
            let mut buf = [0u8; 4];
            let piece: &str = if c.is_control() {
                // \n, \r, \t, \u{1b}: escaped, so no forged log lines or
                // terminal escapes come from a peer's data.
                let escaped: String = c.escape_default().collect();
                if escaped.len() > self.left {
                    self.cut = true;
                    continue;
                }
                self.left -= escaped.len();
                self.out.write_str(&escaped)?;
                continue;
            } else {
                c.encode_utf8(&mut buf)
            };
            if piece.len() > self.left {
                self.cut = true;
                continue;
            }
            self.left -= piece.len();
            self.out.write_str(piece)?;
        }
        Ok(())
    }
}

impl<T: fmt::Display + ?Sized> fmt::Display for Bounded<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut cut = Cut {
            out: f,
            left: self.max,
            cut: false,
        };
        let r = write!(cut, "{}", self.inner);
        if cut.cut {
            f.write_str("… (cut)")
        } else {
            r
        }
    }
}

/// A time for the log: RFC 3339 in UTC, whole seconds
/// (`2026-12-05T11:20:00Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs(),
        Err(_) => return "before 1970-01-01T00:00:00Z".into(),
    };
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian), for
/// days since 1970-01-01; no dependency for one function.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// An expiration for the log: RFC 3339, or "never" for a lease without
/// a TTL (a reservation).
pub fn expiry(t: Option<SystemTime>) -> String {
    t.map(rfc3339).unwrap_or_else(|| "never".into())
}

/// Milliseconds rounded to two decimals (`0.34`, not `0.33939400000000003`).
pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

/// Changes of a reconcile pass as `route_add=3 fdb_add=3`.
pub fn changes(changes: &[(&'static str, u64)]) -> String {
    let mut s = String::new();
    for (kind, n) in changes {
        if !s.is_empty() {
            s.push(' ');
        }
        let _ = write!(s, "{kind}={n}");
    }
    s
}

/// Lets a warning through once per `window` per distinct text, and says
/// how many identical ones were held back in between.
#[derive(Debug)]
pub struct RateLimit {
    window: Duration,
    seen: HashMap<String, (Instant, u64)>,
}

/// Distinct texts remembered at most; beyond it the stale ones are dropped.
const RATE_LIMIT_KEYS: usize = 1024;

impl RateLimit {
    pub fn new(window: Duration) -> Self {
        RateLimit {
            window,
            seen: HashMap::new(),
        }
    }

    /// `Some(n)`: log it now, `n` identical ones were held back since the
    /// last time; `None`: hold it back.
    pub fn allow(&mut self, text: &str, now: Instant) -> Option<u64> {
        if let Some((last, held)) = self.seen.get_mut(text) {
            if now.duration_since(*last) < self.window {
                *held += 1;
                return None;
            }
            let n = *held;
            *last = now;
            *held = 0;
            return Some(n);
        }
        if self.seen.len() >= RATE_LIMIT_KEYS {
            let window = self.window;
            self.seen
                .retain(|_, (last, _)| now.duration_since(*last) < window);
            if self.seen.len() >= RATE_LIMIT_KEYS {
                // Thousands of distinct warnings within a window: forget
                // them all rather than grow without bound.
                self.seen.clear();
            }
        }
        self.seen.insert(text.to_string(), (now, 0));
        Some(0)
    }
}

/// Remembers which (lease, reason) pairs were already reported, so a
/// rejected lease is logged and counted once, not on every pass; once it
/// is fixed or gone it is forgotten (a new problem is reported again).
#[derive(Debug, Default)]
pub struct RejectLog {
    reported: BTreeSet<(Ipv4Net, std::net::Ipv4Addr, Reason)>,
}

impl RejectLog {
    /// The rejections of this pass not reported before.
    pub fn fresh<'a>(&mut self, now: &'a [Rejection]) -> Vec<&'a Rejection> {
        let current: BTreeSet<_> = now
            .iter()
            .map(|r| (r.subnet, r.public_ip, r.reason))
            .collect();
        self.reported.retain(|k| current.contains(k));
        now.iter()
            .filter(|r| self.reported.insert((r.subnet, r.public_ip, r.reason)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cuts_long_text_and_escapes_control_characters() {
        let long = "x".repeat(1 << 20);
        let shown = err(&long).to_string();
        assert!(shown.len() < ERROR_TEXT_MAX + 16, "{}", shown.len());
        assert!(shown.ends_with("… (cut)"));
        assert_eq!(Bounded::new("short", 10).to_string(), "short");
        assert_eq!(
            Bounded::new("a\nb\u{1b}[31m", 64).to_string(),
            "a\\nb\\u{1b}[31m"
        );
        // Never inside a character.
        assert_eq!(Bounded::new("ééé", 3).to_string(), "é… (cut)");
        // Exactly at the limit is not cut.
        assert_eq!(Bounded::new("abc", 3).to_string(), "abc");
    }

    #[test]
    fn times_are_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        // A leap day.
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00Z");
        assert_eq!(expiry(None), "never");
    }

    #[test]
    fn durations_are_rounded() {
        assert_eq!(millis(Duration::from_nanos(339_394)), 0.34);
        assert_eq!(millis(Duration::from_secs(2)), 2000.0);
        assert_eq!(
            changes(&[("route_add", 3), ("fdb_add", 1)]),
            "route_add=3 fdb_add=1"
        );
    }

    #[test]
    fn identical_warnings_are_held_back_within_the_window() {
        let mut rl = RateLimit::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(rl.allow("a", t0), Some(0));
        for i in 1..=14 {
            assert_eq!(rl.allow("a", t0 + Duration::from_secs(i)), None);
        }
        // Another text is independent.
        assert_eq!(rl.allow("b", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(rl.allow("a", t0 + Duration::from_secs(61)), Some(14));
        assert_eq!(rl.allow("a", t0 + Duration::from_secs(62)), None);
    }

    #[test]
    fn the_rate_limiter_stays_bounded() {
        let mut rl = RateLimit::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..5000 {
            assert_eq!(rl.allow(&format!("w{i}"), t0), Some(0));
        }
        assert!(rl.seen.len() <= RATE_LIMIT_KEYS);
    }

    fn rej(subnet: &str, reason: Reason) -> Rejection {
        Rejection {
            subnet: subnet.parse().unwrap(),
            public_ip: "198.51.100.9".parse().unwrap(),
            revision: 1,
            reason,
            detail: String::new(),
        }
    }

    #[test]
    fn a_rejection_is_reported_once_until_it_goes_away() {
        let mut log = RejectLog::default();
        let pass = vec![
            rej("10.244.1.0/25", Reason::OverlapsOwn),
            rej("10.245.0.0/24", Reason::OutsideNetwork),
        ];
        assert_eq!(log.fresh(&pass).len(), 2);
        for _ in 0..30 {
            assert!(log.fresh(&pass).is_empty());
        }
        // The lease changes its problem: reported again.
        let pass2 = vec![
            rej("10.244.1.0/25", Reason::OverlapsOwn),
            rej("10.245.0.0/24", Reason::BackendData),
        ];
        let fresh = log.fresh(&pass2);
        assert_eq!(fresh.len(), 1);
        assert_eq!(fresh[0].reason, Reason::BackendData);
        // Fixed, then broken again: reported again.
        assert!(log.fresh(&[]).is_empty());
        assert_eq!(log.fresh(&pass2).len(), 2);
    }
}
