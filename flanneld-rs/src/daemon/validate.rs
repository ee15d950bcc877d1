//! Which peer leases the datapath may program (pure, no I/O).
//!
//! Anything that can write to the lease store can publish a lease: a
//! misconfigured node, an operator's typo, or an attacker with store
//! access. Programming such a lease blindly can cut this node's own pods off
//! (a subnet inside ours), hijack the route to a real node's underlay address
//! (a `/32` on its public IP), or send pod traffic to loopback. So every
//! lease is checked against net-conf and this node before it becomes a
//! peer, and a rejected one is reported by reason instead of programmed.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv4Net;
use lease_store::Lease;

use super::logs::Bounded;
use crate::backend::options::data_field;
use crate::backend::Peer;
use crate::reconcile::Mac;

/// Why a lease is not programmed. The label is the `reason` in /metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The subnet lies (partly) outside net-conf's Network.
    OutsideNetwork,
    /// The subnet's prefix length is not net-conf's SubnetLen.
    SubnetLength,
    /// The subnet overlaps this node's own subnet.
    OverlapsOwn,
    /// The subnet overlaps another peer's lease accepted before it.
    OverlapsPeer,
    /// The public IP lies inside the cluster network (tunnels to it would
    /// loop through the overlay).
    PublicIpInNetwork,
    /// The public IP is this node's own (an old lease of ours, or a
    /// hijack of our address).
    PublicIpOwn,
    PublicIpLoopback,
    /// Multicast or the limited broadcast address.
    PublicIpMulticast,
    /// 0.0.0.0 (or no IPv6 address with an IPv6 underlay).
    PublicIpUnspecified,
    /// Another backend type than this node's.
    BackendType,
    /// BackendData that does not fit the backend (no or a bad VtepMAC).
    BackendData,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::OutsideNetwork,
        Reason::SubnetLength,
        Reason::OverlapsOwn,
        Reason::OverlapsPeer,
        Reason::PublicIpInNetwork,
        Reason::PublicIpOwn,
        Reason::PublicIpLoopback,
        Reason::PublicIpMulticast,
        Reason::PublicIpUnspecified,
        Reason::BackendType,
        Reason::BackendData,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::OutsideNetwork => "outside_network",
            Reason::SubnetLength => "subnet_length",
            Reason::OverlapsOwn => "overlaps_own_subnet",
            Reason::OverlapsPeer => "overlaps_peer",
            Reason::PublicIpInNetwork => "public_ip_in_network",
            Reason::PublicIpOwn => "public_ip_own",
            Reason::PublicIpLoopback => "public_ip_loopback",
            Reason::PublicIpMulticast => "public_ip_multicast",
            Reason::PublicIpUnspecified => "public_ip_unspecified",
            Reason::BackendType => "backend_type",
            Reason::BackendData => "backend_data",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What a lease is checked against: net-conf and this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub network: Ipv4Net,
    pub subnet_len: u8,
    pub own_subnet: Option<Ipv4Net>,
    pub own_public_ip: Ipv4Addr,
    /// Set with an IPv6 underlay: peers are reached at their PublicIPv6
    /// (their PublicIP may then be 0.0.0.0).
    pub own_public_ipv6: Option<Ipv6Addr>,
    /// This node's `BackendType` (`vxlan`, `geneve`, `host-gw`).
    pub backend_type: String,
}

/// The prefix length peers' subnets must have: this node's own, once it
/// has a lease (all nodes' subnets share one length; in Kubernetes mode
/// the controller manager's node CIDR size decides it, not net-conf's
/// SubnetLen), else net-conf's SubnetLen.
pub fn expected_len(subnet_len: u8, own: Option<Ipv4Net>) -> u8 {
    own.map(|o| o.prefix_len()).unwrap_or(subnet_len)
}

/// One lease that is not programmed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub subnet: Ipv4Net,
    pub public_ip: Ipv4Addr,
    pub revision: i64,
    pub reason: Reason,
    /// What is wrong, for the log; bounded (a hostile lease can carry
    /// megabytes).
    pub detail: String,
}

/// The outcome over the whole lease table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// The peers to program, ordered by subnet.
    pub accepted: Vec<Peer>,
    /// Leases left out, ordered by subnet.
    pub rejected: Vec<Rejection>,
}

/// The longest VtepMAC text looked at: a MAC is 17 characters.
const MAX_MAC_TEXT: usize = 17;

/// Checks one lease on its own (everything but overlaps between peers).
pub fn check(lease: &Lease, subnet: Ipv4Net, rules: &Rules) -> Result<(), (Reason, String)> {
    // The most harmful first: a subnet over ours cuts our pods off.
    if let Some(own) = rules.own_subnet {
        if own.contains(&subnet) || subnet.contains(&own) {
            return Err((
                Reason::OverlapsOwn,
                format!("subnet {subnet} overlaps this node's subnet {own}"),
            ));
        }
    }
    if !rules.network.contains(&subnet) {
        return Err((
            Reason::OutsideNetwork,
            format!("subnet {subnet} lies outside the network {}", rules.network),
        ));
    }
    if subnet.prefix_len() != rules.subnet_len {
        return Err((
            Reason::SubnetLength,
            format!(
                "subnet {subnet} is a /{}; this cluster's subnets are /{}",
                subnet.prefix_len(),
                rules.subnet_len
            ),
        ));
    }
    check_public_ip(lease, rules)?;
    check_backend(lease, rules)
}

fn check_public_ip(lease: &Lease, rules: &Rules) -> Result<(), (Reason, String)> {
    let ip = lease.attrs.public_ip;
    if let Some(own6) = rules.own_public_ipv6 {
        // IPv6 underlay: the tunnel goes to PublicIPv6.
        let Some(ip6) = lease.attrs.public_ipv6 else {
            return Err((
                Reason::PublicIpUnspecified,
                "no PublicIPv6, and the cluster's Backend.Underlay is ipv6".into(),
            ));
        };
        let why = if ip6.is_unspecified() {
            Some(Reason::PublicIpUnspecified)
        } else if ip6.is_loopback() {
            Some(Reason::PublicIpLoopback)
        } else if ip6.is_multicast() {
            Some(Reason::PublicIpMulticast)
        } else if ip6 == own6 {
            Some(Reason::PublicIpOwn)
        } else {
            None
        };
        if let Some(reason) = why {
            return Err((reason, format!("PublicIPv6 {ip6} is not a peer's address")));
        }
        // PublicIP may be 0.0.0.0 on an IPv6-only underlay; if set, it must
        // still not point into the overlay or at us.
        if ip.is_unspecified() {
            return Ok(());
        }
    }
    let why = if ip.is_unspecified() {
        Some(Reason::PublicIpUnspecified)
    } else if ip.is_loopback() {
        Some(Reason::PublicIpLoopback)
    } else if ip.is_multicast() || ip.is_broadcast() {
        Some(Reason::PublicIpMulticast)
    } else if rules.network.contains(&ip) {
        Some(Reason::PublicIpInNetwork)
    } else if ip == rules.own_public_ip {
        Some(Reason::PublicIpOwn)
    } else {
        None
    };
    match why {
        Some(Reason::PublicIpInNetwork) => Err((
            Reason::PublicIpInNetwork,
            format!(
                "PublicIP {ip} lies inside the cluster network {}",
                rules.network
            ),
        )),
        Some(Reason::PublicIpOwn) => Err((
            Reason::PublicIpOwn,
            format!("PublicIP {ip} is this node's own address (an old lease of this node?)"),
        )),
        Some(reason) => Err((reason, format!("PublicIP {ip} is not a node's address"))),
        None => Ok(()),
    }
}

fn check_backend(lease: &Lease, rules: &Rules) -> Result<(), (Reason, String)> {
    let theirs = &lease.attrs.backend_type;
    if *theirs != rules.backend_type {
        return Err((
            Reason::BackendType,
            format!(
                "BackendType {:?} differs from this node's {:?}: all nodes must use the same backend",
                Bounded::new(theirs, 32).to_string(),
                rules.backend_type
            ),
        ));
    }
    if !matches!(rules.backend_type.as_str(), "vxlan" | "geneve") {
        // host-gw publishes nothing it needs.
        return Ok(());
    }
    let field = lease
        .attrs
        .backend_data
        .as_ref()
        .and_then(|d| data_field(d, "VtepMAC"));
    let Some(value) = field else {
        return Err((Reason::BackendData, "BackendData has no VtepMAC".into()));
    };
    let Some(text) = value.as_str() else {
        return Err((
            Reason::BackendData,
            "BackendData's VtepMAC is not a string".into(),
        ));
    };
    // Parse only what can be a MAC: the text is kept out of the log beyond
    // a few bytes.
    let mac = (text.len() <= MAX_MAC_TEXT)
        .then(|| text.parse::<Mac>().ok())
        .flatten();
    match mac {
        Some(m) if m.0 == [0; 6] || m.0[0] & 1 == 1 => Err((
            Reason::BackendData,
            format!("VtepMAC {m} is not a unicast MAC"),
        )),
        Some(_) => Ok(()),
        None => Err((
            Reason::BackendData,
            format!(
                "VtepMAC {:?} ({} bytes) is not a MAC address",
                Bounded::new(text, 24).to_string(),
                text.len()
            ),
        )),
    }
}

/// Checks every lease: those that pass on their own are accepted in order
/// of revision (first come wins), each unless it overlaps one accepted
/// before it. This node's own lease (its exact subnet) is left out quietly.
pub fn select<'a>(leases: impl IntoIterator<Item = &'a Lease>, rules: &Rules) -> Selection {
    let mut candidates: Vec<(&Lease, Ipv4Net)> = Vec::new();
    let mut rejected = Vec::new();
    for lease in leases {
        let Some(subnet) = lease.subnet else {
            // IPv6-only: nothing to program yet.
            continue;
        };
        if rules.own_subnet == Some(subnet) {
            continue;
        }
        match check(lease, subnet, rules) {
            Ok(()) => candidates.push((lease, subnet)),
            Err((reason, detail)) => rejected.push(rejection(lease, subnet, reason, detail)),
        }
    }
    candidates.sort_by_key(|(l, s)| (l.revision, *s));
    let mut accepted: BTreeMap<Ipv4Net, Peer> = BTreeMap::new();
    for (lease, subnet) in candidates {
        // Same-length subnets either match or are disjoint; the check is
        // general all the same (it costs a range lookup).
        let clash = accepted
            .range(..=subnet)
            .next_back()
            .map(|(s, _)| *s)
            .filter(|s| s.contains(&subnet))
            .or_else(|| {
                accepted
                    .range(subnet..)
                    .next()
                    .map(|(s, _)| *s)
                    .filter(|s| subnet.contains(s))
            });
        if let Some(first) = clash {
            rejected.push(rejection(
                lease,
                subnet,
                Reason::OverlapsPeer,
                format!("subnet {subnet} overlaps the lease {first}, which came first"),
            ));
            continue;
        }
        if let Some(peer) = Peer::from_lease(lease) {
            accepted.insert(subnet, peer);
        }
    }
    rejected.sort_by_key(|r| (r.subnet, r.public_ip, r.reason));
    Selection {
        accepted: accepted.into_values().collect(),
        rejected,
    }
}

fn rejection(lease: &Lease, subnet: Ipv4Net, reason: Reason, detail: String) -> Rejection {
    Rejection {
        subnet,
        public_ip: lease.attrs.public_ip,
        revision: lease.revision,
        reason,
        detail: Bounded::new(&detail, 256).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lease_store::LeaseAttrs;
    use serde_json::json;

    fn rules() -> Rules {
        Rules {
            network: "10.244.0.0/16".parse().unwrap(),
            subnet_len: 24,
            own_subnet: Some("10.244.1.0/24".parse().unwrap()),
            own_public_ip: "198.51.100.1".parse().unwrap(),
            own_public_ipv6: None,
            backend_type: "vxlan".into(),
        }
    }

    fn lease(key: &str, ip: &str, rev: i64) -> Lease {
        Lease {
            subnet: Some(key.parse().unwrap()),
            ipv6_subnet: None,
            attrs: LeaseAttrs {
                public_ip: ip.parse().unwrap(),
                public_ipv6: None,
                backend_type: "vxlan".into(),
                backend_data: Some(json!({"VNI": 1, "VtepMAC": "0a:00:00:00:00:02"})),
                backend_v6_data: None,
            },
            expiration: None,
            revision: rev,
        }
    }

    fn reason_of(l: &Lease) -> Option<Reason> {
        let sel = select([l], &rules());
        assert!(sel.rejected.len() + sel.accepted.len() <= 1);
        sel.rejected.first().map(|r| r.reason)
    }

    #[test]
    fn a_good_lease_is_accepted() {
        let sel = select([&lease("10.244.2.0/24", "198.51.100.2", 5)], &rules());
        assert_eq!(sel.accepted.len(), 1);
        assert!(sel.rejected.is_empty());
    }

    #[test]
    fn the_subnets_of_the_issue_are_rejected() {
        // Inside our own subnet: would cut our pods off.
        assert_eq!(
            reason_of(&lease("10.244.1.0/25", "198.51.100.2", 1)),
            Some(Reason::OverlapsOwn)
        );
        assert_eq!(
            reason_of(&lease("10.244.1.128/25", "198.51.100.2", 1)),
            Some(Reason::OverlapsOwn)
        );
        // Around our subnet.
        assert_eq!(
            reason_of(&lease("10.244.0.0/23", "198.51.100.2", 1)),
            Some(Reason::OverlapsOwn)
        );
        // Another length elsewhere in the network.
        assert_eq!(
            reason_of(&lease("10.244.8.0/25", "198.51.100.2", 1)),
            Some(Reason::SubnetLength)
        );
        // A /32 on a real node's underlay address.
        assert_eq!(
            reason_of(&lease("198.51.100.2/32", "198.51.100.9", 1)),
            Some(Reason::OutsideNetwork)
        );
        // Outside the network with the right length.
        assert_eq!(
            reason_of(&lease("10.245.3.0/24", "198.51.100.2", 1)),
            Some(Reason::OutsideNetwork)
        );
        let sel = select([&lease("10.245.3.0/24", "198.51.100.2", 1)], &rules());
        assert!(sel.rejected[0]
            .detail
            .contains("outside the network 10.244.0.0/16"));
    }

    #[test]
    fn bad_public_ips_are_rejected() {
        for (ip, want) in [
            ("0.0.0.0", Reason::PublicIpUnspecified),
            ("127.0.0.1", Reason::PublicIpLoopback),
            ("224.0.0.1", Reason::PublicIpMulticast),
            ("255.255.255.255", Reason::PublicIpMulticast),
            ("10.244.9.1", Reason::PublicIpInNetwork),
            ("198.51.100.1", Reason::PublicIpOwn),
        ] {
            assert_eq!(
                reason_of(&lease("10.244.2.0/24", ip, 1)),
                Some(want),
                "{ip}"
            );
        }
    }

    #[test]
    fn ipv6_underlay_checks_the_ipv6_address() {
        let mut r = rules();
        r.own_public_ipv6 = Some("2001:db8::1".parse().unwrap());
        let mut l = lease("10.244.2.0/24", "0.0.0.0", 1);
        assert_eq!(
            select([&l], &r).rejected[0].reason,
            Reason::PublicIpUnspecified
        );
        l.attrs.public_ipv6 = Some("2001:db8::2".parse().unwrap());
        assert_eq!(select([&l], &r).accepted.len(), 1);
        l.attrs.public_ipv6 = Some("::1".parse().unwrap());
        assert_eq!(
            select([&l], &r).rejected[0].reason,
            Reason::PublicIpLoopback
        );
        l.attrs.public_ipv6 = Some("2001:db8::1".parse().unwrap());
        assert_eq!(select([&l], &r).rejected[0].reason, Reason::PublicIpOwn);
        l.attrs.public_ipv6 = Some("2001:db8::2".parse().unwrap());
        l.attrs.public_ip = "10.244.7.7".parse().unwrap();
        assert_eq!(
            select([&l], &r).rejected[0].reason,
            Reason::PublicIpInNetwork
        );
    }

    #[test]
    fn backend_data_must_fit_the_backend() {
        let mut l = lease("10.244.2.0/24", "198.51.100.2", 1);
        l.attrs.backend_type = "host-gw".into();
        assert_eq!(reason_of(&l), Some(Reason::BackendType));
        let mut l = lease("10.244.2.0/24", "198.51.100.2", 1);
        for data in [
            json!({"VNI": 1}),
            json!({"VtepMAC": 7}),
            json!({"VtepMAC": "not a mac"}),
            json!({"VtepMAC": "01:00:5e:00:00:01"}),
            json!({"VtepMAC": "00:00:00:00:00:00"}),
            json!(null),
        ] {
            l.attrs.backend_data = Some(data.clone());
            assert_eq!(reason_of(&l), Some(Reason::BackendData), "{data}");
        }
        l.attrs.backend_data = None;
        assert_eq!(reason_of(&l), Some(Reason::BackendData));
        // Case-insensitive field names, as Go flannel's JSON decoding.
        l.attrs.backend_data = Some(json!({"vtepmac": "0a:00:00:00:00:02"}));
        assert_eq!(reason_of(&l), None);
        // host-gw needs no data.
        let mut r = rules();
        r.backend_type = "host-gw".into();
        l.attrs.backend_type = "host-gw".into();
        l.attrs.backend_data = None;
        assert_eq!(select([&l], &r).accepted.len(), 1);
    }

    #[test]
    fn a_megabyte_vtep_mac_stays_out_of_the_detail() {
        let mut l = lease("10.244.2.0/24", "198.51.100.2", 1);
        l.attrs.backend_data = Some(json!({"VtepMAC": "a".repeat(1 << 20)}));
        let sel = select([&l], &rules());
        let r = &sel.rejected[0];
        assert_eq!(r.reason, Reason::BackendData);
        assert!(r.detail.len() < 200, "{} bytes", r.detail.len());
        assert!(r.detail.contains("1048576 bytes"), "{}", r.detail);
    }

    #[test]
    fn the_earliest_revision_wins_an_overlap() {
        // Equal subnets cannot both be in a table keyed by subnet; with a
        // shorter SubnetLen only overlaps of different lengths would reach
        // here, which the length check rejects first. Duplicates of one
        // subnet (two stores' views merged) are still resolved by revision.
        let older = lease("10.244.2.0/24", "198.51.100.2", 3);
        let newer = lease("10.244.2.0/24", "198.51.100.3", 7);
        for order in [[&newer, &older], [&older, &newer]] {
            let sel = select(order, &rules());
            assert_eq!(sel.accepted.len(), 1);
            assert_eq!(sel.accepted[0].public_ip, older.attrs.public_ip);
            assert_eq!(sel.rejected.len(), 1);
            assert_eq!(sel.rejected[0].reason, Reason::OverlapsPeer);
            assert_eq!(sel.rejected[0].public_ip, newer.attrs.public_ip);
        }
    }

    #[test]
    fn own_lease_and_ipv6_only_leases_are_skipped_quietly() {
        let own = lease("10.244.1.0/24", "198.51.100.1", 1);
        let mut v6 = lease("10.244.3.0/24", "198.51.100.3", 1);
        v6.subnet = None;
        let sel = select([&own, &v6], &rules());
        assert_eq!(sel, Selection::default());
    }

    #[test]
    fn kubernetes_sized_pod_cidrs_follow_the_own_subnet() {
        // net-conf says /24 (the default for a /16), the cluster hands out
        // /26 podCIDRs: peers with /26 are fine, /24 are not.
        let own: Ipv4Net = "10.244.1.0/26".parse().unwrap();
        assert_eq!(expected_len(24, Some(own)), 26);
        assert_eq!(expected_len(24, None), 24);
        let mut r = rules();
        r.own_subnet = Some(own);
        r.subnet_len = expected_len(24, Some(own));
        let sel = select(
            [
                &lease("10.244.1.64/26", "198.51.100.2", 1),
                &lease("10.244.2.0/24", "198.51.100.3", 1),
            ],
            &r,
        );
        assert_eq!(sel.accepted.len(), 1);
        assert_eq!(sel.rejected[0].reason, Reason::SubnetLength);
    }

    #[test]
    fn every_reason_has_a_distinct_label() {
        let labels: std::collections::BTreeSet<_> = Reason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Reason::ALL.len());
    }
}
