//! Test harness shared by the end-to-end tests and benchmarks: network
//! namespace guards, commands inside namespaces, the root check, unique
//! names, temp dirs, locating built binaries, calling CNI plugins, and a
//! private podman. Everything a test creates is named `fct-...` and removed
//! on drop.

pub mod bins;
pub mod cmd;
pub mod cni;
pub mod names;
pub mod netns;
pub mod podman;
pub mod root;
pub mod rootfs;
pub mod temp;
