//! The userspace datapath as a backend: device `flannel-tun` run by the
//! engine in `crate::userspace` (TUN + UDP, VXLAN or Geneve framing), the
//! lease's `.0/32` on it, and per peer a route to its subnet through it
//! (protocol 70, reconciled like the kernel backends). The engine's peer
//! table is swapped in whole on every reconcile.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use ipnet::Ipv4Net;
use lease_store::Lease;

use super::devices::{self, OwnedDevice};
use super::stats::{DatapathStats, StatsSnapshot};
use super::{
    tunnel, vtep_mac, Backend, BackendError, Encap, LocalNode, Peer, Prepared, ReconcileReport,
    TunnelSpec, Underlay,
};
use crate::model::{Mac, Route};
use crate::netlink::KernelRef;
use crate::node::mtu::backend_mtu;
use crate::reconcile::State;
use crate::userspace::counters::Counters;
use crate::userspace::engine::{Engine, EngineConfig, EngineError, EngineInfo, PeerSlot};
use crate::userspace::frame::Framer;
use crate::userspace::peers::{PeerEntry, PeerTable};

/// The device name (one per node, whatever the encapsulation).
pub const TUN_NAME: &str = devices::TUN;
/// Queues (threads) at most; more rarely helps a node's pod traffic.
pub const MAX_QUEUES: usize = 4;

/// What the backend needs of a running engine. The daemon's is `Engine`;
/// unit tests hand in one whose liveness they control, as opening a TUN
/// device needs root.
pub trait EngineHandle: Send + Sync {
    /// False once the engine lost its device: the backend starts another.
    fn is_alive(&self) -> bool;
    fn info(&self) -> EngineInfo;
}

impl EngineHandle for Engine {
    fn is_alive(&self) -> bool {
        Engine::is_alive(self)
    }

    fn info(&self) -> EngineInfo {
        Engine::info(self)
    }
}

/// Starts an engine on the device `EngineConfig::tun_name` (the device
/// goes when the handle is dropped, like a TUN device with its fds).
pub type StartEngine = Box<
    dyn Fn(EngineConfig, Arc<PeerSlot>, Arc<Counters>) -> Result<Box<dyn EngineHandle>, EngineError>
        + Send
        + Sync,
>;

/// The real engine: TUN + UDP sockets in the handle's namespace.
pub fn start_engine() -> StartEngine {
    Box::new(|cfg, peers, counters| {
        let engine: Box<dyn EngineHandle> = Box::new(Engine::start(cfg, peers, counters)?);
        Ok(engine)
    })
}

/// The userspace backend for `spec` on `node`.
pub fn new(
    netlink: KernelRef,
    spec: TunnelSpec,
    node: &LocalNode,
) -> Result<Box<dyn Backend>, BackendError> {
    Ok(Box::new(UserspaceBackend::new(netlink, spec, node)?))
}

pub struct UserspaceBackend {
    nl: KernelRef,
    spec: TunnelSpec,
    node: LocalNode,
    mtu: u16,
    mac: Mac,
    start: StartEngine,
    engine: Option<Box<dyn EngineHandle>>,
    index: Option<u32>,
    lease: Option<Ipv4Net>,
    peers: Arc<PeerSlot>,
    counters: Arc<Counters>,
    queues: usize,
    offload: bool,
}

impl UserspaceBackend {
    /// The backend for `spec` on `node`; fails when the node has no
    /// address of the underlay's family or the MTU rule refuses it.
    pub fn new(
        nl: impl Into<KernelRef>,
        spec: TunnelSpec,
        node: &LocalNode,
    ) -> Result<Self, BackendError> {
        Self::with_engine(nl, spec, node, start_engine())
    }

    /// The backend starting its engine through `start` (tests: a stand-in
    /// that needs no root).
    pub fn with_engine(
        nl: impl Into<KernelRef>,
        spec: TunnelSpec,
        node: &LocalNode,
        start: StartEngine,
    ) -> Result<Self, BackendError> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let queues = spec.queues.unwrap_or(cpus).clamp(1, MAX_QUEUES);
        let (_, endpoint) = node.tunnel_addrs(spec.underlay)?;
        let mtu = backend_mtu(spec.mtu, node.iface_mtu, spec.underlay.overhead())?;
        Ok(UserspaceBackend {
            nl: nl.into(),
            node: node.clone(),
            // backend_mtu keeps it within 65535.
            mtu: u16::try_from(mtu).unwrap_or(u16::MAX),
            mac: vtep_mac::derive_ip(endpoint, spec.vni),
            spec,
            start,
            engine: None,
            index: None,
            lease: None,
            peers: Arc::new(RwLock::new(Arc::new(PeerTable::default()))),
            counters: Arc::new(Counters::default()),
            queues,
            offload: true,
        })
    }

    /// Number of queues to ask for (tests and benchmarks); call before
    /// `prepare`.
    pub fn set_queues(&mut self, queues: usize) {
        self.queues = queues.max(1);
    }

    /// Whether to ask for TUN offloads (GSO/GRO); call before `prepare`.
    pub fn set_offload(&mut self, offload: bool) {
        self.offload = offload;
    }

    /// The engine's own counters (typed: direction and drop reason), for
    /// tests and benchmarks; the daemon reads them as `Backend::stats`.
    pub fn datapath_counters(&self) -> Option<Arc<Counters>> {
        Some(self.counters.clone())
    }

    /// What the running engine negotiated with the kernel.
    pub fn engine_info(&self) -> Option<EngineInfo> {
        self.engine.as_ref().map(|e| e.info())
    }

    /// The peer table the engine currently uses.
    pub fn peer_table(&self) -> Arc<PeerTable> {
        match self.peers.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Keeps a live engine whose device still exists, or starts a new one
    /// (a TUN device dies with its fds, and vice versa): the device's
    /// index, and true when started.
    async fn ensure_engine(&mut self) -> Result<(u32, bool), BackendError> {
        let link = self.nl.link_by_name(TUN_NAME).await?;
        if let (Some(engine), Some(link)) = (&self.engine, &link) {
            if engine.is_alive() && Some(link.index) == self.index {
                if !link.up || link.mtu != Some(u32::from(self.mtu)) {
                    self.nl
                        .set_link_mtu_up(
                            link.index,
                            u32::from(self.mtu),
                            &format!("setting MTU/up on {TUN_NAME}"),
                        )
                        .await?;
                }
                return Ok((link.index, false));
            }
        }
        let link = if self.engine.take().is_some() {
            tracing::warn!("{TUN_NAME} vanished or its queues stopped: recreating it");
            // Dropping the engine closed its fds, which took its device
            // with it: what is left under the name is someone else's.
            self.nl.link_by_name(TUN_NAME).await?
        } else {
            link
        };
        if let Some(stale) = link {
            // Left by someone else (a persistent TUN, a crashed run's
            // namesake): ours must be created by this process.
            self.nl
                .del_link(stale.index, &format!("deleting stale {TUN_NAME}"))
                .await?;
        }
        let node = self.node.clone();
        // A kernel VXLAN device of ours (FDB or metadata mode) holds the
        // same UDP port.
        let me = OwnedDevice::Tun {
            encap: self.spec.encap,
            vni: self.spec.vni,
        };
        devices::remove_conflicting(&*self.nl, me).await?;
        let cfg = EngineConfig {
            tun_name: TUN_NAME.into(),
            mtu: self.mtu,
            framer: Framer {
                encap: self.spec.encap,
                vni: self.spec.vni,
                our_mac: self.mac,
            },
            bind: std::net::SocketAddr::new(
                node.tunnel_addrs(self.spec.underlay)?.0,
                self.spec.port,
            ),
            queues: self.queues,
            offload: self.offload,
            busy_poll: self.spec.busy_poll,
            netns: self.nl.netns_path().map(|p| p.to_path_buf()),
        };
        let engine = (self.start)(cfg, self.peers.clone(), self.counters.clone())?;
        let info = engine.info();
        tracing::info!(
            "{TUN_NAME} up: {} {} queue(s), TUN offload {}, UDP GSO {} segments, UDP GRO {}",
            self.spec.encap.backend_type(),
            info.queues,
            if info.tun_offload { "on" } else { "off" },
            info.udp_gso_segments,
            if info.udp_gro_segments > 1 {
                "on"
            } else {
                "off"
            },
        );
        self.engine = Some(engine);
        let index = tunnel::created_index(&*self.nl, TUN_NAME).await?;
        self.index = Some(index);
        Ok((index, true))
    }
}

/// The route through the TUN device for one peer (an onlink gateway: the
/// device is point-to-point and resolves no neighbours).
pub fn tun_route(peer: &Peer, dev: u32) -> State {
    State {
        routes: vec![Route {
            dst: peer.subnet,
            gateway: peer.subnet.network(),
            oif: dev,
            onlink: true,
            encap: None,
        }],
        ..State::default()
    }
}

/// The engine's table for `peers` (own lease excluded, and leases with our
/// own tunnel address `own_ip`; peers without a usable VTEP MAC or without
/// an address of the underlay's family are left out, reconcile reports
/// them).
pub fn peer_table(
    peers: &[Peer],
    encap: Encap,
    underlay: Underlay,
    port: u16,
    own: Option<Ipv4Net>,
    own_ip: Option<std::net::IpAddr>,
) -> PeerTable {
    PeerTable::new(peers.iter().filter_map(|p| {
        let addr = p.endpoint(underlay).ok()?;
        if Some(p.subnet) == own || Some(addr) == own_ip {
            return None;
        }
        let mac = tunnel::peer_vtep_mac(p, encap.backend_type()).ok()?;
        Some((
            p.subnet,
            PeerEntry {
                addr: std::net::SocketAddr::new(addr, port),
                mac,
            },
        ))
    }))
}

#[async_trait]
impl Backend for UserspaceBackend {
    async fn prepare(&mut self) -> Result<Prepared, BackendError> {
        self.ensure_engine().await?;
        Ok(Prepared {
            backend_type: self.spec.encap.backend_type().into(),
            backend_data: Some(
                serde_json::json!({ "VNI": self.spec.vni, "VtepMAC": self.mac.to_string() }),
            ),
            mtu: u32::from(self.mtu),
        })
    }

    async fn attach(&mut self, lease: &Lease) -> Result<(), BackendError> {
        let subnet = lease.subnet.ok_or(BackendError::NoIpv4Subnet {
            backend: "userspace",
        })?;
        self.lease = Some(subnet);
        // The device exists from `prepare` on (or is started here).
        let (index, _) = self.ensure_engine().await?;
        tunnel::ensure_lease_address(&*self.nl, index, subnet, TUN_NAME).await
    }

    async fn reconcile(&mut self, peers: &[Peer]) -> Result<ReconcileReport, BackendError> {
        let node = self.node.clone();
        let (dev, recreated) = self.ensure_engine().await?;
        if let Some(lease) = self.lease {
            tunnel::ensure_lease_address(&*self.nl, dev, lease, TUN_NAME).await?;
        }
        let table = peer_table(
            peers,
            self.spec.encap,
            self.spec.underlay,
            self.spec.port,
            self.lease,
            node.tunnel_endpoint(self.spec.underlay),
        );
        // Table first: a route must never point at a peer the engine does
        // not know yet.
        match self.peers.write() {
            Ok(mut slot) => *slot = Arc::new(table),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(table),
        }
        let ours = self.spec.encap.backend_type();
        tunnel::converge_peers(
            &*self.nl,
            &node,
            (self.lease, None),
            peers,
            dev,
            self.spec.vxlan.direct_routing,
            (ours, self.spec.underlay),
            recreated,
            |peer, direct| match direct {
                Some(underlay) => Ok(tunnel::direct_route(peer, underlay)),
                None => tunnel::peer_vtep_mac(peer, ours).map(|_| tun_route(peer, dev)),
            },
        )
        .await
    }

    fn stats(&self) -> Option<Arc<dyn DatapathStats>> {
        Some(self.counters.clone())
    }
}

impl DatapathStats for Counters {
    fn snapshot(&self) -> StatsSnapshot {
        let s = Counters::snapshot(self);
        StatsSnapshot {
            delivered: s.ok.iter().map(|(d, p, b)| (d.label(), *p, *b)).collect(),
            dropped: s
                .drops
                .iter()
                .map(|(d, r, n)| (d.label(), r.label(), *n))
                .collect(),
        }
    }
}

#[cfg(test)]
mod fake_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::net::Ipv4Addr;

    fn peer(subnet: &str, last: u8, kind: &str, data: serde_json::Value) -> Peer {
        Peer {
            subnet: subnet.parse().unwrap(),
            public_ip: Ipv4Addr::new(198, 51, 100, last),
            public_ipv6: None,
            backend_type: kind.into(),
            backend_data: Some(data),
        }
    }

    #[test]
    fn table_keeps_usable_peers_of_our_encapsulation() {
        let peers = [
            peer(
                "10.244.1.0/24",
                1,
                "geneve",
                json!({"VtepMAC": "0a:00:00:00:00:01"}),
            ),
            peer(
                "10.244.2.0/24",
                2,
                "geneve",
                json!({"VtepMAC": "0a:00:00:00:00:02"}),
            ),
            peer(
                "10.244.3.0/24",
                3,
                "vxlan",
                json!({"VtepMAC": "0a:00:00:00:00:03"}),
            ),
            peer("10.244.4.0/24", 4, "geneve", json!({})),
        ];
        let own: Ipv4Net = "10.244.1.0/24".parse().unwrap();
        let t = peer_table(
            &peers,
            Encap::Geneve,
            Underlay::Ipv4,
            6081,
            Some(own),
            Some(Ipv4Addr::new(9, 9, 9, 9).into()),
        );
        assert_eq!(t.len(), 1);
        let e = t.lookup(Ipv4Addr::new(10, 244, 2, 9)).unwrap();
        assert_eq!(e.addr, "198.51.100.2:6081".parse().unwrap());
        assert_eq!(e.mac, "0a:00:00:00:00:02".parse().unwrap());
    }

    #[test]
    fn ipv6_underlay_table_uses_public_ipv6_and_skips_peers_without() {
        let mut with = peer(
            "10.244.2.0/24",
            2,
            "geneve",
            json!({"VtepMAC": "0a:00:00:00:00:02"}),
        );
        with.public_ipv6 = Some("2001:db8:100::2".parse().unwrap());
        let without = peer(
            "10.244.3.0/24",
            3,
            "geneve",
            json!({"VtepMAC": "0a:00:00:00:00:03"}),
        );
        let t = peer_table(
            &[with, without],
            Encap::Geneve,
            Underlay::Ipv6,
            6081,
            None,
            None,
        );
        assert_eq!(t.len(), 1);
        let e = t.lookup(Ipv4Addr::new(10, 244, 2, 9)).unwrap();
        assert_eq!(e.addr, "[2001:db8:100::2]:6081".parse().unwrap());
    }

    #[test]
    fn tun_route_is_onlink_through_the_device() {
        let p = peer("10.244.7.0/24", 7, "vxlan", json!({}));
        let r = tun_route(&p, 12).routes[0];
        assert_eq!(r.dst, p.subnet);
        assert_eq!(
            (r.gateway, r.oif, r.onlink),
            (Ipv4Addr::new(10, 244, 7, 0), 12, true)
        );
    }
}
