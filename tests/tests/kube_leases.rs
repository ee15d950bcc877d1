//! Kubernetes mode with `--kube-subnet-source lease` on a real Kubernetes
//! 1.20 whose controller manager assigns no podCIDRs (EKS's situation):
//! `flannelctl lab up --kubernetes --no-node-cidrs`. One lab, checked step
//! by step: the whole lease-store conformance suite against the real API
//! server, the race for the last subnet, 3 kubelet nodes with distinct
//! subnets whose pods reach each other, a daemon restart that keeps its
//! subnet, and a deleted Node whose Lease the garbage collector removes and
//! whose routes leave the other nodes. Needs root, scripts/k8s-build.sh and
//! deploy/image/build.sh's base layer (scripts/test.sh runs both).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use e2e::kube::{KubeLab, PodInfo};
use e2e::lab::wait_for;

/// Waits until `cond` holds, up to `within`.
fn until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    wait_for(what, within, || {
        if cond() {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    })
    .map(drop)
    .map_err(|e| anyhow!("{e}"))
}
use lease_store::conformance::{self, node_attrs, Fixture, Table};
use lease_store::etcd::{EtcdOptions, EtcdStore};
use lease_store::kube::{ClientSource, KubeLeaseOptions, KubeLeaseStore};
use lease_store::store::Result as StoreResult;
use lease_store::{AcquireRequest, LeaseStore, NetworkConfig, StoreError};
use serde_json::{json, Value};

const FLANNEL_NS: &str = "kube-flannel-rs";
const TEST_IMAGE: &str = "localhost/flannel-rs/test:1";
const LEASE_LABEL: &str = "flannel.alpha.coreos.com/subnet-lease=true";

/// `kubectl` of the lab, callable from any thread.
type Kubectl = Arc<dyn Fn(&[&str]) -> Result<String, String> + Send + Sync>;

/// The conformance suite's tables on the real API server: each table is a
/// fresh namespace; `compact` compacts the lab's etcd.
struct RealApi {
    client: kube::Client,
    kubectl: Kubectl,
    etcd: String,
    tables: AtomicU32,
}

struct RealTable {
    client: kube::Client,
    namespace: String,
    net_conf: String,
    ttl: Duration,
    etcd: String,
}

fn setup(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        op: "make a conformance table",
        reason: e.to_string(),
    }
}

#[async_trait::async_trait]
impl Fixture for RealApi {
    async fn table(&self, net_conf: &str, ttl: Duration) -> StoreResult<Box<dyn Table>> {
        Ok(Box::new(self.real_table(net_conf, ttl).await?))
    }
}

impl RealApi {
    /// A table in a fresh namespace of its own.
    async fn real_table(&self, net_conf: &str, ttl: Duration) -> StoreResult<RealTable> {
        let n = self.tables.fetch_add(1, Ordering::Relaxed);
        let namespace = format!("i16-conf-{n}");
        let kubectl = self.kubectl.clone();
        let ns = namespace.clone();
        tokio::task::spawn_blocking(move || kubectl(&["create", "namespace", &ns]))
            .await
            .map_err(setup)?
            .map_err(setup)?;
        Ok(RealTable {
            client: self.client.clone(),
            namespace,
            net_conf: net_conf.to_string(),
            ttl,
            etcd: self.etcd.clone(),
        })
    }
}

#[async_trait::async_trait]
impl Table for RealTable {
    async fn open(&self) -> StoreResult<Arc<dyn LeaseStore>> {
        let mut o = KubeLeaseOptions::new(&self.namespace, NetworkConfig::parse(&self.net_conf)?);
        o.ttl = self.ttl;
        o.backoff_max = Duration::from_secs(1);
        Ok(Arc::new(KubeLeaseStore::new(self.client.clone(), o)))
    }

    async fn compact(&self) -> StoreResult<()> {
        let etcd = EtcdStore::connect(EtcdOptions::with_endpoints([self.etcd.clone()]))
            .await
            .map_err(setup)?;
        etcd.compact_all().await.map(drop)
    }
}

fn req(n: u8) -> AcquireRequest {
    AcquireRequest {
        attrs: node_attrs(n),
        previous_subnet: None,
        previous_ipv6_subnet: None,
    }
}

/// Two daemons race for the last free subnet, five times: exactly one
/// wins, the other is told the network is full.
async fn race_for_the_last_subnet(f: &RealApi) {
    let t = f
        .table(conformance::TINY_NET_CONF, conformance::LONG_TTL)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let s = t.open().await.unwrap_or_else(|e| panic!("{e}"));
    s.acquire(&req(1)).await.unwrap_or_else(|e| panic!("{e}"));
    s.acquire(&req(2)).await.unwrap_or_else(|e| panic!("{e}"));
    for round in 0..5u8 {
        let (a, b) = (
            t.open().await.unwrap_or_else(|e| panic!("{e}")),
            t.open().await.unwrap_or_else(|e| panic!("{e}")),
        );
        let (qa, qb) = (req(10 + round), req(20 + round));
        let (ra, rb) = tokio::join!(a.acquire(&qa), b.acquire(&qb));
        let winner = match (ra, rb) {
            (Ok(l), Err(StoreError::OutOfSubnets { .. }))
            | (Err(StoreError::OutOfSubnets { .. }), Ok(l)) => l,
            other => panic!("round {round}: expected exactly one winner, got {other:?}"),
        };
        s.release(&winner)
            .await
            .unwrap_or_else(|e| panic!("release: {e}"));
    }
}

/// `flannelctl leases` with `--store kube-lease` against the real API
/// server, as an operator runs it (from the infra namespace, where the API
/// server listens): list shows leases and reservations, reserve of a held
/// subnet names the holder and what to do, release frees a lease and
/// removes a reservation (the subnet is then free), an unknown subnet is
/// named. `store` plays the nodes' daemons on the same namespace.
async fn leases_cli(f: &RealApi, flannelctl: PathBuf, kubeconfig: PathBuf) {
    let t = f
        .real_table(conformance::TINY_NET_CONF, conformance::LONG_TTL)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let store = t.open().await.unwrap_or_else(|e| panic!("{e}"));
    let namespace = t.namespace.clone();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let net_conf = dir.path().join("net-conf.json");
    std::fs::write(&net_conf, conformance::TINY_NET_CONF).unwrap_or_else(|e| panic!("{e}"));
    let ctl = |args: &[&str]| -> (bool, String) {
        let out = Command::new(&flannelctl)
            .arg("leases")
            .args(args)
            .args(["--store", "kube-lease", "--namespace", &namespace])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--net-config-path")
            .arg(&net_conf)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", flannelctl.display()));
        let text = String::from_utf8_lossy(if out.status.success() {
            &out.stdout
        } else {
            &out.stderr
        })
        .into_owned();
        (out.status.success(), text)
    };
    let acquire = |n: u8, previous: &str| {
        let mut r = req(n);
        r.previous_subnet = Some(previous.parse().unwrap_or_else(|e| panic!("{e}")));
        let s = store.clone();
        async move {
            s.acquire(&r)
                .await
                .unwrap_or_else(|e| panic!("acquire {n}: {e}"))
        }
    };
    let row = |table: &str, subnet: &str| {
        table
            .lines()
            .find(|l| l.starts_with(subnet))
            .map(str::to_string)
    };
    let l1 = acquire(1, "10.0.0.16/28").await;
    assert_eq!(
        l1.subnet.map(|s| s.to_string()).as_deref(),
        Some("10.0.0.16/28")
    );
    let (ok, out) = ctl(&[
        "reserve",
        "--subnet",
        "10.0.0.32/28",
        "--public-ip",
        "192.0.2.9",
    ]);
    assert!(ok && out.contains("10.0.0.32-28"), "{out}");
    let (ok, out) = ctl(&["list"]);
    assert!(ok, "{out}");
    let r16 = row(&out, "10.0.0.16/28").unwrap_or_else(|| panic!("{out}"));
    let r32 = row(&out, "10.0.0.32/28").unwrap_or_else(|| panic!("{out}"));
    assert!(
        r16.contains("192.0.2.1") && !r16.contains("reserved"),
        "{out}"
    );
    assert!(
        r32.contains("192.0.2.9") && r32.contains("reserved"),
        "{out}"
    );
    let (ok, out) = ctl(&[
        "reserve",
        "--subnet",
        "10.0.0.16/28",
        "--public-ip",
        "192.0.2.9",
    ]);
    assert!(
        !ok && out.contains("192.0.2.1") && out.contains("flannelctl leases release"),
        "{out}"
    );
    let l2 = acquire(2, "10.0.0.32/28").await;
    assert_eq!(
        l2.subnet.map(|s| s.to_string()).as_deref(),
        Some("10.0.0.48/28")
    );
    let (ok, out) = ctl(&["release", "--subnet", "10.0.0.32/28"]);
    assert!(ok && out.contains("removed the reservation"), "{out}");
    let (ok, out) = ctl(&["release", "--subnet", "10.0.0.16/28"]);
    assert!(
        ok && out.contains("released") && out.contains("192.0.2.1"),
        "{out}"
    );
    let (ok, out) = ctl(&["list"]);
    assert!(
        ok && row(&out, "10.0.0.16/28").is_none() && row(&out, "10.0.0.32/28").is_none(),
        "{out}"
    );
    let (ok, out) = ctl(&["release", "--subnet", "10.0.0.16/28"]);
    assert!(!ok && out.contains("not found"), "{out}");
    // Both freed subnets are free for the next nodes.
    let l3 = acquire(3, "10.0.0.32/28").await;
    assert_eq!(
        l3.subnet.map(|s| s.to_string()).as_deref(),
        Some("10.0.0.32/28")
    );
    let l4 = acquire(4, "10.0.0.16/28").await;
    assert_eq!(
        l4.subnet.map(|s| s.to_string()).as_deref(),
        Some("10.0.0.16/28")
    );
}

fn pods(lab: &KubeLab, selector: &str) -> Result<Vec<PodInfo>> {
    lab.pods(selector).map_err(|e| anyhow!(e))
}

fn in_cidr(ip: &str, cidr: &str) -> bool {
    let (Ok(ip), Ok(net)) = (ip.parse::<Ipv4Addr>(), cidr.parse::<ipnet::Ipv4Net>()) else {
        return false;
    };
    net.contains(&ip)
}

/// Node name -> (Lease name, subnet, owner uid) of the live subnet Leases.
fn leases(lab: &KubeLab) -> Result<BTreeMap<String, (String, String, String)>> {
    let v = lab
        .kubectl_json(&["-n", FLANNEL_NS, "get", "leases", "-l", LEASE_LABEL])
        .map_err(|e| anyhow!(e))?;
    let mut m = BTreeMap::new();
    for l in v["items"].as_array().context("items")? {
        let holder = l["spec"]["holderIdentity"].as_str().unwrap_or_default();
        let subnet = l["metadata"]["annotations"]["flannel.alpha.coreos.com/subnet"]
            .as_str()
            .unwrap_or_default();
        let owner = l["metadata"]["ownerReferences"][0]["uid"]
            .as_str()
            .unwrap_or_default();
        let prev = m.insert(
            holder.to_string(),
            (
                l["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                subnet.to_string(),
                owner.to_string(),
            ),
        );
        ensure!(prev.is_none(), "two Leases held by {holder}: {v}");
    }
    Ok(m)
}

fn web_deployment(replicas: u32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "automountServiceAccountToken": false,
                    "topologySpreadConstraints": [{
                        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "DoNotSchedule",
                        "labelSelector": {"matchLabels": {"app": "web"}}}],
                    "containers": [{
                        "name": "web",
                        "image": TEST_IMAGE,
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c",
                            "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"],
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                    }]
                }
            }
        }
    })
}

fn routes(ns: &str) -> String {
    Command::new("ip")
        .args(["-n", ns, "-4", "route", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The DaemonSet pod on `node`, if running.
fn daemon_pod(lab: &KubeLab, node: &str) -> Result<Option<(String, bool)>> {
    let v = lab
        .kubectl_json(&[
            "-n",
            FLANNEL_NS,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=flannel-rs",
        ])
        .map_err(|e| anyhow!(e))?;
    Ok(v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["spec"]["nodeName"] == node && p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                ready,
            )
        })
        .next())
}

#[test]
fn lease_subnet_source_on_a_cluster_without_pod_cidrs() -> Result<()> {
    let mut lab = KubeLab::up_with('l', 3, "vxlan", &["--no-node-cidrs"])
        .context("lab up --kubernetes --no-node-cidrs")?;
    lab.keep_logs_on_drop(true);
    let status = lab.status()?;
    let kubeconfig = PathBuf::from(status["kubeconfig"].as_str().context("kubeconfig")?);

    // 1. No podCIDRs anywhere; every node Ready through its own Lease,
    //    owned by its Node, distinct, and its subnet.env inside it.
    let nodes = lab
        .kubectl_json(&["get", "nodes"])
        .map_err(|e| anyhow!(e))?;
    let mut uids = BTreeMap::new();
    for n in nodes["items"].as_array().context("items")? {
        let name = n["metadata"]["name"].as_str().unwrap_or_default();
        ensure!(
            n["spec"]["podCIDR"].is_null(),
            "{name} has a podCIDR although allocation is off: {n}"
        );
        let unavailable = n["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "NetworkUnavailable")
            .map(|c| c["status"].clone());
        ensure!(
            unavailable == Some(json!("False")),
            "{name}: NetworkUnavailable not False: {n}"
        );
        uids.insert(
            name.to_string(),
            n["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    ensure!(uids.len() == 3, "{uids:?}");
    let held = leases(&lab)?;
    ensure!(
        held.keys().cloned().collect::<BTreeSet<_>>() == uids.keys().cloned().collect(),
        "one Lease per node: {held:?}"
    );
    let subnets: BTreeSet<_> = held.values().map(|(_, s, _)| s.clone()).collect();
    ensure!(subnets.len() == 3, "distinct subnets: {held:?}");
    for (node, (_, _, owner)) in &held {
        ensure!(
            owner == &uids[node],
            "{node}'s Lease is not owned by its Node"
        );
    }
    for n in status["nodes"].as_array().context("nodes")? {
        let k = n["index"].as_u64().context("index")?;
        let subnet = n["subnet"].as_str().context("subnet.env subnet")?;
        let gw = subnet.split('/').next().unwrap_or_default();
        let lease = &held[&format!("node{k}")].1;
        ensure!(
            in_cidr(gw, lease),
            "node{k}: subnet.env {subnet} outside its Lease {lease}"
        );
    }

    // 2. The whole conformance suite, the race and the operator tool,
    //    against the real API server (from the infra namespace, where it
    //    listens).
    let (flannelctl, _, _) = e2e::lab::binaries()?;
    let ctl_bin = flannelctl.clone();
    let kc_cli = kubeconfig.clone();
    let name = lab.name.clone();
    let kubectl: Kubectl = Arc::new(move |args: &[&str]| {
        let out = Command::new(&flannelctl)
            .args(["lab", "kubectl", "--name", &name, "--"])
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    let kc = kubeconfig.clone();
    let took = std::time::Instant::now();
    // On a thread inside the lab's infra namespace, where the API server
    // and etcd listen; a failed conformance check panics through.
    testkit::in_netns(
        testkit::netns::path_of(&lab.infra_ns()),
        move || -> Result<()> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let client = lease_store::kube::client(&ClientSource {
                    kubeconfig: Some(kc),
                    api_url: None,
                })
                .await?;
                let f = RealApi {
                    client,
                    kubectl,
                    etcd: "http://198.51.100.254:2379".into(),
                    tables: AtomicU32::new(0),
                };
                // Each on tables of its own; none of them watches, so the
                // suite's compaction of the lab's etcd does not disturb them.
                tokio::join!(
                    conformance::run_all_concurrently(&f),
                    race_for_the_last_subnet(&f),
                    leases_cli(&f, ctl_bin, kc_cli),
                );
                Ok::<_, anyhow::Error>(())
            })
        },
    )??;
    eprintln!(
        "conformance suite + race + flannelctl leases on the real API server: {:.1} s",
        took.elapsed().as_secs_f64()
    );

    // 3. Pods on every node, addressed from their node's Lease, reach
    //    each other.
    lab.apply(&web_deployment(6))?;
    lab.kubectl(&["rollout", "status", "deployment/web", "--timeout=180s"])?;
    let web = pods(&lab, "app=web")?;
    ensure!(web.len() == 6, "{web:?}");
    for p in &web {
        let lease = &held[&p.node].1;
        ensure!(
            in_cidr(&p.ip, lease),
            "{p:?} outside its node's Lease {lease}"
        );
    }
    let mut failures = Vec::new();
    for src in &web {
        let mut script = String::new();
        for dst in web.iter().filter(|d| d.node != src.node) {
            script.push_str(&format!(
                "echo \"http {ip} $(timeout 5 wget -q -O- http://{ip}:8080/ || echo FAIL)\"; ",
                ip = dst.ip
            ));
        }
        let out = lab
            .kubectl(&["exec", &src.name, "--", "sh", "-c", &script])
            .map_err(|e| anyhow!("exec in {}: {e}", src.name))?;
        for dst in web.iter().filter(|d| d.node != src.node) {
            if !out.contains(&format!("http {} {}", dst.ip, dst.name)) {
                failures.push(format!(
                    "{} ({}) -> {} ({})",
                    src.name, src.node, dst.name, dst.node
                ));
            }
        }
    }
    ensure!(
        failures.is_empty(),
        "cross-node HTTP failed:\n{}",
        failures.join("\n")
    );

    // 4. A daemon restart keeps its subnet (its own Lease, reused).
    let (old_pod, _) = daemon_pod(&lab, "node2")?.context("daemon pod on node2")?;
    lab.kubectl(&["-n", FLANNEL_NS, "delete", "pod", &old_pod, "--wait=true"])?;
    until(
        "a new ready daemon pod on node2",
        Duration::from_secs(120),
        || matches!(daemon_pod(&lab, "node2"), Ok(Some((p, true))) if p != old_pod),
    )?;
    let after = leases(&lab)?;
    ensure!(
        after["node2"].1 == held["node2"].1,
        "node2's subnet changed over a restart: {:?} -> {:?}",
        held["node2"],
        after["node2"]
    );

    // 5. node3 is deleted (scale-in): the garbage collector deletes its
    //    Lease, and node1 drops its route to node3's subnet.
    let gone_subnet = held["node3"].1.clone();
    let node1_ns = lab.node_ns(1);
    ensure!(
        routes(&node1_ns).contains(&gone_subnet),
        "node1 has no route to node3's {gone_subnet} before the delete:\n{}",
        routes(&node1_ns)
    );
    lab.kubectl(&["delete", "node", "node3"])?;
    until(
        "node3's Lease garbage-collected",
        Duration::from_secs(120),
        || leases(&lab).is_ok_and(|l| !l.values().any(|(_, s, _)| *s == gone_subnet)),
    )?;
    until(
        "node1's route to node3's subnet gone",
        Duration::from_secs(60),
        || !routes(&node1_ns).contains(&gone_subnet),
    )
    .with_context(|| routes(&node1_ns))?;
    let left = leases(&lab)?;
    ensure!(
        left.len() == 2 && left["node1"].1 == held["node1"].1,
        "{left:?}"
    );

    lab.down()?;
    Ok(())
}
