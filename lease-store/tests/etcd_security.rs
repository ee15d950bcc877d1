//! TLS, mutual TLS and username/password against a real etcd, with a PKI
//! generated for the test by the openssl CLI.

mod etcd_support;

use std::time::Duration;

use etcd_support::*;
use lease_store::etcd::{EtcdOptions, EtcdStore, OptionsError};
use lease_store::{LeaseStore, StoreError};
use testkit::etcd::{EtcdProcess, ServerTls, TestPki};

fn pki() -> (tempfile::TempDir, TestPki) {
    let dir = tempfile::Builder::new()
        .prefix("fct-pki-")
        .tempdir()
        .expect("temp dir");
    let pki = TestPki::generate(dir.path()).unwrap_or_else(|e| panic!("cannot make test PKI: {e}"));
    (dir, pki)
}

async fn start_tls(tls: ServerTls) -> EtcdProcess {
    tokio::task::spawn_blocking(move || EtcdProcess::start_with(Some(tls)))
        .await
        .expect("etcd start task")
        .unwrap_or_else(|e| panic!("cannot start etcd with TLS: {e}"))
}

/// Writes the config, acquires and lists: the whole path works.
async fn exercise(opts: EtcdOptions) {
    let s = connect(opts).await;
    s.put_config(NET_CONF).await.expect("write config over TLS");
    let l = s.acquire(&req(1)).await.expect("acquire over TLS");
    let (leases, _) = s.list().await.expect("list over TLS");
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].key(), l.key());
}

/// A store that connects (lazily) but whose first request must fail.
async fn first_request_fails(opts: EtcdOptions, why: &str) {
    let s = match EtcdStore::connect(opts).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{why}: refused at connect: {e}");
            return;
        }
    };
    match s.list().await {
        Err(StoreError::Unavailable { reason, .. }) => eprintln!("{why}: {reason}"),
        other => panic!("{why}: expected Unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_ca() {
    let (_dir, pki) = pki();
    let etcd = start_tls(ServerTls {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        client_ca: None,
    })
    .await;
    assert!(etcd.endpoint().starts_with("https://"));
    let mut opts = EtcdOptions::with_endpoints([etcd.endpoint()]);
    opts.ca_file = Some(pki.ca.clone());
    exercise(opts).await;

    // Without our CA the server is not trusted.
    let mut untrusted = EtcdOptions::with_endpoints([etcd.endpoint()]);
    untrusted.request_timeout = Duration::from_secs(3);
    first_request_fails(untrusted, "TLS without the CA").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls() {
    let (_dir, pki) = pki();
    let etcd = start_tls(ServerTls {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        client_ca: Some(pki.ca.clone()),
    })
    .await;
    let mut opts = EtcdOptions::with_endpoints([etcd.endpoint()]);
    opts.ca_file = Some(pki.ca.clone());
    opts.cert_file = Some(pki.client_cert.clone());
    opts.key_file = Some(pki.client_key.clone());
    exercise(opts).await;

    // The server demands a client certificate.
    let mut anonymous = EtcdOptions::with_endpoints([etcd.endpoint()]);
    anonymous.ca_file = Some(pki.ca.clone());
    anonymous.request_timeout = Duration::from_secs(3);
    first_request_fails(anonymous, "mutual TLS without a client certificate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_and_password() {
    use etcd_client::{Client, Permission};
    let mut etcd = start_etcd().await;
    let prefix = lease_store::etcd::DEFAULT_PREFIX;
    {
        // As an operator would: a root user, and a "flannel" user allowed
        // only the flannel prefix.
        let mut admin = Client::connect([etcd.endpoint()], None)
            .await
            .expect("admin client");
        admin.role_add("root").await.expect("role root");
        admin
            .user_add("root", "rootpw", None)
            .await
            .expect("user root");
        admin
            .user_grant_role("root", "root")
            .await
            .expect("grant root");
        admin.role_add("flannel").await.expect("role flannel");
        admin
            .role_grant_permission(
                "flannel",
                Permission::read_write(format!("{prefix}/")).with_prefix(),
            )
            .await
            .expect("grant prefix");
        admin
            .user_add("flannel", "s3cret", None)
            .await
            .expect("user flannel");
        admin
            .user_grant_role("flannel", "flannel")
            .await
            .expect("grant flannel");
        admin.auth_enable().await.expect("auth enable");
    }
    let with = |user: &str, pass: &str| EtcdOptions {
        username: Some(user.into()),
        password: Some(pass.into()),
        ..EtcdOptions::with_endpoints([etcd.endpoint()])
    };
    exercise(with("flannel", "s3cret")).await;

    match EtcdStore::connect(with("flannel", "wrong")).await {
        Err(OptionsError::Connect { reason, .. }) => eprintln!("wrong password: {reason}"),
        Err(e) => panic!("wrong password: expected a connect error, got {e}"),
        Ok(_) => panic!("wrong password was accepted"),
    }
    first_request_fails(
        EtcdOptions::with_endpoints([etcd.endpoint()]),
        "no credentials",
    )
    .await;

    // The same user's watch works too (etcd checks read permission on it).
    let s = connect(with("flannel", "s3cret")).await;
    let (_, rev) = s.list().await.expect("list");
    let mut w = s.watch(rev, None).await.expect("watch");
    let peer = connect(with("flannel", "s3cret")).await;
    let l = peer.acquire(&req(2)).await.expect("acquire as peer");
    match next_update(&mut w, 20).await {
        lease_store::WatchUpdate::Events { events, .. } => {
            assert!(
                matches!(&events[0], lease_store::LeaseEvent::Added(x) if x.key() == l.key()),
                "{events:?}"
            )
        }
        u => panic!("expected events, got {u:?}"),
    }

    // etcd's simple tokens die with a restart: the client logs in again.
    tokio::task::block_in_place(|| etcd.restart()).unwrap_or_else(|e| panic!("restart: {e}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match s.list().await {
            Ok((leases, _)) => {
                assert_eq!(leases.len(), 2);
                break;
            }
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("after restart: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("no access after an etcd restart: {e}"),
        }
    }
}
