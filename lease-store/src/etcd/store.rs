//! `EtcdStore`: the `LeaseStore` on etcd v3, in Go flannel's layout. Creation
//! is a transaction on `version(key) == 0`, renewal a lease keep-alive (no
//! write, so 5,000 watchers are not woken every renewal), lists one paginated
//! range read at a single revision.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, EventType, GetOptions, KeyValue,
    LeaseTimeToLiveOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use futures::StreamExt;
use ipnet::{Ipv4Net, Ipv6Net};

use super::codec::{self, Keys};
use super::options::{EtcdOptions, OptionsError};
use crate::alloc::Source;
use crate::config::{ConfigError, NetworkConfig};
use crate::lease::{Lease, LeaseAttrs};
use crate::store::{AcquireRequest, LeaseStore, LeaseWatch, Result, Revision, StoreError};

/// How many creation races `acquire` may lose before giving up (flannel's).
pub const ACQUIRE_ATTEMPTS: u32 = 10;
/// Keys per page of a list (a 5,000-lease table is 5 round trips, each a
/// few hundred KiB, well under gRPC's 4 MiB message limit).
const PAGE: i64 = 1000;
/// Concurrent TTL look-ups when listing.
const TTL_LOOKUPS_IN_FLIGHT: usize = 64;

/// The etcd v3 lease store.
#[derive(Clone)]
pub struct EtcdStore {
    /// One client per endpoint: etcd-client's balanced channel keeps
    /// sending requests to a dead endpoint, so failover is done here.
    clients: Arc<Vec<Client>>,
    current: Arc<AtomicUsize>,
    pub(super) keys: Keys,
    pub(super) opts: EtcdOptions,
}

pub(super) fn unavailable(op: &'static str) -> impl Fn(etcd_client::Error) -> StoreError {
    move |e| StoreError::Unavailable {
        op,
        reason: e.to_string(),
    }
}

impl EtcdStore {
    /// Connects lazily: an unreachable etcd is reported by the first request
    /// (unless credentials are set: logging in needs etcd up).
    /// With credentials, an endpoint that is down at connect time is left
    /// out (logging in needs it); without, all are kept and tried in turn.
    pub async fn connect(opts: EtcdOptions) -> Result<Self, OptionsError> {
        let co = opts.connect_options()?;
        let mut clients = Vec::with_capacity(opts.endpoints.len());
        let mut errors = Vec::new();
        for ep in &opts.endpoints {
            match Client::connect([ep], Some(co.clone())).await {
                Ok(c) => clients.push(c),
                Err(e) => {
                    tracing::warn!(endpoint = %ep, error = %e, "etcd endpoint unusable; leaving it out");
                    errors.push(format!("{ep}: {e}"));
                }
            }
        }
        if clients.is_empty() {
            return Err(OptionsError::Connect {
                endpoints: opts.endpoints.join(","),
                reason: errors.join("; "),
            });
        }
        Ok(Self {
            clients: Arc::new(clients),
            current: Arc::new(AtomicUsize::new(0)),
            keys: Keys::new(&opts.prefix),
            opts,
        })
    }

    /// The client of the endpoint in use.
    fn client(&self) -> &Client {
        let i = self.current.load(Ordering::Relaxed) % self.clients.len();
        &self.clients[i]
    }

    /// Moves to the next endpoint after a failure on endpoint `seen` (a
    /// no-op if a concurrent caller already moved on).
    pub(super) fn rotate(&self, seen: usize) {
        let next = (seen + 1) % self.clients.len();
        let _ = self
            .current
            .compare_exchange(seen, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    pub(super) fn endpoint_index(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.clients.len()
    }

    /// Runs `op`, trying each endpoint once while the answer is Unavailable.
    async fn failover<'a, T, F, Fut>(&'a self, op: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>> + 'a,
    {
        let mut tries = self.clients.len();
        loop {
            let seen = self.endpoint_index();
            match op().await {
                Err(e @ StoreError::Unavailable { .. }) if tries > 1 => {
                    tracing::debug!(error = %e, "trying the next etcd endpoint");
                    self.rotate(seen);
                    tries -= 1;
                }
                r => return r,
            }
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn options(&self) -> &EtcdOptions {
        &self.opts
    }

    /// Writes net-conf.json to `<prefix>/config` (operators and tests).
    pub async fn put_config(&self, net_conf_json: &str) -> Result<()> {
        self.failover(|| self.put_config_here(net_conf_json)).await
    }

    async fn put_config_here(&self, net_conf_json: &str) -> Result<()> {
        self.client()
            .kv_client()
            .put(self.keys.config(), net_conf_json, None)
            .await
            .map_err(unavailable("write network config"))?;
        Ok(())
    }

    /// Compacts etcd's history up to the current revision (tests, and
    /// operators reclaiming space); watchers from older revisions resync.
    pub async fn compact_all(&self) -> Result<Revision> {
        self.failover(|| self.compact_all_here()).await
    }

    async fn compact_all_here(&self) -> Result<Revision> {
        let mut kv = self.client().kv_client();
        let resp = kv
            .get(
                self.keys.config(),
                Some(GetOptions::new().with_count_only()),
            )
            .await
            .map_err(unavailable("read current revision"))?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or_default();
        kv.compact(rev, Some(CompactionOptions::new().with_physical()))
            .await
            .map_err(unavailable("compact"))?;
        Ok(rev)
    }

    /// Every key under the subnets prefix, read page by page at the revision
    /// of the first page, so the result is one consistent snapshot.
    async fn range_subnets(&self) -> Result<(Vec<KeyValue>, Revision)> {
        let prefix = self.keys.subnets();
        let end = codec::prefix_range_end(prefix.as_bytes());
        let mut kv = self.client().kv_client();
        let mut start = prefix.into_bytes();
        let mut revision = 0;
        let mut out = Vec::new();
        loop {
            let mut o = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if revision != 0 {
                o = o.with_revision(revision);
            }
            let mut resp = kv
                .get(start.clone(), Some(o))
                .await
                .map_err(unavailable("list leases"))?;
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or_default();
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            match kvs.last() {
                Some(last) if more => start = codec::key_after(last.key()),
                _ => {
                    out.extend(kvs);
                    return Ok((out, revision));
                }
            }
            out.extend(kvs);
        }
    }

    /// The remaining TTL of each etcd lease, looked up concurrently (etcd has
    /// no batch call for it); a lease that is gone maps to "expires now".
    pub(super) async fn expirations(&self, mut ids: Vec<i64>) -> Result<HashMap<i64, SystemTime>> {
        ids.retain(|id| *id != 0);
        ids.sort_unstable();
        ids.dedup();
        let client = self.client().clone();
        let lookups = futures::stream::iter(ids)
            .map(move |id| {
                let mut lc = client.lease_client();
                async move {
                    let r = lc.time_to_live(id, None::<LeaseTimeToLiveOptions>).await;
                    (id, r)
                }
            })
            .buffer_unordered(TTL_LOOKUPS_IN_FLIGHT);
        let results: Vec<_> = lookups.collect().await;
        let now = SystemTime::now();
        let mut out = HashMap::with_capacity(results.len());
        for (id, r) in results {
            let ttl = r.map_err(unavailable("read lease TTL"))?.ttl();
            out.insert(id, codec::expiration_from_ttl(now, ttl).unwrap_or(now));
        }
        Ok(out)
    }

    /// Decodes raw keys into leases, skipping (and logging) the ones that do
    /// not decode: one bad key must not hide every other node.
    ///
    /// Without `with_ttls`, leased keys get "now" as expiration: allocation
    /// only needs lease vs reservation, and skipping one TTL round trip per
    /// lease keeps `acquire` cheap on a 5,000-lease table.
    async fn decode_all(&self, kvs: &[KeyValue], with_ttls: bool) -> Result<Vec<Lease>> {
        let exp = if with_ttls {
            self.expirations(kvs.iter().map(KeyValue::lease).collect())
                .await?
        } else {
            HashMap::new()
        };
        let mut out = Vec::with_capacity(kvs.len());
        for kv in kvs {
            match self.decode_kv(kv, &exp) {
                Ok(Some(l)) => out.push(l),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "skipping undecodable lease"),
            }
        }
        Ok(out)
    }

    fn decode_kv(&self, kv: &KeyValue, exp: &HashMap<i64, SystemTime>) -> Result<Option<Lease>> {
        let Some(lease_key) = self.keys.lease_key(kv.key()) else {
            return Ok(None);
        };
        let full = String::from_utf8_lossy(kv.key());
        let expiration = match kv.lease() {
            0 => None,
            id => Some(exp.get(&id).copied().unwrap_or_else(SystemTime::now)),
        };
        codec::decode_lease(&full, lease_key, kv.value(), kv.mod_revision(), expiration).map(Some)
    }

    /// One key, if present.
    async fn get_one(&self, key: &str) -> Result<Option<KeyValue>> {
        let mut resp = self
            .client()
            .kv_client()
            .get(key, None)
            .await
            .map_err(unavailable("read lease"))?;
        Ok(resp.take_kvs().into_iter().next())
    }

    async fn grant(&self) -> Result<(i64, SystemTime)> {
        let r = self
            .client()
            .lease_client()
            .grant(self.opts.lease_ttl.as_secs() as i64, None)
            .await
            .map_err(unavailable("grant etcd lease"))?;
        Ok((
            r.id(),
            SystemTime::now() + std::time::Duration::from_secs(r.ttl().max(0) as u64),
        ))
    }

    /// Best effort: an orphaned etcd lease only costs etcd memory until its TTL.
    async fn revoke(&self, id: i64) {
        if id == 0 {
            return;
        }
        if let Err(e) = self.client().lease_client().revoke(id).await {
            tracing::debug!(lease_id = id, error = %e, "revoking an unused etcd lease failed; it expires by itself");
        }
    }

    /// Writes `attrs` at `key` if the key's state is still what we saw
    /// (`Compare`), attached to `lease_id` (0: no TTL). Returns the new mod
    /// revision, or `None` if the compare failed (someone else wrote).
    async fn put_if(
        &self,
        key: &str,
        cmp: Compare,
        attrs: &LeaseAttrs,
        lease_id: i64,
    ) -> Result<Option<Revision>> {
        let value = codec::encode_attrs(attrs)?;
        let put = if lease_id != 0 {
            PutOptions::new().with_lease(lease_id)
        } else {
            PutOptions::new()
        };
        let resp = self
            .client()
            .kv_client()
            .txn(
                Txn::new()
                    .when([cmp])
                    .and_then([TxnOp::put(key, value, Some(put))]),
            )
            .await
            .map_err(unavailable("write lease"))?;
        Ok(resp
            .succeeded()
            .then(|| resp.header().map(|h| h.revision()).unwrap_or_default()))
    }

    /// Creates `key` if absent: flannel's `If(version(key) == 0)`.
    pub(super) async fn create(
        &self,
        key: &str,
        attrs: &LeaseAttrs,
        lease_id: i64,
    ) -> Result<Option<Revision>> {
        self.put_if(
            key,
            Compare::version(key, CompareOp::Equal, 0),
            attrs,
            lease_id,
        )
        .await
    }

    /// Replaces a key we read at `mod_revision`.
    async fn replace(
        &self,
        key: &str,
        mod_revision: i64,
        attrs: &LeaseAttrs,
        lease_id: i64,
    ) -> Result<Option<Revision>> {
        self.put_if(
            key,
            Compare::mod_revision(key, CompareOp::Equal, mod_revision),
            attrs,
            lease_id,
        )
        .await
    }

    /// Re-creates our key with a fresh etcd lease after it vanished.
    async fn recreate(&self, lease: &Lease, full: &str) -> Result<Lease> {
        let (id, expiration) = self.grant().await?;
        match self.create(full, &lease.attrs, id).await {
            Ok(Some(rev)) => {
                tracing::warn!(key = %full, "our lease had vanished from etcd; re-created it");
                Ok(Lease {
                    expiration: Some(expiration),
                    revision: rev,
                    ..lease.clone()
                })
            }
            Ok(None) => {
                self.revoke(id).await;
                // Lost the race to re-create it: whoever won holds it now.
                match self.get_one(full).await? {
                    Some(kv) => Err(self.lost(full, &kv)),
                    None => Err(StoreError::Unavailable {
                        op: "re-create lease",
                        reason: format!("{full} changed under us twice; retry"),
                    }),
                }
            }
            Err(e) => {
                self.revoke(id).await;
                Err(e)
            }
        }
    }

    fn lost(&self, full: &str, kv: &KeyValue) -> StoreError {
        StoreError::LeaseLost {
            key: full.to_string(),
            holder: holder_of(kv),
        }
    }

    /// Chooses and writes a lease; the allocation decision is the pure
    /// `crate::alloc`, the race handling is here. `Ok(None)`: a race was
    /// lost (the table changed between our read and our write).
    async fn acquire_once(
        &self,
        cfg: &NetworkConfig,
        req: &AcquireRequest,
        granted: &mut Option<(i64, SystemTime)>,
    ) -> Result<Option<Lease>> {
        let (kvs, _rev) = self.range_subnets().await?;
        let leases = self.decode_all(&kvs, false).await?;
        let by_key: HashMap<&str, &KeyValue> = kvs
            .iter()
            .filter_map(|kv| Some((self.keys.lease_key(kv.key())?, kv)))
            .collect();
        let (choice, plan) = crate::alloc::choose_plan(cfg, &leases, req)?;
        // Our own leases that no longer fit the config go, as in flannel.
        for stale in &plan.stale_own {
            let full = self.keys.subnet(&stale.key());
            if let Some(kv) = by_key.get(stale.key().as_str()) {
                self.delete_if_unchanged(&full, kv.mod_revision()).await?;
                self.revoke(kv.lease()).await;
            }
        }
        let lease_key = choice.key();
        let full = self.keys.subnet(&lease_key);
        let existing = match plan.source {
            Source::Own { .. } => by_key.get(lease_key.as_str()).copied(),
            Source::Previous | Source::Random => None,
        };
        let done = |revision: Revision, expiration: Option<SystemTime>| Lease {
            attrs: req.attrs.clone(),
            expiration,
            revision,
            ..choice.clone()
        };
        if let Some(kv) = existing.filter(|kv| kv.lease() == 0) {
            // An operator's reservation for this node: it stays without TTL.
            let rev = self
                .replace(&full, kv.mod_revision(), &req.attrs, 0)
                .await?;
            return Ok(rev.map(|r| done(r, None)));
        }
        let (id, expiration) = match *granted {
            Some(g) => g,
            None => *granted.insert(self.grant().await?),
        };
        let written = match existing {
            Some(kv) => {
                self.replace(&full, kv.mod_revision(), &req.attrs, id)
                    .await?
            }
            None => self.create(&full, &req.attrs, id).await?,
        };
        let Some(revision) = written else {
            return Ok(None);
        };
        *granted = None;
        if let Some(old) = existing.map(|kv| kv.lease()).filter(|old| *old != id) {
            // The key now hangs on the fresh etcd lease; drop the old one.
            self.revoke(old).await;
        }
        Ok(Some(done(revision, Some(expiration))))
    }

    async fn delete_if_unchanged(&self, full: &str, mod_revision: i64) -> Result<bool> {
        let resp = self
            .client()
            .kv_client()
            .txn(
                Txn::new()
                    .when([Compare::mod_revision(full, CompareOp::Equal, mod_revision)])
                    .and_then([TxnOp::delete(full, None)]),
            )
            .await
            .map_err(unavailable("delete lease"))?;
        Ok(resp.succeeded())
    }

    /// Opens a raw etcd watch on the subnets prefix from `start` (inclusive),
    /// with the previous values so that removals carry the old attributes.
    pub(super) async fn open_watch(&self, start: Revision) -> Result<etcd_client::WatchStream> {
        let prefix = self.keys.subnets();
        let end = codec::prefix_range_end(prefix.as_bytes());
        let o = WatchOptions::new()
            .with_range(end)
            .with_start_revision(start)
            .with_prev_key()
            .with_progress_notify();
        self.client()
            .watch_client()
            .watch(prefix, Some(o))
            .await
            .map_err(unavailable("open watch"))
    }

    /// Translates one raw etcd event (see `codec::translate`).
    pub(super) fn translate(
        &self,
        ev: &etcd_client::Event,
        own_key: Option<&str>,
    ) -> Option<codec::Translated> {
        let kv = ev.kv()?;
        let raw = codec::RawEvent {
            deleted: ev.event_type() == EventType::Delete,
            key: kv.key(),
            value: kv.value(),
            mod_revision: kv.mod_revision(),
            lease_id: kv.lease(),
            prev: ev.prev_kv().map(|p| (p.value(), p.lease())),
        };
        Some(codec::translate(
            &self.keys,
            &raw,
            own_key,
            SystemTime::now(),
        ))
    }
}

/// The public IP of whoever holds a key (0.0.0.0 if its value is garbage).
fn holder_of(kv: &KeyValue) -> std::net::Ipv4Addr {
    serde_json::from_slice::<LeaseAttrs>(kv.value())
        .map(|a| a.public_ip)
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED)
}

/// The operations on the endpoint in use; `LeaseStore` wraps them in failover.
impl EtcdStore {
    async fn network_config_here(&self) -> Result<NetworkConfig> {
        let key = self.keys.config();
        let kv = self
            .get_one(&key)
            .await?
            .ok_or(StoreError::ConfigMissing(key.clone()))?;
        let text = std::str::from_utf8(kv.value()).map_err(|e| StoreError::Decode {
            key,
            reason: format!("not UTF-8: {e}"),
        })?;
        Ok(NetworkConfig::parse(text)?)
    }

    async fn acquire_here(&self, req: &AcquireRequest) -> Result<Lease> {
        let cfg = self.network_config_here().await?;
        let mut granted = None;
        let mut result = Err(StoreError::Exhausted {
            op: "acquire lease",
            attempts: ACQUIRE_ATTEMPTS,
            reason: "another node won the race for the chosen subnet every time; retry later"
                .into(),
        });
        for attempt in 1..=ACQUIRE_ATTEMPTS {
            match self.acquire_once(&cfg, req, &mut granted).await {
                Ok(Some(lease)) => {
                    result = Ok(lease);
                    break;
                }
                Ok(None) => tracing::debug!(attempt, "lost a race for a subnet; choosing again"),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if let Some((id, _)) = granted {
            self.revoke(id).await;
        }
        result
    }

    async fn renew_here(&self, lease: &Lease) -> Result<Lease> {
        let full = self.keys.subnet(&lease.key());
        let Some(kv) = self.get_one(&full).await? else {
            return self.recreate(lease, &full).await;
        };
        let current: LeaseAttrs =
            serde_json::from_slice(kv.value()).map_err(|e| StoreError::Decode {
                key: full.clone(),
                reason: e.to_string(),
            })?;
        if !crate::alloc::same_node(&current, &lease.attrs) {
            return Err(self.lost(&full, &kv));
        }
        if kv.lease() == 0 {
            // A reservation has no TTL to extend.
            return Ok(Lease {
                expiration: None,
                revision: kv.mod_revision(),
                ..lease.clone()
            });
        }
        // keep_alive sends one refresh and reads its answer; "lease not found"
        // means the etcd lease expired and the key goes with it.
        match self.client().lease_client().keep_alive(kv.lease()).await {
            Ok(_) => {}
            Err(etcd_client::Error::LeaseKeepAliveError(_)) => {
                return self.recreate(lease, &full).await;
            }
            Err(e) => return Err(unavailable("renew lease")(e)),
        }
        let ttl = self
            .client()
            .lease_client()
            .time_to_live(kv.lease(), None)
            .await
            .map_err(unavailable("read lease TTL"))?
            .ttl();
        let now = SystemTime::now();
        let Some(expiration) = codec::expiration_from_ttl(now, ttl) else {
            return self.recreate(lease, &full).await;
        };
        let mut revision = kv.mod_revision();
        if current != lease.attrs {
            // Someone rewrote our value (or ours changed): put ours back.
            revision = self
                .replace(&full, kv.mod_revision(), &lease.attrs, kv.lease())
                .await?
                .ok_or(StoreError::Unavailable {
                    op: "renew lease",
                    reason: format!("{full} changed while renewing; retry"),
                })?;
        }
        Ok(Lease {
            expiration: Some(expiration),
            revision,
            ..lease.clone()
        })
    }

    async fn release_here(&self, lease: &Lease) -> Result<()> {
        let full = self.keys.subnet(&lease.key());
        let Some(kv) = self.get_one(&full).await? else {
            return Err(StoreError::NotFound(full));
        };
        let current: Option<LeaseAttrs> = serde_json::from_slice(kv.value()).ok();
        if !current.is_some_and(|a| crate::alloc::same_node(&a, &lease.attrs)) {
            return Err(self.lost(&full, &kv));
        }
        if kv.lease() == 0 {
            // An operator's reservation outlives the node's lease: keep it.
            return Ok(());
        }
        if !self.delete_if_unchanged(&full, kv.mod_revision()).await? {
            return Err(StoreError::Unavailable {
                op: "release lease",
                reason: format!("{full} changed while releasing; retry"),
            });
        }
        self.revoke(kv.lease()).await;
        Ok(())
    }

    async fn reserve_here(
        &self,
        subnet: Option<Ipv4Net>,
        ipv6_subnet: Option<Ipv6Net>,
        attrs: &LeaseAttrs,
    ) -> Result<Lease> {
        let cfg = self.network_config_here().await?;
        let lease_key = crate::key::encode(subnet, ipv6_subnet);
        if lease_key.is_empty() || !cfg.fits(subnet, ipv6_subnet) {
            return Err(StoreError::Config(ConfigError::Invalid(format!(
                "cannot reserve {lease_key:?}: it does not fit the network config (Network, SubnetLen, SubnetMin/Max)"
            ))));
        }
        let full = self.keys.subnet(&lease_key);
        let lease = |revision| Lease {
            subnet,
            ipv6_subnet,
            attrs: attrs.clone(),
            expiration: None,
            revision,
        };
        for _ in 0..ACQUIRE_ATTEMPTS {
            let written = match self.get_one(&full).await? {
                None => self.create(&full, attrs, 0).await?,
                Some(kv) => {
                    let same = serde_json::from_slice::<LeaseAttrs>(kv.value())
                        .is_ok_and(|cur| crate::alloc::same_node(&cur, attrs));
                    if !same {
                        return Err(StoreError::SubnetTaken {
                            key: full,
                            holder: holder_of(&kv),
                        });
                    }
                    // The node's own lease becomes its reservation: the key
                    // leaves its etcd lease, which then holds nothing.
                    let w = self.replace(&full, kv.mod_revision(), attrs, 0).await?;
                    if w.is_some() {
                        self.revoke(kv.lease()).await;
                    }
                    w
                }
            };
            if let Some(rev) = written {
                return Ok(lease(rev));
            }
        }
        Err(StoreError::Exhausted {
            op: "reserve subnet",
            attempts: ACQUIRE_ATTEMPTS,
            reason: format!("{full} kept changing; retry"),
        })
    }

    async fn unreserve_here(
        &self,
        subnet: Option<Ipv4Net>,
        ipv6_subnet: Option<Ipv6Net>,
    ) -> Result<Lease> {
        let full = self.keys.subnet(&crate::key::encode(subnet, ipv6_subnet));
        let Some(kv) = self.get_one(&full).await? else {
            return Err(StoreError::NotFound(full));
        };
        if kv.lease() != 0 {
            return Err(StoreError::NotReserved {
                key: full,
                holder: holder_of(&kv),
            });
        }
        let attrs: LeaseAttrs =
            serde_json::from_slice(kv.value()).map_err(|e| StoreError::Decode {
                key: full.clone(),
                reason: e.to_string(),
            })?;
        if !self.delete_if_unchanged(&full, kv.mod_revision()).await? {
            return Err(StoreError::Unavailable {
                op: "remove reservation",
                reason: format!("{full} changed while removing it; retry"),
            });
        }
        Ok(Lease {
            subnet,
            ipv6_subnet,
            attrs,
            expiration: None,
            revision: kv.mod_revision(),
        })
    }

    async fn list_here(&self) -> Result<(Vec<Lease>, Revision)> {
        let (kvs, rev) = self.range_subnets().await?;
        Ok((self.decode_all(&kvs, true).await?, rev))
    }
}

#[async_trait::async_trait]
impl LeaseStore for EtcdStore {
    async fn network_config(&self) -> Result<NetworkConfig> {
        self.failover(|| self.network_config_here()).await
    }

    async fn acquire(&self, req: &AcquireRequest) -> Result<Lease> {
        self.failover(|| self.acquire_here(req)).await
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease> {
        self.failover(|| self.renew_here(lease)).await
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        self.failover(|| self.release_here(lease)).await
    }

    async fn reserve(
        &self,
        subnet: Option<Ipv4Net>,
        ipv6_subnet: Option<Ipv6Net>,
        attrs: &LeaseAttrs,
    ) -> Result<Lease> {
        self.failover(|| self.reserve_here(subnet, ipv6_subnet, attrs))
            .await
    }

    async fn unreserve(
        &self,
        subnet: Option<Ipv4Net>,
        ipv6_subnet: Option<Ipv6Net>,
    ) -> Result<Lease> {
        self.failover(|| self.unreserve_here(subnet, ipv6_subnet))
            .await
    }

    async fn list(&self) -> Result<(Vec<Lease>, Revision)> {
        self.failover(|| self.list_here()).await
    }

    async fn watch(&self, from: Revision, own: Option<Lease>) -> Result<LeaseWatch> {
        Ok(super::watch::stream(
            self.clone(),
            from,
            own.map(|l| l.key()),
        ))
    }
}
