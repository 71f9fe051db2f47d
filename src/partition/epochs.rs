//! The leader-epoch cache of one partition: at which offset each leader
//! epoch began.
//!
//! Overview: an entry `(epoch, start_offset)` is added when a leader with a
//! newer epoch starts appending (at partition open, with the log end
//! offset, as Kafka's leader does) and kept in order. OffsetForLeaderEpoch
//! answers from it, and every tiered segment carries the entries up to its
//! end, so a restored partition knows its epochs.
//!
//! Persistence: `leader-epoch-checkpoint` in the partition directory, in
//! Kafka's text format (`0`, the entry count, then `epoch start_offset` per
//! line), replaced by write-to-temporary, fsync and rename whenever it changes
//! (rarely: once per new epoch, on truncation and on restore). A missing or
//! unreadable file is rebuilt from the batch headers replayed at open.

use std::path::{Path, PathBuf};

pub const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

/// One leader epoch and the first offset written in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// Why an epoch file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("leader epoch file is invalid: {0}")]
pub struct EpochFileError(String);

/// Entries in increasing epoch and offset order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset`. Only a newer epoch is
    /// added (an older or equal one changes nothing); an entry of a newer
    /// epoch never starts below the previous one. Returns whether it changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || self.latest_epoch().is_some_and(|e| e >= epoch) {
            return false;
        }
        // A newer epoch starting below the previous one means the previous
        // entries past it were never written: drop them first.
        self.entries.retain(|e| e.start_offset < start_offset);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Drops entries that start at or after `end_offset` (the log was
    /// truncated to it). Returns whether it changed.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        before != self.entries.len()
    }

    /// Moves the start to `start_offset` (records below it were deleted):
    /// entries wholly below it go, and the one holding it starts there.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let holding = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        if holding == 0 {
            return false;
        }
        let before = self.entries.clone();
        self.entries.drain(..holding - 1);
        if let Some(first) = self.entries.first_mut() {
            first.start_offset = start_offset;
        }
        before != self.entries
    }

    /// The entries for a segment ending before `next_offset`: those that
    /// start below it.
    pub fn until(&self, next_offset: i64) -> LeaderEpochCache {
        LeaderEpochCache {
            entries: self
                .entries
                .iter()
                .copied()
                .filter(|e| e.start_offset < next_offset)
                .collect(),
        }
    }

    /// OffsetForLeaderEpoch, as Kafka answers it: for the latest epoch, the
    /// log end offset; for an older one, the start of the next newer epoch
    /// with the largest epoch not above the one asked for (or the epoch
    /// asked for when it is older than every entry); for an unknown newer
    /// epoch, `(-1, -1)`.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> (i32, i64) {
        const UNDEFINED: (i32, i64) = (-1, -1);
        if epoch < 0 {
            return UNDEFINED;
        }
        if self.latest_epoch() == Some(epoch) {
            return (epoch, log_end_offset);
        }
        let higher = self.entries.partition_point(|e| e.epoch <= epoch);
        let Some(next) = self.entries.get(higher) else {
            return UNDEFINED;
        };
        match higher.checked_sub(1).and_then(|i| self.entries.get(i)) {
            Some(floor) => (floor.epoch, next.start_offset),
            None => (epoch, next.start_offset),
        }
    }

    /// Kafka's checkpoint text.
    pub fn encode(&self) -> String {
        let mut out = format!("0\n{}\n", self.entries.len());
        for e in &self.entries {
            out.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        out
    }

    /// Parses Kafka's checkpoint text; entries must be increasing.
    pub fn decode(text: &str) -> Result<LeaderEpochCache, EpochFileError> {
        let bad = |m: String| EpochFileError(m);
        let mut lines = text.lines();
        match lines.next() {
            Some("0") => {}
            other => return Err(bad(format!("unknown version line. line={other:?}"))),
        }
        let count: usize = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| bad("missing entry count".into()))?;
        let mut entries: Vec<EpochEntry> = Vec::new();
        for n in 0..count {
            let line = lines
                .next()
                .ok_or_else(|| bad(format!("missing entry. index={n}, count={count}")))?;
            let mut parts = line.split_whitespace();
            let (Some(epoch), Some(start), None) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad(format!("malformed entry. line={line:?}")));
            };
            let epoch: i32 = epoch
                .parse()
                .map_err(|_| bad(format!("malformed epoch. line={line:?}")))?;
            let start_offset: i64 = start
                .parse()
                .map_err(|_| bad(format!("malformed offset. line={line:?}")))?;
            if epoch < 0
                || start_offset < 0
                || entries
                    .last()
                    .is_some_and(|p| p.epoch >= epoch || p.start_offset > start_offset)
            {
                return Err(bad(format!("entries out of order. line={line:?}")));
            }
            entries.push(EpochEntry {
                epoch,
                start_offset,
            });
        }
        if lines.any(|l| !l.trim().is_empty()) {
            return Err(bad("lines after the last entry".into()));
        }
        Ok(LeaderEpochCache { entries })
    }

    pub(crate) fn path(dir: &Path) -> PathBuf {
        dir.join(CHECKPOINT_FILE)
    }

    /// Loads the checkpoint in `dir`: `Ok(None)` when there is none,
    /// an error when it cannot be read or parsed.
    pub fn load(dir: &Path) -> Result<Option<LeaderEpochCache>, EpochFileError> {
        match std::fs::read_to_string(Self::path(dir)) {
            Ok(text) => Self::decode(&text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(EpochFileError(format!("unreadable: {e}"))),
        }
    }

    /// Replaces the checkpoint in `dir` durably (temporary file, fsync,
    /// rename, fsync of the directory): a power cut leaves the old file or
    /// the new one, never an empty one.
    pub fn store(&self, dir: &Path) -> std::io::Result<()> {
        crate::log::checkpoint::write_atomic(&Self::path(dir), self.encode().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::default();
        for &(e, o) in entries {
            assert!(c.assign(e, o));
        }
        c
    }

    #[test]
    fn assign_keeps_only_newer_epochs() {
        let mut c = cache(&[(0, 0), (2, 100)]);
        assert!(!c.assign(2, 150));
        assert!(!c.assign(1, 150));
        assert!(c.assign(5, 90));
        assert_eq!(
            c.entries(),
            &[
                EpochEntry {
                    epoch: 0,
                    start_offset: 0
                },
                EpochEntry {
                    epoch: 5,
                    start_offset: 90
                }
            ]
        );
    }

    #[test]
    fn end_offsets_follow_kafka() {
        let c = cache(&[(1, 10), (3, 50), (4, 80)]);
        assert_eq!(c.end_offset_for(4, 120), (4, 120));
        assert_eq!(c.end_offset_for(3, 120), (3, 80));
        assert_eq!(c.end_offset_for(2, 120), (1, 50));
        assert_eq!(c.end_offset_for(0, 120), (0, 10));
        assert_eq!(c.end_offset_for(5, 120), (-1, -1));
        assert_eq!(c.end_offset_for(-1, 120), (-1, -1));
        assert_eq!(LeaderEpochCache::default().end_offset_for(0, 5), (-1, -1));
    }

    #[test]
    fn truncation_from_both_ends() {
        let mut c = cache(&[(1, 10), (3, 50), (4, 80)]);
        assert!(c.truncate_from_end(80));
        assert_eq!(c.latest_epoch(), Some(3));
        assert!(c.truncate_from_start(60));
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: 3,
                start_offset: 60
            }]
        );
        assert!(!c.truncate_from_start(5));
        assert_eq!(c.until(60).entries().len(), 0);
        assert_eq!(c.until(61).entries().len(), 1);
    }

    #[test]
    fn checkpoint_round_trips_and_bad_text_is_refused() {
        let c = cache(&[(0, 0), (7, 1234)]);
        assert_eq!(c.encode(), "0\n2\n0 0\n7 1234\n");
        assert_eq!(LeaderEpochCache::decode(&c.encode()), Ok(c.clone()));
        for bad in [
            "",
            "1\n0\n",
            "0\n",
            "0\n2\n0 0\n",
            "0\n1\n0\n",
            "0\n1\nx 0\n",
            "0\n1\n0 -1\n",
            "0\n2\n3 10\n2 20\n",
            "0\n1\n0 0\n9 9\n",
        ] {
            assert!(LeaderEpochCache::decode(bad).is_err(), "{bad:?}");
        }
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(LeaderEpochCache::load(dir.path()), Ok(None));
        c.store(dir.path()).expect("store");
        assert_eq!(LeaderEpochCache::load(dir.path()), Ok(Some(c)));
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(text in "[0-9 \\n-]{0,60}") {
            let _ = LeaderEpochCache::decode(&text);
        }
    }
}
