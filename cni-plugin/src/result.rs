//! The ADD result: one model, rendered in the shape of the version asked.
//! 0.3.x/0.4.0 carry `ips[].version`; 1.0.0 drops it; 1.1.0 adds the
//! interface `mtu`.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::version::Version;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default)]
    pub mac: String,
    #[serde(default)]
    pub sandbox: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IpConfig {
    pub address: IpNet,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    #[serde(default)]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default)]
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct CniResult {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Value,
}

#[derive(Debug, thiserror::Error)]
#[error("prevResult is not a CNI result: {0}")]
pub struct PrevResultError(String);

impl CniResult {
    /// Reads a `prevResult` of any supported version (the per-version
    /// differences are fields we ignore or default).
    pub fn from_prev(v: &Value) -> Result<Self, PrevResultError> {
        serde_json::from_value(v.clone()).map_err(|e| PrevResultError(e.to_string()))
    }

    /// Appends `ours` after this result, shifting its interface indices.
    pub fn chain(mut self, ours: CniResult) -> CniResult {
        let offset = self.interfaces.len();
        self.interfaces.extend(ours.interfaces);
        self.ips.extend(ours.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + offset);
            ip
        }));
        self.routes.extend(ours.routes);
        if self.dns.is_null() {
            self.dns = ours.dns;
        }
        self
    }

    pub fn to_json(&self, version: Version) -> Value {
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut o = Map::new();
                o.insert("name".into(), json!(i.name));
                o.insert("mac".into(), json!(i.mac));
                if let Some(s) = &i.sandbox {
                    o.insert("sandbox".into(), json!(s));
                }
                if version >= Version::V1_1_0 {
                    if let Some(m) = i.mtu {
                        o.insert("mtu".into(), json!(m));
                    }
                }
                Value::Object(o)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = Map::new();
                if version.has_ip_version_field() {
                    let fam = if ip.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    };
                    o.insert("version".into(), json!(fam));
                }
                o.insert("address".into(), json!(ip.address.to_string()));
                if let Some(g) = ip.gateway {
                    o.insert("gateway".into(), json!(g.to_string()));
                }
                if let Some(i) = ip.interface {
                    o.insert("interface".into(), json!(i));
                }
                Value::Object(o)
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut o = Map::new();
                o.insert("dst".into(), json!(r.dst.to_string()));
                if let Some(g) = r.gw {
                    o.insert("gw".into(), json!(g.to_string()));
                }
                Value::Object(o)
            })
            .collect();
        let dns = if self.dns.is_object() {
            self.dns.clone()
        } else {
            json!({})
        };
        json!({
            "cniVersion": version.as_str(),
            "interfaces": interfaces,
            "ips": ips,
            "routes": routes,
            "dns": dns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::SUPPORTED;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "cni0".into(),
                    mac: "02:00:00:00:00:01".into(),
                    sandbox: None,
                    mtu: Some(1450),
                },
                Interface {
                    name: "vethabc".into(),
                    mac: "02:00:00:00:00:02".into(),
                    sandbox: None,
                    mtu: Some(1450),
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:00:00:00:00:03".into(),
                    sandbox: Some("/var/run/netns/p".into()),
                    mtu: Some(1450),
                },
            ],
            ips: vec![IpConfig {
                address: "10.244.7.2/24".parse().unwrap(),
                gateway: Some("10.244.7.1".parse().unwrap()),
                interface: Some(2),
            }],
            routes: vec![Route {
                dst: "10.244.0.0/16".parse().unwrap(),
                gw: Some("10.244.7.1".parse().unwrap()),
            }],
            dns: Value::Null,
        }
    }

    #[test]
    fn shape_per_version() {
        for v in SUPPORTED {
            let j = sample().to_json(v);
            assert_eq!(j["cniVersion"], v.as_str());
            assert_eq!(j["interfaces"][2]["sandbox"], "/var/run/netns/p");
            assert_eq!(j["ips"][0]["address"], "10.244.7.2/24");
            assert_eq!(j["ips"][0]["gateway"], "10.244.7.1");
            assert_eq!(j["ips"][0]["interface"], 2);
            assert_eq!(j["routes"][0]["gw"], "10.244.7.1");
            assert!(j["dns"].is_object());
            assert_eq!(
                j["ips"][0].get("version").is_some(),
                v < Version::V1_0_0,
                "{v:?}"
            );
            assert_eq!(
                j["interfaces"][0].get("mtu").is_some(),
                v == Version::V1_1_0,
                "{v:?}"
            );
        }
    }

    #[test]
    fn prev_result_round_trip_and_chain() {
        for v in SUPPORTED {
            let back = CniResult::from_prev(&sample().to_json(v)).unwrap();
            assert_eq!(back.ips, sample().ips);
            assert_eq!(back.routes, sample().routes);
        }
        let prev = CniResult {
            interfaces: vec![Interface {
                name: "lo".into(),
                mac: String::new(),
                sandbox: Some("/x".into()),
                mtu: None,
            }],
            ..Default::default()
        };
        let chained = prev.chain(sample());
        assert_eq!(chained.interfaces.len(), 4);
        assert_eq!(chained.ips[0].interface, Some(3));
        assert!(CniResult::from_prev(&json!({"ips":[{"address":"garbage"}]})).is_err());
    }
}
