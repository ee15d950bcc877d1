//! The daemon's view of the other nodes: the lease table minus its own
//! lease, kept up to date from watch updates (pure, no I/O). The backend is
//! always given the complete set, so a missed or repeated event cannot leave
//! the datapath wrong after the next reconcile.

use std::collections::BTreeMap;

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
}

impl Applied {
    pub fn merge(&mut self, other: Applied) {
        self.added += other.added;
        self.removed += other.removed;
        self.snapshot |= other.snapshot;
    }
}

#[derive(Debug, Clone, Default)]
pub struct PeerSet {
    own: Option<Ipv4Net>,
    leases: BTreeMap<Ipv4Net, Lease>,
}

impl PeerSet {
    /// An empty view that will ignore `own` (this node's subnet).
    pub fn new(own: Option<Ipv4Net>) -> Self {
        PeerSet {
            own,
            leases: BTreeMap::new(),
        }
    }

    /// Changes which subnet is ours (after a lease was lost and re-acquired)
    /// and drops it from the view.
    pub fn set_own(&mut self, own: Option<Ipv4Net>) {
        self.own = own;
        if let Some(o) = own {
            self.leases.remove(&o);
        }
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
        applied
    }

    /// Applies one watch update.
    pub fn apply(&mut self, update: WatchUpdate) -> Applied {
        match update {
            WatchUpdate::Snapshot { leases, .. } => self.replace(leases),
            WatchUpdate::Events { events, .. } => {
                let mut applied = Applied::default();
                for event in events {
                    match event {
                        LeaseEvent::Added(lease) => {
                            if self.insert(lease) {
                                applied.added += 1;
                            }
                        }
                        LeaseEvent::Removed(lease) => {
                            if let Some(subnet) = lease.subnet {
                                if self.leases.remove(&subnet).is_some() {
                                    applied.removed += 1;
                                }
                            }
                        }
                    }
                }
                applied
            }
        }
    }

    /// Inserts or updates a peer's lease; false for our own or an IPv6-only
    /// lease (nothing to program for it yet).
    fn insert(&mut self, lease: Lease) -> bool {
        let Some(subnet) = lease.subnet else {
            return false;
        };
        if self.own == Some(subnet) {
            return false;
        }
        self.leases.insert(subnet, lease);
        true
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Every lease in the view (own subnet excluded), ordered by subnet;
    /// the daemon checks them (`validate::select`) before programming.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }

    /// The desired peers for the backend, ordered by subnet, unchecked.
    pub fn peers(&self) -> Vec<Peer> {
        self.leases.values().filter_map(Peer::from_lease).collect()
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
