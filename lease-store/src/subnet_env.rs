//! `subnet.env`: the file through which the daemon tells the CNI plugin which
//! subnet this node holds. Format and key names are Go flannel's, so either
//! side can be swapped for flannel's own.
//!
//! ```text
//! FLANNEL_NETWORK=10.244.0.0/16
//! FLANNEL_SUBNET=10.244.4.1/24
//! FLANNEL_MTU=1450
//! FLANNEL_IPMASQ=true
//! ```

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use ipnet::{Ipv4Net, Ipv6Net};

/// Where flannel (and this project) keep the file by default.
pub const DEFAULT_PATH: &str = "/run/flannel/subnet.env";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubnetEnvError {
    #[error("line {line}: expected KEY=VALUE, found {text:?}")]
    Syntax { line: usize, text: String },
    #[error("{key} is missing; the daemon writes it once the node holds a lease")]
    Missing { key: &'static str },
    #[error("{key}={value:?} is not a valid {what}")]
    Invalid {
        key: &'static str,
        value: String,
        what: &'static str,
    },
    #[error("{key}={value} lies outside every network in {networks_key}")]
    OutsideNetwork {
        key: &'static str,
        value: String,
        networks_key: &'static str,
    },
    #[error("neither FLANNEL_SUBNET nor FLANNEL_IPV6_SUBNET is set")]
    NoSubnet,
}

#[derive(Debug, thiserror::Error)]
pub enum SubnetEnvIoError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: SubnetEnvError,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// The parsed contents of `subnet.env`.
///
/// `subnet` keeps the host part that flannel writes (`10.244.4.1/24`: the
/// first usable address with the subnet's prefix); `subnet.trunc()` gives the
/// network itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    pub networks: Vec<Ipv4Net>,
    pub subnet: Option<Ipv4Net>,
    pub ipv6_networks: Vec<Ipv6Net>,
    pub ipv6_subnet: Option<Ipv6Net>,
    pub mtu: u32,
    pub ipmasq: bool,
}

const K_NETWORK: &str = "FLANNEL_NETWORK";
const K_SUBNET: &str = "FLANNEL_SUBNET";
const K_V6_NETWORK: &str = "FLANNEL_IPV6_NETWORK";
const K_V6_SUBNET: &str = "FLANNEL_IPV6_SUBNET";
const K_MTU: &str = "FLANNEL_MTU";
const K_IPMASQ: &str = "FLANNEL_IPMASQ";

impl SubnetEnv {
    /// Builds the contents for a leased IPv4 subnet (the network address, as
    /// stored in the lease table); the gateway address `.1` is derived here.
    pub fn for_lease_v4(networks: Vec<Ipv4Net>, lease: Ipv4Net, mtu: u32, ipmasq: bool) -> Self {
        SubnetEnv {
            networks,
            subnet: Some(first_host_v4(lease)),
            ipv6_networks: Vec::new(),
            ipv6_subnet: None,
            mtu,
            ipmasq,
        }
    }

    /// Parses the file's text. Blank lines and `#` comments are skipped and
    /// unknown keys ignored (flannel's plugin does the same); values may be
    /// quoted, as a shell would write them.
    pub fn parse(text: &str) -> Result<Self, SubnetEnvError> {
        let mut networks = None;
        let mut subnet = None;
        let mut v6_networks = None;
        let mut v6_subnet = None;
        let mut mtu = None;
        let mut ipmasq = None;

        for (idx, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((key, value)) = line.split_once('=') else {
                return Err(SubnetEnvError::Syntax {
                    line: idx + 1,
                    text: truncate(raw),
                });
            };
            let value = unquote(value.trim());
            match key.trim() {
                K_NETWORK => networks = Some(parse_list::<Ipv4Net>(K_NETWORK, value)?),
                K_SUBNET => subnet = Some(parse_one::<Ipv4Net>(K_SUBNET, value, "IPv4 CIDR")?),
                K_V6_NETWORK => v6_networks = Some(parse_list::<Ipv6Net>(K_V6_NETWORK, value)?),
                K_V6_SUBNET => {
                    v6_subnet = Some(parse_one::<Ipv6Net>(K_V6_SUBNET, value, "IPv6 CIDR")?)
                }
                K_MTU => mtu = Some(parse_mtu(value)?),
                K_IPMASQ => ipmasq = Some(parse_bool(K_IPMASQ, value)?),
                _ => {}
            }
        }

        let networks = networks.unwrap_or_default();
        let ipv6_networks = v6_networks.unwrap_or_default();
        if subnet.is_none() && v6_subnet.is_none() {
            return Err(if networks.is_empty() && ipv6_networks.is_empty() {
                SubnetEnvError::Missing { key: K_SUBNET }
            } else {
                SubnetEnvError::NoSubnet
            });
        }
        if let Some(s) = subnet {
            if networks.is_empty() {
                return Err(SubnetEnvError::Missing { key: K_NETWORK });
            }
            if !networks.iter().any(|n| n.contains(&s.trunc())) {
                return Err(SubnetEnvError::OutsideNetwork {
                    key: K_SUBNET,
                    value: s.to_string(),
                    networks_key: K_NETWORK,
                });
            }
        }
        if let Some(s) = v6_subnet {
            if ipv6_networks.is_empty() {
                return Err(SubnetEnvError::Missing { key: K_V6_NETWORK });
            }
            if !ipv6_networks.iter().any(|n| n.contains(&s.trunc())) {
                return Err(SubnetEnvError::OutsideNetwork {
                    key: K_V6_SUBNET,
                    value: s.to_string(),
                    networks_key: K_V6_NETWORK,
                });
            }
        }
        Ok(SubnetEnv {
            networks,
            subnet,
            ipv6_networks,
            ipv6_subnet: v6_subnet,
            mtu: mtu.ok_or(SubnetEnvError::Missing { key: K_MTU })?,
            ipmasq: ipmasq.ok_or(SubnetEnvError::Missing { key: K_IPMASQ })?,
        })
    }

    /// Renders the file in flannel's key order.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.networks.is_empty() {
            out.push_str(&format!("{K_NETWORK}={}\n", join(&self.networks)));
        }
        if let Some(s) = self.subnet {
            out.push_str(&format!("{K_SUBNET}={s}\n"));
        }
        if !self.ipv6_networks.is_empty() {
            out.push_str(&format!("{K_V6_NETWORK}={}\n", join(&self.ipv6_networks)));
        }
        if let Some(s) = self.ipv6_subnet {
            out.push_str(&format!("{K_V6_SUBNET}={s}\n"));
        }
        out.push_str(&format!("{K_MTU}={}\n", self.mtu));
        out.push_str(&format!("{K_IPMASQ}={}\n", self.ipmasq));
        out
    }

    /// Reads and parses the file at `path`.
    pub fn read(path: &Path) -> Result<Self, SubnetEnvIoError> {
        let text = std::fs::read_to_string(path).map_err(|source| SubnetEnvIoError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|source| SubnetEnvIoError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    /// Writes the file atomically: a reader (the CNI plugin) sees the old
    /// contents or the new ones, never a torn file.
    pub fn write_atomic(&self, path: &Path) -> Result<(), SubnetEnvIoError> {
        let err = |source| SubnetEnvIoError::Write {
            path: path.display().to_string(),
            source,
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(err)?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "subnet.env".into());
        let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(self.render().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            // Make the rename itself durable.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(err)
    }
}

/// The first usable address of a subnet, with the subnet's prefix:
/// `10.244.4.0/24` becomes `10.244.4.1/24`.
pub fn first_host_v4(net: Ipv4Net) -> Ipv4Net {
    let base = u32::from(net.network());
    let host = if net.prefix_len() >= 31 {
        base
    } else {
        base.wrapping_add(1)
    };
    // The prefix comes from a valid Ipv4Net, so this cannot fail.
    Ipv4Net::new(Ipv4Addr::from(host), net.prefix_len()).unwrap_or(net)
}

/// The IPv6 counterpart of [`first_host_v4`].
pub fn first_host_v6(net: Ipv6Net) -> Ipv6Net {
    let base = u128::from(net.network());
    let host = if net.prefix_len() >= 127 {
        base
    } else {
        base.wrapping_add(1)
    };
    Ipv6Net::new(Ipv6Addr::from(host), net.prefix_len()).unwrap_or(net)
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

fn parse_one<T: std::str::FromStr>(
    key: &'static str,
    value: &str,
    what: &'static str,
) -> Result<T, SubnetEnvError> {
    value.parse::<T>().map_err(|_| SubnetEnvError::Invalid {
        key,
        value: truncate(value),
        what,
    })
}

fn parse_list<T: std::str::FromStr>(
    key: &'static str,
    value: &str,
) -> Result<Vec<T>, SubnetEnvError> {
    let items: Result<Vec<T>, _> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| parse_one(key, s, "comma-separated list of CIDRs"))
        .collect();
    let items = items?;
    if items.is_empty() {
        return Err(SubnetEnvError::Invalid {
            key,
            value: truncate(value),
            what: "comma-separated list of CIDRs",
        });
    }
    Ok(items)
}

fn parse_mtu(value: &str) -> Result<u32, SubnetEnvError> {
    match value.parse::<u32>() {
        // 68 is the IPv4 minimum (RFC 791); 65535 the largest an IP packet gets.
        Ok(m) if (68..=65535).contains(&m) => Ok(m),
        _ => Err(SubnetEnvError::Invalid {
            key: K_MTU,
            value: truncate(value),
            what: "MTU (68-65535)",
        }),
    }
}

fn parse_bool(key: &'static str, value: &str) -> Result<bool, SubnetEnvError> {
    // Go's strconv.ParseBool accepts these spellings.
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(SubnetEnvError::Invalid {
            key,
            value: truncate(value),
            what: "boolean (true/false)",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLANNEL_SAMPLE: &str = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.4.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

    #[test]
    fn parses_flannel_sample() {
        let env = SubnetEnv::parse(FLANNEL_SAMPLE).unwrap();
        assert_eq!(env.networks, vec!["10.244.0.0/16".parse().unwrap()]);
        assert_eq!(env.subnet, Some("10.244.4.1/24".parse().unwrap()));
        assert_eq!(env.mtu, 1450);
        assert!(env.ipmasq);
        assert_eq!(env.render(), FLANNEL_SAMPLE);
    }

    #[test]
    fn for_lease_derives_gateway() {
        let env = SubnetEnv::for_lease_v4(
            vec!["10.244.0.0/16".parse().unwrap()],
            "10.244.4.0/24".parse().unwrap(),
            1450,
            true,
        );
        assert_eq!(env.render(), FLANNEL_SAMPLE);
    }

    #[test]
    fn dual_stack_and_lists() {
        let text = "FLANNEL_NETWORK=10.244.0.0/16,10.245.0.0/16\nFLANNEL_SUBNET=10.245.1.1/24\nFLANNEL_IPV6_NETWORK=fd00::/48\nFLANNEL_IPV6_SUBNET=fd00:0:0:5::1/64\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=false\n";
        let env = SubnetEnv::parse(text).unwrap();
        assert_eq!(env.networks.len(), 2);
        assert_eq!(env.ipv6_subnet.unwrap().prefix_len(), 64);
        assert!(!env.ipmasq);
        assert_eq!(SubnetEnv::parse(&env.render()).unwrap(), env);
    }

    #[test]
    fn errors_name_the_key() {
        let e = SubnetEnv::parse("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.300.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n").unwrap_err();
        assert!(e.to_string().contains("FLANNEL_SUBNET"), "{e}");
        let e = SubnetEnv::parse(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.4.1/24\nFLANNEL_IPMASQ=true\n",
        )
        .unwrap_err();
        assert_eq!(e, SubnetEnvError::Missing { key: "FLANNEL_MTU" });
        let e = SubnetEnv::parse("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.9.4.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n").unwrap_err();
        assert!(matches!(e, SubnetEnvError::OutsideNetwork { .. }), "{e}");
        assert!(SubnetEnv::parse("").is_err());
        assert!(SubnetEnv::parse("garbage").is_err());
        let e = SubnetEnv::parse("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.4.1/24\nFLANNEL_MTU=9\nFLANNEL_IPMASQ=true\n").unwrap_err();
        assert!(e.to_string().contains("FLANNEL_MTU"), "{e}");
    }

    #[test]
    fn quoted_comments_and_unknown_keys() {
        let text = "# written by flanneld\nexport FLANNEL_NETWORK=\"10.244.0.0/16\"\nFLANNEL_SUBNET='10.244.4.1/24'\nOTHER=1\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=1\n";
        let env = SubnetEnv::parse(text).unwrap();
        assert!(env.ipmasq);
    }

    #[test]
    fn atomic_write_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/flannel/subnet.env");
        let env = SubnetEnv::parse(FLANNEL_SAMPLE).unwrap();
        env.write_atomic(&path).unwrap();
        assert_eq!(SubnetEnv::read(&path).unwrap(), env);
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,300}") {
            let _ = SubnetEnv::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_keyed_lines(
            lines in proptest::collection::vec(
                (proptest::sample::select(vec![K_NETWORK, K_SUBNET, K_V6_NETWORK, K_V6_SUBNET, K_MTU, K_IPMASQ, "X"]),
                 "[0-9a-f:./,]{0,40}"),
                0..8)
        ) {
            let text: String = lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            if let Ok(env) = SubnetEnv::parse(&text) {
                // Whatever parses renders back to the same meaning.
                proptest::prop_assert_eq!(SubnetEnv::parse(&env.render()).unwrap(), env);
            }
        }
    }
}
