//! The Lease-object store (`--kube-subnet-source lease`) against the fake
//! API server of `lease_store::kube::testing`: the whole conformance suite,
//! then what only this store does (owner references, garbage collection of
//! a deleted Node's Lease, hand-edited and conflicting objects, relist after
//! 410). The same suite runs against the lab's real API server in
//! tests/tests/kube_leases.rs.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lease_store::conformance::{node_attrs, Fixture, Table};
use lease_store::kube::lease_map;
use lease_store::kube::testing::{node_json, FakeApi};
use lease_store::kube::{KubeLeaseOptions, KubeLeaseStore};
use lease_store::store::Result;
use lease_store::{AcquireRequest, LeaseEvent, LeaseStore, LeaseWatch, NetworkConfig, WatchUpdate};
use serde_json::json;

const NS: &str = "kube-flannel";
const NET: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
const PATIENCE: Duration = Duration::from_secs(10);

struct Fake;

struct FakeTable {
    fake: FakeApi,
    net_conf: String,
    ttl: Duration,
}

#[async_trait::async_trait]
impl Fixture for Fake {
    async fn table(&self, net_conf: &str, ttl: Duration) -> Result<Box<dyn Table>> {
        Ok(Box::new(FakeTable {
            fake: FakeApi::start(Duration::from_secs(60)).await,
            net_conf: net_conf.to_string(),
            ttl,
        }))
    }
}

#[async_trait::async_trait]
impl Table for FakeTable {
    async fn open(&self) -> Result<Arc<dyn LeaseStore>> {
        let mut opts = KubeLeaseOptions::new(NS, NetworkConfig::parse(&self.net_conf)?);
        opts.ttl = self.ttl;
        opts.backoff_max = Duration::from_millis(500);
        Ok(Arc::new(KubeLeaseStore::new(self.fake.client(), opts)))
    }
    async fn compact(&self) -> Result<()> {
        self.fake.compact();
        Ok(())
    }
}

lease_store::conformance_tests!(Fake);

// ------------------------------------------------ beyond the suite

fn node_store(fake: &FakeApi, node: &str) -> KubeLeaseStore {
    let mut opts = KubeLeaseOptions::new(NS, NetworkConfig::parse(NET).unwrap());
    opts.node_name = Some(node.to_string());
    opts.backoff_max = Duration::from_millis(300);
    KubeLeaseStore::new(fake.client(), opts)
}

fn req(n: u8) -> AcquireRequest {
    AcquireRequest {
        attrs: node_attrs(n),
        previous_subnet: None,
        previous_ipv6_subnet: None,
    }
}

async fn next(w: &mut LeaseWatch) -> WatchUpdate {
    match tokio::time::timeout(PATIENCE, w.next()).await {
        Ok(Some(Ok(u))) => u,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch update within {PATIENCE:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_lease_is_owned_by_the_node_and_goes_with_it() {
    let fake = FakeApi::start(Duration::from_secs(60)).await;
    fake.put_node(node_json("n1", &[], &[]));
    fake.put_node(node_json("n2", &[], &[]));
    let s1 = node_store(&fake, "n1");
    let s2 = node_store(&fake, "n2");
    let l1 = s1.acquire(&req(1)).await.unwrap();
    let name = lease_map::object_name(l1.subnet, None);
    let obj = fake.lease(NS, &name).expect("the Lease object");
    assert_eq!(obj["spec"]["holderIdentity"], "n1");
    assert_eq!(obj["spec"]["leaseDurationSeconds"], 24 * 3600);
    assert_eq!(obj["metadata"]["ownerReferences"][0]["kind"], "Node");
    assert_eq!(obj["metadata"]["ownerReferences"][0]["uid"], "uid-n1");
    assert_eq!(
        obj["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ip"],
        "192.0.2.1"
    );
    let (_, rev) = s2.list().await.unwrap();
    let l2 = s2.acquire(&req(2)).await.unwrap();
    let mut w = s2.watch(rev, Some(l2.clone())).await.unwrap();
    // The node goes (scale-in): the garbage collector deletes its Lease,
    // and the peer's watch removes it.
    fake.delete_node("n1");
    match next(&mut w).await {
        WatchUpdate::Events { events, .. } => {
            assert_eq!(events.len(), 1, "{events:?}");
            assert!(matches!(&events[0], LeaseEvent::Removed(l) if l.subnet == l1.subnet));
        }
        other => panic!("expected the removal, got {other:?}"),
    }
    // A restart of n2's daemon keeps its subnet.
    let again = node_store(&fake, "n2").acquire(&req(2)).await.unwrap();
    assert_eq!(again.subnet, l2.subnet);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_missing_from_the_api_is_named() {
    let fake = FakeApi::start(Duration::from_secs(60)).await;
    let err = node_store(&fake, "ghost")
        .acquire(&req(1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ghost"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edited_and_duplicate_leases_are_skipped_counted_and_keep_their_subnet() {
    let fake = FakeApi::start(Duration::from_secs(60)).await;
    // A tiny network: 3 subnets, so that blocking is visible.
    let conf = r#"{"Network":"10.0.0.0/26","Backend":{"Type":"vxlan"}}"#;
    let mk = |node: Option<&str>| {
        let mut o = KubeLeaseOptions::new(NS, NetworkConfig::parse(conf).unwrap());
        o.node_name = node.map(str::to_string);
        KubeLeaseStore::new(fake.client(), o)
    };
    fake.put_node(node_json("n1", &[], &[]));
    let s = mk(Some("n1"));
    let l1 = s.acquire(&req(1)).await.unwrap();
    let name1 = lease_map::object_name(l1.subnet, None);
    let viewer = mk(None);
    let (_, rev) = viewer.list().await.unwrap();
    let mut w = viewer.watch(rev, None).await.unwrap();
    // Edited by hand into garbage: the watch drops the peer.
    let mut bad = fake.lease(NS, &name1).unwrap();
    bad["metadata"]["annotations"]["flannel.alpha.coreos.com/backend-data"] = json!("{oops");
    fake.put_lease(NS, bad.clone());
    match next(&mut w).await {
        WatchUpdate::Events { events, .. } => {
            assert!(matches!(&events[..], [LeaseEvent::Removed(l)] if l.subnet == l1.subnet))
        }
        other => panic!("expected a removal, got {other:?}"),
    }
    // Seen again and again, counted once.
    let (listed, _) = viewer.list().await.unwrap();
    assert!(listed.is_empty(), "{listed:?}");
    viewer.list().await.unwrap();
    assert_eq!(viewer.rejected_leases(), 1);
    // A lease outside the network, written by hand (garbage name too).
    let mut outside = bad.clone();
    outside["metadata"]["name"] = json!("flannel-192.168.0.0-28");
    outside["metadata"]["annotations"]["flannel.alpha.coreos.com/subnet"] = json!("192.168.0.0/28");
    outside["metadata"]["annotations"]["flannel.alpha.coreos.com/backend-data"] =
        json!(r#"{"VNI":1}"#);
    fake.put_lease(NS, outside);
    // A second Lease claiming n1 (renewed earlier than the garbage one).
    let mut dup = bad.clone();
    let sn = "10.0.0.48/28";
    dup["metadata"]["name"] = json!("flannel-10.0.0.48-28");
    dup["metadata"]["annotations"]["flannel.alpha.coreos.com/subnet"] = json!(sn);
    dup["metadata"]["annotations"]["flannel.alpha.coreos.com/backend-data"] = json!(r#"{"VNI":1}"#);
    fake.put_lease(NS, dup);
    // The garbage object still sits on its subnet: with one more subnet
    // taken by a fresh node, nothing is left, and nobody got the blocked
    // subnet.
    let other = mk(None);
    let mut got = Vec::new();
    loop {
        match other.acquire(&req(10 + got.len() as u8)).await {
            Ok(l) => got.push(l.subnet),
            Err(e) => {
                assert!(e.to_string().contains("out of subnets"), "{e}");
                break;
            }
        }
        assert!(got.len() < 3, "{got:?}");
    }
    assert!(
        !got.contains(&l1.subnet),
        "a subnet under a garbage Lease was handed out: {got:?}"
    );
    // Nothing crashed; the watch still runs and reports peers.
    let _ = next(&mut w).await;
    assert!(viewer.rejected_leases() >= 1);
    // The daemon owning the garbage object puts it right on renewal.
    let back = s.renew(&l1).await.unwrap();
    assert_eq!(back.subnet, l1.subnet);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_relists_after_410_and_sees_expiries_on_its_own_clock() {
    let fake = FakeApi::start(Duration::from_secs(60)).await;
    let mut o = KubeLeaseOptions::new(NS, NetworkConfig::parse(NET).unwrap());
    o.ttl = Duration::from_secs(2);
    o.backoff_max = Duration::from_millis(300);
    let s = KubeLeaseStore::new(fake.client(), o);
    let (_, rev) = s.list().await.unwrap();
    let mut w = s.watch(rev, None).await.unwrap();
    let a = s.acquire(&req(1)).await.unwrap();
    assert!(matches!(next(&mut w).await, WatchUpdate::Events { .. }));
    fake.end_watches_and_compact();
    match next(&mut w).await {
        WatchUpdate::Snapshot { leases, .. } => assert_eq!(leases.len(), 1),
        other => panic!("expected a snapshot after 410, got {other:?}"),
    }
    // No API event: the lease simply runs out.
    match next(&mut w).await {
        WatchUpdate::Events { events, .. } => {
            assert!(matches!(&events[..], [LeaseEvent::Removed(l)] if l.key() == a.key()))
        }
        other => panic!("expected the expiry, got {other:?}"),
    }
    assert!(fake.watch_requests().len() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_also_publishes_on_its_node_and_ignores_the_pod_cidr() {
    let fake = FakeApi::start(Duration::from_secs(60)).await;
    // A podCIDR the controller manager gave (not EKS): ignored.
    fake.put_node(node_json("n1", &["10.244.200.0/24"], &[]));
    let mut opts = KubeLeaseOptions::new(NS, NetworkConfig::parse(NET).unwrap());
    opts.node_name = Some("n1".into());
    opts.publish_node = true;
    let s = KubeLeaseStore::new(fake.client(), opts);
    let mut r = req(1);
    r.previous_subnet = Some("10.244.7.0/24".parse().unwrap());
    let l = s.acquire(&r).await.unwrap();
    assert_eq!(l.subnet, r.previous_subnet, "the lease, not the podCIDR");
    let node = fake.node("n1").unwrap();
    let ann = &node["metadata"]["annotations"];
    assert_eq!(ann["flannel.alpha.coreos.com/kube-subnet-manager"], "true");
    assert_eq!(ann["flannel.alpha.coreos.com/public-ip"], "192.0.2.1");
    let conds = node["status"]["conditions"].as_array().unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "NetworkUnavailable" && c["status"] == "False"),
        "{conds:?}"
    );
    assert!(
        conds.iter().any(|c| c["type"] == "Ready"),
        "kubelet's Ready kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_takes_back_its_own_lease_edited_into_garbage() {
    let fake = FakeApi::start(Duration::from_secs(60)).await;
    fake.put_node(node_json("n1", &[], &[]));
    let s = node_store(&fake, "n1");
    let l = s.acquire(&req(1)).await.unwrap();
    let name = lease_map::object_name(l.subnet, None);
    let mut bad = fake.lease(NS, &name).unwrap();
    bad["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ip"] = json!("garbage");
    fake.put_lease(NS, bad);
    // The restarted daemon asks for its subnet.env subnet: it gets it back
    // and the object is readable again.
    let mut r = req(1);
    r.previous_subnet = l.subnet;
    let again = node_store(&fake, "n1").acquire(&r).await.unwrap();
    assert_eq!(again.subnet, l.subnet);
    let obj = fake.lease(NS, &name).unwrap();
    assert_eq!(
        obj["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ip"],
        "192.0.2.1"
    );
}

/// `public-ip-overwrite` (with the configured prefix) wins over the
/// detected public IP, as with the podCIDR source: in the Lease, in the
/// Node's annotations, and for peers. Pinned later, the node keeps its
/// subnet under the new IP (one Lease, no second one); a bad value is
/// refused with the annotation named and nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_ip_overwrite_is_honoured() {
    const P: &str = "flannel.alpha.coreos.com/";
    let fake = FakeApi::start(Duration::from_secs(60)).await;
    fake.put_node(node_json(
        "n1",
        &[],
        &[
            (&format!("{P}node-public-ip"), "198.51.100.7"),
            (&format!("{P}public-ip-overwrite"), "198.51.100.9"),
        ],
    ));
    fake.put_node(node_json("n2", &[], &[]));
    let daemon = |node: &str| {
        let mut opts = KubeLeaseOptions::new(NS, NetworkConfig::parse(NET).unwrap());
        opts.node_name = Some(node.into());
        opts.publish_node = true;
        KubeLeaseStore::new(fake.client(), opts)
    };
    let l1 = daemon("n1").acquire(&req(1)).await.unwrap();
    assert_eq!(l1.attrs.public_ip.to_string(), "198.51.100.9");
    let name = lease_map::object_name(l1.subnet, None);
    let obj = fake.lease(NS, &name).expect("the Lease object");
    assert_eq!(
        obj["metadata"]["annotations"][format!("{P}public-ip")],
        "198.51.100.9"
    );
    assert_eq!(
        fake.node("n1").unwrap()["metadata"]["annotations"][format!("{P}public-ip")],
        "198.51.100.9"
    );
    // A node without an overwrite keeps what it detected; peers see n1's
    // overwrite.
    let s2 = daemon("n2");
    let l2 = s2.acquire(&req(2)).await.unwrap();
    assert_eq!(l2.attrs.public_ip, node_attrs(2).public_ip);
    let (peers, _) = s2.list().await.unwrap();
    assert!(
        peers
            .iter()
            .any(|l| l.subnet == l1.subnet && l.attrs.public_ip.to_string() == "198.51.100.9"),
        "{peers:?}"
    );
    // The operator pins another address; the restarted daemon keeps its
    // subnet and publishes the new address.
    fake.update_node("n1", |n| {
        n["metadata"]["annotations"][format!("{P}public-ip-overwrite")] = json!("198.51.100.10");
    });
    let again = daemon("n1").acquire(&req(1)).await.unwrap();
    assert_eq!(again.subnet, l1.subnet);
    assert_eq!(again.attrs.public_ip.to_string(), "198.51.100.10");
    let held: Vec<_> = fake
        .leases(NS)
        .into_values()
        .filter(|o| o["spec"]["holderIdentity"] == "n1")
        .collect();
    assert_eq!(held.len(), 1, "{held:?}");
    // Garbage in the annotation: named, and nothing changes.
    fake.update_node("n1", |n| {
        n["metadata"]["annotations"][format!("{P}public-ip-overwrite")] = json!("nope");
    });
    let e = daemon("n1").acquire(&req(1)).await.unwrap_err();
    assert!(e.to_string().contains("public-ip-overwrite"), "{e}");
    assert_eq!(
        fake.lease(NS, &name).unwrap()["metadata"]["annotations"][format!("{P}public-ip")],
        "198.51.100.10"
    );
}

/// A restarted daemon (subnet.env read back) finds its own Lease by its
/// address label and renews it in place with its new attributes: one small
/// list, not a list of the whole table. A new node, a restart whose Lease
/// is gone, and a node with a reservation waiting go the full way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reuses_its_lease_without_listing_the_table() {
    const ALL: &str = "flannel.alpha.coreos.com/subnet-lease=true";
    let fake = FakeApi::start(Duration::from_secs(60)).await;
    fake.put_node(node_json("n1", &[], &[]));
    fake.put_node(node_json("n2", &[], &[]));
    let l1 = node_store(&fake, "n1").acquire(&req(1)).await.unwrap();
    assert_eq!(fake.lease_lists(), [ALL], "a new node lists the table");
    node_store(&fake, "n2").acquire(&req(2)).await.unwrap();
    let name = lease_map::object_name(l1.subnet, None);
    let first = fake.lease(NS, &name).unwrap();
    assert_eq!(
        first["metadata"]["labels"]["flannel.alpha.coreos.com/subnet-lease-address"],
        "192.0.2.1"
    );

    let seen = fake.lease_lists().len();
    let mut restart = req(1);
    restart.attrs.backend_data = Some(json!({"VNI": 1, "VtepMAC": "0a:58:00:00:01:99"}));
    restart.previous_subnet = l1.subnet;
    let again = node_store(&fake, "n1").acquire(&restart).await.unwrap();
    assert_eq!(again.subnet, l1.subnet);
    assert_eq!(again.attrs, restart.attrs);
    assert!(!again.is_reservation());
    let lists = fake.lease_lists()[seen..].to_vec();
    assert_eq!(
        lists,
        [format!(
            "{ALL},flannel.alpha.coreos.com/subnet-lease-address=192.0.2.1"
        )],
        "one label-selected list, no list of the table"
    );
    let obj = fake.lease(NS, &name).unwrap();
    assert_eq!(obj["spec"]["acquireTime"], first["spec"]["acquireTime"]);
    assert_eq!(obj["metadata"]["ownerReferences"][0]["uid"], "uid-n1");
    assert_eq!(fake.leases(NS).len(), 2);

    // Its Lease gone (released by hand): the full way, same subnet back.
    node_store(&fake, "n1").release(&again).await.unwrap();
    let seen = fake.lease_lists().len();
    let back = node_store(&fake, "n1").acquire(&restart).await.unwrap();
    assert_eq!(back.subnet, l1.subnet);
    assert!(fake.lease_lists()[seen..].iter().any(|s| s == ALL));

    // A reservation for its address wins over its lease, as flannel's
    // policy says: the full way finds it.
    let reserved: ipnet::Ipv4Net = "10.244.77.0/24".parse().unwrap();
    node_store(&fake, "n2")
        .reserve(Some(reserved), None, &node_attrs(1))
        .await
        .unwrap();
    let moved = node_store(&fake, "n1").acquire(&restart).await.unwrap();
    assert_eq!(moved.subnet, Some(reserved));
    assert!(moved.is_reservation());
    assert!(
        fake.lease(NS, &name).is_none(),
        "the node's old lease is given back"
    );
}
