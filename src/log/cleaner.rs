//! The log cleaner: compaction of a log whose `cleanup.policy` holds
//! `compact`, keeping the last record of every key with its offset.
//!
//! # Overview
//!
//! A pass has three steps. [`Log::plan_clean`] (under the partition's lock)
//! picks the sealed segments from the log start up to a limit: below the
//! high watermark and the tier's end (the caller's `upper`), before the
//! first segment younger than `min.compaction.lag.ms`; the active segment is
//! never cleaned. The part from the first dirty offset (the cleaner
//! checkpoint: everything below it was cleaned before) is dirty; the pass
//! is due when dirty bytes over all bytes reach `min.cleanable.dirty.ratio`,
//! or when the oldest dirty segment is older than `max.compaction.lag.ms`.
//!
//! [`clean`] (outside the lock: sealed segment files never change) reads the
//! dirty part into an [`OffsetMap`] (key -> offset of its last record),
//! bounded by the dedupe buffer: when it fills, the map ends at a batch
//! boundary and the rest stays dirty for the next pass. Then it copies the
//! segments from the log start to the map's end into `.cleaned` files,
//! merging neighbours up to `segment.bytes`, with each record kept when no
//! later record of its key is in the map. A tombstone (null value) is kept
//! while it is dirty, and dropped by a later pass once its segment is older
//! than `delete.retention.ms` (the segment's modification time, which a
//! cleaned segment inherits from its newest source, as Kafka does; segments
//! merge only when both are past `delete.retention.ms` or were written in
//! the same window of that length, so new data cannot keep resetting a
//! tombstone's time: it goes within twice `delete.retention.ms`). Batches
//! that lose nothing are copied byte for byte; the others are encoded again
//! with their codec, producer id, epoch, sequences, timestamps and offsets.
//! Keyless records (written before the policy) are kept.
//!
//! [`Log::commit_clean`] (under the lock) swaps the new files for the old
//! ones if the log still holds those segments (retention or a truncation
//! may have moved it meanwhile; the pass is then dropped).
//!
//! # Consistency
//!
//! Offsets never change, so a cleaned log has gaps: between batches, inside
//! a batch, and between segments (a segment covers up to the next one's
//! base). Reads return the next batch at or above an offset; recovery
//! accepts gaps below the cleaner checkpoint, and everywhere in a compacted
//! topic (a follower copies its leader's cleaned batches as they are).
//!
//! # Crash safety
//!
//! New segments are written and fsynced as `<base>.log.cleaned` (and their
//! indexes) beside the old ones; then the swap is decided durably by writing
//! `cleaner-swap` (the replaced and the new base offsets, and the new first
//! dirty offset). The swap deletes the replaced segments that no new one
//! overwrites, renames each new segment's indexes then its log into place,
//! writes the checkpoint and removes `cleaner-swap`. [`finish_swap`], run
//! when the log opens, completes a swap whose `cleaner-swap` exists (each
//! step can be redone) and otherwise deletes `.cleaned` leftovers: a kill
//! at any step leaves the old segments or the new ones, never a mix.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};
use tiering::TokenBucket;

use super::batch::{BatchError, BatchHeader};
use super::checkpoint::{self, sync_dir, write_atomic};
use super::segment::{
    file_name, remove_if_exists, LoadedSegment, SealedSegment, SegmentState, INDEX_SUFFIX,
    LOG_SUFFIX, MAX_RELATIVE_OFFSET, TIME_INDEX_SUFFIX,
};
use super::{Log, LogError};

/// The cleaner settings of a compacted topic (Kafka's topic configs).
#[derive(Debug, Clone, PartialEq)]
pub struct Compaction {
    /// `min.cleanable.dirty.ratio`
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms`
    pub delete_retention_ms: i64,
}

/// The first offset the cleaner has not cleaned: `version=1`,
/// `first_dirty=<offset>`.
pub(crate) const CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
/// A decided swap: `version=1`, `replaced=<bases>`, `new=<bases>`,
/// `first_dirty=<offset>` (bases comma-separated).
const SWAP_FILE: &str = "cleaner-swap";
const CLEANED: &str = "cleaned";
/// What one key costs in the dedupe buffer besides its bytes (Kafka counts
/// 24 bytes per entry for its hash and offset; a map of whole keys costs
/// more).
const ENTRY_OVERHEAD: usize = 64;

pub(crate) fn read_first_dirty(dir: &Path) -> Result<Option<i64>, LogError> {
    let path = dir.join(CHECKPOINT_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let parsed = checkpoint::fields(&text, &["version", "first_dirty"])
                .filter(|f| f[0] == "1")
                .and_then(|f| f[1].parse().ok());
            if parsed.is_none() {
                tracing::warn!(file = %path.display(), "ignoring unreadable cleaner checkpoint");
            }
            Ok(parsed)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::io("read", &path, e)),
    }
}

fn write_first_dirty(dir: &Path, offset: i64) -> Result<(), LogError> {
    let path = dir.join(CHECKPOINT_FILE);
    write_atomic(
        &path,
        format!("version=1\nfirst_dirty={offset}\n").as_bytes(),
    )
    .map_err(|e| LogError::io("write", &path, e))
}

fn cleaned_path(dir: &Path, base: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{}.{CLEANED}", file_name(base, suffix)))
}

/// A swap decided by `cleaner-swap`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Swap {
    replaced: Vec<i64>,
    new: Vec<i64>,
    first_dirty: i64,
}

impl Swap {
    fn encode(&self) -> String {
        let list = |v: &[i64]| v.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        format!(
            "version=1\nreplaced={}\nnew={}\nfirst_dirty={}\n",
            list(&self.replaced),
            list(&self.new),
            self.first_dirty
        )
    }

    fn decode(text: &str) -> Option<Swap> {
        let f = checkpoint::fields(text, &["version", "replaced", "new", "first_dirty"])?;
        if f[0] != "1" {
            return None;
        }
        let list = |s: &str| -> Option<Vec<i64>> {
            s.split(',')
                .filter(|p| !p.is_empty())
                .map(|p| p.parse().ok())
                .collect()
        };
        Some(Swap {
            replaced: list(f[1])?,
            new: list(f[2])?,
            first_dirty: f[3].parse().ok()?,
        })
    }

    /// Carries the swap out; every step can run again after a crash.
    fn apply(&self, dir: &Path) -> Result<(), LogError> {
        for &base in self.replaced.iter().filter(|b| !self.new.contains(b)) {
            for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                remove_if_exists(&dir.join(file_name(base, suffix)))?;
            }
        }
        for &base in &self.new {
            let log = cleaned_path(dir, base, LOG_SUFFIX);
            if !log.exists() {
                continue; // moved before a crash, indexes first
            }
            for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX, LOG_SUFFIX] {
                let from = cleaned_path(dir, base, suffix);
                let to = dir.join(file_name(base, suffix));
                match fs::rename(&from, &to) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound && suffix != LOG_SUFFIX => {
                        // An index moved before a crash; or lost: recovery
                        // rebuilds a missing index from the log.
                    }
                    Err(e) => return Err(LogError::io("rename", &from, e)),
                }
            }
        }
        sync_dir(dir).map_err(|e| LogError::io("sync", dir, e))?;
        write_first_dirty(dir, self.first_dirty)?;
        remove_if_exists(&dir.join(SWAP_FILE))?;
        sync_dir(dir).map_err(|e| LogError::io("sync", dir, e))
    }
}

/// Completes a swap a crash interrupted, or removes the files of a pass
/// that was never decided. Runs before the segments are listed.
pub(crate) fn finish_swap(dir: &Path) -> Result<(), LogError> {
    let swap_path = dir.join(SWAP_FILE);
    match fs::read_to_string(&swap_path) {
        Ok(text) => match Swap::decode(&text) {
            Some(swap) => {
                tracing::info!(dir = %dir.display(), segments = swap.new.len(), "completing an interrupted cleaner swap");
                swap.apply(dir)?;
            }
            None => {
                // write_atomic never leaves a partial file: this is damage.
                // The old segments may be gone: keep whatever is there.
                tracing::error!(file = %swap_path.display(), "unreadable cleaner swap; keeping the segments as they are");
                remove_if_exists(&swap_path)?;
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(LogError::io("read", &swap_path, e)),
    }
    let entries = fs::read_dir(dir).map_err(|e| LogError::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io("list", dir, e))?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(&format!(".{CLEANED}")))
        {
            remove_if_exists(&entry.path())?;
        }
    }
    Ok(())
}

/// A sealed segment as a pass reads it.
#[derive(Debug, Clone)]
struct Source {
    base: i64,
    /// The next segment's base: this one covers `[base, next)`.
    next: i64,
    path: PathBuf,
    /// The segment's file id ([`SegmentCore::file_id`]): tells the segment
    /// read from a later one at the same base offset.
    id: u64,
    /// Held open for the pass (a file the log closes meanwhile stays open).
    file: Arc<File>,
    size: u64,
    /// Largest batch max timestamp, if any batch has one.
    max_timestamp: Option<i64>,
    /// Modification time (ms).
    modified_ms: i64,
}

/// What one pass cleans ([`Log::plan_clean`]).
#[derive(Debug, Clone)]
pub struct CleanPlan {
    dir: PathBuf,
    sources: Vec<Source>,
    first_dirty: i64,
    compaction: Compaction,
    segment_bytes: u64,
    index_interval: u32,
    now_ms: i64,
    /// Dirty bytes over all bytes of the cleanable segments.
    pub dirty_ratio: f64,
    /// Whether the ratio or `max.compaction.lag.ms` calls for a pass.
    pub due: bool,
    /// Aborted transactions as (producer id, first offset, marker offset):
    /// their records supersede nothing and are dropped.
    aborted: Vec<(i64, i64, i64)>,
}

/// The files a pass wrote, for [`Log::commit_clean`].
#[derive(Debug)]
pub struct Cleaned {
    dir: PathBuf,
    /// The segments replaced: base offset and the file id of the segment
    /// read (to tell it from another at the same base offset).
    replaced: Vec<(i64, u64)>,
    new: Vec<(i64, LoadedSegment)>,
    first_dirty: i64,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

/// The broker-wide resources of the cleaner threads.
#[derive(Debug)]
pub struct Resources {
    /// `log.cleaner.dedupe.buffer.size` for one pass.
    pub dedupe_bytes: usize,
    /// `log.cleaner.io.max.bytes.per.second`, shared by every thread.
    pub throttle: Throttle,
}

/// A byte rate shared by the cleaner threads (None: unlimited): the
/// tier's token bucket (a burst of one second), waited on by sleeping, as
/// the cleaner runs on blocking threads.
#[derive(Debug)]
pub struct Throttle(Option<Mutex<TokenBucket>>);

impl Throttle {
    pub fn new(bytes_per_second: Option<u64>) -> Self {
        Throttle(
            bytes_per_second
                .filter(|r| *r > 0)
                .map(|r| Mutex::new(TokenBucket::new(r, r, tokio::time::Instant::now()))),
        )
    }

    /// Accounts for `bytes` of I/O; sleeps while the rate is exceeded.
    fn spend(&self, bytes: u64) {
        let Some(bucket) = &self.0 else {
            return;
        };
        let wait = bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(bytes, tokio::time::Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// How dirty a run of segments is: dirty bytes (segments ending at or
/// after `first_dirty`) over all bytes, and whether a pass is due (the
/// ratio reached `min.cleanable.dirty.ratio`, or the oldest dirty segment's
/// time is older than `max.compaction.lag.ms`). `segments` are (the next
/// segment's base, bytes, time: max timestamp or modification), in order.
/// None when nothing is dirty.
pub fn assess(
    segments: impl IntoIterator<Item = (i64, u64, i64)>,
    first_dirty: i64,
    compaction: &Compaction,
    now_ms: i64,
) -> Option<(f64, bool)> {
    let (mut total, mut dirty_bytes) = (0u64, 0u64);
    let mut oldest_dirty: Option<i64> = None;
    for (next, size, time) in segments {
        total += size;
        if next > first_dirty {
            dirty_bytes += size;
            oldest_dirty.get_or_insert(time);
        }
    }
    let oldest_dirty = oldest_dirty?;
    let dirty_ratio = if total == 0 {
        0.0
    } else {
        dirty_bytes as f64 / total as f64
    };
    let overdue = oldest_dirty < now_ms.saturating_sub(compaction.max_compaction_lag_ms);
    let due = dirty_bytes > 0 && (dirty_ratio >= compaction.min_cleanable_dirty_ratio || overdue);
    Some((dirty_ratio, due))
}

/// A segment file copied out of a log for a pass (tier compaction stages
/// the tier's segments of a partition this way).
#[derive(Debug, Clone)]
pub struct StagedSegment {
    pub base: i64,
    /// It covers `[base, next)`.
    pub next: i64,
    pub path: PathBuf,
    pub max_timestamp: Option<i64>,
    /// When it was written (ms): drives `delete.retention.ms`.
    pub modified_ms: i64,
}

/// One segment a pass wrote, as `.cleaned` files beside its sources.
#[derive(Debug, Clone)]
pub struct CleanedSegment {
    pub base: i64,
    /// It covers `[base, next)` (its last batch may end before).
    pub next: i64,
    pub size: u64,
    pub max_timestamp: Option<i64>,
    /// Newest modification time of its sources (ms).
    pub modified_ms: i64,
    pub log: PathBuf,
    pub index: PathBuf,
    pub time_index: PathBuf,
}

impl CleanPlan {
    fn new(
        dir: PathBuf,
        sources: Vec<Source>,
        first_dirty: i64,
        compaction: Compaction,
        segment_bytes: u64,
        index_interval: u32,
        now_ms: i64,
    ) -> Option<CleanPlan> {
        let (dirty_ratio, due) = assess(
            sources
                .iter()
                .map(|s| (s.next, s.size, s.max_timestamp.unwrap_or(s.modified_ms))),
            first_dirty,
            &compaction,
            now_ms,
        )?;
        Some(CleanPlan {
            dir,
            sources,
            first_dirty,
            compaction,
            segment_bytes,
            index_interval,
            now_ms,
            dirty_ratio,
            due,
            aborted: Vec::new(),
        })
    }

    /// The aborted transactions of the cleaned range, as (producer id,
    /// first offset, marker offset).
    pub fn set_aborted(&mut self, aborted: Vec<(i64, i64, i64)>) {
        self.aborted = aborted;
    }

    /// Whether `header` is a batch of an aborted transaction.
    fn is_aborted(&self, header: &BatchHeader) -> bool {
        header.is_transactional()
            && !header.is_control()
            && self.aborted.iter().any(|&(pid, first, marker)| {
                pid == header.producer_id && (first..marker).contains(&header.base_offset)
            })
    }

    /// A pass over `segments` (staged in `dir`, in offset order) with the
    /// same rules as a log's; the cleaned files are written to `dir`.
    #[allow(clippy::too_many_arguments)]
    pub fn staged(
        dir: &Path,
        segments: &[StagedSegment],
        first_dirty: i64,
        compaction: Compaction,
        segment_bytes: u64,
        index_interval: u32,
        now_ms: i64,
    ) -> Result<Option<CleanPlan>, LogError> {
        let mut sources = Vec::with_capacity(segments.len());
        for s in segments {
            let file = File::open(&s.path).map_err(|e| LogError::io("open", &s.path, e))?;
            let size = file
                .metadata()
                .map_err(|e| LogError::io("stat", &s.path, e))?
                .len();
            sources.push(Source {
                base: s.base,
                next: s.next,
                path: s.path.clone(),
                id: super::files::new_id(),
                file: Arc::new(file),
                size,
                max_timestamp: s.max_timestamp,
                modified_ms: s.modified_ms,
            });
        }
        Ok(CleanPlan::new(
            dir.to_path_buf(),
            sources,
            first_dirty,
            compaction,
            segment_bytes.min(super::MAX_SEGMENT_BYTES),
            index_interval,
            now_ms,
        ))
    }
}

impl Cleaned {
    /// The first offset left dirty after this pass.
    pub fn first_dirty(&self) -> i64 {
        self.first_dirty
    }

    /// The segments the pass wrote, in offset order.
    pub fn segments(&self) -> Vec<CleanedSegment> {
        self.new
            .iter()
            .map(|(base, loaded)| CleanedSegment {
                base: *base,
                next: loaded.state.next_offset,
                size: loaded.state.size,
                max_timestamp: loaded.state.max_timestamp().map(|(ts, _)| ts),
                modified_ms: fs::metadata(cleaned_path(&self.dir, *base, LOG_SUFFIX))
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as i64),
                log: cleaned_path(&self.dir, *base, LOG_SUFFIX),
                index: cleaned_path(&self.dir, *base, INDEX_SUFFIX),
                time_index: cleaned_path(&self.dir, *base, TIME_INDEX_SUFFIX),
            })
            .collect()
    }
}

/// Key -> offset of its last record in the dirty part read so far, within
/// a byte budget.
#[derive(Debug, Default)]
struct OffsetMap {
    offsets: HashMap<Bytes, i64>,
    bytes: usize,
}

impl Log {
    /// The first offset the cleaner has not cleaned.
    pub fn first_dirty_offset(&self) -> i64 {
        self.first_dirty.max(self.log_start_offset)
    }

    /// The pass the cleaner would make now, with segments below `upper`
    /// (the high watermark, the tier's end); None when the topic does not
    /// compact or nothing is dirty.
    pub fn plan_clean(&self, upper: i64, now_ms: i64) -> Option<CleanPlan> {
        let compaction = self.config.compaction.clone()?;
        let first_dirty = self.first_dirty_offset();
        let lag_floor = now_ms.saturating_sub(compaction.min_compaction_lag_ms);
        let mut sources = Vec::new();
        let cores: Vec<_> = self.sealed.iter().map(SealedSegment::core).collect();
        for (i, core) in cores.iter().enumerate() {
            let next = cores
                .get(i + 1)
                .map_or(self.active.core().base_offset(), |c| c.base_offset());
            if next > upper {
                break;
            }
            let max_timestamp = core.state.max_timestamp().map(|(ts, _)| ts);
            let young = max_timestamp.is_some_and(|ts| ts > lag_floor);
            if next > first_dirty && compaction.min_compaction_lag_ms > 0 && young {
                break;
            }
            let modified_ms = core
                .modified()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(now_ms, |d| d.as_millis() as i64);
            let file = match core.open() {
                Ok(file) => file,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open a segment to clean; the pass waits");
                    return None;
                }
            };
            sources.push(Source {
                base: core.base_offset(),
                next,
                path: core.path().to_path_buf(),
                id: core.file_id(),
                file,
                size: core.size(),
                max_timestamp,
                modified_ms,
            });
        }
        CleanPlan::new(
            self.dir.clone(),
            sources,
            first_dirty,
            compaction,
            self.config.segment_bytes.min(super::MAX_SEGMENT_BYTES),
            self.config.index_interval_bytes,
            now_ms,
        )
    }

    /// Swaps a pass's segments in, if the log still holds the segments it
    /// read; returns whether it did. Drops the pass's files otherwise.
    pub fn commit_clean(&mut self, cleaned: Cleaned) -> Result<bool, LogError> {
        self.check_sync_ok()?;
        // The same files, in a row: the same segments (a file is never
        // shared by two).
        let holds = |s: &SealedSegment, (_, id): &(i64, u64)| s.core().file_id() == *id;
        let start = cleaned
            .replaced
            .first()
            .and_then(|first| self.sealed.iter().position(|s| holds(s, first)))
            .filter(|&i| {
                self.sealed.len() - i >= cleaned.replaced.len()
                    && self
                        .sealed
                        .iter()
                        .skip(i)
                        .zip(&cleaned.replaced)
                        .all(|(s, r)| holds(s, r))
            });
        let Some(start) = start else {
            tracing::info!(dir = %self.dir.display(), "the log moved during a cleaner pass; dropping it");
            for (base, _) in &cleaned.new {
                for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                    remove_if_exists(&cleaned_path(&self.dir, *base, suffix))?;
                }
            }
            return Ok(false);
        };
        let swap = Swap {
            replaced: cleaned.replaced.iter().map(|(b, _)| *b).collect(),
            new: cleaned.new.iter().map(|(b, _)| *b).collect(),
            first_dirty: cleaned.first_dirty,
        };
        let swap_path = self.dir.join(SWAP_FILE);
        write_atomic(&swap_path, swap.encode().as_bytes())
            .map_err(|e| LogError::io("write", &swap_path, e))?;
        swap.apply(&self.dir)?;
        let replaced = cleaned.replaced.len();
        let fresh: Vec<SealedSegment> = cleaned
            .new
            .into_iter()
            .map(|(_, loaded)| SealedSegment::from_loaded(loaded, &self.config.files))
            .collect();
        let old: Vec<SealedSegment> = self.sealed.drain(start..start + replaced).collect();
        for (i, segment) in fresh.into_iter().enumerate() {
            self.sealed.insert(start + i, segment);
        }
        // Their files are gone or replaced; open handles keep reads in
        // flight working until they finish.
        drop(old);
        self.first_dirty = cleaned.first_dirty;
        Ok(true)
    }
}

/// Runs a pass: reads the dirty part into an offset map, writes the
/// cleaned segments as `.cleaned` files. Blocking; no lock held.
pub fn clean(plan: &CleanPlan, resources: &Resources) -> Result<Cleaned, LogError> {
    let mut bytes_read = 0u64;
    let mut map = OffsetMap::default();
    let mut map_end = plan.sources.last().map_or(plan.first_dirty, |s| s.next);
    'sources: for source in plan.sources.iter().filter(|s| s.next > plan.first_dirty) {
        for batch in batches(source) {
            let (header, bytes) = batch?;
            bytes_read += bytes.len() as u64;
            resources.throttle.spend(bytes.len() as u64);
            if header.last_offset() < plan.first_dirty
                || header.is_control()
                || plan.is_aborted(&header)
            {
                continue;
            }
            let Some(records) = decode(&bytes) else {
                continue;
            };
            let added: usize = records
                .iter()
                .filter_map(|r| r.key.as_ref())
                .filter(|k| !map.offsets.contains_key(*k))
                .map(|k| k.len() + ENTRY_OVERHEAD)
                .sum();
            if !map.offsets.is_empty() && map.bytes + added > resources.dedupe_bytes {
                map_end = header.base_offset;
                break 'sources;
            }
            map.bytes += added;
            for r in records.iter().filter(|r| r.offset >= plan.first_dirty) {
                if let Some(k) = &r.key {
                    map.offsets.insert(k.clone(), r.offset);
                }
            }
        }
    }
    let horizon = plan
        .now_ms
        .saturating_sub(plan.compaction.delete_retention_ms);
    // A merged segment takes its newest source's time, so merging an old
    // segment with a younger one makes its tombstones wait again. Segments
    // merge only when both are past `delete.retention.ms`, or both were
    // written in the same window of that length: a tombstone then goes at
    // most twice `delete.retention.ms` after its segment was written,
    // however often new data comes, and never before.
    let window = plan.compaction.delete_retention_ms.max(1);
    let mergeable = |a: &Source, b: &Source| {
        let (a_old, b_old) = (a.modified_ms < horizon, b.modified_ms < horizon);
        (a_old && b_old)
            || (!a_old
                && !b_old
                && a.modified_ms.div_euclid(window) == b.modified_ms.div_euclid(window))
    };
    let rewrite: Vec<&Source> = plan.sources.iter().filter(|s| s.base < map_end).collect();
    let mut groups: Vec<Vec<&Source>> = Vec::new();
    for s in rewrite {
        match groups.last_mut() {
            Some(g)
                if g.iter().map(|x| x.size).sum::<u64>() + s.size <= plan.segment_bytes
                    && s.next - g[0].base <= MAX_RELATIVE_OFFSET
                    && g.last().is_some_and(|last| mergeable(last, s)) =>
            {
                g.push(s)
            }
            _ => groups.push(vec![s]),
        }
    }
    let mut new = Vec::with_capacity(groups.len());
    let mut bytes_written = 0u64;
    let mut replaced = Vec::new();
    for group in &groups {
        let base = group[0].base;
        let next = group.last().map_or(base, |s| s.next);
        let path = cleaned_path(&plan.dir, base, LOG_SUFFIX);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| LogError::io("create", &path, e))?;
        let mut out = BufWriter::new(&file);
        let mut state = SegmentState::new(base);
        for source in group {
            replaced.push((source.base, source.id));
            let drop_tombstones = source.modified_ms < horizon;
            for batch in batches(source) {
                let (header, bytes) = batch?;
                bytes_read += bytes.len() as u64;
                resources.throttle.spend(bytes.len() as u64);
                let kept = if plan.is_aborted(&header) {
                    Vec::new()
                } else {
                    retain(
                        &header,
                        bytes,
                        &map,
                        map_end,
                        plan.first_dirty,
                        drop_tombstones,
                    )
                };
                for b in kept {
                    let h = BatchHeader::parse(&b).map_err(|source| LogError::Corrupt {
                        path: path.clone(),
                        position: state.size,
                        source,
                    })?;
                    out.write_all(&b)
                        .map_err(|e| LogError::io("write", &path, e))?;
                    state.on_batch(state.size, &h, plan.index_interval);
                    bytes_written += b.len() as u64;
                    resources.throttle.spend(b.len() as u64);
                }
            }
        }
        out.flush().map_err(|e| LogError::io("write", &path, e))?;
        drop(out);
        let modified = group
            .iter()
            .map(|s| s.modified_ms)
            .max()
            .unwrap_or(plan.now_ms);
        file.set_modified(UNIX_EPOCH + Duration::from_millis(modified.max(0) as u64))
            .and_then(|()| file.sync_all())
            .map_err(|e| LogError::io("sync", &path, e))?;
        state.finish_time_index();
        state.next_offset = next;
        for (suffix, bytes) in [
            (INDEX_SUFFIX, state.offset_index.encode()),
            (TIME_INDEX_SUFFIX, state.time_index.encode()),
        ] {
            let p = cleaned_path(&plan.dir, base, suffix);
            write_atomic(&p, &bytes).map_err(|e| LogError::io("write", &p, e))?;
        }
        drop(file);
        // Sealed: its file opens at its first use, at its final path.
        let final_path = plan.dir.join(file_name(base, LOG_SUFFIX));
        new.push((
            base,
            LoadedSegment {
                path: final_path,
                file: None,
                state,
            },
        ));
    }
    sync_dir(&plan.dir).map_err(|e| LogError::io("sync", &plan.dir, e))?;
    Ok(Cleaned {
        dir: plan.dir.clone(),
        replaced,
        new,
        first_dirty: map_end.max(plan.first_dirty),
        bytes_read,
        bytes_written,
    })
}

/// The batches of a segment file, in order, with their bytes.
fn batches(source: &Source) -> impl Iterator<Item = Result<(BatchHeader, Bytes), LogError>> + '_ {
    super::segment::file_batches(&source.file, &source.path, source.size)
}

/// The records of a batch; None when it does not decode (it is then kept
/// as it is and takes no part in the map).
fn decode(batch: &Bytes) -> Option<Vec<Record>> {
    super::batch::decode_records(batch).ok()
}

/// What of `batch` a pass keeps: the batch itself, nothing, or its kept
/// records encoded again.
fn retain(
    header: &BatchHeader,
    batch: Bytes,
    map: &OffsetMap,
    map_end: i64,
    first_dirty: i64,
    drop_tombstones: bool,
) -> Vec<Bytes> {
    if header.is_control() || header.base_offset >= map_end {
        return vec![batch];
    }
    let Some(records) = decode(&batch) else {
        return vec![batch];
    };
    let keep = |r: &Record| {
        let Some(key) = &r.key else {
            return true;
        };
        if map.offsets.get(key).is_some_and(|last| r.offset < *last) {
            return false;
        }
        !(r.value.is_none() && r.offset < first_dirty && drop_tombstones)
    };
    let kept: Vec<Record> = records.iter().filter(|r| keep(r)).cloned().collect();
    if kept.len() == records.len() {
        return vec![batch];
    }
    if kept.is_empty() {
        return Vec::new();
    }
    match encode(header, &kept) {
        Ok(encoded) => encoded,
        Err(e) => {
            tracing::warn!(offset = header.base_offset, error = %e, "cannot encode a cleaned batch; keeping it whole");
            vec![batch]
        }
    }
}

/// `records` (what is left of the batch `header`) as batches in the same
/// codec, with the same producer, sequences, timestamps and offsets.
fn encode(header: &BatchHeader, records: &[Record]) -> Result<Vec<Bytes>, BatchError> {
    let compression = match header.compression() {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        _ => Compression::Zstd,
    };
    let mut records = records.to_vec();
    if header.is_log_append_time() {
        // The batch's time is its max timestamp; keep it.
        for r in &mut records {
            r.timestamp = header.max_timestamp;
        }
    }
    if header.base_sequence == -1 {
        // No sequences: the encoder takes the first record's as the base,
        // and keeps a batch together while offset minus sequence holds.
        let first = records.first().map_or(0, |r| r.offset);
        for r in &mut records {
            r.sequence = (r.offset - first) as i32 - 1;
        }
    }
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|e| BatchError::Corrupt {
        reason: format!("cannot encode cleaned records: {e}"),
    })?;
    let mut out = out.freeze();
    let mut batches = Vec::new();
    while !out.is_empty() {
        let h = BatchHeader::parse(&out)?;
        let mut b = out.split_to(h.total_len().min(out.len())).to_vec();
        if header.is_log_append_time() {
            super::batch::set_log_append_time(&mut b);
        }
        batches.push(Bytes::from(b));
    }
    Ok(batches)
}

/// Refuses records without a key (a compacted topic could never clean
/// them); control batches pass.
pub fn check_keyed(records: &Bytes, max_batch_bytes: usize) -> Result<(), BatchError> {
    let headers = super::batch::validate_batches(records, max_batch_bytes)?;
    let mut pos = 0;
    for h in &headers {
        let batch = records.slice(pos..pos + h.total_len());
        pos += h.total_len();
        if h.is_control() {
            continue;
        }
        let keyless = match (h.compression(), first_keyless(&batch, h.record_count())) {
            // Uncompressed: the records' key lengths, read in place.
            (0, Some(found)) => found,
            _ => {
                let decoded = decode(&batch).ok_or_else(|| BatchError::Corrupt {
                    reason: format!("batch does not decode. base_offset={}", h.base_offset),
                })?;
                decoded.iter().position(|r| r.key.is_none())
            }
        };
        if let Some(i) = keyless {
            return Err(BatchError::NotAllowed {
                reason: format!(
                    "a compacted topic (cleanup.policy=compact) takes only records with a key. record={i}"
                ),
            });
        }
    }
    Ok(())
}

/// The index of the first record without a key in an uncompressed batch
/// (Some(None): every record has one), read from the records' length
/// prefixes without decoding them; None when the records do not parse
/// (the caller decodes, and reports what is wrong).
fn first_keyless(batch: &[u8], count: i32) -> Option<Option<usize>> {
    let mut at = super::BATCH_HEADER_LEN;
    for i in 0..usize::try_from(count).ok()? {
        let (len, n) = super::batch::read_varint(batch.get(at..)?)?;
        let body = at + n;
        let end = body.checked_add(usize::try_from(len).ok()?)?;
        let record = batch.get(body..end)?;
        // attributes (1 byte), timestampDelta, offsetDelta, keyLength.
        let mut pos = 1;
        for _ in 0..2 {
            pos += super::batch::read_varint(record.get(pos..)?)?.1;
        }
        let (key_len, _) = super::batch::read_varint(record.get(pos..)?)?;
        if key_len < 0 {
            return Some(Some(i));
        }
        at = end;
    }
    (at == batch.len()).then_some(None)
}

#[cfg(test)]
mod tests;
