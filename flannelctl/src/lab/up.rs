//! `lab up`: underlay, store, one daemon per node, pods; the state file is
//! saved after every step so `lab down` can undo a partial run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::bins;
use super::daemon::{self, DaemonOptions};
use super::etcd;
use super::names;
use super::netconf;
use super::pods::{self, CNI_BIN};
use super::state::{LabState, NodeState, PodState};
use super::topology;
use super::LabError;

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub name: String,
    pub nodes: u32,
    pub backend: String,
    pub store: String,
    pub pods_per_node: u32,
    pub underlay_mtu: u32,
    pub network: String,
    pub subnet_len: u8,
    pub bin_dir: Option<PathBuf>,
    pub daemon: DaemonOptions,
    pub ready_timeout: Duration,
    /// Set for `--kubernetes`: a real Kubernetes with the DaemonSet.
    pub kubernetes: Option<super::kube::KubeOptions>,
}

#[cfg(test)]
impl UpOptions {
    pub fn for_tests() -> Self {
        UpOptions {
            name: "t".into(),
            nodes: 3,
            backend: "vxlan".into(),
            store: "embedded".into(),
            pods_per_node: 0,
            underlay_mtu: 1500,
            network: "10.244.0.0/16".into(),
            subnet_len: 24,
            bin_dir: None,
            daemon: DaemonOptions::default(),
            ready_timeout: Duration::from_secs(60),
            kubernetes: None,
        }
    }
}

pub fn up(o: &UpOptions) -> Result<LabState, LabError> {
    if let Some(k) = &o.kubernetes {
        return super::kube::up(o, k);
    }
    names::validate_name(&o.name)?;
    names::validate_nodes(o.nodes)?;
    if !netconf::BACKENDS.contains(&o.backend.as_str()) {
        return Err(LabError::Usage(format!(
            "--backend {} is not one of {}",
            o.backend,
            netconf::BACKENDS.join(", ")
        )));
    }
    let bin_dir = bins::bin_dir(o.bin_dir.as_deref())?;
    bins::require(&bin_dir, daemon::DAEMON_BIN, "flanneld-rs")?;
    bins::require(&bin_dir, CNI_BIN, "cni-plugin")?;
    let etcd_mode = match o.store.as_str() {
        "etcd" => {
            etcd::check_installed()?;
            true
        }
        "embedded" => false,
        other => {
            return Err(LabError::Usage(format!(
                "--store {other} is not one of embedded, etcd"
            )))
        }
    };

    let dir = names::state_dir(&o.name);
    let leftovers: Vec<String> = super::sh::list_netns()?
        .into_iter()
        .filter(|ns| names::is_lab_ns(&o.name, ns))
        .collect();
    if dir.exists() || !leftovers.is_empty() {
        return Err(LabError::Exists(o.name.clone()));
    }
    std::fs::create_dir_all(&dir).map_err(|source| LabError::Io {
        what: format!("create {}", dir.display()),
        source,
    })?;

    let net_conf = netconf::net_conf(&o.network, o.subnet_len, &o.backend);
    let net_config_path = dir.join("net-conf.json");
    write(&net_config_path, &net_conf)?;

    let mut st = LabState {
        name: o.name.clone(),
        backend: o.backend.clone(),
        store: o.store.clone(),
        network: o.network.clone(),
        subnet_len: o.subnet_len,
        underlay_mtu: o.underlay_mtu,
        state_dir: dir.clone(),
        bin_dir,
        infra_ns: names::infra_ns(&o.name),
        etcd: None,
        etcd_endpoint: etcd_mode.then(names::etcd_endpoint),
        etcd_prefix: etcd_mode.then(|| etcd::PREFIX.to_string()),
        store_path: (!etcd_mode).then(|| dir.join("store.json")),
        net_config_path,
        nodes: vec![],
        pods: vec![],
        phase: "creating".into(),
        kubeconfig: None,
        kubectl_netns: None,
        test_image: None,
        kube: None,
    };
    st.save()?;

    // Underlay.
    topology::add_netns(&st.infra_ns)?;
    topology::setup_infra(&st.infra_ns, o.underlay_mtu)?;
    for k in 1..=o.nodes {
        let node_dir = dir.join(format!("node{k}"));
        std::fs::create_dir_all(&node_dir).map_err(|source| LabError::Io {
            what: format!("create {}", node_dir.display()),
            source,
        })?;
        let node = NodeState {
            index: k,
            netns: names::node_ns(&o.name, k),
            public_ip: names::node_ip(k).to_string(),
            subnet_file: node_dir.join("subnet.env"),
            dir: node_dir,
            healthz_port: daemon::HEALTHZ_PORT,
            daemon: None,
            subnet: None,
            mtu: None,
            daemon_alive: false,
        };
        topology::add_netns(&node.netns)?;
        st.nodes.push(node);
        st.save()?;
        topology::attach_node(&st.infra_ns, &names::node_ns(&o.name, k), k, o.underlay_mtu)?;
    }

    // Store.
    if etcd_mode {
        let p = etcd::start(&st.infra_ns, &dir.join("etcd"), &dir.join("etcd.log"))?;
        st.etcd = Some(p);
        st.save()?;
        etcd::put_config(&st.infra_ns, etcd::PREFIX, &net_conf)?;
    } else if let Some(path) = &st.store_path {
        super::embedded::init(path, &net_conf)?;
    }

    // Daemons: start all, then wait, so they come up in parallel.
    for i in 0..st.nodes.len() {
        let argv = daemon::argv(&st, &st.nodes[i], &o.daemon);
        let p = daemon::start(&st.nodes[i], &argv)?;
        st.nodes[i].daemon = Some(p);
        st.save()?;
    }
    for i in 0..st.nodes.len() {
        let node = &st.nodes[i];
        let Some(p) = node.daemon.clone() else {
            continue;
        };
        let env = daemon::wait_ready(node, &p, o.ready_timeout)?;
        st.nodes[i].subnet = env.subnet.map(|s| s.to_string());
        st.nodes[i].mtu = Some(env.mtu);
        st.save()?;
    }

    wait_converged(&st, o.ready_timeout)?;

    // Pods.
    for i in 0..st.nodes.len() {
        for j in 1..=o.pods_per_node {
            let k = st.nodes[i].index;
            let pod = PodState {
                node: k,
                index: j,
                netns: names::pod_ns(&o.name, k, j),
                container_id: format!("lab-{}-n{k}p{j}", o.name),
                ip: None,
            };
            topology::add_netns(&pod.netns)?;
            st.pods.push(pod.clone());
            st.save()?;
            let ip = pods::add(&st, &st.nodes[i], &pod)?;
            if let Some(last) = st.pods.last_mut() {
                last.ip = Some(ip);
            }
            st.save()?;
        }
    }
    st.phase = "ready".into();
    st.save()?;
    Ok(st)
}

/// Waits until every node has a route to every other node's subnet, so
/// pods can talk across nodes as soon as `up` returns (a daemon is ready
/// with its own lease before it has seen the leases of nodes that started
/// after it).
pub(crate) fn wait_converged(st: &LabState, within: Duration) -> Result<(), LabError> {
    let nets: Vec<(u32, String)> = st
        .nodes
        .iter()
        .filter_map(|n| {
            let net: ipnet::Ipv4Net = n.subnet.as_deref()?.parse().ok()?;
            Some((n.index, net.trunc().to_string()))
        })
        .collect();
    let deadline = Instant::now() + within;
    for node in &st.nodes {
        for (peer, net) in nets.iter().filter(|(k, _)| *k != node.index) {
            loop {
                let out = super::sh::ip(&["-n", &node.netns, "route", "show", net])?;
                if !out.trim().is_empty() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(LabError::NotConverged {
                        node: node.index,
                        peer: *peer,
                        subnet: net.clone(),
                        secs: within.as_secs(),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    Ok(())
}

fn write(path: &std::path::Path, text: &str) -> Result<(), LabError> {
    std::fs::write(path, text).map_err(|source| LabError::Io {
        what: format!("write {}", path.display()),
        source,
    })
}
