//! The userspace datapath as a backend: a TUN device and a UDP socket
//! framing VXLAN or Geneve (the engine lives in `crate::userspace`). Being
//! written (issue 5).

use super::{Backend, BackendError, TunnelSpec};
use crate::netlink::Netlink;

/// The userspace backend for `spec`.
pub fn new(_netlink: Netlink, spec: TunnelSpec) -> Result<Box<dyn Backend>, BackendError> {
    Err(BackendError::Unsupported(format!(
        "{} in userspace mode (not built yet)",
        spec.encap.backend_type()
    )))
}
