//! `strata table status|backfill`: a table topic's Parquet files (see
//! `crate::table`), read and written in the bucket directly with the tier
//! settings `strata serve` reads (flags, `STRATA_*`, `--config` file), like
//! `strata tier scrub`.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;
use tiering::{RateLimiter, RemotePartition, TierStore};
use tokio_util::sync::CancellationToken;

use super::output::{print_json, print_str, Columns};
use super::tier::{open_in_tier, InTier, InTierArgs};
use super::{ConnectArgs, Output};
use crate::broker::table_export::{
    export_from_tier, partition_files, put_files, read_checkpoint, Exported,
};
use crate::config::table_schema::{projection, ValueSchema};
use crate::table::iceberg;
use crate::table::Range;

#[derive(Args, Debug)]
pub struct TableArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    #[command(subcommand)]
    cmd: TableCommand,
}

#[derive(Subcommand, Debug)]
enum TableCommand {
    /// Per partition: the table's files, rows and bytes, the offsets it
    /// holds and how far it is behind the tier (reads the bucket directly,
    /// with the broker's tier settings)
    Status(InTierArgs),
    /// Write the tier's history from before the table began (segments
    /// uploaded before strata.table.enable was set) as table files, read
    /// from the bucket with the broker's tier settings. Run it again to
    /// redo it: it first removes what an earlier backfill wrote
    Backfill(BackfillArgs),
}

#[derive(Args, Debug)]
struct BackfillArgs {
    #[command(flatten)]
    target: InTierArgs,
    /// Write at most this many bytes of table files per second (0: no limit)
    #[arg(long, default_value_t = 0)]
    bytes_per_second: u64,
}

pub async fn run(args: TableArgs) -> anyhow::Result<()> {
    let out = args.conn.output;
    match args.cmd {
        TableCommand::Status(target) => status(open_in_tier(target).await?, out).await,
        TableCommand::Backfill(b) => {
            let limiter = RateLimiter::new(b.bytes_per_second);
            backfill(open_in_tier(b.target).await?, &limiter, out).await
        }
    }
}

/// One partition's table as `status` shows it.
#[derive(Debug, Default)]
struct PartitionTable {
    partition: i32,
    files: usize,
    rows: i64,
    bytes: u64,
    /// The lowest offset of any file (None without files).
    first_offset: Option<i64>,
    /// The checkpoint's `exported_to` (None before the first export).
    exported_to: Option<i64>,
    /// The offset after the tier's last.
    tier_end: i64,
    lag_offsets: i64,
    lag_segments: usize,
}

async fn partition_status(
    tier: &TierStore,
    topic: &str,
    partition: i32,
    remote: &RemotePartition,
) -> anyhow::Result<PartitionTable> {
    let checkpoint = read_checkpoint(tier, topic, partition).await?;
    let manifest = remote.manifest().await?;
    let tier_end = manifest
        .segments
        .last()
        .map_or(manifest.log_start_offset, |s| s.last_offset + 1);
    let exported = checkpoint.map_or(i64::MIN, |c| c.exported_to);
    let mut t = PartitionTable {
        partition,
        exported_to: checkpoint.map(|c| c.exported_to),
        tier_end,
        lag_offsets: (tier_end - exported.max(manifest.log_start_offset)).max(0),
        lag_segments: manifest
            .segments
            .iter()
            .filter(|s| s.last_offset >= exported)
            .count(),
        ..PartitionTable::default()
    };
    for (name, f, size) in partition_files(tier, topic, partition).await? {
        t.files += 1;
        t.bytes += size;
        t.rows += iceberg::parquet_rows(tier, topic, &name, size).await? as i64;
        t.first_offset = Some(t.first_offset.map_or(f.from, |o: i64| o.min(f.from)));
    }
    Ok(t)
}

async fn status(target: InTier, out: Output) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for (p, remote) in &target.partitions {
        rows.push(
            partition_status(&target.tables, &target.topic, *p, remote)
                .await
                .with_context(|| format!("status of the table of {}-{p}", target.topic))?,
        );
    }
    // The Iceberg table's current snapshot: (version, snapshot, files, rows).
    let snapshot = iceberg::load(&target.tables, &target.topic)
        .await?
        .map(|(version, meta)| {
            let current = meta.current_snapshot();
            let total = |k: &str| {
                current
                    .and_then(|s| s.summary().additional_properties.get(k))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let files = total("total-data-files");
            let rows = total("total-records");
            (version, current.map(|s| s.snapshot_id()), files, rows)
        });
    let text = |o: Option<i64>| o.map_or_else(|| "-".to_string(), |o| o.to_string());
    match out {
        Output::Json => print_json(&json!({
            "topic": target.topic,
            "cluster_id": target.cluster,
            "iceberg": snapshot.map(|(version, id, files, rows)| json!({
                "metadata_version": version,
                "snapshot_id": id,
                "files": files,
                "rows": rows,
            })),
            "partitions": rows.iter().map(|t| json!({
                "partition": t.partition,
                "files": t.files,
                "rows": t.rows,
                "bytes": t.bytes,
                "first_offset": t.first_offset,
                "exported_to": t.exported_to,
                "tier_end": t.tier_end,
                "lag_offsets": t.lag_offsets,
                "lag_segments": t.lag_segments,
            })).collect::<Vec<_>>(),
        })),
        Output::Table => {
            let mut c = Columns::new(&[
                "PARTITION",
                "FILES",
                "ROWS",
                "BYTES",
                "FIRST OFFSET",
                "EXPORTED TO",
                "TIER END",
                "LAG OFFSETS",
                "LAG SEGMENTS",
            ]);
            for t in &rows {
                c.row([
                    t.partition.to_string(),
                    t.files.to_string(),
                    t.rows.to_string(),
                    t.bytes.to_string(),
                    text(t.first_offset),
                    text(t.exported_to),
                    t.tier_end.to_string(),
                    t.lag_offsets.to_string(),
                    t.lag_segments.to_string(),
                ]);
            }
            let line = match snapshot {
                Some((version, id, files, rows)) => format!(
                    "iceberg: metadata v{version}, snapshot {}, {files} files, {rows} rows\n",
                    text(id)
                ),
                None => "iceberg: no metadata yet\n".to_string(),
            };
            c.print()?;
            print_str(&line)
        }
    }
}

/// Exports `remote`'s tier history below the table's start; returns what
/// it wrote and the files of an earlier backfill it removed.
async fn backfill_partition(
    tier: &TierStore,
    topic: &str,
    partition: i32,
    remote: &RemotePartition,
    staging: &std::path::Path,
    value: Option<Arc<ValueSchema>>,
    limiter: &RateLimiter,
) -> anyhow::Result<(Exported, usize)> {
    let Some(checkpoint) = read_checkpoint(tier, topic, partition).await? else {
        anyhow::bail!(
            "the table of {topic}-{partition} has not begun: its leader starts it once strata.table.enable is set and a segment is in the tier; backfill after that"
        );
    };
    // What an earlier backfill wrote: a compaction of the tier since may
    // have changed the segments, and with them the ranges. Out of the
    // Iceberg table first, so no snapshot names a missing file.
    let earlier: HashSet<String> = partition_files(tier, topic, partition)
        .await?
        .into_iter()
        .filter(|(_, f, _)| f.to <= checkpoint.start)
        .map(|(name, _, _)| name)
        .collect();
    if !earlier.is_empty() {
        iceberg::sync(tier, topic, value.as_deref(), &earlier).await?;
    }
    for name in &earlier {
        tier.delete(name).await?;
    }
    let cancel = CancellationToken::new();
    let mut done = Exported::default();
    let mut within = Range {
        topic: topic.to_string(),
        partition,
        from: i64::MIN,
        to: checkpoint.start,
        value: value.clone(),
    };
    while let Some((files, to)) = export_from_tier(remote, &within, staging, &cancel).await? {
        put_files(tier, &files, &mut done, limiter, &cancel).await?;
        within.from = to;
    }
    iceberg::sync(tier, topic, value.as_deref(), &HashSet::new()).await?;
    Ok((done, earlier.len()))
}

async fn backfill(target: InTier, limiter: &RateLimiter, out: Output) -> anyhow::Result<()> {
    let staging =
        std::env::temp_dir().join(format!("strata-table-backfill-{}", std::process::id()));
    // The projection of JSON values, from the topic's configs in the tier.
    let configs = target
        .tier
        .read_topic_meta(&target.cluster, &target.remote)
        .await?
        .map(|m| m.configs)
        .unwrap_or_default();
    let config = |k: &str, default: &'static str| {
        configs
            .get(k)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let value = projection(
        &config("strata.table.value.format", "binary"),
        &config("strata.table.value.schema", "{}"),
    );
    let mut rows = Vec::new();
    for (p, remote) in &target.partitions {
        let done = backfill_partition(
            &target.tables,
            &target.topic,
            *p,
            remote,
            &staging,
            value.clone(),
            limiter,
        )
        .await;
        if done.is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        let done =
            done.with_context(|| format!("backfill of the table of {}-{p} stopped", target.topic))?;
        rows.push((*p, done));
    }
    let _ = std::fs::remove_dir_all(&staging);
    match out {
        Output::Json => print_json(&json!({
            "topic": target.topic,
            "partitions": rows.iter().map(|(p, (d, removed))| json!({
                "partition": p,
                "segments": d.segments,
                "files": d.files,
                "rows": d.rows,
                "bytes": d.bytes,
                "replaced_files": removed,
            })).collect::<Vec<_>>(),
        })),
        Output::Table => {
            let mut c = Columns::new(&[
                "PARTITION",
                "SEGMENTS",
                "FILES",
                "ROWS",
                "BYTES",
                "REPLACED FILES",
            ]);
            for (p, (d, removed)) in &rows {
                c.row([
                    p.to_string(),
                    d.segments.to_string(),
                    d.files.to_string(),
                    d.rows.to_string(),
                    d.bytes.to_string(),
                    removed.to_string(),
                ]);
            }
            c.print()
        }
    }
}
