//! Sparse offset index (`.index`) and time index (`.timeindex`) of a segment.
//!
//! # Overview
//!
//! Kafka's formats, big-endian, offsets relative to the segment's base offset:
//! `.index` entries are 8 bytes (relative offset u32, file position u32) and
//! `.timeindex` entries are 12 bytes (timestamp i64, relative offset u32).
//! Both are plain in-memory vectors here; files are read whole at open and
//! written whole (see `checkpoint::write_atomic`) when a segment is
//! sealed or the log closes. No mmap.
//!
//! An offset index entry `(o, p)` says: the batch at file position `p` has
//! base offset `o`. A lookup returns the largest entry `<= target`; the
//! caller walks batch headers forward from its position.
//!
//! A time index entry `(t, o)` says: `t` is the largest timestamp of the
//! segment up to batch `o`, and `o` is the first batch that reached it, so
//! every batch before `o` has a smaller max timestamp. Entries are only added
//! when the timestamp grows. A lookup for `target` returns the largest entry
//! with `t <= target`; the first batch with max timestamp `>= target` is at or
//! after `o`.
//!
//! # Consistency
//!
//! Entries are strictly increasing (offsets and positions in `.index`,
//! timestamps in `.timeindex`); [`OffsetIndex::append`] and
//! [`TimeIndex::maybe_append`] ignore anything else, and the decoders reject
//! files that break it.
//!
//! # Crash safety
//!
//! Indexes can always be rebuilt from the log. A file that fails to decode or
//! points past its segment is rebuilt by the loader, never trusted.

use std::fmt;

use thiserror::Error;

use super::batch::NO_TIMESTAMP;

/// Bytes of one `.index` entry.
pub const OFFSET_ENTRY_LEN: usize = 8;
/// Bytes of one `.timeindex` entry.
pub const TIME_ENTRY_LEN: usize = 12;

/// Why an index file cannot be used (it is then rebuilt from the log).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IndexError {
    #[error(
        "index file length is not a multiple of its entry size. len={len}, entry_len={entry_len}"
    )]
    BadLength { len: usize, entry_len: usize },
    #[error("index entries are not increasing. entry={entry}")]
    NotIncreasing { entry: usize },
    #[error("index entry points past its segment. entry={entry}")]
    OutOfBounds { entry: usize },
}

/// One `.index` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// One `.timeindex` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

fn relative(base_offset: i64, offset: i64) -> Option<u32> {
    offset
        .checked_sub(base_offset)
        .and_then(|delta| u32::try_from(delta).ok())
}

/// The sparse offset -> position index of one segment.
#[derive(Clone, PartialEq, Eq)]
pub struct OffsetIndex {
    base_offset: i64,
    entries: Vec<OffsetEntry>,
}

impl OffsetIndex {
    pub fn new(base_offset: i64) -> Self {
        OffsetIndex {
            base_offset,
            entries: Vec::new(),
        }
    }

    /// Decodes a `.index` file; entries must be strictly increasing.
    pub fn decode(base_offset: i64, bytes: &[u8]) -> Result<Self, IndexError> {
        if bytes.len() % OFFSET_ENTRY_LEN != 0 {
            return Err(IndexError::BadLength {
                len: bytes.len(),
                entry_len: OFFSET_ENTRY_LEN,
            });
        }
        let mut index = OffsetIndex::new(base_offset);
        for (entry, chunk) in bytes.chunks_exact(OFFSET_ENTRY_LEN).enumerate() {
            let relative_offset = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let position = u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            let next = OffsetEntry {
                relative_offset,
                position,
            };
            if index.entries.last().is_some_and(|last| {
                last.relative_offset >= next.relative_offset || last.position >= next.position
            }) {
                return Err(IndexError::NotIncreasing { entry });
            }
            index.entries.push(next);
        }
        Ok(index)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_LEN);
        for entry in &self.entries {
            out.extend_from_slice(&entry.relative_offset.to_be_bytes());
            out.extend_from_slice(&entry.position.to_be_bytes());
        }
        out
    }

    /// Checks that every entry points inside a segment of `size` bytes and,
    /// when known, below `next_offset`.
    pub fn check_bounds(&self, size: u64, next_offset: Option<i64>) -> Result<(), IndexError> {
        for (entry, e) in self.entries.iter().enumerate() {
            let offset = self.base_offset + i64::from(e.relative_offset);
            if u64::from(e.position) >= size || next_offset.is_some_and(|next| offset >= next) {
                return Err(IndexError::OutOfBounds { entry });
            }
        }
        Ok(())
    }

    /// Adds an entry; returns false (and adds nothing) unless both offset and
    /// position are above the last entry and the offset fits the segment.
    pub fn append(&mut self, offset: i64, position: u32) -> bool {
        let Some(relative_offset) = relative(self.base_offset, offset) else {
            return false;
        };
        if self.entries.last().is_some_and(|last| {
            last.relative_offset >= relative_offset || last.position >= position
        }) {
            return false;
        }
        self.entries.push(OffsetEntry {
            relative_offset,
            position,
        });
        true
    }

    /// The largest entry with offset `<= offset`, as (offset, position);
    /// (base offset, 0) when there is none.
    pub fn lookup(&self, offset: i64) -> (i64, u32) {
        let Some(target) = self.clamp(offset) else {
            return (self.base_offset, 0);
        };
        let after = self
            .entries
            .partition_point(|e| e.relative_offset <= target);
        match after.checked_sub(1).and_then(|i| self.entries.get(i)) {
            Some(e) => (self.base_offset + i64::from(e.relative_offset), e.position),
            None => (self.base_offset, 0),
        }
    }

    /// Position of the first entry with offset `>= offset`, if any.
    pub fn first_position_at_or_after(&self, offset: i64) -> Option<u32> {
        if offset <= self.base_offset {
            return self.entries.first().map(|e| e.position);
        }
        let target = self.clamp(offset)?;
        let at = self.entries.partition_point(|e| e.relative_offset < target);
        self.entries.get(at).map(|e| e.position)
    }

    /// The last entry with position `<= position`, as (offset, position).
    pub fn last_at_or_before_position(&self, position: u64) -> Option<(i64, u32)> {
        let after = self
            .entries
            .partition_point(|e| u64::from(e.position) <= position);
        after
            .checked_sub(1)
            .and_then(|i| self.entries.get(i))
            .map(|e| (self.base_offset + i64::from(e.relative_offset), e.position))
    }

    /// Drops every entry with offset `>= offset`.
    pub fn truncate_to(&mut self, offset: i64) {
        match self.clamp(offset) {
            None => self.entries.clear(),
            Some(target) => {
                let keep = self.entries.partition_point(|e| e.relative_offset < target);
                self.entries.truncate(keep);
            }
        }
    }

    /// The last entry as (offset, position).
    pub fn last(&self) -> Option<(i64, u32)> {
        self.entries
            .last()
            .map(|e| (self.base_offset + i64::from(e.relative_offset), e.position))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[OffsetEntry] {
        &self.entries
    }

    /// `offset` relative to the base: None below the base, saturated above
    /// u32 (every stored entry is below such a target).
    fn clamp(&self, offset: i64) -> Option<u32> {
        let delta = offset.checked_sub(self.base_offset)?;
        if delta < 0 {
            return None;
        }
        Some(u32::try_from(delta).unwrap_or(u32::MAX))
    }
}

/// The sparse timestamp -> offset index of one segment.
#[derive(Clone, PartialEq, Eq)]
pub struct TimeIndex {
    base_offset: i64,
    entries: Vec<TimeEntry>,
}

impl TimeIndex {
    pub fn new(base_offset: i64) -> Self {
        TimeIndex {
            base_offset,
            entries: Vec::new(),
        }
    }

    /// Decodes a `.timeindex` file; timestamps must be strictly increasing
    /// and offsets non-decreasing.
    pub fn decode(base_offset: i64, bytes: &[u8]) -> Result<Self, IndexError> {
        if bytes.len() % TIME_ENTRY_LEN != 0 {
            return Err(IndexError::BadLength {
                len: bytes.len(),
                entry_len: TIME_ENTRY_LEN,
            });
        }
        let mut index = TimeIndex::new(base_offset);
        for (entry, chunk) in bytes.chunks_exact(TIME_ENTRY_LEN).enumerate() {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&chunk[..8]);
            let next = TimeEntry {
                timestamp: i64::from_be_bytes(ts),
                relative_offset: u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]),
            };
            let ok = match index.entries.last() {
                Some(last) => {
                    last.timestamp < next.timestamp && last.relative_offset <= next.relative_offset
                }
                None => next.timestamp > NO_TIMESTAMP,
            };
            if !ok {
                return Err(IndexError::NotIncreasing { entry });
            }
            index.entries.push(next);
        }
        Ok(index)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_ENTRY_LEN);
        for entry in &self.entries {
            out.extend_from_slice(&entry.timestamp.to_be_bytes());
            out.extend_from_slice(&entry.relative_offset.to_be_bytes());
        }
        out
    }

    /// Checks that every entry's offset is below `next_offset`.
    pub fn check_bounds(&self, next_offset: i64) -> Result<(), IndexError> {
        for (entry, e) in self.entries.iter().enumerate() {
            if self.base_offset + i64::from(e.relative_offset) >= next_offset {
                return Err(IndexError::OutOfBounds { entry });
            }
        }
        Ok(())
    }

    /// Adds `(timestamp, offset)` if the timestamp is above the last entry's
    /// (above [`NO_TIMESTAMP`] for the first entry) and the offset is not
    /// below it. Returns whether it was added.
    pub fn maybe_append(&mut self, timestamp: i64, offset: i64) -> bool {
        let Some(relative_offset) = relative(self.base_offset, offset) else {
            return false;
        };
        let ok = match self.entries.last() {
            Some(last) => last.timestamp < timestamp && last.relative_offset <= relative_offset,
            None => timestamp > NO_TIMESTAMP,
        };
        if ok {
            self.entries.push(TimeEntry {
                timestamp,
                relative_offset,
            });
        }
        ok
    }

    /// The largest entry with timestamp `<= timestamp`, as (timestamp, offset).
    pub fn lookup(&self, timestamp: i64) -> Option<(i64, i64)> {
        let after = self.entries.partition_point(|e| e.timestamp <= timestamp);
        after
            .checked_sub(1)
            .and_then(|i| self.entries.get(i))
            .map(|e| (e.timestamp, self.base_offset + i64::from(e.relative_offset)))
    }

    /// Drops every entry with offset `>= offset`.
    pub fn truncate_to(&mut self, offset: i64) {
        let base = self.base_offset;
        self.entries
            .retain(|e| base + i64::from(e.relative_offset) < offset);
    }

    /// The last entry as (timestamp, offset).
    pub fn last(&self) -> Option<(i64, i64)> {
        self.entries
            .last()
            .map(|e| (e.timestamp, self.base_offset + i64::from(e.relative_offset)))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[TimeEntry] {
        &self.entries
    }
}

// Summaries: an index can hold hundreds of thousands of entries.
impl fmt::Debug for OffsetIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OffsetIndex")
            .field("base_offset", &self.base_offset)
            .field("entries", &self.entries.len())
            .field("last", &self.last())
            .finish()
    }
}

impl fmt::Debug for TimeIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeIndex")
            .field("base_offset", &self.base_offset)
            .field("entries", &self.entries.len())
            .field("last", &self.last())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn offset_lookup_largest_at_or_below() {
        let mut index = OffsetIndex::new(100);
        assert_eq!(index.lookup(150), (100, 0));
        assert!(index.append(110, 4_000));
        assert!(index.append(120, 8_000));
        assert!(index.append(130, 12_000));
        assert_eq!(index.lookup(99), (100, 0));
        assert_eq!(index.lookup(105), (100, 0));
        assert_eq!(index.lookup(110), (110, 4_000));
        assert_eq!(index.lookup(119), (110, 4_000));
        assert_eq!(index.lookup(125), (120, 8_000));
        assert_eq!(index.lookup(i64::MAX), (130, 12_000));
        assert_eq!(index.first_position_at_or_after(100), Some(4_000));
        assert_eq!(index.first_position_at_or_after(111), Some(8_000));
        assert_eq!(index.first_position_at_or_after(130), Some(12_000));
        assert_eq!(index.first_position_at_or_after(131), None);
    }

    #[test]
    fn offset_append_rejects_non_increasing() {
        let mut index = OffsetIndex::new(100);
        assert!(!index.append(99, 10));
        assert!(index.append(100, 0));
        assert!(!index.append(100, 10));
        assert!(!index.append(101, 0));
        assert!(!index.append(100 + i64::from(u32::MAX) + 1, 10));
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn offset_encode_decode_and_truncate() {
        let mut index = OffsetIndex::new(5);
        for i in 0..10 {
            assert!(index.append(5 + i * 3, u32::try_from(i * 100).unwrap()));
        }
        let bytes = index.encode();
        assert_eq!(bytes.len(), 10 * OFFSET_ENTRY_LEN);
        assert_eq!(&bytes[8..16], &[0, 0, 0, 3, 0, 0, 0, 100]);
        let decoded = OffsetIndex::decode(5, &bytes).unwrap();
        assert_eq!(decoded, index);
        assert!(decoded.check_bounds(901, Some(33)).is_ok());
        assert!(decoded.check_bounds(900, None).is_err());
        assert!(decoded.check_bounds(10_000, Some(32)).is_err());
        assert!(OffsetIndex::decode(5, &bytes[..7]).is_err());
        let mut swapped = bytes.clone();
        swapped[8..16].copy_from_slice(&bytes[..8]);
        assert_eq!(
            OffsetIndex::decode(5, &swapped),
            Err(IndexError::NotIncreasing { entry: 1 })
        );
        index.truncate_to(11);
        assert_eq!(index.last(), Some((8, 100)));
        index.truncate_to(0);
        assert!(index.is_empty());
    }

    #[test]
    fn time_index_semantics() {
        let mut index = TimeIndex::new(0);
        assert!(!index.maybe_append(NO_TIMESTAMP, 0));
        assert!(index.maybe_append(1_000, 0));
        assert!(!index.maybe_append(1_000, 5));
        assert!(!index.maybe_append(900, 5));
        assert!(index.maybe_append(2_000, 10));
        assert!(index.maybe_append(3_000, 10));
        assert_eq!(index.lookup(999), None);
        assert_eq!(index.lookup(1_000), Some((1_000, 0)));
        assert_eq!(index.lookup(2_500), Some((2_000, 10)));
        assert_eq!(index.lookup(i64::MAX), Some((3_000, 10)));
        let decoded = TimeIndex::decode(0, &index.encode()).unwrap();
        assert_eq!(decoded, index);
        assert!(decoded.check_bounds(11).is_ok());
        assert!(decoded.check_bounds(10).is_err());
        index.truncate_to(10);
        assert_eq!(index.last(), Some((1_000, 0)));
        assert!(TimeIndex::decode(0, &[0; 11]).is_err());
    }

    proptest! {
        #[test]
        fn offset_lookup_matches_linear_scan(
            deltas in proptest::collection::vec((1i64..50, 1u32..5_000), 0..60),
            target in -10i64..3_000,
        ) {
            let base = 7;
            let mut index = OffsetIndex::new(base);
            let (mut offset, mut position) = (base, 0u32);
            for (d_off, d_pos) in deltas {
                offset += d_off;
                position += d_pos;
                prop_assert!(index.append(offset, position));
            }
            let expected = index
                .entries()
                .iter()
                .rev()
                .map(|e| (base + i64::from(e.relative_offset), e.position))
                .find(|(o, _)| *o <= target)
                .unwrap_or((base, 0));
            prop_assert_eq!(index.lookup(target), expected);
            prop_assert_eq!(OffsetIndex::decode(base, &index.encode()).unwrap(), index);
        }

        #[test]
        fn decode_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = OffsetIndex::decode(0, &bytes).map(|i| i.lookup(5));
            let _ = TimeIndex::decode(0, &bytes).map(|i| i.lookup(5));
        }
    }
}
