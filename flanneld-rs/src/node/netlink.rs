//! Netlink I/O for start-up detection: dumps the interfaces and their
//! addresses and asks the kernel which route it would use, then hands the
//! facts to the pure `select::select_iface`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::{Ipv4Net, Ipv6Net};
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use netlink_packet_route::link::{LinkAttribute, LinkFlags};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, RouteMessageBuilder};

use super::select::{select_iface, Iface, NodeError, PublicAddrs, RouteHint};
use crate::backend::{LocalNode, Underlay};
use crate::cli::IfaceSpec;

fn nl_err(op: &'static str) -> impl Fn(rtnetlink::Error) -> NodeError {
    move |e| NodeError::Netlink {
        op,
        reason: e.to_string(),
    }
}

/// `select::preflight` on this namespace's interfaces.
pub async fn preflight(spec: &IfaceSpec) -> Result<(), NodeError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| NodeError::Netlink {
        op: "open socket",
        reason: e.to_string(),
    })?;
    let conn_task = tokio::spawn(conn);
    let result = dump_ifaces(&handle).await;
    conn_task.abort();
    super::select::preflight(spec, &result?)
}

/// `preflight` over Go flanneld's chain of interface kinds (`--iface`,
/// then `--iface-regex`, then `--iface-can-reach`): fine when any kind can
/// match; otherwise the first kind's error.
pub async fn preflight_any(first: &IfaceSpec, rest: &[IfaceSpec]) -> Result<(), NodeError> {
    let mut first_err = None;
    for spec in std::iter::once(first).chain(rest) {
        match preflight(spec).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or(NodeError::NoDefaultRoute))
}

/// `detect` with Go flanneld's fallbacks: the first kind that finds an
/// interface wins; when none does, the first kind's error.
pub async fn detect_any(
    first: &IfaceSpec,
    rest: &[IfaceSpec],
    public: PublicAddrs,
    underlay: Underlay,
) -> Result<LocalNode, NodeError> {
    let mut first_err = None;
    for spec in std::iter::once(first).chain(rest) {
        match detect(spec, public, underlay).await {
            Ok(node) => return Ok(node),
            Err(e) => {
                if !rest.is_empty() {
                    tracing::info!(error = %e, "no interface from this choice; trying the next one (Go flanneld's order: --iface, --iface-regex, --iface-can-reach)");
                }
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or(NodeError::NoDefaultRoute))
}

/// Detects this node's underlay in the current network namespace.
pub async fn detect(
    spec: &IfaceSpec,
    public: PublicAddrs,
    underlay: Underlay,
) -> Result<LocalNode, NodeError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| NodeError::Netlink {
        op: "open socket",
        reason: e.to_string(),
    })?;
    let conn_task = tokio::spawn(conn);
    let result = detect_with(&handle, spec, public, underlay).await;
    conn_task.abort();
    result
}

async fn detect_with(
    handle: &Handle,
    spec: &IfaceSpec,
    public: PublicAddrs,
    underlay: Underlay,
) -> Result<LocalNode, NodeError> {
    let ifaces = dump_ifaces(handle).await?;
    let route = match spec {
        IfaceSpec::CanReach(IpAddr::V4(ip)) => route_to(handle, *ip).await?,
        IfaceSpec::CanReach(IpAddr::V6(ip)) if underlay == Underlay::Ipv6 => {
            route_to6(handle, *ip).await?
        }
        // The underlay's own default route; an IPv6 underlay on a node
        // without an IPv6 default route takes the IPv4 one's interface.
        IfaceSpec::DefaultRoute if underlay == Underlay::Ipv6 => {
            match default_route6(handle).await? {
                Some(r) => Some(r),
                None => default_route(handle).await?,
            }
        }
        IfaceSpec::DefaultRoute => default_route(handle).await?,
        _ => None,
    };
    select_iface(spec, &ifaces, route, public, underlay)
}

/// Every interface with its IPv4 and usable IPv6 addresses.
pub async fn dump_ifaces(handle: &Handle) -> Result<Vec<Iface>, NodeError> {
    let mut ifaces = Vec::new();
    let mut links = handle.link().get().execute();
    while let Some(msg) = links.try_next().await.map_err(nl_err("dump links"))? {
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
    while let Some(msg) = addrs.try_next().await.map_err(nl_err("dump addresses"))? {
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
fn usable_ipv6(msg: &netlink_packet_route::address::AddressMessage) -> Option<Ipv6Net> {
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

fn hint_of(msg: &RouteMessage) -> Option<RouteHint> {
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
pub async fn route_to(handle: &Handle, ip: Ipv4Addr) -> Result<Option<RouteHint>, NodeError> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(ip, 32)
        .build();
    lookup(handle, msg).await
}

/// The same for an IPv6 address.
pub async fn route_to6(handle: &Handle, ip: Ipv6Addr) -> Result<Option<RouteHint>, NodeError> {
    let msg = RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(ip, 128)
        .build();
    lookup(handle, msg).await
}

async fn lookup(handle: &Handle, msg: RouteMessage) -> Result<Option<RouteHint>, NodeError> {
    let mut replies = handle.route().get(msg).execute();
    match replies.try_next().await {
        Ok(Some(reply)) => Ok(hint_of(&reply)),
        Ok(None) => Ok(None),
        // ENETUNREACH and friends: there is no route, which the caller
        // reports with the flag's name.
        Err(rtnetlink::Error::NetlinkError(_)) => Ok(None),
        Err(e) => Err(nl_err("route lookup")(e)),
    }
}

/// The main table's IPv4 default route with the lowest metric.
pub async fn default_route(handle: &Handle) -> Result<Option<RouteHint>, NodeError> {
    best_default(handle, RouteMessageBuilder::<Ipv4Addr>::new().build()).await
}

/// The main table's IPv6 default route with the lowest metric.
pub async fn default_route6(handle: &Handle) -> Result<Option<RouteHint>, NodeError> {
    best_default(handle, RouteMessageBuilder::<Ipv6Addr>::new().build()).await
}

async fn best_default(handle: &Handle, msg: RouteMessage) -> Result<Option<RouteHint>, NodeError> {
    let mut routes = handle.route().get(msg).execute();
    let mut best: Option<(u32, RouteHint)> = None;
    while let Some(r) = routes.try_next().await.map_err(nl_err("dump routes"))? {
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
