//! Kernel tests: pods attached by the real binary in throwaway namespaces.
//! Need root; they fail (never skip) without it.

mod common;

use std::collections::HashSet;

use common::{pod_ip, Netns, Node};
use serde_json::json;

#[test]
fn two_pods_reach_each_other_and_the_gateway() {
    let node = Node::new("ping");
    let conf = node.conf("1.0.0", json!({}));
    let a = Netns::new("ping-a");
    let b = Netns::new("ping-b");
    let ra = node.add("ping-a", &a, &conf);
    let rb = node.add("ping-b", &b, &conf);

    // The result lists bridge, host veth and the pod interface in its sandbox.
    let ifs = ra["interfaces"].as_array().expect("interfaces");
    assert_eq!(ifs.len(), 3, "{ra}");
    assert_eq!(ifs[0]["name"], "cni0");
    assert!(ifs[1]["name"].as_str().unwrap().starts_with("veth"));
    assert_eq!(ifs[2]["name"], "eth0");
    assert_eq!(ifs[2]["sandbox"], a.path_str());
    assert_eq!(ra["ips"][0]["gateway"], "10.244.7.1");
    assert_eq!(ra["ips"][0]["interface"], 2);
    assert!(ra["ips"][0]["address"].as_str().unwrap().ends_with("/24"));
    assert_eq!(ra["routes"][0]["dst"], "10.244.0.0/16");
    assert_eq!(ra["routes"][1]["dst"], "0.0.0.0/0");

    let (ipa, ipb) = (pod_ip(&ra), pod_ip(&rb));
    assert_ne!(ipa, ipb);
    for (pod, target) in [(&a, ipb.as_str()), (&b, ipa.as_str()), (&a, "10.244.7.1")] {
        let (ok, out) = pod.try_run(&["ping", "-c", "1", "-W", "2", target]);
        assert!(ok, "ping {target} from {} failed: {out}", pod.name());
    }
    // MTU from subnet.env on both ends, hairpin on the bridge port.
    assert!(a.links().contains("mtu 1450"), "{}", a.links());
    let host = ifs[1]["name"].as_str().unwrap();
    let (_, detail) = node.ns.try_run(&["ip", "-d", "link", "show", host]);
    assert!(detail.contains("hairpin on"), "{detail}");
    assert!(detail.contains("master cni0"), "{detail}");
    let (_, fwd) = node.ns.try_run(&["cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(fwd.trim(), "1");

    node.del("ping-a", a.path_str(), &conf);
    node.del("ping-b", b.path_str(), &conf);
    assert!(!node.ns.links().contains("veth"), "{}", node.ns.links());
}

#[test]
fn sixty_four_concurrent_adds_get_distinct_addresses() {
    let node = Node::new("c64");
    let conf = node.conf("1.0.0", json!({}));
    let pods: Vec<Netns> = (0..64).map(|i| Netns::new(&format!("c64-{i}"))).collect();

    let ips: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (node, conf) = (&node, &conf);
                s.spawn(move || pod_ip(&node.add(&format!("c64-{i}"), p, conf)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("ADD thread"))
            .collect()
    });
    let distinct: HashSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), 64, "duplicate addresses: {ips:?}");
    assert_eq!(node.ipam_files().len(), 64 + 2);

    std::thread::scope(|s| {
        for (i, p) in pods.iter().enumerate() {
            let (node, conf) = (&node, &conf);
            s.spawn(move || node.del(&format!("c64-{i}"), p.path_str(), conf));
        }
    });
    assert_eq!(node.ipam_files(), ["last_reserved_ip.0", "lock"]);
    assert!(!node.ns.links().contains("veth"), "{}", node.ns.links());
    // DEL leaves the kernel's part to background children: within a
    // bounded time nothing but lo and the bridge remains (64 deletions
    // queue on the kernel's RTNL lock, 15-30 ms each).
    let start = std::time::Instant::now();
    while node.ns.links().lines().count() > 2 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "leftovers 30 s after DEL: {}",
            node.ns.links()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for p in &pods {
        assert_eq!(p.links().lines().count(), 1, "{}", p.links());
    }
}

#[test]
fn chained_before_reference_portmap() {
    let node = Node::new("pm");
    let pod = Netns::new("pm-p");
    let conf = node.conf("1.0.0", json!({}));
    let ours = node.add("pm-1", &pod, &conf);

    // What libcni gives the next plugin: its own config, our result as
    // prevResult, and the capability it declared.
    let pm_conf = json!({
        "cniVersion": "1.0.0",
        "name": "fct-net",
        "type": "portmap",
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": [
            {"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}
        ]},
        "prevResult": ours,
    });
    let env = |cmd: &'static str| {
        [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "pm-1"),
            ("CNI_IFNAME", "eth0"),
        ]
    };
    let path = pod.path_str();
    let mut add_env = env("ADD").to_vec();
    add_env.push(("CNI_NETNS", path));
    let r = node.run_plugin(
        "/usr/lib/cni/portmap",
        &add_env,
        pm_conf.to_string().as_bytes(),
    );
    assert!(r.success, "portmap ADD failed: {} {}", r.stdout, r.stderr);
    let chained = r.json();
    assert_eq!(
        chained["ips"], ours["ips"],
        "portmap must pass our result through"
    );
    let (ok, rules) = node.ns.try_run(&["iptables-save", "-t", "nat"]);
    assert!(
        ok && rules.contains("18080"),
        "portmap rules missing in the node namespace: {rules}"
    );

    let r = node.run_plugin(
        "/usr/lib/cni/portmap",
        &{
            let mut e = env("DEL").to_vec();
            e.push(("CNI_NETNS", path));
            e
        },
        pm_conf.to_string().as_bytes(),
    );
    assert!(r.success, "portmap DEL failed: {} {}", r.stdout, r.stderr);
    node.del("pm-1", pod.path_str(), &conf);
    assert_eq!(node.ipam_files(), ["last_reserved_ip.0", "lock"]);
}

#[test]
fn requested_addresses_are_honoured_when_free() {
    let node = Node::new("req");
    let p1 = Netns::new("req-1");
    let p2 = Netns::new("req-2");
    let p3 = Netns::new("req-3");
    // Also a configured bridge name and MTU override.
    let conf = node.conf(
        "1.1.0",
        json!({"runtimeConfig": {"ips": ["10.244.7.77/24"]}, "bridge": "fctbr0", "mtu": 1400}),
    );
    let r1 = node.add("req-1", &p1, &conf);
    assert_eq!(pod_ip(&r1), "10.244.7.77");
    assert_eq!(r1["interfaces"][0]["name"], "fctbr0");
    assert_eq!(r1["interfaces"][2]["mtu"], 1400);
    assert!(p1.links().contains("mtu 1400"), "{}", p1.links());
    assert!(node.ns.has_link("fctbr0") && !node.ns.has_link("cni0"));
    // Taken: refused, nothing left behind.
    let r = node.cni("ADD", "req-2", p2.path_str(), "eth0", &conf);
    assert_eq!(r.code(), 103, "{}", r.stdout);
    assert!(!p2.has_link("eth0"));
    // CNI_ARGS IP= works too; outside the subnet is refused.
    let plain = node.conf("1.1.0", json!({}));
    let r = node
        .cni_args(
            "ADD",
            "req-2",
            p2.path_str(),
            "eth0",
            "IgnoreUnknown=1;IP=10.244.7.78",
            &plain,
        )
        .ok();
    assert_eq!(pod_ip(&r.json()), "10.244.7.78");
    let r = node.cni_args(
        "ADD",
        "req-3",
        p3.path_str(),
        "eth0",
        "IP=10.244.9.9",
        &plain,
    );
    assert_eq!(r.code(), 103);
    let args_conf = node.conf("1.1.0", json!({"args": {"cni": {"ips": ["10.244.7.79"]}}}));
    assert_eq!(pod_ip(&node.add("req-3", &p3, &args_conf)), "10.244.7.79");
    for id in ["req-1", "req-2", "req-3"] {
        node.del(id, "", &plain);
    }
    assert!(!p1.has_link("eth0"), "{}", p1.links());
    assert_eq!(node.ipam_files(), ["last_reserved_ip.0", "lock"]);
}
