//! The datapath's errors: `BackendError` for what stops a step (prepare,
//! attach, reconcile), `PeerError` for one peer that could not be
//! programmed while the others were (collected in
//! `ReconcileReport::errors`, netavark's error-list pattern).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::model::{Encap, MacParseError, NoTunnelAddress};
use crate::netlink::NetlinkError;
use crate::userspace::engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("backend type {0:?} is not supported (supported: vxlan, geneve, userspace, host-gw)")]
    Unsupported(String),
    #[error("invalid Backend options in net-conf.json: {0}")]
    Config(String),
    #[error("invalid Backend options in net-conf.json: {0}")]
    NoTunnelAddress(#[from] NoTunnelAddress),
    /// A netlink request failed (the operation and errno are kept).
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The kernel cannot create the device: no module for its kind.
    #[error("{}", no_module_message(*.encap, *.errno))]
    NoModule { encap: Encap, errno: i32 },
    #[error("{name} vanished right after it was created")]
    Vanished { name: String },
    #[error("{backend}: the lease has no IPv4 subnet")]
    NoIpv4Subnet { backend: &'static str },
    #[error(transparent)]
    Mtu(#[from] crate::node::mtu::MtuError),
    #[error("userspace datapath: {0}")]
    Userspace(#[from] EngineError),
    /// A step called before `prepare` (a daemon bug, not an operator's).
    #[error("{backend}: used before prepare")]
    NotPrepared { backend: &'static str },
}

/// One peer that could not be programmed (or one stale entry that could
/// not be removed); the rest of the pass went on.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("peer {subnet} at {public_ip} uses backend {theirs:?}, this node {ours}: all nodes must use the same backend")]
    OtherBackend {
        subnet: Ipv4Net,
        public_ip: Ipv4Addr,
        theirs: String,
        ours: &'static str,
    },
    #[error("peer {subnet} at {public_ip} published no VtepMAC in its BackendData")]
    NoVtepMac {
        subnet: Ipv4Net,
        public_ip: Ipv4Addr,
    },
    #[error("peer {subnet} at {public_ip}: VtepMAC: {source}")]
    BadVtepMac {
        subnet: Ipv4Net,
        public_ip: Ipv4Addr,
        source: MacParseError,
    },
    #[error("peer {subnet} published no PublicIP (IPv4): the cluster's Backend.Underlay is ipv4")]
    NoPublicIp { subnet: Ipv4Net },
    #[error("peer {subnet} at {public_ip} published no PublicIPv6: with Backend.Underlay \"ipv6\" every node needs an IPv6 address")]
    NoPublicIpv6 {
        subnet: Ipv4Net,
        public_ip: Ipv4Addr,
    },
    #[error("peer {subnet} at {public_ip} is not on the same L2 as {iface}: host-gw needs all nodes on one L2 segment; use vxlan")]
    NotOnSameL2 {
        subnet: Ipv4Net,
        public_ip: Ipv4Addr,
        iface: String,
    },
    /// The kernel refused an entry of this peer.
    #[error("peer {subnet}: {source}")]
    Kernel {
        subnet: Ipv4Net,
        source: NetlinkError,
    },
    /// The kernel refused to remove a stale entry (no wanted peer owns it).
    #[error(transparent)]
    Stale(NetlinkError),
}

impl PeerError {
    /// The peer's subnet (`None` for a stale entry).
    pub fn subnet(&self) -> Option<Ipv4Net> {
        match self {
            PeerError::OtherBackend { subnet, .. }
            | PeerError::NoVtepMac { subnet, .. }
            | PeerError::BadVtepMac { subnet, .. }
            | PeerError::NoPublicIp { subnet }
            | PeerError::NoPublicIpv6 { subnet, .. }
            | PeerError::NotOnSameL2 { subnet, .. }
            | PeerError::Kernel { subnet, .. } => Some(*subnet),
            PeerError::Stale(_) => None,
        }
    }
}

/// The one line an operator sees when the kernel cannot create the device
/// because the module is missing.
pub fn no_module_message(encap: Encap, errno: i32) -> String {
    let kind = encap.backend_type();
    format!(
        "the kernel has no {kind} support (creating {}: {}); load the {kind} module, \
         set \"Fallback\": \"userspace\" in net-conf.json's Backend, or run this node with \
         --datapath-mode userspace",
        super::metadata::device::device_name(encap),
        errno_text(errno)
    )
}

/// The C library's text for `errno` ("Operation not supported"), without
/// std's " (os error N)" suffix.
pub fn errno_text(errno: i32) -> String {
    let full = std::io::Error::from_raw_os_error(errno).to_string();
    match full.rfind(" (os error ") {
        Some(at) => full[..at].to_string(),
        None => full,
    }
}
