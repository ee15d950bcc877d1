//! The running datapath: per queue, one TX thread (TUN → encapsulate →
//! UDP) and one RX thread (UDP → decapsulate → TUN), blocking I/O on
//! dedicated OS threads. Dropping the `Engine` stops and joins them; the
//! TUN device disappears with its last fd.

use std::fs::File;
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use quinn_udp::{RecvMeta, Transmit};
use tun_rs::{GROTable, SyncDevice, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

use super::counters::{Counters, Dir};
use super::frame::{ipv4_destination, Drop, Framer, ENCAP_LEN};
use super::peers::{PeerEntry, PeerTable};
use super::{tun, udp};

/// How often blocked threads look at the stop flag.
const POLL_MS: u16 = 100;
/// Largest IPv4 datagram; TUN super-packets and GRO'd UDP buffers fit.
const MAX_PACKET: usize = 65_535;
/// UDP GSO: the kernel's segment limit, and what one send may carry.
const GSO_MAX_SEGMENTS: usize = 64;
const GSO_MAX_BYTES: usize = 65_000;
/// recvmmsg batch (quinn-udp's own limit on Linux).
const RX_BATCH: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("entering network namespace {path}: {source} (needs root and an existing namespace)")]
    Netns { path: String, source: io::Error },
    #[error("creating TUN device {name}: {source} (needs CAP_NET_ADMIN and /dev/net/tun)")]
    Tun { name: String, source: io::Error },
    #[error(
        "binding UDP {addr}: {source} (is another VXLAN/Geneve device or process using the port?)"
    )]
    Udp {
        addr: SocketAddrV4,
        source: io::Error,
    },
    #[error("starting datapath threads: {0}")]
    Thread(io::Error),
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub tun_name: String,
    pub mtu: u16,
    pub framer: Framer,
    /// Underlay address and port to bind (the node's address, 8472/6081).
    pub bind: SocketAddrV4,
    pub queues: usize,
    pub offload: bool,
    /// Namespace to create the TUN device and sockets in (`None`: ours).
    pub netns: Option<PathBuf>,
}

/// What was negotiated with the kernel (for logs and docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineInfo {
    pub queues: usize,
    pub tun_offload: bool,
    pub udp_gso_segments: usize,
    pub udp_gro_segments: usize,
}

/// The current peer table; readers clone the `Arc` once per batch.
pub type PeerSlot = RwLock<Arc<PeerTable>>;

struct Shared {
    stop: AtomicBool,
    /// Set by a thread that lost its TUN device (deleted by hand).
    dead: AtomicBool,
    peers: Arc<PeerSlot>,
    counters: Arc<Counters>,
    framer: Framer,
    mtu: usize,
}

pub struct Engine {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    info: EngineInfo,
}

impl Engine {
    pub fn start(
        cfg: EngineConfig,
        peers: Arc<PeerSlot>,
        counters: Arc<Counters>,
    ) -> Result<Engine, EngineError> {
        // TUNSETIFF and socket() act in the calling thread's namespace: do
        // both on a short-lived thread that enters it, so no thread of the
        // caller ever changes namespace.
        let setup = cfg.clone();
        let opened = std::thread::Builder::new()
            .name("us-setup".into())
            .spawn(move || open_all(&setup))
            .map_err(EngineError::Thread)?
            .join()
            .map_err(|_| EngineError::Thread(io::Error::other("setup thread panicked")))??;
        let (tun, socks) = opened;
        let info = EngineInfo {
            queues: tun.queues.len(),
            tun_offload: tun.offload,
            udp_gso_segments: socks
                .first()
                .map_or(1, |s| s.state.max_gso_segments().min(GSO_MAX_SEGMENTS)),
            udp_gro_segments: socks.first().map_or(1, |s| s.state.gro_segments()),
        };
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            peers,
            counters,
            framer: cfg.framer,
            mtu: usize::from(cfg.mtu),
        });
        let mut engine = Engine {
            shared: shared.clone(),
            threads: Vec::new(),
            info,
        };
        for (i, (dev, sock)) in tun.queues.into_iter().zip(socks).enumerate() {
            let dev = Arc::new(dev);
            let sock = Arc::new(sock);
            let (d, s, sh) = (dev.clone(), sock.clone(), shared.clone());
            let tx = std::thread::Builder::new()
                .name(format!("us-tx{i}"))
                .spawn(move || tx_loop(&d, &s, &sh))
                .map_err(EngineError::Thread)?;
            engine.threads.push(tx);
            let sh = shared.clone();
            let rx = std::thread::Builder::new()
                .name(format!("us-rx{i}"))
                .spawn(move || rx_loop(&dev, &sock, &sh))
                .map_err(EngineError::Thread)?;
            engine.threads.push(rx);
        }
        Ok(engine)
    }

    pub fn info(&self) -> EngineInfo {
        self.info
    }

    /// False once a thread found the TUN device gone (deleted by hand):
    /// the owner must start a new engine.
    pub fn is_alive(&self) -> bool {
        !self.shared.dead.load(Ordering::Relaxed)
    }
}

impl std::ops::Drop for Engine {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

type Opened = (tun::Tun, Vec<udp::Udp>);

fn open_all(cfg: &EngineConfig) -> Result<Opened, EngineError> {
    if let Some(path) = &cfg.netns {
        let err = |source| EngineError::Netns {
            path: path.display().to_string(),
            source,
        };
        let file = File::open(path).map_err(err)?;
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| err(e.into()))?;
    }
    let tun =
        tun::create(&cfg.tun_name, cfg.mtu, cfg.queues.max(1), cfg.offload).map_err(|source| {
            EngineError::Tun {
                name: cfg.tun_name.clone(),
                source,
            }
        })?;
    let reuse = tun.queues.len() > 1;
    let mut socks = Vec::new();
    for _ in 0..tun.queues.len() {
        socks.push(
            udp::bind(cfg.bind, reuse).map_err(|source| EngineError::Udp {
                addr: cfg.bind,
                source,
            })?,
        );
    }
    Ok((tun, socks))
}

/// Waits until `fd` is ready for `events` or the poll interval passes.
fn wait(fd: BorrowedFd<'_>, events: PollFlags) -> bool {
    let mut fds = [PollFd::new(fd, events)];
    matches!(nix::poll::poll(&mut fds, PollTimeout::from(POLL_MS)), Ok(n) if n > 0)
}

/// The TUN device is gone (deleted by hand, or detached).
fn device_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc_errno::EBADFD) | Some(libc_errno::ENODEV)
    )
}

/// The few errno values compared here (nix re-exports libc).
mod libc_errno {
    pub use nix::libc::{EBADFD, EIO, ENODEV};
}

/// Encapsulated packets waiting to be sent: consecutive packets for one
/// peer, all of one size but the last, go out in one UDP GSO send.
struct TxBatch {
    buf: Vec<u8>,
    dest: Option<SocketAddrV4>,
    seg: usize,
    count: usize,
    closed: bool,
    max_segments: usize,
}

impl TxBatch {
    fn fits(&self, dest: SocketAddrV4, len: usize) -> bool {
        self.count == 0
            || (self.dest == Some(dest)
                && !self.closed
                && len <= self.seg
                && self.count < self.max_segments
                && self.buf.len() + len <= GSO_MAX_BYTES)
    }

    fn push(&mut self, dest: SocketAddrV4, header: &[u8; ENCAP_LEN], inner: &[u8]) {
        let len = ENCAP_LEN + inner.len();
        if self.count == 0 {
            self.dest = Some(dest);
            self.seg = len;
        } else if len < self.seg {
            // Only the last segment of a GSO send may be shorter.
            self.closed = true;
        }
        self.buf.extend_from_slice(header);
        self.buf.extend_from_slice(inner);
        self.count += 1;
    }

    fn flush(&mut self, sock: &udp::Udp, sh: &Shared) {
        let Some(dest) = self.dest else { return };
        if self.count > 0 {
            let result = send(sock, sh, dest, &self.buf, self.seg, self.count);
            let n = self.count as u64;
            let bytes = (self.buf.len() - self.count * ENCAP_LEN) as u64;
            match result {
                Ok(()) => sh.counters.ok(Dir::Tx, n, bytes),
                Err(e) => {
                    if self.count > 1 && e.raw_os_error() == Some(libc_errno::EIO) {
                        // The underlay refused GSO: send single datagrams
                        // from now on.
                        tracing::warn!("UDP GSO refused by the underlay ({e}); disabling it");
                        self.max_segments = 1;
                        for chunk in self.buf.chunks(self.seg) {
                            match send(sock, sh, dest, chunk, chunk.len(), 1) {
                                Ok(()) => sh.counters.ok(
                                    Dir::Tx,
                                    1,
                                    chunk.len().saturating_sub(ENCAP_LEN) as u64,
                                ),
                                Err(_) => sh.counters.count_drop(Dir::Tx, Drop::UdpSend, 1),
                            }
                        }
                    } else {
                        tracing::debug!("UDP send to {dest} failed: {e}");
                        sh.counters.count_drop(Dir::Tx, Drop::UdpSend, n);
                    }
                }
            }
        }
        self.buf.clear();
        self.dest = None;
        self.count = 0;
        self.closed = false;
    }
}

/// One (GSO) send, waiting while the socket buffer is full.
fn send(
    sock: &udp::Udp,
    sh: &Shared,
    dest: SocketAddrV4,
    contents: &[u8],
    seg: usize,
    count: usize,
) -> io::Result<()> {
    let t = Transmit {
        destination: SocketAddr::V4(dest),
        ecn: None,
        contents,
        segment_size: (count > 1).then_some(seg),
        src_ip: None,
    };
    loop {
        match sock.state.try_send((&sock.sock).into(), &t) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if sh.stop.load(Ordering::Relaxed) {
                    return Err(e);
                }
                wait(sock.sock.as_fd(), PollFlags::POLLOUT);
            }
            other => return other,
        }
    }
}

fn tx_loop(dev: &SyncDevice, sock: &udp::Udp, sh: &Shared) {
    let mut original = vec![0u8; VIRTIO_NET_HDR_LEN + MAX_PACKET];
    let mut bufs = vec![vec![0u8; MAX_PACKET]; IDEAL_BATCH_SIZE];
    let mut sizes = vec![0usize; IDEAL_BATCH_SIZE];
    let mut batch = TxBatch {
        buf: Vec::with_capacity(GSO_MAX_BYTES + MAX_PACKET),
        dest: None,
        seg: 0,
        count: 0,
        closed: false,
        max_segments: sock.state.max_gso_segments().clamp(1, GSO_MAX_SEGMENTS),
    };
    // One header per peer, rebuilt only when the peer changes.
    let mut last: Option<(PeerEntry, [u8; ENCAP_LEN])> = None;
    while !sh.stop.load(Ordering::Relaxed) {
        if !wait(dev.as_fd(), PollFlags::POLLIN) {
            continue;
        }
        let n = match dev.recv_multiple(&mut original, &mut bufs, &mut sizes, 0) {
            Ok(n) => n,
            Err(e) if device_gone(&e) => {
                tracing::warn!("TUN device gone ({e}); stopping its queue");
                sh.dead.store(true, Ordering::Relaxed);
                return;
            }
            Err(e) => {
                // A malformed super-packet from the stack: skip it.
                tracing::debug!("TUN read: {e}");
                sh.counters.count_drop(Dir::Tx, Drop::BadIpv4, 1);
                continue;
            }
        };
        let peers = match sh.peers.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        for (buf, &size) in bufs.iter().zip(&sizes).take(n) {
            let pkt = &buf[..size];
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
            let header = match &last {
                Some((p, h)) if p == peer => *h,
                _ => {
                    let h = sh.framer.header(peer.mac);
                    last = Some((*peer, h));
                    h
                }
            };
            if !batch.fits(peer.addr, ENCAP_LEN + pkt.len()) {
                batch.flush(sock, sh);
            }
            batch.push(peer.addr, &header, pkt);
        }
        batch.flush(sock, sh);
    }
}

fn rx_loop(dev: &SyncDevice, sock: &udp::Udp, sh: &Shared) {
    let mut rbufs = vec![vec![0u8; MAX_PACKET]; RX_BATCH];
    let mut meta = vec![RecvMeta::default(); RX_BATCH];
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut gro = GROTable::default();
    while !sh.stop.load(Ordering::Relaxed) {
        if !wait(sock.sock.as_fd(), PollFlags::POLLIN) {
            continue;
        }
        let n = {
            let mut iovs: Vec<IoSliceMut<'_>> =
                rbufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            match sock.state.recv((&sock.sock).into(), &mut iovs, &mut meta) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    // ICMP errors surface here (port unreachable, ...).
                    tracing::debug!("UDP receive: {e}");
                    continue;
                }
            }
        };
        let mut count = 0;
        let mut bytes = 0u64;
        for (m, buf) in meta.iter().zip(&rbufs).take(n) {
            let data = &buf[..m.len.min(buf.len())];
            let stride = if m.stride == 0 { data.len() } else { m.stride };
            for seg in data.chunks(stride.max(1)) {
                match sh.framer.decode(seg, sh.mtu) {
                    Ok(inner) => {
                        if out.len() == count {
                            out.push(Vec::with_capacity(VIRTIO_NET_HDR_LEN + MAX_PACKET));
                        }
                        let b = &mut out[count];
                        b.clear();
                        b.resize(VIRTIO_NET_HDR_LEN, 0);
                        b.extend_from_slice(inner);
                        bytes += inner.len() as u64;
                        count += 1;
                    }
                    Err(reason) => sh.counters.count_drop(Dir::Rx, reason, 1),
                }
            }
        }
        if count == 0 {
            continue;
        }
        match dev.send_multiple(&mut gro, &mut out[..count], VIRTIO_NET_HDR_LEN) {
            Ok(_) => sh.counters.ok(Dir::Rx, count as u64, bytes),
            Err(e) if device_gone(&e) => {
                tracing::warn!("TUN device gone ({e}); stopping its queue");
                sh.counters
                    .count_drop(Dir::Rx, Drop::TunWrite, count as u64);
                sh.dead.store(true, Ordering::Relaxed);
                return;
            }
            Err(e) => {
                // The batch had at least one refused packet; which ones is
                // not reported, so the batch is counted as dropped.
                tracing::debug!("TUN write: {e}");
                sh.counters
                    .count_drop(Dir::Rx, Drop::TunWrite, count as u64);
            }
        }
    }
}
