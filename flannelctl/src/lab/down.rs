//! `lab down`: stops the daemons and etcd, deletes every namespace of the
//! lab (those in the state file and any other with the lab's exact name
//! pattern, for a crashed or corrupt run) and the state directory.
//! Idempotent: a lab that is gone is success.

use std::time::Duration;

use super::names;
use super::sh;
use super::state::LabState;
use super::topology;
use super::LabError;

/// What `down` removed, for the message.
#[derive(Debug, Default)]
pub struct DownReport {
    pub stopped: usize,
    pub namespaces: Vec<String>,
    /// Problems that did not stop the teardown (it keeps going).
    pub warnings: Vec<String>,
}

pub fn down(name: &str) -> Result<DownReport, LabError> {
    names::validate_name(name)?;
    let dir = names::state_dir(name);
    let mut report = DownReport::default();
    let state = match LabState::load(&dir) {
        Ok(s) => s,
        Err(e) => {
            report.warnings.push(format!("{e}; sweeping by name"));
            None
        }
    };
    let mut namespaces = Vec::new();
    if let Some(st) = &state {
        // A Kubernetes lab: kubelets, containers, containerd, mount
        // namespaces, cgroups and the control plane first.
        if let Some(k) = &st.kube {
            report.stopped += super::kube::teardown::down(k, &dir, &mut report.warnings);
        }
        // Daemons first, gracefully: SIGTERM leaves the datapath in place,
        // which goes away with the namespace anyway.
        let procs = st
            .nodes
            .iter()
            .filter_map(|n| n.daemon.as_ref())
            .chain(st.etcd.as_ref());
        for p in procs {
            if p.alive() {
                report.stopped += 1;
            }
            if let Err(e) = p.stop(Duration::from_secs(5)) {
                report.warnings.push(e.to_string());
            }
        }
        namespaces = st.namespaces();
    }
    // Backstop for Kubernetes labs (also without a state file): containers
    // below the lab's cgroups, cgroups, mounts under the state directory.
    super::kube::teardown::sweep(name, &dir, &mut report.warnings);
    match sh::list_netns() {
        Ok(all) => {
            for ns in all {
                if names::is_lab_ns(name, &ns) && !namespaces.contains(&ns) {
                    namespaces.push(ns);
                }
            }
        }
        Err(e) => report.warnings.push(e.to_string()),
    }
    // Pods before nodes before infra: names sort that way by kind.
    namespaces.sort_by_key(|ns| {
        if ns.ends_with("-infra") {
            2
        } else if ns.contains("-node") {
            1
        } else {
            0
        }
    });
    for ns in namespaces {
        if !sh::netns_exists(&ns) {
            continue;
        }
        match topology::remove_netns(&ns) {
            Ok(()) => report.namespaces.push(ns),
            Err(e) => report.warnings.push(e.to_string()),
        }
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(LabError::Io {
                what: format!("remove {}", dir.display()),
                source,
            })
        }
    }
    Ok(report)
}
