//! Measures the embedded store: acquire cost as the file grows, and how
//! long a change takes to reach a watcher (pushed by inotify; see also
//! `embedded_watch_latency`).
//!
//! `cargo run --release -p lease-store --example embedded_bench -- [LEASES]`

use std::time::{Duration, Instant};

use futures::StreamExt;
use lease_store::embedded::EmbeddedStore;
use lease_store::{AcquireRequest, LeaseAttrs, LeaseStore, WatchUpdate};

fn attrs(i: u32) -> LeaseAttrs {
    LeaseAttrs {
        // 198.18.0.0/15 (benchmarking range) as public IPs: room for 130k nodes.
        public_ip: std::net::Ipv4Addr::from(0xc612_0000 + i),
        public_ipv6: None,
        backend_type: "vxlan".into(),
        backend_data: Some(
            serde_json::json!({"VNI": 1, "VtepMAC": format!("0a:58:00:{:02x}:{:02x}:{:02x}", i >> 16 & 0xff, i >> 8 & 0xff, i & 0xff)}),
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u32 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(2000);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("leases.json");
    EmbeddedStore::init(&path, r#"{"Network":"10.0.0.0/8"}"#).await?;
    let s = EmbeddedStore::open(&path, Duration::from_secs(3600)).await?;

    let mut marks = Vec::new();
    let start = Instant::now();
    let mut last = Instant::now();
    for i in 0..n {
        s.acquire(&req(i)).await?;
        if (i + 1) % (n / 4).max(1) == 0 {
            marks.push((i + 1, last.elapsed() / (n / 4).max(1)));
            last = Instant::now();
        }
    }
    println!("acquired {n} leases in {:?}", start.elapsed());
    for (k, per) in marks {
        println!("  mean acquire up to {k} leases: {per:?}");
    }
    println!("file size: {} bytes", std::fs::metadata(&path)?.len());

    // Watch latency: another client writes, the watcher sees it.
    let (_, rev) = s.list().await?;
    let mut w = s.watch(rev, None).await?;
    let mut lat = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        s.acquire(&req(n + i)).await?;
        loop {
            if let Some(Ok(WatchUpdate::Events { .. })) = w.next().await {
                break;
            }
        }
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "watch latency over 20 changes: min {:?}, median {:?}, max {:?}",
        lat[0],
        lat[lat.len() / 2],
        lat[lat.len() - 1]
    );
    Ok(())
}
