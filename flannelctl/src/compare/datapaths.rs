//! The datapaths `compare` knows, their lab names, and `--datapaths`
//! parsing. The names are the lab's `--backend` names (lab/netconf.rs maps
//! them to net-conf.json Backend objects).

/// In the order the issue lists them; host-gw first, as the baseline.
/// The `-ipv6` ones (the same datapaths over the lab's IPv6 underlay) are
/// there on request; `DEFAULT` is what runs without `--datapaths`.
pub const ALL: &[&str] = &[
    "host-gw",
    "vxlan",
    "vxlan-metadata",
    "vxlan-userspace",
    "geneve-userspace",
    "geneve",
    "vxlan-metadata-ipv6",
    "vxlan-userspace-ipv6",
    "geneve-userspace-ipv6",
    "geneve-ipv6",
];

/// `--datapaths` when not given.
pub const DEFAULT: &str = "host-gw,vxlan,vxlan-metadata,vxlan-userspace,geneve-userspace,geneve";

/// Native routing, no encapsulation: what the VPC CNI gives pods.
pub const BASELINE: &str = "host-gw";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DatapathError {
    #[error("--datapaths: unknown datapath {0:?}; choose from {all}", all = ALL.join(", "))]
    Unknown(String),
    #[error("--datapaths: {0} is listed twice")]
    Duplicate(String),
    #[error("--datapaths is empty; choose from {all}", all = ALL.join(", "))]
    Empty,
    #[error("--lab-prefix {0:?} must be 1-13 lowercase letters or digits (lab names are the prefix plus a short datapath tag)")]
    BadPrefix(String),
}

/// Parses a comma-separated list, keeping its order.
pub fn parse(list: &str) -> Result<Vec<String>, DatapathError> {
    let mut out: Vec<String> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !ALL.contains(&name) {
            return Err(DatapathError::Unknown(name.to_string()));
        }
        if out.iter().any(|n| n == name) {
            return Err(DatapathError::Duplicate(name.to_string()));
        }
        out.push(name.to_string());
    }
    if out.is_empty() {
        return Err(DatapathError::Empty);
    }
    Ok(out)
}

/// A short tag per datapath: lab names allow only letters and digits.
fn tag(datapath: &str) -> &'static str {
    match datapath {
        "host-gw" => "hgw",
        "vxlan" => "vx",
        "vxlan-metadata" => "vxm",
        "vxlan-userspace" => "vxu",
        "geneve-userspace" => "gnu",
        "geneve" => "gn",
        // Three characters at most: a 13-character prefix plus the tag
        // must stay a valid lab name (16).
        "vxlan-metadata-ipv6" => "vm6",
        "vxlan-userspace-ipv6" => "vu6",
        "geneve-userspace-ipv6" => "gu6",
        "geneve-ipv6" => "g6",
        _ => "x",
    }
}

pub fn check_prefix(prefix: &str) -> Result<(), DatapathError> {
    let ok = (1..=13).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(DatapathError::BadPrefix(prefix.to_string()))
    }
}

/// The lab name for `datapath` (e.g. `cmpvxm` for vxlan-metadata).
pub fn lab_name(prefix: &str, datapath: &str) -> String {
    format!("{prefix}{}", tag(datapath))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_keep_order_and_reject_mistakes() {
        assert_eq!(parse("vxlan, host-gw").unwrap(), vec!["vxlan", "host-gw"]);
        assert_eq!(parse(&ALL.join(",")).unwrap().len(), 10);
        assert_eq!(parse(DEFAULT).unwrap().len(), 6);
        for d in ALL {
            assert!(
                crate::lab::netconf::BACKENDS.contains(d),
                "{d} is not a lab backend"
            );
        }
        assert_eq!(
            parse("vxlan,vxlam").unwrap_err().to_string(),
            format!(
                "--datapaths: unknown datapath \"vxlam\"; choose from {}",
                ALL.join(", ")
            )
        );
        assert_eq!(
            parse("vxlan,vxlan"),
            Err(DatapathError::Duplicate("vxlan".into()))
        );
        assert_eq!(parse(" , "), Err(DatapathError::Empty));
    }

    #[test]
    fn lab_names_are_distinct_and_valid() {
        let names: Vec<String> = ALL.iter().map(|d| lab_name("cmp", d)).collect();
        for (i, n) in names.iter().enumerate() {
            assert!(crate::lab::names::validate_name(n).is_ok(), "{n}");
            assert!(!names[..i].contains(n), "{n} twice");
        }
        assert!(check_prefix("t1234567890ab").is_ok());
        for bad in ["", "Cmp", "c-1", "t1234567890abc"] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
        assert!(
            crate::lab::names::validate_name(&lab_name("t1234567890ab", "geneve-userspace"))
                .is_ok()
        );
    }
}
