//! Backend options from net-conf.json's `Backend` object. Keys are matched
//! case-insensitively, as Go flannel's JSON decoding does (`VNI`, `vni` and
//! `Vni` are one key).

use serde_json::Value;

use super::BackendError;

/// VXLAN options with flannel's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanOptions {
    pub vni: u32,
    /// UDP destination port; 0 in the config means the kernel's 8472.
    pub port: u16,
    /// Overlay MTU; `None` = underlay MTU minus the VXLAN overhead.
    pub mtu: Option<u32>,
    pub gbp: bool,
    pub learning: bool,
    pub direct_routing: bool,
}

pub use crate::model::DEFAULT_VXLAN_PORT;

impl VxlanOptions {
    pub fn parse(backend: &Value) -> Result<Self, BackendError> {
        let obj = match backend {
            Value::Object(o) => o,
            Value::Null => return Self::parse(&Value::Object(Default::default())),
            other => {
                return Err(BackendError::Config(format!(
                    "Backend must be a JSON object, got {other}"
                )))
            }
        };
        let get = |key: &str| {
            obj.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        };
        let vni = match get("VNI") {
            None => 1,
            Some(v) => {
                let n = uint(v, "VNI")?;
                if n >= 1 << 24 {
                    return Err(BackendError::Config(format!(
                        "VNI {n} is out of range (0-16777215)"
                    )));
                }
                n as u32
            }
        };
        let port = match get("Port") {
            None => DEFAULT_VXLAN_PORT,
            Some(v) => match uint(v, "Port")? {
                0 => DEFAULT_VXLAN_PORT,
                p if p <= u64::from(u16::MAX) => p as u16,
                p => {
                    return Err(BackendError::Config(format!(
                        "Port {p} is out of range (1-65535, 0 = 8472)"
                    )))
                }
            },
        };
        let mtu = match get("MTU") {
            None => None,
            Some(v) => match uint(v, "MTU")? {
                0 => None,
                m if (68..=65535).contains(&m) => Some(m as u32),
                m => {
                    return Err(BackendError::Config(format!(
                        "MTU {m} is out of range (68-65535, 0 = automatic)"
                    )))
                }
            },
        };
        Ok(VxlanOptions {
            vni,
            port,
            mtu,
            gbp: flag(get("GBP"), "GBP")?,
            learning: flag(get("Learning"), "Learning")?,
            direct_routing: flag(get("DirectRouting"), "DirectRouting")?,
        })
    }
}

fn uint(v: &Value, key: &str) -> Result<u64, BackendError> {
    v.as_u64().ok_or_else(|| {
        BackendError::Config(format!(
            "Backend.{key} must be a non-negative integer, got {v}"
        ))
    })
}

fn flag(v: Option<&Value>, key: &str) -> Result<bool, BackendError> {
    match v {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(BackendError::Config(format!(
            "Backend.{key} must be true or false, got {other}"
        ))),
    }
}

/// A key of a peer's `BackendData`, case-insensitively.
pub fn data_field<'a>(data: &'a Value, key: &str) -> Option<&'a Value> {
    data.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_match_flannel() {
        let o = VxlanOptions::parse(&json!({"Type": "vxlan"})).unwrap();
        assert_eq!(
            o,
            VxlanOptions {
                vni: 1,
                port: 8472,
                mtu: None,
                gbp: false,
                learning: false,
                direct_routing: false
            }
        );
    }

    #[test]
    fn keys_are_case_insensitive() {
        for key in ["VNI", "vni", "Vni"] {
            let o = VxlanOptions::parse(&json!({"Type": "vxlan", key: 42, "port": 4789, "directrouting": true, "Gbp": true})).unwrap();
            assert_eq!(
                (o.vni, o.port, o.direct_routing, o.gbp),
                (42, 4789, true, true),
                "{key}"
            );
        }
    }

    #[test]
    fn port_zero_is_the_kernel_default() {
        assert_eq!(VxlanOptions::parse(&json!({"Port": 0})).unwrap().port, 8472);
    }

    #[test]
    fn bad_values_are_rejected_with_the_key_named() {
        for (bad, key) in [
            (json!({"VNI": 16777216}), "VNI"),
            (json!({"VNI": -1}), "VNI"),
            (json!({"Port": 70000}), "Port"),
            (json!({"MTU": 20}), "MTU"),
            (json!({"GBP": "yes"}), "GBP"),
        ] {
            let e = VxlanOptions::parse(&bad).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn data_fields_ignore_case() {
        let d = json!({"vtepmac": "0a:00:00:00:00:01"});
        assert_eq!(data_field(&d, "VtepMAC"), Some(&json!("0a:00:00:00:00:01")));
        assert_eq!(data_field(&json!(null), "VtepMAC"), None);
    }
}
