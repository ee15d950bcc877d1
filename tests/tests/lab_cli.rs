//! `flannelctl lab` itself: `down` cleans up after a crash even without its
//! state file, a second `up` with the same name is refused without harming
//! the first lab, and `status --json` tracks daemons. Needs root.

use std::process::Command;

use e2e::lab::{self, Lab, LabConfig};

fn small(store: &'static str) -> LabConfig {
    let mut cfg = LabConfig::new("vxlan", store);
    cfg.nodes = 2;
    cfg.pods_per_node = 1;
    cfg
}

fn lab_namespaces(name: &str) -> Vec<String> {
    let out = testkit::cmd::run(Command::new("ip").args(["netns", "list"])).unwrap();
    let prefix = format!("fct-lab-{name}-");
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

fn pid_alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            state != Some("Z")
        })
        .unwrap_or(false)
}

#[test]
fn down_sweeps_everything_without_the_state_file() {
    let lab = Lab::up('c', &small("etcd")).unwrap();
    let pids: Vec<i64> = lab.nodes().unwrap().iter().filter_map(|n| n.pid).collect();
    assert_eq!(pids.len(), 2);
    assert_eq!(lab_namespaces(&lab.name).len(), 5, "infra, 2 nodes, 2 pods");
    // A crashed `lab up` may leave no usable state: a corrupt file.
    let state = format!("/run/flannelctl/lab-{}/state.json", lab.name);
    std::fs::write(&state, "{ torn").unwrap();
    lab.ctl("down", &[]).unwrap();
    assert!(
        lab_namespaces(&lab.name).is_empty(),
        "{:?}",
        lab_namespaces(&lab.name)
    );
    for pid in pids {
        assert!(!pid_alive(pid), "daemon {pid} survived lab down");
    }
    assert!(!std::path::Path::new(&state).exists());
    // Idempotent: a second down (and the guard's on drop) succeed.
    lab.ctl("down", &[]).unwrap();
}

#[test]
fn second_up_with_the_same_name_is_refused_and_harmless() {
    let lab = Lab::up('c', &small("embedded")).unwrap();
    let (flannelctl, _, _) = lab::binaries().unwrap();
    let out = Command::new(flannelctl)
        .args(["lab", "up", "--name", &lab.name, "--nodes", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already exists") && err.contains("lab down"),
        "{err}"
    );
    // The first lab still works.
    let failed = lab::mesh_failures(&lab.pods().unwrap());
    assert!(failed.is_empty(), "{failed:?}");
    assert!(lab.nodes().unwrap().iter().all(|n| n.alive));
}

#[test]
fn status_follows_a_crashed_daemon() {
    let lab = Lab::up('c', &small("embedded")).unwrap();
    lab.kill_node(2).unwrap();
    let nodes = lab.nodes().unwrap();
    assert!(nodes.iter().find(|n| n.index == 1).unwrap().alive);
    assert!(!nodes.iter().find(|n| n.index == 2).unwrap().alive);
    // Pods keep talking: the datapath outlives the daemon.
    let failed = lab::mesh_failures(&lab.pods().unwrap());
    assert!(failed.is_empty(), "{failed:?}");
    lab.start_node(2).unwrap();
    assert!(lab.nodes().unwrap().iter().all(|n| n.alive));
}
