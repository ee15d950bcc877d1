//! Measures how long a change takes to reach a watcher of the embedded
//! store in another client: write (acquire returns) -> watch event, over
//! many writes, with the fallback poll set to an hour so that only the
//! inotify push can deliver.
//!
//! `cargo run --release -p lease-store --example embedded_watch_latency -- [WRITES]`

use std::time::{Duration, Instant};

use futures::StreamExt;
use lease_store::embedded::EmbeddedStore;
use lease_store::{AcquireRequest, LeaseAttrs, LeaseStore, WatchUpdate};

fn req(i: u32) -> AcquireRequest {
    AcquireRequest {
        attrs: LeaseAttrs {
            // 198.18.0.0/15 (benchmarking range) as public IPs.
            public_ip: std::net::Ipv4Addr::from(0xc612_0000 + i),
            public_ipv6: None,
            backend_type: "vxlan".into(),
            backend_data: Some(serde_json::json!({"VNI": 1})),
            backend_v6_data: None,
        },
        previous_subnet: None,
        previous_ipv6_subnet: None,
    }
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u32 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("leases.json");
    EmbeddedStore::init(&path, r#"{"Network":"10.0.0.0/8"}"#).await?;
    let ttl = Duration::from_secs(3600);
    let writer = EmbeddedStore::open(&path, ttl).await?;
    let watcher = EmbeddedStore::open(&path, ttl)
        .await?
        .with_poll_interval(Duration::from_secs(3600));
    let (_, rev) = watcher.list().await?;
    let mut w = watcher.watch(rev, None).await?;

    // The watcher runs in its own task, as in a daemon, and stamps the
    // moment each event arrives.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(u) = w.next().await {
            if let Ok(WatchUpdate::Events { revision, .. }) = u {
                if tx.send((revision, Instant::now())).is_err() {
                    break;
                }
            }
        }
    });

    let (mut lat, mut whole) = (Vec::new(), Vec::new());
    for i in 0..n {
        // Spaced writes: each one finds the watcher idle, as a new peer would.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = Instant::now();
        let l = writer.acquire(&req(i)).await?;
        let written = t.elapsed();
        let seen = loop {
            match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
                Ok(Some((rev, at))) if rev >= l.revision => break at,
                Ok(Some(_)) => continue,
                Ok(None) => return Err("the watch ended".into()),
                Err(_) => {
                    return Err(
                        "no watch event within 30 s: the inotify push is not working".into(),
                    )
                }
            }
        };
        // From the moment the write returned (the new file is in place; the
        // event may beat the writer's final directory fsync: then 0), and
        // from the start of the write (lock, read, write, 2 fsyncs, rename).
        lat.push(seen.saturating_duration_since(t + written));
        whole.push(seen.saturating_duration_since(t));
    }
    for (what, v) in [
        ("write returned -> watch event", &mut lat),
        ("write started -> watch event", &mut whole),
    ] {
        v.sort();
        println!(
            "{what} over {n} writes (poll fallback 1 h): p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
            pct(v, 50),
            pct(v, 90),
            pct(v, 99),
            v[v.len() - 1]
        );
    }
    Ok(())
}
