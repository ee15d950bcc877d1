//! The lease loop: start-up (config → backend.prepare → acquire → attach →
//! masquerade → list → reconcile → subnet.env → ready), then renewals, watch
//! batches and periodic resyncs until the process is stopped.
//!
//! Stopping is dropping the future (main does it on SIGTERM/SIGINT): nothing
//! is torn down and the lease is not released, so pod traffic keeps flowing
//! and a restarted daemon adopts the device and keeps its subnet.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::{FutureExt, StreamExt};
use ipnet::Ipv4Net;
use lease_store::subnet_env::{SubnetEnv, SubnetEnvIoError};
use lease_store::{
    AcquireRequest, Lease, LeaseAttrs, LeaseStore, LeaseWatch, NetworkConfig, Revision, StoreError,
};
use tracing::{debug, error, info, warn};

use super::health::Readiness;
use super::logs::{self, RateLimit, RejectLog};
use super::metrics::Metrics;
use super::peers::{Applied, OwnLease, PeerSet};
use super::renew::{renew_delay, retry_delay};
use super::validate::{self, Rules};
use crate::backend::{Backend, BackendError, LocalNode, Prepared};
use crate::masq::go_chains::GoChains;
use crate::masq::Masquerade;
use crate::netlink::events::{self, KernelEvents};
use crate::netlink::KernelRef;

/// What the loop needs from the command line.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    pub subnet_file: PathBuf,
    pub ip_masq: bool,
    pub renew_margin: Duration,
    pub resync_period: Duration,
    /// Reconcile on kernel notifications of deletions (`netlink::events`)
    /// in the daemon's namespace; off only for tests whose backend does
    /// not touch the kernel.
    pub kernel_events: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("network config {path}: {source}")]
    ConfigParse {
        path: String,
        source: lease_store::config::ConfigError,
    },
    #[error("the network config has no IPv4 Network: IPv6-only clusters are not supported by this daemon yet")]
    NoIpv4Network,
    #[error("the network config enables IPv6 (EnableIPv6), which this daemon does not program yet; set EnableIPv6 to false, or keep Go flannel on dual-stack nodes")]
    Ipv6Unsupported,
    #[error("lease store ({op}): {source}")]
    Store {
        op: &'static str,
        source: StoreError,
    },
    #[error("datapath ({step}): {source}")]
    Backend {
        step: &'static str,
        source: BackendError,
    },
    #[error("the store handed out a lease without an IPv4 subnet; check the network config (EnableIPv4)")]
    LeaseWithoutSubnet,
    #[error(transparent)]
    SubnetEnv(#[from] SubnetEnvIoError),
}

/// Errors worth retrying (the store is down, or full for now); the others
/// need the operator.
fn transient(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Unavailable { .. }
            | StoreError::Exhausted { .. }
            | StoreError::OutOfSubnets { .. }
            | StoreError::ConfigMissing(_)
            | StoreError::LeaseLost { .. }
            | StoreError::Io { .. }
    )
}

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

fn next_backoff(d: Duration) -> Duration {
    (d * 2).min(BACKOFF_MAX)
}

/// Calls `op` until it succeeds or fails with a non-transient error.
async fn retry<T, F, Fut>(what: &'static str, mut op: F) -> Result<T, DaemonError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut delay = BACKOFF_MIN;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if transient(&e) => {
                warn!(error = %logs::err(&e), retry_in_ms = ms(delay), "{what} failed; retrying");
                tokio::time::sleep(delay).await;
                delay = next_backoff(delay);
            }
            Err(source) => return Err(DaemonError::Store { op: what, source }),
        }
    }
}

/// The running daemon's state.
pub struct LeaseLoop {
    settings: LoopSettings,
    config: NetworkConfig,
    store: Arc<dyn LeaseStore>,
    backend: Box<dyn Backend>,
    masq: Option<Arc<dyn Masquerade>>,
    node: LocalNode,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    peers: PeerSet,
    network: Option<Ipv4Net>,
    prepared: Option<Prepared>,
    lease: Option<Lease>,
    subnet_env_written: bool,
    /// True once the peer set came from a listing: until then a reconcile
    /// would remove the entries of peers adopted from a previous run.
    have_view: bool,
    /// Kernel notifications of deletions of what we own (`None`: could not
    /// subscribe; the resync alone repairs then).
    kernel_events: Option<KernelEvents>,
    /// Where to subscribe for them (`None`: this namespace, over a
    /// connection of its own).
    kernel: Option<KernelRef>,
    /// Go flanneld's iptables chains still to retire (`None`: done, or
    /// `--keep-go-iptables`).
    go_chains: Option<GoChains>,
    /// Our masquerade rules are installed (Go's may go).
    masq_ok: bool,
    go_chains_kept_logged: bool,
    /// Rejected peer leases already reported.
    rejects: RejectLog,
    /// Repeated warnings held back.
    warn_limit: RateLimit,
    /// Our subnet, while another node holds it: not ready, asking for
    /// exactly this subnet again at each event on its key and each resync.
    lost: Option<Ipv4Net>,
    /// The ERROR about `lost` being held by another node was logged.
    held_reported: bool,
}

/// How long an identical warning is held back after it was logged.
const WARN_REPEAT_WINDOW: Duration = Duration::from_secs(60);

enum Wake {
    Stop,
    Renew,
    Watch(Option<lease_store::store::Result<lease_store::WatchUpdate>>),
    Resync,
    Rewatch,
    Kernel(Option<()>),
}

/// Time given to a burst of kernel notifications (a device deleted takes
/// its routes and neighbours with it) to arrive before the reconcile, so
/// it is one pass rather than several.
const KERNEL_SETTLE: Duration = Duration::from_millis(10);

/// The parts the loop drives, built by `wiring` from the flags.
pub struct Parts {
    pub config: NetworkConfig,
    pub store: Arc<dyn LeaseStore>,
    pub backend: Box<dyn Backend>,
    pub masq: Option<Arc<dyn Masquerade>>,
    pub node: LocalNode,
}

impl LeaseLoop {
    pub fn new(
        settings: LoopSettings,
        parts: Parts,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
    ) -> Self {
        let Parts {
            config,
            store,
            backend,
            masq,
            node,
        } = parts;
        LeaseLoop {
            settings,
            config,
            store,
            backend,
            masq,
            node,
            metrics,
            readiness,
            peers: PeerSet::new(None),
            network: None,
            prepared: None,
            lease: None,
            subnet_env_written: false,
            have_view: false,
            kernel_events: None,
            kernel: None,
            go_chains: None,
            masq_ok: false,
            go_chains_kept_logged: false,
            rejects: RejectLog::default(),
            warn_limit: RateLimit::new(WARN_REPEAT_WINDOW),
            lost: None,
            held_reported: false,
        }
    }

    /// Subscribes to kernel notifications through `kernel` (the handle
    /// the backend drives) instead of a connection of its own.
    pub fn with_kernel(mut self, kernel: KernelRef) -> Self {
        self.kernel = Some(kernel);
        self
    }

    /// Retires Go flanneld's iptables chains once this daemon's own rules
    /// are in place (`masq::go_chains`); `None` keeps them.
    pub fn with_go_chains(mut self, go_chains: Option<GoChains>) -> Self {
        self.go_chains = go_chains;
        self
    }

    /// Runs start-up and then the loop until `stop` resolves. Returns an
    /// error only for what retrying cannot fix.
    pub async fn run(
        mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), DaemonError> {
        let mut stop = std::pin::pin!(stop.fuse());
        let startup = self.start();
        let (mut watch, mut revision) = tokio::select! {
            r = startup => r?,
            _ = &mut stop => return Ok(()),
        };

        let mut renew_at = self.renew_deadline();
        let mut resync = tokio::time::interval(self.settings.resync_period);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.reset();
        let mut rewatch_delay = BACKOFF_MIN;
        let mut kernel = self.kernel_events.take();
        // Start-up could not list and watch: try again shortly.
        let mut rewatch_at = watch
            .is_none()
            .then(|| tokio::time::Instant::now() + BACKOFF_MIN);

        loop {
            let wake = tokio::select! {
                _ = &mut stop => Wake::Stop,
                _ = sleep_until_opt(renew_at) => Wake::Renew,
                item = next_opt(&mut watch) => Wake::Watch(item),
                _ = resync.tick() => Wake::Resync,
                _ = sleep_until_opt(rewatch_at) => Wake::Rewatch,
                ev = next_kernel(&mut kernel) => Wake::Kernel(ev),
            };
            match wake {
                Wake::Stop => return Ok(()),
                Wake::Renew => {
                    renew_at = match self.renew().await {
                        Ok(true) => self.renew_deadline(),
                        Ok(false) => {
                            let now = SystemTime::now();
                            let expiration = self.lease.as_ref().and_then(|l| l.expiration);
                            Some(tokio::time::Instant::now() + retry_delay(now, expiration))
                        }
                        Err(LeaseGone { holder }) => {
                            self.reacquire("renewal", Some(holder)).await?;
                            self.reconcile("lease").await;
                            self.renew_deadline()
                        }
                    };
                }
                Wake::Watch(Some(Ok(update))) => {
                    rewatch_delay = BACKOFF_MIN;
                    let mut applied = Applied::default();
                    revision = revision.max(update_revision(&update));
                    applied.merge(self.peers.apply(update));
                    // Drain whatever else is already queued so a burst (1,000
                    // peers joining) costs one reconcile, not one per event.
                    let mut ended = false;
                    if let Some(w) = watch.as_mut() {
                        tokio::task::yield_now().await;
                        while let Some(next) = w.next().now_or_never() {
                            match next {
                                Some(Ok(u)) => {
                                    revision = revision.max(update_revision(&u));
                                    applied.merge(self.peers.apply(u));
                                }
                                Some(Err(e)) => {
                                    warn!(error = %logs::err(&e), "lease watch failed; listing and watching again");
                                    ended = true;
                                    break;
                                }
                                None => {
                                    ended = true;
                                    break;
                                }
                            }
                        }
                    }
                    self.metrics.record_events(applied);
                    if let Some(what) = applied.own {
                        self.own_lease_changed(what).await?;
                        renew_at = self.renew_deadline();
                    }
                    debug!(
                        added = applied.added,
                        removed = applied.removed,
                        snapshot = applied.snapshot,
                        revision,
                        "lease events"
                    );
                    self.reconcile("event").await;
                    if ended {
                        watch = None;
                        rewatch_at = Some(tokio::time::Instant::now() + rewatch_delay);
                        rewatch_delay = next_backoff(rewatch_delay);
                    }
                }
                Wake::Watch(Some(Err(e))) => {
                    warn!(error = %logs::err(&e), retry_in_ms = ms(rewatch_delay), "lease watch failed; listing and watching again");
                    watch = None;
                    rewatch_at = Some(tokio::time::Instant::now() + rewatch_delay);
                    rewatch_delay = next_backoff(rewatch_delay);
                }
                Wake::Watch(None) => {
                    warn!(
                        retry_in_ms = ms(rewatch_delay),
                        "lease watch ended; listing and watching again"
                    );
                    watch = None;
                    rewatch_at = Some(tokio::time::Instant::now() + rewatch_delay);
                    rewatch_delay = next_backoff(rewatch_delay);
                }
                Wake::Rewatch => {
                    rewatch_at = None;
                    match self.relist_and_watch().await {
                        Ok((w, rev)) => {
                            watch = Some(w);
                            revision = rev;
                            if let Some(what) = self.peers.own_state() {
                                self.own_lease_changed(what).await?;
                                renew_at = self.renew_deadline();
                            }
                            self.reconcile("event").await;
                        }
                        Err(e) => {
                            warn!(error = %logs::err(&e), retry_in_ms = ms(rewatch_delay), "cannot list and watch leases; retrying");
                            rewatch_at = Some(tokio::time::Instant::now() + rewatch_delay);
                            rewatch_delay = next_backoff(rewatch_delay);
                        }
                    }
                }
                Wake::Kernel(Some(())) => {
                    tokio::time::sleep(KERNEL_SETTLE).await;
                    if let Some(k) = kernel.as_mut() {
                        k.drain();
                    }
                    self.reconcile("netlink").await;
                }
                Wake::Kernel(None) => {
                    warn!("kernel notifications ended; repairs wait for the resync");
                    kernel = None;
                }
                Wake::Resync => {
                    if let Some(subnet) = self.lost {
                        self.take_back(subnet).await?;
                        renew_at = self.renew_deadline();
                    }
                    self.reconcile("resync").await;
                    self.ensure_masquerade().await;
                    self.retire_go_chains().await;
                    if self.subnet_env_written {
                        // Someone removed or edited it: put it back.
                        if let Err(e) = self.ensure_subnet_env() {
                            self.warn_limited("cannot restore subnet.env", &e);
                        }
                    }
                }
            }
        }
    }

    /// Start-up up to the first reconcile; returns the watch and revision.
    async fn start(&mut self) -> Result<(Option<LeaseWatch>, Revision), DaemonError> {
        let config = self.config.clone();
        let network = config.network.ok_or(DaemonError::NoIpv4Network)?;
        // Refuse rather than half-work: a dual-stack lease whose IPv6 half
        // is never programmed would leave pods without IPv6 silently.
        if config.enable_ipv6 {
            return Err(DaemonError::Ipv6Unsupported);
        }
        self.network = Some(network);
        info!(
            iface = %self.node.iface_name,
            iface_addr = %self.node.iface_addr,
            public_ip = %self.node.public_ip,
            public_ipv6 = self.node.public_ipv6.map(tracing::field::display),
            mtu = self.node.iface_mtu,
            backend = %config.backend_type,
            %network,
            "starting"
        );
        let prepared = self
            .backend
            .prepare(&self.node, &config)
            .await
            .map_err(|source| DaemonError::Backend {
                step: "prepare",
                source,
            })?;
        self.prepared = Some(prepared);
        // The userspace datapath counts its packets; /metrics reads them.
        self.metrics.set_datapath(self.backend.stats());
        // Deletions by hand are repaired on notice, not at the next resync.
        if self.settings.kernel_events {
            let subscribed = match &self.kernel {
                Some(k) => k.subscribe(network),
                None => events::subscribe(network),
            };
            match subscribed {
                Ok(k) => self.kernel_events = Some(k),
                Err(e) => {
                    warn!(error = %logs::err(&e), "cannot watch the kernel for deletions; repairs wait for the resync")
                }
            }
        }

        let previous = self.previous_subnet(network);
        self.acquire(previous).await?;

        let (watch, revision) = match self.relist_and_watch().await {
            Ok((w, r)) => (Some(w), r),
            Err(e) => {
                // Not fatal: the loop lists and watches again shortly.
                warn!(error = %logs::err(&e), "cannot list and watch leases yet; retrying");
                (None, 0)
            }
        };
        self.reconcile("startup").await;
        Ok((watch, revision))
    }
}

/// Parses net-conf.json as read once at start-up from `file` (its path
/// and text: `wiring::read_net_conf`) when given, else reads it from the
/// store (waiting for it to appear, like flannel).
pub async fn load_config(
    file: Option<(&std::path::Path, &str)>,
    store: &Arc<dyn LeaseStore>,
) -> Result<NetworkConfig, DaemonError> {
    {
        match file {
            Some((path, text)) => {
                NetworkConfig::parse(text).map_err(|source| DaemonError::ConfigParse {
                    path: path.display().to_string(),
                    source,
                })
            }
            None => {
                let store = store.clone();
                retry("reading the network config", || {
                    let store = store.clone();
                    async move { store.network_config().await }
                })
                .await
            }
        }
    }
}

impl LeaseLoop {
    /// The subnet recorded in subnet.env by a previous run, so a restart
    /// keeps its subnet even if its lease expired meanwhile.
    fn previous_subnet(&self, network: Ipv4Net) -> Option<Ipv4Net> {
        match SubnetEnv::read(&self.settings.subnet_file) {
            Ok(env) => {
                let subnet = env.subnet?.trunc();
                if network.contains(&subnet) {
                    info!(%subnet, "previous subnet found in {}", self.settings.subnet_file.display());
                    Some(subnet)
                } else {
                    warn!(%subnet, %network, "previous subnet lies outside the network; ignoring it");
                    None
                }
            }
            Err(SubnetEnvIoError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                None
            }
            Err(e) => {
                warn!(error = %logs::err(&e), "ignoring unreadable subnet.env");
                None
            }
        }
    }

    fn attrs(&self) -> LeaseAttrs {
        let prepared = self.prepared.as_ref();
        LeaseAttrs {
            public_ip: self.node.public_ip,
            // Set only with an IPv6 underlay: the address peers tunnel to.
            public_ipv6: self.node.public_ipv6,
            backend_type: prepared.map(|p| p.backend_type.clone()).unwrap_or_default(),
            backend_data: prepared.and_then(|p| p.backend_data.clone()),
            backend_v6_data: None,
        }
    }

    /// Acquires a lease and attaches the backend to it.
    async fn acquire(&mut self, previous: Option<Ipv4Net>) -> Result<(), DaemonError> {
        let req = AcquireRequest {
            attrs: self.attrs(),
            previous_subnet: previous,
            previous_ipv6_subnet: None,
        };
        let store = self.store.clone();
        let lease = retry("acquiring a lease", || {
            let store = store.clone();
            let req = req.clone();
            async move { store.acquire(&req).await }
        })
        .await?;
        self.acquired(lease).await
    }

    /// Takes `lease` as ours and attaches the backend to it.
    async fn acquired(&mut self, lease: Lease) -> Result<(), DaemonError> {
        let subnet = lease.subnet.ok_or(DaemonError::LeaseWithoutSubnet)?;
        self.metrics.lease_acquisitions.inc();
        self.metrics.set_lease_expiry(lease.expiration);
        self.metrics.ops.set_lease(Some(subnet), lease.expiration);
        info!(%subnet, expires = %logs::expiry(lease.expiration), "lease acquired");
        self.readiness.set_lease(true);
        self.peers.set_own_lease(&lease);

        self.backend
            .attach(&lease)
            .await
            .map_err(|source| DaemonError::Backend {
                step: "attach",
                source,
            })?;
        self.lease = Some(lease);
        self.ensure_masquerade().await;
        self.retire_go_chains().await;
        Ok(())
    }

    /// Removes Go flanneld's chains that nothing needs any more; those
    /// kept (e.g. FLANNEL-FWD under a FORWARD DROP policy) are retried at
    /// every resync, so the warning is logged once.
    async fn retire_go_chains(&mut self) {
        let Some(go) = self.go_chains.clone() else {
            return;
        };
        let masq_ready = self.masq.is_none() || self.masq_ok;
        // FLANNEL-FWD goes once our own accepts are in iptables' FORWARD
        // (`masq::forward`), or where the FORWARD policy accepts anyway.
        let forward_ready =
            self.masq_ok && self.masq.as_ref().is_some_and(|m| m.forward_installed());
        let result =
            tokio::task::spawn_blocking(move || go.retire(masq_ready, forward_ready)).await;
        match result {
            Ok(Ok(outcome)) => {
                for (flavour, chain) in &outcome.removed {
                    info!(%flavour, chain, "removed Go flanneld's iptables chain and its jumps (our rules are in place)");
                }
                self.metrics
                    .go_iptables_chains
                    .set(i64::try_from(outcome.kept.len()).unwrap_or(i64::MAX));
                if outcome.done() {
                    self.go_chains = None;
                } else if !self.go_chains_kept_logged {
                    self.go_chains_kept_logged = true;
                    for (flavour, chain, why) in &outcome.kept {
                        warn!(%flavour, chain, reason = %why, "keeping Go flanneld's iptables chain for now");
                    }
                }
            }
            Ok(Err(e)) => {
                // Once: it is retried at every resync.
                if !self.go_chains_kept_logged {
                    self.go_chains_kept_logged = true;
                    warn!(error = %logs::err(&e), "cannot remove Go flanneld's iptables chains; retrying at every resync")
                }
            }
            Err(e) => self.warn_limited(
                "Go iptables cleanup task failed; retrying at the next resync",
                &e,
            ),
        }
    }

    /// The watch saw our own key deleted, expired or written by another
    /// node: take the lease back at once rather than at the next renewal
    /// (a day away with the default TTL), while peers already dropped our
    /// routes and the subnet is free for anyone.
    async fn own_lease_changed(&mut self, what: OwnLease) -> Result<(), DaemonError> {
        let holder = match what {
            OwnLease::Deleted => None,
            OwnLease::Overwritten { holder } => Some(holder.to_string()),
        };
        self.reacquire(what.label(), holder).await
    }

    /// Re-acquires after our lease was lost (`cause`: deleted, overwritten,
    /// renewal): exactly the same subnet, never another one, since pods on
    /// this node hold addresses in it. Not ready until it is back; while
    /// another node holds it, see `take_back`.
    async fn reacquire(
        &mut self,
        cause: &'static str,
        holder: Option<String>,
    ) -> Result<(), DaemonError> {
        let Some(old) = self.lease.as_ref().and_then(|l| l.subnet) else {
            return Ok(());
        };
        // Already lost: this is one more change of that key, i.e. a retry.
        if self.lost.is_none() {
            self.metrics.record_own_lease_lost(cause);
            warn!(
                cause,
                subnet = %old,
                holder = holder
                    .as_deref()
                    .map(|h| tracing::field::display(logs::err(h))),
                "this node's lease is no longer in the store as ours; re-acquiring the same subnet"
            );
        }
        self.readiness.set_lease(false);
        self.metrics.ready.set(0);
        self.take_back(old).await
    }

    /// Asks the store for exactly `subnet` when the view shows it free;
    /// while another node holds it, the node stays not ready with the
    /// datapath and subnet.env it has (switching subnets would strand
    /// every pod on the node silently), says so once at ERROR, shows it in
    /// `flanneld_lost_subnets`, and tries again at the next event on the
    /// key or resync. Errors only for what retrying cannot fix.
    async fn take_back(&mut self, subnet: Ipv4Net) -> Result<(), DaemonError> {
        let attrs = self.attrs();
        let mut holder = lease_store::alloc::holder_of(self.peers.all(), &attrs, subnet)
            .map(|l| l.attrs.public_ip.to_string());
        if holder.is_none() {
            let req = AcquireRequest {
                attrs,
                previous_subnet: Some(subnet),
                previous_ipv6_subnet: None,
            };
            match self.store.acquire(&req).await {
                Ok(lease) if lease.subnet == Some(subnet) => {
                    self.acquired(lease).await?;
                    self.lost = None;
                    self.held_reported = false;
                    self.metrics.lost_subnets.set(0);
                    self.metrics.record_own_lease_reacquired();
                    info!(%subnet, "lease re-acquired with the same subnet; pods keep their addresses");
                    self.metrics.ready.set(i64::from(self.readiness.is_ready()));
                    return Ok(());
                }
                Ok(other) => {
                    // Taken between our view and the store's write: give
                    // the other subnet back rather than switch to it.
                    if let Err(e) = self.store.release(&other).await {
                        self.warn_limited("cannot give back a subnet acquired by mistake", &e);
                    }
                    holder = Some(String::from("another node"));
                }
                Err(e) => {
                    // The store is unreachable: try again at the resync.
                    self.lost = Some(subnet);
                    self.warn_limited(
                        "cannot re-acquire this node's subnet; retrying at the next resync",
                        &e,
                    );
                    return Ok(());
                }
            }
        }
        self.lost = Some(subnet);
        if !self.held_reported {
            self.held_reported = true;
            self.metrics.lost_subnets.set(1);
            error!(
                %subnet,
                holder = holder.as_deref().map(|h| tracing::field::display(logs::err(h))),
                "this node's subnet is held by another node: this node stays NOT READY and keeps its pods' addresses, which peers no longer reach (pods here are cut off); no other subnet is taken while running. To fix: delete the other node's lease on this subnet (it is taken back at once), or drain this node and restart flanneld to get a new subnet"
            );
        } else {
            debug!(%subnet, holder = holder.as_deref().unwrap_or_default(), "own subnet still held by another node");
        }
        Ok(())
    }

    async fn ensure_masquerade(&mut self) {
        let (Some(masq), Some(network), Some(subnet)) = (
            self.masq.clone(),
            self.network,
            self.lease.as_ref().and_then(|l| l.subnet),
        ) else {
            return;
        };
        // The driver runs `nft`: keep it off the async thread.
        let result = tokio::task::spawn_blocking(move || masq.apply(&[network], subnet)).await;
        self.masq_ok = matches!(result, Ok(Ok(())));
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.warn_limited(
                "cannot install the masquerade rules; retrying at the next resync",
                &e,
            ),
            Err(e) => self.warn_limited("masquerade task failed; retrying at the next resync", &e),
        }
    }

    async fn relist_and_watch(&mut self) -> Result<(LeaseWatch, Revision), StoreError> {
        let (leases, revision) = self.store.list().await?;
        let applied = self.peers.replace(leases);
        self.have_view = true;
        self.metrics.record_events(applied);
        // Our own key too (no `own` filter): its deletion or takeover must
        // be seen now, not at the next renewal.
        let watch = self.store.watch(revision, None).await?;
        debug!(
            revision,
            peers = self.peers.len(),
            "listed leases and watching"
        );
        Ok((watch, revision))
    }

    /// One reconcile pass; writes subnet.env after the first good one.
    async fn reconcile(&mut self, trigger: &'static str) {
        if !self.have_view {
            debug!(trigger, "no lease listing yet; not reconciling");
            return;
        }
        let peers = self.select_peers();
        let start = Instant::now();
        let result = self.backend.reconcile(&peers).await;
        let took = start.elapsed();
        self.metrics.record_reconcile(trigger, took, &result);
        if let Ok(report) = &result {
            self.metrics.ops.set_peers(peers.len(), report.errors.len());
        }
        match &result {
            Ok(report) => {
                let changed: u64 = report.changes.iter().map(|(_, n)| n).sum();
                if changed > 0 || !report.errors.is_empty() || report.device_recreated {
                    info!(
                        trigger,
                        peers = report.peers,
                        changes = %logs::changes(&report.changes),
                        device_recreated = report.device_recreated,
                        took_ms = logs::millis(took),
                        "reconciled"
                    );
                } else {
                    debug!(
                        trigger,
                        peers = report.peers,
                        took_ms = logs::millis(took),
                        "reconciled, nothing to change"
                    );
                }
                for e in &report.errors {
                    self.warn_limited("peer not programmed", e);
                }
            }
            Err(e) => {
                self.warn_limited("reconcile failed; retrying at the next event or resync", e)
            }
        }
        self.readiness.set_datapath(result.is_ok());
        if result.is_ok() && !self.subnet_env_written && self.lease.is_some() {
            match self.ensure_subnet_env() {
                Ok(()) => {
                    self.subnet_env_written = true;
                    info!(path = %self.settings.subnet_file.display(), "subnet.env written; node ready");
                }
                Err(e) => {
                    self.warn_limited("cannot write subnet.env; retrying at the next resync", &e)
                }
            }
        }
        self.metrics.ready.set(i64::from(self.readiness.is_ready()));
    }

    /// The peers to program: the lease table checked against net-conf and
    /// this node (`validate`). A rejected lease is logged and counted once
    /// per lease and reason; the gauge shows what is rejected right now.
    fn select_peers(&mut self) -> Vec<crate::backend::Peer> {
        let Some(rules) = self.rules() else {
            return Vec::new();
        };
        let selection = validate::select(self.peers.leases(), &rules);
        for r in self.rejects.fresh(&selection.rejected) {
            warn!(
                subnet = %r.subnet,
                public_ip = %r.public_ip,
                revision = r.revision,
                reason = r.reason.label(),
                detail = %r.detail,
                "peer lease rejected; not programmed (logged once until it changes)"
            );
            self.metrics.record_rejection(r.reason);
        }
        self.metrics.set_rejected(&selection.rejected);
        selection.accepted
    }

    fn rules(&self) -> Option<Rules> {
        let own_subnet = self.lease.as_ref().and_then(|l| l.subnet);
        Some(Rules {
            network: self.network?,
            subnet_len: validate::expected_len(self.config.subnet_len, own_subnet),
            own_subnet,
            own_public_ip: self.node.public_ip,
            own_public_ipv6: self.node.public_ipv6,
            backend_type: self.prepared.as_ref()?.backend_type.clone(),
        })
    }

    /// A warning whose text repeats (the same peer failing on every pass,
    /// the store down for minutes): once a minute per distinct text, with
    /// the number held back.
    fn warn_limited(&mut self, what: &'static str, error: &dyn std::fmt::Display) {
        let text = format!("{what}: {}", logs::err(error));
        if let Some(held_back) = self.warn_limit.allow(&text, std::time::Instant::now()) {
            if held_back > 0 {
                warn!(error = %logs::err(error), repeated = held_back, "{what}");
            } else {
                warn!(error = %logs::err(error), "{what}");
            }
        }
    }

    /// Writes subnet.env unless it already says what it should.
    fn ensure_subnet_env(&mut self) -> Result<(), SubnetEnvIoError> {
        let (Some(network), Some(subnet), Some(prepared)) = (
            self.network,
            self.lease.as_ref().and_then(|l| l.subnet),
            self.prepared.as_ref(),
        ) else {
            return Ok(());
        };
        let want =
            SubnetEnv::for_lease_v4(vec![network], subnet, prepared.mtu, self.settings.ip_masq);
        let current = SubnetEnv::read(&self.settings.subnet_file).ok();
        if current.as_ref() != Some(&want) {
            want.write_atomic(&self.settings.subnet_file)?;
        }
        self.readiness.set_subnet_env(true);
        Ok(())
    }

    fn renew_deadline(&self) -> Option<tokio::time::Instant> {
        // While another node holds our subnet there is nothing to renew
        // (it would fail at once, in a loop); the retries take it back.
        if self.lost.is_some() {
            return None;
        }
        let expiration = self.lease.as_ref()?.expiration;
        let delay = renew_delay(SystemTime::now(), expiration, self.settings.renew_margin)?;
        Some(tokio::time::Instant::now() + delay)
    }

    /// Renews the lease: `Ok(true)` renewed, `Ok(false)` failed (retry),
    /// `Err(LeaseGone)` the subnet went to another node.
    async fn renew(&mut self) -> Result<bool, LeaseGone> {
        let Some(lease) = self.lease.clone() else {
            return Ok(false);
        };
        match self.store.renew(&lease).await {
            Ok(renewed) => {
                self.metrics.lease_renewals.inc();
                self.metrics.set_lease_expiry(renewed.expiration);
                debug!(expires = %logs::expiry(renewed.expiration), "lease renewed");
                self.lease = Some(renewed);
                Ok(true)
            }
            Err(StoreError::LeaseLost { key, holder }) => {
                self.metrics.lease_renewal_failures.inc();
                warn!(key = %logs::err(&key), holder = %logs::err(&holder), "lease lost to another node");
                Err(LeaseGone {
                    holder: holder.to_string(),
                })
            }
            Err(e) => {
                self.metrics.lease_renewal_failures.inc();
                self.warn_limited("lease renewal failed; retrying", &e);
                Ok(false)
            }
        }
    }
}

struct LeaseGone {
    holder: String,
}

/// A duration as whole milliseconds, for log fields.
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn update_revision(u: &lease_store::WatchUpdate) -> Revision {
    match u {
        lease_store::WatchUpdate::Events { revision, .. }
        | lease_store::WatchUpdate::Snapshot { revision, .. } => *revision,
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn next_kernel(kernel: &mut Option<KernelEvents>) -> Option<()> {
    match kernel.as_mut() {
        Some(k) => k.next().await,
        None => std::future::pending().await,
    }
}

async fn next_opt(
    watch: &mut Option<LeaseWatch>,
) -> Option<lease_store::store::Result<lease_store::WatchUpdate>> {
    match watch.as_mut() {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_outages_are_retried_and_bad_data_is_not() {
        let unavailable = StoreError::Unavailable {
            op: "get",
            reason: "connection refused".into(),
        };
        assert!(transient(&unavailable));
        assert!(transient(&StoreError::ConfigMissing(
            "/coreos.com/network/config".into()
        )));
        let decode = StoreError::Decode {
            key: "k".into(),
            reason: "bad json".into(),
        };
        assert!(!transient(&decode));
        assert!(!transient(&StoreError::NotFound("k".into())));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(next_backoff(BACKOFF_MIN), Duration::from_secs(1));
        assert_eq!(next_backoff(Duration::from_secs(20)), BACKOFF_MAX);
        assert_eq!(next_backoff(BACKOFF_MAX), BACKOFF_MAX);
    }

    #[tokio::test]
    async fn retry_waits_out_transient_errors_only() {
        let mut calls = 0;
        let r: Result<u32, DaemonError> = retry("test", || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(StoreError::Unavailable {
                        op: "get",
                        reason: "down".into(),
                    })
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
        let r: Result<u32, DaemonError> =
            retry("test", || async { Err(StoreError::NotFound("k".into())) }).await;
        assert!(matches!(r, Err(DaemonError::Store { op: "test", .. })));
    }
}
