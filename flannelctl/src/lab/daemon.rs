//! One `flanneld-rs` per node: its command line, start, and the wait until
//! it is ready (subnet.env written and /readyz answering 200).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use lease_store::subnet_env::SubnetEnv;

use super::names;
use super::probe;
use super::process::{self, ProcInfo, ProcessError};
use super::state::{LabState, NodeState};

pub const DAEMON_BIN: &str = "flanneld-rs";
/// The health server's port inside each node namespace (each node has its
/// own namespace, so one port number for all).
pub const HEALTHZ_PORT: u16 = 8471;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("flanneld-rs on node {node} exited during start-up; its log {log} ends with:\n{tail}")]
    Died {
        node: u32,
        log: PathBuf,
        tail: String,
    },
    #[error("flanneld-rs on node {node} was not ready within {secs} s ({why}); its log {log} ends with:\n{tail}")]
    NotReady {
        node: u32,
        secs: u64,
        why: String,
        log: PathBuf,
        tail: String,
    },
}

/// Extra daemon settings from `lab up`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonOptions {
    pub ip_masq: bool,
    pub resync_period: Option<String>,
    pub lease_ttl: Option<String>,
    /// Passed through verbatim, last (so they can override).
    pub extra: Vec<String>,
    /// `(node, flag)`: passed to that node's daemon only, after `extra`
    /// (e.g. one node with `--datapath-mode userspace` in a mixed lab).
    pub per_node: Vec<(u32, String)>,
}

/// Parses a `--node-daemon-arg` value `K=FLAG` (node index, then the flag).
pub fn parse_node_arg(text: &str) -> Result<(u32, String), String> {
    let (k, flag) = text.split_once('=').ok_or_else(|| {
        format!("--node-daemon-arg {text:?}: expected NODE=FLAG, e.g. 1=--datapath-mode=userspace")
    })?;
    let k = k
        .parse::<u32>()
        .map_err(|_| format!("--node-daemon-arg {text:?}: {k:?} is not a node number"))?;
    Ok((k, flag.to_string()))
}

/// The daemon's command line for `node` in lab `lab`.
pub fn argv(lab: &LabState, node: &NodeState, opts: &DaemonOptions) -> Vec<String> {
    let mut v: Vec<String> = vec![
        lab.bin_dir.join(DAEMON_BIN).display().to_string(),
        "--iface".into(),
        names::NODE_IFACE.into(),
        "--public-ip".into(),
        node.public_ip.clone(),
        "--subnet-file".into(),
        node.subnet_file.display().to_string(),
        "--healthz-ip".into(),
        "127.0.0.1".into(),
        "--healthz-port".into(),
        node.healthz_port.to_string(),
    ];
    match (&lab.store_path, &lab.etcd_endpoint) {
        (Some(path), _) => {
            v.extend([
                "--store".into(),
                "embedded".into(),
                "--store-path".into(),
                path.display().to_string(),
            ]);
        }
        (None, Some(endpoint)) => {
            v.extend([
                "--store".into(),
                "etcd".into(),
                "--etcd-endpoints".into(),
                endpoint.clone(),
            ]);
            if let Some(prefix) = &lab.etcd_prefix {
                v.extend(["--etcd-prefix".into(), prefix.clone()]);
            }
        }
        (None, None) => {}
    }
    if opts.ip_masq {
        v.push("--ip-masq".into());
    }
    if let Some(r) = &opts.resync_period {
        v.extend(["--resync-period".into(), r.clone()]);
    }
    if let Some(t) = &opts.lease_ttl {
        v.extend(["--lease-ttl".into(), t.clone()]);
    }
    v.extend(opts.extra.iter().cloned());
    v.extend(
        opts.per_node
            .iter()
            .filter(|(k, _)| *k == node.index)
            .map(|(_, flag)| flag.clone()),
    );
    v
}

pub fn start(node: &NodeState, argv: &[String]) -> Result<ProcInfo, DaemonError> {
    let log = node.dir.join("flanneld.log");
    Ok(process::spawn_detached(&node.netns, argv, &log)?)
}

/// Starts the daemon again with its recorded command line.
pub fn restart(p: &ProcInfo) -> Result<ProcInfo, DaemonError> {
    Ok(process::spawn_detached(&p.netns, &p.argv, &p.log)?)
}

/// Waits until the daemon of `node` is ready: subnet.env parses and
/// /readyz answers 200 (subnet.env alone says nothing after a restart: the
/// previous daemon wrote it). Returns the subnet.env.
pub fn wait_ready(
    node: &NodeState,
    p: &ProcInfo,
    within: Duration,
) -> Result<SubnetEnv, DaemonError> {
    let deadline = Instant::now() + within;
    let mut why;
    loop {
        match SubnetEnv::read(&node.subnet_file).ok() {
            Some(env) => match probe::get_status(&node.netns, node.healthz_port, "/readyz") {
                Ok(200) => return Ok(env),
                Ok(code) => why = format!("/readyz answered {code}"),
                Err(e) => why = e.to_string(),
            },
            None => why = format!("no fresh {}", node.subnet_file.display()),
        }
        if !p.alive() {
            return Err(DaemonError::Died {
                node: node.index,
                log: p.log.clone(),
                tail: process::log_tail(&p.log, 30),
            });
        }
        if Instant::now() >= deadline {
            return Err(DaemonError::NotReady {
                node: node.index,
                secs: within.as_secs(),
                why,
                log: p.log.clone(),
                tail: process::log_tail(&p.log, 30),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::state::LabState;

    fn lab(store: &str) -> LabState {
        let dir = PathBuf::from("/run/flannelctl/lab-t");
        LabState {
            name: "t".into(),
            backend: "vxlan".into(),
            store: store.into(),
            network: "10.244.0.0/16".into(),
            subnet_len: 24,
            underlay_mtu: 1500,
            state_dir: dir.clone(),
            bin_dir: "/opt/bin".into(),
            infra_ns: names::infra_ns("t"),
            etcd: None,
            etcd_endpoint: (store == "etcd").then(names::etcd_endpoint),
            etcd_prefix: None,
            store_path: (store == "embedded").then(|| dir.join("store.json")),
            net_config_path: dir.join("net-conf.json"),
            nodes: vec![],
            pods: vec![],
            phase: "creating".into(),
            kubeconfig: None,
            kubectl_netns: None,
            test_image: None,
            kube: None,
        }
    }

    fn node() -> NodeState {
        NodeState {
            index: 2,
            netns: names::node_ns("t", 2),
            public_ip: "198.51.100.2".into(),
            dir: "/run/flannelctl/lab-t/node2".into(),
            subnet_file: "/run/flannelctl/lab-t/node2/subnet.env".into(),
            healthz_port: HEALTHZ_PORT,
            daemon: None,
            subnet: None,
            mtu: None,
            daemon_alive: false,
        }
    }

    #[test]
    fn embedded_argv() {
        let opts = DaemonOptions {
            resync_period: Some("1s".into()),
            extra: vec!["--log-format".into(), "json".into()],
            per_node: vec![
                (node().index, "--datapath-mode=metadata".into()),
                (node().index + 1, "--not-for-this-node".into()),
            ],
            ..Default::default()
        };
        let v = argv(&lab("embedded"), &node(), &opts).join(" ");
        assert!(
            v.starts_with("/opt/bin/flanneld-rs --iface eth0 --public-ip 198.51.100.2"),
            "{v}"
        );
        assert!(
            v.contains("--store embedded --store-path /run/flannelctl/lab-t/store.json"),
            "{v}"
        );
        assert!(
            v.contains("--subnet-file /run/flannelctl/lab-t/node2/subnet.env"),
            "{v}"
        );
        assert!(
            v.ends_with("--resync-period 1s --log-format json --datapath-mode=metadata"),
            "{v}"
        );
        assert!(!v.contains("--not-for-this-node"), "{v}");
        assert!(!v.contains("--ip-masq") && !v.contains("etcd"), "{v}");
    }

    #[test]
    fn node_arg_parses() {
        assert_eq!(
            parse_node_arg("1=--datapath-mode=userspace"),
            Ok((1, "--datapath-mode=userspace".into()))
        );
        assert!(parse_node_arg("--datapath-mode").is_err());
        assert!(parse_node_arg("x=--a").is_err());
    }

    #[test]
    fn etcd_argv() {
        let opts = DaemonOptions {
            ip_masq: true,
            lease_ttl: Some("15s".into()),
            ..Default::default()
        };
        let v = argv(&lab("etcd"), &node(), &opts).join(" ");
        assert!(
            v.contains("--store etcd --etcd-endpoints http://198.51.100.254:2379"),
            "{v}"
        );
        assert!(
            v.contains("--ip-masq") && v.contains("--lease-ttl 15s"),
            "{v}"
        );
        assert!(
            !v.contains("--store-path") && !v.contains("--net-config-path"),
            "{v}"
        );
    }
}
