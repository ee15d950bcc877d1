//! The `CNI_*` environment variables and `CNI_ARGS`: read once, validated,
//! and turned into a [`Command`] plus the attachment it is about.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::error::{code, CniError};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("{0} is not set; the container runtime must provide it")]
    Missing(&'static str),
    #[error("CNI_COMMAND={0:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC")]
    UnknownCommand(String),
    #[error("{var}={value:?} is invalid: {why}")]
    Invalid {
        var: &'static str,
        value: String,
        why: &'static str,
    },
}

impl From<EnvError> for CniError {
    fn from(e: EnvError) -> Self {
        CniError::new(code::INVALID_ENV, e.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(s: &str) -> Result<Self, EnvError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            other => return Err(EnvError::UnknownCommand(truncate(other))),
        })
    }
}

/// What ADD, DEL and CHECK act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub container_id: String,
    /// Empty on DEL when the namespace is already gone.
    pub netns: String,
    pub ifname: String,
    pub args: CniArgs,
}

/// The parts of `CNI_ARGS` this plugin uses; the rest is kept for logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub ip: Option<Ipv4Addr>,
    pub other: BTreeMap<String, String>,
}

/// Parses `K=V;K=V`. Unknown keys are tolerated whether or not
/// `IgnoreUnknown` is set: runtimes add keys freely (K8S_POD_UID, ...).
pub fn parse_cni_args(s: &str) -> Result<CniArgs, EnvError> {
    let mut out = CniArgs::default();
    for pair in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(EnvError::Invalid {
                var: "CNI_ARGS",
                value: truncate(s),
                why: "expected KEY=VALUE pairs separated by ';'",
            });
        };
        if k.is_empty() {
            return Err(EnvError::Invalid {
                var: "CNI_ARGS",
                value: truncate(s),
                why: "a pair has an empty key",
            });
        }
        if k == "IP" {
            // host-local accepts "a.b.c.d"; accept a CIDR form too.
            let addr = v.split('/').next().unwrap_or(v);
            out.ip = Some(addr.parse().map_err(|_| EnvError::Invalid {
                var: "CNI_ARGS",
                value: truncate(s),
                why: "IP= must be an IPv4 address",
            })?);
        } else {
            out.other.insert(k.to_string(), v.to_string());
        }
    }
    Ok(out)
}

/// A container ID as the spec allows: starts alphanumeric, then
/// alphanumerics, `_`, `.`, `-`. It becomes file contents, so no newlines.
pub fn valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Linux interface name rules (dev_valid_name): 1-15 bytes, not `.`/`..`,
/// no `/`, `:` or whitespace.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
}

/// Reads the attachment variables through `get` (the process environment in
/// the binary, a map in tests). `need_netns` is false for DEL.
pub fn attachment(
    get: &dyn Fn(&str) -> Option<String>,
    need_netns: bool,
) -> Result<Attachment, EnvError> {
    let container_id = get("CNI_CONTAINERID")
        .filter(|s| !s.is_empty())
        .ok_or(EnvError::Missing("CNI_CONTAINERID"))?;
    if !valid_container_id(&container_id) {
        return Err(EnvError::Invalid {
            var: "CNI_CONTAINERID",
            value: truncate(&container_id),
            why: "must start with a letter or digit and hold only letters, digits, '_', '.', '-'",
        });
    }
    let ifname = get("CNI_IFNAME")
        .filter(|s| !s.is_empty())
        .ok_or(EnvError::Missing("CNI_IFNAME"))?;
    if !valid_ifname(&ifname) {
        return Err(EnvError::Invalid {
            var: "CNI_IFNAME",
            value: truncate(&ifname),
            why: "must be 1-15 bytes without '/', ':' or whitespace",
        });
    }
    let netns = get("CNI_NETNS").unwrap_or_default();
    if need_netns && netns.is_empty() {
        return Err(EnvError::Missing("CNI_NETNS"));
    }
    let args = parse_cni_args(&get("CNI_ARGS").unwrap_or_default())?;
    Ok(Attachment {
        container_id,
        netns,
        ifname,
        args,
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn getter(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn cni_args_from_runtimes() {
        let a = parse_cni_args(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;IP=10.244.7.9",
        )
        .unwrap();
        assert_eq!(a.ip, Some(Ipv4Addr::new(10, 244, 7, 9)));
        assert_eq!(a.other["K8S_POD_NAME"], "web-0");
        assert_eq!(parse_cni_args("").unwrap(), CniArgs::default());
        assert_eq!(
            parse_cni_args("IP=10.244.7.9/24;").unwrap().ip,
            Some(Ipv4Addr::new(10, 244, 7, 9))
        );
        assert!(parse_cni_args("IgnoreUnknown").is_err());
        assert!(parse_cni_args("=x").is_err());
        let e = parse_cni_args("IP=300.1.1.1").unwrap_err();
        assert!(e.to_string().contains("CNI_ARGS"), "{e}");
    }

    #[test]
    fn attachment_vars() {
        let ok = getter(&[
            ("CNI_CONTAINERID", "abc-1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/var/run/netns/x"),
        ]);
        let a = attachment(&ok, true).unwrap();
        assert_eq!(a.ifname, "eth0");
        let no_ns = getter(&[("CNI_CONTAINERID", "abc"), ("CNI_IFNAME", "eth0")]);
        assert_eq!(
            attachment(&no_ns, true).unwrap_err(),
            EnvError::Missing("CNI_NETNS")
        );
        assert!(attachment(&no_ns, false).is_ok());
        let bad_if = getter(&[("CNI_CONTAINERID", "abc"), ("CNI_IFNAME", "a/b")]);
        assert!(matches!(
            attachment(&bad_if, false),
            Err(EnvError::Invalid {
                var: "CNI_IFNAME",
                ..
            })
        ));
        let long_if = getter(&[
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "0123456789abcdef"),
        ]);
        assert!(attachment(&long_if, false).is_err());
        let bad_id = getter(&[("CNI_CONTAINERID", "-x\n"), ("CNI_IFNAME", "eth0")]);
        assert!(matches!(
            attachment(&bad_id, false),
            Err(EnvError::Invalid {
                var: "CNI_CONTAINERID",
                ..
            })
        ));
        assert_eq!(
            attachment(&getter(&[]), false).unwrap_err(),
            EnvError::Missing("CNI_CONTAINERID")
        );
    }

    #[test]
    fn commands() {
        assert_eq!(Command::parse("GC").unwrap(), Command::Gc);
        assert!(Command::parse("add").is_err());
    }
}
