//! flannel-rs under a real Kubernetes 1.20: a 3-node lab (`flannelctl lab
//! up --kubernetes`) where flanneld-rs runs only as the DaemonSet of
//! deploy/kube-flannel-rs.yml, from an image built here. One lab, checked
//! step by step in the order a user meets things (a lab takes a minute to
//! build). Needs root, scripts/k8s-build.sh and deploy/image/build.sh's
//! base layer (scripts/test.sh runs both).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use e2e::kube::{KubeLab, PodInfo};
use e2e::lab::wait_for;
use serde_json::{json, Value};

const TEST_IMAGE: &str = "localhost/flannel-rs/test:1";
const FLANNEL_NS: &str = "kube-flannel-rs";
const FLANNEL_SA: &str = "system:serviceaccount:kube-flannel-rs:flannel-rs";

fn host_sysctls() -> BTreeMap<String, String> {
    [
        "kernel/panic",
        "kernel/panic_on_oops",
        "vm/overcommit_memory",
        "net/ipv4/ip_forward",
        "net/ipv4/conf/all/route_localnet",
        "net/netfilter/nf_conntrack_max",
    ]
    .iter()
    .map(|k| {
        let v = std::fs::read_to_string(format!("/proc/sys/{k}")).unwrap_or_else(|_| "-".into());
        (k.to_string(), v.trim().to_string())
    })
    .collect()
}

/// Mount points the lab may create on the host, and whether they exist.
fn host_dirs() -> BTreeMap<&'static str, bool> {
    [
        "/var/lib/kubelet",
        "/var/log/pods",
        "/var/log/containers",
        "/run/flannel",
        "/var/lib/cni",
        "/etc/cni/net.d",
        "/opt/cni/bin",
        "/opt/cni",
        "/run/containerd",
    ]
    .iter()
    .map(|d| (*d, Path::new(d).exists()))
    .collect()
}

fn in_cidr(ip: &str, cidr: &str) -> bool {
    let (Ok(ip), Some((net, len))) = (ip.parse::<Ipv4Addr>(), cidr.split_once('/')) else {
        return false;
    };
    let (Ok(net), Ok(len)) = (net.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
        return false;
    };
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(net) & mask
}

/// `node name -> podCIDR`.
fn pod_cidrs(lab: &KubeLab) -> Result<BTreeMap<String, String>> {
    let nodes = lab
        .kubectl_json(&["get", "nodes"])
        .map_err(|e| anyhow!(e))?;
    let mut m = BTreeMap::new();
    for n in nodes["items"].as_array().context("no items")? {
        let name = n["metadata"]["name"].as_str().context("node name")?;
        let cidr = n["spec"]["podCIDR"].as_str().unwrap_or_default();
        m.insert(name.to_string(), cidr.to_string());
    }
    Ok(m)
}

fn pods(lab: &KubeLab, selector: &str) -> Result<Vec<PodInfo>> {
    lab.pods(selector).map_err(|e| anyhow!(e))
}

/// Addresses of the lab's cluster DNS pods (kube-system, k8s-app=kube-dns).
fn dns_pod_ips(lab: &KubeLab) -> Result<BTreeSet<String>> {
    let v = lab
        .kubectl_json(&["-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-dns"])
        .map_err(|e| anyhow!(e))?;
    Ok(v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
        .collect())
}

/// The flannel-rs DaemonSet's pods, as `kubectl get -o json`.
fn daemon_pods(lab: &KubeLab) -> Result<Value> {
    lab.kubectl_json(&[
        "-n",
        FLANNEL_NS,
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=flannel-rs",
    ])
    .map_err(|e| anyhow!(e))
}

/// A busybox web server answering its own pod name on :8080. (busybox
/// 1.35's `wget -T` crashes: timeouts are `timeout N wget`.)
fn web_container() -> Value {
    json!({
        "name": "web",
        "image": TEST_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c",
            "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"],
        "ports": [{"containerPort": 8080}],
        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
    })
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
                    // Placed by the scheduler, spread over the nodes.
                    "topologySpreadConstraints": [{
                        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "DoNotSchedule",
                        "labelSelector": {"matchLabels": {"app": "web"}}}],
                    "containers": [web_container()]
                }
            }
        }
    })
}

fn exec(lab: &KubeLab, pod: &str, script: &str) -> Result<String> {
    lab.kubectl(&["exec", pod, "--", "sh", "-c", script])
        .map_err(|e| anyhow!("exec in {pod}: {e}"))
}

/// IPv4 allocation files in a node's IPAM directory.
fn ipam_ips(state_dir: &Path, k: u32) -> BTreeSet<String> {
    let dir = state_dir.join(format!("node{k}/var-lib-cni/networks/flannel-rs"));
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.parse::<Ipv4Addr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

fn ip_out(ns: &str, args: &[&str]) -> String {
    Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn fdb_out(ns: &str) -> String {
    Command::new("bridge")
        .args(["-n", ns, "fdb", "show", "dev", "flannel.1"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Leftovers of a lab on the host after `lab down`.
fn leftovers(name: &str, state_dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    let state = state_dir.display().to_string();
    let ns_prefix = format!("fct-lab-{name}-");
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if cmdline.contains(&state) || cgroup.contains(&format!("/{ns_prefix}")) {
            v.push(format!("process {pid}: {cmdline}"));
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for l in mounts.lines().filter(|l| l.contains(&state)) {
        v.push(format!("mount: {l}"));
    }
    for e in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        for sub in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
            if sub.file_name().to_string_lossy().starts_with(&ns_prefix) {
                v.push(format!("cgroup {}", sub.path().display()));
            }
        }
        if e.file_name().to_string_lossy().starts_with(&ns_prefix) {
            v.push(format!("cgroup {}", e.path().display()));
        }
    }
    for e in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with(&ns_prefix) {
            v.push(format!("netns {}", e.file_name().to_string_lossy()));
        }
    }
    if state_dir.exists() {
        v.push(format!("state dir {state}"));
    }
    v
}

#[test]
fn kubernetes_lab_end_to_end() -> Result<()> {
    let sysctls_before = host_sysctls();
    let dirs_before = host_dirs();
    let t0 = Instant::now();
    let mut lab = KubeLab::up('k', 3, "vxlan").context("lab up --kubernetes")?;
    // On failure the drop keeps the lab's logs (path printed).
    lab.keep_logs_on_drop(true);
    eprintln!("lab up --kubernetes: {:.1} s", t0.elapsed().as_secs_f64());
    let status = lab.status()?;
    let state_dir = PathBuf::from(status["state_dir"].as_str().context("state_dir")?);

    // 1. status --json tells how to reach the cluster.
    let kubeconfig = status["kubeconfig"]
        .as_str()
        .context("kubeconfig in status")?;
    ensure!(Path::new(kubeconfig).is_file(), "{kubeconfig} missing");
    ensure!(
        status["kubectl_netns"] == lab.infra_ns().as_str(),
        "{status}"
    );
    ensure!(status["test_image"] == TEST_IMAGE, "{status}");

    // 2. Nodes registered by kubelet, Ready through the DaemonSet; each
    //    daemon's subnet is its node's podCIDR and annotations are written.
    let cidrs = pod_cidrs(&lab)?;
    ensure!(cidrs.len() == 3, "nodes: {cidrs:?}");
    let nodes = lab
        .kubectl_json(&["get", "nodes"])
        .map_err(|e| anyhow!(e))?;
    for n in nodes["items"].as_array().context("items")? {
        let name = n["metadata"]["name"].as_str().unwrap_or_default();
        let cond = |t: &str| {
            n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == t)
                .map(|c| c["status"].as_str().unwrap_or_default().to_string())
        };
        ensure!(
            cond("Ready").as_deref() == Some("True"),
            "{name} not Ready: {n}"
        );
        ensure!(
            cond("NetworkUnavailable").as_deref() == Some("False"),
            "{name}: NetworkUnavailable not False (the daemon sets it): {n}"
        );
        let k: u32 = name.trim_start_matches("node").parse()?;
        let ip = format!("198.51.100.{k}");
        ensure!(
            n["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ip"] == ip.as_str(),
            "{name}: public-ip annotation: {}",
            n["metadata"]["annotations"]
        );
    }
    for n in status["nodes"].as_array().context("nodes")? {
        let k = n["index"].as_u64().context("index")?;
        let subnet = n["subnet"].as_str().context("subnet.env subnet")?;
        let cidr = &cidrs[&format!("node{k}")];
        let gw = subnet.split('/').next().unwrap_or_default();
        ensure!(
            in_cidr(gw, cidr),
            "node{k}: subnet.env {subnet} outside podCIDR {cidr}"
        );
    }

    // 2b. The operator's view of the table: `flannelctl leases list` on the
    //     node store (run where the API server listens, the infra
    //     namespace) shows each node's podCIDR held by its address, and
    //     `reserve` says that node mode has no reservations and what to use.
    let leases_ctl = |args: &[&str]| -> Result<(bool, String)> {
        let out =
            testkit::netns::command_in(testkit::netns::path_of(&lab.infra_ns()), lab.flannelctl())?
                .arg("leases")
                .args(args)
                .args(["--store", "kube-node", "--kubeconfig", kubeconfig])
                .output()?;
        let text = if out.status.success() {
            &out.stdout
        } else {
            &out.stderr
        };
        Ok((
            out.status.success(),
            String::from_utf8_lossy(text).into_owned(),
        ))
    };
    let (ok, out) = leases_ctl(&["list", "--json"])?;
    ensure!(ok, "flannelctl leases list --store kube-node: {out}");
    let mut listed = BTreeMap::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(line).with_context(|| format!("leases list line {line:?}"))?;
        ensure!(
            v["reservation"] == false,
            "node mode lists no reservations: {line}"
        );
        listed.insert(
            v["attrs"]["PublicIP"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            v["subnet"].as_str().unwrap_or_default().to_string(),
        );
    }
    for k in 1..=3 {
        ensure!(
            listed.get(&format!("198.51.100.{k}")) == cidrs.get(&format!("node{k}")),
            "leases list {listed:?} against podCIDRs {cidrs:?}"
        );
    }
    ensure!(listed.len() == 3, "leases list: {listed:?}");
    let (ok, out) = leases_ctl(&[
        "reserve",
        "--subnet",
        "10.244.200.0/24",
        "--public-ip",
        "198.51.100.9",
    ])?;
    ensure!(
        !ok && out.contains("--store kube-lease"),
        "reserve on node mode must be refused, naming the lease store: {out}"
    );

    // 3. The daemon is the DaemonSet's pod on every node, with its own
    //    service account and no other credentials.
    let ds_pods = daemon_pods(&lab)?;
    let ds_items = ds_pods["items"].as_array().context("items")?.clone();
    ensure!(ds_items.len() == 3, "DaemonSet pods: {}", ds_items.len());
    let ds_nodes: BTreeSet<_> = ds_items
        .iter()
        .map(|p| p["spec"]["nodeName"].to_string())
        .collect();
    ensure!(ds_nodes.len() == 3, "one daemon per node: {ds_nodes:?}");
    for p in &ds_items {
        ensure!(p["spec"]["serviceAccountName"] == "flannel-rs", "{p}");
        let args = p["spec"]["containers"][0]["args"].to_string();
        ensure!(
            !args.contains("kubeconfig") && !args.contains("kube-api-url"),
            "{args}"
        );
    }

    // 4. Pods through the API, placed by the scheduler, addressed from
    //    their node's podCIDR.
    lab.apply(&web_deployment(6))?;
    lab.kubectl(&["rollout", "status", "deployment/web", "--timeout=180s"])?;
    let web = pods(&lab, "app=web")?;
    ensure!(web.len() == 6, "{web:?}");
    let spread: BTreeSet<_> = web.iter().map(|p| p.node.clone()).collect();
    ensure!(spread.len() == 3, "the scheduler spread the pods: {web:?}");
    for p in &web {
        ensure!(
            in_cidr(&p.ip, &cidrs[&p.node]),
            "{p:?} outside {}",
            cidrs[&p.node]
        );
    }

    // 5. Every pod reaches every pod: ping and TCP (HTTP answered with the
    //    target pod's name).
    let mut failures = Vec::new();
    for src in &web {
        let mut script = String::new();
        for dst in web.iter().filter(|d| d.name != src.name) {
            script.push_str(&format!(
                "ping -c 1 -W 3 {ip} >/dev/null && echo 'ping {ip} ok' || echo 'ping {ip} FAIL'; \
                 echo \"http {ip} $(timeout 5 wget -q -O- http://{ip}:8080/ || echo FAIL)\"; ",
                ip = dst.ip
            ));
        }
        let out = exec(&lab, &src.name, &script)?;
        for dst in web.iter().filter(|d| d.name != src.name) {
            if !out.contains(&format!("ping {} ok", dst.ip)) {
                failures.push(format!(
                    "ping {} ({}) -> {} ({})",
                    src.name, src.node, dst.name, dst.node
                ));
            }
            if !out.contains(&format!("http {} {}", dst.ip, dst.name)) {
                failures.push(format!(
                    "http {} ({}) -> {} ({})",
                    src.name, src.node, dst.name, dst.node
                ));
            }
        }
    }
    ensure!(
        failures.is_empty(),
        "{} of 60 checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // 6. A ClusterIP Service and a NodePort reach a pod on another node
    //    through kube-proxy.
    let echo = json!({
    "apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "echo2", "namespace": "default", "labels": {"app": "echo2"}},
         "spec": {"nodeSelector": {"kubernetes.io/hostname": "node2"},
                  "terminationGracePeriodSeconds": 1,
                  "automountServiceAccountToken": false,
                  "containers": [web_container()]}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "echo2", "namespace": "default"},
         "spec": {"selector": {"app": "echo2"}, "ports": [{"port": 80, "targetPort": 8080}]}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "echo2-np", "namespace": "default"},
         "spec": {"type": "NodePort", "selector": {"app": "echo2"},
                  "ports": [{"port": 80, "targetPort": 8080}]}}
    ]});
    lab.apply(&echo)?;
    lab.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "pod/echo2",
        "--timeout=120s",
    ])?;
    let svc = lab
        .kubectl_json(&["get", "service", "echo2"])
        .map_err(|e| anyhow!(e))?;
    let cluster_ip = svc["spec"]["clusterIP"]
        .as_str()
        .context("clusterIP")?
        .to_string();
    let np = lab
        .kubectl_json(&["get", "service", "echo2-np"])
        .map_err(|e| anyhow!(e))?;
    let node_port = np["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .context("nodePort")?;
    for src in web.iter().filter(|p| p.node != "node2") {
        let (_, took) = wait_for("ClusterIP answer", Duration::from_secs(30), || {
            let out = exec(
                &lab,
                &src.name,
                &format!("timeout 3 wget -q -O- http://{cluster_ip}/"),
            )
            .map_err(|e| e.to_string())?;
            (out.trim() == "echo2").then_some(()).ok_or(out)
        })?;
        eprintln!(
            "ClusterIP {cluster_ip} from {} ({}): ok after {took:?}",
            src.name, src.node
        );
    }
    // ... and by name: the lab's cluster DNS (a Deployment behind the
    // kube-dns Service, reached through the overlay) answers from the
    // pod's search path, and the pod's A record names its own address.
    for src in web.iter().filter(|p| p.node != "node2") {
        wait_for("Service by name", Duration::from_secs(30), || {
            let out = exec(&lab, &src.name, "timeout 3 wget -q -O- http://echo2/")
                .map_err(|e| e.to_string())?;
            (out.trim() == "echo2").then_some(()).ok_or(out)
        })?;
        let pod_name = format!("{}.default.pod.cluster.local", src.ip.replace('.', "-"));
        let out = exec(&lab, &src.name, &format!("nslookup {pod_name}"))?;
        ensure!(
            out.contains(&format!("Address: {}", src.ip)),
            "{pod_name} did not resolve to {}: {out}",
            src.ip
        );
    }
    for k in [1, 3] {
        let url = format!("http://198.51.100.{k}:{node_port}/");
        wait_for("NodePort answer", Duration::from_secs(30), || {
            let o = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &lab.infra_ns(),
                    "busybox",
                    "timeout",
                    "3",
                    "busybox",
                    "wget",
                    "-q",
                    "-O-",
                    &url,
                ])
                .output()
                .map_err(|e| e.to_string())?;
            let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
            (out == "echo2")
                .then_some(())
                .ok_or(format!("{out} {}", String::from_utf8_lossy(&o.stderr)))
        })?;
        eprintln!("NodePort {url} from outside the cluster: ok");
    }

    // 7. A rolling update of the flanneld-rs DaemonSet under continuous
    //    cross-node pod traffic loses no packet.
    let flows: Vec<(PodInfo, PodInfo)> = [("node1", "node3"), ("node3", "node2")]
        .iter()
        .map(|(a, b)| {
            let s = web.iter().find(|p| p.node == *a).cloned();
            let d = web.iter().find(|p| p.node == *b).cloned();
            s.zip(d).context("a pod per node")
        })
        .collect::<Result<_>>()?;
    for (s, d) in &flows {
        exec(
            &lab,
            &s.name,
            &format!(
                "ping -i 0.1 -W 2 {} > /tmp/ping.log 2>&1 & echo $! > /tmp/ping.pid",
                d.ip
            ),
        )?;
    }
    std::thread::sleep(Duration::from_secs(2));
    let uids_before: BTreeSet<String> = ds_items
        .iter()
        .map(|p| p["metadata"]["uid"].to_string())
        .collect();
    let t = Instant::now();
    lab.kubectl(&[
        "-n",
        FLANNEL_NS,
        "rollout",
        "restart",
        "daemonset/flannel-rs",
    ])?;
    lab.kubectl(&[
        "-n",
        FLANNEL_NS,
        "rollout",
        "status",
        "daemonset/flannel-rs",
        "--timeout=300s",
    ])?;
    let rollout = t.elapsed();
    // Let traffic run on the new daemons for a moment too.
    std::thread::sleep(Duration::from_secs(3));
    for (s, d) in &flows {
        let out = exec(
            &lab,
            &s.name,
            "kill -INT $(cat /tmp/ping.pid); sleep 1; tail -n 3 /tmp/ping.log",
        )?;
        let line = out
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_default();
        let nums: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        ensure!(
            nums.len() >= 2,
            "{} -> {}: no ping summary: {out}",
            s.node,
            d.node
        );
        let (sent, got) = (nums[0], nums[1]);
        eprintln!(
            "rolling update ({:.1} s): {} -> {}: {got}/{sent} replies",
            rollout.as_secs_f64(),
            s.node,
            d.node
        );
        ensure!(
            sent as f64 >= rollout.as_secs_f64() * 10.0 * 0.9,
            "the ping did not cover the rollout: {out}"
        );
        ensure!(
            got == sent,
            "{} -> {} lost {} of {sent} packets during the rolling update",
            s.node,
            d.node,
            sent - got
        );
    }
    let ds_after = daemon_pods(&lab)?;
    let uids_after: BTreeSet<String> = ds_after["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| p["metadata"]["uid"].to_string())
        .collect();
    ensure!(
        uids_after.len() == 3 && uids_after.is_disjoint(&uids_before),
        "every daemon pod was replaced: before {uids_before:?} after {uids_after:?}"
    );

    // 8. Deleting pods releases their addresses (CNI DEL through kubelet).
    let node2_before = ipam_ips(&state_dir, 2);
    let echo_ip = pods(&lab, "app=echo2")?
        .first()
        .map(|p| p.ip.clone())
        .context("echo2 ip")?;
    ensure!(
        node2_before.contains(&echo_ip),
        "node2 IPAM {node2_before:?} lacks {echo_ip}"
    );
    lab.kubectl(&["scale", "deployment/web", "--replicas=0"])?;
    lab.kubectl(&["delete", "pod", "echo2", "--wait=true", "--timeout=60s"])?;
    wait_for(
        "pods gone and addresses released",
        Duration::from_secs(60),
        || {
            let left: Vec<_> = (1..=3).map(|k| ipam_ips(&state_dir, k)).collect();
            let running = pods(&lab, "app=web").map_err(|e| e.to_string())?;
            // The cluster DNS pods keep theirs; nothing else may be held.
            let held: BTreeSet<String> = left.iter().flatten().cloned().collect();
            let dns = dns_pod_ips(&lab).map_err(|e| e.to_string())?;
            (running.is_empty() && held == dns)
                .then_some(())
                .ok_or(format!("pods {running:?}, IPAM {left:?}, DNS pods {dns:?}"))
        },
    )?;

    // 9. RBAC: the daemon can do exactly what the manifest grants, and the
    //    API server saw its node writes come from its service account.
    for (verb, res, sub, want) in [
        ("list", "nodes", "", "yes"),
        ("watch", "nodes", "", "yes"),
        ("patch", "nodes", "status", "yes"),
        ("update", "nodes", "status", "no"),
        ("patch", "nodes", "", "no"),
        ("delete", "nodes", "", "no"),
        ("get", "pods", "", "no"),
        ("get", "secrets", "", "no"),
        ("create", "pods", "", "no"),
    ] {
        let got = lab
            .kubectl(&[
                "auth",
                "can-i",
                verb,
                res,
                &format!("--subresource={sub}"),
                &format!("--as={FLANNEL_SA}"),
            ])
            .unwrap_or_else(|e| match e {
                testkit::cmd::CmdError::Failed { stdout, .. } => stdout,
                other => other.to_string(),
            });
        ensure!(
            got.trim() == want,
            "can-i {verb} {res} (subresource {sub:?}) as the daemon: {got}, manifest grants {want}"
        );
    }
    let audit = std::fs::read_to_string(state_dir.join("audit.log")).context("audit log")?;
    let mut by_sa = BTreeSet::new();
    for line in audit.lines() {
        let ev: Value = serde_json::from_str(line)?;
        let res = ev["objectRef"]["resource"].as_str().unwrap_or_default();
        let sub = ev["objectRef"]["subresource"].as_str().unwrap_or_default();
        if res != "nodes" || sub != "status" || ev["verb"] != "patch" {
            continue;
        }
        let user = ev["user"]["username"].as_str().unwrap_or_default();
        ensure!(
            user == FLANNEL_SA
                || user.starts_with("system:node:")
                || user.starts_with("system:serviceaccount:kube-system:"),
            "nodes/status patched by an unexpected identity: {line}"
        );
        if user == FLANNEL_SA && ev["responseStatus"]["code"] == 200 {
            by_sa.insert(
                ev["objectRef"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    ensure!(
        by_sa.len() == 3,
        "the daemon's service account patched the status of {by_sa:?}"
    );

    // 10. Deleting a Node removes its routes and FDB entries on the others.
    let node3_cidr = cidrs["node3"].clone();
    for k in [1, 2] {
        let ns = lab.node_ns(k);
        ensure!(
            !ip_out(&ns, &["route", "show", &node3_cidr])
                .trim()
                .is_empty(),
            "node{k} has no route to {node3_cidr}"
        );
        ensure!(
            fdb_out(&ns).contains("dst 198.51.100.3"),
            "node{k} has no FDB entry for node3"
        );
    }
    lab.kubectl(&["delete", "node", "node3", "--wait=true"])?;
    let (_, took) = wait_for(
        "node3's routes and FDB entries gone",
        Duration::from_secs(30),
        || {
            for k in [1, 2] {
                let ns = lab.node_ns(k);
                let r = ip_out(&ns, &["route", "show", &node3_cidr]);
                let f = fdb_out(&ns);
                if !r.trim().is_empty() || f.contains("dst 198.51.100.3") {
                    return Err(format!("node{k}: route {r:?} fdb {f:?}"));
                }
            }
            Ok(())
        },
    )?;
    eprintln!("Node deleted: routes and FDB gone after {took:?}");

    // 11. `lab down` leaves nothing on the host.
    let name = lab.name.clone();
    lab.keep_logs_on_drop(false);
    lab.down()?;
    let left = leftovers(&name, &state_dir);
    ensure!(left.is_empty(), "left behind:\n{}", left.join("\n"));
    let sysctls_after = host_sysctls();
    ensure!(
        sysctls_before == sysctls_after,
        "host sysctls changed: {sysctls_before:?} -> {sysctls_after:?}"
    );
    let dirs_after = host_dirs();
    ensure!(
        dirs_before == dirs_after,
        "host directories changed: {dirs_before:?} -> {dirs_after:?}"
    );
    eprintln!(
        "Kubernetes lab test: {:.1} s in all",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
