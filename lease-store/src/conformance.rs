//! The conformance suite: the guarantees every `LeaseStore` backend gives,
//! checked against the real backend (embedded file, etcd, ...).
//!
//! A backend's tests implement [`Fixture`] (how to make a fresh, empty
//! table and open clients on it) and get one test per check from
//! [`conformance_tests!`](crate::conformance_tests):
//!
//! ```ignore
//! lease_store::conformance_tests!(MyFixture::new());
//! ```
//!
//! or run them one after the other with [`run_all`] (a fixture whose tables
//! share one server that cannot be run in parallel).
//!
//! Checks panic with a message saying what went wrong. They use TEST-NET
//! public IPs (192.0.2.0/24, 198.51.100.0/24) and short TTLs (2 s) so that
//! expiry tests take seconds; a backend must honour TTLs that short.

use std::collections::HashSet;
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ipnet::{Ipv4Net, Ipv6Net};

use crate::config::NetworkConfig;
use crate::lease::{Lease, LeaseAttrs};
use crate::store::{
    AcquireRequest, LeaseEvent, LeaseStore, LeaseWatch, Result, Revision, StoreError, WatchUpdate,
};

/// Makes tables for the checks.
#[async_trait::async_trait]
pub trait Fixture: Send + Sync {
    /// A fresh, empty lease table whose network config is `net_conf` and
    /// whose leases live `ttl` unless renewed. Tables from separate calls
    /// share nothing (checks run in parallel).
    async fn table(&self, net_conf: &str, ttl: Duration) -> Result<Box<dyn Table>>;
}

/// One lease table, shared by several clients.
#[async_trait::async_trait]
pub trait Table: Send + Sync {
    /// A new client of the table, as another node's daemon would open it.
    async fn open(&self) -> Result<Arc<dyn LeaseStore>>;
    /// Forgets the change history up to the current revision, so that a
    /// watch from an older revision must fall back to a snapshot (etcd:
    /// compaction).
    async fn compact(&self) -> Result<()>;
}

/// A /16 with 255 /24 subnets (10.244.1.0 to 10.244.255.0).
pub const NET_CONF: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
/// Three /28 subnets only: 10.0.0.16, 10.0.0.32, 10.0.0.48.
pub const TINY_NET_CONF: &str = r#"{"Network":"10.0.0.0/26","Backend":{"Type":"vxlan"}}"#;
/// Dual-stack.
pub const DUAL_NET_CONF: &str = r#"{"EnableIPv6":true,"Network":"10.244.0.0/16","IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}"#;

/// The TTL the expiry checks use.
pub const SHORT_TTL: Duration = Duration::from_secs(2);
/// The TTL of checks that do not test expiry.
pub const LONG_TTL: Duration = Duration::from_secs(600);
/// How long to wait for an event or an expiry before failing.
const PATIENCE: Duration = Duration::from_secs(20);

/// One `#[tokio::test]` per check, each against `$fixture` (an expression
/// giving a [`Fixture`]), in the calling test file. The list is the same as
/// [`run_all`]'s: a check added there is added here, so every store runs it.
#[macro_export]
macro_rules! conformance_tests {
    ($fixture:expr) => {
        $crate::conformance_tests!(@each $fixture;
            network_config_round_trips,
            concurrent_acquirers_get_distinct_subnets,
            exhaustion_gives_a_clear_error,
            renewal_keeps_a_lease_past_its_ttl,
            expiry_frees_the_subnet,
            watcher_sees_peers_but_not_itself,
            watch_resumes_from_a_revision,
            compacted_revision_gives_a_snapshot,
            release_frees_the_subnet,
            reservations_are_respected,
            reservations_can_be_removed,
            own_lease_is_reused,
            previous_subnet_is_honoured_when_free,
            renew_recreates_a_vanished_lease_or_reports_it_lost,
            dual_stack_leases,
        );
    };
    (@each $fixture:expr; $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            $crate::conformance::$name(&$fixture).await;
        }
    )*};
}

/// Runs every check, one after the other (the list of
/// [`conformance_tests!`](crate::conformance_tests)).
pub async fn run_all(f: &dyn Fixture) {
    network_config_round_trips(f).await;
    concurrent_acquirers_get_distinct_subnets(f).await;
    exhaustion_gives_a_clear_error(f).await;
    renewal_keeps_a_lease_past_its_ttl(f).await;
    expiry_frees_the_subnet(f).await;
    watcher_sees_peers_but_not_itself(f).await;
    watch_resumes_from_a_revision(f).await;
    compacted_revision_gives_a_snapshot(f).await;
    release_frees_the_subnet(f).await;
    reservations_are_respected(f).await;
    reservations_can_be_removed(f).await;
    own_lease_is_reused(f).await;
    previous_subnet_is_honoured_when_free(f).await;
    renew_recreates_a_vanished_lease_or_reports_it_lost(f).await;
    dual_stack_leases(f).await;
}

/// Runs every check, the independent ones at once (each on its own table):
/// for a backend where each call waits on a remote server (a real API
/// server), so that the suite takes about as long as its slowest check.
/// The compaction check runs alone first: compacting a shared backend
/// (one etcd under every table) would turn the other checks' watches into
/// snapshots.
pub async fn run_all_concurrently(f: &dyn Fixture) {
    compacted_revision_gives_a_snapshot(f).await;
    tokio::join!(
        network_config_round_trips(f),
        concurrent_acquirers_get_distinct_subnets(f),
        exhaustion_gives_a_clear_error(f),
        renewal_keeps_a_lease_past_its_ttl(f),
        expiry_frees_the_subnet(f),
        watcher_sees_peers_but_not_itself(f),
        watch_resumes_from_a_revision(f),
        release_frees_the_subnet(f),
        reservations_are_respected(f),
        reservations_can_be_removed(f),
        own_lease_is_reused(f),
        previous_subnet_is_honoured_when_free(f),
        renew_recreates_a_vanished_lease_or_reports_it_lost(f),
        dual_stack_leases(f),
    );
}

// ---------------------------------------------------------------- helpers

/// The attributes of test node `n` (public IP 192.0.2.n or 198.51.100.n).
pub fn node_attrs(n: u8) -> LeaseAttrs {
    node_attrs_with_mac(n, n)
}

fn node_attrs_with_mac(n: u8, mac: u8) -> LeaseAttrs {
    let ip = if n < 200 {
        Ipv4Addr::new(192, 0, 2, n)
    } else {
        Ipv4Addr::new(198, 51, 100, n - 199)
    };
    LeaseAttrs {
        public_ip: ip,
        public_ipv6: None,
        backend_type: "vxlan".into(),
        backend_data: Some(
            serde_json::json!({"VNI": 1, "VtepMAC": format!("0a:58:00:00:{n:02x}:{mac:02x}")}),
        ),
        backend_v6_data: None,
    }
}

fn req(attrs: LeaseAttrs) -> AcquireRequest {
    AcquireRequest {
        attrs,
        previous_subnet: None,
        previous_ipv6_subnet: None,
    }
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap_or_else(|e| panic!("test subnet {s}: {e}"))
}

async fn table(f: &dyn Fixture, conf: &str, ttl: Duration) -> Box<dyn Table> {
    f.table(conf, ttl)
        .await
        .unwrap_or_else(|e| panic!("fixture could not make a table: {e}"))
}

async fn open(t: &dyn Table) -> Arc<dyn LeaseStore> {
    t.open()
        .await
        .unwrap_or_else(|e| panic!("cannot open a client: {e}"))
}

async fn acquire(s: &dyn LeaseStore, r: AcquireRequest) -> Lease {
    let ip = r.attrs.public_ip;
    s.acquire(&r)
        .await
        .unwrap_or_else(|e| panic!("acquire for {ip} failed: {e}"))
}

async fn list(s: &dyn LeaseStore) -> (Vec<Lease>, Revision) {
    s.list()
        .await
        .unwrap_or_else(|e| panic!("list failed: {e}"))
}

async fn watch(s: &dyn LeaseStore, from: Revision, own: Option<Lease>) -> LeaseWatch {
    s.watch(from, own)
        .await
        .unwrap_or_else(|e| panic!("watch from {from} failed: {e}"))
}

/// Same subnets and attributes (revisions and expirations differ between
/// a lease as written and as read back).
fn same(a: &Lease, b: &Lease) -> bool {
    a.subnet == b.subnet && a.ipv6_subnet == b.ipv6_subnet && a.attrs == b.attrs
}

fn find<'a>(leases: &'a [Lease], l: &Lease) -> Option<&'a Lease> {
    leases.iter().find(|x| x.key() == l.key())
}

async fn next_update(w: &mut LeaseWatch) -> WatchUpdate {
    match tokio::time::timeout(PATIENCE, w.next()).await {
        Err(_) => panic!("no watch update within {PATIENCE:?}"),
        Ok(None) => panic!("watch stream ended"),
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(Some(Ok(u))) => u,
    }
}

/// Collects events until `done` says so. A snapshot here is a failure.
async fn events_until(
    w: &mut LeaseWatch,
    mut done: impl FnMut(&[LeaseEvent]) -> bool,
) -> (Vec<LeaseEvent>, Revision) {
    let mut all = Vec::new();
    let mut last = 0;
    while !done(&all) {
        match next_update(w).await {
            WatchUpdate::Events { events, revision } => {
                assert!(
                    revision >= last,
                    "watch revisions went backwards: {revision} after {last}"
                );
                last = revision;
                all.extend(events);
            }
            WatchUpdate::Snapshot { revision, .. } => {
                panic!("unexpected snapshot at revision {revision}; events so far: {all:?}")
            }
        }
    }
    (all, last)
}

fn removed(e: &LeaseEvent, l: &Lease) -> bool {
    matches!(e, LeaseEvent::Removed(x) if x.key() == l.key())
}

fn added(e: &LeaseEvent, l: &Lease) -> bool {
    matches!(e, LeaseEvent::Added(x) if x.key() == l.key())
}

/// Polls `list` until `cond` holds.
async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while !cond().await {
        if start.elapsed() > PATIENCE {
            panic!("timed out after {PATIENCE:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn gone(s: &dyn LeaseStore, l: &Lease) -> bool {
    find(&list(s).await.0, l).is_none()
}

// ----------------------------------------------------------------- checks

/// The store hands back the config it holds, parsed by our rules.
pub async fn network_config_round_trips(f: &dyn Fixture) {
    let t = table(f, NET_CONF, LONG_TTL).await;
    let s = open(t.as_ref()).await;
    let got = s
        .network_config()
        .await
        .unwrap_or_else(|e| panic!("network_config: {e}"));
    let want = NetworkConfig::parse(NET_CONF).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, want);
}

/// 50 nodes acquiring at once, each through its own client, get 50
/// distinct subnets, all visible in the list.
pub async fn concurrent_acquirers_get_distinct_subnets(f: &dyn Fixture) {
    let t = table(f, NET_CONF, LONG_TTL).await;
    let mut tasks = Vec::new();
    for n in 1..=50u8 {
        let s = open(t.as_ref()).await;
        tasks.push(tokio::spawn(
            async move { s.acquire(&req(node_attrs(n))).await },
        ));
    }
    let mut leases = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await {
            Ok(Ok(l)) => leases.push(l),
            Ok(Err(e)) => panic!("acquirer {} failed: {e}", i + 1),
            Err(e) => panic!("acquirer {} panicked: {e}", i + 1),
        }
    }
    let subnets: HashSet<_> = leases.iter().map(|l| l.subnet).collect();
    assert_eq!(subnets.len(), 50, "subnets handed out twice: {leases:#?}");
    let cfg = NetworkConfig::parse(NET_CONF).unwrap_or_else(|e| panic!("{e}"));
    for l in &leases {
        assert!(
            cfg.fits(l.subnet, l.ipv6_subnet),
            "{l:?} is outside the config"
        );
        assert!(
            l.expiration.is_some(),
            "a fresh lease must have a TTL: {l:?}"
        );
    }
    let s = open(t.as_ref()).await;
    let (listed, _) = list(s.as_ref()).await;
    assert_eq!(listed.len(), 50, "list: {listed:#?}");
    for l in &leases {
        let got = find(&listed, l).unwrap_or_else(|| panic!("{} missing from the list", l.key()));
        assert!(same(got, l), "listed {got:?} differs from acquired {l:?}");
    }
}

/// When every subnet is taken, acquire fails with `OutOfSubnets`, naming
/// the range and the counts.
pub async fn exhaustion_gives_a_clear_error(f: &dyn Fixture) {
    let t = table(f, TINY_NET_CONF, LONG_TTL).await;
    let s = open(t.as_ref()).await;
    for n in 1..=3 {
        acquire(s.as_ref(), req(node_attrs(n))).await;
    }
    match s.acquire(&req(node_attrs(4))).await {
        Err(StoreError::OutOfSubnets {
            range,
            total,
            leased,
            reserved,
        }) => {
            assert!(
                range.contains("10.0.0.0/26"),
                "range {range:?} does not name the network"
            );
            assert_eq!((total, leased, reserved), (3, 3, 0));
            let msg = StoreError::OutOfSubnets {
                range,
                total,
                leased,
                reserved,
            }
            .to_string();
            assert!(msg.contains("out of subnets"), "{msg}");
        }
        other => panic!("a fourth node on three subnets: expected OutOfSubnets, got {other:?}"),
    }
}

/// A lease renewed more often than its TTL outlives the TTL.
pub async fn renewal_keeps_a_lease_past_its_ttl(f: &dyn Fixture) {
    let t = table(f, NET_CONF, SHORT_TTL).await;
    let s = open(t.as_ref()).await;
    let first = acquire(s.as_ref(), req(node_attrs(1))).await;
    let mut l = first.clone();
    let until = tokio::time::Instant::now() + SHORT_TTL * 3;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(SHORT_TTL / 4).await;
        l = s
            .renew(&l)
            .await
            .unwrap_or_else(|e| panic!("renewing {}: {e}", l.key()));
    }
    assert!(
        same(&l, &first),
        "renewal changed the lease: {first:?} -> {l:?}"
    );
    match (first.expiration, l.expiration) {
        (Some(a), Some(b)) => assert!(
            b > a + SHORT_TTL,
            "expiration did not move on: {a:?} -> {b:?}"
        ),
        other => panic!("leases must carry expirations: {other:?}"),
    }
    assert!(!gone(s.as_ref(), &first).await, "renewed lease vanished");
}

/// An unrenewed lease expires: it leaves the list, watchers get a
/// `Removed` carrying its attributes, and its subnet can be taken.
pub async fn expiry_frees_the_subnet(f: &dyn Fixture) {
    let t = table(f, NET_CONF, SHORT_TTL).await;
    let a = open(t.as_ref()).await;
    let b = open(t.as_ref()).await;
    let (_, rev) = list(b.as_ref()).await;
    let mut w = watch(b.as_ref(), rev, None).await;
    let la = acquire(a.as_ref(), req(node_attrs(1))).await;
    wait_for("the unrenewed lease to expire", || gone(b.as_ref(), &la)).await;
    let (events, _) = events_until(&mut w, |ev| ev.iter().any(|e| removed(e, &la))).await;
    match events.iter().find(|e| removed(e, &la)) {
        Some(LeaseEvent::Removed(x)) => assert_eq!(
            x.attrs, la.attrs,
            "the removal must carry the old attributes"
        ),
        _ => unreachable!("events_until returned without the removal"),
    }
    assert!(
        events.iter().any(|e| added(e, &la)),
        "the add before the expiry is missing: {events:?}"
    );
    let mut r = req(node_attrs(2));
    r.previous_subnet = la.subnet;
    let lb = acquire(b.as_ref(), r).await;
    assert_eq!(
        lb.subnet, la.subnet,
        "the expired subnet was not free again"
    );
}

/// A watcher gets its peers' adds and removes, in order, and none of the
/// changes to its own lease.
pub async fn watcher_sees_peers_but_not_itself(f: &dyn Fixture) {
    let t = table(f, NET_CONF, LONG_TTL).await;
    let a = open(t.as_ref()).await;
    let b = open(t.as_ref()).await;
    let la = acquire(a.as_ref(), req(node_attrs(1))).await;
    let (_, rev) = list(a.as_ref()).await;
    let mut w = watch(a.as_ref(), rev, Some(la.clone())).await;
    let lb = acquire(b.as_ref(), req(node_attrs(2))).await;
    // Our own change (new VTEP MAC) must not come back to us.
    let la2 = acquire(a.as_ref(), req(node_attrs_with_mac(1, 0x99))).await;
    assert_eq!(la2.subnet, la.subnet);
    b.release(&lb)
        .await
        .unwrap_or_else(|e| panic!("release {}: {e}", lb.key()));
    let (events, _) = events_until(&mut w, |ev| ev.iter().any(|e| removed(e, &lb))).await;
    assert!(
        !events.iter().any(|e| added(e, &la) || removed(e, &la)),
        "own changes delivered: {events:?}"
    );
    assert_eq!(
        events.len(),
        2,
        "expected exactly add and remove of the peer: {events:?}"
    );
    match (&events[0], &events[1]) {
        (LeaseEvent::Added(x), LeaseEvent::Removed(y)) => {
            assert!(same(x, &lb), "added {x:?}, expected {lb:?}");
            assert!(
                same(y, &lb),
                "removed {y:?} must carry the peer's attributes {lb:?}"
            );
        }
        other => panic!("expected add then remove, got {other:?}"),
    }
}

/// A watch started from the revision of an earlier update delivers only
/// what changed after it.
pub async fn watch_resumes_from_a_revision(f: &dyn Fixture) {
    let t = table(f, NET_CONF, LONG_TTL).await;
    let s = open(t.as_ref()).await;
    let (_, r0) = list(s.as_ref()).await;
    let mut w = watch(s.as_ref(), r0, None).await;
    let lb = acquire(s.as_ref(), req(node_attrs(2))).await;
    let (events, r1) = events_until(&mut w, |ev| ev.iter().any(|e| added(e, &lb))).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        r1 >= lb.revision,
        "update revision {r1} is before the lease's {}",
        lb.revision
    );
    drop(w);
    let lc = acquire(s.as_ref(), req(node_attrs(3))).await;
    let mut w = watch(s.as_ref(), r1, None).await;
    let (events, _) = events_until(&mut w, |ev| ev.iter().any(|e| added(e, &lc))).await;
    assert!(
        !events.iter().any(|e| added(e, &lb)),
        "a resumed watch replayed a change from before its revision: {events:?}"
    );
    // And from the lease's own revision, too.
    let mut w = watch(s.as_ref(), lb.revision, None).await;
    let (events, _) = events_until(&mut w, |ev| ev.iter().any(|e| added(e, &lc))).await;
    assert!(!events.iter().any(|e| added(e, &lb)), "{events:?}");
}

/// Watching from a revision older than the retained history gives a
/// snapshot of the whole table (without the watcher's own lease), then
/// events again.
pub async fn compacted_revision_gives_a_snapshot(f: &dyn Fixture) {
    let t = table(f, NET_CONF, LONG_TTL).await;
    let s = open(t.as_ref()).await;
    let la = acquire(s.as_ref(), req(node_attrs(1))).await;
    let (_, r0) = list(s.as_ref()).await;
    let lb = acquire(s.as_ref(), req(node_attrs(2))).await;
    let lc = acquire(s.as_ref(), req(node_attrs(3))).await;
    let ld = acquire(s.as_ref(), req(node_attrs(4))).await;
    s.release(&ld)
        .await
        .unwrap_or_else(|e| panic!("release: {e}"));
    let (_, r1) = list(s.as_ref()).await;
    t.compact().await.unwrap_or_else(|e| panic!("compact: {e}"));
    let mut w = watch(s.as_ref(), r0, Some(la.clone())).await;
    match next_update(&mut w).await {
        WatchUpdate::Snapshot { leases, revision } => {
            assert!(
                revision >= r1,
                "snapshot revision {revision} is older than the table ({r1})"
            );
            let keys: HashSet<String> = leases.iter().map(Lease::key).collect();
            let want: HashSet<String> = [lb.key(), lc.key()].into_iter().collect();
            assert_eq!(
                keys, want,
                "snapshot must hold the peers, without our own lease"
            );
            for l in [&lb, &lc] {
                let got = find(&leases, l).unwrap_or_else(|| unreachable!());
                assert!(same(got, l), "snapshot has {got:?}, expected {l:?}");
            }
        }
        other => {
            panic!("a watch from a compacted revision must start with a snapshot, got {other:?}")
        }
    }
    let le = acquire(s.as_ref(), req(node_attrs(5))).await;
    let (events, _) = events_until(&mut w, |ev| ev.iter().any(|e| added(e, &le))).await;
    assert_eq!(
        events.len(),
        1,
        "after the snapshot only the new change: {events:?}"
    );
}

/// A released subnet is free for the next node; releasing twice is
/// `NotFound`.
pub async fn release_frees_the_subnet(f: &dyn Fixture) {
    let t = table(f, TINY_NET_CONF, LONG_TTL).await;
    let s = open(t.as_ref()).await;
    let mut held = Vec::new();
    for n in 1..=3 {
        held.push(acquire(s.as_ref(), req(node_attrs(n))).await);
    }
    assert!(matches!(
        s.acquire(&req(node_attrs(4))).await,
        Err(StoreError::OutOfSubnets { .. })
    ));
    s.release(&held[1])
        .await
        .unwrap_or_else(|e| panic!("release {}: {e}", held[1].key()));
    let l4 = acquire(s.as_ref(), req(node_attrs(4))).await;
    assert_eq!(
        l4.subnet, held[1].subnet,
        "the released subnet was the only free one"
    );
    match s.release(&held[1]).await {
        // The subnet now belongs to node 4.
        Err(StoreError::LeaseLost { holder, .. }) => assert_eq!(holder, node_attrs(4).public_ip),
        other => {
            panic!("releasing a subnet another node now holds: expected LeaseLost, got {other:?}")
        }
    }
    s.release(&l4)
        .await
        .unwrap_or_else(|e| panic!("release: {e}"));
    assert!(matches!(s.release(&l4).await, Err(StoreError::NotFound(_))));
}

/// A reservation (no TTL) is never handed to another node, does not
/// expire, and is taken by the node with its public IP.
pub async fn reservations_are_respected(f: &dyn Fixture) {
    let t = table(f, TINY_NET_CONF, SHORT_TTL).await;
    let s = open(t.as_ref()).await;
    let owner = node_attrs(200);
    let sn = net("10.0.0.32/28");
    let r = s
        .reserve(Some(sn), None, &owner)
        .await
        .unwrap_or_else(|e| panic!("reserve {sn}: {e}"));
    assert!(r.is_reservation(), "{r:?}");
    assert!(
        matches!(
            s.reserve(Some(net("10.0.1.0/28")), None, &owner).await,
            Err(StoreError::Config(_))
        ),
        "a reservation outside the network must be refused"
    );
    let l1 = acquire(s.as_ref(), req(node_attrs(1))).await;
    let mut r2 = req(node_attrs(2));
    r2.previous_subnet = Some(sn); // asks for the reserved one: must not get it
    let l2 = acquire(s.as_ref(), r2).await;
    assert_ne!(l1.subnet, Some(sn));
    assert_ne!(l2.subnet, Some(sn));
    match s.acquire(&req(node_attrs(3))).await {
        Err(StoreError::OutOfSubnets {
            leased, reserved, ..
        }) => assert_eq!((leased, reserved), (2, 1)),
        other => panic!("expected OutOfSubnets with one reservation, got {other:?}"),
    }
    match s.reserve(l1.subnet, None, &owner).await {
        Err(StoreError::SubnetTaken { holder, .. }) => assert_eq!(holder, l1.attrs.public_ip),
        other => {
            panic!("reserving a subnet another node holds: expected SubnetTaken, got {other:?}")
        }
    }
    // The leases expire; the reservation does not.
    wait_for("the unrenewed leases to expire", || async {
        let (leases, _) = list(s.as_ref()).await;
        find(&leases, &l1).is_none() && find(&leases, &l2).is_none()
    })
    .await;
    tokio::time::sleep(SHORT_TTL).await;
    let (leases, _) = list(s.as_ref()).await;
    let kept = find(&leases, &r).unwrap_or_else(|| panic!("the reservation expired: {leases:?}"));
    assert!(kept.is_reservation());
    // Its owner gets it, and it stays a reservation.
    let mut mine = node_attrs_with_mac(200, 0x42);
    mine.public_ip = owner.public_ip;
    let got = acquire(s.as_ref(), req(mine.clone())).await;
    assert_eq!(got.subnet, Some(sn));
    assert!(
        got.is_reservation(),
        "the owner's lease must remain a reservation: {got:?}"
    );
    let got = s
        .renew(&got)
        .await
        .unwrap_or_else(|e| panic!("renew reservation: {e}"));
    assert!(got.is_reservation());
    let (leases, _) = list(s.as_ref()).await;
    let kept = find(&leases, &r).unwrap_or_else(|| panic!("reservation gone: {leases:?}"));
    assert_eq!(
        kept.attrs, mine,
        "acquire must publish the owner's new attributes"
    );
    // Releasing leaves the operator's reservation in place.
    s.release(&got)
        .await
        .unwrap_or_else(|e| panic!("release reservation: {e}"));
    assert!(
        !gone(s.as_ref(), &r).await,
        "release removed an operator's reservation"
    );
}

/// `unreserve` removes exactly an operator's reservation (flannel's
/// `RemoveReservation`): watchers see it go, its node takes the subnet
/// back as an ordinary lease, and it is free for others once that lease
/// is released. It refuses an ordinary lease (`NotReserved`, left in
/// place) and a subnet without a key (`NotFound`).
pub async fn reservations_can_be_removed(f: &dyn Fixture) {
    let t = table(f, TINY_NET_CONF, LONG_TTL).await;
    let s = open(t.as_ref()).await;
    let owner = node_attrs(200);
    let sn = net("10.0.0.32/28");
    s.reserve(Some(sn), None, &owner)
        .await
        .unwrap_or_else(|e| panic!("reserve {sn}: {e}"));
    match s.unreserve(Some(net("10.0.0.48/28")), None).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("removing a reservation nobody wrote: expected NotFound, got {other:?}"),
    }
    let l1 = acquire(s.as_ref(), req(node_attrs(1))).await;
    assert_ne!(l1.subnet, Some(sn));
    match s.unreserve(l1.subnet, None).await {
        Err(StoreError::NotReserved { holder, .. }) => assert_eq!(holder, l1.attrs.public_ip),
        other => panic!(
            "removing an ordinary lease as a reservation: expected NotReserved, got {other:?}"
        ),
    }
    let (leases, rev) = list(s.as_ref()).await;
    assert!(
        find(&leases, &l1).is_some_and(|l| !l.is_reservation()),
        "a refused unreserve changed the lease: {leases:?}"
    );
    let mut w = watch(s.as_ref(), rev, None).await;
    let removed_r = s
        .unreserve(Some(sn), None)
        .await
        .unwrap_or_else(|e| panic!("unreserve {sn}: {e}"));
    assert_eq!(removed_r.subnet, Some(sn));
    assert_eq!(removed_r.attrs.public_ip, owner.public_ip, "{removed_r:?}");
    assert!(removed_r.is_reservation(), "{removed_r:?}");
    let (events, _) = events_until(&mut w, |ev| ev.iter().any(|e| removed(e, &removed_r))).await;
    assert!(
        !events.iter().any(|e| removed(e, &l1)),
        "only the reservation goes: {events:?}"
    );
    assert!(
        gone(s.as_ref(), &removed_r).await,
        "the reservation is still listed"
    );
    match s.unreserve(Some(sn), None).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("removing a reservation twice: expected NotFound, got {other:?}"),
    }
    // Its node (a daemon that saw its lease deleted) takes the subnet back
    // as an ordinary lease, with a TTL.
    let mut back = req(owner.clone());
    back.previous_subnet = Some(sn);
    let mine = acquire(s.as_ref(), back).await;
    assert_eq!(mine.subnet, Some(sn), "{mine:?}");
    assert!(
        !mine.is_reservation(),
        "after unreserve the node's lease must expire unless renewed: {mine:?}"
    );
    // Once that lease is given back, anyone may have the subnet.
    s.release(&mine)
        .await
        .unwrap_or_else(|e| panic!("release: {e}"));
    let mut other = req(node_attrs(2));
    other.previous_subnet = Some(sn);
    assert_eq!(acquire(s.as_ref(), other).await.subnet, Some(sn));
}

/// A node acquiring again (a restarted daemon, a new client) gets its own
/// lease back, with its new attributes, and no second lease.
pub async fn own_lease_is_reused(f: &dyn Fixture) {
    let t = table(f, NET_CONF, LONG_TTL).await;
    let first = open(t.as_ref()).await;
    let la = acquire(first.as_ref(), req(node_attrs(1))).await;
    acquire(first.as_ref(), req(node_attrs(2))).await;
    drop(first);
    let again = open(t.as_ref()).await;
    let new_attrs = node_attrs_with_mac(1, 0x77);
    let mut r = req(new_attrs.clone());
    r.previous_subnet = Some(net("10.244.200.0/24")); // the own lease wins
    let la2 = acquire(again.as_ref(), r).await;
    assert_eq!(la2.subnet, la.subnet, "the node's own lease was not reused");
    assert_eq!(la2.attrs, new_attrs);
    let (leases, _) = list(again.as_ref()).await;
    let mine: Vec<&Lease> = leases
        .iter()
        .filter(|l| l.attrs.public_ip == la.attrs.public_ip)
        .collect();
    assert_eq!(mine.len(), 1, "one node, one lease: {mine:?}");
    assert_eq!(mine[0].attrs, new_attrs, "attributes not updated");
}

/// The subnet from subnet.env is used when free and in range, and not
/// when another node holds it or it lies outside the config.
pub async fn previous_subnet_is_honoured_when_free(f: &dyn Fixture) {
    let t = table(f, NET_CONF, LONG_TTL).await;
    let s = open(t.as_ref()).await;
    let prev = net("10.244.77.0/24");
    let mut r = req(node_attrs(1));
    r.previous_subnet = Some(prev);
    assert_eq!(acquire(s.as_ref(), r).await.subnet, Some(prev));
    let mut r = req(node_attrs(2));
    r.previous_subnet = Some(prev);
    let l2 = acquire(s.as_ref(), r).await;
    assert_ne!(l2.subnet, Some(prev), "a held subnet was handed out again");
    for outside in ["10.245.3.0/24", "10.244.0.0/24", "10.244.78.0/25"] {
        let mut r = req(node_attrs(3));
        r.previous_subnet = Some(net(outside));
        let l = acquire(s.as_ref(), r).await;
        assert_ne!(
            l.subnet,
            Some(net(outside)),
            "previous subnet outside the config was used"
        );
        s.release(&l)
            .await
            .unwrap_or_else(|e| panic!("release: {e}"));
    }
}

/// Renewing a lease whose key vanished re-creates it when the subnet is
/// free, and reports `LeaseLost` when another node took it.
pub async fn renew_recreates_a_vanished_lease_or_reports_it_lost(f: &dyn Fixture) {
    let t = table(f, NET_CONF, SHORT_TTL).await;
    let s = open(t.as_ref()).await;
    let la = acquire(s.as_ref(), req(node_attrs(1))).await;
    s.release(&la)
        .await
        .unwrap_or_else(|e| panic!("release: {e}"));
    let back = s
        .renew(&la)
        .await
        .unwrap_or_else(|e| panic!("renew of a vanished, free lease must re-create it: {e}"));
    assert!(same(&back, &la));
    assert!(
        !gone(s.as_ref(), &la).await,
        "renew did not re-create the lease"
    );
    // Let it expire, have node 2 take the subnet, then renew as node 1.
    wait_for("the lease to expire", || gone(s.as_ref(), &la)).await;
    let mut r = req(node_attrs(2));
    r.previous_subnet = la.subnet;
    let lb = acquire(s.as_ref(), r).await;
    assert_eq!(lb.subnet, la.subnet);
    match s.renew(&la).await {
        Err(StoreError::LeaseLost { holder, .. }) => assert_eq!(holder, lb.attrs.public_ip),
        other => panic!("renewing a subnet another node took: expected LeaseLost, got {other:?}"),
    }
}

/// Whether any of `leases` holds `v4` or `v6`.
fn v4s_or_v6s_taken(leases: &[Lease], v4: Ipv4Net, v6: Ipv6Net) -> bool {
    leases
        .iter()
        .any(|l| l.subnet == Some(v4) || l.ipv6_subnet == Some(v6))
}

/// Dual-stack leases carry both subnets under the `v4&v6` key.
pub async fn dual_stack_leases(f: &dyn Fixture) {
    let t = table(f, DUAL_NET_CONF, LONG_TTL).await;
    let s = open(t.as_ref()).await;
    let cfg = NetworkConfig::parse(DUAL_NET_CONF).unwrap_or_else(|e| panic!("{e}"));
    let mut got = Vec::new();
    for n in 1..=5 {
        let mut a = node_attrs(n);
        a.public_ipv6 = Some(
            format!("2001:db8::{n}")
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
        );
        a.backend_v6_data = a.backend_data.clone();
        got.push(acquire(s.as_ref(), req(a)).await);
    }
    let v4: HashSet<_> = got.iter().map(|l| l.subnet).collect();
    let v6: HashSet<_> = got.iter().map(|l| l.ipv6_subnet).collect();
    assert_eq!((v4.len(), v6.len()), (5, 5), "{got:#?}");
    for l in &got {
        assert!(cfg.fits(l.subnet, l.ipv6_subnet), "{l:?}");
        assert!(l.key().contains('&'), "{}", l.key());
    }
    // The five leases above are random picks, so the "previous" pair must be
    // one that none of them took, or the check is a lottery.
    let (prev4, prev6) = (42u8..=255)
        .map(|i| {
            let v4 = net(&format!("10.244.{i}.0/24"));
            let v6: Ipv6Net = format!("fd00:10:244:{i:x}::/64")
                .parse()
                .unwrap_or_else(|e| panic!("{e}"));
            (v4, v6)
        })
        .find(|(v4, v6)| !v4s_or_v6s_taken(&got, *v4, *v6))
        .unwrap_or_else(|| panic!("no free pair for the previous-subnet check: {got:#?}"));
    let mut r = req(node_attrs(9));
    r.previous_subnet = Some(prev4);
    r.previous_ipv6_subnet = Some(prev6);
    let l = acquire(s.as_ref(), r).await;
    assert_eq!((l.subnet, l.ipv6_subnet), (Some(prev4), Some(prev6)));
    let (listed, _) = list(s.as_ref()).await;
    assert_eq!(listed.len(), 6);
    for l in got.iter().chain([&l]) {
        let x = find(&listed, l).unwrap_or_else(|| panic!("{} missing", l.key()));
        assert!(same(x, l), "{x:?} vs {l:?}");
    }
    s.release(&l)
        .await
        .unwrap_or_else(|e| panic!("release: {e}"));
    assert!(gone(s.as_ref(), &l).await);
}

#[cfg(test)]
mod tests {
    /// The names of the checks a runner's body calls.
    fn calls(src: &str, runner: &str) -> Vec<String> {
        let start = src
            .find(&format!("pub async fn {runner}("))
            .unwrap_or_else(|| panic!("{runner} not found"));
        let body = &src[start..];
        let body = &body[..body.find("\n}\n").unwrap_or(body.len())];
        let mut names: Vec<String> = body
            .lines()
            .skip(1)
            .filter_map(|l| {
                let l = l.trim();
                let name = l.split('(').next()?;
                (l.contains("(f)") && !name.contains(' ')).then(|| name.to_string())
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn both_runners_run_every_check() {
        let src = include_str!("conformance.rs");
        let seq = calls(src, "run_all");
        assert!(seq.len() >= 15, "{seq:?}");
        assert_eq!(seq, calls(src, "run_all_concurrently"));
        // And the per-test macro's list.
        let start = src.find("@each $fixture;").expect("macro list");
        let list = &src[start..];
        let mut listed: Vec<String> = list[..list.find(");").expect("end of list")]
            .lines()
            .skip(1)
            .map(|l| l.trim().trim_end_matches(',').to_string())
            .filter(|l| !l.is_empty())
            .collect();
        listed.sort();
        assert_eq!(seq, listed);
    }
}
