//! The admin HTTP listener: `/health` (the process is alive), `/ready`
//! (metadata loaded, logs recovered, Kafka listener up; a dependency that is
//! down, the object store, is named in the body while the broker serves
//! its local data) and `/metrics` (Prometheus).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;

/// Readiness as the admin endpoint reports it. Set once the broker is built.
#[derive(Clone, Default)]
pub struct AdminState {
    broker: Arc<std::sync::OnceLock<Arc<Broker>>>,
}

impl AdminState {
    pub fn set_broker(&self, broker: Arc<Broker>) {
        let _ = self.broker.set(broker);
    }

    fn ready(&self) -> bool {
        self.broker.get().map(|b| b.is_ready()).unwrap_or(false)
    }

    fn tier_down(&self) -> Option<String> {
        self.broker.get().and_then(|b| b.tier_down())
    }
}

async fn health() -> &'static str {
    "ok\n"
}

async fn metrics(
    State(state): State<AdminState>,
) -> (
    StatusCode,
    [(axum::http::HeaderName, &'static str); 1],
    String,
) {
    let body = match state.broker.get() {
        Some(b) => {
            b.refresh_gauges().await;
            b.metrics.encode()
        }
        None => String::new(),
    };
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

async fn ready(State(state): State<AdminState>) -> (StatusCode, String) {
    let mut degraded = match state.tier_down() {
        Some(why) => format!("tier: unavailable: {why}\n"),
        None => String::new(),
    };
    if state.broker.get().is_some_and(|b| !b.metadata.is_healthy()) {
        degraded.push_str("metadata: restarting after a storage error\n");
    }
    if state.ready() {
        (StatusCode::OK, format!("ready\n{degraded}"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{degraded}"),
        )
    }
}

/// Serves the admin endpoints until `shutdown` is cancelled.
pub async fn run(listener: TcpListener, state: AdminState, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "admin listener failed");
    }
}
