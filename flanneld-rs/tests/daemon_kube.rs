//! The real `flanneld-rs` binary in Kubernetes mode (`--kube-subnet-mgr`)
//! against the fake API server of `lease_store::kube::testing` (no real API
//! server can run on these machines; see docs/KUBE-MODE.md), in a node
//! namespace (`fct-kdm-*`) with a VXLAN backend over a veth underlay in
//! 198.51.100.0/24. The fake runs on a thread that entered the namespace,
//! so its 127.0.0.1 is the daemon's; the root namespace is not touched.
//!
//! Checks: the daemon publishes backend-type, backend-data and public-ip on
//! its Node and sets NetworkUnavailable=False (status subresource) without
//! erasing Ready; subnet.env has the node's podCIDR; the two peers get
//! routes; a peer added and one deleted through the API show up and go;
//! /readyz turns 200; SIGTERM exits 0.
//!
//! Needs root (fails loudly otherwise). Run:
//! `CARGO_TARGET_DIR=/work/targets/kube2 cargo test -p flanneld-rs --test daemon_kube`

use std::path::Path;
use std::time::Duration;

use lease_store::kube::testing::{node_json, FakeApi, FakeApiThread};
use lease_store::subnet_env::SubnetEnv;
use serde_json::Value;
use testkit::{wait_for, Daemon, Netns};

const HEALTH_PORT: u16 = 9473;
const P: &str = "flannel.alpha.coreos.com/";
const NET_CONF: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":1}}"#;
const NODE: &str = "kube-node-1";

/// flanneld-rs in Kubernetes mode against `api_url`, logging to
/// `<dir>/flanneld.log`.
fn start_daemon(ns: &Netns, dir: &Path, api_url: &str) -> Daemon {
    Daemon::start(
        ns.exec(env!("CARGO_BIN_EXE_flanneld-rs"))
            .args(["--kube-subnet-mgr", "--kube-api-url", api_url])
            .args(["--iface", "veth0"])
            .arg("--net-config-path")
            .arg(dir.join("net-conf.json"))
            .arg("--subnet-file")
            .arg(dir.join("subnet.env"))
            .args(["--healthz-addr", &format!("127.0.0.1:{HEALTH_PORT}")])
            .args(["--resync-period", "1s"])
            .env("NODE_NAME", NODE)
            .env("RUST_LOG", "debug"),
        dir.join("flanneld.log"),
    )
}

/// Started the way Go flanneld's DaemonSet starts Go flanneld: single
/// dash flags, the annotation prefix without its slash, `-v=2`, and
/// flags this daemon ignores.
fn start_daemon_go_style(ns: &Netns, dir: &Path, api_url: &str) -> Daemon {
    Daemon::start(
        ns.exec(env!("CARGO_BIN_EXE_flanneld-rs"))
            .args(["-kube-subnet-mgr", &format!("-kube-api-url={api_url}")])
            .args(["-iface", "veth0", "-ip-masq", "-v=2"])
            .args(["-kube-annotation-prefix", "flannel.alpha.coreos.com"])
            .arg(format!(
                "-net-config-path={}",
                dir.join("net-conf.json").display()
            ))
            .arg(format!("-subnet-file={}", dir.join("subnet.env").display()))
            .args(["--iptables-resync=5", "--set-node-network-unavailable=true"])
            .args(["--resync-period", "1s"])
            .env("NODE_NAME", NODE)
            .env("RUST_LOG", "debug"),
        dir.join("flanneld-go-style.log"),
    )
}

/// Puts the fake API server's thread into the node namespace.
fn enter(ns_path: &Path) -> std::io::Result<()> {
    testkit::netns::enter_on_this_thread(ns_path).map_err(std::io::Error::other)
}

/// A node another daemon already published (VXLAN, VTEP MAC from `n`).
fn peer(name: &str, cidr: &str, n: u8) -> Value {
    let ip = format!("198.51.100.{n}");
    let bd = format!(r#"{{"VNI":1,"VtepMAC":"0a:58:00:00:00:{n:02x}"}}"#);
    node_json(
        name,
        &[cidr],
        &[
            (&format!("{P}kube-subnet-manager"), "true"),
            (&format!("{P}backend-type"), "vxlan"),
            (&format!("{P}backend-data"), &bd),
            (&format!("{P}public-ip"), &ip),
        ],
    )
}

fn ann(node: &Value, name: &str) -> Option<String> {
    node["metadata"]["annotations"][format!("{P}{name}")]
        .as_str()
        .map(str::to_string)
}

/// The route to `subnet` in `ns`, when it goes through flannel.1.
fn overlay_route(ns: &Netns, subnet: &str) -> Option<String> {
    let out = ns.run("ip", &["route", "show", subnet]).ok()?;
    out.contains("dev flannel.1").then_some(out)
}

/// The node namespace with its underlay: veth0 198.51.100.1/24, its peer
/// end (veth1) in the same namespace, so the peers' addresses are on-link.
fn node_netns() -> Netns {
    let ns = Netns::create("kdm-node").expect("create the node namespace (needs root)");
    ns.run(
        "ip",
        &[
            "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
        ],
    )
    .expect("underlay veth pair");
    ns.run("ip", &["addr", "add", "198.51.100.1/24", "dev", "veth0"])
        .expect("underlay address");
    for dev in ["veth0", "veth1"] {
        ns.run("ip", &["link", "set", dev, "up"])
            .expect("underlay up");
    }
    ns
}

#[test]
fn daemon_in_kube_mode_publishes_its_node_and_follows_peers() {
    testkit::assert_root("daemon_kube test");
    let dir = testkit::temp_dir("kdm").expect("temp dir");
    let dir = dir.path();
    std::fs::write(dir.join("net-conf.json"), NET_CONF).expect("write net-conf.json");
    let ns = node_netns();
    // Declared after the namespace, so it stops before the namespace goes.
    let ns_path = ns.path();
    let fake: FakeApiThread =
        FakeApi::start_on_thread(Duration::from_secs(5), move || enter(&ns_path))
            .expect("fake API server inside the node namespace");
    fake.put_node(node_json(NODE, &["10.244.1.0/24"], &[]));
    fake.put_node(peer("peer-2", "10.244.2.0/24", 2));
    fake.put_node(peer("peer-3", "10.244.3.0/24", 3));

    let mut daemon = start_daemon(&ns, dir, &fake.url());
    let logs = || daemon.log();

    // The node's annotations and condition, through the status subresource.
    let node = wait_for(
        "the daemon's annotations on its Node",
        Duration::from_secs(30),
        || fake.node(NODE).filter(|n| ann(n, "backend-type").is_some()),
        &logs,
    );
    assert_eq!(ann(&node, "kube-subnet-manager").as_deref(), Some("true"));
    assert_eq!(ann(&node, "backend-type").as_deref(), Some("vxlan"));
    assert_eq!(ann(&node, "public-ip").as_deref(), Some("198.51.100.1"));
    let bd: Value = serde_json::from_str(&ann(&node, "backend-data").expect("backend-data"))
        .expect("backend-data is JSON");
    assert_eq!(bd["VNI"], 1, "{bd}");
    let mac = bd["VtepMAC"].as_str().expect("VtepMAC in backend-data");
    let node = wait_for(
        "NetworkUnavailable=False on the Node",
        Duration::from_secs(10),
        || {
            fake.node(NODE).filter(|n| {
                n["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "NetworkUnavailable"))
            })
        },
        &logs,
    );
    let conds = node["status"]["conditions"].as_array().expect("conditions");
    let cond = |t: &str| conds.iter().find(|c| c["type"] == t).cloned();
    let nu = cond("NetworkUnavailable").expect("NetworkUnavailable");
    assert_eq!(nu["status"], "False");
    assert_eq!(nu["reason"], "FlannelIsUp");
    assert_eq!(
        cond("Ready").expect("kubelet's Ready kept")["status"],
        "True"
    );
    // The VTEP MAC published is the device's.
    let link = ns
        .run("ip", &["-d", "link", "show", "flannel.1"])
        .expect("flannel.1 exists");
    assert!(
        link.contains(mac),
        "published VtepMAC {mac} is not flannel.1's:\n{link}"
    );

    // subnet.env: the node's podCIDR.
    let env = wait_for(
        "subnet.env",
        Duration::from_secs(30),
        || SubnetEnv::read(&dir.join("subnet.env")).ok(),
        &logs,
    );
    assert_eq!(
        env.subnet.map(|s| s.trunc().to_string()).as_deref(),
        Some("10.244.1.0/24")
    );
    assert_eq!(
        env.networks
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>(),
        vec!["10.244.0.0/16"]
    );

    // Routes to both peers through the overlay, and their FDB entries.
    for (subnet, ip) in [
        ("10.244.2.0/24", "198.51.100.2"),
        ("10.244.3.0/24", "198.51.100.3"),
    ] {
        wait_for(
            "a route to a peer",
            Duration::from_secs(15),
            || overlay_route(&ns, subnet),
            &logs,
        );
        let fdb = ns
            .run("bridge", &["fdb", "show", "dev", "flannel.1"])
            .expect("bridge fdb");
        assert!(
            fdb.contains(&format!("dst {ip}")),
            "no FDB entry to {ip}:\n{fdb}"
        );
    }
    assert!(
        overlay_route(&ns, "10.244.1.0/24").is_none(),
        "no overlay route to our own subnet"
    );

    // /readyz.
    daemon.wait_ready(&ns, HEALTH_PORT, Duration::from_secs(15));

    // A peer joins and one leaves, through the API.
    fake.put_node(peer("peer-4", "10.244.4.0/24", 4));
    wait_for(
        "the route to a peer added through the API",
        Duration::from_secs(15),
        || overlay_route(&ns, "10.244.4.0/24"),
        &logs,
    );
    fake.delete_node("peer-2");
    wait_for(
        "the route to a deleted peer to go",
        Duration::from_secs(15),
        || overlay_route(&ns, "10.244.2.0/24").is_none().then_some(()),
        &logs,
    );
    let fdb = ns
        .run("bridge", &["fdb", "show", "dev", "flannel.1"])
        .expect("bridge fdb");
    assert!(
        !fdb.contains("dst 198.51.100.2 "),
        "FDB entry of the deleted peer left:\n{fdb}"
    );
    assert!(overlay_route(&ns, "10.244.3.0/24").is_some(), "peer-3 kept");

    // The daemon read the nodes through paginated lists and watches.
    let lists = fake.list_requests();
    assert!(
        !lists.is_empty() && lists.iter().all(|r| r.limit.is_some()),
        "{lists:?}"
    );
    assert!(!fake.watch_requests().is_empty());

    // Issue 17: our Node loses its flannel annotations (replaced without
    // them, as a re-registered Node would be): the watch reports our lease
    // gone and the daemon publishes it again at once. Kubernetes leases
    // have no TTL, so nothing else would ever put them back.
    fake.put_node(node_json(NODE, &["10.244.1.0/24"], &[]));
    let back = wait_for(
        "our annotations published again",
        Duration::from_secs(10),
        || fake.node(NODE).filter(|n| ann(n, "backend-type").is_some()),
        &logs,
    );
    assert_eq!(ann(&back, "public-ip").as_deref(), Some("198.51.100.1"));
    assert!(
        daemon.log().contains("cause=\"deleted\""),
        "{}",
        daemon.log()
    );

    let code = daemon.terminate().code();
    assert_eq!(code, Some(0), "exit status; log:\n{}", daemon.log());
}

/// A node Go flanneld ran on in Kubernetes mode: its Node carries Go's
/// annotations (backend-data with Go's random MAC), and the kernel Go's
/// `flannel.1` with that MAC plus `proto boot` entries for a live peer and
/// for one whose Node is gone. flanneld-rs, started with Go's DaemonSet
/// arguments, adopts the device (same ifindex), publishes the same
/// backend-data, keeps the live peer's entries and sweeps the departed one's.
#[test]
fn go_node_in_kube_mode_is_taken_over_with_its_mac() {
    testkit::assert_root("daemon_kube test");
    let dir = testkit::temp_dir("kdmgo").expect("temp dir");
    let dir = dir.path();
    std::fs::write(dir.join("net-conf.json"), NET_CONF).expect("write net-conf.json");
    let ns = node_netns();
    let ns_path = ns.path();
    let fake: FakeApiThread =
        FakeApi::start_on_thread(Duration::from_secs(5), move || enter(&ns_path))
            .expect("fake API server inside the node namespace");
    let go_mac = "a6:3c:5d:1e:77:42";
    let go_data = format!(r#"{{"VNI":1,"VtepMAC":"{go_mac}"}}"#);
    fake.put_node(node_json(
        NODE,
        &["10.244.1.0/24"],
        &[
            (&format!("{P}kube-subnet-manager"), "true"),
            (&format!("{P}backend-type"), "vxlan"),
            (&format!("{P}backend-data"), &go_data),
            (&format!("{P}public-ip"), "198.51.100.1"),
        ],
    ));
    fake.put_node(peer("peer-2", "10.244.2.0/24", 2));
    for cmd in [
        "ip link add flannel.1 type vxlan id 1 local 198.51.100.1 dev veth0 dstport 8472 nolearning udpcsum".to_string(),
        format!("ip link set flannel.1 address {go_mac} mtu 1450 up"),
        "ip addr add 10.244.1.0/32 dev flannel.1".to_string(),
        "ip neigh replace 10.244.2.0 lladdr 0a:58:00:00:00:02 dev flannel.1 nud permanent".to_string(),
        "bridge fdb append 0a:58:00:00:00:02 dev flannel.1 dst 198.51.100.2 self permanent".to_string(),
        "ip route add 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink proto boot".to_string(),
        "ip neigh replace 10.244.3.0 lladdr 0a:58:00:00:00:03 dev flannel.1 nud permanent".to_string(),
        "bridge fdb append 0a:58:00:00:00:03 dev flannel.1 dst 198.51.100.3 self permanent".to_string(),
        "ip route add 10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink proto boot".to_string(),
    ] {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        ns.run(words[0], &words[1..])
            .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    }
    let index = |ns: &Netns| {
        let v: Value = serde_json::from_str(
            &ns.run("ip", &["-j", "link", "show", "flannel.1"])
                .expect("flannel.1"),
        )
        .expect("ip -j");
        v[0]["ifindex"].as_u64()
    };
    let before = index(&ns);

    let mut daemon = start_daemon_go_style(&ns, dir, &fake.url());
    let logs = || daemon.log();
    wait_for(
        "subnet.env",
        Duration::from_secs(30),
        || SubnetEnv::read(&dir.join("subnet.env")).ok(),
        &logs,
    );
    assert_eq!(index(&ns), before, "flannel.1 was recreated:\n{}", logs());
    let node = fake.node(NODE).expect("node");
    let bd: Value = serde_json::from_str(&ann(&node, "backend-data").expect("backend-data"))
        .expect("backend-data is JSON");
    assert_eq!(bd["VtepMAC"], go_mac, "{bd}");
    assert!(
        overlay_route(&ns, "10.244.2.0/24").is_some(),
        "live peer kept"
    );
    wait_for(
        "the departed peer's Go-made entries swept",
        Duration::from_secs(10),
        || {
            let fdb = ns
                .run("bridge", &["fdb", "show", "dev", "flannel.1"])
                .ok()?;
            let neigh = ns.run("ip", &["neigh", "show", "dev", "flannel.1"]).ok()?;
            (overlay_route(&ns, "10.244.3.0/24").is_none()
                && !fdb.contains("0a:58:00:00:00:03")
                && !neigh.contains("10.244.3.0"))
            .then_some(())
        },
        &logs,
    );
    let log = daemon.log();
    for flag in ["--iptables-resync=5", "--set-node-network-unavailable=true"] {
        assert_eq!(
            log.matches(&format!("{flag} is accepted and ignored"))
                .count(),
            1,
            "{log}"
        );
    }
    assert_eq!(daemon.terminate().code(), Some(0), "{}", daemon.log());
}
