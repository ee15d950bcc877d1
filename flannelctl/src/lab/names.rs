//! The lab's naming and addressing plan: namespace names, underlay
//! addresses, state paths. Pure, so `lab down` can recognise exactly its own
//! namespaces when the state file is gone.

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Every namespace the lab makes starts with this (the project's test
/// prefix, so scripts/clean-test-netns.sh also finds leftovers).
pub const NS_PREFIX: &str = "fct-lab-";

/// Where labs keep their state: tmpfs, gone after a reboot like the
/// namespaces themselves.
pub const STATE_ROOT: &str = "/run/flannelctl";

/// The underlay: TEST-NET-2, node K at .K, the infra namespace (bridge and
/// etcd) at .254.
pub const UNDERLAY_PREFIX_LEN: u8 = 24;
pub const INFRA_HOST: u8 = 254;
/// Node indexes are 1-based and must leave .254 to the infra namespace.
pub const MAX_NODES: u32 = 253;
pub const ETCD_CLIENT_PORT: u16 = 2379;

/// The underlay interface inside each node namespace.
pub const NODE_IFACE: &str = "eth0";
/// The bridge inside the infra namespace.
pub const UNDERLAY_BRIDGE: &str = "underlay0";
/// The bridge the CNI plugin makes inside each node namespace.
pub const POD_BRIDGE: &str = "cni0";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("lab name {0:?} must be 1-16 lowercase letters or digits (it becomes part of namespace names)")]
    BadName(String),
    #[error("--nodes {0} is out of range: use 1 to {MAX_NODES}")]
    BadNodeCount(u32),
}

/// Checks a lab name. No dashes, so that one lab's namespaces can never be
/// mistaken for another's (`fct-lab-a-node1` vs a lab named `a-node1`).
pub fn validate_name(name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= 16
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(NameError::BadName(name.to_string()))
    }
}

pub fn validate_nodes(n: u32) -> Result<(), NameError> {
    if (1..=MAX_NODES).contains(&n) {
        Ok(())
    } else {
        Err(NameError::BadNodeCount(n))
    }
}

pub fn infra_ns(lab: &str) -> String {
    format!("{NS_PREFIX}{lab}-infra")
}

pub fn node_ns(lab: &str, node: u32) -> String {
    format!("{NS_PREFIX}{lab}-node{node}")
}

pub fn pod_ns(lab: &str, node: u32, pod: u32) -> String {
    format!("{NS_PREFIX}{lab}-n{node}p{pod}")
}

/// The veth end inside the infra namespace that connects node K.
pub fn infra_port(node: u32) -> String {
    format!("vnode{node}")
}

pub fn node_ip(node: u32) -> Ipv4Addr {
    // validate_nodes keeps node in 1..=253, so the cast cannot truncate.
    Ipv4Addr::new(198, 51, 100, node as u8)
}

pub fn infra_ip() -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, INFRA_HOST)
}

/// The underlay's IPv6 prefix (documentation range, RFC 3849): every node
/// has an address in it too, for the `-ipv6` datapaths.
pub const UNDERLAY6_PREFIX_LEN: u8 = 64;

pub fn node_ip6(node: u32) -> std::net::Ipv6Addr {
    std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, node as u16)
}

pub fn infra_ip6() -> std::net::Ipv6Addr {
    node_ip6(u32::from(INFRA_HOST))
}

pub fn etcd_endpoint() -> String {
    format!("http://{}:{ETCD_CLIENT_PORT}", infra_ip())
}

pub fn state_dir(lab: &str) -> PathBuf {
    PathBuf::from(STATE_ROOT).join(format!("lab-{lab}"))
}

/// True when `ns` is one of the namespaces lab `lab` makes: the infra
/// namespace, `node<K>` or `n<K>p<J>` with decimal K, J.
pub fn is_lab_ns(lab: &str, ns: &str) -> bool {
    let Some(rest) = ns
        .strip_prefix(NS_PREFIX)
        .and_then(|r| r.strip_prefix(lab))
        .and_then(|r| r.strip_prefix('-'))
    else {
        return false;
    };
    if rest == "infra" {
        return true;
    }
    if let Some(k) = rest.strip_prefix("node") {
        return is_number(k);
    }
    if let Some(kj) = rest.strip_prefix('n') {
        if let Some((k, j)) = kj.split_once('p') {
            return is_number(k) && is_number(j);
        }
    }
    false
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("lab").is_ok());
        assert!(validate_name("t123").is_ok());
        for bad in ["", "Lab", "a-b", "a b", "a/b", "abcdefghijklmnopq"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert!(validate_nodes(0).is_err());
        assert!(validate_nodes(254).is_err());
        assert!(validate_nodes(253).is_ok());
    }

    #[test]
    fn lab_namespaces_are_recognised_exactly() {
        assert!(is_lab_ns("lab", "fct-lab-lab-infra"));
        assert!(is_lab_ns("lab", "fct-lab-lab-node12"));
        assert!(is_lab_ns("lab", "fct-lab-lab-n1p2"));
        assert!(is_lab_ns("lab", &pod_ns("lab", 3, 4)));
        assert!(is_lab_ns("lab", &node_ns("lab", 3)));
        for other in [
            "fct-lab-lab2-infra",
            "fct-lab-lab-nodex",
            "fct-lab-lab-node",
            "fct-lab-lab-n1p",
            "fct-lab-lab-np2",
            "fct-cni-lab-infra",
            "fct-lab-lab-infra2",
        ] {
            assert!(!is_lab_ns("lab", other), "{other}");
        }
    }

    #[test]
    fn addressing() {
        assert_eq!(node_ip(1).to_string(), "198.51.100.1");
        assert_eq!(etcd_endpoint(), "http://198.51.100.254:2379");
        assert_eq!(state_dir("lab"), PathBuf::from("/run/flannelctl/lab-lab"));
    }
}
