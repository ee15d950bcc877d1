//! net-conf.json: the cluster network's configuration, with Go flannel's
//! defaults and validation. Keys are matched case-insensitively (Go's JSON
//! decoder does so, and existing configs rely on it).
//!
//! Defaults (as flannel's `CheckNetworkConfig`):
//! - `EnableIPv4` true, `EnableIPv6` false, `EnableNFTables` false;
//! - `SubnetLen` 24 when `Network` is /22 or wider, else prefix + 2; a
//!   network narrower than /28 is rejected; an explicit `SubnetLen` must be
//!   at most 30 and at least prefix + 2;
//! - `SubnetMin` is the second subnet (the first one is skipped: its `.0`
//!   would be the network address), `SubnetMax` the last one; both must lie
//!   in `Network` and on a `SubnetLen` boundary;
//! - IPv6 the same with /64 (prefix <= /62), max /126 and min network /124;
//! - `Backend.Type` empty or absent means `vxlan`. Go flannel's code falls
//!   back to `udp` (a backend it no longer ships) while its docs say vxlan:
//!   we follow the docs.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("net-conf.json is not valid JSON: {0}")]
    Json(String),
    #[error("net-conf.json: {0}")]
    Invalid(String),
}

/// The validated network configuration (defaults applied).
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    pub enable_ipv4: bool,
    pub enable_ipv6: bool,
    pub network: Option<Ipv4Net>,
    /// 0 when IPv4 is disabled.
    pub subnet_len: u8,
    /// The lowest subnet handed out (prefix `subnet_len`); `None` when IPv4
    /// is disabled.
    pub subnet_min: Option<Ipv4Net>,
    /// The highest subnet handed out (inclusive).
    pub subnet_max: Option<Ipv4Net>,
    pub ipv6_network: Option<Ipv6Net>,
    /// 0 when IPv6 is disabled.
    pub ipv6_subnet_len: u8,
    pub ipv6_subnet_min: Option<Ipv6Net>,
    pub ipv6_subnet_max: Option<Ipv6Net>,
    pub enable_nftables: bool,
    /// The backend's type, lower-cased (`vxlan` when absent: see the docs).
    pub backend_type: String,
    /// The whole `Backend` object, kept for the backend to parse; its keys
    /// keep their original case (backends match them case-insensitively).
    /// `Value::Null` when net-conf.json has no `Backend`.
    pub backend: serde_json::Value,
}

/// The backend used when net-conf.json names none.
pub const DEFAULT_BACKEND: &str = "vxlan";

impl NetworkConfig {
    /// Parses and validates net-conf.json text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| ConfigError::Json(e.to_string()))?;
        let Value::Object(obj) = value else {
            return Err(invalid("the top level must be a JSON object"));
        };
        let enable_ipv4 = get_bool(&obj, "EnableIPv4")?.unwrap_or(true);
        let enable_ipv6 = get_bool(&obj, "EnableIPv6")?.unwrap_or(false);
        let enable_nftables = get_bool(&obj, "EnableNFTables")?.unwrap_or(false);
        if !enable_ipv4 && !enable_ipv6 {
            return Err(invalid(
                "EnableIPv4 and EnableIPv6 are both false: enable at least one",
            ));
        }

        let backend = get(&obj, "Backend").cloned().unwrap_or(Value::Null);
        let backend_type = match &backend {
            Value::Null => DEFAULT_BACKEND.to_string(),
            Value::Object(b) => match get(b, "Type") {
                None | Some(Value::Null) => DEFAULT_BACKEND.to_string(),
                Some(Value::String(t)) if t.is_empty() => DEFAULT_BACKEND.to_string(),
                Some(Value::String(t)) => t.to_ascii_lowercase(),
                Some(other) => {
                    return Err(invalid(format!(
                        "Backend.Type must be a string, found {other}"
                    )))
                }
            },
            other => return Err(invalid(format!("Backend must be an object, found {other}"))),
        };

        let mut cfg = NetworkConfig {
            enable_ipv4,
            enable_ipv6,
            network: None,
            subnet_len: 0,
            subnet_min: None,
            subnet_max: None,
            ipv6_network: None,
            ipv6_subnet_len: 0,
            ipv6_subnet_min: None,
            ipv6_subnet_max: None,
            enable_nftables,
            backend_type,
            backend,
        };
        if enable_ipv4 {
            cfg.apply_v4(&obj)?;
        }
        if enable_ipv6 {
            cfg.apply_v6(&obj)?;
        }
        Ok(cfg)
    }

    fn apply_v4(&mut self, obj: &Map<String, Value>) -> Result<(), ConfigError> {
        let network = match get_str(obj, "Network")? {
            Some(s) => parse_v4_cidr("Network", s)?,
            None => return Err(invalid("Network is missing: set it to the cluster's IPv4 pod range, e.g. \"10.244.0.0/16\"")),
        };
        if network.prefix_len() == 0 && network.network().is_unspecified() {
            return Err(invalid("Network 0.0.0.0/0 is not a usable pod range: set Network to the cluster's IPv4 pod range"));
        }
        let prefix = network.prefix_len();
        let len = match get_uint(obj, "SubnetLen")? {
            Some(l) if l > 0 => {
                if l > 30 {
                    return Err(invalid(format!(
                        "SubnetLen {l} is too long: it must be at most 30"
                    )));
                }
                let l = l as u8;
                if l < prefix + 2 {
                    return Err(invalid(format!(
                        "SubnetLen {l} is too short for Network {network}: it must be at least {} so that the network holds four subnets",
                        prefix + 2
                    )));
                }
                l
            }
            _ => {
                if prefix > 28 {
                    return Err(invalid(format!(
                        "Network {network} is too small: the narrowest usable network is a /28"
                    )));
                }
                if prefix <= 22 {
                    24
                } else {
                    prefix + 2
                }
            }
        };
        let size = 1u64 << (32 - len);
        let base = u64::from(u32::from(network.network()));
        let last = base + (1u64 << (32 - prefix)) - size;
        let min = bound_v4(obj, "SubnetMin", network, len, base + size)?;
        let max = bound_v4(obj, "SubnetMax", network, len, last)?;
        if u32::from(min.network()) > u32::from(max.network()) {
            return Err(invalid(format!(
                "SubnetMin {} is above SubnetMax {}",
                min.network(),
                max.network()
            )));
        }
        self.network = Some(network);
        self.subnet_len = len;
        self.subnet_min = Some(min);
        self.subnet_max = Some(max);
        Ok(())
    }

    fn apply_v6(&mut self, obj: &Map<String, Value>) -> Result<(), ConfigError> {
        let network = match get_str(obj, "IPv6Network")? {
            Some(s) => parse_v6_cidr("IPv6Network", s)?,
            None => {
                return Err(invalid(
                    "IPv6Network is missing but EnableIPv6 is true: set it to the cluster's IPv6 pod range, e.g. \"fd00:10:244::/56\"",
                ))
            }
        };
        if network.prefix_len() == 0 && network.network().is_unspecified() {
            return Err(invalid("IPv6Network ::/0 is not a usable pod range"));
        }
        let prefix = network.prefix_len();
        let len = match get_uint(obj, "IPv6SubnetLen")? {
            Some(l) if l > 0 => {
                if l > 126 {
                    return Err(invalid(format!(
                        "IPv6SubnetLen {l} is too long: it must be at most 126"
                    )));
                }
                let l = l as u8;
                if l < prefix.saturating_add(2) {
                    return Err(invalid(format!(
                        "IPv6SubnetLen {l} is too short for IPv6Network {network}: it must be at least {}",
                        prefix + 2
                    )));
                }
                l
            }
            _ => {
                if prefix > 124 {
                    return Err(invalid(format!(
                        "IPv6Network {network} is too small: the narrowest usable network is a /124"
                    )));
                }
                if prefix <= 62 {
                    64
                } else {
                    prefix + 2
                }
            }
        };
        let size = 1u128 << (128 - len);
        let base = u128::from(network.network());
        // Wrapping: a /0-wide span does not fit u128, but /0 was rejected.
        let span = 1u128.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
        let last = base.wrapping_add(span).wrapping_sub(size);
        let min = bound_v6(obj, "IPv6SubnetMin", network, len, base + size)?;
        let max = bound_v6(obj, "IPv6SubnetMax", network, len, last)?;
        if u128::from(min.network()) > u128::from(max.network()) {
            return Err(invalid(format!(
                "IPv6SubnetMin {} is above IPv6SubnetMax {}",
                min.network(),
                max.network()
            )));
        }
        self.ipv6_network = Some(network);
        self.ipv6_subnet_len = len;
        self.ipv6_subnet_min = Some(min);
        self.ipv6_subnet_max = Some(max);
        Ok(())
    }

    /// True when `sn` is one of the IPv4 subnets this config hands out
    /// (right length, between SubnetMin and SubnetMax): flannel's
    /// `isSubnetConfigCompat`.
    pub fn fits_v4(&self, sn: Ipv4Net) -> bool {
        match (self.subnet_min, self.subnet_max) {
            (Some(min), Some(max)) => {
                let a = u32::from(sn.network());
                sn.prefix_len() == self.subnet_len
                    && a >= u32::from(min.network())
                    && a <= u32::from(max.network())
            }
            _ => false,
        }
    }

    /// The IPv6 counterpart of [`fits_v4`](Self::fits_v4).
    pub fn fits_v6(&self, sn: Ipv6Net) -> bool {
        match (self.ipv6_subnet_min, self.ipv6_subnet_max) {
            (Some(min), Some(max)) => {
                let a = u128::from(sn.network());
                sn.prefix_len() == self.ipv6_subnet_len
                    && a >= u128::from(min.network())
                    && a <= u128::from(max.network())
            }
            _ => false,
        }
    }

    /// True when a lease with these subnets belongs to this config: each
    /// enabled family has a fitting subnet and a disabled one has none.
    pub fn fits(&self, v4: Option<Ipv4Net>, v6: Option<Ipv6Net>) -> bool {
        let ok4 = match (self.enable_ipv4, v4) {
            (true, Some(n)) => self.fits_v4(n),
            (false, None) => true,
            _ => false,
        };
        let ok6 = match (self.enable_ipv6, v6) {
            (true, Some(n)) => self.fits_v6(n),
            (false, None) => true,
            _ => false,
        };
        ok4 && ok6
    }
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// Go's decoder prefers an exact key match and falls back to a
/// case-insensitive one.
pub(crate) fn get<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// JSON `null` leaves a Go field at its zero value: treat it as absent.
fn get_non_null<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    get(obj, key).filter(|v| !v.is_null())
}

fn get_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, ConfigError> {
    match get_non_null(obj, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(invalid(format!(
            "{key} must be true or false, found {other}"
        ))),
    }
}

fn get_str<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, ConfigError> {
    match get_non_null(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(invalid(format!("{key} must be a string, found {other}"))),
    }
}

fn get_uint(obj: &Map<String, Value>, key: &str) -> Result<Option<u64>, ConfigError> {
    match get_non_null(obj, key) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) => Ok(Some(v)),
            None => Err(invalid(format!(
                "{key} must be a non-negative integer, found {n}"
            ))),
        },
        Some(other) => Err(invalid(format!("{key} must be a number, found {other}"))),
    }
}

/// Go's `net.ParseCIDR` keeps the network part only (`10.1.2.3/16` is
/// `10.1.0.0/16`).
fn parse_v4_cidr(key: &str, s: &str) -> Result<Ipv4Net, ConfigError> {
    s.parse::<Ipv4Net>().map(|n| n.trunc()).map_err(|_| {
        invalid(format!(
            "{key} {s:?} is not an IPv4 CIDR such as \"10.244.0.0/16\""
        ))
    })
}

fn parse_v6_cidr(key: &str, s: &str) -> Result<Ipv6Net, ConfigError> {
    s.parse::<Ipv6Net>().map(|n| n.trunc()).map_err(|_| {
        invalid(format!(
            "{key} {s:?} is not an IPv6 CIDR such as \"fd00:10:244::/56\""
        ))
    })
}

fn bound_v4(
    obj: &Map<String, Value>,
    key: &str,
    network: Ipv4Net,
    len: u8,
    default: u64,
) -> Result<Ipv4Net, ConfigError> {
    let addr = match get_str(obj, key)? {
        None => None,
        Some(s) => {
            let a: Ipv4Addr = s
                .parse()
                .map_err(|_| invalid(format!("{key} {s:?} is not an IPv4 address")))?;
            // Go treats 0.0.0.0 as "not set".
            (!a.is_unspecified()).then_some(a)
        }
    };
    let addr = match addr {
        Some(a) => {
            if !network.contains(&a) {
                return Err(invalid(format!(
                    "{key} {a} is not inside Network {network}"
                )));
            }
            let net =
                Ipv4Net::new(a, len).map_err(|_| invalid(format!("{key}: bad length {len}")))?;
            if net.network() != a {
                return Err(invalid(format!(
                    "{key} {a} is not on a /{len} boundary (SubnetLen): use {}",
                    net.network()
                )));
            }
            a
        }
        None => Ipv4Addr::from(default as u32),
    };
    Ipv4Net::new(addr, len).map_err(|_| invalid(format!("{key}: bad length {len}")))
}

fn bound_v6(
    obj: &Map<String, Value>,
    key: &str,
    network: Ipv6Net,
    len: u8,
    default: u128,
) -> Result<Ipv6Net, ConfigError> {
    let addr = match get_str(obj, key)? {
        None => None,
        Some(s) => {
            let a: Ipv6Addr = s
                .parse()
                .map_err(|_| invalid(format!("{key} {s:?} is not an IPv6 address")))?;
            (!a.is_unspecified()).then_some(a)
        }
    };
    let addr = match addr {
        Some(a) => {
            if !network.contains(&a) {
                return Err(invalid(format!(
                    "{key} {a} is not inside IPv6Network {network}"
                )));
            }
            let net =
                Ipv6Net::new(a, len).map_err(|_| invalid(format!("{key}: bad length {len}")))?;
            if net.network() != a {
                return Err(invalid(format!(
                    "{key} {a} is not on a /{len} boundary (IPv6SubnetLen): use {}",
                    net.network()
                )));
            }
            a
        }
        None => Ipv6Addr::from(default),
    };
    Ipv6Net::new(addr, len).map_err(|_| invalid(format!("{key}: bad length {len}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> NetworkConfig {
        match NetworkConfig::parse(s) {
            Ok(c) => c,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    fn err(s: &str) -> String {
        match NetworkConfig::parse(s) {
            Ok(c) => panic!("{s} parsed as {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_for_a_slash_16() {
        let c = p(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#);
        assert!(c.enable_ipv4 && !c.enable_ipv6 && !c.enable_nftables);
        assert_eq!(c.network, Some("10.244.0.0/16".parse().unwrap()));
        assert_eq!(c.subnet_len, 24);
        assert_eq!(c.subnet_min, Some("10.244.1.0/24".parse().unwrap()));
        assert_eq!(c.subnet_max, Some("10.244.255.0/24".parse().unwrap()));
        assert_eq!(c.backend_type, "vxlan");
        assert_eq!(c.backend["Type"], "vxlan");
    }

    #[test]
    fn subnet_len_default_for_narrow_networks() {
        let c = p(r#"{"Network":"10.0.0.0/26"}"#);
        assert_eq!(c.subnet_len, 28);
        assert_eq!(c.subnet_min, Some("10.0.0.16/28".parse().unwrap()));
        assert_eq!(c.subnet_max, Some("10.0.0.48/28".parse().unwrap()));
        assert_eq!(p(r#"{"Network":"10.0.0.0/22"}"#).subnet_len, 24);
        assert_eq!(p(r#"{"Network":"10.0.0.0/23"}"#).subnet_len, 25);
        assert_eq!(p(r#"{"Network":"10.0.0.0/28"}"#).subnet_len, 30);
        assert!(err(r#"{"Network":"10.0.0.0/29"}"#).contains("/28"));
    }

    #[test]
    fn keys_are_case_insensitive_and_exact_match_wins() {
        let c = p(r#"{"network":"10.5.0.0/16","SUBNETLEN":26,"backend":{"type":"Host-GW"}}"#);
        assert_eq!(c.subnet_len, 26);
        assert_eq!(c.backend_type, "host-gw");
        let c = p(r#"{"network":"10.6.0.0/16","Network":"10.5.0.0/16"}"#);
        assert_eq!(c.network, Some("10.5.0.0/16".parse().unwrap()));
    }

    #[test]
    fn empty_or_absent_backend_type_means_vxlan() {
        assert_eq!(p(r#"{"Network":"10.5.0.0/16"}"#).backend_type, "vxlan");
        assert_eq!(p(r#"{"Network":"10.5.0.0/16"}"#).backend, Value::Null);
        assert_eq!(
            p(r#"{"Network":"10.5.0.0/16","Backend":{}}"#).backend_type,
            "vxlan"
        );
        assert_eq!(
            p(r#"{"Network":"10.5.0.0/16","Backend":{"Type":""}}"#).backend_type,
            "vxlan"
        );
        assert!(err(r#"{"Network":"10.5.0.0/16","Backend":"vxlan"}"#)
            .contains("Backend must be an object"));
        assert!(err(r#"{"Network":"10.5.0.0/16","Backend":{"Type":1}}"#).contains("Backend.Type"));
    }

    #[test]
    fn backend_options_keep_their_case() {
        let c = p(
            r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","vni":4,"DirectRouting":true}}"#,
        );
        assert_eq!(c.backend["vni"], 4);
        assert_eq!(c.backend["DirectRouting"], true);
    }

    #[test]
    fn network_host_bits_are_dropped_like_go() {
        let c = p(r#"{"Network":"10.5.3.7/16"}"#);
        assert_eq!(c.network, Some("10.5.0.0/16".parse().unwrap()));
    }

    #[test]
    fn subnet_len_bounds() {
        assert!(err(r#"{"Network":"10.5.0.0/16","SubnetLen":31}"#).contains("at most 30"));
        assert!(err(r#"{"Network":"10.5.0.0/16","SubnetLen":17}"#).contains("at least 18"));
        assert_eq!(
            p(r#"{"Network":"10.5.0.0/16","SubnetLen":18}"#).subnet_len,
            18
        );
        assert_eq!(
            p(r#"{"Network":"10.5.0.0/16","SubnetLen":0}"#).subnet_len,
            24
        );
        assert!(err(r#"{"Network":"10.5.0.0/16","SubnetLen":-1}"#).contains("non-negative"));
    }

    #[test]
    fn explicit_min_and_max() {
        let c = p(r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.10.0","SubnetMax":"10.5.20.0"}"#);
        assert_eq!(c.subnet_min, Some("10.5.10.0/24".parse().unwrap()));
        assert_eq!(c.subnet_max, Some("10.5.20.0/24".parse().unwrap()));
        assert!(err(r#"{"Network":"10.5.0.0/16","SubnetMin":"10.6.0.0"}"#)
            .contains("not inside Network"));
        assert!(err(r#"{"Network":"10.5.0.0/16","SubnetMax":"10.4.0.0"}"#)
            .contains("not inside Network"));
        assert!(err(r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.1.1"}"#).contains("boundary"));
        assert!(
            err(r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.9.0","SubnetMax":"10.5.8.0"}"#)
                .contains("above")
        );
        assert!(err(r#"{"Network":"10.5.0.0/16","SubnetMin":"x"}"#).contains("not an IPv4 address"));
        // Go treats 0.0.0.0 as unset.
        let c = p(r#"{"Network":"10.5.0.0/16","SubnetMin":"0.0.0.0"}"#);
        assert_eq!(c.subnet_min, Some("10.5.1.0/24".parse().unwrap()));
    }

    #[test]
    fn missing_or_bad_network() {
        assert!(err(r#"{}"#).contains("Network is missing"));
        assert!(err(r#"{"Network":null}"#).contains("Network is missing"));
        assert!(err(r#"{"Network":"10.5.0.0"}"#).contains("not an IPv4 CIDR"));
        assert!(err(r#"{"Network":16}"#).contains("must be a string"));
        assert!(err(r#"{"Network":"0.0.0.0/0"}"#).contains("not a usable"));
        assert!(err(r#"[1]"#).contains("object"));
        assert!(matches!(
            NetworkConfig::parse("{"),
            Err(ConfigError::Json(_))
        ));
        assert!(err(r#"{"Network":"10.5.0.0/16","EnableIPv4":"yes"}"#).contains("true or false"));
    }

    #[test]
    fn ipv6_defaults_and_dual_stack() {
        let c =
            p(r#"{"EnableIPv6":true,"Network":"10.42.0.0/16","IPv6Network":"2001:cafe:42::/56"}"#);
        assert!(c.enable_ipv4 && c.enable_ipv6);
        assert_eq!(c.ipv6_subnet_len, 64);
        assert_eq!(
            c.ipv6_subnet_min,
            Some("2001:cafe:42:1::/64".parse().unwrap())
        );
        assert_eq!(
            c.ipv6_subnet_max,
            Some("2001:cafe:42:ff::/64".parse().unwrap())
        );
        let c = p(r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/120"}"#);
        assert!(!c.enable_ipv4);
        assert_eq!(c.network, None);
        assert_eq!(c.subnet_min, None);
        assert_eq!(c.ipv6_subnet_len, 122);
        assert_eq!(c.ipv6_subnet_min, Some("fd00::40/122".parse().unwrap()));
        assert_eq!(c.ipv6_subnet_max, Some("fd00::c0/122".parse().unwrap()));
        assert!(err(r#"{"EnableIPv6":true,"Network":"10.42.0.0/16"}"#)
            .contains("IPv6Network is missing"));
        assert!(
            err(r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/125"}"#)
                .contains("/124")
        );
        assert!(err(r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetLen":127}"#).contains("126"));
        assert!(err(
            r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetLen":57}"#
        )
        .contains("at least 58"));
        assert!(err(r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetMin":"fd00:0:0:1::1"}"#).contains("boundary"));
        assert!(err(r#"{"EnableIPv4":false}"#).contains("both false"));
    }

    #[test]
    fn fits_checks_length_and_range() {
        let c = p(r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.10.0","SubnetMax":"10.5.20.0"}"#);
        assert!(c.fits_v4("10.5.10.0/24".parse().unwrap()));
        assert!(c.fits_v4("10.5.20.0/24".parse().unwrap()));
        assert!(!c.fits_v4("10.5.21.0/24".parse().unwrap()));
        assert!(!c.fits_v4("10.5.9.0/24".parse().unwrap()));
        assert!(!c.fits_v4("10.5.12.0/25".parse().unwrap()));
        assert!(c.fits(Some("10.5.12.0/24".parse().unwrap()), None));
        assert!(!c.fits(
            Some("10.5.12.0/24".parse().unwrap()),
            Some("fd00::/64".parse().unwrap())
        ));
        assert!(!c.fits(None, None));
    }
}
