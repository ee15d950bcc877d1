//! Device handling shared by the kernel tunnel backends (FDB-mode VXLAN and
//! metadata-mode VXLAN/Geneve): adopt-or-recreate, the lease address, the
//! peer's VTEP MAC.

use ipnet::Ipv4Net;
use netlink_packet_route::link::LinkMessage;

use super::converge::{converge, on_same_l2, Desired};
use super::options::data_field;
use super::ownership::Scope;
use super::{BackendError, LocalNode, Peer, PeerError, ReconcileReport, Underlay};
use crate::model::{Mac, Route};
use crate::netlink::dump::LinkState;
use crate::netlink::{Kernel, NetlinkError};
use crate::reconcile::State;

/// The index of link `name` when it exists and `check` accepts it (MTU and
/// up/down are fixed in place); an incompatible link is deleted (`None`).
pub async fn adopt_or_remove(
    nl: &dyn Kernel,
    name: &str,
    mtu: u32,
    check: impl Fn(&LinkState) -> Result<(), String>,
) -> Result<Option<u32>, BackendError> {
    Ok(adopt_link_or_remove(nl, name, mtu, check)
        .await?
        .map(|l| l.index))
}

/// The same, returning the adopted link as found (e.g. to keep its MAC).
pub async fn adopt_link_or_remove(
    nl: &dyn Kernel,
    name: &str,
    mtu: u32,
    check: impl Fn(&LinkState) -> Result<(), String>,
) -> Result<Option<LinkState>, BackendError> {
    let Some(link) = nl.link_by_name(name).await? else {
        return Ok(None);
    };
    match check(&link) {
        Ok(()) => {
            if link.mtu != Some(mtu) || !link.up {
                nl.set_link_mtu_up(link.index, mtu, &format!("setting MTU/up on {name}"))
                    .await?;
            }
            Ok(Some(link))
        }
        Err(reason) => {
            tracing::warn!("{reason}: deleting and recreating it");
            delete_link(nl, link.index, &format!("deleting incompatible {name}")).await?;
            Ok(None)
        }
    }
}

/// The end of a device's adoption check: `diffs` found so far plus the
/// MAC (derived, so a different one means another node's or VNI's device).
pub fn adoption_verdict(
    name: &str,
    link: &LinkState,
    mac: Mac,
    mut diffs: Vec<String>,
) -> Result<(), String> {
    if link.mac != Some(mac) {
        diffs.push(format!(
            "MAC {} != {mac}",
            link.mac.map(|m| m.to_string()).unwrap_or_default()
        ));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!("{name} is incompatible: {}", diffs.join(", ")))
    }
}

/// Sends a prepared RTM_NEWLINK; the raw netlink error is kept so a caller
/// can tell a missing kernel module (EOPNOTSUPP) from other failures.
pub async fn add_link(nl: &dyn Kernel, msg: LinkMessage, what: String) -> Result<(), NetlinkError> {
    nl.add_link(msg, &what).await
}

/// The index of a link just created.
pub async fn created_index(nl: &dyn Kernel, name: &str) -> Result<u32, BackendError> {
    let link = nl
        .link_by_name(name)
        .await?
        .ok_or_else(|| BackendError::Vanished { name: name.into() })?;
    Ok(link.index)
}

async fn delete_link(nl: &dyn Kernel, index: u32, what: &str) -> Result<(), BackendError> {
    Ok(nl.del_link(index, what).await?)
}

/// Puts exactly `<lease .0>/32` on device `index` (an address from an
/// older lease would make the kernel source packets from it).
pub async fn ensure_lease_address(
    nl: &dyn Kernel,
    index: u32,
    lease: Ipv4Net,
    dev: &str,
) -> Result<(), BackendError> {
    let want = Ipv4Net::from(lease.network());
    let mut present = false;
    for net in nl.ipv4_addrs(index).await? {
        if net == want {
            present = true;
            continue;
        }
        nl.del_ipv4_addr(index, net, dev).await?;
    }
    if !present {
        nl.add_ipv4_addr(index, want, dev).await?;
    }
    Ok(())
}

/// The VTEP MAC a peer of encapsulation `ours` published, or why it
/// cannot be programmed.
pub fn peer_vtep_mac(peer: &Peer, ours: &'static str) -> Result<Mac, PeerError> {
    if peer.backend_type != ours {
        return Err(peer.other_backend(ours));
    }
    let field = peer
        .backend_data
        .as_ref()
        .and_then(|d| data_field(d, "VtepMAC"));
    let text = field.and_then(|v| v.as_str()).ok_or(PeerError::NoVtepMac {
        subnet: peer.subnet,
        public_ip: peer.public_ip,
    })?;
    text.parse().map_err(|source| PeerError::BadVtepMac {
        subnet: peer.subnet,
        public_ip: peer.public_ip,
        source,
    })
}

/// DirectRouting: a peer on the same L2 gets a plain route via its public
/// IP on the underlay instead of a tunnel.
pub fn direct_route(peer: &Peer, underlay: u32) -> State {
    State {
        routes: vec![Route {
            dst: peer.subnet,
            gateway: peer.public_ip,
            oif: underlay,
            onlink: false,
            encap: None,
        }],
        ..State::default()
    }
}

/// One tunnel reconcile pass over `peers` once the device (`dev`) is in
/// place (`network`, when given, makes gatewayed routes to peer subnets in
/// it ours too, e.g. Go's DirectRouting routes): our own lease (by subnet, or a lease with our tunnel address,
/// e.g. an old one of ours) is skipped, DirectRouting peers on our L2 get
/// `direct`, `entries` gives each peer's entries (or why not), and the
/// kernel is made to match. `ours` is our backend type and the underlay
/// family.
#[allow(clippy::too_many_arguments)]
pub async fn converge_peers(
    nl: &dyn Kernel,
    node: &LocalNode,
    (lease, network): (Option<Ipv4Net>, Option<Ipv4Net>),
    peers: &[Peer],
    dev: u32,
    direct_routing: bool,
    (ours, underlay): (&'static str, Underlay),
    recreated: bool,
    entries: impl Fn(&Peer, Option<u32>) -> Result<State, PeerError>,
) -> Result<ReconcileReport, BackendError> {
    let mut desired = Desired::default();
    let mut errors = Vec::new();
    let me = node.tunnel_endpoint(underlay);
    for peer in peers {
        if Some(peer.subnet) == lease || (me.is_some() && peer.endpoint(underlay).ok() == me) {
            continue;
        }
        let direct = if direct_routing
            && peer.backend_type == ours
            && on_same_l2(nl, peer.public_ip, node.iface_index).await?
        {
            Some(node.iface_index)
        } else {
            None
        };
        match entries(peer, direct) {
            Ok(e) => desired.add_peer(peer.subnet, e),
            Err(e) => errors.push(e),
        }
    }
    let scope = Scope {
        dev: Some(dev),
        network,
        own: lease,
    };
    let out = converge(nl, &desired, scope).await?;
    errors.extend(out.errors);
    Ok(ReconcileReport {
        changes: out.changes,
        errors,
        peers: out.peers_ok,
        device_recreated: recreated,
    })
}
