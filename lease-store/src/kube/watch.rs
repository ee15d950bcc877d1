//! The lease watch: kube's runtime watcher on all Nodes (a paginated list,
//! then a watch with bookmarks; it resumes from the last resourceVersion
//! when the server ends a watch and lists again after 410 Gone), its events
//! turned into lease updates by `view::PeerView`. Errors are retried here
//! with backoff, as the consumer cannot do better.

use std::time::Duration;

use futures::stream::{self, BoxStream};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher;

use super::store::KubeStore;
use super::view::{PeerView, Peers};
use crate::store::{LeaseWatch, Revision, WatchUpdate};

/// The API server ends a watch after this long; the watcher then resumes it.
const WATCH_TIMEOUT_SECS: u32 = 290;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

type Events = BoxStream<'static, watcher::Result<watcher::Event<Node>>>;

struct State {
    events: Events,
    view: PeerView,
    delay: Duration,
    backoff_max: Duration,
}

/// 410 Gone: the watcher lists again at once; no reason to wait.
fn is_gone(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::WatchError(s) => s.code == 410,
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => s.code == 410,
        _ => false,
    }
}

pub(super) fn stream(
    store: &KubeStore,
    own_key: Option<String>,
    base: Option<(Revision, Peers)>,
) -> LeaseWatch {
    let opts = store.options();
    // Bookmarks keep the resume point current; pages keep the first list
    // of a large cluster from being one giant response.
    let config = watcher::Config {
        bookmarks: true,
        page_size: Some(opts.page_size),
        timeout: Some(WATCH_TIMEOUT_SECS),
        ..Default::default()
    };
    let state = State {
        events: watcher(store.nodes.clone(), config).boxed(),
        view: PeerView::new(&opts.prefix, own_key, base),
        delay: FIRST_BACKOFF,
        backoff_max: opts.backoff_max,
    };
    Box::pin(stream::unfold(state, |mut st| async move {
        let update = st.next_update().await?;
        Some((Ok(update), st))
    }))
}

impl State {
    /// The next update; `None` only if the watcher itself ends, which it
    /// does not.
    async fn next_update(&mut self) -> Option<WatchUpdate> {
        loop {
            let event = match self.events.next().await? {
                Ok(ev) => ev,
                Err(e) if is_gone(&e) => {
                    tracing::info!(error = %e, "node watch expired; listing the nodes again");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = u64::try_from(self.delay.as_millis()).unwrap_or(u64::MAX), "node watch failed; retrying");
                    tokio::time::sleep(self.delay).await;
                    self.delay = (self.delay * 2).min(self.backoff_max);
                    continue;
                }
            };
            let update = match event {
                // Init comes before the list request: it proves nothing
                // about the server, so it does not reset the backoff.
                watcher::Event::Init => {
                    self.view.init();
                    continue;
                }
                watcher::Event::InitApply(node) => {
                    self.view.init_apply(&node);
                    None
                }
                watcher::Event::InitDone => self.view.init_done(),
                watcher::Event::Apply(node) => self.view.change(&node, false),
                watcher::Event::Delete(node) => self.view.change(&node, true),
            };
            self.delay = FIRST_BACKOFF;
            if update.is_some() {
                return update;
            }
        }
    }
}
