//! The userspace VXLAN/Geneve datapath: a TUN device and UDP sockets in
//! this process, for kernels without the vxlan/geneve modules.
//!
//! Pure logic: `frame` (VXLAN/Geneve encode/decode), `vnet` (the TUN's
//! virtio-net header), `gso` (cutting super-packets into datagrams),
//! `gro` (joining TCP segments for the TUN), `csum` (checksums), `peers`
//! (lookup table), `counters`. I/O: `tun` and `udp` open the kernel
//! objects; `engine` runs the per-queue threads, whose two directions are
//! `tx` and `rx`. The backend driving it is `crate::backend::userspace`.

pub mod counters;
pub mod csum;
pub mod engine;
pub mod frame;
pub mod gro;
pub mod gso;
pub mod peers;
mod rx;
pub mod tun;
mod tx;
pub mod udp;
pub mod vnet;
