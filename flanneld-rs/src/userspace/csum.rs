//! Internet checksums (RFC 1071) of inner IPv4 packets: the sums the
//! segmenter writes and the coalescer checks. Pure. The summing loop is
//! `tun_rs::checksum_no_fold` (SIMD where the CPU has it); this module adds
//! the IPv4 pseudo-header and the rules about where checksums live.

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
/// Offset of the checksum field in a TCP / UDP header.
pub const TCP_CSUM_OFFSET: usize = 16;
pub const UDP_CSUM_OFFSET: usize = 6;

/// The 64-bit running sum of `bytes` (big-endian 16-bit words; an odd last
/// byte is the high half of a word), added to `initial`. Pieces may be
/// summed separately and added as long as every piece but the last has an
/// even length.
pub fn sum(bytes: &[u8], initial: u64) -> u64 {
    tun_rs::checksum_no_fold(bytes, initial)
}

/// Folds a running sum to 16 bits (not complemented).
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum >> 16) + (sum & 0xffff);
    }
    sum as u16
}

/// The IPv4 pseudo-header's sum: addresses, protocol, L4 length.
pub fn pseudo_v4(src: &[u8], dst: &[u8], proto: u8, l4_len: u16) -> u64 {
    let s = sum(src, 0);
    let s = sum(dst, s);
    let len = l4_len.to_be_bytes();
    sum(&[0, proto, len[0], len[1]], s)
}

/// The checksum field for data whose running sum (pseudo-header included,
/// field zeroed) is `sum`.
pub fn finish(sum: u64) -> u16 {
    !fold(sum)
}

/// Same value in one's complement (0x0000 and 0xffff are both zero).
fn ones_eq(a: u16, b: u16) -> bool {
    a == b || (a | b == 0xffff && (a == 0 || b == 0))
}

/// Where the L4 checksum of an IPv4 packet lives, if it has one we check:
/// (IHL, protocol, offset of the field). Fragments and other protocols
/// have none.
pub fn l4_checksum_at(pkt: &[u8]) -> Option<(usize, u8, usize)> {
    let ihl = usize::from(*pkt.first()? & 0x0f) * 4;
    if ihl < 20 || pkt.len() < ihl {
        return None;
    }
    // MF set or a fragment offset: the L4 header is not (all) here.
    if u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0 {
        return None;
    }
    let (proto, off) = match pkt[9] {
        PROTO_TCP => (PROTO_TCP, TCP_CSUM_OFFSET),
        PROTO_UDP => (PROTO_UDP, UDP_CSUM_OFFSET),
        _ => return None,
    };
    let min_l4 = if proto == PROTO_TCP { 20 } else { 8 };
    if pkt.len() < ihl + min_l4 {
        return None;
    }
    Some((ihl, proto, ihl + off))
}

/// The state of an IPv4 packet's TCP/UDP checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Csum {
    /// Correct, or absent (UDP checksum 0), or not TCP/UDP at all.
    Valid,
    /// Left unfinished by a sender that offloaded it (CHECKSUM_PARTIAL): the
    /// field holds only the pseudo-header's sum. Linux does this when it
    /// sends through a veth, whose "hardware" never finishes it.
    Partial,
    /// Wrong: corrupted on the way.
    Invalid,
}

/// Checks the TCP/UDP checksum of `pkt` (an IPv4 packet trimmed to its
/// total length).
pub fn check_l4(pkt: &[u8]) -> L4Csum {
    let Some((ihl, proto, at)) = l4_checksum_at(pkt) else {
        return L4Csum::Valid;
    };
    let field = u16::from_be_bytes([pkt[at], pkt[at + 1]]);
    if proto == PROTO_UDP && field == 0 {
        return L4Csum::Valid;
    }
    let Ok(l4_len) = u16::try_from(pkt.len() - ihl) else {
        return L4Csum::Invalid;
    };
    let pseudo = pseudo_v4(&pkt[12..16], &pkt[16..20], proto, l4_len);
    if fold(sum(&pkt[ihl..], pseudo)) == 0xffff {
        L4Csum::Valid
    } else if ones_eq(field, fold(pseudo)) {
        L4Csum::Partial
    } else {
        L4Csum::Invalid
    }
}

/// Cheap pre-check for `check_l4`: false when the field cannot be a
/// partial checksum (it differs from the pseudo-header's sum), so the
/// payload need not be read to rule that out.
pub fn may_be_partial(pkt: &[u8]) -> bool {
    let Some((ihl, proto, at)) = l4_checksum_at(pkt) else {
        return false;
    };
    let field = u16::from_be_bytes([pkt[at], pkt[at + 1]]);
    let Ok(l4_len) = u16::try_from(pkt.len() - ihl) else {
        return false;
    };
    ones_eq(
        field,
        fold(pseudo_v4(&pkt[12..16], &pkt[16..20], proto, l4_len)),
    )
}

/// Finishes a pending (`Partial`) TCP/UDP checksum in place: the field
/// holds the pseudo-header's sum, so summing the L4 bytes as they are and
/// complementing gives the checksum (Linux's `skb_checksum_help`).
pub fn complete_l4(pkt: &mut [u8]) {
    let Some((ihl, proto, at)) = l4_checksum_at(pkt) else {
        return;
    };
    let mut c = finish(sum(&pkt[ihl..], 0));
    if proto == PROTO_UDP && c == 0 {
        // A computed zero goes as 0xffff: zero means "no checksum".
        c = 0xffff;
    }
    pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// Recomputes the IPv4 header checksum of `hdr` (IHL bytes) in place.
pub fn set_ipv4_header(hdr: &mut [u8]) {
    hdr[10] = 0;
    hdr[11] = 0;
    let c = finish(sum(hdr, 0));
    hdr[10..12].copy_from_slice(&c.to_be_bytes());
}

/// True when the IPv4 header checksum of `hdr` (IHL bytes) is correct.
pub fn ipv4_header_ok(hdr: &[u8]) -> bool {
    fold(sum(hdr, 0)) == 0xffff
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An IPv4 TCP packet 10.244.1.2:40000 -> 10.244.2.3:5201 with correct
    /// checksums (`payload` bytes of a counting pattern).
    pub(crate) fn tcp_packet(payload: usize, seq: u32, flags: u8) -> Vec<u8> {
        let total = 20 + 20 + payload;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = PROTO_TCP;
        p[12..16].copy_from_slice(&[10, 244, 1, 2]);
        p[16..20].copy_from_slice(&[10, 244, 2, 3]);
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&5201u16.to_be_bytes());
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        p[28..32].copy_from_slice(&7u32.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = flags;
        p[34..36].copy_from_slice(&502u16.to_be_bytes());
        for (i, b) in p[40..].iter_mut().enumerate() {
            *b = (seq as usize + i) as u8;
        }
        fix_tcp(&mut p);
        p
    }

    /// Sets correct IPv4 and TCP checksums.
    pub(crate) fn fix_tcp(p: &mut [u8]) {
        let ihl = usize::from(p[0] & 0x0f) * 4;
        set_ipv4_header(&mut p[..ihl]);
        p[ihl + 16] = 0;
        p[ihl + 17] = 0;
        let pseudo = pseudo_v4(&p[12..16], &p[16..20], PROTO_TCP, (p.len() - ihl) as u16);
        let c = finish(sum(&p[ihl..], pseudo));
        p[ihl + 16..ihl + 18].copy_from_slice(&c.to_be_bytes());
    }

    /// Turns the TCP checksum into what an offloading sender leaves.
    pub(crate) fn make_partial(p: &mut [u8]) {
        let pseudo = pseudo_v4(&p[12..16], &p[16..20], PROTO_TCP, (p.len() - 20) as u16);
        p[36..38].copy_from_slice(&fold(pseudo).to_be_bytes());
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data, 0)), 0xddf2);
        // An odd length pads with a zero byte.
        assert_eq!(fold(sum(&[0xab], 0)), 0xab00);
    }

    #[test]
    fn pieces_add_up_when_all_but_the_last_are_even() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1001).collect();
        let whole = fold(sum(&data, 0));
        let parts = sum(&data[600..], sum(&data[40..600], sum(&data[..40], 0)));
        assert_eq!(fold(parts), whole);
    }

    #[test]
    fn tcp_checksum_states() {
        let mut p = tcp_packet(1000, 1, 0x10);
        assert!(ipv4_header_ok(&p[..20]));
        assert_eq!(check_l4(&p), L4Csum::Valid);
        assert!(!may_be_partial(&p));
        make_partial(&mut p);
        assert!(may_be_partial(&p));
        assert_eq!(check_l4(&p), L4Csum::Partial);
        p[100] ^= 0x55;
        assert_eq!(
            check_l4(&p),
            L4Csum::Partial,
            "partial says nothing of data"
        );
        let mut q = tcp_packet(1000, 1, 0x10);
        q[500] ^= 1;
        assert_eq!(check_l4(&q), L4Csum::Invalid);
    }

    #[test]
    fn completing_a_partial_checksum_gives_the_real_one() {
        let good = tcp_packet(777, 3, 0x18);
        let mut p = good.clone();
        make_partial(&mut p);
        assert_ne!(p, good);
        complete_l4(&mut p);
        assert_eq!(p, good);
    }

    #[test]
    fn udp_zero_checksum_and_non_l4_are_valid() {
        let mut p = tcp_packet(30, 1, 0x10);
        p[9] = PROTO_UDP;
        p[26] = 0;
        p[27] = 0;
        assert_eq!(check_l4(&p), L4Csum::Valid);
        p[9] = 1; // ICMP: not ours to check
        assert_eq!(check_l4(&p), L4Csum::Valid);
        // A fragment carries no (whole) L4 header.
        let mut f = tcp_packet(30, 1, 0x10);
        f[6] = 0x20;
        f[40] ^= 0xff;
        assert_eq!(l4_checksum_at(&f), None);
        assert_eq!(check_l4(&f), L4Csum::Valid);
    }

    #[test]
    fn short_or_odd_packets_never_panic() {
        for len in 0..48 {
            let p = tcp_packet(8, 1, 0x10);
            let cut = &p[..len.min(p.len())];
            let _ = check_l4(cut);
            let _ = may_be_partial(cut);
        }
        assert_eq!(l4_checksum_at(&[0x41; 30]), None, "IHL < 5");
    }
}
