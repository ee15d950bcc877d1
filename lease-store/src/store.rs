//! The `LeaseStore` seam: what the daemon needs from the cluster's lease
//! table, whatever keeps it (etcd, Kubernetes Node objects, a local file).
//! Every implementation passes the same conformance suite
//! (`lease_store::conformance`, feature `conformance`).

use std::net::Ipv4Addr;
use std::pin::Pin;

use futures::Stream;
use ipnet::{Ipv4Net, Ipv6Net};

use crate::config::{ConfigError, NetworkConfig};
use crate::lease::{Lease, LeaseAttrs};

/// A store revision (etcd's mod revision; a counter in other stores).
/// Watching from revision `r` delivers every change made after `r`.
pub type Revision = i64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No free subnet is left in the configured range.
    #[error("out of subnets: all {total} subnets of {range} are taken ({leased} leased, {reserved} reserved); widen Network or SubnetMin/SubnetMax, or lengthen SubnetLen")]
    OutOfSubnets {
        range: String,
        total: u64,
        leased: usize,
        reserved: usize,
    },
    /// The network configuration is missing from the store.
    #[error("network configuration not found at {0}: write net-conf.json there first")]
    ConfigMissing(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Our own lease is gone and its subnet was taken by another node in the
    /// meantime: the caller must acquire a new lease (and reprogram).
    #[error("lease {key} was lost: the subnet now belongs to {holder}")]
    LeaseLost { key: String, holder: Ipv4Addr },
    /// The lease or key does not exist.
    #[error("lease {0} not found")]
    NotFound(String),
    /// A value in the store could not be decoded. Shown bounded (both parts
    /// can quote what anyone with write access put in the store, e.g. a
    /// megabyte-long string in serde's "invalid type" message).
    #[error("cannot decode {}: {}", shown(key, 200), shown(reason, 300))]
    Decode { key: String, reason: String },
    /// The store could not be reached or answered with an error; retrying
    /// later may succeed.
    #[error("lease store unavailable ({op}): {reason}")]
    Unavailable { op: &'static str, reason: String },
    /// Gave up after retries (for example a lost creation race every time).
    #[error("{op} failed after {attempts} attempts: {reason}")]
    Exhausted {
        op: &'static str,
        attempts: u32,
        reason: String,
    },
    /// A reservation was asked for a subnet another node holds.
    #[error(
        "subnet {key} is held by {holder}: release that lease first or reserve another subnet"
    )]
    SubnetTaken { key: String, holder: Ipv4Addr },
    /// `unreserve` found an ordinary lease (with a TTL) on the subnet,
    /// not an operator's reservation.
    #[error("subnet {key} is not reserved: it is an ordinary lease of {holder}; release the lease instead")]
    NotReserved { key: String, holder: Ipv4Addr },
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        source: std::io::Error,
    },
}

/// `text` cut to `max` bytes on a character boundary (marked), control
/// characters escaped, for error messages that quote store contents.
fn shown(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let piece: String = if c.is_control() {
            c.escape_default().collect()
        } else {
            c.to_string()
        };
        if out.len() + piece.len() > max {
            out.push_str(&format!("… ({} bytes in all)", text.len()));
            return out;
        }
        out.push_str(&piece);
    }
    out
}

impl From<crate::alloc::AllocError> for StoreError {
    fn from(e: crate::alloc::AllocError) -> Self {
        match e {
            crate::alloc::AllocError::OutOfSubnets {
                range,
                total,
                leased,
                reserved,
            } => StoreError::OutOfSubnets {
                range,
                total,
                leased,
                reserved,
            },
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What a node asks for when it acquires its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcquireRequest {
    pub attrs: LeaseAttrs,
    /// The subnet this node held before (read back from subnet.env), tried
    /// after the node's own lease and before a random free one.
    pub previous_subnet: Option<Ipv4Net>,
    pub previous_ipv6_subnet: Option<Ipv6Net>,
}

/// A change to the lease table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    /// A lease was created or its attributes changed.
    Added(Lease),
    /// A lease was released, expired or deleted. It carries the attributes
    /// it had (for example the VTEP MAC), so the datapath can remove exactly
    /// the entries it made for it.
    Removed(Lease),
}

/// What a watch delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchUpdate {
    /// Changes, in order, up to and including `revision`.
    Events {
        events: Vec<LeaseEvent>,
        revision: Revision,
    },
    /// The requested revision was compacted away (or the store resynced):
    /// this is the whole table at `revision`; the consumer replaces its view.
    Snapshot {
        leases: Vec<Lease>,
        revision: Revision,
    },
}

/// A stream of watch updates; it ends only on an unrecoverable error
/// (transient errors are retried inside, with backoff).
pub type LeaseWatch = Pin<Box<dyn Stream<Item = Result<WatchUpdate>> + Send>>;

/// The lease table.
#[async_trait::async_trait]
pub trait LeaseStore: Send + Sync {
    /// The cluster's network configuration.
    async fn network_config(&self) -> Result<NetworkConfig>;

    /// Acquires a lease for this node: its own existing lease (same public
    /// IP, still inside the configured range) is reused and its attributes
    /// updated; else `previous_subnet` when free; else a random free subnet.
    async fn acquire(&self, req: &AcquireRequest) -> Result<Lease>;

    /// Extends a lease's TTL. If the key vanished (deleted by hand, or
    /// expired while the store was unreachable), it is re-created when the
    /// subnet is still free; if another node took it, `LeaseLost`.
    async fn renew(&self, lease: &Lease) -> Result<Lease>;

    /// Gives a lease back (the daemon does this only when asked to).
    /// `NotFound` when the key is gone, `LeaseLost` when another node holds
    /// it; a reservation is left in place (it belongs to the operator).
    async fn release(&self, lease: &Lease) -> Result<()>;

    /// Writes an operator's reservation: a key with no TTL that is never
    /// handed to another node and that the node with `attrs.public_ip`
    /// takes as its own lease. Replaces a lease of that same node on the
    /// subnet; `SubnetTaken` when another node holds it; the subnet(s) must
    /// fit the network config.
    async fn reserve(
        &self,
        subnet: Option<Ipv4Net>,
        ipv6_subnet: Option<Ipv6Net>,
        attrs: &LeaseAttrs,
    ) -> Result<Lease>;

    /// Removes the operator's reservation on exactly these subnets (the key
    /// as `reserve` wrote it) and returns it, as flannel's
    /// `RemoveReservation` does: the subnet is free again. A daemon still
    /// running on the reserved node sees its lease deleted and takes the
    /// same subnet back as an ordinary lease (with a TTL, renewed while it
    /// runs; freed when the node is gone). `NotFound` when there is no key,
    /// `NotReserved` when the key is an ordinary lease (left in place).
    async fn unreserve(
        &self,
        subnet: Option<Ipv4Net>,
        ipv6_subnet: Option<Ipv6Net>,
    ) -> Result<Lease>;

    /// Every lease and reservation, with the revision the list was read at.
    async fn list(&self) -> Result<(Vec<Lease>, Revision)>;

    /// Watches the table from `from` (exclusive). Changes to `own` (matched
    /// by key) are not delivered, and a snapshot leaves it out: a node does
    /// not peer with itself. A removal carries the lease's last attributes.
    async fn watch(&self, from: Revision, own: Option<Lease>) -> Result<LeaseWatch>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_errors_quoting_store_contents_stay_short_and_on_one_line() {
        let e = StoreError::Decode {
            key: "/coreos.com/network/subnets/10.244.1.0-24".into(),
            reason: format!(
                "invalid type: string \"{}\", expected u32",
                "a".repeat(1 << 20)
            ),
        };
        let text = e.to_string();
        assert!(text.len() < 600, "{} bytes", text.len());
        assert!(text.contains("10.244.1.0-24"), "{text}");
        assert!(text.contains("bytes in all"), "{text}");
        let e = StoreError::Decode {
            key: "k\nforged line".into(),
            reason: "r".into(),
        };
        assert_eq!(e.to_string(), "cannot decode k\\nforged line: r");
    }
}
