//! Kubernetes' own e2e tests on the lab, the fast subset that runs on every
//! submission, by `e2e.test` of the same 1.20.2 tree through `flannelctl
//! lab conformance`: the four `[Conformance]` specs of `[sig-network]
//! Networking Granular Checks: Pods` (pod to pod on one node and across
//! nodes, node to pod, over HTTP and UDP) and four of `Granular Checks:
//! Services` (pod to Service and node to Service, HTTP and UDP, through
//! kube-proxy), and two `[sig-network] DNS` conformance specs (the
//! cluster's and a headless and a ClusterIP Service's A, SRV and PTR
//! records, by UDP and TCP, from two probers, through the lab's cluster
//! DNS). SCTP variants are `[Feature:SCTPConnectivity][Disruptive]`
//! and left out, as conformance runs do. Needs root, `scripts/k8s-build.sh --e2e` and
//! `deploy/image/build.sh --e2e` (scripts/test.sh does both). The full
//! sig-network run and its table: docs/CONFORMANCE.md.

use anyhow::{ensure, Context, Result};
use e2e::kube::KubeLab;

#[test]
fn sig_network_granular_checks_pass() -> Result<()> {
    let mut lab =
        KubeLab::up_full('c', 2, "vxlan", &[], &["--e2e"]).context("lab up --kubernetes")?;
    lab.keep_logs_on_drop(true);
    let report = tempfile::tempdir()?;
    let report_dir = report.path().display().to_string();
    let out = lab.ctl(
        "conformance",
        &[
            "--focus",
            r"\[sig-network\] (Networking Granular Checks: (Pods|Services should function for (pod|node)-Service: (http|udp))|DNS should provide DNS for (the cluster|services) +\[Conformance\])",
            "--skip",
            r"SCTP|Disruptive",
            "--report-dir",
            &report_dir,
        ],
    );
    let log = std::fs::read_to_string(report.path().join("e2e.log")).unwrap_or_default();
    let out = out.with_context(|| format!("e2e.test output ends:\n{}", tail(&log, 60)))?;
    eprintln!("{out}");
    ensure!(
        out.contains("ran 10 of ") && out.contains("10 passed, 0 failed"),
        "expected the 8 granular checks and 2 DNS specs to pass: {out}"
    );
    ensure!(
        std::fs::read_dir(report.path())?
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("junit")),
        "no JUnit file in {report_dir}"
    );
    // The runner's stand-in for its internet precheck is gone again.
    let etc = format!("/etc/netns/fct-lab-{}-infra", lab.name);
    ensure!(!std::path::Path::new(&etc).exists(), "{etc} left behind");
    lab.keep_logs_on_drop(false);
    lab.down()?;
    Ok(())
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
