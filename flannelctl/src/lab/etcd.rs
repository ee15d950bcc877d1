//! etcd for `--store etcd`: Debian's etcd inside the infra namespace,
//! listening on the underlay so every node namespace reaches it, with its
//! data under the lab's state directory. `etcdctl` writes the config.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::names;
use super::process::{self, ProcInfo, ProcessError};
use super::sh::{self, ShError};

pub const ETCD_BIN: &str = "/usr/bin/etcd";
pub const ETCDCTL_BIN: &str = "/usr/bin/etcdctl";
/// Flannel's key prefix.
pub const PREFIX: &str = "/coreos.com/network";

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("{0} not found: install Debian's etcd-server and etcd-client (scripts/setup.sh)")]
    Missing(&'static str),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Sh(#[from] ShError),
    #[error(
        "etcd in {ns} did not become healthy within {secs} s; its log {log} ends with:\n{tail}"
    )]
    NotHealthy {
        ns: String,
        secs: u64,
        log: PathBuf,
        tail: String,
    },
}

/// etcd's command line: one member, client URL on the infra address.
/// Big transactions are allowed so benchmarks can add 1,000 peers at once.
pub fn argv(data_dir: &Path) -> Vec<String> {
    let client = names::etcd_endpoint();
    // Peer traffic stays on the infra namespace's loopback.
    let peer = "http://127.0.0.1:2380";
    [
        ETCD_BIN,
        "--name",
        "lab",
        "--data-dir",
        &data_dir.display().to_string(),
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &client,
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster",
        &format!("lab={peer}"),
        "--max-txn-ops",
        "4096",
        "--logger",
        "zap",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

pub fn check_installed() -> Result<(), EtcdError> {
    for bin in [ETCD_BIN, ETCDCTL_BIN] {
        if !Path::new(bin).is_file() {
            return Err(EtcdError::Missing(bin));
        }
    }
    Ok(())
}

pub fn start(infra: &str, data_dir: &Path, log: &Path) -> Result<ProcInfo, EtcdError> {
    let p = process::spawn_detached(infra, &argv(data_dir), log)?;
    wait_healthy(infra, &p, Duration::from_secs(20))?;
    Ok(p)
}

/// Starts etcd again with the recorded command line (same data dir).
pub fn restart(p: &ProcInfo) -> Result<ProcInfo, EtcdError> {
    let q = process::spawn_detached(&p.netns, &p.argv, &p.log)?;
    wait_healthy(&p.netns, &q, Duration::from_secs(20))?;
    Ok(q)
}

/// `etcdctl` inside the infra namespace, pointed at the lab's etcd.
pub fn ctl(infra: &str, args: &[&str]) -> Result<String, ShError> {
    let mut c = sh::in_ns(infra, ETCDCTL_BIN);
    c.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", names::etcd_endpoint()))
        .args(args);
    sh::run(&mut c)
}

fn wait_healthy(infra: &str, p: &ProcInfo, within: Duration) -> Result<(), EtcdError> {
    let deadline = Instant::now() + within;
    loop {
        if ctl(infra, &["endpoint", "health", "--command-timeout=1s"]).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline || !p.alive() {
            return Err(EtcdError::NotHealthy {
                ns: infra.to_string(),
                secs: within.as_secs(),
                log: p.log.clone(),
                tail: process::log_tail(&p.log, 20),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn put_config(infra: &str, prefix: &str, net_conf: &str) -> Result<(), ShError> {
    ctl(infra, &["put", &format!("{prefix}/config"), net_conf]).map(|_| ())
}

/// Deletes a node's lease key (`<prefix>/subnets/<key>`).
pub fn delete_lease(infra: &str, prefix: &str, key: &str) -> Result<(), ShError> {
    ctl(infra, &["del", &format!("{prefix}/subnets/{key}")]).map(|_| ())
}
