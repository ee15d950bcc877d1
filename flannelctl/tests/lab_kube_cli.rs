//! `flannelctl lab up --kubernetes` refuses bad input before it makes
//! anything: flags that only hand-started daemons use, too many nodes,
//! datapaths the DaemonSet cannot run, a network overlapping the Service
//! range, missing Kubernetes binaries. Also `lab kubectl` and `lab
//! conformance` on a lab that does not exist. Needs root for the checks
//! behind `lab`'s root check (scripts/test.sh runs as root).

use std::process::{Command, Output};

fn lab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flannelctl"))
        .arg("lab")
        .args(args)
        .output()
        .expect("run the flannelctl binary built by cargo")
}

fn fails_with(args: &[&str], needles: &[&str]) {
    let o = lab(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} succeeded: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: stderr lacks {n:?}:\n{err}");
    }
}

#[test]
fn flags_of_hand_started_daemons_conflict_with_kubernetes() {
    for flag in [
        &["--store", "etcd"][..],
        &["--pods-per-node", "1"],
        &["--ip-masq"],
        &["--daemon-arg=--log-format=json"],
        &["--lease-ttl", "30s"],
    ] {
        let mut args = vec!["up", "--kubernetes", "--name", "kc"];
        args.extend_from_slice(flag);
        fails_with(&args, &["cannot be used with"]);
    }
    // Kubernetes-only flags need --kubernetes.
    fails_with(
        &["up", "--name", "kc", "--containerd-log-level", "debug"],
        &["--kubernetes"],
    );
}

#[test]
fn kubernetes_lab_refuses_what_cannot_work_before_making_anything() {
    // These checks run behind lab's root check.
    testkit::assert_root("kubernetes_lab_refuses_what_cannot_work_before_making_anything");
    fails_with(
        &["up", "--kubernetes", "--name", "kc", "--nodes", "9"],
        &["--nodes 9", "1 to 8"],
    );
    fails_with(
        &[
            "up",
            "--kubernetes",
            "--name",
            "kc",
            "--backend",
            "geneve-userspace",
        ],
        &[
            "cannot run in a Kubernetes lab",
            "vxlan, vxlan-metadata, host-gw",
        ],
    );
    fails_with(
        &[
            "up",
            "--kubernetes",
            "--name",
            "kc",
            "--network",
            "10.96.0.0/12",
        ],
        &["overlaps the Service network"],
    );
    fails_with(
        &[
            "up",
            "--kubernetes",
            "--name",
            "kc",
            "--k8s-bin-dir",
            "/nonexistent",
        ],
        &["scripts/k8s-build.sh"],
    );
    assert!(
        !std::path::Path::new("/run/flannelctl/lab-kc").exists(),
        "a refused lab left a state directory"
    );
    fails_with(
        &["kubectl", "--name", "nosuchlab", "--", "get", "nodes"],
        &["no lab named nosuchlab"],
    );
    fails_with(
        &["conformance", "--name", "nosuchlab"],
        &["no lab named nosuchlab"],
    );
}
