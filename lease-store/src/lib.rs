//! The cluster's lease table, compatible with Go flannel's formats.
//!
//! The core modules (formats, allocation, `subnet.env`) are synchronous and
//! free of an async runtime so that the short-lived CNI binary can use them.
//! The stores (feature `store`, and `etcd`) are async.
//!
//! Features: none = the core; `store` = the [`LeaseStore`] trait and the
//! embedded single-host store; `etcd` (default) = plus the etcd backend;
//! `kube` = the Kubernetes (Node annotations) backend;
//! `conformance` = the test suite every backend must pass.

pub mod alloc;
pub mod config;
pub mod key;
pub mod lease;
pub mod subnet_env;

#[cfg(feature = "store")]
pub mod store;

#[cfg(feature = "store")]
pub mod embedded;

#[cfg(feature = "conformance")]
pub mod conformance;

#[cfg(feature = "etcd")]
pub mod etcd;

#[cfg(feature = "kube")]
pub mod kube;

pub use config::NetworkConfig;
pub use lease::{Lease, LeaseAttrs};
#[cfg(feature = "store")]
pub use store::{
    AcquireRequest, LeaseEvent, LeaseStore, LeaseWatch, Revision, StoreError, WatchUpdate,
};
