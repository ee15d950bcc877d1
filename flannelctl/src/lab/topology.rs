//! The underlay: an infra namespace holding a bridge, and per node a
//! namespace joined to that bridge by a veth pair. Nothing here touches the
//! root namespace: every `ip` call names a lab namespace.

use super::names::{self, NODE_IFACE, UNDERLAY_BRIDGE, UNDERLAY_PREFIX_LEN};
use super::sh::{self, ShError};

/// Creates namespace `ns` with its loopback up.
pub fn add_netns(ns: &str) -> Result<(), ShError> {
    sh::ip(&["netns", "add", ns])?;
    sh::ip(&["-n", ns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// The bridge and its address (the infra host, where etcd listens).
pub fn setup_infra(infra: &str, mtu: u32) -> Result<(), ShError> {
    let mtu = mtu.to_string();
    sh::ip(&[
        "-n",
        infra,
        "link",
        "add",
        UNDERLAY_BRIDGE,
        "mtu",
        &mtu,
        "type",
        "bridge",
    ])?;
    let addr = format!("{}/{UNDERLAY_PREFIX_LEN}", names::infra_ip());
    sh::ip(&["-n", infra, "addr", "add", &addr, "dev", UNDERLAY_BRIDGE])?;
    add_ipv6(infra, UNDERLAY_BRIDGE, names::infra_ip6())?;
    sh::ip(&["-n", infra, "link", "set", UNDERLAY_BRIDGE, "up"])?;
    Ok(())
}

/// Joins node namespace `node_ns` to the bridge: the veth's node end is
/// created directly inside the node namespace (moving a link is slow on
/// this kernel), addressed 198.51.100.K/24 and 2001:db8:100::K/64.
pub fn attach_node(infra: &str, node_ns: &str, node: u32, mtu: u32) -> Result<(), ShError> {
    let port = names::infra_port(node);
    let mtu = mtu.to_string();
    sh::ip(&[
        "-n", infra, "link", "add", &port, "mtu", &mtu, "type", "veth", "peer", "name", NODE_IFACE,
        "mtu", &mtu, "netns", node_ns,
    ])?;
    sh::ip(&[
        "-n",
        infra,
        "link",
        "set",
        &port,
        "master",
        UNDERLAY_BRIDGE,
        "up",
    ])?;
    let addr = format!("{}/{UNDERLAY_PREFIX_LEN}", names::node_ip(node));
    sh::ip(&["-n", node_ns, "addr", "add", &addr, "dev", NODE_IFACE])?;
    add_ipv6(node_ns, NODE_IFACE, names::node_ip6(node))?;
    sh::ip(&["-n", node_ns, "link", "set", NODE_IFACE, "up"])?;
    // A node forwards between its pods and the overlay, as kubelet hosts
    // do; this sysctl is per namespace, the root namespace keeps its own.
    sh::run(sh::in_ns(node_ns, "sysctl").args(["-qw", "net.ipv4.ip_forward=1"]))?;
    Ok(())
}

/// The underlay's IPv6 address, usable at once: no duplicate address
/// detection (the lab assigns every address itself), so a daemon started
/// right after finds it bindable.
fn add_ipv6(ns: &str, dev: &str, ip: std::net::Ipv6Addr) -> Result<(), ShError> {
    let addr = format!("{ip}/{}", names::UNDERLAY6_PREFIX_LEN);
    sh::ip(&["-n", ns, "-6", "addr", "add", &addr, "dev", dev, "nodad"]).map(|_| ())
}

/// Kills whatever still runs in `ns` and deletes it. Missing is fine.
pub fn remove_netns(ns: &str) -> Result<(), ShError> {
    for pid in sh::netns_pids(ns) {
        super::process::signal(pid, libc::SIGKILL);
    }
    if !sh::netns_exists(ns) {
        return Ok(());
    }
    sh::ip(&["netns", "del", ns]).map(|_| ())
}
