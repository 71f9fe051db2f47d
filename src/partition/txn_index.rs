//! Aborted-transaction index files: `<segment base, 20 digits>.txnindex`
//! beside each segment that holds ABORT markers, as in Kafka.
//!
//! Format (Kafka's, big-endian): a sequence of 34-byte entries `version:
//! i16 = 0`, `producer_id: i64`, `first_offset: i64`, `last_offset: i64`
//! (the marker), `last_stable_offset: i64`.
//!
//! Data flow: the partition keeps every aborted transaction of its log in
//! memory (`ProducerStateTable`). When the log rolls, the sealed segment's
//! entries are written here (before the producer snapshot at its end, so
//! a snapshot at an offset means the files below it are written); a clean
//! close writes the active segment's. At open the files are loaded and the
//! batches after the newest snapshot are replayed, which adds what no file
//! holds. Tiered segments carry their file.
//!
//! Failure cases: files are written whole (temporary name, fsync, rename).
//! An entry past the log end (after a crash cut the log, or a follower's
//! truncation) is dropped and its file rewritten; an entry that does not
//! hold together (version, offsets) is skipped with a warning; a file
//! below the log's first segment is removed.

use std::fs;
use std::path::{Path, PathBuf};

use super::producer_state::AbortedTxn;
use super::snapshot::{list_named, write_durably};

const SUFFIX: &str = ".txnindex";
const ENTRY_LEN: usize = 34;
const ENTRY_VERSION: i16 = 0;

pub fn path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}{SUFFIX}"))
}

/// Segment bases that have a `.txnindex` in `dir`, ascending.
pub fn list(dir: &Path) -> Vec<i64> {
    list_named(dir, SUFFIX)
}

pub fn encode(entries: &[AbortedTxn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for e in entries {
        out.extend_from_slice(&ENTRY_VERSION.to_be_bytes());
        out.extend_from_slice(&e.producer_id.to_be_bytes());
        out.extend_from_slice(&e.first_offset.to_be_bytes());
        out.extend_from_slice(&e.last_offset.to_be_bytes());
        out.extend_from_slice(&e.last_stable_offset.to_be_bytes());
    }
    out
}

/// The entries of `bytes` that hold together, and how many did not (a
/// trailing partial entry counts as one).
pub fn decode(bytes: &[u8]) -> (Vec<AbortedTxn>, usize) {
    let mut out = Vec::with_capacity(bytes.len() / ENTRY_LEN);
    let mut bad = usize::from(bytes.len() % ENTRY_LEN != 0);
    for e in bytes.chunks_exact(ENTRY_LEN) {
        let i64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&e[at..at + 8]);
            i64::from_be_bytes(b)
        };
        let entry = AbortedTxn {
            producer_id: i64_at(2),
            first_offset: i64_at(10),
            last_offset: i64_at(18),
            last_stable_offset: i64_at(26),
        };
        let sane = i16::from_be_bytes([e[0], e[1]]) == ENTRY_VERSION
            && entry.producer_id >= 0
            && (0..=entry.last_offset).contains(&entry.first_offset)
            && entry.last_stable_offset >= 0;
        if sane {
            out.push(entry);
        } else {
            bad += 1;
        }
    }
    (out, bad)
}

/// Writes a segment's entries (removes its file when there are none).
pub fn write(dir: &Path, base: i64, entries: &[AbortedTxn]) -> std::io::Result<()> {
    if entries.is_empty() {
        return match fs::remove_file(path(dir, base)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    write_durably(&path(dir, base), &encode(entries))
}

/// Every entry of the files in `dir` whose marker is in `[first, end)`,
/// where `first` is the log's first segment base and `end` its log end.
/// Files below `first` are removed; files holding entries at or past
/// `end` are rewritten without them.
pub fn load(dir: &Path, first: i64, end: i64) -> Vec<AbortedTxn> {
    let mut out = Vec::new();
    for base in list(dir) {
        let file = path(dir, base);
        if base < first || base >= end {
            let _ = fs::remove_file(&file);
            continue;
        }
        let bytes = match fs::read(&file) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "transaction index unreadable");
                continue;
            }
        };
        let (entries, bad) = decode(&bytes);
        if bad > 0 {
            tracing::warn!(file = %file.display(), bad, "transaction index entries skipped");
        }
        let kept: Vec<AbortedTxn> = entries
            .into_iter()
            .filter(|e| e.last_offset >= base && e.last_offset < end)
            .collect();
        if kept.len() * ENTRY_LEN != bytes.len() {
            if let Err(e) = write(dir, base, &kept) {
                tracing::warn!(file = %file.display(), error = %e, "transaction index not rewritten");
            }
        }
        out.extend(kept);
    }
    out
}

/// Removes the files of segments below `first` (the log's first segment
/// base, after deletions).
pub fn remove_below(dir: &Path, first: i64) {
    for base in list(dir).into_iter().filter(|b| *b < first) {
        let _ = fs::remove_file(path(dir, base));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: i64, first: i64, last: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: last + 1,
        }
    }

    #[test]
    fn round_trip_and_damage() {
        let entries = vec![entry(1, 0, 5), entry(2, 3, 9)];
        let bytes = encode(&entries);
        assert_eq!(bytes.len(), 2 * ENTRY_LEN);
        assert_eq!(decode(&bytes), (entries.clone(), 0));
        // A torn tail loses only the partial entry.
        assert_eq!(decode(&bytes[..ENTRY_LEN + 3]), (entries[..1].to_vec(), 1));
        // A first offset past the marker does not hold together.
        let mut bad = bytes.clone();
        bad[10..18].copy_from_slice(&100i64.to_be_bytes());
        assert_eq!(decode(&bad), (entries[1..].to_vec(), 1));
    }

    #[test]
    fn load_cuts_at_the_log_end_and_drops_files_outside() {
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path();
        write(d, 0, &[entry(1, 0, 5)]).expect("write");
        write(d, 10, &[entry(1, 10, 12), entry(2, 11, 15)]).expect("write");
        write(d, 20, &[entry(3, 20, 21)]).expect("write");
        assert_eq!(list(d), vec![0, 10, 20]);
        // The log now starts at segment 10 and ends at 14.
        let got = load(d, 10, 14);
        assert_eq!(got, vec![entry(1, 10, 12)]);
        assert_eq!(list(d), vec![10]);
        assert_eq!(load(d, 10, 14), got);
        // An empty write removes the file.
        write(d, 10, &[]).expect("remove");
        assert!(list(d).is_empty());
        write(d, 10, &[]).expect("nothing to remove");
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = decode(&bytes);
        }
    }
}
