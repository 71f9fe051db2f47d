//! The admin HTTP listener: `/health` (the process is alive), `/ready`
//! (metadata loaded, logs recovered, Kafka listener up; a dependency that is
//! down, the object store, is named in the body while the broker serves
//! its local data) and `/metrics` (Prometheus). With `--admin-ssl` it
//! speaks HTTPS with the Kafka listeners' certificate (reloaded with
//! them); handshakes run apart from the accept loop, each bounded, so a
//! stalled client holds up nobody. Every endpoint only reads: there is
//! nothing to change through it, so none takes a credential.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::security::tls::Tls;

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

/// Serves the admin endpoints until `shutdown` is cancelled; over TLS
/// when `tls` is given.
pub async fn run(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    state: AdminState,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state.clone());
    let stop = shutdown.clone();
    let result = match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
        Some(tls) => {
            let listener = TlsListener::start(listener, tls, state, shutdown.clone());
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "admin listener failed");
    }
}

/// Failed admin TLS handshakes, logged once per 10 s at most.
static HANDSHAKE_LOG: crate::telemetry::LogLimiter = crate::telemetry::LogLimiter::new();

/// An HTTPS listener for axum: a task accepts TCP connections and runs
/// each handshake in its own task; finished ones queue here.
struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

/// Handshakes finished but not yet taken by the server.
const READY_QUEUE: usize = 64;
/// A handshake that takes longer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl TlsListener {
    fn start(
        tcp: TcpListener,
        tls: Arc<Tls>,
        state: AdminState,
        shutdown: CancellationToken,
    ) -> TlsListener {
        let addr = tcp
            .local_addr()
            .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    a = tcp.accept() => a,
                };
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = tls.acceptor();
                let tx = tx.clone();
                let state = state.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            let _ = tx.send((s, peer)).await;
                        }
                        failed => {
                            if let Some(b) = state.broker.get() {
                                b.metrics.tls_handshake_failures.inc();
                            }
                            let why = match failed {
                                Ok(Err(e)) => e.to_string(),
                                _ => "timed out".to_string(),
                            };
                            if let Some(suppressed) = HANDSHAKE_LOG.allow(10_000) {
                                tracing::warn!(%peer, error = %why, suppressed, "admin listener: TLS handshake failed");
                            }
                        }
                    }
                });
            }
        });
        TlsListener { ready, addr }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accept task ended (shutdown): wait for the server to stop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}
