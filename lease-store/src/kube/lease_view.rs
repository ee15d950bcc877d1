//! The peer view behind the Lease-object watch: it holds the decoded Lease
//! objects as the API server last described them and says which
//! `LeaseEvent`s a change, a relist or the passing of time means for a
//! consumer. Pure (time is an argument), so it is unit-tested without an
//! API server; the I/O loop is in `lease_store.rs`.
//!
//! What the consumer has is kept per object name (`known`); after every
//! input the effective set (live, decodable, one lease per holder, not our
//! own) is compared with it. Expiry needs no API event: when the earliest
//! known expiration passes, `expire` gives the removals.

use std::collections::HashMap;
use std::time::SystemTime;

use k8s_openapi::api::coordination::v1::Lease as KLease;

use super::lease_map::{self, Decoded, LeaseObjectError};
use crate::lease::Lease;
use crate::store::LeaseEvent;

/// Leases by object name.
pub(super) type Peers = HashMap<String, Lease>;

pub(super) struct LeaseView {
    prefix: String,
    own_key: Option<String>,
    /// Every decodable object of ours, expired ones included (they come back
    /// to life when renewed).
    objects: HashMap<String, Decoded>,
    /// What the consumer was given, by object name.
    known: Peers,
}

impl LeaseView {
    pub(super) fn new(prefix: &str, own_key: Option<String>) -> Self {
        LeaseView {
            prefix: prefix.to_string(),
            own_key,
            objects: HashMap::new(),
            known: Peers::new(),
        }
    }

    /// Starts from a table the consumer already has (the store's own last
    /// list): `objects` as decoded then, `known` the effective set of it.
    pub(super) fn with_base(
        prefix: &str,
        own_key: Option<String>,
        objects: Vec<Decoded>,
        now: SystemTime,
    ) -> Self {
        let mut v = LeaseView::new(prefix, own_key);
        v.objects = objects.into_iter().map(|d| (d.name.clone(), d)).collect();
        v.known = v.effective(now).0;
        v
    }

    /// The leases the consumer should have at `now`, and the objects
    /// skipped for naming a holder another Lease already claims.
    fn effective(&self, now: SystemTime) -> (Peers, Vec<LeaseObjectError>) {
        let live: Vec<Decoded> = self
            .objects
            .values()
            .filter(|d| d.is_live(now))
            .cloned()
            .collect();
        let (kept, rejected) = lease_map::dedupe_holders(live);
        let peers = kept
            .into_iter()
            .filter(|d| self.own_key.as_deref() != Some(d.lease.key().as_str()))
            .map(|d| (d.name, d.lease))
            .collect();
        (peers, rejected)
    }

    /// Brings `known` to the effective set; the events that does.
    fn sync(&mut self, now: SystemTime) -> (Vec<LeaseEvent>, Vec<LeaseObjectError>) {
        let (eff, rejected) = self.effective(now);
        let events = diff(&self.known, &eff);
        self.known = eff;
        (events, rejected)
    }

    /// A (re)list: the whole table. Returns the snapshot for the consumer
    /// and the objects skipped.
    pub(super) fn relist(
        &mut self,
        objs: &[KLease],
        now: SystemTime,
    ) -> (Vec<Lease>, Vec<LeaseObjectError>) {
        let mut rejected = Vec::new();
        self.objects.clear();
        for o in objs.iter().filter(|o| lease_map::is_ours(o, &self.prefix)) {
            match lease_map::decode(o, &self.prefix) {
                Ok(d) => {
                    self.objects.insert(d.name.clone(), d);
                }
                Err(e) => rejected.push(e),
            }
        }
        let (eff, dups) = self.effective(now);
        rejected.extend(dups);
        self.known = eff;
        (self.known.values().cloned().collect(), rejected)
    }

    /// An ADDED/MODIFIED (`deleted` false) or DELETED event.
    pub(super) fn change(
        &mut self,
        obj: &KLease,
        deleted: bool,
        now: SystemTime,
    ) -> (Vec<LeaseEvent>, Vec<LeaseObjectError>) {
        let name = lease_map::name_of(obj).to_string();
        let mut rejected = Vec::new();
        let was_known = self.known.contains_key(&name);
        let previous = self.objects.remove(&name);
        // A write that was processed only after its lease ran out (a slow
        // consumer): it was live when written, so it is delivered and then
        // expires at once, as a store with server-side expiry would say.
        let mut late = None;
        if !deleted && lease_map::is_ours(obj, &self.prefix) {
            match lease_map::decode(obj, &self.prefix) {
                Ok(d) => {
                    let written_now = previous.as_ref().is_none_or(|p| p.renewed != d.renewed);
                    if written_now && !d.is_live(now) && !was_known {
                        late = Some(d.clone());
                    }
                    self.objects.insert(name.clone(), d);
                }
                // Unusable now: it counts as gone (routes to it would be
                // wrong anyway).
                Err(e) => rejected.push(e),
            }
        }
        let (mut events, dups) = self.sync(now);
        rejected.extend(dups);
        if let Some(d) = late {
            if self.own_key.as_deref() != Some(d.lease.key().as_str()) {
                events.push(LeaseEvent::Added(d.lease.clone()));
                self.known.insert(name, d.lease);
            }
        }
        if deleted && !was_known {
            // A watch resumed from a revision whose table this view never
            // saw: the deletion still means a removal, with the object's
            // last attributes.
            if let Ok(d) = lease_map::decode(obj, &self.prefix) {
                if self.own_key.as_deref() != Some(d.lease.key().as_str()) {
                    events.push(LeaseEvent::Removed(d.lease));
                }
            }
        }
        (events, rejected)
    }

    /// Time passed: the removals of leases that expired unrenewed.
    pub(super) fn expire(&mut self, now: SystemTime) -> Vec<LeaseEvent> {
        self.sync(now).0
    }

    /// When the next known lease runs out, if any does.
    pub(super) fn next_expiry(&self) -> Option<SystemTime> {
        self.known.values().filter_map(|l| l.expiration).min()
    }
}

/// The events that turn `before` into `after`, removals first (a subnet
/// that moved to another node must leave before it comes back).
fn diff(before: &Peers, after: &Peers) -> Vec<LeaseEvent> {
    let mut removed = Vec::new();
    let mut added = Vec::new();
    for (name, old) in before {
        match after.get(name) {
            None => removed.push(LeaseEvent::Removed(old.clone())),
            Some(new) if !crate::alloc::same_node(&old.attrs, &new.attrs) => {
                // Another node took the subnet over (after expiry): the old
                // node's entries must go, not be overwritten.
                removed.push(LeaseEvent::Removed(old.clone()));
                added.push(LeaseEvent::Added(new.clone()));
            }
            Some(new) => {
                for e in super::mapping::node_change(Some(old), Some(new)) {
                    match e {
                        LeaseEvent::Removed(_) => removed.push(e),
                        LeaseEvent::Added(_) => added.push(e),
                    }
                }
            }
        }
    }
    for (name, new) in after {
        if !before.contains_key(name) {
            added.push(LeaseEvent::Added(new.clone()));
        }
    }
    removed.extend(added);
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::lease_map::{encode, Write};
    use crate::lease::LeaseAttrs;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    const P: &str = crate::kube::mapping::DEFAULT_PREFIX;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    fn attrs(n: u8, mac: u8) -> LeaseAttrs {
        LeaseAttrs {
            public_ip: Ipv4Addr::new(192, 0, 2, n),
            public_ipv6: None,
            backend_type: "vxlan".into(),
            backend_data: Some(
                serde_json::json!({"VNI": 1, "VtepMAC": format!("0a:58:00:00:00:{mac:02x}")}),
            ),
            backend_v6_data: None,
        }
    }

    /// Node n's lease on 10.244.<sn>.0/24, renewed at t(renewed), ttl 10 s.
    fn obj(sn: u8, n: u8, mac: u8, renewed: u64, rv: u64) -> KLease {
        let l = Lease {
            subnet: Some(format!("10.244.{sn}.0/24").parse().unwrap()),
            ipv6_subnet: None,
            attrs: attrs(n, mac),
            expiration: None,
            revision: 0,
        };
        let holder = format!("node{n}");
        let mut o = encode(
            &l,
            &Write {
                namespace: "ns",
                prefix: P,
                holder: &holder,
                owner: None,
                ttl: Some(Duration::from_secs(10)),
                now: t(renewed),
                acquired: None,
                resource_version: None,
            },
        );
        o.metadata.resource_version = Some(rv.to_string());
        o
    }

    fn ips(events: &[LeaseEvent]) -> Vec<(char, Ipv4Addr)> {
        events
            .iter()
            .map(|e| match e {
                LeaseEvent::Added(l) => ('+', l.attrs.public_ip),
                LeaseEvent::Removed(l) => ('-', l.attrs.public_ip),
            })
            .collect()
    }

    #[test]
    fn renewals_are_silent_and_expiry_removes_without_an_event() {
        let mut v = LeaseView::new(P, None);
        let (snap, rej) = v.relist(&[obj(1, 1, 1, 0, 5)], t(1));
        assert_eq!((snap.len(), rej.len()), (1, 0));
        assert_eq!(v.next_expiry(), Some(t(10)));
        // Renewed: same attributes, nothing to say; expiry moves on.
        let (ev, _) = v.change(&obj(1, 1, 1, 8, 6), false, t(8));
        assert!(ev.is_empty(), "{ev:?}");
        assert_eq!(v.next_expiry(), Some(t(18)));
        assert!(v.expire(t(17)).is_empty());
        let ev = v.expire(t(18));
        assert_eq!(ips(&ev), [('-', Ipv4Addr::new(192, 0, 2, 1))]);
        assert_eq!(v.next_expiry(), None);
        // Renewed after expiring (the node came back): added again.
        let (ev, _) = v.change(&obj(1, 1, 1, 30, 7), false, t(30));
        assert_eq!(ips(&ev), [('+', Ipv4Addr::new(192, 0, 2, 1))]);
    }

    #[test]
    fn a_write_seen_after_its_expiry_is_added_then_removed() {
        let mut v = LeaseView::new(P, None);
        v.relist(&[], t(0));
        let (ev, _) = v.change(&obj(1, 1, 1, 0, 5), false, t(30));
        assert_eq!(ips(&ev), [('+', Ipv4Addr::new(192, 0, 2, 1))]);
        assert_eq!(v.next_expiry(), Some(t(10)));
        assert_eq!(ips(&v.expire(t(30))), [('-', Ipv4Addr::new(192, 0, 2, 1))]);
        // The same stale object again (say a label edit): nothing.
        let (ev, _) = v.change(&obj(1, 1, 1, 0, 6), false, t(31));
        assert!(ev.is_empty(), "{ev:?}");
    }

    #[test]
    fn a_takeover_removes_the_old_holder_first() {
        let mut v = LeaseView::new(P, None);
        v.relist(&[obj(1, 1, 1, 0, 5)], t(1));
        let (ev, _) = v.change(&obj(1, 2, 2, 5, 6), false, t(5));
        assert_eq!(
            ips(&ev),
            [
                ('-', Ipv4Addr::new(192, 0, 2, 1)),
                ('+', Ipv4Addr::new(192, 0, 2, 2))
            ]
        );
        // A new VTEP MAC of the same node is an update.
        let (ev, _) = v.change(&obj(1, 2, 9, 6, 7), false, t(6));
        assert_eq!(ips(&ev), [('+', Ipv4Addr::new(192, 0, 2, 2))]);
        let (ev, _) = v.change(&obj(1, 2, 9, 6, 8), true, t(6));
        assert_eq!(ips(&ev), [('-', Ipv4Addr::new(192, 0, 2, 2))]);
    }

    #[test]
    fn bad_objects_are_skipped_and_reported_and_own_lease_is_left_out() {
        let own = obj(3, 3, 3, 0, 4);
        let own_key = lease_map::decode(&own, P).unwrap().lease.key();
        let mut v = LeaseView::new(P, Some(own_key));
        let mut bad = obj(2, 2, 2, 0, 5);
        bad.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(format!("{P}public-ip"), "garbage".into());
        let mut foreign = obj(4, 4, 4, 0, 6);
        foreign.metadata.labels = None;
        let (snap, rej) = v.relist(&[obj(1, 1, 1, 0, 3), bad.clone(), own, foreign], t(1));
        assert_eq!(snap.len(), 1, "{snap:?}");
        assert_eq!(rej.len(), 1);
        assert!(rej[0].to_string().contains("garbage"));
        // A known lease edited into garbage: removed, reported.
        let mut bad1 = obj(1, 1, 1, 0, 7);
        bad1.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(format!("{P}subnet"), "10.244.200.0/24".into());
        let (ev, rej) = v.change(&bad1, false, t(2));
        assert_eq!(ips(&ev), [('-', Ipv4Addr::new(192, 0, 2, 1))]);
        assert_eq!(rej.len(), 1);
    }

    #[test]
    fn a_second_lease_claiming_a_node_is_skipped() {
        let mut v = LeaseView::new(P, None);
        v.relist(&[obj(1, 1, 1, 5, 3)], t(6));
        // Node 1 again, on another subnet, renewed earlier: skipped.
        let (ev, rej) = v.change(&obj(2, 1, 1, 4, 4), false, t(6));
        assert!(ev.is_empty(), "{ev:?}");
        assert_eq!(rej.len(), 1);
        assert!(matches!(rej[0], LeaseObjectError::DuplicateHolder { .. }));
        // The first one expires: the second is then the node's lease, until
        // it expires too (it was renewed at 4, so it has already).
        let ev = v.expire(t(15));
        assert_eq!(ips(&ev), [('-', Ipv4Addr::new(192, 0, 2, 1))]);
    }
}
