//! `--table-export`: what writing topics as Parquet tables does and costs.
//! One broker tiering to `file://` in its data directory; the tool
//! measures, in the same run:
//!
//! - export throughput: a tiered topic filled (--produce-bytes of 1 KiB
//!   records, 16 partitions) with the table switch off, its segments rolled
//!   and tiered, then `strata.table.enable` set: MB of segment turned into
//!   Parquet per second until every record is a row, beside the disk's
//!   sequential read + write of as many bytes;
//! - produce throughput to a tiered topic while the export of a backlog of
//!   the same size runs, beside the same produce with no export running,
//!   alternating rounds.

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
/// The produce runs: while a table export runs, and with none.
const KINDS: [&str; 2] = ["table", "no table"];
const PARTITIONS: i32 = 16;
const RECORD_BYTES: usize = 1024;

fn spec(topic: String, bytes: u64, a: &Args) -> ProduceSpec {
    ProduceSpec {
        topic,
        partitions: PARTITIONS,
        record_bytes: RECORD_BYTES,
        records: (bytes / RECORD_BYTES as u64).max(1),
        acks: "1".into(),
        linger_ms: a.linger_ms,
        rate: None,
        keys: None,
    }
}

pub fn run(a: &Args, plan: &Plan, work: &Path) -> Result<()> {
    let bin = match &a.strata_bin {
        Some(p) => p.clone(),
        None => broker::find_strata_bin()?,
    };
    std::fs::create_dir_all(work)?;
    // The broker's default tier: file:// under its data dir.
    let args = vec![
        "--log-retention-check-interval-ms".to_string(),
        "1000".to_string(),
    ];
    let mut b = Broker::start(&bin, &work.join("broker"), args, Vec::new())?;
    let bs = b.bootstrap.clone();
    let pid = b.pid();
    let prefix = format!("sb{}", std::process::id());
    let segment = (plan.produce_bytes / 64)
        .clamp(1 << 20, 64 << 20)
        .to_string();
    // AlterConfigs replaces a topic's whole set: every call names all.
    let configs = |table: bool, segment_ms: &str| {
        vec![
            ("remote.storage.enable", "true".to_string()),
            ("strata.table.enable", table.to_string()),
            ("segment.bytes", segment.clone()),
            ("segment.ms", segment_ms.to_string()),
        ]
    };
    const WEEK_MS: &str = "604800000";
    let records = (plan.produce_bytes / RECORD_BYTES as u64).max(1) as f64;
    // Values are stamped (their first 8 bytes differ), so no two are alike
    // and Parquet's dictionaries do not flatter the export.
    let fill = |b: &Broker, topic: &str| -> Result<f64> {
        let bs = &b.bootstrap;
        kafka::create_topic(bs, topic, PARTITIONS, &configs(false, WEEK_MS))?;
        let spec = spec(topic.to_string(), plan.produce_bytes, a);
        kafka::produce(bs, &spec, Instant::now(), true, false, None)?;
        // Roll the active segments (the retention pass rolls idle ones once
        // segment.ms has passed; it stays 1 ms from here on, so a table
        // switched on later cannot stop a roll), then wait until the tier
        // holds them.
        kafka::alter_topic(bs, topic, &configs(false, "1"))?;
        std::thread::sleep(Duration::from_millis(2500));
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let m = b.metrics()?;
            let lag = metric_sum(&m, "strata_tier_copy_lag_segments", Some(topic));
            let local = metric_sum(&m, "strata_partition_log_size_bytes", Some(topic));
            let uploaded = metric_sum(&m, "strata_tier_bytes_uploaded_total", None);
            if lag == 0.0 && local > 0.0 && uploaded >= local * 0.99 {
                return Ok(local);
            }
            if Instant::now() > deadline {
                bail!(
                    "the tier did not take {topic} within 600 s\n{}",
                    b.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let rows = |b: &Broker| -> Result<f64> {
        Ok(metric_sum(
            &b.metrics()?,
            "strata_table_export_rows_total",
            None,
        ))
    };
    let exported = |b: &Broker, target: f64| -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(600);
        while rows(b)? < target {
            if Instant::now() > deadline {
                bail!("the export did not finish within 600 s\n{}", b.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    };

    // Export throughput.
    let topic = format!("{prefix}-export");
    let size = fill(&b, &topic)?;
    let before = rows(&b)?;
    let parquet_before = metric_sum(&b.metrics()?, "strata_table_export_bytes_total", None);
    let start = Instant::now();
    kafka::alter_topic(&bs, &topic, &configs(true, "1"))?;
    exported(&b, before + records)?;
    let secs = start.elapsed().as_secs_f64();
    let m = b.metrics()?;
    let parquet = metric_sum(&m, "strata_table_export_bytes_total", None) - parquet_before;
    let files = metric_sum(&m, "strata_table_export_files_total", None);
    let export_mb_s = size / secs / 1e6;
    kafka::delete_topic(&bs, &topic)?;
    let disk = reference::disk_copy(work, size as u64).context("disk copy reference")?;
    say(format!(
        "export: {:.1} MB of segments in {secs:.2} s = {export_mb_s:.1} MB/s ({:.1} MB of Parquet in {files} files); disk read+write {:.1} MB/s",
        size / 1e6,
        parquet / 1e6,
        disk.mb_per_sec()
    ));

    // Produce while a backlog of the same size is exported, and with no
    // export running.
    let mut runs: Vec<(&str, f64, Option<f64>)> = Vec::new();
    let mut overlaps = Vec::new();
    for round in 0..ROUNDS {
        for kind in KINDS {
            let topic = format!("{prefix}-produce-{}-{round}", kind.replace(' ', ""));
            let backlog = format!("{prefix}-backlog-{round}");
            let mut target = None;
            if kind == "table" {
                fill(&b, &backlog)?;
                let before = rows(&b)?;
                kafka::alter_topic(&bs, &backlog, &configs(true, "1"))?;
                target = Some(before);
            }
            kafka::create_topic(&bs, &topic, PARTITIONS, &configs(false, WEEK_MS))?;
            let r = kafka::produce(
                &bs,
                &spec(topic.clone(), plan.produce_bytes, a),
                Instant::now(),
                false,
                true,
                pid,
            )?;
            if let Some(before) = target {
                // How much of the produce the export overlapped: the share
                // of the backlog exported by its end.
                overlaps.push(((rows(&b)? - before) / records).min(1.0));
                exported(&b, before + records)?;
                kafka::delete_topic(&bs, &backlog)?;
            }
            kafka::delete_topic(&bs, &topic)?;
            say(format!(
                "produce acks=1 to a tiered topic, {kind} (round {}): {:.1} MB/s, broker CPU {}%",
                round + 1,
                r.mb_per_sec(),
                r.cpu.cells()[0]
            ));
            runs.push((kind, r.mb_per_sec(), r.cpu.broker_pct));
        }
    }
    let rss = b.peak_rss();
    b.stop()?;
    let best = |kind: &str| {
        runs.iter()
            .filter(|r| r.0 == kind)
            .map(|r| r.1)
            .fold(0.0, f64::max)
    };
    let (with, without) = (best("table"), best("no table"));
    let overlap = overlaps.iter().copied().fold(0.0, f64::max);
    println!("\n## Table export: {PARTITIONS} partitions, {RECORD_BYTES} B records\n");
    println!("| figure | value | reference | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| export throughput (MB of segment / s) | {export_mb_s:.1} | disk read+write {:.1} | {:.2} |",
        disk.mb_per_sec(),
        export_mb_s / disk.mb_per_sec()
    );
    println!(
        "| produce acks=1 MB/s, a table export running | {with:.1} | no export running {without:.1} | {:.2} |",
        with / without
    );
    println!(
        "\nthe backlog's export was at most {:.0}% done when a produce ended (below 100%: it ran through the whole produce)",
        overlap * 100.0
    );
    println!(
        "\n{:.1} MB of segments became {:.1} MB of Parquet in {files} files",
        size / 1e6,
        parquet / 1e6
    );
    crate::report::print_peak_rss(rss);
    if let Some(path) = &a.json {
        let report = json!({
            "export_mb_per_sec": export_mb_s,
            "disk_copy_mb_per_sec": disk.mb_per_sec(),
            "segment_bytes": size,
            "parquet_bytes": parquet,
            "produce": runs.iter().map(|r| json!({"table": r.0, "mb_per_sec": r.1, "broker_cpu_pct": r.2})).collect::<Vec<_>>(),
            "produce_table_over_no_table": with / without,
            "export_share_during_produce": overlap,
        });
        crate::report::write_mode_json(a, path, report)?;
    }
    Ok(())
}
