//! The datapath seam: from the desired set of peers, make the kernel match.
//!
//! A backend is chosen at runtime from net-conf.json's `Backend.Type`. The
//! daemon drives it in three steps:
//! 1. `prepare` before the lease is acquired: create or adopt the device and
//!    say what to publish with the lease (backend type and data, e.g. the
//!    VTEP MAC) and the overlay MTU;
//! 2. `attach` once the lease is known: put the lease's address on the
//!    device;
//! 3. `reconcile`, on every lease event and periodically: compare the desired
//!    peers with what the kernel has (netlink dumps) and fix the difference,
//!    touching only entries the backend owns.
//!
//! OWNER: the "dp" engineer (datapath) implements the backends behind this
//! trait; the "daemon" engineer calls it. Changes to this file are agreed
//! with the lead.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use crate::model::LocalNode;

use ipnet::Ipv4Net;
use lease_store::{Lease, NetworkConfig};

/// What `prepare` tells the daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// `BackendType` to publish with the lease (`vxlan`, `host-gw`, ...).
    pub backend_type: String,
    /// `BackendData` to publish (`{"VNI":1,"VtepMAC":"..."}` for VXLAN),
    /// or `None`.
    pub backend_data: Option<serde_json::Value>,
    /// The MTU pods must use (goes into subnet.env).
    pub mtu: u32,
}

/// A peer node as the datapath needs it (built from its lease).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub subnet: Ipv4Net,
    pub public_ip: Ipv4Addr,
    /// The lease's `PublicIPv6` (tunnels go there with an IPv6 underlay).
    pub public_ipv6: Option<Ipv6Addr>,
    pub backend_type: String,
    pub backend_data: Option<serde_json::Value>,
}

impl Peer {
    /// A peer from a lease; `None` for an IPv6-only lease (not programmed yet).
    pub fn from_lease(lease: &Lease) -> Option<Peer> {
        Some(Peer {
            subnet: lease.subnet?,
            public_ip: lease.attrs.public_ip,
            public_ipv6: lease.attrs.public_ipv6,
            backend_type: lease.attrs.backend_type.clone(),
            backend_data: lease.attrs.backend_data.clone(),
        })
    }
}

impl Peer {
    /// Where tunnels to this peer go for `underlay`, or why nowhere.
    pub fn endpoint(&self, underlay: Underlay) -> Result<IpAddr, PeerError> {
        match underlay {
            Underlay::Ipv4 if !self.public_ip.is_unspecified() => Ok(IpAddr::V4(self.public_ip)),
            Underlay::Ipv4 => Err(PeerError::NoPublicIp {
                subnet: self.subnet,
            }),
            Underlay::Ipv6 => self
                .public_ipv6
                .map(IpAddr::V6)
                .ok_or(PeerError::NoPublicIpv6 {
                    subnet: self.subnet,
                    public_ip: self.public_ip,
                }),
        }
    }

    /// The error for a peer running another backend than `ours`.
    pub fn other_backend(&self, ours: &'static str) -> PeerError {
        PeerError::OtherBackend {
            subnet: self.subnet,
            public_ip: self.public_ip,
            theirs: self.backend_type.clone(),
            ours,
        }
    }
}

/// What one reconcile pass did: the daemon turns it into metrics and logs.
#[derive(Debug, Default)]
pub struct ReconcileReport {
    /// Netlink requests that changed something, by kind (e.g. "route_add").
    pub changes: Vec<(&'static str, u64)>,
    /// Peers that could not be programmed, with the reason; the others were.
    pub errors: Vec<PeerError>,
    /// Peers programmed after this pass.
    pub peers: usize,
    /// True when the device itself had to be (re)created.
    pub device_recreated: bool,
}

/// A datapath driver.
#[async_trait::async_trait]
pub trait Backend: Send {
    /// Creates or adopts the device (reusing a compatible one left by a
    /// previous run, so pod traffic never stops across restarts).
    async fn prepare(
        &mut self,
        node: &LocalNode,
        config: &NetworkConfig,
    ) -> Result<Prepared, BackendError>;

    /// Configures the device for this node's lease.
    async fn attach(&mut self, lease: &Lease) -> Result<(), BackendError>;

    /// Makes the kernel match `peers` (the complete desired set, own lease
    /// excluded). Idempotent; also recreates the device if it vanished.
    async fn reconcile(&mut self, peers: &[Peer]) -> Result<ReconcileReport, BackendError>;

    /// Packet statistics of a datapath that moves packets itself (the
    /// userspace one), read by /metrics at scrape time; `None` for the
    /// kernel datapaths.
    fn stats(&self) -> Option<std::sync::Arc<dyn DatapathStats>> {
        None
    }
}

// Implementations (owner: "dp").
mod converge;
pub mod devices;
pub mod error;
#[cfg(test)]
mod fake_tests;
pub mod hostgw;
pub mod mac_memory;
pub mod metadata;
pub mod options;
pub mod ownership;
pub mod spec;
pub mod stats;
pub mod tunnel;
pub mod userspace;
pub mod vtep_mac;
pub mod vxlan;

pub use error::{BackendError, PeerError};
pub use spec::{
    BackendSpec, Datapath, DatapathMode, Encap, Fallback, NodeOverrides, TunnelSpec, Underlay,
    DEFAULT_BUSY_POLL,
};
pub use stats::{DatapathStats, StatsSnapshot};

/// The underlay family net-conf.json's Backend asks for (host-gw: IPv4),
/// known before the node is detected: it decides which addresses to look
/// for.
pub fn underlay_of(config: &NetworkConfig, node: &NodeOverrides) -> Result<Underlay, BackendError> {
    Ok(
        match BackendSpec::parse(&config.backend_type, &config.backend, node.mode)? {
            BackendSpec::HostGw => Underlay::Ipv4,
            BackendSpec::Tunnel(spec) => spec.underlay,
        },
    )
}

/// The backend net-conf.json asks for (with this node's overrides:
/// `--datapath-mode`, `--userspace-busy-poll`), driving the namespace
/// `netlink` is bound to (the daemon's own: `Netlink::connect()`).
pub fn new(
    config: &NetworkConfig,
    netlink: impl Into<crate::netlink::KernelRef>,
    node: &NodeOverrides,
) -> Result<Box<dyn Backend>, BackendError> {
    new_with_mac_memory(config, netlink, node, None)
}

/// The same, remembering an adopted VTEP MAC in `mac_file`
/// (`--vtep-mac-file`; see `mac_memory`).
pub fn new_with_mac_memory(
    config: &NetworkConfig,
    netlink: impl Into<crate::netlink::KernelRef>,
    node: &NodeOverrides,
    mac_file: Option<mac_memory::MacMemory>,
) -> Result<Box<dyn Backend>, BackendError> {
    let netlink = netlink.into();
    match BackendSpec::parse(&config.backend_type, &config.backend, node.mode)? {
        BackendSpec::HostGw => Ok(Box::new(hostgw::HostGwBackend::new(netlink))),
        BackendSpec::Tunnel(mut spec) => {
            spec.busy_poll = node.busy_poll;
            spec.queues = node.queues;
            match spec.datapath {
                Datapath::KernelFdb => Ok(Box::new(
                    vxlan::VxlanBackend::with_options(netlink, spec.vxlan)
                        .with_mac_memory(mac_file),
                )),
                Datapath::KernelMetadata => metadata::new(netlink, spec),
                Datapath::Userspace => userspace::new(netlink, spec),
            }
        }
    }
}
