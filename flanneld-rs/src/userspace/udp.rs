//! The underlay UDP sockets: one per queue on the same address and port
//! (SO_REUSEPORT lets the kernel spread received flows over them), driven
//! by `quinn-udp` for recvmmsg, UDP GSO on send and UDP GRO on receive.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
use quinn_udp::UdpSocketState;

/// Socket buffer size asked for: bursts of 64 KiB super-packets per queue.
const BUFFER_BYTES: usize = 4 << 20;

pub struct Udp {
    pub sock: UdpSocket,
    pub state: UdpSocketState,
}

/// A socket bound to `addr` (IPv4 or IPv6) in the calling thread's
/// namespace.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<Udp> {
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
    // Root may exceed net.core.[rw]mem_max; a smaller buffer only costs
    // drops under load, so failure is not fatal.
    let _ = socket::setsockopt(&fd, sockopt::RcvBufForce, &BUFFER_BYTES);
    let _ = socket::setsockopt(&fd, sockopt::SndBufForce, &BUFFER_BYTES);
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(addr),
    )?;
    let sock = UdpSocket::from(fd);
    let state = UdpSocketState::new((&sock).into())?;
    Ok(Udp { sock, state })
}
