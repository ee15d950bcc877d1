//! The peer table the TX path reads for every packet: destination IPv4 →
//! peer underlay address and VTEP MAC. Pure; rebuilt on each reconcile and
//! swapped in as a whole (`Arc`), so the datapath never waits on a lock.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use ipnet::Ipv4Net;

use crate::model::Mac;

/// Where to send packets for one peer subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerEntry {
    /// The peer's underlay address and port (IPv4 or IPv6: the cluster's
    /// underlay family).
    pub addr: SocketAddr,
    pub mac: Mac,
}

/// Longest-prefix match over peer subnets. Flannel leases share one
/// SubnetLen, so a lookup is normally a single hash probe.
#[derive(Debug, Clone, Default)]
pub struct PeerTable {
    /// Prefix lengths present, longest first.
    lens: Vec<u8>,
    by_net: HashMap<(u8, u32), PeerEntry>,
}

impl PeerTable {
    pub fn new(entries: impl IntoIterator<Item = (Ipv4Net, PeerEntry)>) -> Self {
        let mut t = PeerTable::default();
        for (net, e) in entries {
            let net = net.trunc();
            t.by_net
                .insert((net.prefix_len(), u32::from(net.network())), e);
            if !t.lens.contains(&net.prefix_len()) {
                t.lens.push(net.prefix_len());
            }
        }
        t.lens.sort_unstable_by(|a, b| b.cmp(a));
        t
    }

    pub fn lookup(&self, dst: Ipv4Addr) -> Option<&PeerEntry> {
        let ip = u32::from(dst);
        self.lens.iter().find_map(|&len| {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            self.by_net.get(&(len, ip & mask))
        })
    }

    pub fn len(&self) -> usize {
        self.by_net.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_net.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(last: u8) -> PeerEntry {
        PeerEntry {
            addr: SocketAddr::from((Ipv4Addr::new(198, 51, 100, last), 8472)),
            mac: Mac([2, 0, 0, 0, 0, last]),
        }
    }

    #[test]
    fn exact_subnet_and_longest_prefix() {
        let t = PeerTable::new([
            ("10.244.1.0/24".parse().unwrap(), entry(1)),
            ("10.244.2.0/24".parse().unwrap(), entry(2)),
            ("10.244.0.0/16".parse().unwrap(), entry(9)),
            ("10.244.2.128/25".parse().unwrap(), entry(3)),
        ]);
        assert_eq!(t.len(), 4);
        let at = |s: &str| {
            t.lookup(s.parse().unwrap()).map(|e| match e.addr.ip() {
                std::net::IpAddr::V4(a) => a.octets()[3],
                std::net::IpAddr::V6(a) => a.octets()[15],
            })
        };
        assert_eq!(at("10.244.1.7"), Some(1));
        assert_eq!(at("10.244.2.7"), Some(2));
        assert_eq!(at("10.244.2.200"), Some(3));
        assert_eq!(at("10.244.77.1"), Some(9));
        assert_eq!(at("10.245.0.1"), None);
    }

    #[test]
    fn host_bits_in_a_subnet_are_ignored_and_empty_table_matches_nothing() {
        let t = PeerTable::new([("10.244.1.9/24".parse().unwrap(), entry(1))]);
        assert!(t.lookup("10.244.1.200".parse().unwrap()).is_some());
        assert!(PeerTable::default().lookup(Ipv4Addr::UNSPECIFIED).is_none());
        let all = PeerTable::new([("0.0.0.0/0".parse().unwrap(), entry(5))]);
        assert!(all.lookup(Ipv4Addr::new(1, 2, 3, 4)).is_some());
    }
}
