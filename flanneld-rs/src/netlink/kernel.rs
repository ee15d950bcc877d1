//! The one netlink seam of the daemon: `Kernel`, the few things the
//! datapath and node detection ask of the kernel (links, addresses,
//! routes, neighbours, FDB entries, route lookups, change notifications).
//!
//! `Netlink` implements it over rtnetlink; `fake::FakeKernel` (feature
//! `fake-netlink`, and the crate's own unit tests) implements it in memory
//! and records every change, so the backends' adopt / recreate / fallback /
//! address sequences are unit-tested without root. Both build and read
//! messages with the same pure functions (`apply`'s builders, `dump`'s
//! decoders). The kernel tests (`tests/dp_*.rs`) stay the real check.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use ipnet::Ipv4Net;
use netlink_packet_route::link::LinkMessage;

use super::dump::{LinkState, RouteLookup};
use super::events::KernelEvents;
use super::NetlinkError;
use crate::model::{Fdb, Iface, Neigh, Route, RouteHint};
use crate::reconcile::Op;

/// The address family of a default-route query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// What the datapath and node detection ask of the kernel (one network
/// namespace). Errors keep the operation and, for kernel refusals, the
/// errno (`NetlinkError::errno`).
#[async_trait]
pub trait Kernel: Send + Sync + std::fmt::Debug {
    /// The link called `name`, or `None` when there is none.
    async fn link_by_name(&self, name: &str) -> Result<Option<LinkState>, NetlinkError>;
    /// Sends a prepared RTM_NEWLINK (`what` names it in errors).
    async fn add_link(&self, msg: LinkMessage, what: &str) -> Result<(), NetlinkError>;
    /// Sets link `index` to `mtu` and up.
    async fn set_link_mtu_up(&self, index: u32, mtu: u32, what: &str) -> Result<(), NetlinkError>;
    async fn del_link(&self, index: u32, what: &str) -> Result<(), NetlinkError>;

    /// IPv4 addresses on link `index`.
    async fn ipv4_addrs(&self, index: u32) -> Result<Vec<Ipv4Net>, NetlinkError>;
    async fn add_ipv4_addr(&self, index: u32, net: Ipv4Net, dev: &str) -> Result<(), NetlinkError>;
    async fn del_ipv4_addr(&self, index: u32, net: Ipv4Net, dev: &str) -> Result<(), NetlinkError>;

    /// Every IPv4 unicast route in the main table with its protocol number.
    async fn main_unicast_routes(&self) -> Result<Vec<(Route, u8)>, NetlinkError>;
    /// Permanent IPv4 neighbours on link `index`.
    async fn permanent_neighs(&self, index: u32) -> Result<Vec<Neigh>, NetlinkError>;
    /// FDB entries with an IPv4 remote on link `index`.
    async fn fdb_entries(&self, index: u32) -> Result<Vec<Fdb>, NetlinkError>;
    /// Applies one reconcile operation (see `Netlink::apply`).
    async fn apply(&self, op: &Op, dev: u32, proto: u8) -> Result<(), NetlinkError>;
    /// `ip route get <ip>`: `None` when unreachable.
    async fn route_get(&self, ip: Ipv4Addr) -> Result<Option<RouteLookup>, NetlinkError>;

    /// Every interface with its IPv4 and usable IPv6 addresses.
    async fn interfaces(&self) -> Result<Vec<Iface>, NetlinkError>;
    /// The route the kernel would use to `ip` (`None`: no route).
    async fn route_hint(&self, ip: IpAddr) -> Result<Option<RouteHint>, NetlinkError>;
    /// The main table's default route of `family` with the lowest metric.
    async fn default_route(&self, family: Family) -> Result<Option<RouteHint>, NetlinkError>;

    /// Wake-ups when something we own may have been deleted by someone
    /// else (see `events`). Call inside a runtime.
    fn subscribe(&self, cluster: Ipv4Net) -> Result<KernelEvents, NetlinkError>;

    /// The namespace this handle drives, when not the caller's own (a
    /// backend opens its TUN device and sockets there too).
    fn netns_path(&self) -> Option<&Path>;
}

/// How the parts hold the seam.
pub type KernelRef = Arc<dyn Kernel>;

impl From<super::Netlink> for KernelRef {
    fn from(nl: super::Netlink) -> Self {
        Arc::new(nl)
    }
}

#[async_trait]
impl Kernel for super::Netlink {
    async fn link_by_name(&self, name: &str) -> Result<Option<LinkState>, NetlinkError> {
        super::Netlink::link_by_name(self, name).await
    }

    async fn add_link(&self, msg: LinkMessage, what: &str) -> Result<(), NetlinkError> {
        self.handle()
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| NetlinkError::request(what, e))
    }

    async fn set_link_mtu_up(&self, index: u32, mtu: u32, what: &str) -> Result<(), NetlinkError> {
        let msg = rtnetlink::LinkUnspec::new_with_index(index)
            .mtu(mtu)
            .up()
            .build();
        self.handle()
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| NetlinkError::request(what, e))
    }

    async fn del_link(&self, index: u32, what: &str) -> Result<(), NetlinkError> {
        self.handle()
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| NetlinkError::request(what, e))
    }

    async fn ipv4_addrs(&self, index: u32) -> Result<Vec<Ipv4Net>, NetlinkError> {
        Ok(super::Netlink::ipv4_addrs(self, index)
            .await?
            .into_iter()
            .map(|(net, _)| net)
            .collect())
    }

    async fn add_ipv4_addr(&self, index: u32, net: Ipv4Net, dev: &str) -> Result<(), NetlinkError> {
        self.handle()
            .address()
            .add(index, net.addr().into(), net.prefix_len())
            .execute()
            .await
            .map_err(|e| NetlinkError::request(format!("adding {net} to {dev}"), e))
    }

    async fn del_ipv4_addr(&self, index: u32, net: Ipv4Net, dev: &str) -> Result<(), NetlinkError> {
        // Deleted with the message the kernel gave (its exact local and
        // peer attributes), not one rebuilt here.
        let found = super::Netlink::ipv4_addrs(self, index)
            .await?
            .into_iter()
            .find(|(n, _)| *n == net);
        let Some((_, msg)) = found else {
            return Ok(());
        };
        self.handle()
            .address()
            .del(msg)
            .execute()
            .await
            .map_err(|e| {
                NetlinkError::request(format!("removing stale address {net} from {dev}"), e)
            })
    }

    async fn main_unicast_routes(&self) -> Result<Vec<(Route, u8)>, NetlinkError> {
        super::Netlink::main_unicast_routes(self).await
    }

    async fn permanent_neighs(&self, index: u32) -> Result<Vec<Neigh>, NetlinkError> {
        super::Netlink::permanent_neighs(self, index).await
    }

    async fn fdb_entries(&self, index: u32) -> Result<Vec<Fdb>, NetlinkError> {
        super::Netlink::fdb_entries(self, index).await
    }

    async fn apply(&self, op: &Op, dev: u32, proto: u8) -> Result<(), NetlinkError> {
        super::Netlink::apply(self, op, dev, proto).await
    }

    async fn route_get(&self, ip: Ipv4Addr) -> Result<Option<RouteLookup>, NetlinkError> {
        super::Netlink::route_get(self, ip).await
    }

    async fn interfaces(&self) -> Result<Vec<Iface>, NetlinkError> {
        super::detect::interfaces(self.handle()).await
    }

    async fn route_hint(&self, ip: IpAddr) -> Result<Option<RouteHint>, NetlinkError> {
        super::detect::route_hint(self.handle(), ip).await
    }

    async fn default_route(&self, family: Family) -> Result<Option<RouteHint>, NetlinkError> {
        super::detect::default_route(self.handle(), family).await
    }

    fn subscribe(&self, cluster: Ipv4Net) -> Result<KernelEvents, NetlinkError> {
        super::events::subscribe_in(self.netns_path(), cluster)
    }

    fn netns_path(&self) -> Option<&Path> {
        super::Netlink::netns_path(self)
    }
}
