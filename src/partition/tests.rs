//! Unit tests of a partition on its own: idempotent appends, where an
//! offset is (local, tier, out of range), and a restart after the tier.

use std::sync::Arc;

use bytes::Bytes;
use prometheus_client::metrics::histogram::Histogram;

use super::durability::{Durability, SyncMetrics};
use super::*;
use crate::log::batch::build_batch_with;

fn log_dir(path: &Path) -> LogDir {
    LogDir {
        path: path.to_path_buf(),
        durability: Durability::new(false, SyncMetrics::new(Histogram::new([0.01]))),
        node_id: 1,
    }
}

/// Small segments, so a few batches seal several; tiering on, local
/// retention of uploaded segments at 0 bytes.
fn config() -> PartitionConfig {
    let topic = TopicConfig::with(
        "t",
        &[
            ("segment.bytes", "300"),
            ("retention.ms", "-1"),
            ("local.retention.bytes", "0"),
        ],
    );
    PartitionConfig::from_topic(
        Arc::new(topic),
        &crate::writeback::Writeback::default(),
        &Arc::default(),
    )
}

const TOPIC_ID: Uuid = Uuid::from_u128(0x5742_7a7a);

fn open(dir: &Path, remote: Option<tiering::RemotePartition>) -> Arc<Partition> {
    Arc::new(Partition::open(&log_dir(dir), "t", TOPIC_ID, 0, 0, config(), remote).expect("open"))
}

/// A batch of one record from producer 7 (epoch 0) with sequence `seq`.
fn idempotent(seq: i32, value: &[u8]) -> Bytes {
    Bytes::from(build_batch_with(
        0,
        7,
        0,
        seq,
        &[(None, Some(value), 1_000)],
    ))
}

fn tier(dir: &Path) -> tiering::RemotePartition {
    let store = tiering::TierStore::from_url(&format!("file://{}", dir.display())).expect("tier");
    store.partition(tiering::PartitionKey::new(
        "c",
        "t",
        TOPIC_ID.into_bytes(),
        0,
    ))
}

#[test]
fn a_retried_batch_answers_its_first_offsets_and_a_gap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), None);
    let first = p.append(&idempotent(0, b"a"), 0).expect("append");
    let second = p.append(&idempotent(1, b"b"), 0).expect("append");
    assert_eq!((first.base_offset, second.base_offset), (0, 1));

    let retried = p.append(&idempotent(1, b"b"), 0).expect("retry");
    assert_eq!(retried.base_offset, 1, "a retry is answered, not appended");
    assert_eq!(p.log_end_offset(), 2);

    let err = p.append(&idempotent(5, b"c"), 0).expect_err("sequence gap");
    assert!(
        matches!(
            err,
            PartitionError::OutOfOrderSequence {
                expected: 2,
                got: 5,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(p.log_end_offset(), 2);
}

#[test]
fn locate_and_read_answer_local_or_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), None);
    for seq in 0..3 {
        p.append(&idempotent(seq, b"v"), 0).expect("append");
    }
    assert_eq!(p.locate(0), Location::Local);
    assert_eq!(
        p.locate(3),
        Location::Local,
        "the high watermark: nothing there yet"
    );
    assert_eq!(
        p.locate(4),
        Location::OutOfRange {
            log_start: 0,
            high_watermark: 3
        }
    );

    let r = p.read(1, 1 << 20, ReadMode::Bytes).expect("read");
    assert_eq!(
        (r.high_watermark, r.log_start_offset, r.log_end_offset),
        (3, 0, 3)
    );
    let ReadData::Bytes(data) = r.data else {
        panic!("bytes asked for")
    };
    assert_eq!(
        crate::log::batch::BatchHeader::parse(&data)
            .unwrap()
            .base_offset,
        1
    );

    let r = p.read(1, 1 << 20, ReadMode::File).expect("read");
    assert!(
        matches!(r.data, ReadData::File { offsets: 2, .. }),
        "{:?}",
        r.data
    );
    let r = p.read(3, 1 << 20, ReadMode::File).expect("read at the end");
    assert!(
        matches!(&r.data, ReadData::Bytes(b) if b.is_empty()),
        "{:?}",
        r.data
    );
    let err = p
        .read(4, 1 << 20, ReadMode::Bytes)
        .expect_err("past the end");
    assert!(
        matches!(err, PartitionError::OffsetOutOfRange { offset: 4, .. }),
        "{err:?}"
    );
}

/// Uploads every sealed segment, then applies local retention: the old
/// offsets are in the tier and read from there.
async fn tier_all_sealed(p: &Partition) {
    let remote = p.remote().expect("tiered").clone();
    for seg in p.sealed_segments() {
        remote
            .upload_segment(&p.segment_upload(&seg).expect("upload"))
            .await
            .expect("uploaded");
    }
    p.refresh_tier().await.expect("refresh");
    assert!(p.apply_local_retention(0).expect("local retention") > 0);
}

#[tokio::test]
async fn offsets_below_the_local_log_are_located_and_read_in_the_tier() {
    let (dir, tier_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let p = open(dir.path(), Some(tier(tier_dir.path())));
    for seq in 0..10 {
        p.append(&idempotent(seq, &[b'v'; 100]), 0).expect("append");
    }
    tier_all_sealed(&p).await;
    let local_start = p.local_log_start_offset();
    assert!(local_start > 0);
    assert_eq!(p.log_start_offset(), 0);
    assert_eq!(p.locate(0), Location::Tier);
    assert_eq!(p.locate(local_start - 1), Location::Tier);
    assert_eq!(p.locate(local_start), Location::Local);

    let r = p.read(0, 1 << 20, ReadMode::File).expect("read");
    assert!(matches!(r.data, ReadData::InTier), "{:?}", r.data);
    assert_eq!(r.log_start_offset, 0);
    let remote = p.read_remote(0, 1 << 20, false).await.expect("tier read");
    assert!(remote.len > 0);
    assert!(
        (1..=local_start as u64).contains(&remote.offsets),
        "whole batches of the tier, none past it: {} offsets",
        remote.offsets
    );
}

/// A data directory lost after its segments went to the tier: the new
/// local log starts after the tier, with the producer state of the last
/// tiered segment, so a retried batch is still recognised.
#[tokio::test]
async fn a_restart_after_the_tier_continues_offsets_and_producer_state() {
    let (dir, tier_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let p = open(dir.path(), Some(tier(tier_dir.path())));
    for seq in 0..10 {
        p.append(&idempotent(seq, &[b'v'; 100]), 0).expect("append");
    }
    tier_all_sealed(&p).await;
    let tier_last = p.tier_last_offset().expect("tiered");
    p.close().expect("close");
    drop(p);

    let fresh = tempfile::tempdir().unwrap();
    let p = open(fresh.path(), Some(tier(tier_dir.path())));
    assert_eq!(
        p.log_end_offset(),
        0,
        "nothing local before the tier is read"
    );
    p.refresh_tier().await.expect("refresh");
    assert_eq!(p.log_end_offset(), tier_last + 1);
    assert_eq!(p.high_watermark(), tier_last + 1);

    let seq = i32::try_from(tier_last).unwrap();
    let retried = p
        .append(&idempotent(seq, &[b'v'; 100]), 0)
        .expect("retry of a tiered batch");
    assert_eq!(
        retried.base_offset, tier_last,
        "recognised from the tier's producer snapshot"
    );
    let next = p.append(&idempotent(seq + 1, b"new"), 0).expect("append");
    assert_eq!(next.base_offset, tier_last + 1);
}

/// A follower's cached manifest does not follow its leader's uploads: it
/// reads the manifest from the store once per offset its leader tells it
/// of beyond its copy, and, taking the lead, once at its new epoch.
#[tokio::test]
async fn a_stale_manifest_copy_is_read_again_once_per_word_and_per_epoch() {
    let tier_dir = tempfile::tempdir().unwrap();
    let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = open(leader_dir.path(), Some(tier(tier_dir.path())));
    let follower = open(follower_dir.path(), Some(tier(tier_dir.path())));
    follower.become_follower(1, 1).expect("follow");
    follower.refresh_tier().await.expect("first read");
    assert!(
        !follower.tier_pass_rereads(&follower.config().tier),
        "nothing told yet"
    );

    for seq in 0..10 {
        leader
            .append(&idempotent(seq, &[b'v'; 100]), 0)
            .expect("append");
    }
    tier_all_sealed(&leader).await;
    let last = leader.tier_last_offset().expect("tiered");
    follower.refresh_tier().await.expect("cached");
    assert_eq!(follower.tier_last_offset(), None, "the cached copy");

    follower.note_leader_tier_last(last);
    assert!(follower.tier_pass_rereads(&follower.config().tier));
    follower.reread_tier().await.expect("reread");
    assert_eq!(follower.tier_last_offset(), Some(last));
    assert!(!follower.tier_pass_rereads(&follower.config().tier));

    // A word the manifest does not bear out (the manifest's owner caps
    // what counts): one read, then none until the next word.
    follower.note_leader_tier_last(last + 100);
    assert!(follower.tier_pass_rereads(&follower.config().tier));
    follower.reread_tier().await.expect("reread");
    assert_eq!(follower.tier_last_offset(), Some(last));
    assert!(!follower.tier_pass_rereads(&follower.config().tier));
    follower.note_leader_tier_last(last + 200);
    assert!(follower.tier_pass_rereads(&follower.config().tier));

    follower
        .become_leader(2, [0].into_iter().collect(), true, 0)
        .expect("lead");
    assert!(
        follower.tier_pass_rereads(&follower.config().tier),
        "a new leader reads it at its epoch"
    );
    follower.reread_tier().await.expect("reread");
    assert!(!follower.tier_pass_rereads(&follower.config().tier));
}
