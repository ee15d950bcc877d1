//! etcd restarts under a running client: the watch resumes from the last
//! revision it delivered (nothing lost, nothing twice) and a renewal that
//! fails while etcd is down succeeds once it is back, on the same etcd lease.

mod etcd_support;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use etcd_support::*;
use lease_store::{LeaseEvent, LeaseStore, StoreError, WatchUpdate};

async fn restart(etcd: &mut testkit::etcd::EtcdProcess) {
    tokio::task::block_in_place(|| etcd.restart())
        .unwrap_or_else(|e| panic!("cannot restart etcd: {e}"));
}

/// Acquires, retrying while the client reconnects after a restart.
async fn acquire_retrying(s: &impl LeaseStore, n: u8) -> lease_store::Lease {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match s.acquire(&req(n)).await {
            Ok(l) => return l,
            Err(StoreError::Unavailable { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("acquire for node {n} failed: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_survives_etcd_restart_without_loss_or_duplicates() {
    let mut etcd = start_etcd().await;
    let writer = store_with_config(&etcd).await;
    let watcher = store_with_config(&etcd).await;
    let (_, rev0) = watcher.list().await.expect("list");
    let mut w = watcher.watch(rev0, None).await.expect("watch");

    let mut seen: HashMap<String, usize> = HashMap::new();
    let record = |u: WatchUpdate, seen: &mut HashMap<String, usize>| match u {
        WatchUpdate::Events { events, .. } => {
            for e in events {
                match e {
                    LeaseEvent::Added(l) => *seen.entry(l.key()).or_default() += 1,
                    LeaseEvent::Removed(l) => panic!("unexpected removal of {}", l.key()),
                }
            }
        }
        WatchUpdate::Snapshot { revision, .. } => {
            panic!("unexpected snapshot at {revision}: history was not compacted")
        }
    };

    // Phase 1: the watch is live and delivering.
    for n in 1..=3 {
        acquire_retrying(&writer, n).await;
    }
    while seen.len() < 3 {
        record(next_update(&mut w, 20).await, &mut seen);
    }
    // Phase 2: written and acknowledged right before the crash, not yet read.
    let mut expected: Vec<String> = seen.keys().cloned().collect();
    for n in 4..=5 {
        expected.push(acquire_retrying(&writer, n).await.key());
    }
    restart(&mut etcd).await;
    // Phase 3: written after the restart.
    for n in 6..=8 {
        expected.push(acquire_retrying(&writer, n).await.key());
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    while expected.iter().any(|k| !seen.contains_key(k)) {
        assert!(
            Instant::now() < deadline,
            "events missing after restart; seen {seen:?}"
        );
        record(next_update(&mut w, 40).await, &mut seen);
    }
    // Anything delivered twice would show up now or already be counted.
    if let Ok(Some(Ok(u))) = tokio::time::timeout(
        Duration::from_millis(1500),
        futures::StreamExt::next(&mut w),
    )
    .await
    {
        record(u, &mut seen);
    }
    assert_eq!(seen.len(), 8, "{seen:?}");
    for (k, count) in &seen {
        assert_eq!(*count, 1, "{k} was delivered {count} times");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_fails_while_etcd_is_down_and_keeps_the_lease_after() {
    let mut etcd = start_etcd().await;
    let mut opts = lease_store::etcd::EtcdOptions::with_endpoints([etcd.endpoint()]);
    opts.lease_ttl = Duration::from_secs(60);
    let store = connect(opts).await;
    store.put_config(NET_CONF).await.expect("write config");
    let lease = store.acquire(&req(7)).await.expect("acquire");
    let raw = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .expect("raw client");
    let key = store.keys().subnet(&lease.key());
    let lease_id_before = raw
        .kv_client()
        .get(key.as_str(), None)
        .await
        .expect("get")
        .kvs()[0]
        .lease();
    assert_ne!(lease_id_before, 0, "the key must hang on an etcd lease");

    tokio::task::block_in_place(|| etcd.stop());
    match store.renew(&lease).await {
        Err(StoreError::Unavailable { op, reason }) => {
            eprintln!("renew while down: {op}: {reason}")
        }
        other => panic!("renew with etcd down must be Unavailable, got {other:?}"),
    }

    restart(&mut etcd).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let renewed = loop {
        match store.renew(&lease).await {
            Ok(l) => break l,
            Err(StoreError::Unavailable { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("renew after restart failed: {e}"),
        }
    };
    assert_eq!(renewed.key(), lease.key());
    let left = renewed
        .expiration
        .expect("a lease, not a reservation")
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(
        left > Duration::from_secs(45),
        "renewal should restore ~60 s, got {left:?}"
    );
    let raw = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .expect("raw client");
    let kvs = raw
        .kv_client()
        .get(key.as_str(), None)
        .await
        .expect("get")
        .take_kvs();
    assert_eq!(kvs.len(), 1, "the key must survive the restart");
    assert_eq!(
        kvs[0].lease(),
        lease_id_before,
        "etcd persisted the lease: renew must keep it, not re-create"
    );
}
