//! The daemon's view of the lease table, kept up to date from watch
//! updates (pure, no I/O): the other nodes' leases, and whether this node's
//! own lease is still there and still ours. The backend is always given the
//! complete set, so a missed or repeated event cannot leave the datapath
//! wrong after the next reconcile.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use lease_store::{Lease, LeaseEvent, WatchUpdate};

use crate::backend::Peer;

/// What one update changed, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub added: u64,
    pub removed: u64,
    /// The update was a snapshot that replaced the whole view.
    pub snapshot: bool,
    /// This node's lease after the update, when the update touched it and
    /// it is no longer ours (deleted, expired, or written by another node).
    pub own: Option<OwnLease>,
    /// The update carried this node's own key (then `own` is its verdict).
    pub touched_own: bool,
}

/// What happened to this node's own lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnLease {
    /// The key is gone (deleted by hand, or expired).
    Deleted,
    /// The key now names another node's public IP.
    Overwritten { holder: Ipv4Addr },
}

impl OwnLease {
    /// The metric label and log word.
    pub fn label(self) -> &'static str {
        match self {
            OwnLease::Deleted => "deleted",
            OwnLease::Overwritten { .. } => "overwritten",
        }
    }
}

impl Applied {
    pub fn merge(&mut self, other: Applied) {
        self.added += other.added;
        self.removed += other.removed;
        self.snapshot |= other.snapshot;
        // The later state wins: deleted then re-created by us is fine.
        if other.touched_own {
            self.own = other.own;
            self.touched_own = true;
        }
    }
}

/// The lease table as this node sees it: every lease by subnet, this
/// node's own included (it is left out of `leases`/`peers`), so that a
/// change of the own subnet needs no new listing.
#[derive(Debug, Clone, Default)]
pub struct PeerSet {
    own: Option<Ipv4Net>,
    /// The public IP our own lease carries (its holder).
    own_ip: Option<Ipv4Addr>,
    leases: BTreeMap<Ipv4Net, Lease>,
}

impl PeerSet {
    /// An empty view that will ignore `own` (this node's subnet).
    pub fn new(own: Option<Ipv4Net>) -> Self {
        PeerSet {
            own,
            own_ip: None,
            leases: BTreeMap::new(),
        }
    }

    /// Changes which subnet is ours (after a lease was lost and re-acquired).
    pub fn set_own(&mut self, own: Option<Ipv4Net>) {
        self.own = own;
    }

    /// This node's lease: its subnet and the public IP it is held by; the
    /// view then tells when that key is deleted or taken over.
    pub fn set_own_lease(&mut self, lease: &Lease) {
        self.own = lease.subnet;
        self.own_ip = Some(lease.attrs.public_ip);
    }

    /// The state of our own key in the view, `None` while it is ours (or
    /// while we hold no lease).
    pub fn own_state(&self) -> Option<OwnLease> {
        let own = self.own?;
        let ip = self.own_ip?;
        match self.leases.get(&own) {
            None => Some(OwnLease::Deleted),
            Some(l) if l.attrs.public_ip != ip => Some(OwnLease::Overwritten {
                holder: l.attrs.public_ip,
            }),
            Some(_) => None,
        }
    }

    fn is_own(&self, subnet: Ipv4Net) -> bool {
        self.own == Some(subnet)
    }

    fn own_verdict(&self, applied: &mut Applied) {
        applied.touched_own = true;
        applied.own = self.own_state();
    }

    /// Replaces the view with a full listing.
    pub fn replace(&mut self, leases: Vec<Lease>) -> Applied {
        self.leases.clear();
        let mut applied = Applied {
            snapshot: true,
            ..Applied::default()
        };
        for lease in leases {
            if self.insert(lease) {
                applied.added += 1;
            }
        }
        // A listing always says where our lease stands.
        self.own_verdict(&mut applied);
        applied
    }

    /// Applies one watch update.
    pub fn apply(&mut self, update: WatchUpdate) -> Applied {
        match update {
            WatchUpdate::Snapshot { leases, .. } => self.replace(leases),
            WatchUpdate::Events { events, .. } => {
                let mut applied = Applied::default();
                let mut touched_own = false;
                for event in events {
                    match event {
                        LeaseEvent::Added(lease) => {
                            touched_own |= lease.subnet.is_some_and(|s| self.is_own(s));
                            if self.insert(lease) {
                                applied.added += 1;
                            }
                        }
                        LeaseEvent::Removed(lease) => {
                            if let Some(subnet) = lease.subnet {
                                let own = self.is_own(subnet);
                                touched_own |= own;
                                if self.leases.remove(&subnet).is_some() && !own {
                                    applied.removed += 1;
                                }
                            }
                        }
                    }
                }
                if touched_own {
                    self.own_verdict(&mut applied);
                }
                applied
            }
        }
    }

    /// Inserts or updates a lease; true for a peer's, false for our own or
    /// an IPv6-only lease (nothing to program for it yet).
    fn insert(&mut self, lease: Lease) -> bool {
        let Some(subnet) = lease.subnet else {
            return false;
        };
        self.leases.insert(subnet, lease);
        !self.is_own(subnet)
    }

    /// Peers in the view.
    pub fn len(&self) -> usize {
        self.leases.len() - usize::from(self.own.is_some_and(|o| self.leases.contains_key(&o)))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every peer lease in the view (own subnet excluded), ordered by
    /// subnet; the daemon checks them (`validate::select`) before
    /// programming.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        let own = self.own;
        self.leases
            .iter()
            .filter(move |(s, _)| Some(**s) != own)
            .map(|(_, l)| l)
    }

    /// The desired peers for the backend, ordered by subnet, unchecked.
    pub fn peers(&self) -> Vec<Peer> {
        self.leases().filter_map(Peer::from_lease).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lease_store::LeaseAttrs;
    use std::time::{Duration, SystemTime};

    fn lease(subnet: &str, ip: &str, mac: &str) -> Lease {
        Lease {
            subnet: Some(subnet.parse().unwrap()),
            ipv6_subnet: None,
            attrs: LeaseAttrs {
                public_ip: ip.parse().unwrap(),
                public_ipv6: None,
                backend_type: "vxlan".into(),
                backend_data: Some(serde_json::json!({"VNI": 1, "VtepMAC": mac})),
                backend_v6_data: None,
            },
            expiration: Some(SystemTime::now() + Duration::from_secs(3600)),
            revision: 1,
        }
    }

    fn events(events: Vec<LeaseEvent>) -> WatchUpdate {
        WatchUpdate::Events {
            events,
            revision: 9,
        }
    }

    #[test]
    fn own_lease_is_never_a_peer() {
        let mut set = PeerSet::new(Some("10.244.1.0/24".parse().unwrap()));
        let a = set.replace(vec![
            lease("10.244.1.0/24", "198.51.100.1", "aa:00:00:00:00:01"),
            lease("10.244.2.0/24", "198.51.100.2", "aa:00:00:00:00:02"),
        ]);
        assert_eq!(a.added, 1);
        assert!(a.snapshot);
        let peers = set.peers();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].subnet, "10.244.2.0/24".parse::<Ipv4Net>().unwrap());
    }

    #[test]
    fn events_add_update_and_remove() {
        let mut set = PeerSet::new(None);
        set.apply(events(vec![
            LeaseEvent::Added(lease("10.244.2.0/24", "198.51.100.2", "aa:00:00:00:00:02")),
            LeaseEvent::Added(lease("10.244.3.0/24", "198.51.100.3", "aa:00:00:00:00:03")),
        ]));
        assert_eq!(set.len(), 2);
        // A MAC change (node rebooted with a new device) replaces the entry.
        let a = set.apply(events(vec![LeaseEvent::Added(lease(
            "10.244.2.0/24",
            "198.51.100.2",
            "aa:00:00:00:00:22",
        ))]));
        assert_eq!(a.added, 1);
        let p = set.peers();
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[0].backend_data.as_ref().unwrap()["VtepMAC"],
            "aa:00:00:00:00:22"
        );
        let a = set.apply(events(vec![LeaseEvent::Removed(lease(
            "10.244.3.0/24",
            "198.51.100.3",
            "aa:00:00:00:00:03",
        ))]));
        assert_eq!(a.removed, 1);
        assert_eq!(set.len(), 1);
        // Removing what is not there changes nothing.
        let a = set.apply(events(vec![LeaseEvent::Removed(lease(
            "10.244.9.0/24",
            "198.51.100.9",
            "aa:00:00:00:00:09",
        ))]));
        assert_eq!(a, Applied::default());
    }

    #[test]
    fn snapshot_replaces_the_view() {
        let mut set = PeerSet::new(None);
        set.apply(events(vec![LeaseEvent::Added(lease(
            "10.244.2.0/24",
            "198.51.100.2",
            "aa:00:00:00:00:02",
        ))]));
        set.apply(WatchUpdate::Snapshot {
            leases: vec![lease("10.244.5.0/24", "198.51.100.5", "aa:00:00:00:00:05")],
            revision: 20,
        });
        let p = set.peers();
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].public_ip,
            "198.51.100.5".parse::<std::net::Ipv4Addr>().unwrap()
        );
    }

    #[test]
    fn changing_own_drops_it_from_the_peers() {
        let mut set = PeerSet::new(Some("10.244.1.0/24".parse().unwrap()));
        set.replace(vec![lease(
            "10.244.2.0/24",
            "198.51.100.2",
            "aa:00:00:00:00:02",
        )]);
        set.set_own(Some("10.244.2.0/24".parse().unwrap()));
        assert!(set.is_empty());
        let mut ipv6_only = lease("10.244.7.0/24", "198.51.100.7", "aa:00:00:00:00:07");
        ipv6_only.subnet = None;
        assert_eq!(set.replace(vec![ipv6_only]).added, 0);
    }

    #[test]
    fn the_own_lease_deleted_overwritten_or_restored_is_noticed() {
        let mut set = PeerSet::new(None);
        let mine = lease("10.244.1.0/24", "198.51.100.1", "aa:00:00:00:00:01");
        set.set_own_lease(&mine);
        let a = set.replace(vec![
            mine.clone(),
            lease("10.244.2.0/24", "198.51.100.2", "aa:00:00:00:00:02"),
        ]);
        assert_eq!((a.added, a.own, a.touched_own), (1, None, true));
        // Deleted by hand.
        let a = set.apply(events(vec![LeaseEvent::Removed(mine.clone())]));
        assert_eq!(a.own, Some(OwnLease::Deleted));
        assert_eq!(a.removed, 0, "our own lease is not a peer");
        // Re-created by us: fine again.
        let a = set.apply(events(vec![LeaseEvent::Added(mine.clone())]));
        assert_eq!((a.own, a.touched_own), (None, true));
        // Overwritten by another node.
        let thief = lease("10.244.1.0/24", "198.51.100.9", "aa:00:00:00:00:09");
        let a = set.apply(events(vec![LeaseEvent::Added(thief)]));
        assert_eq!(
            a.own,
            Some(OwnLease::Overwritten {
                holder: "198.51.100.9".parse().unwrap()
            })
        );
        assert_eq!(set.own_state(), a.own);
        assert_eq!(
            set.len(),
            1,
            "the thief on our subnet is not a peer while it is ours"
        );
        // Deleted and re-created within one batch: the end state counts.
        let mut b = Applied::default();
        b.merge(set.apply(events(vec![LeaseEvent::Removed(mine.clone())])));
        b.merge(set.apply(events(vec![LeaseEvent::Added(mine.clone())])));
        assert_eq!((b.own, b.touched_own), (None, true));
        // Events on other keys say nothing about ours.
        let a = set.apply(events(vec![LeaseEvent::Added(lease(
            "10.244.3.0/24",
            "198.51.100.3",
            "aa:00:00:00:00:03",
        ))]));
        assert!(!a.touched_own);
        // A listing without our lease.
        let a = set.replace(vec![lease(
            "10.244.2.0/24",
            "198.51.100.2",
            "aa:00:00:00:00:02",
        )]);
        assert_eq!(a.own, Some(OwnLease::Deleted));
    }

    #[test]
    fn a_new_own_subnet_turns_the_old_holder_into_a_peer_without_a_listing() {
        let mut set = PeerSet::new(None);
        let mine = lease("10.244.1.0/24", "198.51.100.1", "aa:00:00:00:00:01");
        set.set_own_lease(&mine);
        set.replace(vec![mine]);
        let thief = lease("10.244.1.0/24", "198.51.100.9", "aa:00:00:00:00:09");
        set.apply(events(vec![LeaseEvent::Added(thief)]));
        assert!(set.is_empty());
        let new = lease("10.244.5.0/24", "198.51.100.1", "aa:00:00:00:00:01");
        set.set_own_lease(&new);
        set.apply(events(vec![LeaseEvent::Added(new)]));
        let p = set.peers();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].subnet, "10.244.1.0/24".parse::<Ipv4Net>().unwrap());
        assert_eq!(set.own_state(), None);
    }

    #[test]
    fn a_thousand_added_at_once_land_in_one_batch() {
        let mut set = PeerSet::new(None);
        let evs = (0..1000u32)
            .map(|i| {
                let subnet = format!("10.{}.{}.0/24", 100 + i / 256, i % 256);
                LeaseEvent::Added(lease(&subnet, "198.51.100.2", "aa:00:00:00:00:02"))
            })
            .collect();
        let a = set.apply(events(evs));
        assert_eq!(a.added, 1000);
        assert_eq!(set.peers().len(), 1000);
    }
}
