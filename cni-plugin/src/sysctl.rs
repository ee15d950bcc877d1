//! The one sysctl ADD needs: IPv4 forwarding in the node's namespace. Read
//! first so the common case (already on) costs no write.

use crate::error::{code, CniError};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

#[derive(Debug, thiserror::Error)]
#[error("cannot enable IPv4 forwarding ({IP_FORWARD}): {0}")]
pub struct SysctlError(std::io::Error);

impl From<SysctlError> for CniError {
    fn from(e: SysctlError) -> Self {
        CniError::new(code::IO_FAILURE, e.to_string())
    }
}

pub fn ensure_ip_forward() -> Result<(), SysctlError> {
    match std::fs::read_to_string(IP_FORWARD) {
        Ok(v) if v.trim() == "1" => Ok(()),
        _ => std::fs::write(IP_FORWARD, "1").map_err(SysctlError),
    }
}
