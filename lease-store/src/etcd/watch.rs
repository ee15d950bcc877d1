//! The lease watch: an etcd watch on the subnets prefix that survives etcd
//! restarts (re-opened from the last delivered revision, with backoff) and
//! compaction (a fresh list delivered as a snapshot).

use futures::stream;

use super::codec::{Backoff, Translated};
use super::store::EtcdStore;
use crate::lease::Lease;
use crate::store::{LeaseEvent, LeaseWatch, Result, Revision, WatchUpdate};

struct State {
    store: EtcdStore,
    /// The first revision not yet delivered (etcd's inclusive start).
    next: Revision,
    own_key: Option<String>,
    raw: Option<etcd_client::WatchStream>,
    backoff: Backoff,
}

/// What one raw etcd response became.
enum Step {
    Deliver(WatchUpdate),
    Nothing,
    /// Re-open the watch after a pause (etcd went away or failed).
    Reopen(String),
    /// The history we need is gone or incomplete: list again.
    Resync,
}

pub(super) fn stream(store: EtcdStore, from: Revision, own_key: Option<String>) -> LeaseWatch {
    let backoff = Backoff::new(store.opts.backoff_initial, store.opts.backoff_max);
    let state = State {
        store,
        next: from.saturating_add(1).max(1),
        own_key,
        raw: None,
        backoff,
    };
    Box::pin(stream::unfold(state, |mut st| async move {
        let update = st.next_update().await;
        Some((Ok(update), st))
    }))
}

impl State {
    /// Loops until there is something to deliver; transient failures are
    /// retried here forever, with backoff, as the consumer cannot do better.
    async fn next_update(&mut self) -> WatchUpdate {
        loop {
            let step = self.step().await;
            match step {
                Step::Deliver(u) => return u,
                Step::Nothing => {}
                Step::Reopen(why) => {
                    self.raw = None;
                    self.store.rotate(self.store.endpoint_index());
                    let delay = self.backoff.next_delay();
                    tracing::warn!(reason = %why, next_revision = self.next, retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "etcd watch interrupted; re-opening");
                    tokio::time::sleep(delay).await;
                }
                Step::Resync => {
                    self.raw = None;
                    match self.snapshot().await {
                        Ok(u) => return u,
                        Err(e) => {
                            let delay = self.backoff.next_delay();
                            tracing::warn!(error = %e, retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "listing leases for a resync failed");
                            tokio::time::sleep(delay).await;
                        }
                    }
                }
            }
        }
    }

    async fn snapshot(&mut self) -> Result<WatchUpdate> {
        let (leases, revision) = crate::store::LeaseStore::list(&self.store).await?;
        let own = self.own_key.as_deref();
        let leases: Vec<Lease> = leases
            .into_iter()
            .filter(|l| Some(l.key().as_str()) != own)
            .collect();
        self.next = revision + 1;
        self.backoff.reset();
        Ok(WatchUpdate::Snapshot { leases, revision })
    }

    async fn step(&mut self) -> Step {
        let raw = match &mut self.raw {
            Some(r) => r,
            None => match self.store.open_watch(self.next).await {
                Ok(r) => self.raw.insert(r),
                Err(e) => return Step::Reopen(e.to_string()),
            },
        };
        let resp = match raw.message().await {
            Ok(Some(r)) => r,
            Ok(None) => return Step::Reopen("etcd closed the watch stream".into()),
            Err(e) => return Step::Reopen(e.to_string()),
        };
        if resp.compact_revision() != 0 {
            tracing::info!(
                wanted = self.next,
                compacted_to = resp.compact_revision(),
                "watch history compacted; listing the table again"
            );
            return Step::Resync;
        }
        if resp.canceled() {
            return Step::Reopen(format!(
                "etcd cancelled the watch: {}",
                resp.cancel_reason()
            ));
        }
        self.backoff.reset();
        if resp.events().is_empty() {
            // A progress notification: everything up to the header's
            // revision was sent, so a re-open may start after it.
            if !resp.created() {
                if let Some(h) = resp.header() {
                    self.next = self.next.max(h.revision() + 1);
                }
            }
            return Step::Nothing;
        }
        let mut events = Vec::with_capacity(resp.events().len());
        let mut lease_ids = Vec::new();
        let mut last = self.next - 1;
        for ev in resp.events() {
            if let Some(kv) = ev.kv() {
                last = last.max(kv.mod_revision());
            }
            match self.store.translate(ev, self.own_key.as_deref()) {
                None | Some(Translated::Skip) => {}
                Some(Translated::Resync) => return Step::Resync,
                Some(Translated::Bad(e)) => {
                    tracing::warn!(error = %e, "skipping undecodable lease event")
                }
                Some(Translated::Event {
                    event,
                    needs_expiry,
                }) => {
                    lease_ids.extend(needs_expiry);
                    events.push((event, needs_expiry));
                }
            }
        }
        // One concurrent batch of TTL look-ups per response, not one round
        // trip per event (a replay delivers thousands per response).
        let expirations = if lease_ids.is_empty() {
            Default::default()
        } else {
            match self.store.expirations(lease_ids).await {
                Ok(e) => e,
                // Nothing delivered yet: re-opening replays these events.
                Err(e) => return Step::Reopen(e.to_string()),
            }
        };
        let events: Vec<LeaseEvent> = events
            .into_iter()
            .map(|(mut event, id)| {
                if let (Some(id), LeaseEvent::Added(l)) = (id, &mut event) {
                    l.expiration = expirations
                        .get(&id)
                        .copied()
                        .or_else(|| Some(std::time::SystemTime::now()));
                }
                event
            })
            .collect();
        self.next = last + 1;
        if events.is_empty() {
            return Step::Nothing;
        }
        Step::Deliver(WatchUpdate::Events {
            events,
            revision: last,
        })
    }
}
