//! The lease watch: a list+watch loop on all Nodes. It resumes from the last
//! resourceVersion seen (events or bookmarks) when the server ends a watch,
//! re-opens with backoff after errors, and lists again, delivering a
//! snapshot, when the server answers 410 Gone (history compacted).

use std::collections::HashMap;
use std::time::Duration;

use futures::stream::{self, BoxStream};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{WatchEvent, WatchParams};

use super::mapping;
use super::store::KubeStore;
use crate::lease::Lease;
use crate::store::{LeaseEvent, LeaseWatch, Revision, WatchUpdate};

/// The API server ends a watch after this long; we then resume it.
const WATCH_TIMEOUT_SECS: u32 = 290;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

struct State {
    store: KubeStore,
    /// The resourceVersion to watch from; `None` = list first.
    rv: Option<String>,
    own_key: Option<String>,
    /// The lease each managed node had when last delivered, by node name:
    /// heartbeats that change nothing are dropped, and a deletion carries
    /// the attributes peers need to clean up.
    known: HashMap<String, Lease>,
    raw: Option<BoxStream<'static, kube::Result<WatchEvent<Node>>>>,
    delay: Duration,
}

enum Step {
    Deliver(WatchUpdate),
    Nothing,
    /// Open the watch again, after a pause when something failed.
    Reopen(Option<String>),
    /// 410 Gone: list again.
    Resync,
}

pub(super) fn stream(store: KubeStore, from: Revision, own_key: Option<String>) -> LeaseWatch {
    let state = State {
        store,
        rv: (from > 0).then(|| from.to_string()),
        own_key,
        known: HashMap::new(),
        raw: None,
        delay: FIRST_BACKOFF,
    };
    Box::pin(stream::unfold(state, |mut st| async move {
        let update = st.next_update().await;
        Some((Ok(update), st))
    }))
}

fn is_gone(code: u16) -> bool {
    code == 410
}

impl State {
    /// Loops until there is something to deliver; transient failures are
    /// retried here, with backoff, as the consumer cannot do better.
    async fn next_update(&mut self) -> WatchUpdate {
        loop {
            match self.step().await {
                Step::Deliver(u) => return u,
                Step::Nothing => {}
                Step::Reopen(why) => {
                    self.raw = None;
                    if let Some(why) = why {
                        tracing::warn!(reason = %why, retry_in = ?self.delay, "node watch failed; re-opening");
                        tokio::time::sleep(self.delay).await;
                        self.delay = (self.delay * 2).min(self.store.opts.backoff_max);
                    }
                }
                Step::Resync => {
                    self.raw = None;
                    self.rv = None;
                }
            }
        }
    }

    async fn snapshot(&mut self) -> Step {
        match self.store.list_named().await {
            Ok((named, revision)) => {
                let own = self.own_key.as_deref();
                self.known = named
                    .into_iter()
                    .filter(|(_, l)| Some(l.key().as_str()) != own)
                    .collect();
                let leases: Vec<Lease> = self.known.values().cloned().collect();
                self.rv = Some(revision.to_string());
                self.delay = FIRST_BACKOFF;
                Step::Deliver(WatchUpdate::Snapshot { leases, revision })
            }
            Err(e) => Step::Reopen(Some(format!("listing nodes: {e}"))),
        }
    }

    async fn step(&mut self) -> Step {
        let Some(rv) = self.rv.clone() else {
            return self.snapshot().await;
        };
        if self.raw.is_none() {
            let wp = WatchParams::default().timeout(WATCH_TIMEOUT_SECS);
            match self.store.nodes.watch(&wp, &rv).await {
                Ok(s) => self.raw = Some(s.boxed()),
                Err(kube::Error::Api(s)) if is_gone(s.code) => return Step::Resync,
                Err(e) => return Step::Reopen(Some(e.to_string())),
            }
        }
        let Some(raw) = self.raw.as_mut() else {
            return Step::Nothing;
        };
        match raw.next().await {
            // The server ended the watch (its timeout): resume at once.
            None => Step::Reopen(None),
            Some(Err(e)) => Step::Reopen(Some(e.to_string())),
            Some(Ok(ev)) => {
                self.delay = FIRST_BACKOFF;
                self.event(ev)
            }
        }
    }

    fn event(&mut self, ev: WatchEvent<Node>) -> Step {
        let (node, deleted) = match ev {
            WatchEvent::Added(n) | WatchEvent::Modified(n) => (n, false),
            WatchEvent::Deleted(n) => (n, true),
            WatchEvent::Bookmark(b) => {
                self.rv = Some(b.metadata.resource_version);
                return Step::Nothing;
            }
            WatchEvent::Error(s) if is_gone(s.code) => return Step::Resync,
            WatchEvent::Error(s) => {
                return Step::Reopen(Some(format!("watch error {}: {}", s.code, s.message)))
            }
        };
        if let Some(rv) = node.metadata.resource_version.clone() {
            self.rv = Some(rv);
        }
        let name = mapping::node_name(&node).to_string();
        let prefix = &self.store.opts.prefix;
        let after = if deleted {
            None
        } else {
            match mapping::node_lease(&node, prefix) {
                Ok(l) => l,
                Err(e) => {
                    // Treated as gone: its routes would be wrong anyway.
                    tracing::warn!(error = %e, "a node's flannel data is unusable");
                    None
                }
            }
        };
        // A deleted node we never saw (watch started from a revision):
        // its last state is in the event.
        let before = match self.known.remove(&name) {
            Some(l) => Some(l),
            None if deleted => mapping::node_lease(&node, prefix).ok().flatten(),
            None => None,
        };
        let own = self.own_key.as_deref();
        let is_own = |l: &Lease| Some(l.key().as_str()) == own;
        let before = before.filter(|l| !is_own(l));
        let after = after.filter(|l| !is_own(l));
        if let Some(l) = &after {
            self.known.insert(name, l.clone());
        }
        let events: Vec<LeaseEvent> = mapping::node_change(before.as_ref(), after.as_ref());
        if events.is_empty() {
            return Step::Nothing;
        }
        Step::Deliver(WatchUpdate::Events {
            events,
            revision: mapping::resource_version(&node),
        })
    }
}
