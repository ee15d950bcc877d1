//! Lease-store benchmark against a real etcd (Debian's /usr/bin/etcd, started
//! on loopback for the run): acquire latency on an empty and on a 5,000-lease
//! table, peer-write-to-watch-event latency, list and watch of 5,000 leases
//! (time and memory). Results go to docs/PERFORMANCE.md.
//!
//! Run: CARGO_TARGET_DIR=/work/targets/etcd cargo run --release -p lease-store --example etcd_bench
//! Options: `--leases N` (default 5000), `--writes N` (default 1000).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use etcd_client::{Client, PutOptions, Txn, TxnOp};
use futures::StreamExt;
use lease_store::etcd::{EtcdOptions, EtcdStore};
use lease_store::{AcquireRequest, LeaseAttrs, LeaseEvent, LeaseStore, WatchUpdate};
use testkit::etcd::EtcdProcess;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A /8 in /24s: room for 65,535 nodes.
const NET_CONF: &str = r#"{"Network":"10.0.0.0/8","SubnetLen":24,"Backend":{"Type":"vxlan"}}"#;

/// Node `i`'s attributes; public IPs from the benchmarking range
/// 198.18.0.0/15 (RFC 2544): data only, no traffic is sent.
fn attrs(i: u32) -> LeaseAttrs {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i);
    let b = ip.octets();
    LeaseAttrs {
        public_ip: ip,
        public_ipv6: None,
        backend_type: "vxlan".into(),
        backend_data: Some(
            serde_json::json!({"VNI": 1, "VtepMAC": format!("0a:58:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])}),
        ),
        backend_v6_data: None,
    }
}

fn req(i: u32) -> AcquireRequest {
    AcquireRequest {
        attrs: attrs(i),
        previous_subnet: None,
        previous_ipv6_subnet: None,
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn summary(name: &str, mut d: Vec<Duration>) {
    d.sort();
    println!(
        "{name}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        d.len(),
        pct(&d, 0.5).as_secs_f64() * 1e3,
        pct(&d, 0.99).as_secs_f64() * 1e3,
        d.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}

/// Resident memory of a process, in KiB (from /proc).
fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn arg(name: &str, default: u32) -> Result<u32, BoxError> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => Ok(args
            .get(i + 1)
            .ok_or(format!("{name} needs a value"))?
            .parse()?),
        None => Ok(default),
    }
}

/// Writes leases `from..to` directly (as their nodes would have), each on
/// its own etcd lease, 128 puts per transaction (etcd's default limit).
async fn populate(raw: &Client, from: u32, to: u32) -> Result<(), BoxError> {
    let ids: Vec<i64> = futures::stream::iter(from..to)
        .map(|_| {
            let mut lc = raw.lease_client();
            async move { lc.grant(3600, None).await.map(|r| r.id()) }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let items: Vec<(u32, i64)> = (from..to).zip(ids).collect();
    for chunk in items.chunks(128) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|(i, id)| {
                // Subnets from 10.128.0.0 upward, clear of SubnetMin where
                // the acquire measurements allocate.
                let n = 0x8000 + i;
                let key = format!(
                    "/coreos.com/network/subnets/10.{}.{}.0-24",
                    n >> 8,
                    n & 0xff
                );
                let value = serde_json::to_string(&attrs(*i)).unwrap_or_default();
                TxnOp::put(key, value, Some(PutOptions::new().with_lease(*id)))
            })
            .collect();
        raw.kv_client().txn(Txn::new().and_then(ops)).await?;
    }
    Ok(())
}

async fn time_acquires(
    store: &EtcdStore,
    ids: std::ops::Range<u32>,
) -> Result<Vec<Duration>, BoxError> {
    let mut out = Vec::new();
    for i in ids {
        let t = Instant::now();
        store.acquire(&req(i)).await?;
        out.push(t.elapsed());
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let leases = arg("--leases", 5000)?;
    let writes = arg("--writes", 1000)?;
    let etcd = tokio::task::spawn_blocking(EtcdProcess::start).await??;
    let endpoint = etcd.endpoint();
    println!("etcd 3.4 at {endpoint}; table of {leases} leases; {writes} watched writes");
    let opts = EtcdOptions::with_endpoints([endpoint.clone()]);
    let store = EtcdStore::connect(opts.clone()).await?;
    store.put_config(NET_CONF).await?;
    let raw = Client::connect([endpoint.as_str()], None).await?;

    // 1. acquire on an (almost) empty table.
    let first = 1_000_000;
    summary(
        "acquire, table of 0-99 leases",
        time_acquires(&store, first..first + 100).await?,
    );

    // 2. peer write -> watch event.
    let watcher = EtcdStore::connect(opts.clone()).await?;
    let (_, rev) = watcher.list().await?;
    let mut w = watcher.watch(rev, None).await?;
    let id = raw.lease_client().grant(3600, None).await?.id();
    let mut lat = Vec::with_capacity(writes as usize);
    for i in 0..writes {
        let key = format!("/coreos.com/network/subnets/10.255.{}.0-24", i % 256);
        let value = serde_json::to_string(&attrs(2_000_000 + i))?;
        let t = Instant::now();
        raw.kv_client()
            .put(key, value, Some(PutOptions::new().with_lease(id)))
            .await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), w.next()).await? {
                Some(Ok(WatchUpdate::Events { events, .. })) if !events.is_empty() => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err("watch ended".into()),
            }
        }
        lat.push(t.elapsed());
    }
    summary("peer write -> watch event", lat);
    raw.lease_client().revoke(id).await?;
    drop(w);

    // 3. a table of `leases` leases.
    let (_, before_fill) = store.list().await?;
    let t = Instant::now();
    populate(&raw, 0, leases).await?;
    println!(
        "populate {leases} leases (grant + txn puts): {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    summary(
        &format!("acquire, table of {leases}+ leases"),
        time_acquires(&store, first + 100..first + 150).await?,
    );

    let me = std::process::id().to_string();
    let mut times = Vec::new();
    let mut rss_delta = 0;
    let mut count = 0;
    for _ in 0..5 {
        let rss0 = rss_kib(&me);
        let t = Instant::now();
        let (l, _) = store.list().await?;
        times.push(t.elapsed());
        rss_delta = rss_kib(&me).saturating_sub(rss0);
        count = l.len();
        let json: usize = l
            .iter()
            .map(|x| {
                std::mem::size_of_val(x)
                    + x.attrs
                        .backend_data
                        .as_ref()
                        .map_or(0, |v| v.to_string().len())
            })
            .sum();
        println!("  list: {count} leases, about {} KiB decoded", json / 1024);
    }
    summary(
        &format!("list of {count} leases (paged range + TTL look-ups)"),
        times,
    );
    println!("  RSS delta of the last list (result held): {rss_delta} KiB");

    // Watch replaying the whole table: every lease as an event.
    let rss0 = rss_kib(&me);
    let t = Instant::now();
    let mut w = watcher.watch(before_fill, None).await?;
    let mut got = 0usize;
    while got < leases as usize {
        match tokio::time::timeout(Duration::from_secs(30), w.next()).await? {
            Some(Ok(WatchUpdate::Events { events, .. })) => {
                got += events
                    .iter()
                    .filter(|e| matches!(e, LeaseEvent::Added(_)))
                    .count()
            }
            Some(Ok(WatchUpdate::Snapshot { leases, .. })) => got = leases.len(),
            Some(Err(e)) => return Err(e.into()),
            None => return Err("watch ended".into()),
        }
    }
    println!(
        "watch replay of {got} lease events: {:.0} ms, RSS delta {} KiB",
        t.elapsed().as_secs_f64() * 1e3,
        rss_kib(&me).saturating_sub(rss0)
    );
    drop(w);

    // Watch from a compacted revision: one snapshot of the whole table.
    store.compact_all().await?;
    let t = Instant::now();
    let mut w = watcher.watch(before_fill, None).await?;
    match tokio::time::timeout(Duration::from_secs(60), w.next()).await? {
        Some(Ok(WatchUpdate::Snapshot { leases, .. })) => println!(
            "watch from a compacted revision -> snapshot of {} leases: {:.0} ms",
            leases.len(),
            t.elapsed().as_secs_f64() * 1e3
        ),
        other => return Err(format!("expected a snapshot, got {other:?}").into()),
    }
    if let Some(pid) = etcd.pid() {
        println!(
            "etcd RSS at the end: {} MiB",
            rss_kib(&pid.to_string()) / 1024
        );
    }
    Ok(())
}
