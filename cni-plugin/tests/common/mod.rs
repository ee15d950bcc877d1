//! The plugin's side of the kernel tests: a node (a `testkit::Netns`
//! guard, deleted on drop even when a test fails, plus a subnet.env and
//! IPAM dir in a tempdir) that runs the built plugin inside its namespace
//! exactly as a runtime would (env vars + stdin), through
//! `testkit::cni::run_raw`.

#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::{json, Value};
pub use testkit::cni::Reply;
pub use testkit::Netns;

pub const PLUGIN: &str = env!("CARGO_BIN_EXE_flannel-rs");

/// A node: its namespace, subnet.env and IPAM data dir.
pub struct Node {
    pub ns: Netns,
    pub dir: tempfile::TempDir,
    pub subnet_env: PathBuf,
    pub data_dir: PathBuf,
}

pub const SUBNET_ENV: &str =
    "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

impl Node {
    pub fn new(tag: &str) -> Node {
        testkit::assert_root("this CNI kernel test (it creates network namespaces)");
        let ns = Netns::new(&format!("cni-{tag}-n"));
        let dir = tempfile::tempdir().expect("tempdir");
        let subnet_env = dir.path().join("subnet.env");
        std::fs::write(&subnet_env, SUBNET_ENV).expect("write subnet.env");
        let data_dir = dir.path().join("networks");
        Node {
            ns,
            dir,
            subnet_env,
            data_dir,
        }
    }

    pub fn write_subnet_env(&self, text: &str) {
        std::fs::write(&self.subnet_env, text).expect("write subnet.env");
    }

    /// A config for this node, `extra` merged over the defaults.
    pub fn conf(&self, version: &str, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": version,
            "name": "fct-net",
            "type": "flannel-rs",
            "subnetFile": self.subnet_env,
            "dataDir": self.data_dir,
            "isDefaultGateway": true,
            "hairpinMode": true,
        });
        if let (Some(o), Value::Object(e)) = (c.as_object_mut(), extra) {
            o.extend(e);
        }
        c
    }

    pub fn ipam_dir(&self) -> PathBuf {
        self.data_dir.join("fct-net")
    }

    pub fn ipam_files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.ipam_dir())
            .map(|rd| {
                rd.map(|e| {
                    e.expect("dir entry")
                        .file_name()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Runs `bin` inside the node namespace with the given CNI env.
    pub fn run_plugin(&self, bin: &str, env: &[(&str, &str)], stdin: &[u8]) -> Reply {
        let cmd = testkit::netns::command_in(&self.ns, bin)
            .unwrap_or_else(|e| panic!("plugin in the node namespace: {e}"));
        testkit::cni::run_raw(cmd, env, stdin).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn cni(&self, command: &str, id: &str, netns: &str, ifname: &str, conf: &Value) -> Reply {
        self.cni_args(command, id, netns, ifname, "", conf)
    }

    pub fn cni_args(
        &self,
        command: &str,
        id: &str,
        netns: &str,
        ifname: &str,
        args: &str,
        conf: &Value,
    ) -> Reply {
        self.run_plugin(
            PLUGIN,
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", ifname),
                ("CNI_ARGS", args),
            ],
            conf.to_string().as_bytes(),
        )
    }

    pub fn add(&self, id: &str, pod: &Netns, conf: &Value) -> Value {
        self.cni("ADD", id, pod.path_str(), "eth0", conf)
            .ok()
            .json()
    }

    pub fn del(&self, id: &str, netns: &str, conf: &Value) {
        self.cni("DEL", id, netns, "eth0", conf).ok();
    }
}

/// The pod address (without prefix) from an ADD result.
pub fn pod_ip(result: &Value) -> String {
    let a = result["ips"][0]["address"]
        .as_str()
        .expect("result has an address");
    a.split('/').next().unwrap_or(a).to_string()
}
