//! Loading a partition directory: list segments, trust or rebuild their
//! indexes, truncate a torn or corrupt tail.
//!
//! # Overview
//!
//! Segments are loaded in base-offset order. A segment is scanned batch by
//! batch (header, CRC-32C, contiguous offsets, or increasing ones where the
//! cleaner made gaps) when it is the active (last)
//! segment, or when the last shutdown was not clean and it may hold offsets
//! at or above the recovery point (segments rolled after the last
//! checkpoint). Other
//! segments are opened from their index files, and scanned only if those are
//! missing or inconsistent.
//!
//! # Consistency
//!
//! At the first torn or corrupt batch the file is cut at the last valid batch
//! boundary, a warning names the file, offset and byte position, and every
//! later segment is deleted: offsets stay contiguous. A scanned segment that
//! does not end where the next one begins is treated the same way. Nothing
//! before the damage is touched.
//!
//! # Crash safety
//!
//! Loading is idempotent: a crash while loading leaves files that the next
//! load repairs the same way. Leftover `*.tmp` files and index files without a
//! log file are removed.

use std::fs;
use std::io;
use std::path::Path;

use super::batch::{verify_crc, BatchHeader, BATCH_HEADER_LEN, NO_TIMESTAMP};
use super::checkpoint::{sync_dir, RecoveryCheckpoint, TMP_SUFFIX};
use super::files::open_rw;
use super::index::{OffsetIndex, TimeIndex};
use super::segment::{
    file_name, parse_file_name, remove_if_exists, BlockReader, HeaderWalker, LoadedSegment,
    SegmentState, INDEX_SUFFIX, LOG_SUFFIX, MAX_SEGMENT_BYTES, SCAN_BLOCK, TIME_INDEX_SUFFIX,
};
use super::LogError;

/// Loads every segment of `dir`, oldest first; the last one is the active
/// segment. Empty when the directory holds no segment.
///
/// Offsets may have gaps (the cleaner's) in segments based below
/// `gaps_below`: between batches, and before the next segment's base.
pub(crate) fn load(
    dir: &Path,
    index_interval: u32,
    checkpoint: Option<RecoveryCheckpoint>,
    gaps_below: i64,
) -> Result<Vec<LoadedSegment>, LogError> {
    let bases = list_segments(dir)?;
    let (recovery_point, clean) =
        checkpoint.map_or((0, false), |c| (c.recovery_point, c.clean_shutdown));
    let mut loaded = Vec::with_capacity(bases.len());
    let mut changed_dir = false;
    for (i, &base) in bases.iter().enumerate() {
        let next_base = bases.get(i + 1).copied();
        let is_last = next_base.is_none();
        // The active segment is always scanned, even after a clean shutdown:
        // it is the one most likely damaged (a torn write, a bad sector under
        // the newest data), and it is bounded by segment.bytes.
        let needs_scan = is_last || (!clean && next_base.is_none_or(|next| next > recovery_point));
        let gaps = base < gaps_below;
        let (mut segment, damage, rebuilt) = if needs_scan {
            let (segment, damage) = scan(dir, base, index_interval, gaps)?;
            (segment, damage, true)
        } else {
            match load_with_indexes(dir, base, next_base, gaps) {
                Ok(segment) => (segment, None, false),
                Err(reason) => {
                    tracing::warn!(
                        file = %dir.join(file_name(base, LOG_SUFFIX)).display(),
                        reason = %reason,
                        "rebuilding segment indexes"
                    );
                    let (segment, damage) = scan(dir, base, index_interval, gaps)?;
                    (segment, damage, true)
                }
            }
        };
        let mut drop_later = false;
        if let Some(damage) = damage {
            tracing::warn!(
                file = %segment.path().display(),
                offset = damage.offset,
                position = damage.position,
                reason = %damage.reason,
                "truncating torn or corrupt log tail"
            );
            segment.truncate_file(damage.position)?;
            drop_later = true;
        } else if let Some(next) = next_base {
            if gaps && segment.state.next_offset < next {
                // A cleaned segment covers up to the next one.
                segment.state.next_offset = next;
            } else if segment.state.next_offset != next {
                tracing::warn!(
                    file = %segment.path().display(),
                    next_offset = segment.state.next_offset,
                    next_segment = next,
                    "segment does not end where the next one begins"
                );
                drop_later = true;
            }
        }
        let keeps_sealed = !is_last && !drop_later;
        if rebuilt && keeps_sealed {
            segment.finish_time_index();
            segment.write_index_files()?;
        }
        if keeps_sealed {
            segment.release_file();
        }
        loaded.push(segment);
        if drop_later {
            for &later in &bases[i + 1..] {
                tracing::warn!(
                    file = %dir.join(file_name(later, LOG_SUFFIX)).display(),
                    "deleting segment after damaged data"
                );
                delete_segment_files(dir, later)?;
                changed_dir = true;
            }
            break;
        }
    }
    if changed_dir {
        sync_dir(dir).map_err(|e| LogError::io("sync", dir, e))?;
    }
    Ok(loaded)
}

fn delete_segment_files(dir: &Path, base: i64) -> Result<(), LogError> {
    for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        remove_if_exists(&dir.join(file_name(base, suffix)))?;
    }
    Ok(())
}

/// Base offsets of the `.log` files in `dir`, sorted. Removes `*.tmp` files
/// and index files that have no log file.
fn list_segments(dir: &Path) -> Result<Vec<i64>, LogError> {
    let mut logs = Vec::new();
    let mut indexes = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| LogError::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if name.ends_with(TMP_SUFFIX) {
            remove_if_exists(&entry.path())?;
        } else if let Some(base) = parse_file_name(name, LOG_SUFFIX) {
            logs.push(base);
        } else if let Some(base) =
            parse_file_name(name, INDEX_SUFFIX).or_else(|| parse_file_name(name, TIME_INDEX_SUFFIX))
        {
            indexes.push((base, entry.path()));
        }
    }
    logs.sort_unstable();
    for (base, path) in indexes {
        if logs.binary_search(&base).is_err() {
            remove_if_exists(&path)?;
        }
    }
    Ok(logs)
}

/// Where a scan stopped before the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    /// Byte position of the first bad batch (= bytes of valid data).
    pub(crate) position: u64,
    /// The offset that batch should have started at.
    pub(crate) offset: i64,
    pub(crate) reason: String,
}

/// Opens the segment with base `base_offset` in `dir` and rebuilds its state
/// by validating every batch (header, CRC, contiguous offsets, or increasing
/// ones with `gaps`). Stops at the first torn or corrupt batch and reports
/// it; the file is not modified.
pub(crate) fn scan(
    dir: &Path,
    base_offset: i64,
    index_interval: u32,
    gaps: bool,
) -> Result<(LoadedSegment, Option<Damage>), LogError> {
    let path = dir.join(file_name(base_offset, LOG_SUFFIX));
    let file = open_rw(&path, false)?;
    let size = file
        .metadata()
        .map_err(|e| LogError::io("stat", &path, e))?
        .len();
    let mut state = SegmentState::new(base_offset);
    let damage = {
        let mut reader = BlockReader::new(&file, size, SCAN_BLOCK);
        let mut pos = 0u64;
        loop {
            if pos >= size {
                break None;
            }
            match check_batch(&mut reader, pos, size, state.next_offset, gaps) {
                Ok(Ok(header)) => {
                    state.on_batch(pos, &header, index_interval);
                    pos += header.total_len() as u64;
                }
                Ok(Err(reason)) => {
                    break Some(Damage {
                        position: pos,
                        offset: state.next_offset,
                        reason,
                    })
                }
                Err(e) => return Err(LogError::io("read", &path, e)),
            }
        }
    };
    let file = Some(file);
    Ok((LoadedSegment { path, file, state }, damage))
}

/// Validates the batch at `pos`: Ok(Err(reason)) if it is torn or corrupt.
fn check_batch(
    reader: &mut BlockReader<'_>,
    pos: u64,
    size: u64,
    expected_offset: i64,
    gaps: bool,
) -> io::Result<Result<BatchHeader, String>> {
    if pos > MAX_SEGMENT_BYTES {
        return Ok(Err(format!(
            "segment larger than the position limit. max={MAX_SEGMENT_BYTES}"
        )));
    }
    let avail = usize::try_from((size - pos).min(BATCH_HEADER_LEN as u64)).unwrap_or(0);
    let Some(bytes) = reader.get(pos, avail)? else {
        return Ok(Err("header past end of file".to_string()));
    };
    let header = match BatchHeader::parse(bytes) {
        Ok(header) => header,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let len = header.total_len();
    if (size - pos) < len as u64 {
        return Ok(Err(format!(
            "incomplete batch. size={len}, available={}",
            size - pos
        )));
    }
    let in_order = if gaps {
        header.base_offset >= expected_offset
    } else {
        header.base_offset == expected_offset
    };
    if !in_order {
        return Ok(Err(format!(
            "batch offset is not contiguous. base_offset={}, expected={expected_offset}",
            header.base_offset
        )));
    }
    let Some(batch) = reader.get(pos, len)? else {
        return Ok(Err("batch past end of file".to_string()));
    };
    if let Err(e) = verify_crc(batch) {
        return Ok(Err(e.to_string()));
    }
    Ok(Ok(header))
}

/// Opens a segment trusting its index files (a segment below the recovery
/// point, or the last one after a clean shutdown). `next_base` is the next
/// segment's base offset; for the last segment the tail after the last index
/// entry is walked to find the end. Err(reason) means: rebuild with [`scan`].
pub(crate) fn load_with_indexes(
    dir: &Path,
    base_offset: i64,
    next_base: Option<i64>,
    gaps: bool,
) -> Result<LoadedSegment, String> {
    let path = dir.join(file_name(base_offset, LOG_SUFFIX));
    let file = open_rw(&path, false).map_err(|e| e.to_string())?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    if size > MAX_SEGMENT_BYTES {
        return Err(format!(
            "segment larger than the position limit. size={size}"
        ));
    }
    let read = |suffix: &str| {
        fs::read(path.with_extension(suffix)).map_err(|e| format!("{suffix} file unreadable: {e}"))
    };
    let offset_index =
        OffsetIndex::decode(base_offset, &read(INDEX_SUFFIX)?).map_err(|e| e.to_string())?;
    let time_index =
        TimeIndex::decode(base_offset, &read(TIME_INDEX_SUFFIX)?).map_err(|e| e.to_string())?;
    offset_index
        .check_bounds(size, next_base)
        .map_err(|e| e.to_string())?;
    let (mut max_timestamp, mut offset_of_max_timestamp) =
        time_index.last().unwrap_or((NO_TIMESTAMP, -1));
    let (walk_offset, walk_start) = offset_index
        .last()
        .map_or((base_offset, 0), |(o, p)| (o, u64::from(p)));
    let next_offset = match next_base {
        Some(next) => next,
        None => {
            let mut walker = HeaderWalker::new(&file, &path, walk_start, size);
            let mut next = walk_offset;
            while let Some((_, header)) = walker.next_header().map_err(|e| e.to_string())? {
                if header.base_offset < next || (!gaps && header.base_offset != next) {
                    return Err(format!(
                        "batch offset is not contiguous. base_offset={}, expected={next}",
                        header.base_offset
                    ));
                }
                if header.max_timestamp > max_timestamp {
                    max_timestamp = header.max_timestamp;
                    offset_of_max_timestamp = header.base_offset;
                }
                next = header.next_offset();
            }
            next
        }
    };
    time_index
        .check_bounds(next_offset)
        .map_err(|e| e.to_string())?;
    let state = SegmentState {
        base_offset,
        next_offset,
        size,
        max_timestamp,
        offset_of_max_timestamp,
        bytes_since_index_entry: size - walk_start,
        offset_index,
        time_index,
    };
    let file = Some(file);
    Ok(LoadedSegment { path, file, state })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_cleans_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let touch = |name: &str| fs::write(dir.path().join(name), b"").unwrap();
        touch("00000000000000000100.log");
        touch("00000000000000000007.log");
        touch("00000000000000000007.index");
        touch("00000000000000000005.index");
        touch("00000000000000000005.timeindex");
        touch("00000000000000000007.index.tmp");
        touch("log-start-offset");
        assert_eq!(list_segments(dir.path()).unwrap(), vec![7, 100]);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                "00000000000000000007.index",
                "00000000000000000007.log",
                "00000000000000000100.log",
                "log-start-offset"
            ]
        );
    }

    #[test]
    fn empty_dir_loads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), 4096, None, 0).unwrap().is_empty());
    }
}
