//! Test harness shared by the end-to-end tests and benchmarks: network
//! namespace guards, commands inside namespaces, the root check, unique
//! names, temp dirs, locating built binaries, calling CNI plugins, and a
//! private podman. Everything a test creates is named `fct-...` and removed
//! on drop.

pub mod bins;
pub mod cmd;
pub mod cni;
pub mod containerd;
pub mod etcd_http;
pub mod kube;
pub mod lab;
pub mod names;
pub mod netns;
pub mod oci;
pub mod podman;
pub mod procs;
pub mod root;
pub mod rootfs;
pub mod stats;
pub mod temp;
