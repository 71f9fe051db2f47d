//! Producer-state snapshot files: `<offset, 20 digits>.snapshot` in the
//! partition directory, as in Kafka, each holding the producer state of
//! every batch below `offset` (format: `producer_state.rs`).
//!
//! Data flow: a snapshot is written whenever the log rolls (at the new
//! segment's base offset, so every sealed segment has one at its end) and
//! at a clean close (at the log end). The tier uploads the snapshot at a
//! segment's end beside the segment; a restore starts from the tier's newest
//! one. At open the newest valid snapshot within the log is loaded and only
//! the batches after it are replayed.
//!
//! Failure cases: snapshots are written to a temporary name and renamed, so
//! a crash leaves the old set or the new one; a damaged file fails its CRC
//! and is removed, and an older snapshot (or the log itself) is used
//! instead. Snapshots beyond the log end (after a truncation) and below the
//! log start (after deletion) are removed, so none can describe another
//! history.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::producer_state::ProducerStateTable;

const SUFFIX: &str = ".snapshot";

pub fn path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}{SUFFIX}"))
}

/// Offsets of the snapshot files in `dir`, ascending.
pub fn list(dir: &Path) -> Vec<i64> {
    list_named(dir, SUFFIX)
}

/// Offsets of the files `<offset, 20 digits><suffix>` in `dir`, ascending.
pub(super) fn list_named(dir: &Path, suffix: &str) -> Vec<i64> {
    let mut out: Vec<i64> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let digits = name.to_str()?.strip_suffix(suffix)?.to_owned();
            (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse().ok())
                .flatten()
        })
        .collect();
    out.sort_unstable();
    out
}

/// Writes `bytes` (an encoded table) as the snapshot at `offset`: a
/// temporary file, fsynced, then renamed.
pub fn write(dir: &Path, offset: i64, bytes: &[u8]) -> std::io::Result<()> {
    write_durably(&path(dir, offset), bytes)
}

/// Writes `bytes` to `dest` through `<dest>.tmp`, fsynced, then renamed.
pub(super) fn write_durably(dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    drop(f);
    fs::rename(&tmp, dest)
}

/// The snapshot at exactly `offset`, if present and valid.
pub fn read(dir: &Path, offset: i64) -> Option<(Vec<u8>, ProducerStateTable)> {
    let bytes = fs::read(path(dir, offset)).ok()?;
    match ProducerStateTable::decode(&bytes) {
        Ok((o, table)) if o == offset => Some((bytes, table)),
        Ok((o, _)) => {
            discard(dir, offset, &format!("it names offset {o}"));
            None
        }
        Err(e) => {
            discard(dir, offset, &e.to_string());
            None
        }
    }
}

/// The newest valid snapshot with an offset in `[from, to]`; invalid ones
/// on the way are removed.
pub fn latest(dir: &Path, from: i64, to: i64) -> Option<(i64, ProducerStateTable)> {
    list(dir)
        .into_iter()
        .rev()
        .filter(|o| (from..=to).contains(o))
        .find_map(|o| read(dir, o).map(|(_, t)| (o, t)))
}

/// Removes snapshots below `from` and above `to`; returns how many.
pub fn remove_outside(dir: &Path, from: i64, to: i64) -> usize {
    list(dir)
        .into_iter()
        .filter(|o| !(from..=to).contains(o))
        .filter(|o| fs::remove_file(path(dir, *o)).is_ok())
        .count()
}

fn discard(dir: &Path, offset: i64, why: &str) {
    tracing::warn!(
        dir = %dir.display(),
        offset,
        reason = why,
        "invalid producer snapshot removed; producer state is rebuilt from the log"
    );
    let _ = fs::remove_file(path(dir, offset));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::producer_state::BatchIdentity;

    fn table(pid: i64) -> ProducerStateTable {
        let mut t = ProducerStateTable::new();
        t.observe(&BatchIdentity::new(pid, 0, 0, 3), 0, 2);
        t
    }

    #[test]
    fn latest_skips_damaged_and_out_of_range_snapshots() {
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path();
        write(d, 10, &table(1).encode(10)).expect("write");
        write(d, 20, &table(2).encode(20)).expect("write");
        write(d, 30, &table(3).encode(30)).expect("write");
        fs::write(d.join("junk.snapshot"), b"x").expect("junk");
        assert_eq!(list(d), vec![10, 20, 30]);
        assert_eq!(latest(d, 0, 25), Some((20, table(2))));
        // Damage the newest: it is skipped and removed.
        fs::write(path(d, 30), b"garbage").expect("damage");
        assert_eq!(latest(d, 0, 100), Some((20, table(2))));
        assert_eq!(list(d), vec![10, 20]);
        // A snapshot renamed to another offset is not believed.
        fs::rename(path(d, 20), path(d, 15)).expect("rename");
        assert_eq!(latest(d, 11, 100), None);
        assert_eq!(remove_outside(d, 11, 100), 1);
        assert!(list(d).is_empty());
    }
}
