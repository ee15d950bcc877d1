//! CPU accounting for the throughput tests: busy CPU-seconds of the whole
//! machine from /proc/stat over the test window, divided by the Gbit moved.
//! /proc/stat is not namespaced: inside a pod (or a lab namespace) it is the
//! node's CPU, so the figure includes everything the node did meanwhile
//! (both ends of the connection when they share a machine, other workloads).

use serde::{Deserialize, Serialize};

/// Jiffies of the aggregate `cpu` line of /proc/stat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuTimes {
    /// user + nice + system + irq + softirq + steal (guest time is already
    /// part of user and nice).
    pub busy: u64,
    /// busy + idle + iowait.
    pub total: u64,
}

/// Parses the first (`cpu `) line of /proc/stat.
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq [steal ...]
    if f.len() < 7 {
        return None;
    }
    let steal = f.get(7).copied().unwrap_or(0);
    let busy = f[0] + f[1] + f[2] + f[5] + f[6] + steal;
    Some(CpuTimes {
        busy,
        total: busy + f[3] + f[4],
    })
}

/// Reads /proc/stat now; None where it is missing or unreadable (the
/// throughput is still measured, only the CPU figure is left out).
pub fn read() -> Option<CpuTimes> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Clock ticks per second that /proc/stat counts in.
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Busy CPU-seconds between two readings.
pub fn busy_seconds(start: CpuTimes, end: CpuTimes, hz: u64) -> f64 {
    end.busy.saturating_sub(start.busy) as f64 / hz.max(1) as f64
}

/// CPU-seconds per Gbit transferred; None when nothing was transferred.
pub fn seconds_per_gbit(busy_s: f64, bytes: u64) -> Option<f64> {
    let gbit = bytes as f64 * 8.0 / 1e9;
    (gbit > 0.0).then(|| busy_s / gbit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 5 50 1000 20 3 7 2 40 0\ncpu0 50 2 25 500 10 1 3 1 0 0\nintr 1\n";

    #[test]
    fn busy_and_total_jiffies() {
        let t = parse_proc_stat(STAT).unwrap();
        assert_eq!(t.busy, 100 + 5 + 50 + 3 + 7 + 2);
        assert_eq!(t.total, t.busy + 1000 + 20);
        // Old kernels without steal.
        let old = parse_proc_stat("cpu 1 2 3 4 5 6 7\n").unwrap();
        assert_eq!(old.busy, 1 + 2 + 3 + 6 + 7);
        assert_eq!(parse_proc_stat("cpu 1 2\n"), None);
        assert_eq!(parse_proc_stat("cpu0 1 2 3 4 5 6 7\n"), None);
        assert_eq!(parse_proc_stat("cpu 1 x 3 4 5 6 7\n"), None);
    }

    #[test]
    fn seconds_per_gbit_arithmetic() {
        let a = CpuTimes {
            busy: 1000,
            total: 5000,
        };
        let b = CpuTimes {
            busy: 1250,
            total: 5400,
        };
        let s = busy_seconds(a, b, 100);
        assert!((s - 2.5).abs() < 1e-12);
        // 2.5 CPU-s over 1.25 GB = 10 Gbit: 0.25 s per Gbit.
        let per = seconds_per_gbit(s, 1_250_000_000).unwrap();
        assert!((per - 0.25).abs() < 1e-12);
        assert_eq!(seconds_per_gbit(s, 0), None);
        // A counter that went backwards (never on Linux) is not negative.
        assert_eq!(busy_seconds(b, a, 100), 0.0);
        assert!(read().is_some(), "/proc/stat should parse on Linux");
        assert!(ticks_per_second() > 0);
    }
}
