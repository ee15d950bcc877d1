//! The lab from the end-to-end tests and benchmarks: runs the real
//! `flannelctl lab` binary (up, status --json, stop, start, leave) and
//! removes the lab on drop, also when the test panics. Helpers to ping, run
//! iperf3 and read routes inside the lab's namespaces.

use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::bins::{self, BinError};
use testkit::cmd::{self, CmdError};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    NotRoot(#[from] testkit::root::NotRoot),
    #[error(transparent)]
    Bin(#[from] BinError),
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error("cannot prepare the binary directory {dir}: {source}")]
    BinDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`flannelctl lab status --json` printed something unexpected: {0}")]
    Status(String),
    #[error("{what} did not happen within {secs:.1} s; last observation: {last}")]
    Timeout {
        what: String,
        secs: f64,
        last: String,
    },
}

/// How to build a lab.
#[derive(Debug, Clone)]
pub struct LabConfig {
    pub nodes: u32,
    pub backend: &'static str,
    pub store: &'static str,
    pub pods_per_node: u32,
    pub underlay_mtu: u32,
    pub network: &'static str,
    pub subnet_len: u8,
    pub resync_period: Option<&'static str>,
    pub lease_ttl: Option<&'static str>,
    pub daemon_args: Vec<String>,
    /// `(node, flag)` for one node's daemon only (`--node-daemon-arg`).
    pub node_daemon_args: Vec<(u32, String)>,
}

impl LabConfig {
    pub fn new(backend: &'static str, store: &'static str) -> Self {
        LabConfig {
            nodes: 3,
            backend,
            store,
            pods_per_node: 2,
            underlay_mtu: 1500,
            network: "10.244.0.0/16",
            subnet_len: 24,
            resync_period: None,
            lease_ttl: None,
            daemon_args: vec![],
            node_daemon_args: vec![],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub index: u32,
    pub netns: String,
    pub public_ip: String,
    /// FLANNEL_SUBNET, e.g. `10.244.3.1/24`.
    pub subnet: Option<String>,
    pub pid: Option<i64>,
    pub alive: bool,
}

impl Node {
    /// The subnet's network in route notation (`10.244.3.0/24`).
    pub fn subnet_net(&self) -> Option<String> {
        let s = self.subnet.as_deref()?;
        let (addr, len) = s.split_once('/')?;
        let a: std::net::Ipv4Addr = addr.parse().ok()?;
        let len: u32 = len.parse().ok()?;
        let mask = if len == 0 {
            0
        } else {
            u32::MAX << (32 - len.min(32))
        };
        Some(format!(
            "{}/{len}",
            std::net::Ipv4Addr::from(u32::from(a) & mask)
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub node: u32,
    pub netns: String,
    pub ip: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A running lab; `lab down` on drop.
pub struct Lab {
    pub name: String,
    flannelctl: PathBuf,
    _bin_dir: tempfile::TempDir,
}

/// A unique lab name (lowercase letters and digits, at most 16).
pub fn unique_name(stem: char) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{stem}{}x{n}", std::process::id() % 1_000_000)
}

/// `flannelctl`, `flanneld-rs` and `flannel-rs` of this workspace, built in
/// the running test's target directory.
pub fn binaries() -> Result<(PathBuf, PathBuf, PathBuf), BinError> {
    Ok((
        bins::cargo_bin("flannelctl", "flannelctl")?,
        bins::cargo_bin("flanneld-rs", "flanneld-rs")?,
        bins::flannel_rs()?,
    ))
}

impl Lab {
    /// `flannelctl lab up` with `cfg`; the stem letter marks the test in
    /// namespace names.
    pub fn up(stem: char, cfg: &LabConfig) -> Result<Lab, LabError> {
        testkit::root::require_root("the lab end-to-end tests")?;
        let (flannelctl, daemon, cni) = binaries()?;
        // One directory holding both binaries, whatever FCT_BIN_* says.
        let dir = testkit::temp::temp_dir("labbin").map_err(|e| LabError::BinDir {
            dir: e.base.clone(),
            source: e.source,
        })?;
        for (bin, name) in [(&daemon, "flanneld-rs"), (&cni, "flannel-rs")] {
            symlink(bin, dir.path().join(name)).map_err(|source| LabError::BinDir {
                dir: dir.path().display().to_string(),
                source,
            })?;
        }
        let name = unique_name(stem);
        let mut c = Command::new(&flannelctl);
        c.args(["lab", "up", "--name", &name])
            .args(["--nodes", &cfg.nodes.to_string()])
            .args(["--backend", cfg.backend, "--store", cfg.store])
            .args(["--pods-per-node", &cfg.pods_per_node.to_string()])
            .args(["--underlay-mtu", &cfg.underlay_mtu.to_string()])
            .args(["--network", cfg.network])
            .args(["--subnet-len", &cfg.subnet_len.to_string()])
            .arg("--bin-dir")
            .arg(dir.path());
        if let Some(r) = cfg.resync_period {
            c.args(["--resync-period", r]);
        }
        if let Some(t) = cfg.lease_ttl {
            c.args(["--lease-ttl", t]);
        }
        for a in &cfg.daemon_args {
            c.arg(format!("--daemon-arg={a}"));
        }
        for (k, a) in &cfg.node_daemon_args {
            c.arg(format!("--node-daemon-arg={k}={a}"));
        }
        // The guard exists before `up` runs: a failure half-way is cleaned.
        let lab = Lab {
            name,
            flannelctl,
            _bin_dir: dir,
        };
        cmd::run(&mut c)?;
        Ok(lab)
    }

    /// Runs `flannelctl lab <verb> --name <lab> <args>`.
    pub fn ctl(&self, verb: &str, args: &[&str]) -> Result<String, LabError> {
        Ok(cmd::run(
            Command::new(&self.flannelctl)
                .args(["lab", verb, "--name", &self.name])
                .args(args),
        )?)
    }

    pub fn status(&self) -> Result<Value, LabError> {
        let out = self.ctl("status", &["--json"])?;
        serde_json::from_str(&out).map_err(|e| LabError::Status(format!("{e}: {out}")))
    }

    pub fn nodes(&self) -> Result<Vec<Node>, LabError> {
        let st = self.status()?;
        parse_nodes(&st).ok_or_else(|| LabError::Status(st.to_string()))
    }

    pub fn pods(&self) -> Result<Vec<Pod>, LabError> {
        let st = self.status()?;
        parse_pods(&st).ok_or_else(|| LabError::Status(st.to_string()))
    }

    pub fn infra_ns(&self) -> String {
        format!("fct-lab-{}-infra", self.name)
    }

    pub fn node_ns(&self, k: u32) -> String {
        format!("fct-lab-{}-node{k}", self.name)
    }

    pub fn stop_node(&self, k: u32) -> Result<(), LabError> {
        self.ctl("stop", &["--node", &k.to_string()]).map(|_| ())
    }

    pub fn kill_node(&self, k: u32) -> Result<(), LabError> {
        self.ctl("stop", &["--node", &k.to_string(), "--kill"])
            .map(|_| ())
    }

    pub fn start_node(&self, k: u32) -> Result<(), LabError> {
        self.ctl("start", &["--node", &k.to_string()]).map(|_| ())
    }

    pub fn leave(&self, k: u32) -> Result<(), LabError> {
        self.ctl("leave", &["--node", &k.to_string()]).map(|_| ())
    }

    pub fn stop_etcd(&self) -> Result<(), LabError> {
        self.ctl("stop", &["--etcd"]).map(|_| ())
    }

    pub fn start_etcd(&self) -> Result<(), LabError> {
        self.ctl("start", &["--etcd"]).map(|_| ())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let r =
            cmd::run(Command::new(&self.flannelctl).args(["lab", "down", "--name", &self.name]));
        if let Err(e) = r {
            eprintln!(
                "warning: `flannelctl lab down --name {}` failed: {e} (scripts/clean-test-netns.sh removes leftovers)",
                self.name
            );
        }
    }
}

pub fn parse_nodes(st: &Value) -> Option<Vec<Node>> {
    st.get("nodes")?
        .as_array()?
        .iter()
        .map(|n| {
            Some(Node {
                index: u32::try_from(n.get("index")?.as_u64()?).ok()?,
                netns: n.get("netns")?.as_str()?.to_string(),
                public_ip: n.get("public_ip")?.as_str()?.to_string(),
                subnet: n.get("subnet").and_then(Value::as_str).map(str::to_string),
                pid: n.pointer("/daemon/pid").and_then(Value::as_i64),
                alive: n
                    .get("daemon_alive")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            })
        })
        .collect()
}

pub fn parse_pods(st: &Value) -> Option<Vec<Pod>> {
    st.get("pods")?
        .as_array()?
        .iter()
        .map(|p| {
            Some(Pod {
                node: u32::try_from(p.get("node")?.as_u64()?).ok()?,
                netns: p.get("netns")?.as_str()?.to_string(),
                ip: p.get("ip")?.as_str()?.to_string(),
            })
        })
        .collect()
}

/// `ip netns exec <ns> <program> <args>`, failing on a non-zero exit.
pub fn ns_run(ns: &str, program: &str, args: &[&str]) -> Result<String, CmdError> {
    cmd::run(
        Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args),
    )
}

/// One ping from namespace `ns` to `ip`, waiting up to 3 s for the reply.
pub fn ping_once(ns: &str, ip: &str) -> Result<(), CmdError> {
    ns_run(ns, "ping", &["-c", "1", "-W", "3", "-q", ip]).map(|_| ())
}

/// `ip -n <ns> <args>` output.
pub fn ip_in(ns: &str, args: &[&str]) -> Result<String, CmdError> {
    cmd::run(Command::new("ip").args(["-n", ns]).args(args))
}

/// Polls `check` until it returns Ok ([`testkit::wait::try_wait_for`]), or
/// fails after `within` with the last observation.
pub fn wait_for<T>(
    what: &str,
    within: Duration,
    check: impl FnMut() -> Result<T, String>,
) -> Result<(T, Duration), LabError> {
    testkit::wait::try_wait_for(what, within, check).map_err(|t| LabError::Timeout {
        what: t.what,
        secs: t.within.as_secs_f64(),
        last: t.last,
    })
}

/// A continuous ping (`ping -i <interval>`) between two namespaces, stopped
/// with SIGINT so ping prints its summary.
pub struct ContinuousPing {
    child: Option<Child>,
}

/// What ping's summary said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingSummary {
    pub transmitted: u64,
    pub received: u64,
}

impl ContinuousPing {
    pub fn start(ns: &str, ip: &str, interval: &str) -> Result<Self, CmdError> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, "ping", "-q", "-i", interval, ip])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = c.spawn().map_err(|source| CmdError::Spawn {
            cmd: cmd::describe(&c),
            source,
        })?;
        Ok(ContinuousPing { child: Some(child) })
    }

    /// Stops the ping and returns its counts and full output.
    pub fn stop(mut self) -> Result<(PingSummary, String), String> {
        let Some(child) = self.child.take() else {
            return Err("ping already stopped".into());
        };
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGINT);
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        parse_ping_summary(&text)
            .map(|s| (s, text.clone()))
            .ok_or_else(|| format!("no ping summary in: {text}"))
    }
}

impl Drop for ContinuousPing {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `N packets transmitted, M received` from ping's summary.
pub fn parse_ping_summary(text: &str) -> Option<PingSummary> {
    let line = text.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse::<u64>().ok());
    Some(PingSummary {
        transmitted: nums.next()?,
        received: nums.next()?,
    })
}

/// A TCP transfer from pod namespace `client_ns` to `server_ip` (an iperf3
/// server started in `server_ns`) for `secs`; returns the bits per second
/// the receiver saw.
pub fn iperf3(server_ns: &str, client_ns: &str, server_ip: &str, secs: u32) -> Result<f64, String> {
    let mut server = Command::new("ip")
        .args([
            "netns", "exec", server_ns, "iperf3", "-s", "-1", "-B", server_ip,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start iperf3 server in {server_ns}: {e}"))?;
    // The server needs a moment to listen; retry the client briefly
    // (iperf3 -J may exit 0 with an "error" in its JSON).
    let mut last = String::new();
    let mut result = None;
    for _ in 0..50 {
        match ns_run(
            client_ns,
            "iperf3",
            &["-c", server_ip, "-t", &secs.to_string(), "-J"],
        ) {
            Ok(out) => {
                let bps = serde_json::from_str::<Value>(&out)
                    .ok()
                    .and_then(|v| v.pointer("/end/sum_received/bits_per_second")?.as_f64());
                match bps {
                    Some(b) => {
                        result = Some(b);
                        break;
                    }
                    None => last = out,
                }
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = server.kill();
    let _ = server.wait();
    result.ok_or_else(|| format!("iperf3 from {client_ns} to {server_ip} never completed: {last}"))
}

/// Every pod pings every other pod once; the failures, if any.
pub fn mesh_failures(pods: &[Pod]) -> Vec<String> {
    let mut failed = Vec::new();
    for a in pods {
        for b in pods {
            if a.netns != b.netns {
                if let Err(e) = ping_once(&a.netns, &b.ip) {
                    failed.push(format!("{} -> {} ({}): {e}", a.netns, b.ip, b.netns));
                }
            }
        }
    }
    failed
}

/// What node `on` has programmed for the peer whose subnet is `peer_net`
/// (`10.244.3.0/24`): its routes, and for VXLAN the neighbour entry of the
/// peer's gateway address and FDB entries for `peer_mac`.
pub fn peer_entries(
    on: &str,
    peer_net: &str,
    peer_mac: Option<&str>,
) -> Result<Vec<String>, CmdError> {
    let mut found: Vec<String> = ip_in(on, &["route", "show", peer_net])?
        .lines()
        .map(|l| format!("route {l}"))
        .collect();
    let gw = peer_net.split('/').next().unwrap_or_default();
    if netns_has_link(on, VXLAN_DEV) {
        found.extend(
            ip_in(on, &["neigh", "show", "dev", VXLAN_DEV])?
                .lines()
                .filter(|l| l.split_whitespace().next() == Some(gw))
                .map(|l| format!("neigh {l}")),
        );
        if let Some(mac) = peer_mac {
            found.extend(
                ns_run(on, "bridge", &["fdb", "show", "dev", VXLAN_DEV])?
                    .lines()
                    .filter(|l| l.to_lowercase().starts_with(&mac.to_lowercase()))
                    .map(|l| format!("fdb {l}")),
            );
        }
    }
    Ok(found)
}

/// The VXLAN device the daemon makes for VNI 1.
pub const VXLAN_DEV: &str = "flannel.1";

pub fn netns_has_link(ns: &str, dev: &str) -> bool {
    ip_in(ns, &["link", "show", "dev", dev]).is_ok()
}

/// The MAC address of `dev` in namespace `ns`.
pub fn link_mac(ns: &str, dev: &str) -> Option<String> {
    let out = ip_in(ns, &["-j", "link", "show", "dev", dev]).ok()?;
    let v: Value = serde_json::from_str(&out).ok()?;
    v.get(0)?.get("address")?.as_str().map(str::to_string)
}

/// True when a namespace called `name` exists.
pub fn netns_exists(name: &str) -> bool {
    testkit::netns::path_of(name).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_lab_names_and_unique() {
        let a = unique_name('c');
        let b = unique_name('c');
        assert_ne!(a, b);
        assert!(
            a.len() <= 16
                && a.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
            "{a}"
        );
    }

    #[test]
    fn ping_summary() {
        let t = "--- 10.0.0.1 ping statistics ---\n120 packets transmitted, 118 received, 1% packet loss, time 6000ms\n";
        assert_eq!(
            parse_ping_summary(t),
            Some(PingSummary {
                transmitted: 120,
                received: 118
            })
        );
        let t = "5 packets transmitted, 5 received, +2 duplicates, 0% packet loss";
        assert_eq!(parse_ping_summary(t).map(|s| s.received), Some(5));
        assert_eq!(parse_ping_summary("nothing"), None);
    }

    #[test]
    fn status_json_is_read() {
        let st = serde_json::json!({
            "nodes": [{"index": 1, "netns": "fct-lab-a-node1", "public_ip": "198.51.100.1",
                       "subnet": "10.244.7.1/24", "daemon": {"pid": 42}, "daemon_alive": true}],
            "pods": [{"node": 1, "netns": "fct-lab-a-n1p1", "ip": "10.244.7.2"}]
        });
        let nodes = parse_nodes(&st).unwrap();
        assert_eq!(nodes[0].subnet_net().as_deref(), Some("10.244.7.0/24"));
        assert_eq!(nodes[0].pid, Some(42));
        assert!(nodes[0].alive);
        assert_eq!(parse_pods(&st).unwrap()[0].ip, "10.244.7.2");
    }
}
