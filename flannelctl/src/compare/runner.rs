//! One measurement on one lab: `probe server` in the pod of node 2, `probe
//! client --json` in the pod of node 1, both this very binary started inside
//! the pod namespaces with `ip netns exec`, as the lab starts its daemons.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::lab::state::LabState;
use crate::probe::report::ProbeReport;

use super::CompareError;

/// The probe's port inside the server pod (its own namespace: no clash).
pub const PORT: u16 = 7100;

pub struct Settings {
    pub duration: Duration,
    pub streams: u32,
    pub size: usize,
}

/// The server process; killed and reaped when dropped.
struct ServerGuard(Child);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn exe() -> Result<PathBuf, CompareError> {
    std::env::current_exe().map_err(|source| CompareError::Io {
        what: "find the running flannelctl executable".into(),
        source,
    })
}

/// The pod namespace and IP of the first pod on `node`.
fn pod(st: &LabState, node: u32) -> Result<(String, String), CompareError> {
    st.pods
        .iter()
        .find(|p| p.node == node)
        .and_then(|p| Some((p.netns.clone(), p.ip.clone()?)))
        .ok_or_else(|| CompareError::Lab {
            lab: st.name.clone(),
            why: format!("has no pod with an IP on node {node}"),
        })
}

pub fn measure(st: &LabState, s: &Settings) -> Result<ProbeReport, CompareError> {
    let exe = exe()?;
    let (server_ns, server_ip) = pod(st, 2)?;
    let (client_ns, _) = pod(st, 1)?;
    let log_path = st.state_dir.join("probe-server.log");
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|source| CompareError::Io {
            what: format!("open {}", log_path.display()),
            source,
        })?;
    let child = Command::new("ip")
        .args(["netns", "exec", &server_ns])
        .arg(&exe)
        .args(["probe", "server", "--listen", &format!("0.0.0.0:{PORT}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|source| CompareError::Io {
            what: format!("start the probe server in {server_ns}"),
            source,
        })?;
    let _server = ServerGuard(child);
    let out = Command::new("ip")
        .args(["netns", "exec", &client_ns])
        .arg(&exe)
        .args(["probe", "client", "--json", "--server"])
        .arg(format!("{server_ip}:{PORT}"))
        .arg("--duration")
        .arg(format!("{}ms", s.duration.as_millis()))
        .arg("--streams")
        .arg(s.streams.to_string())
        .arg("--size")
        .arg(s.size.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|source| CompareError::Io {
            what: format!("run the probe client in {client_ns}"),
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(CompareError::Probe {
            lab: st.name.clone(),
            why: format!(
                "probe client ({}): {}; server log {}",
                out.status,
                stderr.trim(),
                log_path.display()
            ),
        });
    }
    serde_json::from_slice(&out.stdout).map_err(|e| CompareError::Probe {
        lab: st.name.clone(),
        why: format!("the probe client's JSON does not parse: {e}"),
    })
}
