//! The Kubernetes backend against the fake API server of
//! `lease_store::kube::testing` (no real API server can run on these
//! machines; see docs/KUBE-MODE.md).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lease_store::conformance::{self, Fixture, Table};
use lease_store::kube::testing::{node_json, FakeApi, ListRequest};
use lease_store::kube::{KubeOptions, KubeStore};
use lease_store::store::Result;
use lease_store::{
    AcquireRequest, LeaseAttrs, LeaseEvent, LeaseStore, LeaseWatch, NetworkConfig, StoreError,
    WatchUpdate,
};
use serde_json::{json, Value};

const P: &str = "flannel.alpha.coreos.com/";
const NET: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
const DUAL: &str = r#"{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}"#;
const PATIENCE: Duration = Duration::from_secs(10);

fn store(fake: &FakeApi, node: &str, net_conf: &str) -> KubeStore {
    let cfg = NetworkConfig::parse(net_conf).unwrap_or_else(|e| panic!("net conf: {e}"));
    let mut opts = KubeOptions::new(node, cfg);
    opts.poll_interval = Duration::from_millis(50);
    opts.backoff_max = Duration::from_millis(500);
    KubeStore::new(fake.client(), opts)
}

fn attrs(n: u8) -> LeaseAttrs {
    LeaseAttrs {
        public_ip: std::net::Ipv4Addr::new(192, 0, 2, n),
        public_ipv6: None,
        backend_type: "vxlan".into(),
        backend_data: Some(json!({"VNI": 1, "VtepMAC": format!("0a:58:00:00:00:{n:02x}")})),
        backend_v6_data: None,
    }
}

fn req(a: LeaseAttrs) -> AcquireRequest {
    AcquireRequest {
        attrs: a,
        previous_subnet: None,
        previous_ipv6_subnet: None,
    }
}

/// A node flannel already manages (as another node's daemon left it).
fn managed(name: &str, cidrs: &[&str], n: u8) -> Value {
    let ip = format!("192.0.2.{n}");
    let bd = format!(r#"{{"VNI":1,"VtepMAC":"0a:58:00:00:00:{n:02x}"}}"#);
    node_json(
        name,
        cidrs,
        &[
            (&format!("{P}kube-subnet-manager"), "true"),
            (&format!("{P}backend-type"), "vxlan"),
            (&format!("{P}backend-data"), &bd),
            (&format!("{P}public-ip"), &ip),
        ],
    )
}

fn ann(node: &Value, name: &str) -> Option<String> {
    node["metadata"]["annotations"][format!("{P}{name}")]
        .as_str()
        .map(str::to_string)
}

/// The next update, or a panic after PATIENCE.
async fn next(w: &mut LeaseWatch) -> WatchUpdate {
    match tokio::time::timeout(PATIENCE, w.next()).await {
        Ok(Some(Ok(u))) => u,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch update within {PATIENCE:?}"),
    }
}

async fn next_events(w: &mut LeaseWatch) -> Vec<LeaseEvent> {
    match next(w).await {
        WatchUpdate::Events { events, .. } => events,
        other => panic!("expected events, got {other:?}"),
    }
}

/// Asserts that nothing arrives for a while.
async fn quiet(w: &mut LeaseWatch, d: Duration) {
    if let Ok(u) = tokio::time::timeout(d, w.next()).await {
        panic!("expected no update, got {u:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_publishes_annotations_and_condition() {
    let fake = FakeApi::start(Duration::from_secs(60)).await;
    fake.put_node(node_json("n1", &["10.244.1.0/24"], &[]));
    let s = store(&fake, "n1", NET);
    let lease = s
        .acquire(&req(attrs(1)))
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    assert_eq!(lease.subnet, Some("10.244.1.0/24".parse().unwrap()));
    assert_eq!(lease.attrs, attrs(1));
    assert!(lease.expiration.is_none(), "Kubernetes leases have no TTL");

    let node = fake.node("n1").unwrap();
    assert_eq!(ann(&node, "kube-subnet-manager").as_deref(), Some("true"));
    assert_eq!(ann(&node, "backend-type").as_deref(), Some("vxlan"));
    assert_eq!(ann(&node, "public-ip").as_deref(), Some("192.0.2.1"));
    assert_eq!(ann(&node, "public-ipv6"), None);
    let bd: Value = serde_json::from_str(&ann(&node, "backend-data").unwrap()).unwrap();
    assert_eq!(bd, json!({"VNI": 1, "VtepMAC": "0a:58:00:00:00:01"}));
    let conds = node["status"]["conditions"].as_array().unwrap();
    let find = |t: &str| conds.iter().find(|c| c["type"] == t).cloned();
    let nu = find("NetworkUnavailable").expect("NetworkUnavailable condition set");
    assert_eq!(nu["status"], "False");
    assert_eq!(nu["reason"], "FlannelIsUp");
    assert_eq!(
        find("Ready").expect("the kubelet's Ready condition survives")["status"],
        "True"
    );
    // The status subresource keeps spec as it was.
    assert_eq!(node["spec"]["podCIDR"], "10.244.1.0/24");

    // The published node reads back as the same lease.
    let (leases, _) = s.list().await.unwrap_or_else(|e| panic!("list: {e}"));
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].attrs, attrs(1));

    // renew and release are no-ops; reserve and unreserve are refused
    // with a reason.
    assert_eq!(s.renew(&lease).await.unwrap(), lease);
    s.release(&lease).await.unwrap();
    assert!(fake.node("n1").is_some());
    let e = s
        .reserve(Some("10.244.9.0/24".parse().unwrap()), None, &attrs(1))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("podCIDR"), "{e}");
    let e = s
        .unreserve(Some("10.244.1.0/24".parse().unwrap()), None)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("no reservations") && e.to_string().contains("podCIDR"),
        "{e}"
    );
    assert!(fake.node("n1").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_waits_for_the_pod_cidr_and_gives_up_clearly() {
    let fake = Arc::new(FakeApi::start(Duration::from_secs(60)).await);
    fake.put_node(node_json("n1", &[], &[]));
    let assign = {
        let fake = fake.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            fake.update_node("n1", |n| {
                n["spec"] = json!({"podCIDR": "10.244.5.0/24", "podCIDRs": ["10.244.5.0/24"]})
            });
        })
    };
    let s = store(&fake, "n1", NET);
    let lease = s
        .acquire(&req(attrs(1)))
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    assert_eq!(lease.subnet, Some("10.244.5.0/24".parse().unwrap()));
    assign.await.unwrap();

    fake.put_node(node_json("n2", &[], &[]));
    let mut s2 = store(&fake, "n2", NET).options().clone();
    s2.pod_cidr_wait = Duration::from_millis(200);
    let s2 = KubeStore::new(fake.client(), s2);
    let e = s2.acquire(&req(attrs(2))).await.unwrap_err();
    assert!(e.to_string().contains("--allocate-node-cidrs"), "{e}");

    let s3 = store(&fake, "no-such-node", NET);
    let e = s3.acquire(&req(attrs(3))).await.unwrap_err();
    assert!(matches!(e, StoreError::NotFound(_)), "{e}");
    assert!(e.to_string().contains("NODE_NAME"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_honours_public_ip_overwrite_and_checks_the_network() {
    let fake = FakeApi::start(Duration::from_secs(60)).await;
    fake.put_node(node_json(
        "n1",
        &["10.244.1.0/24"],
        &[
            (&format!("{P}node-public-ip"), "198.51.100.7"),
            (&format!("{P}public-ip-overwrite"), "198.51.100.9"),
        ],
    ));
    fake.put_node(node_json(
        "n2",
        &["10.244.2.0/24"],
        &[(&format!("{P}node-public-ip"), "198.51.100.7")],
    ));
    let l1 = store(&fake, "n1", NET)
        .acquire(&req(attrs(1)))
        .await
        .unwrap();
    assert_eq!(l1.attrs.public_ip.to_string(), "198.51.100.9");
    assert_eq!(
        ann(&fake.node("n1").unwrap(), "public-ip").as_deref(),
        Some("198.51.100.9")
    );
    let l2 = store(&fake, "n2", NET)
        .acquire(&req(attrs(2)))
        .await
        .unwrap();
    assert_eq!(l2.attrs.public_ip.to_string(), "198.51.100.7");

    // A podCIDR outside Network: refused, and nothing is published.
    fake.put_node(node_json("n3", &["10.9.0.0/24"], &[]));
    let e = store(&fake, "n3", NET)
        .acquire(&req(attrs(3)))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("outside Network"), "{e}");
    assert_eq!(ann(&fake.node("n3").unwrap(), "kube-subnet-manager"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_acquire_publishes_both_families() {
    let fake = FakeApi::start(Duration::from_secs(60)).await;
    fake.put_node(node_json(
        "n1",
        &["10.244.1.0/24", "fd00:10:244:1::/64"],
        &[],
    ));
    let mut a = attrs(1);
    a.public_ipv6 = Some("2001:db8::1".parse().unwrap());
    a.backend_v6_data = Some(json!({"VNI": 1, "VtepMAC": "0a:58:00:00:01:01"}));
    let l = store(&fake, "n1", DUAL)
        .acquire(&req(a.clone()))
        .await
        .unwrap();
    assert_eq!(l.ipv6_subnet, Some("fd00:10:244:1::/64".parse().unwrap()));
    let node = fake.node("n1").unwrap();
    assert_eq!(ann(&node, "public-ipv6").as_deref(), Some("2001:db8::1"));
    assert!(ann(&node, "backend-v6-data").is_some());
    let (leases, _) = store(&fake, "x", DUAL).list().await.unwrap();
    assert_eq!(leases[0].attrs, a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_watch_turn_managed_nodes_into_peer_events() {
    let fake = FakeApi::start(Duration::from_secs(60)).await;
    fake.put_node(managed("n1", &["10.244.1.0/24"], 1));
    fake.put_node(node_json("n2", &["10.244.2.0/24"], &[])); // not flannel's
    fake.put_node(managed("n3", &["10.244.3.0/24", "fd00:10:244:3::/64"], 3));
    fake.update_node("n3", |n| {
        n["metadata"]["annotations"][format!("{P}public-ipv6")] = json!("2001:db8::3")
    });
    let s = store(&fake, "n1", DUAL);
    let (leases, rev) = s.list().await.unwrap();
    assert_eq!(leases.len(), 2, "{leases:?}");
    assert_eq!(rev as u64, fake.resource_version());
    let own = leases
        .iter()
        .find(|l| l.attrs.public_ip.octets()[3] == 1)
        .cloned();
    let mut w = s.watch(rev, own).await.unwrap();

    // A new managed node: added.
    fake.put_node(managed("n4", &["10.244.4.0/24"], 4));
    let ev = next_events(&mut w).await;
    assert!(
        matches!(&ev[..], [LeaseEvent::Added(l)] if l.subnet == Some("10.244.4.0/24".parse().unwrap())),
        "{ev:?}"
    );

    // Not delivered: a node without the annotation, a heartbeat that
    // changes nothing flannel publishes, and our own node.
    fake.update_node("n2", |n| n["metadata"]["labels"]["x"] = json!("y"));
    fake.update_node("n4", |n| {
        n["status"]["conditions"][0]["lastHeartbeatTime"] = json!("2026-01-01T00:05:00Z")
    });
    fake.update_node("n1", |n| {
        n["metadata"]["annotations"][format!("{P}backend-data")] =
            json!(r#"{"VNI":1,"VtepMAC":"0a:58:00:00:00:99"}"#)
    });
    quiet(&mut w, Duration::from_millis(500)).await;

    // An IPv6-only annotation change is an update (Go flannel drops it).
    fake.update_node("n3", |n| {
        n["metadata"]["annotations"][format!("{P}public-ipv6")] = json!("2001:db8::33")
    });
    let ev = next_events(&mut w).await;
    match &ev[..] {
        [LeaseEvent::Added(l)] => {
            assert_eq!(l.attrs.public_ipv6, Some("2001:db8::33".parse().unwrap()))
        }
        other => panic!("expected the IPv6 update, got {other:?}"),
    }

    // Deleting a node, or flannel's annotation, removes the peer with its
    // last attributes.
    fake.delete_node("n4");
    let ev = next_events(&mut w).await;
    match &ev[..] {
        [LeaseEvent::Removed(l)] => assert_eq!(l.attrs, attrs(4)),
        other => panic!("expected n4 removed, got {other:?}"),
    }
    fake.update_node("n3", |n| {
        n["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove(&format!("{P}kube-subnet-manager"));
    });
    let ev = next_events(&mut w).await;
    assert!(
        matches!(&ev[..], [LeaseEvent::Removed(l)] if l.attrs.public_ip.octets()[3] == 3),
        "{ev:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_410_on_resume_gives_a_snapshot_then_events() {
    let fake = FakeApi::start(Duration::from_secs(60)).await;
    fake.put_node(managed("n1", &["10.244.1.0/24"], 1));
    let s = store(&fake, "other", NET);
    let mut w = s.watch(0, None).await.unwrap();
    assert!(
        matches!(next(&mut w).await, WatchUpdate::Snapshot { leases, .. } if leases.len() == 1)
    );
    fake.put_node(managed("n2", &["10.244.2.0/24"], 2));
    assert!(
        matches!(&next_events(&mut w).await[..], [LeaseEvent::Added(l)] if l.attrs == attrs(2))
    );
    // The server ends the watch and the history the watcher would resume
    // from is compacted away: its resume gets 410 Gone, it lists again and
    // the consumer gets a snapshot.
    fake.end_watches_and_compact();
    match next(&mut w).await {
        WatchUpdate::Snapshot { leases, revision } => {
            assert_eq!(leases.len(), 2, "{leases:?}");
            assert!(revision > 0);
        }
        other => panic!("expected a snapshot after 410 Gone, got {other:?}"),
    }
    assert_eq!(fake.lists(), 2, "the initial list and the relist after 410");
    assert!(
        fake.watch_requests().len() >= 2,
        "{:?}",
        fake.watch_requests()
    );
    fake.put_node(managed("n3", &["10.244.3.0/24"], 3));
    let ev = next_events(&mut w).await;
    assert!(
        matches!(&ev[..], [LeaseEvent::Added(l)] if l.attrs == attrs(3)),
        "{ev:?}"
    );
    // After the snapshot the view knows every node: a heartbeat of a node
    // that was in it is not an event.
    fake.update_node("n2", |n| n["status"]["phase"] = json!("Running"));
    quiet(&mut w, Duration::from_millis(400)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_an_unknown_or_compacted_revision_starts_with_a_snapshot() {
    let fake = FakeApi::start(Duration::from_secs(60)).await;
    fake.put_node(managed("n1", &["10.244.1.0/24"], 1));
    let (_, rev) = store(&fake, "other", NET).list().await.unwrap();
    fake.put_node(managed("n2", &["10.244.2.0/24"], 2));
    fake.compact();
    // Another store (another process): it cannot know the view at `rev`.
    let mut w = store(&fake, "other", NET).watch(rev, None).await.unwrap();
    match next(&mut w).await {
        WatchUpdate::Snapshot { leases, revision } => {
            assert_eq!(leases.len(), 2, "{leases:?}");
            assert_eq!(revision as u64, fake.resource_version());
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_the_stores_own_list_delivers_only_the_changes_since() {
    let fake = FakeApi::start(Duration::from_secs(60)).await;
    fake.put_node(managed("n1", &["10.244.1.0/24"], 1));
    fake.put_node(managed("n2", &["10.244.2.0/24"], 2));
    let s = store(&fake, "other", NET);
    let (leases, rev) = s.list().await.unwrap();
    assert_eq!(leases.len(), 2);
    // Changes between the list and the watch's own first list.
    fake.delete_node("n1");
    fake.put_node(managed("n3", &["10.244.3.0/24"], 3));
    let mut w = s.watch(rev, None).await.unwrap();
    match next(&mut w).await {
        WatchUpdate::Events { events, revision } => {
            assert!(revision > rev);
            assert_eq!(events.len(), 2, "{events:?}");
            assert!(matches!(&events[0], LeaseEvent::Removed(l) if l.attrs == attrs(1)));
            assert!(matches!(&events[1], LeaseEvent::Added(l) if l.attrs == attrs(3)));
        }
        other => panic!("expected the changes since {rev}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_paginated_and_complete() {
    let fake = FakeApi::start(Duration::from_secs(60)).await;
    let n = 23;
    fake.put_nodes((0..n).map(|i| {
        if i % 5 == 4 {
            node_json(&format!("u{i:02}"), &[], &[])
        } else {
            managed(
                &format!("n{i:02}"),
                &[&format!("10.244.{i}.0/24")],
                i as u8 + 1,
            )
        }
    }));
    let cfg = NetworkConfig::parse(NET).unwrap();
    let mut opts = KubeOptions::new("other", cfg);
    opts.page_size = 5;
    let s = KubeStore::new(fake.client(), opts);
    let (leases, _) = s.list().await.unwrap();
    assert_eq!(leases.len(), 19, "every managed node, across pages");
    let pages = |reqs: &[ListRequest]| {
        assert!(reqs.iter().all(|r| r.limit == Some(5)), "{reqs:?}");
        assert!(!reqs[0].continued && reqs[1..].iter().all(|r| r.continued));
        reqs.len()
    };
    assert_eq!(pages(&fake.list_requests()), 5, "23 nodes in pages of 5");

    // The watcher's own list pages too.
    let mut w = store_with_pages(&fake, 5).watch(0, None).await.unwrap();
    match next(&mut w).await {
        WatchUpdate::Snapshot { leases, .. } => assert_eq!(leases.len(), 19),
        other => panic!("expected a snapshot, got {other:?}"),
    }
    let reqs = fake.list_requests();
    assert_eq!(pages(&reqs[5..]), 5);

    // A page after the first comes from the same snapshot: a node added
    // mid-list is not in it (the watch delivers it afterwards).
    let mut pager = fake.list_requests().len();
    let path = "/api/v1/nodes?limit=10";
    let first = get_json(&fake, path).await;
    assert_eq!(first["metadata"]["remainingItemCount"], 13);
    fake.put_node(managed("n99", &["10.244.99.0/24"], 99));
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    let mut seen = first["items"].as_array().unwrap().len();
    let mut token = Some(token);
    while let Some(t) = token {
        let page = get_json(&fake, &format!("{path}&continue={t}")).await;
        assert_eq!(
            page["metadata"]["resourceVersion"],
            first["metadata"]["resourceVersion"]
        );
        seen += page["items"].as_array().unwrap().len();
        token = page["metadata"]["continue"].as_str().map(str::to_string);
        pager += 1;
    }
    assert_eq!(seen, 23, "the snapshot of the first page");
    assert_eq!(fake.list_requests().len(), pager + 1);
}

fn store_with_pages(fake: &FakeApi, page_size: u32) -> KubeStore {
    let cfg = NetworkConfig::parse(NET).unwrap_or_else(|e| panic!("net conf: {e}"));
    let mut opts = KubeOptions::new("other", cfg);
    opts.page_size = page_size;
    KubeStore::new(fake.client(), opts)
}

/// A GET of `path` on the fake through a kube client, as JSON.
async fn get_json(fake: &FakeApi, path: &str) -> Value {
    let req = http::Request::get(path)
        .body(Vec::new())
        .unwrap_or_else(|e| panic!("request {path}: {e}"));
    fake.client()
        .request::<Value>(req)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_from_the_last_bookmark_when_the_server_ends_it() {
    let fake = FakeApi::start(Duration::from_millis(100)).await;
    fake.put_node(managed("n1", &["10.244.1.0/24"], 1));
    let s = store(&fake, "other", NET);
    let (_, rev) = s.list().await.unwrap();
    let mut w = s.watch(rev, None).await.unwrap();
    quiet(&mut w, Duration::from_millis(300)).await;
    // Writes to other resources move the resourceVersion; only bookmarks
    // tell the watcher.
    for _ in 0..3 {
        fake.other_write();
    }
    let moved = fake.resource_version();
    quiet(&mut w, Duration::from_millis(400)).await;
    fake.end_watches();
    quiet(&mut w, Duration::from_millis(300)).await;
    assert_eq!(
        fake.watch_requests(),
        vec![rev.to_string(), moved.to_string()],
        "the second watch must start at the bookmark's resourceVersion"
    );
    fake.put_node(managed("n2", &["10.244.2.0/24"], 2));
    let ev = next_events(&mut w).await;
    assert!(
        matches!(&ev[..], [LeaseEvent::Added(l)] if l.attrs == attrs(2)),
        "{ev:?}"
    );
    // One list by `list()`, one by the watcher before its first watch
    // (kube's watcher always lists first); none when it resumed.
    assert_eq!(fake.lists(), 2, "a resumed watch must not list again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_zero_starts_with_a_snapshot() {
    let fake = FakeApi::start(Duration::from_secs(60)).await;
    fake.put_node(managed("n1", &["10.244.1.0/24"], 1));
    fake.put_node(managed("n2", &["10.244.2.0/24"], 2));
    let s = store(&fake, "n1", NET);
    let own = s
        .list()
        .await
        .unwrap()
        .0
        .into_iter()
        .find(|l| l.attrs == attrs(1));
    let mut w = s.watch(0, own).await.unwrap();
    match next(&mut w).await {
        WatchUpdate::Snapshot { leases, .. } => {
            assert_eq!(leases.len(), 1, "own node left out: {leases:?}");
            assert_eq!(leases[0].attrs, attrs(2));
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

// ------------------------------------------------ the conformance suite
//
// Most checks assume the store allocates subnets and expires leases; in
// Kubernetes mode the controller manager assigns podCIDRs and Node objects
// have no TTL, so only the checks below apply (see docs/KUBE-MODE.md).

struct Kube;

struct KubeTable {
    fake: FakeApi,
    net_conf: String,
}

#[async_trait::async_trait]
impl Fixture for Kube {
    async fn table(&self, net_conf: &str, _ttl: Duration) -> Result<Box<dyn Table>> {
        Ok(Box::new(KubeTable {
            fake: FakeApi::start(Duration::from_secs(60)).await,
            net_conf: net_conf.to_string(),
        }))
    }
}

#[async_trait::async_trait]
impl Table for KubeTable {
    async fn open(&self) -> Result<Arc<dyn LeaseStore>> {
        let cfg = NetworkConfig::parse(&self.net_conf)?;
        Ok(Arc::new(KubeStore::new(
            self.fake.client(),
            KubeOptions::new("conformance", cfg),
        )))
    }
    async fn compact(&self) -> Result<()> {
        self.fake.compact();
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_network_config_round_trips() {
    conformance::network_config_round_trips(&Kube).await;
}
