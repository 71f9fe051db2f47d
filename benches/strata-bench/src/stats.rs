//! Latency percentiles from raw samples (microseconds).

use serde_json::{json, Value};

#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    /// Sorts `us` in place and reads the percentiles (nearest rank).
    pub fn from_micros(us: &mut [u32]) -> Summary {
        if us.is_empty() {
            return Summary::default();
        }
        us.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * us.len() as f64).ceil() as usize).clamp(1, us.len());
            us[rank - 1] as f64 / 1000.0
        };
        Summary {
            count: us.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: us[us.len() - 1] as f64 / 1000.0,
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "samples": self.count,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "p999_ms": self.p999_ms,
            "max_ms": self.max_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u32> = (1..=1000).rev().map(|i| i * 1000).collect();
        let s = Summary::from_micros(&mut v);
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50_ms, 500.0);
        assert_eq!(s.p99_ms, 990.0);
        assert_eq!(s.p999_ms, 999.0);
        assert_eq!(s.max_ms, 1000.0);
        assert_eq!(Summary::from_micros(&mut []).count, 0);
    }
}
