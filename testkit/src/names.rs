//! Unique names for namespaces, bridges and containers, so tests running in
//! parallel threads (and parallel test processes) never collide.

use std::sync::atomic::{AtomicU32, Ordering};

/// Every name made by tests starts with this, so leftovers from a crashed
/// run can be found and removed (scripts/clean-test-netns.sh).
pub const PREFIX: &str = "fct-";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `fct-<what>-<pid>-<n>`: unique within this process (counter) and across
/// processes (pid).
pub fn unique(what: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{what}-{}-{n}", std::process::id())
}

/// A name short enough for a network interface (at most 15 bytes, IFNAMSIZ
/// minus the NUL): `<stem><n>` with the stem cut to fit.
pub fn unique_ifname(stem: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix = format!("{:x}{n}", std::process::id() & 0xffff);
    let room = 15usize.saturating_sub(suffix.len());
    let stem: String = stem.chars().take(room).collect();
    format!("{stem}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prefixed() {
        let a = unique("cni");
        let b = unique("cni");
        assert_ne!(a, b);
        assert!(a.starts_with("fct-cni-"), "{a}");
    }

    #[test]
    fn ifnames_fit_ifnamsiz() {
        for _ in 0..100 {
            let n = unique_ifname("averyveryverylongbridge");
            assert!(n.len() <= 15, "{n}");
        }
        assert_ne!(unique_ifname("br"), unique_ifname("br"));
    }
}
