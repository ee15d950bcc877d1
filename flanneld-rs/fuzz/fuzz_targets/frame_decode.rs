//! Any UDP payload given to the userspace datapath's decoder (VXLAN or
//! Geneve, any VNI, any TUN MTU) is accepted or dropped with a reason,
//! never a panic; what is accepted is an IPv4 packet inside the input and
//! within the MTU. The first bytes pick the parameters.
#![no_main]

use flanneld::backend::Encap;
use flanneld::reconcile::Mac;
use flanneld::userspace::frame::{ipv4_destination, Framer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((params, pkt)) = data.split_first_chunk::<4>() else {
        return;
    };
    let encap = if params[0] & 1 == 0 {
        Encap::Vxlan
    } else {
        Encap::Geneve
    };
    let framer = Framer {
        encap,
        // Small VNIs so that matching ones are found often.
        vni: u32::from(params[1] & 0x07),
        our_mac: Mac([0x02, 0, 0, 0, 0, params[2] & 0x03]),
    };
    let mtu = usize::from(u16::from_be_bytes([params[2], params[3]]));
    if let Ok(inner) = framer.decode(pkt, mtu) {
        assert!(inner.len() >= 20 && inner.len() <= mtu && inner.len() <= pkt.len());
        assert_eq!(inner[0] >> 4, 4);
        assert!(ipv4_destination(inner).is_ok());
    }
    let _ = ipv4_destination(pkt);
});
