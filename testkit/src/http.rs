//! A plain HTTP/1.1 GET to a port on 127.0.0.1 inside a network namespace,
//! for a daemon's health and metrics endpoints: no client crate, and the
//! request runs on a thread that entered the namespace (see
//! [`crate::netns::in_netns`]), so the test's threads never move.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::netns::{in_netns, NetnsError};

/// How long a GET waits for the whole answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("GET 127.0.0.1:{port}{path}: {source}")]
    Io {
        port: u16,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("GET 127.0.0.1:{port}{path}: not an HTTP response: {response:?}")]
    BadResponse {
        port: u16,
        path: String,
        response: String,
    },
}

/// `GET path` on 127.0.0.1:`port` inside `ns`: the status code and body.
pub fn get(ns: impl AsRef<Path>, port: u16, path: &str) -> Result<(u16, String), HttpError> {
    in_netns(ns, || get_here(port, path))?
}

/// [`get`], answering only the status code.
pub fn status(ns: impl AsRef<Path>, port: u16, path: &str) -> Result<u16, HttpError> {
    get(ns, port, path).map(|(code, _)| code)
}

fn get_here(port: u16, path: &str) -> Result<(u16, String), HttpError> {
    let io = |source| HttpError::Io {
        port,
        path: path.to_string(),
        source,
    };
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(io)?;
    s.set_read_timeout(Some(READ_TIMEOUT)).map_err(io)?;
    // One write: a server that answers after the first read sees it whole.
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(io)?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(io)?;
    parse_response(&resp).ok_or_else(|| HttpError::BadResponse {
        port,
        path: path.to_string(),
        response: resp.clone(),
    })
}

/// Status code and body of a whole `Connection: close` response.
fn parse_response(resp: &str) -> Option<(u16, String)> {
    let mut words = resp.split_whitespace();
    if !words.next()?.starts_with("HTTP/") {
        return None;
    }
    let status = words.next()?.parse().ok()?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        assert_eq!(
            parse_response("HTTP/1.1 503 Service Unavailable\r\nA: b\r\n\r\nno lease\n"),
            Some((503, "no lease\n".into()))
        );
        assert_eq!(
            parse_response("HTTP/1.1 200 OK\r\n\r\n"),
            Some((200, String::new()))
        );
        assert_eq!(parse_response("garbage 200"), None);
        assert_eq!(parse_response(""), None);
    }

    #[test]
    fn get_reads_a_real_server() {
        // In the test's own namespace: entering one needs root, which the
        // kernel tests of tests/kit.rs cover.
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = String::new();
            let mut buf = [0u8; 1024];
            while !req.contains("\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                assert_ne!(n, 0, "request ended early");
                req.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            req
        });
        let got = get_here(port, "/readyz").unwrap();
        assert_eq!(got, (200, "ok".into()));
        assert!(server
            .join()
            .unwrap()
            .starts_with("GET /readyz HTTP/1.1\r\n"));
    }
}
