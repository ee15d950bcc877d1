//! flannelctl: the flannel-rs operator tool. This file only dispatches: each
//! subcommand is a module under src/<name>/ with its own `Args` and `run`.

mod compare;
mod lab;
mod leases;
mod plan;
mod probe;

use clap::{Parser, Subcommand};
use std::fmt::Display;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "flannelctl", version, about = "Operator tool for flannel-rs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// VPC IP budget: the AWS VPC CNI's IPs and max pods against an overlay's.
    Plan(plan::PlanArgs),
    /// A multi-node cluster in network namespaces on this machine.
    Lab(lab::LabArgs),
    /// Latency and throughput of each datapath, side by side, on a lab.
    Compare(compare::CompareArgs),
    /// Latency and throughput between two endpoints (server and client).
    Probe(probe::ProbeArgs),
    /// The lease table of any store: list, reserve, release.
    Leases(leases::LeasesArgs),
}

/// Prints a subcommand's error and turns it into exit status 1.
fn finish<E: Display>(result: Result<ExitCode, E>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("flannelctl: error: {e}");
        ExitCode::FAILURE
    })
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Plan(args) => finish(plan::run(&args)),
        Command::Lab(args) => finish(lab::run(&args)),
        Command::Compare(args) => finish(compare::run(&args)),
        Command::Probe(args) => finish(probe::run(&args)),
        Command::Leases(args) => finish(leases::run(&args)),
    }
}
