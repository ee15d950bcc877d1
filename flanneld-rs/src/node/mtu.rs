//! Overlay MTU arithmetic: what a pod may send so that, once encapsulated,
//! the packet still fits the underlay MTU.

/// Encapsulation overhead of a backend, in bytes: outer IP + UDP + VXLAN
/// header + inner Ethernet header. VXLAN over IPv4 is 20+8+8+14 = 50; over
/// IPv6 the outer header is 40, so 70 (flannel uses 50 for both, which makes
/// full-size packets over an IPv6 underlay get dropped). host-gw does not
/// encapsulate. `None` for a backend this table does not know.
pub fn encap_overhead(backend_type: &str, ipv6_underlay: bool) -> Option<u32> {
    let outer_ip = if ipv6_underlay { 40 } else { 20 };
    match backend_type {
        "vxlan" => Some(outer_ip + 8 + 8 + 14),
        "host-gw" => Some(0),
        _ => None,
    }
}

/// The smallest MTU an IPv4 host must accept (RFC 791); below it the
/// overlay is useless and the configuration is wrong.
pub const MIN_OVERLAY_MTU: u32 = 576;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "underlay MTU {underlay} minus {overhead} bytes of encapsulation leaves {left}, below the minimum {MIN_OVERLAY_MTU}: \
     raise the interface's MTU or pick another interface with --iface"
)]
pub struct MtuError {
    pub underlay: u32,
    pub overhead: u32,
    pub left: i64,
}

/// Underlay MTU minus the overhead, checked.
pub fn overlay_mtu(underlay: u32, overhead: u32) -> Result<u32, MtuError> {
    let left = i64::from(underlay) - i64::from(overhead);
    if left < i64::from(MIN_OVERLAY_MTU) {
        return Err(MtuError {
            underlay,
            overhead,
            left,
        });
    }
    // left is between 576 and u32::MAX here.
    Ok(u32::try_from(left).unwrap_or(underlay))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vxlan_overhead_depends_on_the_underlay_family() {
        assert_eq!(encap_overhead("vxlan", false), Some(50));
        assert_eq!(encap_overhead("vxlan", true), Some(70));
        assert_eq!(encap_overhead("host-gw", false), Some(0));
        assert_eq!(encap_overhead("udp", false), None);
    }

    #[test]
    fn common_underlays() {
        assert_eq!(overlay_mtu(1500, 50), Ok(1450));
        assert_eq!(overlay_mtu(9001, 50), Ok(8951));
        assert_eq!(overlay_mtu(1500, 70), Ok(1430));
        assert_eq!(overlay_mtu(1500, 0), Ok(1500));
    }

    #[test]
    fn too_small_is_an_error_that_says_what_to_do() {
        let e = overlay_mtu(600, 50).unwrap_err();
        assert_eq!(e.left, 550);
        assert!(e.to_string().contains("--iface"));
        assert!(overlay_mtu(10, 50).is_err());
        assert_eq!(overlay_mtu(626, 50), Ok(576));
    }
}
