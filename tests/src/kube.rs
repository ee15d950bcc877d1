//! A Kubernetes lab from the end-to-end tests: builds the images from the
//! binaries under test (deploy/image/build.sh, into a temporary directory),
//! runs `flannelctl lab up --kubernetes`, gives kubectl through `flannelctl
//! lab kubectl`, and removes the lab on drop, also when the test panics.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::lab::{binaries, unique_name, LabError};
use testkit::cmd::{self, CmdError};

/// A pod as the tests see it: name, node and address.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub name: String,
    pub node: String,
    pub ip: String,
}

/// A running Kubernetes lab; `lab down` on drop unless already down.
pub struct KubeLab {
    pub name: String,
    flannelctl: PathBuf,
    down: bool,
    keep_logs: bool,
    _bin_dir: tempfile::TempDir,
    _image_dir: tempfile::TempDir,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl KubeLab {
    /// Builds the images from this test run's binaries and brings up a
    /// Kubernetes lab of `nodes` nodes with datapath `backend`.
    pub fn up(stem: char, nodes: u32, backend: &str) -> Result<KubeLab, LabError> {
        Self::up_with(stem, nodes, backend, &[])
    }

    /// Like [`KubeLab::up`], with extra `lab up` arguments.
    pub fn up_with(
        stem: char,
        nodes: u32,
        backend: &str,
        extra: &[&str],
    ) -> Result<KubeLab, LabError> {
        Self::up_full(stem, nodes, backend, extra, &[])
    }

    /// Like [`KubeLab::up_with`], with extra `deploy/image/build.sh`
    /// arguments (e.g. `--e2e` for the images Kubernetes' own tests use).
    pub fn up_full(
        stem: char,
        nodes: u32,
        backend: &str,
        extra: &[&str],
        image_args: &[&str],
    ) -> Result<KubeLab, LabError> {
        testkit::root::require_root("the Kubernetes lab tests")?;
        let (flannelctl, daemon, cni) = binaries()?;
        let bin_dir = testkit::temp::temp_dir("kubebin").map_err(|e| LabError::BinDir {
            dir: e.base.clone(),
            source: e.source,
        })?;
        // Copies without debug information: a debug flanneld-rs is about
        // 240 MB, which would make the image slow to pack and to import
        // on every node. The code is the same.
        for (bin, name) in [
            (&daemon, "flanneld-rs"),
            (&cni, "flannel-rs"),
            (&flannelctl, "flannelctl"),
        ] {
            cmd::run(
                Command::new("objcopy")
                    .arg("--strip-debug")
                    .arg(bin)
                    .arg(bin_dir.path().join(name)),
            )?;
        }
        let image_dir = testkit::temp::temp_dir("kubeimg").map_err(|e| LabError::BinDir {
            dir: e.base.clone(),
            source: e.source,
        })?;
        // The image must hold the binaries under test; the base layer is
        // cached by the script, so this takes seconds.
        cmd::run(
            Command::new("bash")
                .arg(repo_root().join("deploy/image/build.sh"))
                .arg("--bin-dir")
                .arg(bin_dir.path())
                .arg("--out")
                .arg(image_dir.path())
                .args(image_args),
        )?;
        let name = unique_name(stem);
        let lab = KubeLab {
            name: name.clone(),
            flannelctl: flannelctl.clone(),
            down: false,
            keep_logs: false,
            _bin_dir: bin_dir,
            _image_dir: image_dir,
        };
        cmd::run(
            Command::new(&flannelctl)
                .args(["lab", "up", "--kubernetes", "--name", &name])
                .args(["--nodes", &nodes.to_string(), "--backend", backend])
                .arg("--bin-dir")
                .arg(lab._bin_dir.path())
                .arg("--image-dir")
                .arg(lab._image_dir.path())
                .args(extra),
        )?;
        Ok(lab)
    }

    /// `flannelctl lab kubectl --name <lab> -- <args>`.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, CmdError> {
        self.kubectl_input(args, None)
    }

    pub fn kubectl_input(&self, args: &[&str], stdin: Option<&str>) -> Result<String, CmdError> {
        cmd::run_with_stdin(
            Command::new(&self.flannelctl)
                .args(["lab", "kubectl", "--name", &self.name, "--"])
                .args(args),
            stdin.map(str::as_bytes),
        )
    }

    /// `flannelctl lab <verb> --name <lab> <args>`, failing on a non-zero
    /// exit.
    pub fn ctl(&self, verb: &str, args: &[&str]) -> Result<String, CmdError> {
        cmd::run(
            Command::new(&self.flannelctl)
                .args(["lab", verb, "--name", &self.name])
                .args(args),
        )
    }

    /// `kubectl ... -o json`, parsed.
    /// The pods of the default namespace matching a label selector that
    /// are not being deleted.
    pub fn pods(&self, selector: &str) -> Result<Vec<PodInfo>, String> {
        let v = self.kubectl_json(&["get", "pods", "-l", selector])?;
        Ok(v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| PodInfo {
                name: p["metadata"]["name"].as_str().unwrap_or_default().into(),
                node: p["spec"]["nodeName"].as_str().unwrap_or_default().into(),
                ip: p["status"]["podIP"].as_str().unwrap_or_default().into(),
            })
            .collect())
    }

    pub fn kubectl_json(&self, args: &[&str]) -> Result<Value, String> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.kubectl(&a).map_err(|e| e.to_string())?;
        serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))
    }

    /// Applies a manifest given as JSON.
    pub fn apply(&self, obj: &Value) -> Result<String, CmdError> {
        self.kubectl_input(&["apply", "-f", "-"], Some(&obj.to_string()))
    }

    pub fn status(&self) -> Result<Value, LabError> {
        let out = cmd::run(
            Command::new(&self.flannelctl).args(["lab", "status", "--name", &self.name, "--json"]),
        )?;
        serde_json::from_str(&out).map_err(|e| LabError::Status(format!("{e}: {out}")))
    }

    pub fn node_ns(&self, k: u32) -> String {
        format!("fct-lab-{}-node{k}", self.name)
    }

    /// The flannelctl binary the lab runs (for operator commands a test
    /// runs from the infra namespace, e.g. `flannelctl leases`).
    pub fn flannelctl(&self) -> &Path {
        &self.flannelctl
    }

    pub fn infra_ns(&self) -> String {
        format!("fct-lab-{}-infra", self.name)
    }

    /// With `true`, a drop that has to remove the lab (the test failed
    /// before its own `down`) first copies the lab's logs (control plane,
    /// kubelet, containerd, kube-proxy, audit) to a directory under the temp
    /// dir and prints where.
    pub fn keep_logs_on_drop(&mut self, keep: bool) {
        self.keep_logs = keep;
    }

    fn save_logs(&self) {
        let Ok(st) = self.status() else { return };
        let Some(state) = st["state_dir"].as_str().map(PathBuf::from) else {
            return;
        };
        let to = std::env::temp_dir().join(format!("fct-kube-logs-{}", self.name));
        let mut copied = 0;
        let mut dirs = vec![state.clone()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                let ft = e.file_type().ok();
                if ft.is_some_and(|t| t.is_dir()) && d == state {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "log") {
                    let rel = p.strip_prefix(&state).unwrap_or(&p);
                    let dst = to.join(rel);
                    if let Some(parent) = dst.parent() {
                        let _ = std::fs::create_dir_all(parent);
                    }
                    copied += usize::from(std::fs::copy(&p, &dst).is_ok());
                }
            }
        }
        eprintln!(
            "kept {copied} logs of lab {} in {}",
            self.name,
            to.display()
        );
    }

    /// `lab down` now (the drop does nothing more); returns its output.
    pub fn down(&mut self) -> Result<String, CmdError> {
        self.down = true;
        cmd::run(Command::new(&self.flannelctl).args(["lab", "down", "--name", &self.name]))
    }
}

impl Drop for KubeLab {
    fn drop(&mut self) {
        if self.down {
            return;
        }
        if self.keep_logs {
            self.save_logs();
        }
        if let Err(e) = self.down() {
            eprintln!(
                "warning: `flannelctl lab down --name {}` failed: {e}",
                self.name
            );
        }
    }
}
