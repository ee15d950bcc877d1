//! The etcd v3 backend (feature `etcd`), in Go flannel's key layout so that
//! flanneld and flanneld-rs can share one etcd. See docs/LEASE-STORE-ETCD.md.

pub mod codec;
pub mod options;
mod store;
mod watch;

pub use codec::DEFAULT_PREFIX;
pub use options::{EtcdOptions, OptionsError};
pub use store::{EtcdStore, ACQUIRE_ATTEMPTS};
