//! The lab's cluster DNS: deploy/cluster-dns (a small server for the
//! cluster domain, built by `scripts/k8s-build.sh` from the Kubernetes
//! tree's vendored DNS and API libraries), run as a Deployment behind the
//! `kube-dns` Service. Every kubelet gets `--cluster-dns` = [`DNS_IP`], so
//! pods resolve Services and pods the way Kubernetes' DNS specification and
//! the conformance suite expect, through the overlay.

use super::kubectl;
use super::KubeError;
use crate::lab::state::LabState;

pub const MANIFEST: &str = include_str!("cluster-dns.yml");
/// The Service address of cluster DNS, inside the lab's Service range
/// (10.96.0.0/16), where kubeadm puts it too.
pub const DNS_IP: &str = "10.96.0.10";
pub const DNS_IMAGE: &str = "localhost/flannel-rs/lab-dns:1";
pub const DNS_ARCHIVE: &str = "lab-dns.oci.tar";
pub const DNS_NAMESPACE: &str = "kube-system";
pub const DNS_DEPLOYMENT: &str = "lab-dns";

/// Applies the DNS objects and waits until the Deployment's pods answer
/// (their readiness probe passes once the Service and Endpoints caches
/// are filled).
pub fn deploy(st: &LabState, within: std::time::Duration) -> Result<(), KubeError> {
    let k = st
        .kube
        .as_ref()
        .ok_or_else(|| KubeError::Manifest("not a Kubernetes lab".into()))?;
    let admin = super::admin_kubeconfig(k);
    let bin = &k.bin_dir;
    kubectl::run_input(&st.infra_ns, bin, &admin, &["apply", "-f", "-"], MANIFEST)?;
    super::kubectl(
        st,
        &[
            "-n",
            DNS_NAMESPACE,
            "rollout",
            "status",
            &format!("deployment/{DNS_DEPLOYMENT}"),
            &format!("--timeout={}s", within.as_secs()),
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_agrees_with_the_constants() {
        assert!(MANIFEST.contains(&format!("clusterIP: {DNS_IP}")));
        assert!(MANIFEST.contains(&format!("image: {DNS_IMAGE}")));
        assert!(MANIFEST.contains(&format!(
            "name: {DNS_DEPLOYMENT}\n  namespace: {DNS_NAMESPACE}"
        )));
        // The Service the e2e framework and kubeadm clusters call it.
        assert!(MANIFEST.contains("name: kube-dns\n  namespace: kube-system"));
        assert!(DNS_IP.starts_with("10.96.") && super::super::SERVICE_CIDR == "10.96.0.0/16");
    }
}
