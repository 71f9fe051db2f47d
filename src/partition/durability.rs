//! A broker's fsync rounds for `acks=all` (group commit across partitions).
//!
//! Overview: a partition that has appends waiting for durability joins the
//! next round (`Durability::request`). One task runs the rounds back to
//! back: a round takes every queued partition, reads each one's sync handle (the active
//! segment and its log end offset at that moment), syncs them on one
//! blocking thread (`sync_all`: one syncfs(2) per filesystem when the
//! round holds several partitions and `--sync-rounds-syncfs` is on), or
//! else fdatasyncs the partitions at once, up to 16 on blocking threads
//! (in one run on a 2-core VM, rounds of about 9 partitions
//! took 1.6 ms on average that way against 7.5 ms one after another, and
//! 1.1 ms with syncfs), and publishes each partition's new durable offset.
//! Partitions that ask while a round runs go into the next one.
//!
//! Why rounds and not one fsync loop per partition: with many partitions,
//! independent loops keep the disk's journal busy with a stream of commits
//! that each wait for the others, and a produce request's response waits on
//! the connection behind every earlier one (Kafka answers in order), so one
//! slow fsync holds up many answers. A round syncs its partitions together
//! (with syncfs, in one journal commit) and finishes them together, so
//! latency is at most two rounds for every partition.
//!
//! Failure: a failed fdatasync is published with the partition's error; its
//! waiters answer with it (KAFKA_STORAGE_ERROR) and the durable offset does
//! not move, so nothing is acknowledged that the disk did not confirm. The
//! failure sticks: Linux may drop pages it could not write and report that
//! only once, so a later fsync that succeeds proves nothing about them. The
//! log takes no more appends and later rounds publish the failure, until a
//! restart recovers the log from what is on disk (as Kafka takes the log
//! directory offline).
//!
//! The rounds belong to a broker ([`Durability`], handed to each partition
//! it opens): brokers in one process keep separate queues, settings and
//! counters.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::{Partition, PartitionError};

/// What the sync rounds count; the telemetry module registers these.
#[derive(Debug, Clone)]
pub struct SyncMetrics {
    /// How long each round's syncs took (`strata_sync_round_duration_seconds`):
    /// with the produce latency histogram, this splits an acks=all answer's
    /// time between the disk and the rest.
    pub round_seconds: Histogram,
    /// Partitions synced, summed over rounds
    /// (`strata_sync_round_partitions_total`); over the round count, the
    /// mean size of a round.
    pub round_partitions: Counter,
}

impl SyncMetrics {
    /// Counters that start at zero, with `round_seconds` as the histogram
    /// (its buckets are the caller's).
    pub fn new(round_seconds: Histogram) -> SyncMetrics {
        SyncMetrics {
            round_seconds,
            round_partitions: Counter::default(),
        }
    }
}

struct Queue {
    next: Vec<Arc<Partition>>,
    running: bool,
}

struct Inner {
    queue: Mutex<Queue>,
    /// Whether rounds of several partitions use syncfs(2)
    /// (`--sync-rounds-syncfs`).
    syncfs: bool,
    metrics: SyncMetrics,
}

/// A broker's sync rounds; clones share them.
#[derive(Clone)]
pub struct Durability(Arc<Inner>);

impl std::fmt::Debug for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durability")
            .field("syncfs", &self.0.syncfs)
            .finish_non_exhaustive()
    }
}

impl Durability {
    pub fn new(syncfs: bool, metrics: SyncMetrics) -> Durability {
        Durability(Arc::new(Inner {
            queue: Mutex::new(Queue {
                next: Vec::new(),
                running: false,
            }),
            syncfs,
            metrics,
        }))
    }

    pub fn metrics(&self) -> &SyncMetrics {
        &self.0.metrics
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.0.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `p` into the next round (once), starting the round task if
    /// none runs.
    pub(super) fn request(&self, p: &Arc<Partition>) {
        if p.sync_queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut q = self.queue();
        q.next.push(Arc::clone(p));
        if !q.running {
            q.running = true;
            tokio::spawn(self.clone().run_rounds());
        }
    }

    async fn run_rounds(self) {
        loop {
            let batch = {
                let mut q = self.queue();
                if q.next.is_empty() {
                    q.running = false;
                    return;
                }
                std::mem::take(&mut q.next)
            };
            let handles: Vec<_> = batch
                .iter()
                .map(|p| {
                    // Cleared before the handle is read: an append after this
                    // point may not be covered, so its waiter must queue again.
                    p.sync_queued.store(false, Ordering::Release);
                    let handle = p.with_log(|log, _, _| Ok(log.sync_handle()?));
                    if let Ok((_, end)) = &handle {
                        p.sync_end.fetch_max(*end, Ordering::AcqRel);
                    }
                    handle
                })
                .collect();
            let files: Vec<_> = handles
                .iter()
                .filter_map(|h| h.as_ref().ok().map(|(f, _)| Arc::clone(f)))
                .collect();
            let timed = !files.is_empty();
            let started = Instant::now();
            if timed {
                self.0.metrics.round_partitions.inc_by(files.len() as u64);
            }
            let synced = sync_round(files, self.0.syncfs).await;
            if timed {
                self.0
                    .metrics
                    .round_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            // `synced` has one result per handle that opened, in order.
            let mut synced = synced.into_iter();
            for (p, handle) in batch.iter().zip(handles) {
                let res = handle.and_then(|(_, end)| {
                    let res = synced
                        .next()
                        .unwrap_or_else(|| Err(io::Error::other("sync round ended early")));
                    res.map(|()| end).map_err(|source| PartitionError::Sync {
                        partition: p.name(),
                        source,
                    })
                });
                p.publish_durable(res);
            }
        }
    }
}

/// fdatasyncs of one round that run at once when syncfs is off.
const PARALLEL_SYNCS: usize = 16;

/// Syncs a round's files: with `syncfs` and several files, through
/// [`sync_all`] on one blocking thread; else an fdatasync per file, up to
/// [`PARALLEL_SYNCS`] at once on blocking threads, so the disk sees the
/// round's writes and flushes together. One result per file, in order.
async fn sync_round(files: Vec<Arc<File>>, syncfs: bool) -> Vec<io::Result<()>> {
    use futures::StreamExt;
    let joined = |r: Result<io::Result<()>, tokio::task::JoinError>| {
        r.unwrap_or_else(|e| Err(io::Error::other(e.to_string())))
    };
    if syncfs && files.len() > 1 {
        let n = files.len();
        return match tokio::task::spawn_blocking(move || sync_all(&files, true)).await {
            Ok(results) => results,
            Err(e) => (0..n)
                .map(|_| Err(io::Error::other(e.to_string())))
                .collect(),
        };
    }
    futures::stream::iter(files)
        .map(|f| tokio::task::spawn_blocking(move || f.sync_data()))
        .buffered(PARALLEL_SYNCS)
        .map(joined)
        .collect()
        .await
}

/// Filesystems whose syncfs(2) writes back and commits all the data of the
/// filesystem, as an fdatasync of each file would: ext2/3/4, XFS, Btrfs,
/// F2FS. Elsewhere syncfs may return success having made nothing durable:
/// on FUSE (other than virtiofs) the kernel does not pass it to the
/// filesystem at all, and network filesystems differ.
const SYNCFS_DURABLE: [i64; 4] = [0xEF53, 0x5846_5342, 0x9123_683E, 0xF2F5_2010];

/// Whether syncfs(2) makes the data of the filesystem holding `f` durable
/// (see [`SYNCFS_DURABLE`]).
fn syncfs_is_durable(f: &File) -> bool {
    // `f_type` is i64 here, narrower on other targets.
    #[allow(clippy::useless_conversion)]
    rustix::fs::fstatfs(f).is_ok_and(|s| SYNCFS_DURABLE.contains(&i64::from(s.f_type)))
}

/// Makes the files durable. With syncfs on and more than one file, each
/// filesystem among them is synced once with syncfs(2): one write-back pass
/// and one journal commit instead of a commit per file (the filesystem's
/// other dirty data goes too). A file whose syncfs fails, on a filesystem
/// where syncfs is not known to be durable, or without syncfs, gets its
/// own fdatasync.
fn sync_all(files: &[Arc<File>], syncfs: bool) -> Vec<io::Result<()>> {
    let mut synced: HashMap<u64, bool> = HashMap::new();
    let devs: Vec<Option<u64>> = files
        .iter()
        .map(|f| f.metadata().map(|m| m.dev()).ok())
        .collect();
    if syncfs && files.len() > 1 {
        for (f, dev) in files.iter().zip(&devs) {
            let Some(dev) = dev else { continue };
            synced.entry(*dev).or_insert_with(|| {
                if !syncfs_is_durable(f) {
                    return false;
                }
                rustix::fs::syncfs(f.as_ref())
                    .inspect_err(|e| {
                        tracing::warn!(error = %e, "syncfs failed; fsyncing each partition instead");
                    })
                    .is_ok()
            });
        }
    }
    files
        .iter()
        .zip(&devs)
        .map(|(f, dev)| match dev.and_then(|d| synced.get(&d)) {
            Some(true) => Ok(()),
            _ => f.sync_data(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::build_batch;
    use crate::partition::PartitionConfig;
    use bytes::Bytes;

    fn durability() -> Durability {
        Durability::new(true, SyncMetrics::new(Histogram::new([0.001, 0.01, 0.1])))
    }

    fn partitions(dir: &std::path::Path, n: i32) -> Vec<Arc<Partition>> {
        partitions_in(dir, n, &durability())
    }

    fn partitions_in(
        dir: &std::path::Path,
        n: i32,
        durability: &Durability,
    ) -> Vec<Arc<Partition>> {
        let log_dir = crate::partition::LogDir {
            path: dir.to_path_buf(),
            durability: durability.clone(),
            node_id: 1,
        };
        (0..n)
            .map(|i| {
                let p = Partition::open(
                    &log_dir,
                    "rounds",
                    uuid::Uuid::new_v4(),
                    i,
                    0,
                    PartitionConfig::from_topic(
                        Arc::new(crate::config::TopicConfig::with("__rounds", &[])),
                        &crate::writeback::Writeback::default(),
                        &Arc::default(),
                    ),
                    None,
                )
                .expect("open partition");
                Arc::new(p)
            })
            .collect()
    }

    fn one_record() -> Bytes {
        Bytes::from(build_batch(&[(None, Some(b"v".as_slice()), 1)]))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_waiters_on_many_partitions_all_become_durable() {
        let dir = tempfile::tempdir().unwrap();
        let ps = partitions(dir.path(), 8);
        let mut waits = Vec::new();
        for round in 0..20 {
            for p in &ps {
                let end = p.append(&one_record(), 0).expect("append").last_offset + 1;
                let p = Arc::clone(p);
                waits.push(tokio::spawn(async move { p.wait_durable(end).await }));
            }
            if round % 5 == 0 {
                tokio::task::yield_now().await;
            }
        }
        for w in waits {
            w.await.expect("join").expect("durable");
        }
        for p in &ps {
            assert_eq!(p.durable.borrow().offset, 20, "{}", p.name());
            assert!(p.durable.borrow().round >= 1);
        }
    }

    /// `sync_to` at the append starts the round: the append becomes durable
    /// though no wait is polled (an answer queued behind earlier ones is
    /// polled only when they are out).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sync_to_starts_a_round_without_a_waiter() {
        let dir = tempfile::tempdir().unwrap();
        let ps = partitions(dir.path(), 2);
        let mut rx = ps[0].durable.subscribe();
        let end = ps[0].append(&one_record(), 0).expect("append").last_offset + 1;
        ps[1].append(&one_record(), 0).expect("append");
        ps[0].sync_to(end);
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            rx.wait_for(|d| d.offset >= end),
        )
        .await
        .expect("a round ran")
        .expect("partition open");
        // Only the partition that asked was synced; one already covered
        // asks for nothing.
        assert_eq!(ps[1].durable.borrow().offset, 0);
        let rounds = ps[0].durable.borrow().round;
        ps[0].sync_to(end);
        tokio::task::yield_now().await;
        assert!(!ps[0].sync_queued.load(Ordering::Acquire));
        assert_eq!(ps[0].durable.borrow().round, rounds);
    }

    /// Two brokers in one process: each one's partitions are synced by its
    /// own rounds and counted by its own counters.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_brokers_keep_separate_rounds() {
        let (a, b) = (durability(), durability());
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ps_a = partitions_in(dir_a.path(), 3, &a);
        let ps_b = partitions_in(dir_b.path(), 1, &b);
        for p in ps_a.iter().chain(&ps_b) {
            let end = p.append(&one_record(), 0).expect("append").last_offset + 1;
            p.wait_durable(end).await.expect("durable");
        }
        assert_eq!(a.metrics().round_partitions.get(), 3);
        assert_eq!(b.metrics().round_partitions.get(), 1);
    }

    #[tokio::test]
    async fn a_closed_partition_fails_its_waiters() {
        let dir = tempfile::tempdir().unwrap();
        let ps = partitions(dir.path(), 1);
        let end = ps[0].append(&one_record(), 0).expect("append").last_offset + 1;
        ps[0].close().expect("close");
        let err = ps[0].wait_durable(end).await.expect_err("closed");
        assert!(matches!(err, PartitionError::Closed { .. }), "{err:?}");
    }

    /// After a failed sync the partition acknowledges and appends nothing
    /// more: Linux may drop the pages it could not write and report that
    /// once, so a later fsync that succeeds says nothing about them. A
    /// restart recovers the log from disk and takes appends again.
    #[tokio::test]
    async fn a_failed_sync_stops_acknowledgements_and_appends_until_restart() {
        let dir = tempfile::tempdir().unwrap();
        let p = partitions(dir.path(), 1).remove(0);
        let first = p.append(&one_record(), 0).expect("append").last_offset + 1;
        p.wait_durable(first).await.expect("durable");
        let second = p.append(&one_record(), 0).expect("append").last_offset + 1;

        // What a round publishes when the partition's fdatasync fails, then
        // what a later round publishes when its fdatasync returns fine.
        p.publish_durable(Err(PartitionError::Sync {
            partition: p.name(),
            source: io::Error::from_raw_os_error(5),
        }));
        p.publish_durable(Ok(second));
        assert_eq!(p.durable.borrow().offset, first);
        let err = p.wait_durable(second).await.expect_err("not durable");
        assert!(matches!(err, PartitionError::Sync { .. }), "{err:?}");
        let err = p.append(&one_record(), 0).expect_err("no appends");
        assert_eq!(
            crate::api::error::partition_error_code(&err),
            crate::api::error::Code::KafkaStorageError.code(),
            "{err}"
        );
        assert!(err.to_string().contains("fsync"), "{err}");

        let err = p.close().expect_err("a failed log is not closed clean");
        assert!(err.to_string().contains("fsync"), "{err}");
        drop(p);
        let p = partitions(dir.path(), 1).remove(0);
        let third = p.append(&one_record(), 0).expect("append").last_offset + 1;
        assert_eq!(third, 3);
        p.wait_durable(third).await.expect("durable after restart");
    }

    #[test]
    fn syncfs_is_trusted_only_where_it_is_durable() {
        // procfs and tmpfs keep nothing: syncfs there proves nothing.
        let proc = File::open("/proc/self/status").unwrap();
        assert!(!syncfs_is_durable(&proc));
        if let Ok(shm) = tempfile::tempfile_in("/dev/shm") {
            assert!(!syncfs_is_durable(&shm));
        }
        // Whatever the data directory's filesystem is, the answer matches
        // its type.
        let f = tempfile::tempfile().unwrap();
        let kind = rustix::fs::fstatfs(&f).unwrap().f_type;
        #[allow(clippy::useless_conversion)]
        let listed = SYNCFS_DURABLE.contains(&i64::from(kind));
        assert_eq!(syncfs_is_durable(&f), listed);
    }

    #[test]
    fn sync_all_answers_every_file_in_both_modes() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<Arc<File>> = (0..3)
            .map(|i| {
                let path = dir.path().join(format!("f{i}"));
                let mut f = std::fs::File::create(&path).unwrap();
                std::io::Write::write_all(&mut f, b"data").unwrap();
                Arc::new(f)
            })
            .collect();
        for syncfs in [true, false] {
            let res = sync_all(&files, syncfs);
            assert_eq!(res.len(), files.len());
            assert!(res.iter().all(Result::is_ok), "{res:?}");
        }
        assert!(sync_all(&files[..1], true).iter().all(Result::is_ok));
    }

    /// Without syncfs a round's fdatasyncs run at once, and each result
    /// still belongs to its own file: a file that cannot be synced (a pipe:
    /// EINVAL) fails alone, in its place.
    #[tokio::test]
    async fn parallel_fdatasyncs_answer_each_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (_reader, writer) = std::io::pipe().unwrap();
        let pipe = Arc::new(File::from(std::os::fd::OwnedFd::from(writer)));
        let mut files: Vec<Arc<File>> = (0..40)
            .map(|i| {
                let mut f = std::fs::File::create(dir.path().join(format!("f{i}"))).unwrap();
                std::io::Write::write_all(&mut f, b"data").unwrap();
                Arc::new(f)
            })
            .collect();
        files[17] = pipe;
        let res = sync_round(files, false).await;
        assert_eq!(res.len(), 40);
        for (i, r) in res.iter().enumerate() {
            assert_eq!(r.is_err(), i == 17, "file {i}: {r:?}");
        }
    }
}
