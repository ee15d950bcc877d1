//! Which kernel routes a reconcile pass may change or remove.
//!
//! Routes we install carry our protocol number, but a node taken over from
//! Go flanneld also holds the routes Go made (`proto boot`), and a peer that
//! leaves while the node changes daemon would keep such a route forever if
//! only our protocol counted. So a route is ours when it carries our
//! protocol, when it leaves through our tunnel device, or when it is a
//! gatewayed route to a peer subnet inside the cluster network (host-gw and
//! DirectRouting routes). Routes the kernel made itself (connected routes,
//! `proto kernel`), our own pod subnet, and everything outside the cluster
//! network on other devices stay untouched.

use ipnet::Ipv4Net;

use crate::netlink::RTPROT_FLANNEL_RS;
use crate::reconcile::Route;

/// `RTPROT_KERNEL`: routes the kernel adds for addresses (never ours).
pub const RTPROT_KERNEL: u8 = 2;

/// What this node's datapath owns besides routes of our protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scope {
    /// The tunnel device (its routes are ours whoever made them).
    pub dev: Option<u32>,
    /// The cluster network (`Network` in net-conf.json).
    pub network: Option<Ipv4Net>,
    /// This node's own pod subnet (never a peer route).
    pub own: Option<Ipv4Net>,
}

impl Scope {
    /// Whether a main-table unicast route with protocol `proto` is ours.
    pub fn owns(&self, route: &Route, proto: u8) -> bool {
        if proto == RTPROT_FLANNEL_RS {
            return true;
        }
        if proto == RTPROT_KERNEL {
            return false;
        }
        if self.own.is_some_and(|own| overlaps(own, route.dst)) {
            return false;
        }
        if self.dev.is_some_and(|dev| dev == route.oif) {
            return true;
        }
        // A peer subnet: strictly inside the network (not the whole network,
        // which e.g. Go's udp backend or an operator may route), via a gateway.
        self.network.is_some_and(|net| {
            net.contains(&route.dst)
                && route.dst.prefix_len() > net.prefix_len()
                && !route.gateway.is_unspecified()
        })
    }
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b) || b.contains(&a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const BOOT: u8 = 3;
    const STATIC: u8 = 4;

    fn route(dst: &str, gw: [u8; 4], oif: u32) -> Route {
        Route {
            dst: dst.parse().unwrap(),
            gateway: Ipv4Addr::from(gw),
            oif,
            onlink: false,
            encap: None,
        }
    }

    fn scope() -> Scope {
        Scope {
            dev: Some(9),
            network: Some("10.244.0.0/16".parse().unwrap()),
            own: Some("10.244.1.0/24".parse().unwrap()),
        }
    }

    #[test]
    fn go_made_routes_on_our_device_or_to_peer_subnets_are_ours() {
        let s = scope();
        // Go's VXLAN route, proto boot, on flannel.1.
        assert!(s.owns(&route("10.244.7.0/24", [10, 244, 7, 0], 9), BOOT));
        // Go's host-gw / DirectRouting route via the peer on eth0.
        assert!(s.owns(&route("10.244.7.0/24", [198, 51, 100, 7], 3), BOOT));
        assert!(s.owns(&route("10.244.7.0/24", [198, 51, 100, 7], 3), STATIC));
        // Ours always.
        assert!(s.owns(
            &route("192.0.2.0/24", [198, 51, 100, 7], 3),
            RTPROT_FLANNEL_RS
        ));
    }

    #[test]
    fn everything_else_is_left_alone() {
        let s = scope();
        // The pod bridge's connected route and our own subnet.
        assert!(!s.owns(&route("10.244.1.0/24", [0, 0, 0, 0], 5), RTPROT_KERNEL));
        assert!(!s.owns(&route("10.244.1.0/24", [198, 51, 100, 9], 3), BOOT));
        assert!(!s.owns(&route("10.244.1.0/25", [0, 0, 0, 0], 9), BOOT));
        // A connected route on our device is the kernel's.
        assert!(!s.owns(&route("10.244.9.0/24", [0, 0, 0, 0], 9), RTPROT_KERNEL));
        // Outside the cluster network, or the network itself, on other devices.
        assert!(!s.owns(&route("0.0.0.0/0", [198, 51, 100, 254], 3), BOOT));
        assert!(!s.owns(&route("10.245.7.0/24", [198, 51, 100, 7], 3), BOOT));
        assert!(!s.owns(&route("10.244.0.0/16", [198, 51, 100, 7], 3), BOOT));
        // Inside the network but no gateway (e.g. an operator's device route).
        assert!(!s.owns(&route("10.244.7.0/24", [0, 0, 0, 0], 4), BOOT));
        // Nothing known: only our protocol counts.
        let none = Scope::default();
        assert!(!none.owns(&route("10.244.7.0/24", [10, 244, 7, 0], 9), BOOT));
    }
}
