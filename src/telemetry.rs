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
    // unless the operator names it.
    let directive = if config.log_level.contains("openraft") {
        config.log_level.clone()
    } else {
        format!("{},openraft=warn", config.log_level)
    };
    match EnvFilter::try_new(&directive) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info,openraft=warn"), Some(e.to_string())),
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
