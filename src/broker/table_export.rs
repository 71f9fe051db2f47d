//! The broker side of topics as tables (`strata.table.enable`): after a
//! sealed segment is in the tier, the leader writes its records as Parquet
//! (`crate::table`) and puts the files beside the tier.
//!
//! # Data flow
//!
//! Each round (every tier interval, in a loop of its own so a long export
//! never holds up uploads) the leader of each table partition:
//! 1. reads the partition's [`Checkpoint`] from the store. Without one, the
//!    table starts at the first local sealed segment (older history is
//!    `strata table backfill`'s);
//! 2. once per leadership (on start, after a crash, after a leader change)
//!    removes the files of ranges at or after `exported_to`: they are left
//!    over from an export that did not reach its checkpoint, and their
//!    range may end elsewhere than the new leader's segments do;
//! 3. exports the offsets from `exported_to` up to the tier's end, one range
//!    at a time: from the local sealed segment that holds them, or, when
//!    local retention or another leader's copy left no such segment, from
//!    the tier segment, staged through the tier's reader. After each range
//!    it puts the files, then the checkpoint (and a local copy, which local
//!    retention reads: it keeps a table topic's segments until exported);
//! 4. applies `strata.table.retention.ms` to the partition's files (after
//!    an export that wrote files, and every log retention check interval).
//!
//! # Failures
//!
//! A crash or a failed put before the checkpoint exports the range again
//! later: the same leader writes the same names with the same rows, and a
//! new leader first removes them (step 2). A slow store slows only this
//! loop. A damaged segment fails the round, is counted and logged, and is
//! tried again.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tiering::{RateLimiter, RemotePartition, TierError, TierStore, Uploader};
use tokio_util::sync::CancellationToken;

use super::tier_stage::{stage_segment, StageError};
use super::{now_ms, Broker};

use crate::config::table_schema::ValueSchema;
use crate::config::TableRetention;
use crate::partition::{Partition, PartitionError};
use crate::table::iceberg::{self, IcebergError};
use crate::table::{self, Checkpoint, FileName, Range, TableError, TableFile};

/// Where exports stage their files, under the data dir.
pub const STAGING_DIR: &str = "table-export";

/// Errors of an export pass.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Tier(#[from] TierError),
    #[error(transparent)]
    Partition(#[from] PartitionError),
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error(transparent)]
    Iceberg(#[from] IcebergError),
    #[error("table export: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
}

fn write_exported_to(dir: &Path, offset: i64) -> Result<(), ExportError> {
    let path = dir.join(table::CHECKPOINT_FILE);
    crate::log::checkpoint::write_atomic(&path, offset.to_string().as_bytes()).map_err(|source| {
        ExportError::Io {
            op: "write",
            path: path.display().to_string(),
            source,
        }
    })
}

/// What the loop remembers of a partition it leads.
#[derive(Debug, Clone, Copy)]
struct Led {
    /// The leader epoch whose leftovers were removed.
    epoch: i32,
    /// When retention was last applied.
    retained_ms: i64,
}

/// Exports the table topics' partitions this broker leads, every tier
/// interval, until `shutdown`.
pub async fn run(broker: Arc<Broker>, uploader: Uploader, shutdown: CancellationToken) {
    let staging = broker.config.data_dir.join(STAGING_DIR);
    let _ = std::fs::remove_dir_all(&staging);
    let every = Duration::from_millis(broker.config.tier.interval_ms);
    // Table retention runs after each export that wrote files and at
    // least every log retention check interval.
    let retain_every = broker.config.log_retention_check_interval_ms as i64;
    let mut led: HashMap<String, Led> = HashMap::new();
    // Topics whose Iceberg metadata may be behind their files, with their
    // value projection: kept until a sync succeeds.
    let mut behind: HashMap<String, Option<Arc<ValueSchema>>> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        for p in broker.all_partitions() {
            if shutdown.is_cancelled() {
                return;
            }
            if !(p.is_leader() && p.topic_config().table && p.config().tier.enabled) {
                led.remove(&p.name());
                continue;
            }
            let known = led.get(&p.name()).copied();
            let fresh = known.is_none_or(|l| l.epoch != p.leader_epoch());
            let value = p.topic_config().table_value.clone();
            if fresh {
                // A crash may have left files committed by their checkpoint
                // but not yet in the Iceberg metadata.
                behind.insert(p.topic.clone(), value.clone());
            }
            let exported = export_table(&broker, &p, &staging, fresh, &uploader, &shutdown);
            let Some(done) = exported.await else {
                continue;
            };
            if done.segments > 0 {
                behind.insert(p.topic.clone(), value);
            }
            let mut now = Led {
                epoch: p.leader_epoch(),
                retained_ms: known.filter(|_| !fresh).map_or(i64::MIN, |l| l.retained_ms),
            };
            if done.segments > 0 || now.retained_ms <= now_ms() - retain_every {
                match retain(&broker, &p).await {
                    Ok(removed) => {
                        now.retained_ms = now_ms();
                        broker.metrics.table_retention_removed_files.inc_by(removed);
                    }
                    Err(e) => {
                        broker.metrics.table_export_errors.inc();
                        tracing::warn!(partition = %p.name(), error = %e, "table retention failed; tried again at the next tier pass");
                    }
                }
            }
            led.insert(p.name(), now);
        }
        let topics: Vec<(String, Option<Arc<ValueSchema>>)> = behind.drain().collect();
        for (topic, value) in topics {
            if shutdown.is_cancelled() {
                return;
            }
            // A topic deleted (or switched off) since leaves no metadata
            // behind its deletion.
            let table = broker
                .all_partitions()
                .into_iter()
                .any(|p| p.topic == topic && p.is_leader() && p.topic_config().table);
            if !table {
                continue;
            }
            let synced = sync_table(&broker, &topic, value.as_deref(), &HashSet::new()).await;
            if synced.is_err() {
                behind.insert(topic, value);
            }
        }
    }
}

/// Brings `topic`'s Iceberg metadata up to its files, leaving out
/// `dropping`; logs and counts what it did.
async fn sync_table(
    broker: &Broker,
    topic: &str,
    value: Option<&ValueSchema>,
    dropping: &HashSet<String>,
) -> Result<(), IcebergError> {
    match iceberg::sync(&broker.tables, topic, value, dropping).await {
        Ok(done) => {
            if let Some(version) = done.version {
                broker.metrics.table_iceberg_commits.inc();
                tracing::info!(
                    topic,
                    version,
                    added_files = done.added,
                    removed_files = done.removed,
                    "iceberg snapshot committed"
                );
            }
            Ok(())
        }
        Err(e) => {
            broker.metrics.table_export_errors.inc();
            tracing::warn!(topic, error = %e, "iceberg commit failed; tried again at the next tier pass");
            Err(e)
        }
    }
}

/// Writes `p`'s newly tiered offsets as Parquet; a failure is logged and
/// counted (None), and the offsets are tried again on the next round.
async fn export_table(
    broker: &Broker,
    p: &Partition,
    staging: &Path,
    fresh: bool,
    uploader: &Uploader,
    cancel: &CancellationToken,
) -> Option<Exported> {
    let m = &broker.metrics;
    let limiter = uploader.limiter();
    match export(p, &broker.tables, staging, fresh, limiter, cancel).await {
        Ok(done) => {
            m.table_export_segments.inc_by(done.segments);
            m.table_export_files.inc_by(done.files);
            m.table_export_rows.inc_by(done.rows);
            m.table_export_bytes.inc_by(done.bytes);
            if done.segments > 0 {
                tracing::info!(
                    partition = %p.name(),
                    segments = done.segments,
                    from_tier = done.from_tier,
                    files = done.files,
                    rows = done.rows,
                    bytes = done.bytes,
                    "segments exported as parquet"
                );
            }
            Some(done)
        }
        Err(ExportError::Tier(e)) if e.is_cancelled() => None,
        Err(e) => {
            m.table_export_errors.inc();
            tracing::warn!(partition = %p.name(), error = %e, "table export failed; retried at the next tier pass");
            None
        }
    }
}

/// What one pass exported.
#[derive(Debug, Default, Clone, Copy)]
pub struct Exported {
    /// Offset ranges exported (one per segment).
    pub segments: u64,
    /// Of those, ranges read back from the tier.
    pub from_tier: u64,
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
}

pub use crate::table::iceberg::read_checkpoint;

/// The files of `topic`'s `partition` in the store, with their sizes.
pub async fn partition_files(
    tier: &TierStore,
    topic: &str,
    partition: i32,
) -> Result<Vec<(String, FileName, u64)>, ExportError> {
    Ok(tier
        .list(&table::table_dir(topic))
        .await?
        .into_iter()
        .filter_map(|(name, size)| {
            let f = FileName::parse(topic, &name)?;
            (f.partition == partition).then_some((name, f, size))
        })
        .collect())
}

/// Puts the files of one exported range (removing the staged copies),
/// streamed from disk in parts when large and at most as fast as
/// `limiter` (the upload bandwidth limit) lets; adds them to `done`.
pub async fn put_files(
    tier: &TierStore,
    files: &[TableFile],
    done: &mut Exported,
    limiter: &RateLimiter,
    cancel: &CancellationToken,
) -> Result<(), ExportError> {
    for f in files {
        done.bytes += tier
            .put_local_file(&f.name, &f.path, cancel, limiter)
            .await?;
        let _ = tokio::fs::remove_file(&f.path).await;
        done.files += 1;
        done.rows += f.rows;
    }
    done.segments += 1;
    Ok(())
}

/// Exports `range` of the segment file `log` in the blocking pool.
pub async fn export_file(
    log: PathBuf,
    range: Range,
    out_dir: PathBuf,
) -> Result<Vec<TableFile>, ExportError> {
    let path = log.display().to_string();
    tokio::task::spawn_blocking(move || table::export_segment(&log, &range, &out_dir))
        .await
        .map_err(|e| ExportError::Io {
            op: "export",
            path,
            source: std::io::Error::other(e.to_string()),
        })?
        .map_err(ExportError::from)
}

/// Stages the part of `remote`'s tier segment holding `within.from` (from
/// there, below `within.to`) and exports it; returns its files and the
/// offset after them. None when the tier holds nothing in `within`.
pub async fn export_from_tier(
    remote: &RemotePartition,
    within: &Range,
    out_dir: &Path,
    cancel: &CancellationToken,
) -> Result<Option<(Vec<TableFile>, i64)>, ExportError> {
    let (next, end) = (within.from, within.to);
    let manifest = remote.manifest().await?;
    let Some(seg) = manifest
        .segments
        .iter()
        .find(|s| s.last_offset >= next)
        .filter(|s| s.base_offset.max(next) < end)
    else {
        return Ok(None);
    };
    tokio::fs::create_dir_all(out_dir)
        .await
        .map_err(|source| ExportError::Io {
            op: "create",
            path: out_dir.display().to_string(),
            source,
        })?;
    let from = next.max(seg.base_offset);
    let staged = out_dir.join(format!("{from:020}.staged"));
    let result = async {
        stage_segment(remote, seg, from, &staged, cancel).await?;
        let to = (seg.last_offset + 1).min(end);
        let range = Range {
            from,
            to,
            ..within.clone()
        };
        export_file(staged.clone(), range, out_dir.to_path_buf())
            .await
            .map(|files| (files, to))
    }
    .await;
    let _ = tokio::fs::remove_file(&staged).await;
    result.map(Some)
}

/// Exports `p`'s offsets from its checkpoint up to the tier's end, staging
/// files under `staging`, putting them no faster than `limiter`. `fresh`:
/// first export of this leadership, which first removes what an
/// unfinished export left.
pub async fn export(
    p: &Partition,
    tier: &TierStore,
    staging: &Path,
    fresh: bool,
    limiter: &RateLimiter,
    cancel: &CancellationToken,
) -> Result<Exported, ExportError> {
    let mut done = Exported::default();
    let (Some(tiered), Some(remote)) = (p.tier_last_offset(), p.remote()) else {
        return Ok(done);
    };
    let checkpoint = match read_checkpoint(tier, &p.topic, p.index).await? {
        Some(c) => c,
        // A table exported before progress moved to the store goes on
        // after what its leader's local checkpoint says it exported (those
        // files keep their older names, `<base offset>.parquet`).
        None => match (table::exported_to(p.dir()), p.sealed_segments().first()) {
            (Some(exported), _) => Checkpoint {
                start: exported,
                exported_to: exported,
            },
            (None, Some(first)) => Checkpoint {
                start: first.base_offset,
                exported_to: first.base_offset,
            },
            (None, None) => return Ok(done),
        },
    };
    if fresh {
        for (name, f, _) in partition_files(tier, &p.topic, p.index).await? {
            if f.from >= checkpoint.exported_to {
                tracing::info!(partition = %p.name(), file = %name, "removing a table file of an unfinished export");
                tier.delete(&name).await?;
            }
        }
    }
    let out_dir = staging.join(p.name());
    let mut next = checkpoint.exported_to;
    let table = Range {
        topic: p.topic.clone(),
        partition: p.index,
        from: next,
        to: i64::MAX,
        value: p.topic_config().table_value.clone(),
    };
    while next <= tiered {
        if cancel.is_cancelled() {
            return Err(TierError::Cancelled.into());
        }
        let local = p
            .sealed_segments()
            .into_iter()
            .find(|s| s.base_offset <= next && next < s.next_offset);
        let (files, to) = match local {
            Some(seg) if seg.next_offset - 1 > tiered => break,
            Some(seg) => {
                let range = Range {
                    from: next,
                    to: seg.next_offset,
                    ..table.clone()
                };
                let files = export_file(seg.log_path.clone(), range, out_dir.clone()).await?;
                (files, seg.next_offset)
            }
            None => {
                let within = Range {
                    from: next,
                    ..table.clone()
                };
                match export_from_tier(remote, &within, &out_dir, cancel).await? {
                    Some(exported) => {
                        done.from_tier += 1;
                        exported
                    }
                    None => break,
                }
            }
        };
        put_files(tier, &files, &mut done, limiter, cancel).await?;
        let advanced = Checkpoint {
            start: checkpoint.start,
            exported_to: to,
        };
        let body = serde_json::to_vec(&advanced).expect("a checkpoint serializes");
        tier.put(&table::checkpoint_name(&p.topic, p.index), body.into())
            .await?;
        write_exported_to(p.dir(), to)?;
        tracing::debug!(partition = %p.name(), from = next, to, files = files.len(), "range exported as parquet");
        next = to;
    }
    Ok(done)
}

/// Removes `p`'s table files that `strata.table.retention.ms` no longer
/// keeps; returns how many.
async fn retain(broker: &Broker, p: &Partition) -> Result<u64, ExportError> {
    let retention = p.topic_config().table_retention;
    let tier_start = match (retention, p.remote()) {
        (TableRetention::Forever, _) => return Ok(0),
        (TableRetention::FollowTier, Some(remote)) => match remote.log_start_offset().await? {
            Some(start) => start,
            None => return Ok(0),
        },
        (TableRetention::FollowTier, None) => return Ok(0),
        (TableRetention::Ms(_), _) => i64::MIN,
    };
    let now = now_ms();
    let mut expired = HashSet::new();
    for (name, f, _) in partition_files(&broker.tables, &p.topic, p.index).await? {
        let past = match retention {
            TableRetention::Ms(ms) => f
                .day_end_ms()
                .is_some_and(|end| end.saturating_add(ms) <= now),
            _ => f.to <= tier_start,
        };
        if past {
            expired.insert(name);
        }
    }
    if expired.is_empty() {
        return Ok(0);
    }
    // Out of the Iceberg table first, so no snapshot names a missing file.
    let value = p.topic_config().table_value.clone();
    sync_table(broker, &p.topic, value.as_deref(), &expired).await?;
    for name in &expired {
        broker.tables.delete(name).await?;
    }
    tracing::info!(partition = %p.name(), files = expired.len(), "table files past retention removed");
    Ok(expired.len() as u64)
}

/// Removes `topic`'s `partition`'s table (files and checkpoint), when the
/// topic is deleted; partition 0's replicas remove the Iceberg metadata,
/// first.
pub async fn delete_partition_table(
    tier: &TierStore,
    topic: &str,
    partition: i32,
) -> Result<usize, ExportError> {
    if partition == 0 {
        iceberg::delete_table(tier, topic).await?;
    }
    let files = partition_files(tier, topic, partition).await?;
    for (name, _, _) in &files {
        tier.delete(name).await?;
    }
    tier.delete(&table::checkpoint_name(topic, partition))
        .await?;
    Ok(files.len())
}
