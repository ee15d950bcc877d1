//! Shared scaffolding for the datapath kernel tests: "node" namespaces on a
//! veth underlay (198.51.100.0/24), a netlink handle bound to each, and
//! `ip -j` readers. Every namespace is an `testkit::Netns` guard named
//! `fct-dp-...`, deleted on drop even when a test panics.

#![allow(dead_code)]

use std::net::Ipv4Addr;

use flanneld::backend::{LocalNode, Peer};
use flanneld::netlink::Netlink;
use lease_store::{Lease, LeaseAttrs, NetworkConfig};
use serde_json::{json, Value};
use testkit::Netns;

pub struct Node {
    pub ns: Netns,
    pub nl: Netlink,
    pub local: LocalNode,
}

/// A namespace (`fct-dp-<what>-...`), failing loudly when not root.
pub fn netns(what: &str) -> Netns {
    Netns::new(&format!("dp-{what}"))
}

pub fn sh(ns: &Netns, cmd: &str) -> String {
    let args: Vec<&str> = cmd.split_whitespace().collect();
    ns.run(args[0], &args[1..])
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

pub fn json(ns: &Netns, cmd: &str) -> Value {
    let out = sh(ns, cmd);
    if out.trim().is_empty() {
        return json!([]);
    }
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{cmd}: bad JSON ({e}): {out}"))
}

/// `n` nodes, node i (1-based) at 198.51.100.i/24 on `eth0`, all on one L2:
/// node 1 holds a bridge `ul` (the "switch") and each other node a veth
/// into it. MTU 1500.
pub async fn nodes(what: &str, n: u8) -> Vec<Node> {
    let mut nss: Vec<Netns> = (1..=n).map(|i| netns(&format!("{what}{i}"))).collect();
    let first = nss.remove(0);
    // Node 1: its eth0 is a bridge port, so peers and node 1 share one L2.
    sh(&first, "ip link add ul type bridge");
    sh(&first, "ip link set ul up");
    for (i, ns) in nss.iter().enumerate() {
        let port = format!("p{}", i + 2);
        sh(
            &first,
            &format!(
                "ip link add {port} type veth peer name eth0 netns {}",
                ns.name()
            ),
        );
        sh(&first, &format!("ip link set {port} master ul up"));
    }
    // Node 1's own address lives on the bridge, under the name eth0 for
    // uniform tests: rename the bridge is not possible after ports exist,
    // so node 1 gets a veth pair into the bridge too.
    sh(&first, "ip link add p1 type veth peer name eth0");
    sh(&first, "ip link set p1 master ul up");
    nss.insert(0, first);
    let mut out = Vec::new();
    for (i, ns) in nss.into_iter().enumerate() {
        let ip = Ipv4Addr::new(198, 51, 100, i as u8 + 1);
        sh(&ns, &format!("ip addr add {ip}/24 dev eth0"));
        sh(&ns, "ip link set eth0 up");
        let nl = Netlink::connect_in_netns(&ns.path()).expect("netlink in test netns");
        let eth0 = nl
            .link_by_name("eth0")
            .await
            .expect("dump")
            .expect("eth0 exists");
        out.push(Node {
            local: LocalNode {
                iface_name: "eth0".into(),
                iface_index: eth0.index,
                iface_mtu: eth0.mtu.unwrap_or(1500),
                iface_addr: ip,
                public_ip: ip,
                iface_addr6: None,
                public_ipv6: None,
            },
            ns,
            nl,
        });
    }
    out
}

/// `nodes`, with an IPv6 underlay as well: node i also gets
/// 2001:db8:100::i/64 on `eth0` (no DAD: usable at once), and its
/// `LocalNode` the IPv6 addresses. Without `keep_ipv4` the IPv4 addresses
/// are removed (an IPv6-only underlay: `iface_addr` 0.0.0.0, as detection
/// reports it).
pub async fn nodes_ipv6(what: &str, n: u8, keep_ipv4: bool) -> Vec<Node> {
    let mut out = nodes(what, n).await;
    for (i, node) in out.iter_mut().enumerate() {
        let v6: std::net::Ipv6Addr = format!("2001:db8:100::{}", i + 1).parse().unwrap();
        sh(&node.ns, &format!("ip -6 addr add {v6}/64 dev eth0 nodad"));
        if !keep_ipv4 {
            sh(
                &node.ns,
                &format!("ip addr del {}/24 dev eth0", node.local.iface_addr),
            );
            node.local.iface_addr = Ipv4Addr::UNSPECIFIED;
            node.local.public_ip = Ipv4Addr::UNSPECIFIED;
        }
        node.local.iface_addr6 = Some(v6);
        node.local.public_ipv6 = Some(v6);
    }
    out
}

/// A pod namespace (`fct-dp-<what>-...`) at 10.244.k.2/24 with MTU `mtu`,
/// its eth0 a port of the bridge `cni0` (10.244.k.1/24, the default route)
/// that this creates in the node namespace, which also forwards.
pub fn bridged_pod(node: &Netns, what: &str, k: usize, mtu: u32) -> Netns {
    let pod = netns(what);
    sh(node, "sysctl -qw net.ipv4.ip_forward=1");
    sh(node, "ip link add cni0 type bridge");
    sh(node, &format!("ip addr add 10.244.{k}.1/24 dev cni0"));
    sh(node, "ip link set cni0 up");
    sh(
        node,
        &format!(
            "ip link add veth0 type veth peer name eth0 netns {}",
            pod.name()
        ),
    );
    sh(node, "ip link set veth0 master cni0 up");
    sh(&pod, &format!("ip addr add 10.244.{k}.2/24 dev eth0"));
    sh(&pod, &format!("ip link set eth0 mtu {mtu} up"));
    sh(&pod, &format!("ip route add default via 10.244.{k}.1"));
    pod
}

pub fn config(backend: Value) -> NetworkConfig {
    let backend_type = backend["Type"].as_str().unwrap_or("vxlan").to_lowercase();
    NetworkConfig {
        enable_ipv4: true,
        enable_ipv6: false,
        network: Some("10.244.0.0/16".parse().unwrap()),
        subnet_len: 24,
        subnet_min: None,
        subnet_max: None,
        ipv6_network: None,
        ipv6_subnet_len: 64,
        ipv6_subnet_min: None,
        ipv6_subnet_max: None,
        enable_nftables: true,
        backend_type,
        backend,
    }
}

pub fn lease(subnet: &str, public_ip: Ipv4Addr, backend_type: &str, data: Option<Value>) -> Lease {
    Lease {
        subnet: Some(subnet.parse().unwrap()),
        ipv6_subnet: None,
        attrs: LeaseAttrs {
            public_ip,
            public_ipv6: None,
            backend_type: backend_type.into(),
            backend_data: data,
            backend_v6_data: None,
        },
        expiration: None,
        revision: 0,
    }
}

pub fn vxlan_peer(subnet: &str, public_ip: Ipv4Addr, mac: &str) -> Peer {
    Peer {
        subnet: subnet.parse().unwrap(),
        public_ip,
        public_ipv6: None,
        backend_type: "vxlan".into(),
        backend_data: Some(json!({"VNI": 1, "VtepMAC": mac})),
    }
}

/// Routes with our protocol, as `(dst, gateway, dev, onlink)`.
pub fn our_routes(ns: &Netns) -> Vec<(String, String, String, bool)> {
    let v = json(ns, "ip -j route show proto 70");
    let mut out: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["dst"].as_str().unwrap_or("").to_string(),
                r["gateway"].as_str().unwrap_or("").to_string(),
                r["dev"].as_str().unwrap_or("").to_string(),
                r["flags"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|x| x == "onlink")),
            )
        })
        .collect();
    out.sort();
    out
}

/// Permanent neighbours on `dev` as `(ip, mac)`.
pub fn neighs(ns: &Netns, dev: &str) -> Vec<(String, String)> {
    let v = json(ns, &format!("ip -j neigh show dev {dev} nud permanent"));
    let mut out: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["dst"].as_str().unwrap().to_string(),
                n["lladdr"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// FDB entries on `dev` as `(mac, dst)`.
pub fn fdb(ns: &Netns, dev: &str) -> Vec<(String, String)> {
    let v = json(ns, &format!("bridge -j fdb show dev {dev}"));
    let mut out: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.get("dst").is_some())
        .map(|e| {
            (
                e["mac"].as_str().unwrap().to_string(),
                e["dst"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

pub fn change(report: &flanneld::backend::ReconcileReport, kind: &str) -> u64 {
    report
        .changes
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, n)| *n)
        .unwrap_or(0)
}
