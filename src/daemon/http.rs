//! The health and metrics listener (`listen`, loopback by default; SPEC §8):
//!
//! - `GET /healthz`: 200 while the process serves requests;
//! - `GET /readyz`: 200 once the jobs are loaded and while the state database answers and every
//!   daemon task is alive, else 503 with the reason (Kubernetes readiness, load balancer checks);
//! - `GET /metrics`: the Prometheus text format (see [`super::metrics`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// How long `/readyz` waits for the database.
const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub store: Store,
    /// Set once the first scan is applied, cleared when the daemon stops.
    pub ready: Arc<AtomicBool>,
    /// The daemon's tasks: one that panicked makes the daemon not ready (it is stopping).
    pub tasks: super::tasks::Tasks,
    pub metrics: PrometheusHandle,
}

/// The router (exposed for tests).
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Binds `addr` (before start-up goes further, so a taken port fails fast).
///
/// # Errors
///
/// The bind error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `cancel`.
pub async fn serve(listener: TcpListener, state: HttpState, cancel: CancellationToken) {
    let local = listener.local_addr().ok();
    if let Err(error) = axum::serve(listener, router(state))
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
    {
        tracing::error!(%error, addr = ?local, "health/metrics listener failed");
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, String) {
    if let Some(panic) = state.tasks.panicked() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: daemon task {} panicked; the daemon is stopping\n",
                panic.task
            ),
        );
    }
    if !state.ready.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: jobs not loaded yet (or the daemon is stopping)\n".into(),
        );
    }
    match tokio::time::timeout(DB_CHECK_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n".into()),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: state database: {e}\n"),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: state database does not answer\n".into(),
        ),
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
