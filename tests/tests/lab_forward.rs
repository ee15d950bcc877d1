//! Issue 17: pod traffic keeps flowing when a node's iptables filter
//! FORWARD chain has policy DROP (iptables-nft on node 1, a Docker-like
//! rule set in iptables-legacy on node 2), because the daemons (with
//! `--ip-masq`) put their accepts into that chain. Without them, 0 of 5
//! pings crossed a node with `iptables-nft -P FORWARD DROP` (reproduced on
//! the lab before the fix). Needs root:
//! `sudo -E cargo test -p e2e --test lab_forward`.

use std::time::Duration;

use e2e::lab::{self, Lab, LabConfig};

const JUMP: &str = "-A FORWARD -m comment --comment flannel-rs -j FLANNEL-RS-FWD";

/// Docker's FORWARD rules, policy DROP.
const DOCKER_LIKE: &[&str] = &[
    "-N DOCKER",
    "-N DOCKER-USER",
    "-N DOCKER-ISOLATION-STAGE-1",
    "-A DOCKER-USER -j RETURN",
    "-A DOCKER-ISOLATION-STAGE-1 -j RETURN",
    "-P FORWARD DROP",
    "-A FORWARD -j DOCKER-USER",
    "-A FORWARD -j DOCKER-ISOLATION-STAGE-1",
    "-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    "-A FORWARD -o docker0 -j DOCKER",
    "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT",
    "-A FORWARD -i docker0 -o docker0 -j ACCEPT",
];

fn ipt(ns: &str, flavour: &str, rule: &str) -> String {
    let mut args = vec!["-w", "-t", "filter"];
    args.extend(rule.split_whitespace());
    lab::ns_run(ns, flavour, &args).unwrap_or_else(|e| panic!("{flavour} {rule} in {ns}: {e}"))
}

#[test]
fn pods_talk_across_nodes_with_a_forward_drop_policy() {
    let mut cfg = LabConfig::new("vxlan", "embedded");
    cfg.daemon_args = vec!["--ip-masq".into()];
    // The accepts follow a drop policy set while the daemon runs at the
    // next resync.
    cfg.resync_period = Some("1s");
    let t0 = std::time::Instant::now();
    let lab = Lab::up('f', &cfg).unwrap();
    eprintln!("lab up after {:?}", t0.elapsed());
    let (n1, n2, n3) = (lab.node_ns(1), lab.node_ns(2), lab.node_ns(3));

    ipt(&n1, "iptables-nft", "-P FORWARD DROP");
    for rule in DOCKER_LIKE {
        ipt(&n2, "iptables-legacy", rule);
    }
    for (ns, flavour) in [(&n1, "iptables-nft"), (&n2, "iptables-legacy")] {
        lab::wait_for(
            &format!("our accepts in {flavour} FORWARD on {ns}"),
            Duration::from_secs(15),
            || {
                let s = ipt(ns, flavour, "-S");
                if s.lines().any(|l| l == JUMP) {
                    Ok(())
                } else {
                    Err(s)
                }
            },
        )
        .unwrap();
    }
    // Docker's rules are still first on node 2; ours come last.
    let legacy = ipt(&n2, "iptables-legacy", "-S FORWARD");
    assert_eq!(legacy.lines().last(), Some(JUMP), "{legacy}");
    // A node without iptables filter tables gets none.
    let names = lab::ns_run(&n3, "cat", &["/proc/net/ip_tables_names"]).unwrap();
    assert!(!names.contains("filter"), "{names}");

    eprintln!("accepts in place after {:?}", t0.elapsed());
    let pods = lab.pods().unwrap();
    let failed = lab::mesh_failures(&pods);
    assert!(
        failed.is_empty(),
        "{} of {} pings failed:\n{}",
        failed.len(),
        pods.len() * (pods.len() - 1),
        failed.join("\n")
    );
    eprintln!("mesh done after {:?}", t0.elapsed());
}
