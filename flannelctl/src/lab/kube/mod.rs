//! `flannelctl lab up --kubernetes`: the lab's underlay and node namespaces
//! with a real Kubernetes 1.20 on them. etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler run in the infra namespace;
//! every node runs containerd, kubelet (which registers its own Node) and
//! kube-proxy. No flannel-rs process is started by hand: the project's
//! deploy/ manifest is applied, the DaemonSet's pods run flanneld-rs on every
//! node and install the CNI plugin and conflist, and nodes become Ready
//! through them. See docs/LAB.md.

pub mod conformance;
pub mod control;
pub mod dns;
pub mod kubectl;
pub mod node;
pub mod pki;
pub mod teardown;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::process::{self, ProcessError};
use super::sh::{self, ShError};
use super::state::{KubeNodeState, KubeState, LabState, NodeState};
use super::up::UpOptions;
use super::{bins, daemon, etcd, names, netconf, topology, LabError};

/// The Service network; the first address is the API server's ClusterIP.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
pub const API_SERVICE_IP: &str = "10.96.0.1";
pub const API_PORT: u16 = 6443;
/// Where scripts/k8s-build.sh caches the binaries.
pub const DEFAULT_K8S_BIN_DIR: &str = "/var/cache/flannel-rs/k8s-1.20.2/bin";
/// Where deploy/image/build.sh writes the image archives.
pub const DEFAULT_IMAGE_DIR: &str = "/var/cache/flannel-rs/images";
pub const K8S_BINARIES: &[&str] = &[
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
];
/// The image archives every node imports, by file name.
pub const IMAGE_ARCHIVES: &[&str] = &[
    "flannel-rs.oci.tar",
    "pause.oci.tar",
    "test.oci.tar",
    dns::DNS_ARCHIVE,
];
/// What deploy/image/build.sh records of the binaries it packed.
pub const IMAGE_BINARIES_SUM: &str = "flannel-rs.binaries.sha256";
/// The binaries of the image that the lab exercises.
const FRESH_BINARIES: &[&str] = &["flanneld-rs", "flannel-rs"];
pub const TEST_IMAGE: &str = "localhost/flannel-rs/test:1";
/// Each node runs containerd and kubelet (about 150 MB together): more
/// than this does not fit a 2-core test machine.
pub const MAX_KUBE_NODES: u32 = 8;
/// Datapaths the DaemonSet can run as shipped (the userspace ones need
/// /dev/net/tun, which the manifest does not mount).
pub const KUBE_BACKENDS: &[&str] = &["vxlan", "vxlan-metadata", "host-gw"];
/// Host programs a Kubernetes lab runs.
const HOST_TOOLS: &[(&str, &str)] = &[
    ("containerd", "containerd"),
    ("ctr", "containerd"),
    ("runc", "runc"),
    ("nsenter", "util-linux"),
    ("unshare", "util-linux"),
    ("openssl", "openssl"),
    ("iptables", "iptables"),
    ("conntrack", "conntrack"),
];

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("{0} not found")]
    Missing(String),
    #[error("{0}")]
    Usage(String),
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Sh(#[from] ShError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    State(#[from] super::state::StateError),
    #[error("the flannel-rs manifest cannot be applied: {0}")]
    Manifest(String),
    #[error("{what} was not ready within {secs} s (last: {last}); {log} ends with:\n{tail}")]
    NotReady {
        what: String,
        secs: u64,
        last: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{what} did not happen within {secs} s; last: {last}")]
    Timeout {
        what: String,
        secs: u64,
        last: String,
    },
    #[error("image {image} named by the manifest is not on node {node} after importing {dir}: rebuild the images with deploy/image/build.sh")]
    ImageMissing {
        image: String,
        node: String,
        dir: PathBuf,
    },
    #[error("the image in {dir} holds other binaries than {bin_dir} ({which} differs): rebuild it with deploy/image/build.sh --bin-dir {bin_dir}")]
    StaleImage {
        dir: PathBuf,
        bin_dir: PathBuf,
        which: String,
    },
}

/// Settings only a Kubernetes lab has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeOptions {
    pub k8s_bin_dir: Option<PathBuf>,
    pub image_dir: Option<PathBuf>,
    /// containerd's log level on every node (default info).
    pub containerd_log_level: Option<String>,
    /// The controller manager assigns no podCIDRs (EKS's situation) and
    /// the DaemonSet runs with `--kube-subnet-source lease`.
    pub no_node_cidrs: bool,
}

pub fn api_server_url() -> String {
    format!("https://{}:{API_PORT}", names::infra_ip())
}

/// `kubectl` for this lab, with the admin kubeconfig, in the infra
/// namespace.
pub fn kubectl(st: &LabState, args: &[&str]) -> Result<String, KubeError> {
    let k = st
        .kube
        .as_ref()
        .ok_or_else(|| KubeError::Usage(format!("lab {} is not a Kubernetes lab", st.name)))?;
    Ok(kubectl::run(
        &st.infra_ns,
        &k.bin_dir,
        &admin_kubeconfig(k),
        args,
    )?)
}

fn admin_kubeconfig(k: &KubeState) -> PathBuf {
    k.pki_dir.join("admin.kubeconfig")
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Checks everything a Kubernetes lab needs before anything is made.
fn preflight(
    o: &UpOptions,
    k8s_bin: &Path,
    image_dir: &Path,
    bin_dir: &Path,
) -> Result<(), KubeError> {
    if o.nodes > MAX_KUBE_NODES {
        return Err(KubeError::Usage(format!(
            "--nodes {} is too many for a Kubernetes lab: use 1 to {MAX_KUBE_NODES} (each node runs containerd and kubelet)",
            o.nodes
        )));
    }
    if !KUBE_BACKENDS.contains(&o.backend.as_str()) {
        return Err(KubeError::Usage(format!(
            "--backend {} cannot run in a Kubernetes lab; use one of {}",
            o.backend,
            KUBE_BACKENDS.join(", ")
        )));
    }
    let net: ipnet::Ipv4Net = o
        .network
        .parse()
        .map_err(|_| KubeError::Usage(format!("--network {} is not an IPv4 CIDR", o.network)))?;
    for (what, other) in [
        ("the Service network", SERVICE_CIDR),
        ("the lab underlay", "198.51.100.0/24"),
    ] {
        let other: ipnet::Ipv4Net = other.parse().unwrap_or_default();
        if net.contains(&other.network()) || other.contains(&net.network()) {
            return Err(KubeError::Usage(format!(
                "--network {net} overlaps {what} {other}: choose another cluster network"
            )));
        }
    }
    for b in K8S_BINARIES {
        if !k8s_bin.join(b).is_file() {
            return Err(KubeError::Missing(format!(
                "{} (build the Kubernetes binaries with scripts/k8s-build.sh, or pass --k8s-bin-dir)",
                k8s_bin.join(b).display()
            )));
        }
    }
    for (tool, pkg) in HOST_TOOLS {
        if !on_path(tool) {
            return Err(KubeError::Missing(format!(
                "{tool} (Debian package {pkg}; scripts/setup.sh installs it)"
            )));
        }
    }
    for a in IMAGE_ARCHIVES {
        if !image_dir.join(a).is_file() {
            return Err(KubeError::Missing(format!(
                "{} (build the images with deploy/image/build.sh, or pass --image-dir)",
                image_dir.join(a).display()
            )));
        }
    }
    check_image_fresh(image_dir, bin_dir)
}

/// The image must carry the binaries this lab is meant to test: compares
/// deploy/image/build.sh's record with the binaries in `bin_dir`.
fn check_image_fresh(image_dir: &Path, bin_dir: &Path) -> Result<(), KubeError> {
    let sums = image_dir.join(IMAGE_BINARIES_SUM);
    let text = std::fs::read_to_string(&sums).map_err(|source| KubeError::Io {
        what: format!("read {} (made by deploy/image/build.sh)", sums.display()),
        source,
    })?;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.split_whitespace();
        let (Some(sum), Some(file)) = (parts.next(), parts.next()) else {
            continue;
        };
        let name = Path::new(file.trim_start_matches('*'))
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // flannelctl is in the image for operators; the lab runs the other
        // two, so only they must match.
        if !FRESH_BINARIES.contains(&name.as_str()) {
            continue;
        }
        let ours = bin_dir.join(&name);
        let out = sh::run(std::process::Command::new("sha256sum").arg(&ours))?;
        if out.split_whitespace().next() != Some(sum) {
            return Err(KubeError::StaleImage {
                dir: image_dir.to_path_buf(),
                bin_dir: bin_dir.to_path_buf(),
                which: name,
            });
        }
    }
    Ok(())
}

/// Merges the lab's net-conf settings into the manifest's (which keeps
/// what the lab does not set, e.g. EnableNFTables).
pub fn merge_net_conf(manifest_net_conf: &str, lab_net_conf: &str) -> Result<String, KubeError> {
    let mut base: serde_json::Value = serde_json::from_str(manifest_net_conf)
        .map_err(|e| KubeError::Manifest(format!("its net-conf.json does not parse: {e}")))?;
    let lab: serde_json::Value = serde_json::from_str(lab_net_conf)
        .map_err(|e| KubeError::Manifest(format!("the lab's net-conf.json does not parse: {e}")))?;
    if let (Some(b), Some(l)) = (base.as_object_mut(), lab.as_object()) {
        for (k, v) in l {
            b.insert(k.clone(), v.clone());
        }
    }
    Ok(base.to_string())
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> KubeError {
    move |source| KubeError::Io { what, source }
}

/// Builds the Kubernetes lab. The state file is saved after every step, so
/// `lab down` can undo a partial run.
pub fn up(o: &UpOptions, k: &KubeOptions) -> Result<LabState, LabError> {
    names::validate_name(&o.name)?;
    names::validate_nodes(o.nodes)?;
    let bin_dir = bins::bin_dir(o.bin_dir.as_deref())?;
    let k8s_bin = k
        .k8s_bin_dir
        .clone()
        .unwrap_or_else(|| DEFAULT_K8S_BIN_DIR.into());
    let image_dir = k
        .image_dir
        .clone()
        .unwrap_or_else(|| DEFAULT_IMAGE_DIR.into());
    preflight(o, &k8s_bin, &image_dir, &bin_dir)?;
    let log_level = k.containerd_log_level.as_deref().unwrap_or("info");
    if !node::LOG_LEVELS.contains(&log_level) {
        return Err(KubeError::Usage(format!(
            "--containerd-log-level {log_level} is not one of {}",
            node::LOG_LEVELS.join(", ")
        ))
        .into());
    }

    let dir = names::state_dir(&o.name);
    let leftovers = sh::list_netns()?
        .into_iter()
        .any(|ns| names::is_lab_ns(&o.name, &ns));
    if dir.exists() || leftovers {
        return Err(LabError::Exists(o.name.clone()));
    }
    std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
    let lab_net_conf = netconf::net_conf(&o.network, o.subnet_len, &o.backend);
    let net_config_path = dir.join("net-conf.json");
    std::fs::write(&net_config_path, &lab_net_conf)
        .map_err(io(format!("write {}", net_config_path.display())))?;
    let pki_dir = dir.join("pki");
    let mut st = LabState {
        name: o.name.clone(),
        backend: o.backend.clone(),
        store: "kubernetes".into(),
        network: o.network.clone(),
        subnet_len: o.subnet_len,
        underlay_mtu: o.underlay_mtu,
        state_dir: dir.clone(),
        bin_dir: bin_dir.clone(),
        infra_ns: names::infra_ns(&o.name),
        etcd: None,
        etcd_endpoint: None,
        etcd_prefix: None,
        store_path: None,
        net_config_path,
        nodes: vec![],
        pods: vec![],
        phase: "creating".into(),
        kubeconfig: Some(pki_dir.join("admin.kubeconfig")),
        kubectl_netns: Some(names::infra_ns(&o.name)),
        test_image: Some(TEST_IMAGE.into()),
        kube: Some(KubeState {
            bin_dir: k8s_bin.clone(),
            image_dir: image_dir.clone(),
            pki_dir: pki_dir.clone(),
            mnt_dir: dir.join("mnt"),
            mnt_dir_mounted: false,
            apiserver: None,
            controller_manager: None,
            scheduler: None,
            nodes: vec![],
            host_dirs: vec![],
        }),
    };
    st.save()?;

    // Underlay, as in every lab; nodes also get a default route through
    // the infra namespace, where kubelet and the daemon find their address.
    topology::add_netns(&st.infra_ns)?;
    topology::setup_infra(&st.infra_ns, o.underlay_mtu)?;
    for i in 1..=o.nodes {
        let node_dir = dir.join(format!("node{i}"));
        std::fs::create_dir_all(&node_dir).map_err(io(format!("create {}", node_dir.display())))?;
        st.nodes.push(NodeState {
            index: i,
            netns: names::node_ns(&o.name, i),
            public_ip: names::node_ip(i).to_string(),
            subnet_file: node::subnet_file(&node_dir),
            dir: node_dir,
            healthz_port: daemon::HEALTHZ_PORT,
            daemon: None,
            subnet: None,
            mtu: None,
            daemon_alive: false,
        });
        topology::add_netns(&names::node_ns(&o.name, i))?;
        st.save()?;
        topology::attach_node(&st.infra_ns, &names::node_ns(&o.name, i), i, o.underlay_mtu)?;
        sh::ip(&[
            "-n",
            &names::node_ns(&o.name, i),
            "route",
            "add",
            "default",
            "via",
            &names::infra_ip().to_string(),
        ])?;
    }

    // Control plane.
    let etcd_p = etcd::start(&st.infra_ns, &dir.join("etcd"), &dir.join("etcd.log"))?;
    st.etcd = Some(etcd_p);
    st.save()?;
    let pki = pki::generate(&pki_dir, o.nodes).map_err(KubeError::from)?;
    let phase = o.ready_timeout;
    let infra = st.infra_ns.clone();
    let etcd_url = names::etcd_endpoint();
    let spec = control::Spec {
        infra: &infra,
        bin: &k8s_bin,
        pki: &pki,
        etcd: &etcd_url,
        cluster_cidr: &o.network,
        node_cidr_len: o.subnet_len,
        allocate_node_cidrs: !k.no_node_cidrs,
        dir: &dir,
        within: phase,
    };
    control::start(&spec, |what, p| {
        with_kube(&mut st, |ks| match what {
            "kube-apiserver" => ks.apiserver = Some(p.clone()),
            "kube-controller-manager" => ks.controller_manager = Some(p.clone()),
            _ => ks.scheduler = Some(p.clone()),
        });
        Ok(st.save()?)
    })?;
    let admin = pki.kubeconfig("admin");

    // The project's manifest, with the lab's network settings.
    let manifest_net_conf = manifest_net_conf(&infra, &k8s_bin, &admin)?;
    let net_conf = merge_net_conf(
        &manifest_net_conf,
        &std::fs::read_to_string(&st.net_config_path).unwrap_or_default(),
    )?;
    let images = kubectl::apply_manifest(
        &infra,
        &k8s_bin,
        &admin,
        kubectl::MANIFEST,
        &net_conf,
        k.no_node_cidrs,
    )?;

    // Nodes: mount namespace, containerd, images, kubelet, kube-proxy.
    let archives: Vec<PathBuf> = IMAGE_ARCHIVES.iter().map(|a| image_dir.join(a)).collect();
    let mnt_dir = dir.join("mnt");
    node::make_private_dir(&mnt_dir)?;
    with_kube(&mut st, |ks| ks.mnt_dir_mounted = true);
    st.save()?;
    for i in 0..st.nodes.len() {
        let n = st.nodes[i].clone();
        let socket = n.dir.join("containerd.sock");
        let kn = KubeNodeState {
            index: n.index,
            name: pki::node_name(n.index),
            mount_ns: mnt_dir.join(format!("node{}", n.index)),
            // Recorded before it is made: `down` unmounts it if it exists.
            mount_ns_made: true,
            cgroup_root: format!("/{}", n.netns),
            containerd_socket: socket.clone(),
            containerd: None,
            kubelet: None,
            kube_proxy: None,
        };
        let created = node::prepare_dirs(&n.dir, &socket, log_level)?;
        with_kube(&mut st, |ks| {
            for c in created {
                if !ks.host_dirs.contains(&c) {
                    ks.host_dirs.push(c);
                }
            }
        });
        with_kube(&mut st, |ks| ks.nodes.push(kn.clone()));
        st.save()?;
        node::make_mount_ns(&kn.mount_ns, &n.dir, &kn.name)?;
        let c = node::start_containerd(&n.netns, &kn, &n.dir, phase)?;
        set_node(&mut st, n.index, |kn| kn.containerd = Some(c.clone()));
        st.save()?;
        let have = node::import_images(&kn, &archives)?;
        for img in images.iter().chain([
            &node::PAUSE_IMAGE.to_string(),
            &TEST_IMAGE.to_string(),
            &dns::DNS_IMAGE.to_string(),
        ]) {
            if !have.iter().any(|h| h == img) {
                return Err(KubeError::ImageMissing {
                    image: img.clone(),
                    node: kn.name.clone(),
                    dir: image_dir.clone(),
                }
                .into());
            }
        }
        let kubelet = process::spawn_in_node(
            &n.netns,
            &kn.mount_ns,
            &node::kubelet_argv(&k8s_bin, &pki, n.index, &socket, &kn.cgroup_root, &n.dir),
            &n.dir.join("kubelet.log"),
        )?;
        set_node(&mut st, n.index, |kn| kn.kubelet = Some(kubelet.clone()));
        st.save()?;
        let proxy = process::spawn_in_node(
            &n.netns,
            &kn.mount_ns,
            &node::kube_proxy_argv(&k8s_bin, &pki, n.index, &o.network),
            &n.dir.join("kube-proxy.log"),
        )?;
        set_node(&mut st, n.index, |kn| kn.kube_proxy = Some(proxy.clone()));
        st.save()?;
    }

    // Nodes become Ready once the DaemonSet installed the CNI config.
    wait_nodes_ready(&st, phase)?;
    let secs = format!("--timeout={}s", phase.as_secs());
    kubectl(
        &st,
        &[
            "-n",
            kubectl::FLANNEL_NAMESPACE,
            "rollout",
            "status",
            &format!("daemonset/{}", kubectl::FLANNEL_DAEMONSET),
            &secs,
        ],
    )?;
    let mut pod_routes = Vec::new();
    for i in 0..st.nodes.len() {
        let env = wait_subnet_env(&st.nodes[i], phase)?;
        st.nodes[i].subnet = env.subnet.map(|s| s.to_string());
        st.nodes[i].mtu = Some(env.mtu);
        if let Some(s) = env.subnet {
            pod_routes.push((s, names::node_ip(st.nodes[i].index)));
        }
    }
    st.save()?;
    control::route_to_pods(&infra, &pod_routes)?;
    super::up::wait_converged(&st, phase)?;
    // Cluster DNS last: its pods need the pod network.
    dns::deploy(&st, phase)?;
    st.phase = "ready".into();
    st.save()?;
    Ok(st)
}

fn with_kube(st: &mut LabState, f: impl FnOnce(&mut KubeState)) {
    if let Some(k) = st.kube.as_mut() {
        f(k);
    }
}

fn set_node(st: &mut LabState, index: u32, f: impl FnOnce(&mut KubeNodeState)) {
    with_kube(st, |k| {
        if let Some(n) = k.nodes.iter_mut().find(|n| n.index == index) {
            f(n);
        }
    });
}

/// The net-conf.json of the compiled-in manifest (read through kubectl,
/// which parses the YAML).
fn manifest_net_conf(infra: &str, bin: &Path, admin: &Path) -> Result<String, KubeError> {
    let json = kubectl::run_input(
        infra,
        bin,
        admin,
        &["create", "--dry-run=client", "-o", "json", "-f", "-"],
        kubectl::MANIFEST,
    )?;
    let list = kubectl::parse_objects(&json)?;
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["kind"] == "ConfigMap" && i["metadata"]["name"] == kubectl::FLANNEL_CONFIGMAP)
        .and_then(|i| i["data"]["net-conf.json"].as_str())
        .map(str::to_string)
        .ok_or_else(|| {
            KubeError::Manifest(format!(
                "no net-conf.json in ConfigMap {}",
                kubectl::FLANNEL_CONFIGMAP
            ))
        })
}

/// Names of the Nodes whose Ready condition is True, from `kubectl get
/// nodes -o json`.
pub fn ready_nodes(nodes_json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(nodes_json).unwrap_or_default();
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| {
            n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

fn wait_nodes_ready(st: &LabState, within: Duration) -> Result<(), KubeError> {
    let want: Vec<String> = st.nodes.iter().map(|n| pki::node_name(n.index)).collect();
    let deadline = Instant::now() + within;
    loop {
        let out = kubectl(st, &["get", "nodes", "-o", "json"]);
        let last = match &out {
            Ok(text) => {
                let ready = ready_nodes(text);
                if want.iter().all(|w| ready.contains(w)) {
                    return Ok(());
                }
                format!("ready: {ready:?} of {want:?}")
            }
            Err(e) => e.to_string(),
        };
        // A kubelet that died will never register: say so at once.
        if let Some(k) = &st.kube {
            for n in &k.nodes {
                for p in [&n.kubelet, &n.containerd].into_iter().flatten() {
                    if !p.alive() {
                        return Err(KubeError::NotReady {
                            what: format!("node {}", n.name),
                            secs: 0,
                            last: format!(
                                "{} exited",
                                p.argv.first().map(String::as_str).unwrap_or("?")
                            ),
                            log: p.log.clone(),
                            tail: process::log_tail(&p.log, 20),
                        });
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(KubeError::Timeout {
                what: "every node Ready (kubelet registered, flannel-rs DaemonSet pod installed the CNI config)".into(),
                secs: within.as_secs(),
                last,
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn wait_subnet_env(
    node: &NodeState,
    within: Duration,
) -> Result<lease_store::subnet_env::SubnetEnv, KubeError> {
    let deadline = Instant::now() + within;
    loop {
        match lease_store::subnet_env::SubnetEnv::read(&node.subnet_file) {
            Ok(env) => return Ok(env),
            Err(e) if Instant::now() >= deadline => {
                return Err(KubeError::Timeout {
                    what: format!("subnet.env on node {}", node.index),
                    secs: within.as_secs(),
                    last: e.to_string(),
                })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// `lab kubectl`: kubectl with the lab's admin kubeconfig in the infra
/// namespace, output passed through; returns kubectl's exit code.
pub fn passthrough(st: &LabState, args: &[String]) -> Result<i32, KubeError> {
    let k = st.kube.as_ref().ok_or_else(|| {
        KubeError::Usage(format!(
            "lab {} is not a Kubernetes lab (start it with `lab up --kubernetes`)",
            st.name
        ))
    })?;
    let status = kubectl::command(&st.infra_ns, &k.bin_dir, &admin_kubeconfig(k))
        .args(args)
        .status()
        .map_err(|source| KubeError::Io {
            what: "run kubectl".into(),
            source,
        })?;
    Ok(status.code().unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_conf_merge_keeps_manifest_keys_and_takes_the_labs() {
        let m = r#"{"Network":"10.244.0.0/16","SubnetLen":24,"EnableNFTables":true,"Backend":{"Type":"vxlan","VNI":1}}"#;
        let l = r#"{"Network":"10.50.0.0/16","SubnetLen":26,"Backend":{"Type":"host-gw"}}"#;
        let v: serde_json::Value = serde_json::from_str(&merge_net_conf(m, l).unwrap()).unwrap();
        assert_eq!(v["Network"], "10.50.0.0/16");
        assert_eq!(v["SubnetLen"], 26);
        assert_eq!(v["EnableNFTables"], true);
        assert_eq!(v["Backend"], serde_json::json!({"Type": "host-gw"}));
        assert!(merge_net_conf("{", l).is_err());
    }

    #[test]
    fn ready_nodes_reads_conditions() {
        let j = r#"{"items":[
          {"metadata":{"name":"node1"},"status":{"conditions":[{"type":"Ready","status":"True"}]}},
          {"metadata":{"name":"node2"},"status":{"conditions":[{"type":"Ready","status":"False"}]}},
          {"metadata":{"name":"node3"},"status":{}}]}"#;
        assert_eq!(ready_nodes(j), vec!["node1".to_string()]);
        assert!(ready_nodes("not json").is_empty());
    }

    #[test]
    fn stale_image_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("flanneld-rs"), b"new").unwrap();
        std::fs::write(
            d.path().join(IMAGE_BINARIES_SUM),
            "0000000000000000000000000000000000000000000000000000000000000000  flanneld-rs\n",
        )
        .unwrap();
        let e = check_image_fresh(d.path(), d.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("flanneld-rs differs") && e.contains("deploy/image/build.sh"),
            "{e}"
        );
        // sha256 of "new"
        let sum =
            sh::run(std::process::Command::new("sha256sum").arg(d.path().join("flanneld-rs")))
                .unwrap();
        std::fs::write(
            d.path().join(IMAGE_BINARIES_SUM),
            sum.replace(&d.path().display().to_string(), "/elsewhere"),
        )
        .unwrap();
        check_image_fresh(d.path(), d.path()).unwrap();
    }

    fn refusal(o: &UpOptions) -> String {
        let none = Path::new("/nonexistent");
        preflight(o, none, none, none).unwrap_err().to_string()
    }

    #[test]
    fn preflight_refuses_what_cannot_work() {
        let mut o = UpOptions::for_tests();
        o.backend = "vxlan-userspace".into();
        let e = refusal(&o);
        assert!(e.contains("vxlan, vxlan-metadata, host-gw"), "{e}");
        let mut o = UpOptions::for_tests();
        o.network = "10.96.0.0/12".into();
        let e = refusal(&o);
        assert!(e.contains("overlaps the Service network"), "{e}");
        let o = UpOptions::for_tests();
        let e = refusal(&o);
        assert!(e.contains("scripts/k8s-build.sh"), "{e}");
    }
}
