//! Pod start latency through kubelet on the Kubernetes lab
//! (docs/PERFORMANCE.md): flannel-rs against the reference bridge +
//! host-local chain, on the same node of the same cluster, alternating
//! rounds (A B A B) so that machine noise hits both alike.
//!
//! Per pod, created through the API and placed by the scheduler on node1:
//! - create to Ready: from the watch event that shows the pod created to
//!   the one that shows it Ready (`kubectl get -w`, timestamped on arrival;
//!   the same watch for both CNIs);
//! - sandbox: containerd's RunPodSandbox, start to return (its log);
//! - CNI ADD: containerd's "begin cni setup" to "cni result" (debug log),
//!   i.e. the whole conflist chain (our plugin or bridge+host-local, then
//!   portmap), as kubelet's runtime runs it.
//!
//! The reference is switched in by writing `00-ref-bridge.conflist` into
//! node1's /etc/cni/net.d (containerd loads the first file by name and
//! watches the directory) and out by removing it; every pod's address says
//! which chain set it up, and a pod set up by the wrong one aborts the run.
//!
//! Root. `cargo build --release -p e2e -p flanneld-rs -p cni-plugin -p
//! flannelctl --bins && target/release/pod-start-bench [--pods 50]
//! [--batch 5]` (about 4 minutes for 50 + 50 pods).

use std::collections::HashMap;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use e2e::kube::KubeLab;
use e2e::stats::{median, ms, percentile};
use serde_json::{json, Value};

const NS: &str = "bench";
const REF_CONFLIST: &str = "00-ref-bridge.conflist";
/// Where the reference chain takes addresses: outside the cluster network,
/// so a pod's address tells which chain set it up. Nothing routes to it;
/// the pods only have to become Ready.
const REF_SUBNET: &str = "10.99.1.0/24";

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Cni {
    Ours,
    Reference,
}

impl Cni {
    fn label(self) -> &'static str {
        match self {
            Cni::Ours => "flannel-rs",
            Cni::Reference => "bridge+host-local",
        }
    }
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pods = arg(&args, "--pods", 50);
    let batch = arg(&args, "--batch", 5).max(1);
    if let Err(e) = run(pods, batch) {
        eprintln!("pod-start-bench: {e}");
        std::process::exit(1);
    }
}

fn ref_conflist() -> String {
    json!({
        "cniVersion": "1.0.0",
        "name": "ref-bridge",
        "plugins": [
            {"type": "bridge", "bridge": "cni-ref", "isGateway": true, "ipMasq": false,
             "hairpinMode": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": REF_SUBNET}]],
                      "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": "/var/lib/cni/networks-ref"}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
    .to_string()
}

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"bench": "pod-start"}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": "node1"},
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": false,
            "containers": [{"name": "c", "image": "localhost/flannel-rs/test:1",
                            "imagePullPolicy": "Never",
                            "command": ["sleep", "2147483647"]}]
        }
    })
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// When each pod was first seen created and first seen Ready, by name.
#[derive(Default)]
struct Seen {
    created: HashMap<String, Instant>,
    ready: HashMap<String, (Instant, String)>,
}

fn run(pods: usize, batch: usize) -> Result<(), String> {
    let lab = KubeLab::up_with('b', 1, "vxlan", &["--containerd-log-level", "debug"])
        .map_err(|e| e.to_string())?;
    let st = lab.status().map_err(|e| e.to_string())?;
    let state_dir = PathBuf::from(st["state_dir"].as_str().unwrap_or_default());
    let netd = state_dir.join("node1/cni-net.d");
    let log = state_dir.join("node1/containerd.log");
    lab.kubectl(&["create", "namespace", NS])
        .map_err(|e| e.to_string())?;

    // One watch for the whole run, timestamped on arrival.
    let mut watch = Command::new(lab_kubectl_program())
        .args(["lab", "kubectl", "--name", &lab.name, "--"])
        .args([
            "-n",
            NS,
            "get",
            "pods",
            "-w",
            "-o",
            "json",
            "--output-watch-events",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("kubectl watch: {e}"))?;
    let stdout = watch.stdout.take().ok_or("no watch output")?;
    let (tx, rx) = mpsc::channel::<(Instant, Value)>();
    std::thread::spawn(move || {
        let events =
            serde_json::Deserializer::from_reader(BufReader::new(stdout)).into_iter::<Value>();
        for ev in events.map_while(Result::ok) {
            if tx.send((Instant::now(), ev)).is_err() {
                break;
            }
        }
    });
    let mut seen = Seen::default();
    let drain = |seen: &mut Seen, rx: &mpsc::Receiver<(Instant, Value)>, wait: Duration| {
        while let Ok((t, ev)) = rx.recv_timeout(wait) {
            let p = &ev["object"];
            let name = p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            seen.created.entry(name.clone()).or_insert(t);
            if is_ready(p) {
                let ip = p["status"]["podIP"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                seen.ready.entry(name).or_insert((t, ip));
            }
            if wait > Duration::ZERO {
                break;
            }
        }
    };

    let rounds = 2 * pods.div_ceil(batch);
    let mut order: Vec<(String, Cni)> = Vec::new();
    for round in 0..rounds {
        let cni = if round % 2 == 0 {
            Cni::Ours
        } else {
            Cni::Reference
        };
        let path = netd.join(REF_CONFLIST);
        match cni {
            Cni::Reference => std::fs::write(&path, ref_conflist()),
            Cni::Ours => match std::fs::remove_file(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                r => r,
            },
        }
        .map_err(|e| format!("switch to {}: {e}", cni.label()))?;
        // containerd reloads the directory on inotify; give it a moment.
        std::thread::sleep(Duration::from_secs(2));
        for i in 0..batch {
            let name = format!("p-{round:02}-{i}");
            lab.apply(&pod(&name)).map_err(|e| e.to_string())?;
            let deadline = Instant::now() + Duration::from_secs(60);
            while !seen.ready.contains_key(&name) {
                if Instant::now() > deadline {
                    return Err(format!("pod {name} ({}) not Ready in 60 s", cni.label()));
                }
                drain(&mut seen, &rx, Duration::from_millis(200));
            }
            let ip = &seen.ready[&name].1;
            let by_ref = ip.starts_with("10.99.");
            if by_ref != (cni == Cni::Reference) {
                return Err(format!(
                    "pod {name} got {ip}: not set up by {}",
                    cni.label()
                ));
            }
            order.push((name, cni));
        }
        lab.kubectl(&[
            "-n",
            NS,
            "delete",
            "pods",
            "--all",
            "--wait=true",
            "--timeout=120s",
        ])
        .map_err(|e| e.to_string())?;
        eprintln!("round {}/{rounds} ({}) done", round + 1, cni.label());
    }
    let _ = std::fs::remove_file(netd.join(REF_CONFLIST));
    let _ = watch.kill();

    let cni_times = parse_containerd_log(&log)?;
    report(&order, &seen, &cni_times);
    Ok(())
}

fn lab_kubectl_program() -> PathBuf {
    e2e::bins::cargo_bin("flannelctl", "flannelctl").unwrap_or_else(|_| PathBuf::from("flannelctl"))
}

/// containerd's logrus time stamp: `time="2026-12-05T08:55:00.123456789Z"`,
/// as nanoseconds of the day (runs do not cross midnight often; a pair that
/// does is dropped).
fn log_time(line: &str) -> Option<i128> {
    let t = line.split("time=\"").nth(1)?.split('"').next()?;
    let clock = t.split('T').nth(1)?.trim_end_matches('Z');
    let clock = clock.split(['+', '-']).next()?;
    let mut it = clock.split(':');
    let h: i128 = it.next()?.parse().ok()?;
    let m: i128 = it.next()?.parse().ok()?;
    let s: f64 = it.next()?.parse().ok()?;
    Some((h * 3600 + m * 60) * 1_000_000_000 + (s * 1e9) as i128)
}

/// Per pod name: (sandbox duration, CNI ADD duration), from the order of
/// containerd's lines (pods are started one at a time).
fn parse_containerd_log(path: &Path) -> Result<HashMap<String, (Duration, Duration)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = HashMap::new();
    let mut cur: Option<(String, i128)> = None;
    let mut cni_begin = None;
    let mut cni = None;
    for line in text.lines() {
        if let Some(rest) = line
            .split("RunPodSandbox for &PodSandboxMetadata{Name:")
            .nth(1)
        {
            let name = rest.split(',').next().unwrap_or_default().to_string();
            let Some(t) = log_time(line) else { continue };
            if line.contains("returns sandbox id") {
                if let (Some((n, start)), Some(c)) = (&cur, cni) {
                    if *n == name && t > *start {
                        out.insert(name, (Duration::from_nanos((t - start) as u64), c));
                    }
                }
                cur = None;
            } else if !line.contains("failed") {
                cur = Some((name, t));
                cni_begin = None;
                cni = None;
            }
        } else if line.contains("begin cni setup") {
            cni_begin = log_time(line);
        } else if line.contains("cni result") {
            if let (Some(b), Some(e)) = (cni_begin, log_time(line)) {
                if e > b {
                    cni = Some(Duration::from_nanos((e - b) as u64));
                }
            }
        }
    }
    Ok(out)
}

fn report(order: &[(String, Cni)], seen: &Seen, cni_times: &HashMap<String, (Duration, Duration)>) {
    println!(
        "{:<20} {:>5} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "chain", "pods", "ready p50", "ready p90", "sandbox p50", "CNI ADD p50", "CNI ADD p90"
    );
    let mut p50 = HashMap::new();
    for cni in [Cni::Ours, Cni::Reference] {
        let names: Vec<&String> = order
            .iter()
            .filter(|(_, c)| *c == cni)
            .map(|(n, _)| n)
            .collect();
        let ready: Vec<Duration> = names
            .iter()
            .filter_map(|n| Some(seen.ready.get(*n)?.0 - *seen.created.get(*n)?))
            .collect();
        let sandbox: Vec<Duration> = names
            .iter()
            .filter_map(|n| Some(cni_times.get(*n)?.0))
            .collect();
        let add: Vec<Duration> = names
            .iter()
            .filter_map(|n| Some(cni_times.get(*n)?.1))
            .collect();
        let f = |d: Option<Duration>| {
            d.map(|d| format!("{:.1} ms", ms(d)))
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "{:<20} {:>5} {:>12} {:>12} {:>12} {:>12} {:>12}",
            cni.label(),
            ready.len(),
            f(median(&ready)),
            f(percentile(&ready, 90.0)),
            f(median(&sandbox)),
            f(median(&add)),
            f(percentile(&add, 90.0)),
        );
        p50.insert(cni, (median(&ready), median(&add)));
    }
    if let (Some((Some(a), Some(aa))), Some((Some(b), Some(bb)))) =
        (p50.get(&Cni::Ours), p50.get(&Cni::Reference))
    {
        println!(
            "ratio flannel-rs / reference: create to Ready {:.2}x, CNI ADD {:.2}x",
            ms(*a) / ms(*b),
            ms(*aa) / ms(*bb)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_log_pairs_sandbox_and_cni_times() {
        let log = r#"time="2026-12-05T08:55:00.100000000Z" level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:p-00-0,Uid:u,Namespace:bench,Attempt:0,}"
time="2026-12-05T08:55:00.150000000Z" level=debug msg="begin cni setup"
time="2026-12-05T08:55:00.154000000Z" level=debug msg="cni result: {}"
time="2026-12-05T08:55:00.300000000Z" level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:p-00-0,Uid:u,Namespace:bench,Attempt:0,} returns sandbox id \"abc\""
"#;
        let d = tempfile_path(log);
        let m = parse_containerd_log(&d).unwrap();
        let (sb, cni) = m["p-00-0"];
        assert_eq!(sb, Duration::from_millis(200));
        assert_eq!(cni, Duration::from_millis(4));
        let _ = std::fs::remove_file(d);
    }

    fn tempfile_path(text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("fct-psb-{}.log", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }
}
