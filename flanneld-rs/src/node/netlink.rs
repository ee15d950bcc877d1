//! Start-up detection over the netlink seam: asks the kernel (`Kernel`) for
//! the interfaces with their addresses and the route it would use, then
//! hands the facts to the pure `select::select_iface`.

use std::net::IpAddr;

use super::select::{select_iface, NodeError, PublicAddrs};
use crate::model::{IfaceSpec, LocalNode, Underlay};
use crate::netlink::kernel::Family;
use crate::netlink::{Kernel, NetlinkError};

/// Why detection failed: the interfaces did not fit the flags (`Select`),
/// or the kernel could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Select(#[from] NodeError),
    #[error("reading interfaces over netlink: {0}")]
    Netlink(#[from] NetlinkError),
}

/// `select::preflight` on this namespace's interfaces.
pub async fn preflight(nl: &dyn Kernel, spec: &IfaceSpec) -> Result<(), DetectError> {
    let ifaces = nl.interfaces().await?;
    Ok(super::select::preflight(spec, &ifaces)?)
}

/// `preflight` over Go flanneld's chain of interface kinds (`--iface`,
/// then `--iface-regex`, then `--iface-can-reach`): fine when any kind can
/// match; otherwise the first kind's error.
pub async fn preflight_any(
    nl: &dyn Kernel,
    first: &IfaceSpec,
    rest: &[IfaceSpec],
) -> Result<(), DetectError> {
    let mut first_err = None;
    for spec in std::iter::once(first).chain(rest) {
        match preflight(nl, spec).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or(DetectError::Select(NodeError::NoDefaultRoute)))
}

/// `detect` with Go flanneld's fallbacks: the first kind that finds an
/// interface wins; when none does, the first kind's error.
pub async fn detect_any(
    nl: &dyn Kernel,
    first: &IfaceSpec,
    rest: &[IfaceSpec],
    public: PublicAddrs,
    underlay: Underlay,
) -> Result<LocalNode, DetectError> {
    let mut first_err = None;
    for spec in std::iter::once(first).chain(rest) {
        match detect(nl, spec, public, underlay).await {
            Ok(node) => return Ok(node),
            Err(e) => {
                if !rest.is_empty() {
                    tracing::info!(error = %e, "no interface from this choice; trying the next one (Go flanneld's order: --iface, --iface-regex, --iface-can-reach)");
                }
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or(DetectError::Select(NodeError::NoDefaultRoute)))
}

/// Detects this node's underlay in the namespace `nl` drives.
pub async fn detect(
    nl: &dyn Kernel,
    spec: &IfaceSpec,
    public: PublicAddrs,
    underlay: Underlay,
) -> Result<LocalNode, DetectError> {
    let ifaces = nl.interfaces().await?;
    let route = match spec {
        IfaceSpec::CanReach(ip @ IpAddr::V4(_)) => nl.route_hint(*ip).await?,
        IfaceSpec::CanReach(ip @ IpAddr::V6(_)) if underlay == Underlay::Ipv6 => {
            nl.route_hint(*ip).await?
        }
        // The underlay's own default route; an IPv6 underlay on a node
        // without an IPv6 default route takes the IPv4 one's interface.
        IfaceSpec::DefaultRoute if underlay == Underlay::Ipv6 => {
            match nl.default_route(Family::V6).await? {
                Some(r) => Some(r),
                None => nl.default_route(Family::V4).await?,
            }
        }
        IfaceSpec::DefaultRoute => nl.default_route(Family::V4).await?,
        _ => None,
    };
    Ok(select_iface(spec, &ifaces, route, public, underlay)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Iface, RouteHint};
    use crate::netlink::fake::FakeKernel;
    use std::net::Ipv4Addr;

    fn kernel() -> FakeKernel {
        let k = FakeKernel::new();
        {
            let mut s = k.state();
            s.ifaces = vec![
                Iface {
                    name: "lo".into(),
                    index: 1,
                    mtu: 65536,
                    loopback: true,
                    addrs: vec!["127.0.0.1/8".parse().unwrap()],
                    addrs6: vec![],
                },
                Iface {
                    name: "eth0".into(),
                    index: 2,
                    mtu: 9001,
                    loopback: false,
                    addrs: vec!["198.51.100.1/24".parse().unwrap()],
                    addrs6: vec![],
                },
                Iface {
                    name: "eth1".into(),
                    index: 3,
                    mtu: 1500,
                    loopback: false,
                    addrs: vec!["203.0.113.1/24".parse().unwrap()],
                    addrs6: vec![],
                },
            ];
            s.default4 = Some(RouteHint {
                oif: 2,
                prefsrc: None,
            });
            s.hints.insert(
                "203.0.113.50".parse().unwrap(),
                RouteHint {
                    oif: 3,
                    prefsrc: None,
                },
            );
        }
        k
    }

    #[tokio::test]
    async fn detection_asks_the_seam_for_interfaces_and_routes() {
        let k = kernel();
        let public = PublicAddrs::default();
        let node = detect(&k, &IfaceSpec::DefaultRoute, public, Underlay::Ipv4)
            .await
            .unwrap();
        assert_eq!((node.iface_name.as_str(), node.iface_mtu), ("eth0", 9001));
        assert_eq!(node.public_ip, Ipv4Addr::new(198, 51, 100, 1));
        let reach = IfaceSpec::CanReach("203.0.113.50".parse().unwrap());
        let node = detect(&k, &reach, public, Underlay::Ipv4).await.unwrap();
        assert_eq!(node.iface_index, 3);
        // An IPv6 underlay without an IPv6 default route takes the IPv4
        // one's interface, which has no IPv6 address: the error says so.
        let e = detect(&k, &IfaceSpec::DefaultRoute, public, Underlay::Ipv6)
            .await
            .unwrap_err();
        assert!(
            matches!(e, DetectError::Select(NodeError::NoAddress6(ref n)) if n == "eth0"),
            "{e}"
        );
        // Go's fallback chain: a name that does not exist, then the route.
        let missing = IfaceSpec::Names(vec!["wlan0".into()]);
        let node = detect_any(&k, &missing, &[reach], public, Underlay::Ipv4)
            .await
            .unwrap();
        assert_eq!(node.iface_name, "eth1");
        k.state().default4 = None;
        let e = detect(&k, &IfaceSpec::DefaultRoute, public, Underlay::Ipv4)
            .await
            .unwrap_err();
        assert!(matches!(e, DetectError::Select(NodeError::NoDefaultRoute)));
    }
}
