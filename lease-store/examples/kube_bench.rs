//! List+watch of a large cluster against the fake API server: how long the
//! Kubernetes backend takes to start serving (acquire, list, first watch
//! snapshot) and to take in a burst of changes, and how much memory the
//! process holds.
//!
//! `cargo run --release -p lease-store --features kube --example kube_bench -- [NODES]`
//! (default 5000). The fake server runs in the same process, so the memory
//! figures include its copy of the nodes; the before/after figures for the
//! store's own structures are printed separately.

#[path = "../tests/kube_support/mod.rs"]
mod kube_support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube_support::{node_json, FakeApi};
use lease_store::kube::{KubeOptions, KubeStore};
use lease_store::{AcquireRequest, LeaseAttrs, LeaseStore, NetworkConfig, WatchUpdate};
use serde_json::json;

const P: &str = "flannel.alpha.coreos.com/";

/// VmRSS and VmHWM of this process, in MiB.
fn rss_mib() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| {
            a.parse()
                .unwrap_or_else(|_| panic!("NODES must be a number, got {a:?}"))
        })
        .unwrap_or(5000);
    let (rss0, _) = rss_mib();
    let fake = FakeApi::start(Duration::from_secs(60)).await;
    fake.put_nodes((0..n).map(managed));
    fake.put_node(node_json("me", &["10.63.0.0/24"], &[]));
    let (rss_fake, _) = rss_mib();
    println!(
        "nodes: {n}; RSS: {rss0:.1} MiB at start, {rss_fake:.1} MiB with the fake server's copy"
    );

    let cfg = NetworkConfig::parse(r#"{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    let store = KubeStore::new(fake.client(), KubeOptions::new("me", cfg));
    let attrs = LeaseAttrs {
        public_ip: "192.0.2.1"
            .parse()
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
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
    println!("list: {} leases in {:?}", leases.len(), t.elapsed());
    drop(leases);

    let t = Instant::now();
    let mut w = store
        .watch(0, Some(own))
        .await
        .unwrap_or_else(|e| panic!("watch: {e}"));
    match w.next().await {
        Some(Ok(WatchUpdate::Snapshot { leases, .. })) => {
            println!(
                "watch start (list + snapshot of {} peers): {:?}",
                leases.len(),
                t.elapsed()
            )
        }
        other => panic!("expected a snapshot first, got {other:?}"),
    }
    let (rss_sync, _) = rss_mib();

    // A burst: every node changes its VTEP MAC once.
    let t = Instant::now();
    for i in 0..n {
        fake.update_node(&format!("node-{i:05}"), |node| {
            node["metadata"]["annotations"][format!("{P}backend-data")] = json!(format!(
                r#"{{"VNI":1,"VtepMAC":"0a:59:00:00:{:02x}:{:02x}"}}"#,
                i / 256,
                i % 256
            ));
        });
    }
    let mut seen = 0;
    while seen < n {
        match tokio::time::timeout(Duration::from_secs(60), w.next()).await {
            Ok(Some(Ok(WatchUpdate::Events { events, .. }))) => seen += events.len(),
            other => panic!("after {seen} of {n} events: {other:?}"),
        }
    }
    let (rss_end, hwm) = rss_mib();
    println!(
        "{n} node changes written and delivered as events: {:?} ({:.0} events/s)",
        t.elapsed(),
        n as f64 / t.elapsed().as_secs_f64()
    );
    println!(
        "RSS: {rss_sync:.1} MiB after the watch synced (+{:.1} over the fake's), {rss_end:.1} MiB at the end; peak {hwm:.1} MiB",
        rss_sync - rss_fake
    );
}
