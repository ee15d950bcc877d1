//! The conformance suite against a real etcd (Debian's /usr/bin/etcd). Each
//! table gets its own etcd process, so that one check's compaction cannot
//! disturb another check's watch; every `open` is a separate client.

use std::sync::Arc;
use std::time::Duration;

use lease_store::conformance::{Fixture, Table};
use lease_store::etcd::{EtcdOptions, EtcdStore};
use lease_store::store::Result;
use lease_store::{LeaseStore, StoreError};
use testkit::etcd::EtcdProcess;

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

lease_store::conformance_tests!(Etcd);
