//! `--compaction`: what the log cleaner does and costs. One broker; the
//! tool measures, in the same run:
//!
//! - cleaner throughput: a compacted topic filled with keyed updates while
//!   nothing is cleanable (`min.compaction.lag.ms` a day), then made
//!   cleanable; MB of dirty log cleaned per second until no partition is
//!   dirty, beside the disk's sequential read + write of as many bytes;
//! - produce throughput while the cleaner runs against a compacted topic,
//!   and the same produce to a `delete` topic, alternating rounds.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::broker::{self, Broker};
use crate::cli::{say, Args, Plan};
use crate::kafka::{self, ProduceSpec};
use crate::reference;
use crate::stats::metric_sum;

const ROUNDS: usize = 2;
/// The produce runs: a compacted topic the cleaner works on meanwhile, one
/// it leaves alone (the produce path's key check alone), a delete topic.
const KINDS: [&str; 3] = ["compact", "compact, cleaner idle", "delete"];
const PARTITIONS: i32 = 4;
const RECORD_BYTES: usize = 200;
/// Distinct keys of the updates: most of the log is superseded.
const KEYS: u64 = 10_000;

/// Keys of a run of `bytes`: [`KEYS`], or a tenth of its records when
/// fewer (so most of the log is superseded whatever the size).
fn keys(bytes: u64) -> u64 {
    KEYS.min((bytes / RECORD_BYTES as u64 / 10).max(1))
}

fn spec(topic: String, bytes: u64, a: &Args) -> ProduceSpec {
    ProduceSpec {
        topic,
        partitions: PARTITIONS,
        record_bytes: RECORD_BYTES,
        records: (bytes / RECORD_BYTES as u64).max(1),
        acks: "1".into(),
        linger_ms: a.linger_ms,
        rate: None,
        keys: Some(keys(bytes)),
    }
}

pub fn run(a: &Args, plan: &Plan, work: &Path) -> Result<()> {
    let bin = match &a.strata_bin {
        Some(p) => p.clone(),
        None => broker::find_strata_bin()?,
    };
    std::fs::create_dir_all(work)?;
    let args = vec![
        "--log-cleaner-backoff-ms".to_string(),
        "50".to_string(),
        "--log-retention-check-interval-ms".to_string(),
        "1000".to_string(),
    ];
    let mut b = Broker::start(&bin, &work.join("broker"), args, Vec::new())?;
    let bs = b.bootstrap.clone();
    let pid = b.pid();
    let prefix = format!("sb{}", std::process::id());
    let segment = (plan.produce_bytes / 16)
        .clamp(1 << 20, 64 << 20)
        .to_string();
    // AlterConfigs replaces a topic's whole set: every call names all.
    let compacted = |lag: &str, segment_ms: &str| {
        vec![
            ("cleanup.policy", "compact".to_string()),
            ("remote.storage.enable", "false".to_string()),
            ("segment.bytes", segment.clone()),
            ("segment.ms", segment_ms.to_string()),
            ("min.compaction.lag.ms", lag.to_string()),
        ]
    };
    const WEEK_MS: &str = "604800000";

    // Cleaner throughput.
    let topic = format!("{prefix}-cleaner");
    kafka::create_topic(&bs, &topic, PARTITIONS, &compacted("86400000", WEEK_MS))?;
    kafka::produce(
        &bs,
        &spec(topic.clone(), plan.produce_bytes, a),
        Instant::now(),
        false,
        false,
        None,
    )?;
    // Roll the active segments so all of it is cleanable.
    kafka::alter_topic(&bs, &topic, &compacted("86400000", "1"))?;
    std::thread::sleep(Duration::from_millis(2500));
    let m = b.metrics()?;
    let size = metric_sum(&m, "strata_partition_log_size_bytes", Some(&topic));
    let read_before = metric_sum(&m, "strata_log_cleaner_read_bytes_total", None);
    let start = Instant::now();
    kafka::alter_topic(&bs, &topic, &compacted("0", WEEK_MS))?;
    let deadline = start + Duration::from_secs(600);
    loop {
        let m = b.metrics()?;
        let dirty = metric_sum(&m, "strata_log_cleaner_dirty_ratio", Some(&topic));
        let passes = metric_sum(&m, "strata_log_cleaner_passes_total", None);
        if dirty == 0.0 && passes > 0.0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the cleaner did not finish within 600 s\n{}", b.log_tail());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = start.elapsed().as_secs_f64();
    let m = b.metrics()?;
    let after = metric_sum(&m, "strata_partition_log_size_bytes", Some(&topic));
    let read = metric_sum(&m, "strata_log_cleaner_read_bytes_total", None) - read_before;
    let cleaner_mb_s = size / secs / 1e6;
    kafka::delete_topic(&bs, &topic)?;
    let disk = reference::disk_copy(work, size as u64).context("disk copy reference")?;
    say(format!(
        "cleaner: {:.1} MB of dirty log in {secs:.2} s = {cleaner_mb_s:.1} MB/s (read {:.1} MB, log now {:.2} MB); disk read+write {:.1} MB/s",
        size / 1e6,
        read / 1e6,
        after / 1e6,
        disk.mb_per_sec()
    ));

    // Produce with the cleaner at work, and without it.
    let mut runs: Vec<(&str, f64, Option<f64>)> = Vec::new();
    for round in 0..ROUNDS {
        for kind in KINDS {
            let topic = format!("{prefix}-produce-{}-{round}", kind.replace([',', ' '], ""));
            let configs: Vec<(&str, String)> = match kind {
                "compact" => {
                    let mut c = compacted("0", WEEK_MS);
                    c.push(("min.cleanable.dirty.ratio", "0.1".to_string()));
                    c
                }
                // Keys checked at produce, nothing cleanable for a day.
                "compact, cleaner idle" => compacted("86400000", WEEK_MS),
                _ => vec![
                    ("remote.storage.enable", "false".to_string()),
                    ("segment.bytes", segment.clone()),
                ],
            };
            kafka::create_topic(&bs, &topic, PARTITIONS, &configs)?;
            let r = kafka::produce(
                &bs,
                &spec(topic.clone(), plan.produce_bytes, a),
                Instant::now(),
                false,
                true,
                pid,
            )?;
            // Gone before the next run, so the cleaner's work on it stays
            // in this run.
            kafka::delete_topic(&bs, &topic)?;
            say(format!(
                "produce acks=1 to a {kind} topic (round {}): {:.1} MB/s, broker CPU {}%",
                round + 1,
                r.mb_per_sec(),
                r.cpu.cells()[0]
            ));
            runs.push((kind, r.mb_per_sec(), r.cpu.broker_pct));
        }
    }
    let passes = metric_sum(&b.metrics()?, "strata_log_cleaner_passes_total", None);
    let rss = b.peak_rss();
    b.stop()?;
    let best = |kind: &str| {
        runs.iter()
            .filter(|r| r.0 == kind)
            .map(|r| r.1)
            .fold(0.0, f64::max)
    };
    let (with, idle, without) = (
        best("compact"),
        best("compact, cleaner idle"),
        best("delete"),
    );
    println!(
        "\n## Log cleaner: {PARTITIONS} partitions, {RECORD_BYTES} B values over {} keys\n",
        keys(plan.produce_bytes)
    );
    println!("| figure | value | reference | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| cleaner throughput (MB of dirty log / s) | {cleaner_mb_s:.1} | disk read+write {:.1} | {:.2} |",
        disk.mb_per_sec(),
        cleaner_mb_s / disk.mb_per_sec()
    );
    println!(
        "| produce acks=1 MB/s, compacted topic, cleaner at work | {with:.1} | delete topic {without:.1} | {:.2} |",
        with / without
    );
    println!(
        "| produce acks=1 MB/s, compacted topic, cleaner idle | {idle:.1} | delete topic {without:.1} | {:.2} |",
        idle / without
    );
    println!(
        "\nlog of {:.1} MB cleaned to {:.2} MB; cleaner passes in the run: {passes}",
        size / 1e6,
        after / 1e6
    );
    crate::report::print_peak_rss(rss);
    if let Some(path) = &a.json {
        let report = json!({
            "cleaner_mb_per_sec": cleaner_mb_s,
            "disk_copy_mb_per_sec": disk.mb_per_sec(),
            "dirty_bytes": size,
            "cleaned_bytes": after,
            "produce": runs.iter().map(|r| json!({"policy": r.0, "mb_per_sec": r.1, "broker_cpu_pct": r.2})).collect::<Vec<_>>(),
            "produce_compact_over_delete": with / without,
            "produce_compact_idle_over_delete": idle / without,
        });
        crate::report::write_mode_json(a, path, report)?;
    }
    Ok(())
}
