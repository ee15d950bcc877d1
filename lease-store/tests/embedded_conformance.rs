//! The conformance suite against the embedded (file) store. Each table is
//! a fresh file in its own temporary directory; every `open` is a separate
//! client, as separate daemons on one host would be.

use std::sync::Arc;
use std::time::Duration;

use lease_store::conformance::{Fixture, Table};
use lease_store::embedded::EmbeddedStore;
use lease_store::store::Result;
use lease_store::LeaseStore;

struct Embedded;

struct FileTable {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    ttl: Duration,
}

#[async_trait::async_trait]
impl Fixture for Embedded {
    async fn table(&self, net_conf: &str, ttl: Duration) -> Result<Box<dyn Table>> {
        let dir = tempfile::tempdir().map_err(|source| lease_store::StoreError::Io {
            op: "create a temporary directory",
            source,
        })?;
        let path = dir.path().join("leases.json");
        EmbeddedStore::init(&path, net_conf).await?;
        Ok(Box::new(FileTable {
            _dir: dir,
            path,
            ttl,
        }))
    }
}

#[async_trait::async_trait]
impl Table for FileTable {
    async fn open(&self) -> Result<Arc<dyn LeaseStore>> {
        Ok(Arc::new(EmbeddedStore::open(&self.path, self.ttl).await?))
    }
    async fn compact(&self) -> Result<()> {
        EmbeddedStore::open(&self.path, self.ttl)
            .await?
            .compact()
            .await
    }
}

lease_store::conformance_tests!(Embedded);
