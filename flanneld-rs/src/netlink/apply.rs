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
use crate::model::{Fdb, Neigh, Route, TunnelEncap};
use crate::reconcile::Op;

impl Netlink {
    /// Applies one operation. Neighbour and FDB entries live on link
    /// `dev` (the overlay device); routes carry protocol `proto`.
    /// Deleting something already gone is not an error (another actor, or
    /// the kernel when a device went away, got there first).
    pub async fn apply(&self, op: &Op, dev: u32, proto: u8) -> Result<(), NetlinkError> {
        let h = self.handle();
        // The messages come from the pure builders below (round-tripped
        // against `dump`'s decoders in unit tests); the rtnetlink requests
        // only add the create-or-replace flags.
        match op {
            Op::NeighAdd(n) | Op::NeighReplace(n) => {
                let mut req = h.neighbours().add(dev, IpAddr::V4(n.ip)).replace();
                *req.message_mut() = neigh_add_message(n, dev);
                req.execute().await.map_err(|e| {
                    NetlinkError::request(format!("setting neighbour {} lladdr {}", n.ip, n.mac), e)
                })
            }
            Op::FdbAdd(f) | Op::FdbReplace(f) => {
                let mut req = h.neighbours().add_bridge(dev, &f.mac.0).replace();
                *req.message_mut() = fdb_message(f, dev);
                req.execute().await.map_err(|e| {
                    NetlinkError::request(format!("setting FDB entry {} dst {}", f.mac, f.dst), e)
                })
            }
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
        }
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

/// A permanent neighbour `n.ip lladdr n.mac` on link `dev` (what
/// `ip neigh replace ... nud permanent` sends).
pub fn neigh_add_message(n: &Neigh, dev: u32) -> NeighbourMessage {
    let mut m = neigh_message(n, dev);
    m.header.state = NeighbourState::Permanent;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(n.mac.0.to_vec()));
    m
}

/// The key of neighbour `n.ip` on link `dev` (enough to delete it).
pub fn neigh_message(n: &Neigh, dev: u32) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.ifindex = dev;
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            n.ip,
        )));
    m
}

/// A permanent FDB entry `f.mac dst f.dst` on link `dev` (`NTF_SELF`:
/// the VXLAN device's own table), used to add and to delete it.
pub fn fdb_message(f: &Fdb, dev: u32) -> NeighbourMessage {
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
    use netlink_packet_route::neighbour::NeighbourMessage;
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

    /// Bytes out and back in, as the kernel would see and echo them.
    fn wire<M: Emitable>(m: &M) -> Vec<u8> {
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        buf
    }

    #[test]
    fn every_message_built_here_decodes_back_to_its_entry() {
        use super::super::dump::{decode_fdb, decode_neigh, decode_route};
        use crate::model::Mac;
        let mac = Mac([0x0a, 0, 0, 0, 0, 7]);
        let n = Neigh {
            ip: Ipv4Addr::new(10, 244, 7, 0),
            mac,
        };
        let f = Fdb {
            mac,
            dst: Ipv4Addr::new(198, 51, 100, 7),
        };
        let back = NeighbourMessage::parse(wire(&neigh_add_message(&n, 11)).as_slice()).unwrap();
        assert_eq!(decode_neigh(&back, 11), Some(n));
        // Another link's or a learned entry is not ours.
        assert_eq!(decode_neigh(&back, 12), None);
        let mut learned = back.clone();
        learned.header.state = NeighbourState::Reachable;
        assert_eq!(decode_neigh(&learned, 11), None);
        let back = NeighbourMessage::parse(wire(&fdb_message(&f, 11)).as_slice()).unwrap();
        assert_eq!(decode_fdb(&back, 11), Some(f));
        assert_eq!(back.header.family, AddressFamily::Bridge);
        assert!(back.header.flags.contains(NeighbourFlags::Own));
        // The delete key carries no MAC: the kernel matches by address.
        let key = neigh_message(&n, 11);
        assert!(!key
            .attributes
            .iter()
            .any(|a| matches!(a, NeighbourAttribute::LinkLayerAddress(_))));
        for r in [
            encap_route(),
            Route {
                encap: None,
                onlink: false,
                ..encap_route()
            },
        ] {
            let back = RouteMessage::parse(wire(&route_message(&r, 70)).as_slice()).unwrap();
            assert_eq!(decode_route(&back), Some((r, 70)));
        }
    }

    #[test]
    fn routes_of_other_tables_and_types_are_never_decoded_as_ours() {
        use super::super::dump::decode_route;
        use netlink_packet_route::route::{RouteHeader, RouteType};
        let mut m = route_message(&encap_route(), 70);
        m.header.table = 200;
        assert_eq!(decode_route(&m), None);
        let mut m = route_message(&encap_route(), 70);
        m.header.kind = RouteType::BlackHole;
        assert_eq!(decode_route(&m), None);
        let mut m = route_message(&encap_route(), 70);
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.address_family = AddressFamily::Inet6;
        assert_eq!(decode_route(&m), None);
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
