//! Builders for the rtnetlink requests the plugin sends. Pure: they only
//! assemble messages, so they are unit-tested without root.

use std::net::Ipv4Addr;
use std::os::fd::RawFd;

use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::Request;

/// Flags for "create, and fail if it exists".
pub const CREATE_EXCL: u16 = NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK;

fn link(attrs: Vec<LinkAttribute>, up: bool) -> LinkMessage {
    let mut m = LinkMessage::default();
    if up {
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
    }
    m.attributes = attrs;
    m
}

pub fn get_link(name: &str) -> Request {
    let m = link(vec![LinkAttribute::IfName(name.to_string())], false);
    Request::new(
        RouteNetlinkMessage::GetLink(m),
        0,
        format!("look up interface {name}"),
    )
}

pub fn del_link(name: &str) -> Request {
    let m = link(vec![LinkAttribute::IfName(name.to_string())], false);
    Request::new(
        RouteNetlinkMessage::DelLink(m),
        NLM_F_ACK,
        format!("delete interface {name}"),
    )
}

/// Deletes interface `index` of the socket's namespace. By index, not name:
/// the name may have changed (tombstone) and a new link may carry the old one.
pub fn del_link_index(index: u32) -> Request {
    let mut m = link(Vec::new(), false);
    m.header.index = index;
    Request::new(
        RouteNetlinkMessage::DelLink(m),
        NLM_F_ACK,
        format!("delete interface #{index}"),
    )
}

fn set_link(index: u32, attrs: Vec<LinkAttribute>, what: String) -> Request {
    let mut m = link(attrs, false);
    m.header.index = index;
    Request::new(RouteNetlinkMessage::SetLink(m), NLM_F_ACK, what)
}

/// Sets the link administratively down (a renamed link must be down).
pub fn set_link_down(index: u32) -> Request {
    let mut r = set_link(index, Vec::new(), format!("set interface #{index} down"));
    if let RouteNetlinkMessage::SetLink(m) = &mut r.msg {
        m.header.change_mask = LinkFlags::Up;
    }
    r
}

pub fn rename_link(index: u32, name: &str) -> Request {
    set_link(
        index,
        vec![LinkAttribute::IfName(name.to_string())],
        format!("rename interface #{index} to {name}"),
    )
}

pub fn set_link_up(index: u32) -> Request {
    let mut m = link(Vec::new(), true);
    m.header.index = index;
    Request::new(
        RouteNetlinkMessage::NewLink(m),
        NLM_F_ACK,
        format!("set interface #{index} up"),
    )
}

/// A bridge, up, with a fixed MAC (a bridge otherwise takes the lowest MAC
/// of its ports, so the address in results would change under us).
pub fn create_bridge(name: &str, mac: [u8; 6]) -> Request {
    let m = link(
        vec![
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::Address(mac.to_vec()),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]),
        ],
        true,
    );
    Request::new(
        RouteNetlinkMessage::NewLink(m),
        CREATE_EXCL,
        format!("create bridge {name}"),
    )
}

/// The host end of the pair and what it needs to create the pod end.
pub struct VethSpec<'a> {
    pub host_name: &'a str,
    pub host_mac: [u8; 6],
    pub bridge_index: u32,
    pub pod_name: &'a str,
    pub pod_mac: [u8; 6],
    /// The pod namespace: the peer is created directly inside it.
    pub pod_netns_fd: RawFd,
    pub mtu: u32,
}

/// One request creates both ends, the pod end already in its namespace and
/// the host end up and enslaved to the bridge. The pod end cannot be set up
/// here: veth refuses to open before its peer exists (ENOTCONN).
/// Queues per veth end. Without the two attributes the kernel allocates one
/// queue per possible CPU and then shrinks the active count to 1 on each end
/// (`veth_init_queues`), and shrinking a registered device's TX queues
/// waits for an expedited RCU grace period: two waits per ADD. Asking for
/// 1 up front gives the same active queues with no wait.
const VETH_QUEUES: u32 = 1;

pub fn create_veth(s: &VethSpec) -> Request {
    let peer = link(
        vec![
            LinkAttribute::IfName(s.pod_name.to_string()),
            LinkAttribute::Address(s.pod_mac.to_vec()),
            LinkAttribute::Mtu(s.mtu),
            LinkAttribute::NumTxQueues(VETH_QUEUES),
            LinkAttribute::NumRxQueues(VETH_QUEUES),
            LinkAttribute::NetNsFd(s.pod_netns_fd),
        ],
        false,
    );
    let m = link(
        vec![
            LinkAttribute::IfName(s.host_name.to_string()),
            LinkAttribute::Address(s.host_mac.to_vec()),
            LinkAttribute::Mtu(s.mtu),
            LinkAttribute::NumTxQueues(VETH_QUEUES),
            LinkAttribute::NumRxQueues(VETH_QUEUES),
            LinkAttribute::Controller(s.bridge_index),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
            ]),
        ],
        true,
    );
    Request::new(
        RouteNetlinkMessage::NewLink(m),
        CREATE_EXCL,
        format!(
            "create veth pair {} (host) / {} (pod)",
            s.host_name, s.pod_name
        ),
    )
}

pub fn set_hairpin(port_name: &str, on: bool) -> Request {
    let m = link(
        vec![
            LinkAttribute::IfName(port_name.to_string()),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::PortKind(InfoPortKind::Bridge),
                LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                    on,
                )])),
            ]),
        ],
        false,
    );
    Request::new(
        RouteNetlinkMessage::NewLink(m),
        NLM_F_ACK,
        format!("set hairpin mode on {port_name}"),
    )
}

/// Adds `addr` (with its prefix) to interface `index`. `replace` makes it
/// idempotent (used for the shared gateway address on the bridge).
pub fn add_address(index: u32, addr: Ipv4Net, replace: bool) -> Request {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.prefix_len = addr.prefix_len();
    m.header.index = index;
    m.attributes = vec![
        AddressAttribute::Local(addr.addr().into()),
        AddressAttribute::Address(addr.addr().into()),
    ];
    if addr.prefix_len() < 31 {
        m.attributes
            .push(AddressAttribute::Broadcast(addr.broadcast()));
    }
    let flags = if replace {
        NLM_F_CREATE | NLM_F_REPLACE | NLM_F_ACK
    } else {
        CREATE_EXCL
    };
    Request::new(
        RouteNetlinkMessage::NewAddress(m),
        flags,
        format!("add address {addr} to interface #{index}"),
    )
}

pub fn del_address(index: u32, addr: Ipv4Net) -> Request {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.prefix_len = addr.prefix_len();
    m.header.index = index;
    m.attributes = vec![AddressAttribute::Local(addr.addr().into())];
    Request::new(
        RouteNetlinkMessage::DelAddress(m),
        NLM_F_ACK,
        format!("remove address {addr} from interface #{index}"),
    )
}

pub fn dump_addresses() -> Request {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    Request::new(
        RouteNetlinkMessage::GetAddress(m),
        NLM_F_DUMP,
        "list IPv4 addresses",
    )
}

/// A unicast route in the main table via `gw` out of interface `oif`.
pub fn add_route(dst: Ipv4Net, gw: Ipv4Addr, oif: u32) -> Request {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.destination_prefix_length = dst.prefix_len();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    if dst.prefix_len() > 0 {
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(
                dst.network(),
            )));
    }
    m.attributes
        .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
    m.attributes.push(RouteAttribute::Oif(oif));
    Request::new(
        RouteNetlinkMessage::NewRoute(m),
        CREATE_EXCL,
        format!("add route {dst} via {gw}"),
    )
}

pub fn dump_routes() -> Request {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    Request::new(
        RouteNetlinkMessage::GetRoute(m),
        NLM_F_DUMP,
        "list IPv4 routes",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};

    fn round_trip(r: Request) -> RouteNetlinkMessage {
        let mut m = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(r.msg),
        );
        m.finalize();
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf)
            .unwrap()
            .payload
        {
            NetlinkPayload::InnerMessage(m) => m,
            other => panic!("unexpected payload {other:?}"),
        }
    }

    #[test]
    fn veth_carries_peer_netns_and_master() {
        let spec = VethSpec {
            host_name: "vethabc",
            host_mac: [2, 0, 0, 0, 0, 1],
            bridge_index: 7,
            pod_name: "eth0",
            pod_mac: [2, 0, 0, 0, 0, 2],
            pod_netns_fd: 42,
            mtu: 1450,
        };
        let r = create_veth(&spec);
        assert_eq!(r.flags, CREATE_EXCL);
        let RouteNetlinkMessage::NewLink(m) = round_trip(r) else {
            panic!("not NewLink")
        };
        assert!(m.header.flags.contains(LinkFlags::Up));
        assert!(m.attributes.contains(&LinkAttribute::Controller(7)));
        assert!(m.attributes.contains(&LinkAttribute::Mtu(1450)));
        let peer = m
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                    LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))) => Some(p.clone()),
                    _ => None,
                }),
                _ => None,
            })
            .expect("peer info");
        assert!(peer.attributes.contains(&LinkAttribute::NetNsFd(42)));
        // Both ends ask for one queue each, so the kernel has nothing to shrink.
        for attrs in [&m.attributes, &peer.attributes] {
            assert!(attrs.contains(&LinkAttribute::NumTxQueues(1)));
            assert!(attrs.contains(&LinkAttribute::NumRxQueues(1)));
        }
        assert!(peer
            .attributes
            .contains(&LinkAttribute::IfName("eth0".into())));
        assert!(!peer.header.change_mask.contains(LinkFlags::Up));
    }

    #[test]
    fn tombstone_requests_go_by_index() {
        let RouteNetlinkMessage::SetLink(m) = round_trip(set_link_down(9)) else {
            panic!("not SetLink")
        };
        assert_eq!(m.header.index, 9);
        assert!(m.header.change_mask.contains(LinkFlags::Up));
        assert!(!m.header.flags.contains(LinkFlags::Up));
        assert!(m.attributes.is_empty());

        let RouteNetlinkMessage::SetLink(m) = round_trip(rename_link(4, "fdel0123456789a")) else {
            panic!("not SetLink")
        };
        assert_eq!(m.header.index, 4);
        assert!(m.header.change_mask.is_empty());
        assert_eq!(
            m.attributes,
            vec![LinkAttribute::IfName("fdel0123456789a".into())]
        );

        let RouteNetlinkMessage::DelLink(m) = round_trip(del_link_index(4)) else {
            panic!("not DelLink")
        };
        assert_eq!(m.header.index, 4);
        assert!(m.attributes.is_empty());
    }

    #[test]
    fn default_route_has_no_destination() {
        let r = add_route(
            "0.0.0.0/0".parse().unwrap(),
            Ipv4Addr::new(10, 244, 7, 1),
            3,
        );
        let RouteNetlinkMessage::NewRoute(m) = round_trip(r) else {
            panic!("not NewRoute")
        };
        assert_eq!(m.header.destination_prefix_length, 0);
        assert!(!m
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Destination(_))));
        let r = add_route(
            "10.244.0.0/16".parse().unwrap(),
            Ipv4Addr::new(10, 244, 7, 1),
            3,
        );
        let RouteNetlinkMessage::NewRoute(m) = round_trip(r) else {
            panic!("not NewRoute")
        };
        assert_eq!(m.header.destination_prefix_length, 16);
        assert!(m.attributes.contains(&RouteAttribute::Oif(3)));
    }

    #[test]
    fn address_flags() {
        let a: Ipv4Net = "10.244.7.1/24".parse().unwrap();
        assert_eq!(add_address(3, a, false).flags, CREATE_EXCL);
        assert_ne!(add_address(3, a, true).flags & NLM_F_REPLACE, 0);
        let RouteNetlinkMessage::NewAddress(m) = round_trip(add_address(3, a, false)) else {
            panic!("not NewAddress")
        };
        assert!(m
            .attributes
            .contains(&AddressAttribute::Broadcast(Ipv4Addr::new(10, 244, 7, 255))));
    }
}
