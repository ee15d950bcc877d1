//! The flannel-rs node daemon as a library: the binary (`main.rs`) wires
//! these parts together; tests and `flannelctl` reuse them.

pub mod backend;
