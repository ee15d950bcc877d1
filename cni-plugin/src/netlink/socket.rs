//! A blocking NETLINK_ROUTE socket. Requests are written back to back into
//! one datagram and every reply is matched to its request by sequence
//! number, so a whole step of ADD costs one round trip.

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use std::os::fd::{AsRawFd, RawFd};

use super::messages;
use super::parse::{self, Link};
use crate::error::{code, CniError};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {op}: {source}")]
    Socket {
        op: &'static str,
        source: std::io::Error,
    },
    #[error("{what}: {}", std::io::Error::from_raw_os_error(*.errno))]
    Kernel { what: String, errno: i32 },
    #[error("netlink reply to {what} could not be decoded: {why}")]
    Decode { what: String, why: String },
}

impl NetlinkError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

impl From<NetlinkError> for CniError {
    fn from(e: NetlinkError) -> Self {
        let c = match e {
            NetlinkError::Socket { .. } => code::IO_FAILURE,
            _ => code::NETLINK,
        };
        CniError::new(c, e.to_string())
    }
}

/// One request and what to call it in error messages.
pub struct Request {
    pub msg: RouteNetlinkMessage,
    /// NLM_F_* flags besides NLM_F_REQUEST.
    pub flags: u16,
    pub what: String,
}

impl Request {
    pub fn new(msg: RouteNetlinkMessage, flags: u16, what: impl Into<String>) -> Self {
        Request {
            msg,
            flags,
            what: what.into(),
        }
    }
}

/// Appends one request to a datagram; messages are 4-byte aligned in it.
fn encode(msg: RouteNetlinkMessage, flags: u16, seq: u32, out: &mut Vec<u8>) {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = seq;
    let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    m.finalize();
    let start = out.len();
    let len = (m.buffer_len() + 3) & !3;
    out.resize(start + len, 0);
    m.serialize(&mut out[start..start + m.buffer_len()]);
}

pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

const RECV_BUF: usize = 64 * 1024;

impl Netlink {
    /// Opens a socket bound to the network namespace of the calling thread.
    pub fn open() -> Result<Self, NetlinkError> {
        let err = |op| move |source| NetlinkError::Socket { op, source };
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(err("socket"))?;
        sock.bind_auto().map_err(err("bind"))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(err("connect"))?;
        Ok(Netlink {
            sock,
            seq: 1,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Sends all requests in one datagram and waits until each is answered.
    /// Returns, per request, the messages it got back or the kernel's error.
    /// The kernel runs every request even when an earlier one fails.
    pub fn exchange(
        &mut self,
        reqs: Vec<Request>,
    ) -> Result<Vec<Result<Vec<RouteNetlinkMessage>, NetlinkError>>, NetlinkError> {
        let base = self.seq;
        self.seq = self.seq.wrapping_add(reqs.len() as u32 + 1);
        let mut out = Vec::new();
        let mut kinds = Vec::with_capacity(reqs.len());
        let mut whats = Vec::with_capacity(reqs.len());
        for (i, r) in reqs.into_iter().enumerate() {
            encode(r.msg, r.flags, base.wrapping_add(i as u32), &mut out);
            kinds.push(r.flags);
            whats.push(r.what);
        }
        self.sock
            .send(&out, 0)
            .map_err(|source| NetlinkError::Socket { op: "send", source })?;

        let n = whats.len();
        let mut results: Vec<Option<Result<Vec<RouteNetlinkMessage>, NetlinkError>>> =
            (0..n).map(|_| None).collect();
        let mut collected: Vec<Vec<RouteNetlinkMessage>> = (0..n).map(|_| Vec::new()).collect();
        let mut pending = n;
        while pending > 0 {
            self.buf.clear();
            self.sock
                .recv(&mut self.buf, 0)
                .map_err(|source| NetlinkError::Socket { op: "recv", source })?;
            let mut off = 0;
            while off + 16 <= self.buf.len() {
                let chunk = &self.buf[off..];
                let len = match NetlinkBuffer::new_checked(chunk) {
                    Ok(b) => b.length() as usize,
                    Err(e) => {
                        return Err(NetlinkError::Decode {
                            what: whats.first().cloned().unwrap_or_default(),
                            why: e.to_string(),
                        })
                    }
                };
                if len < 16 {
                    break;
                }
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&chunk[..len]);
                off += (len + 3) & !3;
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        return Err(NetlinkError::Decode {
                            what: whats.first().cloned().unwrap_or_default(),
                            why: e.to_string(),
                        })
                    }
                };
                let idx = msg.header.sequence_number.wrapping_sub(base) as usize;
                if idx >= n || results[idx].is_some() {
                    continue; // not ours (a notification) or already answered
                }
                let done = match msg.payload {
                    NetlinkPayload::Error(e) => match e.code {
                        None => Some(Ok(std::mem::take(&mut collected[idx]))),
                        Some(c) => Some(Err(NetlinkError::Kernel {
                            what: whats[idx].clone(),
                            errno: c.get().abs(),
                        })),
                    },
                    NetlinkPayload::Done(_) => Some(Ok(std::mem::take(&mut collected[idx]))),
                    NetlinkPayload::InnerMessage(m) => {
                        collected[idx].push(m);
                        // A plain GET ends with its one answer; dumps end
                        // with DONE and acked requests with the ACK.
                        if kinds[idx] & (NLM_F_DUMP | NLM_F_ACK) == 0 {
                            Some(Ok(std::mem::take(&mut collected[idx])))
                        } else {
                            None
                        }
                    }
                    _ => None,
                };
                if let Some(r) = done {
                    results[idx] = Some(r);
                    pending -= 1;
                }
            }
        }
        Ok(results.into_iter().flatten().collect())
    }

    /// The datagram for `req`, for a sender that must not allocate or parse
    /// (a forked child, see [`crate::background`]); its reply is never read.
    pub fn prepare(&mut self, req: Request) -> Vec<u8> {
        let mut out = Vec::new();
        encode(req.msg, req.flags, self.seq, &mut out);
        self.seq = self.seq.wrapping_add(1);
        out
    }

    pub fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// One request, one result.
    pub fn request(&mut self, req: Request) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.exchange(vec![req])?
            .pop()
            .unwrap_or_else(|| Ok(Vec::new()))
    }

    /// Looks up an interface by name; ENODEV when there is none.
    pub fn link(&mut self, name: &str) -> Result<Link, NetlinkError> {
        let replies = self.request(messages::get_link(name))?;
        replies
            .iter()
            .find_map(parse::link)
            .ok_or_else(|| NetlinkError::Kernel {
                what: format!("look up interface {name}"),
                errno: libc::ENODEV,
            })
    }

    /// Sends acked requests in one batch; the first failure is returned.
    pub fn batch(&mut self, reqs: Vec<Request>) -> Result<(), NetlinkError> {
        for r in self.exchange(reqs)? {
            r?;
        }
        Ok(())
    }
}
