//! The conformance suite against a real etcd (Debian's /usr/bin/etcd). Each
//! table gets its own etcd process, so that one check's compaction cannot
//! disturb another check's watch; every `open` is a separate client.

use std::sync::Arc;
use std::time::Duration;

use lease_store::conformance::{self, Fixture, Table};
use lease_store::etcd::testing::EtcdProcess;
use lease_store::etcd::{EtcdOptions, EtcdStore};
use lease_store::store::Result;
use lease_store::{LeaseStore, StoreError};

struct Etcd;

struct EtcdTable {
    etcd: EtcdProcess,
    ttl: Duration,
}

fn setup_failed(what: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        op: "start test etcd",
        reason: what.to_string(),
    }
}

impl EtcdTable {
    fn options(&self) -> EtcdOptions {
        EtcdOptions {
            lease_ttl: self.ttl,
            ..EtcdOptions::with_endpoints([self.etcd.endpoint()])
        }
    }

    async fn store(&self) -> Result<EtcdStore> {
        EtcdStore::connect(self.options())
            .await
            .map_err(setup_failed)
    }
}

#[async_trait::async_trait]
impl Fixture for Etcd {
    async fn table(&self, net_conf: &str, ttl: Duration) -> Result<Box<dyn Table>> {
        let etcd = tokio::task::spawn_blocking(EtcdProcess::start)
            .await
            .map_err(setup_failed)?
            .map_err(setup_failed)?;
        let t = EtcdTable { etcd, ttl };
        t.store().await?.put_config(net_conf).await?;
        Ok(Box::new(t))
    }
}

#[async_trait::async_trait]
impl Table for EtcdTable {
    async fn open(&self) -> Result<Arc<dyn LeaseStore>> {
        Ok(Arc::new(self.store().await?))
    }

    async fn compact(&self) -> Result<()> {
        self.store().await?.compact_all().await.map(|_| ())
    }
}

macro_rules! checks {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            conformance::$name(&Etcd).await;
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
