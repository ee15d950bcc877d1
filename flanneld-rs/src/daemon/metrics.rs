//! The daemon's Prometheus metrics (served at /metrics in the OpenMetrics
//! text format, which Prometheus scrapes).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::backend::DatapathStats;
use crate::backend::{BackendError, ReconcileReport};
use crate::daemon::ops_metrics::{OpsMetrics, ProcessCollector};
use crate::daemon::peers::Applied;
use crate::daemon::validate::{Reason, Rejection};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabel {
    /// What caused the pass: startup, event, resync, lease, netlink.
    pub trigger: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why a peer lease is not programmed (`validate::Reason::label`).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabel {
    /// How the own lease was lost: deleted, overwritten (seen by the
    /// watch) or renewal (found at a renewal).
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubnetLabel {
    /// same: the lost subnet was taken back; new: another node holds it.
    pub subnet: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    /// added, removed or snapshot.
    pub event: &'static str,
}

/// Every metric, registered once.
pub struct Metrics {
    registry: Registry,
    pub peers: Gauge,
    pub lease_expiry: Gauge,
    pub ready: Gauge,
    pub reconcile_runs: Family<TriggerLabel, Counter>,
    pub reconcile_duration: Histogram,
    pub reconcile_errors: Family<KindLabel, Counter>,
    pub netlink_ops: Family<KindLabel, Counter>,
    pub lease_events: Family<EventLabel, Counter>,
    pub lease_acquisitions: Counter,
    pub lease_renewals: Counter,
    pub lease_renewal_failures: Counter,
    /// Peer leases rejected right now, by reason.
    pub peer_leases_rejected: Family<ReasonLabel, Gauge>,
    /// Rejections reported (once per lease and reason), by reason.
    pub peer_lease_rejections: Family<ReasonLabel, Counter>,
    /// Times this node's own lease vanished or was taken, by cause.
    pub own_lease_lost: Family<CauseLabel, Counter>,
    /// Re-acquisitions of the same subnet after a loss (no other subnet is
    /// ever taken while running).
    pub own_lease_reacquired: Family<SubnetLabel, Counter>,
    /// 1 while another node holds this node's subnet: the node is not
    /// ready and its pods are cut off until the subnet is back.
    pub lost_subnets: Gauge,
    /// Go flanneld's iptables chains still on the node (kept until our
    /// rules cover them; 0 once retired or when none were found).
    pub go_iptables_chains: Gauge,
    datapath: Arc<DatapathCollector>,
    store_rejects: Arc<StoreRejectsCollector>,
    /// Pod addresses, peers known/failed, lease seconds left, build info
    /// (ops_metrics.rs).
    pub ops: Arc<OpsMetrics>,
    /// `process_*`, which by convention carry no prefix.
    process_registry: Registry,
}

/// The userspace datapath's packet counters, read from its atomics at
/// scrape time (nothing is exported for the kernel datapaths).
#[derive(Debug, Default)]
struct DatapathCollector {
    counters: Mutex<Option<Arc<dyn DatapathStats>>>,
}

impl Collector for DatapathCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counters = match self.counters.lock() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let Some(counters) = counters else {
            return Ok(());
        };
        let snap = counters.snapshot();
        {
            let mut packets = encoder.encode_descriptor(
                "userspace_packets",
                "Packets handled by the userspace datapath (tx = TUN to UDP, rx = UDP to TUN): delivered, or dropped by reason",
                None,
                MetricType::Counter,
            )?;
            for (dir, n, _) in &snap.delivered {
                let labels = [("direction", *dir), ("result", "delivered")];
                ConstCounter::new(*n).encode(packets.encode_family(&labels)?)?;
            }
            for (dir, reason, n) in &snap.dropped {
                let labels = [
                    ("direction", *dir),
                    ("result", "dropped"),
                    ("reason", *reason),
                ];
                ConstCounter::new(*n).encode(packets.encode_family(&labels)?)?;
            }
        }
        let mut bytes = encoder.encode_descriptor(
            "userspace_bytes",
            "Inner IPv4 bytes delivered by the userspace datapath",
            None,
            MetricType::Counter,
        )?;
        for (dir, _, b) in &snap.delivered {
            let labels = [("direction", *dir)];
            ConstCounter::new(*b).encode(bytes.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("flanneld");
        let m = Metrics {
            registry: Registry::default(),
            peers: Gauge::default(),
            lease_expiry: Gauge::default(),
            ready: Gauge::default(),
            reconcile_runs: Family::default(),
            // 0.5 ms .. ~16 s: one peer is sub-millisecond, 1,000 peers
            // take a good fraction of a second.
            reconcile_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            reconcile_errors: Family::default(),
            netlink_ops: Family::default(),
            lease_events: Family::default(),
            lease_acquisitions: Counter::default(),
            lease_renewals: Counter::default(),
            lease_renewal_failures: Counter::default(),
            peer_leases_rejected: Family::default(),
            peer_lease_rejections: Family::default(),
            own_lease_lost: Family::default(),
            own_lease_reacquired: Family::default(),
            lost_subnets: Gauge::default(),
            go_iptables_chains: Gauge::default(),
            datapath: Arc::default(),
            store_rejects: Arc::default(),
            ops: Arc::default(),
            process_registry: Registry::default(),
        };
        registry.register_collector(Box::new(m.datapath.clone()));
        registry.register_collector(Box::new(m.store_rejects.clone()));
        registry.register_collector(Box::new(m.ops.clone()));
        let mut process_registry = Registry::default();
        process_registry.register_collector(Box::new(ProcessCollector));
        registry.register("peers", "Peers programmed in the datapath", m.peers.clone());
        registry.register(
            "lease_expiry_timestamp_seconds",
            "When this node's lease expires unless renewed (unix seconds; 0 = no TTL)",
            m.lease_expiry.clone(),
        );
        registry.register(
            "ready",
            "1 once the lease, the datapath and subnet.env are in place",
            m.ready.clone(),
        );
        registry.register(
            "reconcile_runs",
            "Reconcile passes, by trigger",
            m.reconcile_runs.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile pass took",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconcile passes (kind=pass) and peers that could not be programmed (kind=peer)",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "netlink_operations",
            "Netlink requests that changed the kernel, by kind",
            m.netlink_ops.clone(),
        );
        registry.register(
            "lease_events",
            "Lease table changes seen by the watch, by event",
            m.lease_events.clone(),
        );
        registry.register(
            "lease_acquisitions",
            "Leases acquired (start-up, and again after a lease was lost)",
            m.lease_acquisitions.clone(),
        );
        registry.register(
            "lease_renewals",
            "Successful lease renewals",
            m.lease_renewals.clone(),
        );
        registry.register(
            "lease_renewal_failures",
            "Failed lease renewal attempts",
            m.lease_renewal_failures.clone(),
        );
        registry.register(
            "peer_leases_rejected",
            "Peer leases not programmed right now because they failed validation, by reason",
            m.peer_leases_rejected.clone(),
        );
        registry.register(
            "peer_lease_rejections",
            "Peer leases found invalid (each lease counted once per reason until it changes), by reason",
            m.peer_lease_rejections.clone(),
        );
        registry.register(
            "own_lease_lost",
            "Times this node's lease was found deleted, overwritten by another node (both seen by the watch) or lost at a renewal, by cause",
            m.own_lease_lost.clone(),
        );
        registry.register(
            "own_lease_reacquired",
            "Re-acquisitions of this node's own subnet after its lease was lost (subnet=same: pods keep their addresses; no other subnet is taken while running)",
            m.own_lease_reacquired.clone(),
        );
        registry.register(
            "lost_subnets",
            "Whether another node holds this node's subnet (1 while it does): the node is not ready and its pods are unreachable from other nodes until that subnet is freed and taken back (or the node is drained and flanneld restarted)",
            m.lost_subnets.clone(),
        );
        registry.register(
            "go_iptables_chains",
            "Go flanneld's iptables chains (FLANNEL-POSTRTG, FLANNEL-FWD, per iptables flavour) still on this node, kept until this daemon's rules cover them",
            m.go_iptables_chains.clone(),
        );
        for cause in ["deleted", "overwritten", "renewal"] {
            m.own_lease_lost
                .get_or_create(&CauseLabel { cause })
                .inc_by(0);
        }
        m.own_lease_reacquired
            .get_or_create(&SubnetLabel { subnet: "same" })
            .inc_by(0);
        // Every reason shows (as 0) from the start, so an alert on it does
        // not wait for the first bad lease.
        for reason in Reason::ALL {
            let label = ReasonLabel {
                reason: reason.label(),
            };
            m.peer_leases_rejected.get_or_create(&label).set(0);
            m.peer_lease_rejections.get_or_create(&label).inc_by(0);
        }
        Metrics {
            registry,
            process_registry,
            ..m
        }
    }

    /// Exports a datapath's statistics (`Backend::stats`) from now on; the
    /// daemon calls it once after `prepare`.
    pub fn set_datapath(&self, counters: Option<Arc<dyn DatapathStats>>) {
        match self.datapath.counters.lock() {
            Ok(mut c) => *c = counters,
            Err(poisoned) => *poisoned.into_inner() = counters,
        }
    }

    /// Records one reconcile pass.
    pub fn record_reconcile(
        &self,
        trigger: &'static str,
        took: Duration,
        result: &Result<ReconcileReport, BackendError>,
    ) {
        self.reconcile_runs
            .get_or_create(&TriggerLabel { trigger })
            .inc();
        self.reconcile_duration.observe(took.as_secs_f64());
        match result {
            Ok(report) => {
                self.peers
                    .set(i64::try_from(report.peers).unwrap_or(i64::MAX));
                for (kind, n) in &report.changes {
                    self.netlink_ops
                        .get_or_create(&KindLabel {
                            kind: (*kind).to_string(),
                        })
                        .inc_by(*n);
                }
                if !report.errors.is_empty() {
                    self.reconcile_errors
                        .get_or_create(&KindLabel {
                            kind: "peer".into(),
                        })
                        .inc_by(report.errors.len() as u64);
                }
            }
            Err(_) => {
                self.reconcile_errors
                    .get_or_create(&KindLabel {
                        kind: "pass".into(),
                    })
                    .inc();
            }
        }
    }

    /// Records what a watch update changed.
    pub fn record_events(&self, applied: Applied) {
        if applied.added > 0 {
            self.lease_events
                .get_or_create(&EventLabel { event: "added" })
                .inc_by(applied.added);
        }
        if applied.removed > 0 {
            self.lease_events
                .get_or_create(&EventLabel { event: "removed" })
                .inc_by(applied.removed);
        }
        if applied.snapshot {
            self.lease_events
                .get_or_create(&EventLabel { event: "snapshot" })
                .inc();
        }
    }

    /// Counts one loss of the own lease.
    pub fn record_own_lease_lost(&self, cause: &'static str) {
        self.own_lease_lost
            .get_or_create(&CauseLabel { cause })
            .inc();
    }

    /// Counts one re-acquisition of the same subnet.
    pub fn record_own_lease_reacquired(&self) {
        self.own_lease_reacquired
            .get_or_create(&SubnetLabel { subnet: "same" })
            .inc();
    }

    /// Counts one newly reported rejection.
    pub fn record_rejection(&self, reason: Reason) {
        self.peer_lease_rejections
            .get_or_create(&ReasonLabel {
                reason: reason.label(),
            })
            .inc();
    }

    /// Sets the per-reason gauge from one pass's rejections.
    pub fn set_rejected(&self, rejected: &[Rejection]) {
        for reason in Reason::ALL {
            let n = rejected.iter().filter(|r| r.reason == reason).count();
            self.peer_leases_rejected
                .get_or_create(&ReasonLabel {
                    reason: reason.label(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    pub fn set_lease_expiry(&self, expiration: Option<SystemTime>) {
        self.ops.set_lease_expiry(expiration);
        let secs = expiration
            .and_then(|e| e.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self.lease_expiry.set(secs);
    }

    /// Exports the lease store's count of skipped (unusable) lease records
    /// from now on: `flanneld_store_rejected_leases_total`.
    pub fn set_store_rejects(&self, read: Arc<dyn Fn() -> u64 + Send + Sync>) {
        match self.store_rejects.read.lock() {
            Ok(mut r) => *r = Some(read),
            Err(poisoned) => *poisoned.into_inner() = Some(read),
        }
    }

    /// The exposition text.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        encode_registry(&mut out, &self.registry)?;
        encode_registry(&mut out, &self.process_registry)?;
        encode_eof(&mut out)?;
        Ok(out)
    }
}

/// The lease store's count of records it skipped as unusable (the
/// Kubernetes Lease-object store: garbage, duplicates), read at scrape
/// time. Nothing is exported for stores that do not count.
#[derive(Default)]
struct StoreRejectsCollector {
    read: Mutex<Option<Arc<dyn Fn() -> u64 + Send + Sync>>>,
}

impl std::fmt::Debug for StoreRejectsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreRejectsCollector")
    }
}

impl Collector for StoreRejectsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let read = match self.read.lock() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let Some(read) = read else {
            return Ok(());
        };
        let counter = ConstCounter::new(read());
        let metric = encoder.encode_descriptor(
            "store_rejected_leases",
            "Lease records the store skipped as unusable (unreadable, or a second lease of one node), each distinct problem once",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconcile_shows_up_in_the_exposition() {
        let m = Metrics::new();
        let report = ReconcileReport {
            changes: vec![("route_add", 3), ("fdb_add", 3)],
            errors: vec![crate::backend::PeerError::NoVtepMac {
                subnet: "10.244.9.0/24".parse().unwrap(),
                public_ip: std::net::Ipv4Addr::new(198, 51, 100, 9),
            }],
            peers: 3,
            device_recreated: false,
        };
        m.record_reconcile("event", Duration::from_millis(2), &Ok(report));
        m.record_reconcile(
            "resync",
            Duration::from_millis(1),
            &Err(BackendError::Vanished { name: "x".into() }),
        );
        m.record_events(Applied {
            added: 3,
            removed: 1,
            snapshot: true,
            ..Applied::default()
        });
        m.record_own_lease_lost("deleted");
        m.record_own_lease_reacquired();
        m.set_lease_expiry(Some(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ));
        assert!(!m.encode().unwrap().contains("store_rejected_leases"));
        m.set_store_rejects(Arc::new(|| 3));
        let text = m.encode().unwrap();
        assert!(
            text.contains("flanneld_store_rejected_leases_total 3"),
            "{text}"
        );
        for want in [
            "flanneld_peers 3",
            "flanneld_lease_expiry_timestamp_seconds 1700000000",
            "flanneld_reconcile_runs_total{trigger=\"event\"} 1",
            "flanneld_reconcile_runs_total{trigger=\"resync\"} 1",
            "flanneld_reconcile_duration_seconds_count 2",
            "flanneld_reconcile_errors_total{kind=\"peer\"} 1",
            "flanneld_reconcile_errors_total{kind=\"pass\"} 1",
            "flanneld_netlink_operations_total{kind=\"route_add\"} 3",
            "flanneld_lease_events_total{event=\"added\"} 3",
            "flanneld_lease_events_total{event=\"removed\"} 1",
            "flanneld_lease_events_total{event=\"snapshot\"} 1",
            "flanneld_lease_renewals_total 0",
            "flanneld_own_lease_lost_total{cause=\"deleted\"} 1",
            "flanneld_own_lease_lost_total{cause=\"overwritten\"} 0",
            "flanneld_own_lease_reacquired_total{subnet=\"same\"} 1",
            "flanneld_lost_subnets 0",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("userspace"), "no datapath attached: {text}");
        // Every rejection reason is exported before any lease is rejected.
        assert!(text.contains("flanneld_peer_leases_rejected{reason=\"overlaps_own_subnet\"} 0"));
        assert!(text.contains("flanneld_peer_lease_rejections_total{reason=\"backend_data\"} 0"));
    }

    #[test]
    fn rejections_are_exported_by_reason() {
        let m = Metrics::new();
        let r = |reason| Rejection {
            subnet: "10.244.1.0/25".parse().unwrap(),
            public_ip: "198.51.100.9".parse().unwrap(),
            revision: 1,
            reason,
            detail: String::new(),
        };
        let now = [
            r(Reason::OverlapsOwn),
            r(Reason::OverlapsOwn),
            r(Reason::BackendData),
        ];
        m.set_rejected(&now);
        m.record_rejection(Reason::OverlapsOwn);
        let text = m.encode().unwrap();
        for want in [
            "flanneld_peer_leases_rejected{reason=\"overlaps_own_subnet\"} 2",
            "flanneld_peer_leases_rejected{reason=\"backend_data\"} 1",
            "flanneld_peer_leases_rejected{reason=\"outside_network\"} 0",
            "flanneld_peer_lease_rejections_total{reason=\"overlaps_own_subnet\"} 1",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        m.set_rejected(&[]);
        assert!(m
            .encode()
            .unwrap()
            .contains("flanneld_peer_leases_rejected{reason=\"overlaps_own_subnet\"} 0"));
    }

    #[test]
    fn datapath_counters_are_read_at_scrape_time() {
        use crate::userspace::counters::Dir;
        use crate::userspace::frame::Drop;
        let m = Metrics::new();
        let c = Arc::new(crate::userspace::counters::Counters::default());
        m.set_datapath(Some(c.clone()));
        c.ok(Dir::Rx, 5, 500);
        c.count_drop(Dir::Rx, Drop::WrongVni, 2);
        let text = m.encode().unwrap();
        for want in [
            "flanneld_userspace_packets_total{direction=\"rx\",result=\"delivered\"} 5",
            "flanneld_userspace_packets_total{direction=\"tx\",result=\"delivered\"} 0",
            "flanneld_userspace_packets_total{direction=\"rx\",result=\"dropped\",reason=\"wrong_vni\"} 2",
            "flanneld_userspace_packets_total{direction=\"tx\",result=\"dropped\",reason=\"no_peer\"} 0",
            "flanneld_userspace_bytes_total{direction=\"rx\"} 500",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        // Later increments show without re-registering anything.
        c.count_drop(Dir::Rx, Drop::WrongVni, 1);
        assert!(m.encode().unwrap().contains("reason=\"wrong_vni\"} 3"));
    }
}
