//! The lab's state file (`/run/flannelctl/lab-<name>/state.json`): what was
//! made, written after every step so `lab down` can undo a half-finished
//! `lab up`. Also the JSON that `lab status --json` prints.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::process::ProcInfo;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a lab state file ({reason}); `flannelctl lab down --name <name>` still removes the lab by its namespace names")]
    Corrupt { path: PathBuf, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    pub name: String,
    pub backend: String,
    /// `embedded` or `etcd`.
    pub store: String,
    pub network: String,
    pub subnet_len: u8,
    pub underlay_mtu: u32,
    pub state_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub infra_ns: String,
    /// Set for `--store etcd`.
    #[serde(default)]
    pub etcd: Option<ProcInfo>,
    #[serde(default)]
    pub etcd_endpoint: Option<String>,
    #[serde(default)]
    pub etcd_prefix: Option<String>,
    /// Set for `--store embedded`.
    #[serde(default)]
    pub store_path: Option<PathBuf>,
    pub net_config_path: PathBuf,
    #[serde(default)]
    pub nodes: Vec<NodeState>,
    #[serde(default)]
    pub pods: Vec<PodState>,
    /// `creating` until `lab up` finished, then `ready`.
    pub phase: String,
    /// Kubernetes labs only: the admin kubeconfig (cluster-admin; for the
    /// operator, never given to the daemon).
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubernetes labs only: the namespace from which the API server's
    /// address is reachable (run kubectl there, or use `lab kubectl`).
    #[serde(default)]
    pub kubectl_netns: Option<String>,
    /// Kubernetes labs only: a local image (busybox: sh, ping, wget, nc,
    /// httpd) present on every node, for test pods.
    #[serde(default)]
    pub test_image: Option<String>,
    /// Kubernetes labs only: the processes and host changes to undo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube: Option<KubeState>,
}

/// What a Kubernetes lab started and changed, for `lab down`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeState {
    /// Where the Kubernetes binaries are (scripts/k8s-build.sh's cache).
    pub bin_dir: PathBuf,
    /// Where the image archives are (deploy/image/build.sh's output).
    pub image_dir: PathBuf,
    pub pki_dir: PathBuf,
    /// A private bind mount of a state subdirectory holding the nodes'
    /// persistent mount namespaces (a namespace file cannot live on a
    /// shared mount); unmounted by `lab down`.
    pub mnt_dir: PathBuf,
    #[serde(default)]
    pub mnt_dir_mounted: bool,
    #[serde(default)]
    pub apiserver: Option<ProcInfo>,
    #[serde(default)]
    pub controller_manager: Option<ProcInfo>,
    #[serde(default)]
    pub scheduler: Option<ProcInfo>,
    #[serde(default)]
    pub nodes: Vec<KubeNodeState>,
    /// Mount points the lab had to create on the host (e.g. /opt/cni/bin
    /// on a machine without it); removed again, if empty, by `lab down`.
    #[serde(default)]
    pub host_dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeNodeState {
    pub index: u32,
    /// The Node's name (`node<K>`), as kubelet registers it.
    pub name: String,
    /// The persistent mount namespace file (bind-mounted nsfs).
    pub mount_ns: PathBuf,
    #[serde(default)]
    pub mount_ns_made: bool,
    /// kubelet's --cgroup-root: every container of the node lives below
    /// it in each cgroup hierarchy, so `lab down` finds and removes them.
    pub cgroup_root: String,
    pub containerd_socket: PathBuf,
    #[serde(default)]
    pub containerd: Option<ProcInfo>,
    #[serde(default)]
    pub kubelet: Option<ProcInfo>,
    #[serde(default)]
    pub kube_proxy: Option<ProcInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub index: u32,
    pub netns: String,
    pub public_ip: String,
    pub dir: PathBuf,
    pub subnet_file: PathBuf,
    pub healthz_port: u16,
    #[serde(default)]
    pub daemon: Option<ProcInfo>,
    /// FLANNEL_SUBNET and FLANNEL_MTU once the daemon wrote subnet.env.
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Filled in by `lab status`.
    #[serde(default)]
    pub daemon_alive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodState {
    pub node: u32,
    pub index: u32,
    pub netns: String,
    pub container_id: String,
    /// The pod's address without prefix, once the CNI ADD succeeded.
    #[serde(default)]
    pub ip: Option<String>,
}

impl LabState {
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    /// Writes the state atomically (temp file + rename), so a crash never
    /// leaves a torn file.
    pub fn save(&self) -> Result<(), StateError> {
        let path = Self::file(&self.state_dir);
        let tmp = self.state_dir.join(".state.json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        std::fs::write(&tmp, text).map_err(|source| StateError::Io {
            op: "write",
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &path).map_err(|source| StateError::Io {
            op: "rename into place",
            path,
            source,
        })
    }

    /// Reads the state of the lab in `dir`; `Ok(None)` when there is none.
    pub fn load(dir: &Path) -> Result<Option<LabState>, StateError> {
        let path = Self::file(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    op: "read",
                    path,
                    source,
                })
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path,
                reason: e.to_string(),
            })
    }

    pub fn node(&self, index: u32) -> Option<&NodeState> {
        self.nodes.iter().find(|n| n.index == index)
    }

    pub fn node_mut(&mut self, index: u32) -> Option<&mut NodeState> {
        self.nodes.iter_mut().find(|n| n.index == index)
    }

    /// Every namespace recorded, pods first (they hang off node bridges),
    /// infra last.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.pods.iter().map(|p| p.netns.clone()).collect();
        v.extend(self.nodes.iter().map(|n| n.netns.clone()));
        v.push(self.infra_ns.clone());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> LabState {
        LabState {
            name: "t".into(),
            backend: "vxlan".into(),
            store: "embedded".into(),
            network: "10.244.0.0/16".into(),
            subnet_len: 24,
            underlay_mtu: 1500,
            state_dir: dir.to_path_buf(),
            bin_dir: "/bin".into(),
            infra_ns: "fct-lab-t-infra".into(),
            etcd: None,
            etcd_endpoint: None,
            etcd_prefix: None,
            store_path: Some(dir.join("store.json")),
            net_config_path: dir.join("net-conf.json"),
            nodes: vec![NodeState {
                index: 1,
                netns: "fct-lab-t-node1".into(),
                public_ip: "198.51.100.1".into(),
                dir: dir.join("node1"),
                subnet_file: dir.join("node1/subnet.env"),
                healthz_port: 8471,
                daemon: None,
                subnet: Some("10.244.3.1/24".into()),
                mtu: Some(1450),
                daemon_alive: false,
            }],
            pods: vec![PodState {
                node: 1,
                index: 1,
                netns: "fct-lab-t-n1p1".into(),
                container_id: "lab-t-n1p1".into(),
                ip: Some("10.244.3.2".into()),
            }],
            phase: "ready".into(),
            kubeconfig: None,
            kubectl_netns: None,
            test_image: None,
            kube: None,
        }
    }

    #[test]
    fn save_load_round_trip_and_missing_and_corrupt() {
        let dir = std::env::temp_dir().join(format!("fct-labstate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(LabState::load(&dir).unwrap(), None);
        let s = sample(&dir);
        s.save().unwrap();
        assert_eq!(LabState::load(&dir).unwrap(), Some(s.clone()));
        assert_eq!(
            s.namespaces(),
            vec!["fct-lab-t-n1p1", "fct-lab-t-node1", "fct-lab-t-infra"]
        );
        std::fs::write(LabState::file(&dir), "{").unwrap();
        assert!(matches!(
            LabState::load(&dir),
            Err(StateError::Corrupt { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
