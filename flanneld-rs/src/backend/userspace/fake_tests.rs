//! The userspace backend's kernel sequences against the recording fake
//! kernel, without root: the engine is a stand-in (`StartEngine` seam) that
//! opens a fake TUN device and whose liveness the test controls. The kernel
//! test `tests/dp_userspace.rs` runs the real engine.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ipnet::Ipv4Net;
use netlink_packet_route::link::InfoKind;
use serde_json::json;

use super::{EngineHandle, StartEngine, UserspaceBackend, TUN_NAME};
use crate::backend::fake_tests::{
    applied, kernel, lease, link_calls, peer, shared, tunnel_spec, vxlan,
};
use crate::backend::{Backend, LocalNode};
use crate::model::Route;
use crate::netlink::fake::{Call, FakeKernel, RouteHook};
use crate::netlink::RTPROT_FLANNEL_RS;
use crate::userspace::engine::{EngineConfig, EngineError, EngineInfo, PeerSlot};

/// One engine the backend started.
struct Started {
    cfg: EngineConfig,
    index: u32,
    alive: Arc<AtomicBool>,
    peers: Arc<PeerSlot>,
}

/// The stand-in engine: its device goes when it is dropped, like a TUN
/// device with its last fd.
struct FakeEngine {
    kernel: Arc<FakeKernel>,
    index: u32,
    alive: Arc<AtomicBool>,
}

impl EngineHandle for FakeEngine {
    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    fn info(&self) -> EngineInfo {
        EngineInfo {
            queues: 1,
            tun_offload: false,
            udp_gso_segments: 1,
            udp_gro_segments: 1,
        }
    }
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        self.kernel.close_tun(self.index);
    }
}

type Log = Arc<Mutex<Vec<Started>>>;

fn starter(k: &Arc<FakeKernel>, log: &Log) -> StartEngine {
    let (k, log) = (k.clone(), log.clone());
    Box::new(move |cfg, peers, _counters| {
        let index =
            k.open_tun(&cfg.tun_name, u32::from(cfg.mtu))
                .map_err(|e| EngineError::Tun {
                    name: cfg.tun_name.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
        let alive = Arc::new(AtomicBool::new(true));
        log.lock().unwrap().push(Started {
            cfg,
            index,
            alive: alive.clone(),
            peers,
        });
        Ok(Box::new(FakeEngine {
            kernel: k.clone(),
            index,
            alive,
        }))
    })
}

fn userspace(k: &Arc<FakeKernel>, node: &LocalNode, kind: &str) -> (UserspaceBackend, Log) {
    let log = Log::default();
    let spec = tunnel_spec(kind, json!({"Mode": "userspace"}));
    let b = UserspaceBackend::with_engine(shared(k), spec, node, starter(k, &log)).unwrap();
    (b, log)
}

fn started(log: &Log) -> usize {
    log.lock().unwrap().len()
}

const MAC2: &str = "0a:00:00:00:00:02";
const MAC3: &str = "0a:00:00:00:00:03";

fn tun_route(subnet: &str, oif: u32) -> (Route, u8) {
    let dst: Ipv4Net = subnet.parse().unwrap();
    (
        Route {
            dst,
            gateway: dst.network(),
            oif,
            onlink: true,
            encap: None,
        },
        RTPROT_FLANNEL_RS,
    )
}

#[tokio::test]
async fn fresh_start_runs_the_engine_on_its_tun_and_routes_peers_onlink_through_it() {
    let (k, node) = kernel();
    let (mut b, log) = userspace(&k, &node, "vxlan");
    let p = b.prepare().await.unwrap();
    let dev = k.link(TUN_NAME).expect("TUN device opened");
    assert_eq!(dev.kind, Some(InfoKind::Tun));
    assert_eq!((dev.mtu, dev.up), (Some(1450), true));
    assert_eq!((p.backend_type.as_str(), p.mtu), ("vxlan", 1450));
    {
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 1);
        let cfg = &log[0].cfg;
        assert_eq!(log[0].index, dev.index);
        assert_eq!((cfg.tun_name.as_str(), cfg.mtu), (TUN_NAME, 1450));
        assert_eq!(cfg.bind, "198.51.100.1:8472".parse().unwrap());
        assert_eq!(cfg.framer.vni, 1);
        let mac = cfg.framer.our_mac.to_string();
        assert_eq!(p.backend_data, Some(json!({"VNI": 1, "VtepMAC": mac})));
    }
    b.attach(&lease("10.244.1.0/24", &p)).await.unwrap();
    assert_eq!(
        k.take_calls(),
        vec![
            Call::AddLink {
                name: TUN_NAME.into(),
                kind: Some(InfoKind::Tun)
            },
            Call::AddAddr {
                index: dev.index,
                net: "10.244.1.0/32".parse().unwrap()
            },
        ]
    );

    let r = b
        .reconcile(&[
            peer("vxlan", "10.244.1.0/24", 1, "0a:00:00:00:00:01"),
            peer("vxlan", "10.244.2.0/24", 2, MAC2),
        ])
        .await
        .unwrap();
    // A route and nothing else: the engine resolves peers, not the kernel.
    assert_eq!(applied(&k.take_calls()), ["route_add"]);
    assert_eq!((r.peers, r.errors.len(), r.device_recreated), (1, 0, false));
    assert_eq!(
        k.state().routes,
        vec![tun_route("10.244.2.0/24", dev.index)]
    );
    assert_eq!(RTPROT_FLANNEL_RS, 70);
    let table = b.peer_table();
    assert_eq!(table.len(), 1, "own lease left out");
    let e = table.lookup(Ipv4Addr::new(10, 244, 2, 5)).unwrap();
    assert_eq!(e.addr, "198.51.100.2:8472".parse().unwrap());
    assert_eq!(e.mac.to_string(), MAC2);

    // A second pass with the same peers changes nothing, engine included.
    let r = b
        .reconcile(&[peer("vxlan", "10.244.2.0/24", 2, MAC2)])
        .await
        .unwrap();
    assert!(r.changes.is_empty(), "{r:?}");
    assert!(k.take_calls().is_empty());
    assert_eq!(started(&log), 1);
}

#[tokio::test]
async fn a_live_engine_keeps_its_device_only_mtu_and_up_are_fixed() {
    let (k, node) = kernel();
    let (mut b, log) = userspace(&k, &node, "geneve");
    let p = b.prepare().await.unwrap();
    b.attach(&lease("10.244.1.0/24", &p)).await.unwrap();
    let dev = k.link(TUN_NAME).unwrap().index;
    k.take_calls();
    for l in k.state().links.iter_mut().filter(|l| l.name == TUN_NAME) {
        l.state.mtu = Some(1400);
        l.state.up = false;
    }
    let r = b.reconcile(&[]).await.unwrap();
    assert!(!r.device_recreated);
    assert_eq!(
        k.take_calls(),
        vec![Call::SetLink {
            index: dev,
            mtu: p.mtu
        }]
    );
    assert_eq!(started(&log), 1);
    let now = k.link(TUN_NAME).unwrap();
    assert_eq!((now.index, now.mtu, now.up), (dev, Some(p.mtu), true));
}

/// Prepares, attaches and routes one peer; returns the device's index.
async fn running(k: &Arc<FakeKernel>, b: &mut UserspaceBackend) -> u32 {
    let p = b.prepare().await.unwrap();
    b.attach(&lease("10.244.1.0/24", &p)).await.unwrap();
    b.reconcile(&[peer("vxlan", "10.244.2.0/24", 2, MAC2)])
        .await
        .unwrap();
    k.take_calls();
    k.link(TUN_NAME).unwrap().index
}

/// After a restart: the new device carries the lease address and the
/// peer's route, and nothing points at `old`.
fn assert_repointed(k: &FakeKernel, old: u32) -> u32 {
    let new = k.link(TUN_NAME).expect("device reopened").index;
    assert_ne!(new, old);
    let s = k.state();
    assert_eq!(s.addrs, vec![(new, "10.244.1.0/32".parse().unwrap())]);
    assert_eq!(s.routes, vec![tun_route("10.244.2.0/24", new)]);
    new
}

#[tokio::test]
async fn a_device_deleted_by_hand_restarts_the_engine_and_repoints_the_routes() {
    let (k, node) = kernel();
    let (mut b, log) = userspace(&k, &node, "vxlan");
    let old = running(&k, &mut b).await;
    // The engine has not noticed yet (its queues are between reads).
    k.remove_link_by_hand(TUN_NAME);
    let r = b
        .reconcile(&[peer("vxlan", "10.244.2.0/24", 2, MAC2)])
        .await
        .unwrap();
    assert!(r.device_recreated && r.errors.is_empty(), "{r:?}");
    assert_eq!(started(&log), 2);
    let new = assert_repointed(&k, old);
    let calls = k.take_calls();
    assert_eq!(
        link_calls(&calls),
        vec![
            Call::AddLink {
                name: TUN_NAME.into(),
                kind: Some(InfoKind::Tun)
            },
            Call::AddAddr {
                index: new,
                net: "10.244.1.0/32".parse().unwrap()
            },
        ]
    );
    assert_eq!(applied(&calls), ["route_add"]);
}

#[tokio::test]
async fn a_dead_engine_is_restarted_whether_or_not_its_device_is_still_listed() {
    let (k, node) = kernel();
    let (mut b, log) = userspace(&k, &node, "vxlan");
    let first = running(&k, &mut b).await;
    // Its queues stopped while the device is still listed: dropping the
    // engine takes the device, and no stale one is left to delete.
    log.lock().unwrap()[0].alive.store(false, Ordering::Relaxed);
    let r = b
        .reconcile(&[peer("vxlan", "10.244.2.0/24", 2, MAC2)])
        .await
        .unwrap();
    assert!(r.device_recreated && r.errors.is_empty(), "{r:?}");
    assert_eq!(started(&log), 2);
    let second = assert_repointed(&k, first);
    assert!(!k.take_calls().contains(&Call::DelLink { index: first }));

    // The usual way: the device went and the queues noticed.
    k.remove_link_by_hand(TUN_NAME);
    log.lock().unwrap()[1].alive.store(false, Ordering::Relaxed);
    let r = b
        .reconcile(&[peer("vxlan", "10.244.2.0/24", 2, MAC2)])
        .await
        .unwrap();
    assert!(r.device_recreated && r.errors.is_empty(), "{r:?}");
    assert_eq!(started(&log), 3);
    assert_repointed(&k, second);
}

#[tokio::test]
async fn the_engine_knows_a_peer_before_any_route_points_at_it() {
    let (k, node) = kernel();
    let (mut b, log) = userspace(&k, &node, "vxlan");
    let p = b.prepare().await.unwrap();
    b.attach(&lease("10.244.1.0/24", &p)).await.unwrap();
    let slot = log.lock().unwrap()[0].peers.clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    k.state().route_hook = Some(RouteHook(Box::new(move |r: &Route| {
        let table = slot.read().unwrap().clone();
        let known = table.lookup(r.dst.network()).is_some();
        record.lock().unwrap().push((r.dst, known));
    })));
    let two = [peer("vxlan", "10.244.2.0/24", 2, MAC2)];
    let three = [two[0].clone(), peer("vxlan", "10.244.3.0/24", 3, MAC3)];
    b.reconcile(&two).await.unwrap();
    b.reconcile(&three).await.unwrap();
    // And after a restart, when every route is re-pointed.
    k.remove_link_by_hand(TUN_NAME);
    b.reconcile(&three).await.unwrap();
    let seen = seen.lock().unwrap();
    let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
    assert_eq!(
        *seen,
        vec![
            (net("10.244.2.0/24"), true),
            (net("10.244.3.0/24"), true),
            (net("10.244.2.0/24"), true),
            (net("10.244.3.0/24"), true),
        ]
    );
}

#[tokio::test]
async fn a_vxlan_tun_removes_the_kernel_vxlan_device_and_a_stale_namesake() {
    let (k, node) = kernel();
    // FDB-mode VXLAN ran here before: it holds UDP 8472.
    vxlan(&k, &node).prepare().await.unwrap();
    let fdb = k.link("flannel.1").unwrap().index;
    // And a link under our name that this process did not open.
    let stale = k.add_plain_link(TUN_NAME, 1500);
    k.take_calls();
    let (mut b, log) = userspace(&k, &node, "vxlan");
    b.prepare().await.unwrap();
    assert_eq!(
        k.take_calls(),
        vec![
            Call::DelLink { index: stale },
            Call::DelLink { index: fdb },
            Call::AddLink {
                name: TUN_NAME.into(),
                kind: Some(InfoKind::Tun)
            },
        ]
    );
    assert!(k.link("flannel.1").is_none());
    assert_eq!(started(&log), 1);

    // Geneve over userspace shares no port with kernel VXLAN: left alone.
    let (k, node) = kernel();
    vxlan(&k, &node).prepare().await.unwrap();
    let (mut b, _log) = userspace(&k, &node, "geneve");
    b.prepare().await.unwrap();
    assert!(k.link("flannel.1").is_some());
}
