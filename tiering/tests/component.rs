//! Component tests of the tier on `memory://`, `file://` and a
//! fault-injecting store, with real Kafka v2 record batches.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};
use tiering::faults::{FaultConfig, FaultyStore};
use tiering::{
    ConditionalPut, ObjectKind, RetentionPolicy, TierError, TierOptions, TierStore, UploadOutcome,
    Uploader, UploaderConfig,
};
use tokio_util::sync::CancellationToken;

async fn round_trip(tier: TierStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let part = tier.partition(key("orders", 0));
    upload_all(&part, &segs, 1).await;
    assert_eq!(part.log_start_offset().await.expect("start"), Some(0));
    assert_eq!(
        part.last_uploaded_offset().await.expect("last"),
        Some(segs[2].last_offset)
    );
    assert_eq!(
        part.tier_bytes().await.expect("bytes"),
        segs.iter().map(|s| s.log.len() as u64).sum::<u64>()
    );
    // Every object is byte-identical to its file, and its CRC is recorded.
    let manifest = part.manifest().await.expect("manifest");
    assert_eq!(manifest.segments.len(), 3);
    for (meta, seg) in manifest.segments.iter().zip(&segs) {
        let log = meta.object(ObjectKind::Log).expect("log object");
        let name = format!("{}/{}", part.dir(), log.name);
        let body = tier.get(&name).await.expect("get log");
        assert!(body == seg.log, "log object differs");
        assert_eq!(crc32c::crc32c(&body), log.crc32c);
        let upload = seg.upload(1);
        for kind in [
            ObjectKind::Index,
            ObjectKind::Timeindex,
            ObjectKind::Snapshot,
            ObjectKind::Epochs,
        ] {
            let o = meta.object(kind).expect("object");
            let ext = kind.extension();
            let expected = match kind {
                ObjectKind::Snapshot => {
                    upload.producer_snapshot.clone().expect("snapshot").to_vec()
                }
                ObjectKind::Epochs => upload.leader_epochs.clone().expect("epochs").to_vec(),
                _ => std::fs::read(seg.dir.join(format!("{:020}.{ext}", seg.base_offset)))
                    .expect("file"),
            };
            let body = tier
                .get(&format!("{}/{}", part.dir(), o.name))
                .await
                .expect("get");
            assert_eq!(&body[..], &expected[..], "{ext}");
            assert_eq!(crc32c::crc32c(&body), o.crc32c);
        }
        assert!(meta.object(ObjectKind::Txnindex).is_none());
        assert!(log.name.starts_with(&format!("{:020}-", seg.base_offset)));
    }
    // The newest segment's producer snapshot comes back CRC-checked.
    let (last, snapshot) = part
        .last_segment_object(ObjectKind::Snapshot)
        .await
        .expect("last snapshot")
        .expect("a snapshot");
    assert_eq!(last.base_offset, segs[2].base_offset);
    assert_eq!(Some(snapshot), segs[2].upload(1).producer_snapshot);
    check_reads(&part, &segs).await;
    let replayed = replay(&part, 0, 200_000).await.expect("replay");
    assert!(replayed == all_logs(&segs), "replay differs");
    // A repeated upload is recognised.
    assert_eq!(
        part.upload_segment(&segs[1].upload(1))
            .await
            .expect("again"),
        UploadOutcome::AlreadyCovered
    );
    // Out of range.
    let end = segs[2].last_offset + 1;
    assert!(matches!(
        part.read(end, 100).await,
        Err(TierError::OffsetOutOfRange { .. })
    ));
}

#[tokio::test]
async fn upload_and_read_back_on_memory() {
    round_trip(TierStore::from_url_with("memory://", small_options()).expect("tier")).await;
}

#[tokio::test]
async fn upload_and_read_back_on_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().join("tier").display());
    round_trip(TierStore::from_url_with(&url, small_options()).expect("tier")).await;
}

/// A put cut short by a crash leaves the local store's staging file
/// (`name#N`), which the store neither lists nor deletes: orphan collection
/// removes it by hand once it is older than the grace period.
#[tokio::test]
async fn orphan_collection_removes_staging_files_a_crash_left_on_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let root = dir.path().join("tier");
    let url = format!("file://{}", root.display());
    let tier = TierStore::from_url_with(&url, small_options()).expect("tier");
    let part = tier.partition(key("orders", 0));
    upload_all(&part, &segs[..1], 1).await;
    let part_dir = root.join(part.dir());
    let old = part_dir.join("00000000000000000100-cut.log#1");
    let young = part_dir.join("00000000000000000100-cut.crcs#2");
    let not_staging = part_dir.join("notes#draft");
    for p in [&old, &young, &not_staging] {
        std::fs::write(p, b"partial").expect("write");
    }
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .and_then(|f| f.set_modified(two_hours_ago))
        .expect("age the staging file");

    let r = part
        .collect_orphans(Duration::from_secs(3600), now_ms())
        .await
        .expect("gc");
    assert_eq!(r.deleted, 1, "{r:?}");
    assert!(!old.exists(), "old staging file removed");
    assert!(
        young.exists(),
        "young staging file kept (an upload may own it)"
    );
    // A name the store lists as an object is left to the listing's rules.
    assert!(not_staging.exists());
    check_reads(&part, &segs[..1]).await;
}

#[tokio::test]
async fn upload_and_read_back_with_disk_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = TierOptions {
        disk_cache_dir: Some(dir.path().join("cache")),
        disk_cache_bytes: 1 << 20,
        memory_cache_bytes: 256 << 10,
        ..small_options()
    };
    round_trip(TierStore::from_url_with("memory://", options).expect("tier")).await;
}

#[tokio::test]
async fn crash_between_objects_and_manifest_leaves_only_orphans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let faulty = Arc::new(FaultyStore::new(
        mem.clone(),
        FaultConfig {
            fail_puts_containing: Some("manifest.json".into()),
            ..FaultConfig::default()
        },
    ));
    faulty.set_enabled(false);
    let tier = TierStore::from_object_store(
        faulty.clone(),
        "pfx",
        ConditionalPut::Native,
        small_options(),
    )
    .expect("tier");
    let part = tier.partition(key("orders", 0));
    upload_all(&part, &segs[..1], 1).await;
    // The "crash": objects of segments 2 and 3 are written, the manifest is not.
    faulty.set_enabled(true);
    for s in &segs[1..] {
        let e = part
            .upload_segment(&s.upload(1))
            .await
            .expect_err("manifest write fails");
        assert!(e.is_retriable(), "{e}");
    }
    faulty.set_enabled(false);
    // A fresh handle (a restarted broker) sees only the complete segment.
    let restarted =
        TierStore::from_object_store(mem.clone(), "pfx", ConditionalPut::Native, small_options())
            .expect("tier");
    let part2 = restarted.partition(key("orders", 0));
    let m = part2.manifest().await.expect("manifest");
    assert_eq!(m.segments.len(), 1);
    assert_eq!(m.last_offset(), Some(segs[0].last_offset));
    let listed = list_names(&mem, &part2.dir()).await;
    assert!(listed.len() > 1 + 6, "orphans exist: {listed:?}");
    // Named objects all exist.
    for o in m.segments[0].objects.values() {
        assert!(listed.contains(&o.name), "{}", o.name);
    }
    // Young orphans are kept; after the grace period they go.
    let grace = Duration::from_secs(3600);
    let r = part2.collect_orphans(grace, now_ms()).await.expect("gc");
    assert_eq!(r.deleted, 0);
    assert!(r.kept_young > 0);
    let r = part2
        .collect_orphans(grace, now_ms() + 2 * 3600 * 1000)
        .await
        .expect("gc");
    assert!(r.deleted > 0);
    let left = list_names(&mem, &part2.dir()).await;
    assert_eq!(left.len(), 1 + m.segments[0].objects.len(), "{left:?}");
    check_reads(&part2, &segs[..1]).await;
    // The failed segments upload fine afterwards.
    upload_all(&part2, &segs[1..], 1).await;
    check_reads(&part2, &segs).await;
}

async fn list_names(store: &Arc<dyn ObjectStore>, dir: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let prefix = object_store::path::Path::from(dir);
    let metas: Vec<_> = store.list(Some(&prefix)).try_collect().await.expect("list");
    metas
        .into_iter()
        .filter_map(|m| m.location.filename().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn deposed_leader_cannot_write_the_manifest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let tier_a =
        TierStore::from_object_store(mem.clone(), "", ConditionalPut::Native, small_options())
            .expect("a");
    let broker_a = tier_a.partition(key("t", 0));
    let broker_b =
        TierStore::from_object_store(mem.clone(), "", ConditionalPut::Native, small_options())
            .expect("b")
            .partition(key("t", 0));
    upload_all(&broker_a, &segs[..1], 1).await;
    // Leadership moves to B at epoch 2.
    upload_all(&broker_b, &segs[1..2], 2).await;
    let before = list_names(&mem, &broker_a.dir()).await.len();
    // A still believes it leads (its cached manifest is at epoch 1).
    let e = broker_a
        .upload_segment(&segs[2].upload(1))
        .await
        .expect_err("fenced");
    assert!(
        matches!(
            e,
            TierError::Fenced {
                manifest_epoch: 2,
                writer_epoch: 1,
                ..
            }
        ),
        "{e}"
    );
    assert!(!e.is_retriable());
    assert!(matches!(
        broker_a.delete_before(100, 1).await,
        Err(TierError::Fenced { .. })
    ));
    let m = broker_b.refresh().await.expect("manifest");
    assert_eq!(m.segments.len(), 2);
    assert_eq!(m.leader_epoch, 2);
    assert_eq!(m.log_start_offset, 0);
    // The refused upload's objects were removed.
    assert_eq!(list_names(&mem, &broker_a.dir()).await.len(), before);
    assert!(
        tier_a
            .metrics()
            .fenced_writes
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    // The new leader goes on.
    upload_all(&broker_b, &segs[2..], 2).await;
    check_reads(&broker_a, &segs).await;
}

#[tokio::test]
async fn a_taken_over_manifest_refuses_its_old_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let tier_a =
        TierStore::from_object_store(mem.clone(), "", ConditionalPut::Native, small_options())
            .expect("a");
    // The topic lives under the key's cluster, which writes it.
    let a = tier_a.partition(key("t", 0));
    let tier_b =
        TierStore::from_object_store(mem.clone(), "", ConditionalPut::Native, small_options())
            .expect("b");
    let b = tier_b.partition_as(key("t", 0), "restorer");
    upload_all(&a, &segs[..1], 1).await;
    // Not a writer yet: B's write is refused, nothing of its upload stays.
    let before = list_names(&mem, &a.dir()).await;
    let e = b
        .upload_segment(&segs[1].upload(1))
        .await
        .expect_err("not owner");
    assert!(matches!(e, TierError::NotOwner { .. }), "{e}");
    assert!(!e.is_retriable() && e.is_not_owner());
    assert_eq!(list_names(&mem, &a.dir()).await, before);
    // A wrote just now: a takeover with a quiet time is refused.
    let now = chrono_now_ms();
    let e = b
        .take_over(Some(Duration::from_secs(3600)), now)
        .await
        .expect_err("owner active");
    assert!(matches!(e, TierError::OwnerActive { .. }), "{e}");
    // After the quiet time (or forced) it succeeds, once.
    assert!(b
        .take_over(Some(Duration::from_secs(3600)), now + 3_700_000)
        .await
        .expect("take over"));
    assert!(!b.take_over(None, now).await.expect("already owner"));
    let m = b.refresh().await.expect("manifest");
    assert_eq!(m.owner(), "restorer");
    assert_eq!(m.cluster_id, "test-cluster");
    // Version-1 readers see an ordinary manifest; the old owner only reads.
    upload_all(&b, &segs[1..2], 1).await;
    a.refresh().await.expect("a reads");
    assert!(matches!(
        a.upload_segment(&segs[2].upload(1)).await,
        Err(TierError::NotOwner { .. })
    ));
    assert!(matches!(
        a.check_owner().await,
        Err(TierError::NotOwner { .. })
    ));
    assert!(matches!(
        a.delete_before(100, 1).await,
        Err(TierError::NotOwner { .. })
    ));
    assert!(matches!(
        a.collect_orphans(Duration::ZERO, now + 3_700_000).await,
        Err(TierError::NotOwner { .. })
    ));
    assert!(matches!(
        a.delete_partition().await,
        Err(TierError::NotOwner { .. })
    ));
    assert!(
        tier_a
            .metrics()
            .not_owner_writes
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 4
    );
    upload_all(&b, &segs[2..], 1).await;
    check_reads(&a, &segs).await;
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

#[tokio::test]
async fn concurrent_writers_of_one_epoch_never_lose_a_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let a = TierStore::from_object_store(mem.clone(), "", ConditionalPut::Native, small_options())
        .expect("a")
        .partition(key("t", 0));
    let b = TierStore::from_object_store(mem.clone(), "", ConditionalPut::Native, small_options())
        .expect("b")
        .partition(key("t", 0));
    a.manifest().await.expect("load a");
    b.manifest().await.expect("load b");
    upload_all(&a, &segs[..1], 3).await;
    // b's cached manifest is stale: its conditional PUT loses and retries.
    upload_all(&b, &segs[1..2], 3).await;
    let m = a.refresh().await.expect("manifest");
    assert_eq!(m.segments.len(), 2);
    assert!(b.key().topic == "t");
}

#[tokio::test]
async fn retention_removes_expired_segments_manifest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let faulty = Arc::new(FaultyStore::new(
        mem.clone(),
        FaultConfig {
            delete_error: 1.0,
            ..FaultConfig::default()
        },
    ));
    faulty.set_enabled(false);
    let tier =
        TierStore::from_object_store(faulty.clone(), "", ConditionalPut::Native, small_options())
            .expect("tier");
    let part = tier.partition(key("t", 0));
    upload_all(&part, &segs, 1).await;
    // Max timestamps: segment a 1_000_199, b 2_001_199, c 3_005_599.
    let policy = RetentionPolicy {
        retention_ms: 1_000,
        retention_bytes: -1,
        local_only_bytes: 0,
    };
    let none = part
        .apply_retention(policy, 1_000_000, 1)
        .await
        .expect("nothing expires");
    assert_eq!(none.segments_removed, 0);
    // Deletes fail: the manifest moves on anyway, the objects become orphans.
    faulty.set_enabled(true);
    let out = part
        .apply_retention(policy, 1_500_000, 1)
        .await
        .expect("retention");
    faulty.set_enabled(false);
    assert_eq!(out.segments_removed, 1);
    assert_eq!(out.log_start_offset, Some(segs[1].base_offset));
    assert!(out.objects_left > 0);
    assert_eq!(
        part.log_start_offset().await.expect("start"),
        Some(segs[1].base_offset)
    );
    assert!(matches!(
        part.read(0, 100).await,
        Err(TierError::OffsetOutOfRange { .. })
    ));
    check_reads(&part, &segs[1..]).await;
    let r = part
        .collect_orphans(Duration::ZERO, now_ms() + 1)
        .await
        .expect("gc");
    assert_eq!(r.deleted, out.objects_left);
    // Size-based: keep at least the last segment's size.
    let policy = RetentionPolicy {
        retention_ms: -1,
        retention_bytes: segs[2].log.len() as i64,
        local_only_bytes: 0,
    };
    let out = part.apply_retention(policy, 0, 1).await.expect("retention");
    assert_eq!(out.segments_removed, 1);
    assert_eq!(out.objects_left, 0);
    assert_eq!(
        part.log_start_offset().await.expect("start"),
        Some(segs[2].base_offset)
    );
    // DeleteRecords inside a segment: the start moves, the segment stays.
    let mid = segs[2].batches[10].0 + 1;
    let out = part.delete_before(mid, 1).await.expect("delete records");
    assert_eq!(out.segments_removed, 0);
    assert_eq!(out.log_start_offset, Some(mid));
    assert!(matches!(
        part.read(mid - 1, 100).await,
        Err(TierError::OffsetOutOfRange { .. })
    ));
    assert_eq!(
        part.read(mid, 1).await.expect("read"),
        segs[2].expected_read(mid, 1)
    );
    // A restarted broker sees the same start.
    let fresh = TierStore::from_object_store(mem, "", ConditionalPut::Native, small_options())
        .expect("tier")
        .partition(key("t", 0));
    assert_eq!(fresh.log_start_offset().await.expect("start"), Some(mid));
}

#[tokio::test]
async fn restore_from_the_bucket_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let url = format!("file://{}", dir.path().join("tier").display());
    {
        let tier = TierStore::from_url_with(&url, small_options()).expect("tier");
        for p in 0..3 {
            upload_all(&tier.partition(key("orders", p)), &segs[..2], 1).await;
        }
        upload_all(
            &tier.partition(PartitionKey::new(CLUSTER, "pay-ments", [7; 16], 0)),
            &segs[..1],
            1,
        )
        .await;
        upload_all(
            &tier.partition(PartitionKey::new("other-cluster", "x", [7; 16], 0)),
            &segs[..1],
            1,
        )
        .await;
    }
    // Delete the local segment files: only the bucket is left.
    drop(
        segs.iter()
            .map(|s| std::fs::remove_dir_all(&s.dir))
            .collect::<Vec<_>>(),
    );
    let tier = TierStore::from_url_with(&url, small_options()).expect("tier");
    let topics = tier.list_remote_topics(CLUSTER).await.expect("list");
    assert_eq!(topics.len(), 2, "{topics:?}");
    assert_eq!(topics[0].topic, "orders");
    assert_eq!(topics[0].topic_id, TOPIC_ID);
    assert_eq!(topics[0].partitions, vec![0, 1, 2]);
    assert_eq!(topics[1].topic, "pay-ments");
    assert_eq!(topics[1].topic_id, [7; 16]);
    let part = tier.partition(key("orders", 2));
    assert_eq!(part.log_start_offset().await.expect("start"), Some(0));
    check_reads(&part, &segs[..2]).await;
    let replayed = replay(&part, 0, 1 << 20).await.expect("replay");
    assert!(replayed == all_logs(&segs[..2]));
}

use tiering::PartitionKey;

#[tokio::test]
async fn offsets_for_timestamps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let tier = TierStore::from_url_with("memory://", small_options()).expect("tier");
    let part = tier.partition(key("t", 0));
    assert_eq!(part.offset_for_timestamp(0).await.expect("empty"), None);
    upload_all(&part, &segs, 1).await;
    // Before everything: the first batch.
    let first = part
        .offset_for_timestamp(0)
        .await
        .expect("ts")
        .expect("some");
    assert_eq!(first.offset, 0);
    // Each batch of segment b: records i have timestamp ts0 + i.
    for &(base, _, _) in segs[1].batches.iter().step_by(17) {
        let ts = 2_000_000 + (base - segs[1].base_offset);
        let found = part
            .offset_for_timestamp(ts)
            .await
            .expect("ts")
            .expect("some");
        assert_eq!(found.offset, base, "ts {ts}");
        assert_eq!(found.timestamp, ts + 3);
        // A timestamp inside the batch finds the same batch.
        let found = part
            .offset_for_timestamp(ts + 2)
            .await
            .expect("ts")
            .expect("some");
        assert_eq!(found.offset, base);
    }
    // Between segments a and b: b's first batch.
    let gap = part
        .offset_for_timestamp(1_500_000)
        .await
        .expect("ts")
        .expect("some");
    assert_eq!(gap.offset, segs[1].base_offset);
    assert_eq!(part.offset_for_timestamp(i64::MAX).await.expect("ts"), None);
}

#[tokio::test]
async fn cache_stays_within_its_byte_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let bound = 256u64 << 10;
    let disk_bound = 512u64 << 10;
    let cache_dir = dir.path().join("cache");
    let options = TierOptions {
        memory_cache_bytes: bound,
        disk_cache_dir: Some(cache_dir.clone()),
        disk_cache_bytes: disk_bound,
        ..small_options()
    };
    let tier = TierStore::from_url_with("memory://", options).expect("tier");
    let part = tier.partition(key("t", 0));
    upload_all(&part, &segs, 1).await;
    let total: u64 = segs.iter().map(|s| s.log.len() as u64).sum();
    assert!(total > 10 * bound);
    let replayed = replay(&part, 0, 100_000).await.expect("replay");
    assert!(replayed == all_logs(&segs));
    let mem = tier.cache_memory_bytes().await;
    assert!(mem > 0 && mem <= bound, "memory cache {mem} > {bound}");
    // The disk cache fills in the background (ten times its bound is
    // written to it): it reaches half its bound and never goes over, and the
    // files of evicted entries are removed as its maintenance runs (each
    // `cache_disk_bytes` runs it).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let disk = tier.cache_disk_bytes().await;
        assert!(disk <= disk_bound, "disk cache {disk} > {disk_bound}");
        let on_disk: u64 = std::fs::read_dir(&cache_dir)
            .expect("cache dir")
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        if disk >= disk_bound / 2 && on_disk <= disk_bound + (128 << 10) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "disk cache {disk}, disk files {on_disk}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = tier.metrics();
    assert!(
        m.prefetches.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "sequential reads prefetch"
    );
    assert!(m.cache_hits.load(std::sync::atomic::Ordering::Relaxed) > 0);
}

#[tokio::test]
async fn a_sequential_reader_finds_the_next_segment_prefetched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    // One chunk a segment: nothing ahead within a segment, so whatever is
    // prefetched is the next segment's.
    let options = TierOptions {
        chunk_size: 16 << 20,
        prefetch_chunks: 1,
        memory_cache_bytes: 64 << 20,
        ..small_options()
    };
    let tier = TierStore::from_url_with("memory://", options).expect("tier");
    let part = tier.partition(key("t", 0));
    upload_all(&part, &segs, 1).await;
    let m = tier.metrics();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    // A read of the first segment, then one from the start of the second
    // (sequential): the third's chunk is fetched ahead.
    part.read(0, u64::MAX).await.expect("read a");
    let b = part
        .read(segs[1].base_offset, u64::MAX)
        .await
        .expect("read b");
    assert_eq!(&b[..], &segs[1].log[..]);
    // Every segment's chunk in the cache once the prefetch is done.
    let all = all_logs(&segs).len() as u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while tier.cache_memory_bytes().await < all {
        assert!(
            std::time::Instant::now() < deadline,
            "no prefetch of the next segment: {} prefetches, {} of {all} bytes cached",
            load(&m.prefetches),
            tier.cache_memory_bytes().await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(load(&m.prefetches), 1);
    let gets = load(&m.get_requests);
    let c = part
        .read(segs[2].base_offset, u64::MAX)
        .await
        .expect("read c");
    assert_eq!(&c[..], &segs[2].log[..]);
    assert_eq!(
        load(&m.get_requests),
        gets,
        "the third segment came from the cache"
    );
}

/// Replays the whole tier from `from` with `read_pieces`: the bytes (file
/// ranges read back) and how many of them were file ranges.
async fn replay_pieces(part: &tiering::RemotePartition, max_bytes: u64) -> (Vec<u8>, u64) {
    let last = part
        .last_uploaded_offset()
        .await
        .expect("last")
        .expect("some");
    let (mut out, mut in_files, mut offset) = (Vec::new(), 0, 0);
    while offset <= last {
        let read = part
            .read_pieces(offset, max_bytes, true)
            .await
            .expect("read");
        let start = out.len();
        for p in &read.pieces {
            match p {
                tiering::Piece::Mem(b) => out.extend_from_slice(b),
                tiering::Piece::File(f) => {
                    in_files += f.len;
                    out.extend_from_slice(&f.read().expect("pread"));
                }
            }
        }
        assert_eq!((out.len() - start) as u64, read.len);
        offset = last_offset_in(&out[start..]) + 1;
    }
    (out, in_files)
}

/// A memory tier with a small memory cache over a disk cache in
/// `cache_dir` and no prefetch, holding `segs` in partition `t`-0.
async fn uploaded_with_disk_cache(
    cache_dir: &std::path::Path,
    segs: &[tiering::testkit::TestSegment],
) -> (TierStore, tiering::RemotePartition) {
    let options = TierOptions {
        memory_cache_bytes: 128 << 10,
        disk_cache_dir: Some(cache_dir.to_path_buf()),
        disk_cache_bytes: 64 << 20,
        prefetch_chunks: 0,
        ..small_options()
    };
    let tier = TierStore::from_url_with("memory://", options).expect("tier");
    let part = tier.partition(key("t", 0));
    upload_all(&part, segs, 1).await;
    (tier, part)
}

/// Chunks in the disk cache come back as file ranges (for sendfile), not
/// through memory; a cache file of the wrong length is never a range: the chunk comes
/// from the store again.
#[tokio::test]
async fn disk_cache_chunks_come_back_as_file_ranges() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let cache_dir = dir.path().join("cache");
    let (tier, part) = uploaded_with_disk_cache(&cache_dir, &segs).await;
    let total: u64 = segs.iter().map(|s| s.log.len() as u64).sum();

    // First pass: from the store, into memory and (in the background) disk.
    let (first, _) = replay_pieces(&part, 100_000).await;
    assert!(first == all_logs(&segs), "first replay differs");
    let downloaded = tier.metrics().bytes_downloaded.load(Relaxed);
    assert!(downloaded >= total);
    // Wait (bounded) until the chunks are in the disk cache.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while tier.cache_disk_bytes().await < total {
        assert!(
            std::time::Instant::now() < deadline,
            "disk cache not filled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Second pass: the memory cache holds a sliver, so most comes from
    // disk-cache files as ranges, and nothing is downloaded again.
    let (second, in_files) = replay_pieces(&part, 100_000).await;
    assert!(second == all_logs(&segs), "second replay differs");
    assert!(
        in_files >= total / 2,
        "{in_files} of {total} bytes came as file ranges"
    );
    assert_eq!(tier.metrics().bytes_downloaded.load(Relaxed), downloaded);
    // The plain read gives the same bytes.
    let replayed = replay(&part, 0, 100_000).await.expect("replay");
    assert!(replayed == all_logs(&segs));

    // Every cache file loses its last byte: none is served as a range, and
    // the data comes from the store again, intact.
    for e in std::fs::read_dir(&cache_dir).expect("cache dir").flatten() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(e.path())
            .expect("open");
        let len = f.metadata().expect("len").len();
        f.set_len(len - 1).expect("truncate");
    }
    let (third, in_files) = replay_pieces(&part, 100_000).await;
    assert!(third == all_logs(&segs), "replay after damage differs");
    assert_eq!(in_files, 0, "a damaged cache file was served");
    assert!(tier.metrics().bytes_downloaded.load(Relaxed) > downloaded);
}

#[tokio::test]
async fn concurrent_misses_share_one_get() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let options = TierOptions {
        prefetch_chunks: 0,
        ..small_options()
    };
    let tier = TierStore::from_url_with("memory://", options).expect("tier");
    let part = tier.partition(key("t", 0));
    upload_all(&part, &segs, 1).await;
    let off = segs[2].batches[3].0;
    // Warm the index and crcs objects.
    part.read(segs[2].base_offset, 1).await.expect("warm");
    let before = tier
        .metrics()
        .get_requests
        .load(std::sync::atomic::Ordering::Relaxed);
    let reads = (0..16).map(|_| part.read(off, 1));
    let results = futures::future::join_all(reads).await;
    for r in results {
        assert_eq!(r.expect("read"), segs[2].expected_read(off, 1));
    }
    let after = tier
        .metrics()
        .get_requests
        .load(std::sync::atomic::Ordering::Relaxed);
    // Chunk 0 is warm; the batch sits in one chunk: at most one GET.
    assert!(after - before <= 1, "{} GETs", after - before);
}

#[tokio::test]
async fn corrupt_object_is_an_error_and_a_metric_never_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let tier =
        TierStore::from_object_store(mem.clone(), "", ConditionalPut::Native, small_options())
            .expect("tier");
    let part = tier.partition(key("t", 0));
    upload_all(&part, &segs, 1).await;
    // Damage one byte of segment b's log object in the store itself.
    let m = part.manifest().await.expect("manifest");
    let name = &m.segments[1].object(ObjectKind::Log).expect("log").name;
    let path = object_store::path::Path::from(format!("{}/{name}", part.dir()));
    let mut body = mem
        .get(&path)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes")
        .to_vec();
    let (victim, pos, _) = segs[1].batches[5];
    body[pos as usize + 70] ^= 0x40;
    mem.put(&path, body.into()).await.expect("put");
    let e = part.read(victim, 1).await.expect_err("corrupt");
    assert!(matches!(e, TierError::Corrupt { .. }), "{e}");
    assert!(
        tier.metrics()
            .crc_mismatches
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    // Other chunks still read.
    let (far, _, _) = segs[1].batches[250];
    assert_eq!(
        part.read(far, 1).await.expect("read"),
        segs[1].expected_read(far, 1)
    );
}

#[tokio::test]
async fn pipeline_uploads_with_backpressure_and_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let tier = TierStore::from_url_with("memory://", small_options()).expect("tier");
    let cancel = CancellationToken::new();
    let up = Uploader::start(
        &tier,
        UploaderConfig {
            max_pending: 2,
            ..UploaderConfig::default()
        },
        cancel.child_token(),
    );
    let p0 = tier.partition(key("t", 0));
    let p1 = tier.partition(key("t", 1));
    let t1 = up.try_enqueue(&p0, segs[0].upload(1)).expect("queued");
    assert!(matches!(
        up.try_enqueue(&p0, segs[0].upload(1)),
        Err(TierError::AlreadyQueued { .. })
    ));
    let t2 = up.try_enqueue(&p0, segs[1].upload(1)).expect("queued");
    // Full: refused, and not queued.
    let full = up.try_enqueue(&p1, segs[0].upload(1));
    assert!(matches!(full, Err(TierError::QueueFull { .. })), "{full:?}");
    assert_eq!(up.pending(), 2);
    // `enqueue` waits for room instead.
    let t3 = up
        .enqueue(&p1, segs[0].upload(1))
        .await
        .expect("queued after room");
    let t4 = up
        .enqueue(&p0, segs[2].upload(1))
        .await
        .expect("queued after room");
    for t in [t1, t2, t3, t4] {
        assert!(matches!(
            t.wait().await.expect("uploaded"),
            UploadOutcome::Uploaded(_)
        ));
    }
    check_reads(&p0, &segs).await;
    check_reads(&p1, &segs[..1]).await;
    up.shutdown(Duration::from_secs(5)).await;
    assert!(matches!(
        up.try_enqueue(&p1, segs[1].upload(1)),
        Err(TierError::ShutDown)
    ));
    let m = tier.metrics();
    assert_eq!(
        m.segments_uploaded
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    assert_eq!(
        m.uploads_pending.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

/// On paused time: the pacing is measured on the runtime's clock, which
/// advances only by the limiter's waits.
#[tokio::test(start_paused = true)]
async fn bandwidth_limit_paces_uploads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let tier = TierStore::from_url_with("memory://", small_options()).expect("tier");
    let rate = 4u64 << 20;
    let up = Uploader::start(
        &tier,
        UploaderConfig {
            bytes_per_sec: rate,
            ..UploaderConfig::default()
        },
        CancellationToken::new(),
    );
    let p = tier.partition(key("t", 0));
    let started = tokio::time::Instant::now();
    let total: u64 = segs.iter().map(|s| s.log.len() as u64).sum();
    let tickets: Vec<_> = segs
        .iter()
        .map(|s| up.try_enqueue(&p, s.upload(1)).expect("queued"))
        .collect();
    for t in tickets {
        t.wait().await.expect("uploaded");
    }
    // One second of burst is free; the rest is paced.
    let min = Duration::from_secs_f64((total as f64 / rate as f64 - 1.0).max(0.0) * 0.9);
    assert!(
        started.elapsed() >= min,
        "{:?} < {min:?}",
        started.elapsed()
    );
    up.shutdown(Duration::from_secs(1)).await;
}

/// A segment whose batches were not all checked on the bytes its chunk
/// CRCs came from (an upload by an older writer) is never sent from the
/// disk cache unread: its reads go through memory, where every batch's
/// CRC-32C is checked.
#[tokio::test]
async fn unchecked_segments_are_never_sent_as_file_ranges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let (tier, part) = uploaded_with_disk_cache(&dir.path().join("cache"), &segs).await;
    let mut m = (*part.manifest().await.expect("manifest")).clone();
    for s in &mut m.segments {
        assert!(s.batches_checked);
        s.batches_checked = false;
    }
    tier.put(
        &format!("{}/manifest.json", part.dir()),
        bytes::Bytes::from(m.encode()),
    )
    .await
    .expect("put");
    let part = tier.partition(key("t", 0));
    let total: u64 = segs.iter().map(|s| s.log.len() as u64).sum();
    let (first, _) = replay_pieces(&part, 100_000).await;
    assert!(first == all_logs(&segs));
    // Wait (bounded) until the chunks are in the disk cache.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while tier.cache_disk_bytes().await < total {
        assert!(
            std::time::Instant::now() < deadline,
            "disk cache not filled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (second, in_files) = replay_pieces(&part, 100_000).await;
    assert!(second == all_logs(&segs));
    assert_eq!(in_files, 0, "unchecked batches were sent unread");
}

/// A scrub reads every object back: a flipped byte in one segment's log,
/// a missing index of another, and a truncated object are found, each
/// named with its segment's offsets; a re-upload from the local files puts
/// new objects in place of the damaged segment's, and the next scrub is
/// clean.
#[tokio::test]
async fn scrub_finds_damage_and_a_reupload_repairs_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let tier =
        TierStore::from_object_store(mem.clone(), "", ConditionalPut::Native, small_options())
            .expect("tier");
    let part = tier.partition(key("t", 0));
    upload_all(&part, &segs, 1).await;
    let limit = tiering::RateLimiter::unlimited();
    let cancel = CancellationToken::new();
    let clean = part.scrub(&limit, &cancel).await.expect("scrub");
    assert_eq!(clean.segments, 3);
    assert!(clean.problems.is_empty(), "{clean:?}");
    let total: u64 = segs.iter().map(|s| s.log.len() as u64).sum();
    assert!(clean.bytes > total, "every object read: {clean:?}");

    let m = part.manifest().await.expect("manifest");
    let path = |seg: usize, kind: ObjectKind| {
        let name = &m.segments[seg].object(kind).expect("object").name;
        object_store::path::Path::from(format!("{}/{name}", part.dir()))
    };
    let body = |p: &object_store::path::Path| {
        let (mem, p) = (mem.clone(), p.clone());
        async move {
            mem.get(&p)
                .await
                .expect("get")
                .bytes()
                .await
                .expect("bytes")
                .to_vec()
        }
    };
    // A flipped bit in a record of segment b's log.
    let log_b = path(1, ObjectKind::Log);
    let mut b = body(&log_b).await;
    let (_, pos, _) = segs[1].batches[5];
    b[pos as usize + 70] ^= 0x40;
    mem.put(&log_b, b.into()).await.expect("put");
    // Segment a's index gone, segment c's time index cut short.
    mem.delete(&path(0, ObjectKind::Index))
        .await
        .expect("delete");
    let ti_c = path(2, ObjectKind::Timeindex);
    let mut t = body(&ti_c).await;
    t.truncate(t.len() - 1);
    mem.put(&ti_c, t.into()).await.expect("put");

    let found = part.scrub(&limit, &cancel).await.expect("scrub");
    let by_base = |base: i64| {
        found
            .problems
            .iter()
            .find(|p| p.base_offset == base)
            .unwrap_or_else(|| panic!("no problem at {base}: {found:?}"))
            .clone()
    };
    assert_eq!(found.problems.len(), 3, "{found:?}");
    assert!(
        by_base(segs[0].base_offset).problem.contains("missing"),
        "{found:?}"
    );
    let p = by_base(segs[1].base_offset);
    assert!(
        p.object.ends_with(".log") && p.problem.contains("CRC-32C"),
        "{p:?}"
    );
    assert_eq!(p.last_offset, segs[1].last_offset);
    assert!(
        by_base(segs[2].base_offset).problem.contains("bytes"),
        "{found:?}"
    );
    assert!(
        tier.metrics()
            .scrub_problems
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    );

    // The local copies go up again in place of the damaged segments.
    for s in &segs {
        let out = part
            .reupload_segment(&s.upload(1), &cancel, &limit)
            .await
            .expect("re-upload");
        assert!(matches!(out, UploadOutcome::Uploaded(_)), "{out:?}");
    }
    let after = part.scrub(&limit, &cancel).await.expect("scrub");
    assert!(after.problems.is_empty(), "{after:?}");
    let (victim, _, _) = segs[1].batches[5];
    assert_eq!(
        part.read(victim, 1).await.expect("read"),
        segs[1].expected_read(victim, 1)
    );
    // The manifest names the same offsets: nothing appended, nothing lost.
    let m2 = part.refresh().await.expect("manifest");
    let offsets = |m: &tiering::Manifest| {
        m.segments
            .iter()
            .map(|s| (s.base_offset, s.last_offset))
            .collect::<Vec<_>>()
    };
    assert_eq!(offsets(&m), offsets(&m2));
    assert_ne!(m.segments[1].id, m2.segments[1].id);
}

/// The scrub on a `file://` tier, with the damage made in the files:
/// a flipped byte, a truncated object and a deleted one are each found.
#[tokio::test]
async fn scrub_finds_damage_in_a_file_tier() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(&dir.path().join("local"));
    let root = dir.path().join("tier");
    let url = format!("file://{}", root.display());
    let tier = TierStore::from_url_with(&url, small_options()).expect("tier");
    let part = tier.partition(key("t", 0));
    upload_all(&part, &segs, 1).await;
    let limit = tiering::RateLimiter::unlimited();
    let cancel = CancellationToken::new();
    let m = part.manifest().await.expect("manifest");
    let file = |seg: usize, kind: ObjectKind| {
        root.join(part.dir())
            .join(&m.segments[seg].object(kind).expect("object").name)
    };
    let mut log = std::fs::read(file(0, ObjectKind::Log)).expect("log");
    let (_, pos, _) = segs[0].batches[2];
    log[pos as usize + 70] ^= 0x01;
    std::fs::write(file(0, ObjectKind::Log), log).expect("flip");
    let crcs = std::fs::read(file(1, ObjectKind::Crcs)).expect("crcs");
    std::fs::write(file(1, ObjectKind::Crcs), &crcs[..crcs.len() - 2]).expect("truncate");
    std::fs::remove_file(file(2, ObjectKind::Log)).expect("delete");
    let found = part.scrub(&limit, &cancel).await.expect("scrub");
    let mut got: Vec<(i64, String)> = found
        .problems
        .iter()
        .map(|p| (p.base_offset, p.object.clone()))
        .collect();
    got.sort();
    let name = |seg: usize, kind: ObjectKind| {
        (
            segs[seg].base_offset,
            m.segments[seg].object(kind).expect("object").name.clone(),
        )
    };
    assert_eq!(
        got,
        vec![
            name(0, ObjectKind::Log),
            name(1, ObjectKind::Crcs),
            name(2, ObjectKind::Log)
        ],
        "{found:?}"
    );
    assert!(found.problems.iter().any(|p| p.problem.contains("missing")));
}

/// Tier compaction's swap: a run of segments replaced by fewer bytes in one
/// manifest write; reads skip what was cleaned away (also a segment with
/// no batch left past an offset); the replaced objects outlive their
/// retirement for the grace period however old they are, then go.
#[tokio::test]
async fn a_compacted_run_replaces_segments_and_its_objects_retire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let root = dir.path().join("tier");
    let url = format!("file://{}", root.display());
    let tier = TierStore::from_url_with(&url, small_options()).expect("tier");
    let part = tier.partition(key("orders", 0));
    upload_all(&part, &segs, 1).await;
    let before = part.manifest().await.expect("manifest");
    let ids: Vec<String> = before.segments[..2].iter().map(|s| s.id.clone()).collect();
    let old_names: Vec<String> = before.segments[..2]
        .iter()
        .flat_map(|s| s.objects.values().map(|o| o.name.clone()))
        .collect();
    // Every object is three hours old (a run uploaded long ago).
    let three_hours_ago = std::time::SystemTime::now() - Duration::from_secs(3 * 3600);
    for entry in std::fs::read_dir(root.join(part.dir())).expect("dir") {
        let path = entry.expect("entry").path();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(three_hours_ago))
            .expect("age");
    }
    // The "compacted" run keeps one batch from the middle of the second
    // segment: offsets 0 .. segs[1].last_offset, mostly gaps.
    let (kept_base, _, _) = segs[1].batches[10];
    let kept = tiering::testkit::TestSegment::write(
        &dir.path().join("cleaned"),
        kept_base,
        1,
        4,
        300,
        2_000_000,
    )
    .expect("cleaned segment");
    let mut upload = kept.upload(1);
    upload.base_offset = segs[0].base_offset;
    upload.last_offset = segs[1].last_offset;
    let grace = Duration::from_secs(3600);
    let cancel = CancellationToken::new();
    let limiter = tiering::RateLimiter::unlimited();
    let uploads = [(upload, 1)];
    let swap = || {
        part.replace_run(
            &uploads,
            &ids,
            segs[1].last_offset + 1,
            1,
            grace,
            &cancel,
            &limiter,
        )
    };
    let after = swap().await.expect("swap").expect("run present");
    assert_eq!(after.segments.len(), 2);
    assert_eq!(after.first_dirty_offset(), segs[1].last_offset + 1);
    assert!(after.total_bytes() < before.total_bytes());
    assert_eq!(after.retired.len(), old_names.len());
    // A second swap of the same run finds it gone and leaves no objects.
    let listed = list_names(&tier_store(&root), &part.dir()).await;
    let again = swap().await.expect("second swap");
    assert!(again.is_none());
    assert_eq!(list_names(&tier_store(&root), &part.dir()).await, listed);

    // Reads: offset 0 gets the kept batch; an offset past it in the
    // compacted segment gets the third segment's first batch.
    let first = part.read(0, 1 << 20).await.expect("read 0");
    assert_eq!(first, kept.log);
    let next = part
        .read(kept.last_offset + 1, 1 << 20)
        .await
        .expect("read in the gap");
    assert_eq!(
        next.slice(..segs[2].batches[0].2 as usize),
        segs[2].log.slice(..segs[2].batches[0].2 as usize)
    );
    // A fresh handle reads the same.
    let fresh = TierStore::from_url_with(&url, small_options()).expect("tier");
    let part2 = fresh.partition(key("orders", 0));
    assert_eq!(part2.read(0, 1 << 20).await.expect("read"), kept.log);

    // The retired objects are three hours old, but retired just now: kept.
    let r = part.collect_orphans(grace, now_ms()).await.expect("gc");
    assert_eq!(r.deleted, 0, "{r:?}");
    let names = list_names(&tier_store(&root), &part.dir()).await;
    for n in &old_names {
        assert!(names.contains(n), "{n} kept during the grace period");
    }
    // Once the grace period has passed since retirement, they go.
    let r = part
        .collect_orphans(grace, now_ms() + 2 * 3600 * 1000)
        .await
        .expect("gc");
    assert_eq!(r.deleted, old_names.len(), "{r:?}");
    let names = list_names(&tier_store(&root), &part.dir()).await;
    for n in &old_names {
        assert!(!names.contains(n), "{n} collected");
    }
    assert_eq!(
        replay(&part, 0, 1 << 20).await.expect("replay").len() as u64,
        after.total_bytes()
    );
}

fn tier_store(root: &std::path::Path) -> Arc<dyn ObjectStore> {
    Arc::new(object_store::local::LocalFileSystem::new_with_prefix(root).expect("local store"))
}
