//! What operators alert on, computed at scrape time: the node's pod
//! addresses in use and free (from the IPAM directory the CNI plugin
//! writes), the peers known and those whose entries failed to program, the
//! lease's seconds left, `flanneld_build_info`, and the standard `process_*`
//! metrics. Kept apart from `metrics.rs` so other metrics can be added
//! there without touching these.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use ipnet::Ipv4Net;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// Where the CNI plugin keeps its reservations by default: the conflist's
/// `dataDir` (/var/lib/cni/networks) joined with its network `name`.
pub const DEFAULT_IPAM_DIR: &str = "/var/lib/cni/networks/flannel-rs";

/// What the daemon tells the collector as it runs.
#[derive(Debug, Default, Clone)]
struct State {
    ipam_dir: Option<PathBuf>,
    subnet: Option<Ipv4Net>,
    lease_expiry: Option<SystemTime>,
    peers_known: Option<u64>,
    peers_failed: u64,
}

/// Registered once in the daemon's registry (prefix `flanneld_`).
#[derive(Debug, Default)]
pub struct OpsMetrics {
    state: Mutex<State>,
}

/// Pod addresses of a node subnet: in use (a reservation file inside the
/// subnet) and free (the rest of what the plugin hands out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodAddresses {
    pub in_use: u64,
    pub free: u64,
}

impl OpsMetrics {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        match self.state.lock() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    fn snapshot(&self) -> State {
        self.with(|s| s.clone())
    }

    /// The CNI plugin's reservation directory (`--ipam-dir`); `None` turns
    /// the pod address metrics off.
    pub fn set_ipam_dir(&self, dir: Option<PathBuf>) {
        self.with(|s| s.ipam_dir = dir);
    }

    /// This node's lease: its subnet bounds the pod addresses; its
    /// expiration (`None` = no TTL) gives the seconds left.
    pub fn set_lease(&self, subnet: Option<Ipv4Net>, expiry: Option<SystemTime>) {
        self.with(|s| {
            s.subnet = subnet;
            s.lease_expiry = expiry;
        });
    }

    /// A renewal moved the expiration.
    pub fn set_lease_expiry(&self, expiry: Option<SystemTime>) {
        self.with(|s| s.lease_expiry = expiry);
    }

    /// After a reconcile pass: the peers it was given, and how many of them
    /// could not be programmed.
    pub fn set_peers(&self, known: usize, failed: usize) {
        self.with(|s| {
            s.peers_known = Some(known as u64);
            s.peers_failed = failed as u64;
        });
    }
}

/// Addresses the plugin may hand out in `subnet`: all but the network
/// address, the gateway (the first host, on the bridge) and the broadcast
/// address, as its allocator does.
pub fn assignable(subnet: Ipv4Net) -> u64 {
    let size = 1u64 << (32 - u32::from(subnet.prefix_len()));
    size.saturating_sub(3)
}

/// Counts the reservations in `names` (file names of the IPAM directory)
/// that are addresses inside `subnet`. Other files (`lock`,
/// `last_reserved_ip.0`, leftovers of an earlier subnet) are not pods here.
pub fn count_pod_addresses<I, S>(names: I, subnet: Ipv4Net) -> PodAddresses
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let gateway = subnet.network().to_bits().wrapping_add(1);
    let in_use = names
        .into_iter()
        .filter_map(|n| n.as_ref().parse::<Ipv4Addr>().ok())
        .filter(|ip| {
            subnet.contains(ip)
                && *ip != subnet.network()
                && *ip != subnet.broadcast()
                && ip.to_bits() != gateway
        })
        .count() as u64;
    let total = assignable(subnet);
    PodAddresses {
        in_use,
        free: total.saturating_sub(in_use),
    }
}

/// Reads the IPAM directory. A directory that does not exist yet means no
/// pod was ever started on this node: nothing in use.
pub fn read_pod_addresses(dir: &Path, subnet: Ipv4Net) -> std::io::Result<PodAddresses> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(count_pod_addresses(std::iter::empty::<&str>(), subnet))
        }
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for e in entries {
        names.push(e?.file_name().to_string_lossy().into_owned());
    }
    Ok(count_pod_addresses(names, subnet))
}

/// Seconds until `expiry`, 0 once past it.
pub fn seconds_left(expiry: SystemTime, now: SystemTime) -> f64 {
    expiry
        .duration_since(now)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

fn gauge<T>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&prometheus_client::registry::Unit>,
    value: T,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<T>: EncodeMetric,
{
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

impl Collector for OpsMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.snapshot();
        {
            let info = ConstGauge::new(1i64);
            let mut family = encoder.encode_descriptor(
                "build_info",
                "1, labelled with the flanneld-rs release",
                None,
                MetricType::Gauge,
            )?;
            info.encode(family.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)?;
        }
        if let Some(known) = s.peers_known {
            gauge(
                &mut encoder,
                "peers_known",
                "Peers (other nodes' leases) the last reconcile pass was given",
                None,
                known as i64,
            )?;
            gauge(
                &mut encoder,
                "peers_failed",
                "Peers whose routes or neighbour/FDB entries failed to program in the last reconcile pass",
                None,
                s.peers_failed as i64,
            )?;
        }
        if let Some(expiry) = s.lease_expiry {
            gauge(
                &mut encoder,
                "lease_remaining",
                "Seconds until this node's lease expires unless renewed (absent without a TTL, e.g. in Kubernetes mode)",
                Some(&prometheus_client::registry::Unit::Seconds),
                seconds_left(expiry, SystemTime::now()),
            )?;
        }
        if let (Some(dir), Some(subnet)) = (&s.ipam_dir, s.subnet) {
            match read_pod_addresses(dir, subnet) {
                Ok(a) => {
                    gauge(
                        &mut encoder,
                        "pod_addresses_in_use",
                        "Pod addresses of this node's subnet reserved by the CNI plugin (files in its IPAM directory)",
                        None,
                        a.in_use as i64,
                    )?;
                    gauge(
                        &mut encoder,
                        "pod_addresses_free",
                        "Pod addresses of this node's subnet the CNI plugin can still hand out",
                        None,
                        a.free as i64,
                    )?;
                }
                // Absent metrics (and this line) rather than a wrong 0.
                Err(e) => {
                    tracing::debug!(dir = %dir.display(), error = %e, "cannot read the IPAM directory")
                }
            }
        }
        Ok(())
    }
}

/// The process's own figures, under the names every Prometheus client
/// library uses (`process_*`, no prefix), read from /proc at scrape time.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// /proc reports CPU and start times in USER_HZ ticks, which the kernel
/// fixes at 100 for this interface on every architecture we build for
/// (Prometheus's Go procfs library assumes the same).
pub const USER_HZ: f64 = 100.0;

/// The times of /proc/self/stat, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcTimes {
    pub cpu_seconds: f64,
    /// Seconds after boot.
    pub start_after_boot: f64,
}

/// Parses /proc/<pid>/stat. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from its last closing parenthesis.
pub fn parse_stat(text: &str) -> Option<ProcTimes> {
    let rest = &text[text.rfind(')')? + 1..];
    // rest starts with field 3 (state): field N is f[N - 3].
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
    Some(ProcTimes {
        cpu_seconds: (num(14)? + num(15)?) as f64 / USER_HZ,
        start_after_boot: num(22)? as f64 / USER_HZ,
    })
}

/// Memory and threads of /proc/<pid>/status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStatus {
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub threads: u64,
}

/// Parses /proc/<pid>/status ("VmRSS:  2560 kB", "Threads: 7").
pub fn parse_status(text: &str) -> Option<ProcStatus> {
    let field = |key: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some(ProcStatus {
        resident_bytes: field("VmRSS:")?.saturating_mul(1024),
        virtual_bytes: field("VmSize:")?.saturating_mul(1024),
        threads: field("Threads:")?,
    })
}

/// `btime` of /proc/stat: boot time in unix seconds.
pub fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft "Max open files" limit of /proc/<pid>/limits.
pub fn parse_max_fds(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        if let Some(t) = read("/proc/self/stat").and_then(|t| parse_stat(&t)) {
            let cpu = ConstCounter::new(t.cpu_seconds);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent in seconds",
                Some(&prometheus_client::registry::Unit::Seconds),
                MetricType::Counter,
            )?)?;
            if let Some(boot) = read("/proc/stat").and_then(|t| parse_boot_time(&t)) {
                gauge(
                    &mut encoder,
                    "process_start_time",
                    "Start time of the process since unix epoch in seconds",
                    Some(&prometheus_client::registry::Unit::Seconds),
                    boot as f64 + t.start_after_boot,
                )?;
            }
        }
        if let Some(st) = read("/proc/self/status").and_then(|t| parse_status(&t)) {
            gauge(
                &mut encoder,
                "process_resident_memory",
                "Resident memory size in bytes",
                Some(&prometheus_client::registry::Unit::Bytes),
                i64::try_from(st.resident_bytes).unwrap_or(i64::MAX),
            )?;
            gauge(
                &mut encoder,
                "process_virtual_memory",
                "Virtual memory size in bytes",
                Some(&prometheus_client::registry::Unit::Bytes),
                i64::try_from(st.virtual_bytes).unwrap_or(i64::MAX),
            )?;
            gauge(
                &mut encoder,
                "process_threads",
                "Number of OS threads in the process",
                None,
                i64::try_from(st.threads).unwrap_or(i64::MAX),
            )?;
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors",
                None,
                dir.count() as i64,
            )?;
        }
        let max = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|t| parse_max_fds(&t));
        if let Some(max) = max {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors",
                None,
                i64::try_from(max).unwrap_or(i64::MAX),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn pod_addresses_count_only_reservations_in_the_subnet() {
        // A /24: 256 - network, gateway, broadcast = 253 assignable.
        let names = [
            "10.244.3.2",
            "10.244.3.3",
            "10.244.3.254",
            "lock",
            "last_reserved_ip.0",
            // An earlier lease's leftovers and nonsense are not this subnet's.
            "10.244.9.7",
            "10.244.3.1",
            "10.244.3.255",
            "10.244.3.x",
        ];
        let a = count_pod_addresses(names, net("10.244.3.0/24"));
        assert_eq!(
            a,
            PodAddresses {
                in_use: 3,
                free: 250
            }
        );
        // A /30: 4 - 3 = 1 assignable (.2).
        let a = count_pod_addresses(["10.0.0.2"], net("10.0.0.0/30"));
        assert_eq!(a, PodAddresses { in_use: 1, free: 0 });
        assert_eq!(assignable(net("10.0.0.0/23")), 509);
    }

    #[test]
    fn a_missing_ipam_directory_means_nothing_in_use() {
        let dir = std::env::temp_dir().join(format!("fct-ops-missing-{}", std::process::id()));
        let a = read_pod_addresses(&dir, net("10.244.3.0/24")).unwrap();
        assert_eq!(a.in_use, 0);
        assert_eq!(a.free, 253);
    }

    #[test]
    fn proc_parsing_survives_odd_command_names() {
        // Fields from /proc/self/stat; the name holds ") (" and spaces.
        let text = "4242 (flanneld ) (x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 150 0 0 20 0 7 0 12345 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let t = parse_stat(text).unwrap();
        assert_eq!(t.cpu_seconds, 4.0);
        assert_eq!(t.start_after_boot, 123.45);
        assert!(parse_stat("garbage").is_none());
        let status = "Name:\tflanneld-rs\nVmSize:\t  102400 kB\nVmRSS:\t    2560 kB\nThreads:\t7\n";
        assert_eq!(
            parse_status(status),
            Some(ProcStatus {
                resident_bytes: 2560 * 1024,
                virtual_bytes: 102_400 * 1024,
                threads: 7
            })
        );
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \nMax open files            65536                524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(65536));
    }

    #[test]
    fn the_exposition_has_what_operators_alert_on() {
        let m = crate::daemon::Metrics::new();
        let before = m.encode().unwrap();
        // Before a lease and a reconcile: build info and process metrics only.
        for want in [
            "flanneld_build_info{version=\"",
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(before.contains(want), "missing {want:?} in\n{before}");
        }
        assert!(!before.contains("flanneld_process_"), "{before}");
        assert!(!before.contains("pod_addresses"), "{before}");
        assert_eq!(before.matches("# EOF").count(), 1, "{before}");
        assert!(before.ends_with("# EOF\n"));

        let dir = std::env::temp_dir().join(format!("fct-ops-ipam-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["10.244.7.2", "10.244.7.9", "lock", "last_reserved_ip.0"] {
            std::fs::write(dir.join(f), "id\r\neth0").unwrap();
        }
        m.ops.set_ipam_dir(Some(dir.clone()));
        let expiry = SystemTime::now() + Duration::from_secs(3600);
        m.ops.set_lease(Some(net("10.244.7.0/24")), Some(expiry));
        m.ops.set_peers(5, 2);
        let text = m.encode().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        for want in [
            "flanneld_pod_addresses_in_use 2\n",
            "flanneld_pod_addresses_free 251\n",
            "flanneld_peers_known 5\n",
            "flanneld_peers_failed 2\n",
            "# UNIT flanneld_lease_remaining_seconds seconds",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        let left: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("flanneld_lease_remaining_seconds "))
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!((3500.0..=3600.0).contains(&left), "{left}");
        // The process is this test: its resident memory is not zero.
        let rss: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!(rss > 1_000_000.0, "{rss}");
        // Kubernetes mode: no TTL, no seconds-left metric.
        m.ops.set_lease_expiry(None);
        assert!(!m.encode().unwrap().contains("lease_remaining"));
    }

    #[test]
    fn seconds_left_stops_at_zero() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(seconds_left(now + Duration::from_secs(90), now), 90.0);
        assert_eq!(seconds_left(now - Duration::from_secs(5), now), 0.0);
    }
}
