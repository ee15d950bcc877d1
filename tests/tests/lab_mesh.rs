//! The lab end to end, for both backends and both stores: three nodes with
//! two pods each, every pod pings every other pod, and a TCP transfer
//! crosses nodes. Needs root; `sudo -E cargo test -p e2e --test lab_mesh`.

use e2e::lab::{self, Lab, LabConfig};

fn mesh(stem: char, backend: &'static str, store: &'static str) {
    let lab = Lab::up(stem, &LabConfig::new(backend, store)).unwrap();
    let nodes = lab.nodes().unwrap();
    assert_eq!(nodes.len(), 3);
    let subnets: std::collections::BTreeSet<_> =
        nodes.iter().map(|n| n.subnet.clone().unwrap()).collect();
    assert_eq!(
        subnets.len(),
        3,
        "each node leases its own subnet: {nodes:?}"
    );
    let pods = lab.pods().unwrap();
    assert_eq!(pods.len(), 6, "{pods:?}");

    let failed = lab::mesh_failures(&pods);
    assert!(
        failed.is_empty(),
        "{} of 30 pings failed:\n{}",
        failed.len(),
        failed.join("\n")
    );

    // TCP across nodes: node 3's pod sends to node 1's pod.
    let server = pods.iter().find(|p| p.node == 1).unwrap();
    let client = pods.iter().find(|p| p.node == 3).unwrap();
    let bps = lab::iperf3(&server.netns, &client.netns, &server.ip, 1).unwrap();
    assert!(bps > 1e6, "TCP across nodes carried only {bps} bit/s");
}

#[test]
fn vxlan_embedded_mesh() {
    mesh('m', "vxlan", "embedded");
}

#[test]
fn vxlan_etcd_mesh() {
    mesh('m', "vxlan", "etcd");
}

#[test]
fn hostgw_embedded_mesh() {
    mesh('m', "host-gw", "embedded");
}

#[test]
fn hostgw_etcd_mesh() {
    mesh('m', "host-gw", "etcd");
}
