//! One 2-node lab (one pod per node) per datapath, all up at once so the
//! rounds can interleave; all torn down when the set is dropped (normal
//! end, error, Ctrl-C) unless `--keep`.

use std::time::Duration;

use crate::lab::daemon::DaemonOptions;
use crate::lab::state::LabState;
use crate::lab::{down, up};

use super::{datapaths, reason, signal};

/// A datapath's lab, or why it could not be built.
pub enum Slot {
    Up(Box<LabState>),
    Unavailable(String),
}

pub struct LabSet {
    /// (datapath, lab name, slot), in --datapaths order.
    pub labs: Vec<(String, String, Slot)>,
    keep: bool,
}

pub struct LabOptions {
    pub prefix: String,
    pub underlay_mtu: u32,
    pub ready_timeout: Duration,
    pub keep: bool,
    pub bin_dir: Option<std::path::PathBuf>,
    /// `--daemon-arg`s, for every daemon.
    pub daemon_args: Vec<String>,
}

impl LabSet {
    /// Brings up a lab per datapath. A datapath whose lab fails becomes
    /// Unavailable with the daemon's reason; its partial lab is removed.
    pub fn up(datapaths: &[String], o: &LabOptions) -> LabSet {
        let mut set = LabSet {
            labs: Vec::new(),
            keep: o.keep,
        };
        for dp in datapaths {
            if signal::stopped() {
                break;
            }
            let name = datapaths::lab_name(&o.prefix, dp);
            eprintln!("compare: lab {name}: 2 nodes, datapath {dp} ...");
            let opts = up::UpOptions {
                name: name.clone(),
                nodes: 2,
                backend: dp.clone(),
                store: "embedded".into(),
                pods_per_node: 1,
                underlay_mtu: o.underlay_mtu,
                network: "10.244.0.0/16".into(),
                subnet_len: 24,
                bin_dir: o.bin_dir.clone(),
                daemon: DaemonOptions {
                    extra: o.daemon_args.clone(),
                    ..DaemonOptions::default()
                },
                ready_timeout: o.ready_timeout,
                kubernetes: None,
            };
            let slot = match up::up(&opts) {
                Ok(st) => Slot::Up(Box::new(st)),
                Err(e) => {
                    let why = reason::from_lab_error(&e);
                    eprintln!("compare: {dp} unavailable: {why}");
                    // An existing lab of that name is someone else's.
                    if !matches!(e, crate::lab::LabError::Exists(_)) {
                        remove(&name);
                    }
                    Slot::Unavailable(why)
                }
            };
            set.labs.push((dp.clone(), name, slot));
        }
        set
    }
}

fn remove(name: &str) {
    match down::down(name) {
        Ok(r) => {
            for w in r.warnings {
                eprintln!("compare: warning: lab {name}: {w}");
            }
        }
        Err(e) => eprintln!("compare: warning: removing lab {name}: {e}"),
    }
}

impl Drop for LabSet {
    fn drop(&mut self) {
        for (_, name, slot) in &self.labs {
            if !matches!(slot, Slot::Up(_)) {
                continue;
            }
            if self.keep {
                eprintln!(
                    "compare: kept lab {name}; remove it with `flannelctl lab down --name {name}`"
                );
            } else {
                remove(name);
            }
        }
    }
}
