//! Behaviour of the embedded store beyond the conformance suite: set-up
//! errors, config rewrites, the bounded change log, a damaged file, and
//! that watches are pushed by inotify (and expiry by a timer), not polled.

use std::time::Duration;

use futures::StreamExt;
use lease_store::conformance::node_attrs;
use lease_store::embedded::EmbeddedStore;
use lease_store::{AcquireRequest, LeaseEvent, LeaseStore, StoreError, WatchUpdate};

const TTL: Duration = Duration::from_secs(600);

fn req(n: u8) -> AcquireRequest {
    AcquireRequest {
        attrs: node_attrs(n),
        previous_subnet: None,
        previous_ipv6_subnet: None,
    }
}

#[tokio::test]
async fn open_before_init_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.json");
    match EmbeddedStore::open(&path, TTL).await {
        Err(e @ StoreError::ConfigMissing(_)) => {
            let msg = e.to_string();
            assert!(
                msg.contains("leases.json") && msg.contains("net-conf.json"),
                "{msg}"
            );
        }
        other => panic!("expected ConfigMissing, got {other:?}"),
    }
}

#[tokio::test]
async fn init_refuses_a_bad_config_and_rewrites_keep_leases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.json");
    assert!(matches!(
        EmbeddedStore::init(&path, r#"{"Network":"10.0.0.0/30"}"#).await,
        Err(StoreError::Config(_))
    ));
    assert!(!path.exists(), "a refused config must not create the file");
    EmbeddedStore::init(&path, r#"{"Network":"10.244.0.0/16"}"#)
        .await
        .unwrap();
    let s = EmbeddedStore::open(&path, TTL).await.unwrap();
    let l = s.acquire(&req(1)).await.unwrap();
    EmbeddedStore::init(&path, r#"{"Network":"10.244.0.0/16","SubnetLen":25}"#)
        .await
        .unwrap();
    assert_eq!(s.network_config().await.unwrap().subnet_len, 25);
    let (leases, _) = s.list().await.unwrap();
    assert_eq!(leases.len(), 1);
    // The node's old /24 no longer fits: acquire replaces it with a /25.
    let l2 = s.acquire(&req(1)).await.unwrap();
    assert_eq!(l2.subnet.map(|n| n.prefix_len()), Some(25));
    let (leases, _) = s.list().await.unwrap();
    assert_eq!(
        leases.len(),
        1,
        "the stale /24 {l:?} must be gone: {leases:?}"
    );
}

#[tokio::test]
async fn a_watch_older_than_the_bounded_log_gets_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.json");
    EmbeddedStore::init(&path, r#"{"Network":"10.244.0.0/16"}"#)
        .await
        .unwrap();
    let s = EmbeddedStore::open(&path, TTL)
        .await
        .unwrap()
        .with_log_limit(3);
    for n in 1..=6 {
        s.acquire(&req(n)).await.unwrap();
    }
    let mut w = s.watch(1, None).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Ok(WatchUpdate::Snapshot { leases, revision }))) => {
            assert_eq!(leases.len(), 6);
            assert_eq!(revision, 6);
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }
    // Revision 3 is still in the log (4, 5, 6 retained): plain events.
    let mut w = s.watch(3, None).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Ok(WatchUpdate::Events { events, revision }))) => {
            assert_eq!((events.len(), revision), (3, 6));
        }
        other => panic!("expected events, got {other:?}"),
    }
}

#[tokio::test]
async fn a_damaged_file_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.json");
    EmbeddedStore::init(&path, r#"{"Network":"10.244.0.0/16"}"#)
        .await
        .unwrap();
    let s = EmbeddedStore::open(&path, TTL).await.unwrap();
    let mut w = s.watch(0, None).await.unwrap();
    std::fs::write(&path, "{not json").unwrap();
    match s.acquire(&req(1)).await {
        Err(StoreError::Decode { key, .. }) => assert!(key.ends_with("leases.json"), "{key}"),
        other => panic!("expected Decode, got {other:?}"),
    }
    // The watch ends with the error rather than spinning.
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Err(StoreError::Decode { .. }))) => {}
        other => panic!("expected the watch to report the damage, got {other:?}"),
    }
    assert!(
        matches!(
            tokio::time::timeout(Duration::from_secs(10), w.next()).await,
            Ok(None)
        ),
        "the watch must end after an unrecoverable error"
    );
}

/// A watcher whose fallback poll is an hour: only inotify (or the expiry
/// timer) can deliver anything within the test's generous 30 s bound.
async fn slow_poll_watch(
    path: &std::path::Path,
) -> tokio::sync::mpsc::UnboundedReceiver<WatchUpdate> {
    let watcher = EmbeddedStore::open(path, TTL)
        .await
        .unwrap()
        .with_poll_interval(Duration::from_secs(3600));
    let (_, rev) = watcher.list().await.unwrap();
    let mut w = watcher.watch(rev, None).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(u) = w.next().await {
            if tx.send(u.unwrap()).is_err() {
                break;
            }
        }
    });
    rx
}

async fn next_update(rx: &mut tokio::sync::mpsc::UnboundedReceiver<WatchUpdate>) -> WatchUpdate {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("no watch update within 30 s although the poll interval is 1 h: the inotify push (or the expiry timer) is broken")
        .expect("the watch ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_change_is_pushed_long_before_the_fallback_poll() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.json");
    EmbeddedStore::init(&path, r#"{"Network":"10.244.0.0/16"}"#)
        .await
        .unwrap();
    let mut rx = slow_poll_watch(&path).await;
    let writer = EmbeddedStore::open(&path, TTL).await.unwrap();
    for n in 1..=3 {
        // Let the watcher park in its wait (not a timing assertion: if it
        // had not, the change would still arrive, only not by push).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let l = writer.acquire(&req(n)).await.unwrap();
        match next_update(&mut rx).await {
            WatchUpdate::Events { events, revision } => {
                assert_eq!(revision, l.revision);
                assert!(
                    matches!(events.as_slice(), [LeaseEvent::Added(a)] if a.subnet == l.subnet),
                    "{events:?}"
                );
            }
            other => panic!("expected the new lease as an event, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_reported_by_the_timer_without_any_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.json");
    EmbeddedStore::init(&path, r#"{"Network":"10.244.0.0/16"}"#)
        .await
        .unwrap();
    let mut rx = slow_poll_watch(&path).await;
    let short = EmbeddedStore::open(&path, Duration::from_secs(1))
        .await
        .unwrap();
    let l = short.acquire(&req(7)).await.unwrap();
    assert!(matches!(
        next_update(&mut rx).await,
        WatchUpdate::Events { .. }
    ));
    // Nobody writes again: the watcher's own timer must expire the lease.
    match next_update(&mut rx).await {
        WatchUpdate::Events { events, .. } => assert!(
            matches!(events.as_slice(), [LeaseEvent::Removed(r)] if r.subnet == l.subnet),
            "{events:?}"
        ),
        other => panic!("expected the expiry as an event, got {other:?}"),
    }
}
