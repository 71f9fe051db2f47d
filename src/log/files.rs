//! Segment files, opened when used and closed beyond a budget.
//!
//! # Overview
//!
//! A [`SegmentFile`] names a segment's `.log` file and holds it open only
//! while it is in use: the file opens at its first read or write, and
//! [`OpenFiles`] keeps at most a budget of segment files open across a
//! broker's logs (by default half the process's open files limit; each
//! broker has its own, handed to its logs in their
//! [`LogConfig`](super::LogConfig)), closing the least
//! recently used beyond it. The choice is the CLOCK approximation of LRU: a
//! file used since the hand last passed it gets another round, the first
//! one not used is closed. So thousands of partitions with sealed segments
//! fit the open files limit, and a broker restarts without opening every
//! segment it has.
//!
//! Readers and syncs take their own `Arc<File>` ([`SegmentFile::open`]):
//! a file closed while in use stays open until its last user drops it, so
//! the budget bounds the files held here, and reads in flight never fail
//! for it.
//!
//! # Consistency
//!
//! A closed file loses nothing: appended data is in the page cache, and an
//! fsync through a descriptor opened later writes it (Linux syncs the
//! inode, and reports to a new descriptor a write-back error that no
//! descriptor has seen). A segment's file is opened again only while its
//! log holds the segment under the log's lock: the cleaner renames new
//! segments over the paths of replaced ones, so a path may outlive the
//! segment it named, never while the log still holds that segment.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::LogError;

/// Opens a segment's file read-write (creating it if `create`).
pub(super) fn open_rw(path: &Path, create: bool) -> Result<File, LogError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
        .map_err(|e| LogError::io("open", path, e))
}

/// A broker's set of open segment files and its budget.
#[derive(Debug)]
pub struct OpenFiles {
    budget: usize,
    ring: Mutex<Ring>,
    open: Gauge,
    opens: Counter,
}

/// Unbounded: logs opened outside a broker (tools, tests).
impl Default for OpenFiles {
    fn default() -> Self {
        OpenFiles::new(usize::MAX)
    }
}

/// Two sets are equal when they have the same budget (as log settings).
impl PartialEq for OpenFiles {
    fn eq(&self, other: &Self) -> bool {
        self.budget == other.budget
    }
}

/// Ring entries of dropped segments kept before they are pruned, beyond
/// twice the open files.
const PRUNE_SLACK: usize = 1024;

/// The CLOCK ring: every file opened and not closed here since (entries
/// of dropped segments go at the next sweep or prune).
#[derive(Debug, Default)]
struct Ring {
    files: Vec<Weak<SegmentFile>>,
    hand: usize,
}

impl OpenFiles {
    /// A set that keeps at most `budget` files open.
    pub fn new(budget: usize) -> OpenFiles {
        OpenFiles {
            budget: budget.max(1),
            ring: Mutex::new(Ring::default()),
            open: Gauge::default(),
            opens: Counter::default(),
        }
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Segment files open here now (`strata_log_open_segment_files`).
    pub fn open_gauge(&self) -> &Gauge {
        &self.open
    }

    /// Segment files opened, at a first use or again after a close
    /// (`strata_log_segment_file_opens_total`).
    pub fn opens_counter(&self) -> &Counter {
        &self.opens
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn ring_len(&self) -> usize {
        self.ring().files.len()
    }

    /// Counts `file`, just opened, and closes files beyond the budget.
    fn opened(&self, file: &Arc<SegmentFile>) {
        self.open.inc();
        self.opens.inc();
        let budget = self.budget();
        let mut ring = self.ring();
        ring.files.push(Arc::downgrade(file));
        // Entries of dropped segments go at sweeps; with room to spare in
        // the budget there are none, so drop them once they outnumber the
        // open files (amortized: the ring at least doubles in between).
        let open = usize::try_from(self.open.get()).unwrap_or(0);
        if ring.files.len() > 2 * open + PRUNE_SLACK {
            ring.files.retain(|f| f.strong_count() > 0);
            ring.hand = 0;
        }
        // Each entry's use bit is cleared at most once per turn of the
        // hand, so this ends within two turns.
        while ring.files.len() > budget {
            if ring.hand >= ring.files.len() {
                ring.hand = 0;
            }
            let hand = ring.hand;
            match ring.files[hand].upgrade() {
                Some(f) if f.used.swap(false, Ordering::Relaxed) => ring.hand += 1,
                Some(f) => {
                    f.close();
                    ring.files.swap_remove(hand);
                }
                // Dropped with its segment: closed already.
                None => {
                    ring.files.swap_remove(hand);
                }
            }
        }
    }
}

/// A segment's `.log` file: its path, and the file while it is open.
#[derive(Debug)]
pub(crate) struct SegmentFile {
    path: PathBuf,
    /// Tells this segment from another at the same path (the cleaner's
    /// replacement), however often the file closes and opens again.
    id: u64,
    file: Mutex<Option<Arc<File>>>,
    /// Used since the clock's hand last passed.
    used: AtomicBool,
    files: Arc<OpenFiles>,
}

/// A number no other segment file has (see [`SegmentFile::id`]).
pub(crate) fn new_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl SegmentFile {
    /// `path`, already open as `file`.
    pub(crate) fn opened(path: PathBuf, file: File, files: &Arc<OpenFiles>) -> Arc<SegmentFile> {
        let segment = Arc::new(SegmentFile {
            path,
            id: new_id(),
            file: Mutex::new(Some(Arc::new(file))),
            used: AtomicBool::new(true),
            files: Arc::clone(files),
        });
        files.opened(&segment);
        segment
    }

    /// `path`, to open at its first use.
    pub(crate) fn closed(path: PathBuf, files: &Arc<OpenFiles>) -> Arc<SegmentFile> {
        Arc::new(SegmentFile {
            path,
            id: new_id(),
            file: Mutex::new(None),
            used: AtomicBool::new(false),
            files: Arc::clone(files),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    fn slot(&self) -> MutexGuard<'_, Option<Arc<File>>> {
        self.file.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The file, opened (read-write) if it is closed. Call only while the
    /// log holds this segment under its lock (see the module's notes).
    pub(crate) fn open(self: &Arc<Self>) -> Result<Arc<File>, LogError> {
        self.used.store(true, Ordering::Relaxed);
        let mut slot = self.slot();
        if let Some(file) = slot.as_ref() {
            return Ok(Arc::clone(file));
        }
        let file = Arc::new(open_rw(&self.path, false)?);
        *slot = Some(Arc::clone(&file));
        drop(slot);
        self.files.opened(self);
        Ok(file)
    }

    /// Whether the file is open here now.
    #[cfg(test)]
    pub(crate) fn is_open(&self) -> bool {
        self.slot().is_some()
    }

    /// Drops this holder's descriptor; users that took the file keep theirs.
    fn close(&self) {
        if self.slot().take().is_some() {
            self.files.open.dec();
        }
    }
}

impl Drop for SegmentFile {
    fn drop(&mut self) {
        let file = self.file.get_mut().unwrap_or_else(|e| e.into_inner());
        if file.take().is_some() {
            self.files.open.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_in(dir: &Path, n: usize) -> Vec<PathBuf> {
        (0..n)
            .map(|i| {
                let p = dir.join(format!("{i:020}.log"));
                std::fs::write(&p, format!("segment {i}")).unwrap();
                p
            })
            .collect()
    }

    fn open_count(files: &OpenFiles) -> i64 {
        files.open_gauge().get()
    }

    #[test]
    fn files_beyond_the_budget_close_and_open_again_when_used() {
        let dir = tempfile::tempdir().unwrap();
        let set = Arc::new(OpenFiles::new(3));
        let segments: Vec<_> = files_in(dir.path(), 8)
            .into_iter()
            .map(|p| SegmentFile::closed(p, &set))
            .collect();
        assert_eq!(open_count(&set), 0, "nothing opens before its first use");
        for (i, s) in segments.iter().enumerate() {
            let file = s.open().unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut &*file, &mut text).unwrap();
            assert_eq!(text, format!("segment {i}"));
            assert!(open_count(&set) <= 3, "open {} > budget", open_count(&set));
        }
        assert_eq!(open_count(&set), 3);
        assert_eq!(segments.iter().filter(|s| s.is_open()).count(), 3);
        assert_eq!(set.opens_counter().get(), 8);
        // The first was closed; it opens again, and still reads its own.
        assert!(!segments[0].is_open());
        let again = segments[0].open().unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut &*again, &mut text).unwrap();
        assert_eq!(text, "segment 0");
        assert_eq!(set.opens_counter().get(), 9);
        assert_eq!(open_count(&set), 3);
    }

    #[test]
    fn a_file_used_since_the_hand_passed_stays_open() {
        let dir = tempfile::tempdir().unwrap();
        let set = Arc::new(OpenFiles::new(2));
        let paths = files_in(dir.path(), 3);
        let hot = SegmentFile::closed(paths[0].clone(), &set);
        let cold = SegmentFile::closed(paths[1].clone(), &set);
        hot.open().unwrap();
        cold.open().unwrap();
        // A full turn clears both use bits; then only the hot one is used.
        let third = SegmentFile::closed(paths[2].clone(), &set);
        third.open().unwrap();
        hot.open().unwrap();
        let fourth = SegmentFile::opened(paths[1].clone(), File::open(&paths[1]).unwrap(), &set);
        assert!(hot.is_open(), "the file used since the last turn stays");
        assert!(!third.is_open() || !cold.is_open());
        assert!(fourth.is_open());
        assert_eq!(open_count(&set), 2);
    }

    #[test]
    fn a_closed_file_in_use_stays_readable_and_drops_count_once() {
        let dir = tempfile::tempdir().unwrap();
        let set = Arc::new(OpenFiles::new(1));
        let paths = files_in(dir.path(), 2);
        let first = SegmentFile::closed(paths[0].clone(), &set);
        let held = first.open().unwrap();
        let second = SegmentFile::closed(paths[1].clone(), &set);
        second.open().unwrap();
        assert!(!first.is_open());
        let mut text = String::new();
        std::io::Read::read_to_string(&mut &*held, &mut text).unwrap();
        assert_eq!(text, "segment 0", "a reader keeps its descriptor");
        drop(second);
        assert_eq!(open_count(&set), 0);
        drop(first);
        assert_eq!(open_count(&set), 0, "a closed file is not counted twice");
        // The dropped segments' entries go at the next sweep.
        let third = SegmentFile::closed(paths[0].clone(), &set);
        third.open().unwrap();
        assert_eq!(open_count(&set), 1);
    }

    #[test]
    fn dropped_segments_leave_no_entries_behind_when_nothing_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let set = Arc::new(OpenFiles::new(usize::MAX));
        let path = files_in(dir.path(), 1).remove(0);
        let kept = SegmentFile::closed(path.clone(), &set);
        kept.open().unwrap();
        for _ in 0..10 * PRUNE_SLACK {
            let segment = SegmentFile::closed(path.clone(), &set);
            segment.open().unwrap();
        }
        assert_eq!(open_count(&set), 1);
        assert!(
            set.ring_len() <= 4 + PRUNE_SLACK,
            "{} entries for 1 open file",
            set.ring_len()
        );
        assert!(kept.is_open());
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let set = Arc::new(OpenFiles::new(4));
        let path = dir.path().join("00000000000000000000.log");
        let segment = SegmentFile::closed(path, &set);
        let err = segment.open().unwrap_err().to_string();
        assert!(err.contains("00000000000000000000.log"), "{err}");
        assert_eq!(open_count(&set), 0);
    }
}
