//! The flannel-rs node daemon as a library: the binary (`main.rs`) wires
//! these parts together; tests and `flannelctl` reuse them.

pub mod backend;
pub mod cli;
pub mod daemon;
pub mod go_flags;
pub mod http;
pub mod masq;
pub mod model;
pub mod netlink;
pub mod node;
pub mod reconcile;
pub mod userspace;
