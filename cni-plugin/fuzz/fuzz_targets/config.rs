//! Any stdin must give a Config or a CNI error, never a panic; whatever
//! decodes must answer the follow-up questions without panicking either.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cni_plugin::config::requested_version(data);
    match cni_plugin::config::parse(data) {
        Ok(cfg) => {
            let _ = cfg.requested_ip(None);
            if let Some(prev) = &cfg.prev_result {
                if let Ok(r) = cni_plugin::result::CniResult::from_prev(prev) {
                    let _ = r.to_json(cfg.version);
                }
            }
        }
        Err(e) => {
            let _ = cni_plugin::error::CniError::from(e).to_json("1.1.0");
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = cni_plugin::env::parse_cni_args(s);
    }
});
