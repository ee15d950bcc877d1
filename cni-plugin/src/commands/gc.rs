//! GC: release every reservation whose attachment the runtime no longer
//! knows. Keeps going after errors and reports them all.

use crate::config::Config;
use crate::error::{code, CniError};
use crate::ipam::Store;

pub fn gc(cfg: &Config) -> Result<(), CniError> {
    let keep = cfg.gc_attachments.as_ref().ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "GC needs cni.dev/attachments (or cni.dev/valid-attachments): without it every reservation would be freed",
        )
    })?;
    let store = Store::open(&cfg.data_dir, &cfg.name)?;
    let mut errors = Vec::new();
    for r in store.list()? {
        if keep
            .iter()
            .any(|a| r.belongs_to(&a.container_id, &a.ifname))
        {
            continue;
        }
        if let Err(e) = store.release_ip(r.ip) {
            errors.push(e.to_string());
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            code::IO_FAILURE,
            "GC could not release every leaked address",
        )
        .with_details(errors.join("; ")))
    }
}
