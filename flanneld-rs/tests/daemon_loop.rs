//! The lease loop against the real embedded store (a file in a temp dir),
//! with a recording backend standing in for the datapath (the real backends
//! are driven by `daemon_kernel.rs`). No root needed.
//!
//! Checks the start-up order (prepare → attach → reconcile → subnet.env →
//! ready), that a burst of joining peers is reconciled in few passes, that
//! a leaving peer is removed, and that a lost lease is replaced and
//! subnet.env rewritten.
//!
//! Run: `CARGO_TARGET_DIR=/work/targets/daemon cargo test -p flanneld-rs --test daemon_loop`

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flanneld::backend::{Backend, BackendError, LocalNode, Peer, Prepared, ReconcileReport};
use flanneld::daemon::{LeaseLoop, LoopSettings, Metrics, Parts, Readiness};
use ipnet::Ipv4Net;
use lease_store::embedded::EmbeddedStore;
use lease_store::subnet_env::SubnetEnv;
use lease_store::{AcquireRequest, LeaseAttrs, LeaseStore};
use testkit::wait::wait_for_async;

const NET_CONF: &str = r#"{"Network":"10.0.0.0/8","SubnetLen":24,"Backend":{"Type":"vxlan"}}"#;

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Prepare,
    Attach(Option<Ipv4Net>),
    /// Peers given, and whether subnet.env existed at that moment.
    Reconcile {
        peers: usize,
        env_existed: bool,
    },
}

/// Records what the loop asks of the datapath.
struct Recording {
    calls: Arc<Mutex<Vec<Call>>>,
    subnet_file: PathBuf,
    /// Time one reconcile takes, like netlink work would.
    delay: Duration,
    /// While set, reconcile waits (a datapath busy with a long pass).
    hold: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl Backend for Recording {
    async fn prepare(&mut self) -> Result<Prepared, BackendError> {
        self.calls.lock().unwrap().push(Call::Prepare);
        Ok(Prepared {
            backend_type: "vxlan".into(),
            backend_data: Some(serde_json::json!({"VNI": 1, "VtepMAC": "aa:bb:cc:00:00:01"})),
            mtu: 1450,
        })
    }

    async fn attach(&mut self, lease: &lease_store::Lease) -> Result<(), BackendError> {
        self.calls.lock().unwrap().push(Call::Attach(lease.subnet));
        Ok(())
    }

    async fn reconcile(&mut self, peers: &[Peer]) -> Result<ReconcileReport, BackendError> {
        tokio::time::sleep(self.delay).await;
        while self.hold.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.calls.lock().unwrap().push(Call::Reconcile {
            peers: peers.len(),
            env_existed: self.subnet_file.exists(),
        });
        Ok(ReconcileReport {
            changes: vec![("route_add", peers.len() as u64)],
            errors: Vec::new(),
            peers: peers.len(),
            device_recreated: false,
        })
    }
}

struct Running {
    calls: Arc<Mutex<Vec<Call>>>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    hold: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), flanneld::daemon::DaemonError>>,
}

impl Running {
    fn reconciles(&self) -> Vec<usize> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter_map(|c| match c {
                Call::Reconcile { peers, .. } => Some(*peers),
                _ => None,
            })
            .collect()
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let r = tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("loop stops within 5 s")
            .expect("loop task");
        assert!(r.is_ok(), "loop ended with {r:?}");
    }
}

async fn start(store_path: &Path, subnet_file: &Path, ttl: Duration, delay: Duration) -> Running {
    let store = EmbeddedStore::open(store_path, ttl)
        .await
        .expect("open store");
    start_on(Arc::new(store), subnet_file, delay).await
}

/// The loop on any store.
async fn start_on(store: Arc<dyn LeaseStore>, subnet_file: &Path, delay: Duration) -> Running {
    let config = store.network_config().await.expect("config");
    let calls = Arc::new(Mutex::new(Vec::new()));
    let hold = Arc::new(AtomicBool::new(false));
    let backend = Recording {
        calls: calls.clone(),
        subnet_file: subnet_file.to_path_buf(),
        delay,
        hold: hold.clone(),
    };
    let node = LocalNode {
        iface_name: "veth0".into(),
        iface_index: 2,
        iface_mtu: 1500,
        iface_addr: Ipv4Addr::new(198, 51, 100, 1),
        public_ip: Ipv4Addr::new(198, 51, 100, 1),
        iface_addr6: None,
        public_ipv6: None,
    };
    let readiness = Arc::new(Readiness::default());
    let metrics = Arc::new(Metrics::new());
    let settings = LoopSettings {
        subnet_file: subnet_file.to_path_buf(),
        ip_masq: false,
        renew_margin: Duration::from_secs(3600),
        resync_period: Duration::from_secs(3600),
        // The recording backend programs no kernel: deletions elsewhere on
        // this host must not add passes.
        kernel_events: false,
    };
    let parts = Parts {
        config,
        store,
        backend: Box::new(backend),
        masq: None,
        node,
    };
    let lease_loop = LeaseLoop::new(settings, parts, metrics.clone(), readiness.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(lease_loop.run(async move {
        let _ = rx.await;
    }));
    Running {
        calls,
        readiness,
        metrics,
        hold,
        stop: Some(tx),
        task,
    }
}

fn attrs(ip: Ipv4Addr) -> LeaseAttrs {
    LeaseAttrs {
        public_ip: ip,
        public_ipv6: None,
        backend_type: "vxlan".into(),
        backend_data: Some(serde_json::json!({"VNI": 1, "VtepMAC": "aa:bb:cc:00:00:02"})),
        backend_v6_data: None,
    }
}

fn req(ip: Ipv4Addr, previous: Option<Ipv4Net>) -> AcquireRequest {
    AcquireRequest {
        attrs: attrs(ip),
        previous_subnet: previous,
        previous_ipv6_subnet: None,
    }
}

#[tokio::test]
async fn startup_order_burst_coalescing_and_peer_removal() {
    let dir = testkit::temp_dir("dmn-loop").expect("temp dir");
    let store_path = dir.path().join("leases.json");
    let subnet_file = dir.path().join("node1/subnet.env");
    EmbeddedStore::init(&store_path, NET_CONF)
        .await
        .expect("init store");

    let run = start(
        &store_path,
        &subnet_file,
        Duration::from_secs(60),
        Duration::from_millis(20),
    )
    .await;
    let r = run.readiness.clone();
    wait_for_async("ready", Duration::from_secs(10), || r.is_ready()).await;

    // Start-up order, and subnet.env only after the datapath is programmed.
    let calls = run.calls.lock().unwrap().clone();
    let own = match &calls[..] {
        [Call::Prepare, Call::Attach(Some(own)), Call::Reconcile {
            peers: 0,
            env_existed: false,
        }, ..] => *own,
        other => panic!("unexpected start-up calls {other:?}"),
    };
    let env = SubnetEnv::read(&subnet_file).expect("subnet.env written");
    assert_eq!(env.subnet.map(|s| s.trunc()), Some(own));
    assert_eq!(env.mtu, 1450);

    // 100 peers join while the datapath is busy with a long pass: once it
    // is free, everything that queued up goes into one or two passes, not
    // one per event.
    let other = EmbeddedStore::open(&store_path, Duration::from_secs(60))
        .await
        .expect("second client");
    let before = run.reconciles().len();
    let n = 100u32;
    run.hold.store(true, Ordering::Release);
    let mut peer_leases = Vec::new();
    for i in 0..n {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 1)) + i);
        peer_leases.push(other.acquire(&req(ip, None)).await.expect("peer acquires"));
    }
    // Let the watch see the last write before the datapath frees up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let released = Instant::now();
    run.hold.store(false, Ordering::Release);
    wait_for_async("all peers reconciled", Duration::from_secs(10), || {
        run.reconciles().last() == Some(&(n as usize))
    })
    .await;
    let converged = released.elapsed();
    let passes = run.reconciles().len() - before;
    eprintln!("{n} peers: {passes} reconcile passes; all programmed {converged:?} after the datapath was free");
    assert!(
        passes <= 3,
        "{passes} reconcile passes for {n} queued peers: events were not coalesced ({:?})",
        run.reconciles()
    );

    // A peer leaves: the next pass no longer has it.
    other.release(&peer_leases[0]).await.expect("release");
    wait_for_async("peer removed", Duration::from_secs(10), || {
        run.reconciles().last() == Some(&(n as usize - 1))
    })
    .await;
    let text = run.metrics.encode().expect("metrics");
    assert!(
        text.contains("flanneld_lease_events_total{event=\"removed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(&format!("flanneld_peers {}", n - 1)),
        "{text}"
    );
    run.stop().await;
}

/// Our lease overwritten by another node (the key now names its public
/// IP) is noticed through the watch, long before the renewal (TTL 10 min).
/// The subnet is held, so no other one is taken (pods here hold addresses
/// in it): the node turns not ready, keeps its datapath and subnet.env,
/// logs one ERROR naming subnet, holder and the fix, and sets
/// `flanneld_lost_subnets 1`; further changes of the key log nothing new.
/// Once the other node's lease is deleted, the same subnet comes back and
/// the node is ready again.
#[tokio::test(flavor = "current_thread")]
async fn an_overwritten_lease_keeps_its_subnet_not_ready_until_it_is_free() {
    let (sink, _guard) = capture_logs();

    let dir = testkit::temp_dir("dmn-loop").expect("temp dir");
    let store_path = dir.path().join("leases.json");
    let subnet_file = dir.path().join("node1/subnet.env");
    EmbeddedStore::init(&store_path, NET_CONF)
        .await
        .expect("init store");

    let run = start(
        &store_path,
        &subnet_file,
        Duration::from_secs(600),
        Duration::ZERO,
    )
    .await;
    let r = run.readiness.clone();
    wait_for_async("ready", Duration::from_secs(10), || r.is_ready()).await;
    let env_before = std::fs::read_to_string(&subnet_file).expect("subnet.env");
    let own = SubnetEnv::read(&subnet_file)
        .expect("subnet.env")
        .subnet
        .expect("subnet")
        .trunc();
    let our_ip = Ipv4Addr::new(198, 51, 100, 1);

    // Another node writes its lease over ours.
    let thief_ip = Ipv4Addr::new(198, 51, 100, 9);
    let key = format!("{}-{}", own.network(), own.prefix_len());
    let taken = Instant::now();
    hostile_put(&store_path, &key, &attrs(thief_ip));

    // 10 s: far below the renewal (5 min in), so only the watch can have
    // noticed.
    let m = run.metrics.clone();
    wait_for_async("lost subnet in /metrics", Duration::from_secs(10), || {
        m.encode()
            .is_ok_and(|t| t.lines().any(|l| l == "flanneld_lost_subnets 1"))
    })
    .await;
    eprintln!("overwritten lease noticed after {:?}", taken.elapsed());
    assert!(
        !run.readiness.is_ready(),
        "not ready while the subnet is held:\n{}",
        sink.text()
    );

    // Another change of the key (the other node renews): a retry, still
    // held, nothing new logged or counted.
    hostile_put(&store_path, &key, &attrs(thief_ip));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!run.readiness.is_ready(), "still not ready");
    assert_eq!(
        std::fs::read_to_string(&subnet_file).expect("subnet.env"),
        env_before,
        "subnet.env must not change while the subnet is held"
    );
    let attaches = |run: &Running| {
        run.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| matches!(c, Call::Attach(_)))
            .count()
    };
    assert_eq!(attaches(&run), 1, "no other lease attached");
    let other = EmbeddedStore::open(&store_path, Duration::from_secs(60))
        .await
        .expect("second client");
    let (leases, _) = other.list().await.expect("list");
    assert!(
        leases.iter().all(|l| l.attrs.public_ip != our_ip),
        "no other subnet taken: {leases:?}"
    );
    let thief = leases
        .iter()
        .find(|l| l.subnet == Some(own))
        .expect("own subnet listed")
        .clone();
    assert_eq!(thief.attrs.public_ip, thief_ip);
    let text = run.metrics.encode().expect("metrics");
    for want in [
        "flanneld_ready 0",
        "flanneld_lease_acquisitions_total 1",
        "flanneld_own_lease_lost_total{cause=\"overwritten\"} 1",
        "flanneld_own_lease_reacquired_total{subnet=\"same\"} 0",
        "flanneld_lost_subnets 1",
        "flanneld_lease_renewal_failures_total 0",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let log = sink.text();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "one ERROR:\n{log}");
    for want in [
        own.to_string(),
        thief_ip.to_string(),
        String::from("NOT READY"),
        String::from("delete the other node's lease"),
        String::from("restart flanneld"),
    ] {
        assert!(errors[0].contains(&want), "{want:?} in {}", errors[0]);
    }
    assert!(errors[0].len() < 1024, "bounded: {}", errors[0]);

    // The operator deletes the other node's lease: the same subnet is
    // taken back through the watch, and the node is ready again.
    let freed = Instant::now();
    other.release(&thief).await.expect("delete the other lease");
    let r = run.readiness.clone();
    wait_for_async("ready again", Duration::from_secs(10), || r.is_ready()).await;
    eprintln!("subnet taken back after {:?}", freed.elapsed());
    let (leases, _) = other.list().await.expect("list");
    let back = leases
        .iter()
        .find(|l| l.subnet == Some(own))
        .expect("own subnet listed");
    assert_eq!(
        back.attrs.public_ip, our_ip,
        "the same subnet is ours again"
    );
    assert_eq!(
        std::fs::read_to_string(&subnet_file).expect("subnet.env"),
        env_before
    );
    let text = run.metrics.encode().expect("metrics");
    for want in [
        "flanneld_ready 1",
        "flanneld_own_lease_reacquired_total{subnet=\"same\"} 1",
        "flanneld_lost_subnets 0",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert_eq!(
        sink.text().lines().filter(|l| l.contains("ERROR")).count(),
        1,
        "no further ERROR"
    );
    run.stop().await;
}

/// Our lease deleted from the store by hand is re-created at once with the
/// same subnet (TTL 10 min: the renewal is 5 min away): pods keep their
/// addresses, subnet.env does not change.
#[tokio::test]
async fn a_deleted_lease_is_taken_back_at_once_with_the_same_subnet() {
    let dir = testkit::temp_dir("dmn-loop").expect("temp dir");
    let store_path = dir.path().join("leases.json");
    let subnet_file = dir.path().join("node1/subnet.env");
    EmbeddedStore::init(&store_path, NET_CONF)
        .await
        .expect("init store");
    let ours = EmbeddedStore::open(&store_path, Duration::from_secs(600))
        .await
        .expect("open store");
    let other = EmbeddedStore::open(&store_path, Duration::from_secs(60))
        .await
        .expect("second client");
    deleted_lease_comes_back(Arc::new(ours), Arc::new(other), &subnet_file).await;
}

/// The same on a real etcd (the watch there is etcd's own).
#[tokio::test]
async fn a_deleted_lease_is_taken_back_at_once_on_etcd() {
    use lease_store::etcd::{EtcdOptions, EtcdStore};
    let etcd = tokio::task::spawn_blocking(testkit::etcd::EtcdProcess::start)
        .await
        .expect("etcd start task")
        .expect("start etcd");
    let connect = |ttl: Duration| {
        let mut opts = EtcdOptions::with_endpoints([etcd.endpoint()]);
        opts.lease_ttl = ttl;
        EtcdStore::connect(opts)
    };
    let ours = connect(Duration::from_secs(600)).await.expect("connect");
    ours.put_config(NET_CONF).await.expect("write net-conf");
    let other = connect(Duration::from_secs(60)).await.expect("connect");
    let dir = testkit::temp_dir("dmn-loop").expect("temp dir");
    let subnet_file = dir.path().join("node1/subnet.env");
    deleted_lease_comes_back(Arc::new(ours), Arc::new(other), &subnet_file).await;
}

async fn deleted_lease_comes_back(
    ours: Arc<dyn LeaseStore>,
    other: Arc<dyn LeaseStore>,
    subnet_file: &Path,
) {
    let run = start_on(ours, subnet_file, Duration::ZERO).await;
    let r = run.readiness.clone();
    wait_for_async("ready", Duration::from_secs(10), || r.is_ready()).await;
    let env_before = std::fs::read_to_string(subnet_file).expect("subnet.env");
    let own = SubnetEnv::read(subnet_file)
        .expect("subnet.env")
        .subnet
        .expect("subnet")
        .trunc();

    let (leases, _) = other.list().await.expect("list");
    let mine = leases
        .into_iter()
        .find(|l| l.subnet == Some(own))
        .expect("our lease listed");
    let deleted = Instant::now();
    other.release(&mine).await.expect("delete ours");

    let m = run.metrics.clone();
    wait_for_async("lease re-acquired", Duration::from_secs(10), || {
        m.encode()
            .unwrap_or_default()
            .contains("flanneld_own_lease_reacquired_total{subnet=\"same\"} 1")
    })
    .await;
    eprintln!("deleted lease back after {:?}", deleted.elapsed());
    let (leases, _) = other.list().await.expect("list");
    let back = leases
        .iter()
        .find(|l| l.subnet == Some(own))
        .expect("our subnet back");
    assert_eq!(back.attrs.public_ip, Ipv4Addr::new(198, 51, 100, 1));
    let r = run.readiness.clone();
    wait_for_async("ready", Duration::from_secs(10), || r.is_ready()).await;
    assert_eq!(
        std::fs::read_to_string(subnet_file).expect("subnet.env"),
        env_before
    );
    let text = run.metrics.encode().expect("metrics");
    for want in [
        "flanneld_own_lease_lost_total{cause=\"deleted\"} 1",
        "flanneld_lost_subnets 0",
        "flanneld_lease_acquisitions_total 2",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // Our own re-created key does not set off another round.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = run.metrics.encode().expect("metrics");
    assert!(
        text.contains("flanneld_lease_acquisitions_total 2"),
        "{text}"
    );
    run.stop().await;
}

/// A dual-stack net-conf.json is refused at start-up, before any lease is
/// taken or subnet.env written: programming only the IPv4 half would leave
/// pods without IPv6 and nobody told.
#[tokio::test]
async fn dual_stack_config_is_refused_before_taking_a_lease() {
    let dir = testkit::temp_dir("dmn-loop").expect("temp dir");
    let store_path = dir.path().join("leases.json");
    let subnet_file = dir.path().join("node1/subnet.env");
    let dual = r#"{"Network":"10.0.0.0/8","SubnetLen":24,"EnableIPv6":true,"IPv6Network":"fd00:10::/48","IPv6SubnetLen":64,"Backend":{"Type":"vxlan"}}"#;
    EmbeddedStore::init(&store_path, dual)
        .await
        .expect("init store");
    let run = start(
        &store_path,
        &subnet_file,
        Duration::from_secs(60),
        Duration::ZERO,
    )
    .await;
    let result = tokio::time::timeout(Duration::from_secs(10), run.task)
        .await
        .expect("loop ends within 10 s")
        .expect("loop task");
    let err = result.expect_err("a dual-stack config must be refused");
    assert!(err.to_string().contains("EnableIPv6"), "{err}");
    assert!(
        !subnet_file.exists(),
        "subnet.env written despite the refusal"
    );
    let store = EmbeddedStore::open(&store_path, Duration::from_secs(60))
        .await
        .expect("open store");
    let (leases, _) = store.list().await.expect("list");
    assert!(leases.is_empty(), "a lease was taken: {leases:?}");
}

/// Writes a key straight into the embedded store's file, under its lock,
/// as anything with write access to the store could: no validation.
fn hostile_put(store_path: &Path, key: &str, attrs: &LeaseAttrs) {
    use lease_store::embedded::state::State;
    let mut lock_name = store_path.as_os_str().to_owned();
    lock_name.push(".lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(PathBuf::from(lock_name))
        .expect("open lock");
    lock.lock().expect("lock");
    let text = std::fs::read(store_path).expect("read store");
    let mut state: State = serde_json::from_slice(&text).expect("parse store");
    let expires = std::time::SystemTime::now() + Duration::from_secs(3600);
    state.put(key, attrs, Some(expires), 1000);
    let tmp = store_path.with_extension("hostile.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&state).expect("encode")).expect("write");
    std::fs::rename(&tmp, store_path).expect("rename");
    drop(lock);
}

/// A log sink for one test (the loop runs on the test's thread).
#[derive(Clone, Default)]
struct LogSink(Arc<Mutex<Vec<u8>>>);

/// INFO and above of this thread's tracing, plain text, into a sink the
/// test reads; the guard restores the previous subscriber.
fn capture_logs() -> (LogSink, tracing::subscriber::DefaultGuard) {
    let sink = LogSink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    (sink, tracing::subscriber::set_default(subscriber))
}

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogSink {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The leases of issue 17 (a subnet inside ours, a /32 on a real node's
/// address, a subnet outside the network, a megabyte VtepMAC, loopback as
/// the public IP) are not programmed; each is logged once with bounded
/// text and counted by reason, and the good peers still are programmed.
#[tokio::test(flavor = "current_thread")]
async fn hostile_peer_leases_are_rejected_logged_once_and_counted() {
    let (sink, _guard) = capture_logs();

    let dir = testkit::temp_dir("dmn-loop").expect("temp dir");
    let store_path = dir.path().join("leases.json");
    let subnet_file = dir.path().join("node1/subnet.env");
    EmbeddedStore::init(&store_path, NET_CONF)
        .await
        .expect("init store");
    let run = start(
        &store_path,
        &subnet_file,
        Duration::from_secs(60),
        Duration::ZERO,
    )
    .await;
    let r = run.readiness.clone();
    wait_for_async("ready", Duration::from_secs(10), || r.is_ready()).await;
    let own = SubnetEnv::read(&subnet_file)
        .expect("subnet.env")
        .subnet
        .expect("subnet")
        .trunc();

    let other = EmbeddedStore::open(&store_path, Duration::from_secs(60))
        .await
        .expect("second client");
    other
        .acquire(&req(Ipv4Addr::new(198, 51, 100, 2), None))
        .await
        .expect("good peer");

    let inside_own = format!("{}-25", own.network());
    let mut huge = attrs(Ipv4Addr::new(198, 51, 100, 4));
    huge.backend_data = Some(serde_json::json!({"VNI": 1, "VtepMAC": "a".repeat(1 << 20)}));
    // A subnet next to ours for the two attribute cases (free: ours +1).
    let free = |n: u32| -> String {
        let base = u32::from(own.network()) + (n << 8);
        format!("{}-24", Ipv4Addr::from(base))
    };
    hostile_put(
        &store_path,
        &inside_own,
        &attrs(Ipv4Addr::new(198, 51, 100, 3)),
    );
    hostile_put(
        &store_path,
        "198.51.100.2-32",
        &attrs(Ipv4Addr::new(198, 51, 100, 9)),
    );
    hostile_put(
        &store_path,
        "11.0.0.0-24",
        &attrs(Ipv4Addr::new(198, 51, 100, 5)),
    );
    hostile_put(&store_path, &free(100), &huge);
    hostile_put(&store_path, &free(101), &attrs(Ipv4Addr::LOCALHOST));

    let m = run.metrics.clone();
    let want = [
        "reason=\"overlaps_own_subnet\"} 1",
        "reason=\"outside_network\"} 2",
        "reason=\"backend_data\"} 1",
        "reason=\"public_ip_loopback\"} 1",
    ];
    wait_for_async("all five rejected", Duration::from_secs(10), || {
        let text = m.encode().unwrap_or_default();
        want.iter()
            .all(|w| text.contains(&format!("flanneld_peer_leases_rejected{{{w}")))
    })
    .await;
    // Only the good peer is programmed.
    assert_eq!(run.reconciles().last(), Some(&1), "{:?}", run.reconciles());

    // More passes (another good peer joins, twice): nothing is logged or
    // counted again.
    for ip in [6, 7] {
        other
            .acquire(&req(Ipv4Addr::new(198, 51, 100, ip), None))
            .await
            .expect("good peer");
    }
    wait_for_async("three good peers", Duration::from_secs(10), || {
        run.reconciles().last() == Some(&3)
    })
    .await;
    let text = run.metrics.encode().expect("metrics");
    for w in want {
        assert!(
            text.contains(&format!("flanneld_peer_lease_rejections_total{{{w}")),
            "{w} counted once: {text}"
        );
    }
    let log = sink.text();
    let rejected_lines = log
        .lines()
        .filter(|l| l.contains("peer lease rejected"))
        .count();
    assert_eq!(rejected_lines, 5, "{log}");
    assert!(log.len() < 16 * 1024, "{} bytes of log", log.len());
    assert!(!log.contains("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), "{log}");
    run.stop().await;
}
