//! kubectl against the lab's API server: the cached 1.20 kubectl (no
//! version skew), run in the infra namespace where the API server listens,
//! with the admin kubeconfig. Also the manifest step: the project's own
//! deploy/ manifest, with the lab's net-conf.json put into its ConfigMap.

use std::path::Path;
use std::process::Command;

use super::KubeError;
use crate::lab::sh::{self, ShError};

/// The manifest applied to every Kubernetes lab, compiled in so the lab
/// always deploys the manifest of the same source tree as its binaries.
pub const MANIFEST: &str = include_str!("../../../../deploy/kube-flannel-rs.yml");
pub const FLANNEL_NAMESPACE: &str = "kube-flannel-rs";
pub const FLANNEL_CONFIGMAP: &str = "flannel-rs-cfg";
pub const FLANNEL_DAEMONSET: &str = "flannel-rs";

pub fn command(infra: &str, bin: &Path, kubeconfig: &Path) -> Command {
    let mut c = sh::in_ns(infra, &bin.join("kubectl").display().to_string());
    c.arg(format!("--kubeconfig={}", kubeconfig.display()));
    c
}

pub fn run(infra: &str, bin: &Path, kubeconfig: &Path, args: &[&str]) -> Result<String, ShError> {
    sh::run(command(infra, bin, kubeconfig).args(args))
}

pub fn run_input(
    infra: &str,
    bin: &Path,
    kubeconfig: &Path,
    args: &[&str],
    stdin: &str,
) -> Result<String, ShError> {
    sh::run_input(
        command(infra, bin, kubeconfig).args(args),
        Some(stdin.as_bytes()),
    )
}

/// Puts `net_conf` into the flannel ConfigMap of a manifest already turned
/// into a JSON `List` (kubectl's client-side dry run), and returns the
/// images its pods use. Pure, so the rewriting is unit-tested.
pub fn prepare_manifest(
    list: &mut serde_json::Value,
    net_conf: &str,
) -> Result<Vec<String>, KubeError> {
    let items = list
        .get_mut("items")
        .and_then(|i| i.as_array_mut())
        .ok_or_else(|| KubeError::Manifest("not a List of objects".into()))?;
    let mut found = false;
    let mut images = Vec::new();
    for item in items.iter_mut() {
        let kind = item["kind"].as_str().unwrap_or_default().to_string();
        let name = item["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if kind == "ConfigMap" && name == FLANNEL_CONFIGMAP {
            item["data"]["net-conf.json"] = serde_json::Value::String(net_conf.to_string());
            found = true;
        }
        if kind == "DaemonSet" {
            let spec = &item["spec"]["template"]["spec"];
            for list in ["initContainers", "containers"] {
                for c in spec[list].as_array().into_iter().flatten() {
                    if let Some(img) = c["image"].as_str() {
                        if !images.iter().any(|i| i == img) {
                            images.push(img.to_string());
                        }
                    }
                }
            }
        }
    }
    if !found {
        return Err(KubeError::Manifest(format!(
            "no ConfigMap {FLANNEL_CONFIGMAP} to hold net-conf.json"
        )));
    }
    if images.is_empty() {
        return Err(KubeError::Manifest("no DaemonSet with an image".into()));
    }
    Ok(images)
}

/// Makes the DaemonSet's flanneld-rs container keep its subnets in Lease
/// objects (`FLANNELD_KUBE_SUBNET_SOURCE=lease`), as the EKS overlay does.
/// Pure, so it is unit-tested.
pub fn select_lease_source(list: &mut serde_json::Value) -> Result<(), KubeError> {
    let mut done = false;
    let items = list
        .get_mut("items")
        .and_then(|i| i.as_array_mut())
        .ok_or_else(|| KubeError::Manifest("not a List of objects".into()))?;
    for item in items.iter_mut().filter(|i| i["kind"] == "DaemonSet") {
        let containers = item["spec"]["template"]["spec"]["containers"].as_array_mut();
        for c in containers.into_iter().flatten() {
            let is_daemon = c["args"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "--kube-subnet-mgr"));
            if !is_daemon {
                continue;
            }
            let env = c
                .as_object_mut()
                .map(|o| o.entry("env").or_insert_with(|| serde_json::json!([])));
            if let Some(serde_json::Value::Array(env)) = env {
                env.retain(|e| e["name"] != "FLANNELD_KUBE_SUBNET_SOURCE");
                env.push(
                    serde_json::json!({"name": "FLANNELD_KUBE_SUBNET_SOURCE", "value": "lease"}),
                );
                done = true;
            }
        }
    }
    if done {
        Ok(())
    } else {
        Err(KubeError::Manifest(
            "no DaemonSet container running flanneld-rs --kube-subnet-mgr to switch to Lease objects".into(),
        ))
    }
}

/// kubectl's `-o json` of several objects: one JSON document after the
/// other (1.20 prints no List), gathered into a `List`.
pub fn parse_objects(text: &str) -> Result<serde_json::Value, KubeError> {
    let items = serde_json::Deserializer::from_str(text)
        .into_iter::<serde_json::Value>()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| KubeError::Manifest(format!("kubectl printed no JSON: {e}")))?;
    // A single List document is already what callers want.
    if let [one] = items.as_slice() {
        if one["kind"] == "List" {
            return Ok(one.clone());
        }
    }
    Ok(serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}))
}

/// Turns the manifest into JSON with kubectl itself (no YAML parser of our
/// own), sets net-conf.json, applies it, and returns the DaemonSet's
/// images.
pub fn apply_manifest(
    infra: &str,
    bin: &Path,
    kubeconfig: &Path,
    manifest: &str,
    net_conf: &str,
    lease_source: bool,
) -> Result<Vec<String>, KubeError> {
    let json = run_input(
        infra,
        bin,
        kubeconfig,
        &["create", "--dry-run=client", "-o", "json", "-f", "-"],
        manifest,
    )?;
    let mut list = parse_objects(&json)?;
    let images = prepare_manifest(&mut list, net_conf)?;
    if lease_source {
        select_lease_source(&mut list)?;
    }
    run_input(
        infra,
        bin,
        kubeconfig,
        &["apply", "-f", "-"],
        &list.to_string(),
    )?;
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> serde_json::Value {
        serde_json::json!({"kind": "List", "items": [
            {"kind": "Namespace", "metadata": {"name": "kube-flannel-rs"}},
            {"kind": "ConfigMap", "metadata": {"name": "flannel-rs-cfg"},
             "data": {"net-conf.json": "{}", "cni-conf.json": "{\"a\":1}"}},
            {"kind": "DaemonSet", "metadata": {"name": "flannel-rs"}, "spec": {"template": {"spec": {
                "initContainers": [{"image": "x/y:1"}, {"image": "x/y:1"}],
                "containers": [{"image": "x/y:1"}, {"image": "z:2"}]}}}}
        ]})
    }

    #[test]
    fn net_conf_goes_into_the_configmap_and_images_are_listed() {
        let mut l = list();
        let images = prepare_manifest(&mut l, r#"{"Network":"10.9.0.0/16"}"#).unwrap();
        assert_eq!(images, vec!["x/y:1".to_string(), "z:2".to_string()]);
        assert_eq!(
            l["items"][1]["data"]["net-conf.json"],
            r#"{"Network":"10.9.0.0/16"}"#
        );
        assert_eq!(l["items"][1]["data"]["cni-conf.json"], "{\"a\":1}");
    }

    #[test]
    fn concatenated_objects_become_a_list() {
        let l = parse_objects("{\"kind\":\"A\"}\n{\"kind\":\"B\"}\n").unwrap();
        assert_eq!(l["kind"], "List");
        assert_eq!(l["items"][1]["kind"], "B");
        let one = parse_objects("{\"kind\":\"List\",\"items\":[]}").unwrap();
        assert_eq!(one["items"], serde_json::json!([]));
        assert!(parse_objects("{").is_err());
    }

    #[test]
    fn a_manifest_without_the_configmap_is_refused() {
        let mut l = list();
        l["items"].as_array_mut().unwrap().remove(1);
        let e = prepare_manifest(&mut l, "{}").unwrap_err().to_string();
        assert!(e.contains("flannel-rs-cfg"), "{e}");
    }

    #[test]
    fn the_lease_source_is_set_on_the_daemon_container_only() {
        let mut l = serde_json::json!({"kind": "List", "items": [
            {"kind": "DaemonSet", "spec": {"template": {"spec": {"containers": [
                {"name": "flanneld-rs", "args": ["--kube-subnet-mgr"],
                 "env": [{"name": "NODE_NAME", "value": "x"}]},
                {"name": "sidecar", "args": ["--other"]}
            ]}}}}
        ]});
        select_lease_source(&mut l).unwrap();
        select_lease_source(&mut l).unwrap();
        let c = &l["items"][0]["spec"]["template"]["spec"]["containers"];
        let env = c[0]["env"].as_array().unwrap();
        assert_eq!(env.len(), 2, "set once: {env:?}");
        assert_eq!(env[1]["value"], "lease");
        assert!(c[1].get("env").is_none());
        let mut none = serde_json::json!({"kind": "List", "items": []});
        assert!(select_lease_source(&mut none)
            .unwrap_err()
            .to_string()
            .contains("--kube-subnet-mgr"));
    }

    #[test]
    fn the_compiled_in_manifest_has_what_the_lab_needs() {
        assert!(MANIFEST.contains("name: flannel-rs-cfg"));
        assert!(MANIFEST.contains("kind: DaemonSet"));
        assert!(MANIFEST.contains("namespace: kube-flannel-rs"));
    }
}
