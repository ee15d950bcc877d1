//! The whole receive path on hostile datagrams: each one decoded (VXLAN or
//! Geneve), oversized TCP super-packets admitted as the engine admits
//! them, then the writes planned. Never a panic; every admitted packet is
//! written exactly once, in order; no write exceeds an IPv4 packet.
//! Input: 2 parameter bytes, then datagrams, each prefixed by a 2-byte
//! length.
#![no_main]

use flanneld::backend::Encap;
use flanneld::reconcile::Mac;
use flanneld::userspace::frame::{Drop, Framer};
use flanneld::userspace::{gro, vnet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((params, mut rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let framer = Framer {
        encap: if params[0] & 1 == 0 {
            Encap::Vxlan
        } else {
            Encap::Geneve
        },
        vni: u32::from(params[0] >> 5),
        our_mac: Mac([0x02, 0, 0, 0, 0, params[1] & 0x01]),
    };
    let mtu = 68 + usize::from(params[1]) * 4;
    let mut pkts: Vec<&[u8]> = Vec::new();
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let n = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        let (dgram, next) = tail.split_at(n);
        rest = next;
        match framer.decode(dgram, mtu) {
            Ok(inner) => pkts.push(inner),
            Err(Drop::Oversized) => {
                if let Ok(inner) = framer.decode(dgram, 65_535) {
                    if gro::tcp_super(inner) {
                        pkts.push(inner);
                    }
                }
            }
            Err(_) => {}
        }
    }
    let (mut arena, mut writes) = (Vec::new(), Vec::new());
    gro::plan(&pkts, mtu, &mut arena, &mut writes);
    let mut next = 0;
    for w in &writes {
        assert_eq!(w.first, next);
        assert!(w.count >= 1 && w.hdr.end <= arena.len());
        next += w.count;
        let body: usize = pkts[w.first..w.first + w.count]
            .iter()
            .map(|p| p.len() - w.skip)
            .sum();
        let total = w.hdr.len() - vnet::LEN + body;
        assert!(total <= 65_535, "write of {total} bytes");
        assert!(vnet::VnetHdr::parse(&arena[w.hdr.clone()]).is_some());
    }
    assert_eq!(next, pkts.len());
});
