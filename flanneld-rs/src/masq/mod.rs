//! Masquerade drivers: pod traffic leaving the cluster network is SNATed to
//! the node, with Go flannel's rule semantics. `nft` keeps its rules in a
//! table of its own. Without `--ip-masq` the daemon holds no driver at all
//! (`Parts::masq` is `None`) and removes rules an earlier run left.

pub mod forward;
pub mod go_chains;
pub mod nft;
pub mod rules;

use ipnet::Ipv4Net;

#[derive(Debug, thiserror::Error)]
pub enum MasqError {
    #[error("masquerade needs at least one cluster network")]
    NoClusterNetwork,
    #[error("running nft for table {table}: {reason} (is the nftables package installed and are we root?)")]
    Nft { table: String, reason: String },
    #[error("forwarding accepts in iptables FORWARD: {0}")]
    Forward(#[from] forward::ForwardError),
}

/// A masquerade driver. Calls are synchronous (they run `nft`): call them
/// from `spawn_blocking` in async code.
pub trait Masquerade: Send + Sync {
    /// Installs (or atomically replaces) the rules for this node's pod
    /// subnet inside the cluster networks.
    fn apply(&self, cluster_networks: &[Ipv4Net], pod_subnet: Ipv4Net) -> Result<(), MasqError>;

    /// Removes everything this driver installed (for `--ip-masq=false`, so
    /// rules left by an earlier run with masquerading on go away).
    fn remove(&self) -> Result<(), MasqError>;

    /// True once our forwarding accepts are in place in every iptables
    /// flavour whose filter table exists (`forward`), so that Go flannel's
    /// FLANNEL-FWD chain is no longer needed.
    fn forward_installed(&self) -> bool {
        false
    }
}
