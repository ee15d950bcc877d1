//! Choosing the underlay interface and address from a list of interfaces
//! (pure: the list comes from `node::netlink`), with flannel's rules:
//! `--iface` by name or address, first match wins; `--iface-regex` against
//! addresses first, then names; `--iface-can-reach` and the default case use
//! the interface of a route the kernel picked. With an IPv6 underlay
//! (`Backend.Underlay: "ipv6"`) the interface must have a global IPv6
//! address and IPv4 becomes optional.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use crate::model::{Iface, RouteHint};
use crate::model::{IfaceSpec, LocalNode, Underlay};

/// `--public-ip` and `--public-ipv6`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublicAddrs {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeError {
    #[error("--iface {0:?}: no interface has that name or address (list them with `ip -br addr`)")]
    NoSuchIface(String),
    #[error("interface {0} has no IPv4 address: add one, or choose another with --iface")]
    NoAddress(String),
    #[error("interface {0} has no global IPv6 address, which Backend.Underlay \"ipv6\" needs: add one, or choose another with --iface")]
    NoAddress6(String),
    #[error("--iface-regex {0:?}: no interface address or name matches")]
    NoRegexMatch(Vec<String>),
    #[error("no default route in this network namespace: choose the interface with --iface or --iface-can-reach")]
    NoDefaultRoute,
    #[error("--iface-can-reach {0}: no route to it; check the address or use --iface")]
    NoRoute(IpAddr),
    #[error("--iface-can-reach {0}: an IPv6 address needs Backend.Underlay \"ipv6\"; give an IPv4 address")]
    Ipv6Underlay(IpAddr),
    #[error("--public-ipv6 is only used with Backend.Underlay \"ipv6\" (pods are IPv4 and the tunnels go over IPv4): drop it, or set the Underlay")]
    PublicIpv6WithoutUnderlay,
    #[error("the route chosen for the underlay leaves through interface index {0}, which has disappeared; retry")]
    RouteIfaceGone(u32),
}

/// Picks the interface and addresses. `route` is the kernel's route to the
/// `--iface-can-reach` address, or the default route (of the underlay's
/// family), when the spec needs one (`None` = no such route).
pub fn select_iface(
    spec: &IfaceSpec,
    ifaces: &[Iface],
    route: Option<RouteHint>,
    public: PublicAddrs,
    underlay: Underlay,
) -> Result<LocalNode, NodeError> {
    if underlay == Underlay::Ipv4 && public.v6.is_some() {
        return Err(NodeError::PublicIpv6WithoutUnderlay);
    }
    let (iface, pinned) = match spec {
        IfaceSpec::Names(names) => by_names(names, ifaces, underlay)?,
        IfaceSpec::Regexes(regexes) => by_regexes(regexes, ifaces, underlay)?,
        IfaceSpec::CanReach(ip) => {
            if ip.is_ipv6() && underlay == Underlay::Ipv4 {
                return Err(NodeError::Ipv6Underlay(*ip));
            }
            by_route(route.ok_or(NodeError::NoRoute(*ip))?, ifaces)?
        }
        IfaceSpec::DefaultRoute => by_route(route.ok_or(NodeError::NoDefaultRoute)?, ifaces)?,
    };
    let (v4, v6) = addresses(iface, pinned, underlay)?;
    let iface_addr = v4.unwrap_or(Ipv4Addr::UNSPECIFIED);
    Ok(LocalNode {
        iface_name: iface.name.clone(),
        iface_index: iface.index,
        iface_mtu: iface.mtu,
        iface_addr,
        public_ip: public.v4.unwrap_or(iface_addr),
        iface_addr6: v6,
        public_ipv6: v6.map(|a| public.v6.unwrap_or(a)),
    })
}

/// Before the config is known (it decides the address family): fails
/// when `--iface` names nothing that exists or no `--iface-regex` matches
/// anything, so a typo is reported at once rather than after waiting for
/// the store. Route-based choices are left to `select_iface`.
pub fn preflight(spec: &IfaceSpec, ifaces: &[Iface]) -> Result<(), NodeError> {
    match spec {
        IfaceSpec::Names(names) => {
            let exists = |name: &String| match name.parse::<IpAddr>() {
                Ok(ip) => ifaces.iter().any(|i| holds(i, ip)),
                Err(_) => ifaces.iter().any(|i| &i.name == name),
            };
            if names.iter().any(exists) {
                Ok(())
            } else {
                Err(NodeError::NoSuchIface(
                    names.first().cloned().unwrap_or_default(),
                ))
            }
        }
        IfaceSpec::Regexes(regexes) => {
            let hit = ifaces.iter().any(|i| {
                regexes.iter().any(|re| {
                    re.is_match(&i.name)
                        || i.addrs.iter().any(|a| re.is_match(&a.addr().to_string()))
                        || i.addrs6.iter().any(|a| re.is_match(&a.addr().to_string()))
                })
            });
            if hit {
                Ok(())
            } else {
                Err(NodeError::NoRegexMatch(
                    regexes.iter().map(|r| r.as_str().to_string()).collect(),
                ))
            }
        }
        IfaceSpec::CanReach(_) | IfaceSpec::DefaultRoute => Ok(()),
    }
}

/// The interface's addresses: a `pinned` one (named by --iface, matched by
/// a regex, a route's source) where it is of that family, else the
/// preferred one. The underlay's family is required, the other optional
/// (and IPv6 is not looked at for an IPv4 underlay).
fn addresses(
    iface: &Iface,
    pinned: Option<IpAddr>,
    underlay: Underlay,
) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), NodeError> {
    let v4 = match pinned {
        Some(IpAddr::V4(a)) if iface.addrs.iter().any(|n| n.addr() == a) => Some(a),
        _ => preferred_addr(iface),
    };
    match underlay {
        Underlay::Ipv4 => Ok((
            Some(v4.ok_or_else(|| NodeError::NoAddress(iface.name.clone()))?),
            None,
        )),
        Underlay::Ipv6 => {
            let v6 = match pinned {
                Some(IpAddr::V6(a)) if iface.addrs6.iter().any(|n| n.addr() == a) => Some(a),
                _ => preferred_addr6(iface),
            };
            Ok((
                v4,
                Some(v6.ok_or_else(|| NodeError::NoAddress6(iface.name.clone()))?),
            ))
        }
    }
}

/// The interface can carry this underlay (with `pinned`: an address named
/// by the operator serves if it is of the underlay's family, else the
/// interface needs one that is).
fn usable(iface: &Iface, pinned: Option<IpAddr>, underlay: Underlay) -> Result<(), NodeError> {
    addresses(iface, pinned, underlay).map(|_| ())
}

fn by_names<'a>(
    names: &[String],
    ifaces: &'a [Iface],
    underlay: Underlay,
) -> Result<(&'a Iface, Option<IpAddr>), NodeError> {
    let mut first_err = None;
    for name in names {
        let found = match name.parse::<IpAddr>() {
            Ok(ip) => ifaces
                .iter()
                .find(|i| holds(i, ip))
                .map(|i| usable(i, Some(ip), underlay).map(|()| (i, Some(ip)))),
            Err(_) => ifaces
                .iter()
                .find(|i| &i.name == name)
                .map(|i| usable(i, None, underlay).map(|()| (i, None))),
        };
        match found {
            Some(Ok(hit)) => return Ok(hit),
            // Flannel tries the next --iface when one does not work.
            Some(Err(e)) => {
                first_err.get_or_insert(e);
            }
            None => {
                first_err.get_or_insert(NodeError::NoSuchIface(name.clone()));
            }
        }
    }
    Err(first_err.unwrap_or_else(|| NodeError::NoSuchIface(String::new())))
}

fn holds(iface: &Iface, ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => iface.addrs.iter().any(|n| n.addr() == a),
        IpAddr::V6(a) => iface.addrs6.iter().any(|n| n.addr() == a),
    }
}

fn by_regexes<'a>(
    regexes: &[regex::Regex],
    ifaces: &'a [Iface],
    underlay: Underlay,
) -> Result<(&'a Iface, Option<IpAddr>), NodeError> {
    let mut sorted: Vec<&Iface> = ifaces.iter().collect();
    sorted.sort_by_key(|i| i.index);
    for re in regexes {
        // Addresses first, then names: flannel's order.
        for iface in &sorted {
            let v4 = iface.addrs.iter().map(|a| IpAddr::V4(a.addr()));
            let v6 = iface.addrs6.iter().map(|a| IpAddr::V6(a.addr()));
            let hit = match underlay {
                Underlay::Ipv4 => v4.clone().find(|a| re.is_match(&a.to_string())),
                Underlay::Ipv6 => v4.chain(v6).find(|a| re.is_match(&a.to_string())),
            };
            if let Some(a) = hit {
                if usable(iface, Some(a), underlay).is_ok() {
                    return Ok((iface, Some(a)));
                }
            }
        }
        for iface in &sorted {
            if re.is_match(&iface.name) && usable(iface, None, underlay).is_ok() {
                return Ok((iface, None));
            }
        }
    }
    Err(NodeError::NoRegexMatch(
        regexes.iter().map(|r| r.as_str().to_string()).collect(),
    ))
}

fn by_route(route: RouteHint, ifaces: &[Iface]) -> Result<(&Iface, Option<IpAddr>), NodeError> {
    let iface = ifaces
        .iter()
        .find(|i| i.index == route.oif)
        .ok_or(NodeError::RouteIfaceGone(route.oif))?;
    Ok((iface, route.prefsrc))
}

/// The interface's first address that is neither loopback nor link-local,
/// else its first address.
fn preferred_addr(iface: &Iface) -> Option<Ipv4Addr> {
    iface
        .addrs
        .iter()
        .map(|a| a.addr())
        .find(|a| !a.is_loopback() && !a.is_link_local())
        .or_else(|| iface.addrs.first().map(|a| a.addr()))
}

/// The interface's first global IPv6 address: not loopback, not link-local
/// (fe80::/10: it names no node outside the link, and needs a scope). ULAs
/// (fd00::/8) count: a private underlay may well use them.
fn preferred_addr6(iface: &Iface) -> Option<Ipv6Addr> {
    iface
        .addrs6
        .iter()
        .map(|a| a.addr())
        .find(|a| !a.is_loopback() && !a.is_unicast_link_local() && !a.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, index: u32, mtu: u32, addrs: &[&str]) -> Iface {
        Iface {
            name: name.into(),
            index,
            mtu,
            loopback: name == "lo",
            addrs: addrs
                .iter()
                .filter(|a| !a.contains(':'))
                .map(|a| a.parse().unwrap())
                .collect(),
            addrs6: addrs
                .iter()
                .filter(|a| a.contains(':'))
                .map(|a| a.parse().unwrap())
                .collect(),
        }
    }

    /// `select_iface` for an IPv4 underlay with an optional --public-ip.
    fn sel(
        spec: &IfaceSpec,
        ifaces: &[Iface],
        route: Option<RouteHint>,
        v4: Option<Ipv4Addr>,
    ) -> Result<LocalNode, NodeError> {
        select_iface(
            spec,
            ifaces,
            route,
            PublicAddrs { v4, v6: None },
            Underlay::Ipv4,
        )
    }

    fn host() -> Vec<Iface> {
        vec![
            iface("lo", 1, 65536, &["127.0.0.1/8"]),
            iface("eth0", 2, 9001, &["169.254.3.3/16", "198.51.100.7/24"]),
            iface("eth1", 3, 1500, &["192.0.2.9/24"]),
            iface("bare", 4, 1500, &[]),
        ]
    }

    fn names(n: &[&str]) -> IfaceSpec {
        IfaceSpec::Names(n.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn iface_by_name_takes_its_routable_address_and_mtu() {
        let n = sel(&names(&["eth0"]), &host(), None, None).unwrap();
        assert_eq!(n.iface_name, "eth0");
        assert_eq!(n.iface_index, 2);
        assert_eq!(n.iface_mtu, 9001);
        assert_eq!(n.iface_addr, "198.51.100.7".parse::<Ipv4Addr>().unwrap());
        assert_eq!(n.public_ip, n.iface_addr);
    }

    #[test]
    fn iface_by_address_and_public_ip_override() {
        let public: Ipv4Addr = "203.0.113.5".parse().unwrap();
        let n = sel(&names(&["192.0.2.9"]), &host(), None, Some(public)).unwrap();
        assert_eq!(n.iface_name, "eth1");
        assert_eq!(n.iface_addr, "192.0.2.9".parse::<Ipv4Addr>().unwrap());
        assert_eq!(n.public_ip, public);
    }

    #[test]
    fn first_working_iface_wins_and_errors_name_the_first_failure() {
        let n = sel(&names(&["nope", "bare", "eth1"]), &host(), None, None).unwrap();
        assert_eq!(n.iface_name, "eth1");
        let e = sel(&names(&["nope", "bare"]), &host(), None, None).unwrap_err();
        assert_eq!(e, NodeError::NoSuchIface("nope".into()));
        let e = sel(&names(&["bare"]), &host(), None, None).unwrap_err();
        assert_eq!(e, NodeError::NoAddress("bare".into()));
    }

    #[test]
    fn regex_matches_addresses_before_names() {
        let re = |s: &str| IfaceSpec::Regexes(vec![regex::Regex::new(s).unwrap()]);
        // "eth1" as a name matches, but 192.0.2.x matches an address first.
        let n = sel(&re("^192\\.0\\.2\\."), &host(), None, None).unwrap();
        assert_eq!(n.iface_name, "eth1");
        let n = sel(&re("^eth"), &host(), None, None).unwrap();
        assert_eq!(n.iface_name, "eth0", "lowest index first");
        let e = sel(&re("^wlan"), &host(), None, None).unwrap_err();
        assert_eq!(e, NodeError::NoRegexMatch(vec!["^wlan".into()]));
    }

    #[test]
    fn route_based_selection_uses_oif_and_prefsrc() {
        let hint = RouteHint {
            oif: 3,
            prefsrc: None,
        };
        let n = sel(&IfaceSpec::DefaultRoute, &host(), Some(hint), None).unwrap();
        assert_eq!(n.iface_name, "eth1");
        let hint = RouteHint {
            oif: 2,
            prefsrc: Some("169.254.3.3".parse().unwrap()),
        };
        let target: IpAddr = "198.51.100.1".parse().unwrap();
        let n = sel(&IfaceSpec::CanReach(target), &host(), Some(hint), None).unwrap();
        assert_eq!(
            n.iface_addr,
            "169.254.3.3".parse::<Ipv4Addr>().unwrap(),
            "prefsrc wins"
        );
    }

    #[test]
    fn missing_routes_say_what_to_do() {
        let e = sel(&IfaceSpec::DefaultRoute, &host(), None, None).unwrap_err();
        assert_eq!(e, NodeError::NoDefaultRoute);
        assert!(e.to_string().contains("--iface"));
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let e = sel(&IfaceSpec::CanReach(ip), &host(), None, None).unwrap_err();
        assert_eq!(e, NodeError::NoRoute(ip));
        let gone = RouteHint {
            oif: 99,
            prefsrc: None,
        };
        let e = sel(&IfaceSpec::DefaultRoute, &host(), Some(gone), None).unwrap_err();
        assert_eq!(e, NodeError::RouteIfaceGone(99));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let e = sel(&IfaceSpec::CanReach(v6), &host(), None, None).unwrap_err();
        assert_eq!(e, NodeError::Ipv6Underlay(v6));
    }

    fn host6() -> Vec<Iface> {
        vec![
            iface("lo", 1, 65536, &["127.0.0.1/8", "::1/128"]),
            iface(
                "eth0",
                2,
                9001,
                &["198.51.100.7/24", "fe80::7/64", "2001:db8:100::7/64"],
            ),
            iface("eth1", 3, 1500, &["192.0.2.9/24", "fe80::9/64"]),
            iface("v6only", 4, 1500, &["fe80::4/64", "fd00:4::4/64"]),
        ]
    }

    fn sel6(
        spec: &IfaceSpec,
        route: Option<RouteHint>,
        public: PublicAddrs,
    ) -> Result<LocalNode, NodeError> {
        select_iface(spec, &host6(), route, public, Underlay::Ipv6)
    }

    #[test]
    fn ipv6_underlay_takes_a_global_ipv6_and_keeps_ipv4_optional() {
        let none = PublicAddrs::default();
        let n = sel6(&names(&["eth0"]), None, none).unwrap();
        let v6: Ipv6Addr = "2001:db8:100::7".parse().unwrap();
        assert_eq!((n.iface_addr6, n.public_ipv6), (Some(v6), Some(v6)));
        assert_eq!(n.iface_addr, "198.51.100.7".parse::<Ipv4Addr>().unwrap());
        // No IPv4 at all: 0.0.0.0, as flannel publishes an absent PublicIP.
        let n = sel6(&names(&["v6only"]), None, none).unwrap();
        assert_eq!(n.iface_addr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(n.public_ip, Ipv4Addr::UNSPECIFIED);
        assert_eq!(n.iface_addr6, Some("fd00:4::4".parse().unwrap()));
        // Link-local only: not usable; the next --iface is tried.
        let e = sel6(&names(&["eth1"]), None, none).unwrap_err();
        assert_eq!(e, NodeError::NoAddress6("eth1".into()));
        assert!(e.to_string().contains("Underlay"), "{e}");
        let n = sel6(&names(&["eth1", "eth0"]), None, none).unwrap();
        assert_eq!(n.iface_name, "eth0");
        // By IPv6 or IPv4 address; --public-ipv6 overrides what peers use.
        let public = PublicAddrs {
            v4: None,
            v6: Some("2001:db8:ffff::1".parse().unwrap()),
        };
        let n = sel6(&names(&["2001:db8:100::7"]), None, public).unwrap();
        assert_eq!(n.iface_name, "eth0");
        assert_eq!(n.iface_addr6, Some(v6));
        assert_eq!(n.public_ipv6, public.v6);
        let n = sel6(&names(&["198.51.100.7"]), None, none).unwrap();
        assert_eq!(n.iface_addr6, Some(v6));
        // Routes: an IPv6 --iface-can-reach and its source address.
        let target: IpAddr = "2001:db8:100::1".parse().unwrap();
        let hint = RouteHint {
            oif: 4,
            prefsrc: Some("fd00:4::4".parse().unwrap()),
        };
        let n = sel6(&IfaceSpec::CanReach(target), Some(hint), none).unwrap();
        assert_eq!(n.iface_name, "v6only");
        // Regexes may match IPv6 addresses.
        let re = IfaceSpec::Regexes(vec![regex::Regex::new("^fd00:").unwrap()]);
        assert_eq!(sel6(&re, None, none).unwrap().iface_name, "v6only");
    }

    #[test]
    fn ipv4_underlay_ignores_ipv6_and_refuses_its_flags() {
        let n = select_iface(
            &names(&["eth0"]),
            &host6(),
            None,
            PublicAddrs::default(),
            Underlay::Ipv4,
        )
        .unwrap();
        assert_eq!((n.iface_addr6, n.public_ipv6), (None, None));
        let e = select_iface(
            &names(&["eth0"]),
            &host6(),
            None,
            PublicAddrs {
                v4: None,
                v6: Some("2001:db8::1".parse().unwrap()),
            },
            Underlay::Ipv4,
        )
        .unwrap_err();
        assert_eq!(e, NodeError::PublicIpv6WithoutUnderlay);
        let e = select_iface(
            &names(&["v6only"]),
            &host6(),
            None,
            PublicAddrs::default(),
            Underlay::Ipv4,
        )
        .unwrap_err();
        assert_eq!(e, NodeError::NoAddress("v6only".into()));
    }

    #[test]
    fn preflight_catches_typos_before_the_family_is_known() {
        assert_eq!(preflight(&names(&["eth0"]), &host6()), Ok(()));
        assert_eq!(
            preflight(&names(&["nope", "2001:db8:100::7"]), &host6()),
            Ok(())
        );
        assert_eq!(
            preflight(&names(&["nope", "wlan0"]), &host6()),
            Err(NodeError::NoSuchIface("nope".into()))
        );
        let re = |s: &str| IfaceSpec::Regexes(vec![regex::Regex::new(s).unwrap()]);
        assert_eq!(preflight(&re("^fd00:"), &host6()), Ok(()));
        assert!(preflight(&re("^wlan"), &host6()).is_err());
        assert_eq!(preflight(&IfaceSpec::DefaultRoute, &[]), Ok(()));
    }
}
