//! STATUS: ready for ADD once subnet.env is there and readable.

use crate::commands::node_subnet;
use crate::config::Config;
use crate::error::{code, CniError};

pub fn status(cfg: &Config) -> Result<(), CniError> {
    node_subnet(cfg)
        .map(|_| ())
        .map_err(|e| CniError::new(code::NOT_AVAILABLE, format!("not ready for ADD: {}", e.msg)))
}
