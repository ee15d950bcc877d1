//! Harness for the kernel tests: throwaway node and pod namespaces
//! (`fct-cni-<pid>-<n>-...`, removed on drop even when a test fails), a
//! subnet.env and IPAM dir in a tempdir, and the built plugin run inside
//! the node namespace exactly as a runtime would (env vars + stdin).

#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{json, Value};

pub const PLUGIN: &str = env!("CARGO_BIN_EXE_flannel-rs");

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "this kernel test needs root (it creates network namespaces): run `sudo -E cargo test -p cni-plugin`"
    );
}

/// A network namespace deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("fct-cni-{}-{n}-{tag}", std::process::id());
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip netns add");
        assert!(st.success(), "ip netns add {name} failed");
        Netns { name }
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// Runs a command inside this namespace; returns (success, stdout+stderr).
    pub fn exec(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("run ip netns exec");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    pub fn has_link(&self, name: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.name, "link", "show", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    pub fn links(&self) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.name, "-o", "link"])
            .output()
            .expect("ip link");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn delete(&mut self) {
        if !self.name.is_empty() {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .stderr(Stdio::null())
                .status();
            self.name.clear();
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// The plugin's answer.
#[derive(Debug)]
pub struct Reply {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?} / stderr {:?}",
                self.stdout, self.stderr
            )
        })
    }

    pub fn code(&self) -> u64 {
        assert!(
            !self.success,
            "expected failure, got success: {}",
            self.stdout
        );
        self.json()["code"].as_u64().expect("error has a code")
    }

    pub fn ok(self) -> Self {
        assert!(
            self.success,
            "plugin failed: {} / {}",
            self.stdout, self.stderr
        );
        self
    }
}

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
        require_root();
        let ns = Netns::new(&format!("{tag}-n"));
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
        let ns = File::open(self.ns.path()).expect("open node netns");
        let fd = ns.as_raw_fd();
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_PATH", "/usr/lib/cni")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: setns is async-signal-safe; the child enters the node
        // namespace before exec, so the plugin never runs in ours.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn plugin");
        if let Some(mut si) = child.stdin.take() {
            let _ = si.write_all(stdin);
        }
        let out = child.wait_with_output().expect("wait plugin");
        drop(ns);
        Reply {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
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
        self.cni("ADD", id, &pod.path(), "eth0", conf).ok().json()
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
