//! Datapath statistics, an optional capability of a backend
//! (`Backend::stats`): only a datapath that moves packets itself (the
//! userspace one) has any; the kernel datapaths return `None`. /metrics
//! reads them at scrape time through this trait, without knowing the
//! engine's types.

/// A live source of packet counters.
pub trait DatapathStats: Send + Sync + std::fmt::Debug {
    fn snapshot(&self) -> StatsSnapshot;
}

/// Counters at one moment, labelled for exposition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// (direction, packets, bytes) delivered.
    pub delivered: Vec<(&'static str, u64, u64)>,
    /// (direction, reason, packets) dropped; every reason, zeros included.
    pub dropped: Vec<(&'static str, &'static str, u64)>,
}
