//! Flannel's subnet key encoding: `10.5.52.0-24`, and for dual-stack
//! `10.12.13.0-24&fd00:12:13::-56` (IPv4 part first). An IPv6-only lease is
//! keyed by its IPv6 part alone.

use ipnet::{Ipv4Net, Ipv6Net};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("subnet key {0:?} is empty")]
    Empty(String),
    #[error("subnet key {key:?}: {part:?} is not ADDRESS-PREFIXLEN")]
    Malformed { key: String, part: String },
    #[error("subnet key {key:?}: {part:?} is not a network address (host bits set)")]
    HostBits { key: String, part: String },
    #[error("subnet key {0:?} has more than one IPv4 or IPv6 part")]
    Duplicate(String),
}

/// Encodes a lease's subnets as a key.
pub fn encode(v4: Option<Ipv4Net>, v6: Option<Ipv6Net>) -> String {
    let v4 = v4.map(|n| format!("{}-{}", n.network(), n.prefix_len()));
    let v6 = v6.map(|n| format!("{}-{}", n.network(), n.prefix_len()));
    match (v4, v6) {
        (Some(a), Some(b)) => format!("{a}&{b}"),
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => String::new(),
    }
}

/// Decodes a key (the last path segment of an etcd key).
pub fn decode(key: &str) -> Result<(Option<Ipv4Net>, Option<Ipv6Net>), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty(key.to_string()));
    }
    let mut v4 = None;
    let mut v6 = None;
    for part in key.split('&') {
        let malformed = || KeyError::Malformed {
            key: key.to_string(),
            part: part.to_string(),
        };
        let (addr, len) = part.rsplit_once('-').ok_or_else(malformed)?;
        let len: u8 = len.parse().map_err(|_| malformed())?;
        if let Ok(a) = addr.parse::<std::net::Ipv4Addr>() {
            let net = Ipv4Net::new(a, len).map_err(|_| malformed())?;
            if net.network() != a {
                return Err(KeyError::HostBits {
                    key: key.to_string(),
                    part: part.to_string(),
                });
            }
            if v4.replace(net).is_some() {
                return Err(KeyError::Duplicate(key.to_string()));
            }
        } else if let Ok(a) = addr.parse::<std::net::Ipv6Addr>() {
            let net = Ipv6Net::new(a, len).map_err(|_| malformed())?;
            if net.network() != a {
                return Err(KeyError::HostBits {
                    key: key.to_string(),
                    part: part.to_string(),
                });
            }
            if v6.replace(net).is_some() {
                return Err(KeyError::Duplicate(key.to_string()));
            }
        } else {
            return Err(malformed());
        }
    }
    Ok((v4, v6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flannel_examples_round_trip() {
        for k in [
            "10.5.52.0-24",
            "10.12.13.0-24&fd00:12:13::-56",
            "fd00:12:13::-56",
        ] {
            let (a, b) = decode(k).unwrap();
            assert_eq!(encode(a, b), k);
        }
    }

    #[test]
    fn rejects_garbage() {
        for k in [
            "",
            "10.5.52.0",
            "10.5.52.0-33",
            "10.5.52.1-24",
            "x-24",
            "10.5.52.0-24&10.5.53.0-24",
        ] {
            assert!(decode(k).is_err(), "{k}");
        }
    }

    #[test]
    fn flannel_etcd_key_from_the_docs() {
        // Documentation/reservations.md: /coreos.com/network/subnets/10.5.52.0-24
        let (v4, v6) = decode("10.5.52.0-24").unwrap();
        assert_eq!(v4, Some("10.5.52.0/24".parse().unwrap()));
        assert_eq!(v6, None);
        // IPv6 keys use the compressed lower-case form Go prints.
        assert_eq!(
            encode(
                Some("10.12.13.0/24".parse().unwrap()),
                Some("fd00:12:13:0::/56".parse().unwrap())
            ),
            "10.12.13.0-24&fd00:12:13::-56"
        );
        // The order of the parts does not matter when reading.
        assert_eq!(
            decode("fd00:12:13::-56&10.12.13.0-24").unwrap(),
            decode("10.12.13.0-24&fd00:12:13::-56").unwrap()
        );
    }

    #[test]
    fn more_garbage() {
        for k in [
            "-24",
            "10.5.52.0-",
            "10.5.52.0-24&",
            "&",
            "10.5.52.0--24",
            "fd00::-129",
            "fd00::1-64",
            "fd00::-64&fd01::-64",
        ] {
            assert!(decode(k).is_err(), "{k}");
        }
    }

    proptest::proptest! {
        #[test]
        fn round_trips_any_subnet(a: u32, la in 0u8..=32, b: u128, lb in 0u8..=128, which in 0u8..3) {
            let v4 = (which != 1).then(|| Ipv4Net::new(a.into(), la).unwrap().trunc());
            let v6 = (which != 0).then(|| Ipv6Net::new(b.into(), lb).unwrap().trunc());
            let k = encode(v4, v6);
            proptest::prop_assert_eq!(decode(&k).unwrap(), (v4, v6));
        }

        #[test]
        fn decode_never_panics(s in "[0-9a-f:.&-]{0,40}") {
            let _ = decode(&s);
        }
    }
}
