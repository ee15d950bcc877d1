//! Names and MAC addresses the plugin makes up.

/// FNV-1a, 64 bit: stable across builds, unlike std's hasher.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        let sep: &[u8] = if i == 0 { &[] } else { &[0] };
        for b in sep.iter().chain(part.iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The host-side veth name: derived from container ID and ifname, so DEL
/// finds it without state and a repeated ADD collides instead of leaking.
/// "veth" + 11 hex digits = 15 bytes, the kernel's limit.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let h = fnv1a(&[container_id.as_bytes(), ifname.as_bytes()]);
    format!("veth{:011x}", h & 0xfff_ffff_ffff)
}

/// Prefix of the names DEL gives a veth end it hands to the kernel for
/// deletion in the background (an operator can tell them from live ports).
pub const TOMBSTONE_PREFIX: &str = "fdel";

/// Which end of the pair a tombstone name is for: the two live in different
/// namespaces, but distinct names keep them apart even when they do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Host,
    Pod,
}

/// The name a veth end carries between DEL and its deletion: "fdel" + 11
/// hex digits (15 bytes). `nonce` is random per DEL, so a tombstone never
/// collides with the one of an earlier DEL of the same attachment that the
/// kernel has not finished removing.
pub fn tombstone_name(container_id: &str, ifname: &str, end: End, nonce: u64) -> String {
    let side: &[u8] = match end {
        End::Host => b"h",
        End::Pod => b"p",
    };
    let h = fnv1a(&[
        container_id.as_bytes(),
        ifname.as_bytes(),
        side,
        &nonce.to_le_bytes(),
    ]);
    format!("{TOMBSTONE_PREFIX}{:011x}", h & 0xfff_ffff_ffff)
}

/// 64 random bits, or the time and pid if the kernel's pool cannot give
/// them (an unlikely name clash is then handled by the caller).
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 8 {
        return u64::from_le_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    (t as u64) ^ (u64::from(std::process::id()) << 32)
}

/// A random locally administered unicast MAC.
pub fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    // SAFETY: getrandom writes at most mac.len() bytes into mac.
    let n = unsafe { libc::getrandom(mac.as_mut_ptr().cast(), mac.len(), 0) };
    if n != 6 {
        // getrandom cannot fail for 6 bytes once the pool is seeded; fall
        // back to time and pid rather than fail an ADD.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let x = (t as u64) ^ (u64::from(std::process::id()) << 32);
        mac.copy_from_slice(&x.to_le_bytes()[..6]);
    }
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_are_stable_and_short() {
        let a = host_veth_name("abc", "eth0");
        assert_eq!(a, host_veth_name("abc", "eth0"));
        assert_eq!(a.len(), 15);
        assert_ne!(a, host_veth_name("abc", "eth1"));
        assert_ne!(a, host_veth_name("abd", "eth0"));
        assert!(crate::env::valid_ifname(&a));
    }

    #[test]
    fn host_veth_name_is_unchanged() {
        // Pairs made by earlier releases must still be found by DEL.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in "abc".bytes().chain([0u8]).chain("eth0".bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        assert_eq!(
            host_veth_name("abc", "eth0"),
            format!("veth{:011x}", h & 0xfff_ffff_ffff)
        );
    }

    #[test]
    fn tombstones_are_valid_distinct_and_not_veth_names() {
        let h = tombstone_name("abc", "eth0", End::Host, 7);
        let p = tombstone_name("abc", "eth0", End::Pod, 7);
        for n in [&h, &p] {
            assert_eq!(n.len(), 15);
            assert!(n.starts_with(TOMBSTONE_PREFIX));
            assert!(crate::env::valid_ifname(n));
        }
        assert_ne!(h, p);
        assert_eq!(h, tombstone_name("abc", "eth0", End::Host, 7));
        assert_ne!(h, tombstone_name("abc", "eth0", End::Host, 8));
        assert_ne!(h, tombstone_name("abd", "eth0", End::Host, 7));
        assert_ne!(random_u64(), random_u64());
    }

    #[test]
    fn macs_are_local_unicast() {
        let m = random_mac();
        assert_eq!(m[0] & 0x01, 0);
        assert_eq!(m[0] & 0x02, 0x02);
        assert_ne!(random_mac(), m);
    }
}
