//! The userspace VXLAN/Geneve datapath: a TUN device and UDP sockets in
//! this process, for kernels without the vxlan/geneve modules.
//!
//! `frame` (pure encode/decode), `peers` (pure lookup table) and
//! `counters` hold the logic; `tun` and `udp` open the kernel objects;
//! `engine` runs the per-queue threads. The backend driving it is
//! `crate::backend::userspace`.

pub mod counters;
pub mod engine;
pub mod frame;
pub mod peers;
pub mod tun;
pub mod udp;
