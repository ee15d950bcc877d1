//! Issue 17: a node's own lease deleted from etcd while its daemon runs is
//! noticed through the watch and re-created with the same subnet at once
//! (not at the renewal, 12 h away with the default 24 h TTL), so the other
//! nodes program the node again and its pods stay reachable. Needs root:
//! `sudo -E cargo test -p e2e --test lab_lease_loss`.

use std::net::SocketAddr;
use std::time::Duration;

use e2e::etcd_http;
use e2e::lab::{self, Lab, LabConfig};

const PREFIX: &str = "/coreos.com/network";

fn etcd_addr() -> SocketAddr {
    SocketAddr::from(([198, 51, 100, 254], 2379))
}

#[test]
fn a_deleted_own_lease_comes_back_and_pods_stay_reachable() {
    let mut cfg = LabConfig::new("vxlan", "etcd");
    cfg.pods_per_node = 1;
    let lab = Lab::up('l', &cfg).unwrap();
    let nodes = lab.nodes().unwrap();
    let n1 = nodes.iter().find(|n| n.index == 1).unwrap();
    let net1 = n1.subnet_net().unwrap();
    let key = format!("{PREFIX}/subnets/{}", net1.replace('/', "-"));
    let key64 = etcd_http::base64(key.as_bytes());
    let infra = lab.infra_ns();
    let ns2 = lab.node_ns(2);
    let mac1 = lab::link_mac(&lab.node_ns(1), lab::VXLAN_DEV).unwrap();

    let del = serde_json::json!({ "key": key64 });
    let (reply, _) = etcd_http::post(&infra, etcd_addr(), "/v3/kv/deleterange", &del).unwrap();
    assert_eq!(reply["deleted"], "1", "{reply}");

    let get = serde_json::json!({ "key": key64 });
    let (value, took) = lab::wait_for(
        "node 1's lease back in etcd",
        Duration::from_secs(10),
        || {
            let (r, _) = etcd_http::post(&infra, etcd_addr(), "/v3/kv/range", &get)
                .map_err(|e| e.to_string())?;
            r["kvs"][0]["value"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| r.to_string())
        },
    )
    .unwrap();
    eprintln!("own lease re-created {took:?} after its deletion");
    assert!(!value.is_empty());
    // Node 2 has node 1's three entries again, and every pod pings.
    lab::wait_for(
        "node 2 programs node 1 again",
        Duration::from_secs(10),
        || {
            let e = lab::peer_entries(&ns2, &net1, Some(&mac1)).map_err(|e| e.to_string())?;
            (e.len() == 3).then_some(()).ok_or(format!("{e:?}"))
        },
    )
    .unwrap();
    let after = lab.nodes().unwrap();
    let n1_after = after.iter().find(|n| n.index == 1).unwrap();
    assert_eq!(n1_after.subnet_net(), Some(net1), "same subnet");
    let failed = lab::mesh_failures(&lab.pods().unwrap());
    assert!(failed.is_empty(), "{failed:?}");
}
