//! The underlay UDP sockets. Per queue: one receiving socket, all of them
//! on the node's address and tunnel port (SO_REUSEPORT lets the kernel
//! spread received flows over them), driven by `quinn-udp` for recvmmsg
//! with UDP GRO; and a few sending sockets on ephemeral ports, one picked
//! per inner flow, so that the outer source port carries the flow entropy
//! the RFCs ask for (see `frame::flow_hash`) and a receiver's RSS or
//! SO_REUSEPORT can spread our flows. Sends use UDP GSO.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
use quinn_udp::UdpSocketState;

/// Socket buffer size asked for: bursts of 64 KiB super-packets per queue.
const BUFFER_BYTES: usize = 4 << 20;
/// Sending sockets (source ports) per queue.
pub const SOURCE_PORTS: usize = 8;

pub struct Udp {
    /// Receives on the tunnel port.
    pub sock: UdpSocket,
    pub state: UdpSocketState,
    /// Send from ephemeral ports; index by flow hash.
    pub senders: Vec<UdpSocket>,
}

/// A queue's sockets: the receiving one bound to `addr` (IPv4 or IPv6) and
/// `SOURCE_PORTS` senders on the same address, in the calling thread's
/// namespace.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<Udp> {
    let sock = open(addr, reuse_port, BUFFER_BYTES)?;
    let state = UdpSocketState::new((&sock).into())?;
    let from = SocketAddr::new(addr.ip(), 0);
    // Nobody sends to a sender's port but strays: a small receive buffer,
    // never read, so they are dropped once it is full.
    let senders = (0..SOURCE_PORTS)
        .map(|_| {
            let s = open(from, false, 0)?;
            // The queue thread must never block (quinn-udp does the same
            // for the receiving socket).
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .collect::<io::Result<Vec<_>>>()?;
    Ok(Udp {
        sock,
        state,
        senders,
    })
}

/// One socket bound to `addr`, with the send buffer and `rcvbuf` (0: the
/// kernel's minimum) asked for.
fn open(addr: SocketAddr, reuse_port: bool, rcvbuf: usize) -> io::Result<UdpSocket> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket::socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    if addr.is_ipv6() {
        // Our address only: no IPv4-mapped traffic on this socket.
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    if reuse_port {
        socket::setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    // Root may exceed net.core.[rw]mem_max; another size only costs drops
    // under load (or, for a sender, memory), so failure is not fatal.
    let _ = socket::setsockopt(&fd, sockopt::RcvBufForce, &rcvbuf);
    let _ = socket::setsockopt(&fd, sockopt::SndBufForce, &BUFFER_BYTES);
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(addr),
    )?;
    Ok(UdpSocket::from(fd))
}
