//! The CNI error object (`{"cniVersion","code","msg","details"}`) and the
//! codes this plugin answers with. Every module's error converts into
//! [`CniError`], which is what the binary prints on stdout.

use serde::Serialize;

/// Error codes: 1-11 from the CNI specification, 50/51 for STATUS, and 100+
/// our own (each is documented in the crate's README.md).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// The kernel refused a netlink request.
    pub const NETLINK: u32 = 100;
    /// No free address left in the node's subnet.
    pub const POOL_EXHAUSTED: u32 = 101;
    /// Reservations exist outside the node's current subnet (the lease changed).
    pub const SUBNET_CHANGED: u32 = 102;
    /// The requested address is taken or outside the node's subnet.
    pub const REQUESTED_IP_UNAVAILABLE: u32 = 103;
    /// CHECK found the attachment differs from what ADD made.
    pub const CHECK_FAILED: u32 = 104;
    /// The pod interface or the host-side veth already exists.
    pub const ALREADY_EXISTS: u32 = 105;
    /// A network namespace could not be entered or left.
    pub const NETNS: u32 = 106;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

#[derive(Serialize)]
struct Wire<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    code: u32,
    msg: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    details: &'a str,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The JSON the runtime reads from stdout. `version` is the cniVersion
    /// of the request, or the newest we speak when the request had none.
    pub fn to_json(&self, version: &str) -> String {
        let wire = Wire {
            cni_version: version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        };
        // Serialising plain strings and integers cannot fail; keep a
        // hand-made fallback anyway rather than panic.
        serde_json::to_string(&wire).unwrap_or_else(|_| {
            format!(
                "{{\"cniVersion\":\"{version}\",\"code\":{},\"msg\":\"error\"}}",
                self.code
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let e = CniError::new(code::INVALID_ENV, "CNI_IFNAME is missing").with_details("set it");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("1.0.0")).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["code"], 4);
        assert_eq!(v["msg"], "CNI_IFNAME is missing");
        assert_eq!(v["details"], "set it");
        let v: serde_json::Value =
            serde_json::from_str(&CniError::new(7, "x").to_json("0.3.1")).unwrap();
        assert!(v.get("details").is_none());
    }
}
