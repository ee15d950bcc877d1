//! nftables masquerade against the real kernel, in `fct-dp-*` namespaces.
//! Run as root: `cargo test -p flanneld-rs --test dp_masq`.

mod dp_common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use dp_common::*;
use flanneld::masq::nft::NftMasq;
use flanneld::masq::Masquerade;
use ipnet::Ipv4Net;
use testkit::Netns;

fn cluster() -> Vec<Ipv4Net> {
    vec!["10.244.0.0/16".parse().unwrap()]
}

#[test]
fn masq_rules_in_flannel_order_and_other_tables_untouched() {
    let ns = netns("masq");
    sh(&ns, "nft add table ip other");
    sh(
        &ns,
        "nft add chain ip other post { type nat hook postrouting priority 50 ; }",
    );
    sh(
        &ns,
        "nft add rule ip other post ip saddr 10.0.0.0/8 counter",
    );
    let other_before = sh(&ns, "nft list table ip other");

    let m = NftMasq::in_netns(ns.name());
    m.apply(&cluster(), "10.244.1.0/24".parse().unwrap())
        .unwrap();
    // Applying twice replaces, never duplicates.
    m.apply(&cluster(), "10.244.1.0/24".parse().unwrap())
        .unwrap();
    let rules = m.list().unwrap();
    let want = [
        ("postrouting", "mark&16384==16384 return"),
        (
            "postrouting",
            "saddr==10.244.1.0/24 daddr==10.244.0.0/16 return",
        ),
        (
            "postrouting",
            "saddr==10.244.0.0/16 daddr==10.244.1.0/24 return",
        ),
        (
            "postrouting",
            "saddr!=10.244.0.0/16 daddr==10.244.1.0/24 return",
        ),
        (
            "postrouting",
            "saddr==10.244.0.0/16 daddr!=10.244.0.0/16 daddr!=224.0.0.0/4 masquerade(fully-random)",
        ),
        (
            "postrouting",
            "saddr!=10.244.0.0/16 daddr==10.244.0.0/16 masquerade(fully-random)",
        ),
        ("forward", "saddr==10.244.0.0/16 accept"),
        ("forward", "daddr==10.244.0.0/16 accept"),
    ];
    let got: Vec<(&str, &str)> = rules
        .iter()
        .map(|(c, r)| (c.as_str(), r.as_str()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(sh(&ns, "nft list table ip other"), other_before);

    // A chain flushed by hand is restored by the next apply (each resync).
    sh(&ns, "nft flush chain ip flannel-rs forward");
    assert_eq!(m.list().unwrap().len(), 6);
    m.apply(&cluster(), "10.244.1.0/24".parse().unwrap())
        .unwrap();
    assert_eq!(m.list().unwrap().len(), 8);

    // A new lease replaces the rules atomically.
    m.apply(&cluster(), "10.244.7.0/24".parse().unwrap())
        .unwrap();
    assert!(m.list().unwrap()[1].1.starts_with("saddr==10.244.7.0/24"));

    m.remove().unwrap();
    assert!(m.list().unwrap().is_empty());
    assert!(!sh(&ns, "nft list tables").contains("flannel-rs"));
    assert_eq!(sh(&ns, "nft list table ip other"), other_before);
    // Removing again (ip-masq still off at the next start) is fine.
    m.remove().unwrap();
}

/// The source address a UDP listener in `outside` sees for a datagram
/// sent from `pod` to 198.51.100.9:9999.
fn source_seen(pod: &Netns, outside: &Netns) -> String {
    let mut listener = outside
        .exec("python3")
        .args([
            "-c",
            "import socket,sys\n\
             s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             s.bind(('198.51.100.9',9999)); s.settimeout(10)\n\
             print('ready',flush=True)\n\
             d,a=s.recvfrom(100); print(a[0],flush=True)",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 in the outside namespace");
    let mut lines = BufReader::new(listener.stdout.take().expect("piped stdout")).lines();
    let ready = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(ready, "ready", "the UDP listener did not start");
    // One datagram normally suffices; resend in case the first is lost
    // while the pod's neighbour entry resolves.
    for _ in 0..10 {
        let _ = pod
            .exec("python3")
            .args([
                "-c",
                "import socket; socket.socket(socket.AF_INET,socket.SOCK_DGRAM).sendto(b'x',('198.51.100.9',9999))",
            ])
            .status();
        std::thread::sleep(Duration::from_millis(100));
        if matches!(listener.try_wait(), Ok(Some(_))) {
            break;
        }
    }
    let seen = lines.next().and_then(Result::ok).unwrap_or_default();
    let _ = listener.wait();
    seen.trim().to_string()
}

#[test]
fn masq_rewrites_pod_source_leaving_the_cluster() {
    // pod (10.244.1.2) -- node (10.244.1.1 | 198.51.100.1) -- outside (198.51.100.9)
    let pod = netns("mqpod");
    let node = netns("mqnode");
    let outside = netns("mqout");
    sh(
        &node,
        &format!(
            "ip link add veth0 type veth peer name eth0 netns {}",
            pod.name()
        ),
    );
    sh(
        &node,
        &format!(
            "ip link add eth0 type veth peer name eth0 netns {}",
            outside.name()
        ),
    );
    sh(&node, "sysctl -qw net.ipv4.ip_forward=1");
    sh(&node, "ip addr add 10.244.1.1/24 dev veth0");
    sh(&node, "ip addr add 198.51.100.1/24 dev eth0");
    sh(&node, "ip link set veth0 up");
    sh(&node, "ip link set eth0 up");
    sh(&pod, "ip addr add 10.244.1.2/24 dev eth0");
    sh(&pod, "ip link set eth0 up");
    sh(&pod, "ip route add default via 10.244.1.1");
    sh(&outside, "ip addr add 198.51.100.9/24 dev eth0");
    sh(&outside, "ip link set eth0 up");

    // Without our rules the outside sees the pod's own address.
    assert_eq!(source_seen(&pod, &outside), "10.244.1.2");

    let m = NftMasq::in_netns(node.name());
    m.apply(&cluster(), "10.244.1.0/24".parse().unwrap())
        .unwrap();
    assert_eq!(source_seen(&pod, &outside), "198.51.100.1");

    // Turned off: back to no NAT. Each sender uses a fresh source port, so
    // no conntrack entry from the masqueraded flow is reused.
    m.remove().unwrap();
    assert_eq!(source_seen(&pod, &outside), "10.244.1.2");
}

/// pod (10.244.1.2) -- node (forwarding) -- outside (198.51.100.9).
fn routed_pod() -> (Netns, Netns, Netns) {
    let pod = netns("fwpod");
    let node = netns("fwnode");
    let outside = netns("fwout");
    for (dev, peer) in [("veth0", &pod), ("eth0", &outside)] {
        sh(
            &node,
            &format!(
                "ip link add {dev} type veth peer name eth0 netns {}",
                peer.name()
            ),
        );
    }
    sh(&node, "sysctl -qw net.ipv4.ip_forward=1");
    sh(&node, "ip addr add 10.244.1.1/24 dev veth0");
    sh(&node, "ip addr add 198.51.100.1/24 dev eth0");
    sh(&node, "ip link set veth0 up");
    sh(&node, "ip link set eth0 up");
    sh(&pod, "ip addr add 10.244.1.2/24 dev eth0");
    sh(&pod, "ip link set eth0 up");
    sh(&pod, "ip route add default via 10.244.1.1");
    sh(&outside, "ip addr add 198.51.100.9/24 dev eth0");
    sh(&outside, "ip link set eth0 up");
    (pod, node, outside)
}

/// Pings from the pod through the node; true when any of 3 is answered.
fn pod_gets_through(pod: &Netns) -> bool {
    pod.exec("ping")
        .args(["-c", "3", "-i", "0.2", "-W", "1", "198.51.100.9"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Docker's FORWARD rules (legacy flavour here), policy DROP.
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

fn ipt(ns: &Netns, flavour: &str, rule: &str) -> String {
    sh(ns, &format!("{flavour} -w -t filter {rule}"))
}

/// Issue 17: with `iptables -P FORWARD DROP` (iptables-nft) our own nft
/// table's accept does not help; the accepts in iptables' FORWARD do, in
/// both flavours, also behind a Docker-like rule set, and `remove`
/// (`--ip-masq=false`) takes exactly ours away.
#[test]
fn forward_accepts_beat_an_iptables_drop_policy_in_both_flavours() {
    let (pod, node, _outside) = routed_pod();
    let m = NftMasq::in_netns(node.name());
    let pod_subnet: Ipv4Net = "10.244.1.0/24".parse().unwrap();
    m.apply(&cluster(), pod_subnet).unwrap();
    assert!(pod_gets_through(&pod), "baseline: the node forwards");
    // No iptables filter table yet: none is created for nothing.
    let legacy_tables = sh(&node, "cat /proc/net/ip_tables_names");
    assert!(!legacy_tables.contains("filter"), "{legacy_tables}");
    assert!(!sh(&node, "nft list tables").contains("table ip filter"));

    // iptables-nft policy DROP after our rules were applied: cut off,
    // although our nft table accepts cluster traffic (the defect).
    ipt(&node, "iptables-nft", "-P FORWARD DROP");
    assert!(
        !pod_gets_through(&pod),
        "a drop policy must cut the pod off first"
    );
    // The next resync puts our accepts into iptables' FORWARD.
    m.apply(&cluster(), pod_subnet).unwrap();
    assert!(m.forward_installed());
    assert!(pod_gets_through(&pod), "accepts in iptables-nft FORWARD");
    let nft_rules = ipt(&node, "iptables-nft", "-S");
    assert!(
        nft_rules.contains("-A FORWARD -m comment --comment flannel-rs -j FLANNEL-RS-FWD"),
        "{nft_rules}"
    );

    // A Docker-like rule set in iptables-legacy: cut off again until the
    // next resync, then through, with Docker's rules still first.
    for rule in DOCKER_LIKE {
        ipt(&node, "iptables-legacy", rule);
    }
    let docker_rules = ipt(&node, "iptables-legacy", "-S");
    assert!(
        !pod_gets_through(&pod),
        "legacy drop policy cuts the pod off"
    );
    m.apply(&cluster(), pod_subnet).unwrap();
    assert!(pod_gets_through(&pod), "accepts in both flavours");
    let legacy = ipt(&node, "iptables-legacy", "-S");
    let forward: Vec<&str> = legacy
        .lines()
        .filter(|l| l.starts_with("-A FORWARD"))
        .collect();
    assert_eq!(forward.len(), 7, "{legacy}");
    assert_eq!(
        forward[6], "-A FORWARD -m comment --comment flannel-rs -j FLANNEL-RS-FWD",
        "ours appended after Docker's: {legacy}"
    );
    // Idempotent: applying again changes nothing.
    m.apply(&cluster(), pod_subnet).unwrap();
    assert_eq!(ipt(&node, "iptables-legacy", "-S"), legacy);

    // --ip-masq=false: ours go, Docker's stay, the drop policy applies again.
    m.remove().unwrap();
    assert!(!m.forward_installed());
    assert_eq!(ipt(&node, "iptables-legacy", "-S"), docker_rules);
    assert!(!ipt(&node, "iptables-nft", "-S").contains("FLANNEL-RS-FWD"));
    assert!(!pod_gets_through(&pod));
    m.remove().unwrap();
}
