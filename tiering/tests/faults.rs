//! Uploads and reads through a fault-injecting store: uploads get through by
//! retrying; reads return correct bytes or a retriable error, never wrong
//! bytes. Property-tested over fault seeds.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};
use proptest::prelude::*;
use tiering::faults::{FaultConfig, FaultyStore};
use tiering::testkit::TestSegment;
use tiering::{Backoff, ConditionalPut, TierStore, UploadOutcome, Uploader, UploaderConfig};
use tokio_util::sync::CancellationToken;

fn segments(dir: &std::path::Path) -> Vec<TestSegment> {
    let a = TestSegment::write(&dir.join("a"), 0, 30, 3, 200, 1_000).expect("a");
    let b = TestSegment::write(&dir.join("b"), a.last_offset + 1, 400, 2, 900, 5_000).expect("b");
    vec![a, b]
}

fn faults(seed: u64) -> FaultConfig {
    FaultConfig {
        seed,
        get_error: 0.1,
        get_truncate: 0.1,
        get_corrupt: 0.15,
        put_error: 0.1,
        put_lost_ack: 0.1,
        delete_error: 0.2,
        list_error: 0.1,
        max_delay: Duration::from_millis(2),
        fail_puts_containing: None,
    }
}

async fn scenario(seed: u64) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = segments(dir.path());
    let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let faulty = Arc::new(FaultyStore::new(mem.clone(), faults(seed)));
    let options = tiering::TierOptions {
        prefetch_chunks: 1,
        ..small_options()
    };
    let tier = TierStore::from_object_store(faulty.clone(), "f", ConditionalPut::Native, options)
        .expect("tier");
    let part = tier.partition(key("t", 0));
    let up = Uploader::start(
        &tier,
        UploaderConfig {
            max_attempts: 0,
            backoff: Backoff {
                base: Duration::from_millis(1),
                max: Duration::from_millis(10),
            },
            ..UploaderConfig::default()
        },
        CancellationToken::new(),
    );
    let tickets: Vec<_> = segs
        .iter()
        .map(|s| up.try_enqueue(&part, s.upload(1)).expect("queued"))
        .collect();
    for t in tickets {
        let outcome = t.wait().await.expect("upload gets through by retrying");
        prop_assert!(matches!(
            outcome,
            UploadOutcome::Uploaded(_) | UploadOutcome::AlreadyCovered
        ));
    }
    up.shutdown(Duration::from_secs(1)).await;

    // Reads under faults: right bytes or a retriable error.
    let mut ok = 0;
    for s in &segs {
        for off in probe_offsets(s) {
            for max in [1u64, 50_000] {
                match part.read(off, max).await {
                    Ok(got) => {
                        prop_assert!(got == s.expected_read(off, max), "wrong bytes at {off}");
                        ok += 1;
                    }
                    Err(e) => prop_assert!(e.is_retriable(), "permanent error {e}"),
                }
            }
        }
    }
    // Without faults everything reads, and the manifest names only whole,
    // intact objects.
    faulty.set_enabled(false);
    let m = part.refresh().await.expect("manifest");
    prop_assert_eq!(m.segments.len(), 2);
    for meta in &m.segments {
        for o in meta.objects.values() {
            let path = object_store::path::Path::from(format!("{}/{}", part.dir(), o.name));
            let body = mem
                .get(&path)
                .await
                .expect("named object exists")
                .bytes()
                .await
                .expect("body");
            prop_assert_eq!(body.len() as u64, o.size);
            prop_assert_eq!(crc32c::crc32c(&body), o.crc32c);
        }
    }
    check_reads(&part, &segs).await;
    let replayed = replay(&part, 0, 64 << 10).await.expect("replay");
    prop_assert!(replayed == all_logs(&segs));
    let _ = ok;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn faults_never_produce_wrong_bytes(seed in any::<u64>()) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(scenario(seed))?;
    }
}

/// Faulty reads heal: after faults stop, the cache holds no damaged chunk.
#[tokio::test]
async fn corrupt_bodies_never_enter_the_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = segments(dir.path());
    let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let faulty = Arc::new(FaultyStore::new(
        mem,
        FaultConfig {
            seed: 7,
            get_corrupt: 0.5,
            ..FaultConfig::default()
        },
    ));
    faulty.set_enabled(false);
    let tier =
        TierStore::from_object_store(faulty.clone(), "", ConditionalPut::Native, small_options())
            .expect("tier");
    let part = tier.partition(key("t", 0));
    upload_all(&part, &segs, 1).await;
    faulty.set_enabled(true);
    for s in &segs {
        for off in probe_offsets(s) {
            if let Ok(got) = part.read(off, 10_000).await {
                assert!(got == s.expected_read(off, 10_000));
            }
        }
    }
    assert!(
        faulty
            .counts
            .corrupted
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    assert!(
        tier.metrics()
            .crc_mismatches
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    faulty.set_enabled(false);
    check_reads(&part, &segs).await;
}
