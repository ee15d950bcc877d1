//! Typed dumps of the kernel state the datapath owns or depends on.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoGeneve, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::NeighbourMessage;
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState};
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteIp6Tunnel, RouteIp6TunnelFlags,
    RouteIpTunnel, RouteLwTunnelEncap, RouteType,
};
use netlink_packet_route::AddressFamily;
use nix::errno::Errno;
use rtnetlink::RouteMessageBuilder;

use super::{Netlink, NetlinkError};
use crate::model::{Fdb, Mac, Neigh, Route, TunnelEncap};

/// The VXLAN attributes that decide whether a device can be adopted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VxlanAttrs {
    pub vni: Option<u32>,
    pub local: Option<Ipv4Addr>,
    pub local6: Option<std::net::Ipv6Addr>,
    pub port: Option<u16>,
    pub underlay: Option<u32>,
    pub learning: Option<bool>,
    pub gbp: bool,
    /// Metadata (external) mode: any VNI, the remote taken per packet.
    pub external: bool,
}

/// The Geneve attributes that decide whether a device can be adopted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GeneveAttrs {
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub external: bool,
}

/// A link as far as the datapath cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub mac: Option<Mac>,
    pub mtu: Option<u32>,
    pub up: bool,
    /// `None` for links without a kind (e.g. physical or loopback).
    pub kind: Option<InfoKind>,
    /// Present when `kind` is vxlan.
    pub vxlan: Option<VxlanAttrs>,
    /// Present when `kind` is geneve.
    pub geneve: Option<GeneveAttrs>,
}

/// Where the kernel would send a packet to some address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLookup {
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
}

impl Netlink {
    /// The link called `name`, or `None` when there is none.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkState>, NetlinkError> {
        let mut links = self
            .handle()
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(Some(decode_link(&msg))),
            Ok(None) => Ok(None),
            Err(e) if super::errno(&e) == Some(Errno::ENODEV as i32) => Ok(None),
            Err(e) => Err(NetlinkError::request(format!("looking up link {name}"), e)),
        }
    }

    /// IPv4 routes in the main table carrying protocol `proto`.
    pub async fn routes_with_proto(&self, proto: u8) -> Result<Vec<Route>, NetlinkError> {
        Ok(self
            .main_unicast_routes()
            .await?
            .into_iter()
            .filter(|(_, p)| *p == proto)
            .map(|(r, _)| r)
            .collect())
    }

    /// Every IPv4 unicast route in the main table with its protocol number
    /// (the caller decides which are its own: `backend::ownership`).
    pub async fn main_unicast_routes(&self) -> Result<Vec<(Route, u8)>, NetlinkError> {
        let filter = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut dump = self.handle().route().get(filter).execute();
        let mut out = Vec::new();
        while let Some(msg) = dump
            .try_next()
            .await
            .map_err(|e| NetlinkError::request("dumping IPv4 routes", e))?
        {
            out.extend(decode_route(&msg));
        }
        Ok(out)
    }

    /// A neighbour dump of one address family, asking the kernel for link
    /// `index` only (NDA_IFINDEX): a node with many pods has many entries on
    /// its bridge. Callers still filter by index, in case a kernel ignores
    /// the attribute.
    fn neighbour_dump(&self, family: AddressFamily, index: u32) -> rtnetlink::NeighbourGetRequest {
        let mut req = self.handle().neighbours().get().set_address_family(family);
        req.message_mut()
            .attributes
            .push(NeighbourAttribute::IfIndex(index));
        req
    }

    /// Permanent IPv4 neighbours on link `index` (the only kind we install;
    /// entries the kernel learned itself are left alone).
    pub async fn permanent_neighs(&self, index: u32) -> Result<Vec<Neigh>, NetlinkError> {
        let mut dump = self.neighbour_dump(AddressFamily::Inet, index).execute();
        let mut out = Vec::new();
        while let Some(msg) = dump
            .try_next()
            .await
            .map_err(|e| NetlinkError::request("dumping IPv4 neighbours", e))?
        {
            out.extend(decode_neigh(&msg, index));
        }
        Ok(out)
    }

    /// FDB entries (with an IPv4 remote) on link `index`.
    pub async fn fdb_entries(&self, index: u32) -> Result<Vec<Fdb>, NetlinkError> {
        let mut dump = self.neighbour_dump(AddressFamily::Bridge, index).execute();
        let mut out = Vec::new();
        while let Some(msg) = dump
            .try_next()
            .await
            .map_err(|e| NetlinkError::request("dumping bridge FDB entries", e))?
        {
            out.extend(decode_fdb(&msg, index));
        }
        Ok(out)
    }

    /// `ip route get <ip>`: `None` when the kernel has no route to it.
    pub async fn route_get(&self, ip: Ipv4Addr) -> Result<Option<RouteLookup>, NetlinkError> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(ip, 32)
            .build();
        let mut replies = self.handle().route().get(query).execute();
        match replies.try_next().await {
            Ok(Some(msg)) => Ok(Some(decode_lookup(&msg))),
            Ok(None) => Ok(None),
            Err(e) if matches!(super::errno(&e), Some(n) if n == Errno::ENETUNREACH as i32 || n == Errno::EHOSTUNREACH as i32) => {
                Ok(None)
            }
            Err(e) => Err(NetlinkError::request(
                format!("looking up the route to {ip}"),
                e,
            )),
        }
    }

    /// IPv4 addresses on link `index`, with the messages needed to delete them.
    pub async fn ipv4_addrs(
        &self,
        index: u32,
    ) -> Result<Vec<(Ipv4Net, AddressMessage)>, NetlinkError> {
        let mut dump = self
            .handle()
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut out = Vec::new();
        while let Some(msg) = dump
            .try_next()
            .await
            .map_err(|e| NetlinkError::request(format!("dumping addresses of link {index}"), e))?
        {
            if let Some(net) = decode_ipv4_addr(&msg, index) {
                out.push((net, msg));
            }
        }
        Ok(out)
    }
}

/// A main-table IPv4 unicast route with its protocol; `None` for anything
/// else (other tables, families or types: never ours).
pub fn decode_route(msg: &RouteMessage) -> Option<(Route, u8)> {
    let h = &msg.header;
    if h.address_family != AddressFamily::Inet
        || h.table != RouteHeader::RT_TABLE_MAIN
        || h.kind != RouteType::Unicast
    {
        return None;
    }
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut gateway = Ipv4Addr::UNSPECIFIED;
    let mut oif = 0;
    let mut encap = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = *a,
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = *g,
            RouteAttribute::Oif(i) => oif = *i,
            RouteAttribute::Encap(e) => encap = ip_encap(e),
            _ => {}
        }
    }
    let dst = Ipv4Net::new(dst, h.destination_prefix_length).ok()?;
    let route = Route {
        dst,
        gateway,
        oif,
        onlink: h.flags.contains(RouteFlags::Onlink),
        encap,
    };
    Some((route, u8::from(h.protocol)))
}

/// A permanent IPv4 neighbour on link `index`; `None` for other links,
/// states (entries the kernel learned itself) or families.
pub fn decode_neigh(msg: &NeighbourMessage, index: u32) -> Option<Neigh> {
    if msg.header.ifindex != index || msg.header.state != NeighbourState::Permanent {
        return None;
    }
    match neigh_fields(&msg.attributes) {
        (Some(IpAddr::V4(ip)), Some(mac)) => Some(Neigh { ip, mac }),
        _ => None,
    }
}

/// An FDB entry with an IPv4 remote on link `index`.
pub fn decode_fdb(msg: &NeighbourMessage, index: u32) -> Option<Fdb> {
    if msg.header.ifindex != index {
        return None;
    }
    match neigh_fields(&msg.attributes) {
        (Some(IpAddr::V4(dst)), Some(mac)) => Some(Fdb { mac, dst }),
        _ => None,
    }
}

/// The gateway and output link of an `ip route get` reply.
pub fn decode_lookup(msg: &RouteMessage) -> RouteLookup {
    let mut found = RouteLookup {
        gateway: None,
        oif: None,
    };
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => found.gateway = Some(*g),
            RouteAttribute::Oif(i) => found.oif = Some(*i),
            _ => {}
        }
    }
    found
}

/// An IPv4 address of link `index` with its prefix.
pub fn decode_ipv4_addr(msg: &AddressMessage, index: u32) -> Option<Ipv4Net> {
    if msg.header.family != AddressFamily::Inet || msg.header.index != index {
        return None;
    }
    let addr = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(v4)) | AddressAttribute::Address(IpAddr::V4(v4)) => {
            Some(*v4)
        }
        _ => None,
    })?;
    Ipv4Net::new(addr, msg.header.prefix_len).ok()
}

/// A link's name (when the message carries one) and state.
pub fn decode_link_named(msg: &LinkMessage) -> (Option<String>, LinkState) {
    let name = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    });
    (name, decode_link(msg))
}

/// A link as far as the datapath cares.
pub fn decode_link(msg: &LinkMessage) -> LinkState {
    link_state(msg.header.index, msg.header.flags, &msg.attributes)
}

fn neigh_fields(attrs: &[NeighbourAttribute]) -> (Option<IpAddr>, Option<Mac>) {
    let mut ip = None;
    let mut mac = None;
    for attr in attrs {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                ip = Some(IpAddr::V4(*v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                ip = Some(IpAddr::V6(*v6))
            }
            // AF_BRIDGE (FDB) messages carry the remote as raw bytes.
            NeighbourAttribute::Destination(NeighbourAddress::Other(raw)) => {
                ip = <[u8; 4]>::try_from(raw.as_slice())
                    .map(|b| IpAddr::V4(Ipv4Addr::from(b)))
                    .ok()
            }
            NeighbourAttribute::LinkLayerAddress(l) => mac = mac_of(l),
            _ => {}
        }
    }
    (ip, mac)
}

/// `encap ip[6] id <id> dst <dst>` of a route; `None` for other encaps or
/// when a part is missing (not a route we would have written: for IPv6
/// that includes the checksum flag, so a route without it is replaced).
pub fn ip_encap(attrs: &[RouteLwTunnelEncap]) -> Option<TunnelEncap> {
    let mut id = None;
    let mut dst = None;
    let mut v6_csum = false;
    for a in attrs {
        match a {
            RouteLwTunnelEncap::Ip6(RouteIp6Tunnel::Flags(f)) => {
                v6_csum = f.contains(RouteIp6TunnelFlags::Checksum)
            }
            RouteLwTunnelEncap::Ip(RouteIpTunnel::Id(i))
            | RouteLwTunnelEncap::Ip6(RouteIp6Tunnel::Id(i)) => id = Some(*i),
            RouteLwTunnelEncap::Ip(RouteIpTunnel::Destination(d)) => {
                dst = Some(std::net::IpAddr::V4(*d))
            }
            RouteLwTunnelEncap::Ip6(RouteIp6Tunnel::Destination(d)) => {
                dst = Some(std::net::IpAddr::V6(*d))
            }
            _ => {}
        }
    }
    let dst = dst?;
    if dst.is_ipv6() && !v6_csum {
        return None;
    }
    Some(TunnelEncap { id: id?, dst })
}

fn mac_of(bytes: &[u8]) -> Option<Mac> {
    <[u8; 6]>::try_from(bytes).ok().map(Mac)
}

fn link_state(index: u32, flags: LinkFlags, attrs: &[LinkAttribute]) -> LinkState {
    let mut state = LinkState {
        index,
        mac: None,
        mtu: None,
        up: flags.contains(LinkFlags::Up),
        kind: None,
        vxlan: None,
        geneve: None,
    };
    for attr in attrs {
        match attr {
            LinkAttribute::Address(a) => state.mac = mac_of(a),
            LinkAttribute::Mtu(m) => state.mtu = Some(*m),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(k) => state.kind = Some(k.clone()),
                        LinkInfo::Data(InfoData::Vxlan(v)) => state.vxlan = Some(vxlan_attrs(v)),
                        LinkInfo::Data(InfoData::Geneve(g)) => state.geneve = Some(geneve_attrs(g)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    state
}

fn vxlan_attrs(infos: &[InfoVxlan]) -> VxlanAttrs {
    let mut v = VxlanAttrs::default();
    for info in infos {
        match info {
            InfoVxlan::Id(id) => v.vni = Some(*id),
            InfoVxlan::Local(ip) => v.local = Some(*ip),
            InfoVxlan::Local6(ip) => v.local6 = Some(*ip),
            InfoVxlan::Port(p) => v.port = Some(*p),
            InfoVxlan::Link(l) => v.underlay = Some(*l),
            InfoVxlan::Learning(l) => v.learning = Some(*l),
            InfoVxlan::Gbp => v.gbp = true,
            InfoVxlan::CollectMetadata(m) => v.external = *m,
            _ => {}
        }
    }
    v
}

fn geneve_attrs(infos: &[InfoGeneve]) -> GeneveAttrs {
    let mut g = GeneveAttrs::default();
    for info in infos {
        match info {
            InfoGeneve::Id(id) => g.vni = Some(*id),
            InfoGeneve::Port(p) => g.port = Some(*p),
            InfoGeneve::CollectMetadata => g.external = true,
            _ => {}
        }
    }
    g
}
