//! flannel-rs, the CNI plugin: attaches pods to the node's flannel subnet
//! through a bridge, with host-local-compatible IPAM. The binary is a thin
//! wrapper around [`commands::run`].

pub mod background;
pub mod bridge;
pub mod commands;
pub mod config;
pub mod env;
pub mod error;
pub mod ipam;
pub mod naming;
pub mod netlink;
pub mod netns;
pub mod result;
pub mod sysctl;
pub mod version;
