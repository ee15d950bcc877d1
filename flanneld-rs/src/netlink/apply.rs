//! Sends the reconciler's operations to the kernel.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteMessage, RouteProtocol};
use netlink_packet_route::AddressFamily;
use nix::errno::Errno;
use rtnetlink::RouteMessageBuilder;

use super::{Netlink, NetlinkError};
use crate::reconcile::{Fdb, Neigh, Op, Route};

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

/// The route as installed: main table, our protocol, onlink when asked.
pub fn route_message(r: &Route, proto: u8) -> RouteMessage {
    let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(r.dst.network(), r.dst.prefix_len())
        .gateway(r.gateway)
        .output_interface(r.oif)
        .protocol(RouteProtocol::from(proto));
    if r.onlink {
        b = b.onlink();
    }
    b.build()
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
