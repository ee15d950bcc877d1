//! The overlay MTU rule every backend uses: what a pod may send so that,
//! once encapsulated, the packet still fits the underlay MTU; checked, so
//! a wrong underlay or `Backend.MTU` is one clear error at start-up
//! instead of a device that drops traffic.

/// The smallest MTU an IPv4 host must accept (RFC 791); below it the
/// overlay is useless and the configuration is wrong.
pub const MIN_OVERLAY_MTU: u32 = 576;
/// The largest an IPv4 packet can be (and a TUN device's MTU field).
pub const MAX_OVERLAY_MTU: u32 = 65535;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MtuError {
    #[error(
        "underlay MTU {underlay} minus {overhead} bytes of encapsulation leaves {left}, below the minimum {MIN_OVERLAY_MTU}: \
         raise the interface's MTU or pick another interface with --iface"
    )]
    TooSmall {
        underlay: u32,
        overhead: u32,
        left: i64,
    },
    #[error(
        "Backend.MTU {0} is outside {MIN_OVERLAY_MTU}..={MAX_OVERLAY_MTU}: set it in that range in net-conf.json, or leave it out to follow the underlay"
    )]
    Configured(u32),
}

/// Underlay MTU minus the overhead, checked.
pub fn overlay_mtu(underlay: u32, overhead: u32) -> Result<u32, MtuError> {
    let left = i64::from(underlay) - i64::from(overhead);
    if left < i64::from(MIN_OVERLAY_MTU) {
        return Err(MtuError::TooSmall {
            underlay,
            overhead,
            left,
        });
    }
    // Above 65535 only with a jumbo underlay no IPv4 packet can fill.
    Ok(u32::try_from(left).unwrap_or(underlay).min(MAX_OVERLAY_MTU))
}

/// The overlay MTU of a backend: `Backend.MTU` when set (checked against
/// the range), else the underlay's minus `overhead`.
pub fn backend_mtu(configured: Option<u32>, underlay: u32, overhead: u32) -> Result<u32, MtuError> {
    match configured {
        Some(mtu) if (MIN_OVERLAY_MTU..=MAX_OVERLAY_MTU).contains(&mtu) => Ok(mtu),
        Some(mtu) => Err(MtuError::Configured(mtu)),
        None => overlay_mtu(underlay, overhead),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Underlay;

    #[test]
    fn common_underlays() {
        assert_eq!(overlay_mtu(1500, Underlay::Ipv4.overhead()), Ok(1450));
        assert_eq!(overlay_mtu(9001, Underlay::Ipv4.overhead()), Ok(8951));
        assert_eq!(overlay_mtu(1500, Underlay::Ipv6.overhead()), Ok(1430));
        assert_eq!(overlay_mtu(1500, 0), Ok(1500));
        assert_eq!(overlay_mtu(70000, 50), Ok(65535));
    }

    #[test]
    fn too_small_is_an_error_that_says_what_to_do() {
        let e = overlay_mtu(600, 50).unwrap_err();
        assert!(matches!(e, MtuError::TooSmall { left: 550, .. }));
        assert!(e.to_string().contains("--iface"));
        assert!(overlay_mtu(10, 50).is_err());
        assert_eq!(overlay_mtu(626, 50), Ok(576));
    }

    #[test]
    fn a_configured_mtu_wins_within_the_range() {
        assert_eq!(backend_mtu(Some(1400), 9001, 50), Ok(1400));
        assert_eq!(backend_mtu(None, 9001, 50), Ok(8951));
        let e = backend_mtu(Some(500), 9001, 50).unwrap_err();
        assert_eq!(e, MtuError::Configured(500));
        assert!(e.to_string().contains("Backend.MTU 500"), "{e}");
        assert!(backend_mtu(Some(70000), 9001, 50).is_err());
    }
}
