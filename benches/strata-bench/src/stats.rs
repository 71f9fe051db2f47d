//! Latency percentiles from raw samples (microseconds), and from the
//! broker's Prometheus histograms between two scrapes; sums of its
//! counters.

use std::collections::BTreeMap;

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

/// Percentiles of a Prometheus histogram between two scrapes, each the
/// upper bound of the bucket it falls in (a p99 of 0.8 means at most 0.8 ms).
#[derive(Debug, Clone, Default)]
pub struct BucketSummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

impl BucketSummary {
    /// `name` is the histogram's base name; `labels` a `key="value"` text
    /// its series must contain (empty: all series). `None` when no sample
    /// fell between the scrapes.
    pub fn between(
        before: &BTreeMap<String, f64>,
        after: &BTreeMap<String, f64>,
        name: &str,
        labels: &str,
    ) -> Option<BucketSummary> {
        let delta = |m: &BTreeMap<String, f64>, suffix: &str| -> f64 {
            m.iter()
                .filter(|(k, _)| series_of(k, &format!("{name}{suffix}"), labels))
                .map(|(_, v)| v)
                .sum()
        };
        let count = (delta(after, "_count") - delta(before, "_count")).max(0.0) as u64;
        if count == 0 {
            return None;
        }
        let mut buckets: BTreeMap<u64, f64> = BTreeMap::new();
        let bucket_name = format!("{name}_bucket");
        for (sign, m) in [(1.0, after), (-1.0, before)] {
            for (k, v) in m.iter().filter(|(k, _)| series_of(k, &bucket_name, labels)) {
                let le = k
                    .split_once("{le=\"")
                    .or_else(|| k.split_once(",le=\""))
                    .map(|(_, rest)| rest)
                    .and_then(|r| r.split('"').next())
                    .and_then(|le| le.parse::<f64>().ok());
                if let Some(le) = le {
                    *buckets.entry(le.to_bits()).or_default() += sign * v;
                }
            }
        }
        // Cumulative counts by upper bound (f64 bits of non-negative values
        // sort like the values).
        let at = |q: f64| {
            let need = (q * count as f64).ceil();
            buckets
                .iter()
                .find(|(_, c)| **c >= need)
                .map_or(f64::INFINITY, |(le, _)| f64::from_bits(*le) * 1000.0)
        };
        let sum = delta(after, "_sum") - delta(before, "_sum");
        Some(BucketSummary {
            count,
            mean_ms: sum / count as f64 * 1000.0,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
        })
    }

    pub fn json(&self) -> Value {
        json!({
            "samples": self.count,
            "mean_ms": self.mean_ms,
            "p50_ms_at_most": self.p50_ms,
            "p99_ms_at_most": self.p99_ms,
            "p999_ms_at_most": self.p999_ms,
        })
    }
}

/// The sum of every series of counter or gauge `name` in one scrape; with
/// `topic`, of that topic's series only.
pub fn metric_sum(m: &BTreeMap<String, f64>, name: &str, topic: Option<&str>) -> f64 {
    let labels = topic.map_or(String::new(), |t| format!("topic=\"{t}\""));
    m.iter()
        .filter(|(k, _)| series_of(k, name, &labels))
        .map(|(_, v)| v)
        .sum()
}

/// Whether the series key `k` is of metric `name` and carries `labels`.
fn series_of(k: &str, name: &str, labels: &str) -> bool {
    (k == name || k.starts_with(&format!("{name}{{"))) && k.contains(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_percentiles_between_scrapes() {
        let scrape = |counts: [f64; 4], sum: f64| -> BTreeMap<String, f64> {
            let mut m = BTreeMap::new();
            for (le, c) in ["0.001", "0.002", "0.004", "+Inf"].iter().zip(counts) {
                m.insert(format!("h_bucket{{api=\"Produce\",le=\"{le}\"}}"), c);
                m.insert(format!("h_bucket{{api=\"Fetch\",le=\"{le}\"}}"), 1000.0);
            }
            m.insert("h_count{api=\"Produce\"}".into(), counts[3]);
            m.insert("h_sum{api=\"Produce\"}".into(), sum);
            m
        };
        let before = scrape([5.0, 5.0, 5.0, 5.0], 0.005);
        // 100 new samples: 90 under 1 ms, 9 in (1, 2] ms, 1 in (2, 4] ms.
        let after = scrape([95.0, 104.0, 105.0, 105.0], 0.125);
        let s = BucketSummary::between(&before, &after, "h", "api=\"Produce\"").unwrap();
        assert_eq!(s.count, 100);
        assert!((s.mean_ms - 1.2).abs() < 1e-9, "{s:?}");
        assert_eq!((s.p50_ms, s.p99_ms, s.p999_ms), (1.0, 2.0, 4.0));
        assert!(BucketSummary::between(&after, &after, "h", "api=\"Produce\"").is_none());
    }

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
