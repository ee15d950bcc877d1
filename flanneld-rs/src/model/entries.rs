//! The kernel entries the datapath programs and reads back: a MAC, a
//! permanent neighbour, an FDB entry, a route (with its optional per-route
//! tunnel encap). Plain data shared by the reconciler, netlink and the
//! backends, so none of them imports another for its types.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// An Ethernet address (VTEP MAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address (expected six hex bytes like 0a:1b:2c:3d:4e:5f)")]
pub struct MacParseError(pub String);

impl std::str::FromStr for Mac {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let part = parts.next().ok_or_else(|| MacParseError(s.into()))?;
            if part.is_empty() || part.len() > 2 {
                return Err(MacParseError(s.into()));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| MacParseError(s.into()))?;
        }
        if parts.next().is_some() {
            return Err(MacParseError(s.into()));
        }
        Ok(Mac(out))
    }
}

/// A permanent neighbour (ARP) entry on the overlay device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Neigh {
    pub ip: Ipv4Addr,
    pub mac: Mac,
}

/// A permanent FDB entry (NTF_SELF) on the overlay device: frames for `mac`
/// are sent in VXLAN to `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fdb {
    pub mac: Mac,
    pub dst: Ipv4Addr,
}

/// An IPv4 route in the main table carrying our protocol number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub dst: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub oif: u32,
    pub onlink: bool,
    /// Per-route tunnel metadata (metadata-mode devices); part of the
    /// comparison, so a peer whose public IP changed gets its route replaced.
    pub encap: Option<TunnelEncap>,
}

/// `encap ip id <id> dst <dst>` on a route (lightweight tunnel, LWTUNNEL_ENCAP_IP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TunnelEncap {
    /// The VNI.
    pub id: u64,
    /// The peer's public (underlay) address: `encap ip` for IPv4,
    /// `encap ip6` for IPv6.
    pub dst: std::net::IpAddr,
}
