//! Logging set-up: `tracing` to stderr as text or JSON, filtered by
//! `--log-level` (an `EnvFilter` directive such as `info` or `strata=debug`).

pub mod metrics;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{BrokerConfig, LogFormat};

/// Installs the global subscriber. A bad filter falls back to `info` with a
/// warning rather than failing start-up.
pub fn init(config: &BrokerConfig) {
    // openraft logs every vote and commit at info; keep it to warnings
    // unless the operator names it.
    let directive = if config.log_level.contains("openraft") {
        config.log_level.clone()
    } else {
        format!("{},openraft=warn", config.log_level)
    };
    let (filter, bad) = match EnvFilter::try_new(&directive) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e.to_string())),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if result.is_err() {
        return;
    }
    if let Some(e) = bad {
        tracing::warn!(error = %e, value = %config.log_level, "invalid log-level; using info");
    }
}
