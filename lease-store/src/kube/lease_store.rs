//! `KubeLeaseStore`: the `LeaseStore` over `coordination.k8s.io/v1` Lease
//! objects, one per subnet, in the daemon's namespace (the `lease` subnet
//! source; for clusters whose control plane assigns no podCIDRs, as EKS).
//! See docs/KUBE-MODE.md.
//!
//! - acquire = create (`409 AlreadyExists`: another node won, choose again);
//!   the choice is flannel's (`crate::alloc`): own lease, subnet.env's,
//!   random free one. An expired Lease is taken over by an update
//!   conditional on its resourceVersion.
//! - renew = update conditional on the resourceVersion (`renewTime`).
//! - expiry: a Lease whose `renewTime + leaseDurationSeconds` has passed is
//!   free; watchers remove it on their own clock, no API event needed.
//! - a reservation has no `leaseDurationSeconds` and no owner.
//! - the Node owns its Lease (ownerReference), so Kubernetes' garbage
//!   collector deletes it when the Node is deleted (autoscaled nodes).
//! - watch from a resourceVersion; on 410 Gone a relist gives a snapshot.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::stream::{self, BoxStream};
use futures::StreamExt;
use ipnet::{Ipv4Net, Ipv6Net};
use k8s_openapi::api::coordination::v1::Lease as KLease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions, WatchEvent, WatchParams};
use kube::Api;

use super::lease_map::{self, Decoded, LeaseObjectError, Write};
use super::lease_view::LeaseView;
use super::store::api_error;
use crate::alloc::Source;
use crate::config::{ConfigError, NetworkConfig};
use crate::lease::{Lease, LeaseAttrs};
use crate::store::{
    AcquireRequest, LeaseStore, LeaseWatch, Result, Revision, StoreError, WatchUpdate,
};

/// What the Lease-object store needs besides the client.
#[derive(Debug, Clone)]
pub struct KubeLeaseOptions {
    /// Where the Lease objects live (the DaemonSet's namespace,
    /// `POD_NAMESPACE`).
    pub namespace: String,
    /// This node's Node name: the holder of its leases and their owner.
    /// `None` (an operator's tool, tests): the holder is the public IP and
    /// leases have no owner.
    pub node_name: Option<String>,
    /// The annotation (and label) prefix.
    pub prefix: String,
    /// The network config (from the kube-flannel ConfigMap's file).
    pub net_conf: NetworkConfig,
    /// A lease's lifetime unless renewed (flannel's 24 h).
    pub ttl: Duration,
    /// Leases per list page.
    pub page_size: u32,
    /// The longest pause between attempts to re-open a failed watch.
    pub backoff_max: Duration,
    /// After acquiring, write the node's flannel annotations and
    /// `NetworkUnavailable=False` as the podCIDR source does, so that
    /// tooling reading Nodes keeps working (the daemon sets it; needs
    /// `node_name`).
    pub publish_node: bool,
}

impl KubeLeaseOptions {
    pub fn new(namespace: impl Into<String>, net_conf: NetworkConfig) -> Self {
        KubeLeaseOptions {
            namespace: namespace.into(),
            node_name: None,
            prefix: super::mapping::DEFAULT_PREFIX.to_string(),
            net_conf,
            ttl: Duration::from_secs(24 * 3600),
            page_size: 500,
            backoff_max: Duration::from_secs(30),
            publish_node: false,
        }
    }
}

/// How often acquire chooses again after losing a race.
const ACQUIRE_ATTEMPTS: u32 = 40;
/// The API server ends a watch after this long; the store resumes it.
const WATCH_TIMEOUT_SECS: u32 = 290;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Lease objects skipped as unusable: each distinct problem is logged once
/// and counted once (a bad object seen by every list and watch would
/// otherwise flood the log).
#[derive(Default)]
pub struct Rejects {
    seen: Mutex<HashSet<String>>,
    count: AtomicU64,
}

impl Rejects {
    fn report(&self, errors: impl IntoIterator<Item = LeaseObjectError>) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for e in errors {
            let msg = e.to_string();
            if seen.contains(&msg) {
                continue;
            }
            // Bounded: a flood of distinct garbage must not grow memory
            // without end; forgetting means a problem may be logged again.
            if seen.len() >= 10_000 {
                seen.clear();
            }
            tracing::warn!(lease = e.name(), "skipping a Lease object: {msg}");
            seen.insert(msg);
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn total(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// The objects of the last `list`, at its revision: a watch from that
/// revision starts from them.
type LastList = Arc<Mutex<Option<(Revision, Vec<Decoded>)>>>;

/// The lease store on Lease objects. Cloning shares the client.
#[derive(Clone)]
pub struct KubeLeaseStore {
    leases: Api<KLease>,
    nodes: Api<Node>,
    opts: Arc<KubeLeaseOptions>,
    last_list: LastList,
    rejects: Arc<Rejects>,
    /// The podCIDR-is-ignored warning is given once per process.
    warned_pod_cidr: Arc<std::sync::atomic::AtomicBool>,
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// The table as read: usable leases, and what blocks subnets without being
/// usable (unreadable objects, second Leases of one node).
struct Table {
    objects: HashMap<String, KLease>,
    decoded: Vec<Decoded>,
    revision: Revision,
}

impl Table {
    /// The live leases (one per holder) and placeholders for every other
    /// object that still sits on its subnet's name.
    ///
    /// An unreadable object held by `holder` (this node's own lease, edited
    /// by hand) blocks nothing: this node takes it back and rewrites it.
    /// A lease `holder` holds under other public IPs (an overwrite pinned
    /// or removed since) is still this node's own: it keeps its subnet.
    fn for_allocation(
        &self,
        now: SystemTime,
        holder: &str,
        attrs: &LeaseAttrs,
    ) -> (Vec<Lease>, Vec<LeaseObjectError>) {
        let live: Vec<Decoded> = self
            .decoded
            .iter()
            .filter(|d| d.is_live(now))
            .cloned()
            .collect();
        let (kept, dups) = lease_map::dedupe_holders(live);
        let usable: HashSet<&str> = kept.iter().map(|d| d.name.as_str()).collect();
        let expired: HashSet<&str> = self
            .decoded
            .iter()
            .filter(|d| !d.is_live(now))
            .map(|d| d.name.as_str())
            .collect();
        let mut leases: Vec<Lease> = kept
            .iter()
            .map(|d| {
                let mut l = d.lease.clone();
                if d.holder == holder && !l.is_reservation() {
                    l.attrs.public_ip = attrs.public_ip;
                    l.attrs.public_ipv6 = attrs.public_ipv6;
                }
                l
            })
            .collect();
        // Objects that are neither usable nor expired (unreadable, or a
        // duplicate) keep their subnet: handing it out would put two nodes
        // on one subnet as soon as the object is repaired.
        for (name, obj) in &self.objects {
            let mine = obj.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(holder);
            let unreadable = self.decoded.iter().all(|d| d.name != *name);
            if mine && unreadable {
                continue;
            }
            if !usable.contains(name.as_str()) && !expired.contains(name.as_str()) {
                leases.extend(lease_map::placeholder(name));
            }
        }
        (leases, dups)
    }
}

impl KubeLeaseStore {
    pub fn new(client: kube::Client, opts: KubeLeaseOptions) -> Self {
        KubeLeaseStore {
            leases: Api::namespaced(client.clone(), &opts.namespace),
            nodes: Api::all(client),
            opts: Arc::new(opts),
            last_list: Arc::default(),
            rejects: Arc::default(),
            warned_pod_cidr: Arc::default(),
        }
    }

    /// The counter behind [`KubeLeaseStore::rejected_leases`], for a
    /// metrics exporter that outlives this handle.
    pub fn rejects(&self) -> Arc<Rejects> {
        self.rejects.clone()
    }

    /// Publishes the lease on our Node (annotations, NetworkUnavailable)
    /// and reports a podCIDR that disagrees with it: in this mode the lease
    /// is the node's subnet, the podCIDR never is.
    async fn publish_on_node(&self, lease: &Lease) -> Result<()> {
        use kube::api::{Patch, PatchParams};
        let Some(name) = self.opts.node_name.as_deref() else {
            return Ok(());
        };
        let node = match self.nodes.get(name).await {
            Ok(n) => n,
            Err(e) => return Err(api_error("get own node", e)),
        };
        match super::mapping::pod_cidrs(&node) {
            Ok((Some(cidr), _)) if !self.warned_pod_cidr.swap(true, Ordering::Relaxed) => {
                if Some(cidr) == lease.subnet {
                    tracing::warn!(node = name, pod_cidr = %cidr, "the node has a podCIDR; with --kube-subnet-source lease it is ignored (it equals this node's lease)");
                } else {
                    tracing::warn!(node = name, pod_cidr = %cidr, lease = %lease.key(), "the node's podCIDR disagrees with its flannel lease: pods get addresses from the lease, not the podCIDR; turn off the controller manager's --allocate-node-cidrs or use --kube-subnet-source node");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "the node's podCIDR is unreadable; it is ignored"),
        }
        let pp = PatchParams::default();
        let body = super::mapping::annotations_patch(&self.opts.prefix, &lease.attrs);
        self.nodes
            .patch_status(name, &pp, &Patch::Merge(&body))
            .await
            .map_err(|e| api_error("publish node annotations", e))?;
        let cond = super::mapping::network_available_patch(&super::store::rfc3339_now());
        self.nodes
            .patch_status(name, &pp, &Patch::Strategic(&cond))
            .await
            .map_err(|e| api_error("set NetworkUnavailable=False", e))?;
        Ok(())
    }

    pub fn options(&self) -> &KubeLeaseOptions {
        &self.opts
    }

    /// Lease objects skipped so far as unusable (garbage, outside the
    /// network, a second Lease of one node): distinct problems, counted
    /// once each. For /metrics.
    pub fn rejected_leases(&self) -> u64 {
        self.rejects.total()
    }

    fn holder(&self, attrs: &LeaseAttrs) -> String {
        match &self.opts.node_name {
            Some(n) => n.clone(),
            None => lease_map::address_of(attrs),
        }
    }

    /// Our Node, read on every write, not cached: a Node deleted and
    /// registered again has a new uid (the ownerReference), a deleted
    /// Node's daemon must not claim a subnet (the garbage collector would
    /// delete a Lease owned by a gone uid at once), and the operator may
    /// pin another public IP on it at any time.
    async fn own_node(&self) -> Result<Option<Node>> {
        let Some(name) = &self.opts.node_name else {
            return Ok(None);
        };
        match self.nodes.get(name).await {
            Ok(n) => Ok(Some(n)),
            Err(e) if is_status(&e, 404) => Err(StoreError::NotFound(format!(
                "node {name} (is NODE_NAME this node's name?)"
            ))),
            Err(e) => Err(api_error("get own node", e)),
        }
    }

    /// Our Node's uid, for the ownerReference.
    async fn owner_uid(&self) -> Result<Option<String>> {
        Ok(self
            .own_node()
            .await?
            .map(|n| n.metadata.uid.unwrap_or_default()))
    }

    /// Every object of ours, paginated; a continue token that expired
    /// mid-way (410) starts the list over.
    async fn list_objects(&self) -> Result<(Vec<KLease>, Revision)> {
        self.list_selected(&lease_map::label_selector(&self.opts.prefix))
            .await
    }

    /// The objects `sel` selects, paginated as [`Self::list_objects`].
    async fn list_selected(&self, sel: &str) -> Result<(Vec<KLease>, Revision)> {
        const ATTEMPTS: usize = 3;
        let mut attempt = 1;
        'list: loop {
            let mut lp = ListParams::default().labels(sel).limit(self.opts.page_size);
            let mut objs = Vec::new();
            let mut revision = None;
            loop {
                let page = match self.leases.list(&lp).await {
                    Ok(p) => p,
                    Err(e)
                        if is_status(&e, 410)
                            && lp.continue_token.is_some()
                            && attempt < ATTEMPTS =>
                    {
                        attempt += 1;
                        continue 'list;
                    }
                    Err(e) => return Err(api_error("list Lease objects", e)),
                };
                revision = revision.or_else(|| {
                    page.metadata
                        .resource_version
                        .as_deref()
                        .and_then(|rv| rv.parse::<Revision>().ok())
                });
                objs.extend(page.items);
                match page.metadata.continue_.filter(|t| !t.is_empty()) {
                    Some(token) => lp = lp.continue_token(&token),
                    None => return Ok((objs, revision.unwrap_or(0))),
                }
            }
        }
    }

    async fn read_table(&self) -> Result<Table> {
        let (objs, revision) = self.list_objects().await?;
        let mut decoded = Vec::with_capacity(objs.len());
        let mut bad = Vec::new();
        let mut objects = HashMap::with_capacity(objs.len());
        for o in objs {
            if !lease_map::is_ours(&o, &self.opts.prefix) {
                continue;
            }
            match lease_map::decode(&o, &self.opts.prefix) {
                Ok(d) => decoded.push(d),
                Err(e) => bad.push(e),
            }
            objects.insert(lease_map::name_of(&o).to_string(), o);
        }
        self.rejects.report(bad);
        Ok(Table {
            objects,
            decoded,
            revision,
        })
    }

    fn write<'a>(
        &'a self,
        holder: &'a str,
        owner: Option<(&'a str, &'a str)>,
        ttl: Option<Duration>,
    ) -> Write<'a> {
        Write {
            namespace: &self.opts.namespace,
            prefix: &self.opts.prefix,
            holder,
            owner,
            ttl,
            now: SystemTime::now(),
            acquired: None,
            resource_version: None,
        }
    }

    /// Decodes what the API server answered a write with.
    fn written(&self, obj: &KLease) -> Result<Lease> {
        lease_map::decode(obj, &self.opts.prefix)
            .map(|d| d.lease)
            .map_err(|e| StoreError::Decode {
                key: lease_map::name_of(obj).to_string(),
                reason: e.to_string(),
            })
    }

    /// Creates `obj`; `Ok(None)` when the name is taken (409).
    async fn create(&self, obj: &KLease) -> Result<Option<KLease>> {
        match self.leases.create(&PostParams::default(), obj).await {
            Ok(o) => Ok(Some(o)),
            Err(e) if is_status(&e, 409) => Ok(None),
            Err(e) => Err(api_error("create Lease", e)),
        }
    }

    /// Replaces `obj` (its resourceVersion set); `Ok(None)` when the object
    /// changed or vanished in the meantime (409/404).
    async fn replace(&self, obj: &KLease) -> Result<Option<KLease>> {
        let name = lease_map::name_of(obj).to_string();
        match self
            .leases
            .replace(&name, &PostParams::default(), obj)
            .await
        {
            Ok(o) => Ok(Some(o)),
            Err(e) if is_status(&e, 409) || is_status(&e, 404) => Ok(None),
            Err(e) => Err(api_error("update Lease", e)),
        }
    }

    /// Deletes an object if it is unchanged since `rv`; true when deleted.
    async fn delete_if_unchanged(&self, name: &str, rv: Option<String>) -> Result<bool> {
        let dp = DeleteParams::default().preconditions(Preconditions {
            resource_version: rv,
            uid: None,
        });
        match self.leases.delete(name, &dp).await {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 409) || is_status(&e, 404) => Ok(false),
            Err(e) => Err(api_error("delete Lease", e)),
        }
    }

    async fn get(&self, name: &str) -> Result<Option<KLease>> {
        match self.leases.get(name).await {
            Ok(o) => Ok(Some(o)),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(api_error("get Lease", e)),
        }
    }

    /// The Lease `name` and what it says, for the calls that act on one
    /// existing object: `NotFound` when absent, `Decode` when garbled.
    async fn get_decoded(&self, name: &str) -> Result<(KLease, lease_map::Decoded)> {
        let Some(obj) = self.get(name).await? else {
            return Err(StoreError::NotFound(name.to_string()));
        };
        let d = lease_map::decode(&obj, &self.opts.prefix).map_err(|e| StoreError::Decode {
            key: name.to_string(),
            reason: e.to_string(),
        })?;
        Ok((obj, d))
    }

    /// One allocation attempt; `Ok(None)`: lost a race, choose again.
    async fn acquire_once(&self, req: &AcquireRequest) -> Result<Option<Lease>> {
        let node = self.own_node().await?;
        let uid = node
            .as_ref()
            .map(|n| n.metadata.uid.clone().unwrap_or_default());
        // The public IPs an operator pinned on the Node
        // (`public-ip-overwrite`, `node-public-ip`) win over the detected
        // ones, as with the podCIDR source.
        let req = match &node {
            Some(n) => AcquireRequest {
                attrs: super::mapping::own_attrs(n, &self.opts.prefix, &req.attrs)
                    .map_err(super::store::map_error)?,
                ..req.clone()
            },
            None => req.clone(),
        };
        let req = &req;
        let holder = self.holder(&req.attrs);
        let owner = self.opts.node_name.as_deref().zip(uid.as_deref());
        // A restart (subnet.env read back) most likely finds its own Lease
        // by label; a new node (none) would only pay one more read.
        if req.previous_subnet.is_some() || req.previous_ipv6_subnet.is_some() {
            if let Some(l) = self.reuse_own(req, &holder, owner).await? {
                return Ok(Some(l));
            }
        }
        let table = self.read_table().await?;
        let now = SystemTime::now();
        let (leases, dups) = table.for_allocation(now, &holder, &req.attrs);
        self.rejects.report(dups);
        let (choice, plan) = crate::alloc::choose_plan(&self.opts.net_conf, &leases, req)?;
        for stale in &plan.stale_own {
            let name = lease_map::object_name(stale.subnet, stale.ipv6_subnet);
            let rv = table
                .objects
                .get(&name)
                .and_then(|o| o.metadata.resource_version.clone());
            self.delete_if_unchanged(&name, rv).await?;
        }
        let name = lease_map::object_name(choice.subnet, choice.ipv6_subnet);
        let existing = table.objects.get(&name);
        let reservation = matches!(plan.source, Source::Own { reservation: true });
        let ttl = (!reservation).then_some(self.opts.ttl);
        // A reservation belongs to the operator: no owner, so deleting the
        // Node does not delete it.
        let mut w = self.write(&holder, if reservation { None } else { owner }, ttl);
        if let (Source::Own { .. }, Some(o)) = (&plan.source, existing) {
            w.acquired = o.spec.as_ref().and_then(|s| s.acquire_time.clone());
        }
        w.resource_version = existing.and_then(|o| o.metadata.resource_version.clone());
        let obj = lease_map::encode(&choice, &w);
        let done = match existing {
            // Our own lease, or an expired one taken over: an update that
            // fails if anyone wrote it since we read it.
            Some(_) => self.replace(&obj).await?,
            None => self.create(&obj).await?,
        };
        let Some(done) = done else {
            return Ok(None);
        };
        // A node has one lease: older ones of this holder (an earlier
        // public IP, say) go, so they neither block subnets nor count as
        // duplicates.
        for d in &table.decoded {
            if d.holder == holder && d.name != name && !d.lease.is_reservation() {
                let rv = table
                    .objects
                    .get(&d.name)
                    .and_then(|o| o.metadata.resource_version.clone());
                self.delete_if_unchanged(&d.name, rv).await?;
            }
        }
        self.written(&done).map(Some)
    }

    /// A restarted daemon's own Lease, found by its address label instead
    /// of a list of the whole table (the full path's cost grows with the
    /// cluster: at 5,000 nodes a DaemonSet rollout would be 5,000 lists of
    /// 5,000 Leases), renewed in place with the request's attributes. Only
    /// when the choice is plain: of the Leases with this node's address
    /// (flannel's "own lease"), exactly one, live, readable, held by this
    /// holder, inside the network config, and no reservation (flannel
    /// prefers that). Else, or on a lost race, `Ok(None)`: the full path
    /// decides, as before.
    async fn reuse_own(
        &self,
        req: &AcquireRequest,
        holder: &str,
        owner: Option<(&str, &str)>,
    ) -> Result<Option<Lease>> {
        let prefix = &self.opts.prefix;
        let (objs, _) = self
            .list_selected(&lease_map::address_selector(prefix, &req.attrs))
            .await?;
        let [obj] = objs.as_slice() else {
            return Ok(None);
        };
        let Ok(d) = lease_map::decode(obj, prefix) else {
            return Ok(None);
        };
        if d.holder != holder
            || d.lease.is_reservation()
            || !d.is_live(SystemTime::now())
            || !crate::alloc::same_node(&d.lease.attrs, &req.attrs)
            || !self.opts.net_conf.fits(d.lease.subnet, d.lease.ipv6_subnet)
        {
            return Ok(None);
        }
        let mut w = self.write(holder, owner, Some(self.opts.ttl));
        w.acquired = obj.spec.as_ref().and_then(|s| s.acquire_time.clone());
        w.resource_version = obj.metadata.resource_version.clone();
        let lease = Lease {
            attrs: req.attrs.clone(),
            ..d.lease
        };
        match self.replace(&lease_map::encode(&lease, &w)).await? {
            Some(done) => self.written(&done).map(Some),
            None => Ok(None),
        }
    }

    fn lost(&self, name: &str, current: &Decoded) -> StoreError {
        StoreError::LeaseLost {
            key: name.to_string(),
            holder: current.lease.attrs.public_ip,
        }
    }
}

#[async_trait::async_trait]
impl LeaseStore for KubeLeaseStore {
    async fn network_config(&self) -> Result<NetworkConfig> {
        Ok(self.opts.net_conf.clone())
    }

    async fn acquire(&self, req: &AcquireRequest) -> Result<Lease> {
        for attempt in 1..=ACQUIRE_ATTEMPTS {
            if let Some(l) = self.acquire_once(req).await? {
                if self.opts.publish_node {
                    self.publish_on_node(&l).await?;
                }
                return Ok(l);
            }
            tracing::debug!(attempt, "lost a race for a subnet; choosing again");
            // Apart a little, so that racing nodes do not collide again in
            // lock step.
            let jitter = rand::random_range(0..=20 * u64::from(attempt.min(10)));
            tokio::time::sleep(Duration::from_millis(jitter)).await;
        }
        Err(StoreError::Exhausted {
            op: "acquire lease",
            attempts: ACQUIRE_ATTEMPTS,
            reason: "another node won the race for the chosen subnet every time; retry later"
                .into(),
        })
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease> {
        let name = lease_map::object_name(lease.subnet, lease.ipv6_subnet);
        let holder = self.holder(&lease.attrs);
        for _ in 0..ACQUIRE_ATTEMPTS {
            let uid = self.owner_uid().await?;
            let owner = self.opts.node_name.as_deref().zip(uid.as_deref());
            let mut w = self.write(&holder, owner, Some(self.opts.ttl));
            let current = self.get(&name).await?;
            let written = match &current {
                // Vanished (deleted by hand, or by the garbage collector
                // while the Node was briefly gone): re-create it if free.
                None => {
                    let fresh = Lease {
                        expiration: None,
                        ..lease.clone()
                    };
                    self.create(&lease_map::encode(&fresh, &w)).await?
                }
                Some(obj) => {
                    let now = SystemTime::now();
                    match lease_map::decode(obj, &self.opts.prefix) {
                        Ok(d) if !crate::alloc::same_node(&d.lease.attrs, &lease.attrs) => {
                            if d.is_live(now) {
                                return Err(self.lost(&name, &d));
                            }
                        }
                        Ok(d) if d.lease.is_reservation() => {
                            return Ok(Lease {
                                expiration: None,
                                revision: d.lease.revision,
                                ..lease.clone()
                            });
                        }
                        Ok(_) => {}
                        Err(e) => {
                            // Our own object edited into garbage is put
                            // right; anyone else's is not ours to touch.
                            let ours = obj.spec.as_ref().and_then(|s| s.holder_identity.as_deref())
                                == Some(holder.as_str());
                            if !ours {
                                return Err(StoreError::Decode {
                                    key: name,
                                    reason: e.to_string(),
                                });
                            }
                        }
                    }
                    w.acquired = obj.spec.as_ref().and_then(|s| s.acquire_time.clone());
                    w.resource_version = obj.metadata.resource_version.clone();
                    self.replace(&lease_map::encode(lease, &w)).await?
                }
            };
            if let Some(o) = written {
                return self.written(&o);
            }
        }
        Err(StoreError::Exhausted {
            op: "renew lease",
            attempts: ACQUIRE_ATTEMPTS,
            reason: format!("Lease {name} kept changing; retry"),
        })
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let name = lease_map::object_name(lease.subnet, lease.ipv6_subnet);
        let (obj, d) = self.get_decoded(&name).await?;
        if !crate::alloc::same_node(&d.lease.attrs, &lease.attrs) {
            return Err(self.lost(&name, &d));
        }
        if d.lease.is_reservation() {
            // An operator's reservation outlives the node's lease.
            return Ok(());
        }
        if !self
            .delete_if_unchanged(&name, obj.metadata.resource_version.clone())
            .await?
        {
            return Err(StoreError::Unavailable {
                op: "release lease",
                reason: format!("Lease {name} changed while releasing; retry"),
            });
        }
        Ok(())
    }

    async fn reserve(
        &self,
        subnet: Option<Ipv4Net>,
        ipv6_subnet: Option<Ipv6Net>,
        attrs: &LeaseAttrs,
    ) -> Result<Lease> {
        let key = crate::key::encode(subnet, ipv6_subnet);
        if key.is_empty() || !self.opts.net_conf.fits(subnet, ipv6_subnet) {
            return Err(StoreError::Config(ConfigError::Invalid(format!(
                "cannot reserve {key:?}: it does not fit the network config (Network, SubnetLen, SubnetMin/Max)"
            ))));
        }
        let name = lease_map::object_name(subnet, ipv6_subnet);
        // The holder of a reservation is its node's address: the operator
        // writing it may not know the node's name.
        let holder = lease_map::address_of(attrs);
        let lease = Lease {
            subnet,
            ipv6_subnet,
            attrs: attrs.clone(),
            expiration: None,
            revision: 0,
        };
        for _ in 0..ACQUIRE_ATTEMPTS {
            let mut w = self.write(&holder, None, None);
            let written = match self.get(&name).await? {
                None => self.create(&lease_map::encode(&lease, &w)).await?,
                Some(obj) => {
                    match lease_map::decode(&obj, &self.opts.prefix) {
                        Ok(d)
                            if d.is_live(SystemTime::now())
                                && !crate::alloc::same_node(&d.lease.attrs, attrs) =>
                        {
                            return Err(StoreError::SubnetTaken {
                                key: name,
                                holder: d.lease.attrs.public_ip,
                            })
                        }
                        Ok(_) => {}
                        Err(e) => {
                            return Err(StoreError::Decode {
                                key: name,
                                reason: e.to_string(),
                            })
                        }
                    }
                    w.resource_version = obj.metadata.resource_version.clone();
                    self.replace(&lease_map::encode(&lease, &w)).await?
                }
            };
            if let Some(o) = written {
                return self.written(&o);
            }
        }
        Err(StoreError::Exhausted {
            op: "reserve subnet",
            attempts: ACQUIRE_ATTEMPTS,
            reason: format!("Lease {name} kept changing; retry"),
        })
    }

    async fn unreserve(
        &self,
        subnet: Option<Ipv4Net>,
        ipv6_subnet: Option<Ipv6Net>,
    ) -> Result<Lease> {
        let name = lease_map::object_name(subnet, ipv6_subnet);
        let (obj, d) = self.get_decoded(&name).await?;
        // An expired lease is no reservation either: it is free already.
        if !d.lease.is_reservation() {
            return Err(StoreError::NotReserved {
                key: name,
                holder: d.lease.attrs.public_ip,
            });
        }
        if !self
            .delete_if_unchanged(&name, obj.metadata.resource_version.clone())
            .await?
        {
            return Err(StoreError::Unavailable {
                op: "remove reservation",
                reason: format!("Lease {name} changed while removing it; retry"),
            });
        }
        Ok(d.lease)
    }

    /// Live leases (reservations included), one per node; unusable objects
    /// are skipped, logged once and counted.
    async fn list(&self) -> Result<(Vec<Lease>, Revision)> {
        let table = self.read_table().await?;
        let now = SystemTime::now();
        let live: Vec<Decoded> = table
            .decoded
            .iter()
            .filter(|d| d.is_live(now))
            .cloned()
            .collect();
        let (kept, dups) = lease_map::dedupe_holders(live);
        self.rejects.report(dups);
        let leases = kept.into_iter().map(|d| d.lease).collect();
        *self.last_list.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((table.revision, table.decoded));
        Ok((leases, table.revision))
    }

    async fn watch(&self, from: Revision, own: Option<Lease>) -> Result<LeaseWatch> {
        let own_key = own.map(|l| l.key());
        let base = {
            let mut last = self.last_list.lock().unwrap_or_else(|p| p.into_inner());
            match last.take() {
                Some((rev, objs)) if from > 0 && rev == from => Some(objs),
                other => {
                    *last = other;
                    None
                }
            }
        };
        let view = match base {
            Some(objs) => LeaseView::with_base(&self.opts.prefix, own_key, objs, SystemTime::now()),
            None => LeaseView::new(&self.opts.prefix, own_key),
        };
        let state = WatchState {
            store: self.clone(),
            view,
            rv: from.to_string(),
            need_list: from <= 0,
            events: None,
            delay: FIRST_BACKOFF,
            pending: VecDeque::new(),
        };
        Ok(Box::pin(stream::unfold(state, |mut st| async move {
            let update = st.next_update().await;
            Some((Ok(update), st))
        })))
    }
}

type Events = BoxStream<'static, kube::Result<WatchEvent<KLease>>>;

struct WatchState {
    store: KubeLeaseStore,
    view: LeaseView,
    /// Where the watch resumes: the last resourceVersion seen.
    rv: String,
    /// A relist is due (start from 0, or 410 Gone).
    need_list: bool,
    events: Option<Events>,
    delay: Duration,
    pending: VecDeque<WatchUpdate>,
}

impl WatchState {
    fn revision(&self) -> Revision {
        self.rv.parse().unwrap_or(0)
    }

    async fn backoff(&mut self) {
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(self.store.opts.backoff_max);
    }

    /// The next update; errors are retried here with backoff.
    async fn next_update(&mut self) -> WatchUpdate {
        loop {
            if let Some(u) = self.pending.pop_front() {
                return u;
            }
            if self.need_list {
                match self.store.list_objects().await {
                    Ok((objs, rev)) => {
                        let (leases, bad) = self.view.relist(&objs, SystemTime::now());
                        self.store.rejects.report(bad);
                        self.rv = rev.to_string();
                        self.need_list = false;
                        self.events = None;
                        self.delay = FIRST_BACKOFF;
                        return WatchUpdate::Snapshot {
                            leases,
                            revision: rev,
                        };
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_ms = u64::try_from(self.delay.as_millis()).unwrap_or(u64::MAX), "listing Lease objects failed; retrying");
                        self.backoff().await;
                        continue;
                    }
                }
            }
            if self.events.is_none() {
                let wp = WatchParams::default()
                    .labels(&lease_map::label_selector(&self.store.opts.prefix))
                    .timeout(WATCH_TIMEOUT_SECS);
                match self.store.leases.watch(&wp, &self.rv).await {
                    Ok(s) => self.events = Some(s.boxed()),
                    Err(e) if is_status(&e, 410) => {
                        tracing::info!("Lease watch expired (410); listing again");
                        self.need_list = true;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_ms = u64::try_from(self.delay.as_millis()).unwrap_or(u64::MAX), "Lease watch failed; retrying");
                        self.backoff().await;
                        continue;
                    }
                }
            }
            let expiry = self.view.next_expiry().map(|t| {
                let wait = t
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
                tokio::time::Instant::now() + wait + Duration::from_millis(1)
            });
            let Some(events) = self.events.as_mut() else {
                continue;
            };
            let next = tokio::select! {
                ev = events.next() => Some(ev),
                _ = tokio::time::sleep_until(expiry.unwrap_or_else(tokio::time::Instant::now)), if expiry.is_some() => None,
            };
            let now = SystemTime::now();
            let Some(ev) = next else {
                let events = self.view.expire(now);
                if !events.is_empty() {
                    return WatchUpdate::Events {
                        events,
                        revision: self.revision(),
                    };
                }
                continue;
            };
            let (obj, deleted) = match ev {
                // The server ended the watch (timeout): resume.
                None => {
                    self.events = None;
                    continue;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "Lease watch broke; resuming");
                    self.events = None;
                    self.backoff().await;
                    continue;
                }
                Some(Ok(WatchEvent::Bookmark(b))) => {
                    self.rv = b.metadata.resource_version;
                    continue;
                }
                Some(Ok(WatchEvent::Error(s))) if s.code == 410 => {
                    tracing::info!("Lease watch expired (410); listing again");
                    self.events = None;
                    self.need_list = true;
                    continue;
                }
                Some(Ok(WatchEvent::Error(s))) => {
                    tracing::warn!(code = s.code, message = %s.message, "Lease watch error; resuming");
                    self.events = None;
                    self.backoff().await;
                    continue;
                }
                Some(Ok(WatchEvent::Added(o) | WatchEvent::Modified(o))) => (o, false),
                Some(Ok(WatchEvent::Deleted(o))) => (o, true),
            };
            self.delay = FIRST_BACKOFF;
            if let Some(rv) = obj.metadata.resource_version.clone() {
                self.rv = rv;
            }
            let (events, bad) = self.view.change(&obj, deleted, now);
            self.store.rejects.report(bad);
            if !events.is_empty() {
                return WatchUpdate::Events {
                    events,
                    revision: self.revision(),
                };
            }
        }
    }
}
