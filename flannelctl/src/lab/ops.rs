//! Operations on a running lab, for operators and the end-to-end tests:
//! stop or start one node's daemon or etcd, make a node leave, refresh the
//! status.

use std::time::Duration;

use lease_store::subnet_env::SubnetEnv;

use super::daemon;
use super::etcd;
use super::names;
use super::state::LabState;
use super::LabError;

pub fn load(name: &str) -> Result<LabState, LabError> {
    names::validate_name(name)?;
    LabState::load(&names::state_dir(name))?.ok_or_else(|| LabError::NoLab(name.to_string()))
}

/// Fills in liveness and the subnets from subnet.env.
pub fn refresh(st: &mut LabState) {
    for n in &mut st.nodes {
        n.daemon_alive = n.daemon.as_ref().is_some_and(|p| p.alive());
        if let Ok(env) = SubnetEnv::read(&n.subnet_file) {
            n.subnet = env.subnet.map(|s| s.to_string());
            n.mtu = Some(env.mtu);
        }
    }
}

/// What `lab stop` / `lab start` act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Node(u32),
    Etcd,
}

/// In a Kubernetes lab the daemons are the DaemonSet's pods and etcd
/// belongs to the API server: `stop`, `start` and `leave` say what to do
/// instead.
fn refuse_in_kube(st: &LabState, verb: &str) -> Result<(), LabError> {
    if st.kube.is_none() {
        return Ok(());
    }
    Err(LabError::Usage(format!(
        "lab {name} is a Kubernetes lab: its daemons are the pods of DaemonSet kube-flannel-rs/flannel-rs, so `lab {verb}` does not apply; use kubectl, e.g. `flannelctl lab kubectl --name {name} -- -n kube-flannel-rs delete pod -l app.kubernetes.io/name=flannel-rs --field-selector spec.nodeName=node1` (the DaemonSet starts a new one) or `... -- delete node node1` (a node leaves)",
        name = st.name
    )))
}

/// Stops a daemon (SIGTERM, or SIGKILL with `kill`) or etcd.
pub fn stop(st: &LabState, t: Target, kill: bool) -> Result<(), LabError> {
    refuse_in_kube(st, "stop")?;
    let p = match t {
        Target::Node(k) => st
            .node(k)
            .ok_or(LabError::NoNode(k))?
            .daemon
            .as_ref()
            .ok_or(LabError::NotStarted(format!("node {k}")))?,
        Target::Etcd => st.etcd.as_ref().ok_or(LabError::NotStarted(
            "etcd (the lab uses the embedded store)".into(),
        ))?,
    };
    if kill {
        p.kill();
        Ok(())
    } else {
        Ok(p.stop(Duration::from_secs(10))?)
    }
}

/// Starts a stopped daemon or etcd again with its recorded command line and
/// waits until it is ready. Already running is an error: two daemons on
/// one node would fight over the datapath.
pub fn start(st: &mut LabState, t: Target, within: Duration) -> Result<(), LabError> {
    refuse_in_kube(st, "start")?;
    match t {
        Target::Node(k) => {
            let node = st.node(k).ok_or(LabError::NoNode(k))?.clone();
            let old = node
                .daemon
                .clone()
                .ok_or(LabError::NotStarted(format!("node {k}")))?;
            if old.alive() {
                return Err(LabError::Running(format!("flanneld-rs on node {k}")));
            }
            let p = daemon::restart(&old)?;
            if let Some(n) = st.node_mut(k) {
                n.daemon = Some(p.clone());
            }
            st.save()?;
            daemon::wait_ready(&node, &p, within)?;
        }
        Target::Etcd => {
            let old = st.etcd.clone().ok_or(LabError::NotStarted("etcd".into()))?;
            if old.alive() {
                return Err(LabError::Running("etcd".into()));
            }
            let p = etcd::restart(&old)?;
            st.etcd = Some(p);
            st.save()?;
        }
    }
    Ok(())
}

/// The flannel key of a subnet.env subnet (`10.244.3.1/24` -> `10.244.3.0-24`).
pub fn lease_key(subnet: &str) -> Option<String> {
    let net: ipnet::Ipv4Net = subnet.parse().ok()?;
    Some(lease_store::key::encode(Some(net.trunc()), None))
}

/// A node leaves the cluster: its daemon stops and its lease is deleted
/// from the store, as when a node is decommissioned.
pub fn leave(st: &mut LabState, k: u32) -> Result<String, LabError> {
    refuse_in_kube(st, "leave")?;
    stop(st, Target::Node(k), false)?;
    let node = st.node(k).ok_or(LabError::NoNode(k))?;
    let subnet = node.subnet.clone().ok_or(LabError::NotStarted(format!(
        "node {k} (no subnet recorded)"
    )))?;
    let key = lease_key(&subnet).ok_or(LabError::Usage(format!(
        "node {k}: recorded subnet {subnet:?} is not a CIDR"
    )))?;
    match (&st.etcd_prefix, &st.store_path) {
        (Some(prefix), _) => etcd::delete_lease(&st.infra_ns, prefix, &key)?,
        (None, Some(path)) => super::embedded::delete_lease(path, &key)?,
        (None, None) => return Err(LabError::Usage("the lab has no store".into())),
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_subnet_env_subnets() {
        assert_eq!(lease_key("10.244.3.1/24").as_deref(), Some("10.244.3.0-24"));
        assert_eq!(lease_key("10.0.17.1/20").as_deref(), Some("10.0.16.0-20"));
        assert_eq!(lease_key("nonsense"), None);
        assert_eq!(lease_key("10.0.0.1/40"), None);
    }
}
