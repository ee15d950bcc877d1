//! The network configuration on stdin: decoded leniently (unknown keys and
//! `capabilities` are tolerated), then validated into a [`Config`].

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::env::valid_ifname;
use crate::error::{code, CniError};
use crate::version::{self, Version, VersionError};

pub const DEFAULT_BRIDGE: &str = "cni0";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot decode the network configuration on stdin: {0}")]
    Decode(String),
    #[error(transparent)]
    Version(#[from] VersionError),
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("unsupported field {field}: {why}")]
    Unsupported {
        field: &'static str,
        why: &'static str,
    },
}

impl From<ConfigError> for CniError {
    fn from(e: ConfigError) -> Self {
        let code = match &e {
            ConfigError::Decode(_) => code::DECODE_FAILURE,
            ConfigError::Version(_) => code::INCOMPATIBLE_VERSION,
            ConfigError::Invalid(_) => code::INVALID_CONFIG,
            ConfigError::Unsupported { .. } => code::UNSUPPORTED_FIELD,
        };
        CniError::new(code, e.to_string())
    }
}

/// One port mapping, passed through to `portmap`. containerd's CRI sends
/// capitalised keys, podman lower-case ones: accept both.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    #[serde(alias = "HostPort")]
    pub host_port: u16,
    #[serde(alias = "ContainerPort")]
    pub container_port: u16,
    #[serde(alias = "Protocol", default)]
    pub protocol: String,
    #[serde(alias = "HostIP", alias = "hostIP", default)]
    pub host_ip: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct ArgsCni {
    #[serde(default)]
    ips: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Args {
    #[serde(default)]
    cni: ArgsCni,
}

/// One `{containerID, ifname}` of GC's attachment list.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GcAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    #[serde(default)]
    name: String,
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default)]
    subnet_file: Option<PathBuf>,
    #[serde(default)]
    data_dir: Option<PathBuf>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    hairpin_mode: bool,
    #[serde(default)]
    is_default_gateway: bool,
    #[serde(default)]
    ip_masq: bool,
    #[serde(default)]
    runtime_config: RuntimeConfig,
    #[serde(default)]
    args: Args,
    #[serde(default)]
    prev_result: Option<serde_json::Value>,
    #[serde(rename = "cni.dev/attachments", default)]
    attachments: Option<Vec<GcAttachment>>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    valid_attachments: Option<Vec<GcAttachment>>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub version: Version,
    pub name: String,
    pub bridge: String,
    pub subnet_file: PathBuf,
    pub data_dir: PathBuf,
    pub mtu: Option<u32>,
    pub hairpin_mode: bool,
    pub is_default_gateway: bool,
    pub runtime_config: RuntimeConfig,
    pub args_ips: Vec<String>,
    pub prev_result: Option<serde_json::Value>,
    /// GC's keep-list (`cni.dev/attachments`, else `cni.dev/valid-attachments`).
    pub gc_attachments: Option<Vec<GcAttachment>>,
}

/// The version a raw input asks for, for answering even undecodable input
/// in the caller's version where possible.
pub fn requested_version(input: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(input).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

pub fn parse(input: &[u8]) -> Result<Config, ConfigError> {
    let value: serde_json::Value =
        serde_json::from_slice(input).map_err(|e| ConfigError::Decode(e.to_string()))?;
    if !value.is_object() {
        return Err(ConfigError::Decode("expected a JSON object".into()));
    }
    let cni_version = match value.get("cniVersion") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(ConfigError::Decode("cniVersion must be a string".into())),
    };
    let cni_versions: Option<Vec<String>> = match value.get("cniVersions") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(
            serde_json::from_value(v.clone())
                .map_err(|e| ConfigError::Decode(format!("cniVersions: {e}")))?,
        ),
    };
    let version = version::select(cni_version, cni_versions.as_deref())?;
    let raw: RawConf =
        serde_json::from_value(value).map_err(|e| ConfigError::Decode(e.to_string()))?;
    validate(raw, version)
}

fn validate(raw: RawConf, version: Version) -> Result<Config, ConfigError> {
    // The name becomes a directory under dataDir, as with host-local.
    if raw.name.is_empty()
        || raw.name == "."
        || raw.name == ".."
        || raw.name.contains('/')
        || raw.name.contains('\0')
    {
        return Err(ConfigError::Invalid(format!(
            "\"name\" {:?} must be a non-empty network name without '/'",
            raw.name
        )));
    }
    let bridge = raw.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
    if !valid_ifname(&bridge) {
        return Err(ConfigError::Invalid(format!(
            "\"bridge\" {bridge:?} is not a valid interface name (1-15 bytes, no '/', ':' or spaces)"
        )));
    }
    if let Some(m) = raw.mtu {
        if !(68..=65535).contains(&m) {
            return Err(ConfigError::Invalid(format!(
                "\"mtu\" {m} is outside 68-65535"
            )));
        }
    }
    if raw.ip_masq {
        return Err(ConfigError::Unsupported {
            field: "ipMasq",
            why: "masquerade is done once per node by flanneld-rs (FLANNEL_IPMASQ); remove the key or set it to false",
        });
    }
    Ok(Config {
        version,
        name: raw.name,
        bridge,
        subnet_file: raw
            .subnet_file
            .unwrap_or_else(|| PathBuf::from(lease_store::subnet_env::DEFAULT_PATH)),
        data_dir: raw
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        mtu: raw.mtu,
        hairpin_mode: raw.hairpin_mode,
        is_default_gateway: raw.is_default_gateway,
        runtime_config: raw.runtime_config,
        args_ips: raw.args.cni.ips,
        prev_result: raw.prev_result,
        gc_attachments: raw.attachments.or(raw.valid_attachments),
    })
}

impl Config {
    /// The one IPv4 address the runtime asks for, from `runtimeConfig.ips`,
    /// `args.cni.ips` or `IP=` in CNI_ARGS. Entries may carry a prefix.
    pub fn requested_ip(
        &self,
        cni_args_ip: Option<Ipv4Addr>,
    ) -> Result<Option<Ipv4Addr>, ConfigError> {
        let mut found: Vec<Ipv4Addr> = Vec::new();
        for s in self.runtime_config.ips.iter().chain(self.args_ips.iter()) {
            let addr = s.split('/').next().unwrap_or(s);
            let ip: std::net::IpAddr = addr.parse().map_err(|_| {
                ConfigError::Invalid(format!("requested IP {s:?} is not an IP address"))
            })?;
            match ip {
                std::net::IpAddr::V4(v4) => found.push(v4),
                std::net::IpAddr::V6(_) => {
                    return Err(ConfigError::Invalid(format!(
                        "requested IP {s}: this plugin assigns IPv4 addresses only"
                    )))
                }
            }
        }
        found.extend(cni_args_ip);
        found.sort();
        found.dedup();
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            _ => Err(ConfigError::Invalid(format!(
                "several different IPv4 addresses requested ({found:?}); one attachment gets one"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_and_defaults() {
        let c = parse(br#"{"cniVersion":"1.0.0","name":"fl","type":"flannel-rs"}"#).unwrap();
        assert_eq!(c.version, Version::V1_0_0);
        assert_eq!(c.bridge, "cni0");
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.subnet_file, PathBuf::from("/run/flannel/subnet.env"));
        assert!(!c.hairpin_mode);
    }

    #[test]
    fn full_config_with_unknown_keys_and_capabilities() {
        let c = parse(br#"{"cniVersion":"1.1.0","name":"fl","type":"flannel-rs","bridge":"br9",
            "mtu":1400,"hairpinMode":true,"isDefaultGateway":true,"capabilities":{"portMappings":true},
            "somethingNew":{"x":1},
            "runtimeConfig":{"ips":["10.244.7.9/24"],"portMappings":[
               {"HostPort":8080,"ContainerPort":80,"Protocol":"tcp","HostIP":""},
               {"hostPort":8443,"containerPort":443,"protocol":"tcp"}]},
            "args":{"cni":{"ips":["10.244.7.9"]}}}"#)
        .unwrap();
        assert_eq!(c.bridge, "br9");
        assert_eq!(c.mtu, Some(1400));
        assert!(c.hairpin_mode && c.is_default_gateway);
        assert_eq!(c.runtime_config.port_mappings.len(), 2);
        assert_eq!(c.runtime_config.port_mappings[0].host_port, 8080);
        assert_eq!(c.runtime_config.port_mappings[1].container_port, 443);
        assert_eq!(
            c.requested_ip(None).unwrap(),
            Some(Ipv4Addr::new(10, 244, 7, 9))
        );
        assert!(c.requested_ip(Some(Ipv4Addr::new(10, 244, 7, 10))).is_err());
    }

    #[test]
    fn errors_have_the_right_codes() {
        let code_of = |s: &[u8]| CniError::from(parse(s).unwrap_err()).code;
        assert_eq!(code_of(b"{not json"), 6);
        assert_eq!(code_of(b"[]"), 6);
        assert_eq!(code_of(br#"{"cniVersion":"0.2.0","name":"x"}"#), 1);
        assert_eq!(code_of(br#"{"cniVersions":["0.1.0"],"name":"x"}"#), 1);
        assert_eq!(
            code_of(br#"{"cniVersion":"1.0.0","name":"x","mtu":"big"}"#),
            6
        );
        assert_eq!(code_of(br#"{"cniVersion":"1.0.0","name":""}"#), 7);
        assert_eq!(code_of(br#"{"cniVersion":"1.0.0","name":"../x"}"#), 7);
        assert_eq!(
            code_of(br#"{"cniVersion":"1.0.0","name":"x","bridge":"a-very-long-bridge-name"}"#),
            7
        );
        assert_eq!(code_of(br#"{"cniVersion":"1.0.0","name":"x","mtu":20}"#), 7);
        assert_eq!(
            code_of(br#"{"cniVersion":"1.0.0","name":"x","ipMasq":true}"#),
            2
        );
        let c = parse(br#"{"cniVersion":"1.0.0","name":"x","runtimeConfig":{"ips":["nope"]}}"#)
            .unwrap();
        assert!(c.requested_ip(None).is_err());
    }

    #[test]
    fn gc_lists() {
        let c = parse(br#"{"cniVersion":"1.1.0","name":"x","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#).unwrap();
        assert_eq!(c.gc_attachments.unwrap().len(), 1);
        let c = parse(br#"{"cniVersion":"1.1.0","name":"x","cni.dev/attachments":[]}"#).unwrap();
        assert_eq!(c.gc_attachments.unwrap().len(), 0);
    }

    #[test]
    fn requested_version_of_raw_input() {
        assert_eq!(
            requested_version(br#"{"cniVersion":"0.4.0"}"#).as_deref(),
            Some("0.4.0")
        );
        assert_eq!(requested_version(b"junk"), None);
    }
}
