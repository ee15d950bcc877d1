//! Metadata-mode (external) VXLAN against the real kernel, the mode switch
//! with FDB-mode VXLAN, and Geneve on a kernel without the module, in
//! `fct-dp-*` namespaces. Run as root:
//! `cargo test -p flanneld-rs --test dp_metadata`.

mod dp_common;

use std::net::Ipv4Addr;
use std::time::Duration;

use dp_common::*;
use flanneld::backend::metadata::{MetadataBackend, GENEVE_DEVICE, VXLAN_DEVICE};
use flanneld::backend::vxlan::VxlanBackend;
use flanneld::backend::{vtep_mac, Backend, BackendSpec, Peer, TunnelSpec};
use flanneld::netlink::Netlink;
use serde_json::{json, Value};
use testkit::Netns;

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, last)
}

/// Peer `i`: subnet 10.244.i.0/24 at 198.51.100.i, MAC 0a:00:00:00:00:0i.
fn numbered_peer(i: u8) -> Peer {
    let mac = format!("0a:00:00:00:00:{i:02x}");
    vxlan_peer(&format!("10.244.{i}.0/24"), ip(i), &mac)
}

fn tunnel(backend: &Value) -> TunnelSpec {
    let cfg = config(backend.clone());
    match BackendSpec::parse(&cfg.backend_type, &cfg.backend, None) {
        Ok(BackendSpec::Tunnel(s)) => s,
        other => panic!("{backend}: {other:?}"),
    }
}

fn metadata(nl: &Netlink, backend: &Value) -> MetadataBackend {
    MetadataBackend::new(nl.clone(), tunnel(backend))
}

/// One encapsulated route as `ip -d route` prints it (the JSON output
/// repeats the key "dst" for the encap's destination, so text is parsed).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct EncapRoute {
    dst: String,
    id: Option<u64>,
    tunnel_dst: Option<String>,
    via: String,
    dev: String,
    onlink: bool,
}

fn routes(ns: &Netns) -> Vec<EncapRoute> {
    let text = sh(ns, "ip -d route show proto 70");
    let mut out: Vec<EncapRoute> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let w: Vec<&str> = line.split_whitespace().collect();
            let after = |key: &str| {
                w.iter()
                    .position(|x| *x == key)
                    .and_then(|i| w.get(i + 1))
                    .map(|s| s.to_string())
            };
            // "unicast <dst> [encap ip id N src S dst D ...] via G dev X ..."
            let encap_at = w.iter().position(|x| *x == "encap");
            let tunnel_dst = encap_at.and_then(|i| {
                w[i..]
                    .iter()
                    .position(|x| *x == "dst")
                    .and_then(|j| w.get(i + j + 1))
                    .map(|s| s.to_string())
            });
            EncapRoute {
                dst: w.get(1).map(|s| s.to_string()).unwrap_or_default(),
                id: after("id").and_then(|s| s.parse().ok()),
                tunnel_dst,
                via: after("via").unwrap_or_default(),
                dev: after("dev").unwrap_or_default(),
                onlink: w.contains(&"onlink"),
            }
        })
        .collect();
    out.sort();
    out
}

fn tunneled(dst: &str, id: u64, peer: &str) -> EncapRoute {
    let net: ipnet::Ipv4Net = dst.parse().unwrap();
    EncapRoute {
        dst: dst.into(),
        id: Some(id),
        tunnel_dst: Some(peer.into()),
        via: net.network().to_string(),
        dev: VXLAN_DEVICE.into(),
        onlink: true,
    }
}

fn link(ns: &Netns, dev: &str) -> Value {
    json(ns, &format!("ip -j -d link show {dev}"))[0].clone()
}

/// Packets `dev` has sent.
fn tx_packets(ns: &Netns, dev: &str) -> u64 {
    let v = json(ns, &format!("ip -j -s link show {dev}"));
    v[0]["stats64"]["tx"]["packets"].as_u64().unwrap_or(0)
}

fn has_link(ns: &Netns, dev: &str) -> bool {
    json(ns, "ip -j link show")
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["ifname"] == dev)
}

#[tokio::test]
async fn metadata_vxlan_device_entries_and_reconcile() {
    let n = nodes("mdvx", 1).await;
    let node = &n[0];
    let backend = json!({"Type": "vxlan", "Mode": "metadata", "VNI": 7});
    let cfg = config(backend.clone());
    let mut b = metadata(&node.nl, &backend);
    let p = b.prepare(&node.local, &cfg).await.unwrap();
    let mac = vtep_mac::derive(ip(1), 7).to_string();
    assert_eq!(p.backend_type, "vxlan");
    assert_eq!(p.backend_data, Some(json!({"VNI": 7, "VtepMAC": mac})));
    assert_eq!(p.mtu, 1450);

    let l = link(&node.ns, VXLAN_DEVICE);
    let d = &l["linkinfo"]["info_data"];
    assert_eq!(l["linkinfo"]["info_kind"], "vxlan", "{l}");
    assert_eq!(d["external"], true, "{l}");
    assert_eq!(d["port"], 8472);
    assert_eq!(d["local"], "198.51.100.1");
    assert_eq!(d["link"], "eth0");
    assert_eq!(d["learning"], false);
    assert_eq!(
        (l["mtu"].as_u64(), l["address"].as_str()),
        (Some(1450), Some(mac.as_str()))
    );
    assert!(l["flags"].as_array().unwrap().iter().any(|f| f == "UP"));

    b.attach(&lease(
        "10.244.1.0/24",
        ip(1),
        "vxlan",
        p.backend_data.clone(),
    ))
    .await
    .unwrap();
    let addrs = json(&node.ns, &format!("ip -j -4 addr show dev {VXLAN_DEVICE}"));
    assert_eq!(addrs[0]["addr_info"][0]["local"], "10.244.1.0", "{addrs}");
    assert_eq!(addrs[0]["addr_info"][0]["prefixlen"], 32);

    let p2 = vxlan_peer("10.244.2.0/24", ip(2), "0a:00:00:00:00:02");
    let p3 = vxlan_peer("10.244.3.0/24", ip(3), "0a:00:00:00:00:03");
    let hg = Peer {
        backend_type: "host-gw".into(),
        ..vxlan_peer("10.244.4.0/24", ip(4), "0a:00:00:00:00:04")
    };
    let r = b
        .reconcile(&[p2.clone(), p3.clone(), hg.clone()])
        .await
        .unwrap();
    assert_eq!(r.peers, 2, "{r:?}");
    assert_eq!(r.errors.len(), 1, "{r:?}");
    assert!(
        r.errors[0].to_string().contains("same backend"),
        "{:?}",
        r.errors
    );
    assert_eq!((change(&r, "neigh_add"), change(&r, "route_add")), (2, 2));
    assert_eq!(change(&r, "fdb_add"), 0, "metadata mode has no FDB entries");
    assert_eq!(
        neighs(&node.ns, VXLAN_DEVICE),
        vec![
            ("10.244.2.0".into(), "0a:00:00:00:00:02".into()),
            ("10.244.3.0".into(), "0a:00:00:00:00:03".into())
        ]
    );
    assert!(fdb(&node.ns, VXLAN_DEVICE).is_empty());
    assert_eq!(
        routes(&node.ns),
        vec![
            tunneled("10.244.2.0/24", 7, "198.51.100.2"),
            tunneled("10.244.3.0/24", 7, "198.51.100.3")
        ]
    );

    // Idempotent.
    let r = b.reconcile(&[p2.clone(), p3.clone()]).await.unwrap();
    assert!(r.changes.is_empty(), "{:?}", r.changes);

    // Hand-deleted route and neighbour come back.
    sh(&node.ns, "ip route del 10.244.3.0/24");
    sh(
        &node.ns,
        &format!("ip neigh del 10.244.2.0 dev {VXLAN_DEVICE}"),
    );
    let r = b.reconcile(&[p2.clone(), p3.clone()]).await.unwrap();
    assert_eq!(
        (change(&r, "neigh_add"), change(&r, "route_add")),
        (1, 1),
        "{r:?}"
    );
    assert_eq!(routes(&node.ns).len(), 2);
    assert_eq!(neighs(&node.ns, VXLAN_DEVICE).len(), 2);

    // Peer 3 leaves: its route and neighbour go.
    let r = b.reconcile(std::slice::from_ref(&p2)).await.unwrap();
    assert_eq!((change(&r, "route_del"), change(&r, "neigh_del")), (1, 1));
    assert_eq!(
        routes(&node.ns),
        vec![tunneled("10.244.2.0/24", 7, "198.51.100.2")]
    );

    // Peer 2 with a new MAC: the neighbour is replaced, the route stays.
    let p2b = vxlan_peer("10.244.2.0/24", ip(2), "0a:00:00:00:00:22");
    let r = b.reconcile(std::slice::from_ref(&p2b)).await.unwrap();
    assert_eq!(r.changes, vec![("neigh_replace", 1)]);
    assert_eq!(
        neighs(&node.ns, VXLAN_DEVICE),
        vec![("10.244.2.0".into(), "0a:00:00:00:00:22".into())]
    );

    // Peer 2 renumbered (new public IP): the route's encap dst is replaced.
    let p2c = vxlan_peer("10.244.2.0/24", ip(9), "0a:00:00:00:00:22");
    let r = b.reconcile(std::slice::from_ref(&p2c)).await.unwrap();
    assert_eq!(r.changes, vec![("route_replace", 1)]);
    assert_eq!(
        routes(&node.ns),
        vec![tunneled("10.244.2.0/24", 7, "198.51.100.9")]
    );

    // The device deleted by hand: recreated with address and entries.
    sh(&node.ns, &format!("ip link del {VXLAN_DEVICE}"));
    let r = b.reconcile(std::slice::from_ref(&p2c)).await.unwrap();
    assert!(r.device_recreated && r.errors.is_empty(), "{r:?}");
    assert_eq!(
        routes(&node.ns),
        vec![tunneled("10.244.2.0/24", 7, "198.51.100.9")]
    );
    assert_eq!(neighs(&node.ns, VXLAN_DEVICE).len(), 1);
    let addrs = json(&node.ns, &format!("ip -j -4 addr show dev {VXLAN_DEVICE}"));
    assert_eq!(addrs[0]["addr_info"][0]["local"], "10.244.1.0");
}

#[tokio::test]
async fn metadata_vxlan_restart_adopts_or_recreates_and_leaves_others_alone() {
    let n = nodes("mdrs", 1).await;
    let node = &n[0];
    // Not ours: a static route and a route with another protocol.
    let foreign = [
        "10.244.9.0/24 via 198.51.100.200 dev eth0",
        "10.244.8.0/24 via 198.51.100.201 dev eth0 proto 71",
    ];
    for r in foreign {
        sh(&node.ns, &format!("ip route add {r}"));
    }
    let backend = json!({"Type": "vxlan", "Mode": "metadata"});
    let cfg = config(backend.clone());
    let peers: Vec<Peer> = (2..=4).map(numbered_peer).collect();
    {
        let mut first = metadata(&node.nl, &backend);
        let p = first.prepare(&node.local, &cfg).await.unwrap();
        first
            .attach(&lease("10.244.1.0/24", ip(1), "vxlan", p.backend_data))
            .await
            .unwrap();
        assert_eq!(first.reconcile(&peers).await.unwrap().peers, 3);
        // Dropped without any teardown: what SIGTERM does.
    }
    let index = link(&node.ns, VXLAN_DEVICE)["ifindex"].clone();
    assert_eq!(routes(&node.ns).len(), 3, "everything stays in place");
    sh(&node.ns, &format!("ip link set {VXLAN_DEVICE} mtu 1300"));

    let mut second = metadata(&node.nl, &backend);
    let p = second.prepare(&node.local, &cfg).await.unwrap();
    second
        .attach(&lease("10.244.1.0/24", ip(1), "vxlan", p.backend_data))
        .await
        .unwrap();
    let l = link(&node.ns, VXLAN_DEVICE);
    assert_eq!(l["ifindex"], index, "a compatible device is adopted");
    assert_eq!(l["mtu"], 1450, "MTU fixed in place");
    // Peers 3 and 4 left while it was down.
    let r = second.reconcile(&peers[..1]).await.unwrap();
    assert!(!r.device_recreated);
    assert_eq!(r.changes, vec![("route_del", 2), ("neigh_del", 2)]);
    assert_eq!(
        routes(&node.ns),
        vec![tunneled("10.244.2.0/24", 1, "198.51.100.2")]
    );

    // Other port: not adoptable, recreated.
    let other = json!({"Type": "vxlan", "Mode": "metadata", "Port": 4789});
    let mut third = metadata(&node.nl, &other);
    third
        .prepare(&node.local, &config(other.clone()))
        .await
        .unwrap();
    let l = link(&node.ns, VXLAN_DEVICE);
    assert_ne!(l["ifindex"], index, "an incompatible device is recreated");
    assert_eq!(l["linkinfo"]["info_data"]["port"], 4789);

    let all = sh(&node.ns, "ip route show");
    for r in foreign {
        let head = r.split(" dev ").next().unwrap_or(r);
        assert!(all.contains(head), "foreign route {r:?} touched:\n{all}");
    }
}

#[tokio::test]
async fn mode_switch_removes_the_other_vxlan_device() {
    let n = nodes("mdsw", 1).await;
    let node = &n[0];
    let fdb_cfg = config(json!({"Type": "vxlan"}));
    let md = json!({"Type": "vxlan", "Mode": "metadata"});
    let md_cfg = config(md.clone());
    let peer = [vxlan_peer("10.244.2.0/24", ip(2), "0a:00:00:00:00:02")];

    // FDB -> metadata.
    let mut f = VxlanBackend::new(node.nl.clone(), &fdb_cfg).unwrap();
    let p = f.prepare(&node.local, &fdb_cfg).await.unwrap();
    f.attach(&lease("10.244.1.0/24", ip(1), "vxlan", p.backend_data))
        .await
        .unwrap();
    f.reconcile(&peer).await.unwrap();
    assert!(has_link(&node.ns, "flannel.1"));
    let mut m = metadata(&node.nl, &md);
    let p = m.prepare(&node.local, &md_cfg).await.unwrap();
    assert!(!has_link(&node.ns, "flannel.1"), "FDB device removed");
    assert!(has_link(&node.ns, VXLAN_DEVICE));
    assert!(routes(&node.ns).is_empty(), "its routes went with it");
    m.attach(&lease("10.244.1.0/24", ip(1), "vxlan", p.backend_data))
        .await
        .unwrap();
    m.reconcile(&peer).await.unwrap();
    assert_eq!(
        routes(&node.ns),
        vec![tunneled("10.244.2.0/24", 1, "198.51.100.2")]
    );

    // Metadata -> FDB.
    let mut f = VxlanBackend::new(node.nl.clone(), &fdb_cfg).unwrap();
    let p = f.prepare(&node.local, &fdb_cfg).await.unwrap();
    assert!(!has_link(&node.ns, VXLAN_DEVICE), "metadata device removed");
    assert!(has_link(&node.ns, "flannel.1"));
    f.attach(&lease("10.244.1.0/24", ip(1), "vxlan", p.backend_data))
        .await
        .unwrap();
    let r = f.reconcile(&peer).await.unwrap();
    assert!(r.errors.is_empty(), "{r:?}");
    assert_eq!(
        our_routes(&node.ns),
        vec![(
            "10.244.2.0/24".into(),
            "10.244.2.0".into(),
            "flannel.1".into(),
            true
        )]
    );
}

/// A pod behind node `k` (1-based): a veth from the node, point-to-point
/// style (the node side holds 10.244.k.1/32 and a /32 route to the pod).
fn pod(node: &Node, k: usize, mtu: u32) -> Netns {
    let pod = netns(&format!("mdpod{k}"));
    sh(&node.ns, "sysctl -qw net.ipv4.ip_forward=1");
    sh(
        &node.ns,
        &format!(
            "ip link add vpod type veth peer name eth0 netns {}",
            pod.name()
        ),
    );
    sh(&node.ns, &format!("ip addr add 10.244.{k}.1/32 dev vpod"));
    sh(&node.ns, "ip link set vpod up");
    sh(&node.ns, &format!("ip route add 10.244.{k}.2/32 dev vpod"));
    sh(&pod, &format!("ip addr add 10.244.{k}.2/24 dev eth0"));
    sh(&pod, &format!("ip link set eth0 mtu {mtu} up"));
    sh(&pod, &format!("ip route add 10.244.{k}.1/32 dev eth0"));
    sh(
        &pod,
        &format!("ip route add default via 10.244.{k}.1 dev eth0"),
    );
    pod
}

fn ping(from: &Netns, to: &str, size: u32) {
    let size = size.to_string();
    let out = from
        .run(
            "ping",
            &[
                "-c", "2", "-i", "0.2", "-W", "2", "-M", "do", "-s", &size, to,
            ],
        )
        .unwrap_or_else(|e| panic!("ping {to} (-s {size}) from {}: {e}", from.name()));
    assert!(out.contains("2 received"), "{out}");
}

/// A TCP exchange: busybox nc in `server` answers one line, `client` reads it.
fn tcp(client: &Netns, server: &Netns, server_ip: &str) {
    let word = format!("tcp-ok-{}", server.name());
    let mut srv = server
        .exec("busybox")
        .args(["nc", "-l", "-p", "5001", "-e", "/bin/echo", &word])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("starting busybox nc in the server pod");
    let mut got = String::new();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(out) = client.run("busybox", &["nc", "-w", "2", server_ip, "5001"]) {
            got = out;
            break;
        }
    }
    let _ = srv.kill();
    let _ = srv.wait();
    assert_eq!(
        got.trim(),
        word,
        "TCP from {} to {server_ip}",
        client.name()
    );
}

/// Brings up `backends[i]` on node i+1 with lease 10.244.(i+1).0/24, then
/// feeds every node the others' published leases.
async fn mesh(n: &[Node], backends: &mut [Box<dyn Backend>], cfgs: &[lease_store::NetworkConfig]) {
    let mut published = Vec::new();
    for (i, (node, b)) in n.iter().zip(backends.iter_mut()).enumerate() {
        let subnet = format!("10.244.{}.0/24", i + 1);
        let p = b.prepare(&node.local, &cfgs[i]).await.unwrap();
        b.attach(&lease(
            &subnet,
            node.local.public_ip,
            &p.backend_type,
            p.backend_data.clone(),
        ))
        .await
        .unwrap();
        published.push(Peer {
            subnet: subnet.parse().unwrap(),
            public_ip: node.local.public_ip,
            public_ipv6: node.local.public_ipv6,
            backend_type: p.backend_type,
            backend_data: p.backend_data,
        });
    }
    for (i, b) in backends.iter_mut().enumerate() {
        let others: Vec<_> = published
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| p.clone())
            .collect();
        let r = b.reconcile(&others).await.unwrap();
        assert!(r.errors.is_empty() && r.peers == others.len(), "{r:?}");
    }
}

#[tokio::test]
async fn metadata_vxlan_three_nodes_carry_pod_traffic() {
    let n = nodes("mdmesh", 3).await;
    let backend = json!({"Type": "vxlan", "Mode": "metadata"});
    let cfgs = vec![config(backend.clone()); 3];
    let mut backends: Vec<Box<dyn Backend>> = n
        .iter()
        .map(|node| Box::new(metadata(&node.nl, &backend)) as Box<dyn Backend>)
        .collect();
    mesh(&n, &mut backends, &cfgs).await;
    let pods: Vec<Netns> = n
        .iter()
        .enumerate()
        .map(|(i, node)| pod(node, i + 1, 1450))
        .collect();
    let before = tx_packets(&n[0].ns, VXLAN_DEVICE);
    for (i, from) in pods.iter().enumerate() {
        for j in 0..pods.len() {
            if i != j {
                // 1422 + 28 = 1450: a full-MTU packet, DF set.
                ping(from, &format!("10.244.{}.2", j + 1), 1422);
            }
        }
    }
    tcp(&pods[0], &pods[2], "10.244.3.2");
    tcp(&pods[2], &pods[1], "10.244.2.2");
    let after = tx_packets(&n[0].ns, VXLAN_DEVICE);
    assert!(
        after >= before + 8,
        "through the device: {before} -> {after} packets"
    );
}

#[tokio::test]
async fn metadata_node_and_fdb_node_interoperate() {
    let n = nodes("mdmix", 2).await;
    let md = json!({"Type": "vxlan", "Mode": "metadata"});
    let fdb_cfg = config(json!({"Type": "vxlan"}));
    let cfgs = vec![config(md.clone()), fdb_cfg.clone()];
    let mut backends: Vec<Box<dyn Backend>> = vec![
        Box::new(metadata(&n[0].nl, &md)),
        Box::new(VxlanBackend::new(n[1].nl.clone(), &fdb_cfg).unwrap()),
    ];
    mesh(&n, &mut backends, &cfgs).await;
    assert!(has_link(&n[0].ns, VXLAN_DEVICE) && has_link(&n[1].ns, "flannel.1"));
    let pods: Vec<Netns> = n
        .iter()
        .enumerate()
        .map(|(i, node)| pod(node, i + 1, 1450))
        .collect();
    ping(&pods[0], "10.244.2.2", 1422);
    ping(&pods[1], "10.244.1.2", 1422);
    tcp(&pods[0], &pods[1], "10.244.2.2");
    tcp(&pods[1], &pods[0], "10.244.1.2");
}

/// Metadata-mode VXLAN over an IPv6-only underlay (Backend.Underlay
/// "ipv6", no IPv4 address on the nodes): the device takes local6, the
/// overlay MTU is underlay - 70, routes carry `encap ip6 ... dst <peer's
/// PublicIPv6>`, and full-size DF pings and TCP cross both ways.
#[tokio::test]
async fn metadata_vxlan_over_an_ipv6_underlay_carries_pod_traffic() {
    let n = nodes_ipv6("md6", 2, false).await;
    let md = json!({"Type": "vxlan", "Mode": "metadata", "Underlay": "ipv6"});
    let cfgs = vec![config(md.clone()), config(md.clone())];
    let mut backends: Vec<Box<dyn Backend>> = vec![
        Box::new(metadata(&n[0].nl, &md)),
        Box::new(metadata(&n[1].nl, &md)),
    ];
    let p = backends[0].prepare(&n[0].local, &cfgs[0]).await.unwrap();
    assert_eq!(p.mtu, 1500 - 70);
    mesh(&n, &mut backends, &cfgs).await;
    let l = link(&n[0].ns, VXLAN_DEVICE);
    let data = &l["linkinfo"]["info_data"];
    assert_eq!(data["local6"], "2001:db8:100::1", "{l}");
    assert_eq!(data["external"], true, "{l}");
    assert_eq!(l["mtu"], 1430, "{l}");
    let r = sh(&n[0].ns, "ip -d route show proto 70");
    assert!(
        r.contains("encap ip6 id 1") && r.contains("dst 2001:db8:100::2"),
        "{r}"
    );
    let pods: Vec<Netns> = n
        .iter()
        .enumerate()
        .map(|(i, node)| pod(node, i + 1, 1430))
        .collect();
    ping(&pods[0], "10.244.2.2", 1402);
    ping(&pods[1], "10.244.1.2", 1402);
    tcp(&pods[0], &pods[1], "10.244.2.2");
    tcp(&pods[1], &pods[0], "10.244.1.2");
    // A peer that published no IPv6 address is reported, not programmed.
    let mut lonely = numbered_peer(7);
    lonely.backend_data = Some(json!({"VNI": 1, "VtepMAC": "0a:00:00:00:00:07"}));
    let r = backends[0].reconcile(&[lonely]).await.unwrap();
    assert_eq!(r.peers, 0, "{r:?}");
    assert!(r.errors[0].to_string().contains("no PublicIPv6"), "{r:?}");
}

#[tokio::test]
async fn geneve_link_creation_fails_with_eopnotsupp_on_this_kernel() {
    let n = nodes("mdgnv", 1).await;
    let node = &n[0];
    // What the kernel really answers to an RTM_NEWLINK of kind geneve.
    let spec = tunnel(&json!({"Type": "geneve"}));
    let dev = flanneld::backend::metadata::DeviceSpec::new(&spec, &node.local).unwrap();
    let err = node
        .nl
        .handle()
        .link()
        .add(dev.link_message())
        .execute()
        .await
        .expect_err("this kernel has no geneve module: creating the link must fail");
    assert_eq!(
        flanneld::netlink::errno(&err),
        Some(libc::EOPNOTSUPP),
        "expected EOPNOTSUPP, got {err}"
    );

    // Without Fallback: one clear line.
    let backend = json!({"Type": "geneve"});
    let mut b = metadata(&node.nl, &backend);
    let e = b
        .prepare(&node.local, &config(backend.clone()))
        .await
        .expect_err("no geneve support must fail prepare")
        .to_string();
    assert_eq!(
        e,
        "the kernel has no geneve support (creating flannel-geneve: Operation not supported); \
         load the geneve module, set \"Fallback\": \"userspace\" in net-conf.json's Backend, \
         or run this node with --datapath-mode userspace"
    );
    assert!(!has_link(&node.ns, GENEVE_DEVICE));
}

/// Needs the userspace datapath (issue 5, the "userspace" engineer's part).
#[tokio::test]
async fn geneve_fallback_runs_the_userspace_datapath() {
    let n = nodes("mdfb", 1).await;
    let node = &n[0];
    let backend = json!({"Type": "geneve", "Fallback": "userspace"});
    let cfg = config(backend.clone());
    let mut b = metadata(&node.nl, &backend);
    let p = b
        .prepare(&node.local, &cfg)
        .await
        .unwrap_or_else(|e| panic!("the userspace fallback must take over: {e}"));
    assert!(b.fell_back());
    assert_eq!(p.backend_type, "geneve");
    assert_eq!(
        p.backend_data,
        Some(json!({"VNI": 1, "VtepMAC": vtep_mac::derive(ip(1), 1).to_string()}))
    );
    assert!(!has_link(&node.ns, GENEVE_DEVICE));
    assert!(
        has_link(&node.ns, "flannel-tun"),
        "the userspace TUN device"
    );
    b.attach(&lease("10.244.1.0/24", ip(1), "geneve", p.backend_data))
        .await
        .unwrap();
    let r = b.reconcile(&[]).await.unwrap();
    assert!(r.errors.is_empty(), "{r:?}");
}
