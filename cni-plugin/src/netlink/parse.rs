//! What the plugin reads out of rtnetlink replies.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{LinkAttribute, LinkFlags};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader};
use netlink_packet_route::RouteNetlinkMessage;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub master: Option<u32>,
    pub up: bool,
    /// IFLA_LINK: for a veth, the peer's index (in the peer's namespace).
    pub peer: Option<u32>,
}

pub fn link(msg: &RouteNetlinkMessage) -> Option<Link> {
    let RouteNetlinkMessage::NewLink(m) = msg else {
        return None;
    };
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        mac: None,
        mtu: None,
        master: None,
        up: m.header.flags.contains(LinkFlags::Up),
        peer: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Address(b) => l.mac = <[u8; 6]>::try_from(b.as_slice()).ok(),
            LinkAttribute::Mtu(v) => l.mtu = Some(*v),
            LinkAttribute::Controller(v) => l.master = Some(*v),
            LinkAttribute::Link(v) => l.peer = Some(*v),
            _ => {}
        }
    }
    Some(l)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub index: u32,
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

pub fn address(msg: &RouteNetlinkMessage) -> Option<Addr> {
    let RouteNetlinkMessage::NewAddress(m) = msg else {
        return None;
    };
    let mut local = None;
    let mut address = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(IpAddr::V4(v)) => local = Some(*v),
            AddressAttribute::Address(IpAddr::V4(v)) => address = Some(*v),
            _ => {}
        }
    }
    Some(Addr {
        index: m.header.index,
        addr: local.or(address)?,
        prefix_len: m.header.prefix_len,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub table: u32,
}

pub fn route(msg: &RouteNetlinkMessage) -> Option<Route> {
    let RouteNetlinkMessage::NewRoute(m) = msg else {
        return None;
    };
    let mut r = Route {
        dst: Ipv4Addr::UNSPECIFIED,
        prefix_len: m.header.destination_prefix_length,
        gateway: None,
        oif: None,
        table: u32::from(m.header.table),
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(v)) => r.dst = *v,
            RouteAttribute::Gateway(RouteAddress::Inet(v)) => r.gateway = Some(*v),
            RouteAttribute::Oif(v) => r.oif = Some(*v),
            RouteAttribute::Table(t) => r.table = *t,
            _ => {}
        }
    }
    Some(r)
}

impl Route {
    pub fn in_main_table(&self) -> bool {
        self.table == u32::from(RouteHeader::RT_TABLE_MAIN)
    }
}

pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_format() {
        assert_eq!(format_mac([2, 0xab, 0, 1, 2, 0xff]), "02:ab:00:01:02:ff");
    }
}
