//! The local log engine: one [`Log`] per partition, in Kafka's on-disk layout.
//!
//! # Overview
//!
//! A partition directory holds segments `<base_offset:020>.log` of whole
//! RecordBatch v2 batches, each with a sparse `.index` (relative offset ->
//! file position) and `.timeindex` (timestamp -> relative offset), plus two
//! small checkpoint files (see below). The last segment is the active one and
//! takes appends; the others are sealed and read-only. Segments roll on
//! `segment_bytes` and `segment_ms`; retention and DeleteRecords delete whole
//! segments from the front.
//!
//! Batches stay opaque: [`batch`] validates headers and CRCs and rewrites base
//! offsets in place. Offsets are contiguous except where the log cleaner
//! ([`cleaner`], for `cleanup.policy=compact`) removed records: it keeps
//! offsets, so a cleaned log has gaps, and a compacted topic's follower
//! copies them.
//!
//! Timestamp lookups ([`Log::offset_for_timestamp`], [`Log::max_timestamp`])
//! work at batch granularity: they return a batch's base offset and its max
//! timestamp, never a record inside a batch. A consumer seeking there reads
//! at most one batch of earlier records.
//!
//! Files of a partition directory:
//!
//! - `<base>.log`, `<base>.index`, `<base>.timeindex`: Kafka's formats.
//! - `recovery-point-offset-checkpoint`: text, `version=1`,
//!   `recovery_point=<offset>`, `clean_shutdown=<true|false>`, one per line.
//!   Batches below the recovery point are durable and were validated. It is
//!   written at each roll (the new active segment's base offset) and by
//!   [`Log::close`] (the log end offset, `clean_shutdown=true`); [`Log::open`]
//!   immediately rewrites it with `clean_shutdown=false`.
//! - `log-start-offset`: text, `version=1`, `log_start_offset=<offset>`,
//!   written whenever DeleteRecords, retention or truncation moves the log
//!   start offset.
//! - `cleaner-offset-checkpoint`: text, `version=1`, `first_dirty=<offset>`:
//!   below it the cleaner has cleaned (and offsets may have gaps).
//! - `cleaner-swap` and `*.cleaned`: a cleaner pass in flight (see
//!   [`cleaner`]; completed or removed at open).
//!
//! # Consistency
//!
//! One writer: appends, retention, DeleteRecords and truncation take
//! `&mut self`; reads take `&self` and see whole batches only, up to the log
//! end offset. The log end offset is the next offset to assign and is always
//! a batch boundary. `log_start_offset <= log_end_offset`, and the first
//! segment's base offset is `<= log_start_offset`.
//!
//! # Crash safety
//!
//! Appends reach the page cache only. [`Log::sync`] (or fsyncing the file from
//! [`Log::sync_handle`] outside a lock) makes everything below the returned
//! offset durable; sealed segments are fsynced when they roll. On
//! [`Log::open`] after an unclean shutdown, the segments at or after the
//! recovery point are scanned batch by batch; the first torn or corrupt batch
//! and everything after it is dropped (see `recovery`). The active segment
//! is scanned the same way after a clean shutdown too (damage after a stop
//! is still caught); sealed segments below the recovery point are trusted
//! from their index files. Index files are rebuilt from the log whenever
//! they are missing or inconsistent.

pub mod batch;
pub(crate) mod checkpoint;
pub mod cleaner;
pub mod files;
pub mod index;
pub mod recompress;
mod recovery;
mod segment;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;

pub use batch::{assign_offsets, validate_batches, BatchError, BatchHeader, BATCH_HEADER_LEN};
pub use cleaner::Compaction;

use crate::zerocopy::FileRegion;
use checkpoint::RecoveryCheckpoint;
pub(crate) use segment::file_batches;
use segment::{ActiveSegment, SealedSegment, SegmentCore, MAX_RELATIVE_OFFSET, MAX_SEGMENT_BYTES};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Errors of the local log.
///
/// Kafka error codes at the API edge: `OffsetOutOfRange` ->
/// OFFSET_OUT_OF_RANGE (1); `AppendTooLarge` -> MESSAGE_TOO_LARGE (10);
/// `AppendMismatch` -> CORRUPT_MESSAGE (2) (a caller bug); `NotContiguous`
/// (a follower's fetch that does not continue its log) stays inside the
/// broker; `Corrupt` and `Io`
/// -> KAFKA_STORAGE_ERROR (56).
#[derive(Debug, Error)]
pub enum LogError {
    #[error("offset out of range. offset={offset}, log_start_offset={log_start_offset}, log_end_offset={log_end_offset}")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error(
        "append does not match its batch headers. buf_len={buf_len}, headers_len={headers_len}"
    )]
    AppendMismatch { buf_len: usize, headers_len: usize },
    #[error("append does not fit in one segment. bytes={bytes}, offsets={offsets}")]
    AppendTooLarge { bytes: u64, offsets: i64 },
    /// A replicated append does not continue the log where it ends.
    #[error("replicated batches do not continue the log. expected={expected}, got={got}")]
    NotContiguous { expected: i64, got: i64 },
    #[error("corrupt log data. file={}, position={position}", path.display())]
    Corrupt {
        path: PathBuf,
        position: u64,
        #[source]
        source: BatchError,
    },
    #[error("an fsync of this log failed earlier; it takes no appends until a restart recovers it from disk. dir={}", dir.display())]
    SyncFailed { dir: PathBuf },
    #[error("the log was opened read-only (its disk could not be written at start); it takes no appends until a restart. dir={}", dir.display())]
    ReadOnly { dir: PathBuf },
    #[error("log i/o failed. op={op}, file={}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        LogError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Per-partition log settings (Kafka topic configs of the same names).
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when an append would pass this size (capped at
    /// 2 GiB - 1 so positions fit Kafka's index format). Default 1 GiB.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment's first append is this old.
    /// Default 7 days.
    pub segment_ms: Option<i64>,
    /// `retention.ms`: delete sealed segments whose max timestamp is older.
    /// None (or negative) = infinite. Default 7 days.
    pub retention_ms: Option<i64>,
    /// `retention.bytes`: delete sealed segments while the log stays at or
    /// above this size. None (or negative) = infinite (the default).
    pub retention_bytes: Option<i64>,
    /// `index.interval.bytes`: bytes of log between index entries. Default 4096.
    pub index_interval_bytes: u32,
    /// When appended bytes start their write-back (the broker's setting).
    pub writeback: crate::writeback::Writeback,
    /// The broker's open segment files and their budget
    /// (`--max-open-segment-files`), shared by all its logs.
    pub files: Arc<files::OpenFiles>,
    /// `cleanup.policy` holds `compact`: the cleaner's settings. Offsets
    /// may then have gaps anywhere in the log (a follower copies its
    /// leader's cleaned batches as they are).
    pub compaction: Option<Compaction>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: Some(7 * DAY_MS),
            retention_ms: Some(7 * DAY_MS),
            retention_bytes: None,
            index_interval_bytes: 4096,
            writeback: crate::writeback::Writeback::default(),
            files: Arc::default(),
            compaction: None,
        }
    }
}

/// The result of [`Log::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker time written into the batches, -1 for CreateTime.
    pub log_append_time: i64,
    pub log_start_offset: i64,
}

/// The result of [`Log::read`]: whole batches, possibly none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchSlice {
    pub data: Bytes,
}

/// The local log of one partition.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    sealed: VecDeque<SealedSegment>,
    active: ActiveSegment,
    log_start_offset: i64,
    recovery_point: i64,
    /// The first offset the cleaner has not cleaned (`cleaner.rs`).
    first_dirty: i64,
    /// An fsync of this log failed. Linux may then drop the pages it could
    /// not write and report the error once, so a later fsync can succeed
    /// over a hole: from here on nothing is appended or made durable, until
    /// a restart recovers the log from what is on disk (Kafka takes the log
    /// directory offline).
    sync_failed: bool,
    /// The log could not be written when it opened (a full or read-only
    /// disk): it serves reads and takes no appends, and leaves its files as
    /// they are, until a restart.
    read_only: bool,
}

/// A sealed segment as tiering sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSegmentInfo {
    pub base_offset: i64,
    /// One past the last offset.
    pub next_offset: i64,
    pub size: u64,
    pub max_timestamp: Option<i64>,
    /// What time retention compares (max timestamp, else file mtime).
    pub retention_timestamp: Option<i64>,
    pub log_path: PathBuf,
    pub index_path: PathBuf,
    pub time_index_path: PathBuf,
}

impl Log {
    /// Opens (creating if missing) and recovers the log in `dir`.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Log, LogError> {
        fs::create_dir_all(dir).map_err(|e| LogError::io("create", dir, e))?;
        cleaner::finish_swap(dir)?;
        let recovery = checkpoint::read_recovery(dir)?;
        let stored_start = checkpoint::read_log_start(dir)?;
        let first_dirty = cleaner::read_first_dirty(dir)?.unwrap_or(0);
        let gaps_below = if config.compaction.is_some() {
            i64::MAX
        } else {
            first_dirty
        };
        let mut loaded = recovery::load(dir, config.index_interval_bytes, recovery, gaps_below)?;
        // A log that opens with data writes its recovery checkpoint now. A
        // new log has nothing to checkpoint: its first checkpoint comes at
        // the first roll. A crash before then finds no checkpoint, and
        // recovery reads the active segment from its start, as it would
        // with one.
        let fresh = recovery.is_none() && loaded.is_empty();
        let active = match loaded.pop() {
            Some(last) => ActiveSegment::from_loaded(last, &config.files)?,
            None => ActiveSegment::create(dir, stored_start.unwrap_or(0), &config.files)?,
        };
        let sealed: VecDeque<SealedSegment> = loaded
            .into_iter()
            .map(|l| SealedSegment::from_loaded(l, &config.files))
            .collect();
        let first_base = sealed
            .front()
            .map_or(active.core().base_offset(), |s| s.core().base_offset());
        let mut log = Log {
            dir: dir.to_path_buf(),
            config,
            sealed,
            active,
            log_start_offset: stored_start.unwrap_or(0).max(first_base),
            recovery_point: 0,
            first_dirty,
            sync_failed: false,
            read_only: false,
        };
        let log_end_offset = log.log_end_offset();
        log.recovery_point = recovery.map_or(0, |c| c.recovery_point).min(log_end_offset);
        if log.log_start_offset > log_end_offset {
            // The tail below a persisted log start was lost: start over there.
            tracing::warn!(
                dir = %dir.display(),
                log_start_offset = log.log_start_offset,
                log_end_offset,
                "log end below log start after recovery; starting empty at log start"
            );
            log.truncate_fully_and_start_at(log.log_start_offset)?;
        } else {
            log.delete_sealed_below_start()?;
        }
        let written = if fresh {
            Ok(())
        } else {
            log.write_recovery_point(false)
        };
        if let Err(e) = written {
            // A full (or read-only) disk must not keep the broker from
            // serving what it holds: nothing is written from here on, so the
            // checkpoint on disk stays true.
            let LogError::Io { source, .. } = &e else {
                return Err(e);
            };
            tracing::error!(
                dir = %dir.display(),
                error = %source,
                "cannot write to the log's directory; the partition is read-only until a restart"
            );
            log.read_only = true;
        }
        tracing::debug!(
            dir = %dir.display(),
            log_start_offset = log.log_start_offset,
            log_end_offset = log.log_end_offset(),
            segments = log.segment_count(),
            "opened log"
        );
        Ok(log)
    }

    /// Appends validated batches (`headers` from [`validate_batches`] over
    /// `buf`). Assigns offsets from the log end offset, rolls first if the
    /// active segment is full or old, writes to the page cache (no fsync).
    /// With `log_append_time`, batches get `now_ms` as their timestamp.
    ///
    /// `buf` is not copied or changed: each batch goes to the file as its
    /// rewritten header ([`batch::assigned_headers`]) followed by the rest
    /// of the batch, in one vectored write.
    pub fn append(
        &mut self,
        buf: &[u8],
        headers: &[BatchHeader],
        leader_epoch: i32,
        now_ms: i64,
        log_append_time: bool,
    ) -> Result<AppendInfo, LogError> {
        self.check_sync_ok()?;
        let headers_len: usize = headers.iter().map(BatchHeader::total_len).sum();
        if headers.is_empty() || headers_len != buf.len() {
            return Err(LogError::AppendMismatch {
                buf_len: buf.len(),
                headers_len,
            });
        }
        let offsets: i64 = headers
            .iter()
            .map(|h| i64::from(h.last_offset_delta) + 1)
            .sum();
        let bytes = buf.len() as u64;
        if bytes > MAX_SEGMENT_BYTES || offsets - 1 > MAX_RELATIVE_OFFSET {
            return Err(LogError::AppendTooLarge { bytes, offsets });
        }
        let base_offset = self.log_end_offset();
        let last_offset = base_offset + offsets - 1;
        if self
            .active
            .should_roll(bytes, last_offset, now_ms, &self.config)
        {
            self.roll()?;
        }
        let append_time = log_append_time.then_some(now_ms);
        let rewritten =
            batch::assigned_headers(buf, headers, base_offset, leader_epoch, append_time);
        let mismatch = || LogError::AppendMismatch {
            buf_len: buf.len(),
            headers_len,
        };
        if rewritten.len() != headers.len() {
            return Err(mismatch());
        }
        let mut assigned = Vec::with_capacity(headers.len());
        let mut parts: Vec<&[u8]> = Vec::with_capacity(headers.len() * 2);
        let mut pos = 0usize;
        for (header, bytes) in headers.iter().zip(&rewritten) {
            let parsed = BatchHeader::parse(bytes)
                .ok()
                .filter(|parsed| parsed.total_len() == header.total_len())
                .ok_or_else(mismatch)?;
            parts.push(bytes);
            parts.push(&buf[pos + BATCH_HEADER_LEN..pos + header.total_len()]);
            pos += header.total_len();
            assigned.push(parsed);
        }
        self.active
            .append(&parts, &assigned, now_ms, &self.config)?;
        Ok(AppendInfo {
            base_offset,
            last_offset,
            log_append_time: append_time.unwrap_or(-1),
            log_start_offset: self.log_start_offset,
        })
    }

    /// Appends batches copied from the partition's leader as they are:
    /// offsets, leader epochs and timestamps kept, nothing rewritten
    /// (`headers` from [`validate_batches`] over `buf`). The first batch
    /// must start at the log end and each next one where the previous one
    /// ended, so a follower's log is the leader's byte for byte. Rolls
    /// first if the active segment is full or old; no fsync.
    pub fn append_replicated(
        &mut self,
        buf: &[u8],
        headers: &[BatchHeader],
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        self.check_sync_ok()?;
        let headers_len: usize = headers.iter().map(BatchHeader::total_len).sum();
        let (Some(first), Some(last)) = (headers.first(), headers.last()) else {
            return Err(LogError::AppendMismatch {
                buf_len: buf.len(),
                headers_len,
            });
        };
        if headers_len != buf.len() {
            return Err(LogError::AppendMismatch {
                buf_len: buf.len(),
                headers_len,
            });
        }
        let mut expected = self.log_end_offset();
        let gaps = self.config.compaction.is_some();
        for h in headers {
            let in_order = if gaps {
                h.base_offset >= expected
            } else {
                h.base_offset == expected
            };
            if !in_order || h.last_offset_delta < 0 {
                return Err(LogError::NotContiguous {
                    expected,
                    got: h.base_offset,
                });
            }
            expected = h.last_offset() + 1;
        }
        let base_offset = first.base_offset;
        let last_offset = last.last_offset();
        let bytes = buf.len() as u64;
        if bytes > MAX_SEGMENT_BYTES {
            return Err(LogError::AppendTooLarge {
                bytes,
                offsets: last_offset + 1 - base_offset,
            });
        }
        if self
            .active
            .should_roll(bytes, last_offset, now_ms, &self.config)
        {
            self.roll()?;
        }
        self.active.append(&[buf], headers, now_ms, &self.config)?;
        Ok(AppendInfo {
            base_offset,
            last_offset,
            log_append_time: -1,
            log_start_offset: self.log_start_offset,
        })
    }

    /// Whole batches from the one containing `offset`, up to `max_bytes` but
    /// at least one batch (KIP-74), never a batch with base offset
    /// `>= max_offset` (the high watermark). Data comes from one segment.
    /// Empty at the log end offset.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
    ) -> Result<FetchSlice, LogError> {
        let data =
            self.read_from_segments(offset, |core| core.read(offset, max_bytes, max_offset))?;
        Ok(FetchSlice {
            data: data.unwrap_or_default(),
        })
    }

    /// fdatasyncs the active segment; returns the log end offset that is now
    /// durable.
    pub fn sync(&mut self) -> Result<i64, LogError> {
        self.check_sync_ok()?;
        let log_end_offset = self.log_end_offset();
        self.active
            .sync()
            .inspect_err(|_| self.mark_sync_failed())?;
        Ok(log_end_offset)
    }

    /// The active segment's file and the current log end offset: fdatasync
    /// the file (outside any lock, for group commit) and everything below the
    /// offset is durable, since sealed segments are fsynced when they roll.
    /// Fails once an fsync of the log has failed.
    pub fn sync_handle(&self) -> Result<(Arc<File>, i64), LogError> {
        self.check_sync_ok()?;
        Ok((self.active.core().open()?, self.log_end_offset()))
    }

    /// Records that an fsync of this log failed (here, or on a file from
    /// [`Log::sync_handle`]): see `sync_failed`. The recovery point drops to
    /// the log start, so the next open scans every segment: a round's fsync
    /// may fail after the segment it covered was sealed by a roll whose own
    /// fsync did not see the error (the kernel reports it once per file).
    pub fn mark_sync_failed(&mut self) {
        if self.sync_failed {
            return;
        }
        self.sync_failed = true;
        tracing::error!(
            dir = %self.dir.display(),
            "fsync of the log failed; the partition takes no more appends until the broker restarts"
        );
        self.recovery_point = self.recovery_point.min(self.log_start_offset);
        if let Err(e) = self.write_recovery_point(false) {
            tracing::error!(dir = %self.dir.display(), error = %e, "cannot lower the recovery point after a failed fsync");
        }
    }

    /// Err once an fsync of the log has failed, or for a read-only log.
    pub fn check_sync_ok(&self) -> Result<(), LogError> {
        if self.read_only {
            return Err(LogError::ReadOnly {
                dir: self.dir.clone(),
            });
        }
        if self.sync_failed {
            return Err(LogError::SyncFailed {
                dir: self.dir.clone(),
            });
        }
        Ok(())
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// Base offset of the oldest segment.
    pub fn first_segment_base(&self) -> i64 {
        self.cores().next().map_or(0, SegmentCore::base_offset)
    }

    /// Base offset of the active segment (it changes when the log rolls).
    pub fn active_base_offset(&self) -> i64 {
        self.active.core().base_offset()
    }

    /// The next offset to assign.
    pub fn log_end_offset(&self) -> i64 {
        self.active.core().next_offset()
    }

    /// Bytes of all segment files.
    pub fn size_bytes(&self) -> u64 {
        self.cores().map(SegmentCore::size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.sealed.len() + 1
    }

    /// ListOffsets by timestamp: the first batch at or above the log start
    /// whose max timestamp is `>= timestamp`, as (its base offset, or the log
    /// start if higher; its max timestamp). Batch granularity: see the module
    /// docs. None if no batch qualifies.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        for core in self.cores() {
            if let Some(found) = core.find_timestamp(timestamp, self.log_start_offset)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP (-3): the largest batch max timestamp and
    /// the base offset of the first batch that has it (not below the log
    /// start), as (timestamp, offset). None if no batch has a timestamp.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let mut best: Option<(i64, i64)> = None;
        for (timestamp, offset) in self.cores().filter_map(|c| c.state.max_timestamp()) {
            if best.is_none_or(|(t, _)| timestamp > t) {
                best = Some((timestamp, offset));
            }
        }
        best.map(|(timestamp, offset)| (timestamp, offset.max(self.log_start_offset)))
    }

    /// Like [`Log::read`], as a file range of whole batches (for sendfile)
    /// with the offset after its last batch; `None` at the log end offset.
    pub fn read_region(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
    ) -> Result<Option<(FileRegion, i64)>, LogError> {
        self.read_from_segments(offset, |core| {
            core.read_region(offset, max_bytes, max_offset)
        })
    }

    /// The first `Some` of `read` over the segments from the one that would
    /// hold `offset`; `None` at the log end offset, an error out of range.
    fn read_from_segments<T>(
        &self,
        offset: i64,
        read: impl Fn(&SegmentCore) -> Result<Option<T>, LogError>,
    ) -> Result<Option<T>, LogError> {
        let log_end_offset = self.log_end_offset();
        if offset < self.log_start_offset || offset > log_end_offset {
            return Err(self.out_of_range(offset));
        }
        if offset == log_end_offset {
            return Ok(None);
        }
        for core in self.cores().skip(self.segment_index(offset)) {
            if let Some(found) = read(core)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// DeleteRecords: moves the log start offset up to `offset` (persisted),
    /// deletes segments entirely below it and returns the new log start
    /// offset. A lower `offset` changes nothing. When `offset` is the log end
    /// offset, the active segment is rolled so that it can go too.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        if offset < 0 || offset > self.log_end_offset() {
            return Err(self.out_of_range(offset));
        }
        if offset <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        self.set_log_start_offset(offset)?;
        let active = self.active.core();
        if !active.state.is_empty() && active.next_offset() <= offset {
            self.roll()?;
        }
        self.delete_sealed_below_start()?;
        Ok(self.log_start_offset)
    }

    /// Deletes whole sealed segments, oldest first: those whose max timestamp
    /// (file mtime if none) is more than `retention_ms` before `now_ms`, then
    /// those that keep the log at or above `retention_bytes`. First the
    /// active segment is rolled when `segment.ms` has passed or all it
    /// holds is past `retention_ms` (see `ActiveSegment::due_for_roll`),
    /// so an idle partition's records expire too; the new active segment
    /// is empty and never deleted. Returns how many were deleted; the log
    /// start offset moves to the first remaining segment.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        if self.active.due_for_roll(now_ms, &self.config) {
            self.roll()?;
        }
        let mut count = 0usize;
        if let Some(retention_ms) = self.config.retention_ms.filter(|ms| *ms >= 0) {
            count = self
                .sealed
                .iter()
                .take_while(|s| {
                    s.retention_timestamp()
                        .is_some_and(|ts| now_ms.saturating_sub(ts) > retention_ms)
                })
                .count();
        }
        if let Some(retention_bytes) = self.config.retention_bytes.filter(|b| *b >= 0) {
            let mut excess = self
                .size_bytes()
                .saturating_sub(retention_bytes.unsigned_abs());
            let mut by_size = 0usize;
            for segment in &self.sealed {
                if segment.core().size() > excess {
                    break;
                }
                excess -= segment.core().size();
                by_size += 1;
            }
            count = count.max(by_size);
        }
        if count == 0 {
            return Ok(0);
        }
        let new_start = self
            .cores()
            .nth(count)
            .map_or(self.log_end_offset(), SegmentCore::base_offset);
        if new_start > self.log_start_offset {
            self.set_log_start_offset(new_start)?;
        }
        let deleted = self.delete_sealed_below_start()?;
        tracing::info!(
            dir = %self.dir.display(),
            deleted,
            log_start_offset = self.log_start_offset,
            "retention deleted segments"
        );
        Ok(deleted)
    }

    /// Replaces the config; applies to later appends, rolls and retention.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Drops every batch at or above `offset`. An `offset` inside a batch
    /// drops that whole batch (the log end becomes its base offset). Below the
    /// first segment, the log restarts empty at `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        if offset < 0 {
            return Err(self.out_of_range(offset));
        }
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        let first_base = self.cores().next().map_or(0, SegmentCore::base_offset);
        if offset < first_base {
            return self.truncate_fully_and_start_at(offset);
        }
        // Lower the recovery point first: a crash mid-way must rescan.
        self.recovery_point = self.recovery_point.min(offset);
        self.first_dirty = self.first_dirty.min(offset);
        self.write_recovery_point(false)?;
        while self.active.core().base_offset() > offset {
            let Some(previous) = self.sealed.pop_back() else {
                return self.truncate_fully_and_start_at(offset);
            };
            let dropped = std::mem::replace(&mut self.active, previous.into_active());
            dropped.delete()?;
        }
        let log_end_offset = self.active.truncate_to(offset)?;
        if self.log_start_offset > log_end_offset {
            self.set_log_start_offset(log_end_offset)?;
        }
        tracing::info!(dir = %self.dir.display(), log_end_offset, "truncated log");
        Ok(())
    }

    /// Makes everything durable and marks a clean shutdown, so the next open
    /// scans nothing. After a failed fsync it marks nothing: the next open
    /// scans the whole log.
    pub fn close(mut self) -> Result<(), LogError> {
        self.check_sync_ok()?;
        self.active.prepare_seal()?;
        self.recovery_point = self.log_end_offset();
        self.write_recovery_point(true)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Seals the active segment unless it is empty; returns whether it did.
    pub fn roll_if_not_empty(&mut self) -> Result<bool, LogError> {
        if self.active.core().state.is_empty() {
            return Ok(false);
        }
        self.roll().map(|()| true)
    }

    /// Seals the active segment and starts a new one at the log end offset.
    fn roll(&mut self) -> Result<(), LogError> {
        let log_end_offset = self.log_end_offset();
        if let Err(e) = self.active.prepare_seal() {
            if matches!(e, LogError::Io { op: "sync", .. }) {
                self.mark_sync_failed();
            }
            return Err(e);
        }
        let fresh = ActiveSegment::create(&self.dir, log_end_offset, &self.config.files)?;
        let sealed = std::mem::replace(&mut self.active, fresh).into_sealed();
        self.sealed.push_back(sealed);
        self.recovery_point = log_end_offset;
        self.write_recovery_point(false)?;
        tracing::debug!(dir = %self.dir.display(), base_offset = log_end_offset, "rolled segment");
        Ok(())
    }

    /// Deletes every segment and starts empty at `offset` (the new log start).
    fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), LogError> {
        self.recovery_point = self.recovery_point.min(offset);
        self.first_dirty = self.first_dirty.min(offset);
        self.write_recovery_point(false)?;
        self.set_log_start_offset(offset)?;
        let fresh = ActiveSegment::create(&self.dir, offset, &self.config.files)?;
        let old_active = std::mem::replace(&mut self.active, fresh);
        let mut result = Ok(());
        for segment in self.sealed.drain(..) {
            result = result.and(segment.delete());
        }
        result.and(old_active.delete())
    }

    /// The sealed segments, oldest first, as files plus a description (what
    /// tiering uploads). Their index files are on disk: sealing writes them.
    pub fn sealed_segments(&self) -> Vec<SealedSegmentInfo> {
        self.sealed
            .iter()
            .map(|s| {
                let core = s.core();
                SealedSegmentInfo {
                    base_offset: core.base_offset(),
                    next_offset: core.next_offset(),
                    size: core.size(),
                    max_timestamp: core.state.max_timestamp().map(|(ts, _)| ts),
                    retention_timestamp: s.retention_timestamp(),
                    log_path: core.path().to_path_buf(),
                    index_path: core.index_path(),
                    time_index_path: core.time_index_path(),
                }
            })
            .collect()
    }

    /// Drops the whole local log and starts it empty at `offset`, for a
    /// replica whose history lives in the tier beyond what it holds locally
    /// (a restored or replaced data dir). Refused below the log end, so no
    /// offset can be assigned twice.
    pub fn reset_to(&mut self, offset: i64) -> Result<(), LogError> {
        if offset < self.log_end_offset() {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.log_end_offset(),
            });
        }
        self.truncate_fully_and_start_at(offset)
    }

    /// Deletes sealed segments that end at or below the log start offset.
    fn delete_sealed_below_start(&mut self) -> Result<usize, LogError> {
        let mut deleted = 0;
        while self
            .sealed
            .front()
            .is_some_and(|s| s.core().next_offset() <= self.log_start_offset)
        {
            if let Some(segment) = self.sealed.pop_front() {
                segment.delete()?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    fn set_log_start_offset(&mut self, offset: i64) -> Result<(), LogError> {
        checkpoint::write_log_start(&self.dir, offset)?;
        self.log_start_offset = offset;
        Ok(())
    }

    fn write_recovery_point(&self, clean_shutdown: bool) -> Result<(), LogError> {
        checkpoint::write_recovery(
            &self.dir,
            RecoveryCheckpoint {
                recovery_point: self.recovery_point,
                clean_shutdown,
            },
        )
    }

    fn out_of_range(&self, offset: i64) -> LogError {
        LogError::OffsetOutOfRange {
            offset,
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset(),
        }
    }

    /// Segments oldest first, the active one last.
    fn cores(&self) -> impl Iterator<Item = &SegmentCore> {
        self.sealed
            .iter()
            .map(SealedSegment::core)
            .chain(std::iter::once(self.active.core()))
    }

    /// Index in [`Log::cores`] of the segment that would hold `offset`.
    fn segment_index(&self, offset: i64) -> usize {
        let at_or_below = self
            .sealed
            .partition_point(|s| s.core().base_offset() <= offset);
        if self.active.core().base_offset() <= offset {
            self.sealed.len()
        } else {
            at_or_below.saturating_sub(1)
        }
    }
}
