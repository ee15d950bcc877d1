//! The Lease-object store (`--kube-subnet-source lease`) against a real API
//! server holding N subnet Leases: time to write them, `list` time, time to
//! a watch's first snapshot, acquire latency with N Leases in the table, and
//! this process's memory (the store's view of the table). Run it where the
//! API server is reachable, e.g. on a Kubernetes lab:
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
    let mut lat = Vec::new();
    for i in 0..20u32 {
        let t = Instant::now();
        store
            .acquire(&AcquireRequest {
                attrs: attrs(count + i),
                previous_subnet: None,
                previous_ipv6_subnet: None,
            })
            .await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "acquire with {count}+ Leases in the table (20 runs): p50 {}, max {}",
        ms(lat[lat.len() / 2]),
        ms(lat[lat.len() - 1])
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
