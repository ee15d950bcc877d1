//! A fake Kubernetes API server for Nodes, on 127.0.0.1, with the real
//! response shapes: `GET /api/v1/nodes` (a NodeList with
//! `metadata.resourceVersion`), the same with `watch=true` (a stream of
//! `{"type":...,"object":...}` lines, BOOKMARK events when asked, an ERROR
//! with a 410 `Status` when the resourceVersion is compacted away),
//! `GET /api/v1/nodes/{name}` and `PATCH /api/v1/nodes/{name}/status` (JSON
//! merge patch, and strategic merge patch for `status.conditions`).
//!
//! It is not an API server: no authentication, admission, field selectors,
//! pagination, other resources or the main (non-status) node endpoint.

#![allow(dead_code)]

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

struct Inner {
    rv: u64,
    nodes: BTreeMap<String, Value>,
    /// (resourceVersion, type, object) after `oldest`.
    history: VecDeque<(u64, &'static str, Value)>,
    /// Watches from a resourceVersion older than this get 410 Gone.
    oldest: u64,
    /// Bumped to end every open watch (as an API server restart does).
    epoch: u64,
    /// The resourceVersion of every watch request, in order.
    watch_requests: Vec<String>,
    lists: usize,
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
                lists: 0,
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

    fn record(inner: &mut Inner, kind: &'static str, mut obj: Value) -> (u64, Value) {
        inner.rv += 1;
        let rv = inner.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
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
                .cloned()
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
            Self::record(&mut g, "DELETED", node).0
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
        self.shared.lock().nodes.get(name).cloned()
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

    pub fn watch_requests(&self) -> Vec<String> {
        self.shared.lock().watch_requests.clone()
    }

    pub fn lists(&self) -> usize {
        self.shared.lock().lists
    }
}

async fn get_node(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    match s.lock().nodes.get(&name) {
        Some(n) => axum::Json(n.clone()).into_response(),
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
        let Some(mut node) = g.nodes.get(&name).cloned() else {
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
    axum::Json(obj).into_response()
}

async fn list_or_watch(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let watch = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    if !watch {
        let mut g = s.lock();
        g.lists += 1;
        let items: Vec<Value> = g.nodes.values().cloned().collect();
        return axum::Json(json!({
            "kind": "NodeList", "apiVersion": "v1",
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
                for (rv, kind, obj) in g.history.iter().filter(|(rv, _, _)| *rv > from) {
                    self.pending.push_back(line(kind, obj));
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
