//! nftables masquerade against the real kernel, in `fct-dp-*` namespaces.
//! Run as root: `cargo test -p flanneld-rs --test dp_masq`.

mod dp_common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use dp_common::*;
use e2e::netns::Netns;
use flanneld::masq::nft::NftMasq;
use flanneld::masq::Masquerade;
use ipnet::Ipv4Net;

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
