//! Bandwidth limiting (a token bucket) and retry backoff.
//!
//! [`TokenBucket`] is pure arithmetic over instants the caller passes in;
//! [`RateLimiter`] wraps it with `tokio::time`, so tests run it on paused time.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::TierError;

/// A token bucket of `rate` bytes per second holding at most `burst` bytes.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_bytes_per_sec: u64, burst_bytes: u64, now: Instant) -> Self {
        let burst = burst_bytes.max(1) as f64;
        TokenBucket {
            rate: rate_bytes_per_sec.max(1) as f64,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes `n` bytes' worth of tokens. Requests above the burst are allowed
    /// to drive the bucket negative (one large part waits proportionally
    /// afterwards). Returns how long the caller must wait before sending.
    pub fn take(&mut self, n: u64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// A shared byte-rate limit for uploads; `None` rate means unlimited.
#[derive(Debug)]
pub struct RateLimiter {
    bucket: Option<std::sync::Mutex<TokenBucket>>,
}

impl RateLimiter {
    /// `rate_bytes_per_sec` of 0 disables the limit. The burst is one second
    /// of traffic.
    pub fn new(rate_bytes_per_sec: u64) -> Self {
        let bucket = (rate_bytes_per_sec > 0).then(|| {
            std::sync::Mutex::new(TokenBucket::new(
                rate_bytes_per_sec,
                rate_bytes_per_sec,
                Instant::now(),
            ))
        });
        RateLimiter { bucket }
    }

    pub fn unlimited() -> Self {
        RateLimiter { bucket: None }
    }

    /// Waits until `n` bytes may be sent.
    pub async fn acquire(
        &self,
        n: u64,
        cancel: Option<&CancellationToken>,
    ) -> Result<(), TierError> {
        let Some(bucket) = &self.bucket else {
            return Ok(());
        };
        let wait = {
            let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
            b.take(n, Instant::now())
        };
        if wait.is_zero() {
            return Ok(());
        }
        crate::store::cancellable(cancel, async {
            tokio::time::sleep(wait).await;
            Ok(())
        })
        .await
    }
}

/// Exponential backoff with full jitter: attempt `n` (from 0) waits a random
/// time in `[base * 2^n / 2, base * 2^n]`, capped at `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The upper bound of the wait before retry `attempt`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// A jittered wait before retry `attempt`; `unit` in `[0, 1)` is the randomness.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let c = self.ceiling(attempt);
        c.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_limits_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 1000, t0);
        assert_eq!(b.take(1000, t0), Duration::ZERO);
        assert_eq!(b.take(500, t0), Duration::from_millis(500));
        // After the wait the debt is paid.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(b.take(0, t1), Duration::ZERO);
        // Refill is capped at the burst.
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(b.take(1000, t2), Duration::ZERO);
        assert_eq!(b.take(1, t2), Duration::from_millis(1));
    }

    #[test]
    fn backoff_grows_and_caps() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(3), Duration::from_millis(800));
        assert_eq!(b.ceiling(10), Duration::from_secs(2));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(2));
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(100));
        assert_eq!(b.delay(1, 1.0), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_paces_uploads() {
        let l = RateLimiter::new(1 << 20);
        let start = Instant::now();
        for _ in 0..4 {
            l.acquire(1 << 20, None).await.expect("acquire");
        }
        // One second of burst, then three seconds of waiting.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(3) && took < Duration::from_millis(3100),
            "{took:?}"
        );
    }
}
