//! The conformance suite against the embedded (file) store. Each table is
//! a fresh file in its own temporary directory; every `open` is a separate
//! client, as separate daemons on one host would be.

use std::sync::Arc;
use std::time::Duration;

use lease_store::conformance::{self, Fixture, Table};
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

macro_rules! checks {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            conformance::$name(&Embedded).await;
        }
    )*};
}

checks!(
    network_config_round_trips,
    concurrent_acquirers_get_distinct_subnets,
    exhaustion_gives_a_clear_error,
    renewal_keeps_a_lease_past_its_ttl,
    expiry_frees_the_subnet,
    watcher_sees_peers_but_not_itself,
    watch_resumes_from_a_revision,
    compacted_revision_gives_a_snapshot,
    release_frees_the_subnet,
    reservations_are_respected,
    reservations_can_be_removed,
    own_lease_is_reused,
    previous_subnet_is_honoured_when_free,
    renew_recreates_a_vanished_lease_or_reports_it_lost,
    dual_stack_leases,
);
