//! The underlay UDP sockets: one per queue on the same address and port
//! (SO_REUSEPORT lets the kernel spread received flows over them), driven
//! by `quinn-udp` for recvmmsg, UDP GSO on send and UDP GRO on receive.

use std::io;
use std::net::{SocketAddrV4, UdpSocket};

use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
use quinn_udp::UdpSocketState;

/// Socket buffer size asked for: bursts of 64 KiB super-packets per queue.
const BUFFER_BYTES: usize = 4 << 20;

pub struct Udp {
    pub sock: UdpSocket,
    pub state: UdpSocketState,
}

/// A socket bound to `addr` in the calling thread's namespace.
pub fn bind(addr: SocketAddrV4, reuse_port: bool) -> io::Result<Udp> {
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    if reuse_port {
        socket::setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    // Root may exceed net.core.[rw]mem_max; a smaller buffer only costs
    // drops under load, so failure is not fatal.
    let _ = socket::setsockopt(&fd, sockopt::RcvBufForce, &BUFFER_BYTES);
    let _ = socket::setsockopt(&fd, sockopt::SndBufForce, &BUFFER_BYTES);
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(addr),
    )?;
    let sock = UdpSocket::from(fd);
    let state = UdpSocketState::new((&sock).into())?;
    Ok(Udp { sock, state })
}
