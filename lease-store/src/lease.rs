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
///
/// Serialised exactly as Go flannel's `LeaseAttrs` (field order, `PublicIPv6`
/// always present and `null` when unset, the other optional fields omitted
/// when empty). Parsed by Go's rules: keys match case-insensitively, unknown
/// keys are ignored, a missing `PublicIP` is `0.0.0.0`, `null` means unset.
/// Backend data is kept as a JSON value: its object keys come back sorted,
/// which is the order Go's backends write them in (`VNI`, `VtepMAC`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseAttrs {
    #[serde(rename = "PublicIP")]
    pub public_ip: Ipv4Addr,
    #[serde(rename = "PublicIPv6")]
    pub public_ipv6: Option<Ipv6Addr>,
    #[serde(rename = "BackendType", skip_serializing_if = "String::is_empty")]
    pub backend_type: String,
    /// Backend-specific data (for VXLAN `{"VNI":1,"VtepMAC":"..."}`), kept
    /// raw: the backend parses it.
    #[serde(rename = "BackendData", skip_serializing_if = "Option::is_none")]
    pub backend_data: Option<serde_json::Value>,
    #[serde(rename = "BackendV6Data", skip_serializing_if = "Option::is_none")]
    pub backend_v6_data: Option<serde_json::Value>,
}

impl LeaseAttrs {
    /// The attributes as flannel stores them (compact JSON).
    pub fn to_json(&self) -> String {
        // Serialising plain strings, addresses and JSON values cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses flannel's lease JSON.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

impl<'de> Deserialize<'de> for LeaseAttrs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let obj = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let field = |name: &str| crate::config::get(&obj, name).filter(|v| !v.is_null());
        let public_ip = match field("PublicIP") {
            None => Ipv4Addr::UNSPECIFIED,
            Some(serde_json::Value::String(s)) => s
                .parse()
                .map_err(|_| D::Error::custom(format!("PublicIP {s:?} is not an IPv4 address")))?,
            Some(v) => {
                return Err(D::Error::custom(format!(
                    "PublicIP must be a string, found {v}"
                )))
            }
        };
        let public_ipv6 = match field("PublicIPv6") {
            None => None,
            Some(serde_json::Value::String(s)) => Some(s.parse().map_err(|_| {
                D::Error::custom(format!("PublicIPv6 {s:?} is not an IPv6 address"))
            })?),
            Some(v) => {
                return Err(D::Error::custom(format!(
                    "PublicIPv6 must be a string, found {v}"
                )))
            }
        };
        let backend_type = match field("BackendType") {
            None => String::new(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => {
                return Err(D::Error::custom(format!(
                    "BackendType must be a string, found {v}"
                )))
            }
        };
        Ok(LeaseAttrs {
            public_ip,
            public_ipv6,
            backend_type,
            backend_data: field("BackendData").cloned(),
            backend_v6_data: field("BackendV6Data").cloned(),
        })
    }
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
