//! Subnet allocation as pure logic: which subnet a node gets, given the
//! config, the leases and reservations already in the table, the node's
//! public IP and the subnet it held before. Every store (etcd, embedded)
//! calls this between reading the table and its compare-and-create write.
//!
//! Order (flannel's): the node's own lease (same public IP) if it still fits
//! the config; else the previous subnet (from subnet.env) if it is free and
//! fits; else a random pick among the first 100 free subnets from SubnetMin
//! upward. Taken subnets are kept in hash sets, so one allocation costs
//! O(leases + 100), not O(leases²).

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::{Ipv4Net, Ipv6Net};

use crate::config::NetworkConfig;
use crate::lease::{Lease, LeaseAttrs};

/// How many free candidates a random pick chooses among (flannel's number).
pub const CANDIDATES: usize = 100;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AllocError {
    #[error("out of subnets: all {total} subnets of {range} are taken ({leased} leased, {reserved} reserved); widen Network or SubnetMin/SubnetMax, or lengthen SubnetLen")]
    OutOfSubnets {
        range: String,
        total: u64,
        leased: usize,
        reserved: usize,
    },
}

/// What the store should write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub subnet: Option<Ipv4Net>,
    pub ipv6_subnet: Option<Ipv6Net>,
    pub source: Source,
    /// This node's own leases that no longer fit the config (for example
    /// after SubnetLen changed): the store deletes them, as flannel does.
    /// Reservations are never listed here: they belong to the operator.
    pub stale_own: Vec<Lease>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The node's own lease: update its attributes in place. `reservation`
    /// is true when it has no TTL (keep it that way).
    Own { reservation: bool },
    /// The subnet recorded in subnet.env: create it.
    Previous,
    /// A random free subnet: create it.
    Random,
}

/// True when two attribute sets describe the same node: same public IPv4,
/// or for IPv6-only nodes (no IPv4) the same public IPv6.
pub fn same_node(a: &LeaseAttrs, b: &LeaseAttrs) -> bool {
    if a.public_ip.is_unspecified() && b.public_ip.is_unspecified() {
        a.public_ipv6.is_some() && a.public_ipv6 == b.public_ipv6
    } else {
        a.public_ip == b.public_ip
    }
}

/// Decides the subnet(s) for a node. `pick(n)` returns an index below `n`
/// (the stores pass a random number generator; tests a fixed one).
pub fn plan(
    config: &NetworkConfig,
    leases: &[Lease],
    attrs: &LeaseAttrs,
    previous_subnet: Option<Ipv4Net>,
    previous_ipv6_subnet: Option<Ipv6Net>,
    pick: &mut dyn FnMut(usize) -> usize,
) -> Result<Plan, AllocError> {
    // 1. The node's own lease; a reservation is preferred over a lease.
    let mut own: Option<&Lease> = None;
    let mut stale_own = Vec::new();
    for l in leases.iter().filter(|l| same_node(&l.attrs, attrs)) {
        if config.fits(l.subnet, l.ipv6_subnet) {
            if own.is_none_or(|o| !o.is_reservation() && l.is_reservation()) {
                own = Some(l);
            }
        } else if !l.is_reservation() {
            stale_own.push(l.clone());
        }
    }
    if let Some(l) = own {
        return Ok(Plan {
            subnet: l.subnet,
            ipv6_subnet: l.ipv6_subnet,
            source: Source::Own {
                reservation: l.is_reservation(),
            },
            stale_own,
        });
    }

    // Stale own leases are about to be deleted: their subnets are free.
    let stale_keys: HashSet<String> = stale_own.iter().map(Lease::key).collect();
    let live = leases.iter().filter(|l| !stale_keys.contains(&l.key()));
    let taken = Taken::new(config, live);

    // 2. The previous subnet, when it fits and is free.
    let prev_ok = config.fits(previous_subnet, previous_ipv6_subnet)
        && previous_subnet.is_none_or(|n| !taken.v4.contains(n))
        && previous_ipv6_subnet.is_none_or(|n| !taken.v6.contains(n));
    if prev_ok {
        return Ok(Plan {
            subnet: previous_subnet,
            ipv6_subnet: previous_ipv6_subnet,
            source: Source::Previous,
            stale_own,
        });
    }

    // 3. A random free one, each family picked on its own (as flannel).
    let subnet = if config.enable_ipv4 {
        Some(pick_v4(config, &taken, pick)?)
    } else {
        None
    };
    let ipv6_subnet = if config.enable_ipv6 {
        Some(pick_v6(config, &taken, pick)?)
    } else {
        None
    };
    Ok(Plan {
        subnet,
        ipv6_subnet,
        source: Source::Random,
        stale_own,
    })
}

/// The lease that keeps `subnet` from this node (`attrs`): another
/// node's lease or reservation overlapping it. `None` means asking for it
/// as `previous_subnet` gives exactly `subnet` (it fits the config and the
/// node holds no other lease), so a daemon that must not switch subnets
/// asks only then, and the store's atomic write settles any race.
pub fn holder_of<'a>(
    leases: impl IntoIterator<Item = &'a Lease>,
    attrs: &LeaseAttrs,
    subnet: Ipv4Net,
) -> Option<&'a Lease> {
    leases.into_iter().find(|l| {
        !same_node(&l.attrs, attrs)
            && l.subnet
                .is_some_and(|s| s.contains(&subnet.network()) || subnet.contains(&s.network()))
    })
}

/// The stores' entry point: [`plan`] with a random pick. Returns the lease
/// to write (subnets and the request's attributes; `expiration` and
/// `revision` are for the store to fill in; `expiration` is `None` only
/// when the plan reuses a reservation).
#[cfg(feature = "store")]
pub fn choose(
    config: &NetworkConfig,
    leases: &[Lease],
    req: &crate::store::AcquireRequest,
) -> Result<Lease, AllocError> {
    Ok(choose_plan(config, leases, req)?.0)
}

/// [`choose`], also returning the plan (source, stale own leases).
#[cfg(feature = "store")]
pub fn choose_plan(
    config: &NetworkConfig,
    leases: &[Lease],
    req: &crate::store::AcquireRequest,
) -> Result<(Lease, Plan), AllocError> {
    use rand::Rng;
    let mut rng = rand::rng();
    let p = plan(
        config,
        leases,
        &req.attrs,
        req.previous_subnet,
        req.previous_ipv6_subnet,
        &mut |n| rng.random_range(0..n.max(1)),
    )?;
    let reservation = matches!(p.source, Source::Own { reservation: true });
    let lease = Lease {
        subnet: p.subnet,
        ipv6_subnet: p.ipv6_subnet,
        attrs: req.attrs.clone(),
        expiration: (!reservation).then(std::time::SystemTime::now),
        revision: 0,
    };
    Ok((lease, p))
}

fn pick_v4(
    config: &NetworkConfig,
    taken: &Taken,
    pick: &mut dyn FnMut(usize) -> usize,
) -> Result<Ipv4Net, AllocError> {
    let (Some(min), Some(max)) = (config.subnet_min, config.subnet_max) else {
        return Err(out_of(
            String::from("no IPv4 range configured"),
            0,
            taken.v4_counts,
        ));
    };
    let len = config.subnet_len;
    let size = 1u64 << (32 - u32::from(len));
    let (lo, hi) = (
        u64::from(u32::from(min.network())),
        u64::from(u32::from(max.network())),
    );
    let mut free = Vec::with_capacity(CANDIDATES);
    let mut a = lo;
    while a <= hi && free.len() < CANDIDATES {
        // In range: a fits u32 because hi does.
        if let Ok(n) = Ipv4Net::new(Ipv4Addr::from(a as u32), len) {
            if !taken.v4.contains(n) {
                free.push(n);
            }
        }
        a += size;
    }
    if free.is_empty() {
        let range = format!(
            "{} ({} to {}, /{len})",
            config.network.map(|n| n.to_string()).unwrap_or_default(),
            min.network(),
            max.network()
        );
        return Err(out_of(range, (hi - lo) / size + 1, taken.v4_counts));
    }
    Ok(free[pick(free.len()) % free.len()])
}

fn pick_v6(
    config: &NetworkConfig,
    taken: &Taken,
    pick: &mut dyn FnMut(usize) -> usize,
) -> Result<Ipv6Net, AllocError> {
    let (Some(min), Some(max)) = (config.ipv6_subnet_min, config.ipv6_subnet_max) else {
        return Err(out_of(
            String::from("no IPv6 range configured"),
            0,
            taken.v6_counts,
        ));
    };
    let len = config.ipv6_subnet_len;
    let size = 1u128 << (128 - u32::from(len));
    let (lo, hi) = (u128::from(min.network()), u128::from(max.network()));
    let mut free = Vec::with_capacity(CANDIDATES);
    let mut a = lo;
    while a <= hi && free.len() < CANDIDATES {
        if let Ok(n) = Ipv6Net::new(a.into(), len) {
            if !taken.v6.contains(n) {
                free.push(n);
            }
        }
        match a.checked_add(size) {
            Some(next) => a = next,
            None => break,
        }
    }
    if free.is_empty() {
        let range = format!(
            "{} ({} to {}, /{len})",
            config
                .ipv6_network
                .map(|n| n.to_string())
                .unwrap_or_default(),
            min.network(),
            max.network()
        );
        let total = u64::try_from((hi - lo) / size + 1).unwrap_or(u64::MAX);
        return Err(out_of(range, total, taken.v6_counts));
    }
    Ok(free[pick(free.len()) % free.len()])
}

fn out_of(range: String, total: u64, (leased, reserved): (usize, usize)) -> AllocError {
    AllocError::OutOfSubnets {
        range,
        total,
        leased,
        reserved,
    }
}

/// The subnets in use. Subnets of the configured length go in a hash set;
/// others (left over from an older config) are few and checked for overlap.
struct Taken {
    v4: TakenSet<Ipv4Net>,
    v6: TakenSet<Ipv6Net>,
    /// (leased, reserved) inside the configured range, for the error message.
    v4_counts: (usize, usize),
    v6_counts: (usize, usize),
}

impl Taken {
    fn new<'a>(config: &NetworkConfig, leases: impl Iterator<Item = &'a Lease>) -> Self {
        let mut t = Taken {
            v4: TakenSet::new(config.subnet_len),
            v6: TakenSet::new(config.ipv6_subnet_len),
            v4_counts: (0, 0),
            v6_counts: (0, 0),
        };
        for l in leases {
            if let Some(n) = l.subnet {
                t.v4.insert(n);
                if config.fits_v4(n) {
                    bump(&mut t.v4_counts, l.is_reservation());
                }
            }
            if let Some(n) = l.ipv6_subnet {
                t.v6.insert(n);
                if config.fits_v6(n) {
                    bump(&mut t.v6_counts, l.is_reservation());
                }
            }
        }
        t
    }
}

fn bump(c: &mut (usize, usize), reservation: bool) {
    if reservation {
        c.1 += 1;
    } else {
        c.0 += 1;
    }
}

trait Net: Copy + Eq + std::hash::Hash {
    fn len(&self) -> u8;
    fn overlaps(&self, other: &Self) -> bool;
}

impl Net for Ipv4Net {
    fn len(&self) -> u8 {
        self.prefix_len()
    }
    fn overlaps(&self, o: &Self) -> bool {
        self.contains(o) || o.contains(self)
    }
}

impl Net for Ipv6Net {
    fn len(&self) -> u8 {
        self.prefix_len()
    }
    fn overlaps(&self, o: &Self) -> bool {
        self.contains(o) || o.contains(self)
    }
}

struct TakenSet<N: Net> {
    len: u8,
    exact: HashSet<N>,
    other: Vec<N>,
}

impl<N: Net> TakenSet<N> {
    fn new(len: u8) -> Self {
        TakenSet {
            len,
            exact: HashSet::new(),
            other: Vec::new(),
        }
    }

    fn insert(&mut self, n: N) {
        if n.len() == self.len {
            self.exact.insert(n);
        } else {
            self.other.push(n);
        }
    }

    /// True when `n` (of the configured length) overlaps a taken subnet.
    fn contains(&self, n: N) -> bool {
        self.exact.contains(&n) || self.other.iter().any(|o| o.overlaps(&n))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn cfg(s: &str) -> NetworkConfig {
        NetworkConfig::parse(s).unwrap()
    }

    fn attrs(ip: &str) -> LeaseAttrs {
        LeaseAttrs {
            public_ip: ip.parse().unwrap(),
            public_ipv6: None,
            backend_type: "vxlan".into(),
            backend_data: None,
            backend_v6_data: None,
        }
    }

    fn lease(sn: &str, ip: &str, reservation: bool) -> Lease {
        Lease {
            subnet: Some(sn.parse().unwrap()),
            ipv6_subnet: None,
            attrs: attrs(ip),
            expiration: (!reservation).then(|| SystemTime::now() + Duration::from_secs(60)),
            revision: 1,
        }
    }

    fn first(_: usize) -> usize {
        0
    }

    #[test]
    fn reuses_own_lease_by_public_ip() {
        let c = cfg(r#"{"Network":"10.5.0.0/16"}"#);
        let leases = vec![
            lease("10.5.7.0/24", "192.0.2.1", false),
            lease("10.5.9.0/24", "192.0.2.2", false),
        ];
        let p = plan(
            &c,
            &leases,
            &attrs("192.0.2.2"),
            Some("10.5.30.0/24".parse().unwrap()),
            None,
            &mut first,
        )
        .unwrap();
        assert_eq!(p.subnet, Some("10.5.9.0/24".parse().unwrap()));
        assert_eq!(p.source, Source::Own { reservation: false });
        assert!(p.stale_own.is_empty());
    }

    #[test]
    fn own_reservation_is_preferred_and_kept_a_reservation() {
        let c = cfg(r#"{"Network":"10.5.0.0/16"}"#);
        let leases = vec![
            lease("10.5.7.0/24", "192.0.2.1", false),
            lease("10.5.8.0/24", "192.0.2.1", true),
        ];
        let p = plan(&c, &leases, &attrs("192.0.2.1"), None, None, &mut first).unwrap();
        assert_eq!(p.subnet, Some("10.5.8.0/24".parse().unwrap()));
        assert_eq!(p.source, Source::Own { reservation: true });
    }

    #[test]
    fn own_lease_outside_config_is_stale_and_its_subnet_freed() {
        // SubnetLen changed from 24 to 25: the old lease no longer fits.
        let c = cfg(r#"{"Network":"10.5.0.0/16","SubnetLen":25}"#);
        let old = lease("10.5.0.0/24", "192.0.2.1", false);
        let p = plan(
            &c,
            std::slice::from_ref(&old),
            &attrs("192.0.2.1"),
            None,
            None,
            &mut first,
        )
        .unwrap();
        assert_eq!(p.stale_own, vec![old]);
        assert_eq!(p.source, Source::Random);
        // SubnetMin is 10.5.0.128/25: free again once the stale /24 goes.
        assert_eq!(p.subnet, Some("10.5.0.128/25".parse().unwrap()));
    }

    #[test]
    fn holder_of_names_only_another_node_overlapping_the_subnet() {
        let want: Ipv4Net = "10.5.7.0/24".parse().unwrap();
        let me = attrs("192.0.2.9");
        let mine = lease("10.5.7.0/24", "192.0.2.9", false);
        let other = lease("10.5.8.0/24", "192.0.2.1", false);
        // Free, or held by this node itself: nobody keeps it from us.
        assert_eq!(holder_of(std::slice::from_ref(&other), &me, want), None);
        assert_eq!(holder_of(&[mine, other.clone()], &me, want), None);
        // The same subnet, a piece of it, or a wider one: held.
        for held in ["10.5.7.0/24", "10.5.7.128/25", "10.5.0.0/16"] {
            let thief = lease(held, "192.0.2.1", false);
            let leases = [other.clone(), thief.clone()];
            assert_eq!(holder_of(&leases, &me, want), Some(&thief), "{held}");
        }
        // A reservation for another node keeps it too.
        let reserved = lease("10.5.7.0/24", "192.0.2.2", true);
        assert_eq!(
            holder_of(std::slice::from_ref(&reserved), &me, want),
            Some(&reserved)
        );
    }

    #[test]
    fn previous_subnet_when_free_and_fitting() {
        let c = cfg(r#"{"Network":"10.5.0.0/16"}"#);
        let leases = vec![lease("10.5.7.0/24", "192.0.2.1", false)];
        let me = attrs("192.0.2.9");
        let p = plan(
            &c,
            &leases,
            &me,
            Some("10.5.30.0/24".parse().unwrap()),
            None,
            &mut first,
        )
        .unwrap();
        assert_eq!(
            (p.subnet, p.source),
            (Some("10.5.30.0/24".parse().unwrap()), Source::Previous)
        );
        // Taken by someone else: not used.
        let p = plan(
            &c,
            &leases,
            &me,
            Some("10.5.7.0/24".parse().unwrap()),
            None,
            &mut first,
        )
        .unwrap();
        assert_eq!(p.source, Source::Random);
        assert_ne!(p.subnet, Some("10.5.7.0/24".parse().unwrap()));
        // Outside the range or of the wrong length: ignored.
        for prev in ["10.6.0.0/24", "10.5.0.0/24", "10.5.30.0/25"] {
            let p = plan(
                &c,
                &leases,
                &me,
                Some(prev.parse().unwrap()),
                None,
                &mut first,
            )
            .unwrap();
            assert_eq!(p.source, Source::Random, "{prev}");
        }
    }

    #[test]
    fn random_pick_skips_taken_and_chooses_among_100() {
        let c = cfg(r#"{"Network":"10.5.0.0/16"}"#);
        let leases = vec![
            lease("10.5.1.0/24", "192.0.2.1", false),
            lease("10.5.2.0/24", "192.0.2.2", true),
        ];
        let me = attrs("192.0.2.9");
        let p = plan(&c, &leases, &me, None, None, &mut first).unwrap();
        assert_eq!(p.subnet, Some("10.5.3.0/24".parse().unwrap()));
        let mut seen_n = 0;
        let p = plan(&c, &leases, &me, None, None, &mut |n| {
            seen_n = n;
            n - 1
        })
        .unwrap();
        assert_eq!(seen_n, CANDIDATES);
        assert_eq!(p.subnet, Some("10.5.102.0/24".parse().unwrap()));
    }

    #[test]
    fn leftover_subnets_of_another_length_block_overlaps() {
        let c = cfg(r#"{"Network":"10.5.0.0/16","SubnetLen":25}"#);
        let leases = vec![lease("10.5.0.0/23", "192.0.2.1", false)];
        let p = plan(&c, &leases, &attrs("192.0.2.9"), None, None, &mut first).unwrap();
        assert_eq!(p.subnet, Some("10.5.2.0/25".parse().unwrap()));
    }

    #[test]
    fn exhaustion_names_range_and_counts() {
        let c = cfg(r#"{"Network":"10.0.0.0/26"}"#); // three /28s: .16 .32 .48
        let leases = vec![
            lease("10.0.0.16/28", "192.0.2.1", false),
            lease("10.0.0.32/28", "192.0.2.2", false),
            lease("10.0.0.48/28", "192.0.2.3", true),
        ];
        let e = plan(&c, &leases, &attrs("192.0.2.9"), None, None, &mut first).unwrap_err();
        assert_eq!(
            e,
            AllocError::OutOfSubnets {
                range: "10.0.0.0/26 (10.0.0.16 to 10.0.0.48, /28)".into(),
                total: 3,
                leased: 2,
                reserved: 1
            }
        );
        assert!(e.to_string().contains("all 3 subnets of 10.0.0.0/26"));
    }

    #[test]
    fn ipv6_only_and_dual_stack() {
        let c = cfg(r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:1::/56"}"#);
        let mut me = attrs("0.0.0.0");
        me.public_ipv6 = Some("2001:db8::9".parse().unwrap());
        let p = plan(&c, &[], &me, None, None, &mut first).unwrap();
        assert_eq!(
            (p.subnet, p.ipv6_subnet),
            (None, Some("fd00:1:0:1::/64".parse().unwrap()))
        );
        // An IPv6-only node is recognised by its public IPv6.
        let mut own = lease("10.0.0.0/8", "0.0.0.0", false);
        own.subnet = None;
        own.ipv6_subnet = Some("fd00:1:0:5::/64".parse().unwrap());
        own.attrs = me.clone();
        let mut other = own.clone();
        other.ipv6_subnet = Some("fd00:1:0:6::/64".parse().unwrap());
        other.attrs.public_ipv6 = Some("2001:db8::8".parse().unwrap());
        let p = plan(&c, &[other.clone(), own], &me, None, None, &mut first).unwrap();
        assert_eq!(p.ipv6_subnet, Some("fd00:1:0:5::/64".parse().unwrap()));

        let c = cfg(r#"{"EnableIPv6":true,"Network":"10.5.0.0/16","IPv6Network":"fd00:1::/56"}"#);
        let me = attrs("192.0.2.9");
        let leases = vec![Lease {
            subnet: Some("10.5.1.0/24".parse().unwrap()),
            ipv6_subnet: Some("fd00:1:0:1::/64".parse().unwrap()),
            ..lease("10.5.1.0/24", "192.0.2.1", false)
        }];
        let p = plan(&c, &leases, &me, None, None, &mut first).unwrap();
        assert_eq!(p.subnet, Some("10.5.2.0/24".parse().unwrap()));
        assert_eq!(p.ipv6_subnet, Some("fd00:1:0:2::/64".parse().unwrap()));
        // A previous dual-stack pair needs both halves free; a v4-only
        // previous subnet does not fit a dual-stack config.
        let p = plan(
            &c,
            &leases,
            &me,
            Some("10.5.9.0/24".parse().unwrap()),
            Some("fd00:1:0:9::/64".parse().unwrap()),
            &mut first,
        )
        .unwrap();
        assert_eq!(p.source, Source::Previous);
        let p = plan(
            &c,
            &leases,
            &me,
            Some("10.5.9.0/24".parse().unwrap()),
            None,
            &mut first,
        )
        .unwrap();
        assert_eq!(p.source, Source::Random);
        let p = plan(
            &c,
            &leases,
            &me,
            Some("10.5.9.0/24".parse().unwrap()),
            Some("fd00:1:0:1::/64".parse().unwrap()),
            &mut first,
        )
        .unwrap();
        assert_eq!(p.source, Source::Random);
    }

    #[test]
    fn ipv6_exhaustion() {
        let c = cfg(r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/124"}"#);
        let mut me = attrs("0.0.0.0");
        me.public_ipv6 = Some("2001:db8::9".parse().unwrap());
        let leases: Vec<Lease> = ["fd00::4/126", "fd00::8/126", "fd00::c/126"]
            .iter()
            .map(|s| Lease {
                subnet: None,
                ipv6_subnet: Some(s.parse().unwrap()),
                ..lease("10.0.0.0/8", "192.0.2.1", false)
            })
            .collect();
        let e = plan(&c, &leases, &me, None, None, &mut first).unwrap_err();
        assert!(e.to_string().contains("all 3 subnets of fd00::/124"), "{e}");
    }

    #[test]
    fn five_thousand_leases_allocate_quickly() {
        let c = cfg(r#"{"Network":"10.0.0.0/8"}"#);
        let leases: Vec<Lease> = (1..=5000u32)
            .map(|i| {
                lease(
                    &format!("{}/24", Ipv4Addr::from(0x0a00_0000 + (i << 8))),
                    "192.0.2.1",
                    false,
                )
            })
            .collect();
        let start = std::time::Instant::now();
        for _ in 0..20 {
            let p = plan(&c, &leases, &attrs("198.51.100.1"), None, None, &mut first).unwrap();
            assert_eq!(p.subnet, Some("10.19.137.0/24".parse().unwrap()));
        }
        // 20 allocations over 5,000 leases: well under a second even in a
        // debug build on a busy machine; an O(n²) scan would take minutes.
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    proptest::proptest! {
        /// Whatever the table holds (leases of any length, in or out of
        /// range, reservations), a fresh node either gets a subnet that fits
        /// the config and overlaps nothing taken, or OutOfSubnets exactly
        /// when every subnet of the range is taken.
        #[test]
        fn never_hands_out_a_taken_subnet(
            taken in proptest::collection::vec((0u32..64, 24u8..=28, proptest::bool::ANY), 0..40),
            prev in proptest::option::of(0u32..64),
            seed: usize,
        ) {
            // 10.9.0.0/24 split in /28s: SubnetMin .16 .. SubnetMax .240 (15).
            let c = cfg(r#"{"Network":"10.9.0.0/24","SubnetLen":28}"#);
            let leases: Vec<Lease> = taken
                .iter()
                .enumerate()
                .map(|(i, (slot, len, res))| {
                    let n = Ipv4Net::new(Ipv4Addr::from(0x0a09_0000 + slot * 16), *len).unwrap().trunc();
                    let mut l = lease(&n.to_string(), &format!("192.0.2.{}", i + 1), *res);
                    l.subnet = Some(n);
                    l
                })
                .collect();
            let prev = prev.map(|p| Ipv4Net::new(Ipv4Addr::from(0x0a09_0000 + p * 16), 28).unwrap().trunc());
            let mut calls = 0usize;
            let r = plan(&c, &leases, &attrs("198.51.100.1"), prev, None, &mut |n| {
                calls += 1;
                seed.wrapping_add(calls) % n
            });
            let free: Vec<Ipv4Net> = (1..16u32)
                .map(|k| Ipv4Net::new(Ipv4Addr::from(0x0a09_0000 + k * 16), 28).unwrap())
                .filter(|n| !leases.iter().any(|l| l.subnet.is_some_and(|t| t.contains(n) || n.contains(&t))))
                .collect();
            match r {
                Ok(p) => {
                    let sn = p.subnet.unwrap();
                    proptest::prop_assert!(c.fits_v4(sn));
                    proptest::prop_assert!(free.contains(&sn), "{} is taken", sn);
                    if let Some(pv) = prev {
                        if free.contains(&pv) {
                            proptest::prop_assert_eq!(sn, pv);
                        }
                    }
                }
                Err(AllocError::OutOfSubnets { total, .. }) => {
                    proptest::prop_assert!(free.is_empty());
                    proptest::prop_assert_eq!(total, 15);
                }
            }
        }
    }
}
