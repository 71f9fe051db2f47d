//! A lost, damaged or wrong manifest, and damaged local segments: the tier
//! is never read as empty, never trimmed or collected while its manifest
//! cannot be read, never serves offsets from the wrong segment, and never
//! uploads a segment whose batches fail their checks. `repair_manifest`
//! rebuilds a lost or damaged manifest from the objects.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};
use tiering::faults::{FaultConfig, FaultyStore};
use tiering::{
    ConditionalPut, ManifestHealth, RetentionPolicy, TierError, TierStore, UploadOutcome,
};

fn manifest_name(part: &tiering::RemotePartition) -> String {
    format!("{}/manifest.json", part.dir())
}

/// Objects under the partition, by a listing of the store itself.
async fn object_count(store: &Arc<dyn ObjectStore>, part: &tiering::RemotePartition) -> usize {
    use futures::TryStreamExt;
    let prefix = object_store::path::Path::from(part.dir());
    let metas: Vec<_> = store.list(Some(&prefix)).try_collect().await.expect("list");
    metas.len()
}

fn memory_tier() -> (Arc<dyn ObjectStore>, TierStore) {
    let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let tier =
        TierStore::from_object_store(mem.clone(), "", ConditionalPut::Native, small_options())
            .expect("tier");
    (mem, tier)
}

#[tokio::test]
async fn missing_manifest_is_never_an_empty_tier_and_repair_rebuilds_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let (mem, tier) = memory_tier();
    let part = tier.partition(key("orders", 0));
    upload_all(&part, &segs[..2], 1).await;
    let before = part.manifest().await.expect("manifest");
    let objects = object_count(&mem, &part).await;
    tier.delete(&manifest_name(&part)).await.expect("delete");

    // A restarted broker with no local copy: the objects say there was a tier.
    let restarted =
        TierStore::from_object_store(mem.clone(), "", ConditionalPut::Native, small_options())
            .expect("tier");
    let p2 = restarted.partition(key("orders", 0));
    let e = p2.manifest().await.expect_err("missing manifest");
    assert!(
        matches!(e, TierError::ManifestMissing { .. }),
        "{e}: the tier must not read as empty"
    );
    assert!(e.to_string().contains("manifest.json"), "{e}");
    assert_eq!(p2.manifest_health(), ManifestHealth::Missing);
    assert_eq!(
        restarted
            .metrics()
            .manifests_missing
            .load(Ordering::Relaxed),
        1
    );
    // No upload, no retention, no orphan collection.
    assert!(p2.upload_segment(&segs[2].upload(1)).await.is_err());
    let policy = RetentionPolicy {
        retention_ms: 1,
        retention_bytes: 1,
        local_only_bytes: 0,
    };
    assert!(p2.apply_retention(policy, now_ms(), 1).await.is_err());
    let later = now_ms() + 10 * 3600 * 1000;
    assert!(p2
        .collect_orphans(Duration::from_millis(1), later)
        .await
        .is_err());
    assert_eq!(object_count(&mem, &p2).await, objects - 1);

    // A dry run says what it would write, and writes nothing.
    let report = p2.repair_manifest(true).await.expect("dry run");
    assert!(!report.written);
    assert_eq!(report.segments.len(), 2, "{report:?}");
    assert!(report.gaps.is_empty(), "{report:?}");
    assert!(p2.manifest().await.is_err());

    let report = p2.repair_manifest(false).await.expect("repair");
    assert!(report.written, "{report:?}");
    assert_eq!(report.log_start_offset, Some(0));
    let after = p2.manifest().await.expect("repaired manifest");
    assert_eq!(p2.manifest_health(), ManifestHealth::Usable);
    assert_eq!(
        restarted
            .metrics()
            .manifests_missing
            .load(Ordering::Relaxed),
        0
    );
    assert_eq!(after.segments.len(), before.segments.len());
    for (a, b) in after.segments.iter().zip(&before.segments) {
        assert_eq!(
            (a.base_offset, a.last_offset, a.size, &a.objects),
            (b.base_offset, b.last_offset, b.size, &b.objects)
        );
        assert!(a.batches_checked && a.chunk_size.is_some());
    }
    check_reads(&p2, &segs[..2]).await;
    // The partition goes on where it stopped.
    upload_all(&p2, &segs[2..], 1).await;
    check_reads(&p2, &segs).await;
    let e = p2.repair_manifest(false).await.expect_err("nothing to do");
    assert!(matches!(e, TierError::NothingToRepair { .. }), "{e}");
}

#[tokio::test]
async fn local_copy_tells_a_vanished_manifest_from_a_never_written_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let copy = dir.path().join("tier-manifest.json");
    let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let faulty = Arc::new(FaultyStore::new(
        mem.clone(),
        FaultConfig {
            fail_puts_containing: Some("manifest.json".into()),
            ..FaultConfig::default()
        },
    ));
    let open = |store: Arc<dyn ObjectStore>| {
        let tier =
            TierStore::from_object_store(store, "pfx", ConditionalPut::Native, small_options())
                .expect("tier");
        let part = tier.partition(key("orders", 0));
        part.keep_local_copy(copy.clone());
        (tier, part)
    };
    // A new partition: its empty manifest is remembered locally.
    faulty.set_enabled(false);
    let (_t, p) = open(faulty.clone());
    assert!(p.manifest().await.expect("empty").segments.is_empty());
    assert!(copy.exists());
    // Its first upload dies before the manifest write: objects, no manifest.
    faulty.set_enabled(true);
    assert!(p.upload_segment(&segs[0].upload(1)).await.is_err());
    faulty.set_enabled(false);
    // Restarted with the local copy: those objects are an interrupted upload's.
    let (_t, p) = open(faulty.clone());
    assert!(p.manifest().await.expect("still empty").segments.is_empty());
    upload_all(&p, &segs[..1], 1).await;
    // Restarted with the local copy after the manifest vanished.
    let path = object_store::path::Path::from(manifest_name(&p));
    mem.delete(&path).await.expect("delete");
    let (_t, p) = open(mem.clone());
    let known = p.last_known_manifest().expect("local copy");
    assert_eq!(known.last_offset(), Some(segs[0].last_offset));
    let e = p.manifest().await.expect_err("vanished");
    assert!(matches!(e, TierError::ManifestMissing { .. }), "{e}");
    assert!(e.to_string().contains("local copy"), "{e}");
}

#[tokio::test]
async fn damaged_manifest_keeps_the_last_known_offsets_and_is_repaired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let copy = dir.path().join("tier-manifest.json");
    let tier = TierStore::from_url_with("memory://", small_options()).expect("tier");
    let part = tier.partition(key("orders", 0));
    part.keep_local_copy(copy.clone());
    upload_all(&part, &segs, 1).await;
    let name = manifest_name(&part);
    for damage in ["flip", "truncate", "version"] {
        let good = tier.get(&name).await.expect("manifest");
        let bad: Bytes = match damage {
            "flip" => {
                let mut b = good.to_vec();
                let at = b.len() / 2;
                b[at] ^= 0x01;
                b.into()
            }
            "truncate" => good.slice(..good.len() / 3),
            _ => {
                // Well formed, with its CRC, but of a version this build does not know.
                let mut m = (*part.manifest().await.expect("manifest")).clone();
                m.version = 99;
                Bytes::from(m.encode())
            }
        };
        tier.put(&name, bad).await.expect("damage");
        // A restarted broker: the local copy keeps the true start.
        let again = tier.partition(key("orders", 0));
        again.keep_local_copy(copy.clone());
        let known = again.last_known_manifest().expect("copy");
        assert_eq!(known.log_start_offset, 0, "{damage}");
        assert_eq!(known.last_offset(), Some(segs[2].last_offset), "{damage}");
        let e = again
            .read(0, 1000)
            .await
            .expect_err("no data from a damaged manifest");
        assert!(e.is_manifest_unusable(), "{damage}: {e}");
        assert_eq!(again.manifest_health(), ManifestHealth::Unreadable);
        let policy = RetentionPolicy {
            retention_ms: 1,
            retention_bytes: 1,
            local_only_bytes: 0,
        };
        assert!(again.apply_retention(policy, now_ms(), 1).await.is_err());
        if damage == "version" {
            // Written by a newer version: not ours to replace.
            let e = again.repair_manifest(false).await.expect_err("newer");
            assert!(
                matches!(e, TierError::UnsupportedManifestVersion { .. }),
                "{e}"
            );
            tier.put(&name, good).await.expect("restore");
            continue;
        }
        let report = again.repair_manifest(false).await.expect("repair");
        assert!(report.written && report.segments.len() == 3, "{report:?}");
        check_reads(&again, &segs).await;
        assert_eq!(again.manifest_health(), ManifestHealth::Usable);
        // The local copy still has its old content, which is fine: the
        // last good manifest it knew. The repaired one replaces it.
        let m = again.manifest().await.expect("manifest");
        assert_eq!(m.last_offset(), Some(segs[2].last_offset));
    }
}

#[tokio::test]
async fn damaged_local_segment_is_refused_and_nothing_after_it_uploads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    // Damage a record of the middle segment (the large one, which uploads
    // in parts, below).
    let (_, pos, len) = segs[1].batches[3];
    let mut log = segs[1].log.to_vec();
    log[(pos + len - 5) as usize] ^= 0x20;
    std::fs::write(segs[1].upload(1).log, &log).expect("damage");
    let (mem, tier) = memory_tier();
    let part = tier.partition(key("orders", 0));
    upload_all(&part, &segs[..1], 1).await;
    let e = part
        .upload_segment(&segs[1].upload(1))
        .await
        .expect_err("damaged segment");
    assert!(matches!(e, TierError::DamagedSegment { .. }), "{e}");
    assert!(!e.is_retriable());
    assert!(e.to_string().contains(&format!("position={pos}")), "{e}");
    assert_eq!(tier.metrics().segments_refused.load(Ordering::Relaxed), 1);
    let (refused, _) = part.refused_segment().expect("refused");
    assert_eq!(refused, segs[1].base_offset);
    // Nothing after it: the tier would have a silent gap.
    assert!(part.upload_segment(&segs[2].upload(1)).await.is_err());
    let m = part.manifest().await.expect("manifest");
    assert_eq!(m.last_offset(), Some(segs[0].last_offset));
    // No object of the refused uploads is left.
    assert_eq!(
        object_count(&mem, &part).await,
        1 + m.segments[0].objects.len()
    );
    // Once the local log no longer holds it, uploads go on.
    part.clear_refused();
    assert!(matches!(
        part.upload_segment(&segs[2].upload(1)).await,
        Ok(UploadOutcome::Uploaded(_))
    ));

    // The same for a segment large enough to upload in parts.
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let (_, pos, _) = segs[2].batches[segs[2].batches.len() - 2];
    let mut log = segs[2].log.to_vec();
    log[(pos + 70) as usize] ^= 0x01;
    std::fs::write(segs[2].upload(1).log, &log).expect("damage");
    let part = tier.partition(key("orders", 1));
    upload_all(&part, &segs[..2], 1).await;
    let e = part
        .upload_segment(&segs[2].upload(1))
        .await
        .expect_err("damaged large segment");
    assert!(matches!(e, TierError::DamagedSegment { .. }), "{e}");
}

#[tokio::test]
async fn manifest_with_swapped_segments_answers_an_error_not_other_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let tier = TierStore::from_url_with("memory://", small_options()).expect("tier");
    let part = tier.partition(key("orders", 0));
    upload_all(&part, &segs, 1).await;
    let mut m = (*part.manifest().await.expect("manifest")).clone();
    // Consistent with its own CRC, but the first two segments' objects swapped.
    let (a, b) = (m.segments[0].objects.clone(), m.segments[1].objects.clone());
    m.segments[0].objects = b;
    m.segments[1].objects = a;
    tier.put(&manifest_name(&part), Bytes::from(m.encode()))
        .await
        .expect("put");
    let fresh = tier.partition(key("orders", 0));
    for offset in [0, segs[0].last_offset, segs[1].base_offset] {
        let e = fresh
            .read(offset, 1 << 20)
            .await
            .expect_err("wrong segment");
        assert!(
            e.to_string()
                .contains("outside the segment's recorded offsets"),
            "{offset}: {e}"
        );
    }
    // The untouched segment still reads.
    check_reads(&fresh, &segs[2..]).await;
}
