//! Netlink access for the datapath and node detection, behind one seam:
//! the `Kernel` trait (`kernel`), implemented over rtnetlink by `Netlink`
//! (a connection bound to one network namespace, `conn`) and in memory by
//! `fake::FakeKernel` for unit tests. Messages are built by pure functions
//! in `apply` and decoded by pure functions in `dump` (and `detect` for
//! node detection), so both implementations share them.
//!
//! A netlink socket stays in the namespace it was opened in, whatever thread
//! later uses it; so a test opens one per "node" namespace and drives all of
//! them from one runtime, while the daemon simply opens one in its own.

pub mod apply;
pub mod conn;
pub mod detect;
pub mod dump;
pub mod events;
#[cfg(any(test, feature = "fake-netlink"))]
pub mod fake;
pub mod kernel;

pub use conn::Netlink;
pub use kernel::{Family, Kernel, KernelRef};

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

    /// A kernel refusal of `op` with `errno` (positive), shaped exactly
    /// like the one rtnetlink reports (the fake kernel uses it).
    pub fn refused(op: impl Into<String>, errno: i32) -> Self {
        let mut msg = rtnetlink::packet_core::ErrorMessage::default();
        msg.code = std::num::NonZeroI32::new(-errno);
        Self::request(op, rtnetlink::Error::NetlinkError(msg))
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
