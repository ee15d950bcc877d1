//! Pods: a namespace per pod, attached by running the real `flannel-rs`
//! CNI binary (ADD) inside the node namespace, as kubelet's runtime would.

use std::path::Path;

use super::names;
use super::sh::{self, ShError};
use super::state::{LabState, NodeState, PodState};

pub const CNI_BIN: &str = "flannel-rs";
/// Debian's reference plugins, in CNI_PATH after ours (loopback etc.).
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("CNI ADD of pod {pod}: {source}")]
    Add {
        pod: String,
        #[source]
        source: ShError,
    },
    #[error("CNI ADD of pod {pod} returned no IPv4 address: {result}")]
    NoAddress { pod: String, result: String },
}

/// The network config the plugin gets on stdin for `node`.
pub fn cni_config(lab: &LabState, node: &NodeState) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": format!("lab-{}", lab.name),
        "type": CNI_BIN,
        "bridge": names::POD_BRIDGE,
        "subnetFile": node.subnet_file,
        "dataDir": node.dir.join("cni"),
        "isDefaultGateway": true,
        "hairpinMode": true,
    })
}

/// The first IPv4 address (without prefix) in a CNI result.
pub fn result_ipv4(result: &serde_json::Value) -> Option<String> {
    result
        .get("ips")?
        .as_array()?
        .iter()
        .filter_map(|ip| ip.get("address")?.as_str())
        .filter_map(|a| a.split_once('/').map(|(addr, _)| addr))
        .find(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
        .map(str::to_string)
}

/// Runs `flannel-rs` ADD for `pod` inside its node's namespace.
pub fn add(lab: &LabState, node: &NodeState, pod: &PodState) -> Result<String, PodError> {
    let config = cni_config(lab, node).to_string();
    let bin = lab.bin_dir.join(CNI_BIN);
    let mut cmd = sh::in_ns(&node.netns, &bin.display().to_string());
    cmd.env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", &pod.container_id)
        .env("CNI_NETNS", Path::new("/run/netns").join(&pod.netns))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", "")
        .env(
            "CNI_PATH",
            format!("{}:{REFERENCE_PLUGINS}", lab.bin_dir.display()),
        );
    let out = sh::run_input(&mut cmd, Some(config.as_bytes())).map_err(|source| PodError::Add {
        pod: pod.netns.clone(),
        source,
    })?;
    let value: serde_json::Value = serde_json::from_str(&out).unwrap_or(serde_json::Value::Null);
    result_ipv4(&value).ok_or(PodError::NoAddress {
        pod: pod.netns.clone(),
        result: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_from_results() {
        let r = serde_json::json!({"ips":[{"address":"fd00::2/64"},{"address":"10.244.3.2/24","gateway":"10.244.3.1"}]});
        assert_eq!(result_ipv4(&r).as_deref(), Some("10.244.3.2"));
        assert_eq!(result_ipv4(&serde_json::json!({"ips":[]})), None);
        assert_eq!(result_ipv4(&serde_json::Value::Null), None);
    }
}
