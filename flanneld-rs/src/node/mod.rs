//! Which underlay interface, address and MTU this node uses: pure selection
//! over a list of interfaces (`select`), the netlink dump that feeds it
//! (`netlink`), and the MTU arithmetic (`mtu`).

pub mod mtu;
pub mod netlink;
pub mod select;

pub use netlink::DetectError;
pub use select::{select_iface, Iface, NodeError, PublicAddrs, RouteHint};
