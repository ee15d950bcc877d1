//! Harness of the end-to-end tests and benchmarks: the lab of flanneld-rs
//! nodes, the Kubernetes lab, containerd and podman, locating built
//! binaries, etcd over HTTP, the kernel floor program of the CNI
//! benchmark (`floor`). The general pieces (namespace guards,
//! `in_netns`, the root check, unique names, temp dirs, `wait_for`, the
//! CNI runner) are in the `testkit` crate. Everything a test creates is
//! named `fct-...` and removed on drop.

pub mod bins;
pub mod containerd;
pub mod etcd_http;
pub mod floor;
pub mod kube;
pub mod lab;
pub mod oci;
pub mod podman;
pub mod rootfs;
pub mod stats;
