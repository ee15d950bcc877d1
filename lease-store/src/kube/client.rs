//! Where the API server is: an explicit URL, a kubeconfig file, or the
//! in-cluster service account (and then ~/.kube/config), in Go flannel's
//! order of precedence.

use std::path::PathBuf;

use crate::store::{Result, StoreError};

/// How to reach the API server (`--kube-api-url`, `--kubeconfig-file`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSource {
    pub kubeconfig: Option<PathBuf>,
    /// Overrides the kubeconfig's server when both are given.
    pub api_url: Option<String>,
}

fn unavailable(reason: String) -> StoreError {
    StoreError::Unavailable {
        op: "configure the Kubernetes client",
        reason,
    }
}

/// Builds the client: a kubeconfig file when given (its server replaced by
/// `api_url` when that is set too); else `api_url` alone (plain settings,
/// no credentials: for a local or proxied API server); else in-cluster
/// configuration, then the default kubeconfig.
pub async fn client(src: &ClientSource) -> Result<kube::Client> {
    let url = match &src.api_url {
        Some(u) => Some(u.parse::<http::Uri>().map_err(|e| {
            unavailable(format!(
                "--kube-api-url {u:?} is not a URL ({e}); give one like https://10.0.0.1:6443"
            ))
        })?),
        None => None,
    };
    let mut config = match (&src.kubeconfig, url.clone()) {
        (Some(path), _) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                unavailable(format!("cannot read kubeconfig {}: {e}", path.display()))
            })?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| {
                    unavailable(format!("kubeconfig {} is not usable: {e}", path.display()))
                })?
        }
        (None, Some(u)) => kube::Config::new(u),
        (None, None) => kube::Config::infer().await.map_err(|e| {
            unavailable(format!(
                "no in-cluster service account and no kubeconfig ({e}); pass --kubeconfig-file or --kube-api-url"
            ))
        })?,
    };
    if let Some(u) = url {
        config.cluster_url = u;
    }
    kube::Client::try_from(config)
        .map_err(|e| unavailable(format!("cannot build the Kubernetes client: {e}")))
}
