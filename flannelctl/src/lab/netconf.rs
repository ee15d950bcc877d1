//! The lab's net-conf.json: one cluster range, one datapath. The lab names
//! datapaths (what `--backend` and `flannelctl compare` take); each name is
//! one `Backend` object of net-conf.json.

/// Datapaths the lab can start, by name.
/// A `-ipv6` name is the same datapath over the IPv6 underlay
/// (`"Underlay": "ipv6"`).
pub const BACKENDS: &[&str] = &[
    "vxlan",
    "vxlan-metadata",
    "vxlan-userspace",
    "geneve",
    "geneve-userspace",
    "host-gw",
    "vxlan-metadata-ipv6",
    "vxlan-userspace-ipv6",
    "geneve-ipv6",
    "geneve-userspace-ipv6",
];

/// The net-conf.json `Backend` object of a lab datapath name, or `None`
/// for a name not in `BACKENDS`.
pub fn backend_object(name: &str) -> Option<serde_json::Value> {
    use serde_json::json;
    if let Some(base) = name.strip_suffix("-ipv6") {
        if !BACKENDS.contains(&name) {
            return None;
        }
        let mut b = backend_object(base)?;
        b["Underlay"] = json!("ipv6");
        return Some(b);
    }
    Some(match name {
        "vxlan" => json!({ "Type": "vxlan" }),
        "vxlan-metadata" => json!({ "Type": "vxlan", "Mode": "metadata" }),
        "vxlan-userspace" => json!({ "Type": "vxlan", "Mode": "userspace" }),
        "geneve" => json!({ "Type": "geneve" }),
        "geneve-userspace" => json!({ "Type": "geneve", "Mode": "userspace" }),
        "host-gw" => json!({ "Type": "host-gw" }),
        _ => return None,
    })
}

/// net-conf.json text as flannel expects it, for a name in `BACKENDS`
/// (callers check the name first; an unknown one gets flannel's default).
pub fn net_conf(network: &str, subnet_len: u8, backend: &str) -> String {
    serde_json::json!({
        "Network": network,
        "SubnetLen": subnet_len,
        "Backend": backend_object(backend).unwrap_or(serde_json::json!({})),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flannel_shape() {
        let v: serde_json::Value =
            serde_json::from_str(&net_conf("10.244.0.0/16", 24, "host-gw")).unwrap();
        assert_eq!(v["Network"], "10.244.0.0/16");
        assert_eq!(v["SubnetLen"], 24);
        assert_eq!(v["Backend"]["Type"], "host-gw");
    }

    #[test]
    fn every_name_has_an_object() {
        for name in BACKENDS {
            let b = backend_object(name).unwrap();
            assert!(b["Type"].is_string(), "{name}");
        }
        let v: serde_json::Value =
            serde_json::from_str(&net_conf("10.244.0.0/16", 24, "geneve-userspace")).unwrap();
        assert_eq!(v["Backend"]["Type"], "geneve");
        assert_eq!(v["Backend"]["Mode"], "userspace");
        assert_eq!(backend_object("ipip"), None);
        let b = backend_object("geneve-userspace-ipv6").unwrap();
        assert_eq!(
            (b["Type"].as_str(), b["Underlay"].as_str()),
            (Some("geneve"), Some("ipv6"))
        );
        assert_eq!(
            backend_object("vxlan-ipv6"),
            None,
            "FDB mode has no IPv6 underlay"
        );
        assert_eq!(backend_object("host-gw-ipv6"), None);
    }
}
