//! The embedded lease store: one JSON file on the local disk, shared by the
//! daemons of one host (the local lab runs one daemon per simulated node).
//! SINGLE-HOST ONLY: it relies on flock and atomic rename on one file
//! system; nodes on different machines need etcd.
//!
//! Semantics match the etcd store: leases expire after the TTL unless
//! renewed (expired leases are removed, and reported as `Removed`, on the
//! next access or watcher poll), reservations never expire, every change
//! gets a revision, and a watch from a revision older than the retained
//! change log starts with a snapshot.
//!
//! Usage: `EmbeddedStore::init(path, net_conf_json)` once writes the
//! network config into the file (creating it, or replacing the config of
//! an existing file and keeping its leases); then every daemon opens it
//! with `EmbeddedStore::open(path, ttl)`. Watchers (in any process) are
//! woken by inotify on the file's directory when a writer renames a new
//! version into place; a slow poll of the file's inode/mtime/size (1 s,
//! `with_poll_interval`) covers file systems without inotify, and a timer
//! to the earliest lease expiration covers TTL expiry, which writes nothing.

mod file;
mod notify;
pub mod state;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ipnet::{Ipv4Net, Ipv6Net};

use self::state::{Since, State, DEFAULT_LOG_LIMIT};
use crate::alloc::{self, Source};
use crate::config::{ConfigError, NetworkConfig};
use crate::lease::{Lease, LeaseAttrs};
use crate::store::{
    AcquireRequest, LeaseStore, LeaseWatch, Result, Revision, StoreError, WatchUpdate,
};

/// How often a watcher checks the file when no inotify event came (file
/// systems without inotify, e.g. NFS; inotify unavailable). Changes are
/// normally pushed by inotify long before this.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The first retry delay after a passing I/O error in a watch.
const RETRY_BACKOFF: Duration = Duration::from_millis(150);
/// A watcher re-reads the file at least this often, in case two writes
/// left the same fingerprint.
const FORCE_READ: Duration = Duration::from_secs(2);

/// A client of one lease file. Cheap to clone; safe to share.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    path: PathBuf,
    ttl: Duration,
    log_limit: usize,
    poll_interval: Duration,
}

impl EmbeddedStore {
    /// Writes `net_conf` (validated first) into the file at `path`,
    /// creating it if needed; existing leases are kept.
    pub async fn init(path: impl AsRef<Path>, net_conf: &str) -> Result<()> {
        NetworkConfig::parse(net_conf)?;
        let path = path.as_ref().to_path_buf();
        let conf = net_conf.to_string();
        blocking(move || file::init(&path, &conf)).await
    }

    /// Opens the store at `path`; leases this client writes live `ttl`
    /// unless renewed. `ConfigMissing` when the file was never initialised.
    pub async fn open(path: impl AsRef<Path>, ttl: Duration) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let p = path.clone();
        blocking(move || file::read(&p)).await?;
        Ok(EmbeddedStore {
            path,
            ttl,
            log_limit: DEFAULT_LOG_LIMIT,
            poll_interval: POLL_INTERVAL,
        })
    }

    /// Keeps only the last `n` changes for watch-from-revision (default
    /// 1000); older revisions get a snapshot.
    pub fn with_log_limit(mut self, n: usize) -> Self {
        self.log_limit = n.max(1);
        self
    }

    /// How often watchers from this client check the file without an
    /// inotify event (default [`POLL_INTERVAL`]; at least 10 ms).
    pub fn with_poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every.max(Duration::from_millis(10));
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Drops the change log: watchers from any earlier revision resync
    /// from a snapshot. For tests and for shrinking the file.
    pub async fn compact(&self) -> Result<()> {
        self.update(|s, _| {
            s.compact();
            Ok(())
        })
        .await
    }

    /// Runs `f` on the state under the file lock, after removing expired
    /// leases; `f` gets the parsed config.
    async fn update<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State, Ctx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let path = self.path.clone();
        let ctx = Ctx {
            ttl: self.ttl,
            log_limit: self.log_limit,
            now: SystemTime::now(),
        };
        blocking(move || {
            file::update(&path, |s| {
                s.expire(ctx.now, ctx.log_limit);
                f(s, ctx)
            })
        })
        .await
    }
}

#[derive(Debug, Clone, Copy)]
struct Ctx {
    ttl: Duration,
    log_limit: usize,
    now: SystemTime,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(StoreError::Unavailable {
            op: "embedded store",
            reason: format!("worker thread failed: {e}"),
        }),
    }
}

fn config_of(s: &State) -> Result<NetworkConfig> {
    Ok(NetworkConfig::parse(&s.config)?)
}

fn leases_of(s: &State, path: &Path) -> Result<Vec<Lease>> {
    s.leases().map_err(|e| StoreError::Decode {
        key: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn lost(key: &str, holder: &LeaseAttrs) -> StoreError {
    StoreError::LeaseLost {
        key: key.to_string(),
        holder: holder.public_ip,
    }
}

#[async_trait::async_trait]
impl LeaseStore for EmbeddedStore {
    async fn network_config(&self) -> Result<NetworkConfig> {
        let path = self.path.clone();
        let s = blocking(move || file::read(&path)).await?;
        config_of(&s)
    }

    async fn acquire(&self, req: &AcquireRequest) -> Result<Lease> {
        let req = req.clone();
        let path = self.path.clone();
        self.update(move |s, ctx| {
            let cfg = config_of(s)?;
            let leases = leases_of(s, &path)?;
            let (mut lease, plan) = alloc::choose_plan(&cfg, &leases, &req)?;
            for stale in &plan.stale_own {
                s.delete(&stale.key(), ctx.log_limit);
            }
            lease.expiration = match plan.source {
                Source::Own { reservation: true } => None,
                _ => Some(ctx.now + ctx.ttl),
            };
            lease.revision = s.put(&lease.key(), &lease.attrs, lease.expiration, ctx.log_limit);
            Ok(lease)
        })
        .await
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease> {
        let lease = lease.clone();
        self.update(move |s, ctx| {
            let key = lease.key();
            let expiration = ctx.now + ctx.ttl;
            match s.leases.get(&key).cloned() {
                Some(r) if !alloc::same_node(&r.attrs, &lease.attrs) => Err(lost(&key, &r.attrs)),
                Some(r) if r.expires_ms.is_none() => Ok(Lease {
                    expiration: None,
                    revision: r.revision,
                    ..lease
                }),
                Some(r) if r.attrs != lease.attrs => {
                    // Someone rewrote our value: put ours back.
                    let revision = s.put(&key, &lease.attrs, Some(expiration), ctx.log_limit);
                    Ok(Lease {
                        expiration: Some(expiration),
                        revision,
                        ..lease
                    })
                }
                Some(r) => {
                    s.touch(&key, expiration);
                    Ok(Lease {
                        expiration: Some(expiration),
                        revision: r.revision,
                        ..lease
                    })
                }
                None => {
                    // Vanished (expired, or deleted by hand): take it back
                    // unless another node holds the subnet now.
                    if let Some((k, r)) = s.holder(lease.subnet, lease.ipv6_subnet) {
                        return Err(lost(k, &r.attrs));
                    }
                    let revision = s.put(&key, &lease.attrs, Some(expiration), ctx.log_limit);
                    Ok(Lease {
                        expiration: Some(expiration),
                        revision,
                        ..lease
                    })
                }
            }
        })
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let lease = lease.clone();
        self.update(move |s, ctx| {
            let key = lease.key();
            match s.leases.get(&key) {
                None => Err(StoreError::NotFound(key)),
                Some(r) if !alloc::same_node(&r.attrs, &lease.attrs) => Err(lost(&key, &r.attrs)),
                // An operator's reservation outlives the node's lease.
                Some(r) if r.expires_ms.is_none() => Ok(()),
                Some(_) => {
                    s.delete(&key, ctx.log_limit);
                    Ok(())
                }
            }
        })
        .await
    }

    async fn reserve(
        &self,
        subnet: Option<Ipv4Net>,
        ipv6_subnet: Option<Ipv6Net>,
        attrs: &LeaseAttrs,
    ) -> Result<Lease> {
        let attrs = attrs.clone();
        self.update(move |s, ctx| {
            let cfg = config_of(s)?;
            let key = crate::key::encode(subnet, ipv6_subnet);
            if !cfg.fits(subnet, ipv6_subnet) {
                return Err(StoreError::Config(ConfigError::Invalid(format!(
                    "cannot reserve {key}: it is not one of the network's subnets (check Network, SubnetLen, SubnetMin/SubnetMax and the IPv6 settings)"
                ))));
            }
            if let Some((k, r)) = s.holder(subnet, ipv6_subnet) {
                if !alloc::same_node(&r.attrs, &attrs) {
                    return Err(StoreError::SubnetTaken {
                        key: k.clone(),
                        holder: r.attrs.public_ip,
                    });
                }
                if *k != key {
                    let k = k.clone();
                    s.delete(&k, ctx.log_limit);
                }
            }
            let revision = s.put(&key, &attrs, None, ctx.log_limit);
            Ok(Lease {
                subnet,
                ipv6_subnet,
                attrs,
                expiration: None,
                revision,
            })
        })
        .await
    }

    async fn unreserve(
        &self,
        subnet: Option<Ipv4Net>,
        ipv6_subnet: Option<Ipv6Net>,
    ) -> Result<Lease> {
        self.update(move |s, ctx| {
            let key = crate::key::encode(subnet, ipv6_subnet);
            let Some(r) = s.leases.get(&key) else {
                return Err(StoreError::NotFound(key));
            };
            if r.expires_ms.is_some() {
                return Err(StoreError::NotReserved {
                    key,
                    holder: r.attrs.public_ip,
                });
            }
            let removed = Lease {
                subnet,
                ipv6_subnet,
                attrs: r.attrs.clone(),
                expiration: None,
                revision: r.revision,
            };
            s.delete(&key, ctx.log_limit);
            Ok(removed)
        })
        .await
    }

    async fn list(&self) -> Result<(Vec<Lease>, Revision)> {
        let path = self.path.clone();
        self.update(move |s, _| Ok((leases_of(s, &path)?, s.revision)))
            .await
    }

    async fn watch(&self, from: Revision, own: Option<Lease>) -> Result<LeaseWatch> {
        // Registered before the first read, so no change can slip between.
        let notify = match notify::DirNotify::new(&self.path) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, poll_ms = u64::try_from(self.poll_interval.as_millis()).unwrap_or(u64::MAX), "lease watch: no inotify, polling");
                None
            }
        };
        let w = Watcher {
            notify,
            store: self.clone(),
            from,
            own: own.map(|l| l.key()),
            stamp: None,
            last_read: None,
            next_expiry: None,
        };
        Ok(Box::pin(futures::stream::unfold(Some(w), |w| async move {
            let mut w = w?;
            let mut backoff = RETRY_BACKOFF;
            loop {
                match w.next().await {
                    Ok(u) => return Some((Ok(u), Some(w))),
                    // A passing I/O problem (disk full, a slow file system):
                    // retry with backoff rather than end the watch.
                    Err(e @ (StoreError::Io { .. } | StoreError::Unavailable { .. })) => {
                        tracing::warn!(path = %w.store.path.display(), error = %e, "lease watch: retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                    // The file is gone or unreadable: report it and end.
                    Err(e) => return Some((Err(e), None)),
                }
            }
        })))
    }
}

/// A watch's position: woken by inotify, the poll timer or the next expiry.
struct Watcher {
    store: EmbeddedStore,
    /// None when inotify is unavailable or its watch ended: poll only.
    notify: Option<notify::DirNotify>,
    from: Revision,
    own: Option<String>,
    stamp: Option<(u64, i64, i64, u64)>,
    last_read: Option<tokio::time::Instant>,
    next_expiry: Option<SystemTime>,
}

impl Watcher {
    /// Waits for the next non-empty update.
    async fn next(&mut self) -> Result<WatchUpdate> {
        // The first call, and any call after an inotify event, reads.
        let mut pushed = false;
        loop {
            let path = self.store.path.clone();
            let stamp = blocking(move || Ok(file::stamp(&path))).await?;
            let expired = self.next_expiry.is_some_and(|t| SystemTime::now() >= t);
            let stale = self.last_read.is_none_or(|t| t.elapsed() >= FORCE_READ);
            if !pushed && stamp == self.stamp && stamp.is_some() && !expired && !stale {
                pushed = self.wait().await;
                continue;
            }
            self.stamp = stamp;
            self.last_read = Some(tokio::time::Instant::now());
            let state = if expired {
                // Nobody else may be writing: carry out the expiry ourselves
                // so that peers' removals are seen when they are due.
                self.store.update(|s, _| Ok(s.clone())).await?
            } else {
                let path = self.store.path.clone();
                blocking(move || file::read(&path)).await?
            };
            self.next_expiry = state.next_expiry();
            let since =
                state
                    .since(self.from, self.own.as_deref())
                    .map_err(|e| StoreError::Decode {
                        key: self.store.path.display().to_string(),
                        reason: e.to_string(),
                    })?;
            match since {
                Since::Snapshot { leases, revision } => {
                    self.from = revision;
                    return Ok(WatchUpdate::Snapshot { leases, revision });
                }
                Since::Events { events, revision } => {
                    self.from = revision;
                    if !events.is_empty() {
                        return Ok(WatchUpdate::Events { events, revision });
                    }
                }
            }
            pushed = self.wait().await;
        }
    }

    /// Sleeps until an inotify event (true), the poll interval or the next
    /// lease expiration (false), whichever comes first.
    async fn wait(&mut self) -> bool {
        let mut nap = self.store.poll_interval;
        if let Some(t) = self.next_expiry {
            // 1 ms past the expiry so that the check after waking sees it due.
            let until = t.duration_since(SystemTime::now()).unwrap_or_default();
            nap = nap.min(until + Duration::from_millis(1));
        }
        let Some(n) = &self.notify else {
            tokio::time::sleep(nap).await;
            return false;
        };
        match tokio::time::timeout(nap, n.changed()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(path = %self.store.path.display(), error = %e, poll_ms = u64::try_from(self.store.poll_interval.as_millis()).unwrap_or(u64::MAX), "lease watch: inotify ended, polling");
                self.notify = None;
                false
            }
            Err(_elapsed) => false,
        }
    }
}
