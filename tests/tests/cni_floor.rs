//! The kernel floor program (`tests/bench/cni-floor.c`, timed by `cni-bench
//! --floor`) must build the same datapath as a real plugin, or its times
//! bound nothing: two pods attached by it reach each other and the gateway,
//! their reservation files exist while they are attached, and DEL removes
//! the pair and the file. Needs root and cc; fails (never skips) without.

use testkit::cni::{self, CniEnv};
use testkit::netns::Netns;

fn call(
    floor: &std::path::Path,
    node: &Netns,
    cmd: &str,
    id: &str,
    pod: &Netns,
    conf: &[u8],
) -> serde_json::Value {
    let env = CniEnv::new(cmd, id, Some(&pod.path()), "eth0");
    let run = node.spawn_in(floor).expect("command in the node namespace");
    cni::invoke(run, "cni-floor", &env, conf).unwrap_or_else(|e| panic!("{cmd} {id}: {e}"))
}

#[test]
fn the_floor_attaches_pods_that_reach_each_other() {
    testkit::root::require_root("cni_floor").unwrap();
    let dir = testkit::temp::temp_dir("floor").unwrap();
    let floor = e2e::floor::build(dir.path()).unwrap();
    let node = Netns::create("floor-node").unwrap();
    let a = Netns::create("floor-a").unwrap();
    let b = Netns::create("floor-b").unwrap();
    let ipam = dir.path().join("ipam");
    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "floor", "type": "cni-floor", "dataDir": ipam})
        .to_string()
        .into_bytes();

    let ra = call(&floor, &node, "ADD", "floor-1", &a, &conf);
    let rb = call(&floor, &node, "ADD", "floor-2", &b, &conf);
    assert_eq!(cni::result_addresses(&ra), ["10.244.7.3/24"], "{ra}");
    assert_eq!(cni::result_addresses(&rb), ["10.244.7.4/24"], "{rb}");
    for (pod, target) in [(&a, "10.244.7.4"), (&b, "10.244.7.3"), (&a, "10.244.7.1")] {
        let (ok, out) = pod.try_run(&["ping", "-c", "1", "-W", "2", target]);
        assert!(ok, "ping {target} from {} failed: {out}", pod.name());
    }
    // The pod end is eth0 with both routes; the host end is a bridge port.
    let (_, routes) = a.try_run(&["ip", "route"]);
    assert!(
        routes.contains("default via 10.244.7.1 dev eth0"),
        "{routes}"
    );
    assert!(
        routes.contains("10.244.0.0/16 via 10.244.7.1 dev eth0"),
        "{routes}"
    );
    let host = ra["interfaces"][1]["name"]
        .as_str()
        .expect("host veth name");
    let (_, detail) = node.try_run(&["ip", "-d", "link", "show", host]);
    assert!(detail.contains("master cni0"), "{detail}");
    let owner = std::fs::read_to_string(ipam.join("floor/10.244.7.3")).unwrap();
    assert_eq!(owner, "floor-1\r\neth0");

    call(&floor, &node, "DEL", "floor-1", &a, &conf);
    assert!(!node.has_link(host), "{}", node.links());
    assert!(!a.has_link("eth0"), "{}", a.links());
    assert!(!ipam.join("floor/10.244.7.3").exists());
    assert!(ipam.join("floor/10.244.7.4").exists());
    call(&floor, &node, "DEL", "floor-2", &b, &conf);
    assert!(!node.links().contains("vfl"), "{}", node.links());
}
