//! `flannelctl leases` against real stores: the embedded store file, a real
//! etcd (Debian's /usr/bin/etcd, as lease-store's etcd tests), and the
//! Kubernetes Lease store on the fake API server (the real API server is
//! tests/tests/kube_leases.rs). The same operator session runs on each:
//! list shows what the daemons hold and which entries are reservations,
//! reserve writes a reservation the store then honours, release frees a
//! lease and removes a reservation, and mistakes are named with what to do.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use lease_store::embedded::EmbeddedStore;
use lease_store::etcd::{EtcdOptions, EtcdStore};
use lease_store::kube::testing::FakeApi;
use lease_store::kube::{KubeLeaseOptions, KubeLeaseStore};
use lease_store::{AcquireRequest, LeaseAttrs, LeaseStore, NetworkConfig};
use testkit::etcd::EtcdProcess;

/// Three /28 subnets: 10.0.0.16, 10.0.0.32, 10.0.0.48.
const NET: &str = r#"{"Network":"10.0.0.0/26","Backend":{"Type":"vxlan"}}"#;

/// Runs `flannelctl leases <args> <store args>`: (success, stdout, stderr).
fn ctl(store: &[String], args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flannelctl"))
        .arg("leases")
        .args(args)
        .args(store)
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

fn acquire(
    rt: &tokio::runtime::Runtime,
    store: &dyn LeaseStore,
    n: u8,
    previous: &str,
) -> lease_store::Lease {
    rt.block_on(store.acquire(&AcquireRequest {
        attrs: attrs(n),
        previous_subnet: Some(previous.parse().unwrap()),
        previous_ipv6_subnet: None,
    }))
    .unwrap_or_else(|e| panic!("acquire for node {n}: {e}"))
}

fn row<'a>(table: &'a str, subnet: &str) -> Option<&'a str> {
    table.lines().find(|l| l.starts_with(subnet))
}

/// The operator's session; `store` is a daemon's client of the same table
/// (to hold leases as nodes would), `args` the CLI's store flags.
fn session(rt: &tokio::runtime::Runtime, store: &dyn LeaseStore, args: &[String]) {
    let l1 = acquire(rt, store, 1, "10.0.0.16/28");
    assert_eq!(l1.subnet, Some("10.0.0.16/28".parse().unwrap()));

    let (ok, out, err) = ctl(args, &["list"]);
    assert!(ok, "{err}");
    let r = row(&out, "10.0.0.16/28").unwrap_or_else(|| panic!("{out}"));
    assert!(r.contains("192.0.2.1") && r.contains("vxlan") && !r.contains("reserved"));

    // The operator reserves 10.0.0.32/28 for node .9: nobody else gets it.
    let (ok, out, err) = ctl(
        args,
        &[
            "reserve",
            "--subnet",
            "10.0.0.32/28",
            "--public-ip",
            "192.0.2.9",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("10.0.0.32-28") && out.contains("192.0.2.9"),
        "{out}"
    );
    let (_, out, _) = ctl(args, &["list"]);
    let r = row(&out, "10.0.0.32/28").unwrap_or_else(|| panic!("{out}"));
    assert!(r.contains("reserved") && r.contains("192.0.2.9"), "{out}");
    let (_, json, _) = ctl(args, &["list", "--json"]);
    assert_eq!(json.lines().count(), 2, "{json}");
    let reserved: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["reservation"] == true)
        .collect();
    assert_eq!(reserved.len(), 1, "{json}");
    assert_eq!(reserved[0]["subnet"], "10.0.0.32/28");
    let l2 = acquire(rt, store, 2, "10.0.0.32/28");
    assert_eq!(l2.subnet, Some("10.0.0.48/28".parse().unwrap()));

    // Reserving a held subnet names the holder and what to do; one outside
    // the network names the subnet.
    let (ok, _, err) = ctl(
        args,
        &[
            "reserve",
            "--subnet",
            "10.0.0.16/28",
            "--public-ip",
            "192.0.2.9",
        ],
    );
    assert!(!ok, "reserving a held subnet succeeded");
    assert!(
        err.contains("192.0.2.1") && err.contains("flannelctl leases release"),
        "{err}"
    );
    let (ok, _, err) = ctl(
        args,
        &[
            "reserve",
            "--subnet",
            "10.9.0.0/28",
            "--public-ip",
            "192.0.2.9",
        ],
    );
    assert!(!ok && err.contains("10.9.0.0"), "{err}");

    // Release frees node .1's lease.
    let (ok, out, err) = ctl(args, &["release", "--subnet", "10.0.0.16/28"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("released") && out.contains("192.0.2.1"),
        "{out}"
    );
    let (_, out, _) = ctl(args, &["list"]);
    assert!(row(&out, "10.0.0.16/28").is_none(), "{out}");

    // Release removes the reservation: the subnet is free for anyone.
    let (ok, out, err) = ctl(args, &["release", "--subnet", "10.0.0.32/28"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("removed the reservation") && out.contains("192.0.2.9"),
        "{out}"
    );
    let (_, out, _) = ctl(args, &["list"]);
    assert!(row(&out, "10.0.0.32/28").is_none(), "{out}");
    let l3 = acquire(rt, store, 3, "10.0.0.32/28");
    assert_eq!(l3.subnet, Some("10.0.0.32/28".parse().unwrap()));
    assert!(!l3.is_reservation());

    // An unknown subnet, and no subnet at all.
    let (ok, _, err) = ctl(args, &["release", "--subnet", "10.0.0.16/28"]);
    assert!(
        !ok && err.contains("not found") && err.contains("flannelctl leases list"),
        "{err}"
    );
    let (ok, _, err) = ctl(args, &["release"]);
    assert!(!ok && err.contains("--subnet"), "{err}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn list_reserve_release_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.json");
    let rt = runtime();
    let store = rt.block_on(async {
        EmbeddedStore::init(&path, NET).await.unwrap();
        EmbeddedStore::open(&path, Duration::from_secs(600))
            .await
            .unwrap()
    });
    let args = store_args(&["--store", "embedded", "--store-path"], &path);
    session(&rt, &store, &args);
}

fn store_args(flags: &[&str], path: &Path) -> Vec<String> {
    let mut v: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
    v.push(path.display().to_string());
    v
}

#[test]
fn list_reserve_release_on_a_real_etcd() {
    let etcd = EtcdProcess::start().unwrap_or_else(|e| panic!("cannot start etcd: {e}"));
    let rt = runtime();
    let store = rt.block_on(async {
        let s = EtcdStore::connect(EtcdOptions::with_endpoints([etcd.endpoint()]))
            .await
            .unwrap_or_else(|e| panic!("connect to etcd: {e}"));
        s.put_config(NET).await.unwrap();
        s
    });
    let args: Vec<String> = vec![
        "--store".into(),
        "etcd".into(),
        "--etcd-endpoints".into(),
        etcd.endpoint(),
    ];
    session(&rt, &store, &args);
    // An etcd that does not answer is named.
    let (ok, _, err) = ctl(
        &[
            "--store".into(),
            "etcd".into(),
            "--etcd-endpoints".into(),
            "http://127.0.0.1:1".into(),
        ],
        &["list"],
    );
    assert!(!ok && err.contains("127.0.0.1:1"), "{err}");
}

/// The fake API server: quick, and the kube-lease flags as an operator
/// gives them. The real API server runs the same steps in
/// tests/tests/kube_leases.rs.
#[test]
fn list_reserve_release_on_kube_leases_fake_api() {
    let api = FakeApi::start_on_thread(Duration::from_secs(60), || Ok(()))
        .unwrap_or_else(|e| panic!("fake API server: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let net_conf = dir.path().join("net-conf.json");
    std::fs::write(&net_conf, NET).unwrap();
    let rt = runtime();
    let store: Arc<dyn LeaseStore> = Arc::new(KubeLeaseStore::new(
        rt.block_on(async { api.client() }),
        KubeLeaseOptions::new("i16-cli", NetworkConfig::parse(NET).unwrap()),
    ));
    let mut args: Vec<String> = [
        "--store",
        "kube-lease",
        "--namespace",
        "i16-cli",
        "--kube-api-url",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(api.url());
    args.push("--net-config-path".into());
    args.push(net_conf.display().to_string());
    session(&rt, store.as_ref(), &args);
    // Listing needs no net-conf.json, in either Kubernetes mode.
    let bare: Vec<String> = args[..args.len() - 2].to_vec();
    for kind in ["kube-lease", "kube-node"] {
        let mut a = bare.clone();
        a[1] = kind.into();
        let (ok, out, err) = ctl(&a, &["list"]);
        assert!(
            ok,
            "list --store {kind} without --net-config-path: {err}{out}"
        );
    }
    // Node mode has nothing to release or reserve, and says where the
    // subnet comes from.
    let mut node_args = args.clone();
    node_args[1] = "kube-node".into();
    let (ok, _, err) = ctl(&node_args, &["release", "--subnet", "10.0.0.16/28"]);
    assert!(!ok && err.contains("delete the Node"), "{err}");
}
