//! The VTEP MAC of this node, derived rather than random so it survives
//! daemon restarts and reboots: peers keep valid FDB and neighbour entries
//! for us, and nothing has to be persisted.
//!
//! MAC = the first six bytes of FNV-1a-64 over
//! `"flannel-rs/vtep\0" ++ public IPv4 (4 bytes) ++ VNI (4 bytes, big-endian)`,
//! with the first byte's low bits set to locally administered (0x02) and
//! unicast (0x01 cleared). FNV-1a is written out because its output must
//! never change between Rust or crate versions (std's hasher may).

use std::net::{IpAddr, Ipv4Addr};

use crate::reconcile::Mac;

pub fn derive(public_ip: Ipv4Addr, vni: u32) -> Mac {
    derive_bytes(&public_ip.octets(), vni)
}

/// The same over the address peers tunnel to, of either family (16
/// bytes of an IPv6 address in its place: an IPv6-underlay node's MAC).
pub fn derive_ip(public: IpAddr, vni: u32) -> Mac {
    match public {
        IpAddr::V4(a) => derive(a, vni),
        IpAddr::V6(a) => derive_bytes(&a.octets(), vni),
    }
}

fn derive_bytes(addr: &[u8], vni: u32) -> Mac {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let input = b"flannel-rs/vtep\0"
        .iter()
        .copied()
        .chain(addr.iter().copied())
        .chain(vni.to_be_bytes());
    for b in input {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    let bytes = h.to_be_bytes();
    let mut mac = [bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5]];
    mac[0] = (mac[0] & 0xfc) | 0x02;
    Mac(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_stable_local_and_unicast() {
        let ip = Ipv4Addr::new(198, 51, 100, 1);
        let a = derive(ip, 1);
        assert_eq!(a, derive(ip, 1));
        assert_eq!(a.0[0] & 0x03, 0x02, "{a}");
        // Pinned: a change here would change every node's MAC on upgrade.
        assert_eq!(a.to_string(), PINNED);
    }

    // Computed independently (Python) from the definition in the module doc.
    const PINNED: &str = "76:b8:85:65:69:04";

    #[test]
    fn ipv6_addresses_derive_their_own_stable_mac() {
        let v6: IpAddr = "2001:db8:100::1".parse().unwrap();
        let a = derive_ip(v6, 1);
        assert_eq!(a, derive_ip(v6, 1));
        assert_eq!(a.0[0] & 0x03, 0x02, "{a}");
        assert_ne!(a, derive_ip("2001:db8:100::2".parse().unwrap(), 1));
        let v4 = Ipv4Addr::new(198, 51, 100, 1);
        assert_eq!(derive_ip(IpAddr::V4(v4), 1), derive(v4, 1));
    }

    #[test]
    fn differs_per_node_and_vni() {
        let a = derive(Ipv4Addr::new(198, 51, 100, 1), 1);
        assert_ne!(a, derive(Ipv4Addr::new(198, 51, 100, 2), 1));
        assert_ne!(a, derive(Ipv4Addr::new(198, 51, 100, 1), 2));
    }
}
