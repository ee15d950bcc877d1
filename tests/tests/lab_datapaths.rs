//! The issue-5 datapaths on the lab (three nodes, two pods each, embedded
//! store), through the real daemon: every pod reaches every other pod (ping
//! and TCP), a daemon restart keeps pod traffic flowing, and a node that
//! leaves has its routes removed on the others. Also: `--backend geneve` on
//! a kernel without the geneve module fails with one clear line.
//! Needs root; `cargo test -p e2e --test lab_datapaths`.

use std::time::Duration;

use e2e::lab::{self, ContinuousPing, Lab, LabConfig};

/// The device a datapath name puts on each node, and a word each of its
/// peer routes shows in `ip -d route` (`None`: nothing to check there).
fn device_of(backend: &str) -> (&'static str, Option<&'static str>) {
    match backend {
        "vxlan-metadata" => ("flannel-vxlan", Some("encap ip id 1")),
        "vxlan-metadata-ipv6" => ("flannel-vxlan", Some("encap ip6 id 1")),
        // The userspace datapath's TUN device.
        "vxlan-userspace" | "geneve-userspace" | "geneve-userspace-ipv6" => ("flannel-tun", None),
        _ => ("flannel.1", None),
    }
}

/// Six pods: each pings every other, and iperf3 TCP runs from a pod of
/// node `client` to one of node `server` for each `(server, client)`.
fn all_pods_talk(lab: &Lab, tcp: &[(u32, u32)]) -> Vec<lab::Pod> {
    let pods = lab.pods().unwrap();
    assert_eq!(pods.len(), 6, "{pods:?}");
    let failed = lab::mesh_failures(&pods);
    let lines = failed.join("\n");
    assert!(
        failed.is_empty(),
        "{} of 30 pings failed:\n{lines}",
        failed.len()
    );
    let on = |k: u32| pods.iter().find(|p| p.node == k).unwrap();
    for &(s, c) in tcp {
        let (server, client) = (on(s), on(c));
        let bps = lab::iperf3(&server.netns, &client.netns, &server.ip, 1).unwrap();
        let what = format!("TCP {} -> {}", client.ip, server.ip);
        assert!(bps > 1e6, "{what} carried only {bps} bit/s");
    }
    pods
}

/// One lab at a time: each carries iperf3 and a restart under ping, and two
/// cores shared by several labs would turn CPU starvation into packet loss.
static ONE_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_lab() -> std::sync::MutexGuard<'static, ()> {
    // A panicking test poisons the lock; the next lab is independent of it.
    ONE_LAB.lock().unwrap_or_else(|p| p.into_inner())
}

/// The userspace engine's queue threads (`us-q<i>`) of a daemon.
fn queue_threads(pid: i64) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.starts_with("us-q"))
        .count()
}

fn datapath_lab(stem: char, backend: &'static str) {
    let _one = one_lab();
    let userspace = backend.contains("-userspace");
    let mut cfg = LabConfig::new(backend, "embedded");
    if userspace {
        // One node with a single queue, the others with the default: the
        // flag reaches the engine, and nodes with different queue counts
        // interoperate.
        cfg.node_daemon_args = vec![(1, "--userspace-queues=1".into())];
    }
    let lab = Lab::up(stem, &cfg).unwrap();
    let nodes = lab.nodes().unwrap();
    assert_eq!(nodes.len(), 3);
    let (dev, route_word) = device_of(backend);
    if userspace {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        for n in &nodes {
            let want = if n.index == 1 { 1 } else { cpus.clamp(1, 4) };
            let pid = n.pid.expect("daemon pid");
            assert_eq!(queue_threads(pid), want, "node {}: queue threads", n.index);
        }
    }

    // What each node programmed for the others.
    for n in &nodes {
        let ns = lab.node_ns(n.index);
        assert!(lab::netns_has_link(&ns, dev), "node {}: no {dev}", n.index);
        for peer in nodes.iter().filter(|p| p.index != n.index) {
            let net = peer.subnet_net().unwrap();
            let r = lab::ip_in(&ns, &["-d", "route", "show", &net]).unwrap();
            assert!(!r.trim().is_empty(), "node {}: no route to {net}", n.index);
            if let Some(word) = route_word {
                assert!(r.contains(word), "node {}: route to {net}: {r}", n.index);
                // The lab's IPv6 underlay gives node K 2001:db8:100::K.
                let dst = if backend.ends_with("-ipv6") {
                    format!("2001:db8:100::{:x}", peer.index)
                } else {
                    peer.public_ip.to_string()
                };
                assert!(r.contains(&format!("dst {dst} ")), "{r}");
            }
        }
    }

    // Every pod pings every other; TCP both ways across nodes.
    let pods = all_pods_talk(&lab, &[(1, 3), (3, 2)]);
    // The pods' MTU leaves room for the outer header: 20 bytes more for
    // IPv6 than for IPv4.
    let want_mtu = if backend.ends_with("-ipv6") {
        1430
    } else {
        1450
    };
    for p in &pods {
        let l = lab::ip_in(&p.netns, &["link", "show", "eth0"]).unwrap();
        assert!(l.contains(&format!("mtu {want_mtu} ")), "{}: {l}", p.netns);
    }
    let on = |k: u32| pods.iter().find(|p| p.node == k).unwrap();

    // Node 2's daemon restarts (SIGTERM, start) under a 50 ms ping from a
    // pod of node 1 to a pod of node 2. A kernel datapath outlives the
    // daemon: nothing lost. The userspace one lives in the daemon: packets
    // are lost while it is down, and traffic must flow again once it is up.
    let ping = ContinuousPing::start(&on(1).netns, &on(2).ip, "0.05").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    lab.stop_node(2).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    lab.start_node(2).unwrap();
    std::thread::sleep(Duration::from_millis(if userspace { 2000 } else { 500 }));
    let (summary, out) = ping.stop().unwrap();
    assert!(summary.transmitted >= 20, "{out}");
    if userspace {
        eprintln!(
            "{backend}: {} of {} pings lost across a daemon restart",
            summary.transmitted - summary.received,
            summary.transmitted
        );
        let failed = lab::mesh_failures(&pods);
        assert!(failed.is_empty(), "after the restart: {failed:?}");
    } else {
        assert_eq!(
            summary.received, summary.transmitted,
            "lost across a restart:\n{out}"
        );
    }

    // Node 3 leaves: nodes 1 and 2 drop their route to it.
    let n3 = nodes.iter().find(|n| n.index == 3).unwrap();
    let net3 = n3.subnet_net().unwrap();
    lab.leave(3).unwrap();
    for k in [1, 2] {
        let ns = lab.node_ns(k);
        lab::wait_for(
            &format!("node {k} removing the route to {net3}"),
            Duration::from_secs(10),
            || {
                let r = lab::ip_in(&ns, &["route", "show", &net3]).map_err(|e| e.to_string())?;
                if r.trim().is_empty() {
                    Ok(())
                } else {
                    Err(r)
                }
            },
        )
        .unwrap();
    }
    let rest: Vec<_> = pods.iter().filter(|p| p.node != 3).cloned().collect();
    let failed = lab::mesh_failures(&rest);
    assert!(failed.is_empty(), "{failed:?}");
}

#[test]
fn vxlan_metadata_lab() {
    datapath_lab('k', "vxlan-metadata");
}

/// Needs the userspace datapath (the "userspace" engineer's part of issue 5).
#[test]
fn vxlan_userspace_lab() {
    datapath_lab('u', "vxlan-userspace");
}

/// Needs the userspace datapath (the "userspace" engineer's part of issue 5).
#[test]
fn geneve_userspace_lab() {
    datapath_lab('g', "geneve-userspace");
}

/// Metadata-mode VXLAN over the lab's IPv6 underlay (`"Underlay":
/// "ipv6"`): the daemon finds each node's IPv6 address, publishes it as
/// PublicIPv6, routes carry `encap ip6 ... dst <peer's IPv6>`, pod MTU is
/// underlay - 70.
#[test]
fn vxlan_metadata_ipv6_lab() {
    datapath_lab('m', "vxlan-metadata-ipv6");
}

/// Userspace Geneve over the lab's IPv6 underlay (IPv6 UDP sockets).
#[test]
fn geneve_userspace_ipv6_lab() {
    datapath_lab('h', "geneve-userspace-ipv6");
}

/// A mixed cluster through the real daemon: net-conf says FDB-mode VXLAN,
/// node 1 runs `--datapath-mode <mode>`; all pods reach all pods, TCP both
/// ways between node 1 and the others.
fn mixed_lab(stem: char, mode: &str, node1_dev: &str) {
    let mut cfg = LabConfig::new("vxlan", "embedded");
    cfg.node_daemon_args = vec![(1, format!("--datapath-mode={mode}"))];
    let _one = one_lab();
    let lab = Lab::up(stem, &cfg).unwrap();
    assert!(
        lab::netns_has_link(&lab.node_ns(1), node1_dev),
        "node 1: no {node1_dev}"
    );
    assert!(!lab::netns_has_link(&lab.node_ns(1), lab::VXLAN_DEV));
    for k in [2, 3] {
        assert!(
            lab::netns_has_link(&lab.node_ns(k), lab::VXLAN_DEV),
            "node {k}"
        );
    }
    all_pods_talk(&lab, &[(1, 2), (3, 1)]);
}

#[test]
fn mixed_lab_metadata_node_among_fdb_nodes() {
    mixed_lab('i', "metadata", "flannel-vxlan");
}

/// A userspace node among kernel FDB nodes, through the real daemon. The
/// kernel nodes' veths keep TX checksum offload, so their TCP arrives with
/// checksums left pending, and as whole super-packets (a veth never cuts a
/// GSO packet): the userspace receive path passes both on to the pod.
#[test]
fn mixed_lab_userspace_node_among_fdb_nodes() {
    mixed_lab('j', "userspace", "flannel-tun");
}

/// This kernel has no geneve module: `lab up --backend geneve` fails, and
/// what it prints holds the daemon's one line saying so and what to do.
#[test]
fn geneve_kernel_lab_fails_with_one_clear_line() {
    let mut cfg = LabConfig::new("geneve", "embedded");
    cfg.nodes = 1;
    cfg.pods_per_node = 0;
    let err = match Lab::up('x', &cfg) {
        Ok(_) => panic!("geneve came up: does this kernel have the geneve module now?"),
        Err(e) => e.to_string(),
    };
    let line = "the kernel has no geneve support (creating flannel-geneve: Operation not supported); \
                load the geneve module, set \"Fallback\": \"userspace\" in net-conf.json's Backend, \
                or run this node with --datapath-mode userspace";
    assert!(err.contains(line), "{err}");
}
