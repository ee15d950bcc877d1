//! The lab's net-conf.json: one cluster range, one backend.

/// Backends the lab can start (the daemon's names).
pub const BACKENDS: &[&str] = &["vxlan", "host-gw"];

/// net-conf.json text as flannel expects it.
pub fn net_conf(network: &str, subnet_len: u8, backend: &str) -> String {
    serde_json::json!({
        "Network": network,
        "SubnetLen": subnet_len,
        "Backend": { "Type": backend },
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
}
