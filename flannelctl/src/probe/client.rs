//! `probe client`: the four measurements against a probe server, in order
//! (UDP request/response, TCP request/response, TCP throughput with 1
//! stream, then with N streams), each for the same duration.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use super::cpu;
use super::hist::Histogram;
use super::report::{LatencySummary, ProbeReport, TcpRr, Throughput, UdpRr, SCHEMA};
use super::wire::{self, Mode};
use super::ProbeError;

/// Bytes per write() of a throughput stream.
const CHUNK: usize = 128 * 1024;
/// A blocked read longer than this means the path or the server is gone.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub server: SocketAddr,
    pub duration: Duration,
    pub streams: u32,
    pub size: usize,
    /// How long to keep retrying the first connection (a server pod may
    /// still be starting).
    pub connect_timeout: Duration,
    /// A UDP request without a reply after this is lost.
    pub udp_timeout: Duration,
}

pub fn run(o: &ClientOptions) -> Result<ProbeReport, ProbeError> {
    // Connecting first also waits for a server that is still starting,
    // before the UDP test would count its absence as loss.
    let rr = open(o, Mode::Rr { size: o.size }, o.connect_timeout)?;
    let udp_rr = udp_rr(o)?;
    let tcp_rr = tcp_rr(o, rr)?;
    let tcp_1 = throughput(o, 1)?;
    let tcp_n = throughput(o, o.streams)?;
    Ok(ProbeReport {
        schema: SCHEMA.into(),
        server: o.server.to_string(),
        duration_s: o.duration.as_secs_f64(),
        size: o.size,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        udp_rr,
        tcp_rr,
        tcp_1,
        tcp_n,
    })
}

fn io_err(o: &ClientOptions, what: &'static str) -> impl Fn(std::io::Error) -> ProbeError {
    let server = o.server;
    move |source| ProbeError::Io {
        what,
        server,
        source,
    }
}

/// Connects (retrying until `within`) and does the header handshake.
fn open(o: &ClientOptions, mode: Mode, within: Duration) -> Result<TcpStream, ProbeError> {
    let deadline = Instant::now() + within;
    let mut s = loop {
        match TcpStream::connect_timeout(&o.server, Duration::from_secs(1)) {
            Ok(s) => break s,
            Err(source) if Instant::now() >= deadline => {
                return Err(ProbeError::Connect {
                    server: o.server,
                    secs: within.as_secs_f64(),
                    source,
                })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let err = io_err(o, "handshake");
    s.set_nodelay(true).map_err(&err)?;
    s.set_read_timeout(Some(IO_TIMEOUT)).map_err(&err)?;
    s.set_write_timeout(Some(IO_TIMEOUT)).map_err(&err)?;
    s.write_all(wire::header(mode).as_bytes()).map_err(&err)?;
    let mut reply = Vec::new();
    // Byte by byte: nothing after the line may be swallowed by a buffer.
    let mut byte = [0u8; 1];
    while reply.len() < wire::MAX_HEADER {
        match s.read(&mut byte).map_err(&err)? {
            0 => break,
            _ if byte[0] == b'\n' => break,
            _ => reply.push(byte[0]),
        }
    }
    if reply != b"OK" {
        return Err(ProbeError::Protocol {
            server: o.server,
            reply: String::from_utf8_lossy(&reply).into_owned(),
        });
    }
    Ok(s)
}

fn run_id() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 40)
}

fn udp_rr(o: &ClientOptions) -> Result<UdpRr, ProbeError> {
    let err = io_err(o, "UDP request/response");
    let local: SocketAddr = if o.server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local).map_err(&err)?;
    sock.connect(o.server).map_err(&err)?;
    sock.set_read_timeout(Some(o.udp_timeout)).map_err(&err)?;
    let run = run_id();
    let mut req = vec![0u8; o.size];
    let mut reply = vec![0u8; 65_536];
    let mut hist = Histogram::new();
    let (mut sent, mut lost) = (0u64, 0u64);
    let end = Instant::now() + o.duration;
    let mut seq = 0u64;
    let cpu0 = cpu::read();
    while Instant::now() < end {
        seq += 1;
        wire::stamp(&mut req, run, seq);
        let t0 = Instant::now();
        sent += 1;
        if let Err(e) = sock.send(&req) {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                // An ICMP error from an earlier request: this one is lost
                // too; pause so a closed port does not spin.
                lost += 1;
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            return Err(err(e));
        }
        let mut timeout_changed = false;
        loop {
            match sock.recv(&mut reply) {
                Ok(n) => {
                    if n == o.size && wire::read_stamp(&reply[..n]) == Some((run, seq)) {
                        hist.record(t0.elapsed().as_nanos() as u64);
                        break;
                    }
                    // A late reply to an earlier request: keep waiting for
                    // this one, for what is left of its timeout.
                    let left = o.udp_timeout.saturating_sub(t0.elapsed());
                    if left.is_zero() {
                        lost += 1;
                        break;
                    }
                    sock.set_read_timeout(Some(left)).map_err(&err)?;
                    timeout_changed = true;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    lost += 1;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    lost += 1;
                    std::thread::sleep(Duration::from_millis(10));
                    break;
                }
                Err(e) => return Err(err(e)),
            }
        }
        if timeout_changed {
            sock.set_read_timeout(Some(o.udp_timeout)).map_err(&err)?;
        }
    }
    if hist.count == 0 {
        return Err(ProbeError::NoUdpReply {
            server: o.server,
            sent,
            timeout_ms: o.udp_timeout.as_millis() as u64,
        });
    }
    Ok(UdpRr {
        sent,
        received: hist.count,
        lost,
        timeout_ms: o.udp_timeout.as_millis() as u64,
        cpu_us_per_request: cpu_per_request(cpu0, hist.count),
        latency: LatencySummary::of(&hist),
        histogram: hist,
    })
}

/// Host-wide busy CPU-microseconds per request since `start`.
fn cpu_per_request(start: Option<cpu::CpuTimes>, requests: u64) -> Option<f64> {
    let end = cpu::read()?;
    let busy = cpu::busy_seconds(start?, end, cpu::ticks_per_second());
    (requests > 0).then(|| busy * 1e6 / requests as f64)
}

fn tcp_rr(o: &ClientOptions, mut s: TcpStream) -> Result<TcpRr, ProbeError> {
    let err = io_err(o, "TCP request/response");
    let req = vec![0x5au8; o.size];
    let mut reply = vec![0u8; o.size];
    let mut hist = Histogram::new();
    let end = Instant::now() + o.duration;
    let cpu0 = cpu::read();
    while Instant::now() < end {
        let t0 = Instant::now();
        s.write_all(&req).map_err(&err)?;
        s.read_exact(&mut reply).map_err(&err)?;
        hist.record(t0.elapsed().as_nanos() as u64);
    }
    Ok(TcpRr {
        cpu_us_per_request: cpu_per_request(cpu0, hist.count),
        transactions: hist.count,
        latency: LatencySummary::of(&hist),
        histogram: hist,
    })
}

/// One stream: send until `end`, close the sending side, read the count.
fn stream(mut s: TcpStream, end: Instant) -> std::io::Result<(u64, u64)> {
    let buf = vec![0x5au8; CHUNK];
    let mut sent = 0u64;
    while Instant::now() < end {
        s.write_all(&buf)?;
        sent += CHUNK as u64;
    }
    s.shutdown(Shutdown::Write)?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    let counted = line.trim().parse().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("server sent {line:?} instead of a byte count"),
        )
    })?;
    Ok((sent, counted))
}

fn throughput(o: &ClientOptions, n: u32) -> Result<Throughput, ProbeError> {
    let conns = (0..n)
        .map(|_| open(o, Mode::Sink, o.connect_timeout))
        .collect::<Result<Vec<_>, _>>()?;
    let hz = cpu::ticks_per_second();
    let c0 = cpu::read();
    let t0 = Instant::now();
    let end = t0 + o.duration;
    let workers: Vec<_> = conns
        .into_iter()
        .map(|s| std::thread::spawn(move || stream(s, end)))
        .collect();
    let mut results = Vec::new();
    for w in workers {
        match w.join() {
            Ok(r) => results.push(r.map_err(io_err(o, "TCP throughput"))?),
            Err(_) => return Err(ProbeError::Thread("TCP throughput stream")),
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    let c1 = cpu::read();
    let (sent, counted) = results
        .iter()
        .fold((0u64, 0u64), |(a, b), (s, c)| (a + s, b + c));
    if sent != counted {
        return Err(ProbeError::Mismatch {
            server: o.server,
            sent,
            counted,
        });
    }
    let busy = match (c0, c1) {
        (Some(a), Some(b)) => Some((cpu::busy_seconds(a, b, hz), a, b)),
        _ => None,
    };
    Ok(Throughput {
        streams: n,
        bytes: counted,
        seconds,
        gbit_per_s: counted as f64 * 8.0 / seconds / 1e9,
        cpu_busy_s: busy.map(|(s, _, _)| s),
        cpu_busy_fraction: busy.and_then(|(_, a, b)| {
            let total = b.total.saturating_sub(a.total);
            (total > 0).then(|| b.busy.saturating_sub(a.busy) as f64 / total as f64)
        }),
        cpu_s_per_gbit: busy.and_then(|(s, _, _)| cpu::seconds_per_gbit(s, counted)),
    })
}
