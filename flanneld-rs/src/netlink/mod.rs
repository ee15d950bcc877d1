//! Netlink access for the datapath: a connection bound to one network
//! namespace (`conn`), typed dumps of what the kernel has (`dump`), and the
//! reconciler's operations sent to the kernel (`apply`).
//!
//! A netlink socket stays in the namespace it was opened in, whatever thread
//! later uses it; so a test opens one per "node" namespace and drives all of
//! them from one runtime, while the daemon simply opens one in its own.

pub mod apply;
pub mod conn;
pub mod dump;
pub mod events;

pub use conn::Netlink;

/// The `proto` number on every route we install (`ip route` shows it as
/// `proto 70`). 70 is unassigned in iproute2's rt_protos and in the kernel's
/// RTPROT list; it is how the reconciler tells our routes from everyone
/// else's (kernel, DHCP, BGP daemons, the operator).
pub const RTPROT_FLANNEL_RS: u8 = 70;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("opening a netlink socket: {0} (is this running on Linux with rtnetlink?)")]
    Open(#[source] std::io::Error),
    #[error("entering network namespace {path}: {reason} (needs root and an existing namespace)")]
    Netns { path: String, reason: String },
    #[error("netlink connections must be opened inside a tokio runtime")]
    NoRuntime,
    #[error("{op}: {source}")]
    Request {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
}

impl NetlinkError {
    pub(crate) fn request(op: impl Into<String>, source: rtnetlink::Error) -> Self {
        NetlinkError::Request {
            op: op.into(),
            source,
        }
    }

    /// The errno of a kernel refusal (positive, e.g. `libc::ENODEV` = 19).
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Request { source, .. } => errno(source),
            _ => None,
        }
    }
}

/// The positive errno carried by a kernel error reply.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
        _ => None,
    }
}

impl From<NetlinkError> for crate::backend::BackendError {
    fn from(e: NetlinkError) -> Self {
        match e {
            NetlinkError::Request { op, source } => crate::backend::BackendError::Netlink {
                op,
                reason: source.to_string(),
            },
            other => crate::backend::BackendError::Other(other.to_string()),
        }
    }
}
