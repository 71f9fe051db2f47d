//! Logging, tracing and metrics set-up.
//!
//! Overview: `tracing` goes to stderr as text or JSON, filtered by
//! `--log-level` (an `EnvFilter` directive such as `info` or
//! `strata=debug`). When an OTLP endpoint is configured (`--otlp-endpoint`
//! or `OTEL_EXPORTER_OTLP_ENDPOINT`), spans are also exported over
//! OTLP/HTTP by `tracing-opentelemetry`: one span per Kafka request (api,
//! version, client id, correlation id, topic and partition where one
//! applies). Metrics live in [`metrics`].
//!
//! Cancellation: the returned [`TelemetryGuard`] flushes the span exporter
//! when dropped, so spans of a clean shutdown are not lost.

pub mod metrics;

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{BrokerConfig, LogFormat};

/// Flushes and stops the OTLP exporter on drop.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("warning: trace exporter shutdown failed: {e}");
            }
        }
    }
}

fn filter(config: &BrokerConfig) -> (EnvFilter, Option<String>) {
    // openraft logs every vote and commit at info; keep it to warnings
    // unless the operator names it. Its core and replication log a voter
    // they cannot reach, at every election and heartbeat, as an error; the controller transport says so
    // itself, once in a while, as a warning (a voter down is a normal
    // state of a cluster), and the metadata module logs a core that stops.
    // Its replication handler warns of every failed heartbeat and append
    // to a node down (twice a second); the transport's line says it.
    const QUIET: &str = "openraft=warn,openraft::core::raft_core=off,openraft::replication=off,openraft::engine::handler::replication_handler=error";
    let directive = if config.log_level.contains("openraft") {
        config.log_level.clone()
    } else {
        format!("{},{QUIET}", config.log_level)
    };
    match EnvFilter::try_new(&directive) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new(format!("info,{QUIET}")), Some(e.to_string())),
    }
}

fn otlp_provider(config: &BrokerConfig, endpoint: &str) -> Result<SdkTracerProvider, String> {
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .build()
        .map_err(|e| e.to_string())?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("strata")
        .with_attribute(opentelemetry::KeyValue::new(
            "strata.node_id",
            config.node_id as i64,
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Installs the global subscriber (and the OTLP exporter when configured).
/// A bad filter falls back to `info` with a warning rather than failing.
pub fn init(config: &BrokerConfig) -> TelemetryGuard {
    let (log_filter, bad_filter) = filter(config);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(true)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = match config.log_format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let mut otlp_error = None;
    let provider = match &config.otlp_endpoint {
        Some(endpoint) => match otlp_provider(config, endpoint) {
            Ok(p) => Some(p),
            Err(e) => {
                otlp_error = Some(e);
                None
            }
        },
        None => None,
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("strata"))
            .with_filter(EnvFilter::new("strata=info,tiering=info"))
    });
    let result = tracing_subscriber::registry()
        .with(fmt.with_filter(log_filter))
        .with(otel)
        .try_init();
    if result.is_ok() {
        if let Some(e) = bad_filter {
            tracing::warn!(error = %e, value = %config.log_level, "invalid log-level; using info");
        }
        if let Some(e) = otlp_error {
            tracing::warn!(error = %e, "otlp exporter could not be built; spans are not exported");
        }
        if let Some(endpoint) = &config.otlp_endpoint {
            tracing::info!(%endpoint, "exporting spans over otlp/http");
        }
    }
    TelemetryGuard { provider }
}

/// One log line per `every` at most, for lines a client can cause at will
/// (refused connections, malformed frames): the limiter of one call site.
pub struct LogLimiter {
    last_ms: std::sync::atomic::AtomicU64,
    suppressed: std::sync::atomic::AtomicU64,
}

impl LogLimiter {
    pub const fn new() -> LogLimiter {
        LogLimiter {
            last_ms: std::sync::atomic::AtomicU64::new(0),
            suppressed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(lines suppressed since the last one)` when a line may be
    /// logged now (at most one per `every_ms`), else `None`.
    pub fn allow(&self, every_ms: u64) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let last = self.last_ms.load(Relaxed);
        if now.saturating_sub(last) >= every_ms
            && self
                .last_ms
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Relaxed));
        }
        self.suppressed.fetch_add(1, Relaxed);
        None
    }
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter::new()
    }
}

#[cfg(test)]
mod log_limiter_tests {
    use super::LogLimiter;

    #[test]
    fn one_line_per_period_and_a_count_of_the_rest() {
        let l = LogLimiter::new();
        assert_eq!(l.allow(60_000), Some(0));
        for _ in 0..5 {
            assert_eq!(l.allow(60_000), None);
        }
        assert_eq!(l.allow(0), Some(5));
    }
}
