//! The peer view behind the lease watch: it takes the events of kube's
//! runtime watcher (one node at a time) and says which `WatchUpdate`s they
//! mean. Pure, so it is unit-tested without an API server; the I/O loop is
//! in `watch.rs`.
//!
//! - A (re)list (`Init`, `InitApply`..., `InitDone`) is buffered and ends in
//!   a `Snapshot` of the managed peers, so a 410 Gone → relist reaches the
//!   consumer as the resync the trait describes. The one exception is the
//!   first list of a watch opened from the revision of this store's own
//!   `list()`: the view at that revision is known, so the consumer gets
//!   only what changed since (as events), or nothing.
//! - `Apply`/`Delete` are compared with the lease last delivered for that
//!   node: heartbeats give nothing, an IPv6-only annotation change is an
//!   update, losing the annotation or deleting the node is a removal with
//!   the last attributes.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Node;

use super::mapping;
use crate::lease::Lease;
use crate::store::{LeaseEvent, Revision, WatchUpdate};

/// Managed peers by node name.
pub(super) type Peers = HashMap<String, Lease>;

pub(super) struct PeerView {
    prefix: String,
    own_key: Option<String>,
    /// The lease each managed node had when last delivered.
    known: Peers,
    /// The view at the watch's `from` revision, when the store knows it:
    /// the first list is then delivered as a difference.
    base: Option<(Revision, Peers)>,
    /// The list in progress: its peers and its newest resourceVersion.
    listing: Option<(Peers, Revision)>,
}

impl PeerView {
    pub(super) fn new(
        prefix: &str,
        own_key: Option<String>,
        base: Option<(Revision, Peers)>,
    ) -> Self {
        let mut view = PeerView {
            prefix: prefix.to_string(),
            own_key,
            known: Peers::new(),
            base: None,
            listing: None,
        };
        view.base = base.map(|(rev, peers)| (rev, view.without_own(peers)));
        view
    }

    fn is_own(&self, l: &Lease) -> bool {
        self.own_key.as_deref() == Some(l.key().as_str())
    }

    fn without_own(&self, mut peers: Peers) -> Peers {
        peers.retain(|_, l| !self.is_own(l));
        peers
    }

    /// The node's lease, when flannel manages it and it is not ours. A node
    /// with unusable flannel data counts as absent: routes to it would be
    /// wrong anyway.
    fn lease_of(&self, node: &Node) -> Option<Lease> {
        match mapping::node_lease(node, &self.prefix) {
            Ok(l) => l.filter(|l| !self.is_own(l)),
            Err(e) => {
                tracing::warn!(error = %e, "a node's flannel data is unusable; treating it as no peer");
                None
            }
        }
    }

    /// `Init`: a list starts (again); a list cut short by an error is
    /// dropped.
    pub(super) fn init(&mut self) {
        self.listing = Some((Peers::new(), 0));
    }

    /// `InitApply`: one node of the list.
    pub(super) fn init_apply(&mut self, node: &Node) {
        let lease = self.lease_of(node);
        let rv = mapping::resource_version(node);
        let (peers, newest) = self.listing.get_or_insert_with(|| (Peers::new(), 0));
        *newest = (*newest).max(rv);
        if let Some(l) = lease {
            peers.insert(mapping::node_name(node).to_string(), l);
        }
    }

    /// `InitDone`: the list is complete. The watcher does not pass on the
    /// list's own resourceVersion, so the revision given is the newest
    /// among the listed nodes (never older than the watch's `from`).
    pub(super) fn init_done(&mut self) -> Option<WatchUpdate> {
        let (peers, newest) = self.listing.take().unwrap_or_default();
        match self.base.take() {
            Some((from, base)) => {
                let mut events = diff(&base, &peers);
                self.known = peers;
                if events.is_empty() {
                    return None;
                }
                // Removals first: a subnet that moved to another node must
                // leave before it comes back.
                events.sort_by_key(|e| matches!(e, LeaseEvent::Added(_)));
                Some(WatchUpdate::Events {
                    events,
                    revision: newest.max(from),
                })
            }
            None => {
                let leases = peers.values().cloned().collect();
                self.known = peers;
                Some(WatchUpdate::Snapshot {
                    leases,
                    revision: newest,
                })
            }
        }
    }

    /// `Apply` (added or modified) and `Delete`.
    pub(super) fn change(&mut self, node: &Node, deleted: bool) -> Option<WatchUpdate> {
        let name = mapping::node_name(node);
        let after = if deleted { None } else { self.lease_of(node) };
        let before = match self.known.remove(name) {
            Some(l) => Some(l),
            // Not seen before but deleted: its last state is in the event.
            None if deleted => self.lease_of(node),
            None => None,
        };
        if let Some(l) = &after {
            self.known.insert(name.to_string(), l.clone());
        }
        let events = mapping::node_change(before.as_ref(), after.as_ref());
        (!events.is_empty()).then(|| WatchUpdate::Events {
            events,
            revision: mapping::resource_version(node),
        })
    }
}

/// The events that turn `before` into `after`, node by node.
fn diff(before: &Peers, after: &Peers) -> Vec<LeaseEvent> {
    let mut events = Vec::new();
    for (name, l) in before {
        events.extend(mapping::node_change(Some(l), after.get(name)));
    }
    for (name, l) in after {
        if !before.contains_key(name) {
            events.extend(mapping::node_change(None, Some(l)));
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const P: &str = mapping::DEFAULT_PREFIX;

    fn node(name: &str, cidr: &str, rv: i64, managed: bool, v6ip: Option<&str>) -> Node {
        let mut ann = vec![
            (format!("{P}backend-type"), "vxlan".to_string()),
            (format!("{P}public-ip"), "192.0.2.1".to_string()),
        ];
        if managed {
            ann.push((format!("{P}kube-subnet-manager"), "true".to_string()));
        }
        if let Some(ip) = v6ip {
            ann.push((format!("{P}public-ipv6"), ip.to_string()));
        }
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                resource_version: Some(rv.to_string()),
                annotations: Some(ann.into_iter().collect()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidrs: Some(vec![cidr.into()]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn lease(n: &Node) -> Lease {
        mapping::node_lease(n, P).unwrap().unwrap()
    }

    fn list(v: &mut PeerView, nodes: &[&Node]) -> Option<WatchUpdate> {
        v.init();
        for n in nodes {
            v.init_apply(n);
        }
        v.init_done()
    }

    #[test]
    fn a_list_is_a_snapshot_of_managed_peers_without_our_own_node() {
        let a = node("a", "10.244.1.0/24", 5, true, None);
        let b = node("b", "10.244.2.0/24", 9, true, None);
        let c = node("c", "10.244.3.0/24", 7, false, None);
        let mut v = PeerView::new(P, Some(lease(&a).key()), None);
        match list(&mut v, &[&a, &b, &c]) {
            Some(WatchUpdate::Snapshot { leases, revision }) => {
                assert_eq!(leases, vec![lease(&b)]);
                assert_eq!(revision, 9, "the newest listed resourceVersion");
            }
            other => panic!("expected a snapshot, got {other:?}"),
        }
        // A relist (after 410 Gone) is a snapshot again, and replaces the
        // view: b is gone from it, so b coming back is an addition.
        assert!(matches!(
            list(&mut v, &[&a, &c]),
            Some(WatchUpdate::Snapshot { leases, .. }) if leases.is_empty()
        ));
        assert_eq!(
            v.change(&b, false),
            Some(WatchUpdate::Events {
                events: vec![LeaseEvent::Added(lease(&b))],
                revision: 9
            })
        );
    }

    #[test]
    fn an_interrupted_list_is_dropped() {
        let a = node("a", "10.244.1.0/24", 5, true, None);
        let b = node("b", "10.244.2.0/24", 6, true, None);
        let mut v = PeerView::new(P, None, None);
        v.init();
        v.init_apply(&a);
        // The list failed; the watcher starts over.
        v.init();
        v.init_apply(&b);
        match v.init_done() {
            Some(WatchUpdate::Snapshot { leases, .. }) => assert_eq!(leases, vec![lease(&b)]),
            other => panic!("expected a snapshot of b only, got {other:?}"),
        }
    }

    #[test]
    fn the_first_list_from_a_known_revision_is_a_difference() {
        let a = node("a", "10.244.1.0/24", 5, true, None);
        let b = node("b", "10.244.2.0/24", 6, true, None);
        let b2 = node("b", "10.244.2.0/24", 11, true, Some("2001:db8::2"));
        let c = node("c", "10.244.3.0/24", 12, true, None);
        let base: Peers = [("a", &a), ("b", &b)]
            .into_iter()
            .map(|(n, node)| (n.to_string(), lease(node)))
            .collect();
        // Nothing changed: nothing to deliver.
        let mut v = PeerView::new(P, None, Some((10, base.clone())));
        assert_eq!(list(&mut v, &[&a, &b]), None);
        // a deleted, b's IPv6 changed, c added.
        let mut v = PeerView::new(P, None, Some((10, base)));
        match list(&mut v, &[&b2, &c]) {
            Some(WatchUpdate::Events { events, revision }) => {
                assert_eq!(revision, 12);
                assert_eq!(events[0], LeaseEvent::Removed(lease(&a)));
                assert_eq!(events.len(), 3, "{events:?}");
                assert!(events.contains(&LeaseEvent::Added(lease(&b2))));
                assert!(events.contains(&LeaseEvent::Added(lease(&c))));
            }
            other => panic!("expected events, got {other:?}"),
        }
        // Only the first list: a relist later is a snapshot.
        assert!(matches!(
            list(&mut v, &[&c]),
            Some(WatchUpdate::Snapshot { .. })
        ));
    }

    #[test]
    fn changes_compare_with_what_was_delivered() {
        let a = node("a", "10.244.1.0/24", 5, true, None);
        let mut v = PeerView::new(P, None, None);
        list(&mut v, &[&a]);
        // A heartbeat: only the resourceVersion moved.
        assert_eq!(
            v.change(&node("a", "10.244.1.0/24", 6, true, None), false),
            None
        );
        // An IPv6-only annotation change is an update.
        let a6 = node("a", "10.244.1.0/24", 7, true, Some("2001:db8::1"));
        assert_eq!(
            v.change(&a6, false),
            Some(WatchUpdate::Events {
                events: vec![LeaseEvent::Added(lease(&a6))],
                revision: 7
            })
        );
        // Losing the annotation is a removal with the last attributes.
        let gone = node("a", "10.244.1.0/24", 8, false, None);
        assert_eq!(
            v.change(&gone, false),
            Some(WatchUpdate::Events {
                events: vec![LeaseEvent::Removed(lease(&a6))],
                revision: 8
            })
        );
        // An unmanaged node never counts.
        assert_eq!(v.change(&gone, true), None);
        // A node deleted before we knew it: removal from the event's object.
        let b = node("b", "10.244.2.0/24", 9, true, None);
        assert_eq!(
            v.change(&b, true),
            Some(WatchUpdate::Events {
                events: vec![LeaseEvent::Removed(lease(&b))],
                revision: 9
            })
        );
    }
}
