//! List+watch of a large cluster against the fake API server: how long the
//! Kubernetes backend takes to start serving (acquire, paginated list, the
//! watch's first full list) and to take in a burst of changes, and how much
//! memory the store's process holds.
//!
//! `cargo run --release -p lease-store --features kube-testing --example kube_bench -- [NODES] [PAGE_SIZE]`
//! (defaults 5000 and 500). The fake server runs in a child process (this
//! program with `serve`), so the memory figures are the store's alone.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lease_store::kube::testing::{node_json, FakeApi};
use lease_store::kube::{KubeOptions, KubeStore};
use lease_store::{AcquireRequest, LeaseAttrs, LeaseStore, NetworkConfig, WatchUpdate};
use serde_json::json;

const P: &str = "flannel.alpha.coreos.com/";

/// VmRSS and VmHWM of a process, in MiB.
fn rss_mib(pid: &str) -> (f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn managed(i: usize) -> serde_json::Value {
    let (hi, lo) = (i / 256, i % 256);
    let cidr = format!("10.{}.{lo}.0/24", 64 + hi);
    let mac = format!(r#"{{"VNI":1,"VtepMAC":"0a:58:00:00:{hi:02x}:{lo:02x}"}}"#);
    let ip = format!("198.51.{}.{}", 100 + hi % 2, lo);
    node_json(
        &format!("node-{i:05}"),
        &[&cidr],
        &[
            (&format!("{P}kube-subnet-manager"), "true"),
            (&format!("{P}backend-type"), "vxlan"),
            (&format!("{P}backend-data"), &mac),
            (&format!("{P}public-ip"), &ip),
        ],
    )
}

/// The child: a fake API server with `n` managed nodes and ours ("me").
/// Prints its URL; on "burst" from stdin changes every node's VTEP MAC
/// once; ends when stdin closes.
async fn serve(n: usize) {
    let fake = FakeApi::start(Duration::from_secs(60)).await;
    fake.put_nodes((0..n).map(managed));
    fake.put_node(node_json("me", &["10.63.0.0/24"], &[]));
    println!("{}", fake.url());
    let (rss, _) = rss_mib("self");
    println!("{rss:.1}");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // stdin blocks: read it on a thread of its own.
    std::thread::spawn(move || {
        for l in std::io::stdin().lock().lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    while let Some(cmd) = rx.recv().await {
        if cmd == "burst" {
            for i in 0..n {
                fake.update_node(&format!("node-{i:05}"), |node| {
                    node["metadata"]["annotations"][format!("{P}backend-data")] = json!(format!(
                        r#"{{"VNI":1,"VtepMAC":"0a:59:00:00:{:02x}:{:02x}"}}"#,
                        i / 256,
                        i % 256
                    ));
                });
            }
        }
    }
}

struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Closing stdin ends the server; kill in case it is stuck.
        drop(self.stdin.take());
        if self.child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(200));
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn start_server(n: usize) -> (Server, String, f64) {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("own executable: {e}"));
    let mut child = Command::new(exe)
        .args(["serve", &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start the fake API server process: {e}"));
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let server = Server { child, stdin };
    let mut out = BufReader::new(stdout.unwrap_or_else(|| panic!("server stdout")));
    let mut read = || {
        let mut l = String::new();
        out.read_line(&mut l)
            .unwrap_or_else(|e| panic!("read from the server: {e}"));
        l.trim().to_string()
    };
    let url = read();
    let rss: f64 = read().parse().unwrap_or(f64::NAN);
    (server, url, rss)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: usize| {
        args.get(i).map_or(default, |a| {
            a.parse()
                .unwrap_or_else(|_| panic!("expected a number, got {a:?}"))
        })
    };
    if args.first().map(String::as_str) == Some("serve") {
        serve(num(1, 5000)).await;
        return;
    }
    let n = num(0, 5000);
    let page_size = u32::try_from(num(1, 500)).unwrap_or(500);

    let t = Instant::now();
    let (mut server, url, server_rss) = start_server(n);
    println!(
        "nodes: {n}, page size {page_size}; fake server (separate process) ready in {:?}, its RSS {server_rss:.1} MiB",
        t.elapsed()
    );

    let (rss0, _) = rss_mib("self");
    let cfg = NetworkConfig::parse(r#"{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut opts = KubeOptions::new("me", cfg);
    opts.page_size = page_size;
    let client = lease_store::kube::client(&lease_store::kube::ClientSource {
        kubeconfig: None,
        api_url: Some(url),
    })
    .await
    .unwrap_or_else(|e| panic!("client: {e}"));
    let store = KubeStore::new(client, opts);
    let attrs = LeaseAttrs {
        public_ip: std::net::Ipv4Addr::new(192, 0, 2, 1),
        public_ipv6: None,
        backend_type: "vxlan".into(),
        backend_data: Some(json!({"VNI": 1, "VtepMAC": "0a:58:00:00:ff:01"})),
        backend_v6_data: None,
    };
    let t = Instant::now();
    let own = store
        .acquire(&AcquireRequest {
            attrs,
            previous_subnet: None,
            previous_ipv6_subnet: None,
        })
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    println!("acquire (no cache sync needed): {:?}", t.elapsed());

    let t = Instant::now();
    let (leases, _) = store.list().await.unwrap_or_else(|e| panic!("list: {e}"));
    println!(
        "list (paginated): {} leases in {:?}",
        leases.len(),
        t.elapsed()
    );
    let (rss_list, _) = rss_mib("self");
    drop(leases);

    // The watcher's own paginated list, ending in a snapshot.
    let t = Instant::now();
    let mut w = store
        .watch(0, Some(own))
        .await
        .unwrap_or_else(|e| panic!("watch: {e}"));
    match w.next().await {
        Some(Ok(WatchUpdate::Snapshot { leases, .. })) => println!(
            "watch start (paginated list + snapshot of {} peers): {:?}",
            leases.len(),
            t.elapsed()
        ),
        other => panic!("expected a snapshot first, got {other:?}"),
    }
    let (rss_sync, _) = rss_mib("self");

    // A burst: every node changes its VTEP MAC once.
    let t = Instant::now();
    if let Some(stdin) = server.stdin.as_mut() {
        writeln!(stdin, "burst").unwrap_or_else(|e| panic!("tell the server: {e}"));
    }
    let mut seen = 0;
    while seen < n {
        match tokio::time::timeout(Duration::from_secs(120), w.next()).await {
            Ok(Some(Ok(WatchUpdate::Events { events, .. }))) => seen += events.len(),
            other => panic!("after {seen} of {n} events: {other:?}"),
        }
    }
    let el = t.elapsed();
    let (rss_end, hwm) = rss_mib("self");
    println!(
        "{n} node changes written (server side) and delivered as events: {el:?} ({:.0} events/s)",
        n as f64 / el.as_secs_f64()
    );
    println!(
        "store process RSS: {rss0:.1} MiB before the store, {rss_list:.1} MiB after list, {rss_sync:.1} MiB with the watch synced, {rss_end:.1} MiB after the burst; peak {hwm:.1} MiB"
    );
    drop(server);
}
