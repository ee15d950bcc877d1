//! A node's lease: the subnet it holds and how peers reach it.
//!
//! JSON field names and shapes are Go flannel's (`LeaseAttrs`), so that a
//! lease written by either side is read by the other.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::SystemTime;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// What a node publishes with its lease (the etcd value, or the node
/// annotations in Kubernetes mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAttrs {
    #[serde(rename = "PublicIP")]
    pub public_ip: Ipv4Addr,
    #[serde(rename = "PublicIPv6", default)]
    pub public_ipv6: Option<Ipv6Addr>,
    #[serde(rename = "BackendType", default, skip_serializing_if = "String::is_empty")]
    pub backend_type: String,
    /// Backend-specific data (for VXLAN `{"VNI":1,"VtepMAC":"..."}`), kept
    /// raw: the backend parses it.
    #[serde(rename = "BackendData", default, skip_serializing_if = "Option::is_none")]
    pub backend_data: Option<serde_json::Value>,
    #[serde(rename = "BackendV6Data", default, skip_serializing_if = "Option::is_none")]
    pub backend_v6_data: Option<serde_json::Value>,
}

/// A lease as the store hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The IPv4 subnet (network address), when IPv4 is enabled.
    pub subnet: Option<Ipv4Net>,
    /// The IPv6 subnet, when IPv6 is enabled.
    pub ipv6_subnet: Option<Ipv6Net>,
    pub attrs: LeaseAttrs,
    /// When the lease runs out unless renewed; `None` for a reservation
    /// (a key with no TTL, which never expires).
    pub expiration: Option<SystemTime>,
    /// The store revision at which this lease was last written.
    pub revision: i64,
}

impl Lease {
    /// The lease's key in flannel's encoding (`10.5.52.0-24`, or the
    /// dual-stack `10.12.13.0-24&fd00:12:13::-56`).
    pub fn key(&self) -> String {
        crate::key::encode(self.subnet, self.ipv6_subnet)
    }

    /// True for an operator's reservation (no TTL).
    pub fn is_reservation(&self) -> bool {
        self.expiration.is_none()
    }
}
