//! A second real runtime: containerd 1.6 through `ctr run --cni`, with a
//! private daemon in a node namespace, runs two containers from a locally
//! built OCI image through our conflist (`flannel-rs` then `portmap`). They
//! ping each other; stopping one makes ctr send DEL with an empty CNI_NETNS
//! (its container's namespace is already gone), which must still release
//! the address. Needs root.

use std::path::PathBuf;
use std::time::Duration;

use e2e::bins;
use e2e::containerd::Containerd;
use testkit::netns::Netns;

type R = anyhow::Result<()>;

const NETWORK: &str = "fctnet";
const GATEWAY: &str = "10.244.7.1";
const MTU: u32 = 1450;

/// The IPv4 address on eth0 of container `id` once CNI ADD has put one there.
fn eth0_addr(ctrd: &Containerd, id: &str) -> anyhow::Result<String> {
    let mut last = String::new();
    for _ in 0..50 {
        match ctrd.exec(id, &["ip", "-o", "-4", "addr", "show", "dev", "eth0"]) {
            Ok(out) => {
                if let Some(addr) = out
                    .split_whitespace()
                    .skip_while(|w| *w != "inet")
                    .nth(1)
                    .and_then(|a| a.split('/').next())
                {
                    return Ok(addr.to_string());
                }
                last = out;
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(anyhow::anyhow!(
        "container {id} never got an address on eth0: {last}"
    ))
}

fn reservations(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join(NETWORK))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn containerd_ctr_flannel_rs_then_portmap_two_containers() -> R {
    testkit::root::require_root("the containerd runtime test")?;
    let plugin = bins::flannel_rs()?;
    let node = Netns::create("rt-ctrd")?;
    let state = testkit::temp::temp_dir("rt-ctrd-state")?;
    let subnet_file = state.path().join("subnet.env");
    std::fs::write(
        &subnet_file,
        testkit::cni::subnet_env_text("10.244.0.0/16", &format!("{GATEWAY}/24"), MTU, true),
    )?;
    let ipam_dir = state.path().join("ipam");

    // ctr also runs `loopback` for lo; portmap follows our plugin.
    let mut plugins = vec![("flannel-rs".to_string(), plugin)];
    for p in ["loopback", "portmap"] {
        plugins.push((
            p.to_string(),
            PathBuf::from(bins::REFERENCE_PLUGIN_DIR).join(p),
        ));
    }
    let ctrd = Containerd::start(&node, &plugins)?;
    ctrd.set_conflist(&serde_json::json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [
            {"type": "flannel-rs", "bridge": "cni0", "subnetFile": subnet_file,
             "dataDir": ipam_dir, "isDefaultGateway": true},
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    }))?;
    ctrd.import_busybox()?;

    ctrd.run("c1", &["sleep", "120"])?;
    ctrd.run("c2", &["sleep", "120"])?;
    let ip1 = eth0_addr(&ctrd, "c1")?;
    let ip2 = eth0_addr(&ctrd, "c2")?;
    for ip in [&ip1, &ip2] {
        assert!(
            ip.starts_with("10.244.7.") && ip != GATEWAY,
            "address {ip} is not a pod address"
        );
    }
    assert_ne!(ip1, ip2);
    let mtu = ctrd.exec("c1", &["cat", "/sys/class/net/eth0/mtu"])?;
    assert_eq!(mtu.trim(), MTU.to_string(), "c1 eth0 MTU");

    ctrd.exec("c1", &["ping", "-c", "1", "-W", "3", &ip2])?;
    ctrd.exec("c2", &["ping", "-c", "1", "-W", "3", &ip1])?;
    ctrd.exec("c2", &["ping", "-c", "1", "-W", "3", GATEWAY])?;

    // ctr names the attachment `<namespace>-<id>` in CNI_CONTAINERID.
    let owner = std::fs::read_to_string(ipam_dir.join(NETWORK).join(&ip1))?;
    let want = format!("{}-c1", ctrd.namespace());
    assert!(
        owner.starts_with(&want),
        "reservation of {ip1} holds {owner:?}, want {want}"
    );

    let mut both = vec![ip1.clone(), ip2.clone()];
    both.sort();
    assert_eq!(reservations(&ipam_dir), both);
    // DEL with CNI_NETNS="": only c1's reservation goes.
    ctrd.stop("c1", Duration::from_secs(20))?;
    assert_eq!(
        reservations(&ipam_dir),
        vec![ip2.clone()],
        "after c1 stopped"
    );
    ctrd.stop("c2", Duration::from_secs(20))?;
    assert!(
        reservations(&ipam_dir).is_empty(),
        "after c2 stopped: {:?}",
        reservations(&ipam_dir)
    );
    let veths = node.run("ip", &["-o", "link", "show", "type", "veth"])?;
    assert!(
        !veths.contains("veth"),
        "host-side veths left after DEL: {veths}"
    );
    drop(ctrd);
    Ok(())
}
