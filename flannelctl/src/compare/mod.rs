//! `flannelctl compare`: one 2-node lab per datapath, the probe between
//! their pods in interleaved rounds (A B C A B C ...), then a table with
//! ratios to host-gw (native routing), a JSON report and an SVG figure.
//! See docs/COMPARE.md.

mod aggregate;
pub mod datapaths;
mod labs;
mod machine;
mod reason;
mod report;
mod runner;
mod signal;
mod svg;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::probe::args::{self, ArgError};
use datapaths::DatapathError;
use labs::{LabOptions, LabSet, Slot};
use report::{Measured, Status};

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("compare builds labs (network namespaces): run it as root, e.g. with sudo")]
    NotRoot,
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error(transparent)]
    Arg(#[from] ArgError),
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{flag} {path}: cannot write: {source}")]
    Output {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lab {lab} {why}")]
    Lab { lab: String, why: String },
    #[error("lab {lab}: {why}")]
    Probe { lab: String, why: String },
    #[error("cannot encode the report: {0}")]
    Json(#[from] serde_json::Error),
    #[error("interrupted; the labs were removed")]
    Interrupted,
    #[error("the measurement failed for {0}; see the table above (the labs were removed; keep them with --keep to investigate)")]
    Failed(String),
    #[error("no datapath could be measured: every lab failed to come up (reasons above)")]
    NothingRan,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Datapaths to compare, in this order (host-gw is the baseline).
    #[arg(long, default_value = datapaths::DEFAULT)]
    datapaths: String,
    /// Length of each of the four tests per round (e.g. 3s, 500ms).
    #[arg(long, default_value = "3s")]
    duration: String,
    /// Rounds; each round measures every datapath once, in order.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Parallel TCP streams for the N-stream throughput test (1-64).
    #[arg(long, default_value_t = 4)]
    streams: u32,
    /// Request/response message size in bytes (16-65000).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Write the full report (every round, aggregates, machine) here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw the latency percentiles and throughput bars here.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Leave the labs up afterwards (remove them with `lab down`).
    #[arg(long)]
    keep: bool,
    /// Lab names are this plus a datapath tag (e.g. cmpvx for vxlan).
    #[arg(long, default_value = "cmp")]
    lab_prefix: String,
    /// MTU of the lab underlay (9001 as in an AWS VPC).
    #[arg(long, default_value_t = 9001)]
    underlay_mtu: u32,
    /// Where flanneld-rs and flannel-rs are (default: next to flannelctl).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Seconds to wait for each lab's daemons.
    #[arg(long, default_value_t = 60)]
    ready_timeout: u64,
    /// Extra flag for every daemon of every lab, repeatable (e.g.
    /// --daemon-arg=--userspace-busy-poll=0).
    #[arg(long = "daemon-arg", allow_hyphen_values = true)]
    daemon_args: Vec<String>,
}

/// The checked flags.
struct Plan {
    datapaths: Vec<String>,
    probe: runner::Settings,
    rounds: u32,
}

fn plan(a: &CompareArgs) -> Result<Plan, CompareError> {
    let datapaths = datapaths::parse(&a.datapaths)?;
    datapaths::check_prefix(&a.lab_prefix)?;
    let duration = args::parse_duration("--duration", &a.duration)?;
    args::check_range("--rounds", u64::from(a.rounds), 1, 100)?;
    args::check_range("--streams", u64::from(a.streams), 1, 64)?;
    args::check_range(
        "--size",
        a.size as u64,
        crate::probe::wire::UDP_HEADER as u64,
        crate::probe::server::MAX_SIZE as u64,
    )?;
    args::check_range("--underlay-mtu", u64::from(a.underlay_mtu), 1280, 65_535)?;
    args::check_range("--ready-timeout", a.ready_timeout, 1, 3600)?;
    Ok(Plan {
        datapaths,
        probe: runner::Settings {
            duration,
            streams: a.streams,
            size: a.size,
        },
        rounds: a.rounds,
    })
}

/// Opens an output file now, so a bad path fails before the labs are built.
fn open_output(flag: &'static str, path: &Path) -> Result<File, CompareError> {
    File::create(path).map_err(|source| CompareError::Output {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

fn write_output(
    flag: &'static str,
    path: &Path,
    mut f: File,
    text: &str,
) -> Result<(), CompareError> {
    f.write_all(text.as_bytes())
        .map_err(|source| CompareError::Output {
            flag,
            path: path.to_path_buf(),
            source,
        })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn run(a: &CompareArgs) -> Result<ExitCode, CompareError> {
    let p = plan(a)?;
    if !is_root() {
        return Err(CompareError::NotRoot);
    }
    let json_out = match &a.json {
        Some(path) => Some((path, open_output("--json", path)?)),
        None => None,
    };
    let svg_out = match &a.svg {
        Some(path) => Some((path, open_output("--svg", path)?)),
        None => None,
    };
    signal::install();
    let mut machine = machine::start();
    let set = LabSet::up(
        &p.datapaths,
        &LabOptions {
            prefix: a.lab_prefix.clone(),
            underlay_mtu: a.underlay_mtu,
            ready_timeout: Duration::from_secs(a.ready_timeout),
            keep: a.keep,
            bin_dir: a.bin_dir.clone(),
            daemon_args: a.daemon_args.clone(),
        },
    );
    if signal::stopped() {
        return Err(CompareError::Interrupted);
    }
    let mut measured: Vec<Measured> = set
        .labs
        .iter()
        .map(|(dp, name, slot)| Measured {
            name: dp.clone(),
            lab: name.clone(),
            pod_mtu: match slot {
                Slot::Up(st) => st.nodes.first().and_then(|n| n.mtu),
                Slot::Unavailable(_) => None,
            },
            rounds: vec![],
            problem: match slot {
                Slot::Up(_) => None,
                Slot::Unavailable(why) => Some((Status::Unavailable, why.clone())),
            },
        })
        .collect();
    if measured.iter().all(|m| m.problem.is_some()) {
        for m in &measured {
            if let Some((_, why)) = &m.problem {
                eprintln!("compare: {}: {why}", m.name);
            }
        }
        return Err(CompareError::NothingRan);
    }
    for round in 1..=p.rounds {
        for (i, (dp, _, slot)) in set.labs.iter().enumerate() {
            let Slot::Up(st) = slot else { continue };
            if measured[i].problem.is_some() {
                continue;
            }
            if signal::stopped() {
                return Err(CompareError::Interrupted);
            }
            eprintln!("compare: round {round}/{}: {dp}", p.rounds);
            match runner::measure(st, &p.probe) {
                Ok(r) => measured[i].rounds.push(r),
                Err(e) => {
                    if signal::stopped() {
                        return Err(CompareError::Interrupted);
                    }
                    eprintln!("compare: {dp} failed in round {round}: {e}");
                    measured[i].problem = Some((Status::Failed, format!("round {round}: {e}")));
                }
            }
        }
    }
    machine::finish(&mut machine);
    let settings = report::Settings {
        datapaths: p.datapaths.clone(),
        duration_s: p.probe.duration.as_secs_f64(),
        rounds: p.rounds,
        streams: p.probe.streams,
        size: p.probe.size,
        underlay_mtu: a.underlay_mtu,
        daemon_args: a.daemon_args.clone(),
    };
    let rep = report::build(machine, settings, measured);
    print!("{}", report::table(&rep));
    if let Some((path, f)) = json_out {
        write_output("--json", path, f, &serde_json::to_string_pretty(&rep)?)?;
        println!("\nJSON report: {}", path.display());
    }
    if let Some((path, f)) = svg_out {
        write_output("--svg", path, f, &report::figure(&rep))?;
        println!("figure: {}", path.display());
    }
    drop(set);
    let failed: Vec<&str> = rep
        .datapaths
        .iter()
        .filter(|d| d.status == Status::Failed)
        .map(|d| d.name.as_str())
        .collect();
    if !failed.is_empty() {
        return Err(CompareError::Failed(failed.join(", ")));
    }
    Ok(ExitCode::SUCCESS)
}

/// A made-up probe report for other modules' tests.
#[cfg(test)]
pub fn test_round() -> crate::probe::report::ProbeReport {
    aggregate::tests::round(&[40, 50, 60], 5.0, Some(0.3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(extra: &[&str]) -> Result<Plan, String> {
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: CompareArgs,
        }
        let mut argv = vec!["t"];
        argv.extend(extra);
        let t = T::try_parse_from(argv).map_err(|e| e.to_string())?;
        plan(&t.a).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_flag_errors() {
        let p = parse(&[]).unwrap();
        assert_eq!(p.datapaths.len(), 6);
        assert_eq!(p.datapaths[0], "host-gw");
        assert_eq!((p.rounds, p.probe.streams), (3, 4));
        assert_eq!(p.probe.duration, Duration::from_secs(3));
        let err = |x: &[&str]| parse(x).err().unwrap_or_default();
        assert!(err(&["--datapaths", "host-gw,vxlam"]).contains("unknown datapath \"vxlam\""));
        assert_eq!(err(&["--duration", "0s"]), "--duration must be more than 0");
        assert_eq!(err(&["--streams", "0"]), "--streams must be more than 0");
        assert_eq!(err(&["--rounds", "0"]), "--rounds must be more than 0");
        assert!(err(&["--lab-prefix", "Cmp"]).contains("--lab-prefix"));
        assert!(err(&["--underlay-mtu", "500"]).contains("--underlay-mtu 500 is too small"));
    }
}
