//! Replication's log operations in one process, without the network: a
//! leader and followers in their own directories, each with its own sync
//! rounds, copying batches the way the fetcher does (read from the
//! leader's log end, append, fsync, report).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use prometheus_client::metrics::histogram::Histogram;
use proptest::prelude::*;
use uuid::Uuid;

use crate::config::TopicConfig;
use crate::log::batch::build_batch_with;
use crate::partition::durability::{Durability, SyncMetrics};
use crate::partition::replica::BrokerId;
use crate::partition::{LogDir, Partition, PartitionConfig, PartitionError, ReadData};

const TOPIC_ID: Uuid = Uuid::from_u128(0x7265_706c);

fn config() -> PartitionConfig {
    let topic = TopicConfig::with("r", &[("segment.bytes", "400"), ("retention.ms", "-1")]);
    PartitionConfig::from_topic(
        Arc::new(topic),
        &crate::writeback::Writeback::default(),
        &Arc::default(),
    )
}

fn open(dir: &Path, node_id: BrokerId) -> Arc<Partition> {
    open_at(dir, node_id, 0)
}

/// Opens the replica as a broker does, at the leader epoch the metadata
/// names.
fn open_at(dir: &Path, node_id: BrokerId, epoch: i32) -> Arc<Partition> {
    let log_dir = LogDir {
        path: dir.to_path_buf(),
        durability: Durability::new(false, SyncMetrics::new(Histogram::new([0.01]))),
        node_id,
    };
    Arc::new(Partition::open(&log_dir, "r", TOPIC_ID, 0, epoch, config(), None).expect("open"))
}

/// A batch of `n` records from producer 7 at `seq` (idempotent), values
/// tagged with `tag`.
fn batch(tag: &str, seq: i32, n: usize) -> Bytes {
    batch_of(7, tag, seq, n)
}

/// [`batch`] from producer `producer`.
fn batch_of(producer: i64, tag: &str, seq: i32, n: usize) -> Bytes {
    let values: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    let records: Vec<_> = values
        .iter()
        .map(|v| (None, Some(v.as_bytes()), 1_000))
        .collect();
    Bytes::from(build_batch_with(0, producer, 0, seq, &records))
}

/// Everything in `p`'s log from 0 to its end, as bytes.
fn log_bytes(p: &Partition) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = p.local_log_start_offset();
    while at < p.log_end_offset() {
        let read = p.read_for_follower(at, 1 << 20).expect("read");
        let ReadData::Bytes(b) = read.data else {
            panic!("bytes")
        };
        let headers = crate::log::batch::validate_batches(&b, usize::MAX).expect("batches");
        at = headers.last().expect("a batch").next_offset();
        out.extend_from_slice(&b);
    }
    out
}

/// One fetch round of `follower` (broker `id`) from `leader`: truncate
/// first if asked, copy what the leader has past the follower's end,
/// make it durable, report the durable end, learn the high watermark.
async fn fetch_round(leader: &Partition, follower: &Arc<Partition>, id: BrokerId, truncate: bool) {
    // Ask about the latest epoch, cut, and ask again while the leader
    // answered an older epoch than the one asked about.
    let mut asking = if truncate {
        follower.latest_epoch()
    } else {
        None
    };
    while let Some(epoch) = asking {
        let (e, end) = leader.end_offset_for_epoch(epoch);
        let cut = follower.divergence(e, end);
        let from = follower.following().expect("a follower");
        follower.truncate_diverged(cut, from).expect("truncate");
        if e == epoch || e < 0 {
            break;
        }
        asking = follower.latest_epoch();
        assert!(
            asking.is_none_or(|left| left < epoch),
            "each round asks about an older epoch"
        );
    }

    // A read stops at a segment's end: read until nothing is left.
    let hwm = leader.high_watermark();
    loop {
        let at = follower.log_end_offset();
        let read = leader.read_for_follower(at, 1 << 20).expect("leader read");
        match read.data {
            ReadData::Bytes(b) if !b.is_empty() => {
                let from = follower.following().expect("a follower");
                follower
                    .append_replicated(&b, from, 0)
                    .expect("append replicated");
            }
            _ => break,
        }
    }
    let end = follower.log_end_offset();
    follower.wait_durable(end).await.expect("durable");
    leader.on_follower_fetch(id, end, 0).expect("leader");
    follower.on_leader_high_watermark(hwm);
}

fn all() -> BTreeSet<BrokerId> {
    BTreeSet::from([1, 2, 3])
}

#[tokio::test]
async fn followers_copy_the_leader_byte_for_byte_and_commit_moves_with_them() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let l = open(dirs[0].path(), 1);
    let f2 = open(dirs[1].path(), 2);
    let f3 = open(dirs[2].path(), 3);
    assert!(l.become_leader(1, all(), true, 0).expect("lead"));
    assert!(
        !l.become_leader(1, all(), true, 0).expect("same"),
        "no change"
    );
    assert!(f2.become_follower(1, 1).expect("follow"));
    assert!(f3.become_follower(1, 1).expect("follow"));
    let mut last = 0;
    for seq in 0..6 {
        last = l
            .append(&batch("a", seq * 3, 3), 0)
            .expect("append")
            .last_offset;
        l.sync_soon();
    }
    assert_eq!(l.high_watermark(), 0, "nothing is on the followers yet");
    let waiter = {
        let l = l.clone();
        tokio::spawn(async move { l.wait_committed(last + 1).await })
    };
    fetch_round(&l, &f2, 2, false).await;
    l.wait_durable(last + 1).await.expect("leader durable");
    assert_eq!(l.high_watermark(), 0, "broker 3 has nothing");
    assert!(!waiter.is_finished());
    fetch_round(&l, &f3, 3, false).await;
    waiter.await.expect("join").expect("committed");
    assert_eq!(l.high_watermark(), last + 1);
    // The next round tells the followers.
    fetch_round(&l, &f2, 2, false).await;
    assert_eq!(f2.high_watermark(), last + 1);
    assert_eq!(log_bytes(&l), log_bytes(&f2));
    assert_eq!(log_bytes(&l), log_bytes(&f3));
    // Followers refuse produce and the leader refuses replicated batches.
    assert!(matches!(
        f2.append(&batch("x", 100, 1), 0),
        Err(PartitionError::Replica { .. })
    ));
    assert!(l.append_replicated(&batch("x", 100, 1), (2, 1), 0).is_err());
    // An answer from a leader it no longer follows at that epoch.
    let (leader, epoch) = f2.following().expect("a follower");
    let stale = f2.append_replicated(&batch("x", 100, 1), (leader, epoch - 1), 0);
    assert!(
        stale.as_ref().is_err_and(PartitionError::is_role_change),
        "{stale:?}"
    );
    let stale = f2.truncate_diverged(0, (leader + 10, epoch));
    assert!(
        stale.as_ref().is_err_and(PartitionError::is_role_change),
        "{stale:?}"
    );
    // A follower knows the producer's sequence: as leader it takes the next
    // batch and answers a retry of the last one with its offsets.
    f2.become_leader(2, all(), true, 0).expect("lead");
    let retry = f2.append(&batch("a", 15, 3), 0).expect("retry");
    assert_eq!(retry.last_offset, last, "a retry is a duplicate");
    assert_eq!(
        f2.append(&batch("a", 18, 3), 0).expect("next").base_offset,
        last + 1
    );
}

#[tokio::test]
async fn a_deposed_leader_answers_its_waiters() {
    let dir = tempfile::tempdir().expect("dir");
    let l = open(dir.path(), 1);
    l.become_leader(1, all(), true, 0).expect("lead");
    let last = l.append(&batch("a", 0, 2), 0).expect("append").last_offset;
    let waiter = {
        let l = l.clone();
        tokio::spawn(async move { l.wait_committed(last + 1).await })
    };
    tokio::task::yield_now().await;
    l.become_follower(2, 2).expect("follow");
    let err = waiter.await.expect("join").expect_err("deposed");
    assert_eq!(
        crate::api::error::partition_error_code(&err),
        kafka_protocol::error::ResponseError::NotLeaderOrFollower.code()
    );
}

#[tokio::test]
async fn a_deposed_leader_cuts_what_it_took_alone_and_copies_the_new_history() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
    let a = open(dirs[0].path(), 1);
    let b = open(dirs[1].path(), 2);
    a.become_leader(1, BTreeSet::from([1, 2]), true, 0)
        .expect("lead");
    b.become_follower(1, 1).expect("follow");
    a.append(&batch("kept", 0, 5), 0).expect("append");
    fetch_round(&a, &b, 2, false).await;
    // Taken by A alone (acks=1), never copied: lost when B takes over.
    a.append(&batch("lost", 5, 5), 0).expect("append");
    assert_eq!(a.log_end_offset(), 10);
    b.become_leader(2, BTreeSet::from([2]), true, 0)
        .expect("lead");
    b.append(&batch_of(8, "new", 0, 3), 0).expect("append");
    a.become_follower(2, 2).expect("follow");
    assert_eq!(a.latest_epoch(), Some(1));
    let (e, end) = b.end_offset_for_epoch(1);
    assert_eq!((e, end), (1, 5));
    assert_eq!(a.divergence(e, end), 5);
    fetch_round(&b, &a, 1, true).await;
    assert_eq!(a.log_end_offset(), 8);
    assert_eq!(log_bytes(&a), log_bytes(&b));
    assert_eq!(a.latest_epoch(), Some(2));
    // Its producer state lost the cut batch with it: as leader again it
    // takes sequence 5 as new, at the end of the log, not as a duplicate.
    a.become_leader(3, BTreeSet::from([1, 2]), true, 0)
        .expect("lead");
    let again = a.append(&batch("lost", 5, 5), 0).expect("append");
    assert_eq!(again.base_offset, 8);
}

/// What the model run does, one step at a time.
#[derive(Debug, Clone)]
enum Step {
    /// The leader takes a batch of this many records.
    Append(usize),
    /// This replica (0..3) does one fetch round if it follows.
    Fetch(usize),
    /// The leader's next sync round.
    Sync,
    /// This replica loses what it had not made durable, and restarts as a
    /// follower that must check its log against the leader.
    Crash(usize),
    /// Leadership moves to this replica (0..3) at the next epoch.
    Elect(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1usize..4).prop_map(Step::Append),
        4 => (0usize..3).prop_map(Step::Fetch),
        2 => Just(Step::Sync),
        1 => (0usize..3).prop_map(Step::Crash),
        1 => (0usize..3).prop_map(Step::Elect),
    ]
}

async fn run_model(steps: Vec<Step>) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let ids = [1, 2, 3];
    let mut reps: Vec<Arc<Partition>> = (0..3).map(|i| open(dirs[i].path(), ids[i])).collect();
    let mut leader = 0usize;
    let mut epoch = 1;
    reps[0].become_leader(epoch, all(), true, 0).expect("lead");
    for r in &reps[1..] {
        r.become_follower(epoch, ids[0]).expect("follow");
    }
    let mut needs_check = [false; 3];
    // Committed records as first seen below the leader's high watermark.
    let mut committed: Vec<u8> = Vec::new();
    let mut tag = 0;
    for s in steps {
        match s {
            Step::Append(n) => {
                tag += 1;
                let b = Bytes::from(build_batch_with(
                    0,
                    -1,
                    -1,
                    -1,
                    &(0..n)
                        .map(|_| (None, Some(&b"v"[..]), 1_000 + tag))
                        .collect::<Vec<_>>(),
                ));
                reps[leader].append(&b, 0).expect("append");
                reps[leader].sync_soon();
            }
            Step::Fetch(i) if i != leader => {
                let (l, f) = (reps[leader].clone(), reps[i].clone());
                fetch_round(&l, &f, ids[i], needs_check[i]).await;
                needs_check[i] = false;
            }
            Step::Fetch(_) => {}
            Step::Sync => {
                let end = reps[leader].log_end_offset();
                reps[leader].wait_durable(end).await.expect("sync");
            }
            Step::Crash(i) => {
                let durable = reps[i].durable.borrow().offset;
                // The last checkpoint holds a high watermark it had.
                let checkpointed = reps[i].high_watermark();
                reps[i]
                    .truncate_to(durable)
                    .expect("lose the unsynced tail");
                reps[i] = open(dirs[i].path(), ids[i]);
                reps[i].forget_high_watermark(Some(checkpointed));
                if i == leader {
                    // Nobody leads until an election: the next one.
                    leader = (i + 1) % 3;
                    epoch += 1;
                    reps[leader]
                        .become_leader(epoch, all(), true, 0)
                        .expect("lead");
                    for j in (0..3).filter(|j| *j != leader) {
                        reps[j].become_follower(epoch, ids[leader]).expect("follow");
                        needs_check[j] = true;
                    }
                } else {
                    reps[i].become_follower(epoch, ids[leader]).expect("follow");
                    needs_check[i] = true;
                }
            }
            Step::Elect(i) => {
                if i == leader {
                    continue;
                }
                leader = i;
                epoch += 1;
                reps[leader]
                    .become_leader(epoch, all(), true, 0)
                    .expect("lead");
                for j in (0..3).filter(|j| *j != leader) {
                    reps[j].become_follower(epoch, ids[leader]).expect("follow");
                    needs_check[j] = true;
                }
            }
        }
        // Everything ever committed is still in the leader's log, byte for
        // byte; what is committed now extends it.
        let l = &reps[leader];
        let now = log_bytes(l);
        let hwm_bytes = bytes_below(&now, l.high_watermark());
        assert!(
            now.starts_with(&committed),
            "a committed record was lost or changed"
        );
        if hwm_bytes.len() > committed.len() {
            committed = hwm_bytes;
        }
        // Replicas agree below each one's high watermark.
        for r in &reps {
            let mine = log_bytes(r);
            let agreed = bytes_below(&mine, r.high_watermark());
            assert!(
                now.starts_with(&agreed),
                "a replica exposes what the leader lacks"
            );
        }
    }
}

/// The prefix of a log's bytes holding the batches below `offset`.
fn bytes_below(log: &[u8], offset: i64) -> Vec<u8> {
    let Ok(headers) = crate::log::batch::validate_batches(log, usize::MAX) else {
        return Vec::new();
    };
    let mut len = 0;
    for h in headers {
        if h.next_offset() > offset {
            break;
        }
        len += h.total_len();
    }
    log[..len].to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A leader and two followers through appends, fetches, sync rounds,
    /// crashes that lose each log's unsynced tail, and elections: nothing
    /// ever committed is lost or changed, and replicas agree below their
    /// high watermarks.
    #[test]
    fn committed_records_survive_crashes_and_elections(steps in proptest::collection::vec(step(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(run_model(steps));
    }
}

/// A leader restarted at the epoch it led (it opens leading alone, with
/// its high watermark forgotten) holds records its followers lack: taking
/// the lead again must not count them as committed, and once the
/// followers have them the high watermark clients see moves past them.
#[tokio::test]
async fn a_leader_reopened_at_its_epoch_commits_only_what_followers_hold() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let l = open_at(dirs[0].path(), 1, 1);
    let f2 = open(dirs[1].path(), 2);
    let f3 = open(dirs[2].path(), 3);
    l.become_leader(1, all(), true, 0).expect("lead");
    f2.become_follower(1, 1).expect("follow");
    f3.become_follower(1, 1).expect("follow");
    l.append(&batch("a", 0, 3), 0).expect("append");
    l.wait_durable(3).await.expect("durable");
    fetch_round(&l, &f2, 2, false).await;
    fetch_round(&l, &f3, 3, false).await;
    assert_eq!(l.high_watermark(), 3);
    // Two more batches reach the leader's disk only.
    l.append(&batch("b", 3, 2), 0).expect("append");
    l.append(&batch("c", 5, 2), 0).expect("append");
    l.wait_durable(7).await.expect("durable");
    l.close().expect("close");
    drop(l);

    let l = open_at(dirs[0].path(), 1, 1);
    l.forget_high_watermark(None);
    l.become_leader(1, all(), true, 0).expect("lead again");
    assert_eq!(l.high_watermark(), 0, "nothing known committed yet");
    // One follower has fetched: the other's position is unknown.
    fetch_round(&l, &f2, 2, false).await;
    assert_eq!(l.high_watermark(), 0, "broker 3 has not fetched");
    fetch_round(&l, &f3, 3, false).await;
    assert_eq!(l.high_watermark(), 7, "both followers hold all 7 records");
    fetch_round(&l, &f2, 2, false).await;
    assert_eq!(f2.high_watermark(), 7);
}
