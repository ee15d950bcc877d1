//! Kernel tests: DEL in its many forms, CHECK, GC, a changed node subnet.
//! Need root; they fail (never skip) without it.

mod common;

use common::{pod_ip, Netns, Node};
use serde_json::json;

#[test]
fn del_twice_after_netns_gone_and_with_empty_netns() {
    let node = Node::new("del");
    let conf = node.conf("1.0.0", json!({}));

    // DEL twice.
    let p = Netns::new("del-a");
    node.add("del-a", &p, &conf);
    node.del("del-a", p.path_str(), &conf);
    node.del("del-a", p.path_str(), &conf);
    assert!(!p.has_link("eth0"));

    // DEL after the namespace was deleted: the address is still released.
    let mut p = Netns::new("del-b");
    node.add("del-b", &p, &conf);
    let path = p.path_str().to_string();
    p.delete();
    node.del("del-b", &path, &conf);

    // DEL with CNI_NETNS empty (containerd's second DEL): veth and address go.
    let p = Netns::new("del-c");
    node.add("del-c", &p, &conf);
    node.del("del-c", "", &conf);
    assert!(!p.has_link("eth0"), "{}", p.links());

    assert_eq!(node.ipam_files(), ["last_reserved_ip.0", "lock"]);
    assert!(!node.ns.links().contains("veth"), "{}", node.ns.links());

    // A pod interface not made under our veth naming (flannel's bridge
    // plugin before a migration) is still removed by DEL.
    let p = Netns::new("del-d");
    let (ok, out) = p.try_run(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "x1",
    ]);
    assert!(ok, "{out}");
    node.del("del-d", p.path_str(), &conf);
    assert!(!p.has_link("eth0"), "{}", p.links());
}

#[test]
fn check_passes_then_fails_after_interface_removed() {
    let node = Node::new("chk");
    let p = Netns::new("chk-p");
    let conf = node.conf("1.0.0", json!({}));
    let result = node.add("chk-1", &p, &conf);
    let mut check_conf = conf.clone();
    check_conf["prevResult"] = result;
    node.cni("CHECK", "chk-1", p.path_str(), "eth0", &check_conf)
        .ok();

    let (ok, out) = p.try_run(&["ip", "link", "del", "eth0"]);
    assert!(ok, "{out}");
    let r = node.cni("CHECK", "chk-1", p.path_str(), "eth0", &check_conf);
    assert_eq!(r.code(), 104, "{}", r.stdout);
    assert!(
        r.json()["msg"].as_str().unwrap().contains("eth0"),
        "{}",
        r.stdout
    );
    node.del("chk-1", p.path_str(), &conf);
}

#[test]
fn check_fails_when_subnet_changed_or_reservation_lost() {
    let node = Node::new("chk2");
    let p = Netns::new("chk2-p");
    let conf = node.conf("0.4.0", json!({}));
    let result = node.add("chk2-1", &p, &conf);
    let ip = pod_ip(&result);
    let mut check_conf = conf.clone();
    check_conf["prevResult"] = result;
    node.cni("CHECK", "chk2-1", p.path_str(), "eth0", &check_conf)
        .ok();

    std::fs::remove_file(node.ipam_dir().join(&ip)).expect("remove reservation");
    let r = node.cni("CHECK", "chk2-1", p.path_str(), "eth0", &check_conf);
    assert_eq!(r.code(), 104, "{}", r.stdout);

    node.write_subnet_env(&common::SUBNET_ENV.replace("10.244.7.1/24", "10.244.9.1/24"));
    let r = node.cni("CHECK", "chk2-1", p.path_str(), "eth0", &check_conf);
    assert_eq!(r.code(), 104, "{}", r.stdout);
    node.del("chk2-1", p.path_str(), &conf);
}

#[test]
fn gc_frees_a_leaked_reservation() {
    let node = Node::new("gc");
    let conf = node.conf("1.1.0", json!({}));
    let keep = Netns::new("gc-keep");
    let leak = Netns::new("gc-leak");
    let kept_ip = pod_ip(&node.add("gc-keep", &keep, &conf));
    let leaked_ip = pod_ip(&node.add("gc-leak", &leak, &conf));

    let gc_conf = node.conf(
        "1.1.0",
        json!({"cni.dev/attachments": [{"containerID": "gc-keep", "ifname": "eth0"}]}),
    );
    node.run_plugin(
        common::PLUGIN,
        &[("CNI_COMMAND", "GC")],
        gc_conf.to_string().as_bytes(),
    )
    .ok();
    let files = node.ipam_files();
    assert!(files.contains(&kept_ip), "{files:?}");
    assert!(!files.contains(&leaked_ip), "{files:?}");

    // libcni 1.3's key is accepted too.
    let gc_conf = node.conf("1.1.0", json!({"cni.dev/valid-attachments": []}));
    node.run_plugin(
        common::PLUGIN,
        &[("CNI_COMMAND", "GC")],
        gc_conf.to_string().as_bytes(),
    )
    .ok();
    assert_eq!(node.ipam_files(), ["last_reserved_ip.0", "lock"]);
    // Without a list GC refuses rather than free everything.
    let r = node.run_plugin(
        common::PLUGIN,
        &[("CNI_COMMAND", "GC")],
        conf.to_string().as_bytes(),
    );
    assert_eq!(r.code(), 7);
    node.del("gc-keep", keep.path_str(), &conf);
    node.del("gc-leak", leak.path_str(), &conf);
}

#[test]
fn add_refuses_when_the_node_subnet_changed_under_pods() {
    let node = Node::new("sub");
    let conf = node.conf("1.0.0", json!({}));
    let old = Netns::new("sub-old");
    let new = Netns::new("sub-new");
    node.add("sub-old", &old, &conf);

    node.write_subnet_env(&common::SUBNET_ENV.replace("10.244.7.1/24", "10.244.9.1/24"));
    let r = node.cni("ADD", "sub-new", new.path_str(), "eth0", &conf);
    assert_eq!(r.code(), 102, "{}", r.stdout);
    assert!(!new.has_link("eth0"));

    // Once the old pod is gone, new pods get addresses from the new lease.
    node.del("sub-old", old.path_str(), &conf);
    let r = node.add("sub-new", &new, &conf);
    assert!(pod_ip(&r).starts_with("10.244.9."), "{r}");
    // The bridge now carries the new gateway only.
    let (_, addrs) = node
        .ns
        .try_run(&["ip", "-4", "-o", "addr", "show", "dev", "cni0"]);
    assert!(addrs.contains("10.244.9.1/24"), "{addrs}");
    assert!(!addrs.contains("10.244.7.1/24"), "{addrs}");
    let (ok, out) = new.try_run(&["ping", "-c", "1", "-W", "2", "10.244.9.1"]);
    assert!(ok, "{out}");
    node.del("sub-new", new.path_str(), &conf);
}
