//! VXLAN backend against the real kernel, in `fct-dp-*` namespaces.
//! Run as root: `cargo test -p flanneld-rs --test dp_vxlan`.

mod dp_common;

use std::net::Ipv4Addr;

use dp_common::*;
use flanneld::backend::vtep_mac;
use flanneld::backend::vxlan::VxlanBackend;
use flanneld::backend::Backend;
use serde_json::json;

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, last)
}

/// `ip -j -d link show <dev>` of the one device.
fn link(node: &Node, dev: &str) -> serde_json::Value {
    json(&node.ns, &format!("ip -j -d link show {dev}"))[0].clone()
}

#[tokio::test]
async fn vxlan_device_has_flannel_attributes_and_is_reused_or_recreated() {
    let n = nodes("vxdev", 1).await;
    let node = &n[0];
    let cfg = config(json!({"Type": "vxlan"}));
    let mut b = VxlanBackend::new(node.nl.clone(), &cfg, &node.local).unwrap();
    let prepared = b.prepare().await.unwrap();
    let mac = vtep_mac::derive(ip(1), 1).to_string();
    assert_eq!(prepared.backend_type, "vxlan");
    assert_eq!(
        prepared.backend_data,
        Some(json!({"VNI": 1, "VtepMAC": mac}))
    );
    assert_eq!(prepared.mtu, 1450);

    let l = link(node, "flannel.1");
    let d = &l["linkinfo"]["info_data"];
    assert_eq!(l["linkinfo"]["info_kind"], "vxlan");
    assert_eq!(d["id"], 1);
    assert_eq!(d["local"], "198.51.100.1");
    assert_eq!(d["port"], 8472);
    assert_eq!(d["learning"], false);
    assert_eq!(d["link"], "eth0");
    assert_eq!(l["mtu"], 1450);
    assert_eq!(l["address"], mac.as_str());
    assert!(
        l["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{l}"
    );

    b.attach(&lease(
        "10.244.1.0/24",
        ip(1),
        "vxlan",
        prepared.backend_data.clone(),
    ))
    .await
    .unwrap();
    let addrs = json(&node.ns, "ip -j -4 addr show dev flannel.1");
    let a = &addrs[0]["addr_info"];
    assert_eq!(a.as_array().unwrap().len(), 1, "{addrs}");
    assert_eq!(
        (a[0]["local"].as_str(), a[0]["prefixlen"].as_u64()),
        (Some("10.244.1.0"), Some(32))
    );

    // A restart with the same options adopts the device: same ifindex.
    let index = l["ifindex"].clone();
    sh(&node.ns, "ip link set flannel.1 mtu 1300");
    let mut again = VxlanBackend::new(node.nl.clone(), &cfg, &node.local).unwrap();
    again.prepare().await.unwrap();
    let l2 = link(node, "flannel.1");
    assert_eq!(l2["ifindex"], index, "a compatible device must be reused");
    assert_eq!(l2["mtu"], 1450, "MTU is fixed in place");

    // A new port cannot be changed in place: the device is recreated.
    let cfg2 = config(json!({"Type": "vxlan", "port": 4789, "GBP": true}));
    let mut other = VxlanBackend::new(node.nl.clone(), &cfg2, &node.local).unwrap();
    other.prepare().await.unwrap();
    let l3 = link(node, "flannel.1");
    assert_ne!(
        l3["ifindex"], index,
        "an incompatible device must be recreated"
    );
    assert_eq!(l3["linkinfo"]["info_data"]["port"], 4789);
    assert_eq!(l3["linkinfo"]["info_data"]["gbp"], true);
}

#[tokio::test]
async fn vxlan_peers_added_removed_and_mac_changed() {
    let n = nodes("vxpeer", 1).await;
    let node = &n[0];
    let cfg = config(json!({"Type": "vxlan", "VNI": 7}));
    let mut b = VxlanBackend::new(node.nl.clone(), &cfg, &node.local).unwrap();
    let p = b.prepare().await.unwrap();
    b.attach(&lease("10.244.1.0/24", ip(1), "vxlan", p.backend_data))
        .await
        .unwrap();

    let p2 = vxlan_peer("10.244.2.0/24", ip(2), "0a:00:00:00:00:02");
    let p3 = vxlan_peer("10.244.3.0/24", ip(3), "0a:00:00:00:00:03");
    let r = b.reconcile(&[p2.clone(), p3.clone()]).await.unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.peers, 2);
    assert_eq!(
        (
            change(&r, "neigh_add"),
            change(&r, "fdb_add"),
            change(&r, "route_add")
        ),
        (2, 2, 2)
    );
    let dev = "flannel.7";
    assert_eq!(
        neighs(&node.ns, dev),
        vec![
            ("10.244.2.0".into(), "0a:00:00:00:00:02".into()),
            ("10.244.3.0".into(), "0a:00:00:00:00:03".into())
        ]
    );
    assert_eq!(
        fdb(&node.ns, dev),
        vec![
            ("0a:00:00:00:00:02".into(), "198.51.100.2".into()),
            ("0a:00:00:00:00:03".into(), "198.51.100.3".into())
        ]
    );
    assert_eq!(
        our_routes(&node.ns),
        vec![
            (
                "10.244.2.0/24".into(),
                "10.244.2.0".into(),
                dev.into(),
                true
            ),
            (
                "10.244.3.0/24".into(),
                "10.244.3.0".into(),
                dev.into(),
                true
            ),
        ]
    );

    // Idempotent: nothing to do the second time.
    let r = b.reconcile(&[p2.clone(), p3.clone()]).await.unwrap();
    assert!(r.changes.is_empty(), "{:?}", r.changes);

    // Peer 3 leaves: its three entries go.
    let r = b.reconcile(std::slice::from_ref(&p2)).await.unwrap();
    assert_eq!(
        (
            change(&r, "neigh_del"),
            change(&r, "fdb_del"),
            change(&r, "route_del")
        ),
        (1, 1, 1)
    );
    assert_eq!(
        neighs(&node.ns, dev),
        vec![("10.244.2.0".into(), "0a:00:00:00:00:02".into())]
    );
    assert_eq!(
        fdb(&node.ns, dev),
        vec![("0a:00:00:00:00:02".into(), "198.51.100.2".into())]
    );
    assert_eq!(our_routes(&node.ns).len(), 1);

    // Peer 2 comes back with a new MAC (Go flannel after a reboot): the old
    // FDB entry is removed and the neighbour now points at the new MAC.
    let p2b = vxlan_peer("10.244.2.0/24", ip(2), "0a:00:00:00:00:22");
    let r = b.reconcile(&[p2b]).await.unwrap();
    assert_eq!(
        (
            change(&r, "neigh_replace"),
            change(&r, "fdb_add"),
            change(&r, "fdb_del")
        ),
        (1, 1, 1)
    );
    assert_eq!(
        neighs(&node.ns, dev),
        vec![("10.244.2.0".into(), "0a:00:00:00:00:22".into())]
    );
    assert_eq!(
        fdb(&node.ns, dev),
        vec![("0a:00:00:00:00:22".into(), "198.51.100.2".into())]
    );

    // Same MAC, new public IP (a peer renumbered): the FDB remote is
    // replaced in place, nothing else changes.
    let p2c = vxlan_peer("10.244.2.0/24", ip(5), "0a:00:00:00:00:22");
    let r = b.reconcile(&[p2c]).await.unwrap();
    assert_eq!(r.changes, vec![("fdb_replace", 1)]);
    assert_eq!(
        fdb(&node.ns, dev),
        vec![("0a:00:00:00:00:22".into(), "198.51.100.5".into())]
    );
}

#[tokio::test]
async fn vxlan_second_instance_sweeps_stale_peers() {
    let n = nodes("vxstale", 1).await;
    let node = &n[0];
    let cfg = config(json!({"Type": "vxlan"}));
    let peers: Vec<_> = (2..=4)
        .map(|i| {
            vxlan_peer(
                &format!("10.244.{i}.0/24"),
                ip(i),
                &format!("0a:00:00:00:00:0{i}"),
            )
        })
        .collect();
    {
        let mut first = VxlanBackend::new(node.nl.clone(), &cfg, &node.local).unwrap();
        let p = first.prepare().await.unwrap();
        first
            .attach(&lease("10.244.1.0/24", ip(1), "vxlan", p.backend_data))
            .await
            .unwrap();
        let r = first.reconcile(&peers).await.unwrap();
        assert_eq!(r.peers, 3);
    }
    assert_eq!(our_routes(&node.ns).len(), 3);
    // The "daemon" restarts; peers 3 and 4 left while it was down.
    let mut second = VxlanBackend::new(node.nl.clone(), &cfg, &node.local).unwrap();
    let p = second.prepare().await.unwrap();
    second
        .attach(&lease("10.244.1.0/24", ip(1), "vxlan", p.backend_data))
        .await
        .unwrap();
    let r = second.reconcile(&peers[..1]).await.unwrap();
    assert!(!r.device_recreated);
    assert_eq!(
        (
            change(&r, "neigh_del"),
            change(&r, "fdb_del"),
            change(&r, "route_del")
        ),
        (2, 2, 2)
    );
    assert_eq!(
        neighs(&node.ns, "flannel.1"),
        vec![("10.244.2.0".into(), "0a:00:00:00:00:02".into())]
    );
    assert_eq!(
        fdb(&node.ns, "flannel.1"),
        vec![("0a:00:00:00:00:02".into(), "198.51.100.2".into())]
    );
    assert_eq!(our_routes(&node.ns).len(), 1);
}

#[tokio::test]
async fn vxlan_device_deleted_by_hand_comes_back_with_entries() {
    let n = nodes("vxdel", 1).await;
    let node = &n[0];
    let cfg = config(json!({"Type": "vxlan"}));
    let mut b = VxlanBackend::new(node.nl.clone(), &cfg, &node.local).unwrap();
    let p = b.prepare().await.unwrap();
    b.attach(&lease("10.244.1.0/24", ip(1), "vxlan", p.backend_data))
        .await
        .unwrap();
    let peers = [vxlan_peer("10.244.2.0/24", ip(2), "0a:00:00:00:00:02")];
    b.reconcile(&peers).await.unwrap();

    sh(&node.ns, "ip link del flannel.1");
    assert!(
        our_routes(&node.ns).is_empty(),
        "the kernel drops routes with the device"
    );
    let r = b.reconcile(&peers).await.unwrap();
    assert!(r.device_recreated);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        neighs(&node.ns, "flannel.1"),
        vec![("10.244.2.0".into(), "0a:00:00:00:00:02".into())]
    );
    assert_eq!(
        fdb(&node.ns, "flannel.1"),
        vec![("0a:00:00:00:00:02".into(), "198.51.100.2".into())]
    );
    assert_eq!(our_routes(&node.ns).len(), 1);
    let addrs = json(&node.ns, "ip -j -4 addr show dev flannel.1");
    assert_eq!(addrs[0]["addr_info"][0]["local"], "10.244.1.0");
}

#[tokio::test]
async fn vxlan_leaves_entries_it_does_not_own() {
    let n = nodes("vxforeign", 1).await;
    let node = &n[0];
    // Someone else's: a static route outside the cluster network, a device
    // route (no gateway) inside it, a route to the whole network, a
    // permanent neighbour on the underlay.
    sh(
        &node.ns,
        "ip route add 10.245.9.0/24 via 198.51.100.200 dev eth0",
    );
    sh(&node.ns, "ip route add 10.244.8.0/24 dev eth0 proto 71");
    sh(
        &node.ns,
        "ip route add 10.244.0.0/16 via 198.51.100.201 dev eth0 proto 71",
    );
    sh(
        &node.ns,
        "ip neigh add 198.51.100.200 lladdr 0a:00:00:00:00:c8 dev eth0 nud permanent",
    );
    let before_routes = sh(&node.ns, "ip route show");
    let before_neigh = sh(&node.ns, "ip neigh show dev eth0");
    // A gatewayed route to a peer subnet inside the cluster network is a
    // host-gw/DirectRouting peer route (Go flanneld makes them `proto
    // boot`): ours whatever its protocol, so a departed peer's goes.
    sh(
        &node.ns,
        "ip route add 10.244.9.0/24 via 198.51.100.200 dev eth0",
    );

    let cfg = config(json!({"Type": "vxlan"}));
    let mut b = VxlanBackend::new(node.nl.clone(), &cfg, &node.local).unwrap();
    let p = b.prepare().await.unwrap();
    b.attach(&lease("10.244.1.0/24", ip(1), "vxlan", p.backend_data))
        .await
        .unwrap();
    let peer = [vxlan_peer("10.244.2.0/24", ip(2), "0a:00:00:00:00:02")];
    b.reconcile(&peer).await.unwrap();
    let r = b.reconcile(&[]).await.unwrap();
    assert_eq!(
        change(&r, "route_del"),
        1,
        "only our own route is removed: {:?}",
        r.changes
    );

    let after_routes = sh(&node.ns, "ip route show");
    assert!(!after_routes.contains("10.244.9.0/24"), "{after_routes}");
    for line in before_routes.lines().filter(|l| !l.contains("flannel")) {
        assert!(
            after_routes.contains(line),
            "route {line:?} was touched:\n{after_routes}"
        );
    }
    assert_eq!(sh(&node.ns, "ip neigh show dev eth0"), before_neigh);
}

#[tokio::test]
async fn vxlan_direct_routing_uses_underlay_for_l2_peers() {
    let n = nodes("vxdirect", 1).await;
    let node = &n[0];
    sh(
        &node.ns,
        "ip route add 192.0.2.0/24 via 198.51.100.254 dev eth0",
    );
    let cfg = config(json!({"Type": "vxlan", "DirectRouting": true}));
    let mut b = VxlanBackend::new(node.nl.clone(), &cfg, &node.local).unwrap();
    let p = b.prepare().await.unwrap();
    b.attach(&lease("10.244.1.0/24", ip(1), "vxlan", p.backend_data))
        .await
        .unwrap();
    let near = vxlan_peer("10.244.2.0/24", ip(2), "0a:00:00:00:00:02");
    let far = vxlan_peer(
        "10.244.3.0/24",
        Ipv4Addr::new(192, 0, 2, 9),
        "0a:00:00:00:00:03",
    );
    let r = b.reconcile(&[near, far]).await.unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        our_routes(&node.ns),
        vec![
            (
                "10.244.2.0/24".into(),
                "198.51.100.2".into(),
                "eth0".into(),
                false
            ),
            (
                "10.244.3.0/24".into(),
                "10.244.3.0".into(),
                "flannel.1".into(),
                true
            ),
        ]
    );
    assert_eq!(
        fdb(&node.ns, "flannel.1"),
        vec![("0a:00:00:00:00:03".into(), "192.0.2.9".into())]
    );
}

/// Two nodes, a pod namespace behind a bridge on each, and a real ping
/// from pod to pod through both VXLAN devices.
#[tokio::test]
async fn vxlan_overlay_carries_pod_to_pod_ping() {
    let n = nodes("vxping", 2).await;
    let cfg = config(json!({"Type": "vxlan"}));
    let mut backends = Vec::new();
    let mut published = Vec::new();
    let mut pods = Vec::new();
    for (i, node) in n.iter().enumerate() {
        let k = i + 1;
        let mut b = VxlanBackend::new(node.nl.clone(), &cfg, &node.local).unwrap();
        let p = b.prepare().await.unwrap();
        let subnet = format!("10.244.{k}.0/24");
        b.attach(&lease(
            &subnet,
            node.local.public_ip,
            "vxlan",
            p.backend_data.clone(),
        ))
        .await
        .unwrap();
        published.push(flanneld::backend::Peer {
            subnet: subnet.parse().unwrap(),
            public_ip: node.local.public_ip,
            public_ipv6: None,
            backend_type: p.backend_type,
            backend_data: p.backend_data,
        });
        backends.push(b);

        // The pod: a namespace with eth0 in the node's bridge cni0.
        let pod = bridged_pod(&node.ns, &format!("vxpod{k}"), k, 1450);
        pods.push(pod);
    }
    for (i, b) in backends.iter_mut().enumerate() {
        let others: Vec<_> = published
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| p.clone())
            .collect();
        let r = b.reconcile(&others).await.unwrap();
        assert!(r.errors.is_empty() && r.peers == 1, "{r:?}");
    }
    let before = json(&n[0].ns, "ip -j -s link show flannel.1")[0]["stats64"].clone();
    let out = pods[0]
        .run("ping", &["-c", "3", "-i", "0.2", "-W", "2", "10.244.2.2"])
        .unwrap_or_else(|e| panic!("pod-to-pod ping over VXLAN failed: {e}"));
    assert!(out.contains("3 received"), "{out}");
    // Large packets fit the overlay MTU without fragmentation.
    pods[1]
        .run(
            "ping",
            &["-c", "1", "-W", "2", "-M", "do", "-s", "1422", "10.244.1.2"],
        )
        .unwrap_or_else(|e| panic!("1450-byte ping over VXLAN failed: {e}"));
    // The packets went through the tunnel device, not some other path.
    let after = json(&n[0].ns, "ip -j -s link show flannel.1")[0]["stats64"].clone();
    let tx = |s: &serde_json::Value| s["tx"]["packets"].as_u64().unwrap_or(0);
    assert!(
        tx(&after) >= tx(&before) + 3,
        "before {before} after {after}"
    );
}

/// 1,000 peers added at once are programmed in one pass, and a pass with
/// nothing to do changes nothing. Prints the timings (no threshold: these
/// machines are shared and noisy; docs/PERFORMANCE.md has the benchmark).
#[tokio::test]
async fn vxlan_thousand_peers_converge_in_one_pass() {
    let n = nodes("vxk", 1).await;
    let node = &n[0];
    let cfg = config(json!({"Type": "vxlan"}));
    let mut b = VxlanBackend::new(node.nl.clone(), &cfg, &node.local).unwrap();
    let p = b.prepare().await.unwrap();
    b.attach(&lease("10.244.0.0/26", ip(1), "vxlan", p.backend_data))
        .await
        .unwrap();
    // /26 slices of 10.244.0.0/16, MACs 0a:00:00:00:HH:LL; public IPs may
    // repeat (FDB entries are keyed by MAC), nothing is sent to them.
    let peers: Vec<_> = (1u32..=1000)
        .map(|i| {
            let subnet = format!("10.244.{}.{}/26", i / 4, (i % 4) * 64);
            let mac = format!("0a:00:00:00:{:02x}:{:02x}", i >> 8, i & 0xff);
            vxlan_peer(&subnet, ip(2 + (i % 250) as u8), &mac)
        })
        .collect();

    let t = std::time::Instant::now();
    let r = b.reconcile(&peers).await.unwrap();
    let add = t.elapsed();
    assert!(
        r.errors.is_empty(),
        "{:?}",
        &r.errors[..r.errors.len().min(3)]
    );
    assert_eq!(r.peers, 1000);
    assert_eq!(
        (
            change(&r, "neigh_add"),
            change(&r, "fdb_add"),
            change(&r, "route_add")
        ),
        (1000, 1000, 1000)
    );
    assert_eq!(our_routes(&node.ns).len(), 1000);
    assert_eq!(fdb(&node.ns, "flannel.1").len(), 1000);
    assert_eq!(neighs(&node.ns, "flannel.1").len(), 1000);

    let t = std::time::Instant::now();
    let r = b.reconcile(&peers).await.unwrap();
    let steady = t.elapsed();
    assert!(r.changes.is_empty(), "{:?}", r.changes);

    let t = std::time::Instant::now();
    let r = b.reconcile(&[]).await.unwrap();
    let del = t.elapsed();
    assert_eq!(change(&r, "route_del"), 1000);
    assert!(our_routes(&node.ns).is_empty());
    eprintln!("1000 peers: program {add:?}, no-op pass {steady:?}, remove all {del:?}");
}

/// Go flanneld's `flannel.1` (right VNI, port, local address, but a random
/// MAC) is adopted as is: same ifindex, its MAC published and remembered;
/// a later pass keeps it; deleted while we are down, it comes back with
/// the remembered MAC; without a memory, a fresh device gets the derived MAC.
#[tokio::test]
async fn vxlan_adopts_go_device_with_its_random_mac() {
    let n = nodes("vxgomac", 1).await;
    let node = &n[0];
    let go_mac = "a6:3c:5d:1e:77:42";
    sh(
        &node.ns,
        "ip link add flannel.1 type vxlan id 1 local 198.51.100.1 dev eth0 dstport 8472 nolearning udpcsum",
    );
    sh(
        &node.ns,
        &format!("ip link set flannel.1 address {go_mac} mtu 1450 up"),
    );
    let index = link(node, "flannel.1")["ifindex"].clone();
    let dir = std::env::temp_dir().join(format!("fct-vxgomac-{}", std::process::id()));
    let memory = flanneld::backend::mac_memory::MacMemory::new(dir.join("vtep-mac.json"));

    let cfg = config(json!({"Type": "vxlan"}));
    let mut b = VxlanBackend::new(node.nl.clone(), &cfg, &node.local)
        .unwrap()
        .with_mac_memory(Some(memory.clone()));
    let p = b.prepare().await.unwrap();
    assert_eq!(p.backend_data, Some(json!({"VNI": 1, "VtepMAC": go_mac})));
    assert_eq!(
        link(node, "flannel.1")["ifindex"],
        index,
        "adopted, not recreated"
    );
    let r = b
        .reconcile(&[vxlan_peer("10.244.2.0/24", ip(2), "0a:00:00:00:00:02")])
        .await
        .unwrap();
    assert!(!r.device_recreated);
    assert_eq!(link(node, "flannel.1")["address"], go_mac);

    // Deleted while the daemon is down: the next run recreates it with
    // Go's MAC, so peers keep their entries.
    sh(&node.ns, "ip link del flannel.1");
    let mut again = VxlanBackend::new(node.nl.clone(), &cfg, &node.local)
        .unwrap()
        .with_mac_memory(Some(memory.clone()));
    let p = again.prepare().await.unwrap();
    assert_eq!(p.backend_data, Some(json!({"VNI": 1, "VtepMAC": go_mac})));
    assert_eq!(link(node, "flannel.1")["address"], go_mac);

    // Someone changes the MAC under a running daemon: the device is put
    // back on the published MAC.
    sh(&node.ns, "ip link set flannel.1 address 0e:11:22:33:44:55");
    let r = again.reconcile(&[]).await.unwrap();
    assert!(r.device_recreated);
    assert_eq!(link(node, "flannel.1")["address"], go_mac);

    // No memory and no device: the derived MAC.
    sh(&node.ns, "ip link del flannel.1");
    let mut fresh = VxlanBackend::new(node.nl.clone(), &cfg, &node.local).unwrap();
    let p = fresh.prepare().await.unwrap();
    let derived = vtep_mac::derive(ip(1), 1).to_string();
    assert_eq!(p.backend_data, Some(json!({"VNI": 1, "VtepMAC": derived})));
    assert_eq!(link(node, "flannel.1")["address"], derived.as_str());
    let _ = std::fs::remove_dir_all(&dir);
}
