//! The health and metrics server: /healthz (the process answers), /readyz
//! (200 once lease, datapath and subnet.env are in place, else 503 naming
//! what is missing) and /metrics (Prometheus text).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::daemon::{Metrics, Readiness};

#[derive(Clone)]
struct AppState {
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for the health/metrics server: {source} (is the port taken? pick another with --healthz-port or --metrics-addr)")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// The router serving all three endpoints.
pub fn router(readiness: Arc<Readiness>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { readiness, metrics })
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let missing = s.readiness.missing();
    if missing.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: waiting for {}\n", missing.join(", ")),
        )
    }
}

async fn metrics_text(State(s): State<AppState>) -> impl IntoResponse {
    match s.metrics.encode() {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}

/// Binds `addr` now (so a taken port fails start-up) and serves in a task.
pub async fn spawn(addr: SocketAddr, app: Router) -> Result<SocketAddr, BindError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| BindError { addr, source })?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, %local, "health server stopped");
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).await.unwrap();
        let code = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    }

    #[tokio::test]
    async fn endpoints_follow_readiness_on_loopback() {
        let readiness = Arc::new(Readiness::default());
        let metrics = Arc::new(Metrics::new());
        let app = router(readiness.clone(), metrics.clone());
        let addr = spawn("127.0.0.1:0".parse().unwrap(), app).await.unwrap();

        assert_eq!(get(addr, "/healthz").await.0, 200);
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 503);
        assert!(body.contains("lease, datapath, subnet.env"), "{body}");

        readiness.set_lease(true);
        readiness.set_datapath(true);
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 503);
        assert!(body.contains("waiting for subnet.env"), "{body}");
        readiness.set_subnet_env(true);
        assert_eq!(get(addr, "/readyz").await.0, 200);

        metrics.peers.set(7);
        let (code, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("flanneld_peers 7"), "{body}");
        assert_eq!(get(addr, "/nope").await.0, 404);
    }

    #[tokio::test]
    async fn a_taken_port_is_an_error_naming_the_flag() {
        let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = first.local_addr().unwrap();
        let app = router(Arc::new(Readiness::default()), Arc::new(Metrics::new()));
        let e = spawn(addr, app).await.unwrap_err();
        assert!(e.to_string().contains("--healthz-port"), "{e}");
    }
}
