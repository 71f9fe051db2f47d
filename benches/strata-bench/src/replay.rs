//! `--long-replay`: history replayed from the tier with an empty cache.
//!
//! The default run keeps its replay set local until it is tiered (it reads
//! it hot first), so it needs twice the set's size on disk. Here the topic
//! has a local retention of one segment from its creation: once uploaded,
//! the set lives only in the tier, and a set of many GiB needs about its
//! own size. Each backend gets a broker the tool starts: `file://` with
//! `--consume-bytes`, then `s3://` (with `--s3-endpoint`) with
//! `--s3-replay-bytes`. [`tier::tier_run`] then reads the set first, warm,
//! and cold after a restart (empty cache), beside raw reads of the same
//! objects, counting the cold replay's GETs and the broker's peak RSS.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use crate::broker::{self, Broker};
use crate::cli::{say, Args, Plan, MIB};
use crate::kafka;
use crate::reference::Transfer;
use crate::report::{self, Ratio};
use crate::tier::{self, TierRun};
use crate::workloads;

pub fn run(a: &Args, plan: &Plan, work: &Path) -> Result<()> {
    let bin = match &a.strata_bin {
        Some(p) => p.clone(),
        None => broker::find_strata_bin()?,
    };
    let prefix = format!("lr{}", std::process::id());
    let mut runs = Vec::new();
    {
        let dir = work.join("file-broker");
        let mut b = workloads::start_file_broker(a, plan, &bin, &dir)?;
        let raw = workloads::file_tier_reads(a, &b);
        runs.push(replay(
            a,
            plan,
            &mut b,
            &format!("{prefix}-file"),
            "file",
            &raw,
        )?);
        b.stop()?;
        // The next backend's set needs the room.
        std::fs::remove_dir_all(&dir)?;
    }
    if let Some(endpoint) = &a.s3_endpoint {
        let plan = Plan {
            consume_bytes: a
                .s3_replay_bytes
                .unwrap_or(if a.quick { 16 * MIB } else { 2048 * MIB }),
            ..plan.clone()
        };
        let dir = work.join("s3-broker");
        let (mut b, s3, s3_prefix) = workloads::start_s3_broker(a, &plan, &bin, endpoint, &dir)?;
        let raw = workloads::s3_tier_reads(a, &s3, &s3_prefix);
        runs.push(replay(
            a,
            &plan,
            &mut b,
            &format!("{prefix}-s3"),
            "s3",
            &raw,
        )?);
        b.stop()?;
    }
    print_report(a, plan, &runs)
}

/// Fills a new topic that keeps one segment locally, then runs the tier
/// reads over it.
fn replay(
    a: &Args,
    plan: &Plan,
    b: &mut Broker,
    topic: &str,
    backend: &'static str,
    raw: &dyn Fn(&str) -> Result<Transfer>,
) -> Result<TierRun> {
    let segment = plan.segment_bytes.to_string();
    kafka::create_topic(
        &b.bootstrap,
        topic,
        a.consume_partitions,
        &[
            ("segment.bytes", segment.clone()),
            ("local.retention.bytes", segment),
        ],
    )?;
    let filled = workloads::fill_replay_set(a, plan, &b.bootstrap, topic, b.pid())?;
    say(format!(
        "{backend}: wrote {:.1} MB to {topic} at {:.1} MB/s (local retention one segment)",
        filled.bytes as f64 / 1e6,
        filled.mb_per_sec()
    ));
    tier::tier_run(a, plan, b, topic, backend, raw)
}

fn print_report(a: &Args, plan: &Plan, runs: &[TierRun]) -> Result<()> {
    let ratios: Vec<Ratio> = runs.iter().flat_map(report::cold_ratios).collect();
    println!(
        "\n## Long replay from the tier: {} B records, {} partitions, {} MiB segments, {} MiB tier cache\n",
        a.consume_record_size,
        a.consume_partitions,
        plan.segment_bytes / MIB,
        plan.cache_bytes / MIB
    );
    crate::tables::ratios_table(&ratios.iter().collect::<Vec<_>>());
    println!("\n| backend | replayed MB | first read MB/s | warm MB/s | cold MB/s | raw reads MB/s | cold / raw | GETs, cold | GETs per MiB | peak RSS MiB, first / cold process | cache + 256 MiB |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for t in runs {
        let rss = |r: Option<u64>| r.map_or("n/a".into(), |r| format!("{}", r / MIB));
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} ({}) | {:.2} | {:.0} | {:.3} | {} / {} | {} |",
            t.backend,
            t.cold.bytes as f64 / 1e6,
            t.first.mb_per_sec(),
            t.warm.mb_per_sec(),
            t.cold.mb_per_sec(),
            t.raw.mb_per_sec(),
            t.raw_name,
            t.cold.mb_per_sec() / t.raw.mb_per_sec(),
            t.cold_gets,
            t.cold_gets_per_mib(),
            rss(t.rss_first_process),
            rss(t.rss_cold_process),
            (t.cache_bytes + 256 * MIB) / MIB,
        );
    }
    if let Some(path) = &a.json {
        let figures = json!({
            "ratios": ratios.iter().map(Ratio::json).collect::<Vec<_>>(),
            "tiers": runs
                .iter()
                .map(|t| json!({ "backend": t.backend, "replay": report::tier_json(t) }))
                .collect::<Vec<_>>(),
            "tier_segment_bytes": plan.segment_bytes,
        });
        report::write_mode_json(a, path, figures)?;
    }
    Ok(())
}
