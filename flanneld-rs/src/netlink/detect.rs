//! The rtnetlink side of node detection: interfaces with their addresses,
//! route lookups and default routes, decoded into `model` types for the
//! pure `node::select`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::{Ipv4Net, Ipv6Net};
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use netlink_packet_route::link::{LinkAttribute, LinkFlags};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, RouteMessageBuilder};

use super::kernel::Family;
use super::NetlinkError;
use crate::model::{Iface, RouteHint};

/// Every interface with its IPv4 and usable IPv6 addresses.
pub async fn interfaces(handle: &Handle) -> Result<Vec<Iface>, NetlinkError> {
    let mut ifaces = Vec::new();
    let mut links = handle.link().get().execute();
    while let Some(msg) = links
        .try_next()
        .await
        .map_err(|e| NetlinkError::request("dumping links", e))?
    {
        let mut name = None;
        let mut mtu = 0;
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::Mtu(m) => mtu = *m,
                _ => {}
            }
        }
        if let Some(name) = name {
            ifaces.push(Iface {
                name,
                index: msg.header.index,
                mtu,
                loopback: msg.header.flags.contains(LinkFlags::Loopback),
                addrs: Vec::new(),
                addrs6: Vec::new(),
            });
        }
    }

    let mut by_index: HashMap<u32, Vec<Ipv4Net>> = HashMap::new();
    let mut by_index6: HashMap<u32, Vec<Ipv6Net>> = HashMap::new();
    let mut addrs = handle.address().get().execute();
    while let Some(msg) = addrs
        .try_next()
        .await
        .map_err(|e| NetlinkError::request("dumping addresses", e))?
    {
        if msg.header.family == AddressFamily::Inet6 {
            if let Some(net) = usable_ipv6(&msg) {
                by_index6.entry(msg.header.index).or_default().push(net);
            }
            continue;
        }
        if msg.header.family != AddressFamily::Inet {
            continue;
        }
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer
        // on point-to-point links, so prefer the former.
        let mut local = None;
        let mut address = None;
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Local(IpAddr::V4(a)) => local = Some(*a),
                AddressAttribute::Address(IpAddr::V4(a)) => address = Some(*a),
                _ => {}
            }
        }
        if let Some(ip) = local.or(address) {
            if let Ok(net) = Ipv4Net::new(ip, msg.header.prefix_len) {
                by_index.entry(msg.header.index).or_default().push(net);
            }
        }
    }
    for iface in &mut ifaces {
        iface.addrs = by_index.remove(&iface.index).unwrap_or_default();
        iface.addrs6 = by_index6.remove(&iface.index).unwrap_or_default();
    }
    Ok(ifaces)
}

/// An IPv6 address that can be bound: duplicate address detection done
/// (a tentative address refuses bind) and not failed.
pub fn usable_ipv6(msg: &netlink_packet_route::address::AddressMessage) -> Option<Ipv6Net> {
    let bad = AddressFlags::Tentative | AddressFlags::Dadfailed;
    let mut flags = AddressFlags::from_bits_truncate(u32::from(msg.header.flags.bits()));
    let mut addr = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Flags(f) => flags = *f,
            AddressAttribute::Address(IpAddr::V6(a)) => addr = Some(*a),
            _ => {}
        }
    }
    if flags.intersects(bad) {
        return None;
    }
    Ipv6Net::new(addr?, msg.header.prefix_len).ok()
}

pub fn hint_of(msg: &RouteMessage) -> Option<RouteHint> {
    let mut oif = None;
    let mut prefsrc = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::PrefSource(RouteAddress::Inet(a)) => prefsrc = Some(IpAddr::V4(*a)),
            RouteAttribute::PrefSource(RouteAddress::Inet6(a)) => prefsrc = Some(IpAddr::V6(*a)),
            _ => {}
        }
    }
    Some(RouteHint { oif: oif?, prefsrc })
}

/// The kernel's route lookup for `ip` (what `ip route get` shows).
pub async fn route_hint(handle: &Handle, ip: IpAddr) -> Result<Option<RouteHint>, NetlinkError> {
    let msg = match ip {
        IpAddr::V4(ip) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(ip, 32)
            .build(),
        IpAddr::V6(ip) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(ip, 128)
            .build(),
    };
    lookup(handle, msg).await
}

async fn lookup(handle: &Handle, msg: RouteMessage) -> Result<Option<RouteHint>, NetlinkError> {
    let mut replies = handle.route().get(msg).execute();
    match replies.try_next().await {
        Ok(Some(reply)) => Ok(hint_of(&reply)),
        Ok(None) => Ok(None),
        // ENETUNREACH and friends: there is no route, which the caller
        // reports with the flag's name.
        Err(rtnetlink::Error::NetlinkError(_)) => Ok(None),
        Err(e) => Err(NetlinkError::request("looking up a route", e)),
    }
}

/// The main table's default route of `family` with the lowest metric.
pub async fn default_route(
    handle: &Handle,
    family: Family,
) -> Result<Option<RouteHint>, NetlinkError> {
    let msg = match family {
        Family::V4 => RouteMessageBuilder::<Ipv4Addr>::new().build(),
        Family::V6 => RouteMessageBuilder::<Ipv6Addr>::new().build(),
    };
    best_default(handle, msg).await
}

async fn best_default(
    handle: &Handle,
    msg: RouteMessage,
) -> Result<Option<RouteHint>, NetlinkError> {
    let mut routes = handle.route().get(msg).execute();
    let mut best: Option<(u32, RouteHint)> = None;
    while let Some(r) = routes
        .try_next()
        .await
        .map_err(|e| NetlinkError::request("dumping routes", e))?
    {
        let table = r
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(r.header.table));
        if r.header.destination_prefix_length != 0 || table != u32::from(RouteHeader::RT_TABLE_MAIN)
        {
            continue;
        }
        let metric = r
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Priority(p) => Some(*p),
                _ => None,
            })
            .unwrap_or(0);
        if let Some(hint) = hint_of(&r) {
            if best.is_none_or(|(m, _)| metric < m) {
                best = Some((metric, hint));
            }
        }
    }
    Ok(best.map(|(_, h)| h))
}
