//! The tier workloads of one broker the tool started: the replay set moved
//! to the tier, read first, warm (from the tier cache) and cold (after a
//! restart), beside raw reads of the same tier objects.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::broker::Broker;
use crate::cli::{say, Args, Plan, MIB};
use crate::kafka::{self, ConsumeResult};
use crate::reference::Transfer;
use crate::stats::metric_sum;

/// Results of the tier workloads of one backend.
pub struct TierRun {
    pub backend: &'static str,
    pub first: ConsumeResult,
    pub warm: ConsumeResult,
    pub cold: ConsumeResult,
    pub raw: Transfer,
    pub raw_name: &'static str,
    pub tier_bytes: f64,
    pub warm_hit_ratio: Option<f64>,
    pub warm_zero_copy_bytes: f64,
    pub cold_downloaded: Option<f64>,
    /// Object-store GETs (and HEADs) the cold replay made for the topic.
    pub cold_gets: f64,
    pub rss_first_process: Option<u64>,
    pub rss_cold_process: Option<u64>,
    pub cache_bytes: u64,
}

impl TierRun {
    /// Object-store GETs of the cold replay per MiB it read.
    pub fn cold_gets_per_mib(&self) -> f64 {
        gets_per_mib(self.cold_gets, self.cold.bytes)
    }
}

fn gets_per_mib(gets: f64, bytes: u64) -> f64 {
    gets / (bytes as f64 / MIB as f64).max(1e-9)
}

/// Waits until every sealed segment of `topic` is in the tier (copy lag 0)
/// and, with `local_limit`, until every partition's local log has been cut
/// to at most that many bytes and no longer starts at offset 0.
pub fn wait_tiered(
    b: &Broker,
    topic: &str,
    partitions: i32,
    local_limit: Option<u64>,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let m = b.metrics()?;
        let lag_ok = (0..partitions).all(|p| {
            m.get(&format!(
                "strata_tier_copy_lag_segments{{topic=\"{topic}\",partition=\"{p}\"}}"
            )) == Some(&0.0)
        });
        let local_ok = match local_limit {
            None => true,
            Some(limit) => (0..partitions).all(|p| {
                let (first, bytes) = local_segments(&b.data_dir().join(format!("{topic}-{p}")));
                first.is_some_and(|f| f > 0) && bytes <= limit
            }),
        };
        if lag_ok && local_ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{topic}: tiering not done after 300 s (copy lag ok: {lag_ok}, local log cut: {local_ok})\n{}",
                b.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// First base offset and total bytes of the local `.log` segments.
fn local_segments(dir: &Path) -> (Option<i64>, u64) {
    let mut first = None::<i64>;
    let mut bytes = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(base) = name
            .strip_suffix(".log")
            .and_then(|b| b.parse::<i64>().ok())
        {
            first = Some(first.map_or(base, |f| f.min(base)));
            bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    (first, bytes)
}

/// Moves the data set of `topic` to the tier (local retention down to one
/// segment), reads it twice (the second read is warm), restarts the broker
/// (empty cache) and reads it cold, then runs the raw reference.
pub fn tier_run(
    a: &Args,
    plan: &Plan,
    b: &mut Broker,
    topic: &str,
    backend: &'static str,
    raw: &dyn Fn(&str) -> Result<Transfer>,
) -> Result<TierRun> {
    let parts = a.consume_partitions;
    wait_tiered(b, topic, parts, None)?;
    kafka::alter_topic(
        &b.bootstrap,
        topic,
        &[
            ("segment.bytes", plan.segment_bytes.to_string()),
            ("local.retention.bytes", plan.segment_bytes.to_string()),
        ],
    )?;
    // What stays local: the retention plus the active segment and one being
    // cut (a batch may overshoot a segment).
    wait_tiered(b, topic, parts, Some(plan.segment_bytes * 3))?;
    let m = b.metrics()?;
    let tier_bytes = metric_sum(&m, "strata_tier_partition_bytes", Some(topic));
    say(format!(
        "{backend}: {:.1} MB of {topic} in the tier, local log cut",
        tier_bytes / 1e6
    ));
    let first = kafka::consume_all(&b.bootstrap, topic, parts, b.pid())?;
    say(format!(
        "{backend}: first tier read {:.1} MB/s",
        first.mb_per_sec()
    ));
    let before = b.metrics()?;
    let warm = kafka::consume_all(&b.bootstrap, topic, parts, b.pid())?;
    let after = b.metrics()?;
    let delta = |n: &str| metric_sum(&after, n, None) - metric_sum(&before, n, None);
    // Hits in memory, and misses there that the disk cache served.
    let (hits, misses, disk_hits) = (
        delta("strata_tier_cache_hits_total"),
        delta("strata_tier_cache_misses_total"),
        delta("strata_tier_disk_cache_hits_total"),
    );
    let warm_hit_ratio = (hits + misses > 0.0).then(|| (hits + disk_hits) / (hits + misses));
    let warm_zero_copy = delta("strata_fetch_zero_copy_bytes_total");
    say(format!(
        "{backend}: warm tier read {:.1} MB/s (cache hit ratio {}, {:.1} MB sent zero-copy)",
        warm.mb_per_sec(),
        warm_hit_ratio.map_or("n/a".into(), |r| format!("{r:.3}")),
        warm_zero_copy / 1e6
    ));
    let rss_first_process = b.peak_rss();
    b.restart()?;
    let before = b.metrics()?;
    let cold = kafka::consume_all(&b.bootstrap, topic, parts, b.pid())?;
    let after = b.metrics()?;
    let cold_downloaded = Some(
        metric_sum(&after, "strata_tier_bytes_downloaded_total", None)
            - metric_sum(&before, "strata_tier_bytes_downloaded_total", None),
    );
    let gets = |m: &std::collections::BTreeMap<String, f64>| {
        m.get(&format!(
            "strata_tier_requests_total{{topic=\"{topic}\",op=\"get\"}}"
        ))
        .copied()
        .unwrap_or(0.0)
    };
    let cold_gets = gets(&after) - gets(&before);
    let rss_cold_process = b.peak_rss();
    say(format!(
        "{backend}: cold tier read {:.1} MB/s, {} GETs ({:.3} per MiB replayed), broker peak RSS {:.0} MiB",
        cold.mb_per_sec(),
        cold_gets,
        gets_per_mib(cold_gets, cold.bytes),
        rss_cold_process.unwrap_or(0) as f64 / MIB as f64
    ));
    let raw_t = raw(topic)?;
    say(format!(
        "{backend}: raw reads of the tier objects {:.1} MB/s",
        raw_t.mb_per_sec()
    ));
    Ok(TierRun {
        backend,
        first,
        warm,
        cold,
        raw: raw_t,
        raw_name: if backend == "s3" {
            "raw ranged GETs of the tier objects"
        } else {
            "raw preads of the tier files"
        },
        tier_bytes,
        warm_hit_ratio,
        warm_zero_copy_bytes: warm_zero_copy,
        cold_downloaded,
        cold_gets,
        rss_first_process,
        rss_cold_process,
        cache_bytes: plan.cache_bytes,
    })
}
