//! Plain data types shared across the daemon's parts (kernel entries, the
//! detected node, the encapsulation). They live here, below every other
//! module, so that `backend`, `netlink`, `node`, `reconcile` and
//! `userspace` depend on this module instead of on each other.

pub mod entries;
pub mod node;

pub use entries::{Fdb, Mac, MacParseError, Neigh, Route, TunnelEncap};
pub use node::{
    Encap, Iface, IfaceSpec, LocalNode, NoTunnelAddress, RouteHint, Underlay, DEFAULT_VXLAN_PORT,
    ENCAP_HEADER_LEN, GENEVE_PORT,
};
