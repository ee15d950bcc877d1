//! The real `flanneld-rs` binary in two node namespaces (`fct-dmn-*`) joined
//! by a veth underlay in 198.51.100.0/24, sharing an embedded lease store:
//! start-up writes subnet.env, /readyz turns 200, /metrics lists the
//! metrics, each node's VXLAN device gets the other's entries and pods'
//! gateways ping across the overlay, SIGTERM exits 0 leaving the device and
//! subnet.env, and a restart keeps the subnet.
//!
//! Needs root (fails loudly otherwise). Run:
//! `CARGO_TARGET_DIR=/work/targets/daemon cargo test -p flanneld-rs --test daemon_kernel`

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use flanneld::backend::Underlay;
use flanneld::cli::IfaceSpec;
use ipnet::Ipv4Net;
use lease_store::subnet_env::SubnetEnv;
use testkit::{wait_for, Daemon, Netns};

const HEALTH_PORT: u16 = 9471;
const NET_CONF: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":1}}"#;

/// flanneld-rs as `node` in `ns`, state under `dir`, logging to
/// `<dir>/<node>.log` (appended: a restart keeps the first run's lines).
fn start_daemon(ns: &Netns, dir: &Path, node: &str, extra: &[&str]) -> Daemon {
    Daemon::start(
        ns.exec(env!("CARGO_BIN_EXE_flanneld-rs"))
            .args(["--iface", "veth0", "--store-path"])
            .arg(dir.join("leases.json"))
            .arg("--net-config-path")
            .arg(dir.join("net-conf.json"))
            .arg("--subnet-file")
            .arg(dir.join(node).join("subnet.env"))
            .args(["--healthz-addr", &format!("127.0.0.1:{HEALTH_PORT}")])
            .args(["--resync-period", "1s", "--lease-ttl", "60s"])
            .arg("--ipam-dir")
            .arg(dir.join(node).join("ipam"))
            .args(extra)
            .env("RUST_LOG", "debug"),
        dir.join(format!("{node}.log")),
    )
}

/// `GET path` on the daemon's health port inside `ns`.
fn http_get(ns: &Netns, port: u16, path: &str) -> Result<(u16, String), testkit::http::HttpError> {
    testkit::http::get(ns, port, path)
}

fn read_env(dir: &Path, node: &str) -> Option<SubnetEnv> {
    SubnetEnv::read(&dir.join(node).join("subnet.env")).ok()
}

/// Two node namespaces with a veth underlay: node1 198.51.100.1, node2 .2.
fn two_nodes() -> (Netns, Netns) {
    testkit::netns::linked_pair("dmn-node", "veth0", ["198.51.100.1/24", "198.51.100.2/24"])
        .unwrap_or_else(|e| panic!("node namespaces with a veth underlay: {e}"))
}

#[test]
fn two_daemons_peer_over_vxlan_survive_sigterm_and_keep_their_subnet() {
    testkit::assert_root("daemon_kernel test");
    let dir = testkit::temp_dir("dmn").expect("temp dir");
    let dir = dir.path();
    std::fs::write(dir.join("net-conf.json"), NET_CONF).expect("write net-conf.json");
    let (n1, n2) = two_nodes();

    let mut d1 = start_daemon(&n1, dir, "node1", &[]);
    let d2 = start_daemon(&n2, dir, "node2", &["--ip-masq"]);
    let logs = || format!("--- node1\n{}\n--- node2\n{}", d1.log(), d2.log());

    // subnet.env: a /24 of the network, MTU = 1500 - 50.
    let network: Ipv4Net = "10.244.0.0/16".parse().unwrap();
    let env1 = wait_for(
        "node1 subnet.env",
        Duration::from_secs(30),
        || read_env(dir, "node1"),
        &logs,
    );
    let env2 = wait_for(
        "node2 subnet.env",
        Duration::from_secs(30),
        || read_env(dir, "node2"),
        &logs,
    );
    for env in [&env1, &env2] {
        let subnet = env.subnet.expect("FLANNEL_SUBNET").trunc();
        assert!(network.contains(&subnet), "{subnet} outside {network}");
        assert_eq!(subnet.prefix_len(), 24);
        assert_eq!(env.mtu, 1450, "overlay MTU = veth 1500 - VXLAN 50");
        assert_eq!(env.networks, vec![network]);
    }
    assert!(!env1.ipmasq);
    assert!(env2.ipmasq, "node2 runs with --ip-masq");
    let s1 = env1.subnet.unwrap().trunc();
    let s2 = env2.subnet.unwrap().trunc();
    assert_ne!(s1, s2, "two nodes got the same subnet");

    // Health endpoints.
    for ns in [&n1, &n2] {
        let (code, body) = wait_for(
            "/readyz 200",
            Duration::from_secs(10),
            || {
                http_get(ns, HEALTH_PORT, "/readyz")
                    .ok()
                    .filter(|(c, _)| *c == 200)
            },
            &logs,
        );
        assert_eq!(code, 200, "{body}");
        let (code, _) = http_get(ns, HEALTH_PORT, "/healthz").expect("/healthz");
        assert_eq!(code, 200);
    }

    // Each node's device has a route to the other's subnet, through the
    // overlay; the other's gateway answers pings across it.
    for (ns, peer_subnet) in [(&n1, s2), (&n2, s1)] {
        wait_for(
            "route to the peer subnet on flannel.1",
            Duration::from_secs(10),
            || {
                let out = ns
                    .run("ip", &["route", "show", &peer_subnet.to_string()])
                    .ok()?;
                (out.contains("dev flannel.1") && out.contains("onlink")).then_some(())
            },
            &logs,
        );
        let fdb = ns
            .run("bridge", &["fdb", "show", "dev", "flannel.1"])
            .expect("bridge fdb");
        let peer_ip = if peer_subnet == s2 {
            "198.51.100.2"
        } else {
            "198.51.100.1"
        };
        assert!(
            fdb.contains(&format!("dst {peer_ip}")),
            "no FDB entry to {peer_ip}:\n{fdb}"
        );
    }
    let gw2 = s2.network().to_string();
    n1.run("ping", &["-c", "2", "-W", "2", &gw2])
        .unwrap_or_else(|e| panic!("overlay ping node1 -> {gw2} failed: {e}\n{}", logs()));

    // --ip-masq: node2 has our nftables table, node1 none.
    let table = wait_for(
        "masquerade table on node2",
        Duration::from_secs(10),
        || n2.run("nft", &["list", "table", "ip", "flannel-rs"]).ok(),
        &logs,
    );
    assert!(table.contains("masquerade"), "{table}");
    assert!(
        n1.run("nft", &["list", "table", "ip", "flannel-rs"])
            .is_err(),
        "node1 runs without --ip-masq"
    );

    // A device deleted by hand comes back with its entries at the next
    // resync (1 s here).
    n2.run("ip", &["link", "del", "flannel.1"])
        .expect("delete flannel.1 by hand");
    wait_for(
        "flannel.1 recreated on node2 with its route",
        Duration::from_secs(10),
        || {
            let out = n2.run("ip", &["route", "show", &s1.to_string()]).ok()?;
            out.contains("dev flannel.1").then_some(())
        },
        &logs,
    );
    let gw1 = s1.network().to_string();
    wait_for(
        "overlay ping node2 -> node1 after the device came back",
        Duration::from_secs(10),
        || n2.run("ping", &["-c", "1", "-W", "1", &gw1]).ok(),
        &logs,
    );

    eprintln!(
        "daemon RSS with 1 peer: node1 {:?} KiB, node2 {:?} KiB",
        d1.rss_kib(),
        d2.rss_kib()
    );

    // Metrics after real reconciles. Two pods' reservations as the CNI
    // plugin writes them (host-local layout), plus its lock file: counted
    // at scrape time.
    let ipam = dir.join("node1").join("ipam");
    std::fs::create_dir_all(&ipam).expect("ipam dir");
    for host in [2u32, 3] {
        let ip = std::net::Ipv4Addr::from(s1.network().to_bits() + host);
        std::fs::write(ipam.join(ip.to_string()), "c1\r\neth0").expect("reservation");
    }
    std::fs::write(ipam.join("lock"), "").expect("lock");
    let (code, metrics) = http_get(&n1, HEALTH_PORT, "/metrics").expect("/metrics");
    assert_eq!(code, 200);
    let free = (1u64 << (32 - u32::from(s1.prefix_len()))) - 3 - 2;
    for name in [
        "flanneld_pod_addresses_in_use 2\n".to_string(),
        format!("flanneld_pod_addresses_free {free}\n"),
        "flanneld_peers_known 1\n".into(),
        "flanneld_peers_failed 0\n".into(),
        "flanneld_lease_remaining_seconds ".into(),
        format!(
            "flanneld_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
        "process_cpu_seconds_total ".into(),
        "process_resident_memory_bytes ".into(),
        "process_open_fds ".into(),
        "process_start_time_seconds ".into(),
    ] {
        assert!(metrics.contains(&name), "/metrics lacks {name}:\n{metrics}");
    }
    for name in [
        "flanneld_peers 1",
        "flanneld_lease_expiry_timestamp_seconds",
        "flanneld_ready 1",
        "flanneld_reconcile_runs_total{trigger=\"startup\"}",
        "flanneld_reconcile_duration_seconds_bucket",
        "flanneld_netlink_operations_total",
        "flanneld_lease_events_total",
        "flanneld_lease_acquisitions_total 1",
        "flanneld_lease_renewals_total",
        "flanneld_lease_renewal_failures_total",
        "flanneld_reconcile_runs_total{trigger=\"resync\"}",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }

    // SIGTERM: exit 0, device, routes and subnet.env stay.
    let status = d1.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status:?}; log:\n{}",
        d1.log()
    );
    let link = n1
        .run("ip", &["-d", "link", "show", "flannel.1"])
        .expect("flannel.1 kept after SIGTERM");
    assert!(link.contains("vxlan id 1"), "{link}");
    let route = n1
        .run("ip", &["route", "show", &s2.to_string()])
        .expect("ip route");
    assert!(
        route.contains("flannel.1"),
        "route to the peer kept: {route:?}"
    );
    assert_eq!(
        read_env(dir, "node1").as_ref(),
        Some(&env1),
        "subnet.env kept"
    );
    // Pod traffic continues with the daemon down.
    n1.run("ping", &["-c", "1", "-W", "2", &gw2])
        .expect("overlay ping with the daemon stopped");

    // Restart: same subnet, adopts the device, ready again.
    let d1b = start_daemon(&n1, dir, "node1", &[]);
    let logs_b = || {
        format!(
            "--- node1 (restarted)\n{}\n--- node2\n{}",
            d1b.log(),
            d2.log()
        )
    };
    wait_for(
        "/readyz 200 after restart",
        Duration::from_secs(30),
        || {
            http_get(&n1, HEALTH_PORT, "/readyz")
                .ok()
                .filter(|(c, _)| *c == 200)
        },
        &logs_b,
    );
    let env1b = read_env(dir, "node1").expect("subnet.env after restart");
    assert_eq!(
        env1b.subnet.map(|s| s.trunc()),
        Some(s1),
        "restart kept the subnet"
    );
    n1.run("ping", &["-c", "1", "-W", "2", &gw2])
        .expect("overlay ping after restart");
    drop(d1b);
    drop(d2);
}

#[test]
fn readyz_is_503_until_the_store_has_a_config() {
    testkit::assert_root("daemon_kernel test");
    let dir = testkit::temp_dir("dmn").expect("temp dir");
    let dir = dir.path();
    let (n1, _n2) = two_nodes();
    // No --net-config-path and an empty store: the daemon waits for the
    // config, alive but not ready.
    let mut d = Daemon::start(
        n1.exec(env!("CARGO_BIN_EXE_flanneld-rs"))
            .args(["--iface", "veth0", "--store-path"])
            .arg(dir.join("leases.json"))
            .arg("--subnet-file")
            .arg(dir.join("subnet.env"))
            .args(["--healthz-addr", &format!("127.0.0.1:{HEALTH_PORT}")]),
        dir.join("node.log"),
    );
    let logs = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let (code, body) = wait_for(
        "/healthz to answer",
        Duration::from_secs(10),
        || {
            http_get(&n1, HEALTH_PORT, "/healthz").ok()?;
            http_get(&n1, HEALTH_PORT, "/readyz").ok()
        },
        &logs,
    );
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("lease"), "{body}");
    assert!(
        !dir.join("subnet.env").exists(),
        "subnet.env written before ready"
    );
    let status = d.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM during start-up exits 0; log:\n{}",
        d.log()
    );
}

#[test]
fn bad_flags_exit_2_naming_the_flag_also_from_the_environment() {
    let bin = env!("CARGO_BIN_EXE_flanneld-rs");
    let out = Command::new(bin)
        .env("FLANNELD_SUBNET_LEASE_RENEW_MARGIN", "0")
        .output()
        .expect("run flanneld-rs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--subnet-lease-renew-margin"), "{err}");

    let out = Command::new(bin)
        .args(["--store", "embedded"])
        .output()
        .expect("run flanneld-rs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--store-path"), "{err}");

    let out = Command::new(bin)
        .env("FLANNELD_STORE", "embedded")
        .env("FLANNELD_ETCD_CERTFILE", "/nonexistent")
        .output()
        .expect("run flanneld-rs");
    assert_eq!(out.status.code(), Some(2), "env FLANNELD_STORE is read");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--store-path"));
}

/// Node detection against the kernel: a thread enters the node namespace
/// and runs the same code as the daemon's start-up.
fn detect_in(ns: &Netns, spec: IfaceSpec) -> Result<flanneld::backend::LocalNode, String> {
    detect_underlay(ns, spec, Underlay::Ipv4)
}

fn detect_underlay(
    ns: &Netns,
    spec: IfaceSpec,
    underlay: Underlay,
) -> Result<flanneld::backend::LocalNode, String> {
    testkit::in_netns(ns, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let nl = flanneld::netlink::Netlink::connect().map_err(|e| e.to_string())?;
            flanneld::node::netlink::detect(
                &nl,
                &spec,
                flanneld::node::PublicAddrs::default(),
                underlay,
            )
            .await
            .map_err(|e| e.to_string())
        })
    })
    .map_err(|e| e.to_string())?
}

#[test]
fn node_detection_by_name_address_route_and_default_route() {
    testkit::assert_root("daemon_kernel test");
    let (n1, _n2) = two_nodes();
    n1.run("ip", &["link", "set", "veth0", "mtu", "9001"])
        .expect("set MTU");
    let want: Ipv4Addr = "198.51.100.1".parse().unwrap();

    let e = detect_in(&n1, IfaceSpec::DefaultRoute).unwrap_err();
    assert!(e.contains("no default route"), "{e}");

    for spec in [
        IfaceSpec::Names(vec!["nope".into(), "veth0".into()]),
        IfaceSpec::Names(vec!["198.51.100.1".into()]),
        IfaceSpec::Regexes(vec![regex::Regex::new("^veth").unwrap()]),
        IfaceSpec::CanReach("198.51.100.2".parse().unwrap()),
    ] {
        let shown = format!("{spec:?}");
        let node = detect_in(&n1, spec).unwrap_or_else(|e| panic!("{shown}: {e}"));
        assert_eq!(node.iface_name, "veth0", "{shown}");
        assert_eq!(node.iface_addr, want, "{shown}");
        assert_eq!(node.iface_mtu, 9001, "{shown}");
    }

    n1.run("ip", &["route", "add", "default", "via", "198.51.100.2"])
        .expect("default route inside the node namespace");
    let node = detect_in(&n1, IfaceSpec::DefaultRoute).expect("default route detection");
    assert_eq!(node.iface_name, "veth0");
    assert_eq!(node.public_ip, want);
    let e = detect_in(&n1, IfaceSpec::Names(vec!["eth9".into()])).unwrap_err();
    assert!(e.contains("eth9"), "{e}");
}

/// IPv6 underlay detection on real interfaces: a global address found
/// next to the kernel's link-local one, a tentative address (DAD not done)
/// skipped, the IPv6 default route, an IPv6 --iface-can-reach, an
/// interface without IPv4.
#[test]
fn node_detection_of_an_ipv6_underlay() {
    testkit::assert_root("daemon_kernel test");
    let (n1, _n2) = two_nodes();
    let v6 = |s: &str| -> Ipv6Addr { s.parse().unwrap() };
    let e =
        detect_underlay(&n1, IfaceSpec::Names(vec!["veth0".into()]), Underlay::Ipv6).unwrap_err();
    assert!(
        e.contains("no global IPv6 address"),
        "only link-local so far: {e}"
    );
    // A tentative address (DAD not done) cannot be bound: not taken. On a
    // link that is down DAD never starts, so the address stays tentative.
    n1.run(
        "ip",
        &[
            "link", "add", "dum0", "type", "veth", "peer", "name", "dum1",
        ],
    )
    .expect("a veth pair left down");
    n1.run(
        "ip",
        &["-6", "addr", "add", "2001:db8:200::1/64", "dev", "dum0"],
    )
    .expect("address on the down link");
    let shown = n1
        .run("ip", &["-6", "addr", "show", "dev", "dum0"])
        .expect("ip addr show");
    assert!(shown.contains("tentative"), "{shown}");
    let e =
        detect_underlay(&n1, IfaceSpec::Names(vec!["dum0".into()]), Underlay::Ipv6).unwrap_err();
    assert!(e.contains("dum0") && e.contains("no global IPv6"), "{e}");
    n1.run(
        "ip",
        &[
            "-6",
            "addr",
            "add",
            "2001:db8:100::11/64",
            "dev",
            "veth0",
            "nodad",
        ],
    )
    .expect("IPv6 underlay address without DAD");
    let node = detect_underlay(&n1, IfaceSpec::Names(vec!["veth0".into()]), Underlay::Ipv6)
        .expect("IPv6 address found");
    assert_eq!(node.iface_addr6, Some(v6("2001:db8:100::11")));
    assert_eq!(node.public_ipv6, node.iface_addr6);
    assert_eq!(node.iface_addr, "198.51.100.1".parse::<Ipv4Addr>().unwrap());
    let node = detect_underlay(
        &n1,
        IfaceSpec::Names(vec!["2001:db8:100::11".into()]),
        Underlay::Ipv6,
    )
    .expect("by IPv6 address");
    assert_eq!(node.iface_addr6, Some(v6("2001:db8:100::11")));
    // The IPv6 default route names the interface; IPv4 may be absent.
    n1.run(
        "ip",
        &[
            "addr",
            "flush",
            "dev",
            "veth0",
            "scope",
            "global",
            "to",
            "198.51.100.0/24",
        ],
    )
    .expect("drop the IPv4 address");
    n1.run(
        "ip",
        &[
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:100::2",
            "dev",
            "veth0",
        ],
    )
    .expect("IPv6 default route");
    let node = detect_underlay(&n1, IfaceSpec::DefaultRoute, Underlay::Ipv6)
        .expect("IPv6 default route detection");
    assert_eq!(node.iface_name, "veth0");
    assert_eq!(node.iface_addr, Ipv4Addr::UNSPECIFIED);
    let node = detect_underlay(
        &n1,
        IfaceSpec::CanReach("2001:db8:100::2".parse().unwrap()),
        Underlay::Ipv6,
    )
    .expect("IPv6 --iface-can-reach");
    assert_eq!(node.iface_name, "veth0");
    assert!(node.iface_addr6.is_some());
    // An IPv4 underlay on that interface: no IPv4 left, one clear error.
    let e = detect_in(&n1, IfaceSpec::Names(vec!["veth0".into()])).unwrap_err();
    assert!(e.contains("no IPv4 address"), "{e}");
}

#[test]
fn json_logs_name_the_failure() {
    let bin = env!("CARGO_BIN_EXE_flanneld-rs");
    let dir = testkit::temp_dir("dmn").expect("temp dir");
    // Fails at interface detection, before touching the store or the
    // kernel: only reads the interface list.
    let out = Command::new(bin)
        .args(["--log-format", "json", "--iface", "fct-no-such-if"])
        .arg("--store-path")
        .arg(dir.path().join("leases.json"))
        .output()
        .expect("run flanneld-rs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().last().unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {err}"));
    assert_eq!(v["level"], "ERROR", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("fct-no-such-if"),
        "{v}"
    );
    assert!(!dir.path().join("leases.json").exists());
}

/// Text logs to a file or pipe carry no ANSI colour codes (a terminal
/// still gets colours; `output()` gives the daemon a pipe).
#[test]
fn text_logs_to_a_pipe_have_no_colour_codes() {
    let bin = env!("CARGO_BIN_EXE_flanneld-rs");
    let dir = testkit::temp_dir("dmn").expect("temp dir");
    let out = Command::new(bin)
        .args(["--log-format", "text", "--iface", "fct-no-such-if"])
        .arg("--store-path")
        .arg(dir.path().join("leases.json"))
        .output()
        .expect("run flanneld-rs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ERROR"), "{err}");
    assert!(!err.contains('\u{1b}'), "escape codes in {err:?}");
}

#[test]
fn host_gw_routes_via_the_peer_and_keeps_the_underlay_mtu() {
    testkit::assert_root("daemon_kernel test");
    let dir = testkit::temp_dir("dmn").expect("temp dir");
    let dir = dir.path();
    std::fs::write(
        dir.join("net-conf.json"),
        r#"{"Network":"10.245.0.0/16","Backend":{"Type":"host-gw"}}"#,
    )
    .expect("write net-conf.json");
    let (n1, n2) = two_nodes();
    let d1 = start_daemon(&n1, dir, "node1", &[]);
    let d2 = start_daemon(&n2, dir, "node2", &[]);
    let logs = || format!("--- node1\n{}\n--- node2\n{}", d1.log(), d2.log());
    let env1 = wait_for(
        "node1 subnet.env",
        Duration::from_secs(30),
        || read_env(dir, "node1"),
        &logs,
    );
    let env2 = wait_for(
        "node2 subnet.env",
        Duration::from_secs(30),
        || read_env(dir, "node2"),
        &logs,
    );
    assert_eq!(env1.mtu, 1500, "host-gw does not encapsulate");
    let s2 = env2.subnet.expect("subnet").trunc();
    wait_for(
        "node1 route to node2's subnet via its public IP",
        Duration::from_secs(10),
        || {
            let out = n1.run("ip", &["route", "show", &s2.to_string()]).ok()?;
            out.contains("via 198.51.100.2 dev veth0").then_some(())
        },
        &logs,
    );
    wait_for(
        "/readyz 200",
        Duration::from_secs(10),
        || {
            http_get(&n2, HEALTH_PORT, "/readyz")
                .ok()
                .filter(|(c, _)| *c == 200)
        },
        &logs,
    );
}
