//! Entering a pod's network namespace just long enough to open a netlink
//! socket there (a socket stays bound to the namespace it was opened in).
//! A guard returns the thread to its own namespace on every path.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{code, CniError};
use crate::netlink::{Netlink, NetlinkError};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error(
        "network namespace {path} does not exist (the container is gone or CNI_NETNS is wrong)"
    )]
    Missing { path: String },
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("CNI_NETNS={path} is not a network namespace")]
    NotNetns { path: String },
    #[error("cannot enter network namespace {path}: {source}")]
    Enter {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

impl From<NetnsError> for CniError {
    fn from(e: NetnsError) -> Self {
        match e {
            NetnsError::Netlink(n) => n.into(),
            other => {
                let c = match &other {
                    NetnsError::Missing { .. } => code::UNKNOWN_CONTAINER,
                    NetnsError::Open { .. } => code::IO_FAILURE,
                    NetnsError::NotNetns { .. } => code::INVALID_ENV,
                    NetnsError::Enter { .. } | NetnsError::Netlink(_) => code::NETNS,
                };
                CniError::new(c, other.to_string())
            }
        }
    }
}

/// An open handle on a network namespace.
pub struct Netns {
    pub path: String,
    pub file: File,
}

fn setns(fd: &File) -> std::io::Result<()> {
    // SAFETY: setns only reads the fd; it is a valid open descriptor.
    let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Returns the thread to the namespace it came from when dropped.
struct Restore {
    home: File,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if setns(&self.home).is_err() {
            // Carrying on would configure the wrong namespace: stop here.
            eprintln!("flannel-rs: cannot return to the original network namespace; aborting");
            std::process::abort();
        }
    }
}

impl Netns {
    pub fn open(path: &str) -> Result<Self, NetnsError> {
        let file = File::open(Path::new(path)).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                NetnsError::Missing { path: path.into() }
            } else {
                NetnsError::Open {
                    path: path.into(),
                    source,
                }
            }
        })?;
        // NS_GET_NSTYPE (linux/nsfs.h, _IO(0xb7, 0x3)): refuse a path that
        // is not a network namespace here, with a clear message, rather than
        // as an EINVAL from the kernel halfway through ADD.
        const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
        // SAFETY: the ioctl takes no argument and only inspects the fd.
        let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
        if kind != libc::CLONE_NEWNET {
            return Err(NetnsError::NotNetns { path: path.into() });
        }
        Ok(Netns {
            path: path.into(),
            file,
        })
    }

    /// Opens a netlink socket inside this namespace.
    pub fn netlink(&self) -> Result<Netlink, NetnsError> {
        let home = File::open("/proc/thread-self/ns/net").map_err(|source| NetnsError::Open {
            path: "/proc/thread-self/ns/net".into(),
            source,
        })?;
        setns(&self.file).map_err(|source| {
            if source.raw_os_error() == Some(libc::EINVAL) {
                NetnsError::NotNetns {
                    path: self.path.clone(),
                }
            } else {
                NetnsError::Enter {
                    path: self.path.clone(),
                    source,
                }
            }
        })?;
        let _restore = Restore { home };
        Ok(Netlink::open()?)
    }
}
