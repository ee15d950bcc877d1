//! The cluster's lease table, compatible with Go flannel's formats.
//!
//! The core modules (formats, allocation, `subnet.env`) are synchronous and
//! free of an async runtime so that the short-lived CNI binary can use them.
//! The stores (feature `store`, and `etcd`) are async.

pub mod subnet_env;
