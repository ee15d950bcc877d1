//! The etcd backend against a real etcd: Go flannel's keys and values, leases
//! written by flannel or an operator (etcdctl), reservations, big tables,
//! removal events, several endpoints.

mod etcd_support;

use std::time::{Duration, SystemTime};

use etcd_client::{Client, PutOptions, Txn, TxnOp};
use etcd_support::*;
use lease_store::etcd::EtcdOptions;
use lease_store::{LeaseEvent, LeaseStore, StoreError, WatchUpdate};

async fn raw(etcd: &testkit::etcd::EtcdProcess) -> Client {
    Client::connect([etcd.endpoint()], None)
        .await
        .expect("raw etcd client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_values_are_flannels() {
    let etcd = start_etcd().await;
    let s = store_with_config(&etcd).await;
    let l = s.acquire(&req(1)).await.expect("acquire");
    let subnet = l.subnet.expect("an IPv4 subnet");
    let key = format!(
        "/coreos.com/network/subnets/{}-{}",
        subnet.network(),
        subnet.prefix_len()
    );
    let c = raw(&etcd).await;
    let resp = c.kv_client().get(key.as_str(), None).await.expect("get");
    let kv = resp
        .kvs()
        .first()
        .unwrap_or_else(|| panic!("{key} not written"));
    let value: serde_json::Value = serde_json::from_slice(kv.value()).expect("JSON value");
    assert_eq!(
        value,
        serde_json::json!({"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"vxlan",
            "BackendData":{"VNI":1,"VtepMAC":"0a:58:0a:f4:00:01"}})
    );
    // The exact bytes Go flannel writes (field order, compact).
    assert_eq!(
        std::str::from_utf8(kv.value()).expect("UTF-8"),
        r#"{"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:58:0a:f4:00:01"}}"#
    );
    assert_ne!(kv.lease(), 0, "a lease is attached to an etcd lease");
    let ttl = c
        .lease_client()
        .time_to_live(kv.lease(), None)
        .await
        .expect("ttl")
        .ttl();
    assert!(
        (86_000..=86_400).contains(&ttl),
        "default TTL is 24 h, got {ttl} s"
    );
    let cfg = c
        .kv_client()
        .get("/coreos.com/network/config", None)
        .await
        .expect("get config");
    assert_eq!(cfg.kvs()[0].value(), NET_CONF.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_what_flannel_and_operators_wrote() {
    let etcd = start_etcd().await;
    let s = store_with_config(&etcd).await;
    let c = raw(&etcd).await;
    let id = c.lease_client().grant(600, None).await.expect("grant").id();
    let flannel_value = r#"{"PublicIP":"198.51.100.7","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#;
    c.kv_client()
        .put(
            "/coreos.com/network/subnets/10.244.7.0-24",
            flannel_value,
            Some(PutOptions::new().with_lease(id)),
        )
        .await
        .expect("put flannel lease");
    // An operator's reservation (etcdctl put, no lease), and some junk that
    // must not hide the rest.
    c.kv_client()
        .put(
            "/coreos.com/network/subnets/10.244.9.0-24",
            r#"{"PublicIP":"198.51.100.9"}"#,
            None,
        )
        .await
        .expect("put reservation");
    c.kv_client()
        .put("/coreos.com/network/subnets/not-a-subnet", "{}", None)
        .await
        .expect("put junk");
    let (leases, rev) = s.list().await.expect("list");
    assert!(rev > 0);
    assert_eq!(leases.len(), 2, "{leases:?}");
    let flannel = leases
        .iter()
        .find(|l| l.key() == "10.244.7.0-24")
        .expect("flannel's lease");
    assert_eq!(
        flannel.attrs.backend_data.as_ref().expect("backend data")["VtepMAC"],
        "c6:d2:32:6f:8f:44"
    );
    let left = flannel
        .expiration
        .expect("has a TTL")
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(
        left > Duration::from_secs(590) && left <= Duration::from_secs(600),
        "{left:?}"
    );
    let reservation = leases
        .iter()
        .find(|l| l.key() == "10.244.9.0-24")
        .expect("reservation");
    assert!(reservation.is_reservation());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_are_never_given_to_another_node() {
    let etcd = start_etcd().await;
    let s = connect(EtcdOptions::with_endpoints([etcd.endpoint()])).await;
    // Three /28s: 10.0.0.16, .32, .48. Two are reserved by an operator.
    s.put_config(r#"{"Network":"10.0.0.0/26","Backend":{"Type":"vxlan"}}"#)
        .await
        .expect("config");
    let c = raw(&etcd).await;
    for (k, ip) in [
        ("10.0.0.16-28", "192.0.2.9"),
        ("10.0.0.48-28", "192.0.2.10"),
    ] {
        c.kv_client()
            .put(
                format!("/coreos.com/network/subnets/{k}"),
                format!(r#"{{"PublicIP":"{ip}"}}"#),
                None,
            )
            .await
            .expect("reserve");
    }
    let one = s.acquire(&req(1)).await.expect("the free subnet");
    assert_eq!(one.key(), "10.0.0.32-28");
    match s.acquire(&req(2)).await {
        Err(StoreError::OutOfSubnets { .. }) => {}
        other => panic!("reserved subnets must not be handed out: {other:?}"),
    }
    // The reserved node takes its reservation, which stays without TTL.
    let nine = s.acquire(&req(9)).await.expect("node 9");
    assert_eq!(nine.key(), "10.0.0.16-28");
    assert!(nine.is_reservation());
    let kv = c
        .kv_client()
        .get("/coreos.com/network/subnets/10.0.0.16-28", None)
        .await
        .expect("get");
    assert_eq!(kv.kvs()[0].lease(), 0, "a reservation never gets a TTL");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(kv.kvs()[0].value()).expect("json")
            ["BackendData"]["VtepMAC"],
        "0a:58:0a:f4:00:09",
        "node 9 published its attributes on its reservation"
    );
    // Renewing a reservation is a no-op that keeps it.
    let again = s.renew(&nine).await.expect("renew reservation");
    assert!(again.is_reservation());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_through_a_large_table_at_one_revision() {
    let etcd = start_etcd().await;
    let s = store_with_config(&etcd).await;
    let c = raw(&etcd).await;
    const N: usize = 2_500;
    let value = serde_json::to_string(&attrs(1)).expect("json");
    let keys: Vec<String> = (0..N)
        .map(|i| {
            format!(
                "/coreos.com/network/subnets/10.{}.{}.0-24",
                i / 256,
                i % 256
            )
        })
        .collect();
    // etcd allows 128 operations per transaction by default.
    for chunk in keys.chunks(128) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|k| TxnOp::put(k.as_str(), value.as_str(), None))
            .collect();
        c.kv_client()
            .txn(Txn::new().and_then(ops))
            .await
            .expect("bulk put");
    }
    let (leases, rev) = s.list().await.expect("list");
    assert_eq!(leases.len(), N);
    let distinct: std::collections::HashSet<_> = leases.iter().map(|l| l.key()).collect();
    assert_eq!(distinct.len(), N, "pages must not overlap");
    // Later writes are not in the list, and the watch from its revision
    // starts right after it.
    let mut w = s.watch(rev, None).await.expect("watch");
    c.kv_client()
        .put(
            "/coreos.com/network/subnets/10.200.0.0-24",
            value.as_str(),
            None,
        )
        .await
        .expect("put");
    match next_update(&mut w, 20).await {
        WatchUpdate::Events { events, .. } => {
            assert_eq!(events.len(), 1, "{events:?}");
            assert!(matches!(&events[0], LeaseEvent::Added(l) if l.key() == "10.200.0.0-24"));
        }
        u => panic!("{u:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_event_carries_the_peers_old_attributes() {
    let etcd = start_etcd().await;
    let s = store_with_config(&etcd).await;
    let me = s.acquire(&req(1)).await.expect("acquire me");
    let peer_store = store_with_config(&etcd).await;
    let peer = peer_store.acquire(&req(2)).await.expect("acquire peer");
    let (_, rev) = s.list().await.expect("list");
    let mut w = s.watch(rev, Some(me.clone())).await.expect("watch");
    let c = raw(&etcd).await;
    let key = format!("/coreos.com/network/subnets/{}", peer.key());
    let id = c
        .kv_client()
        .get(key.as_str(), None)
        .await
        .expect("get")
        .kvs()[0]
        .lease();
    // Our own changes are filtered: renew ours (no event) and rewrite ours.
    s.acquire(&req(1)).await.expect("re-acquire me");
    // The peer's etcd lease runs out (revoked = expired, for the key).
    c.lease_client().revoke(id).await.expect("revoke");
    match next_update(&mut w, 20).await {
        WatchUpdate::Events { events, .. } => {
            assert_eq!(events.len(), 1, "only the peer's removal: {events:?}");
            match &events[0] {
                LeaseEvent::Removed(l) => {
                    assert_eq!(l.key(), peer.key());
                    assert_eq!(
                        l.attrs,
                        attrs(2),
                        "the removal carries the VTEP MAC to tear down"
                    );
                }
                e => panic!("{e:?}"),
            }
        }
        u => panic!("{u:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_endpoints_with_one_dead() {
    let etcd = start_etcd().await;
    let dead = {
        // A port nobody listens on.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let s = connect(EtcdOptions::with_endpoints([dead, etcd.endpoint()])).await;
    s.put_config(NET_CONF)
        .await
        .expect("config via the live endpoint");
    for n in 1..=5 {
        s.acquire(&req(n))
            .await
            .expect("acquire via the live endpoint");
    }
    assert_eq!(s.list().await.expect("list").0.len(), 5);
}
