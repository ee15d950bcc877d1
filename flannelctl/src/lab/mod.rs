//! `flannelctl lab`: a multi-node flannel-rs cluster simulated in network
//! namespaces on one machine (see docs/LAB.md). This file holds the command
//! line and dispatch; each step lives in its own module.

mod bins;
pub(crate) mod daemon;
pub(crate) mod down;
mod embedded;
mod etcd;
pub(crate) mod kube;
pub(crate) mod names;
pub(crate) mod netconf;
mod ops;
mod pods;
mod probe;
mod process;
mod render;
mod sh;
pub(crate) mod state;
mod topology;
pub(crate) mod up;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab needs root (it creates network namespaces): run it with sudo")]
    NotRoot,
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Name(#[from] names::NameError),
    #[error(transparent)]
    Bin(#[from] bins::BinError),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Sh(#[from] sh::ShError),
    #[error(transparent)]
    Etcd(#[from] etcd::EtcdError),
    #[error(transparent)]
    Embedded(#[from] embedded::EmbeddedError),
    #[error(transparent)]
    Daemon(#[from] daemon::DaemonError),
    #[error(transparent)]
    Pod(#[from] pods::PodError),
    #[error(transparent)]
    Process(#[from] process::ProcessError),
    #[error(transparent)]
    Kube(#[from] kube::KubeError),
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("lab {0} already exists (state or namespaces left): run `flannelctl lab down --name {0}` first")]
    Exists(String),
    #[error("no lab named {0}: start one with `flannelctl lab up --name {0}`")]
    NoLab(String),
    #[error("node {node} has no route to node {peer}'s subnet {subnet} after {secs} s: the daemons did not converge; see <state dir>/node{node}/flanneld.log (keep it with --keep-on-error)")]
    NotConverged {
        node: u32,
        peer: u32,
        subnet: String,
        secs: u64,
    },
    #[error("the lab has no node {0}")]
    NoNode(u32),
    #[error("{0} was never started in this lab")]
    NotStarted(String),
    #[error("{0} is still running: stop it first with `flannelctl lab stop`")]
    Running(String),
}

#[derive(Debug, Args)]
pub struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Debug, Args)]
struct NameArg {
    /// The lab's name (lowercase letters and digits).
    #[arg(long, default_value = "lab")]
    name: String,
}

#[derive(Debug, Subcommand)]
enum LabCommand {
    /// Build the cluster: underlay, store, one flanneld-rs per node, pods.
    Up(Box<UpArgs>),
    /// Remove everything the lab made (also after a crash); idempotent.
    Down(NameArg),
    /// Show nodes, subnets, daemons and pods.
    Status {
        #[command(flatten)]
        name: NameArg,
        /// Print the state as JSON (for scripts and tests).
        #[arg(long)]
        json: bool,
    },
    /// Stop one node's daemon (SIGTERM: its datapath stays) or etcd.
    Stop(TargetArgs),
    /// Start a stopped daemon or etcd again and wait until it is ready.
    Start(TargetArgs),
    /// A node leaves: stop its daemon and delete its lease from the store.
    Leave {
        #[command(flatten)]
        name: NameArg,
        #[arg(long)]
        node: u32,
    },
    /// Run Kubernetes' own e2e tests (e2e.test of the lab's version) on a
    /// Kubernetes lab and print ginkgo's summary; exit 1 if any failed.
    Conformance {
        #[command(flatten)]
        name: NameArg,
        /// Which specs to run (ginkgo regular expression).
        #[arg(long, default_value = kube::conformance::DEFAULT_FOCUS)]
        focus: String,
        /// Which specs to leave out (ginkgo regular expression).
        #[arg(long, default_value = "")]
        skip: String,
        /// Where the JUnit file and e2e.test's output go (default: the
        /// lab's state directory, conformance/).
        #[arg(long)]
        report_dir: Option<PathBuf>,
    },
    /// Run kubectl against a Kubernetes lab (admin credentials, in the
    /// namespace that reaches the API server): `lab kubectl --name NAME --
    /// get pods -A`.
    Kubectl {
        #[command(flatten)]
        name: NameArg,
        /// kubectl's arguments, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Args)]
struct TargetArgs {
    #[command(flatten)]
    name: NameArg,
    /// The node whose daemon to act on.
    #[arg(long, conflicts_with = "etcd", required_unless_present = "etcd")]
    node: Option<u32>,
    /// Act on the lab's etcd instead.
    #[arg(long)]
    etcd: bool,
    /// With stop: SIGKILL (a crash) instead of SIGTERM.
    #[arg(long)]
    kill: bool,
    /// With start: how long to wait for readiness, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

#[derive(Debug, Args)]
struct UpArgs {
    #[command(flatten)]
    name: NameArg,
    /// Number of nodes (1-253).
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// Datapath: vxlan, vxlan-metadata, vxlan-userspace, geneve,
    /// geneve-userspace, host-gw, or a tunnel one with -ipv6 (over the
    /// lab's IPv6 underlay: vxlan-metadata-ipv6, ...).
    #[arg(long, default_value = "vxlan")]
    backend: String,
    /// Lease store: embedded (a file in the state dir) or etcd (started in
    /// the infra namespace).
    #[arg(long, default_value = "embedded", conflicts_with = "kubernetes")]
    store: String,
    /// Pods per node, attached by hand (a Kubernetes lab has pods through
    /// the API instead).
    #[arg(long, default_value_t = 2, conflicts_with = "kubernetes")]
    pods_per_node: u32,
    /// MTU of the underlay links (e.g. 9001 as on AWS).
    #[arg(long, default_value_t = 1500)]
    underlay_mtu: u32,
    /// Cluster network (net-conf.json Network).
    #[arg(long, default_value = "10.244.0.0/16")]
    network: String,
    #[arg(long, default_value_t = 24)]
    subnet_len: u8,
    /// Where flanneld-rs and flannel-rs are (default: next to flannelctl).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Daemons masquerade traffic leaving the cluster network.
    #[arg(long, conflicts_with = "kubernetes")]
    ip_masq: bool,
    /// Daemons' --resync-period (e.g. 1s).
    #[arg(long, conflicts_with = "kubernetes")]
    resync_period: Option<String>,
    /// Daemons' --lease-ttl (e.g. 30s).
    #[arg(long, conflicts_with = "kubernetes")]
    lease_ttl: Option<String>,
    /// Extra daemon flag, repeatable (e.g. --daemon-arg=--log-format=json).
    #[arg(
        long = "daemon-arg",
        allow_hyphen_values = true,
        conflicts_with = "kubernetes"
    )]
    daemon_args: Vec<String>,
    /// Extra flag for one node's daemon, repeatable: NODE=FLAG (e.g.
    /// --node-daemon-arg=1=--datapath-mode=userspace for a mixed lab).
    #[arg(long = "node-daemon-arg", allow_hyphen_values = true, value_parser = daemon::parse_node_arg, conflicts_with = "kubernetes")]
    node_daemon_args: Vec<(u32, String)>,
    /// Seconds to wait for each daemon to become ready (with
    /// --kubernetes: for each phase; default 60, 300 with --kubernetes).
    #[arg(long)]
    ready_timeout: Option<u64>,
    /// A real Kubernetes 1.20 instead of hand-started daemons: control
    /// plane in the infra namespace, containerd + kubelet + kube-proxy per
    /// node, flanneld-rs deployed by the project's DaemonSet manifest.
    /// Needs scripts/k8s-build.sh and deploy/image/build.sh run first.
    #[arg(long)]
    kubernetes: bool,
    /// With --kubernetes: where the Kubernetes binaries are.
    #[arg(long, requires = "kubernetes", default_value = kube::DEFAULT_K8S_BIN_DIR)]
    k8s_bin_dir: PathBuf,
    /// With --kubernetes: where the image archives are.
    #[arg(long, requires = "kubernetes", default_value = kube::DEFAULT_IMAGE_DIR)]
    image_dir: PathBuf,
    /// With --kubernetes: containerd's log level (debug, info, warn,
    /// error); debug logs when each CNI ADD begins and ends.
    #[arg(long, requires = "kubernetes", default_value = "info")]
    containerd_log_level: String,
    /// With --kubernetes: the controller manager assigns no podCIDRs (as
    /// on EKS) and flanneld-rs keeps its subnets in Lease objects
    /// (`--kube-subnet-source lease`).
    #[arg(long, requires = "kubernetes")]
    no_node_cidrs: bool,
    /// On failure, leave what was built for inspection (default: remove it).
    #[arg(long)]
    keep_on_error: bool,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn run(args: &LabArgs) -> Result<ExitCode, LabError> {
    if !is_root() {
        return Err(LabError::NotRoot);
    }
    match &args.command {
        LabCommand::Up(a) => run_up(a),
        LabCommand::Down(n) => {
            let r = down::down(&n.name)?;
            for w in &r.warnings {
                eprintln!("flannelctl: warning: {w}");
            }
            println!(
                "lab {}: stopped {} processes, removed {} namespaces",
                n.name,
                r.stopped,
                r.namespaces.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Status { name, json } => {
            let mut st = ops::load(&name.name)?;
            ops::refresh(&mut st);
            if *json {
                let text = serde_json::to_string_pretty(&st)
                    .map_err(|e| LabError::Usage(format!("cannot encode the state: {e}")))?;
                println!("{text}");
            } else {
                print!("{}", render::table(&st));
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Stop(t) => {
            let st = ops::load(&t.name.name)?;
            ops::stop(&st, target(t), t.kill)?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Start(t) => {
            let mut st = ops::load(&t.name.name)?;
            ops::start(&mut st, target(t), Duration::from_secs(t.timeout))?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Leave { name, node } => {
            let mut st = ops::load(&name.name)?;
            let key = ops::leave(&mut st, *node)?;
            println!("node {node} left: daemon stopped, lease {key} deleted");
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Conformance {
            name,
            focus,
            skip,
            report_dir,
        } => {
            let st = ops::load(&name.name)?;
            let o = kube::conformance::Options {
                focus: focus.clone(),
                skip: skip.clone(),
                report_dir: report_dir
                    .clone()
                    .unwrap_or_else(|| st.state_dir.join("conformance")),
            };
            let s = kube::conformance::run(&st, &o)?;
            println!(
                "ran {} of {} specs: {} passed, {} failed, {} skipped",
                s.ran, s.of, s.passed, s.failed, s.skipped
            );
            for f in &s.failures {
                println!("FAILED: {f}");
            }
            println!("JUnit and output: {}", o.report_dir.display());
            Ok(if s.failed == 0 && s.ran > 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        LabCommand::Kubectl { name, args } => {
            let st = ops::load(&name.name)?;
            let code = kube::passthrough(&st, args)?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
    }
}

fn target(t: &TargetArgs) -> ops::Target {
    match t.node {
        Some(k) if !t.etcd => ops::Target::Node(k),
        _ => ops::Target::Etcd,
    }
}

fn run_up(a: &UpArgs) -> Result<ExitCode, LabError> {
    let opts = up::UpOptions {
        name: a.name.name.clone(),
        nodes: a.nodes,
        backend: a.backend.clone(),
        store: a.store.clone(),
        pods_per_node: a.pods_per_node,
        underlay_mtu: a.underlay_mtu,
        network: a.network.clone(),
        subnet_len: a.subnet_len,
        bin_dir: a.bin_dir.clone(),
        daemon: daemon::DaemonOptions {
            ip_masq: a.ip_masq,
            resync_period: a.resync_period.clone(),
            lease_ttl: a.lease_ttl.clone(),
            extra: a.daemon_args.clone(),
            per_node: a.node_daemon_args.clone(),
        },
        ready_timeout: Duration::from_secs(a.ready_timeout.unwrap_or(if a.kubernetes {
            300
        } else {
            60
        })),
        kubernetes: a.kubernetes.then(|| kube::KubeOptions {
            k8s_bin_dir: Some(a.k8s_bin_dir.clone()),
            image_dir: Some(a.image_dir.clone()),
            containerd_log_level: Some(a.containerd_log_level.clone()),
            no_node_cidrs: a.no_node_cidrs,
        }),
    };
    match up::up(&opts) {
        Ok(mut st) => {
            ops::refresh(&mut st);
            print!("{}", render::table(&st));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            // An existing lab is not ours to remove.
            if !a.keep_on_error && !matches!(e, LabError::Exists(_) | LabError::Name(_)) {
                if let Err(d) = down::down(&a.name.name) {
                    eprintln!("flannelctl: warning: cleaning up after the failure: {d}");
                }
            } else if a.keep_on_error {
                eprintln!(
                    "flannelctl: kept the partial lab; remove it with `flannelctl lab down --name {}`",
                    a.name.name
                );
            }
            Err(e)
        }
    }
}
