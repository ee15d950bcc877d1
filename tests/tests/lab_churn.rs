//! The lab under churn: a node leaves, daemons restart under traffic, a
//! device is deleted by hand, etcd restarts, stale entries from before a
//! restart are swept. Needs root; `sudo -E cargo test -p e2e --test lab_churn`.

use std::time::Duration;

use e2e::lab::{self, ContinuousPing, Lab, LabConfig, Node, VXLAN_DEV};

fn node(nodes: &[Node], k: u32) -> Node {
    nodes.iter().find(|n| n.index == k).cloned().unwrap()
}

/// Waits until node `on` has no entries left for `peer`.
fn wait_gone(lab: &Lab, on: u32, peer: &Node, mac: Option<&str>, within: Duration) -> Duration {
    let net = peer.subnet_net().unwrap();
    let ns = lab.node_ns(on);
    let (_, took) = lab::wait_for(
        &format!("node {on} removing node {}'s entries", peer.index),
        within,
        || {
            let left = lab::peer_entries(&ns, &net, mac).map_err(|e| e.to_string())?;
            if left.is_empty() {
                Ok(())
            } else {
                Err(left.join("; "))
            }
        },
    )
    .unwrap();
    took
}

fn has_entries(lab: &Lab, on: u32, peer: &Node, mac: Option<&str>) -> Vec<String> {
    lab::peer_entries(&lab.node_ns(on), &peer.subnet_net().unwrap(), mac).unwrap()
}

fn node_leaves(stem: char, backend: &'static str, store: &'static str) {
    let lab = Lab::up(stem, &LabConfig::new(backend, store)).unwrap();
    let nodes = lab.nodes().unwrap();
    let n3 = node(&nodes, 3);
    let mac = lab::link_mac(&lab.node_ns(3), VXLAN_DEV);
    for on in [1, 2] {
        let e = has_entries(&lab, on, &n3, mac.as_deref());
        let want = if backend == "vxlan" { 3 } else { 1 };
        assert_eq!(e.len(), want, "node {on} before the leave: {e:?}");
    }
    lab.leave(3).unwrap();
    for on in [1, 2] {
        wait_gone(&lab, on, &n3, mac.as_deref(), Duration::from_secs(10));
    }
    // The others still reach each other.
    let pods: Vec<_> = lab
        .pods()
        .unwrap()
        .into_iter()
        .filter(|p| p.node != 3)
        .collect();
    let failed = lab::mesh_failures(&pods);
    assert!(failed.is_empty(), "{failed:?}");
}

#[test]
fn node_leave_vxlan_etcd() {
    node_leaves('l', "vxlan", "etcd");
}

#[test]
fn node_leave_hostgw_embedded() {
    node_leaves('l', "host-gw", "embedded");
}

/// Restarts the daemons of nodes 2 and 1 (SIGTERM, start, ready) while pod
/// n1 pings pod n2 every 50 ms: not one packet lost, same subnets.
fn restart_under_ping(stem: char, backend: &'static str, store: &'static str) {
    let lab = Lab::up(stem, &LabConfig::new(backend, store)).unwrap();
    let before = lab.nodes().unwrap();
    let pods = lab.pods().unwrap();
    let src = pods.iter().find(|p| p.node == 1).unwrap();
    let dst = pods.iter().find(|p| p.node == 2).unwrap();
    let ping = ContinuousPing::start(&src.netns, &dst.ip, "0.05").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for k in [2, 1] {
        lab.stop_node(k).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        lab.start_node(k).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let (summary, out) = ping.stop().unwrap();
    assert!(summary.transmitted >= 20, "{out}");
    assert_eq!(
        summary.received, summary.transmitted,
        "packets lost across daemon restarts:\n{out}"
    );
    let after = lab.nodes().unwrap();
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            b.subnet, a.subnet,
            "node {} changed subnet across the restart",
            b.index
        );
        assert!(a.alive, "node {} daemon not running after restart", a.index);
        if b.index <= 2 {
            assert_ne!(b.pid, a.pid, "node {} daemon was not restarted", b.index);
        }
    }
}

#[test]
fn daemon_restart_keeps_traffic_vxlan_embedded() {
    restart_under_ping('r', "vxlan", "embedded");
}

#[test]
fn daemon_restart_keeps_traffic_hostgw_etcd() {
    restart_under_ping('r', "host-gw", "etcd");
}

/// With a 1 s resync period, what is deleted by hand comes back.
#[test]
fn deleted_vxlan_device_comes_back() {
    let mut cfg = LabConfig::new("vxlan", "embedded");
    cfg.resync_period = Some("1s");
    cfg.pods_per_node = 1;
    let lab = Lab::up('d', &cfg).unwrap();
    let nodes = lab.nodes().unwrap();
    let ns1 = lab.node_ns(1);
    lab::ip_in(&ns1, &["link", "del", VXLAN_DEV]).unwrap();
    let n2 = node(&nodes, 2);
    let mac2 = lab::link_mac(&lab.node_ns(2), VXLAN_DEV);
    let (_, took) = lab::wait_for(
        "flannel.1 and node 2's entries back on node 1",
        Duration::from_secs(5),
        || {
            let e = lab::peer_entries(&ns1, &n2.subnet_net().unwrap(), mac2.as_deref())
                .map_err(|e| e.to_string())?;
            if lab::netns_has_link(&ns1, VXLAN_DEV) && e.len() == 3 {
                Ok(())
            } else {
                Err(format!("{e:?}"))
            }
        },
    )
    .unwrap();
    eprintln!("flannel.1 recreated with its entries in {took:?}");
    let failed = lab::mesh_failures(&lab.pods().unwrap());
    assert!(failed.is_empty(), "{failed:?}");
}

#[test]
fn deleted_hostgw_route_comes_back() {
    let mut cfg = LabConfig::new("host-gw", "etcd");
    cfg.resync_period = Some("1s");
    cfg.pods_per_node = 1;
    let lab = Lab::up('d', &cfg).unwrap();
    let nodes = lab.nodes().unwrap();
    let net3 = node(&nodes, 3).subnet_net().unwrap();
    let ns1 = lab.node_ns(1);
    lab::ip_in(&ns1, &["route", "del", &net3]).unwrap();
    lab::wait_for(
        "node 1's route to node 3 back",
        Duration::from_secs(5),
        || {
            let r = lab::ip_in(&ns1, &["route", "show", &net3]).map_err(|e| e.to_string())?;
            if r.trim().is_empty() {
                Err("no route".into())
            } else {
                Ok(())
            }
        },
    )
    .unwrap();
    let failed = lab::mesh_failures(&lab.pods().unwrap());
    assert!(failed.is_empty(), "{failed:?}");
}

/// etcd goes away for 3 s and comes back: pods keep talking, daemons live.
#[test]
fn etcd_restart_does_not_disturb_pods() {
    let mut cfg = LabConfig::new("vxlan", "etcd");
    cfg.pods_per_node = 1;
    let lab = Lab::up('e', &cfg).unwrap();
    let pods = lab.pods().unwrap();
    let src = pods.iter().find(|p| p.node == 1).unwrap();
    let dst = pods.iter().find(|p| p.node == 3).unwrap();
    let ping = ContinuousPing::start(&src.netns, &dst.ip, "0.05").unwrap();
    lab.stop_etcd().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    lab.start_etcd().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let (summary, out) = ping.stop().unwrap();
    assert!(summary.transmitted >= 50, "{out}");
    assert_eq!(
        summary.received, summary.transmitted,
        "pod traffic lost while etcd restarted:\n{out}"
    );
    for n in lab.nodes().unwrap() {
        assert!(n.alive, "node {} daemon died while etcd was away", n.index);
    }
    // The daemons still follow the store after etcd is back.
    let nodes = lab.nodes().unwrap();
    let n3 = node(&nodes, 3);
    let mac = lab::link_mac(&lab.node_ns(3), VXLAN_DEV);
    lab.leave(3).unwrap();
    wait_gone(&lab, 1, &n3, mac.as_deref(), Duration::from_secs(15));
}

/// Node 3 leaves while node 1's daemon is down: the restarted daemon finds
/// node 3's entries left in the kernel and removes them, keeping node 2's.
fn stale_entries_swept(stem: char, backend: &'static str, store: &'static str) {
    let mut cfg = LabConfig::new(backend, store);
    cfg.pods_per_node = 1;
    let lab = Lab::up(stem, &cfg).unwrap();
    let nodes = lab.nodes().unwrap();
    let (n2, n3) = (node(&nodes, 2), node(&nodes, 3));
    let mac3 = lab::link_mac(&lab.node_ns(3), VXLAN_DEV);
    lab.stop_node(1).unwrap();
    lab.leave(3).unwrap();
    assert!(
        !has_entries(&lab, 1, &n3, mac3.as_deref()).is_empty(),
        "node 1's entries for node 3 should still be there while its daemon is down"
    );
    lab.start_node(1).unwrap();
    let took = wait_gone(&lab, 1, &n3, mac3.as_deref(), Duration::from_secs(10));
    eprintln!("stale entries swept {took:?} after the daemon was ready");
    assert!(
        !has_entries(&lab, 1, &n2, None).is_empty(),
        "node 2's entries must stay"
    );
    let pods: Vec<_> = lab
        .pods()
        .unwrap()
        .into_iter()
        .filter(|p| p.node != 3)
        .collect();
    let failed = lab::mesh_failures(&pods);
    assert!(failed.is_empty(), "{failed:?}");
}

#[test]
fn stale_entries_swept_vxlan_etcd() {
    stale_entries_swept('s', "vxlan", "etcd");
}

#[test]
fn stale_entries_swept_hostgw_embedded() {
    stale_entries_swept('s', "host-gw", "embedded");
}
