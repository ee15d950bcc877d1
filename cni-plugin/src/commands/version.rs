//! VERSION: which specification versions this plugin speaks.

use crate::config;
use crate::version::{version_info, NEWEST};

/// Echoes the caller's `cniVersion` (or ours when it sent none) with the
/// supported list. Never fails: runtimes call it before every ADD/DEL.
pub fn version(stdin: &[u8]) -> String {
    let asked = config::requested_version(stdin).unwrap_or_else(|| NEWEST.as_str().to_string());
    version_info(&asked).to_string()
}
