//! An in-memory kernel behind the `Kernel` seam, for unit tests without
//! root: links, addresses, routes, neighbours and FDB entries of one
//! namespace, every change recorded in order (`calls`), and the refusals a
//! test asks for (a missing module, a route the kernel rejects).
//!
//! It is not a kernel model beyond what the datapath relies on: deleting a
//! link takes its addresses, routes, neighbours and FDB entries with it;
//! create-or-replace is keyed like the kernel (route by destination,
//! neighbour by address, FDB entry by MAC on a link). Routes, neighbours
//! and FDB entries go through the same message builders (`apply`) and
//! decoders (`dump`) as the real thing, so a message the decoder cannot
//! read back is lost here too.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use ipnet::Ipv4Net;
use netlink_packet_route::link::{InfoKind, LinkMessage};
use nix::errno::Errno;
use tokio::sync::mpsc;

use super::apply::{fdb_message, neigh_add_message, route_message};
use super::dump::{
    decode_fdb, decode_link_named, decode_neigh, decode_route, LinkState, RouteLookup,
};
use super::events::KernelEvents;
use super::kernel::{Family, Kernel};
use super::NetlinkError;
use crate::model::{Fdb, Iface, Neigh, Route, RouteHint};
use crate::reconcile::Op;

/// One change asked of the fake kernel (reads are not recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    AddLink {
        name: String,
        kind: Option<InfoKind>,
    },
    SetLink {
        index: u32,
        mtu: u32,
    },
    DelLink {
        index: u32,
    },
    AddAddr {
        index: u32,
        net: Ipv4Net,
    },
    DelAddr {
        index: u32,
        net: Ipv4Net,
    },
    Apply(Op),
}

/// A link of the fake kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeLink {
    pub name: String,
    pub state: LinkState,
}

/// Called with every route the fake is asked to add or replace, before it
/// is applied: a test checks there what must already hold by then.
pub struct RouteHook(pub Box<dyn Fn(&Route) + Send>);

impl std::fmt::Debug for RouteHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteHook")
    }
}

/// Everything the fake kernel holds; tests set it up and inspect it.
#[derive(Debug, Default)]
pub struct FakeState {
    pub links: Vec<FakeLink>,
    pub addrs: Vec<(u32, Ipv4Net)>,
    pub routes: Vec<(Route, u8)>,
    pub neighs: Vec<(u32, Neigh)>,
    pub fdbs: Vec<(u32, Fdb)>,
    /// `route_get` answers by destination (absent: unreachable).
    pub lookups: BTreeMap<Ipv4Addr, RouteLookup>,
    /// Node detection's view.
    pub ifaces: Vec<Iface>,
    pub hints: BTreeMap<IpAddr, RouteHint>,
    pub default4: Option<RouteHint>,
    pub default6: Option<RouteHint>,
    /// Link kinds whose creation fails with EOPNOTSUPP (no module).
    pub missing_kinds: Vec<InfoKind>,
    /// Route destinations whose add/replace fails with this errno.
    pub refused_routes: BTreeMap<Ipv4Net, i32>,
    /// Changes, in order.
    pub calls: Vec<Call>,
    pub route_hook: Option<RouteHook>,
    next_index: u32,
    wakers: Vec<mpsc::Sender<()>>,
}

/// The fake kernel; share it as `Arc<FakeKernel>` (or a `KernelRef`).
#[derive(Debug, Default)]
pub struct FakeKernel {
    state: Mutex<FakeState>,
}

impl FakeKernel {
    pub fn new() -> Self {
        Self::default()
    }

    /// The state, to set up or inspect (a poisoned lock is still usable:
    /// the state is plain data).
    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Adds a plain link (e.g. the underlay) and returns its index.
    pub fn add_plain_link(&self, name: &str, mtu: u32) -> u32 {
        let mut s = self.state();
        let index = s.alloc_index();
        s.links.push(FakeLink {
            name: name.into(),
            state: LinkState {
                index,
                mac: None,
                mtu: Some(mtu),
                up: true,
                kind: None,
                vxlan: None,
                geneve: None,
            },
        });
        index
    }

    /// Creates TUN device `name`, up with `mtu`, as opening it on
    /// `/dev/net/tun` would (recorded as an `AddLink` of kind `Tun`); a
    /// taken name is refused. Returns its index.
    pub fn open_tun(&self, name: &str, mtu: u32) -> Result<u32, NetlinkError> {
        let mut s = self.state();
        s.calls.push(Call::AddLink {
            name: name.into(),
            kind: Some(InfoKind::Tun),
        });
        if s.links.iter().any(|l| l.name == name) {
            return Err(NetlinkError::refused(
                format!("creating TUN device {name}"),
                Errno::EEXIST as i32,
            ));
        }
        let index = s.alloc_index();
        s.links.push(FakeLink {
            name: name.into(),
            state: LinkState {
                index,
                mac: None,
                mtu: Some(mtu),
                up: true,
                kind: Some(InfoKind::Tun),
                vxlan: None,
                geneve: None,
            },
        });
        Ok(index)
    }

    /// The TUN device `index` goes with its last fd (no netlink call: not
    /// recorded); nothing happens when it is gone already.
    pub fn close_tun(&self, index: u32) {
        let mut s = self.state();
        s.remove_link(index);
        s.wake();
    }

    /// Takes the recorded changes.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.state().calls)
    }

    /// The link called `name`, as the fake holds it.
    pub fn link(&self, name: &str) -> Option<LinkState> {
        self.state()
            .links
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.state.clone())
    }

    /// Removes link `name` the way an operator's `ip link del` would
    /// (with what hangs on it), without recording a call.
    pub fn remove_link_by_hand(&self, name: &str) {
        let mut s = self.state();
        if let Some(index) = s
            .links
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.state.index)
        {
            s.remove_link(index);
        }
        s.wake();
    }

    /// Wakes every subscriber (as a kernel deletion notice would).
    pub fn wake(&self) {
        self.state().wake();
    }
}

impl FakeState {
    fn alloc_index(&mut self) -> u32 {
        // Index 1 is loopback in a real namespace.
        self.next_index = self.next_index.max(1) + 1;
        self.next_index
    }

    fn remove_link(&mut self, index: u32) {
        self.links.retain(|l| l.state.index != index);
        self.addrs.retain(|(i, _)| *i != index);
        self.routes.retain(|(r, _)| r.oif != index);
        self.neighs.retain(|(i, _)| *i != index);
        self.fdbs.retain(|(i, _)| *i != index);
    }

    fn wake(&mut self) {
        self.wakers.retain(|tx| match tx.try_send(()) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(())) => true,
            Err(mpsc::error::TrySendError::Closed(())) => false,
        });
    }

    fn apply(&mut self, op: &Op, dev: u32, proto: u8) -> Result<(), NetlinkError> {
        match op {
            Op::RouteAdd(r) | Op::RouteReplace(r) => {
                if let Some(hook) = &self.route_hook {
                    (hook.0)(r);
                }
                if let Some(errno) = self.refused_routes.get(&r.dst) {
                    return Err(NetlinkError::refused(
                        format!("setting route {} via {}", r.dst, r.gateway),
                        *errno,
                    ));
                }
                if !self.links.iter().any(|l| l.state.index == r.oif) {
                    return Err(NetlinkError::refused(
                        format!("setting route {} via {}", r.dst, r.gateway),
                        Errno::ENODEV as i32,
                    ));
                }
                if let Some(decoded) = decode_route(&route_message(r, proto)) {
                    self.routes.retain(|(have, _)| have.dst != r.dst);
                    self.routes.push(decoded);
                }
            }
            Op::RouteDel(r) => self
                .routes
                .retain(|(have, p)| !(have.dst == r.dst && *p == proto)),
            Op::NeighAdd(n) | Op::NeighReplace(n) => {
                if let Some(decoded) = decode_neigh(&neigh_add_message(n, dev), dev) {
                    self.neighs
                        .retain(|(i, have)| !(*i == dev && have.ip == n.ip));
                    self.neighs.push((dev, decoded));
                }
            }
            Op::NeighDel(n) => self
                .neighs
                .retain(|(i, have)| !(*i == dev && have.ip == n.ip)),
            Op::FdbAdd(f) | Op::FdbReplace(f) => {
                if let Some(decoded) = decode_fdb(&fdb_message(f, dev), dev) {
                    self.fdbs
                        .retain(|(i, have)| !(*i == dev && have.mac == f.mac));
                    self.fdbs.push((dev, decoded));
                }
            }
            Op::FdbDel(f) => self
                .fdbs
                .retain(|(i, have)| !(*i == dev && have.mac == f.mac && have.dst == f.dst)),
        }
        Ok(())
    }
}

#[async_trait]
impl Kernel for FakeKernel {
    async fn link_by_name(&self, name: &str) -> Result<Option<LinkState>, NetlinkError> {
        Ok(self.link(name))
    }

    async fn add_link(&self, msg: LinkMessage, what: &str) -> Result<(), NetlinkError> {
        let (name, mut state) = decode_link_named(&msg);
        let mut s = self.state();
        let Some(name) = name else {
            return Err(NetlinkError::refused(what, Errno::EINVAL as i32));
        };
        s.calls.push(Call::AddLink {
            name: name.clone(),
            kind: state.kind.clone(),
        });
        if let Some(kind) = &state.kind {
            if s.missing_kinds.contains(kind) {
                return Err(NetlinkError::refused(what, Errno::EOPNOTSUPP as i32));
            }
        }
        if s.links.iter().any(|l| l.name == name) {
            return Err(NetlinkError::refused(what, Errno::EEXIST as i32));
        }
        state.index = s.alloc_index();
        s.links.push(FakeLink { name, state });
        Ok(())
    }

    async fn set_link_mtu_up(&self, index: u32, mtu: u32, what: &str) -> Result<(), NetlinkError> {
        let mut s = self.state();
        s.calls.push(Call::SetLink { index, mtu });
        let link = s
            .links
            .iter_mut()
            .find(|l| l.state.index == index)
            .ok_or_else(|| NetlinkError::refused(what, Errno::ENODEV as i32))?;
        link.state.mtu = Some(mtu);
        link.state.up = true;
        Ok(())
    }

    async fn del_link(&self, index: u32, what: &str) -> Result<(), NetlinkError> {
        let mut s = self.state();
        s.calls.push(Call::DelLink { index });
        if !s.links.iter().any(|l| l.state.index == index) {
            return Err(NetlinkError::refused(what, Errno::ENODEV as i32));
        }
        s.remove_link(index);
        Ok(())
    }

    async fn ipv4_addrs(&self, index: u32) -> Result<Vec<Ipv4Net>, NetlinkError> {
        Ok(self
            .state()
            .addrs
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, n)| *n)
            .collect())
    }

    async fn add_ipv4_addr(&self, index: u32, net: Ipv4Net, dev: &str) -> Result<(), NetlinkError> {
        let mut s = self.state();
        s.calls.push(Call::AddAddr { index, net });
        let what = format!("adding {net} to {dev}");
        if !s.links.iter().any(|l| l.state.index == index) {
            return Err(NetlinkError::refused(what, Errno::ENODEV as i32));
        }
        if s.addrs.contains(&(index, net)) {
            return Err(NetlinkError::refused(what, Errno::EEXIST as i32));
        }
        s.addrs.push((index, net));
        Ok(())
    }

    async fn del_ipv4_addr(
        &self,
        index: u32,
        net: Ipv4Net,
        _dev: &str,
    ) -> Result<(), NetlinkError> {
        let mut s = self.state();
        s.calls.push(Call::DelAddr { index, net });
        s.addrs.retain(|a| *a != (index, net));
        Ok(())
    }

    async fn main_unicast_routes(&self) -> Result<Vec<(Route, u8)>, NetlinkError> {
        Ok(self.state().routes.clone())
    }

    async fn permanent_neighs(&self, index: u32) -> Result<Vec<Neigh>, NetlinkError> {
        Ok(self
            .state()
            .neighs
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, n)| *n)
            .collect())
    }

    async fn fdb_entries(&self, index: u32) -> Result<Vec<Fdb>, NetlinkError> {
        Ok(self
            .state()
            .fdbs
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, f)| *f)
            .collect())
    }

    async fn apply(&self, op: &Op, dev: u32, proto: u8) -> Result<(), NetlinkError> {
        let mut s = self.state();
        s.calls.push(Call::Apply(*op));
        s.apply(op, dev, proto)
    }

    async fn route_get(&self, ip: Ipv4Addr) -> Result<Option<RouteLookup>, NetlinkError> {
        Ok(self.state().lookups.get(&ip).copied())
    }

    async fn interfaces(&self) -> Result<Vec<Iface>, NetlinkError> {
        Ok(self.state().ifaces.clone())
    }

    async fn route_hint(&self, ip: IpAddr) -> Result<Option<RouteHint>, NetlinkError> {
        Ok(self.state().hints.get(&ip).copied())
    }

    async fn default_route(&self, family: Family) -> Result<Option<RouteHint>, NetlinkError> {
        let s = self.state();
        Ok(match family {
            Family::V4 => s.default4,
            Family::V6 => s.default6,
        })
    }

    fn subscribe(&self, _cluster: Ipv4Net) -> Result<KernelEvents, NetlinkError> {
        let (tx, events) = KernelEvents::channel();
        self.state().wakers.push(tx);
        Ok(events)
    }

    fn netns_path(&self) -> Option<&Path> {
        None
    }
}
