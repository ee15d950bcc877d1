//! Opening an rtnetlink connection in the current or a given namespace.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::NetlinkError;

/// A cloneable handle on one rtnetlink connection; its background task
/// runs on the tokio runtime that opened it and ends when every clone is
/// dropped.
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    /// The namespace given to `connect_in_netns` (`None`: the caller's), so
    /// a backend can create its TUN device and sockets there too.
    netns: Option<PathBuf>,
}

impl Netlink {
    /// A connection in the caller's network namespace (what the daemon
    /// uses: it runs inside the node's namespace). Call inside a runtime.
    pub fn connect() -> Result<Self, NetlinkError> {
        tokio::runtime::Handle::try_current().map_err(|_| NetlinkError::NoRuntime)?;
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Open)?;
        tokio::spawn(conn);
        Ok(Netlink {
            handle,
            netns: None,
        })
    }

    /// A connection bound to the namespace at `path` (e.g.
    /// `/run/netns/<name>`). The socket is created on a short-lived thread
    /// that enters the namespace, so the caller's threads never change
    /// namespace (no `?` can leave one stranded there).
    pub fn connect_in_netns(path: &Path) -> Result<Self, NetlinkError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| NetlinkError::NoRuntime)?;
        let shown = path.display().to_string();
        let path = path.to_owned();
        let netns = Some(path.clone());
        let opened = std::thread::spawn(move || {
            let _rt = rt.enter();
            let file = File::open(&path).map_err(|e| e.to_string())?;
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| e.to_string())?;
            rtnetlink::new_connection().map_err(|e| e.to_string())
        })
        .join()
        .map_err(|_| NetlinkError::Netns {
            path: shown.clone(),
            reason: "the thread opening the socket panicked".into(),
        })?;
        let (conn, handle, _) = opened.map_err(|reason| NetlinkError::Netns {
            path: shown,
            reason,
        })?;
        tokio::spawn(conn);
        Ok(Netlink { handle, netns })
    }

    /// The namespace this connection was opened in by `connect_in_netns`
    /// (`None`: the opener's own).
    pub fn netns_path(&self) -> Option<&Path> {
        self.netns.as_deref()
    }

    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }
}
