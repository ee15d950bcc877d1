//! The result of a `compare` run (the `--json` schema
//! `flannelctl-compare/1`) and its table and figure, built from the rounds.

use serde::{Deserialize, Serialize};

use crate::probe::report::{self, PathSummary, ProbeReport, Ratios, Row};

use super::aggregate;
use super::datapaths::BASELINE;
use super::machine::Machine;
use super::svg;

pub const SCHEMA: &str = "flannelctl-compare/1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub datapaths: Vec<String>,
    pub duration_s: f64,
    pub rounds: u32,
    pub streams: u32,
    pub size: usize,
    pub underlay_mtu: u32,
    /// `--daemon-arg`s given to every daemon.
    #[serde(default)]
    pub daemon_args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every round measured.
    Ok,
    /// The lab could not be built (e.g. the kernel lacks the module).
    Unavailable,
    /// The lab came up but a measurement failed.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatapathReport {
    pub name: String,
    pub lab: String,
    pub status: Status,
    /// Why it is unavailable or failed, one line.
    pub reason: Option<String>,
    /// The pods' MTU (FLANNEL_MTU of the nodes).
    pub pod_mtu: Option<u32>,
    /// Every round's probe report, in order.
    pub rounds: Vec<ProbeReport>,
    /// Rounds pooled (latency merged, throughput median).
    pub aggregate: Option<PathSummary>,
    /// Against the baseline, when both have numbers.
    pub ratios: Option<Ratios>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareReport {
    pub schema: String,
    pub machine: Machine,
    pub settings: Settings,
    pub baseline: String,
    pub datapaths: Vec<DatapathReport>,
}

/// A datapath as measured, before aggregation.
pub struct Measured {
    pub name: String,
    pub lab: String,
    pub pod_mtu: Option<u32>,
    pub rounds: Vec<ProbeReport>,
    /// `Some` when unavailable (`lab_up_failed`) or failed.
    pub problem: Option<(Status, String)>,
}

pub fn build(machine: Machine, settings: Settings, measured: Vec<Measured>) -> CompareReport {
    let mut datapaths: Vec<DatapathReport> = measured
        .into_iter()
        .map(|m| {
            let (status, reason) = match m.problem {
                Some((s, r)) => (s, Some(r)),
                None => (Status::Ok, None),
            };
            DatapathReport {
                aggregate: if status == Status::Ok {
                    aggregate::aggregate(&m.rounds)
                } else {
                    None
                },
                name: m.name,
                lab: m.lab,
                status,
                reason,
                pod_mtu: m.pod_mtu,
                rounds: m.rounds,
                ratios: None,
            }
        })
        .collect();
    let base = datapaths
        .iter()
        .find(|d| d.name == BASELINE)
        .and_then(|d| d.aggregate.clone());
    if let Some(b) = base {
        for d in &mut datapaths {
            d.ratios = d.aggregate.as_ref().map(|a| report::ratios(a, &b));
        }
    }
    CompareReport {
        schema: SCHEMA.into(),
        machine,
        settings,
        baseline: BASELINE.into(),
        datapaths,
    }
}

fn note(d: &DatapathReport) -> String {
    let why = d.reason.as_deref().unwrap_or("no rounds");
    match d.status {
        Status::Failed => format!("failed: {why}"),
        _ => format!("unavailable: {why}"),
    }
}

/// The table printed at the end of a run.
pub fn table(r: &CompareReport) -> String {
    let notes: Vec<String> = r.datapaths.iter().map(note).collect();
    let rows: Vec<Row> = r
        .datapaths
        .iter()
        .zip(&notes)
        .map(|(d, n)| Row {
            label: &d.name,
            result: d.aggregate.as_ref().ok_or(n.as_str()),
        })
        .collect();
    let m = &r.machine;
    let s = &r.settings;
    let mut out = format!(
        "flannelctl compare: rounds {} (interleaved), {} s per test; {} B messages; {} streams; underlay MTU {}\n\
         machine: kernel {}, {} CPUs ({}), load {:.2} at start, {:.2} at end; {} to {}\n\n",
        s.rounds,
        s.duration_s,
        s.size,
        s.streams,
        s.underlay_mtu,
        m.kernel,
        m.cpus,
        m.cpu_model,
        m.loadavg_start[0],
        m.loadavg_end[0],
        m.started_utc,
        m.finished_utc,
    );
    if !s.daemon_args.is_empty() {
        out.insert_str(
            out.len() - 1,
            &format!("daemons: {}\n", s.daemon_args.join(" ")),
        );
    }
    out.push_str(&report::render_table(&rows, Some(&r.baseline)));
    out
}

/// The SVG figure of a run.
pub fn figure(r: &CompareReport) -> String {
    let merged: Vec<_> = r
        .datapaths
        .iter()
        .map(|d| {
            if d.aggregate.is_some() {
                Some(aggregate::merged(&d.rounds))
            } else {
                None
            }
        })
        .collect();
    let notes: Vec<String> = r.datapaths.iter().map(note).collect();
    let series: Vec<svg::Series> = r
        .datapaths
        .iter()
        .zip(&merged)
        .zip(&notes)
        .map(|((d, m), n)| svg::Series {
            name: &d.name,
            unavailable: d
                .aggregate
                .is_none()
                .then(|| n.split_once(": ").map_or(n.as_str(), |(_, w)| w)),
            udp: m.as_ref().map(|(u, _)| u),
            tcp: m.as_ref().map(|(_, t)| t),
            tcp_1: d.aggregate.as_ref().map_or(0.0, |a| a.tcp_1_gbit_per_s),
            tcp_n: d.aggregate.as_ref().map_or(0.0, |a| a.tcp_n_gbit_per_s),
            cpu_per_req: d.aggregate.as_ref().and_then(|a| a.udp_cpu_us_per_request),
        })
        .collect();
    let m = &r.machine;
    let s = &r.settings;
    let subtitle = format!(
        "{} · kernel {} · {} CPUs ({}) · load {:.1} → {:.1} · pod to pod across 2 lab nodes · rounds: {} (interleaved) × {} s per test · {} B messages",
        m.started_utc,
        m.kernel,
        m.cpus,
        m.cpu_model,
        m.loadavg_start[0],
        m.loadavg_end[0],
        s.rounds,
        s.duration_s,
        s.size
    );
    svg::render(&svg::Figure {
        title: "flannel-rs datapaths: latency and throughput",
        subtitle: &subtitle,
        streams: s.streams,
        series: &series,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::aggregate::tests::round;

    fn sample() -> CompareReport {
        let settings = Settings {
            datapaths: vec!["host-gw".into(), "vxlan".into(), "geneve".into()],
            duration_s: 1.0,
            rounds: 2,
            streams: 4,
            size: 64,
            underlay_mtu: 9001,
            daemon_args: Vec::new(),
        };
        let measured = vec![
            Measured {
                name: "host-gw".into(),
                lab: "cmphgw".into(),
                pod_mtu: Some(9001),
                rounds: vec![
                    round(&[40, 50], 10.0, Some(0.3)),
                    round(&[45], 12.0, Some(0.3)),
                ],
                problem: None,
            },
            Measured {
                name: "vxlan".into(),
                lab: "cmpvx".into(),
                pod_mtu: Some(8951),
                rounds: vec![round(&[80, 100], 5.0, None), round(&[90], 6.0, None)],
                problem: None,
            },
            Measured {
                name: "geneve".into(),
                lab: "cmpgn".into(),
                pod_mtu: None,
                rounds: vec![],
                problem: Some((Status::Unavailable, "no geneve module".into())),
            },
        ];
        build(Machine::default(), settings, measured)
    }

    #[test]
    fn ratios_to_the_baseline_and_unavailable_rows() {
        let r = sample();
        let vx = &r.datapaths[1];
        let q = vx.ratios.unwrap();
        // Throughput medians: 11 vs 5.5 Gbit/s.
        assert!((q.tcp_1.unwrap() - 0.5).abs() < 1e-9, "{q:?}");
        assert!(q.udp_p50.unwrap() > 1.5);
        assert_eq!(r.datapaths[2].status, Status::Unavailable);
        assert!(r.datapaths[2].aggregate.is_none() && r.datapaths[2].ratios.is_none());
        let t = table(&r);
        assert!(t.contains("geneve   unavailable: no geneve module"), "{t}");
        assert!(t.contains("(x host-gw)"), "{t}");
        // The JSON round-trips with the stable names.
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""schema":"flannelctl-compare/1""#));
        assert!(text.contains(r#""status":"unavailable""#));
        let back: CompareReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn figure_has_a_line_per_measured_datapath() {
        let svg = figure(&sample());
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let n = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("series"))
            .count();
        assert_eq!(n, 4, "host-gw and vxlan in both latency panels");
        assert!(svg.contains("geneve: unavailable: no geneve module"));
    }
}
