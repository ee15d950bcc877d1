//! Kernel VXLAN or Geneve in metadata (external) mode: one device, and per
//! peer a route with `encap ip id <VNI> dst <peer>` plus the neighbour entry
//! its inner Ethernet frame needs. Being written (issue 5).

use super::{Backend, BackendError, TunnelSpec};
use crate::netlink::Netlink;

/// The metadata-mode backend for `spec` (with its userspace fallback).
pub fn new(_netlink: Netlink, spec: TunnelSpec) -> Result<Box<dyn Backend>, BackendError> {
    Err(BackendError::Unsupported(format!(
        "{} in metadata mode (not built yet)",
        spec.encap.backend_type()
    )))
}
