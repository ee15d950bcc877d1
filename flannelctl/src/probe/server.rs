//! `probe server`: a TCP listener (request/response echo and throughput
//! sink, chosen by the header line) and a UDP echo on the same port. One
//! thread per connection; runs until killed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use super::wire::{self, Mode};
use super::ProbeError;

/// Largest request/response message the server accepts.
pub const MAX_SIZE: usize = 65_000;

pub struct Server {
    tcp: TcpListener,
    udp: UdpSocket,
}

impl Server {
    /// Binds TCP and UDP on `addr`; with port 0, UDP gets the port the
    /// kernel chose for TCP.
    pub fn bind(addr: SocketAddr) -> Result<Self, ProbeError> {
        let bind_err = |proto: &'static str, source| ProbeError::Bind {
            addr,
            proto,
            source,
        };
        let tcp = TcpListener::bind(addr).map_err(|e| bind_err("TCP", e))?;
        let actual = tcp.local_addr().map_err(|e| bind_err("TCP", e))?;
        let udp = UdpSocket::bind(actual).map_err(|e| bind_err("UDP", e))?;
        Ok(Self { tcp, udp })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ProbeError> {
        self.tcp.local_addr().map_err(|source| ProbeError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            proto: "TCP",
            source,
        })
    }

    /// Serves forever (until the process is killed).
    pub fn serve(self) -> Result<(), ProbeError> {
        let udp = self.udp;
        std::thread::spawn(move || udp_echo(&udp));
        for conn in self.tcp.incoming() {
            match conn {
                Ok(s) => {
                    std::thread::spawn(move || {
                        let peer = s.peer_addr().ok();
                        if let Err(e) = handle(s) {
                            eprintln!("flannelctl probe server: connection from {peer:?}: {e}");
                        }
                    });
                }
                // A failed accept (e.g. out of file descriptors) must not
                // end the server; the client will report the refusal.
                Err(e) => eprintln!("flannelctl probe server: accept: {e}"),
            }
        }
        Ok(())
    }
}

fn udp_echo(sock: &UdpSocket) {
    let mut buf = vec![0u8; 65_536];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, peer)) => {
                // Best effort, like the network: the client counts a
                // missing reply as loss.
                let _ = sock.send_to(&buf[..n], peer);
            }
            Err(e) => eprintln!("flannelctl probe server: UDP receive: {e}"),
        }
    }
}

/// A connection silent this long is a client gone without closing (a
/// node or pod that vanished); its thread ends instead of waiting forever.
const IDLE: Duration = Duration::from_secs(300);

fn handle(s: TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IDLE))?;
    let mut out = s.try_clone()?;
    let mut reader = BufReader::with_capacity(256 * 1024, s);
    let mut line = String::new();
    (&mut reader)
        .take(wire::MAX_HEADER as u64)
        .read_line(&mut line)?;
    let mode = match wire::parse_header(&line, MAX_SIZE) {
        Ok(m) => m,
        Err(why) => {
            let _ = out.write_all(format!("ERR {why}\n").as_bytes());
            return Ok(());
        }
    };
    out.write_all(b"OK\n")?;
    match mode {
        Mode::Rr { size } => {
            let mut buf = vec![0u8; size];
            loop {
                match reader.read_exact(&mut buf) {
                    Ok(()) => out.write_all(&buf)?,
                    // The client closing between messages is the normal end.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        }
        Mode::Sink => {
            let mut buf = vec![0u8; 256 * 1024];
            let mut total: u64 = 0;
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            out.write_all(format!("{total}\n").as_bytes())?;
            Ok(())
        }
    }
}
