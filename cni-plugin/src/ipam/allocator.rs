//! Which address to hand out: round-robin over the node subnet, never the
//! network, broadcast or gateway address, never one already reserved.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::error::{code, CniError};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllocError {
    #[error("node subnet {0} is too small to hold pods (need /30 or larger)")]
    SubnetTooSmall(Ipv4Net),
    #[error("no free address left in {0}; delete unused pods or give the node a larger subnet")]
    Exhausted(Ipv4Net),
    #[error("requested address {ip} is outside the node subnet {subnet}")]
    RequestedOutside { ip: Ipv4Addr, subnet: Ipv4Net },
    #[error("requested address {ip} is the network, broadcast or gateway address of {subnet}")]
    RequestedReserved { ip: Ipv4Addr, subnet: Ipv4Net },
    #[error("requested address {0} is already reserved by another attachment")]
    RequestedTaken(Ipv4Addr),
    #[error("the node subnet is now {subnet} but {stale:?} are still reserved from an earlier subnet; delete those pods (or drain the node) before adding new ones")]
    SubnetChanged {
        subnet: Ipv4Net,
        stale: Vec<Ipv4Addr>,
    },
}

impl From<AllocError> for CniError {
    fn from(e: AllocError) -> Self {
        let c = match &e {
            AllocError::SubnetTooSmall(_) => code::INVALID_CONFIG,
            AllocError::Exhausted(_) => code::POOL_EXHAUSTED,
            AllocError::SubnetChanged { .. } => code::SUBNET_CHANGED,
            _ => code::REQUESTED_IP_UNAVAILABLE,
        };
        CniError::new(c, e.to_string())
    }
}

/// The addresses of one node subnet that pods may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    first: u32,
    last: u32,
}

impl Pool {
    /// `subnet` as subnet.env writes it (`10.244.7.1/24`); the gateway is the
    /// first host address, as flannel's bridge setup uses.
    pub fn new(subnet: Ipv4Net) -> Result<Self, AllocError> {
        let net = subnet.trunc();
        if net.prefix_len() > 30 {
            return Err(AllocError::SubnetTooSmall(net));
        }
        let first = u32::from(net.network()) + 1;
        let last = u32::from(net.broadcast()) - 1;
        Ok(Pool {
            subnet: net,
            gateway: Ipv4Addr::from(first),
            first,
            last,
        })
    }

    fn usable(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        n >= self.first && n <= self.last && ip != self.gateway
    }

    /// Reserved addresses that do not belong to this subnet: a sign that the
    /// node's lease changed under running pods.
    pub fn stale<'a>(&self, reserved: impl IntoIterator<Item = &'a Ipv4Addr>) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = reserved
            .into_iter()
            .filter(|ip| !self.subnet.contains(*ip))
            .copied()
            .collect();
        v.sort();
        v
    }

    /// Picks an address. `last` is the previous round-robin position
    /// (`last_reserved_ip.0`); the search starts just after it.
    pub fn allocate(
        &self,
        used: &HashSet<Ipv4Addr>,
        last: Option<Ipv4Addr>,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, AllocError> {
        if let Some(ip) = requested {
            if !self.subnet.contains(&ip) {
                return Err(AllocError::RequestedOutside {
                    ip,
                    subnet: self.subnet,
                });
            }
            if !self.usable(ip) {
                return Err(AllocError::RequestedReserved {
                    ip,
                    subnet: self.subnet,
                });
            }
            if used.contains(&ip) {
                return Err(AllocError::RequestedTaken(ip));
            }
            return Ok(ip);
        }
        let span = self.last - self.first + 1;
        let start = match last.map(u32::from) {
            Some(l) if l >= self.first && l <= self.last => l - self.first + 1,
            _ => 0,
        };
        (0..span)
            .map(|i| Ipv4Addr::from(self.first + (start + i) % span))
            .find(|ip| self.usable(*ip) && !used.contains(ip))
            .ok_or(AllocError::Exhausted(self.subnet))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pool(s: &str) -> Pool {
        Pool::new(s.parse().unwrap()).unwrap()
    }

    #[test]
    fn round_robin_skips_gateway_and_used() {
        let p = pool("10.244.7.1/24");
        assert_eq!(p.gateway, Ipv4Addr::new(10, 244, 7, 1));
        let mut used = HashSet::new();
        assert_eq!(
            p.allocate(&used, None, None).unwrap(),
            Ipv4Addr::new(10, 244, 7, 2)
        );
        assert_eq!(
            p.allocate(&used, Some(Ipv4Addr::new(10, 244, 7, 2)), None)
                .unwrap(),
            Ipv4Addr::new(10, 244, 7, 3)
        );
        // Wraps from the top back to .2, skipping the gateway.
        assert_eq!(
            p.allocate(&used, Some(Ipv4Addr::new(10, 244, 7, 254)), None)
                .unwrap(),
            Ipv4Addr::new(10, 244, 7, 2)
        );
        used.insert(Ipv4Addr::new(10, 244, 7, 3));
        assert_eq!(
            p.allocate(&used, Some(Ipv4Addr::new(10, 244, 7, 2)), None)
                .unwrap(),
            Ipv4Addr::new(10, 244, 7, 4)
        );
        // A last position from another subnet restarts at the beginning.
        assert_eq!(
            p.allocate(&used, Some(Ipv4Addr::new(10, 9, 9, 9)), None)
                .unwrap(),
            Ipv4Addr::new(10, 244, 7, 2)
        );
    }

    #[test]
    fn exhaustion_and_small_subnets() {
        let p = pool("10.244.7.1/30");
        let used: HashSet<_> = [Ipv4Addr::new(10, 244, 7, 2)].into();
        assert_eq!(
            p.allocate(&used, None, None),
            Err(AllocError::Exhausted(p.subnet))
        );
        assert!(Pool::new("10.244.7.1/31".parse().unwrap()).is_err());
        assert_eq!(CniError::from(AllocError::Exhausted(p.subnet)).code, 101);
    }

    #[test]
    fn requested_addresses() {
        let p = pool("10.244.7.1/24");
        let used: HashSet<_> = [Ipv4Addr::new(10, 244, 7, 9)].into();
        let r = |ip: [u8; 4]| p.allocate(&used, None, Some(Ipv4Addr::from(ip)));
        assert_eq!(r([10, 244, 7, 10]).unwrap(), Ipv4Addr::new(10, 244, 7, 10));
        assert!(matches!(
            r([10, 244, 7, 9]),
            Err(AllocError::RequestedTaken(_))
        ));
        assert!(matches!(
            r([10, 244, 8, 9]),
            Err(AllocError::RequestedOutside { .. })
        ));
        assert!(matches!(
            r([10, 244, 7, 1]),
            Err(AllocError::RequestedReserved { .. })
        ));
        assert!(matches!(
            r([10, 244, 7, 255]),
            Err(AllocError::RequestedReserved { .. })
        ));
        assert!(matches!(
            r([10, 244, 7, 0]),
            Err(AllocError::RequestedReserved { .. })
        ));
    }

    #[test]
    fn stale_reservations() {
        let p = pool("10.244.7.1/24");
        let r = [Ipv4Addr::new(10, 244, 7, 5), Ipv4Addr::new(10, 244, 3, 5)];
        assert_eq!(p.stale(&r), vec![Ipv4Addr::new(10, 244, 3, 5)]);
    }

    proptest! {
        // Filling a pool one address at a time hands out every usable
        // address exactly once, then reports exhaustion.
        #[test]
        fn fills_without_duplicates(prefix in 24u8..=30, base in any::<u32>(), start in any::<u32>()) {
            let net = Ipv4Net::new(Ipv4Addr::from(base), prefix).unwrap().trunc();
            let p = Pool::new(net).unwrap();
            let mut used = HashSet::new();
            let mut last = Some(Ipv4Addr::from(start));
            let capacity = (1u32 << (32 - prefix)) - 3;
            for _ in 0..capacity {
                let ip = p.allocate(&used, last, None).unwrap();
                prop_assert!(net.contains(&ip));
                prop_assert!(ip != p.gateway && ip != net.network() && ip != net.broadcast());
                prop_assert!(used.insert(ip));
                last = Some(ip);
            }
            prop_assert_eq!(p.allocate(&used, last, None), Err(AllocError::Exhausted(net)));
        }
    }
}
