//! `KubeStore`: the `LeaseStore` over Node objects.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{ListParams, Patch, PatchParams};
use kube::Api;

use super::mapping::{self, MapError};
use super::view::Peers;
use crate::config::NetworkConfig;
use crate::lease::{Lease, LeaseAttrs};
use crate::store::{AcquireRequest, LeaseStore, LeaseWatch, Result, Revision, StoreError};

/// What the Kubernetes backend needs besides the client.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// This node's Node name (`NODE_NAME`).
    pub node_name: String,
    /// The annotation prefix (flannel's `flannel.alpha.coreos.com/`).
    pub prefix: String,
    /// The network config: in Kubernetes mode it comes from a file (the
    /// kube-flannel ConfigMap), not from the store.
    pub net_conf: NetworkConfig,
    /// How long `acquire` waits for the controller manager to assign the
    /// node's podCIDR.
    pub pod_cidr_wait: Duration,
    /// How often `acquire` looks again while waiting.
    pub poll_interval: Duration,
    /// The longest pause between attempts to re-open a failed watch.
    pub backoff_max: Duration,
    /// Nodes per list page (`limit`), for `list` and the watch's lists.
    pub page_size: u32,
}

impl KubeOptions {
    pub fn new(node_name: impl Into<String>, net_conf: NetworkConfig) -> Self {
        KubeOptions {
            node_name: node_name.into(),
            prefix: mapping::DEFAULT_PREFIX.to_string(),
            net_conf,
            pod_cidr_wait: Duration::from_secs(600),
            poll_interval: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            // client-go's default page size.
            page_size: 500,
        }
    }
}

/// The peers of the last `list`, at its revision: a watch from that
/// revision starts from them (see `view::PeerView`).
type LastList = Arc<Mutex<Option<(Revision, Peers)>>>;

/// The lease store of a node in Kubernetes mode. Cloning shares the client.
#[derive(Clone)]
pub struct KubeStore {
    pub(super) nodes: Api<Node>,
    pub(super) opts: Arc<KubeOptions>,
    last_list: LastList,
}

pub(super) fn api_error(op: &'static str, e: kube::Error) -> StoreError {
    StoreError::Unavailable {
        op,
        reason: format!("Kubernetes API: {e}"),
    }
}

pub(super) fn map_error(e: MapError) -> StoreError {
    let key = match &e {
        MapError::BadPodCidr { node, .. } | MapError::BadAnnotation { node, .. } => {
            format!("node {node}")
        }
    };
    StoreError::Decode {
        key,
        reason: e.to_string(),
    }
}

impl KubeStore {
    pub fn new(client: kube::Client, opts: KubeOptions) -> Self {
        KubeStore {
            nodes: Api::all(client),
            opts: Arc::new(opts),
            last_list: Arc::default(),
        }
    }

    /// Every managed node's lease by node name, and the list's
    /// resourceVersion. Paginated (`page_size` nodes per request); a
    /// continue token that expired mid-way (410) starts the list over.
    async fn list_peers(&self) -> Result<(Peers, Revision)> {
        const ATTEMPTS: usize = 3;
        let mut attempt = 1;
        'list: loop {
            let mut lp = ListParams::default().limit(self.opts.page_size);
            let mut leases = Peers::new();
            let mut revision = None;
            loop {
                let page = match self.nodes.list(&lp).await {
                    Ok(p) => p,
                    Err(kube::Error::Api(s))
                        if s.code == 410 && lp.continue_token.is_some() && attempt < ATTEMPTS =>
                    {
                        attempt += 1;
                        continue 'list;
                    }
                    Err(e) => return Err(api_error("list nodes", e)),
                };
                // Every page is served at the first page's resourceVersion.
                revision = revision.or_else(|| {
                    page.metadata
                        .resource_version
                        .as_deref()
                        .and_then(|rv| rv.parse::<Revision>().ok())
                });
                for node in &page.items {
                    match mapping::node_lease(node, &self.opts.prefix) {
                        Ok(Some(l)) => {
                            leases.insert(mapping::node_name(node).to_string(), l);
                        }
                        Ok(None) => {}
                        // One bad node must not hide every other peer.
                        Err(e) => {
                            tracing::warn!(error = %e, "skipping a node with unusable flannel data")
                        }
                    }
                }
                match page.metadata.continue_.filter(|t| !t.is_empty()) {
                    Some(token) => lp = lp.continue_token(&token),
                    None => return Ok((leases, revision.unwrap_or(0))),
                }
            }
        }
    }

    fn last_list(&self) -> std::sync::MutexGuard<'_, Option<(Revision, Peers)>> {
        // The data is a plain cache: a panic elsewhere cannot leave it
        // half-written in a way that matters.
        self.last_list.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn options(&self) -> &KubeOptions {
        &self.opts
    }

    async fn own_node(&self) -> Result<Node> {
        match self.nodes.get(&self.opts.node_name).await {
            Ok(n) => Ok(n),
            Err(kube::Error::Api(s)) if s.code == 404 => Err(StoreError::NotFound(format!(
                "node {} (is NODE_NAME this node's name?)",
                self.opts.node_name
            ))),
            Err(e) => Err(api_error("get own node", e)),
        }
    }

    /// Waits until the controller manager has given our node its pod
    /// CIDR(s) for every enabled family.
    async fn wait_for_pod_cidr(&self) -> Result<Node> {
        let cfg = &self.opts.net_conf;
        let deadline = Instant::now() + self.opts.pod_cidr_wait;
        loop {
            let node = self.own_node().await?;
            let (v4, v6) = mapping::pod_cidrs(&node).map_err(map_error)?;
            if (!cfg.enable_ipv4 || v4.is_some()) && (!cfg.enable_ipv6 || v6.is_some()) {
                return Ok(node);
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Unavailable {
                    op: "acquire",
                    reason: format!(
                        "node {} has no podCIDR for every enabled family after {:?}: run the controller manager with --allocate-node-cidrs and a --cluster-cidr matching Network",
                        self.opts.node_name, self.opts.pod_cidr_wait
                    ),
                });
            }
            tokio::time::sleep(self.opts.poll_interval).await;
        }
    }

    /// The lease our node's object stands for now, limited to the enabled
    /// families and checked against the network config.
    fn own_lease(&self, node: &Node, attrs: LeaseAttrs) -> Result<Lease> {
        let cfg = &self.opts.net_conf;
        let (v4, v6) = mapping::pod_cidrs(node).map_err(map_error)?;
        let subnet = v4.filter(|_| cfg.enable_ipv4);
        let ipv6_subnet = v6.filter(|_| cfg.enable_ipv6);
        if let (Some(sn), Some(net)) = (subnet, cfg.network) {
            if !net.contains(&sn) {
                return Err(StoreError::Decode {
                    key: format!("node {}", self.opts.node_name),
                    reason: format!("podCIDR {sn} is outside Network {net}: make the controller manager's --cluster-cidr match net-conf.json"),
                });
            }
        }
        if let (Some(sn), Some(net)) = (ipv6_subnet, cfg.ipv6_network) {
            if !net.contains(&sn) {
                return Err(StoreError::Decode {
                    key: format!("node {}", self.opts.node_name),
                    reason: format!("IPv6 podCIDR {sn} is outside IPv6Network {net}: make the controller manager's --cluster-cidr match net-conf.json"),
                });
            }
        }
        Ok(Lease {
            subnet,
            ipv6_subnet,
            attrs,
            expiration: None,
            revision: mapping::resource_version(node),
        })
    }
}

pub(super) fn rfc3339_now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[async_trait::async_trait]
impl LeaseStore for KubeStore {
    async fn network_config(&self) -> Result<NetworkConfig> {
        Ok(self.opts.net_conf.clone())
    }

    /// Waits for the podCIDR, then publishes the annotations (JSON merge
    /// patch on the status subresource) and `NetworkUnavailable=False`
    /// (strategic merge patch, see `mapping::network_available_patch`).
    async fn acquire(&self, req: &AcquireRequest) -> Result<Lease> {
        let node = self.wait_for_pod_cidr().await?;
        let attrs = mapping::own_attrs(&node, &self.opts.prefix, &req.attrs).map_err(map_error)?;
        // Checked before writing, so a misconfigured cluster is not
        // advertised.
        self.own_lease(&node, attrs.clone())?;
        let pp = PatchParams::default();
        let name = &self.opts.node_name;
        let body = mapping::annotations_patch(&self.opts.prefix, &attrs);
        self.nodes
            .patch_status(name, &pp, &Patch::Merge(&body))
            .await
            .map_err(|e| api_error("publish node annotations", e))?;
        let cond = mapping::network_available_patch(&rfc3339_now());
        let node = self
            .nodes
            .patch_status(name, &pp, &Patch::Strategic(&cond))
            .await
            .map_err(|e| api_error("set NetworkUnavailable=False", e))?;
        self.own_lease(&node, attrs)
    }

    /// Nothing to extend: a Kubernetes lease has no TTL.
    async fn renew(&self, lease: &Lease) -> Result<Lease> {
        Ok(lease.clone())
    }

    /// Nothing to give back: the subnet belongs to the Node object and is
    /// freed by the controller manager when the node is deleted.
    async fn release(&self, _lease: &Lease) -> Result<()> {
        Ok(())
    }

    async fn reserve(
        &self,
        _subnet: Option<ipnet::Ipv4Net>,
        _ipv6_subnet: Option<ipnet::Ipv6Net>,
        _attrs: &LeaseAttrs,
    ) -> Result<Lease> {
        Err(StoreError::Io {
            op: "reserve",
            source: std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "Kubernetes mode has no reservations: set the node's spec.podCIDR(s) through Kubernetes instead",
            ),
        })
    }

    async fn unreserve(
        &self,
        _subnet: Option<ipnet::Ipv4Net>,
        _ipv6_subnet: Option<ipnet::Ipv6Net>,
    ) -> Result<Lease> {
        Err(StoreError::Io {
            op: "remove reservation",
            source: std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "Kubernetes mode with podCIDRs (--kube-subnet-source node) has no reservations to remove: a node's subnet is its spec.podCIDR, freed when the Node is deleted",
            ),
        })
    }

    /// Paginated; the result is also kept so that a `watch` from its
    /// revision can start from it.
    async fn list(&self) -> Result<(Vec<Lease>, Revision)> {
        let (peers, revision) = self.list_peers().await?;
        let leases = peers.values().cloned().collect();
        *self.last_list() = Some((revision, peers));
        Ok((leases, revision))
    }

    /// kube's runtime watcher always starts with a list of its own. From
    /// the revision of this store's last `list`, that list is delivered as
    /// the changes since; from any other revision (0 included) as a
    /// `Snapshot`. See docs/KUBE-MODE.md.
    async fn watch(&self, from: Revision, own: Option<Lease>) -> Result<LeaseWatch> {
        let base = {
            let mut last = self.last_list();
            match last.take() {
                Some((rev, peers)) if from > 0 && rev == from => Some((rev, peers)),
                other => {
                    *last = other;
                    None
                }
            }
        };
        Ok(super::watch::stream(self, own.map(|l| l.key()), base))
    }
}
