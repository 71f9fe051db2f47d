//! Wall-clock time as the broker keeps it: milliseconds since the Unix
//! epoch. A leaf module, so that partitions and telemetry read the clock
//! without depending on the broker.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
