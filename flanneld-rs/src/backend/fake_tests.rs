//! The backends' kernel sequences (adopt, recreate, fallback, the lease
//! address, per-peer entries and failures) against the recording fake
//! kernel: no root, no namespaces. The kernel tests (`tests/dp_*.rs`) run
//! the same backends against the real kernel.

use std::net::Ipv4Addr;
use std::sync::Arc;

use lease_store::{Lease, LeaseAttrs, NetworkConfig};
use netlink_packet_route::link::InfoKind;
use serde_json::{json, Value};

use super::metadata::MetadataBackend;
use super::vxlan::VxlanBackend;
use super::{hostgw::HostGwBackend, Backend, BackendError, LocalNode, Peer, PeerError, Prepared};
use super::{BackendSpec, ReconcileReport, TunnelSpec};
use crate::model::{Fdb, Mac, Neigh, Route, TunnelEncap};
use crate::netlink::dump::RouteLookup;
use crate::netlink::fake::{Call, FakeKernel};
use crate::netlink::{KernelRef, RTPROT_FLANNEL_RS};
use crate::reconcile::Op;

const UNDERLAY: &str = "eth0";

pub(super) fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, last)
}

/// A fake kernel with the underlay link, and the node on it.
pub(super) fn kernel() -> (Arc<FakeKernel>, LocalNode) {
    let k = Arc::new(FakeKernel::new());
    let index = k.add_plain_link(UNDERLAY, 1500);
    let node = LocalNode {
        iface_name: UNDERLAY.into(),
        iface_index: index,
        iface_mtu: 1500,
        iface_addr: ip(1),
        public_ip: ip(1),
        iface_addr6: None,
        public_ipv6: None,
    };
    (k, node)
}

pub(super) fn shared(k: &Arc<FakeKernel>) -> KernelRef {
    k.clone()
}

fn config(backend: Value) -> NetworkConfig {
    let mut text = json!({"Network": "10.244.0.0/16", "Backend": backend});
    if text["Backend"].is_null() {
        text = json!({"Network": "10.244.0.0/16"});
    }
    NetworkConfig::parse(&text.to_string()).unwrap()
}

pub(super) fn lease(subnet: &str, p: &Prepared) -> Lease {
    Lease {
        subnet: Some(subnet.parse().unwrap()),
        ipv6_subnet: None,
        attrs: LeaseAttrs {
            public_ip: ip(1),
            public_ipv6: None,
            backend_type: p.backend_type.clone(),
            backend_data: p.backend_data.clone(),
            backend_v6_data: None,
        },
        expiration: None,
        revision: 0,
    }
}

pub(super) fn peer(kind: &str, subnet: &str, last: u8, mac: &str) -> Peer {
    Peer {
        subnet: subnet.parse().unwrap(),
        public_ip: ip(last),
        public_ipv6: None,
        backend_type: kind.into(),
        backend_data: Some(json!({"VNI": 1, "VtepMAC": mac})),
    }
}

pub(super) fn link_calls(calls: &[Call]) -> Vec<Call> {
    calls
        .iter()
        .filter(|c| !matches!(c, Call::Apply(_)))
        .cloned()
        .collect()
}

pub(super) fn applied(calls: &[Call]) -> Vec<&'static str> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Apply(op) => Some(op.kind()),
            _ => None,
        })
        .collect()
}

pub(super) fn vxlan(k: &Arc<FakeKernel>, node: &LocalNode) -> VxlanBackend {
    VxlanBackend::new(shared(k), &config(json!({"Type": "vxlan"})), node).unwrap()
}

#[tokio::test]
async fn vxlan_fresh_node_creates_the_device_then_the_address_then_neigh_fdb_route() {
    let (k, node) = kernel();
    let mut b = vxlan(&k, &node);
    let p = b.prepare().await.unwrap();
    let dev = k.link("flannel.1").expect("device created");
    assert_eq!(dev.kind, Some(InfoKind::Vxlan));
    assert_eq!((dev.mtu, dev.up), (Some(1450), true));
    assert_eq!(p.mtu, 1450);
    let mac = dev.mac.unwrap().to_string();
    assert_eq!(p.backend_data, Some(json!({"VNI": 1, "VtepMAC": mac})));
    b.attach(&lease("10.244.1.0/24", &p)).await.unwrap();
    let calls = k.take_calls();
    assert_eq!(
        link_calls(&calls),
        vec![
            Call::AddLink {
                name: "flannel.1".into(),
                kind: Some(InfoKind::Vxlan)
            },
            Call::AddAddr {
                index: dev.index,
                net: "10.244.1.0/32".parse().unwrap()
            },
        ]
    );

    let peer_mac = "0a:00:00:00:00:02";
    let r = b
        .reconcile(&[peer("vxlan", "10.244.2.0/24", 2, peer_mac)])
        .await
        .unwrap();
    assert_eq!(
        applied(&k.take_calls()),
        ["neigh_add", "fdb_add", "route_add"]
    );
    assert_eq!((r.peers, r.errors.len(), r.device_recreated), (1, 0, false));
    let mac: Mac = peer_mac.parse().unwrap();
    {
        let s = k.state();
        assert_eq!(
            s.neighs,
            vec![(
                dev.index,
                Neigh {
                    ip: Ipv4Addr::new(10, 244, 2, 0),
                    mac
                }
            )]
        );
        assert_eq!(s.fdbs, vec![(dev.index, Fdb { mac, dst: ip(2) })]);
        assert_eq!(
            s.routes,
            vec![(
                Route {
                    dst: "10.244.2.0/24".parse().unwrap(),
                    gateway: Ipv4Addr::new(10, 244, 2, 0),
                    oif: dev.index,
                    onlink: true,
                    encap: None
                },
                RTPROT_FLANNEL_RS
            )]
        );
    }

    // A second pass with the same peers changes nothing.
    let r = b
        .reconcile(&[peer("vxlan", "10.244.2.0/24", 2, peer_mac)])
        .await
        .unwrap();
    assert!(r.changes.is_empty(), "{r:?}");
    assert!(k.take_calls().is_empty());

    // The peer leaves: route first, then FDB, then neighbour.
    b.reconcile(&[]).await.unwrap();
    assert_eq!(
        applied(&k.take_calls()),
        ["route_del", "fdb_del", "neigh_del"]
    );
    let s = k.state();
    assert!(s.routes.is_empty() && s.fdbs.is_empty() && s.neighs.is_empty());
}

#[tokio::test]
async fn vxlan_adopts_a_compatible_device_fixing_only_its_mtu() {
    let (k, node) = kernel();
    let mut first = vxlan(&k, &node);
    first.prepare().await.unwrap();
    let dev = k.link("flannel.1").unwrap();
    k.state().links.iter_mut().for_each(|l| {
        if l.name == "flannel.1" {
            l.state.mtu = Some(1400);
        }
    });
    k.take_calls();
    let mut second = vxlan(&k, &node);
    second.prepare().await.unwrap();
    assert_eq!(
        k.take_calls(),
        vec![Call::SetLink {
            index: dev.index,
            mtu: 1450
        }]
    );
    assert_eq!(k.link("flannel.1").unwrap().index, dev.index, "kept");
}

#[tokio::test]
async fn vxlan_adopts_go_flanneld_device_with_its_random_mac() {
    let (k, node) = kernel();
    let mut b = vxlan(&k, &node);
    b.prepare().await.unwrap();
    let go_mac = Mac([0x6e, 1, 2, 3, 4, 5]);
    for l in k.state().links.iter_mut() {
        if l.name == "flannel.1" {
            l.state.mac = Some(go_mac);
        }
    }
    k.take_calls();
    let mut again = vxlan(&k, &node);
    let p = again.prepare().await.unwrap();
    assert!(k.take_calls().is_empty(), "adopted as is");
    assert_eq!(
        p.backend_data,
        Some(json!({"VNI": 1, "VtepMAC": go_mac.to_string()}))
    );
}

#[tokio::test]
async fn vxlan_recreates_an_incompatible_device_and_one_deleted_by_hand() {
    let (k, node) = kernel();
    let mut other = VxlanBackend::new(
        shared(&k),
        &config(json!({"Type": "vxlan", "Port": 4789})),
        &node,
    )
    .unwrap();
    other.prepare().await.unwrap();
    let old = k.link("flannel.1").unwrap().index;
    k.take_calls();
    let mut b = vxlan(&k, &node);
    let p = b.prepare().await.unwrap();
    let calls = k.take_calls();
    assert_eq!(calls[0], Call::DelLink { index: old });
    assert!(matches!(&calls[1], Call::AddLink { name, .. } if name == "flannel.1"));
    b.attach(&lease("10.244.1.0/24", &p)).await.unwrap();
    let peers = [peer("vxlan", "10.244.2.0/24", 2, "0a:00:00:00:00:02")];
    b.reconcile(&peers).await.unwrap();
    k.take_calls();

    // Someone deletes the device: the next pass recreates it, puts the
    // address back and programs the peer again.
    k.remove_link_by_hand("flannel.1");
    let r = b.reconcile(&peers).await.unwrap();
    assert!(r.device_recreated);
    let calls = k.take_calls();
    assert!(matches!(&calls[0], Call::AddLink { name, .. } if name == "flannel.1"));
    let dev = k.link("flannel.1").unwrap().index;
    assert!(calls.contains(&Call::AddAddr {
        index: dev,
        net: "10.244.1.0/32".parse().unwrap()
    }));
    assert_eq!(applied(&calls), ["neigh_add", "fdb_add", "route_add"]);
}

#[tokio::test]
async fn vxlan_replaces_a_stale_lease_address_and_removes_the_metadata_device() {
    let (k, node) = kernel();
    // The metadata-mode device of an earlier run holds the same UDP port.
    let mut m = MetadataBackend::new(
        shared(&k),
        tunnel_spec("vxlan", json!({"Mode": "metadata"})),
        &node,
    )
    .unwrap();
    m.prepare().await.unwrap();
    let meta = k.link("flannel-vxlan").unwrap().index;
    k.take_calls();
    let mut b = vxlan(&k, &node);
    let p = b.prepare().await.unwrap();
    assert_eq!(k.take_calls()[0], Call::DelLink { index: meta });
    assert!(k.link("flannel-vxlan").is_none());
    let dev = k.link("flannel.1").unwrap().index;
    k.state()
        .addrs
        .push((dev, "10.244.9.0/32".parse().unwrap()));
    b.attach(&lease("10.244.1.0/24", &p)).await.unwrap();
    assert_eq!(
        k.take_calls(),
        vec![
            Call::DelAddr {
                index: dev,
                net: "10.244.9.0/32".parse().unwrap()
            },
            Call::AddAddr {
                index: dev,
                net: "10.244.1.0/32".parse().unwrap()
            },
        ]
    );
}

#[tokio::test]
async fn a_refused_route_is_reported_against_its_peer_and_the_others_are_programmed() {
    let (k, node) = kernel();
    let mut b = vxlan(&k, &node);
    let p = b.prepare().await.unwrap();
    b.attach(&lease("10.244.1.0/24", &p)).await.unwrap();
    k.state().refused_routes.insert(
        "10.244.3.0/24".parse().unwrap(),
        nix::errno::Errno::EINVAL as i32,
    );
    let r = b
        .reconcile(&[
            peer("vxlan", "10.244.2.0/24", 2, "0a:00:00:00:00:02"),
            peer("vxlan", "10.244.3.0/24", 3, "0a:00:00:00:00:03"),
            peer("host-gw", "10.244.4.0/24", 4, "0a:00:00:00:00:04"),
        ])
        .await
        .unwrap();
    assert_eq!(r.peers, 1, "{r:?}");
    assert_eq!(r.errors.len(), 2, "{r:?}");
    // Typed: the peer, and the kernel's errno with the operation.
    assert!(
        r.errors.iter().any(|e| matches!(
            e,
            PeerError::Kernel { subnet, source }
                if subnet.to_string() == "10.244.3.0/24"
                    && source.errno() == Some(nix::errno::Errno::EINVAL as i32)
                    && source.to_string().starts_with("setting route 10.244.3.0/24")
        )),
        "{r:?}"
    );
    assert!(
        r.errors
            .iter()
            .any(|e| e.to_string().contains("same backend")),
        "{r:?}"
    );
    assert_eq!(k.state().routes.len(), 1);
}

#[tokio::test]
async fn vxlan_direct_routing_uses_the_underlay_for_peers_on_the_same_l2() {
    let (k, node) = kernel();
    let cfg = config(json!({"Type": "vxlan", "DirectRouting": true}));
    let mut b = VxlanBackend::new(shared(&k), &cfg, &node).unwrap();
    let p = b.prepare().await.unwrap();
    b.attach(&lease("10.244.1.0/24", &p)).await.unwrap();
    k.state().lookups.insert(
        ip(2),
        RouteLookup {
            gateway: None,
            oif: Some(node.iface_index),
        },
    );
    k.take_calls();
    b.reconcile(&[
        peer("vxlan", "10.244.2.0/24", 2, "0a:00:00:00:00:02"),
        peer("vxlan", "10.244.3.0/24", 3, "0a:00:00:00:00:03"),
    ])
    .await
    .unwrap();
    let routes: Vec<_> = k.state().routes.iter().map(|(r, _)| *r).collect();
    let direct = routes
        .iter()
        .find(|r| r.dst.to_string() == "10.244.2.0/24")
        .unwrap();
    assert_eq!(
        (direct.gateway, direct.oif, direct.onlink),
        (ip(2), node.iface_index, false)
    );
    let tunneled = routes
        .iter()
        .find(|r| r.dst.to_string() == "10.244.3.0/24")
        .unwrap();
    assert!(tunneled.onlink);
}

pub(super) fn tunnel_spec(kind: &str, backend: Value) -> TunnelSpec {
    match BackendSpec::parse(kind, &backend, None).unwrap() {
        BackendSpec::Tunnel(s) => s,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn geneve_metadata_routes_carry_the_encap_and_have_no_fdb() {
    let (k, node) = kernel();
    let mut b = MetadataBackend::new(shared(&k), tunnel_spec("geneve", json!({})), &node).unwrap();
    let p = b.prepare().await.unwrap();
    let dev = k.link("flannel-geneve").expect("created");
    assert_eq!(dev.kind, Some(InfoKind::Geneve));
    assert!(dev.geneve.unwrap().external);
    b.attach(&lease("10.244.1.0/24", &p)).await.unwrap();
    k.take_calls();
    b.reconcile(&[peer("geneve", "10.244.2.0/24", 2, "0a:00:00:00:00:02")])
        .await
        .unwrap();
    assert_eq!(applied(&k.take_calls()), ["neigh_add", "route_add"]);
    let s = k.state();
    assert!(s.fdbs.is_empty());
    assert_eq!(
        s.routes[0].0.encap,
        Some(TunnelEncap {
            id: 1,
            dst: ip(2).into()
        })
    );
}

#[tokio::test]
async fn the_factory_keeps_the_kernel_device_when_the_module_is_there() {
    let (k, node) = kernel();
    let cfg = config(json!({"Type": "geneve", "Fallback": "userspace"}));
    let overrides = super::NodeOverrides::default();
    let mut b = super::open_with_fallback(&cfg, shared(&k), &overrides, &node, None, standin)
        .await
        .unwrap();
    let p = b.prepare().await.unwrap();
    assert_eq!(p.mtu, 1450, "the kernel device, not the stand-in");
    assert!(k.link("flannel-geneve").is_some());
}

#[tokio::test]
async fn missing_module_without_fallback_fails_with_one_line() {
    let (k, node) = kernel();
    k.state().missing_kinds.push(InfoKind::Geneve);
    let mut b = MetadataBackend::new(shared(&k), tunnel_spec("geneve", json!({})), &node).unwrap();
    let e = b.prepare().await.unwrap_err().to_string();
    assert!(
        e.starts_with(
            "the kernel has no geneve support (creating flannel-geneve: Operation not supported)"
        ),
        "{e}"
    );
    assert!(!e.contains('\n'));
    assert!(k.link("flannel-geneve").is_none());
}

/// A stand-in for the userspace datapath (the real one opens a TUN
/// device): it says what it is and touches nothing.
struct Standin;

#[async_trait::async_trait]
impl Backend for Standin {
    async fn prepare(&mut self) -> Result<Prepared, BackendError> {
        Ok(Prepared {
            backend_type: "geneve".into(),
            backend_data: Some(json!({"standin": true})),
            mtu: 1234,
        })
    }
    async fn attach(&mut self, _lease: &Lease) -> Result<(), BackendError> {
        Ok(())
    }
    async fn reconcile(&mut self, peers: &[Peer]) -> Result<ReconcileReport, BackendError> {
        Ok(ReconcileReport {
            peers: peers.len(),
            ..ReconcileReport::default()
        })
    }
}

fn standin(
    _: KernelRef,
    spec: TunnelSpec,
    _: &LocalNode,
) -> Result<Box<dyn Backend>, BackendError> {
    assert_eq!(spec.datapath, super::Datapath::Userspace);
    Ok(Box::new(Standin))
}

#[tokio::test]
async fn missing_module_with_fallback_hands_over_to_the_userspace_datapath() {
    let (k, node) = kernel();
    k.state().missing_kinds.push(InfoKind::Geneve);
    let cfg = config(json!({"Type": "geneve", "Fallback": "userspace"}));
    let overrides = super::NodeOverrides::default();
    // The factory tries the device, sees no module, and hands out the
    // fallback (the stand-in: its MTU says it is the one running).
    let mut b = super::open_with_fallback(&cfg, shared(&k), &overrides, &node, None, standin)
        .await
        .unwrap();
    let p = b.prepare().await.unwrap();
    assert_eq!(p.mtu, 1234);
    b.attach(&lease("10.244.1.0/24", &p)).await.unwrap();
    let r = b
        .reconcile(&[peer("geneve", "10.244.2.0/24", 2, "0a:00:00:00:00:02")])
        .await
        .unwrap();
    assert_eq!(r.peers, 1);
    // One failed creation, nothing else touched the kernel.
    assert_eq!(
        k.take_calls(),
        vec![Call::AddLink {
            name: "flannel-geneve".into(),
            kind: Some(InfoKind::Geneve)
        }]
    );
}

#[tokio::test]
async fn host_gw_routes_peers_on_the_l2_and_explains_the_others() {
    let (k, node) = kernel();
    let cfg = config(json!({"Type": "host-gw"}));
    let mut b = HostGwBackend::new(shared(&k), &node, cfg.network);
    let p = b.prepare().await.unwrap();
    assert_eq!((p.backend_type.as_str(), p.mtu), ("host-gw", 1500));
    b.attach(&lease("10.244.1.0/24", &p)).await.unwrap();
    k.state().lookups.insert(
        ip(2),
        RouteLookup {
            gateway: None,
            oif: Some(node.iface_index),
        },
    );
    k.state().lookups.insert(
        ip(3),
        RouteLookup {
            gateway: Some(ip(254)),
            oif: Some(node.iface_index),
        },
    );
    // A route Go flanneld left for a peer that is gone (proto boot).
    k.state().routes.push((
        Route {
            dst: "10.244.9.0/24".parse().unwrap(),
            gateway: ip(9),
            oif: node.iface_index,
            onlink: false,
            encap: None,
        },
        3,
    ));
    let hg = |subnet: &str, last: u8| {
        let mut p = peer("host-gw", subnet, last, "");
        p.backend_data = None;
        p
    };
    let r = b
        .reconcile(&[hg("10.244.2.0/24", 2), hg("10.244.3.0/24", 3)])
        .await
        .unwrap();
    assert_eq!(r.peers, 1);
    assert_eq!(r.errors.len(), 1);
    assert!(
        r.errors[0].to_string().contains("not on the same L2"),
        "{r:?}"
    );
    let routes: Vec<_> = k
        .state()
        .routes
        .iter()
        .map(|(r, _)| (r.dst.to_string(), r.gateway))
        .collect();
    assert_eq!(routes, vec![("10.244.2.0/24".to_string(), ip(2))]);
    let calls = k.take_calls();
    assert!(calls.contains(&Call::Apply(Op::RouteDel(Route {
        dst: "10.244.9.0/24".parse().unwrap(),
        gateway: ip(9),
        oif: node.iface_index,
        onlink: false,
        encap: None,
    }))));
}

#[tokio::test]
async fn every_backend_applies_the_checked_mtu_rule() {
    let (k, mut node) = kernel();
    node.iface_mtu = 600;
    // The tunnel backends check it when built for the node.
    let e = VxlanBackend::new(shared(&k), &config(json!({"Type": "vxlan"})), &node)
        .err()
        .unwrap();
    assert!(matches!(e, BackendError::Mtu(_)), "{e}");
    let e = MetadataBackend::new(shared(&k), tunnel_spec("geneve", json!({})), &node)
        .err()
        .unwrap();
    assert!(matches!(e, BackendError::Mtu(_)), "{e}");
    // host-gw has no overhead: its floor applies to the underlay itself.
    node.iface_mtu = 500;
    let cfg = config(json!({"Type": "host-gw"}));
    let e = HostGwBackend::new(shared(&k), &node, cfg.network)
        .prepare()
        .await
        .unwrap_err();
    assert!(matches!(e, BackendError::Mtu(_)), "{e}");
    // Backend.MTU outside the range is refused; inside it, it wins.
    node.iface_mtu = 1500;
    let e = VxlanBackend::new(
        shared(&k),
        &config(json!({"Type": "vxlan", "MTU": 100})),
        &node,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("Backend.MTU 100"), "{e}");
    // Nothing was created for any of them.
    assert!(k.take_calls().is_empty());
}
