//! What the daemon knows about its node and its tunnels before any backend
//! runs: the detected underlay (`LocalNode`), how it was chosen
//! (`IfaceSpec`, `Iface`, `RouteHint`), and the cluster-wide encapsulation
//! and underlay family. Plain data, shared by node detection, the backends
//! and the userspace engine.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// Linux's VXLAN port (flannel's default), not IANA's 4789.
pub const DEFAULT_VXLAN_PORT: u16 = 8472;

/// What the tunnel puts before the inner IPv4 packet: the 8-byte VXLAN or
/// (option-less) Geneve header and the inner Ethernet header.
pub const ENCAP_HEADER_LEN: u32 = 8 + 14;

/// The wire encapsulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encap {
    /// RFC 7348, inner Ethernet frame, default UDP port 8472 (Linux's).
    Vxlan,
    /// RFC 8926, protocol type 0x6558 (inner Ethernet), UDP port 6081.
    Geneve,
}

impl Encap {
    /// The `BackendType` published with the lease.
    pub fn backend_type(self) -> &'static str {
        match self {
            Encap::Vxlan => "vxlan",
            Encap::Geneve => "geneve",
        }
    }

    /// The UDP port used when the config says none (or 0).
    pub fn default_port(self) -> u16 {
        match self {
            Encap::Vxlan => DEFAULT_VXLAN_PORT,
            Encap::Geneve => GENEVE_PORT,
        }
    }
}

/// IANA's Geneve port.
pub const GENEVE_PORT: u16 = 6081;

/// The address family tunnels run over (`Backend.Underlay`). Cluster-wide:
/// every node sends to the others' addresses of this family, so every node
/// needs one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Underlay {
    /// To peers' `PublicIP` (flannel's way).
    Ipv4,
    /// To peers' `PublicIPv6`; the pods stay IPv4.
    Ipv6,
}

impl Underlay {
    /// Outer IP + UDP + tunnel header + inner Ethernet: what the overlay
    /// MTU gives up (Geneve without options has VXLAN's 8-byte header).
    pub fn overhead(self) -> u32 {
        let outer_ip = match self {
            Underlay::Ipv4 => 20,
            Underlay::Ipv6 => 40,
        };
        // + UDP + what the tunnel puts before the inner IPv4 packet.
        outer_ip + 8 + ENCAP_HEADER_LEN
    }
}

/// The node this daemon runs on, as detected at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    /// The underlay interface (the one holding `public_ip`, or the one
    /// chosen by `--iface`).
    pub iface_name: String,
    pub iface_index: u32,
    pub iface_mtu: u32,
    /// The address used as the tunnel source (`--iface` address);
    /// 0.0.0.0 on an interface without IPv4 (IPv6 underlay only).
    pub iface_addr: Ipv4Addr,
    /// The address peers send to (`--public-ip`, default `iface_addr`).
    pub public_ip: Ipv4Addr,
    /// With an IPv6 underlay (`Backend.Underlay`): the interface's global
    /// IPv6 address, the tunnel source; `None` otherwise.
    pub iface_addr6: Option<Ipv6Addr>,
    /// With an IPv6 underlay: the address peers send to (`--public-ipv6`,
    /// default `iface_addr6`), published as the lease's `PublicIPv6`.
    pub public_ipv6: Option<Ipv6Addr>,
}

impl LocalNode {
    /// The tunnel source address for `underlay` (`None`: the node has none
    /// of that family).
    pub fn tunnel_source(&self, underlay: Underlay) -> Option<IpAddr> {
        match underlay {
            Underlay::Ipv4 => Some(IpAddr::V4(self.iface_addr)).filter(|a| !a.is_unspecified()),
            Underlay::Ipv6 => self.iface_addr6.map(IpAddr::V6),
        }
    }

    /// The address peers send to for `underlay`.
    pub fn tunnel_endpoint(&self, underlay: Underlay) -> Option<IpAddr> {
        match underlay {
            Underlay::Ipv4 => Some(IpAddr::V4(self.public_ip)).filter(|a| !a.is_unspecified()),
            Underlay::Ipv6 => self.public_ipv6.map(IpAddr::V6),
        }
    }

    /// Both, or why not: the error names the flag that fixes it.
    pub fn tunnel_addrs(&self, underlay: Underlay) -> Result<(IpAddr, IpAddr), NoTunnelAddress> {
        match (self.tunnel_source(underlay), self.tunnel_endpoint(underlay)) {
            (Some(s), Some(e)) => Ok((s, e)),
            _ => Err(NoTunnelAddress {
                underlay,
                iface: self.iface_name.clone(),
            }),
        }
    }
}

/// The node has no address of the underlay's family to run tunnels from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct NoTunnelAddress {
    pub underlay: Underlay,
    pub iface: String,
}

impl std::fmt::Display for NoTunnelAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.underlay {
            Underlay::Ipv4 => write!(
                f,
                "interface {} has no IPv4 address for the tunnel: add one, or use Backend.Underlay \"ipv6\"",
                self.iface
            ),
            Underlay::Ipv6 => write!(
                f,
                "Backend.Underlay is \"ipv6\" but interface {} has no global IPv6 address: add one, choose the interface with --iface, or give --public-ipv6",
                self.iface
            ),
        }
    }
}

/// How to pick the underlay interface.
#[derive(Debug, Clone)]
pub enum IfaceSpec {
    /// `--iface`: names or addresses, in order.
    Names(Vec<String>),
    /// `--iface-regex`, in order.
    Regexes(Vec<regex::Regex>),
    /// `--iface-can-reach`.
    CanReach(IpAddr),
    /// The interface of the default route.
    DefaultRoute,
}

/// One interface as the selection needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub index: u32,
    pub mtu: u32,
    pub loopback: bool,
    /// IPv4 addresses with their prefix, in the kernel's order.
    pub addrs: Vec<Ipv4Net>,
    /// Usable IPv6 addresses (DAD done), in the kernel's order.
    pub addrs6: Vec<Ipv6Net>,
}

/// The kernel's answer to "which route reaches X" (or the default route).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteHint {
    pub oif: u32,
    /// The route's preferred source address, when it has one.
    pub prefsrc: Option<IpAddr>,
}
