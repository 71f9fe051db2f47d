//! `--partition-scaling`: how one broker scales with its partition count.
//! For each count (`--partition-counts`, default 16, 1,000 and 10,000) a
//! fresh broker gets one topic of that many partitions, created by the
//! tool, and the tool measures:
//! - the time CreateTopics takes until every partition has a leader;
//! - the broker's RSS and open file descriptors per idle partition (the
//!   growth from before the topic to after it, over the count), and the
//!   segment files it holds open after the produce (at most its
//!   `--max-open-segment-files`, by default half the open files limit);
//! - the same total produce rate (`--partition-rate-mb`, 1 KiB records,
//!   acks=1, round robin over every partition, `--e2e-seconds`): the
//!   client's delivery-report p99 and the broker's own Produce p99 (read to
//!   answer written, from its histogram), beside the same producer's p99
//!   against librdkafka's in-process mock broker with as many partitions;
//! - the time a clean stop (SIGTERM) takes, the time from start to ready
//!   after it, and after a kill -9.
//!
//! Targets: produce p99 at 10,000 partitions <= 2x the p99 at 16, RSS per
//! idle partition <= 16 KiB, ready after a kill -9 with 10,000 partitions
//! within 30 s.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use crate::broker::{self, Broker};
use crate::cli::{say, Args, Plan};
use crate::kafka::{self, ProduceSpec};
use crate::stats::BucketSummary;

const RECORD_BYTES: usize = 1024;
/// The broker's default cap on partitions per CreateTopics request.
const MAX_PARTITIONS_PER_REQUEST: i32 = 10_000;

struct Scale {
    partitions: i32,
    create_secs: f64,
    rss_per_partition: f64,
    fds_per_partition: f64,
    client_p99_ms: f64,
    broker_p99_ms: Option<f64>,
    mock_p99_ms: f64,
    mb_per_sec: f64,
    stop_secs: f64,
    open_segment_files: Option<f64>,
    ready_after_stop_secs: f64,
    ready_after_kill_secs: f64,
    rss_after_restart: Option<u64>,
}

fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let start = Instant::now();
    let out = f()?;
    Ok((out, start.elapsed().as_secs_f64()))
}

fn one(a: &Args, plan: &Plan, work: &Path, partitions: i32) -> Result<Scale> {
    let bin = match &a.strata_bin {
        Some(p) => p.clone(),
        None => broker::find_strata_bin()?,
    };
    let dir = work.join(format!("broker-{partitions}"));
    // The whole topic in one CreateTopics request.
    let args = if partitions > MAX_PARTITIONS_PER_REQUEST {
        vec![format!("--max-partitions-per-request={partitions}")]
    } else {
        Vec::new()
    };
    let mut b = Broker::start(&bin, &dir, args, Vec::new())?;
    let topic = format!("scale{}-{partitions}", std::process::id());
    let rss_before = b.rss().context("broker RSS")?;
    let fds_before = b.open_fds().context("broker file descriptors")?;
    let ((), create_secs) = timed(|| kafka::create_topic(&b.bootstrap, &topic, partitions, &[]))?;
    // Let the work that follows a creation (tier state, metrics) settle.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let per = |after: f64, before: f64| (after - before).max(0.0) / f64::from(partitions);
    let rss_per_partition = per(b.rss().context("broker RSS")? as f64, rss_before as f64);
    let fds_per_partition = per(
        b.open_fds().context("broker file descriptors")? as f64,
        fds_before as f64,
    );
    say(format!(
        "{partitions} partitions: created in {create_secs:.1} s; {:.1} KiB RSS and {fds_per_partition:.2} file descriptors per partition",
        rss_per_partition / 1024.0
    ));

    let rate = a.partition_rate_mb * 1e6 / RECORD_BYTES as f64;
    let spec = ProduceSpec {
        topic: topic.clone(),
        partitions,
        record_bytes: RECORD_BYTES,
        records: (rate * plan.e2e_seconds).max(f64::from(partitions)) as u64,
        acks: "1".into(),
        linger_ms: a.linger_ms,
        rate: Some(rate),
        keys: None,
    };
    let before = b.metrics()?;
    let produced = kafka::produce(&b.bootstrap, &spec, Instant::now(), false, true, b.pid())?;
    let after = b.metrics()?;
    let open_segment_files = after.get("strata_log_open_segment_files").copied();
    let broker_p99_ms = BucketSummary::between(
        &before,
        &after,
        "strata_request_duration_seconds",
        "api=\"Produce\"",
    )
    .map(|s| s.p99_ms);
    say(format!(
        "{partitions} partitions: produce {:.1} MB/s, p99 {:.2} ms (broker {}); {} segment files open",
        produced.mb_per_sec(),
        produced.latency.p99_ms,
        broker_p99_ms.map_or("-".into(), |p| format!("{p:.2} ms")),
        open_segment_files.map_or("-".into(), |n| format!("{n:.0}")),
    ));

    // The same producer at the same rate against librdkafka's in-process
    // mock broker with as many partitions: the client's own p99.
    let mock_p99_ms = {
        let mock = rdkafka::mocking::MockCluster::new(1)?;
        mock.create_topic(&topic, partitions, 1)?;
        let floor = kafka::produce(
            &mock.bootstrap_servers(),
            &spec,
            Instant::now(),
            false,
            true,
            None,
        )?;
        floor.latency.p99_ms
    };
    say(format!(
        "{partitions} partitions: the same producer against librdkafka's mock broker: p99 {mock_p99_ms:.2} ms"
    ));

    // A clean stop closes every partition (checkpoint fsyncs, 16 at a
    // time) after the shutdown upload (30 s at most).
    let stop_limit = std::time::Duration::from_secs(60).max(std::time::Duration::from_millis(
        3 * u64::try_from(partitions).unwrap_or(0),
    ));
    let ((), stop_secs) = timed(|| b.stop_within(stop_limit))?;
    let ((), ready_after_stop_secs) = timed(|| b.start_again())?;
    let rss_after_restart = b.rss();
    b.kill()?;
    let ((), ready_after_kill_secs) = timed(|| b.start_again())?;
    say(format!(
        "{partitions} partitions: clean stop {stop_secs:.1} s, ready {ready_after_stop_secs:.1} s after it, {ready_after_kill_secs:.1} s after a kill -9"
    ));
    b.stop_within(stop_limit)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Scale {
        partitions,
        create_secs,
        rss_per_partition,
        fds_per_partition,
        client_p99_ms: produced.latency.p99_ms,
        broker_p99_ms,
        mock_p99_ms,
        mb_per_sec: produced.mb_per_sec(),
        stop_secs,
        open_segment_files,
        ready_after_stop_secs,
        ready_after_kill_secs,
        rss_after_restart,
    })
}

pub fn run(a: &Args, plan: &Plan, work: &Path) -> Result<()> {
    let mut scales = Vec::new();
    for &n in &a.partition_counts {
        scales.push(one(a, plan, work, n)?);
    }
    println!(
        "\n## Partition scaling: one broker, {} MB/s of {RECORD_BYTES} B records (acks=1) over every partition\n",
        a.partition_rate_mb
    );
    println!("| partitions | create s | RSS KiB per partition | fds per partition | produce MB/s | produce p99 ms | broker Produce p99 ms | same producer, mock broker, p99 ms | clean stop s | segment files open | ready after stop s | ready after kill -9 s | RSS after restart MiB |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for s in &scales {
        println!(
            "| {} | {:.1} | {:.1} | {:.2} | {:.1} | {:.2} | {} | {:.2} | {:.1} | {} | {:.1} | {:.1} | {} |",
            s.partitions,
            s.create_secs,
            s.rss_per_partition / 1024.0,
            s.fds_per_partition,
            s.mb_per_sec,
            s.client_p99_ms,
            s.broker_p99_ms.map_or("-".into(), |p| format!("{p:.2}")),
            s.mock_p99_ms,
            s.stop_secs,
            s.open_segment_files
                .map_or("-".into(), |n| format!("{n:.0}")),
            s.ready_after_stop_secs,
            s.ready_after_kill_secs,
            s.rss_after_restart
                .map_or("-".into(), |r| format!("{:.0}", r as f64 / 1048576.0)),
        );
    }
    let smallest = scales.iter().min_by_key(|s| s.partitions);
    let largest = scales.iter().max_by_key(|s| s.partitions);
    if let (Some(lo), Some(hi)) = (smallest, largest) {
        if hi.partitions > lo.partitions {
            println!(
                "\nproduce p99 at {} partitions over p99 at {}: {:.2} (target <= 2 for 10,000 over 16); broker Produce p99: {}; the same producer against the mock broker: {:.2}",
                hi.partitions,
                lo.partitions,
                hi.client_p99_ms / lo.client_p99_ms,
                match (hi.broker_p99_ms, lo.broker_p99_ms) {
                    (Some(h), Some(l)) => format!("{:.2}", h / l),
                    _ => "-".into(),
                },
                hi.mock_p99_ms / lo.mock_p99_ms,
            );
        }
    }
    if let Some(path) = &a.json {
        let report = json!({
            "rate_mb_per_sec": a.partition_rate_mb,
            "scales": scales.iter().map(|s| json!({
                "partitions": s.partitions,
                "create_seconds": s.create_secs,
                "rss_bytes_per_partition": s.rss_per_partition,
                "fds_per_partition": s.fds_per_partition,
                "produce_mb_per_sec": s.mb_per_sec,
                "produce_p99_ms": s.client_p99_ms,
                "broker_produce_p99_ms": s.broker_p99_ms,
                "mock_broker_produce_p99_ms": s.mock_p99_ms,
                "clean_stop_seconds": s.stop_secs,
                "open_segment_files": s.open_segment_files,
                "ready_after_stop_seconds": s.ready_after_stop_secs,
                "ready_after_kill_seconds": s.ready_after_kill_secs,
                "rss_after_restart_bytes": s.rss_after_restart,
            })).collect::<Vec<_>>(),
        });
        crate::report::write_mode_json(a, path, report)?;
    }
    Ok(())
}
