//! The transmit path's segmenter on any virtio-net header and packet (what
//! the TUN device hands over comes from the local stack, but a bug there
//! must not take the datapath down): never a panic; every datagram lies
//! inside the packet and the arena; a TCP or UDP super-packet's segments
//! carry its payload in order, once.
#![no_main]

use flanneld::userspace::frame::ENCAP_LEN;
use flanneld::userspace::gso;
use flanneld::userspace::vnet::{self, VnetHdr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(vh) = VnetHdr::parse(data) else {
        return;
    };
    let mut pkt = data[vnet::LEN..].to_vec();
    let (mut arena, mut out) = (Vec::new(), Vec::new());
    let Ok(n) = gso::split(&vh, &mut pkt, &[0xab; ENCAP_LEN], &mut arena, &mut out) else {
        assert!(out.is_empty() && arena.is_empty());
        return;
    };
    assert_eq!(n, out.len());
    let mut at = None;
    for d in &out {
        assert!(d.hdr.end <= arena.len() && d.payload.end <= pkt.len());
        assert!(d.hdr.len() >= ENCAP_LEN);
        if let Some(prev) = at {
            assert_eq!(d.payload.start, prev, "payload cut in order, once");
        }
        at = Some(d.payload.end);
    }
});
