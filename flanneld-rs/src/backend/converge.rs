//! The I/O half of a reconcile pass shared by the backends: dump what we
//! own, plan with the pure reconciler, apply, and account per peer.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use futures::stream::{self, StreamExt};
use ipnet::Ipv4Net;

use super::ownership::Scope;
use super::PeerError;
use crate::model::{Mac, Route};
use crate::netlink::{Kernel, NetlinkError, RTPROT_FLANNEL_RS};
use crate::reconcile::{self, Op, State};

/// The desired state plus, for each entry, the peer (by subnet) it serves,
/// so a failed operation is reported against the right peer.
#[derive(Debug, Default)]
pub struct Desired {
    pub state: State,
    pub peers: Vec<Ipv4Net>,
    neigh_owner: BTreeMap<Ipv4Addr, Ipv4Net>,
    fdb_owner: BTreeMap<Mac, Ipv4Net>,
}

impl Desired {
    pub fn add_peer(&mut self, subnet: Ipv4Net, entries: State) {
        for n in &entries.neighs {
            self.neigh_owner.insert(n.ip, subnet);
        }
        for f in &entries.fdbs {
            self.fdb_owner.insert(f.mac, subnet);
        }
        self.state.neighs.extend(entries.neighs);
        self.state.fdbs.extend(entries.fdbs);
        self.state.routes.extend(entries.routes);
        self.peers.push(subnet);
    }

    fn owner(&self, op: &Op) -> Option<Ipv4Net> {
        match op {
            Op::NeighAdd(n) | Op::NeighReplace(n) => self.neigh_owner.get(&n.ip).copied(),
            Op::FdbAdd(f) | Op::FdbReplace(f) => self.fdb_owner.get(&f.mac).copied(),
            Op::RouteAdd(r) | Op::RouteReplace(r) => Some(r.dst),
            _ => None,
        }
    }
}

/// Netlink requests in flight at once while applying one kind of op.
const IN_FLIGHT: usize = 64;

/// What applying a plan did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub changes: Vec<(&'static str, u64)>,
    pub errors: Vec<PeerError>,
    pub peers_ok: usize,
}

/// Makes the kernel match `desired`. `scope.dev` is the overlay device
/// whose neighbour and FDB entries are ours (`None` for host-gw: routes
/// only); `scope` also says which routes are ours whatever their protocol
/// (a node taken over from Go flanneld: `ownership`).
pub async fn converge(
    nl: &dyn Kernel,
    desired: &Desired,
    scope: Scope,
) -> Result<Outcome, NetlinkError> {
    let dev = scope.dev;
    // A route is deleted with the protocol it carries: the kernel matches
    // the protocol of a delete request, so a Go-made `proto boot` route
    // would survive a delete sent with ours.
    let mut protos: BTreeMap<Route, u8> = BTreeMap::new();
    let mut routes = Vec::new();
    for (route, proto) in nl.main_unicast_routes().await? {
        if scope.owns(&route, proto) {
            protos.insert(route, proto);
            routes.push(route);
        }
    }
    let mut actual = State {
        routes,
        ..State::default()
    };
    if let Some(dev) = dev {
        actual.neighs = nl.permanent_neighs(dev).await?;
        actual.fdbs = nl.fdb_entries(dev).await?;
    }
    let ops = reconcile::plan(&desired.state, &actual);
    let mut done = Vec::with_capacity(ops.len());
    let mut out = Outcome::default();
    let mut failed_peers = Vec::new();
    // A neighbour/FDB op needs a device; host-gw plans never contain one.
    let target = dev.unwrap_or(0);
    // The plan's order matters between kinds (neighbour before FDB before
    // route); ops of one kind touch distinct keys, so each run of equal
    // kinds is sent with many requests in flight on the one socket.
    for group in ops.chunk_by(|a, b| a.kind() == b.kind()) {
        // Futures collected first: a closure inside the stream combinator
        // would not be provably Send for async_trait.
        let pending: Vec<_> = group
            .iter()
            .map(|op| {
                let op = *op;
                let proto = match op {
                    Op::RouteDel(r) => protos.get(&r).copied().unwrap_or(RTPROT_FLANNEL_RS),
                    _ => RTPROT_FLANNEL_RS,
                };
                async move { (op, nl.apply(&op, target, proto).await) }
            })
            .collect();
        let results: Vec<(Op, Result<(), NetlinkError>)> = stream::iter(pending)
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        for (op, result) in results {
            match result {
                Ok(()) => done.push(op),
                Err(e) => match desired.owner(&op) {
                    Some(peer) => {
                        failed_peers.push(peer);
                        out.errors.push(PeerError::Kernel {
                            subnet: peer,
                            source: e,
                        });
                    }
                    None => out.errors.push(PeerError::Stale(e)),
                },
            }
        }
    }
    out.changes = reconcile::count_by_kind(&done);
    failed_peers.sort();
    failed_peers.dedup();
    out.peers_ok = desired.peers.len().saturating_sub(failed_peers.len());
    Ok(out)
}

/// Whether `ip` is reachable directly on the underlay (same L2): the
/// kernel's route to it has no gateway and leaves through `underlay`.
pub async fn on_same_l2(
    nl: &dyn Kernel,
    ip: Ipv4Addr,
    underlay: u32,
) -> Result<bool, NetlinkError> {
    Ok(matches!(
        nl.route_get(ip).await?,
        Some(l) if l.gateway.is_none() && l.oif == Some(underlay)
    ))
}
