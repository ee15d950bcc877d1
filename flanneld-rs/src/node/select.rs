//! Choosing the underlay interface and address from a list of interfaces
//! (pure: the list comes from `node::netlink`), with flannel's rules:
//! `--iface` by name or address, first match wins; `--iface-regex` against
//! addresses first, then names; `--iface-can-reach` and the default case use
//! the interface of a route the kernel picked.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;

use crate::backend::LocalNode;
use crate::cli::IfaceSpec;

/// One interface as the selection needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub index: u32,
    pub mtu: u32,
    pub loopback: bool,
    /// IPv4 addresses with their prefix, in the kernel's order.
    pub addrs: Vec<Ipv4Net>,
}

/// The kernel's answer to "which route reaches X" (or the default route).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteHint {
    pub oif: u32,
    /// The route's preferred source address, when it has one.
    pub prefsrc: Option<Ipv4Addr>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeError {
    #[error(
        "--iface {0:?}: no interface has that name or IPv4 address (list them with `ip -br addr`)"
    )]
    NoSuchIface(String),
    #[error("interface {0} has no IPv4 address: add one, or choose another with --iface")]
    NoAddress(String),
    #[error("--iface-regex {0:?}: no interface address or name matches")]
    NoRegexMatch(Vec<String>),
    #[error("no default route in this network namespace: choose the interface with --iface or --iface-can-reach")]
    NoDefaultRoute,
    #[error("--iface-can-reach {0}: no route to it; check the address or use --iface")]
    NoRoute(IpAddr),
    #[error("--iface-can-reach {0}: IPv6 underlays are not supported yet; give an IPv4 address")]
    Ipv6Underlay(IpAddr),
    #[error("the route chosen for the underlay leaves through interface index {0}, which has disappeared; retry")]
    RouteIfaceGone(u32),
    #[error("reading interfaces over netlink ({op}): {reason}")]
    Netlink { op: &'static str, reason: String },
}

/// Picks the interface and addresses. `route` is the kernel's route to the
/// `--iface-can-reach` address, or the default route, when the spec needs
/// one (`None` = no such route).
pub fn select_iface(
    spec: &IfaceSpec,
    ifaces: &[Iface],
    route: Option<RouteHint>,
    public_ip: Option<Ipv4Addr>,
) -> Result<LocalNode, NodeError> {
    let (iface, addr) = match spec {
        IfaceSpec::Names(names) => by_names(names, ifaces)?,
        IfaceSpec::Regexes(regexes) => by_regexes(regexes, ifaces)?,
        IfaceSpec::CanReach(ip) => {
            if ip.is_ipv6() {
                return Err(NodeError::Ipv6Underlay(*ip));
            }
            by_route(route.ok_or(NodeError::NoRoute(*ip))?, ifaces)?
        }
        IfaceSpec::DefaultRoute => by_route(route.ok_or(NodeError::NoDefaultRoute)?, ifaces)?,
    };
    Ok(LocalNode {
        iface_name: iface.name.clone(),
        iface_index: iface.index,
        iface_mtu: iface.mtu,
        iface_addr: addr,
        public_ip: public_ip.unwrap_or(addr),
    })
}

fn by_names<'a>(names: &[String], ifaces: &'a [Iface]) -> Result<(&'a Iface, Ipv4Addr), NodeError> {
    let mut first_err = None;
    for name in names {
        let found = match name.parse::<Ipv4Addr>() {
            Ok(ip) => ifaces
                .iter()
                .find(|i| i.addrs.iter().any(|a| a.addr() == ip))
                .map(|i| Ok((i, ip))),
            Err(_) => ifaces.iter().find(|i| &i.name == name).map(|i| {
                preferred_addr(i)
                    .map(|a| (i, a))
                    .ok_or_else(|| NodeError::NoAddress(i.name.clone()))
            }),
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

fn by_regexes<'a>(
    regexes: &[regex::Regex],
    ifaces: &'a [Iface],
) -> Result<(&'a Iface, Ipv4Addr), NodeError> {
    let mut sorted: Vec<&Iface> = ifaces.iter().collect();
    sorted.sort_by_key(|i| i.index);
    for re in regexes {
        // Addresses first, then names: flannel's order.
        for iface in &sorted {
            if let Some(a) = iface
                .addrs
                .iter()
                .find(|a| re.is_match(&a.addr().to_string()))
            {
                return Ok((iface, a.addr()));
            }
        }
        for iface in &sorted {
            if re.is_match(&iface.name) {
                if let Some(a) = preferred_addr(iface) {
                    return Ok((iface, a));
                }
            }
        }
    }
    Err(NodeError::NoRegexMatch(
        regexes.iter().map(|r| r.as_str().to_string()).collect(),
    ))
}

fn by_route(route: RouteHint, ifaces: &[Iface]) -> Result<(&Iface, Ipv4Addr), NodeError> {
    let iface = ifaces
        .iter()
        .find(|i| i.index == route.oif)
        .ok_or(NodeError::RouteIfaceGone(route.oif))?;
    let addr = match route.prefsrc {
        Some(src) if iface.addrs.iter().any(|a| a.addr() == src) => src,
        _ => preferred_addr(iface).ok_or_else(|| NodeError::NoAddress(iface.name.clone()))?,
    };
    Ok((iface, addr))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, index: u32, mtu: u32, addrs: &[&str]) -> Iface {
        Iface {
            name: name.into(),
            index,
            mtu,
            loopback: name == "lo",
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
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
        let n = select_iface(&names(&["eth0"]), &host(), None, None).unwrap();
        assert_eq!(n.iface_name, "eth0");
        assert_eq!(n.iface_index, 2);
        assert_eq!(n.iface_mtu, 9001);
        assert_eq!(n.iface_addr, "198.51.100.7".parse::<Ipv4Addr>().unwrap());
        assert_eq!(n.public_ip, n.iface_addr);
    }

    #[test]
    fn iface_by_address_and_public_ip_override() {
        let public: Ipv4Addr = "203.0.113.5".parse().unwrap();
        let n = select_iface(&names(&["192.0.2.9"]), &host(), None, Some(public)).unwrap();
        assert_eq!(n.iface_name, "eth1");
        assert_eq!(n.iface_addr, "192.0.2.9".parse::<Ipv4Addr>().unwrap());
        assert_eq!(n.public_ip, public);
    }

    #[test]
    fn first_working_iface_wins_and_errors_name_the_first_failure() {
        let n = select_iface(&names(&["nope", "bare", "eth1"]), &host(), None, None).unwrap();
        assert_eq!(n.iface_name, "eth1");
        let e = select_iface(&names(&["nope", "bare"]), &host(), None, None).unwrap_err();
        assert_eq!(e, NodeError::NoSuchIface("nope".into()));
        let e = select_iface(&names(&["bare"]), &host(), None, None).unwrap_err();
        assert_eq!(e, NodeError::NoAddress("bare".into()));
    }

    #[test]
    fn regex_matches_addresses_before_names() {
        let re = |s: &str| IfaceSpec::Regexes(vec![regex::Regex::new(s).unwrap()]);
        // "eth1" as a name matches, but 192.0.2.x matches an address first.
        let n = select_iface(&re("^192\\.0\\.2\\."), &host(), None, None).unwrap();
        assert_eq!(n.iface_name, "eth1");
        let n = select_iface(&re("^eth"), &host(), None, None).unwrap();
        assert_eq!(n.iface_name, "eth0", "lowest index first");
        let e = select_iface(&re("^wlan"), &host(), None, None).unwrap_err();
        assert_eq!(e, NodeError::NoRegexMatch(vec!["^wlan".into()]));
    }

    #[test]
    fn route_based_selection_uses_oif_and_prefsrc() {
        let hint = RouteHint {
            oif: 3,
            prefsrc: None,
        };
        let n = select_iface(&IfaceSpec::DefaultRoute, &host(), Some(hint), None).unwrap();
        assert_eq!(n.iface_name, "eth1");
        let hint = RouteHint {
            oif: 2,
            prefsrc: Some("169.254.3.3".parse().unwrap()),
        };
        let target: IpAddr = "198.51.100.1".parse().unwrap();
        let n = select_iface(&IfaceSpec::CanReach(target), &host(), Some(hint), None).unwrap();
        assert_eq!(
            n.iface_addr,
            "169.254.3.3".parse::<Ipv4Addr>().unwrap(),
            "prefsrc wins"
        );
    }

    #[test]
    fn missing_routes_say_what_to_do() {
        let e = select_iface(&IfaceSpec::DefaultRoute, &host(), None, None).unwrap_err();
        assert_eq!(e, NodeError::NoDefaultRoute);
        assert!(e.to_string().contains("--iface"));
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let e = select_iface(&IfaceSpec::CanReach(ip), &host(), None, None).unwrap_err();
        assert_eq!(e, NodeError::NoRoute(ip));
        let gone = RouteHint {
            oif: 99,
            prefsrc: None,
        };
        let e = select_iface(&IfaceSpec::DefaultRoute, &host(), Some(gone), None).unwrap_err();
        assert_eq!(e, NodeError::RouteIfaceGone(99));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let e = select_iface(&IfaceSpec::CanReach(v6), &host(), None, None).unwrap_err();
        assert_eq!(e, NodeError::Ipv6Underlay(v6));
    }
}
