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
    #[error("embedded store {path}: {source}")]
    Embedded {
        path: String,
        #[source]
        source: StoreError,
    },
    #[error("datapath: {0}")]
    Backend(#[from] crate::backend::BackendError),
    #[error("netlink: {0}")]
    Netlink(#[from] crate::netlink::NetlinkError),
    /// The blocking task that removes an earlier run's masquerade rules
    /// did not finish (it panicked or the runtime is shutting down).
    #[error("masquerade: removing earlier rules did not finish: {0}")]
    MasqueradeTask(#[source] tokio::task::JoinError),
    #[error("Kubernetes mode: no net-conf.json: Kubernetes mode reads it from --net-config-path")]
    KubeNoNetConf,
    #[error("Kubernetes mode: net-conf.json: {0}")]
    KubeNetConf(#[source] lease_store::config::ConfigError),
    #[error("Kubernetes mode: {0}")]
    KubeClient(#[source] StoreError),
    #[error("cannot read --net-config-path {path}: {source}")]
    NetConf {
        path: String,
        #[source]
        source: std::io::Error,
    },
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
            let text = net_conf.ok_or(WiringError::KubeNoNetConf)?;
            let config = NetworkConfig::parse(text).map_err(WiringError::KubeNetConf)?;
            let source = ClientSource {
                kubeconfig: k.kubeconfig.clone(),
                api_url: k.api_url.clone(),
            };
            let client = lease_store::kube::client(&source)
                .await
                .map_err(WiringError::KubeClient)?;
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
            let err = |source: StoreError| WiringError::Embedded {
                path: path.display().to_string(),
                source,
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
        std::fs::read_to_string(p).map_err(|source| WiringError::NetConf {
            path: p.display().to_string(),
            source,
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
        Err(e) => return Err(WiringError::MasqueradeTask(e)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{KubeSettings, KubeSubnetSource};
    use std::error::Error as _;

    fn kube() -> StoreSettings {
        StoreSettings::Kube(KubeSettings {
            kubeconfig: None,
            api_url: Some("https://127.0.0.1:1".into()),
            node_name: "node1".into(),
            annotation_prefix: "flannel.alpha.coreos.com/".into(),
            subnet_source: KubeSubnetSource::Node,
            namespace: None,
        })
    }

    fn open(net_conf: Option<&str>) -> WiringError {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        match rt.block_on(open_store(&kube(), Duration::from_secs(60), net_conf, None)) {
            Ok(_) => panic!("a Kubernetes store opened without a usable net-conf.json"),
            Err(e) => e,
        }
    }

    // The errors stay typed up to main: the cause is a source, not a
    // string copied into the message.
    #[test]
    fn kube_mode_net_conf_errors_are_typed_with_their_cause() {
        assert!(matches!(open(None), WiringError::KubeNoNetConf));
        let e = open(Some(r#"{"Network":"10.244.0.0/33"}"#));
        assert!(matches!(e, WiringError::KubeNetConf(_)), "{e}");
        assert!(e.source().is_some(), "{e}");
        assert!(
            e.to_string()
                .starts_with("Kubernetes mode: net-conf.json: "),
            "{e}"
        );
    }

    #[test]
    fn an_unreadable_net_conf_keeps_the_io_error() {
        // A directory that does not exist: nothing is created.
        let missing = std::env::temp_dir()
            .join(format!("fct-wiring-absent-{}", std::process::id()))
            .join("net-conf.json");
        let e = read_net_conf(Some(&missing)).expect_err("missing file");
        let WiringError::NetConf { path, source } = &e else {
            panic!("{e}");
        };
        assert_eq!(path, &missing.display().to_string());
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        assert!(read_net_conf(None).expect("no path").is_none());
    }
}
