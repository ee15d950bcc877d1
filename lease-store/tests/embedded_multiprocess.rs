//! The embedded store shared by several processes, as the lab's daemons
//! share it: child processes (this test binary re-run with a filter on the
//! ignored `child_node` helper) acquire and release leases while the parent
//! watches. Checks the flock exclusion and the cross-process watch.

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use lease_store::conformance::node_attrs;
use lease_store::embedded::EmbeddedStore;
use lease_store::{AcquireRequest, LeaseEvent, LeaseStore, WatchUpdate};

const CHILDREN: u8 = 6;
const PER_CHILD: u8 = 5;
const ENV_PATH: &str = "LEASE_STORE_CHILD_PATH";
const ENV_FIRST: &str = "LEASE_STORE_CHILD_FIRST_NODE";

/// One "daemon": acquires PER_CHILD leases (node numbers from ENV_FIRST)
/// through separate clients, then releases the first one.
#[test]
#[ignore = "helper process for several_processes_share_one_file; it runs this itself"]
fn child_node() {
    let path = std::env::var(ENV_PATH).unwrap_or_else(|_| {
        panic!("{ENV_PATH} not set: this helper is run by several_processes_share_one_file")
    });
    let first: u8 = std::env::var(ENV_FIRST)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{ENV_FIRST} not set or not a number"));
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("tokio runtime: {e}"));
    rt.block_on(async {
        let mut held = Vec::new();
        for n in first..first + PER_CHILD {
            let s = EmbeddedStore::open(&path, Duration::from_secs(600))
                .await
                .unwrap_or_else(|e| panic!("open {path}: {e}"));
            let req = AcquireRequest {
                attrs: node_attrs(n),
                previous_subnet: None,
                previous_ipv6_subnet: None,
            };
            held.push(
                s.acquire(&req)
                    .await
                    .unwrap_or_else(|e| panic!("node {n}: {e}")),
            );
        }
        let s = EmbeddedStore::open(&path, Duration::from_secs(600))
            .await
            .unwrap_or_else(|e| panic!("open {path}: {e}"));
        s.release(&held[0])
            .await
            .unwrap_or_else(|e| panic!("release: {e}"));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_processes_share_one_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = dir.path().join("leases.json");
    EmbeddedStore::init(&path, r#"{"Network":"10.244.0.0/16"}"#)
        .await
        .unwrap_or_else(|e| panic!("init: {e}"));
    let watcher = EmbeddedStore::open(&path, Duration::from_secs(600))
        .await
        .unwrap_or_else(|e| panic!("open: {e}"));
    let mut w = watcher
        .watch(0, None)
        .await
        .unwrap_or_else(|e| panic!("watch: {e}"));

    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let mut kids = Vec::new();
    for c in 0..CHILDREN {
        let child = Command::new(&exe)
            .args(["--ignored", "--exact", "child_node", "--test-threads=1"])
            .env(ENV_PATH, &path)
            .env(ENV_FIRST, (1 + c * PER_CHILD).to_string())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn child: {e}"));
        kids.push(child);
    }
    let total = usize::from(CHILDREN * PER_CHILD);
    let mut adds = HashSet::new();
    let mut removes = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while adds.len() < total || removes.len() < usize::from(CHILDREN) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, w.next()).await {
            Ok(Some(Ok(WatchUpdate::Events { events, .. }))) => {
                for e in events {
                    match e {
                        // Keyed by subnet and node: a subnet released by one
                        // child may be acquired again by another.
                        LeaseEvent::Added(l) => adds.insert((l.key(), l.attrs.public_ip)),
                        LeaseEvent::Removed(l) => removes.insert((l.key(), l.attrs.public_ip)),
                    };
                }
            }
            other => panic!(
                "watch: {other:?} (seen {} adds, {} removes)",
                adds.len(),
                removes.len()
            ),
        }
    }
    for mut k in kids {
        let st = tokio::task::spawn_blocking(move || k.wait())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("wait: {e}"));
        assert!(st.success(), "a child process failed: {st}");
    }
    assert_eq!(
        adds.len(),
        total,
        "every acquire must be seen by the watcher"
    );
    let (leases, _) = watcher.list().await.unwrap_or_else(|e| panic!("list: {e}"));
    assert_eq!(leases.len(), total - usize::from(CHILDREN));
    let subnets: HashSet<_> = leases.iter().map(|l| l.subnet).collect();
    assert_eq!(subnets.len(), leases.len());
    for (key, ip) in &removes {
        assert!(
            !leases
                .iter()
                .any(|l| &l.key() == key && &l.attrs.public_ip == ip),
            "{key} of {ip} was released but is listed"
        );
    }
}
