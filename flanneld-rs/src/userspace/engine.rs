//! The running datapath: per queue, one OS thread that moves packets both
//! ways, TUN → encapsulate → UDP (`tx`) and UDP → decapsulate → TUN (`rx`),
//! with non-blocking I/O. Dropping the `Engine` stops and joins the
//! threads; the TUN device disappears with its last fd.
//!
//! Why one thread for both directions: a packet that crosses the engine
//! costs a thread wake-up whenever the thread that must move it sleeps,
//! and on a small VM a wake-up costs tens of microseconds. With one thread,
//! what one direction causes in the other is picked up without one: the
//! TCP ACKs that a TUN write provokes (the pod's stack answers inside the
//! write) are read right after it, and a reply that arrives while the
//! thread is still busy with the request needs no wake-up either. After
//! its last packet the thread keeps looking for `busy_poll` (yielding the
//! CPU between looks) before it sleeps in `poll`, so request/response
//! traffic crosses without wake-ups; 0 sleeps at once.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use tun_rs::SyncDevice;

use super::counters::Counters;
use super::frame::Framer;
use super::peers::PeerTable;
use super::rx::Rx;
use super::tx::Tx;
use super::{tun, udp};

/// How often a sleeping thread looks at the stop flag.
pub(super) const POLL_MS: u16 = 100;
/// Largest IPv4 datagram; TUN super-packets and GRO'd UDP buffers fit.
pub(super) const MAX_PACKET: usize = 65_535;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("entering network namespace {path}: {source} (needs root and an existing namespace)")]
    Netns { path: String, source: io::Error },
    #[error("creating TUN device {name}: {source} (needs CAP_NET_ADMIN and /dev/net/tun)")]
    Tun { name: String, source: io::Error },
    #[error(
        "binding UDP {addr}: {source} (is another VXLAN/Geneve device or process using the port?)"
    )]
    Udp { addr: SocketAddr, source: io::Error },
    #[error("starting datapath threads: {0}")]
    Thread(io::Error),
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub tun_name: String,
    pub mtu: u16,
    pub framer: Framer,
    /// Underlay address and port to bind (the node's address of the
    /// underlay's family, 8472/6081).
    pub bind: SocketAddr,
    pub queues: usize,
    pub offload: bool,
    /// How long a queue thread keeps looking for packets after its last
    /// one before it sleeps (see the module comment).
    pub busy_poll: Duration,
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

pub(super) struct Shared {
    pub stop: AtomicBool,
    /// Set by a thread that lost its TUN device (deleted by hand).
    pub dead: AtomicBool,
    pub peers: Arc<PeerSlot>,
    pub counters: Arc<Counters>,
    pub framer: Framer,
    pub mtu: usize,
    /// The TUN device speaks virtio-net headers (GSO/GRO).
    pub offload: bool,
    pub busy_poll: Duration,
}

impl Shared {
    pub fn peers(&self) -> Arc<PeerTable> {
        match self.peers.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
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
        let max_gso = socks.first().map_or(1, |s| {
            s.state.max_gso_segments().min(super::tx::GSO_MAX_SEGMENTS)
        });
        let info = EngineInfo {
            queues: tun.queues.len(),
            tun_offload: tun.offload,
            udp_gso_segments: max_gso,
            udp_gro_segments: socks.first().map_or(1, |s| s.state.gro_segments()),
        };
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            peers,
            counters,
            framer: cfg.framer,
            mtu: usize::from(cfg.mtu),
            offload: tun.offload,
            busy_poll: cfg.busy_poll,
        });
        let mut engine = Engine {
            shared: shared.clone(),
            threads: Vec::new(),
            info,
        };
        for (i, (dev, sock)) in tun.queues.into_iter().zip(socks).enumerate() {
            let sh = shared.clone();
            let t = std::thread::Builder::new()
                .name(format!("us-q{i}"))
                .spawn(move || queue_loop(&dev, &sock, &sh, max_gso))
                .map_err(EngineError::Thread)?;
            engine.threads.push(t);
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

impl Drop for Engine {
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
    let tun_err = |source| EngineError::Tun {
        name: cfg.tun_name.clone(),
        source,
    };
    let tun =
        tun::create(&cfg.tun_name, cfg.mtu, cfg.queues.max(1), cfg.offload).map_err(tun_err)?;
    for q in &tun.queues {
        q.set_nonblocking(true).map_err(tun_err)?;
    }
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

/// The TUN device is gone (deleted by hand, or detached).
pub(super) fn device_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EBADFD) | Some(nix::libc::ENODEV)
    )
}

/// A queue's device went away: the thread ends and the backend recreates
/// the engine at its next reconcile.
pub(super) struct Gone;

/// Sleeps until the TUN queue or the socket has something to read, or the
/// poll interval passes.
fn wait_either(dev: &SyncDevice, sock: &udp::Udp) {
    let mut fds = [
        PollFd::new(dev.as_fd(), PollFlags::POLLIN),
        PollFd::new(sock.sock.as_fd(), PollFlags::POLLIN),
    ];
    let _ = nix::poll::poll(&mut fds, PollTimeout::from(POLL_MS));
}

fn queue_loop(dev: &SyncDevice, sock: &udp::Udp, sh: &Shared, max_gso: usize) {
    let mut tx = Tx::new(max_gso);
    let mut rx = Rx::new();
    let mut last_work = Instant::now();
    while !sh.stopping() {
        let moved = match (tx.round(dev, sock, sh), rx.round(dev, sock, sh)) {
            (Ok(a), Ok(b)) => a + b,
            _ => {
                tracing::warn!("TUN device gone; stopping its queue");
                sh.dead.store(true, Ordering::Relaxed);
                return;
            }
        };
        if moved > 0 {
            last_work = Instant::now();
        } else if last_work.elapsed() < sh.busy_poll {
            // Keep looking, but let whatever else wants this CPU (the
            // pod that is about to answer, say) run first.
            std::thread::yield_now();
        } else {
            wait_either(dev, sock);
        }
    }
}
