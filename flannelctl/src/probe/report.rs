//! What a probe run measured (the `--json` schema `flannelctl-probe/1`) and
//! the table printed for people, shared with `compare`: one row per path,
//! with ratios to a baseline row when there is one.

use serde::{Deserialize, Serialize};

use super::hist::Histogram;

pub const SCHEMA: &str = "flannelctl-probe/1";

/// Percentiles of one latency histogram, in microseconds. `count` 0 means
/// no sample (every other field is then 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl LatencySummary {
    pub fn of(h: &Histogram) -> Self {
        let us = |p: f64| h.percentile(p).map_or(0.0, |ns| ns as f64 / 1000.0);
        Self {
            count: h.count,
            min_us: us(0.0),
            p50_us: us(50.0),
            p90_us: us(90.0),
            p99_us: us(99.0),
            p999_us: us(99.9),
            max_us: us(100.0),
            mean_us: h.mean_ns().map_or(0.0, |ns| ns / 1000.0),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UdpRr {
    pub sent: u64,
    pub received: u64,
    /// Requests with no reply within the timeout (not counted as latency).
    pub lost: u64,
    pub timeout_ms: u64,
    pub latency: LatencySummary,
    pub histogram: Histogram,
    /// Host-wide busy CPU-microseconds per answered request (see
    /// probe/cpu.rs): what one round trip costs the machine, e.g. a
    /// datapath that polls instead of sleeping.
    #[serde(default)]
    pub cpu_us_per_request: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TcpRr {
    pub transactions: u64,
    pub latency: LatencySummary,
    pub histogram: Histogram,
    /// As `UdpRr::cpu_us_per_request`, per transaction.
    #[serde(default)]
    pub cpu_us_per_request: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub streams: u32,
    /// Bytes the server counted (it must equal what the client sent).
    pub bytes: u64,
    /// From the first byte sent to the server's count arriving.
    pub seconds: f64,
    pub gbit_per_s: f64,
    /// Host-wide busy CPU-seconds over the window (see probe/cpu.rs).
    pub cpu_busy_s: Option<f64>,
    /// Busy share of all CPUs over the window, 0..1.
    pub cpu_busy_fraction: Option<f64>,
    pub cpu_s_per_gbit: Option<f64>,
}

/// One `probe client` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub schema: String,
    pub server: String,
    /// Length of each of the four tests, seconds.
    pub duration_s: f64,
    /// Request/response message size, bytes.
    pub size: usize,
    pub cpus: usize,
    pub udp_rr: UdpRr,
    pub tcp_rr: TcpRr,
    pub tcp_1: Throughput,
    pub tcp_n: Throughput,
}

/// One row of the table: a path's numbers (one run, or rounds pooled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathSummary {
    pub udp_rr: LatencySummary,
    pub udp_sent: u64,
    pub udp_lost: u64,
    pub tcp_rr: LatencySummary,
    pub streams: u32,
    pub tcp_1_gbit_per_s: f64,
    pub tcp_n_gbit_per_s: f64,
    pub cpu_s_per_gbit_1: Option<f64>,
    pub cpu_s_per_gbit_n: Option<f64>,
    /// UDP request/response: host-wide busy CPU-microseconds per request.
    #[serde(default)]
    pub udp_cpu_us_per_request: Option<f64>,
}

impl PathSummary {
    pub fn of(r: &ProbeReport) -> Self {
        Self {
            udp_rr: r.udp_rr.latency,
            udp_sent: r.udp_rr.sent,
            udp_lost: r.udp_rr.lost,
            tcp_rr: r.tcp_rr.latency,
            streams: r.tcp_n.streams,
            tcp_1_gbit_per_s: r.tcp_1.gbit_per_s,
            tcp_n_gbit_per_s: r.tcp_n.gbit_per_s,
            cpu_s_per_gbit_1: r.tcp_1.cpu_s_per_gbit,
            cpu_s_per_gbit_n: r.tcp_n.cpu_s_per_gbit,
            udp_cpu_us_per_request: r.udp_rr.cpu_us_per_request,
        }
    }
}

/// Ratios of a path to the baseline: latency > 1 is slower, throughput < 1
/// is less.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ratios {
    pub udp_p50: Option<f64>,
    pub udp_p99: Option<f64>,
    pub tcp_p50: Option<f64>,
    pub tcp_1: Option<f64>,
    pub tcp_n: Option<f64>,
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (a > 0.0 && b > 0.0).then(|| a / b)
}

pub fn ratios(path: &PathSummary, base: &PathSummary) -> Ratios {
    Ratios {
        udp_p50: ratio(path.udp_rr.p50_us, base.udp_rr.p50_us),
        udp_p99: ratio(path.udp_rr.p99_us, base.udp_rr.p99_us),
        tcp_p50: ratio(path.tcp_rr.p50_us, base.tcp_rr.p50_us),
        tcp_1: ratio(path.tcp_1_gbit_per_s, base.tcp_1_gbit_per_s),
        tcp_n: ratio(path.tcp_n_gbit_per_s, base.tcp_n_gbit_per_s),
    }
}

/// A table row: a label and its numbers, or a note on why there are none
/// (printed after the label, e.g. `unavailable: no geneve module`).
pub struct Row<'a> {
    pub label: &'a str,
    pub result: Result<&'a PathSummary, &'a str>,
}

fn us(v: f64, count: u64) -> String {
    if count == 0 {
        "-".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn times(r: Option<f64>) -> String {
    r.map_or("-".into(), |x| format!("{x:.2}x"))
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.2}"))
}

/// The two-part table (latency, throughput). With `baseline` (a label of
/// `rows`), ratio columns compare every row to it.
pub fn render_table(rows: &[Row], baseline: Option<&str>) -> String {
    let base = baseline.and_then(|b| {
        rows.iter()
            .find(|r| r.label == b)
            .and_then(|r| r.result.ok())
    });
    let w = rows
        .iter()
        .map(|r| r.label.len())
        .chain([8])
        .max()
        .unwrap_or(8);
    let streams = rows
        .iter()
        .filter_map(|r| r.result.ok())
        .map(|s| s.streams)
        .max()
        .unwrap_or(1);
    let vs = baseline.unwrap_or("-");
    let mut out = String::new();
    out.push_str("Latency, request/response with one message in flight (microseconds; CPU/req: host-wide busy CPU-microseconds per UDP request)\n");
    let mut head = format!(
        "{:<w$} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>8} {:>8}",
        "path", "UDP p50", "p90", "p99", "p99.9", "loss", "CPU/req", "TCP p50", "p99"
    );
    if base.is_some() {
        head.push_str(&format!(
            "  {:>8} {:>8} {:>8}",
            "UDP p50", "UDP p99", "TCP p50"
        ));
        head.push_str(&format!("  (x {vs})"));
    }
    out.push_str(head.trim_end());
    out.push('\n');
    for r in rows {
        let line = match r.result {
            Err(why) => format!("{:<w$} {why}", r.label),
            Ok(s) => {
                let loss = if s.udp_sent == 0 {
                    "-".to_string()
                } else {
                    format!("{:.2}%", 100.0 * s.udp_lost as f64 / s.udp_sent as f64)
                };
                let mut l = format!(
                    "{:<w$} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>8} {:>8}",
                    r.label,
                    us(s.udp_rr.p50_us, s.udp_rr.count),
                    us(s.udp_rr.p90_us, s.udp_rr.count),
                    us(s.udp_rr.p99_us, s.udp_rr.count),
                    us(s.udp_rr.p999_us, s.udp_rr.count),
                    loss,
                    s.udp_cpu_us_per_request.map_or("-".into(), |c| us(c, 1)),
                    us(s.tcp_rr.p50_us, s.tcp_rr.count),
                    us(s.tcp_rr.p99_us, s.tcp_rr.count),
                );
                if let Some(b) = base {
                    let q = ratios(s, b);
                    l.push_str(&format!(
                        "  {:>8} {:>8} {:>8}",
                        times(q.udp_p50),
                        times(q.udp_p99),
                        times(q.tcp_p50)
                    ));
                }
                l
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(
        "TCP throughput (Gbit/s) and host-wide busy CPU-seconds per Gbit (whole machine)\n",
    );
    let n = format!("{streams} streams");
    let mut head = format!(
        "{:<w$} {:>10} {:>10} {:>11} {:>11}",
        "path",
        "1 stream",
        n,
        "CPU/Gbit 1",
        format!("CPU/Gbit {streams}")
    );
    if base.is_some() {
        head.push_str(&format!("  {:>8} {:>10}  (x {vs})", "1 stream", n));
    }
    out.push_str(head.trim_end());
    out.push('\n');
    for r in rows {
        let line = match r.result {
            Err(why) => format!("{:<w$} {why}", r.label),
            Ok(s) => {
                let mut l = format!(
                    "{:<w$} {:>10.2} {:>10.2} {:>11} {:>11}",
                    r.label,
                    s.tcp_1_gbit_per_s,
                    s.tcp_n_gbit_per_s,
                    opt(s.cpu_s_per_gbit_1),
                    opt(s.cpu_s_per_gbit_n),
                );
                if let Some(b) = base {
                    let q = ratios(s, b);
                    l.push_str(&format!("  {:>8} {:>10}", times(q.tcp_1), times(q.tcp_n)));
                }
                l
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn summary(p50: f64, gbit: f64) -> PathSummary {
        let lat = |m: f64| LatencySummary {
            count: 1000,
            min_us: p50 * m * 0.5,
            p50_us: p50 * m,
            p90_us: p50 * m * 1.5,
            p99_us: p50 * m * 3.0,
            p999_us: p50 * m * 6.0,
            max_us: p50 * m * 10.0,
            mean_us: p50 * m * 1.1,
        };
        PathSummary {
            udp_rr: lat(1.0),
            udp_sent: 1000,
            udp_lost: 5,
            tcp_rr: lat(1.2),
            streams: 4,
            tcp_1_gbit_per_s: gbit,
            tcp_n_gbit_per_s: gbit * 1.5,
            cpu_s_per_gbit_1: Some(0.5),
            cpu_s_per_gbit_n: None,
            udp_cpu_us_per_request: Some(12.5),
        }
    }

    #[test]
    fn table_with_ratios_and_an_unavailable_row() {
        let native = summary(40.0, 10.0);
        let vxlan = summary(60.0, 5.0);
        let rows = [
            Row {
                label: "host-gw",
                result: Ok(&native),
            },
            Row {
                label: "vxlan",
                result: Ok(&vxlan),
            },
            Row {
                label: "geneve",
                result: Err("unavailable: kernel has no geneve module"),
            },
        ];
        let t = render_table(&rows, Some("host-gw"));
        let line = |label: &str, nth: usize| {
            t.lines()
                .filter(|l| l.starts_with(label))
                .nth(nth)
                .unwrap_or_default()
                .to_string()
        };
        let lat = line("vxlan", 0);
        // p50 60 (1.50x native), p99 180 (1.50x), loss 0.50 %.
        assert!(lat.contains("60.0") && lat.contains("180"), "{t}");
        assert!(lat.contains("0.50%") && lat.contains("1.50x"), "{t}");
        assert!(lat.contains(" 12.5 "), "CPU per request: {t}");
        assert!(line("host-gw", 0).contains("1.00x"), "{t}");
        let thr = line("vxlan", 1);
        assert!(
            thr.contains("5.00") && thr.contains("7.50") && thr.contains("0.50x"),
            "{t}"
        );
        assert!(thr.contains(" - "), "no CPU figure shows as -: {t}");
        assert_eq!(
            line("geneve", 0),
            "geneve   unavailable: kernel has no geneve module"
        );
        assert!(t.contains("4 streams") && t.contains("(x host-gw)"), "{t}");
    }

    #[test]
    fn table_without_baseline_has_no_ratio_columns() {
        let s = summary(40.0, 10.0);
        let t = render_table(
            &[Row {
                label: "overlay",
                result: Ok(&s),
            }],
            None,
        );
        assert!(!t.contains("(x") && !t.contains("x "), "{t}");
        assert!(t.lines().any(|l| l.starts_with("overlay")), "{t}");
        let r = ratios(&summary(40.0, 10.0), &summary(0.0, 0.0));
        assert_eq!(r.udp_p50, None);
        assert_eq!(r.tcp_n, None);
    }
}
