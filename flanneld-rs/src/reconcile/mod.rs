//! The reconciler's pure core: desired state (from the leases) against the
//! actual state (from netlink dumps), giving the ordered list of kernel
//! operations that make the second match the first. No I/O here, so every
//! case (stale peers, changed MACs, moved peers) is unit-tested without root.
//!
//! Ownership is decided before this point: the actual state handed in holds
//! only entries we own (routes with our protocol number, permanent
//! neighbours and FDB entries on our own device), so "stale" here means
//! "ours and no longer wanted".

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

pub use crate::model::{Fdb, Mac, MacParseError, Neigh, Route, TunnelEncap};

/// Everything a backend programs (desired) or finds (actual).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub neighs: Vec<Neigh>,
    pub fdbs: Vec<Fdb>,
    pub routes: Vec<Route>,
}

/// One kernel operation. `*Add` and `*Replace` are both sent as
/// create-or-replace, so a race with another writer cannot fail them; the
/// distinction is kept for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    NeighAdd(Neigh),
    NeighReplace(Neigh),
    NeighDel(Neigh),
    FdbAdd(Fdb),
    FdbReplace(Fdb),
    FdbDel(Fdb),
    RouteAdd(Route),
    RouteReplace(Route),
    RouteDel(Route),
}

impl Op {
    /// The counter name used in `ReconcileReport::changes` and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::NeighAdd(_) => "neigh_add",
            Op::NeighReplace(_) => "neigh_replace",
            Op::NeighDel(_) => "neigh_del",
            Op::FdbAdd(_) => "fdb_add",
            Op::FdbReplace(_) => "fdb_replace",
            Op::FdbDel(_) => "fdb_del",
            Op::RouteAdd(_) => "route_add",
            Op::RouteReplace(_) => "route_replace",
            Op::RouteDel(_) => "route_del",
        }
    }
}

/// The operations that turn `actual` into `desired`, in a safe order:
/// 1. stale routes go first, so no packet is routed to a gateway whose
///    neighbour or FDB entry is about to vanish;
/// 2. neighbours, then FDB entries, then routes are added or replaced
///    (flannel's order: the route comes last so the kernel never has to ARP
///    for the gateway);
/// 3. stale FDB entries, then stale neighbours, are deleted last.
pub fn plan(desired: &State, actual: &State) -> Vec<Op> {
    let mut ops = Vec::new();

    let want_routes: BTreeMap<Ipv4Net, Route> =
        desired.routes.iter().map(|r| (r.dst, *r)).collect();
    let mut have_routes: BTreeMap<Ipv4Net, Vec<Route>> = BTreeMap::new();
    for r in &actual.routes {
        have_routes.entry(r.dst).or_default().push(*r);
    }
    let mut route_sets = Vec::new();
    for (dst, want) in &want_routes {
        match have_routes.get(dst) {
            None => route_sets.push(Op::RouteAdd(*want)),
            Some(have) => {
                // Several routes to one prefix (different metrics) cannot be
                // ours in a consistent state: keep one by replacing, drop the rest.
                if !have.contains(want) {
                    route_sets.push(Op::RouteReplace(*want));
                }
                if have.len() > 1 {
                    for h in have.iter().filter(|h| *h != want) {
                        ops.push(Op::RouteDel(*h));
                    }
                }
            }
        }
    }
    for (dst, have) in &have_routes {
        if !want_routes.contains_key(dst) {
            ops.extend(have.iter().map(|r| Op::RouteDel(*r)));
        }
    }

    let want_neighs: BTreeMap<Ipv4Addr, Mac> =
        desired.neighs.iter().map(|n| (n.ip, n.mac)).collect();
    let have_neighs: BTreeMap<Ipv4Addr, Mac> =
        actual.neighs.iter().map(|n| (n.ip, n.mac)).collect();
    for (ip, mac) in &want_neighs {
        let n = Neigh { ip: *ip, mac: *mac };
        match have_neighs.get(ip) {
            None => ops.push(Op::NeighAdd(n)),
            Some(have) if have != mac => ops.push(Op::NeighReplace(n)),
            Some(_) => {}
        }
    }

    // FDB entries are keyed by MAC; a MAC can have several remotes in the
    // kernel, so compare the whole set of destinations per MAC.
    let want_fdb: BTreeMap<Mac, Ipv4Addr> = desired.fdbs.iter().map(|f| (f.mac, f.dst)).collect();
    let mut have_fdb: BTreeMap<Mac, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for f in &actual.fdbs {
        have_fdb.entry(f.mac).or_default().insert(f.dst);
    }
    let mut fdb_dels = Vec::new();
    for (mac, dst) in &want_fdb {
        let f = Fdb {
            mac: *mac,
            dst: *dst,
        };
        match have_fdb.get(mac) {
            None => ops.push(Op::FdbAdd(f)),
            Some(have) if have.len() == 1 && have.contains(dst) => {}
            // One wrong remote: replace it in place (no gap in forwarding).
            Some(have) if have.len() == 1 => ops.push(Op::FdbReplace(f)),
            // Several remotes: delete the extra ones, keep or add ours.
            Some(have) => {
                for d in have.iter().filter(|d| *d != dst) {
                    ops.push(Op::FdbDel(Fdb { mac: *mac, dst: *d }));
                }
                if !have.contains(dst) {
                    ops.push(Op::FdbAdd(f));
                }
            }
        }
    }
    for (mac, have) in &have_fdb {
        if !want_fdb.contains_key(mac) {
            fdb_dels.extend(have.iter().map(|d| Op::FdbDel(Fdb { mac: *mac, dst: *d })));
        }
    }

    ops.extend(route_sets);
    ops.extend(fdb_dels);
    for (ip, mac) in &have_neighs {
        if !want_neighs.contains_key(ip) {
            ops.push(Op::NeighDel(Neigh { ip: *ip, mac: *mac }));
        }
    }
    ops
}

/// Counts of operations by kind, in first-seen order (for the report).
pub fn count_by_kind<'a>(ops: impl IntoIterator<Item = &'a Op>) -> Vec<(&'static str, u64)> {
    let mut counts: Vec<(&'static str, u64)> = Vec::new();
    for op in ops {
        let kind = op.kind();
        match counts.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => counts.push((kind, 1)),
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(last: u8) -> Mac {
        Mac([0x0a, 0, 0, 0, 0, last])
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }
    /// The three VXLAN entries of one peer.
    fn peer(n: u8, m: Mac) -> State {
        let gw = Ipv4Addr::new(10, 244, n, 0);
        State {
            neighs: vec![Neigh { ip: gw, mac: m }],
            fdbs: vec![Fdb {
                mac: m,
                dst: Ipv4Addr::new(198, 51, 100, n),
            }],
            routes: vec![Route {
                dst: Ipv4Net::new(gw, 24).unwrap(),
                gateway: gw,
                oif: 7,
                onlink: true,
                encap: None,
            }],
        }
    }
    fn merge(a: State, b: State) -> State {
        State {
            neighs: [a.neighs, b.neighs].concat(),
            fdbs: [a.fdbs, b.fdbs].concat(),
            routes: [a.routes, b.routes].concat(),
        }
    }

    #[test]
    fn empty_to_peer_adds_neigh_fdb_route_in_that_order() {
        let ops = plan(&peer(2, mac(2)), &State::default());
        let kinds: Vec<_> = ops.iter().map(Op::kind).collect();
        assert_eq!(kinds, ["neigh_add", "fdb_add", "route_add"]);
    }

    #[test]
    fn converged_state_plans_nothing() {
        let s = merge(peer(2, mac(2)), peer(3, mac(3)));
        assert!(plan(&s, &s).is_empty());
    }

    #[test]
    fn vanished_peer_is_removed_route_first_neigh_last() {
        let actual = merge(peer(2, mac(2)), peer(3, mac(3)));
        let ops = plan(&peer(2, mac(2)), &actual);
        let kinds: Vec<_> = ops.iter().map(Op::kind).collect();
        assert_eq!(kinds, ["route_del", "fdb_del", "neigh_del"]);
        assert_eq!(ops[0], Op::RouteDel(peer(3, mac(3)).routes[0]));
        assert_eq!(ops[1], Op::FdbDel(peer(3, mac(3)).fdbs[0]));
        assert_eq!(ops[2], Op::NeighDel(peer(3, mac(3)).neighs[0]));
    }

    #[test]
    fn changed_mac_replaces_neigh_and_swaps_fdb() {
        let ops = plan(&peer(2, mac(9)), &peer(2, mac(2)));
        assert_eq!(
            ops,
            vec![
                Op::NeighReplace(Neigh {
                    ip: ip("10.244.2.0"),
                    mac: mac(9)
                }),
                Op::FdbAdd(Fdb {
                    mac: mac(9),
                    dst: ip("198.51.100.2")
                }),
                Op::FdbDel(Fdb {
                    mac: mac(2),
                    dst: ip("198.51.100.2")
                }),
            ]
        );
    }

    #[test]
    fn moved_peer_replaces_fdb_remote_in_place() {
        let mut actual = peer(2, mac(2));
        actual.fdbs[0].dst = ip("198.51.100.77");
        let ops = plan(&peer(2, mac(2)), &actual);
        assert_eq!(ops, vec![Op::FdbReplace(peer(2, mac(2)).fdbs[0])]);
    }

    #[test]
    fn extra_fdb_remotes_for_a_mac_are_deleted() {
        let mut actual = peer(2, mac(2));
        actual.fdbs.push(Fdb {
            mac: mac(2),
            dst: ip("198.51.100.77"),
        });
        let ops = plan(&peer(2, mac(2)), &actual);
        assert_eq!(
            ops,
            vec![Op::FdbDel(Fdb {
                mac: mac(2),
                dst: ip("198.51.100.77")
            })]
        );
    }

    #[test]
    fn changed_route_is_replaced_and_duplicates_dropped() {
        let desired = State {
            routes: vec![Route {
                dst: net("10.244.5.0/24"),
                gateway: ip("198.51.100.5"),
                oif: 3,
                onlink: false,
                encap: None,
            }],
            ..State::default()
        };
        let old = Route {
            dst: net("10.244.5.0/24"),
            gateway: ip("10.244.5.0"),
            oif: 7,
            onlink: true,
            encap: None,
        };
        let ops = plan(
            &desired,
            &State {
                routes: vec![old],
                ..State::default()
            },
        );
        assert_eq!(ops, vec![Op::RouteReplace(desired.routes[0])]);

        let twice = State {
            routes: vec![old, desired.routes[0]],
            ..State::default()
        };
        assert_eq!(plan(&desired, &twice), vec![Op::RouteDel(old)]);
    }

    #[test]
    fn changed_encap_dst_replaces_the_route() {
        let with = |dst: &str| Route {
            dst: net("10.244.6.0/24"),
            gateway: ip("10.244.6.0"),
            oif: 7,
            onlink: true,
            encap: Some(TunnelEncap {
                id: 1,
                dst: std::net::IpAddr::V4(ip(dst)),
            }),
        };
        let one = |r: Route| State {
            routes: vec![r],
            ..State::default()
        };
        let want = with("198.51.100.6");
        assert!(plan(&one(want), &one(want)).is_empty());
        assert_eq!(
            plan(&one(want), &one(with("198.51.100.66"))),
            vec![Op::RouteReplace(want)]
        );
        // A plain route where an encapsulated one is wanted (or the
        // reverse) is replaced too.
        let plain = Route {
            encap: None,
            ..want
        };
        assert_eq!(plan(&one(want), &one(plain)), vec![Op::RouteReplace(want)]);
        assert_eq!(plan(&one(plain), &one(want)), vec![Op::RouteReplace(plain)]);
    }

    #[test]
    fn counts_group_by_kind() {
        let ops = plan(&merge(peer(2, mac(2)), peer(3, mac(3))), &State::default());
        assert_eq!(
            count_by_kind(&ops),
            vec![("neigh_add", 2), ("fdb_add", 2), ("route_add", 2)]
        );
    }

    #[test]
    fn mac_parses_and_prints() {
        let m: Mac = "0a:1B:2c:3d:4e:5f".parse().unwrap();
        assert_eq!(m.to_string(), "0a:1b:2c:3d:4e:5f");
        for bad in [
            "",
            "0a:1b:2c:3d:4e",
            "0a:1b:2c:3d:4e:5f:00",
            "0a:1b:2c:3d:4e:zz",
            "0a:1b:2c:3d:4e:5ff",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }
}
