//! Segments: one `.log` file of whole batches plus its two sparse indexes.
//!
//! # Overview
//!
//! A segment is named by its base offset: `<base_offset:020>.log`, `.index`,
//! `.timeindex`. [`ActiveSegment`] is the one segment a log appends to; it owns
//! the write path. [`SealedSegment`] is read-only. Rolling turns the first into
//! the second ([`ActiveSegment::prepare_seal`] then
//! [`ActiveSegment::into_sealed`]). Both read through [`SegmentCore`] with
//! positional reads (`read_at`), so reads need only `&self`. A segment's file
//! is a [`SegmentFile`]: opened at its first use and closed again when the
//! broker holds more segment files open than its budget (`files`).
//!
//! [`SegmentState`] is the pure bookkeeping (size, next offset, max timestamp,
//! indexes) shared by the append path and by recovery, so both index a
//! segment the same way.
//!
//! # Consistency
//!
//! Offsets within a segment are contiguous: each batch's base offset is the
//! previous batch's last offset + 1, and the first is the segment's base
//! offset; recovery treats anything else as corruption. A segment the log
//! cleaner wrote, and any segment of a compacted topic, may have gaps:
//! offsets only increase, and a sealed segment covers up to the next one's
//! base. File positions fit in an i32 as in Kafka, so a segment never
//! grows past 2 GiB.
//!
//! # Crash safety
//!
//! Appends go to the page cache. Sealing fsyncs the log file and writes both
//! index files atomically. The index files of the active segment are written
//! only when it is sealed or the log closes; after a crash they are rebuilt by
//! [`scan`].

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use bytes::Bytes;

use super::batch::{BatchError, BatchHeader, BATCH_HEADER_LEN, NO_TIMESTAMP};
use super::checkpoint::{sync_dir, write_atomic};
use super::files::{open_rw, OpenFiles, SegmentFile};
use super::index::{OffsetIndex, TimeIndex};
use super::{LogConfig, LogError};
use crate::zerocopy::FileRegion;

pub(crate) const LOG_SUFFIX: &str = "log";
pub(crate) const INDEX_SUFFIX: &str = "index";
pub(crate) const TIME_INDEX_SUFFIX: &str = "timeindex";

/// Largest segment, so that every position fits Kafka's i32 index field.
pub(crate) const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;
/// Largest span of offsets in one segment (relative offsets are i32 in Kafka).
pub(crate) const MAX_RELATIVE_OFFSET: i64 = i32::MAX as i64;

/// Read size when walking headers near an index entry.
const WALK_BLOCK: usize = 8 * 1024;
/// Read size when scanning a whole segment.
pub(super) const SCAN_BLOCK: usize = 1024 * 1024;

/// `<base_offset:020>.<suffix>`.
pub(crate) fn file_name(base_offset: i64, suffix: &str) -> String {
    format!("{base_offset:020}.{suffix}")
}

/// The base offset of a `<base_offset:020>.log` file name.
pub(crate) fn parse_file_name(name: &str, suffix: &str) -> Option<i64> {
    let stem = name.strip_suffix(suffix)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

fn corrupt(path: &Path, position: u64, reason: impl Into<String>) -> LogError {
    LogError::Corrupt {
        path: path.to_path_buf(),
        position,
        source: BatchError::Corrupt {
            reason: reason.into(),
        },
    }
}

/// Buffered positional reads over `[0, end)` of a file.
pub(super) struct BlockReader<'a> {
    file: &'a File,
    end: u64,
    block: usize,
    buf: Vec<u8>,
    buf_start: u64,
}

impl<'a> BlockReader<'a> {
    pub(super) fn new(file: &'a File, end: u64, block: usize) -> Self {
        BlockReader {
            file,
            end,
            block,
            buf: Vec::new(),
            buf_start: 0,
        }
    }

    /// Bytes `[pos, pos + len)`, or None when that range passes `end`.
    pub(super) fn get(&mut self, pos: u64, len: usize) -> io::Result<Option<&[u8]>> {
        let len_u64 = len as u64;
        let Some(want_end) = pos.checked_add(len_u64).filter(|e| *e <= self.end) else {
            return Ok(None);
        };
        let buf_end = self.buf_start + self.buf.len() as u64;
        if pos < self.buf_start || want_end > buf_end {
            let read_len = len_u64.max(self.block as u64).min(self.end - pos);
            let read_len = usize::try_from(read_len).unwrap_or(len);
            self.buf.resize(read_len, 0);
            self.file.read_exact_at(&mut self.buf, pos)?;
            self.buf_start = pos;
        }
        let from = usize::try_from(pos - self.buf_start).unwrap_or(0);
        Ok(self.buf.get(from..from + len))
    }
}

/// Iterates batch headers of `[start, end)` of a segment file. Data below the
/// log end offset is trusted to be well formed; anything else is an error.
pub(super) struct HeaderWalker<'a> {
    reader: BlockReader<'a>,
    path: &'a Path,
    pos: u64,
    end: u64,
}

impl<'a> HeaderWalker<'a> {
    pub(super) fn new(file: &'a File, path: &'a Path, start: u64, end: u64) -> Self {
        HeaderWalker {
            reader: BlockReader::new(file, end, WALK_BLOCK),
            path,
            pos: start,
            end,
        }
    }

    pub(super) fn next_header(&mut self) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let pos = self.pos;
        if pos >= self.end {
            return Ok(None);
        }
        let avail = usize::try_from((self.end - pos).min(BATCH_HEADER_LEN as u64)).unwrap_or(0);
        let bytes = self
            .reader
            .get(pos, avail)
            .map_err(|e| LogError::io("read", self.path, e))?
            .unwrap_or_default();
        let header = BatchHeader::parse(bytes).map_err(|source| LogError::Corrupt {
            path: self.path.to_path_buf(),
            position: pos,
            source,
        })?;
        let next = pos + header.total_len() as u64;
        if next > self.end {
            return Err(corrupt(
                self.path,
                pos,
                format!(
                    "batch extends past segment end. size={}, end={}",
                    header.total_len(),
                    self.end
                ),
            ));
        }
        self.pos = next;
        Ok(Some((pos, header)))
    }
}

/// The batches of the first `size` bytes of a segment file, in order, with
/// their bytes (a batch that runs past `size` is [`LogError::Corrupt`]).
pub(crate) fn file_batches<'a>(
    file: &'a File,
    path: &'a Path,
    size: u64,
) -> impl Iterator<Item = Result<(BatchHeader, Bytes), LogError>> + 'a {
    let mut walker = HeaderWalker::new(file, path, 0, size);
    std::iter::from_fn(move || {
        let (pos, header) = match walker.next_header() {
            Ok(Some(found)) => found,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        let mut buf = vec![0u8; header.total_len()];
        Some(
            file.read_exact_at(&mut buf, pos)
                .map(|()| (header, Bytes::from(buf)))
                .map_err(|e| LogError::io("read", path, e)),
        )
    })
}

/// See [`SegmentCore::read_start`].
enum ReadStart {
    /// `offset` is past this segment.
    Past,
    /// The batch holding `offset` (position, header) starts at or above
    /// `max_offset`: nothing to return.
    AtMaxOffset((u64, BatchHeader)),
    /// Batches from `position` (the first one's header) up to `limit`.
    At {
        position: u64,
        first: BatchHeader,
        limit: u64,
    },
}

/// Bookkeeping of one segment: no I/O.
#[derive(Debug, Clone)]
pub(crate) struct SegmentState {
    pub(crate) base_offset: i64,
    /// One past the last offset in the segment.
    pub(crate) next_offset: i64,
    /// Bytes of whole batches.
    pub(crate) size: u64,
    /// Largest batch max timestamp, [`NO_TIMESTAMP`] if none.
    pub(crate) max_timestamp: i64,
    /// Base offset of the first batch that reached `max_timestamp`, -1 if none.
    pub(crate) offset_of_max_timestamp: i64,
    pub(super) bytes_since_index_entry: u64,
    pub(crate) offset_index: OffsetIndex,
    pub(crate) time_index: TimeIndex,
}

impl SegmentState {
    pub(crate) fn new(base_offset: i64) -> Self {
        SegmentState {
            base_offset,
            next_offset: base_offset,
            size: 0,
            max_timestamp: NO_TIMESTAMP,
            offset_of_max_timestamp: -1,
            bytes_since_index_entry: 0,
            offset_index: OffsetIndex::new(base_offset),
            time_index: TimeIndex::new(base_offset),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Accounts for the batch `header` written at `position` (after the
    /// previous one). Adds index entries every `index_interval` bytes.
    pub(crate) fn on_batch(&mut self, position: u64, header: &BatchHeader, index_interval: u32) {
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.base_offset;
        }
        if self.bytes_since_index_entry >= u64::from(index_interval) {
            if let Ok(position) = u32::try_from(position) {
                self.offset_index.append(header.base_offset, position);
                self.time_index
                    .maybe_append(self.max_timestamp, self.offset_of_max_timestamp);
            }
            self.bytes_since_index_entry = 0;
        }
        let len = header.total_len() as u64;
        self.bytes_since_index_entry += len;
        self.size = position + len;
        self.next_offset = header.next_offset();
    }

    /// Adds the final time index entry (Kafka does this when a segment stops
    /// being active), so the segment's max timestamp survives a reopen.
    pub(crate) fn finish_time_index(&mut self) {
        if self.offset_of_max_timestamp >= self.base_offset {
            self.time_index
                .maybe_append(self.max_timestamp, self.offset_of_max_timestamp);
        }
    }

    /// The max timestamp and its batch's base offset, if any batch has one.
    pub(crate) fn max_timestamp(&self) -> Option<(i64, i64)> {
        (self.offset_of_max_timestamp >= 0)
            .then_some((self.max_timestamp, self.offset_of_max_timestamp))
    }
}

/// A segment's file and state; the read path of both segment kinds.
#[derive(Debug)]
pub(crate) struct SegmentCore {
    file: Arc<SegmentFile>,
    pub(crate) state: SegmentState,
}

impl SegmentCore {
    /// The time retention compares: the max timestamp, or the file's
    /// modification time when no batch has a timestamp (as Kafka does).
    pub(crate) fn retention_timestamp(&self) -> Option<i64> {
        if let Some((timestamp, _)) = self.state.max_timestamp() {
            return Some(timestamp);
        }
        let modified = self.modified()?;
        let since_epoch = modified.duration_since(UNIX_EPOCH).ok()?;
        i64::try_from(since_epoch.as_millis()).ok()
    }

    pub(crate) fn base_offset(&self) -> i64 {
        self.state.base_offset
    }

    pub(crate) fn next_offset(&self) -> i64 {
        self.state.next_offset
    }

    pub(crate) fn size(&self) -> u64 {
        self.state.size
    }

    /// The file, opened if it is closed. Call only under the log's lock.
    pub(crate) fn open(&self) -> Result<Arc<File>, LogError> {
        self.file.open()
    }

    /// Tells this segment from any other, also one later at its path.
    pub(crate) fn file_id(&self) -> u64 {
        self.file.id()
    }

    /// The file's modification time (a stat of its path: no descriptor).
    pub(crate) fn modified(&self) -> Option<std::time::SystemTime> {
        fs::metadata(self.path()).and_then(|m| m.modified()).ok()
    }

    /// Position and header of the batch containing `offset`, walking headers
    /// forward from the offset index in `file` (this segment's, as
    /// [`SegmentCore::open`] gave it). None if `offset` is past this segment.
    pub(crate) fn find_batch(
        &self,
        file: &File,
        offset: i64,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let (_, start) = self.state.offset_index.lookup(offset);
        let mut walker = HeaderWalker::new(file, self.path(), u64::from(start), self.state.size);
        while let Some((pos, header)) = walker.next_header()? {
            if header.last_offset() >= offset {
                return Ok(Some((pos, header)));
            }
        }
        Ok(None)
    }

    /// Whole batches from the one containing `offset`, stopping before a batch
    /// with base offset `>= max_offset` and after `max_bytes` (but at least one
    /// batch). None if `offset` is past this segment.
    pub(crate) fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
    ) -> Result<Option<Bytes>, LogError> {
        let file = self.open()?;
        let (start, first, limit) = match self.read_start(&file, offset, max_offset)? {
            ReadStart::Past => return Ok(None),
            ReadStart::AtMaxOffset(_) => return Ok(Some(Bytes::new())),
            ReadStart::At {
                position,
                first,
                limit,
            } => (position, first, limit),
        };
        let want = (limit - start).min(max_bytes as u64);
        let mut buf = vec![0u8; usize::try_from(want).unwrap_or(0)];
        file.read_exact_at(&mut buf, start)
            .map_err(|e| LogError::io("read", self.path(), e))?;
        let mut end = 0usize;
        while let Some(rest) = buf.get(end..).filter(|r| r.len() >= BATCH_HEADER_LEN) {
            let header = BatchHeader::parse(rest).map_err(|source| LogError::Corrupt {
                path: self.path().to_path_buf(),
                position: start + end as u64,
                source,
            })?;
            if header.base_offset >= max_offset || header.total_len() > rest.len() {
                break;
            }
            end += header.total_len();
        }
        if end == 0 {
            // KIP-74: the first batch is returned whole even above max_bytes.
            let len = first.total_len();
            if start + len as u64 > self.state.size {
                return Err(corrupt(
                    self.path(),
                    start,
                    "batch extends past segment end",
                ));
            }
            buf.resize(len, 0);
            file.read_exact_at(&mut buf, start)
                .map_err(|e| LogError::io("read", self.path(), e))?;
            end = len;
        }
        buf.truncate(end);
        Ok(Some(Bytes::from(buf)))
    }

    /// Like [`SegmentCore::read`], but returns the file range of those
    /// batches (for sendfile) and the offset after the last one, reading
    /// only batch headers: from the index entry nearest the byte budget's
    /// end, so a few header reads whatever the size.
    pub(crate) fn read_region(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
    ) -> Result<Option<(FileRegion, i64)>, LogError> {
        let file = self.open()?;
        let region = |position, len| FileRegion {
            file: Arc::clone(&file),
            position,
            len,
        };
        let (start, first, limit) = match self.read_start(&file, offset, max_offset)? {
            ReadStart::Past => return Ok(None),
            ReadStart::AtMaxOffset((position, first)) => {
                return Ok(Some((region(position, 0), first.base_offset)))
            }
            ReadStart::At {
                position,
                first,
                limit,
            } => (position, first, limit),
        };
        let budget_end = start.saturating_add(max_bytes as u64).min(limit);
        // Batches from an index entry at or below the budget's end are whole
        // and below `max_offset` when the entry is (entries are batch starts).
        let (mut end, mut next) = (start, first.base_offset);
        if let Some((o, p)) = self
            .state
            .offset_index
            .last_at_or_before_position(budget_end)
            .filter(|(o, p)| u64::from(*p) > start && *o < max_offset)
        {
            (end, next) = (u64::from(p), o);
        }
        let mut walker = HeaderWalker::new(&file, self.path(), end, limit);
        while let Some((pos, header)) = walker.next_header()? {
            if header.base_offset >= max_offset || pos + header.total_len() as u64 > budget_end {
                next = header.base_offset;
                break;
            }
            end = pos + header.total_len() as u64;
            next = header.last_offset() + 1;
        }
        if end == start {
            // KIP-74: the first batch is returned whole even above max_bytes.
            end = start + first.total_len() as u64;
            if end > self.state.size {
                return Err(corrupt(
                    self.path(),
                    start,
                    "batch extends past segment end",
                ));
            }
            next = first.last_offset() + 1;
        }
        Ok(Some((region(start, end - start), next)))
    }

    /// Where a read from `offset` starts: the batch holding it, and how far
    /// batches below `max_offset` can reach (no batch at or after an index
    /// entry with offset >= `max_offset` is returned, so nothing past its
    /// position is needed).
    fn read_start(&self, file: &File, offset: i64, max_offset: i64) -> Result<ReadStart, LogError> {
        let Some((position, first)) = self.find_batch(file, offset)? else {
            return Ok(ReadStart::Past);
        };
        if first.base_offset >= max_offset {
            return Ok(ReadStart::AtMaxOffset((position, first)));
        }
        let limit = self
            .state
            .offset_index
            .first_position_at_or_after(max_offset)
            .map_or(self.state.size, |p| u64::from(p).min(self.state.size))
            .max(position);
        Ok(ReadStart::At {
            position,
            first,
            limit,
        })
    }

    /// The first batch with max timestamp `>= timestamp` and last offset
    /// `>= min_offset`, as (max(base offset, min_offset), batch max timestamp).
    pub(crate) fn find_timestamp(
        &self,
        timestamp: i64,
        min_offset: i64,
    ) -> Result<Option<(i64, i64)>, LogError> {
        if self.state.max_timestamp < timestamp || self.state.next_offset <= min_offset {
            return Ok(None);
        }
        let from_time = self
            .state
            .time_index
            .lookup(timestamp)
            .map_or(self.state.base_offset, |(_, offset)| offset);
        let (_, start) = self.state.offset_index.lookup(from_time.max(min_offset));
        let file = self.open()?;
        let mut walker = HeaderWalker::new(&file, self.path(), u64::from(start), self.state.size);
        while let Some((_, header)) = walker.next_header()? {
            if header.last_offset() >= min_offset && header.max_timestamp >= timestamp {
                return Ok(Some((
                    header.base_offset.max(min_offset),
                    header.max_timestamp,
                )));
            }
        }
        Ok(None)
    }

    pub(crate) fn path(&self) -> &Path {
        self.file.path()
    }

    pub(crate) fn index_path(&self) -> PathBuf {
        self.path().with_extension(INDEX_SUFFIX)
    }

    pub(crate) fn time_index_path(&self) -> PathBuf {
        self.path().with_extension(TIME_INDEX_SUFFIX)
    }

    fn write_index_files(&self) -> Result<(), LogError> {
        write_indexes(self.path(), &self.state)
    }

    fn delete_files(&self) -> Result<(), LogError> {
        for path in [
            self.path().to_path_buf(),
            self.index_path(),
            self.time_index_path(),
        ] {
            remove_if_exists(&path)?;
        }
        Ok(())
    }
}

/// Writes both index files of the segment at `log_path` whole, atomically
/// and durably.
fn write_indexes(log_path: &Path, state: &SegmentState) -> Result<(), LogError> {
    let index = log_path.with_extension(INDEX_SUFFIX);
    write_atomic(&index, &state.offset_index.encode())
        .map_err(|e| LogError::io("write", &index, e))?;
    let time_index = log_path.with_extension(TIME_INDEX_SUFFIX);
    write_atomic(&time_index, &state.time_index.encode())
        .map_err(|e| LogError::io("write", &time_index, e))
}

pub(crate) fn remove_if_exists(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::io("remove", path, e)),
    }
}

/// The segment a log appends to.
#[derive(Debug)]
pub(crate) struct ActiveSegment {
    core: SegmentCore,
    /// When the segment.ms clock started: the first append's `now_ms`, or
    /// after a reopen the first batch's max timestamp (Kafka's rule).
    rolling_base_ms: Option<i64>,
    /// Where the write-back not yet started begins (`writeback`).
    writeback_from: u64,
}

impl ActiveSegment {
    /// The active segment over `core`; what it holds already needs no early
    /// write-back.
    fn new(core: SegmentCore, rolling_base_ms: Option<i64>) -> ActiveSegment {
        let writeback_from = core.state.size;
        ActiveSegment {
            core,
            rolling_base_ms,
            writeback_from,
        }
    }

    /// Creates an empty segment at `base_offset` in `dir`.
    pub(crate) fn create(
        dir: &Path,
        base_offset: i64,
        files: &Arc<OpenFiles>,
    ) -> Result<Self, LogError> {
        let path = dir.join(file_name(base_offset, LOG_SUFFIX));
        let file = open_rw(&path, true)?;
        let len = file
            .metadata()
            .map_err(|e| LogError::io("stat", &path, e))?
            .len();
        if len != 0 {
            return Err(LogError::io(
                "create",
                &path,
                io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "segment file already holds data",
                ),
            ));
        }
        let core = SegmentCore {
            file: SegmentFile::opened(path, file, files),
            state: SegmentState::new(base_offset),
        };
        // Stale indexes of an earlier segment with this base would be wrong.
        remove_if_exists(&core.index_path())?;
        remove_if_exists(&core.time_index_path())?;
        sync_dir(dir).map_err(|e| LogError::io("sync", dir, e))?;
        Ok(ActiveSegment::new(core, None))
    }

    /// Wraps a loaded segment.
    pub(crate) fn from_loaded(
        loaded: LoadedSegment,
        files: &Arc<OpenFiles>,
    ) -> Result<Self, LogError> {
        let core = loaded.into_core(true, files);
        let mut rolling_base_ms = None;
        if !core.state.is_empty() {
            let file = core.open()?;
            let mut walker = HeaderWalker::new(&file, core.path(), 0, core.state.size);
            if let Some((_, first)) = walker.next_header()? {
                rolling_base_ms = (first.max_timestamp >= 0).then_some(first.max_timestamp);
            }
        }
        Ok(ActiveSegment::new(core, rolling_base_ms))
    }

    pub(crate) fn core(&self) -> &SegmentCore {
        &self.core
    }

    /// Whether an append of `bytes` ending at `last_offset` must go to a new
    /// segment. An empty segment takes any append.
    pub(crate) fn should_roll(
        &self,
        bytes: u64,
        last_offset: i64,
        now_ms: i64,
        config: &LogConfig,
    ) -> bool {
        let state = &self.core.state;
        if state.is_empty() {
            return false;
        }
        let max_bytes = config.segment_bytes.min(MAX_SEGMENT_BYTES);
        let too_big = state.size.saturating_add(bytes) > max_bytes;
        let too_many_offsets = last_offset.saturating_sub(state.base_offset) > MAX_RELATIVE_OFFSET;
        let too_old = match (config.segment_ms, self.rolling_base_ms) {
            (Some(segment_ms), Some(base)) => now_ms.saturating_sub(base) >= segment_ms,
            _ => false,
        };
        too_big || too_many_offsets || too_old
    }

    /// Whether the retention pass must roll this segment although nothing
    /// is appended: `segment.ms` has passed since its clock started, or
    /// all it holds is older than `retention.ms` (as Kafka rolls an expired
    /// active segment to delete it). An idle partition would otherwise keep
    /// its expired records forever. An empty segment is never due.
    pub(crate) fn due_for_roll(&self, now_ms: i64, config: &LogConfig) -> bool {
        if self.core.state.is_empty() {
            return false;
        }
        let segment_ms_passed = match (config.segment_ms, self.rolling_base_ms) {
            (Some(segment_ms), Some(base)) => now_ms.saturating_sub(base) >= segment_ms,
            _ => false,
        };
        let expired = match (
            config.retention_ms.filter(|ms| *ms >= 0),
            self.core.retention_timestamp(),
        ) {
            (Some(retention_ms), Some(ts)) => now_ms.saturating_sub(ts) > retention_ms,
            _ => false,
        };
        segment_ms_passed || expired
    }

    /// Writes `parts`, one after the other, at the end of the segment: their
    /// concatenation is the batches `headers` describe (after offset
    /// assignment). On a failed write the file is cut back (best effort) and
    /// the segment is unchanged.
    pub(crate) fn append(
        &mut self,
        parts: &[&[u8]],
        headers: &[BatchHeader],
        now_ms: i64,
        config: &LogConfig,
    ) -> Result<(), LogError> {
        let start = self.core.state.size;
        let file = self.core.open()?;
        if let Err(e) = write_all_vectored_at(&file, parts, start) {
            if let Err(cut) = file.set_len(start) {
                tracing::warn!(file = %self.core.path().display(), error = %cut, "cannot cut back a failed append");
            }
            return Err(LogError::io("append", self.core.path(), e));
        }
        let mut pos = start;
        for header in headers {
            self.core
                .state
                .on_batch(pos, header, config.index_interval_bytes);
            pos += header.total_len() as u64;
        }
        self.rolling_base_ms.get_or_insert(now_ms);
        self.start_writeback(&config.writeback);
        Ok(())
    }

    /// Starts the write-back of what was appended since the last start,
    /// once that is at least `writeback.every()` bytes.
    fn start_writeback(&mut self, writeback: &crate::writeback::Writeback) {
        let every = writeback.every();
        let end = self.core.state.size;
        if every == 0 || end.saturating_sub(self.writeback_from) < every {
            return;
        }
        let from = std::mem::replace(&mut self.writeback_from, end);
        let started = self.core.open().and_then(|file| {
            writeback
                .start(&file, from, end - from)
                .map_err(|e| LogError::io("write-back", self.core.path(), e))
        });
        if let Err(e) = started {
            tracing::debug!(error = %e, "write-back not started");
        }
    }

    /// fdatasync of the log file.
    pub(crate) fn sync(&self) -> Result<(), LogError> {
        self.core
            .open()?
            .sync_data()
            .map_err(|e| LogError::io("sync", self.core.path(), e))
    }

    /// Makes the segment durable: final time index entry, fsync of the log,
    /// both index files written. Idempotent; the segment stays appendable.
    pub(crate) fn prepare_seal(&mut self) -> Result<(), LogError> {
        self.core.state.finish_time_index();
        self.sync()?;
        self.core.write_index_files()
    }

    /// Call after [`ActiveSegment::prepare_seal`].
    pub(crate) fn into_sealed(self) -> SealedSegment {
        SealedSegment { core: self.core }
    }

    /// Drops the batch containing `offset` and everything after it. Returns
    /// the new next offset (the dropped batch's base offset).
    pub(crate) fn truncate_to(&mut self, offset: i64) -> Result<i64, LogError> {
        let file = self.core.open()?;
        let Some((cut, header)) = self.core.find_batch(&file, offset)? else {
            return Ok(self.core.state.next_offset);
        };
        let path = Arc::clone(&self.core.file);
        file.set_len(cut)
            .map_err(|e| LogError::io("truncate", path.path(), e))?;
        let state = &mut self.core.state;
        let new_next = header.base_offset;
        state.offset_index.truncate_to(new_next);
        state.time_index.truncate_to(new_next);
        (state.max_timestamp, state.offset_of_max_timestamp) =
            state.time_index.last().unwrap_or((NO_TIMESTAMP, -1));
        // Batches before the last index entry are covered by the time index;
        // walk the rest.
        let start = state
            .offset_index
            .last()
            .map_or(0, |(_, pos)| u64::from(pos));
        let mut walker = HeaderWalker::new(&file, path.path(), start, cut);
        while let Some((_, h)) = walker.next_header()? {
            if h.max_timestamp > state.max_timestamp {
                state.max_timestamp = h.max_timestamp;
                state.offset_of_max_timestamp = h.base_offset;
            }
        }
        state.bytes_since_index_entry = cut - start;
        state.size = cut;
        state.next_offset = new_next;
        if cut == 0 {
            self.rolling_base_ms = None;
        }
        Ok(new_next)
    }

    pub(crate) fn delete(self) -> Result<(), LogError> {
        self.core.delete_files()
    }
}

/// A read-only segment below the active one.
#[derive(Debug)]
pub(crate) struct SealedSegment {
    core: SegmentCore,
}

impl SealedSegment {
    /// Wraps a loaded segment; its file closes, to open at its first use.
    pub(crate) fn from_loaded(loaded: LoadedSegment, files: &Arc<OpenFiles>) -> Self {
        SealedSegment {
            core: loaded.into_core(false, files),
        }
    }

    pub(crate) fn core(&self) -> &SegmentCore {
        &self.core
    }

    /// The time retention compares (see [`SegmentCore::retention_timestamp`]).
    pub(crate) fn retention_timestamp(&self) -> Option<i64> {
        self.core.retention_timestamp()
    }

    /// Makes this the active segment again (for truncation). The file was
    /// opened read-write, so this cannot fail.
    pub(crate) fn into_active(self) -> ActiveSegment {
        ActiveSegment::new(self.core, None)
    }

    pub(crate) fn delete(self) -> Result<(), LogError> {
        self.core.delete_files()
    }
}

/// A segment found on disk, with its state loaded or rebuilt.
#[derive(Debug)]
pub(crate) struct LoadedSegment {
    pub(super) path: PathBuf,
    /// Open while the segment is being loaded; None once released
    /// ([`LoadedSegment::release_file`]).
    pub(super) file: Option<File>,
    pub(crate) state: SegmentState,
}

impl LoadedSegment {
    /// Its core, keeping the file open or closing it until its next use.
    fn into_core(self, keep_open: bool, files: &Arc<OpenFiles>) -> SegmentCore {
        let file = match self.file.filter(|_| keep_open) {
            Some(file) => SegmentFile::opened(self.path, file, files),
            None => SegmentFile::closed(self.path, files),
        };
        SegmentCore {
            file,
            state: self.state,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes both index files (after a rebuild).
    pub(crate) fn write_index_files(&self) -> Result<(), LogError> {
        write_indexes(&self.path, &self.state)
    }

    /// Closes the file: a sealed segment opens it again at its first use,
    /// so a log's load holds one descriptor at a time, not one per segment.
    pub(crate) fn release_file(&mut self) {
        self.file = None;
    }

    /// Cuts the file at `size` (after a scan found damage there) and fsyncs.
    pub(crate) fn truncate_file(&self, size: u64) -> Result<(), LogError> {
        let opened;
        let file = match &self.file {
            Some(file) => file,
            None => {
                opened = open_rw(&self.path, false)?;
                &opened
            }
        };
        file.set_len(size)
            .and_then(|()| file.sync_all())
            .map_err(|e| LogError::io("truncate", &self.path, e))
    }

    /// Seals a segment whose state came from a scan: index entries for the
    /// final max timestamp, like a roll.
    pub(crate) fn finish_time_index(&mut self) {
        self.state.finish_time_index();
    }
}

/// pwritev(2) of `parts` at `offset` until all is written: the bytes go
/// from where they are to the page cache, with no copy in between. At most
/// IOV_MAX (1024) slices per call.
fn write_all_vectored_at(file: &File, parts: &[&[u8]], mut offset: u64) -> io::Result<()> {
    const IOV_MAX: usize = 1024;
    let mut slices: Vec<io::IoSlice<'_>> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| io::IoSlice::new(p))
        .collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = rest.len().min(IOV_MAX);
        match rustix::io::pwritev(file, &rest[..n], offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => {
                offset += written as u64;
                io::IoSlice::advance_slices(&mut rest, written);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
