//! The control plane in the infra namespace: kube-apiserver (on the lab's
//! etcd), kube-controller-manager with node CIDR allocation, and
//! kube-scheduler. Command lines are pure functions; starting waits for
//! the API server's /readyz.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::pki::Pki;
use super::{KubeError, SERVICE_CIDR};
use crate::lab::names;
use crate::lab::process::{self, ProcInfo};

/// Audit only what proves which identity the daemon acts as: writes to
/// Nodes and their status, and reads and writes of coordination Leases.
/// Everything else is not logged (the log would grow by megabytes).
pub const AUDIT_POLICY: &str = r#"{
  "apiVersion": "audit.k8s.io/v1",
  "kind": "Policy",
  "omitStages": ["RequestReceived"],
  "rules": [
    {"level": "Metadata",
     "verbs": ["create", "update", "patch", "delete"],
     "resources": [{"group": "", "resources": ["nodes", "nodes/status"]}]},
    {"level": "Metadata",
     "resources": [{"group": "coordination.k8s.io", "resources": ["leases"]}],
     "namespaces": ["kube-flannel-rs"]},
    {"level": "None"}
  ]
}
"#;

fn s(p: &Path) -> String {
    p.display().to_string()
}

pub fn apiserver_argv(bin: &Path, pki: &Pki, etcd: &str, audit_dir: &Path) -> Vec<String> {
    let infra = names::infra_ip().to_string();
    vec![
        s(&bin.join("kube-apiserver")),
        format!("--etcd-servers={etcd}"),
        "--bind-address=0.0.0.0".into(),
        "--secure-port=6443".into(),
        format!("--advertise-address={infra}"),
        "--insecure-port=0".into(),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        format!("--tls-cert-file={}", s(&pki.crt("apiserver"))),
        format!("--tls-private-key-file={}", s(&pki.key("apiserver"))),
        format!("--client-ca-file={}", s(&pki.ca())),
        format!(
            "--kubelet-client-certificate={}",
            s(&pki.crt("apiserver-kubelet-client"))
        ),
        format!(
            "--kubelet-client-key={}",
            s(&pki.key("apiserver-kubelet-client"))
        ),
        "--kubelet-preferred-address-types=InternalIP".into(),
        format!("--service-account-key-file={}", s(&pki.sa_pub())),
        format!("--service-account-signing-key-file={}", s(&pki.sa_key())),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        "--authorization-mode=Node,RBAC".into(),
        "--enable-admission-plugins=NodeRestriction".into(),
        "--allow-privileged=true".into(),
        format!(
            "--audit-policy-file={}",
            s(&audit_dir.join("audit-policy.json"))
        ),
        format!("--audit-log-path={}", s(&audit_dir.join("audit.log"))),
        "--audit-log-format=json".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ]
}

/// `node_cidrs`: the cluster network and per-node subnet length to assign
/// podCIDRs from; `None` turns the allocation off (EKS's situation).
pub fn controller_manager_argv(
    bin: &Path,
    pki: &Pki,
    node_cidrs: Option<(&str, u8)>,
) -> Vec<String> {
    let kc = s(&pki.kubeconfig("controller-manager"));
    let allocation = match node_cidrs {
        // What Kubernetes mode's `node` source needs: node.spec.podCIDR
        // from the cluster network, one subnet of SubnetLen per node.
        Some((cluster_cidr, node_cidr_len)) => vec![
            "--allocate-node-cidrs=true".to_string(),
            format!("--cluster-cidr={cluster_cidr}"),
            format!("--node-cidr-mask-size={node_cidr_len}"),
        ],
        None => vec!["--allocate-node-cidrs=false".to_string()],
    };
    let mut argv = vec![
        s(&bin.join("kube-controller-manager")),
        format!("--kubeconfig={kc}"),
        format!("--authentication-kubeconfig={kc}"),
        format!("--authorization-kubeconfig={kc}"),
        "--leader-elect=false".into(),
        // Each controller acts with its own service account, as in kubeadm.
        "--use-service-account-credentials=true".into(),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        format!("--service-account-private-key-file={}", s(&pki.sa_key())),
        format!("--root-ca-file={}", s(&pki.ca())),
        format!("--cluster-signing-cert-file={}", s(&pki.ca())),
        format!("--cluster-signing-key-file={}", s(&pki.key("ca"))),
        "--bind-address=127.0.0.1".into(),
        "--port=0".into(),
        "--v=1".into(),
    ];
    argv.splice(6..6, allocation);
    argv
}

pub fn scheduler_argv(bin: &Path, pki: &Pki) -> Vec<String> {
    let kc = s(&pki.kubeconfig("scheduler"));
    vec![
        s(&bin.join("kube-scheduler")),
        format!("--kubeconfig={kc}"),
        format!("--authentication-kubeconfig={kc}"),
        format!("--authorization-kubeconfig={kc}"),
        "--leader-elect=false".into(),
        "--bind-address=127.0.0.1".into(),
        "--port=0".into(),
        "--v=1".into(),
    ]
}

/// Where and how the control plane runs.
pub struct Spec<'a> {
    /// The infra namespace.
    pub infra: &'a str,
    /// The Kubernetes binaries.
    pub bin: &'a Path,
    pub pki: &'a Pki,
    /// The etcd client URL.
    pub etcd: &'a str,
    /// The cluster network and the per-node subnet length.
    pub cluster_cidr: &'a str,
    pub node_cidr_len: u8,
    /// The controller manager assigns node.spec.podCIDR (false: as on EKS,
    /// for the `lease` subnet source).
    pub allocate_node_cidrs: bool,
    /// Logs, the audit policy and the audit log go here.
    pub dir: &'a Path,
    /// How long the API server may take to become ready.
    pub within: Duration,
}

/// Starts the API server and waits (up to `within`) for /readyz, then the
/// controller manager and the scheduler. `record` is called after each
/// start so the state file knows the process even if a later step fails.
pub fn start(
    spec: &Spec,
    mut record: impl FnMut(&str, &ProcInfo) -> Result<(), KubeError>,
) -> Result<(), KubeError> {
    let Spec {
        infra,
        bin,
        pki,
        etcd,
        cluster_cidr,
        node_cidr_len,
        allocate_node_cidrs,
        dir,
        within,
    } = *spec;
    let policy = dir.join("audit-policy.json");
    std::fs::write(&policy, AUDIT_POLICY).map_err(|source| KubeError::Io {
        what: format!("write {}", policy.display()),
        source,
    })?;
    let log = |n: &str| -> PathBuf { dir.join(format!("{n}.log")) };
    let mut api_argv = apiserver_argv(bin, pki, etcd, dir);
    if !allocate_node_cidrs {
        // The `lease` source's lab: Lease watches go to etcd, not the
        // watch cache, so that a compaction of the lab's etcd reaches a
        // watcher as 410 Gone (as a long disconnection does in
        // production); the conformance suite's relist check needs that.
        api_argv.push("--watch-cache-sizes=leases.coordination.k8s.io#0".into());
    }
    let apiserver = process::spawn_detached(infra, &api_argv, &log("kube-apiserver"))?;
    record("kube-apiserver", &apiserver)?;
    wait_ready(infra, bin, pki, &apiserver, within)?;
    let controller_manager = process::spawn_detached(
        infra,
        &controller_manager_argv(
            bin,
            pki,
            allocate_node_cidrs.then_some((cluster_cidr, node_cidr_len)),
        ),
        &log("kube-controller-manager"),
    )?;
    record("kube-controller-manager", &controller_manager)?;
    let scheduler =
        process::spawn_detached(infra, &scheduler_argv(bin, pki), &log("kube-scheduler"))?;
    record("kube-scheduler", &scheduler)
}

fn wait_ready(
    infra: &str,
    bin: &Path,
    pki: &Pki,
    p: &ProcInfo,
    within: Duration,
) -> Result<(), KubeError> {
    let deadline = Instant::now() + within;
    let admin = pki.kubeconfig("admin");
    loop {
        let out = super::kubectl::run(infra, bin, &admin, &["get", "--raw", "/readyz"]);
        if matches!(&out, Ok(text) if text.trim() == "ok") {
            return Ok(());
        }
        if !p.alive() || Instant::now() >= deadline {
            return Err(KubeError::NotReady {
                what: "kube-apiserver".into(),
                secs: within.as_secs(),
                last: match out {
                    Ok(t) => t,
                    Err(e) => e.to_string(),
                },
                log: p.log.clone(),
                tail: process::log_tail(&p.log, 20),
            });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Routes from the infra namespace (the control plane's host) to every
/// node's pod subnet, via that node. A real control plane runs the CNI and
/// reaches pods through it; the lab's does not, yet the API server must
/// reach pod addresses for its pod proxy (`kubectl get --raw
/// /api/v1/namespaces/N/pods/P/proxy/...`, which Kubernetes' DNS
/// conformance specs use to read their results) and for webhooks.
/// Each subnet goes via its own node so that both directions of a
/// connection cross the same node (no asymmetric path for conntrack).
pub fn route_to_pods(
    infra: &str,
    routes: &[(ipnet::Ipv4Net, std::net::Ipv4Addr)],
) -> Result<(), KubeError> {
    for (subnet, via) in routes {
        crate::lab::sh::run(std::process::Command::new("ip").args([
            "-n",
            infra,
            "route",
            "replace",
            &subnet.trunc().to_string(),
            "via",
            &via.to_string(),
        ]))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_cidr_allocation_follows_the_lab_network() {
        let pki = Pki {
            dir: "/x/pki".into(),
        };
        let v = controller_manager_argv(Path::new("/k"), &pki, None).join(" ");
        assert!(v.contains("--allocate-node-cidrs=false"), "{v}");
        assert!(!v.contains("--cluster-cidr"), "{v}");
        let v =
            controller_manager_argv(Path::new("/k"), &pki, Some(("10.50.0.0/16", 26))).join(" ");
        assert!(v.starts_with("/k/kube-controller-manager "), "{v}");
        assert!(
            v.contains(
                "--allocate-node-cidrs=true --cluster-cidr=10.50.0.0/16 --node-cidr-mask-size=26"
            ),
            "{v}"
        );
        let a = apiserver_argv(
            Path::new("/k"),
            &pki,
            "http://198.51.100.254:2379",
            Path::new("/s"),
        )
        .join(" ");
        assert!(a.contains("--authorization-mode=Node,RBAC"), "{a}");
        assert!(a.contains("--advertise-address=198.51.100.254"), "{a}");
        assert!(a.contains("--audit-log-path=/s/audit.log"), "{a}");
    }

    #[test]
    fn audit_policy_is_json() {
        let v: serde_json::Value = serde_json::from_str(AUDIT_POLICY).unwrap();
        assert_eq!(v["kind"], "Policy");
    }
}
