//! Tier compaction: the log cleaner's rules applied to the tier's segments
//! of a compacted topic, so that a topic whose history lives only in the
//! bucket is compacted too (Kafka's tiered storage refuses compacted topics).
//!
//! # Data flow
//!
//! On the leader, every cleaner backoff, for each partition of a topic with
//! `remote.storage.enable` and a `compact` policy:
//!
//! 1. [`select`] reads the manifest: its segments from the log start, up to
//!    the first dirty one younger than `min.compaction.lag.ms`, with at most
//!    [`MAX_DIRTY_BYTES`] of dirty segments (those at or after the
//!    manifest's `cleaned_upto`). Dirty bytes over all bytes against
//!    `min.cleanable.dirty.ratio` (or `max.compaction.lag.ms`) decide
//!    whether a pass is due, as for a local log ([`cleaner::assess`]).
//! 2. The run is staged: its batches are read through the tier's reader (the
//!    read cache, each batch checked, one bounded read at a time) into one
//!    file per segment under `<data dir>/tier-compaction/<partition>/`.
//! 3. [`cleaner::clean`] runs over the staged files (the dedupe buffer and
//!    I/O limit of `log.cleaner.*`) and writes the cleaned segments there.
//! 4. The cleaned segments are uploaded under fresh names and swapped for
//!    the run in one conditional manifest write fenced by the leader epoch
//!    ([`tiering::RemotePartition::replace_run`]), which also raises
//!    `cleaned_upto` and retires the run's objects: orphan collection keeps
//!    them for its grace period, so fetches in flight still read them.
//!
//! # Failure cases
//!
//! - Crash or kill before the manifest write: the manifest still names the
//!   old run; the new objects are orphans (collected after the grace
//!   period) and the staging directory is removed by the next pass.
//! - Crash after it: the new run is the log; the old objects are retired.
//! - Retention, another pass or a new leader changed the run meanwhile: the
//!   write finds the run gone (or is fenced) and the pass is dropped, its
//!   objects removed.
//! - A slow or failing store: the pass fails (logged), nothing changed,
//!   retried at the next round.
//! - Leadership moves: the new leader's epoch fences a pass in flight.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tiering::{Manifest, ObjectKind, RemotePartition, SegmentMeta, SegmentUpload, TierError};
use tokio_util::sync::CancellationToken;

use super::{now_ms, Broker};
use crate::log::cleaner::{self, CleanPlan, Compaction, StagedSegment};
use crate::partition::Partition;

/// Dirty bytes one pass takes at most (the clean part is staged whole, and
/// is at most the partition's live key set).
pub const MAX_DIRTY_BYTES: u64 = 1 << 30;

/// Staging directories live here, under the data dir.
pub const STAGING_DIR: &str = "tier-compaction";

/// Errors of one pass.
#[derive(Debug, thiserror::Error)]
pub enum CompactionError {
    #[error(transparent)]
    Tier(#[from] TierError),
    #[error(transparent)]
    Log(#[from] crate::log::LogError),
    #[error("tier compaction staging: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Stage(#[from] super::tier_stage::StageError),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CompactionError {
    let path = path.display().to_string();
    move |source| CompactionError::Io { op, path, source }
}

/// What a pass would take from a manifest.
#[derive(Debug, Clone)]
pub struct Selection {
    pub run: Vec<SegmentMeta>,
    pub log_start: i64,
    pub first_dirty: i64,
    pub dirty_ratio: f64,
    pub due: bool,
}

/// The run a pass would clean at `now_ms`; None when nothing is dirty.
pub fn select(m: &Manifest, compaction: &Compaction, now_ms: i64) -> Option<Selection> {
    let first_dirty = m.first_dirty_offset();
    let lag_floor = now_ms.saturating_sub(compaction.min_compaction_lag_ms);
    let mut run = Vec::new();
    let mut dirty_bytes = 0u64;
    for s in m
        .segments
        .iter()
        .filter(|s| s.last_offset >= m.log_start_offset)
    {
        let dirty = s.last_offset >= first_dirty;
        if dirty {
            if compaction.min_compaction_lag_ms > 0 && s.max_timestamp > lag_floor {
                break;
            }
            if dirty_bytes > 0 && dirty_bytes + s.size > MAX_DIRTY_BYTES {
                break;
            }
            dirty_bytes += s.size;
        }
        run.push(s.clone());
    }
    let (dirty_ratio, due) = cleaner::assess(
        run.iter()
            .map(|s| (s.last_offset + 1, s.size, s.max_timestamp)),
        first_dirty,
        compaction,
        now_ms,
    )?;
    Some(Selection {
        run,
        log_start: m.log_start_offset,
        first_dirty,
        dirty_ratio,
        due,
    })
}

/// On the leader of a compacted tiered partition whose manifest is
/// loaded: the tier's dirty ratio and the seconds since its last
/// compaction (+Inf: never).
pub fn state(p: &Partition, now_ms: i64) -> Option<(f64, f64)> {
    let config = p.config();
    let compaction = config.log.compaction.as_ref()?;
    if !config.tier.enabled || config.tier.read_replica || !p.is_leader() {
        return None;
    }
    let m = p.remote()?.cached_manifest()?;
    let ratio = select(&m, compaction, now_ms).map_or(0.0, |s| s.dirty_ratio);
    let age = m
        .compacted_at_ms
        .map_or(f64::INFINITY, |at| (now_ms - at).max(0) as f64 / 1000.0);
    Some((ratio, age))
}

/// What a pass did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub dirty_ratio: f64,
    pub segments_before: usize,
    pub segments_after: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub read_bytes: u64,
    pub written_bytes: u64,
    /// The manifest names the compacted run now.
    pub swapped: bool,
}

/// Runs tier compaction until `shutdown`.
pub async fn run(broker: Arc<Broker>, shutdown: CancellationToken) {
    let _ = std::fs::remove_dir_all(broker.config.data_dir.join(STAGING_DIR));
    loop {
        let settings = broker.cleaner_settings();
        let every = Duration::from_millis(settings.backoff_ms.max(broker.config.tier.interval_ms));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        for p in broker.all_partitions() {
            if shutdown.is_cancelled() {
                return;
            }
            let started = Instant::now();
            match compact(&broker, &p, settings, &shutdown).await {
                Ok(Some(r)) => {
                    let m = &broker.metrics;
                    m.tier_compaction_read_bytes.inc_by(r.read_bytes);
                    if r.swapped {
                        m.tier_compaction_passes.inc();
                        m.tier_compaction_written_bytes.inc_by(r.written_bytes);
                    }
                    tracing::info!(
                        partition = %p.name(),
                        dirty_ratio = format!("{:.2}", r.dirty_ratio),
                        segments = format!("{} -> {}", r.segments_before, r.segments_after),
                        bytes = format!("{} -> {}", r.bytes_before, r.bytes_after),
                        read_bytes = r.read_bytes,
                        seconds = format!("{:.3}", started.elapsed().as_secs_f64()),
                        swapped = r.swapped,
                        "tier compaction pass"
                    );
                }
                Ok(None) => {}
                Err(CompactionError::Tier(e)) if e.is_cancelled() => return,
                Err(e) => {
                    tracing::warn!(partition = %p.name(), error = %e, "tier compaction pass failed; retried at the next round")
                }
            }
        }
    }
}

/// One pass over `p`'s tier, when it is due; None when nothing was due (or
/// `p` is not the leader of a compacted tiered partition).
pub async fn compact(
    broker: &Broker,
    p: &Partition,
    settings: crate::config::CleanerSettings,
    cancel: &CancellationToken,
) -> Result<Option<Report>, CompactionError> {
    let config = p.config();
    let (Some(compaction), Some(remote)) = (config.log.compaction.clone(), p.remote()) else {
        return Ok(None);
    };
    if !config.tier.enabled || config.tier.read_replica || !p.is_leader() {
        return Ok(None);
    }
    let epoch = p.leader_epoch();
    let manifest = remote.manifest().await?;
    if !remote.writes(&manifest) {
        return Ok(None);
    }
    let now = now_ms();
    let Some(sel) = select(&manifest, &compaction, now).filter(|s| s.due) else {
        return Ok(None);
    };
    let stage = broker.config.data_dir.join(STAGING_DIR).join(p.name());
    let result = pass(
        remote,
        &sel,
        &compaction,
        &config.log,
        epoch,
        &stage,
        settings,
        broker.config.tier.orphan_grace_ms,
        now,
        cancel,
    )
    .await;
    let _ = tokio::fs::remove_dir_all(&stage).await;
    let mut report = result?;
    report.dirty_ratio = sel.dirty_ratio;
    if report.swapped {
        p.refresh_tier().await.ok();
    }
    Ok(Some(report))
}

#[allow(clippy::too_many_arguments)]
async fn pass(
    remote: &RemotePartition,
    sel: &Selection,
    compaction: &Compaction,
    log: &crate::log::LogConfig,
    epoch: i32,
    stage: &Path,
    settings: crate::config::CleanerSettings,
    grace_ms: u64,
    now: i64,
    cancel: &CancellationToken,
) -> Result<Report, CompactionError> {
    let _ = tokio::fs::remove_dir_all(stage).await;
    tokio::fs::create_dir_all(stage)
        .await
        .map_err(io_err("create", stage))?;
    let mut staged = Vec::with_capacity(sel.run.len());
    let mut read_bytes = 0u64;
    let mut next_offset = sel.log_start;
    // The run's aborted transactions: their records go, and the rewritten
    // segments carry the entries of the markers they keep.
    let mut aborted = Vec::new();
    for seg in &sel.run {
        if let Some(bytes) = remote.segment_object(seg, ObjectKind::Txnindex).await? {
            aborted.extend(crate::partition::txn_index::decode(&bytes).0);
        }
    }
    for (i, seg) in sel.run.iter().enumerate() {
        let path = stage.join(format!("src-{i}.log"));
        let (base, bytes) =
            super::tier_stage::stage_segment(remote, seg, next_offset, &path, cancel).await?;
        read_bytes += bytes;
        next_offset = seg.last_offset + 1;
        staged.push(StagedSegment {
            base,
            next: seg.last_offset + 1,
            path,
            max_timestamp: Some(seg.max_timestamp),
            modified_ms: seg.uploaded_at_ms,
        });
    }
    let plan = CleanPlan::staged(
        stage,
        &staged,
        sel.first_dirty,
        compaction.clone(),
        log.segment_bytes,
        log.index_interval_bytes,
        now,
    )?;
    let Some(mut plan) = plan else {
        return Ok(Report::default());
    };
    plan.set_aborted(
        aborted
            .iter()
            .map(|a| (a.producer_id, a.first_offset, a.last_offset))
            .collect(),
    );
    let resources = cleaner::Resources {
        dedupe_bytes: usize::try_from(settings.dedupe_buffer_size).unwrap_or(usize::MAX),
        throttle: cleaner::Throttle::new(Some(settings.io_max_bytes_per_second).filter(|r| *r > 0)),
    };
    let cleaned = tokio::task::spawn_blocking(move || cleaner::clean(&plan, &resources))
        .await
        .map_err(|e| CompactionError::Io {
            op: "clean",
            path: stage.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })??;
    let outputs = cleaned.segments();
    let count = outputs.len();
    let mut uploads = Vec::with_capacity(count);
    for (i, out) in outputs.into_iter().enumerate() {
        // An empty group leaves a gap (reads go on to the next segment);
        // the run's last segment is always written, so the tier's end
        // stays where it was.
        if out.size == 0 && i + 1 < count {
            continue;
        }
        let inputs: Vec<&SegmentMeta> = sel
            .run
            .iter()
            .filter(|s| s.last_offset >= out.base && s.last_offset < out.next)
            .collect();
        let Some(last_input) = inputs.last() else {
            continue;
        };
        let small = |kind| remote.segment_object(last_input, kind);
        let kept: Vec<_> = aborted
            .iter()
            .filter(|a| (out.base..out.next).contains(&a.last_offset))
            .copied()
            .collect();
        let txn_index = if kept.is_empty() {
            None
        } else {
            crate::partition::txn_index::write(stage, out.base, &kept)
                .map_err(io_err("write", stage))?;
            Some(crate::partition::txn_index::path(stage, out.base))
        };
        let upload = SegmentUpload {
            base_offset: out.base,
            last_offset: out.next - 1,
            first_timestamp: None,
            max_timestamp: out
                .max_timestamp
                .unwrap_or_else(|| inputs.iter().map(|s| s.max_timestamp).max().unwrap_or(-1)),
            leader_epoch: epoch,
            size: out.size,
            log: out.log,
            offset_index: out.index,
            time_index: out.time_index,
            producer_snapshot: small(ObjectKind::Snapshot).await?,
            leader_epochs: small(ObjectKind::Epochs).await?,
            txn_index,
        };
        let uploaded_at = inputs.iter().map(|s| s.uploaded_at_ms).max().unwrap_or(now);
        uploads.push((upload, uploaded_at));
    }
    // A full key map ends the pass early: the segments after the last
    // rewritten one stay as they are (and dirty).
    let end = uploads.last().map_or(i64::MIN, |(u, _)| u.last_offset);
    let run: Vec<&SegmentMeta> = sel.run.iter().filter(|s| s.last_offset <= end).collect();
    let replaced: Vec<String> = run.iter().map(|s| s.id.clone()).collect();
    let written_bytes: u64 = uploads.iter().map(|(u, _)| u.size).sum();
    let after = remote
        .replace_run(
            &uploads,
            &replaced,
            cleaned.first_dirty(),
            epoch,
            Duration::from_millis(grace_ms),
            cancel,
            &tiering::RateLimiter::unlimited(),
        )
        .await?;
    Ok(Report {
        dirty_ratio: 0.0,
        segments_before: replaced.len(),
        segments_after: uploads.len(),
        bytes_before: run.iter().map(|s| s.size).sum(),
        bytes_after: written_bytes,
        read_bytes: read_bytes + cleaned.bytes_read,
        written_bytes,
        swapped: after.is_some(),
    })
}
