//! A real container runtime (podman 4.3, CNI backend) attaches two containers
//! through our conflist (`flannel-rs` then Debian's `portmap`); they ping each
//! other and the gateway, a hostPort reaches one of them from another
//! machine, and removing the containers undoes everything (CNI DEL).
//!
//! The same scenario runs with Debian's reference `bridge` + `host-local` as a
//! control: when it passes and ours fails, the fault is in the plugin, not in
//! the harness or the machine. Needs root.

use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e::bins;
use e2e::podman::Podman;
use testkit::netns::Netns;

type R = anyhow::Result<()>;

const NETWORK: &str = "fctnet";
const GATEWAY: &str = "10.244.7.1";
const SUBNET_PREFIX: &str = "10.244.7.";
const MTU: u32 = 1450;
const NODE_UPLINK: &str = "198.51.100.1";
const CLIENT_ADDR: &str = "198.51.100.2";
const HOST_PORT: &str = "8080";

/// The first plugin of the chain; `portmap` always follows it.
enum FirstPlugin {
    FlannelRs,
    ReferenceBridge,
}

struct Setup {
    first: serde_json::Value,
    plugin_dirs: Vec<PathBuf>,
    ipam_dir: PathBuf,
}

fn setup(kind: FirstPlugin, state: &Path) -> anyhow::Result<Setup> {
    let ipam_dir = state.join("ipam");
    match kind {
        FirstPlugin::FlannelRs => {
            let plugin = bins::flannel_rs()?;
            // A dir holding only our plugin, so podman cannot pick up some
            // other binary from the cargo target dir.
            let bin_dir = state.join("bin");
            std::fs::create_dir_all(&bin_dir)?;
            std::os::unix::fs::symlink(&plugin, bin_dir.join("flannel-rs"))?;
            let subnet_file = state.join("subnet.env");
            std::fs::write(
                &subnet_file,
                testkit::cni::subnet_env_text("10.244.0.0/16", &format!("{GATEWAY}/24"), MTU, true),
            )?;
            Ok(Setup {
                first: serde_json::json!({
                    "type": "flannel-rs",
                    "bridge": "cni0",
                    "subnetFile": subnet_file,
                    "dataDir": ipam_dir,
                    "isDefaultGateway": true,
                }),
                plugin_dirs: vec![bin_dir, PathBuf::from(bins::REFERENCE_PLUGIN_DIR)],
                ipam_dir,
            })
        }
        FirstPlugin::ReferenceBridge => Ok(Setup {
            first: serde_json::json!({
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "isDefaultGateway": true,
                "mtu": MTU,
                "ipam": {
                    "type": "host-local",
                    "dataDir": ipam_dir,
                    "ranges": [[{"subnet": "10.244.7.0/24", "gateway": GATEWAY}]],
                },
            }),
            plugin_dirs: vec![PathBuf::from(bins::REFERENCE_PLUGIN_DIR)],
            ipam_dir,
        }),
    }
}

/// Retries `f` until it succeeds: a freshly started server or a new bridge
/// port may need a moment.
fn eventually<T>(what: &str, mut f: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<T> {
    // Long enough for ten tries of a check that waits 3 s itself (nc -w 3).
    testkit::wait::try_wait_for(what, Duration::from_secs(40), || {
        f().map_err(|e| format!("{e:#}"))
    })
    .map(|(v, _)| v)
    .map_err(|t| anyhow::anyhow!("{t}"))
}

/// IP reservation files (named by address) in host-local's layout.
fn reservations(ipam_dir: &Path) -> Vec<String> {
    std::fs::read_dir(ipam_dir.join(NETWORK))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A second namespace on the node's uplink (198.51.100.0/24), standing in
/// for another machine that connects to a hostPort.
fn client_on_uplink(node: &Netns) -> anyhow::Result<Netns> {
    let client = Netns::create("rt-client")?;
    node.run(
        "ip",
        &[
            "link",
            "add",
            "up0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            client.name(),
        ],
    )?;
    node.run(
        "ip",
        &["addr", "add", &format!("{NODE_UPLINK}/24"), "dev", "up0"],
    )?;
    node.run("ip", &["link", "set", "up0", "up"])?;
    client.run(
        "ip",
        &["addr", "add", &format!("{CLIENT_ADDR}/24"), "dev", "eth0"],
    )?;
    client.run("ip", &["link", "set", "eth0", "up"])?;
    // Routing between uplink and bridge is the node's job (flanneld sets it
    // on a real node); this is the test's own namespace.
    node.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
    Ok(client)
}

/// The scenario, with the conflist at `cni_version`.
fn two_containers(kind: FirstPlugin, cni_version: &str) -> R {
    testkit::root::require_root("the podman runtime test")?;
    let node = Netns::create("rt-node")?;
    let client = client_on_uplink(&node)?;
    let state = testkit::temp::temp_dir("rt-state")?;
    let s = setup(kind, state.path())?;
    let dirs: Vec<&Path> = s.plugin_dirs.iter().map(PathBuf::as_path).collect();
    let podman = Podman::new(&node, &dirs)?;
    podman.add_conflist(
        NETWORK,
        &serde_json::json!({
            "cniVersion": cni_version,
            "name": NETWORK,
            "plugins": [s.first, {"type": "portmap", "capabilities": {"portMappings": true}}],
        }),
    )?;

    let id1 = podman.run_detached("c1", NETWORK, &["--cap-add", "NET_RAW"], &["sleep", "120"])?;
    let id2 = podman.run_detached(
        "c2",
        NETWORK,
        &["--cap-add", "NET_RAW", "-p", &format!("{HOST_PORT}:80")],
        &[
            "sh",
            "-c",
            "echo fct-hello > /www/index.html && exec httpd -f -p 80 -h /www",
        ],
    )?;
    let ip1 = podman.ip_of("c1", NETWORK)?;
    let ip2 = podman.ip_of("c2", NETWORK)?;
    for ip in [&ip1, &ip2] {
        assert!(
            ip.starts_with(SUBNET_PREFIX) && ip != GATEWAY,
            "address {ip:?} is not a pod address in 10.244.7.0/24"
        );
    }
    assert_ne!(ip1, ip2, "both containers got the same address");

    // The address is on eth0 with the subnet's MTU and a default route via
    // the bridge.
    let addr = podman.exec("c1", &["ip", "-o", "-4", "addr", "show", "dev", "eth0"])?;
    assert!(addr.contains(&format!("{ip1}/24")), "c1 eth0: {addr}");
    let mtu = podman.exec("c1", &["cat", "/sys/class/net/eth0/mtu"])?;
    assert_eq!(mtu.trim(), MTU.to_string(), "c1 eth0 MTU");
    // The node side: the bridge holds the gateway address.
    let bridge = node.run("ip", &["-o", "-4", "addr", "show", "dev", "cni0"])?;
    assert!(
        bridge.contains(&format!("{GATEWAY}/24")),
        "cni0 on the node: {bridge}"
    );
    let routes = podman.exec("c1", &["ip", "route"])?;
    assert!(
        routes.contains(&format!("default via {GATEWAY}")),
        "c1 routes: {routes}"
    );

    // host-local's on-disk layout: one file per address holding the ID.
    let mut held = reservations(&s.ipam_dir);
    held.sort();
    let mut want = vec![ip1.clone(), ip2.clone()];
    want.sort();
    assert_eq!(held, want, "IP reservations in {}", s.ipam_dir.display());
    let owner = std::fs::read_to_string(s.ipam_dir.join(NETWORK).join(&ip1))?;
    assert!(
        owner.starts_with(&id1),
        "reservation of {ip1} holds {owner:?}, want container {id1}"
    );

    for (from, to) in [("c1", &ip2), ("c2", &ip1), ("c1", &GATEWAY.to_string())] {
        eventually(&format!("ping {from} -> {to}"), || {
            Ok(podman.exec(from, &["ping", "-c", "1", "-W", "2", to])?)
        })?;
    }

    // portmap, chained after the first plugin, publishes c2's port 80 on
    // the node; another machine reaches it through the uplink.
    // busybox nc rather than wget: the static busybox's wget crashes on the
    // host (glibc NSS in a static binary); an HTTP/1.0 request is one line.
    let body = eventually("hostPort from the client namespace", || {
        Ok(testkit::cmd::run_with_stdin(
            client
                .exec("busybox")
                .args(["nc", "-w", "3", NODE_UPLINK, HOST_PORT]),
            Some(b"GET / HTTP/1.0\r\n\r\n"),
        )?)
    })?;
    assert!(
        body.starts_with("HTTP/1.") && body.trim_end().ends_with("fct-hello"),
        "reply through the hostPort: {body:?}"
    );

    // Removing the containers runs DEL through the chain: reservations,
    // veths and port-forwarding rules go away.
    podman.run(&["rm", "--force", "--time", "0", "c1", "c2"])?;
    assert!(
        reservations(&s.ipam_dir).is_empty(),
        "reservations left after DEL: {:?}",
        reservations(&s.ipam_dir)
    );
    let veths = node.run("ip", &["-o", "link", "show", "type", "veth"])?;
    assert!(
        !veths.contains("veth"),
        "veths left on the node after DEL: {veths}"
    );
    let nat = node.run("iptables", &["-t", "nat", "-S"])?;
    assert!(
        !nat.contains(&id2),
        "portmap rules for c2 left after DEL: {nat}"
    );
    assert!(
        !nat.contains("--to-destination"),
        "DNAT rules left after DEL: {nat}"
    );
    drop(podman);
    drop(client);
    Ok(())
}

#[test]
fn podman_flannel_rs_then_portmap_two_containers() -> R {
    two_containers(FirstPlugin::FlannelRs, "1.0.0")
}

/// Older chains (containerd's CRI still runs 0.3.x/0.4.0 conflists): the
/// result must have the old shape for portmap to parse it as prevResult.
#[test]
fn podman_flannel_rs_then_portmap_cni_0_4_0() -> R {
    two_containers(FirstPlugin::FlannelRs, "0.4.0")
}

#[test]
fn podman_reference_bridge_control() -> R {
    two_containers(FirstPlugin::ReferenceBridge, "1.0.0")
}

/// Runtimes start pods concurrently: parallel `podman run`s call ADD at the
/// same time, and the plugin's IPAM lock must still hand out distinct
/// addresses and record each owner.
#[test]
fn podman_parallel_starts_get_distinct_addresses() -> R {
    const N: usize = 6;
    testkit::root::require_root("the podman parallel start test")?;
    let node = Netns::create("rt-par")?;
    let state = testkit::temp::temp_dir("rt-par-state")?;
    let s = setup(FirstPlugin::FlannelRs, state.path())?;
    let dirs: Vec<&Path> = s.plugin_dirs.iter().map(PathBuf::as_path).collect();
    let podman = Podman::new(&node, &dirs)?;
    podman.add_conflist(
        NETWORK,
        &serde_json::json!({"cniVersion": "1.0.0", "name": NETWORK, "plugins": [s.first]}),
    )?;
    let ids: Vec<anyhow::Result<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let podman = &podman;
                scope.spawn(move || {
                    Ok(podman.run_detached(&format!("p{i}"), NETWORK, &[], &["sleep", "120"])?)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("podman run thread panicked")))
            })
            .collect()
    });
    let ids = ids.into_iter().collect::<anyhow::Result<Vec<_>>>()?;

    let mut ips = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let ip = podman.ip_of(&format!("p{i}"), NETWORK)?;
        let owner = std::fs::read_to_string(s.ipam_dir.join(NETWORK).join(&ip))?;
        assert!(
            owner.starts_with(id.as_str()),
            "reservation of {ip} holds {owner:?}, want {id}"
        );
        ips.push(ip);
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), N, "addresses handed out twice: {ips:?}");
    assert_eq!(reservations(&s.ipam_dir).len(), N);

    podman.run(&["rm", "--all", "--force", "--time", "0"])?;
    assert!(
        reservations(&s.ipam_dir).is_empty(),
        "left after DEL: {:?}",
        reservations(&s.ipam_dir)
    );
    Ok(())
}

/// podman stop runs DEL and podman start runs ADD again: the reservation
/// goes and comes back, and the restarted container is reachable.
#[test]
fn podman_stop_start_reattaches() -> R {
    testkit::root::require_root("the podman stop/start test")?;
    let node = Netns::create("rt-restart")?;
    let state = testkit::temp::temp_dir("rt-restart-state")?;
    let s = setup(FirstPlugin::FlannelRs, state.path())?;
    let dirs: Vec<&Path> = s.plugin_dirs.iter().map(PathBuf::as_path).collect();
    let podman = Podman::new(&node, &dirs)?;
    podman.add_conflist(
        NETWORK,
        &serde_json::json!({"cniVersion": "1.0.0", "name": NETWORK, "plugins": [s.first]}),
    )?;
    podman.run_detached("r1", NETWORK, &[], &["sleep", "120"])?;
    let before = podman.ip_of("r1", NETWORK)?;
    assert_eq!(reservations(&s.ipam_dir), vec![before.clone()]);

    podman.run(&["stop", "--time", "0", "r1"])?;
    assert!(
        reservations(&s.ipam_dir).is_empty(),
        "reservation kept after stop: {:?}",
        reservations(&s.ipam_dir)
    );
    let veths = node.run("ip", &["-o", "link", "show", "type", "veth"])?;
    assert!(!veths.contains("veth"), "veth kept after stop: {veths}");

    podman.run(&["start", "r1"])?;
    let after = podman.ip_of("r1", NETWORK)?;
    assert_eq!(reservations(&s.ipam_dir), vec![after.clone()]);
    eventually("ping the restarted container from the node", || {
        Ok(node.run("ping", &["-c", "1", "-W", "2", &after])?)
    })?;
    podman.run(&["rm", "--force", "--time", "0", "r1"])?;
    assert!(reservations(&s.ipam_dir).is_empty());
    Ok(())
}
