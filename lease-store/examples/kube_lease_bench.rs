//! The Lease-object store (`--kube-subnet-source lease`) against a real API
//! server holding N subnet Leases: time to write them, `list` time (and how
//! much of it is the server's answer, fetched as raw text without
//! decoding), time to a watch's first snapshot, acquire latency with N
//! Leases in the table for a new node and for a restarted one (its own
//! Lease present), acquire on an empty table, and this process's memory
//! (the store's view of the table). Run it where the API server is
//! reachable, e.g. on a Kubernetes lab:
//!
//! ```sh
//! flannelctl lab up --kubernetes --no-node-cidrs --name b --nodes 2 ...
//! ip netns exec fct-lab-b-infra target/release/examples/kube_lease_bench \
//!     --kubeconfig "$(flannelctl lab status --name b --json | jq -r .kubeconfig)" --count 5000
//! ```
//!
//! It makes (and leaves, for inspection) namespace `lease-bench-<pid>`.

use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease as KLease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use kube::Api;
use lease_store::kube::lease_map::{self, Write};
use lease_store::kube::{ClientSource, KubeLeaseOptions, KubeLeaseStore};
use lease_store::{AcquireRequest, Lease, LeaseAttrs, LeaseStore, NetworkConfig, WatchUpdate};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn attrs(i: u32) -> LeaseAttrs {
    LeaseAttrs {
        public_ip: std::net::Ipv4Addr::from(0xC633_6400u32 + 1 + i), // 198.51.100.x upward
        public_ipv6: None,
        backend_type: "vxlan".into(),
        backend_data: Some(
            serde_json::json!({"VNI": 1, "VtepMAC": format!("0a:58:{:02x}:{:02x}:{:02x}:01", i >> 16 & 0xff, i >> 8 & 0xff, i & 0xff)}),
        ),
        backend_v6_data: None,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut kubeconfig, mut count) = (None, 5000u32);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--kubeconfig" => kubeconfig = args.next().map(Into::into),
            "--count" => count = args.next().ok_or("--count N")?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let client = lease_store::kube::client(&ClientSource {
        kubeconfig,
        api_url: None,
    })
    .await?;
    let ns = format!("lease-bench-{}", std::process::id());
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?,
    )
    .await?;
    let conf = r#"{"Network":"10.0.0.0/8","SubnetLen":24,"Backend":{"Type":"vxlan"}}"#;
    let prefix = lease_store::kube::DEFAULT_PREFIX;

    // Acquire on an empty table (its own namespace).
    let empty_ns = format!("{ns}-empty");
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({"metadata": {"name": empty_ns}}))?,
    )
    .await?;
    let empty = KubeLeaseStore::new(
        client.clone(),
        KubeLeaseOptions::new(&empty_ns, NetworkConfig::parse(conf)?),
    );
    let (fresh, again) = acquire_runs(&empty, 1_000_000, 20).await?;
    println!(
        "acquire, empty table (20 runs): new node p50 {}, max {}; restarted node p50 {}, max {}",
        ms(fresh[10]),
        ms(fresh[19]),
        ms(again[10]),
        ms(again[19])
    );

    // N Leases written directly, 32 at a time.
    let leases: Api<KLease> = Api::namespaced(client.clone(), &ns);
    let t = Instant::now();
    let now = SystemTime::now();
    let writes = futures::stream::iter(0..count).map(|i| {
        let leases = leases.clone();
        let ns = ns.clone();
        async move {
            let sn = format!("10.{}.{}.0/24", (i + 256) >> 8 & 0xff, (i + 256) & 0xff);
            let l = Lease {
                subnet: Some(sn.parse().map_err(|e| format!("{sn}: {e}"))?),
                ipv6_subnet: None,
                attrs: attrs(i),
                expiration: None,
                revision: 0,
            };
            let holder = format!("node-{i}");
            let obj = lease_map::encode(
                &l,
                &Write {
                    namespace: &ns,
                    prefix,
                    holder: &holder,
                    owner: None,
                    ttl: Some(Duration::from_secs(24 * 3600)),
                    now,
                    acquired: None,
                    resource_version: None,
                },
            );
            leases
                .create(&PostParams::default(), &obj)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    });
    let results: Vec<Result<(), String>> = writes.buffer_unordered(32).collect().await;
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        return Err(e.into());
    }
    println!("write {count} Leases (32 in flight): {}", ms(t.elapsed()));

    let rss0 = rss_kib();
    let mut o = KubeLeaseOptions::new(&ns, NetworkConfig::parse(conf)?);
    o.node_name = None;
    let store = KubeLeaseStore::new(client.clone(), o);
    for run in 1..=3 {
        let t = Instant::now();
        let (got, _) = store.list().await?;
        println!(
            "list run {run}: {} leases in {} (pages of 500)",
            got.len(),
            ms(t.elapsed())
        );
    }
    let rss_list = rss_kib();
    // The server's share: the same pages fetched as text, not decoded.
    let t = Instant::now();
    let mut bytes = 0usize;
    let mut token: Option<String> = None;
    loop {
        let mut url = format!(
            "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases?labelSelector={}&limit=500",
            lease_map::label_selector(prefix).replace('/', "%2F")
        );
        if let Some(t) = &token {
            url.push_str(&format!("&continue={t}"));
        }
        let text = client
            .request_text(http::Request::get(url).body(Vec::new())?)
            .await?;
        bytes += text.len();
        let v: serde_json::Value = serde_json::from_str(&text)?;
        match v["metadata"]["continue"].as_str().filter(|t| !t.is_empty()) {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    println!(
        "the same list as raw JSON text (server + transfer, no decoding): {} ({} KiB)",
        ms(t.elapsed()),
        bytes / 1024
    );
    let t = Instant::now();
    let mut w = store.watch(0, None).await?;
    match w.next().await {
        Some(Ok(WatchUpdate::Snapshot { leases, .. })) => println!(
            "watch from 0 to its snapshot: {} leases in {}",
            leases.len(),
            ms(t.elapsed())
        ),
        other => return Err(format!("expected a snapshot, got {other:?}").into()),
    }
    let rss_watch = rss_kib();
    let (fresh, again) = acquire_runs(&store, count, 20).await?;
    println!(
        "acquire with {count}+ Leases in the table (20 runs): new node p50 {}, max {}; restarted node (own Lease present) p50 {}, max {}",
        ms(fresh[10]),
        ms(fresh[19]),
        ms(again[10]),
        ms(again[19])
    );
    // The watcher sees the 20 new leases as events.
    let t = Instant::now();
    let mut added = 0;
    while added < 20 {
        match tokio::time::timeout(Duration::from_secs(30), w.next()).await {
            Ok(Some(Ok(WatchUpdate::Events { events, .. }))) => added += events.len(),
            other => return Err(format!("watch: {other:?}").into()),
        }
    }
    println!(
        "watch: the 20 acquisitions seen within {} of the last",
        ms(t.elapsed())
    );
    println!(
        "RSS: before the store {} KiB, after list {} KiB, with the watch's view {} KiB",
        rss0, rss_list, rss_watch
    );
    Ok(())
}

/// `runs` new nodes acquire one after the other, then each acquires again
/// as its restarted daemon does (previous subnet from subnet.env, its own
/// Lease in the table). Sorted latencies of both.
async fn acquire_runs(
    store: &KubeLeaseStore,
    first: u32,
    runs: u32,
) -> Result<(Vec<Duration>, Vec<Duration>), Box<dyn std::error::Error>> {
    let mut fresh = Vec::new();
    let mut held = Vec::new();
    for i in 0..runs {
        let t = Instant::now();
        let l = store
            .acquire(&AcquireRequest {
                attrs: attrs(first + i),
                previous_subnet: None,
                previous_ipv6_subnet: None,
            })
            .await?;
        fresh.push(t.elapsed());
        held.push(l);
    }
    let mut again = Vec::new();
    for (i, l) in (0..runs).zip(&held) {
        let t = Instant::now();
        let back = store
            .acquire(&AcquireRequest {
                attrs: attrs(first + i),
                previous_subnet: l.subnet,
                previous_ipv6_subnet: None,
            })
            .await?;
        again.push(t.elapsed());
        if back.subnet != l.subnet {
            return Err(format!("a restart moved {:?} to {:?}", l.subnet, back.subnet).into());
        }
    }
    fresh.sort();
    again.sort();
    Ok((fresh, again))
}
