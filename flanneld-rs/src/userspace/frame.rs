//! VXLAN (RFC 7348) and Geneve (RFC 8926) framing of IPv4 packets with an
//! inner Ethernet header: encode for the wire, validate and strip on
//! receipt. Pure: no I/O, every rejection is a `Drop` reason the engine
//! counts.

use crate::model::{Encap, Mac};

/// Inner Ethernet header: dst MAC, src MAC, EtherType.
pub const ETH_LEN: usize = 14;
/// VXLAN header, and the fixed part of a Geneve header (both 8 bytes).
pub const TUNNEL_LEN: usize = 8;
/// What we put in front of an inner IPv4 packet (we send no Geneve options).
pub const ENCAP_LEN: usize = TUNNEL_LEN + ETH_LEN;
// The MTU rule (`model::Underlay::overhead`) counts the same bytes.
const _: () = assert!(ENCAP_LEN == crate::model::ENCAP_HEADER_LEN as usize);

const ETHERTYPE_IPV4: u16 = 0x0800;
/// Geneve protocol type "Transparent Ethernet Bridging".
pub const GENEVE_PROTO_ETHERNET: u16 = 0x6558;
/// VXLAN flags byte with only the I (valid VNI) bit.
const VXLAN_FLAG_I: u8 = 0x08;
const GENEVE_FLAG_OAM: u8 = 0x80;
const GENEVE_FLAG_CRITICAL: u8 = 0x40;

/// Why a packet was dropped. The metric label is `label()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Drop {
    #[error("shorter than its headers say")]
    Truncated,
    #[error("VXLAN flags are not 0x08 (I bit only)")]
    BadFlags,
    #[error("Geneve version is not 0")]
    BadVersion,
    #[error("VNI is not this network's")]
    WrongVni,
    #[error("Geneve critical options present (none are understood)")]
    GeneveCritical,
    #[error("Geneve OAM packet (not data)")]
    GeneveOam,
    #[error("Geneve protocol type is not 0x6558 (Ethernet)")]
    UnknownProtocol,
    #[error("inner frame is not IPv4 (ARP, IPv6, VLAN...)")]
    NotIpv4,
    #[error("inner frame is not addressed to our VTEP MAC")]
    NotForUs,
    #[error("inner IPv4 header is invalid")]
    BadIpv4,
    #[error("inner packet is larger than the TUN MTU")]
    Oversized,
    #[error("no peer owns the destination address")]
    NoPeer,
    #[error("writing to the TUN device failed")]
    TunWrite,
    #[error("sending on the UDP socket failed")]
    UdpSend,
}

impl Drop {
    pub const ALL: [Drop; 14] = [
        Drop::Truncated,
        Drop::BadFlags,
        Drop::BadVersion,
        Drop::WrongVni,
        Drop::GeneveCritical,
        Drop::GeneveOam,
        Drop::UnknownProtocol,
        Drop::NotIpv4,
        Drop::NotForUs,
        Drop::BadIpv4,
        Drop::Oversized,
        Drop::NoPeer,
        Drop::TunWrite,
        Drop::UdpSend,
    ];

    /// The `reason` label in /metrics.
    pub fn label(self) -> &'static str {
        match self {
            Drop::Truncated => "truncated",
            Drop::BadFlags => "bad_flags",
            Drop::BadVersion => "bad_version",
            Drop::WrongVni => "wrong_vni",
            Drop::GeneveCritical => "geneve_critical",
            Drop::GeneveOam => "geneve_oam",
            Drop::UnknownProtocol => "unknown_protocol",
            Drop::NotIpv4 => "not_ipv4",
            Drop::NotForUs => "not_for_us",
            Drop::BadIpv4 => "bad_ipv4",
            Drop::Oversized => "oversized",
            Drop::NoPeer => "no_peer",
            Drop::TunWrite => "tun_write",
            Drop::UdpSend => "udp_send",
        }
    }

    /// Index into counter arrays (position in `ALL`).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The fixed part of every header we send: encapsulation, VNI, our MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framer {
    pub encap: Encap,
    pub vni: u32,
    pub our_mac: Mac,
}

impl Framer {
    /// The `ENCAP_LEN` bytes put in front of an IPv4 packet for `dst_mac`.
    pub fn header(&self, dst_mac: Mac) -> [u8; ENCAP_LEN] {
        let mut h = [0u8; ENCAP_LEN];
        let vni = (self.vni & 0x00ff_ffff) << 8;
        match self.encap {
            Encap::Vxlan => {
                h[0] = VXLAN_FLAG_I;
            }
            Encap::Geneve => {
                // Version 0, no options, no O/C bits.
                h[2..4].copy_from_slice(&GENEVE_PROTO_ETHERNET.to_be_bytes());
            }
        }
        h[4..8].copy_from_slice(&vni.to_be_bytes());
        h[8..14].copy_from_slice(&dst_mac.0);
        h[14..20].copy_from_slice(&self.our_mac.0);
        h[20..22].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        h
    }

    /// Appends one encapsulated packet (UDP payload) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>, dst_mac: Mac, inner: &[u8]) {
        out.extend_from_slice(&self.header(dst_mac));
        out.extend_from_slice(inner);
    }

    /// Validates one UDP payload and returns the inner IPv4 packet (trimmed
    /// to its total length: Ethernet may pad short frames). `max_inner` is
    /// the TUN MTU.
    pub fn decode<'a>(&self, pkt: &'a [u8], max_inner: usize) -> Result<&'a [u8], Drop> {
        let tunnel = pkt.get(..TUNNEL_LEN).ok_or(Drop::Truncated)?;
        let vni = u32::from_be_bytes([0, tunnel[4], tunnel[5], tunnel[6]]);
        let eth_start = match self.encap {
            Encap::Vxlan => {
                // RFC 7348: the other flag bits and reserved bytes are
                // ignored on receipt, but Linux drops frames with unknown
                // flags (GBP, GPE): a non-Ethernet payload would follow.
                if tunnel[0] != VXLAN_FLAG_I {
                    return Err(Drop::BadFlags);
                }
                TUNNEL_LEN
            }
            Encap::Geneve => {
                if tunnel[0] >> 6 != 0 {
                    return Err(Drop::BadVersion);
                }
                let opt_len = usize::from(tunnel[0] & 0x3f) * 4;
                if tunnel[1] & GENEVE_FLAG_OAM != 0 {
                    return Err(Drop::GeneveOam);
                }
                // We understand no option, so a critical one means drop
                // (RFC 8926 section 3.5); others are skipped by length.
                if tunnel[1] & GENEVE_FLAG_CRITICAL != 0 {
                    return Err(Drop::GeneveCritical);
                }
                if u16::from_be_bytes([tunnel[2], tunnel[3]]) != GENEVE_PROTO_ETHERNET {
                    return Err(Drop::UnknownProtocol);
                }
                TUNNEL_LEN + opt_len
            }
        };
        if vni != self.vni {
            return Err(Drop::WrongVni);
        }
        let frame = pkt.get(eth_start..).ok_or(Drop::Truncated)?;
        let eth = frame.get(..ETH_LEN).ok_or(Drop::Truncated)?;
        if u16::from_be_bytes([eth[12], eth[13]]) != ETHERTYPE_IPV4 {
            return Err(Drop::NotIpv4);
        }
        // Peers address our VTEP MAC (their neighbour entry for our .0);
        // IPv4 needs no broadcast on a routed overlay.
        if eth[0..6] != self.our_mac.0 {
            return Err(Drop::NotForUs);
        }
        ipv4_packet(&frame[ETH_LEN..], max_inner)
    }
}

/// The IPv4 packet at the start of `data`, trimmed to its total length.
pub fn ipv4_packet(data: &[u8], max_len: usize) -> Result<&[u8], Drop> {
    let first = *data.first().ok_or(Drop::Truncated)?;
    if first >> 4 != 4 {
        return Err(Drop::NotIpv4);
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 {
        return Err(Drop::BadIpv4);
    }
    if data.len() < 20 {
        return Err(Drop::Truncated);
    }
    let total = usize::from(u16::from_be_bytes([data[2], data[3]]));
    if total < ihl {
        return Err(Drop::BadIpv4);
    }
    if total > max_len {
        return Err(Drop::Oversized);
    }
    data.get(..total).ok_or(Drop::Truncated)
}

/// The destination address of an IPv4 packet read from the TUN device.
pub fn ipv4_destination(pkt: &[u8]) -> Result<std::net::Ipv4Addr, Drop> {
    let first = *pkt.first().ok_or(Drop::Truncated)?;
    if first >> 4 != 4 {
        return Err(Drop::NotIpv4);
    }
    let d = pkt.get(16..20).ok_or(Drop::Truncated)?;
    Ok(std::net::Ipv4Addr::new(d[0], d[1], d[2], d[3]))
}

/// A hash of an inner IPv4 packet's flow, for the outer UDP source port:
/// addresses and protocol, plus the ports of an unfragmented TCP, UDP or
/// SCTP packet (a fragment has none, so every fragment of a datagram
/// hashes alike). RFC 7348 section 5 and RFC 8926 section 3.3 ask for this
/// entropy so that the receiver's RSS and SO_REUSEPORT spread flows;
/// kernel VXLAN and Geneve do the same. Short packets hash what they have.
pub fn flow_hash(pkt: &[u8]) -> u32 {
    // FNV-1a: a few bytes per packet, no need for a keyed hash (the port
    // only steers load; it carries no trust).
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    };
    eat(pkt.get(9..10).unwrap_or(&[]));
    eat(pkt.get(12..20).unwrap_or(&[]));
    let ihl = usize::from(pkt.first().map_or(0, |b| b & 0x0f)) * 4;
    let fragment = pkt
        .get(6..8)
        .is_none_or(|f| u16::from_be_bytes([f[0], f[1]]) & 0x3fff != 0);
    let ported = matches!(pkt.get(9), Some(6 | 17 | 132));
    if ihl >= 20 && ported && !fragment {
        eat(pkt.get(ihl..ihl + 4).unwrap_or(&[]));
    }
    // Fold the high bits down: callers take it modulo a small number.
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OURS: Mac = Mac([0x02, 0, 0, 0, 0, 0x01]);
    const THEIRS: Mac = Mac([0x02, 0, 0, 0, 0, 0x02]);

    fn framer(encap: Encap) -> Framer {
        Framer {
            encap,
            vni: 0x0a0b0c,
            our_mac: OURS,
        }
    }

    /// A minimal IPv4 header (20 bytes) plus `payload` bytes.
    fn ipv4(payload: usize) -> Vec<u8> {
        let total = 20 + payload;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 1;
        p[12..16].copy_from_slice(&[10, 244, 1, 2]);
        p[16..20].copy_from_slice(&[10, 244, 2, 3]);
        p
    }

    /// A frame as a peer sends it to us.
    fn to_us(encap: Encap, inner: &[u8]) -> Vec<u8> {
        let peer = Framer {
            our_mac: THEIRS,
            ..framer(encap)
        };
        let mut out = Vec::new();
        peer.encode_into(&mut out, OURS, inner);
        out
    }

    #[test]
    fn vxlan_header_bytes_follow_rfc7348() {
        let h = framer(Encap::Vxlan).header(THEIRS);
        assert_eq!(&h[..8], &[0x08, 0, 0, 0, 0x0a, 0x0b, 0x0c, 0]);
        assert_eq!(&h[8..14], &THEIRS.0);
        assert_eq!(&h[14..20], &OURS.0);
        assert_eq!(&h[20..22], &[0x08, 0x00]);
    }

    #[test]
    fn geneve_header_bytes_follow_rfc8926() {
        let h = framer(Encap::Geneve).header(THEIRS);
        // ver 0, opt len 0, O=C=0, protocol 0x6558, VNI, reserved.
        assert_eq!(&h[..8], &[0, 0, 0x65, 0x58, 0x0a, 0x0b, 0x0c, 0]);
    }

    #[test]
    fn round_trip_both_encaps() {
        for encap in [Encap::Vxlan, Encap::Geneve] {
            let inner = ipv4(100);
            let wire = to_us(encap, &inner);
            assert_eq!(wire.len(), ENCAP_LEN + inner.len());
            assert_eq!(framer(encap).decode(&wire, 1450), Ok(&inner[..]));
        }
    }

    #[test]
    fn ethernet_padding_is_trimmed() {
        let inner = ipv4(8);
        let mut wire = to_us(Encap::Vxlan, &inner);
        wire.extend_from_slice(&[0; 18]);
        assert_eq!(framer(Encap::Vxlan).decode(&wire, 1450), Ok(&inner[..]));
    }

    #[test]
    fn geneve_non_critical_options_are_skipped() {
        let inner = ipv4(10);
        let mut wire = to_us(Encap::Geneve, &inner);
        // Two words of options (class, type, len): opt len = 2.
        wire[0] = 2;
        let opts = [0x01, 0x02, 0x03, 0x01, 0xde, 0xad, 0xbe, 0xef];
        wire.splice(8..8, opts);
        assert_eq!(framer(Encap::Geneve).decode(&wire, 1450), Ok(&inner[..]));
    }

    #[test]
    fn every_rejection_has_its_reason() {
        let inner = ipv4(40);
        let vx = framer(Encap::Vxlan);
        let gn = framer(Encap::Geneve);
        let good_vx = to_us(Encap::Vxlan, &inner);
        let good_gn = to_us(Encap::Geneve, &inner);
        let with = |base: &[u8], f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = base.to_vec();
            f(&mut v);
            v
        };
        let cases: Vec<(&Framer, Vec<u8>, Drop)> = vec![
            (&vx, good_vx[..7].to_vec(), Drop::Truncated),
            (&vx, good_vx[..20].to_vec(), Drop::Truncated),
            (&vx, good_vx[..30].to_vec(), Drop::Truncated),
            (&vx, with(&good_vx, &|v| v[0] = 0x88), Drop::BadFlags),
            (&vx, with(&good_vx, &|v| v[0] = 0), Drop::BadFlags),
            (&vx, with(&good_vx, &|v| v[6] = 0xff), Drop::WrongVni),
            (&gn, with(&good_gn, &|v| v[6] = 0xff), Drop::WrongVni),
            (&gn, with(&good_gn, &|v| v[0] = 0x40), Drop::BadVersion),
            (&gn, with(&good_gn, &|v| v[1] = 0x40), Drop::GeneveCritical),
            (&gn, with(&good_gn, &|v| v[1] = 0x80), Drop::GeneveOam),
            (&gn, with(&good_gn, &|v| v[3] = 0x00), Drop::UnknownProtocol),
            (&gn, with(&good_gn, &|v| v[0] = 0x3f), Drop::Truncated),
            (&vx, with(&good_vx, &|v| v[20] = 0x86), Drop::NotIpv4),
            (&vx, with(&good_vx, &|v| v[21] = 0x06), Drop::NotIpv4),
            (&vx, with(&good_vx, &|v| v[8] = 0xff), Drop::NotForUs),
            (&vx, with(&good_vx, &|v| v[22] = 0x65), Drop::NotIpv4),
            (&vx, with(&good_vx, &|v| v[22] = 0x44), Drop::BadIpv4),
            (&vx, with(&good_vx, &|v| v[25] = 10), Drop::BadIpv4),
            (&vx, with(&good_vx, &|v| v[25] = 200), Drop::Truncated),
        ];
        for (i, (f, wire, want)) in cases.iter().enumerate() {
            assert_eq!(f.decode(wire, 1450), Err(*want), "case {i}");
        }
        assert_eq!(vx.decode(&good_vx, 59), Err(Drop::Oversized));
        assert_eq!(vx.decode(&good_vx, 60), Ok(&inner[..]));
    }

    #[test]
    fn vxlan_frames_are_not_geneve_frames() {
        let inner = ipv4(40);
        let vx_wire = to_us(Encap::Vxlan, &inner);
        // Byte 0 = 0x08: Geneve opt len 2 words, protocol 0 -> rejected.
        assert!(framer(Encap::Geneve).decode(&vx_wire, 1450).is_err());
    }

    #[test]
    fn destination_of_tun_packets() {
        assert_eq!(
            ipv4_destination(&ipv4(0)),
            Ok(std::net::Ipv4Addr::new(10, 244, 2, 3))
        );
        assert_eq!(ipv4_destination(&[0x60; 40]), Err(Drop::NotIpv4));
        assert_eq!(ipv4_destination(&[0x45; 10]), Err(Drop::Truncated));
        assert_eq!(ipv4_destination(&[]), Err(Drop::Truncated));
    }

    #[test]
    fn labels_are_unique_and_indexed() {
        let mut labels: Vec<_> = Drop::ALL.iter().map(|d| d.label()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), Drop::ALL.len());
        for (i, d) in Drop::ALL.iter().enumerate() {
            assert_eq!(d.index(), i);
        }
    }

    /// An IPv4 TCP/UDP header pair: `proto`, ports, and the fragment field.
    fn flow(proto: u8, sport: u16, dport: u16, frag: u16) -> Vec<u8> {
        let mut p = ipv4(20);
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        p[9] = proto;
        p[12..16].copy_from_slice(&[10, 244, 1, 2]);
        p[16..20].copy_from_slice(&[10, 244, 2, 3]);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p
    }

    #[test]
    fn flow_hash_follows_the_flow_and_spreads_flows() {
        // One flow, one hash, whatever the payload.
        let mut a = flow(6, 40000, 80, 0x4000);
        let before = flow_hash(&a);
        a[30] ^= 0xff;
        assert_eq!(flow_hash(&a), before);
        // Ports count for TCP and UDP, and are read only there.
        assert_ne!(
            flow_hash(&flow(6, 40000, 80, 0)),
            flow_hash(&flow(6, 40001, 80, 0))
        );
        assert_ne!(
            flow_hash(&flow(17, 40000, 80, 0)),
            flow_hash(&flow(17, 40000, 81, 0))
        );
        assert_eq!(flow_hash(&flow(1, 1, 2, 0)), flow_hash(&flow(1, 3, 4, 0)));
        // Fragments (first: MF set; later: an offset) ignore the ports, so
        // a datagram's pieces take one source port.
        assert_eq!(
            flow_hash(&flow(17, 1, 2, 0x2000)),
            flow_hash(&flow(17, 3, 4, 0x0010))
        );
        // 64 connections from one client spread over 8 source ports.
        let mut hit = [0u32; 8];
        for sport in 40000..40064u16 {
            hit[flow_hash(&flow(6, sport, 443, 0x4000)) as usize % 8] += 1;
        }
        assert!(hit.iter().all(|&n| (2..=16).contains(&n)), "{hit:?}");
        // Short input hashes what it has.
        let _ = flow_hash(&[]);
        let _ = flow_hash(&[0x4f; 12]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Arbitrary bytes never panic, and whatever is accepted lies
        /// inside the input and within the MTU.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200),
                               geneve in any::<bool>(), mtu in 0usize..300) {
            let f = framer(if geneve { Encap::Geneve } else { Encap::Vxlan });
            if let Ok(inner) = f.decode(&bytes, mtu) {
                prop_assert!(inner.len() <= mtu && inner.len() >= 20);
                prop_assert!(inner.len() <= bytes.len());
            }
            let _ = ipv4_destination(&bytes);
            let _ = flow_hash(&bytes);
        }

        /// Mutating a valid frame anywhere never panics either (reaches
        /// deeper paths than random bytes).
        #[test]
        fn mutated_frames_never_panic(pos in 0usize..90, val in any::<u8>(),
                                      cut in 0usize..90, geneve in any::<bool>()) {
            let encap = if geneve { Encap::Geneve } else { Encap::Vxlan };
            let mut wire = to_us(encap, &ipv4(60));
            let p = pos % wire.len();
            wire[p] = val;
            wire.truncate(wire.len() - cut.min(wire.len()));
            let _ = framer(encap).decode(&wire, 1450);
        }

        /// Every inner packet survives encode + decode unchanged.
        #[test]
        fn round_trip(payload in 0usize..1400, vni in 0u32..(1 << 24), geneve in any::<bool>()) {
            let encap = if geneve { Encap::Geneve } else { Encap::Vxlan };
            let us = Framer { encap, vni, our_mac: OURS };
            let peer = Framer { encap, vni, our_mac: THEIRS };
            let inner = ipv4(payload);
            let mut wire = Vec::new();
            peer.encode_into(&mut wire, OURS, &inner);
            prop_assert_eq!(us.decode(&wire, 1450), Ok(&inner[..]));
        }
    }
}
