//! `flannelctl leases` against a real embedded store file: list shows what
//! the daemons hold, reserve writes a reservation the store then honours,
//! release frees a lease, and mistakes are named.

use std::process::Command;
use std::time::Duration;

use lease_store::embedded::EmbeddedStore;
use lease_store::{AcquireRequest, LeaseAttrs, LeaseStore};

const NET: &str = r#"{"Network":"10.0.0.0/26","Backend":{"Type":"vxlan"}}"#;

fn ctl(path: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flannelctl"))
        .arg("leases")
        .args(args)
        .args(["--store", "embedded", "--store-path"])
        .arg(path)
        .output()
        .expect("run flannelctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn attrs(n: u8) -> LeaseAttrs {
    LeaseAttrs {
        public_ip: std::net::Ipv4Addr::new(192, 0, 2, n),
        public_ipv6: None,
        backend_type: "vxlan".into(),
        backend_data: Some(serde_json::json!({"VNI": 1, "VtepMAC": "0a:58:00:00:00:01"})),
        backend_v6_data: None,
    }
}

#[test]
fn list_reserve_release_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.json");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(async {
        EmbeddedStore::init(&path, NET).await.unwrap();
        EmbeddedStore::open(&path, Duration::from_secs(600))
            .await
            .unwrap()
    });
    let l1 = rt
        .block_on(store.acquire(&AcquireRequest {
            attrs: attrs(1),
            previous_subnet: Some("10.0.0.16/28".parse().unwrap()),
            previous_ipv6_subnet: None,
        }))
        .unwrap();

    let (ok, out, err) = ctl(&path, &["list"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("10.0.0.16/28") && out.contains("192.0.2.1"),
        "{out}"
    );

    // The operator reserves 10.0.0.32/28 for node .9: nobody else gets it.
    let (ok, out, err) = ctl(
        &path,
        &[
            "reserve",
            "--subnet",
            "10.0.0.32/28",
            "--public-ip",
            "192.0.2.9",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("10.0.0.32-28"), "{out}");
    let (_, out, _) = ctl(&path, &["list"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("10.0.0.32/28") && l.contains("reserved")),
        "{out}"
    );
    let (_, json, _) = ctl(&path, &["list", "--json"]);
    assert_eq!(json.lines().count(), 2, "{json}");
    let l2 = rt
        .block_on(store.acquire(&AcquireRequest {
            attrs: attrs(2),
            previous_subnet: Some("10.0.0.32/28".parse().unwrap()),
            previous_ipv6_subnet: None,
        }))
        .unwrap();
    assert_ne!(l2.subnet, Some("10.0.0.32/28".parse().unwrap()));

    // Reserving a held subnet or one outside the network is refused.
    let (ok, _, err) = ctl(
        &path,
        &[
            "reserve",
            "--subnet",
            "10.0.0.16/28",
            "--public-ip",
            "192.0.2.9",
        ],
    );
    assert!(!ok && err.contains("192.0.2.1"), "{err}");
    let (ok, _, err) = ctl(
        &path,
        &[
            "reserve",
            "--subnet",
            "10.9.0.0/28",
            "--public-ip",
            "192.0.2.9",
        ],
    );
    assert!(!ok && err.contains("10.9.0.0"), "{err}");

    // Release frees node .1's lease; a reservation is not released.
    let (ok, out, err) = ctl(&path, &["release", "--subnet", "10.0.0.16/28"]);
    assert!(ok, "{err}");
    assert!(out.contains("192.0.2.1"), "{out}");
    let (_, out, _) = ctl(&path, &["list"]);
    assert!(!out.contains("10.0.0.16/28"), "{out}");
    let (ok, _, err) = ctl(&path, &["release", "--subnet", "10.0.0.32/28"]);
    assert!(!ok && err.contains("reservation"), "{err}");
    let (ok, _, err) = ctl(&path, &["release", "--subnet", "10.0.0.16/28"]);
    assert!(!ok && err.contains("not found"), "{err}");
    let (ok, _, err) = ctl(&path, &["release"]);
    assert!(!ok && err.contains("--subnet"), "{err}");
    drop(l1);
}
