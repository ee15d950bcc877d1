//! The embedded store for `--store embedded`: one file in the lab's state
//! directory shared by all the lab's daemons. The lab writes the network
//! config into it before the daemons start, and deletes a lease when a
//! node leaves. Goes through lease-store's API, never the file format.

use std::path::Path;
use std::time::Duration;

use lease_store::embedded::EmbeddedStore;
use lease_store::{LeaseStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("cannot start an async runtime for the embedded store: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("embedded store {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: StoreError,
    },
    #[error("embedded store {path} holds no lease {key}")]
    NoLease { path: String, key: String },
}

fn block_on<T>(
    path: &Path,
    f: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, EmbeddedError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(EmbeddedError::Runtime)?;
    rt.block_on(f).map_err(|source| EmbeddedError::Store {
        path: path.display().to_string(),
        source,
    })
}

/// Creates the store file with `net_conf` in it.
pub fn init(path: &Path, net_conf: &str) -> Result<(), EmbeddedError> {
    block_on(path, EmbeddedStore::init(path, net_conf))
}

/// Deletes the lease whose key is `key` (as a node that leaves for good).
pub fn delete_lease(path: &Path, key: &str) -> Result<(), EmbeddedError> {
    let found = block_on(path, async {
        // The TTL only applies to leases this client writes; it writes none.
        let store = EmbeddedStore::open(path, Duration::from_secs(60)).await?;
        let (leases, _) = store.list().await?;
        match leases.into_iter().find(|l| l.key() == key) {
            Some(lease) => store.release(&lease).await.map(|()| true),
            None => Ok(false),
        }
    })?;
    if found {
        Ok(())
    } else {
        Err(EmbeddedError::NoLease {
            path: path.display().to_string(),
            key: key.to_string(),
        })
    }
}
