//! Sends the reconciler's operations to the kernel.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAttribute, RouteIp6Tunnel, RouteIp6TunnelFlags, RouteIpTunnel, RouteLwEnCapType,
    RouteLwTunnelEncap, RouteMessage, RouteProtocol,
};
use netlink_packet_route::AddressFamily;
use nix::errno::Errno;
use rtnetlink::RouteMessageBuilder;

use super::{Netlink, NetlinkError};
use crate::reconcile::{Fdb, Neigh, Op, Route, TunnelEncap};

impl Netlink {
    /// Applies one operation. Neighbour and FDB entries live on link
    /// `dev` (the overlay device); routes carry protocol `proto`.
    /// Deleting something already gone is not an error (another actor, or
    /// the kernel when a device went away, got there first).
    pub async fn apply(&self, op: &Op, dev: u32, proto: u8) -> Result<(), NetlinkError> {
        let h = self.handle();
        let result = match op {
            Op::NeighAdd(n) | Op::NeighReplace(n) => h
                .neighbours()
                .add(dev, IpAddr::V4(n.ip))
                .link_layer_address(&n.mac.0)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(|e| {
                    NetlinkError::request(format!("setting neighbour {} lladdr {}", n.ip, n.mac), e)
                }),
            Op::FdbAdd(f) | Op::FdbReplace(f) => h
                .neighbours()
                .add_bridge(dev, &f.mac.0)
                .destination(IpAddr::V4(f.dst))
                .flags(NeighbourFlags::Own)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(|e| {
                    NetlinkError::request(format!("setting FDB entry {} dst {}", f.mac, f.dst), e)
                }),
            Op::RouteAdd(r) | Op::RouteReplace(r) => h
                .route()
                .add(route_message(r, proto))
                .replace()
                .execute()
                .await
                .map_err(|e| {
                    NetlinkError::request(format!("setting route {} via {}", r.dst, r.gateway), e)
                }),
            Op::NeighDel(n) => ignore_gone(
                h.neighbours()
                    .del(neigh_message(n, dev))
                    .execute()
                    .await
                    .map_err(|e| NetlinkError::request(format!("deleting neighbour {}", n.ip), e)),
            ),
            Op::FdbDel(f) => ignore_gone(
                h.neighbours()
                    .del(fdb_message(f, dev))
                    .execute()
                    .await
                    .map_err(|e| {
                        NetlinkError::request(
                            format!("deleting FDB entry {} dst {}", f.mac, f.dst),
                            e,
                        )
                    }),
            ),
            Op::RouteDel(r) => ignore_gone(
                h.route()
                    .del(route_message(r, proto))
                    .execute()
                    .await
                    .map_err(|e| NetlinkError::request(format!("deleting route {}", r.dst), e)),
            ),
        };
        result
    }
}

fn ignore_gone(r: Result<(), NetlinkError>) -> Result<(), NetlinkError> {
    match r {
        Err(e) if matches!(e.errno(), Some(n) if n == Errno::ENOENT as i32 || n == Errno::ESRCH as i32 || n == Errno::ENODEV as i32) => {
            Ok(())
        }
        other => other,
    }
}

/// The route as installed: main table, our protocol, onlink when asked,
/// and `encap ip id <VNI> dst <peer>` for a metadata-mode device.
pub fn route_message(r: &Route, proto: u8) -> RouteMessage {
    let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(r.dst.network(), r.dst.prefix_len())
        .gateway(r.gateway)
        .output_interface(r.oif)
        .protocol(RouteProtocol::from(proto));
    if r.onlink {
        b = b.onlink();
    }
    let mut msg = b.build();
    match r.encap {
        Some(TunnelEncap {
            id,
            dst: IpAddr::V4(dst),
        }) => {
            msg.attributes
                .push(RouteAttribute::EncapType(RouteLwEnCapType::Ip));
            msg.attributes.push(RouteAttribute::Encap(vec![
                RouteLwTunnelEncap::Ip(RouteIpTunnel::Id(id)),
                RouteLwTunnelEncap::Ip(RouteIpTunnel::Destination(dst)),
            ]));
        }
        Some(TunnelEncap {
            id,
            dst: IpAddr::V6(dst),
        }) => {
            msg.attributes
                .push(RouteAttribute::EncapType(RouteLwEnCapType::Ip6));
            // IPv6 forbids a zero UDP checksum (receivers drop it unless
            // told otherwise), and an lwtunnel encap sends one unless its
            // flags ask for the checksum.
            msg.attributes.push(RouteAttribute::Encap(vec![
                RouteLwTunnelEncap::Ip6(RouteIp6Tunnel::Id(id)),
                RouteLwTunnelEncap::Ip6(RouteIp6Tunnel::Destination(dst)),
                RouteLwTunnelEncap::Ip6(RouteIp6Tunnel::Flags(RouteIp6TunnelFlags::Checksum)),
            ]));
        }
        None => {}
    }
    msg
}

fn neigh_message(n: &Neigh, dev: u32) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.ifindex = dev;
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            n.ip,
        )));
    m
}

fn fdb_message(f: &Fdb, dev: u32) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = dev;
    m.header.flags = NeighbourFlags::Own;
    m.header.state = NeighbourState::Permanent;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(f.mac.0.to_vec()));
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            f.dst,
        )));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::TunnelEncap;
    use rtnetlink::packet_core::{Emitable, Parseable};

    fn encap_route() -> Route {
        Route {
            dst: "10.244.7.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 244, 7, 0),
            oif: 11,
            onlink: true,
            encap: Some(TunnelEncap {
                id: 0x0001_0203,
                dst: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
            }),
        }
    }

    /// The attribute value with netlink type `kind` (flags masked off).
    fn attr(bytes: &[u8], kind: u16) -> Option<&[u8]> {
        let mut at = 0;
        while at + 4 <= bytes.len() {
            let len = usize::from(u16::from_ne_bytes([bytes[at], bytes[at + 1]]));
            let t = u16::from_ne_bytes([bytes[at + 2], bytes[at + 3]]) & 0x3fff;
            if len < 4 || at + len > bytes.len() {
                return None;
            }
            if t == kind {
                return Some(&bytes[at + 4..at + len]);
            }
            at += (len + 3) & !3;
        }
        None
    }

    #[test]
    fn encap_route_carries_lwtunnel_ip_attributes() {
        let msg = route_message(&encap_route(), 70);
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        // rtmsg header is 12 bytes; attributes follow.
        let attrs = &buf[12..];
        // RTA_ENCAP_TYPE (21) = LWTUNNEL_ENCAP_IP (2), host order u16.
        assert_eq!(attr(attrs, 21), Some(&2u16.to_ne_bytes()[..]));
        // RTA_ENCAP (22): LWTUNNEL_IP_ID (1) as big-endian u64, LWTUNNEL_IP_DST (2).
        let nested = attr(attrs, 22).expect("RTA_ENCAP present");
        assert_eq!(attr(nested, 1), Some(&0x0001_0203_u64.to_be_bytes()[..]));
        assert_eq!(attr(nested, 2), Some(&[198, 51, 100, 7][..]));
        // And it parses back into the same encap.
        let parsed = RouteMessage::parse(buf.as_slice()).unwrap();
        let back = parsed.attributes.iter().find_map(|a| match a {
            RouteAttribute::Encap(e) => super::super::dump::ip_encap(e),
            _ => None,
        });
        assert_eq!(back, encap_route().encap);
    }

    #[test]
    fn ipv6_underlay_route_carries_lwtunnel_ip6_attributes() {
        let dst: std::net::Ipv6Addr = "2001:db8:100::7".parse().unwrap();
        let r = Route {
            encap: Some(TunnelEncap {
                id: 42,
                dst: IpAddr::V6(dst),
            }),
            ..encap_route()
        };
        let msg = route_message(&r, 70);
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        let attrs = &buf[12..];
        // LWTUNNEL_ENCAP_IP6 (4); LWTUNNEL_IP6_ID (1), LWTUNNEL_IP6_DST (2).
        assert_eq!(attr(attrs, 21), Some(&4u16.to_ne_bytes()[..]));
        let nested = attr(attrs, 22).expect("RTA_ENCAP present");
        assert_eq!(attr(nested, 1), Some(&42u64.to_be_bytes()[..]));
        assert_eq!(attr(nested, 2), Some(&dst.octets()[..]));
        // LWTUNNEL_IP6_FLAGS (6): TUNNEL_CSUM, big-endian.
        assert_eq!(attr(nested, 6), Some(&1u16.to_be_bytes()[..]));
        let parsed = RouteMessage::parse(buf.as_slice()).unwrap();
        let back = parsed.attributes.iter().find_map(|a| match a {
            RouteAttribute::Encap(e) => super::super::dump::ip_encap(e),
            _ => None,
        });
        assert_eq!(back, r.encap);
        // The same without the checksum flag is not a route we write:
        // reconcile replaces it.
        let no_csum = [
            RouteLwTunnelEncap::Ip6(RouteIp6Tunnel::Id(42)),
            RouteLwTunnelEncap::Ip6(RouteIp6Tunnel::Destination(dst)),
        ];
        assert_eq!(super::super::dump::ip_encap(&no_csum), None);
    }

    #[test]
    fn plain_route_has_no_encap() {
        let r = Route {
            encap: None,
            ..encap_route()
        };
        let msg = route_message(&r, 70);
        assert!(!msg
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Encap(_) | RouteAttribute::EncapType(_))));
    }
}
