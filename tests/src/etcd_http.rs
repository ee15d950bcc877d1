//! Writing to a lab's etcd through etcd's JSON gateway (`/v3/kv/*` on the
//! client port) from a thread that entered the infra namespace: fake peers
//! for the benchmarks, without an etcd client library. Keys and values go
//! base64-encoded, as the gateway expects.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum EtcdHttpError {
    #[error(transparent)]
    Enter(#[from] testkit::netns::NetnsError),
    #[error("POST {path} to etcd at {addr}: {source}")]
    Io {
        addr: SocketAddr,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd answered POST {path} with: {reply}")]
    Rejected { path: String, reply: String },
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A `put` operation for a txn or for `/v3/kv/put`.
pub fn put_body(key: &str, value: &str) -> Value {
    json!({ "key": base64(key.as_bytes()), "value": base64(value.as_bytes()) })
}

/// A transaction with only puts (etcd applies them atomically: one
/// revision, one watch batch).
pub fn txn_body(puts: &[(String, String)]) -> Value {
    let ops: Vec<Value> = puts
        .iter()
        .map(|(k, v)| json!({ "request_put": put_body(k, v) }))
        .collect();
    json!({ "success": ops })
}

/// POSTs `body` to `path` on etcd at `addr` from inside namespace `ns`;
/// returns etcd's JSON reply and the instant the reply was complete.
pub fn post(
    ns: &str,
    addr: SocketAddr,
    path: &str,
    body: &Value,
) -> Result<(Value, Instant), EtcdHttpError> {
    let ns = ns.to_string();
    let path = path.to_string();
    let body = body.to_string();
    testkit::in_netns(
        testkit::netns::path_of(&ns),
        move || -> Result<(Value, Instant), EtcdHttpError> {
            let io = |source| EtcdHttpError::Io {
                addr,
                path: path.clone(),
                source,
            };
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(io)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(io)?;
            s.set_nodelay(true).map_err(io)?;
            let req = format!(
            "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
            s.write_all(req.as_bytes()).map_err(io)?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).map_err(io)?;
            let done = Instant::now();
            let text = String::from_utf8_lossy(&buf).into_owned();
            // HTTP/1.0: the reply is the body up to EOF, never chunked.
            let ok = text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200");
            let json_part = text.split("\r\n\r\n").nth(1).unwrap_or_default();
            match serde_json::from_str::<Value>(json_part.trim()) {
                Ok(v) if ok => Ok((v, done)),
                _ => Err(EtcdHttpError::Rejected {
                    path,
                    reply: text.chars().take(500).collect(),
                }),
            }
        },
    )?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o, "{i}");
        }
    }

    #[test]
    fn txn_shape() {
        let t = txn_body(&[("k".into(), "v".into())]);
        assert_eq!(t["success"][0]["request_put"]["key"], "aw==");
        assert_eq!(t["success"][0]["request_put"]["value"], "dg==");
    }
}
