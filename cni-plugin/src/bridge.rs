//! The node's bridge: found or created, brought up, and inspected for the
//! gateway address in one round trip.

use ipnet::Ipv4Net;

use crate::error::CniError;
use crate::naming::random_mac;
use crate::netlink::parse::{self, Link};
use crate::netlink::{messages, Netlink};

pub struct BridgeState {
    pub link: Link,
    /// The bridge already holds the gateway address.
    pub has_gateway: bool,
    /// Addresses it holds inside the cluster networks from an earlier lease.
    pub stale_gateways: Vec<Ipv4Net>,
}

/// Finds the bridge, creating it when missing (two ADDs may race to create
/// it: the loser sees EEXIST and looks it up again), and says what ADD
/// still has to do about the gateway address, so the common case writes
/// nothing.
pub fn ensure(
    nl: &mut Netlink,
    name: &str,
    gateway: Ipv4Net,
    networks: &[Ipv4Net],
) -> Result<BridgeState, CniError> {
    let mut replies = nl
        .exchange(vec![messages::get_link(name), messages::dump_addresses()])?
        .into_iter();
    let link = replies.next().unwrap_or(Ok(Vec::new()));
    let addrs = replies.next().unwrap_or(Ok(Vec::new()))?;
    let link = match link {
        Ok(msgs) => msgs.iter().find_map(parse::link),
        Err(e) if e.errno() == Some(libc::ENODEV) => None,
        Err(e) => return Err(e.into()),
    };
    let Some(link) = link else {
        match nl.batch(vec![messages::create_bridge(name, random_mac())]) {
            Ok(()) => {}
            Err(e) if e.errno() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(BridgeState {
            link: nl.link(name)?,
            has_gateway: false,
            stale_gateways: Vec::new(),
        });
    };
    if !link.up {
        nl.batch(vec![messages::set_link_up(link.index)])?;
    }
    let held: Vec<Ipv4Net> = addrs
        .iter()
        .filter_map(parse::address)
        .filter(|a| a.index == link.index)
        .filter_map(|a| Ipv4Net::new(a.addr, a.prefix_len).ok())
        .collect();
    Ok(BridgeState {
        has_gateway: held.contains(&gateway),
        stale_gateways: stale_gateways(&held, gateway, networks),
        link,
    })
}

/// Addresses on the bridge that are inside the cluster networks but are not
/// the current gateway: left over from an earlier lease.
pub fn stale_gateways(held: &[Ipv4Net], gateway: Ipv4Net, networks: &[Ipv4Net]) -> Vec<Ipv4Net> {
    held.iter()
        .filter(|a| **a != gateway && networks.iter().any(|n| n.contains(&a.addr())))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_cluster_gateways_are_stale() {
        let n = |s: &str| s.parse::<Ipv4Net>().unwrap();
        let held = [n("10.244.7.1/24"), n("10.244.3.1/24"), n("192.0.2.5/24")];
        assert_eq!(
            stale_gateways(&held, n("10.244.7.1/24"), &[n("10.244.0.0/16")]),
            vec![n("10.244.3.1/24")]
        );
        assert!(stale_gateways(&held[..1], n("10.244.7.1/24"), &[n("10.244.0.0/16")]).is_empty());
    }
}
