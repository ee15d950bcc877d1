//! `flannelctl plan` run as a process: output formats and the errors an
//! operator sees for bad input. The arithmetic itself is unit-tested in
//! src/plan/model.rs.

use std::process::{Command, Output};

fn plan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flannelctl"))
        .arg("plan")
        .args(args)
        .output()
        .expect("run the flannelctl binary built by cargo")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a failure whose stderr contains every one of `needles`. Exit
/// status: 2 when clap rejects a flag value, 1 when the plan cannot be made.
fn assert_fails_with(args: &[&str], needles: &[&str]) {
    let o = plan(args);
    let code = o.status.code();
    assert!(
        code == Some(1) || code == Some(2),
        "expected exit 1 or 2 for {args:?}, got {code:?}: {}",
        stdout(&o)
    );
    let from_clap = stderr(&o).starts_with("error: invalid value");
    assert_eq!(code == Some(2), from_clap, "{args:?}: {}", stderr(&o));
    let err = stderr(&o);
    for n in needles {
        assert!(err.contains(n), "stderr for {args:?} lacks {n:?}:\n{err}");
    }
}

const BASE: [&str; 8] = [
    "--instance-type",
    "m5.large",
    "--nodes",
    "50",
    "--pods-per-node",
    "20",
    "--subnet",
    "10.0.0.0/24",
];

fn with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    BASE.iter().copied().chain(extra.iter().copied()).collect()
}

#[test]
fn plan_text_table_shows_both_sides() {
    let o = plan(&with(&["--subnet", "10.0.1.0/24"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let line = |label: &str| {
        out.lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no row {label:?} in:\n{out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("VPC IPs per node"), "VPC IPs per node 30 1");
    assert_eq!(
        line("VPC IPs for the cluster"),
        "VPC IPs for the cluster 1500 50"
    );
    // Overlay: min(253 pod IPs of a /24, EKS calculator's 110 for 2 vCPUs).
    assert_eq!(line("max pods per node"), "max pods per node 29 110");
    assert_eq!(line("max nodes"), "max nodes 16 255");
    assert_eq!(
        line("fits"),
        "fits NO, 34 nodes too many yes, 205 nodes spare"
    );
    assert!(out.contains("3 x 9 + 2"), "rule missing:\n{out}");
    // 1500 - 50 = 1450 of 1500.
    assert!(
        out.contains("VPC IPs saved: 1450 (1500 with the VPC CNI - 50 with the overlay, 96.7% of the VPC CNI's)"),
        "{out}"
    );
}

#[test]
fn plan_absurd_or_overlapping_inputs_are_refused() {
    // The cluster range inside the VPC: an error (exit 1), not a warning.
    assert_fails_with(
        &with(&["--cluster-cidr", "10.0.0.0/8"]),
        &[
            "cluster CIDR 10.0.0.0/8 overlaps VPC subnet 10.0.0.0/24",
            "outside the VPC",
        ],
    );
    assert_fails_with(
        &with(&[
            "--vpc-cidr",
            "10.0.0.0/16",
            "--cluster-cidr",
            "10.0.200.0/21",
        ]),
        &["overlaps VPC CIDR 10.0.0.0/16"],
    );
    assert_fails_with(
        &with(&["--vpc-cidr", "172.16.0.0/16"]),
        &["subnet 10.0.0.0/24 is not inside any --vpc-cidr"],
    );
    // More pods per node than the node subnet holds.
    let mut args = with(&[]);
    args[5] = "300";
    assert_fails_with(
        &args,
        &["--pods-per-node 300", "/24", "253", "--node-subnet-len 23"],
    );
    // The ceiling needs vCPUs only where it binds: m5.metal's 737 does.
    let mut args = with(&[]);
    args[1] = "m5.metal";
    assert_fails_with(&args, &["--vcpus", "737"]);
}

#[test]
fn plan_json_is_machine_readable() {
    let o = plan(&with(&["--prefix-delegation", "--output", "json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    assert_eq!(v["vpc_cni"]["max_pods_per_node"]["value"], 110);
    assert_eq!(v["vpc_cni"]["vpc_ips_per_node"]["value"], 49);
    assert_eq!(v["overlay"]["vpc_ips_per_node"]["value"], 1);
    assert_eq!(v["vpc_cni"]["fits"], false);
    assert_eq!(v["overlay"]["fits"], true);
    assert_eq!(v["instance"]["max_pods_pd_raw"], 434);
    let warnings = v["warnings"].as_array().expect("warnings array");
    assert!(warnings.iter().any(|w| w
        .as_str()
        .is_some_and(|w| w.contains("InsufficientCidrBlocks"))));
}

#[test]
fn plan_unknown_instance_type_suggests_names() {
    let mut args = with(&[]);
    args[1] = "m5.larg";
    assert_fails_with(
        &args,
        &["unknown instance type `m5.larg`", "did you mean m5.large"],
    );
}

#[test]
fn plan_bad_cidrs_are_explained() {
    assert_fails_with(
        &with(&["--subnet", "10.0.1/24"]),
        &["not an IPv4 CIDR such as 10.0.0.0/24"],
    );
    assert_fails_with(
        &with(&["--subnet", "10.0.1.7/24"]),
        &["host bits set", "did you mean 10.0.1.0/24"],
    );
    assert_fails_with(
        &with(&["--subnet", "10.1.0.0/29"]),
        &["VPC subnets are /16 to /28"],
    );
    assert_fails_with(&with(&["--subnet", "10.0.0.0/16"]), &["overlap"]);
}

#[test]
fn plan_zero_and_negative_counts_are_rejected() {
    let mut args = with(&[]);
    args[3] = "0";
    assert_fails_with(&args, &["--nodes", "at least 1"]);
    args[3] = "-3";
    assert_fails_with(&args, &["--nodes", "must not be negative"]);
    let mut args = with(&[]);
    args[5] = "0";
    assert_fails_with(&args, &["--pods-per-node", "at least 1"]);
    assert_fails_with(
        &with(&["--warm-ip-target", "-1"]),
        &["must not be negative"],
    );
}

#[test]
fn plan_conflicting_settings_are_rejected() {
    assert_fails_with(
        &with(&["--warm-prefix-target", "2"]),
        &["WARM_PREFIX_TARGET only applies with prefix delegation"],
    );
    assert_fails_with(&with(&["--custom-networking"]), &["--pod-subnet"]);
    assert_fails_with(
        &with(&["--pod-subnet", "100.64.0.0/16"]),
        &["--custom-networking"],
    );
    let mut args = with(&["--prefix-delegation"]);
    args[1] = "m4.large";
    assert_fails_with(&args, &["does not support prefix delegation"]);
    let mut args = with(&["--prefix-delegation"]);
    args[1] = "m5.metal";
    assert_fails_with(&args, &["--vcpus"]);
    args.extend(["--vcpus", "96"]);
    let o = plan(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("capped at 250 because 96 vCPUs (--vcpus) > 30"));
}

#[test]
fn plan_limits_file_replaces_the_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("limits.csv");
    std::fs::write(
        &good,
        "instance_type,max_enis,ipv4_per_eni,hypervisor,is_bare_metal,prefix_delegation_supported,network_cards,enis_all_cards,max_pods_secondary_ip,max_pods_pd_raw\n\
         x9.large,4,11,nitro,false,true,1,4,42,642\n",
    )
    .expect("write limits file");
    let path = good.to_str().expect("utf-8 temp path");
    let mut args = with(&["--limits-file", path, "--output", "json"]);
    args[1] = "x9.large";
    let o = plan(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    assert_eq!(v["vpc_cni"]["max_pods_per_node"]["value"], 42);

    // The built-in table is not consulted any more.
    assert_fails_with(
        &with(&["--limits-file", path]),
        &["unknown instance type `m5.large`", "not among the 1 types"],
    );

    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "instance_type,max_enis\nx9.large,4\n").expect("write bad file");
    let bad_path = bad.to_str().expect("utf-8 temp path");
    assert_fails_with(
        &with(&["--limits-file", bad_path]),
        &["lacks column `ipv4_per_eni`"],
    );
    let missing = dir.path().join("missing.csv");
    assert_fails_with(
        &with(&["--limits-file", missing.to_str().expect("utf-8 temp path")]),
        &["cannot read limits file", "missing.csv"],
    );
}
