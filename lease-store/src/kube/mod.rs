//! The Kubernetes backend (feature `kube`): the controller manager assigns
//! each node's subnet (`spec.podCIDRs`), and the daemon publishes how peers
//! reach it as annotations on its Node (Go flannel's names, configurable
//! prefix). See docs/KUBE-MODE.md.
//!
//! What differs from the etcd store, because Kubernetes owns the subnets:
//! - `acquire` allocates nothing: it waits for the node's podCIDR and
//!   publishes the annotations and `NetworkUnavailable=False`;
//! - leases have no TTL (`expiration: None`): `renew` and `release` do
//!   nothing, a subnet is freed when the Node object is deleted;
//! - `reserve` is unsupported (assign podCIDRs through Kubernetes);
//! - revisions are the API server's resourceVersions.
//!
//! The `lease` subnet source ([`KubeLeaseStore`], for clusters whose control
//! plane assigns no podCIDRs, as EKS) keeps one `coordination.k8s.io/v1`
//! Lease object per subnet instead, and allocates, renews, expires and
//! reserves like the etcd store.

mod client;
pub mod lease_map;
mod lease_store;
mod lease_view;
pub mod mapping;
mod store;
#[cfg(feature = "kube-testing")]
pub mod testing;
mod view;
mod watch;

pub use client::{client, ClientSource};
pub use lease_store::{KubeLeaseOptions, KubeLeaseStore};
pub use mapping::{MapError, DEFAULT_PREFIX};
pub use store::{KubeOptions, KubeStore};
