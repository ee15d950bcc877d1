//! HTTP GET of a daemon's /readyz from inside its node namespace: the
//! health server listens in the node's namespace, unreachable from here, so
//! a short-lived thread enters that namespace (setns only changes the
//! calling thread) and connects there.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot enter network namespace {ns}: {source}")]
    Enter {
        ns: String,
        #[source]
        source: std::io::Error,
    },
    #[error("GET http://127.0.0.1:{port}{path} in {ns}: {source}")]
    Http {
        ns: String,
        port: u16,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("GET {path} in {ns}: no HTTP status line in the reply {reply:?}")]
    BadReply {
        ns: String,
        path: String,
        reply: String,
    },
    #[error("probe thread for {0} panicked")]
    Thread(String),
}

/// The status code from the first line of an HTTP reply.
pub fn parse_status(reply: &str) -> Option<u16> {
    let line = reply.lines().next()?;
    let mut parts = line.split_whitespace();
    let proto = parts.next()?;
    if !proto.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// GET `path` on 127.0.0.1:`port` inside namespace `ns`; the HTTP status.
pub fn get_status(ns: &str, port: u16, path: &str) -> Result<u16, ProbeError> {
    let ns_owned = ns.to_string();
    let path_owned = path.to_string();
    std::thread::spawn(move || -> Result<u16, ProbeError> {
        let ns = ns_owned;
        let path = path_owned;
        let file = std::fs::File::open(format!("/run/netns/{ns}")).map_err(|source| {
            ProbeError::Enter {
                ns: ns.clone(),
                source,
            }
        })?;
        // SAFETY: setns on a valid fd we own; it affects only this thread,
        // which ends when the probe is done.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(ProbeError::Enter {
                ns,
                source: std::io::Error::last_os_error(),
            });
        }
        let http = |source| ProbeError::Http {
            ns: ns.clone(),
            port,
            path: path.clone(),
            source,
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(http)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(http)?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .map_err(http)?;
        let mut buf = Vec::new();
        // A timeout after the status line arrived is fine: only it matters.
        let _ = s.take(4096).read_to_end(&mut buf);
        let reply = String::from_utf8_lossy(&buf).into_owned();
        parse_status(&reply).ok_or(ProbeError::BadReply { ns, path, reply })
    })
    .join()
    .map_err(|_| ProbeError::Thread(ns.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status("HTTP/1.1 200 OK\r\n\r\nok"), Some(200));
        assert_eq!(
            parse_status("HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status("garbage"), None);
        assert_eq!(parse_status(""), None);
    }
}
