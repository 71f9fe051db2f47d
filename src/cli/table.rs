//! `strata table status|backfill`: a table topic's Parquet files (see
//! `crate::table`), read and written in the bucket directly with the tier
//! settings `strata serve` reads (flags, `STRATA_*`, `--config` file), like
//! `strata tier scrub`.

use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;
use tiering::{RateLimiter, RemotePartition, TierStore};
use tokio_util::sync::CancellationToken;

use super::output::{print_json, Columns};
use super::tier::{open_in_tier, InTier, InTierArgs};
use super::{ConnectArgs, Output};
use crate::broker::table_export::{
    export_from_tier, partition_files, put_files, read_checkpoint, Exported,
};
use crate::config::table_schema::{projection, ValueSchema};
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

/// Rows of a Parquet object, from its footer (two ranged reads).
async fn parquet_rows(tier: &TierStore, name: &str, size: u64) -> anyhow::Result<i64> {
    use parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
    let damaged = || format!("table file {name} is not a whole parquet file");
    anyhow::ensure!(size >= 12, damaged());
    let tail = tier.get_range(name, size - 8..size).await?;
    let tail: [u8; 8] = tail.as_ref().try_into().with_context(damaged)?;
    let len = FooterTail::try_new(&tail)
        .with_context(damaged)?
        .metadata_length() as u64;
    anyhow::ensure!(len + 12 <= size, damaged());
    let footer = tier.get_range(name, size - 8 - len..size - 8).await?;
    let meta = ParquetMetaDataReader::decode_metadata(&footer).with_context(damaged)?;
    Ok(meta.file_metadata().num_rows())
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
        t.rows += parquet_rows(tier, &name, size).await?;
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
    let text = |o: Option<i64>| o.map_or_else(|| "-".to_string(), |o| o.to_string());
    match out {
        Output::Json => print_json(&json!({
            "topic": target.topic,
            "cluster_id": target.cluster,
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
            c.print()
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
    // have changed the segments, and with them the ranges.
    let mut removed = 0;
    for (name, f, _) in partition_files(tier, topic, partition).await? {
        if f.to <= checkpoint.start {
            tier.delete(&name).await?;
            removed += 1;
        }
    }
    let cancel = CancellationToken::new();
    let mut done = Exported::default();
    let mut within = Range {
        topic: topic.to_string(),
        partition,
        from: i64::MIN,
        to: checkpoint.start,
        value,
    };
    while let Some((files, to)) = export_from_tier(remote, &within, staging, &cancel).await? {
        put_files(tier, &files, &mut done, limiter, &cancel).await?;
        within.from = to;
    }
    Ok((done, removed))
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
