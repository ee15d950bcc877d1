//! The virtio-net header (`struct virtio_net_hdr`, 10 bytes) that a TUN
//! device with IFF_VNET_HDR puts before every packet it hands us and
//! expects before every packet we write: segmentation (GSO) and checksum
//! offload instructions. Pure.
//!
//! The TUN driver reads and writes its 16-bit fields in the CPU's byte
//! order unless TUNSETVNETLE/BE was called (we call neither), so native
//! order is the right one here on little- and big-endian hosts alike.

pub const LEN: usize = 10;

pub const F_NEEDS_CSUM: u8 = 1;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
/// Flag bit of `gso_type`: the TCP super-packet has CWR set (ECN).
pub const GSO_ECN: u8 = 0x80;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    /// Length of the headers (IP + L4) in a GSO packet.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// With `F_NEEDS_CSUM`: sum from here to the end, store the result at
    /// `csum_start + csum_offset`.
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// `None` if `b` is shorter than the header.
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b: &[u8; LEN] = b.get(..LEN)?.try_into().ok()?;
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4 | GSO_ECN,
            hdr_len: 52,
            gso_size: 1398,
            csum_start: 20,
            csum_offset: 16,
        };
        let b = h.encode();
        assert_eq!(b[0], 1);
        assert_eq!(b[1], 0x81);
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), 1398);
        assert_eq!(VnetHdr::parse(&b), Some(h));
        assert_eq!(VnetHdr::parse(&b[..9]), None);
        assert_eq!(VnetHdr::parse(&[0; LEN]), Some(VnetHdr::default()));
    }
}
