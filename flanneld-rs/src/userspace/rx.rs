//! UDP → TUN: receive a batch of datagrams (`recvmmsg` with UDP GRO, via
//! quinn-udp), validate and strip the encapsulation (`Framer::decode`),
//! join TCP segments (`gro::plan`) and write each result to the TUN device
//! with one `writev` whose iovec points into the receive buffers: the
//! payload is copied once, by the kernel.

use std::io::{self, IoSlice, IoSliceMut};

use quinn_udp::RecvMeta;
use tun_rs::SyncDevice;

use super::counters::Dir;
use super::csum::{self, L4Csum};
use super::engine::{device_gone, Gone, Shared, MAX_PACKET};
use super::frame::Drop;
use super::gro::{self, Write};
use super::udp::Udp;

/// recvmmsg batch (quinn-udp's own limit on Linux).
const RX_BATCH: usize = 32;

pub(super) struct Rx {
    bufs: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
    arena: Vec<u8>,
    writes: Vec<Write>,
    /// Without TUN offloads: a copy in which a pending checksum is finished.
    scratch: Vec<u8>,
}

impl Rx {
    pub fn new() -> Rx {
        Rx {
            bufs: vec![vec![0u8; MAX_PACKET]; RX_BATCH],
            meta: vec![RecvMeta::default(); RX_BATCH],
            arena: Vec::with_capacity(16 * 1024),
            writes: Vec::with_capacity(256),
            scratch: Vec::new(),
        }
    }

    /// Receives one batch and writes it; returns the number of buffers
    /// received (0: nothing was waiting).
    pub fn round(&mut self, dev: &SyncDevice, sock: &Udp, sh: &Shared) -> Result<usize, Gone> {
        let Rx {
            bufs,
            meta,
            arena,
            writes,
            scratch,
        } = self;
        let n = {
            let mut iovs: Vec<IoSliceMut<'_>> =
                bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            match sock.state.recv((&sock.sock).into(), &mut iovs, meta) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) => {
                    // ICMP errors surface here (port unreachable, ...); the
                    // socket may hold more, so this counts as progress.
                    tracing::debug!("UDP receive: {e}");
                    return Ok(1);
                }
            }
        };
        let mut pkts: Vec<&[u8]> = Vec::with_capacity(n * 8);
        for (m, buf) in meta.iter().zip(bufs.iter()).take(n) {
            let data = &buf[..m.len.min(buf.len())];
            let stride = if m.stride == 0 { data.len() } else { m.stride };
            for seg in data.chunks(stride.max(1)) {
                match sh.framer.decode(seg, sh.mtu) {
                    Ok(inner) => pkts.push(inner),
                    Err(Drop::Oversized) if sh.offload => {
                        // A kernel peer's TCP super-packet (see gro.rs).
                        match sh.framer.decode(seg, MAX_PACKET) {
                            Ok(inner) if gro::tcp_super(inner) => pkts.push(inner),
                            _ => sh.counters.count_drop(Dir::Rx, Drop::Oversized, 1),
                        }
                    }
                    Err(reason) => sh.counters.count_drop(Dir::Rx, reason, 1),
                }
            }
        }
        if pkts.is_empty() {
            return Ok(n);
        }
        if sh.offload {
            arena.clear();
            writes.clear();
            gro::plan(&pkts, sh.mtu, arena, writes);
            for w in writes.iter() {
                let mut iov = Vec::with_capacity(w.count + 1);
                iov.push(IoSlice::new(&arena[w.hdr.clone()]));
                iov.extend(
                    pkts[w.first..w.first + w.count]
                        .iter()
                        .map(|p| IoSlice::new(&p[w.skip..])),
                );
                let bytes: usize = pkts[w.first..w.first + w.count]
                    .iter()
                    .map(|p| p.len())
                    .sum();
                write(dev, sh, &iov, w.count, bytes)?;
            }
        } else {
            for p in &pkts {
                if csum::may_be_partial(p) && csum::check_l4(p) == L4Csum::Partial {
                    scratch.clear();
                    scratch.extend_from_slice(p);
                    csum::complete_l4(scratch);
                    write(dev, sh, &[IoSlice::new(scratch)], 1, p.len())?;
                } else {
                    write(dev, sh, &[IoSlice::new(p)], 1, p.len())?;
                }
            }
        }
        Ok(n)
    }
}

/// One write of `count` inner packets (`bytes` long in all).
fn write(
    dev: &SyncDevice,
    sh: &Shared,
    iov: &[IoSlice<'_>],
    count: usize,
    bytes: usize,
) -> Result<(), Gone> {
    match dev.send_vectored(iov) {
        Ok(_) => sh.counters.ok(Dir::Rx, count as u64, bytes as u64),
        Err(e) if device_gone(&e) => {
            sh.counters
                .count_drop(Dir::Rx, Drop::TunWrite, count as u64);
            return Err(Gone);
        }
        Err(e) => {
            tracing::debug!("TUN write: {e}");
            sh.counters
                .count_drop(Dir::Rx, Drop::TunWrite, count as u64);
        }
    }
    Ok(())
}
