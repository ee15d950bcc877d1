//! Taking over a node from Go flanneld v0.20.2, with Go's footprint made by
//! hand exactly as docs (shared GO-FLANNEL-FOOTPRINT.md) record it: no Go
//! binary runs here. Two node namespaces (`fct-gotk-*`) on a veth underlay
//! share a real etcd (running inside the first node's namespace):
//!
//! - node1 is the Go node: `flannel.1` with a random MAC, `udpcsum`,
//!   `proto boot` routes, permanent neighbours and FDB entries (also those
//!   of a peer that left), Go's iptables chains (nft and legacy flavours)
//!   and its lease written with Go's bytes;
//! - node2 already runs flanneld-rs (a node migrated earlier).
//!
//! flanneld-rs then starts on node1 while pings at 10 ms run both ways; the
//! test checks adoption without recreation, 0 lost packets, the departed
//! peer's entries swept and nothing else touched, Go's chains retired only
//! where our rules cover them, the lease and subnet.env byte-identical to
//! what Go reads, and a device deleted while the daemon is down coming back
//! with Go's MAC. Root needed.

use std::path::Path;
use std::time::Duration;

use testkit::{wait_for, Daemon, Netns};

const ETCD_URL: &str = "http://198.51.100.1:2379";
const PREFIX: &str = "/coreos.com/network";
/// Go's random VTEP MAC of node1 (locally administered, not derived).
const GO_MAC: &str = "a6:3c:5d:1e:77:42";
/// A peer that left while node1 still ran Go: its entries must go.
const GONE_MAC: &str = "0e:00:00:00:00:03";

fn sh(ns: &Netns, script: &str) -> String {
    ns.run("sh", &["-c", script])
        .unwrap_or_else(|e| panic!("in {}: {script}: {e}", ns.name()))
}

fn etcdctl(ns: &Netns, args: &[&str]) -> String {
    let mut all = vec!["--endpoints", ETCD_URL];
    all.extend_from_slice(args);
    ns.run("etcdctl", &all)
        .unwrap_or_else(|e| panic!("etcdctl {args:?}: {e}"))
}

/// The two nodes, the underlay, and etcd inside node1 (reachable from node2
/// over the underlay).
fn lab(dir: &Path) -> (Netns, Netns, Daemon) {
    let (n1, n2) =
        testkit::netns::linked_pair("gotk", "veth0", ["198.51.100.1/24", "198.51.100.2/24"])
            .unwrap_or_else(|e| panic!("node namespaces with a veth underlay: {e}"));
    let mut cmd = n1.exec("/usr/bin/etcd");
    cmd.arg("--name=gotk")
        .arg(format!("--data-dir={}", dir.join("etcd").display()))
        .arg(format!("--listen-client-urls={ETCD_URL}"))
        .arg(format!("--advertise-client-urls={ETCD_URL}"))
        .arg("--listen-peer-urls=http://127.0.0.1:2380")
        .arg("--initial-advertise-peer-urls=http://127.0.0.1:2380")
        .arg("--initial-cluster=gotk=http://127.0.0.1:2380");
    let etcd = Daemon::start(&mut cmd, dir.join("etcd.log"));
    wait_for(
        "etcd in node1",
        Duration::from_secs(30),
        || {
            n1.run("etcdctl", &["--endpoints", ETCD_URL, "endpoint", "health"])
                .ok()
        },
        &|| etcd.log(),
    );
    (n1, n2, etcd)
}

/// flanneld-rs in `ns`, started with Go flanneld's own flag forms (single
/// dash, `-v=2`, retired flags) as an existing unit file carries them.
fn daemon(ns: &Netns, dir: &Path, node: &str, extra: &[&str]) -> Daemon {
    std::fs::create_dir_all(dir.join(node)).expect("node dir");
    let mut cmd = ns.exec(env!("CARGO_BIN_EXE_flanneld-rs"));
    // node2 names a missing interface first: like Go flanneld, the next
    // kind given (--iface-can-reach) is the fallback.
    let iface: &[&str] = if node == "node2" {
        &["-iface", "nope0", "-iface-can-reach=198.51.100.1"]
    } else {
        &["-iface", "veth0"]
    };
    cmd.args(iface)
        .args(["-etcd-endpoints", ETCD_URL, "-ip-masq", "-v=2"])
        .arg(format!(
            "-subnet-file={}",
            dir.join(node).join("subnet.env").display()
        ))
        .args([
            "--iptables-resync=5",
            "-iptables-forward-rules=true",
            "--resync-period",
            "1s",
        ])
        .args(extra);
    let log = dir.join(format!(
        "{node}-{}.log",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    Daemon::start(&mut cmd, log)
}

fn subnet_env(dir: &Path, node: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(node).join("subnet.env")).ok()
}

/// Go flanneld v0.20.2's masquerade and forward rules (9 in all) in one
/// iptables flavour; `forward_policy` for the filter FORWARD chain.
fn go_iptables(ns: &Netns, ipt: &str, forward_policy: &str) {
    let n = "10.244.0.0/16";
    let sn = "10.244.1.0/24";
    sh(
        ns,
        &format!(
            "set -e
{ipt} -w -t nat -N FLANNEL-POSTRTG
{ipt} -w -t nat -A POSTROUTING -m comment --comment 'flanneld masq' -j FLANNEL-POSTRTG
{ipt} -w -t nat -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment 'flanneld masq' -j RETURN
{ipt} -w -t nat -A FLANNEL-POSTRTG -s {n} -d {n} -m comment --comment 'flanneld masq' -j RETURN
{ipt} -w -t nat -A FLANNEL-POSTRTG ! -s {n} -d {sn} -m comment --comment 'flanneld masq' -j RETURN
{ipt} -w -t nat -A FLANNEL-POSTRTG -s {n} ! -d 224.0.0.0/4 -m comment --comment 'flanneld masq' -j MASQUERADE --random-fully
{ipt} -w -t nat -A FLANNEL-POSTRTG ! -s {n} -d {n} -m comment --comment 'flanneld masq' -j MASQUERADE --random-fully
{ipt} -w -t filter -N FLANNEL-FWD
{ipt} -w -t filter -A FORWARD -m comment --comment 'flanneld forward' -j FLANNEL-FWD
{ipt} -w -t filter -A FLANNEL-FWD -s {n} -m comment --comment 'flanneld forward' -j ACCEPT
{ipt} -w -t filter -A FLANNEL-FWD -d {n} -m comment --comment 'flanneld forward' -j ACCEPT
{ipt} -w -t filter -P FORWARD {forward_policy}
"
        ),
    );
}

fn has_chain(ns: &Netns, ipt: &str, table: &str, chain: &str) -> bool {
    ns.run(ipt, &["-w", "-t", table, "-S", chain]).is_ok()
}

fn jumps(ns: &Netns, ipt: &str, table: &str, parent: &str, chain: &str) -> usize {
    ns.run(ipt, &["-w", "-t", table, "-S", parent])
        .unwrap_or_default()
        .lines()
        .filter(|l| l.ends_with(&format!("-j {chain}")))
        .count()
}

/// `count` pings at 10 ms; ping waits (up to 60 s) for every reply, so a
/// late reply is not counted as lost, a missing one is.
fn ping_flood(ns: &Netns, to: &str, count: u32) -> Daemon {
    let mut cmd = ns.exec("ping");
    cmd.args(["-i", "0.01", "-c", &count.to_string(), "-w", "60", "-q", to]);
    let log = std::env::temp_dir().join(format!("fct-gotk-ping-{}-{to}.log", std::process::id()));
    // The output goes to a file, read after the exit.
    Daemon::start(&mut cmd, log)
}

fn ping_result(mut p: Daemon) -> (u64, u64, String) {
    // Its exit status says nothing the summary line does not.
    let _ = p.wait();
    let text = p.log();
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or("")
        .to_string();
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    let _ = std::fs::remove_file(p.log_path());
    (
        nums.first().copied().unwrap_or(0),
        nums.get(1).copied().unwrap_or(0),
        text,
    )
}

/// The body of `GET http://127.0.0.1:port{path}` inside `ns`.
fn http_get(ns: &Netns, port: u16, path: &str) -> String {
    testkit::http::get(ns, port, path)
        .unwrap_or_else(|e| panic!("{e}"))
        .1
}

/// `10.244.7.0` -> `10.244.7.1` (FLANNEL_SUBNET names the first address).
fn first_address(network: &str) -> String {
    let ip: std::net::Ipv4Addr = network.parse().expect("IPv4");
    std::net::Ipv4Addr::from(u32::from(ip) + 1).to_string()
}

fn link_field(ns: &Netns, field: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(
        &ns.run("ip", &["-j", "-d", "link", "show", "flannel.1"])
            .expect("flannel.1"),
    )
    .expect("ip -j");
    v[0][field].to_string()
}

#[test]
fn go_node_is_taken_over_with_no_lost_packet_and_nothing_left_behind() {
    testkit::assert_root("go_takeover test");
    let tmp = testkit::temp_dir("gotk").expect("temp dir");
    let dir = tmp.path();
    let (n1, n2, etcd) = lab(dir);

    // The cluster config and node1's lease, as Go flanneld writes them.
    etcdctl(
        &n1,
        &[
            "put",
            &format!("{PREFIX}/config"),
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#,
        ],
    );
    let grant = etcdctl(&n1, &["lease", "grant", "86400"]);
    let lease_id = grant
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    let go_lease = format!(
        r#"{{"PublicIP":"198.51.100.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{GO_MAC}"}}}}"#
    );
    etcdctl(
        &n1,
        &[
            "put",
            "--lease",
            &lease_id,
            &format!("{PREFIX}/subnets/10.244.1.0-24"),
            &go_lease,
        ],
    );

    // node2: already migrated, runs flanneld-rs; it programs node1 from
    // Go's lease (Go's MAC).
    let mut d2 = daemon(&n2, dir, "node2", &[]);
    let logs2 = || format!("--- node2\n{}\n--- etcd\n{}", d2.log(), etcd.log());
    let env2 = wait_for(
        "node2 subnet.env",
        Duration::from_secs(60),
        || subnet_env(dir, "node2"),
        &logs2,
    );
    let s2: String = env2
        .lines()
        .find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))
        .expect("FLANNEL_SUBNET")
        .replace(".1/24", ".0");
    wait_for(
        "node2's route to node1",
        Duration::from_secs(20),
        || {
            n2.run("ip", &["route", "show", "10.244.1.0/24"])
                .ok()
                .filter(|o| o.contains("flannel.1"))
        },
        &logs2,
    );
    let mac2 = {
        let v: serde_json::Value = serde_json::from_str(&link_field(&n2, "address")).expect("mac");
        v.as_str().expect("mac").to_string()
    };

    // The other direction (a node born in flanneld-rs read by Go): node2's
    // lease value and subnet.env are byte for byte what Go writes, and the
    // key is attached to an etcd lease with Go's TTL (24 h).
    let key2 = format!("{PREFIX}/subnets/{s2}-24");
    let value2 = etcdctl(&n1, &["get", "--print-value-only", &key2]);
    assert_eq!(
        value2.trim(),
        format!(
            r#"{{"PublicIP":"198.51.100.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac2}"}}}}"#
        )
    );
    assert_eq!(
        env2,
        format!(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET={}/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
            first_address(&s2)
        )
    );
    let kv: serde_json::Value =
        serde_json::from_str(&etcdctl(&n1, &["get", "-w", "json", &key2])).expect("etcdctl json");
    let lease = kv["kvs"][0]["lease"]
        .as_i64()
        .expect("key has an etcd lease");
    let ttl = etcdctl(&n1, &["lease", "timetolive", &format!("{lease:x}")]);
    assert!(ttl.contains("granted with TTL(86400s)"), "{ttl}");

    // Two departed peers' subnets, away from node2's (picked at random).
    let free: Vec<String> = (3..=6)
        .map(|i| format!("10.244.{i}.0"))
        .filter(|n| *n != s2)
        .collect();
    let (gone, gone_hg) = (free[0].clone(), free[1].clone());

    // Go's footprint on node1.
    sh(
        &n1,
        &format!(
            "set -e
ip link add flannel.1 type vxlan id 1 local 198.51.100.1 dev veth0 dstport 8472 nolearning udpcsum
ip link set flannel.1 address {GO_MAC} mtu 1450 up
ip addr add 10.244.1.0/32 dev flannel.1
# node2, as Go programmed it
ip neigh replace {s2} lladdr {mac2} dev flannel.1 nud permanent
bridge fdb append {mac2} dev flannel.1 dst 198.51.100.2 self permanent
ip route add {s2}/24 via {s2} dev flannel.1 onlink proto boot
# a peer that left while node1 was between daemons
ip neigh replace {gone} lladdr {GONE_MAC} dev flannel.1 nud permanent
bridge fdb append {GONE_MAC} dev flannel.1 dst 198.51.100.3 self permanent
ip route add {gone}/24 via {gone} dev flannel.1 onlink proto boot
# a departed DirectRouting/host-gw peer route inside the cluster network
ip route add {gone_hg}/24 via 198.51.100.4 dev veth0 proto boot
# not ours: outside the cluster network, or the operator's
ip route add 192.0.2.0/24 via 198.51.100.254 dev veth0 proto boot
ip route add 10.245.0.0/24 via 198.51.100.254 dev veth0 proto boot
ip neigh replace 198.51.100.77 lladdr 0e:00:00:00:00:77 dev veth0 nud permanent
"
        ),
    );
    go_iptables(&n1, "iptables-nft", "ACCEPT");
    go_iptables(&n1, "iptables-legacy", "DROP");
    let index_before = link_field(&n1, "ifindex");
    // Go's datapath carries traffic before the switch.
    n1.run("ping", &["-c", "1", "-W", "2", &s2])
        .expect("Go-made path node1 -> node2");

    // The takeover, under pings both ways.
    // 1,500 pings (15 s) each way; the daemon starts 2 s in.
    let mut p21 = ping_flood(&n2, "10.244.1.0", 1500);
    let mut p12 = ping_flood(&n1, &s2, 1500);
    std::thread::sleep(Duration::from_secs(2));
    let mut d1 = daemon(&n1, dir, "node1", &["--healthz-addr", "127.0.0.1:9481"]);
    let logs = || format!("--- node1\n{}\n--- node2\n{}", d1.log(), d2.log());
    let env1 = wait_for(
        "node1 subnet.env",
        Duration::from_secs(60),
        || subnet_env(dir, "node1"),
        &logs,
    );
    // The first reconcile (which would sweep or recreate) is done before
    // subnet.env is written: the pings must still be running then.
    for p in [&mut p21, &mut p12] {
        assert!(
            p.is_running(),
            "the pings ended before the takeover was done (machine too slow?); logs:\n{}",
            logs()
        );
    }
    let (sent21, got21, out21) = ping_result(p21);
    let (sent12, got12, out12) = ping_result(p12);
    eprintln!(
        "takeover under ping -i 0.01: node2->node1 {got21}/{sent21}, node1->node2 {got12}/{sent12}"
    );
    assert!(
        sent21 == 1500 && sent12 == 1500,
        "too few pings sent:\n{out21}\n{out12}"
    );
    assert_eq!(
        got21,
        sent21,
        "packets lost node2 -> node1 across the takeover:\n{out21}\n{}",
        logs()
    );
    assert_eq!(
        got12,
        sent12,
        "packets lost node1 -> node2 across the takeover:\n{out12}\n{}",
        logs()
    );

    // Adopted, not recreated: same ifindex, Go's MAC kept and published.
    assert_eq!(
        link_field(&n1, "ifindex"),
        index_before,
        "flannel.1 was recreated"
    );
    assert_eq!(link_field(&n1, "address"), format!("\"{GO_MAC}\""));
    let published = etcdctl(
        &n1,
        &[
            "get",
            "--print-value-only",
            &format!("{PREFIX}/subnets/10.244.1.0-24"),
        ],
    );
    assert_eq!(
        published.trim(),
        go_lease,
        "our lease must be byte-identical to Go's"
    );
    let remembered =
        std::fs::read_to_string(dir.join("node1").join("vtep-mac.json")).expect("vtep-mac.json");
    assert!(remembered.contains(GO_MAC), "{remembered}");
    // subnet.env exactly as Go writes it.
    assert_eq!(
        env1,
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
    );
    assert!(!d1.log().contains("ERROR"), "{}", d1.log());
    for (flag, n) in [
        ("--iptables-resync=5", 1),
        ("--iptables-forward-rules=true", 1),
    ] {
        assert_eq!(
            d1.log()
                .matches(&format!("{flag} is accepted and ignored"))
                .count(),
            n,
            "{}",
            d1.log()
        );
    }

    // The departed peer's Go-made entries are swept; node2's stay; nothing
    // outside our device and the cluster network is touched.
    wait_for(
        "departed peer swept",
        Duration::from_secs(10),
        || {
            let routes = n1.run("ip", &["route", "show"]).ok()?;
            let neigh = n1.run("ip", &["neigh", "show", "dev", "flannel.1"]).ok()?;
            let fdb = n1
                .run("bridge", &["fdb", "show", "dev", "flannel.1"])
                .ok()?;
            (!routes.contains(&format!("{gone}/24"))
                && !routes.contains(&format!("{gone_hg}/24"))
                && !neigh.contains(GONE_MAC)
                && !fdb.contains(GONE_MAC))
            .then_some(())
        },
        &logs,
    );
    let routes = n1.run("ip", &["route", "show"]).expect("routes");
    assert!(
        routes.contains(&format!("{s2}/24 via {s2} dev flannel.1")),
        "{routes}"
    );
    assert!(
        routes.contains("192.0.2.0/24 via 198.51.100.254"),
        "{routes}"
    );
    assert!(
        routes.contains("10.245.0.0/24 via 198.51.100.254"),
        "{routes}"
    );
    let veth_neigh = n1
        .run("ip", &["neigh", "show", "dev", "veth0"])
        .expect("neigh");
    assert!(veth_neigh.contains("198.51.100.77"), "{veth_neigh}");
    let fdb = n1
        .run("bridge", &["fdb", "show", "dev", "flannel.1"])
        .expect("fdb");
    assert!(fdb.contains(&format!("{mac2} dst 198.51.100.2")), "{fdb}");

    // Go's chains: our masquerade is in place, so FLANNEL-POSTRTG goes from
    // both flavours; FLANNEL-FWD goes where FORWARD accepts anyway (nft
    // here) and, once our own accepts (FLANNEL-RS-FWD) are in that
    // flavour's FORWARD, also where the policy is DROP (legacy here).
    n1.run("nft", &["list", "table", "ip", "flannel-rs"])
        .expect("our masquerade table");
    wait_for(
        "Go's chains retired",
        Duration::from_secs(10),
        || {
            (!has_chain(&n1, "iptables-nft", "nat", "FLANNEL-POSTRTG")
                && !has_chain(&n1, "iptables-nft", "filter", "FLANNEL-FWD")
                && !has_chain(&n1, "iptables-legacy", "nat", "FLANNEL-POSTRTG")
                && !has_chain(&n1, "iptables-legacy", "filter", "FLANNEL-FWD"))
            .then_some(())
        },
        &logs,
    );
    for ipt in ["iptables-nft", "iptables-legacy"] {
        assert_eq!(
            jumps(&n1, ipt, "nat", "POSTROUTING", "FLANNEL-POSTRTG"),
            0,
            "{ipt}"
        );
    }
    assert_eq!(
        jumps(&n1, "iptables-nft", "filter", "FORWARD", "FLANNEL-FWD"),
        0
    );
    // FORWARD policy DROP in legacy: Go's accepts were replaced by ours,
    // never neither (ours are installed before Go's are removed).
    assert!(has_chain(
        &n1,
        "iptables-legacy",
        "filter",
        "FLANNEL-RS-FWD"
    ));
    assert_eq!(
        jumps(
            &n1,
            "iptables-legacy",
            "filter",
            "FORWARD",
            "FLANNEL-RS-FWD"
        ),
        1
    );
    assert_eq!(
        jumps(&n1, "iptables-legacy", "filter", "FORWARD", "FLANNEL-FWD"),
        0
    );
    assert_eq!(
        d1.log()
            .matches("keeping Go flanneld's iptables chain for now")
            .count(),
        0,
        "{}",
        d1.log()
    );
    // ... and /metrics says no Go chain is left.
    let metrics = http_get(&n1, 9481, "/metrics");
    assert!(
        metrics.contains("flanneld_go_iptables_chains 0\n"),
        "{metrics}"
    );

    // Restart with the device deleted meanwhile: it comes back with Go's
    // MAC (remembered), so peers need no change. With --keep-go-iptables,
    // chains Go made again (a switch back and forth) are left alone.
    assert!(d1.terminate().success(), "{}", d1.log());
    n1.run("ip", &["link", "del", "flannel.1"])
        .expect("delete flannel.1");
    sh(&n1, "iptables-nft -w -t nat -N FLANNEL-POSTRTG && iptables-nft -w -t nat -A POSTROUTING -j FLANNEL-POSTRTG");
    std::fs::remove_file(dir.join("node1").join("subnet.env")).expect("remove subnet.env");
    let d1b = daemon(&n1, dir, "node1", &["--keep-go-iptables"]);
    let logs_b = || format!("--- node1\n{}\n--- node2\n{}", d1b.log(), d2.log());
    wait_for(
        "node1 ready again",
        Duration::from_secs(60),
        || subnet_env(dir, "node1"),
        &logs_b,
    );
    assert_eq!(
        link_field(&n1, "address"),
        format!("\"{GO_MAC}\""),
        "{}",
        d1b.log()
    );
    let published = etcdctl(
        &n1,
        &[
            "get",
            "--print-value-only",
            &format!("{PREFIX}/subnets/10.244.1.0-24"),
        ],
    );
    assert_eq!(published.trim(), go_lease);
    wait_for(
        "node2 -> node1 over the recreated device",
        Duration::from_secs(10),
        || n2.run("ping", &["-c", "1", "-W", "1", "10.244.1.0"]).ok(),
        &logs_b,
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        has_chain(&n1, "iptables-nft", "nat", "FLANNEL-POSTRTG"),
        "--keep-go-iptables"
    );
    assert_eq!(
        jumps(&n1, "iptables-nft", "nat", "POSTROUTING", "FLANNEL-POSTRTG"),
        1
    );
    assert!(d2.terminate().success());
}
