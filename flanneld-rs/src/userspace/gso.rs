//! Transmit side: one packet read from the TUN device, possibly a TCP or
//! UDP super-packet of up to 64 KiB (the kernel's TSO/USO handed to us
//! through the virtio-net header), becomes the datagrams that go on the
//! wire, each `encapsulation + inner IPv4 + L4 header + payload`. Pure.
//!
//! Nothing is copied but headers: each datagram is a header in a small
//! arena plus a range of the packet as read, and the engine hands both to
//! `sendmsg` as an iovec, so the payload is copied once, by the kernel.
//! Segments are cut as Linux's own TCP/UDP segmentation cuts them: IPv4 ID
//! counting up, sequence numbers advancing, FIN and PSH only on the last
//! segment and CWR only on the first, every checksum complete.

use std::ops::Range;

use super::csum::{self, PROTO_TCP, PROTO_UDP};
use super::frame::{Drop, ENCAP_LEN};
use super::vnet::{self, VnetHdr};

/// One datagram: `arena[hdr]` then `pkt[payload]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub hdr: Range<usize>,
    pub payload: Range<usize>,
}

impl Datagram {
    /// Its length on the wire (the UDP payload).
    pub fn len(&self) -> usize {
        self.hdr.len() + self.payload.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Most segments one super-packet may become: 64 KiB at TCP's smallest
/// MSS Linux accepts (48 bytes) is 1,366. More means a broken header.
const MAX_SEGMENTS: usize = 2048;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Splits `pkt` (what followed the virtio-net header `vh`) into datagrams
/// appended to `out`, their headers (`encap` first) to `arena`. May finish
/// a checksum in `pkt` in place. Returns how many datagrams were added;
/// on error nothing is added.
pub fn split(
    vh: &VnetHdr,
    pkt: &mut [u8],
    encap: &[u8; ENCAP_LEN],
    arena: &mut Vec<u8>,
    out: &mut Vec<Datagram>,
) -> Result<usize, Drop> {
    let first = *pkt.first().ok_or(Drop::Truncated)?;
    if first >> 4 != 4 {
        return Err(Drop::NotIpv4);
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 {
        return Err(Drop::BadIpv4);
    }
    if pkt.len() < ihl {
        return Err(Drop::Truncated);
    }
    match vh.gso_type & !vnet::GSO_ECN {
        vnet::GSO_NONE => {
            let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
            if total < ihl {
                return Err(Drop::BadIpv4);
            }
            let pkt = pkt.get_mut(..total).ok_or(Drop::Truncated)?;
            if vh.flags & vnet::F_NEEDS_CSUM != 0 {
                finish_checksum(pkt, vh)?;
            }
            let at = arena.len();
            arena.extend_from_slice(encap);
            out.push(Datagram {
                hdr: at..arena.len(),
                payload: 0..pkt.len(),
            });
            Ok(1)
        }
        vnet::GSO_TCPV4 => segment(pkt, ihl, usize::from(vh.gso_size), true, encap, arena, out),
        vnet::GSO_UDP_L4 => segment(pkt, ihl, usize::from(vh.gso_size), false, encap, arena, out),
        vnet::GSO_TCPV6 => Err(Drop::NotIpv4),
        // UFO (IP fragmentation of UDP) and unknown types: never asked for.
        _ => Err(Drop::BadIpv4),
    }
}

/// Completes a checksum the stack left to "hardware": sum from
/// `csum_start` to the end (the field holds the pseudo-header's sum) and
/// store the complement, as Linux's `skb_checksum_help` does.
fn finish_checksum(pkt: &mut [u8], vh: &VnetHdr) -> Result<(), Drop> {
    let start = usize::from(vh.csum_start);
    let at = start + usize::from(vh.csum_offset);
    if start > pkt.len() || at + 2 > pkt.len() {
        return Err(Drop::BadIpv4);
    }
    let mut c = csum::finish(csum::sum(&pkt[start..], 0));
    if c == 0 && usize::from(vh.csum_offset) == csum::UDP_CSUM_OFFSET && pkt[9] == PROTO_UDP {
        // UDP sends a computed zero as 0xffff (zero means "no checksum").
        c = 0xffff;
    }
    pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

fn segment(
    pkt: &[u8],
    ihl: usize,
    mss: usize,
    tcp: bool,
    encap: &[u8; ENCAP_LEN],
    arena: &mut Vec<u8>,
    out: &mut Vec<Datagram>,
) -> Result<usize, Drop> {
    let proto = if tcp { PROTO_TCP } else { PROTO_UDP };
    if pkt[9] != proto || mss == 0 {
        return Err(Drop::BadIpv4);
    }
    let l4_hdr = if tcp {
        let off = *pkt.get(ihl + 12).ok_or(Drop::Truncated)?;
        usize::from(off >> 4) * 4
    } else {
        8
    };
    if l4_hdr < 8 || (tcp && l4_hdr < 20) {
        return Err(Drop::BadIpv4);
    }
    let hlen = ihl + l4_hdr;
    if pkt.len() < hlen {
        return Err(Drop::Truncated);
    }
    let data = pkt.len() - hlen;
    let count = data.div_ceil(mss).max(1);
    if count > MAX_SEGMENTS {
        return Err(Drop::BadIpv4);
    }
    let id0 = u16::from_be_bytes([pkt[4], pkt[5]]);
    let seq0 = u32::from_be_bytes([pkt[ihl + 4], pkt[ihl + 5], pkt[ihl + 6], pkt[ihl + 7]]);
    for i in 0..count {
        let off = hlen + i * mss;
        let len = mss.min(pkt.len() - off);
        let start = arena.len();
        arena.extend_from_slice(encap);
        let h0 = arena.len();
        arena.extend_from_slice(&pkt[..hlen]);
        let h = &mut arena[h0..];
        let total = (hlen + len) as u16;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[4..6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
        csum::set_ipv4_header(&mut h[..ihl]);
        let (l4, csum_at) = if tcp {
            let seq = seq0.wrapping_add((i * mss) as u32);
            h[ihl + 4..ihl + 8].copy_from_slice(&seq.to_be_bytes());
            if i + 1 < count {
                h[ihl + 13] &= !(TCP_FIN | TCP_PSH);
            }
            if i > 0 {
                h[ihl + 13] &= !TCP_CWR;
            }
            (l4_hdr + len, csum::TCP_CSUM_OFFSET)
        } else {
            let ulen = (8 + len) as u16;
            h[ihl + 4..ihl + 6].copy_from_slice(&ulen.to_be_bytes());
            (8 + len, csum::UDP_CSUM_OFFSET)
        };
        h[ihl + csum_at] = 0;
        h[ihl + csum_at + 1] = 0;
        let pseudo = csum::pseudo_v4(&h[12..16], &h[16..20], proto, l4 as u16);
        let s = csum::sum(&h[ihl..hlen], pseudo);
        let mut c = csum::finish(csum::sum(&pkt[off..off + len], s));
        if !tcp && c == 0 {
            c = 0xffff;
        }
        h[ihl + csum_at..ihl + csum_at + 2].copy_from_slice(&c.to_be_bytes());
        out.push(Datagram {
            hdr: start..arena.len(),
            payload: off..off + len,
        });
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::userspace::csum::tests::{make_partial, tcp_packet};
    use crate::userspace::csum::{check_l4, ipv4_header_ok, L4Csum};

    const ENCAP: [u8; ENCAP_LEN] = [0xee; ENCAP_LEN];

    /// The inner packets of the datagrams (encapsulation stripped).
    fn inner(arena: &[u8], pkt: &[u8], out: &[Datagram]) -> Vec<Vec<u8>> {
        out.iter()
            .map(|d| {
                assert_eq!(&arena[d.hdr.start..d.hdr.start + ENCAP_LEN], &ENCAP);
                let mut v = arena[d.hdr.start + ENCAP_LEN..d.hdr.end].to_vec();
                v.extend_from_slice(&pkt[d.payload.clone()]);
                v
            })
            .collect()
    }

    fn tso(mss: u16) -> VnetHdr {
        VnetHdr {
            flags: vnet::F_NEEDS_CSUM,
            gso_type: vnet::GSO_TCPV4,
            hdr_len: 40,
            gso_size: mss,
            csum_start: 20,
            csum_offset: 16,
        }
    }

    #[test]
    fn tcp_super_packet_becomes_linux_style_segments() {
        // PSH|ACK|FIN|CWR on the super-packet, partial checksum as the
        // stack leaves it.
        let mut pkt = tcp_packet(10_000, 1_000_000, 0x99);
        make_partial(&mut pkt);
        let orig = pkt.clone();
        let (mut arena, mut out) = (Vec::new(), Vec::new());
        let n = split(&tso(1400), &mut pkt, &ENCAP, &mut arena, &mut out).unwrap();
        assert_eq!(n, 8);
        let segs = inner(&arena, &pkt, &out);
        let mut data = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let len = if i < 7 { 1400 } else { 10_000 - 7 * 1400 };
            assert_eq!(s.len(), 40 + len, "segment {i}");
            assert_eq!(u16::from_be_bytes([s[2], s[3]]) as usize, s.len());
            assert_eq!(u16::from_be_bytes([s[4], s[5]]), 0x1234 + i as u16);
            assert!(ipv4_header_ok(&s[..20]));
            assert_eq!(check_l4(s), L4Csum::Valid, "segment {i}");
            let seq = u32::from_be_bytes([s[24], s[25], s[26], s[27]]);
            assert_eq!(seq, 1_000_000 + (i * 1400) as u32);
            let flags = s[33];
            assert_eq!(flags & 0x10, 0x10, "ACK everywhere");
            assert_eq!(
                flags & (TCP_FIN | TCP_PSH) != 0,
                i == 7,
                "FIN/PSH last only"
            );
            assert_eq!(flags & TCP_CWR != 0, i == 0, "CWR first only");
            assert_eq!(out[i].len(), ENCAP_LEN + s.len());
            data.extend_from_slice(&s[40..]);
        }
        assert_eq!(data, orig[40..]);
    }

    #[test]
    fn exact_multiple_and_single_segment() {
        let mut pkt = tcp_packet(2800, 5, 0x10);
        let (mut arena, mut out) = (Vec::new(), Vec::new());
        assert_eq!(
            split(&tso(1400), &mut pkt, &ENCAP, &mut arena, &mut out),
            Ok(2)
        );
        let mut small = tcp_packet(100, 5, 0x18);
        let orig = small.clone();
        let (mut arena, mut out) = (Vec::new(), Vec::new());
        assert_eq!(
            split(&tso(1400), &mut small, &ENCAP, &mut arena, &mut out),
            Ok(1)
        );
        assert_eq!(inner(&arena, &small, &out), vec![orig]);
    }

    #[test]
    fn udp_super_packet_gets_udp_lengths_and_checksums() {
        let mut pkt = tcp_packet(3000, 0, 0);
        pkt[9] = PROTO_UDP;
        // UDP header at 20..28 (ports kept); length of the whole.
        let ulen = (pkt.len() - 20) as u16;
        pkt[24..26].copy_from_slice(&ulen.to_be_bytes());
        let vh = VnetHdr {
            flags: vnet::F_NEEDS_CSUM,
            gso_type: vnet::GSO_UDP_L4,
            hdr_len: 28,
            gso_size: 1000,
            csum_start: 20,
            csum_offset: 6,
        };
        let (mut arena, mut out) = (Vec::new(), Vec::new());
        assert_eq!(split(&vh, &mut pkt, &ENCAP, &mut arena, &mut out), Ok(4));
        for (i, s) in inner(&arena, &pkt, &out).iter().enumerate() {
            let len = if i < 3 { 1000 } else { 3040 - 28 - 3000 };
            assert_eq!(s.len(), 28 + len, "segment {i}");
            assert_eq!(u16::from_be_bytes([s[24], s[25]]) as usize, s.len() - 20);
            assert_ne!(u16::from_be_bytes([s[26], s[27]]), 0);
            assert_eq!(check_l4(s), L4Csum::Valid, "segment {i}");
        }
    }

    #[test]
    fn plain_packet_with_pending_checksum_is_finished_in_place() {
        let mut pkt = tcp_packet(500, 9, 0x18);
        make_partial(&mut pkt);
        assert_eq!(check_l4(&pkt), L4Csum::Partial);
        let vh = VnetHdr {
            flags: vnet::F_NEEDS_CSUM,
            csum_start: 20,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        let (mut arena, mut out) = (Vec::new(), Vec::new());
        assert_eq!(split(&vh, &mut pkt, &ENCAP, &mut arena, &mut out), Ok(1));
        assert_eq!(check_l4(&pkt), L4Csum::Valid);
        assert_eq!(out[0].payload, 0..pkt.len());
        assert_eq!(arena, ENCAP);
    }

    #[test]
    fn broken_headers_are_dropped_with_a_reason() {
        let good = tcp_packet(3000, 1, 0x10);
        let (mut arena, mut out) = (Vec::new(), Vec::new());
        // A scope, so that the closure's borrows end before the last check.
        {
            let mut run = |vh: VnetHdr, f: &dyn Fn(&mut Vec<u8>)| {
                let mut p = good.clone();
                f(&mut p);
                split(&vh, &mut p, &ENCAP, &mut arena, &mut out)
            };
            assert_eq!(run(tso(1400), &|p| p.clear()), Err(Drop::Truncated));
            assert_eq!(run(tso(1400), &|p| p[0] = 0x65), Err(Drop::NotIpv4));
            assert_eq!(run(tso(1400), &|p| p[0] = 0x44), Err(Drop::BadIpv4));
            assert_eq!(run(tso(0), &|_| ()), Err(Drop::BadIpv4));
            assert_eq!(
                run(tso(1), &|_| ()),
                Err(Drop::BadIpv4),
                "too many segments"
            );
            assert_eq!(run(tso(1400), &|p| p[9] = 17), Err(Drop::BadIpv4));
            assert_eq!(run(tso(1400), &|p| p[32] = 0x40), Err(Drop::BadIpv4));
            assert_eq!(run(tso(1400), &|p| p.truncate(30)), Err(Drop::Truncated));
            let v6 = VnetHdr {
                gso_type: vnet::GSO_TCPV6,
                ..tso(1400)
            };
            assert_eq!(run(v6, &|_| ()), Err(Drop::NotIpv4));
            let plain = VnetHdr {
                flags: vnet::F_NEEDS_CSUM,
                csum_start: 3030,
                csum_offset: 16,
                ..VnetHdr::default()
            };
            assert_eq!(run(plain, &|_| ()), Err(Drop::BadIpv4));
            assert_eq!(
                run(VnetHdr::default(), &|p| p[2] = 0xff),
                Err(Drop::Truncated)
            );
        }
        assert!(out.is_empty() && arena.is_empty(), "nothing added on error");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// Any bytes and any virtio-net header: no panic, and whatever is
        /// produced lies inside the packet and the arena.
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
                        gso_type in 0u8..6, gso_size in 0u16..400, flags in 0u8..2,
                        cs in 0u16..300, co in 0u16..40) {
            let vh = VnetHdr { flags, gso_type, hdr_len: 0, gso_size, csum_start: cs, csum_offset: co };
            let mut p = bytes.clone();
            let (mut arena, mut out) = (Vec::new(), Vec::new());
            if split(&vh, &mut p, &ENCAP, &mut arena, &mut out).is_ok() {
                for d in &out {
                    proptest::prop_assert!(d.hdr.end <= arena.len());
                    proptest::prop_assert!(d.payload.end <= p.len());
                }
            }
        }
    }
}
