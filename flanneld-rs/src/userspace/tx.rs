//! TUN → UDP: read what the pods sent (non-blocking, a batch at a time),
//! cut it into encapsulated datagrams (`gso::split`, headers only) and
//! send them with `sendmsg`, consecutive datagrams for one peer of one size
//! in a single UDP GSO send. The payload is never copied here: each send's
//! iovec points into the buffers the TUN reads filled. Each inner flow
//! leaves from one of the queue's sending sockets (`frame::flow_hash`), so
//! its outer source port is its own.

use std::io::{self, IoSlice};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrStorage};
use tun_rs::SyncDevice;

use super::counters::Dir;
use super::engine::{device_gone, Gone, Shared, MAX_PACKET, POLL_MS};
use super::frame::{flow_hash, ipv4_destination, Drop, ENCAP_LEN};
use super::gso::{self, Datagram};
use super::peers::PeerEntry;
use super::udp::Udp;
use super::vnet::{self, VnetHdr};

/// The kernel's UDP GSO limit on segments, and what one send may carry.
pub const GSO_MAX_SEGMENTS: usize = 64;
const GSO_MAX_BYTES: usize = 65_000;
/// TUN packets read per round before the socket gets its turn.
const TX_BATCH: usize = 32;

pub(super) struct Tx {
    bufs: Vec<Vec<u8>>,
    lens: Vec<usize>,
    arena: Vec<u8>,
    dgrams: Vec<Datagram>,
    /// Per datagram: its destination, the buffer its payload is in and
    /// the sending socket (by index) of its flow.
    dest: Vec<(SocketAddr, usize, usize)>,
    max_segments: usize,
    /// The last peer's encapsulation header (rebuilt when the peer changes).
    last: Option<(PeerEntry, [u8; ENCAP_LEN])>,
}

impl Tx {
    pub fn new(max_segments: usize) -> Tx {
        Tx {
            bufs: vec![vec![0u8; vnet::LEN + MAX_PACKET]; TX_BATCH],
            lens: vec![0; TX_BATCH],
            arena: Vec::with_capacity(64 * 1024),
            dgrams: Vec::with_capacity(256),
            dest: Vec::with_capacity(256),
            max_segments: max_segments.clamp(1, GSO_MAX_SEGMENTS),
            last: None,
        }
    }

    /// Reads up to a batch from the TUN queue and sends it; returns the
    /// number of packets read.
    pub fn round(&mut self, dev: &SyncDevice, sock: &Udp, sh: &Shared) -> Result<usize, Gone> {
        let mut n = 0;
        while n < TX_BATCH {
            match dev.recv(&mut self.bufs[n]) {
                Ok(len) => {
                    self.lens[n] = len;
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if device_gone(&e) => return Err(Gone),
                Err(e) => {
                    tracing::debug!("TUN read: {e}");
                    sh.counters.count_drop(Dir::Tx, Drop::BadIpv4, 1);
                    break;
                }
            }
        }
        if n == 0 {
            return Ok(0);
        }
        self.plan(n, sock.senders.len(), sh);
        self.send(sock, sh);
        Ok(n)
    }

    /// Splits the `n` packets read into datagrams.
    fn plan(&mut self, n: usize, senders: usize, sh: &Shared) {
        self.arena.clear();
        self.dgrams.clear();
        self.dest.clear();
        let peers = sh.peers();
        let skip = if sh.offload { vnet::LEN } else { 0 };
        for k in 0..n {
            let Some(buf) = self.bufs[k].get_mut(..self.lens[k]) else {
                continue;
            };
            let (hdr, pkt) = buf.split_at_mut(skip.min(buf.len()));
            let vh = if sh.offload {
                match VnetHdr::parse(hdr) {
                    Some(v) => v,
                    None => {
                        sh.counters.count_drop(Dir::Tx, Drop::Truncated, 1);
                        continue;
                    }
                }
            } else {
                VnetHdr::default()
            };
            let dst = match ipv4_destination(pkt) {
                Ok(d) => d,
                Err(reason) => {
                    sh.counters.count_drop(Dir::Tx, reason, 1);
                    continue;
                }
            };
            let Some(peer) = peers.lookup(dst) else {
                sh.counters.count_drop(Dir::Tx, Drop::NoPeer, 1);
                continue;
            };
            let header = match &self.last {
                Some((p, h)) if p == peer => *h,
                _ => {
                    let h = sh.framer.header(peer.mac);
                    self.last = Some((*peer, h));
                    h
                }
            };
            let sender = flow_hash(pkt) as usize % senders.max(1);
            match gso::split(&vh, pkt, &header, &mut self.arena, &mut self.dgrams) {
                Ok(count) => {
                    self.dest
                        .extend(std::iter::repeat_n((peer.addr, k, sender), count));
                }
                Err(reason) => sh.counters.count_drop(Dir::Tx, reason, 1),
            }
        }
    }

    /// Sends the planned datagrams, grouped into GSO sends.
    fn send(&mut self, sock: &Udp, sh: &Shared) {
        let skip = if sh.offload { vnet::LEN } else { 0 };
        let mut i = 0;
        while i < self.dgrams.len() {
            let (dest, _, from_ix) = self.dest[i];
            let seg = self.dgrams[i].len();
            let mut bytes = seg;
            let mut j = i + 1;
            while j < self.dgrams.len()
                && j - i < self.max_segments
                && self.dest[j].0 == dest
                && self.dest[j].2 == from_ix
                && self.dgrams[j - 1].len() == seg
                && self.dgrams[j].len() <= seg
                && bytes + self.dgrams[j].len() <= GSO_MAX_BYTES
            {
                bytes += self.dgrams[j].len();
                j += 1;
            }
            let iov: Vec<IoSlice<'_>> = (i..j)
                .flat_map(|k| {
                    let d = &self.dgrams[k];
                    let buf = &self.bufs[self.dest[k].1][skip..];
                    [
                        IoSlice::new(&self.arena[d.hdr.clone()]),
                        IoSlice::new(&buf[d.payload.clone()]),
                    ]
                })
                .collect();
            let Some(from) = sock.senders.get(from_ix) else {
                // Not reached: `plan` indexes within the senders.
                sh.counters
                    .count_drop(Dir::Tx, Drop::UdpSend, (j - i) as u64);
                i = j;
                continue;
            };
            let count = j - i;
            let inner = (bytes - count * ENCAP_LEN) as u64;
            match send(from, sh, dest, &iov, (count > 1).then_some(seg)) {
                Ok(()) => sh.counters.ok(Dir::Tx, count as u64, inner),
                Err(e) if count > 1 && e.raw_os_error() == Some(nix::libc::EIO) => {
                    // The underlay refused GSO: single datagrams from now on.
                    tracing::warn!("UDP GSO refused by the underlay ({e}); disabling it");
                    self.max_segments = 1;
                    for pair in iov.chunks(2) {
                        let len: usize = pair.iter().map(|s| s.len()).sum();
                        match send(from, sh, dest, pair, None) {
                            Ok(()) => sh.counters.ok(Dir::Tx, 1, (len - ENCAP_LEN) as u64),
                            Err(_) => sh.counters.count_drop(Dir::Tx, Drop::UdpSend, 1),
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!("UDP send to {dest} failed: {e}");
                    sh.counters.count_drop(Dir::Tx, Drop::UdpSend, count as u64);
                }
            }
            i = j;
        }
    }
}

/// One (GSO) send, waiting while the socket buffer is full.
fn send(
    sock: &UdpSocket,
    sh: &Shared,
    dest: SocketAddr,
    iov: &[IoSlice<'_>],
    segment: Option<usize>,
) -> io::Result<()> {
    let addr = SockaddrStorage::from(dest);
    let seg = segment.map(|s| s as u16);
    let cmsg: Vec<ControlMessage<'_>> = seg.iter().map(ControlMessage::UdpGsoSegments).collect();
    loop {
        match sendmsg(sock.as_raw_fd(), iov, &cmsg, MsgFlags::empty(), Some(&addr)) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EAGAIN) => {
                if sh.stopping() {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLOUT)];
                let _ = nix::poll::poll(&mut fds, PollTimeout::from(POLL_MS));
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}
