//! Which datapath a node runs, from net-conf.json's `Backend` object and the
//! node's `--datapath-mode`.
//!
//! Two questions are kept apart. The *encapsulation* (`Type`: vxlan or
//! geneve, with VNI and port) is cluster-wide: it is what goes on the wire
//! and what peers see in the lease's `BackendType`. The *datapath* (`Mode`)
//! is how this node implements it: kernel VXLAN with per-peer FDB entries
//! (flannel's way), a kernel device in metadata (external) mode with
//! per-route encapsulation, or the userspace TUN datapath. Nodes with
//! different datapaths of the same encapsulation interoperate, so a node
//! may override the mode (`--datapath-mode`) for its kernel's sake.

use std::time::Duration;

use serde_json::Value;

use super::options::VxlanOptions;
use super::BackendError;
pub use crate::model::{Encap, Underlay, GENEVE_PORT};

/// How this node implements the encapsulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datapath {
    /// Kernel VXLAN device with one VNI and per-peer neighbour + FDB
    /// entries: Go flannel's programming (VXLAN only).
    KernelFdb,
    /// Kernel device in metadata (external) mode; each peer route carries
    /// `encap ip id <VNI> dst <peer>`.
    KernelMetadata,
    /// TUN device and a UDP socket in this process.
    Userspace,
}

/// A `--datapath-mode` value: overrides `Backend.Mode` on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DatapathMode {
    /// The encapsulation's kernel default: FDB for VXLAN, metadata for Geneve.
    Kernel,
    /// Kernel VXLAN with per-peer FDB entries.
    Fdb,
    /// Kernel device in metadata (external) mode.
    Metadata,
    /// The userspace TUN datapath.
    Userspace,
}

/// What to do when the kernel cannot create the device (no module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Fail with one clear line.
    None,
    /// Log one clear line and run the userspace datapath instead.
    Userspace,
}

/// A tunnel backend, fully resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelSpec {
    pub encap: Encap,
    pub datapath: Datapath,
    pub fallback: Fallback,
    pub vni: u32,
    pub port: u16,
    /// Overlay MTU; `None` = underlay MTU minus the encapsulation overhead.
    pub mtu: Option<u32>,
    /// VXLAN-only flannel options (DirectRouting, GBP, Learning) as parsed.
    pub vxlan: VxlanOptions,
    /// The underlay's address family (`Backend.Underlay`, default ipv4).
    pub underlay: Underlay,
    /// Userspace datapath: how long a queue thread keeps looking for
    /// packets after its last one before it sleeps (a node setting:
    /// `--userspace-busy-poll`, not in net-conf.json).
    pub busy_poll: Duration,
    /// Userspace datapath: queues (threads, TUN fds, sockets); None: one per
    /// CPU up to 4 (`--userspace-queues`, a node setting too).
    pub queues: Option<usize>,
}

/// `TunnelSpec::busy_poll` unless the node says otherwise: covers a
/// request/response turnaround on a busy node, costs at most this much CPU
/// per burst of packets.
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(100);

/// What a node may set for itself on top of net-conf.json's Backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeOverrides {
    /// `--datapath-mode`: replaces `Backend.Mode`.
    pub mode: Option<DatapathMode>,
    /// `--userspace-busy-poll`.
    pub busy_poll: Duration,
    /// `--userspace-queues` (None: automatic).
    pub queues: Option<usize>,
}

impl Default for NodeOverrides {
    fn default() -> Self {
        NodeOverrides {
            mode: None,
            busy_poll: DEFAULT_BUSY_POLL,
            queues: None,
        }
    }
}

/// The backend a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendSpec {
    HostGw,
    Tunnel(TunnelSpec),
}

impl BackendSpec {
    /// Resolves net-conf.json's `Backend` (type already lower-cased by the
    /// lease store) and this node's override.
    pub fn parse(
        backend_type: &str,
        backend: &Value,
        mode_override: Option<DatapathMode>,
    ) -> Result<BackendSpec, BackendError> {
        let get = |key: &str| -> Option<&Value> {
            backend
                .as_object()?
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        };
        let text = |key: &str| -> Result<Option<String>, BackendError> {
            match get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.to_ascii_lowercase())),
                Some(other) => Err(BackendError::Config(format!(
                    "Backend.{key} must be a string, got {other}"
                ))),
            }
        };
        let (encap, mut mode) = match backend_type {
            "host-gw" => {
                if !matches!(text("Underlay")?.as_deref(), None | Some("ipv4")) {
                    return Err(BackendError::Config(
                        "Backend.Underlay is for the tunnel backends: host-gw routes IPv4 pod traffic via the peers' IPv4 addresses"
                            .into(),
                    ));
                }
                if let Some(m) = mode_override {
                    return Err(BackendError::Config(format!(
                        "--datapath-mode {} does not apply to the host-gw backend (it has no tunnel)",
                        mode_name(m)
                    )));
                }
                return Ok(BackendSpec::HostGw);
            }
            "vxlan" => (Encap::Vxlan, text("Mode")?),
            "geneve" => (Encap::Geneve, text("Mode")?),
            // The "Backend userspace": the encapsulation in `Encap`.
            "userspace" => {
                let encap = match text("Encap")?.as_deref() {
                    None | Some("vxlan") => Encap::Vxlan,
                    Some("geneve") => Encap::Geneve,
                    Some(other) => {
                        return Err(BackendError::Config(format!(
                            "Backend.Encap {other:?} is not vxlan or geneve"
                        )))
                    }
                };
                (encap, Some("userspace".to_string()))
            }
            other => return Err(BackendError::Unsupported(other.to_string())),
        };
        if let Some(m) = mode_override {
            mode = Some(mode_name(m).to_string());
        }
        let datapath = match (encap, mode.as_deref()) {
            (Encap::Vxlan, None | Some("fdb") | Some("kernel")) => Datapath::KernelFdb,
            (Encap::Geneve, None | Some("kernel") | Some("metadata")) => Datapath::KernelMetadata,
            (Encap::Vxlan, Some("metadata")) => Datapath::KernelMetadata,
            (_, Some("userspace")) => Datapath::Userspace,
            (Encap::Geneve, Some("fdb")) => {
                return Err(BackendError::Config(
                    "Geneve has no FDB mode: use Mode \"kernel\" (metadata) or \"userspace\""
                        .into(),
                ))
            }
            (_, Some(other)) => {
                return Err(BackendError::Config(format!(
                    "Backend.Mode {other:?} is not one of fdb (vxlan only), kernel, metadata, userspace"
                )))
            }
        };
        let fallback = match text("Fallback")?.as_deref() {
            None | Some("none") => Fallback::None,
            Some("userspace") => Fallback::Userspace,
            Some(other) => {
                return Err(BackendError::Config(format!(
                    "Backend.Fallback {other:?} is not \"userspace\" or \"none\""
                )))
            }
        };
        // VNI, Port, MTU and the VXLAN flags share flannel's parsing and
        // checks; only the default port differs for Geneve.
        let vxlan = VxlanOptions::parse(backend)?;
        let port_given = get("Port").and_then(Value::as_u64).is_some_and(|p| p != 0);
        let port = if port_given {
            vxlan.port
        } else {
            encap.default_port()
        };
        if encap == Encap::Geneve && (vxlan.gbp || vxlan.direct_routing || vxlan.learning) {
            return Err(BackendError::Config(
                "GBP, DirectRouting and Learning are VXLAN options; remove them from a geneve Backend"
                    .into(),
            ));
        }
        if datapath != Datapath::KernelFdb && (vxlan.gbp || vxlan.learning) {
            return Err(BackendError::Config(
                "GBP and Learning need the kernel FDB datapath (Mode \"fdb\")".into(),
            ));
        }
        let underlay = match text("Underlay")?.as_deref() {
            None | Some("ipv4") => Underlay::Ipv4,
            Some("ipv6") => Underlay::Ipv6,
            Some(other) => {
                return Err(BackendError::Config(format!(
                    "Backend.Underlay {other:?} is not \"ipv4\" or \"ipv6\""
                )))
            }
        };
        if underlay == Underlay::Ipv6 && datapath == Datapath::KernelFdb {
            return Err(BackendError::Config(
                "Underlay \"ipv6\" needs Mode \"metadata\" or \"userspace\": the FDB datapath (flannel's) runs over IPv4 only"
                    .into(),
            ));
        }
        if underlay == Underlay::Ipv6 && vxlan.direct_routing {
            return Err(BackendError::Config(
                "DirectRouting routes pod traffic via the peers' IPv4 addresses: remove it, or use Underlay \"ipv4\""
                    .into(),
            ));
        }
        Ok(BackendSpec::Tunnel(TunnelSpec {
            encap,
            datapath,
            fallback,
            vni: vxlan.vni,
            port,
            mtu: vxlan.mtu,
            vxlan,
            underlay,
            busy_poll: DEFAULT_BUSY_POLL,
            queues: None,
        }))
    }
}

fn mode_name(m: DatapathMode) -> &'static str {
    match m {
        DatapathMode::Kernel => "kernel",
        DatapathMode::Fdb => "fdb",
        DatapathMode::Metadata => "metadata",
        DatapathMode::Userspace => "userspace",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tunnel(t: &str, b: Value, o: Option<DatapathMode>) -> TunnelSpec {
        match BackendSpec::parse(t, &b, o).unwrap() {
            BackendSpec::Tunnel(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ipv6_underlay_for_metadata_and_userspace_only() {
        let s = tunnel("geneve", json!({"Underlay": "IPv6"}), None);
        assert_eq!((s.underlay, s.underlay.overhead()), (Underlay::Ipv6, 70));
        let s = tunnel(
            "vxlan",
            json!({"Mode": "userspace", "Underlay": "ipv6"}),
            None,
        );
        assert_eq!(s.underlay, Underlay::Ipv6);
        let s = tunnel("vxlan", json!({}), None);
        assert_eq!((s.underlay, s.underlay.overhead()), (Underlay::Ipv4, 50));
        let err = |t: &str, b: Value, o| BackendSpec::parse(t, &b, o).unwrap_err().to_string();
        assert!(err("vxlan", json!({"Underlay": "ipv6"}), None).contains("FDB datapath"));
        assert!(err(
            "geneve",
            json!({"Underlay": "ipv6"}),
            Some(DatapathMode::Fdb)
        )
        .contains("no FDB mode"));
        assert!(err(
            "vxlan",
            json!({"Mode": "metadata", "Underlay": "ipv6", "DirectRouting": true}),
            None
        )
        .contains("DirectRouting"));
        assert!(
            err("vxlan", json!({"Mode": "metadata", "Underlay": "v6"}), None)
                .contains("\"v6\" is not")
        );
        assert!(err("host-gw", json!({"Underlay": "ipv6"}), None).contains("tunnel backends"));
        assert!(BackendSpec::parse("host-gw", &json!({"Underlay": "ipv4"}), None).is_ok());
    }

    #[test]
    fn vxlan_defaults_to_flannels_fdb_programming() {
        let s = tunnel("vxlan", json!({"Type": "vxlan"}), None);
        assert_eq!(
            (s.encap, s.datapath, s.fallback, s.vni, s.port, s.mtu),
            (
                Encap::Vxlan,
                Datapath::KernelFdb,
                Fallback::None,
                1,
                8472,
                None
            )
        );
    }

    #[test]
    fn modes_and_types() {
        let cases = [
            (
                "vxlan",
                json!({"Mode": "metadata"}),
                Encap::Vxlan,
                Datapath::KernelMetadata,
            ),
            (
                "vxlan",
                json!({"mode": "Userspace"}),
                Encap::Vxlan,
                Datapath::Userspace,
            ),
            ("geneve", json!({}), Encap::Geneve, Datapath::KernelMetadata),
            (
                "geneve",
                json!({"Mode": "kernel"}),
                Encap::Geneve,
                Datapath::KernelMetadata,
            ),
            (
                "geneve",
                json!({"Mode": "userspace"}),
                Encap::Geneve,
                Datapath::Userspace,
            ),
            (
                "userspace",
                json!({"Encap": "geneve"}),
                Encap::Geneve,
                Datapath::Userspace,
            ),
            ("userspace", json!({}), Encap::Vxlan, Datapath::Userspace),
        ];
        for (t, b, encap, dp) in cases {
            let s = tunnel(t, b.clone(), None);
            assert_eq!((s.encap, s.datapath), (encap, dp), "{t} {b}");
        }
    }

    #[test]
    fn geneve_port_defaults_to_6081_and_can_be_set() {
        assert_eq!(tunnel("geneve", json!({}), None).port, 6081);
        assert_eq!(tunnel("geneve", json!({"Port": 0}), None).port, 6081);
        assert_eq!(tunnel("geneve", json!({"Port": 7000}), None).port, 7000);
        assert_eq!(tunnel("vxlan", json!({"Port": 4789}), None).port, 4789);
    }

    #[test]
    fn the_node_override_wins_over_the_config() {
        let s = tunnel(
            "vxlan",
            json!({"Mode": "metadata"}),
            Some(DatapathMode::Userspace),
        );
        assert_eq!(s.datapath, Datapath::Userspace);
        let s = tunnel(
            "geneve",
            json!({"Mode": "userspace"}),
            Some(DatapathMode::Kernel),
        );
        assert_eq!(s.datapath, Datapath::KernelMetadata);
        let s = tunnel("userspace", json!({}), Some(DatapathMode::Kernel));
        assert_eq!((s.encap, s.datapath), (Encap::Vxlan, Datapath::KernelFdb));
    }

    #[test]
    fn fallback_is_parsed() {
        let s = tunnel("geneve", json!({"Fallback": "userspace"}), None);
        assert_eq!(s.fallback, Fallback::Userspace);
    }

    #[test]
    fn bad_input_names_the_key() {
        for (t, b, o, want) in [
            (
                "geneve",
                json!({"Mode": "fdb"}),
                None,
                "Geneve has no FDB mode",
            ),
            (
                "vxlan",
                json!({"Mode": "turbo"}),
                None,
                "Backend.Mode \"turbo\"",
            ),
            (
                "vxlan",
                json!({"Mode": 3}),
                None,
                "Backend.Mode must be a string",
            ),
            (
                "userspace",
                json!({"Encap": "gre"}),
                None,
                "Backend.Encap \"gre\"",
            ),
            (
                "geneve",
                json!({"Fallback": "maybe"}),
                None,
                "Backend.Fallback",
            ),
            (
                "geneve",
                json!({"DirectRouting": true}),
                None,
                "VXLAN options",
            ),
            (
                "vxlan",
                json!({"Mode": "metadata", "GBP": true}),
                None,
                "FDB datapath",
            ),
            (
                "host-gw",
                json!({}),
                Some(DatapathMode::Userspace),
                "host-gw",
            ),
            ("ipip", json!({}), None, "\"ipip\" is not supported"),
            ("geneve", json!({"VNI": 16777216}), None, "VNI"),
        ] {
            let e = BackendSpec::parse(t, &b, o).unwrap_err().to_string();
            assert!(e.contains(want), "{t} {b}: {e}");
        }
    }

    #[test]
    fn host_gw_has_no_tunnel() {
        assert_eq!(
            BackendSpec::parse("host-gw", &json!({}), None).unwrap(),
            BackendSpec::HostGw
        );
    }
}
