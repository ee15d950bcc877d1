//! Pools a datapath's rounds into one row: latency histograms are merged
//! (every sample of every round counts once), throughput and CPU per Gbit
//! are the median over rounds (one slow round on a busy machine does not
//! drag the figure).

use crate::probe::hist::Histogram;
use crate::probe::report::{LatencySummary, PathSummary, ProbeReport};

/// Median of the values; the mean of the middle two for an even count.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The merged UDP and TCP request/response histograms of all rounds.
pub fn merged(rounds: &[ProbeReport]) -> (Histogram, Histogram) {
    let mut udp = Histogram::new();
    let mut tcp = Histogram::new();
    for r in rounds {
        udp.merge(&r.udp_rr.histogram);
        tcp.merge(&r.tcp_rr.histogram);
    }
    (udp, tcp)
}

/// One row for all rounds; None without rounds.
pub fn aggregate(rounds: &[ProbeReport]) -> Option<PathSummary> {
    let first = rounds.first()?;
    let (udp, tcp) = merged(rounds);
    let col = |f: &dyn Fn(&ProbeReport) -> Option<f64>| -> Vec<f64> {
        rounds.iter().filter_map(f).collect()
    };
    Some(PathSummary {
        udp_rr: LatencySummary::of(&udp),
        udp_sent: rounds.iter().map(|r| r.udp_rr.sent).sum(),
        udp_lost: rounds.iter().map(|r| r.udp_rr.lost).sum(),
        tcp_rr: LatencySummary::of(&tcp),
        streams: first.tcp_n.streams,
        tcp_1_gbit_per_s: median(&col(&|r| Some(r.tcp_1.gbit_per_s))).unwrap_or(0.0),
        tcp_n_gbit_per_s: median(&col(&|r| Some(r.tcp_n.gbit_per_s))).unwrap_or(0.0),
        cpu_s_per_gbit_1: median(&col(&|r| r.tcp_1.cpu_s_per_gbit)),
        cpu_s_per_gbit_n: median(&col(&|r| r.tcp_n.cpu_s_per_gbit)),
        udp_cpu_us_per_request: median(&col(&|r| r.udp_rr.cpu_us_per_request)),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::probe::report::{TcpRr, Throughput, UdpRr, SCHEMA};

    /// A round whose UDP samples are `udp_us` (microseconds) and whose
    /// throughput is `gbit`.
    pub fn round(udp_us: &[u64], gbit: f64, cpu: Option<f64>) -> ProbeReport {
        let mut h = Histogram::new();
        for v in udp_us {
            h.record(v * 1000);
        }
        let mut t = Histogram::new();
        for v in udp_us {
            t.record(v * 1200);
        }
        let thr = |streams| Throughput {
            streams,
            bytes: (gbit * 1e9 / 8.0) as u64,
            seconds: 1.0,
            gbit_per_s: gbit,
            cpu_busy_s: cpu.map(|c| c * gbit),
            cpu_busy_fraction: Some(0.5),
            cpu_s_per_gbit: cpu,
        };
        ProbeReport {
            schema: SCHEMA.into(),
            server: "10.244.1.2:7100".into(),
            duration_s: 1.0,
            size: 64,
            cpus: 2,
            udp_rr: UdpRr {
                sent: h.count + 1,
                received: h.count,
                lost: 1,
                timeout_ms: 200,
                latency: LatencySummary::of(&h),
                histogram: h,
                cpu_us_per_request: cpu.map(|c| c * 100.0),
            },
            tcp_rr: TcpRr {
                cpu_us_per_request: None,
                transactions: t.count,
                latency: LatencySummary::of(&t),
                histogram: t,
            },
            tcp_1: thr(1),
            tcp_n: thr(4),
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 2.0]), Some(2.0));
    }

    #[test]
    fn rounds_pool_samples_and_take_median_throughput() {
        let rounds = [
            round(&[10, 20, 30], 9.0, Some(0.2)),
            round(&[40, 50], 1.0, None),
            round(&[60, 70, 80, 90, 100], 8.0, Some(0.4)),
        ];
        let s = aggregate(&rounds).unwrap();
        // 10 samples pooled: 10..100 us; nearest-rank p50 is the 5th (50).
        assert_eq!(s.udp_rr.count, 10);
        assert!(
            (s.udp_rr.p50_us - 50.0).abs() / 50.0 < 0.005,
            "{}",
            s.udp_rr.p50_us
        );
        assert!((s.udp_rr.max_us - 100.0).abs() < 1e-9);
        assert_eq!((s.udp_sent, s.udp_lost), (13, 3));
        assert_eq!(s.tcp_1_gbit_per_s, 8.0);
        assert_eq!(s.streams, 4);
        // The round without a CPU figure is left out of that median.
        assert_eq!(s.cpu_s_per_gbit_n, Some((0.2 + 0.4) / 2.0));
        assert_eq!(aggregate(&[]), None);
    }
}
