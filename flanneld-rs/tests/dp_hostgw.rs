//! host-gw backend against the real kernel, in `fct-dp-*` namespaces.
//! Run as root: `cargo test -p flanneld-rs --test dp_hostgw`.

mod dp_common;

use std::net::Ipv4Addr;

use dp_common::*;
use flanneld::backend::hostgw::HostGwBackend;
use flanneld::backend::{Backend, Peer};
use serde_json::json;

fn peer(subnet: &str, ip: Ipv4Addr) -> Peer {
    Peer {
        subnet: subnet.parse().unwrap(),
        public_ip: ip,
        public_ipv6: None,
        backend_type: "host-gw".into(),
        backend_data: None,
    }
}

#[tokio::test]
async fn hostgw_routes_l2_peers_and_explains_the_others() {
    let n = nodes("hgw", 1).await;
    let node = &n[0];
    // 192.0.2.0/24 is behind a router: not on eth0's L2.
    sh(
        &node.ns,
        "ip route add 192.0.2.0/24 via 198.51.100.254 dev eth0",
    );
    let cfg = config(json!({"Type": "host-gw"}));
    let mut b = HostGwBackend::new(node.nl.clone());
    let p = b.prepare(&node.local, &cfg).await.unwrap();
    assert_eq!(
        (p.backend_type.as_str(), p.backend_data.clone(), p.mtu),
        ("host-gw", None, 1500)
    );

    let near = peer("10.244.2.0/24", Ipv4Addr::new(198, 51, 100, 2));
    let far = peer("10.244.3.0/24", Ipv4Addr::new(192, 0, 2, 9));
    let unreachable = peer("10.244.4.0/24", Ipv4Addr::new(203, 0, 113, 4));
    let r = b
        .reconcile(&[near.clone(), far, unreachable])
        .await
        .unwrap();
    assert_eq!(r.peers, 1);
    assert_eq!(change(&r, "route_add"), 1);
    assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
    assert_eq!(
        r.errors[0].to_string(),
        "peer 10.244.3.0/24 at 192.0.2.9 is not on the same L2 as eth0: host-gw needs all nodes on one L2 segment; use vxlan"
    );
    assert!(
        r.errors[1]
            .to_string()
            .contains("203.0.113.4 is not on the same L2"),
        "{:?}",
        r.errors
    );
    assert_eq!(
        our_routes(&node.ns),
        vec![(
            "10.244.2.0/24".into(),
            "198.51.100.2".into(),
            "eth0".into(),
            false
        )]
    );

    // The peer leaves: its route goes, the operator's route stays.
    let r = b.reconcile(&[]).await.unwrap();
    assert_eq!(change(&r, "route_del"), 1);
    assert!(our_routes(&node.ns).is_empty());
    assert!(sh(&node.ns, "ip route show").contains("192.0.2.0/24 via 198.51.100.254"));
}

/// Two nodes on one L2, a bridge address per node standing in for a pod:
/// a real ping between them over the host-gw routes only.
#[tokio::test]
async fn hostgw_routes_carry_traffic_between_nodes() {
    let n = nodes("hgwping", 2).await;
    let cfg = config(json!({"Type": "host-gw"}));
    let mut bs = Vec::new();
    for (i, node) in n.iter().enumerate() {
        let k = i + 1;
        sh(&node.ns, "ip link add cni0 type bridge");
        sh(&node.ns, &format!("ip addr add 10.244.{k}.1/24 dev cni0"));
        sh(&node.ns, "ip link set cni0 up");
        let mut b = HostGwBackend::new(node.nl.clone());
        b.prepare(&node.local, &cfg).await.unwrap();
        bs.push(b);
    }
    let r1 = bs[0]
        .reconcile(&[peer("10.244.2.0/24", n[1].local.public_ip)])
        .await
        .unwrap();
    let r2 = bs[1]
        .reconcile(&[peer("10.244.1.0/24", n[0].local.public_ip)])
        .await
        .unwrap();
    assert!(
        r1.errors.is_empty() && r2.errors.is_empty(),
        "{r1:?} {r2:?}"
    );
    let out = n[0]
        .ns
        .run(
            "ping",
            &[
                "-c",
                "2",
                "-i",
                "0.2",
                "-W",
                "2",
                "-I",
                "10.244.1.1",
                "10.244.2.1",
            ],
        )
        .unwrap_or_else(|e| panic!("ping over host-gw routes failed: {e}"));
    assert!(out.contains("2 received"), "{out}");
}

/// A node taken over from Go flanneld's host-gw: its routes to peers are
/// `proto boot`. The live peer's is kept (same route), a departed peer's
/// is removed, and routes outside the cluster network or to our own
/// subnet stay whatever their protocol.
#[tokio::test]
async fn hostgw_owns_go_made_peer_routes_and_nothing_else() {
    let n = nodes("hgwgo", 1).await;
    let node = &n[0];
    for r in [
        "10.244.2.0/24 via 198.51.100.2 dev eth0 proto boot",
        "10.244.3.0/24 via 198.51.100.3 dev eth0 proto boot",
        "10.245.3.0/24 via 198.51.100.3 dev eth0 proto boot",
        "10.244.1.0/24 via 198.51.100.9 dev eth0 proto boot",
    ] {
        sh(&node.ns, &format!("ip route add {r}"));
    }
    let cfg = config(json!({"Type": "host-gw"}));
    let mut b = HostGwBackend::new(node.nl.clone());
    b.prepare(&node.local, &cfg).await.unwrap();
    b.attach(&lease(
        "10.244.1.0/24",
        Ipv4Addr::new(198, 51, 100, 1),
        "host-gw",
        None,
    ))
    .await
    .unwrap();
    let live = peer("10.244.2.0/24", Ipv4Addr::new(198, 51, 100, 2));
    let r = b.reconcile(&[live]).await.unwrap();
    assert_eq!(r.peers, 1);
    assert_eq!(change(&r, "route_del"), 1, "{:?}", r.changes);
    assert_eq!(change(&r, "route_add"), 0, "{:?}", r.changes);
    let routes = sh(&node.ns, "ip route show");
    assert!(
        routes.contains("10.244.2.0/24 via 198.51.100.2"),
        "{routes}"
    );
    assert!(!routes.contains("10.244.3.0/24"), "{routes}");
    assert!(
        routes.contains("10.245.3.0/24 via 198.51.100.3"),
        "{routes}"
    );
    assert!(
        routes.contains("10.244.1.0/24 via 198.51.100.9"),
        "{routes}"
    );
    // Nothing left to do on the next pass.
    let again = b
        .reconcile(&[peer("10.244.2.0/24", Ipv4Addr::new(198, 51, 100, 2))])
        .await
        .unwrap();
    assert!(again.changes.is_empty(), "{:?}", again.changes);
}
