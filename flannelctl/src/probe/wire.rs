//! The probe's wire protocol, shared by server and client.
//!
//! TCP: the client sends one header line `FCTPROBE/1 <MODE> <SIZE>\n`; the
//! server answers `OK\n` (or `ERR <why>\n` and closes). MODE `RR`: the client
//! sends SIZE bytes, the server echoes them, repeated until the client
//! closes. MODE `SINK` (SIZE ignored): the client streams bytes and shuts
//! down its side; the server answers the byte count it received as a
//! decimal line and closes.
//!
//! UDP (same port): the server echoes every datagram as it came. The client
//! puts its run id and a sequence number in the first 16 bytes, so late or
//! foreign replies are told apart from the one it waits for.

pub const MAGIC: &str = "FCTPROBE/1";
/// A header line longer than this is not ours.
pub const MAX_HEADER: usize = 64;
/// Run id (8 bytes) and sequence number (8 bytes), big-endian.
pub const UDP_HEADER: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Request/response echo of `size`-byte messages.
    Rr { size: usize },
    /// Byte sink for a throughput stream.
    Sink,
}

pub fn header(mode: Mode) -> String {
    match mode {
        Mode::Rr { size } => format!("{MAGIC} RR {size}\n"),
        Mode::Sink => format!("{MAGIC} SINK 0\n"),
    }
}

/// Parses a header line (without or with its newline).
pub fn parse_header(line: &str, max_size: usize) -> Result<Mode, String> {
    let mut parts = line.trim_end().split(' ');
    if parts.next() != Some(MAGIC) {
        return Err(format!("not a {MAGIC} header"));
    }
    let mode = parts.next().unwrap_or_default();
    let size: usize = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "missing or bad size".to_string())?;
    if parts.next().is_some() {
        return Err("trailing fields".into());
    }
    match mode {
        "RR" if (1..=max_size).contains(&size) => Ok(Mode::Rr { size }),
        "RR" => Err(format!("size {size} is not in 1..={max_size}")),
        "SINK" => Ok(Mode::Sink),
        other => Err(format!("unknown mode {other:?}")),
    }
}

/// Writes run id and sequence number into the head of a UDP payload.
pub fn stamp(buf: &mut [u8], run: u64, seq: u64) {
    buf[..8].copy_from_slice(&run.to_be_bytes());
    buf[8..16].copy_from_slice(&seq.to_be_bytes());
}

/// Run id and sequence number of a UDP reply; None when too short.
pub fn read_stamp(buf: &[u8]) -> Option<(u64, u64)> {
    let run = u64::from_be_bytes(buf.get(..8)?.try_into().ok()?);
    let seq = u64::from_be_bytes(buf.get(8..16)?.try_into().ok()?);
    Some((run, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_reject_garbage() {
        assert_eq!(
            parse_header(&header(Mode::Rr { size: 64 }), 1000),
            Ok(Mode::Rr { size: 64 })
        );
        assert_eq!(parse_header(&header(Mode::Sink), 1000), Ok(Mode::Sink));
        for bad in [
            "GET / HTTP/1.1",
            "FCTPROBE/1 RR",
            "FCTPROBE/1 RR x",
            "FCTPROBE/1 RR 0",
            "FCTPROBE/1 RR 2000",
            "FCTPROBE/1 XX 1",
            "FCTPROBE/1 RR 1 2",
            "FCTPROBE/2 RR 1",
        ] {
            assert!(parse_header(bad, 1000).is_err(), "{bad}");
        }
    }

    #[test]
    fn udp_stamps() {
        let mut b = [0u8; 20];
        stamp(&mut b, 0xdead_beef, 42);
        assert_eq!(read_stamp(&b), Some((0xdead_beef, 42)));
        assert_eq!(read_stamp(&b[..15]), None);
    }
}
