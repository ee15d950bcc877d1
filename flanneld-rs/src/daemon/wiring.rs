//! Turning validated settings into the parts the lease loop drives: the
//! lease store, the datapath backend and the masquerade driver.

use std::sync::Arc;
use std::time::Duration;

use std::path::Path;

use lease_store::embedded::EmbeddedStore;
use lease_store::etcd::{EtcdOptions, EtcdStore};
use lease_store::kube::{ClientSource, KubeLeaseOptions, KubeLeaseStore, KubeOptions, KubeStore};
use lease_store::{LeaseStore, NetworkConfig, StoreError};

use crate::backend::{self, Backend};
use crate::cli::{KubeSubnetSource, StoreSettings};
use crate::masq::nft::NftMasq;
use crate::masq::Masquerade;
use crate::netlink::{KernelRef, Netlink};

#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    #[error("etcd: {0}")]
    Etcd(#[from] lease_store::etcd::OptionsError),
    #[error("embedded store {path}: {reason}")]
    Embedded { path: String, reason: String },
    #[error("datapath: {0}")]
    Backend(#[from] crate::backend::BackendError),
    #[error("netlink: {0}")]
    Netlink(#[from] crate::netlink::NetlinkError),
    #[error("masquerade: {0}")]
    Masquerade(String),
    #[error("Kubernetes mode: {0}")]
    Kube(String),
    #[error("cannot read --net-config-path {path}: {reason}")]
    NetConf { path: String, reason: String },
}

/// Opens the store the flags name.
pub async fn open_store(
    settings: &StoreSettings,
    ttl: Duration,
    net_conf: Option<&str>,
    metrics: Option<&crate::daemon::metrics::Metrics>,
) -> Result<Arc<dyn LeaseStore>, WiringError> {
    match settings {
        StoreSettings::Etcd(e) => {
            let opts = EtcdOptions {
                endpoints: e.endpoints.clone(),
                prefix: e.prefix.clone(),
                lease_ttl: Duration::from_secs(ttl.as_secs()),
                ca_file: e.cafile.clone(),
                cert_file: e.certfile.clone(),
                key_file: e.keyfile.clone(),
                username: e.username.clone(),
                password: e.password.clone(),
                ..EtcdOptions::default()
            };
            Ok(Arc::new(EtcdStore::connect(opts).await?))
        }
        StoreSettings::Kube(k) => {
            let text = net_conf.ok_or_else(|| {
                WiringError::Kube(
                    "no net-conf.json: Kubernetes mode reads it from --net-config-path".into(),
                )
            })?;
            let config = NetworkConfig::parse(text)
                .map_err(|e| WiringError::Kube(format!("net-conf.json: {e}")))?;
            let source = ClientSource {
                kubeconfig: k.kubeconfig.clone(),
                api_url: k.api_url.clone(),
            };
            let client = lease_store::kube::client(&source)
                .await
                .map_err(|e| WiringError::Kube(e.to_string()))?;
            if let (KubeSubnetSource::Lease, Some(ns)) = (k.subnet_source, &k.namespace) {
                let mut opts = KubeLeaseOptions::new(ns.clone(), config);
                opts.node_name = Some(k.node_name.clone());
                opts.prefix = k.annotation_prefix.clone();
                opts.ttl = ttl;
                opts.publish_node = true;
                let store = KubeLeaseStore::new(client, opts);
                if let Some(m) = metrics {
                    let rejects = store.rejects();
                    m.set_store_rejects(Arc::new(move || rejects.total()));
                }
                return Ok(Arc::new(store));
            }
            let mut opts = KubeOptions::new(k.node_name.clone(), config);
            opts.prefix = k.annotation_prefix.clone();
            Ok(Arc::new(KubeStore::new(client, opts)))
        }
        StoreSettings::Embedded { path } => {
            let err = |e: StoreError| WiringError::Embedded {
                path: path.display().to_string(),
                reason: e.to_string(),
            };
            let mut waited = false;
            loop {
                match EmbeddedStore::open(path, ttl).await {
                    Ok(store) => return Ok(Arc::new(store)),
                    // A new lease file: with --net-config-path this daemon
                    // can create it; otherwise wait for whoever writes it.
                    Err(StoreError::ConfigMissing(_)) => match net_conf {
                        Some(text) => EmbeddedStore::init(path, text).await.map_err(err)?,
                        None => {
                            if !waited {
                                tracing::warn!(
                                    path = %path.display(),
                                    "embedded store has no network config yet; waiting (or give --net-config-path)"
                                );
                                waited = true;
                            }
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    },
                    Err(e) => return Err(err(e)),
                }
            }
        }
    }
}

/// The text of `--net-config-path`, if given.
pub fn read_net_conf(path: Option<&Path>) -> Result<Option<String>, WiringError> {
    path.map(|p| {
        std::fs::read_to_string(p).map_err(|e| WiringError::NetConf {
            path: p.display().to_string(),
            reason: e.to_string(),
        })
    })
    .transpose()
}

/// The masquerade driver: nftables when `--ip-masq`, else none. With
/// masquerading off, rules an earlier run left are removed.
pub async fn masquerade(ip_masq: bool) -> Result<Option<Arc<dyn Masquerade>>, WiringError> {
    let nft = NftMasq::new();
    if ip_masq {
        return Ok(Some(Arc::new(nft)));
    }
    let removed = tokio::task::spawn_blocking(move || nft.remove()).await;
    match removed {
        Ok(Ok(())) => {}
        // Without the nft binary there cannot be rules of ours to remove.
        Ok(Err(e)) => tracing::debug!(error = %e, "no masquerade rules removed"),
        Err(e) => return Err(WiringError::Masquerade(e.to_string())),
    }
    Ok(None)
}

/// The netlink seam for this namespace (one connection, shared by node
/// detection, the backend and the kernel-event subscription).
pub fn connect_kernel() -> Result<KernelRef, WiringError> {
    Ok(Netlink::connect()?.into())
}

/// The backend net-conf.json asks for (and `--datapath-mode`,
/// `--userspace-busy-poll` adjust), driving `kernel`'s namespace and
/// remembering an adopted VTEP MAC in `vtep_mac_file`.
pub async fn make_backend_with_mac_file(
    config: &NetworkConfig,
    kernel: KernelRef,
    node: &backend::NodeOverrides,
    local: &backend::LocalNode,
    vtep_mac_file: &Path,
) -> Result<Box<dyn Backend>, WiringError> {
    let memory = backend::mac_memory::MacMemory::new(vtep_mac_file);
    Ok(backend::open(config, kernel, node, local, Some(memory)).await?)
}
