//! The VXLAN backend, programmed the way Go flannel does it so both can run
//! side by side: device `flannel.<VNI>` with learning off, and per peer a
//! permanent neighbour (peer .0 -> peer VTEP MAC), a permanent FDB entry
//! (VTEP MAC -> peer public IP) and an onlink route (peer subnet via peer
//! .0), in that order. Unlike flannel, every pass also removes what is
//! stale (see `reconcile`).

use std::net::Ipv4Addr;

use async_trait::async_trait;
use ipnet::Ipv4Net;
use lease_store::{Lease, NetworkConfig};
use netlink_packet_route::link::InfoKind;
use rtnetlink::LinkVxlan;

use super::devices::{self, OwnedDevice};
use super::mac_memory::{DeviceKey, MacMemory};
use super::options::VxlanOptions;
use super::{
    tunnel, vtep_mac, Backend, BackendError, LocalNode, Peer, PeerError, Prepared, ReconcileReport,
    Underlay,
};
use crate::model::{Fdb, Mac, Neigh, Route};
use crate::netlink::dump::LinkState;
use crate::netlink::KernelRef;
use crate::node::mtu::backend_mtu;
use crate::reconcile::State;

/// What the device must look like; anything else is recreated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    pub name: String,
    pub vni: u32,
    pub local: Ipv4Addr,
    pub port: u16,
    pub underlay: u32,
    pub gbp: bool,
    pub learning: bool,
    pub mac: Mac,
    pub mtu: u32,
}

impl DeviceSpec {
    pub fn new(opts: &VxlanOptions, node: &LocalNode) -> Result<Self, BackendError> {
        let name = device_name(opts.vni);
        // IFNAMSIZ is 16 including the NUL.
        if name.len() > 15 {
            return Err(BackendError::Config(format!(
                "VNI {} makes the device name {name:?} longer than 15 bytes; use a VNI below 10000000",
                opts.vni
            )));
        }
        Ok(DeviceSpec {
            name,
            vni: opts.vni,
            local: node.iface_addr,
            port: opts.port,
            underlay: node.iface_index,
            gbp: opts.gbp,
            learning: opts.learning,
            mac: vtep_mac::derive(node.public_ip, opts.vni),
            mtu: backend_mtu(opts.mtu, node.iface_mtu, Underlay::Ipv4.overhead())?,
        })
    }

    /// `Ok` when an existing link can be adopted as is (MTU and up/down are
    /// fixed in place); otherwise why it must be recreated. The kernel
    /// cannot change VNI, port or GBP of a live device. The MAC must be
    /// the one published (`self.mac`).
    pub fn check_adoptable(&self, link: &LinkState) -> Result<(), String> {
        tunnel::adoption_verdict(&self.name, link, self.mac, self.identity_diffs(link)?)
    }

    /// The same without the MAC: at start-up a device with the right
    /// identity is adopted with whatever MAC it has (Go flanneld gives
    /// `flannel.1` a random one, and its peers know that one).
    pub fn check_identity(&self, link: &LinkState) -> Result<(), String> {
        let diffs = self.identity_diffs(link)?;
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} is incompatible: {}",
                self.name,
                diffs.join(", ")
            ))
        }
    }

    fn identity_diffs(&self, link: &LinkState) -> Result<Vec<String>, String> {
        if link.kind != Some(InfoKind::Vxlan) {
            return Err(format!(
                "{} exists but is not a vxlan device ({:?})",
                self.name, link.kind
            ));
        }
        let v = link.vxlan.unwrap_or_default();
        let mut diffs = Vec::new();
        if v.vni != Some(self.vni) {
            diffs.push(format!("VNI {:?} != {}", v.vni, self.vni));
        }
        if v.local != Some(self.local) {
            diffs.push(format!("local {:?} != {}", v.local, self.local));
        }
        if v.port != Some(self.port) {
            diffs.push(format!("port {:?} != {}", v.port, self.port));
        }
        if v.underlay != Some(self.underlay) {
            diffs.push(format!(
                "underlay index {:?} != {}",
                v.underlay, self.underlay
            ));
        }
        if v.gbp != self.gbp {
            diffs.push(format!("GBP {} != {}", v.gbp, self.gbp));
        }
        if v.external {
            diffs.push("in external (metadata) mode".to_string());
        }
        if v.learning != Some(self.learning) {
            diffs.push(format!("learning {:?} != {}", v.learning, self.learning));
        }
        Ok(diffs)
    }

    fn key(&self) -> DeviceKey<'_> {
        DeviceKey {
            device: &self.name,
            vni: self.vni,
            local: self.local,
        }
    }
}

pub fn device_name(vni: u32) -> String {
    OwnedDevice::VxlanFdb { vni }.name()
}

/// A peer's three entries (or its direct route), or why it cannot be
/// programmed. Pure: the L2 check is done by the caller.
pub fn peer_entries(peer: &Peer, dev: u32, direct: Option<u32>) -> Result<State, PeerError> {
    if let Some(underlay) = direct {
        return Ok(tunnel::direct_route(peer, underlay));
    }
    let mac = tunnel::peer_vtep_mac(peer, "vxlan")?;
    let gw = peer.subnet.network();
    Ok(State {
        neighs: vec![Neigh { ip: gw, mac }],
        fdbs: vec![Fdb {
            mac,
            dst: peer.public_ip,
        }],
        routes: vec![Route {
            dst: peer.subnet,
            gateway: gw,
            oif: dev,
            onlink: true,
            encap: None,
        }],
    })
}

pub struct VxlanBackend {
    nl: KernelRef,
    opts: VxlanOptions,
    node: Option<LocalNode>,
    spec: Option<DeviceSpec>,
    index: Option<u32>,
    lease: Option<Ipv4Net>,
    /// The cluster network (routes to peer subnets in it are ours).
    network: Option<Ipv4Net>,
    /// Where an adopted, non-derived VTEP MAC is remembered.
    mac_memory: Option<MacMemory>,
    /// True once `prepare` published the MAC: from then on a device with
    /// another MAC is recreated with the published one.
    mac_published: bool,
}

impl VxlanBackend {
    pub fn new(nl: impl Into<KernelRef>, config: &NetworkConfig) -> Result<Self, BackendError> {
        Ok(Self::with_options(
            nl,
            VxlanOptions::parse(&config.backend)?,
        ))
    }

    /// A backend for options already parsed (by `spec::BackendSpec`).
    pub fn with_options(nl: impl Into<KernelRef>, opts: VxlanOptions) -> Self {
        VxlanBackend {
            nl: nl.into(),
            opts,
            node: None,
            spec: None,
            index: None,
            lease: None,
            network: None,
            mac_memory: None,
            mac_published: false,
        }
    }

    /// Remembers an adopted VTEP MAC in this file (see `mac_memory`).
    pub fn with_mac_memory(mut self, memory: Option<MacMemory>) -> Self {
        self.mac_memory = memory;
        self
    }

    pub fn options(&self) -> &VxlanOptions {
        &self.opts
    }

    /// The device as wanted (after `prepare`).
    pub fn device(&self) -> Option<&DeviceSpec> {
        self.spec.as_ref()
    }

    fn spec(&self) -> Result<&DeviceSpec, BackendError> {
        self.spec
            .as_ref()
            .ok_or(BackendError::NotPrepared { backend: "vxlan" })
    }

    /// Adopts a compatible device or (re)creates it: its index, and true
    /// when created.
    /// Before the MAC is published, a device with the right identity is
    /// adopted with its MAC, and a new one gets the remembered MAC (if
    /// any) or the derived one.
    async fn ensure_device(&mut self) -> Result<(u32, bool), BackendError> {
        let mut spec = self.spec()?.clone();
        let published = self.mac_published;
        let adopted = tunnel::adopt_link_or_remove(&*self.nl, &spec.name, spec.mtu, |l| {
            if published {
                spec.check_adoptable(l)
            } else {
                spec.check_identity(l)
            }
        })
        .await?;
        if let Some(link) = adopted {
            self.index = Some(link.index);
            if !published {
                if let Some(found) = link.mac {
                    self.keep_mac(&mut spec, found);
                }
            }
            self.spec = Some(spec);
            return Ok((link.index, false));
        }
        if !published {
            if let Some(mac) = self.recalled_mac(&spec) {
                spec.mac = mac;
                self.spec = Some(spec.clone());
            }
        }
        let mut b = LinkVxlan::new(&spec.name, spec.vni)
            .dev(spec.underlay)
            .local(spec.local)
            .port(spec.port)
            .learning(spec.learning);
        if spec.gbp {
            b = b.gbp();
        }
        let msg = b.mtu(spec.mtu).address(spec.mac.0.to_vec()).up().build();
        let what = format!(
            "creating {} (vni {} local {} port {})",
            spec.name, spec.vni, spec.local, spec.port
        );
        tunnel::add_link(&*self.nl, msg, what).await?;
        let index = tunnel::created_index(&*self.nl, &spec.name).await?;
        self.index = Some(index);
        Ok((index, true))
    }

    /// Keeps the MAC of the device found at start-up: peers (Go ones too)
    /// already hold FDB and neighbour entries for it. A MAC other than the
    /// derived one is remembered for a device deleted while we are down.
    fn keep_mac(&self, spec: &mut DeviceSpec, found: Mac) {
        if found == spec.mac {
            if let Some(mem) = &self.mac_memory {
                if let Err(e) = mem.forget() {
                    tracing::warn!(error = %e, "cannot drop the remembered VTEP MAC");
                }
            }
            return;
        }
        tracing::info!(
            device = %spec.name,
            mac = %found,
            derived = %spec.mac,
            "adopting the existing device with its MAC (e.g. made by Go flanneld): peers keep their FDB entries"
        );
        spec.mac = found;
        if let Some(mem) = &self.mac_memory {
            if let Err(e) = mem.remember(spec.key(), found) {
                tracing::warn!(error = %e, "cannot remember the adopted VTEP MAC");
            }
        }
    }

    /// The MAC remembered for this device identity, if any.
    fn recalled_mac(&self, spec: &DeviceSpec) -> Option<Mac> {
        let mem = self.mac_memory.as_ref()?;
        match mem.recall(spec.key()) {
            Ok(Some(mac)) => {
                tracing::info!(device = %spec.name, %mac, path = %mem.path().display(), "creating the device with the VTEP MAC adopted earlier");
                Some(mac)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the remembered VTEP MAC");
                None
            }
        }
    }

    /// Puts exactly `<lease .0>/32` on the device.
    async fn ensure_address(&self) -> Result<(), BackendError> {
        let (Some(lease), Some(index)) = (self.lease, self.index) else {
            return Ok(());
        };
        tunnel::ensure_lease_address(&*self.nl, index, lease, "the vxlan device").await
    }
}

#[async_trait]
impl Backend for VxlanBackend {
    async fn prepare(
        &mut self,
        node: &LocalNode,
        config: &NetworkConfig,
    ) -> Result<Prepared, BackendError> {
        let spec = DeviceSpec::new(&self.opts, node)?;
        let mtu = spec.mtu;
        self.spec = Some(spec);
        self.node = Some(node.clone());
        self.network = config.network;
        self.mac_published = false;
        let me = OwnedDevice::VxlanFdb { vni: self.opts.vni };
        devices::remove_conflicting(&*self.nl, me).await?;
        self.ensure_device().await?;
        // The MAC the device has now (adopted, remembered or derived) is
        // the one published; later passes keep the device on it.
        let spec = self.spec()?;
        let data = serde_json::json!({ "VNI": spec.vni, "VtepMAC": spec.mac.to_string() });
        self.mac_published = true;
        Ok(Prepared {
            backend_type: "vxlan".into(),
            backend_data: Some(data),
            mtu,
        })
    }

    async fn attach(&mut self, lease: &Lease) -> Result<(), BackendError> {
        let subnet = lease
            .subnet
            .ok_or(BackendError::NoIpv4Subnet { backend: "vxlan" })?;
        self.lease = Some(subnet);
        self.ensure_address().await
    }

    async fn reconcile(&mut self, peers: &[Peer]) -> Result<ReconcileReport, BackendError> {
        let node = self
            .node
            .clone()
            .ok_or(BackendError::NotPrepared { backend: "vxlan" })?;
        let (dev, recreated) = self.ensure_device().await?;
        self.ensure_address().await?;

        tunnel::converge_peers(
            &*self.nl,
            &node,
            (self.lease, self.network),
            peers,
            dev,
            self.opts.direct_routing,
            ("vxlan", Underlay::Ipv4),
            recreated,
            |peer, direct| peer_entries(peer, dev, direct),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::dump::VxlanAttrs;
    use serde_json::json;

    fn node() -> LocalNode {
        LocalNode {
            iface_name: "eth0".into(),
            iface_index: 3,
            iface_mtu: 9001,
            iface_addr: Ipv4Addr::new(198, 51, 100, 1),
            public_ip: Ipv4Addr::new(198, 51, 100, 1),
            iface_addr6: None,
            public_ipv6: None,
        }
    }

    fn spec() -> DeviceSpec {
        DeviceSpec::new(&VxlanOptions::parse(&json!({"VNI": 4})).unwrap(), &node()).unwrap()
    }

    fn link_like(s: &DeviceSpec) -> LinkState {
        LinkState {
            index: 9,
            mac: Some(s.mac),
            mtu: Some(1),
            up: false,
            kind: Some(InfoKind::Vxlan),
            vxlan: Some(VxlanAttrs {
                vni: Some(s.vni),
                local: Some(s.local),
                local6: None,
                port: Some(s.port),
                underlay: Some(s.underlay),
                learning: Some(false),
                gbp: false,
                external: false,
            }),
            geneve: None,
        }
    }

    #[test]
    fn spec_follows_flannel() {
        let s = spec();
        assert_eq!(s.name, "flannel.4");
        assert_eq!(s.mtu, 9001 - 50);
        assert_eq!(s.port, 8472);
        assert_eq!(s.mac, vtep_mac::derive(node().public_ip, 4));
        let fixed = DeviceSpec::new(
            &VxlanOptions::parse(&json!({"MTU": 1400})).unwrap(),
            &node(),
        )
        .unwrap();
        assert_eq!(fixed.mtu, 1400);
        assert!(DeviceSpec::new(
            &VxlanOptions::parse(&json!({"VNI": 12345678})).unwrap(),
            &node()
        )
        .is_err());
    }

    #[test]
    fn adoption_ignores_mtu_but_not_identity() {
        let s = spec();
        assert_eq!(s.check_adoptable(&link_like(&s)), Ok(()));
        let mut other_vni = link_like(&s);
        other_vni.vxlan.as_mut().unwrap().vni = Some(5);
        assert!(s
            .check_adoptable(&other_vni)
            .unwrap_err()
            .to_string()
            .contains("VNI"));
        let mut other_mac = link_like(&s);
        other_mac.mac = Some(Mac([2, 0, 0, 0, 0, 1]));
        assert!(s
            .check_adoptable(&other_mac)
            .unwrap_err()
            .to_string()
            .contains("MAC"));
        // Go flanneld's device: right identity, random MAC; adoptable at
        // start-up, and the MAC is kept.
        assert_eq!(s.check_identity(&other_mac), Ok(()));
        let mut other_vni = other_mac.clone();
        other_vni.vxlan.as_mut().unwrap().vni = Some(5);
        assert!(s
            .check_identity(&other_vni)
            .unwrap_err()
            .to_string()
            .contains("VNI"));
        let mut gbp = link_like(&s);
        gbp.vxlan.as_mut().unwrap().gbp = true;
        assert!(s
            .check_adoptable(&gbp)
            .unwrap_err()
            .to_string()
            .contains("GBP"));
        let mut bridge = link_like(&s);
        bridge.kind = Some(InfoKind::Bridge);
        assert!(s.check_adoptable(&bridge).is_err());
    }

    fn peer(data: serde_json::Value) -> Peer {
        Peer {
            subnet: "10.244.7.0/24".parse().unwrap(),
            public_ip: Ipv4Addr::new(198, 51, 100, 7),
            public_ipv6: None,
            backend_type: "vxlan".into(),
            backend_data: Some(data),
        }
    }

    #[test]
    fn peer_entries_are_neigh_fdb_onlink_route() {
        let st = peer_entries(
            &peer(json!({"VNI": 1, "VtepMAC": "0a:00:00:00:00:07"})),
            11,
            None,
        )
        .unwrap();
        let mac: Mac = "0a:00:00:00:00:07".parse().unwrap();
        let gw = Ipv4Addr::new(10, 244, 7, 0);
        assert_eq!(st.neighs, vec![Neigh { ip: gw, mac }]);
        assert_eq!(
            st.fdbs,
            vec![Fdb {
                mac,
                dst: Ipv4Addr::new(198, 51, 100, 7)
            }]
        );
        assert_eq!(
            st.routes,
            vec![Route {
                dst: "10.244.7.0/24".parse().unwrap(),
                gateway: gw,
                oif: 11,
                onlink: true,
                encap: None
            }]
        );
    }

    #[test]
    fn direct_routing_uses_the_public_ip_on_the_underlay() {
        let st = peer_entries(&peer(json!({"VtepMAC": "0a:00:00:00:00:07"})), 11, Some(3)).unwrap();
        assert!(st.neighs.is_empty() && st.fdbs.is_empty());
        assert_eq!(st.routes[0].gateway, Ipv4Addr::new(198, 51, 100, 7));
        assert_eq!((st.routes[0].oif, st.routes[0].onlink), (3, false));
    }

    #[test]
    fn bad_peers_are_explained() {
        assert!(peer_entries(&peer(json!({})), 11, None)
            .unwrap_err()
            .to_string()
            .contains("VtepMAC"));
        assert!(peer_entries(&peer(json!({"vtepmac": "zz"})), 11, None)
            .unwrap_err()
            .to_string()
            .contains("VtepMAC"));
        let mut hg = peer(json!({}));
        hg.backend_type = "host-gw".into();
        assert!(peer_entries(&hg, 11, None)
            .unwrap_err()
            .to_string()
            .contains("same backend"));
    }
}
