//! Helpers shared by the etcd tests: node attributes on TEST-NET, a running
//! etcd with the network config written, and watch collection with a deadline.

#![allow(dead_code)] // each test file uses a different subset

use std::net::Ipv4Addr;
use std::time::Duration;

use futures::StreamExt;
use lease_store::etcd::{EtcdOptions, EtcdStore};
use lease_store::{AcquireRequest, LeaseAttrs, LeaseWatch, WatchUpdate};
use testkit::etcd::EtcdProcess;

pub const NET_CONF: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;

/// Node `n`'s attributes: public IP 192.0.2.n, a VTEP MAC ending in n.
pub fn attrs(n: u8) -> LeaseAttrs {
    LeaseAttrs {
        public_ip: Ipv4Addr::new(192, 0, 2, n),
        public_ipv6: None,
        backend_type: "vxlan".into(),
        backend_data: Some(
            serde_json::json!({"VNI": 1, "VtepMAC": format!("0a:58:0a:f4:00:{n:02x}")}),
        ),
        backend_v6_data: None,
    }
}

pub fn req(n: u8) -> AcquireRequest {
    AcquireRequest {
        attrs: attrs(n),
        previous_subnet: None,
        previous_ipv6_subnet: None,
    }
}

/// Starts etcd off the async runtime's threads (it blocks until ready).
pub async fn start_etcd() -> EtcdProcess {
    tokio::task::spawn_blocking(EtcdProcess::start)
        .await
        .expect("etcd start task panicked")
        .unwrap_or_else(|e| panic!("cannot start etcd: {e}"))
}

pub async fn connect(opts: EtcdOptions) -> EtcdStore {
    EtcdStore::connect(opts)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to etcd: {e}"))
}

/// A store on `etcd` with the test network config written.
pub async fn store_with_config(etcd: &EtcdProcess) -> EtcdStore {
    let s = connect(EtcdOptions::with_endpoints([etcd.endpoint()])).await;
    s.put_config(NET_CONF).await.expect("write network config");
    s
}

/// The next watch update, or a panic after `secs`.
pub async fn next_update(w: &mut LeaseWatch, secs: u64) -> WatchUpdate {
    match tokio::time::timeout(Duration::from_secs(secs), w.next()).await {
        Err(_) => panic!("no watch update within {secs} s"),
        Ok(None) => panic!("watch stream ended"),
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(Some(Ok(u))) => u,
    }
}
