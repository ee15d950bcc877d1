//! A fake Kubernetes API server for Nodes (feature `kube-testing`, for
//! tests and benchmarks, never daemons), on 127.0.0.1, with the real
//! response shapes: `GET /api/v1/nodes` (a NodeList with
//! `metadata.resourceVersion`; paginated with `limit` and `continue`, pages
//! of one consistent snapshot with `remainingItemCount`), the same with
//! `watch=true` (a stream of `{"type":...,"object":...}` lines, BOOKMARK
//! events when asked, an ERROR with a 410 `Status` when the resourceVersion
//! is compacted away), `GET /api/v1/nodes/{name}` and
//! `PATCH /api/v1/nodes/{name}/status` (JSON merge patch, and strategic
//! merge patch for `status.conditions`).
//!
//! It is not an API server: no authentication, admission, selectors, other
//! resources or the main (non-status) node endpoint. No real API server can
//! be installed where this project is tested; see docs/KUBE-MODE.md.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

/// The nodes by name; values are shared so that a paginated list can keep
/// its snapshot without copying every node.
type Nodes = BTreeMap<String, Arc<Value>>;

/// A list request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    /// `limit`, when the client asked for pages.
    pub limit: Option<usize>,
    /// Whether it carried a `continue` token (a page after the first).
    pub continued: bool,
}

/// An unfinished paginated list: later pages come from this snapshot, as
/// the API server serves them at the first page's resourceVersion.
struct Paging {
    rv: u64,
    nodes: Nodes,
}

/// Paginated lists kept at once; the oldest is dropped (its continue token
/// then gets 410, as an expired token does on the API server).
const MAX_PAGINGS: usize = 64;

struct Inner {
    rv: u64,
    nodes: Nodes,
    /// (resourceVersion, type, object) after `oldest`.
    history: VecDeque<(u64, &'static str, Arc<Value>)>,
    /// Watches from a resourceVersion older than this get 410 Gone.
    oldest: u64,
    /// Bumped to end every open watch (as an API server restart does).
    epoch: u64,
    /// The resourceVersion of every watch request, in order.
    watch_requests: Vec<String>,
    list_requests: Vec<ListRequest>,
    pagings: BTreeMap<u64, Paging>,
    next_paging: u64,
    /// The label selector of every Lease list (not watch), in order.
    lease_lists: Vec<String>,
    /// `coordination.k8s.io/v1` Leases by "namespace/name".
    leases: BTreeMap<String, Arc<Value>>,
    /// Their (resourceVersion, type, object) after `oldest`.
    lease_history: VecDeque<(u64, &'static str, Arc<Value>)>,
    next_uid: u64,
}

struct Shared {
    inner: Mutex<Inner>,
    changed: tokio::sync::watch::Sender<u64>,
    bookmark_every: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not wedge the other tests' servers.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running server; dropping it stops it.
pub struct FakeApi {
    shared: Arc<Shared>,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A [`FakeApi`] running on a thread of its own (see
/// [`FakeApi::start_on_thread`]); derefs to the server.
pub struct FakeApiThread {
    api: FakeApi,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::ops::Deref for FakeApiThread {
    type Target = FakeApi;
    fn deref(&self) -> &FakeApi {
        &self.api
    }
}

impl Drop for FakeApiThread {
    fn drop(&mut self) {
        // Ending block_on drops the runtime and with it the server task.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A Node as the API server returns it: managed by flannel when
/// `annotations` has the kube-subnet-manager annotation.
pub fn node_json(name: &str, pod_cidrs: &[&str], annotations: &[(&str, &str)]) -> Value {
    let ann: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let mut spec = json!({});
    if let Some(first) = pod_cidrs.first() {
        spec = json!({ "podCIDR": first, "podCIDRs": pod_cidrs });
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": format!("uid-{name}"),
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": { "kubernetes.io/hostname": name },
            "annotations": ann,
        },
        "spec": spec,
        "status": {
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                "lastTransitionTime": "2026-01-01T00:00:00Z"
            }],
            "addresses": [{ "type": "InternalIP", "address": "192.0.2.200" }]
        }
    })
}

fn status(code: u16, reason: &str, message: String) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}

fn status_response(code: u16, reason: &str, message: String) -> Response {
    let sc = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (sc, axum::Json(status(code, reason, message))).into_response()
}

/// RFC 7386: objects merge, `null` deletes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => {
            let mut v = patch.clone();
            strip_nulls(&mut v);
            *target = v;
        }
    }
}

fn strip_nulls(v: &mut Value) {
    if let Some(o) = v.as_object_mut() {
        o.retain(|_, x| !x.is_null());
        o.values_mut().for_each(strip_nulls);
    }
}

/// The strategic merge of `status.conditions`: by `type`, as the Node
/// schema's patch merge key says; the rest is a JSON merge.
fn strategic_merge(target: &mut Value, patch: &Value) {
    let mut patch = patch.clone();
    let conds = patch
        .get_mut("status")
        .and_then(|s| s.as_object_mut())
        .and_then(|s| s.remove("conditions"));
    merge(target, &patch);
    if let Some(Value::Array(new)) = conds {
        let list = target
            .pointer_mut("/status")
            .and_then(|s| s.as_object_mut())
            .map(|s| s.entry("conditions").or_insert(json!([])));
        if let Some(Value::Array(list)) = list {
            for c in new {
                match list.iter_mut().find(|o| o.get("type") == c.get("type")) {
                    Some(old) => merge(old, &c),
                    None => list.push(c),
                }
            }
        }
    }
}

impl FakeApi {
    /// Starts a server sending a BOOKMARK after `bookmark_every` without
    /// events (the real one does so about once a minute).
    pub async fn start(bookmark_every: Duration) -> FakeApi {
        let (changed, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                rv: 100,
                nodes: BTreeMap::new(),
                history: VecDeque::new(),
                oldest: 100,
                epoch: 0,
                watch_requests: Vec::new(),
                list_requests: Vec::new(),
                lease_lists: Vec::new(),
                pagings: BTreeMap::new(),
                next_paging: 0,
                leases: BTreeMap::new(),
                lease_history: VecDeque::new(),
                next_uid: 0,
            }),
            changed,
            bookmark_every,
        });
        let app = Router::new()
            .route("/api/v1/nodes", get(list_or_watch))
            .route("/api/v1/nodes/{name}", get(get_node))
            .route(
                "/api/v1/nodes/{name}/status",
                get(get_node).patch(patch_status),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
                get(lease_list_or_watch).post(lease_create),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
                get(lease_get).put(lease_replace).delete(lease_delete),
            )
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind the fake API server on 127.0.0.1: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("fake API server address: {e}"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeApi { shared, addr, task }
    }

    /// Starts a server on a thread of its own with its own runtime, after
    /// running `prepare` on that thread: e.g. a `setns` into a test's
    /// network namespace, so that the server's 127.0.0.1 is that
    /// namespace's loopback. Dropping the handle stops the server and joins
    /// the thread.
    pub fn start_on_thread(
        bookmark_every: Duration,
        prepare: impl FnOnce() -> std::io::Result<()> + Send + 'static,
    ) -> std::io::Result<FakeApiThread> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fake-kube-api".into())
            .spawn(move || {
                let run = || -> std::io::Result<tokio::runtime::Runtime> {
                    prepare()?;
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                };
                let rt = match run() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let api = FakeApi::start(bookmark_every).await;
                    // The handle lives on the caller's side; this side only
                    // keeps the runtime (and so the server) running.
                    if ready_tx.send(Ok(api)).is_ok() {
                        let _ = stop_rx.await;
                    }
                });
            })?;
        let api = ready_rx.recv().map_err(|_| {
            std::io::Error::other("the fake API server thread ended before it started the server")
        })??;
        Ok(FakeApiThread {
            api,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for this server (plain HTTP, no credentials).
    pub fn client(&self) -> kube::Client {
        let uri = self
            .url()
            .parse()
            .unwrap_or_else(|e| panic!("fake API URL: {e}"));
        kube::Client::try_from(kube::Config::new(uri))
            .unwrap_or_else(|e| panic!("kube client for the fake API server: {e}"))
    }

    fn record(inner: &mut Inner, kind: &'static str, mut obj: Value) -> (u64, Arc<Value>) {
        inner.rv += 1;
        let rv = inner.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let obj = Arc::new(obj);
        inner.history.push_back((rv, kind, obj.clone()));
        (rv, obj)
    }

    fn notify(&self, rv: u64) {
        self.shared.changed.send_replace(rv);
    }

    /// Creates or replaces a node (ADDED or MODIFIED); returns its new
    /// resourceVersion.
    pub fn put_node(&self, node: Value) -> u64 {
        let name = node["metadata"]["name"].as_str().unwrap_or("").to_string();
        let rv = {
            let mut g = self.shared.lock();
            let kind = if g.nodes.contains_key(&name) {
                "MODIFIED"
            } else {
                "ADDED"
            };
            let (rv, obj) = Self::record(&mut g, kind, node);
            g.nodes.insert(name, obj);
            rv
        };
        self.notify(rv);
        rv
    }

    /// Creates many nodes in one go (one resourceVersion each, no wake-ups
    /// in between): for the benchmark.
    pub fn put_nodes(&self, nodes: impl IntoIterator<Item = Value>) -> u64 {
        let rv = {
            let mut g = self.shared.lock();
            for node in nodes {
                let name = node["metadata"]["name"].as_str().unwrap_or("").to_string();
                let (_, obj) = Self::record(&mut g, "ADDED", node);
                g.nodes.insert(name, obj);
            }
            g.rv
        };
        self.notify(rv);
        rv
    }

    /// Changes a node in place (MODIFIED); panics when it does not exist.
    pub fn update_node(&self, name: &str, f: impl FnOnce(&mut Value)) -> u64 {
        let rv = {
            let mut g = self.shared.lock();
            let mut node = g
                .nodes
                .get(name)
                .map(|n| Value::clone(n))
                .unwrap_or_else(|| panic!("fake API: no node {name} to update"));
            f(&mut node);
            let (rv, obj) = Self::record(&mut g, "MODIFIED", node);
            g.nodes.insert(name.to_string(), obj);
            rv
        };
        self.notify(rv);
        rv
    }

    pub fn delete_node(&self, name: &str) -> u64 {
        let rv = {
            let mut g = self.shared.lock();
            let node = g
                .nodes
                .remove(name)
                .unwrap_or_else(|| panic!("fake API: no node {name} to delete"));
            let rv = Self::record(&mut g, "DELETED", Value::clone(&node)).0;
            // The garbage collector's part: Leases owned by the node go.
            let uid = node["metadata"]["uid"].clone();
            let owned: Vec<String> = g
                .leases
                .iter()
                .filter(|(_, l)| {
                    l["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|o| o.iter().any(|r| r["uid"] == uid))
                })
                .map(|(k, _)| k.clone())
                .collect();
            let mut rv = rv;
            for k in owned {
                if let Some(l) = g.leases.remove(&k) {
                    rv = record_lease(&mut g, "DELETED", Value::clone(&l)).0;
                }
            }
            rv
        };
        self.notify(rv);
        rv
    }

    /// A write to some other resource: the cluster-wide resourceVersion
    /// moves without a node event (bookmarks then carry it).
    pub fn other_write(&self) -> u64 {
        let rv = {
            let mut g = self.shared.lock();
            g.rv += 1;
            g.rv
        };
        self.notify(rv);
        rv
    }

    pub fn node(&self, name: &str) -> Option<Value> {
        self.shared.lock().nodes.get(name).map(|n| Value::clone(n))
    }

    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Forgets the history up to now (etcd compaction): watches from older
    /// resourceVersions get 410 Gone.
    pub fn compact(&self) {
        let mut g = self.shared.lock();
        g.oldest = g.rv;
        let oldest = g.oldest;
        g.history.retain(|(rv, _, _)| *rv > oldest);
        g.lease_history.retain(|(rv, _, _)| *rv > oldest);
    }

    /// Ends every open watch, as an API server restart or a watch timeout
    /// does; clients must resume from their last resourceVersion.
    pub fn end_watches(&self) {
        let rv = {
            let mut g = self.shared.lock();
            g.epoch += 1;
            g.rv
        };
        self.notify(rv);
    }

    /// Ends every open watch and forgets the history past what any
    /// watcher saw (writes to other resources, then a compaction): each
    /// watcher's resume gets 410 Gone and must list again.
    pub fn end_watches_and_compact(&self) {
        let rv = {
            let mut g = self.shared.lock();
            g.epoch += 1;
            g.rv += 1;
            g.oldest = g.rv;
            let oldest = g.oldest;
            g.history.retain(|(rv, _, _)| *rv > oldest);
            g.lease_history.retain(|(rv, _, _)| *rv > oldest);
            g.rv
        };
        self.notify(rv);
    }

    pub fn watch_requests(&self) -> Vec<String> {
        self.shared.lock().watch_requests.clone()
    }

    /// Complete lists served (a paginated list counts once, at its first
    /// page).
    pub fn lists(&self) -> usize {
        self.shared
            .lock()
            .list_requests
            .iter()
            .filter(|r| !r.continued)
            .count()
    }

    /// Every list request (pages included), in order.
    pub fn list_requests(&self) -> Vec<ListRequest> {
        self.shared.lock().list_requests.clone()
    }

    /// The label selector of every Lease list so far (watches left out).
    pub fn lease_lists(&self) -> Vec<String> {
        self.shared.lock().lease_lists.clone()
    }
}

async fn get_node(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    match s.lock().nodes.get(&name) {
        Some(n) => axum::Json(Value::clone(n)).into_response(),
        None => status_response(404, "NotFound", format!("nodes \"{name}\" not found")),
    }
}

async fn patch_status(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let strategic = match ctype.as_str() {
        "application/merge-patch+json" => false,
        "application/strategic-merge-patch+json" => true,
        other => {
            return status_response(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"),
            )
        }
    };
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return status_response(400, "BadRequest", format!("invalid patch: {e}")),
    };
    let (rv, obj) = {
        let mut g = s.lock();
        let Some(mut node) = g.nodes.get(&name).map(|n| Value::clone(n)) else {
            return status_response(404, "NotFound", format!("nodes \"{name}\" not found"));
        };
        // The status subresource ignores changes to spec.
        let spec = node.get("spec").cloned();
        if strategic {
            strategic_merge(&mut node, &patch);
        } else {
            merge(&mut node, &patch);
        }
        if let Some(spec) = spec {
            node["spec"] = spec;
        }
        let (rv, obj) = FakeApi::record(&mut g, "MODIFIED", node);
        g.nodes.insert(name, obj.clone());
        (rv, obj)
    };
    s.changed.send_replace(rv);
    axum::Json(Value::clone(&obj)).into_response()
}

async fn list_or_watch(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let watch = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    if !watch {
        return list(&s, &q);
    }
    let from = q.get("resourceVersion").cloned().unwrap_or_default();
    let bookmarks = q.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let mut first = VecDeque::new();
    let (cursor, epoch) = {
        let mut g = s.lock();
        g.watch_requests.push(from.clone());
        match from.parse::<u64>() {
            // "" or "0": the current state as ADDED events, then changes.
            Err(_) | Ok(0) => {
                for n in g.nodes.values() {
                    first.push_back(line("ADDED", n));
                }
                (g.rv, g.epoch)
            }
            Ok(rv) if rv < g.oldest => {
                let st = status(
                    410,
                    "Expired",
                    format!("too old resource version: {rv} ({})", g.oldest),
                );
                first.push_back(line("ERROR", &st));
                // Ends the stream after the error, as the API server does.
                (u64::MAX, g.epoch)
            }
            Ok(rv) => (rv, g.epoch),
        }
    };
    let st = WatchState {
        shared: s.clone(),
        rx: s.changed.subscribe(),
        pending: first,
        cursor,
        epoch,
        bookmarks,
        deadline: tokio::time::Instant::now() + timeout,
        leases: None,
    };
    let body = futures::stream::unfold(st, |mut st| async move {
        st.next()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), st))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .unwrap_or_else(|e| status_response(500, "InternalError", e.to_string()))
}

/// A continue token: which snapshot, and the last name served. Opaque to
/// clients, as the API server's (base64 JSON) are.
fn continue_token(paging: u64, last: &str) -> String {
    format!("{paging}/{last}")
}

fn parse_continue(token: &str) -> Option<(u64, &str)> {
    let (id, last) = token.split_once('/')?;
    Some((id.parse().ok()?, last))
}

/// `GET /api/v1/nodes`: the whole list, or with `limit` one page of a
/// snapshot taken at the first page, the rest reached by `continue`.
fn list(s: &Shared, q: &HashMap<String, String>) -> Response {
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let token = q.get("continue").filter(|t| !t.is_empty());
    let mut g = s.lock();
    g.list_requests.push(ListRequest {
        limit,
        continued: token.is_some(),
    });
    let (paging, start) = match token {
        None => {
            let Some(_) = limit else {
                let items: Vec<&Value> = g.nodes.values().map(|n| n.as_ref()).collect();
                return axum::Json(json!({
                    "kind": "NodeList", "apiVersion": "v1",
                    "metadata": { "resourceVersion": g.rv.to_string() },
                    "items": items,
                }))
                .into_response();
            };
            let id = g.next_paging;
            g.next_paging += 1;
            let paging = Paging {
                rv: g.rv,
                nodes: g.nodes.clone(),
            };
            g.pagings.insert(id, paging);
            while g.pagings.len() > MAX_PAGINGS {
                g.pagings.pop_first();
            }
            (id, None)
        }
        Some(t) => match parse_continue(t) {
            None => {
                return status_response(
                    400,
                    "BadRequest",
                    format!("continue key is not valid: {t:?}"),
                )
            }
            Some((id, last)) => (id, Some(last.to_string())),
        },
    };
    let oldest = g.oldest;
    let expired = || {
        status_response(
            410,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into(),
        )
    };
    let Some(rv) = g.pagings.get(&paging).map(|p| p.rv) else {
        return expired();
    };
    if rv < oldest {
        g.pagings.remove(&paging);
        return expired();
    }
    let (items, remaining) = {
        let nodes = match g.pagings.get(&paging) {
            Some(p) => &p.nodes,
            None => return expired(),
        };
        let mut rest = match &start {
            None => nodes.range::<String, _>(..),
            Some(last) => nodes
                .range::<String, _>((std::ops::Bound::Excluded(last), std::ops::Bound::Unbounded)),
        };
        let items: Vec<Value> = rest
            .by_ref()
            .take(limit.unwrap_or(usize::MAX))
            .map(|(_, n)| Value::clone(n))
            .collect();
        (items, rest.count())
    };
    let mut meta = json!({ "resourceVersion": rv.to_string() });
    if remaining > 0 {
        let last = items
            .last()
            .and_then(|n| n["metadata"]["name"].as_str())
            .unwrap_or("");
        meta["continue"] = json!(continue_token(paging, last));
        meta["remainingItemCount"] = json!(remaining);
    } else {
        g.pagings.remove(&paging);
    }
    axum::Json(json!({
        "kind": "NodeList", "apiVersion": "v1",
        "metadata": meta,
        "items": items,
    }))
    .into_response()
}

fn line(kind: &str, obj: &Value) -> Bytes {
    let mut s = json!({ "type": kind, "object": obj }).to_string();
    s.push('\n');
    Bytes::from(s)
}

struct WatchState {
    shared: Arc<Shared>,
    rx: tokio::sync::watch::Receiver<u64>,
    pending: VecDeque<Bytes>,
    cursor: u64,
    epoch: u64,
    bookmarks: bool,
    deadline: tokio::time::Instant,
    /// `None`: a node watch; else a Lease watch of one namespace.
    leases: Option<LeaseFilter>,
}

impl WatchState {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some(b);
            }
            if self.cursor == u64::MAX {
                return None;
            }
            {
                let g = self.shared.lock();
                if g.epoch != self.epoch {
                    return None;
                }
                if self.cursor < g.oldest {
                    let st = status(
                        410,
                        "Expired",
                        format!("too old resource version: {} ({})", self.cursor, g.oldest),
                    );
                    self.pending.push_back(line("ERROR", &st));
                    self.cursor = u64::MAX;
                    continue;
                }
                let from = self.cursor;
                let history = match &self.leases {
                    None => &g.history,
                    Some(_) => &g.lease_history,
                };
                for (rv, kind, obj) in history.iter().filter(|(rv, _, _)| *rv > from) {
                    if self.leases.as_ref().is_none_or(|f| f.matches(obj)) {
                        self.pending.push_back(line(kind, obj));
                    }
                    self.cursor = *rv;
                }
                self.cursor = self.cursor.max(g.rv);
            }
            if !self.pending.is_empty() {
                continue;
            }
            tokio::select! {
                r = self.rx.changed() => {
                    if r.is_err() {
                        return None;
                    }
                }
                _ = tokio::time::sleep(self.shared.bookmark_every), if self.bookmarks => {
                    let bm = json!({
                        "kind": "Node", "apiVersion": "v1",
                        "metadata": { "resourceVersion": self.cursor.to_string() }
                    });
                    self.pending.push_back(line("BOOKMARK", &bm));
                }
                _ = tokio::time::sleep_until(self.deadline) => return None,
            }
        }
    }
}

// ------------------------------------------------------------------ Leases

fn record_lease(inner: &mut Inner, kind: &'static str, mut obj: Value) -> (u64, Arc<Value>) {
    inner.rv += 1;
    let rv = inner.rv;
    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
    let obj = Arc::new(obj);
    inner.lease_history.push_back((rv, kind, obj.clone()));
    (rv, obj)
}

/// Which Leases a list or watch wants: one namespace, and the labels of an
/// equality-only selector (`a=b,c=d`; a bare `a` asks for the label to
/// exist).
struct LeaseFilter {
    ns: String,
    labels: Vec<(String, Option<String>)>,
}

impl LeaseFilter {
    /// Err: the message of a 400 answer.
    fn new(ns: String, q: &HashMap<String, String>) -> Result<Self, String> {
        let mut labels = Vec::new();
        for term in q
            .get("labelSelector")
            .map(String::as_str)
            .unwrap_or("")
            .split(',')
            .filter(|t| !t.is_empty())
        {
            if term.contains("!=") || term.contains(" in ") || term.contains(' ') {
                return Err(format!(
                    "the fake API server only knows equality selectors, not {term:?}"
                ));
            }
            match term.split_once('=') {
                Some((k, v)) => {
                    labels.push((k.to_string(), Some(v.trim_start_matches('=').to_string())))
                }
                None => labels.push((term.to_string(), None)),
            }
        }
        Ok(LeaseFilter { ns, labels })
    }

    fn matches(&self, obj: &Value) -> bool {
        obj["metadata"]["namespace"].as_str() == Some(self.ns.as_str())
            && self.labels.iter().all(|(k, v)| {
                let have = obj["metadata"]["labels"][k].as_str();
                match v {
                    Some(v) => have == Some(v.as_str()),
                    None => have.is_some(),
                }
            })
    }
}

fn lease_key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

fn not_found(name: &str) -> Response {
    status_response(
        404,
        "NotFound",
        format!("leases.coordination.k8s.io \"{name}\" not found"),
    )
}

fn conflict(name: &str) -> Response {
    status_response(
        409,
        "Conflict",
        format!("Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
    )
}

async fn lease_list_or_watch(
    State(s): State<Arc<Shared>>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let filter = match LeaseFilter::new(ns, &q) {
        Ok(f) => f,
        Err(msg) => return status_response(400, "BadRequest", msg),
    };
    let watch = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    if !watch {
        // Unpaginated: a server may answer a `limit` with everything and no
        // continue token, and clients must take that.
        let mut g = s.lock();
        g.lease_lists
            .push(q.get("labelSelector").cloned().unwrap_or_default());
        let items: Vec<&Value> = g
            .leases
            .values()
            .filter(|l| filter.matches(l))
            .map(|l| l.as_ref())
            .collect();
        return axum::Json(json!({
            "kind": "LeaseList", "apiVersion": "coordination.k8s.io/v1",
            "metadata": { "resourceVersion": g.rv.to_string() },
            "items": items,
        }))
        .into_response();
    }
    let from = q.get("resourceVersion").cloned().unwrap_or_default();
    let bookmarks = q.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let mut first = VecDeque::new();
    let (cursor, epoch) = {
        let mut g = s.lock();
        g.watch_requests.push(from.clone());
        match from.parse::<u64>() {
            Err(_) | Ok(0) => {
                for l in g.leases.values().filter(|l| filter.matches(l)) {
                    first.push_back(line("ADDED", l));
                }
                (g.rv, g.epoch)
            }
            Ok(rv) if rv < g.oldest => {
                let st = status(
                    410,
                    "Expired",
                    format!("too old resource version: {rv} ({})", g.oldest),
                );
                first.push_back(line("ERROR", &st));
                (u64::MAX, g.epoch)
            }
            Ok(rv) => (rv, g.epoch),
        }
    };
    let st = WatchState {
        shared: s.clone(),
        rx: s.changed.subscribe(),
        pending: first,
        cursor,
        epoch,
        bookmarks,
        deadline: tokio::time::Instant::now() + timeout,
        leases: Some(filter),
    };
    let body = futures::stream::unfold(st, |mut st| async move {
        st.next()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), st))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .unwrap_or_else(|e| status_response(500, "InternalError", e.to_string()))
}

/// Err: the code, reason and message of the answer.
type Refusal = (u16, &'static str, String);

fn parse_lease(body: &Bytes) -> Result<Value, Refusal> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| (400, "BadRequest", format!("invalid Lease: {e}")))?;
    if v["spec"]["leaseDurationSeconds"]
        .as_i64()
        .is_some_and(|d| d <= 0)
    {
        return Err((
            422,
            "Invalid",
            "spec.leaseDurationSeconds: Invalid value: must be greater than 0".into(),
        ));
    }
    Ok(v)
}

async fn lease_create(
    State(s): State<Arc<Shared>>,
    Path(ns): Path<String>,
    body: Bytes,
) -> Response {
    let mut obj = match parse_lease(&body) {
        Ok(v) => v,
        Err((code, reason, msg)) => return status_response(code, reason, msg),
    };
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if name.is_empty() {
        return status_response(422, "Invalid", "metadata.name: Required value".into());
    }
    if obj["metadata"]["resourceVersion"].is_string() {
        return status_response(
            422,
            "Invalid",
            "metadata.resourceVersion: Invalid value: must be not be specified for a create".into(),
        );
    }
    let (rv, stored) = {
        let mut g = s.lock();
        let key = lease_key(&ns, &name);
        if g.leases.contains_key(&key) {
            return status_response(
                409,
                "AlreadyExists",
                format!("leases.coordination.k8s.io \"{name}\" already exists"),
            );
        }
        g.next_uid += 1;
        obj["metadata"]["uid"] = json!(format!("lease-uid-{}", g.next_uid));
        obj["metadata"]["namespace"] = json!(ns);
        obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        let (rv, stored) = record_lease(&mut g, "ADDED", obj);
        g.leases.insert(key, stored.clone());
        (rv, stored)
    };
    s.changed.send_replace(rv);
    (StatusCode::CREATED, axum::Json(Value::clone(&stored))).into_response()
}

async fn lease_get(
    State(s): State<Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    match s.lock().leases.get(&lease_key(&ns, &name)) {
        Some(l) => axum::Json(Value::clone(l)).into_response(),
        None => not_found(&name),
    }
}

/// PUT: a whole new object; with a resourceVersion only if it is the
/// current one (409 otherwise), as the API server does.
async fn lease_replace(
    State(s): State<Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let mut obj = match parse_lease(&body) {
        Ok(v) => v,
        Err((code, reason, msg)) => return status_response(code, reason, msg),
    };
    let (rv, stored) = {
        let mut g = s.lock();
        let key = lease_key(&ns, &name);
        let Some(cur) = g.leases.get(&key).cloned() else {
            return not_found(&name);
        };
        if let Some(want) = obj["metadata"]["resourceVersion"].as_str() {
            if cur["metadata"]["resourceVersion"].as_str() != Some(want) {
                return conflict(&name);
            }
        }
        for k in ["uid", "creationTimestamp", "namespace"] {
            obj["metadata"][k] = cur["metadata"][k].clone();
        }
        let (rv, stored) = record_lease(&mut g, "MODIFIED", obj);
        g.leases.insert(key, stored.clone());
        (rv, stored)
    };
    s.changed.send_replace(rv);
    axum::Json(Value::clone(&stored)).into_response()
}

async fn lease_delete(
    State(s): State<Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let opts: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return status_response(400, "BadRequest", format!("invalid DeleteOptions: {e}"))
            }
        }
    };
    let (rv, old) = {
        let mut g = s.lock();
        let key = lease_key(&ns, &name);
        let Some(cur) = g.leases.get(&key).cloned() else {
            return not_found(&name);
        };
        if let Some(want) = opts["preconditions"]["resourceVersion"].as_str() {
            if cur["metadata"]["resourceVersion"].as_str() != Some(want) {
                return conflict(&name);
            }
        }
        g.leases.remove(&key);
        record_lease(&mut g, "DELETED", Value::clone(&cur))
    };
    s.changed.send_replace(rv);
    axum::Json(Value::clone(&old)).into_response()
}

impl FakeApi {
    /// A Lease object as stored (for tests that check what was written).
    pub fn lease(&self, ns: &str, name: &str) -> Option<Value> {
        self.shared
            .lock()
            .leases
            .get(&lease_key(ns, name))
            .map(|l| Value::clone(l))
    }

    /// Every Lease of a namespace, by name.
    pub fn leases(&self, ns: &str) -> BTreeMap<String, Value> {
        let prefix = format!("{ns}/");
        self.shared
            .lock()
            .leases
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_string(), Value::clone(v))))
            .collect()
    }

    /// Writes a Lease as an operator's `kubectl apply` would (created or
    /// replaced unconditionally); returns its resourceVersion.
    pub fn put_lease(&self, ns: &str, mut obj: Value) -> u64 {
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let rv = {
            let mut g = self.shared.lock();
            let key = lease_key(ns, &name);
            let kind = if g.leases.contains_key(&key) {
                "MODIFIED"
            } else {
                "ADDED"
            };
            obj["metadata"]["namespace"] = json!(ns);
            let (rv, stored) = record_lease(&mut g, kind, obj);
            g.leases.insert(key, stored);
            rv
        };
        self.notify(rv);
        rv
    }

    /// Creates many Leases in one go (no wake-ups in between): for the
    /// benchmark.
    pub fn put_leases(&self, ns: &str, objs: impl IntoIterator<Item = Value>) -> u64 {
        let rv = {
            let mut g = self.shared.lock();
            for mut obj in objs {
                let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
                obj["metadata"]["namespace"] = json!(ns);
                let (_, stored) = record_lease(&mut g, "ADDED", obj);
                g.leases.insert(lease_key(ns, &name), stored);
            }
            g.rv
        };
        self.notify(rv);
        rv
    }
}
