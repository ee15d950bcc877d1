//! Receive side: the inner IPv4 packets decoded from one batch of
//! datagrams become the writes to the TUN device. Consecutive TCP segments
//! of one flow are joined into one super-packet (receive offload, as
//! Linux's GRO joins them), so the pod's stack handles 64 KiB at a time;
//! everything else is written one packet per write. Pure: the engine turns
//! each `Write` into one `writev`, `arena[hdr]` followed by the packets.
//!
//! Joining follows the kernel's TCP GRO rules: same addresses, ports, TOS,
//! TTL, DF, IP options, TCP options, ACK number and window; flags ACK or
//! ACK+PSH (PSH ends a run); sequence numbers back to back; every segment
//! the size of the first but the last, which may be shorter and ends the
//! run; checksums correct. A segment whose checksum its sender left
//! unfinished (a Linux sender behind a veth: CHECKSUM_PARTIAL, which the
//! veth never completes) is joined as well, because the joined packet's
//! checksum is recomputed by the kernel anyway; alone, it is written with
//! the same "checksum pending" note its sender had, so the pod's stack
//! accepts it as the sender's stack would have. A segment with a wrong
//! checksum is never joined and is written as is, for the pod's stack to
//! drop and count, as it would behind a kernel VXLAN device.
//!
//! A kernel VXLAN/Geneve peer behind a veth also sends whole TCP
//! super-packets (its GSO packet is never cut on a veth, and a UDP socket
//! takes it in one piece): `tcp_super` recognises them and they are
//! written as one already-joined packet, cut at the TUN MTU if the kernel
//! ever has to cut it.

use std::ops::Range;

use super::csum::{self, L4Csum, PROTO_TCP};
use super::vnet::{self, VnetHdr};

/// How the packets of a write are laid out: `arena[hdr]`, then for each
/// of `pkts[first..first + count]` its bytes after the first `skip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub hdr: Range<usize>,
    pub first: usize,
    pub count: usize,
    pub skip: usize,
}

/// An IP packet may not be longer; a joined one neither.
const MAX_IPV4: usize = 65_535;
/// Segments per joined packet at most (keeps the iovec far below
/// UIO_MAXIOV even for tiny segments).
const MAX_JOIN: usize = 256;

const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_URG: u8 = 0x20;

/// A TCP segment that may start or extend a run.
struct Seg {
    ihl: usize,
    hlen: usize,
    seq: u32,
    payload: usize,
    psh: bool,
}

fn tcp_segment(p: &[u8]) -> Option<Seg> {
    let (ihl, proto, _) = csum::l4_checksum_at(p)?;
    if proto != PROTO_TCP {
        return None;
    }
    let thl = usize::from(p[ihl + 12] >> 4) * 4;
    let hlen = ihl + thl;
    if thl < 20 || p.len() <= hlen {
        return None;
    }
    let flags = p[ihl + 13];
    if flags != TCP_ACK && flags != TCP_ACK | TCP_PSH {
        return None;
    }
    Some(Seg {
        ihl,
        hlen,
        seq: u32::from_be_bytes([p[ihl + 4], p[ihl + 5], p[ihl + 6], p[ihl + 7]]),
        payload: p.len() - hlen,
        psh: flags & TCP_PSH != 0,
    })
}

/// `q` may follow `p` in a run: the header bytes that must match do.
fn same_flow(p: &[u8], q: &[u8], s: &Seg) -> bool {
    let ihl = s.ihl;
    q.len() > s.hlen
        && q[0] == p[0]
        && q[1] == p[1] // TOS
        && q[6] & 0xe0 == p[6] & 0xe0 // DF (fragments were excluded)
        && q[8..10] == p[8..10] // TTL, protocol
        && q[12..ihl] == p[12..ihl] // addresses, IP options
        && q[ihl..ihl + 4] == p[ihl..ihl + 4] // ports
        && q[ihl + 8..ihl + 13] == p[ihl + 8..ihl + 13] // ACK, data offset
        && q[ihl + 14..ihl + 16] == p[ihl + 14..ihl + 16] // window
        && q[ihl + 18..s.hlen] == p[ihl + 18..s.hlen] // urgent, options
}

fn joinable(c: L4Csum) -> bool {
    c != L4Csum::Invalid
}

/// True when `p`, longer than the TUN MTU, is a TCP super-packet that may
/// be written as one GSO packet: TCP with payload, no SYN/RST/URG, not a
/// fragment, its checksum correct or left pending by its sender. Other
/// oversized packets cannot be cut correctly here (a UDP super-packet's
/// datagram boundaries are lost with its GSO size) and are dropped.
pub fn tcp_super(p: &[u8]) -> bool {
    let Some((ihl, PROTO_TCP, _)) = csum::l4_checksum_at(p) else {
        return false;
    };
    let thl = usize::from(p[ihl + 12] >> 4) * 4;
    thl >= 20
        && p.len() > ihl + thl
        && p.len() <= MAX_IPV4
        && p[ihl + 13] & (TCP_SYN | TCP_RST | TCP_URG) == 0
        && joinable(csum::check_l4(p))
}

/// Plans the writes for `pkts` (IPv4 packets trimmed to their total
/// length; longer than `mtu` only if `tcp_super`), appending headers to
/// `arena` and writes to `out`.
pub fn plan(pkts: &[&[u8]], mtu: usize, arena: &mut Vec<u8>, out: &mut Vec<Write>) {
    let mut i = 0;
    while i < pkts.len() {
        let p = pkts[i];
        if p.len() > mtu {
            push_super(p, i, mtu, arena, out);
            i += 1;
            continue;
        }
        let mut state = None;
        if let Some(s) = tcp_segment(p) {
            let c = csum::check_l4(p);
            state = Some(c);
            if joinable(c) && !s.psh {
                let end = run_end(pkts, i, &s);
                if end - i >= 2 {
                    push_joined(pkts, i, end, &s, arena, out);
                    i = end;
                    continue;
                }
            }
        }
        let partial = match state {
            Some(c) => c == L4Csum::Partial,
            None => csum::may_be_partial(p) && csum::check_l4(p) == L4Csum::Partial,
        };
        push_single(p, i, partial, arena, out);
        i += 1;
    }
}

/// One past the last packet of the run starting at `start`.
fn run_end(pkts: &[&[u8]], start: usize, s: &Seg) -> usize {
    let p = pkts[start];
    let mut next_seq = s.seq.wrapping_add(s.payload as u32);
    let mut total = p.len();
    let mut j = start + 1;
    while j < pkts.len() && j - start < MAX_JOIN {
        let q = pkts[j];
        let Some(t) = tcp_segment(q) else { break };
        if t.hlen != s.hlen
            || t.seq != next_seq
            || t.payload > s.payload
            || total + t.payload > MAX_IPV4
            || !same_flow(p, q, s)
            || !joinable(csum::check_l4(q))
        {
            break;
        }
        next_seq = next_seq.wrapping_add(t.payload as u32);
        total += t.payload;
        j += 1;
        if t.psh || t.payload < s.payload {
            break;
        }
    }
    j
}

fn push_joined(
    pkts: &[&[u8]],
    start: usize,
    end: usize,
    s: &Seg,
    arena: &mut Vec<u8>,
    out: &mut Vec<Write>,
) {
    let (ihl, hlen) = (s.ihl, s.hlen);
    let total: usize = hlen
        + pkts[start..end]
            .iter()
            .map(|q| q.len() - hlen)
            .sum::<usize>();
    let psh = pkts[end - 1][ihl + 13] & TCP_PSH != 0;
    let at = arena.len();
    let vh = VnetHdr {
        flags: vnet::F_NEEDS_CSUM,
        gso_type: vnet::GSO_TCPV4,
        hdr_len: hlen as u16,
        gso_size: s.payload as u16,
        csum_start: ihl as u16,
        csum_offset: csum::TCP_CSUM_OFFSET as u16,
    };
    arena.extend_from_slice(&vh.encode());
    let h0 = arena.len();
    arena.extend_from_slice(&pkts[start][..hlen]);
    let h = &mut arena[h0..];
    h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    csum::set_ipv4_header(&mut h[..ihl]);
    if psh {
        h[ihl + 13] |= TCP_PSH;
    }
    // The pending-checksum form: the pseudo-header's sum, which the kernel
    // completes over the whole payload (or per segment if it re-splits).
    let pseudo = csum::pseudo_v4(&h[12..16], &h[16..20], PROTO_TCP, (total - ihl) as u16);
    h[ihl + 16..ihl + 18].copy_from_slice(&csum::fold(pseudo).to_be_bytes());
    out.push(Write {
        hdr: at..arena.len(),
        first: start,
        count: end - start,
        skip: hlen,
    });
}

fn push_super(p: &[u8], i: usize, mtu: usize, arena: &mut Vec<u8>, out: &mut Vec<Write>) {
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let hlen = ihl + usize::from(p[ihl + 12] >> 4) * 4;
    let vh = VnetHdr {
        flags: vnet::F_NEEDS_CSUM,
        gso_type: vnet::GSO_TCPV4,
        hdr_len: hlen as u16,
        gso_size: mtu.saturating_sub(hlen).max(1) as u16,
        csum_start: ihl as u16,
        csum_offset: csum::TCP_CSUM_OFFSET as u16,
    };
    let at = arena.len();
    arena.extend_from_slice(&vh.encode());
    let h0 = arena.len();
    arena.extend_from_slice(&p[..hlen]);
    let h = &mut arena[h0..];
    let pseudo = csum::pseudo_v4(&h[12..16], &h[16..20], PROTO_TCP, (p.len() - ihl) as u16);
    h[ihl + 16..ihl + 18].copy_from_slice(&csum::fold(pseudo).to_be_bytes());
    out.push(Write {
        hdr: at..arena.len(),
        first: i,
        count: 1,
        skip: hlen,
    });
}

fn push_single(p: &[u8], i: usize, partial: bool, arena: &mut Vec<u8>, out: &mut Vec<Write>) {
    let mut vh = VnetHdr::default();
    if partial {
        if let Some((ihl, _, at)) = csum::l4_checksum_at(p) {
            vh.flags = vnet::F_NEEDS_CSUM;
            vh.csum_start = ihl as u16;
            vh.csum_offset = (at - ihl) as u16;
            vh.hdr_len = (at + 2) as u16;
        }
    }
    let at = arena.len();
    arena.extend_from_slice(&vh.encode());
    out.push(Write {
        hdr: at..arena.len(),
        first: i,
        count: 1,
        skip: 0,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::userspace::csum::tests::{fix_tcp, make_partial, tcp_packet};
    use crate::userspace::csum::{check_l4, ipv4_header_ok};

    /// The bytes of each write as the TUN device would read them.
    fn bytes(pkts: &[Vec<u8>]) -> (Vec<Write>, Vec<Vec<u8>>) {
        let refs: Vec<&[u8]> = pkts.iter().map(|p| &p[..]).collect();
        let (mut arena, mut out) = (Vec::new(), Vec::new());
        plan(&refs, 65_535, &mut arena, &mut out);
        let written = out
            .iter()
            .map(|w| {
                let mut b = arena[w.hdr.clone()].to_vec();
                for q in &refs[w.first..w.first + w.count] {
                    b.extend_from_slice(&q[w.skip..]);
                }
                b
            })
            .collect();
        (out, written)
    }

    /// A run of `n` segments of `mss` bytes starting at `seq`.
    fn run(n: usize, mss: usize, seq: u32) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| tcp_packet(mss, seq + (i * mss) as u32, TCP_ACK))
            .collect()
    }

    #[test]
    fn a_run_of_one_flow_becomes_one_super_packet() {
        let mut pkts = run(5, 1400, 100);
        // The last one shorter, with PSH: still joined, and it ends the run.
        pkts.push(tcp_packet(300, 100 + 5 * 1400, TCP_ACK | TCP_PSH));
        pkts.push(tcp_packet(1400, 100 + 5 * 1400 + 300, TCP_ACK));
        let (out, w) = bytes(&pkts);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!((out[0].first, out[0].count, out[0].skip), (0, 6, 40));
        let b = &w[0];
        let vh = VnetHdr::parse(b).unwrap();
        assert_eq!(vh.flags, vnet::F_NEEDS_CSUM);
        assert_eq!(vh.gso_type, vnet::GSO_TCPV4);
        assert_eq!((vh.gso_size, vh.hdr_len), (1400, 40));
        assert_eq!((vh.csum_start, vh.csum_offset), (20, 16));
        let ip = &b[vnet::LEN..];
        assert_eq!(ip.len(), 40 + 5 * 1400 + 300);
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, ip.len());
        assert!(ipv4_header_ok(&ip[..20]));
        assert_eq!(ip[33], TCP_ACK | TCP_PSH);
        // Checksum pending: what the kernel finishes is what a correct
        // checksum over the joined packet would be.
        assert_eq!(check_l4(ip), L4Csum::Partial);
        let mut whole = ip.to_vec();
        fix_tcp(&mut whole);
        assert_eq!(check_l4(&whole), L4Csum::Valid);
        let data: Vec<u8> = pkts[..6].iter().flat_map(|p| p[40..].to_vec()).collect();
        assert_eq!(&ip[40..], &data[..]);
        // The packet after the PSH stands alone.
        assert_eq!(&w[1][vnet::LEN..], &pkts[6][..]);
        assert_eq!(VnetHdr::parse(&w[1]), Some(VnetHdr::default()));
    }

    #[test]
    fn what_does_not_match_is_not_joined() {
        let base = run(2, 1000, 1);
        type Mutation = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "gap in sequence",
                Box::new(|q| q[24..28].copy_from_slice(&5000u32.to_be_bytes())),
            ),
            ("other port", Box::new(|q| q[21] ^= 1)),
            ("other ack", Box::new(|q| q[31] ^= 1)),
            ("other window", Box::new(|q| q[35] ^= 1)),
            ("other TTL", Box::new(|q| q[8] = 63)),
            ("other TOS", Box::new(|q| q[1] = 4)),
            ("SYN", Box::new(|q| q[33] = 0x12)),
            ("FIN", Box::new(|q| q[33] = 0x11)),
            (
                "longer than the first",
                Box::new(|q| {
                    let mut bigger = tcp_packet(1001, 1001, TCP_ACK);
                    std::mem::swap(q, &mut bigger);
                }),
            ),
        ];
        for (what, f) in cases {
            let mut pkts = base.clone();
            f(&mut pkts[1]);
            fix_tcp(&mut pkts[1]);
            let (out, _) = bytes(&pkts);
            assert_eq!(out.len(), 2, "{what}: {out:?}");
        }
        // A wrong checksum: never joined, written untouched.
        let mut pkts = base.clone();
        pkts[1][500] ^= 0xff;
        let (out, w) = bytes(&pkts);
        assert_eq!(out.len(), 2);
        assert_eq!(&w[1][vnet::LEN..], &pkts[1][..]);
        assert_eq!(VnetHdr::parse(&w[1]), Some(VnetHdr::default()));
        // Pure ACKs (no payload) and PSH on the first: alone.
        let acks = vec![tcp_packet(0, 1, TCP_ACK), tcp_packet(0, 1, TCP_ACK)];
        assert_eq!(bytes(&acks).0.len(), 2);
        let psh = vec![
            tcp_packet(10, 1, TCP_ACK | TCP_PSH),
            tcp_packet(10, 11, TCP_ACK),
        ];
        assert_eq!(bytes(&psh).0.len(), 2);
    }

    #[test]
    fn partial_checksums_join_or_travel_with_their_note() {
        // A kernel VXLAN peer behind a veth: every segment partial.
        let mut pkts = run(3, 1400, 7);
        for p in &mut pkts {
            make_partial(p);
        }
        let (out, _) = bytes(&pkts);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].count, 3);
        // Alone (a SYN, say): the "checksum pending" note is passed on.
        let mut syn = tcp_packet(0, 1, 0x02);
        make_partial(&mut syn);
        let (out, w) = bytes(&[syn.clone()]);
        assert_eq!(out.len(), 1);
        let vh = VnetHdr::parse(&w[0]).unwrap();
        assert_eq!(vh.flags, vnet::F_NEEDS_CSUM);
        assert_eq!(vh.gso_type, vnet::GSO_NONE);
        assert_eq!((vh.csum_start, vh.csum_offset), (20, 16));
        assert_eq!(&w[0][vnet::LEN..], &syn[..]);
        // A correct one: no note.
        let ok = tcp_packet(0, 1, 0x02);
        let (_, w) = bytes(&[ok]);
        assert_eq!(VnetHdr::parse(&w[0]), Some(VnetHdr::default()));
    }

    #[test]
    fn a_kernel_peers_super_packet_is_written_as_one_gso_packet() {
        let mut big = tcp_packet(20_000, 9, TCP_ACK | TCP_PSH | 0x01);
        make_partial(&mut big);
        assert!(tcp_super(&big));
        let refs = [&big[..]];
        let (mut arena, mut out) = (Vec::new(), Vec::new());
        plan(&refs, 1450, &mut arena, &mut out);
        assert_eq!(out.len(), 1);
        let w = &out[0];
        let vh = VnetHdr::parse(&arena[w.hdr.clone()]).unwrap();
        assert_eq!(vh.gso_type, vnet::GSO_TCPV4);
        assert_eq!((vh.gso_size, vh.hdr_len), (1410, 40));
        let mut b = arena[w.hdr.start + vnet::LEN..w.hdr.end].to_vec();
        b.extend_from_slice(&big[w.skip..]);
        assert_eq!(b.len(), big.len());
        assert_eq!(check_l4(&b), L4Csum::Partial);
        // Not super-packets: a SYN, UDP, a wrong checksum.
        let mut syn = tcp_packet(20_000, 9, 0x02);
        make_partial(&mut syn);
        assert!(!tcp_super(&syn));
        let mut udp = big.clone();
        udp[9] = 17;
        assert!(!tcp_super(&udp));
        let mut bad = tcp_packet(20_000, 9, TCP_ACK);
        bad[1000] ^= 1;
        assert!(!tcp_super(&bad));
    }

    #[test]
    fn size_limits_cut_runs() {
        // 50 segments of 1400 bytes would exceed 64 KiB: two writes.
        let pkts = run(50, 1400, 1);
        let (out, w) = bytes(&pkts);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(w.iter().all(|b| b.len() - vnet::LEN <= MAX_IPV4));
        assert_eq!(out.iter().map(|o| o.count).sum::<usize>(), 50);
        // Tiny segments: at most MAX_JOIN in one.
        let tiny = run(300, 10, 1);
        let (out, _) = bytes(&tiny);
        assert_eq!(out[0].count, MAX_JOIN);
    }

    #[test]
    fn gso_then_gro_gives_back_the_stream() {
        use crate::userspace::frame::ENCAP_LEN;
        use crate::userspace::gso;
        let mut big = tcp_packet(60_000, 42, TCP_ACK | TCP_PSH);
        let vh = VnetHdr {
            flags: vnet::F_NEEDS_CSUM,
            gso_type: vnet::GSO_TCPV4,
            hdr_len: 40,
            gso_size: 1448,
            csum_start: 20,
            csum_offset: 16,
        };
        let (mut arena, mut dgrams) = (Vec::new(), Vec::new());
        gso::split(&vh, &mut big, &[0; ENCAP_LEN], &mut arena, &mut dgrams).unwrap();
        let segs: Vec<Vec<u8>> = dgrams
            .iter()
            .map(|d| {
                let mut v = arena[d.hdr.start + ENCAP_LEN..d.hdr.end].to_vec();
                v.extend_from_slice(&big[d.payload.clone()]);
                v
            })
            .collect();
        let (out, w) = bytes(&segs);
        assert_eq!(out.len(), 1);
        let mut joined = w[0][vnet::LEN..].to_vec();
        fix_tcp(&mut joined);
        assert_eq!(joined, big);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]

        /// Any packets: no panic; every packet is written exactly once, in
        /// order.
        #[test]
        fn every_packet_once_in_order(raw in proptest::collection::vec(
            proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120), 0..12),
            mutate in proptest::prelude::any::<bool>()) {
            let mut pkts = if mutate { run(raw.len(), 60, 1) } else { raw.clone() };
            if mutate {
                for (p, r) in pkts.iter_mut().zip(&raw) {
                    if let Some(&b) = r.first() {
                        let at = usize::from(b) % p.len();
                        p[at] = r.get(1).copied().unwrap_or(0);
                    }
                }
            }
            let (out, _) = bytes(&pkts);
            let mut next = 0;
            for w in &out {
                proptest::prop_assert_eq!(w.first, next);
                proptest::prop_assert!(w.count >= 1);
                next += w.count;
            }
            proptest::prop_assert_eq!(next, pkts.len());
        }
    }
}
