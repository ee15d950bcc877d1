//! Behaviour of the embedded store beyond the conformance suite: set-up
//! errors, config rewrites, the bounded change log, a damaged file.

use std::time::Duration;

use futures::StreamExt;
use lease_store::conformance::node_attrs;
use lease_store::embedded::EmbeddedStore;
use lease_store::{AcquireRequest, LeaseStore, StoreError, WatchUpdate};

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
