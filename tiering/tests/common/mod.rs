//! Shared helpers of the tiering component tests.
#![allow(dead_code)]

use std::path::Path;

use bytes::{Bytes, BytesMut};
use tiering::testkit::TestSegment;
use tiering::{PartitionKey, RemotePartition, TierError, TierOptions};

pub const CLUSTER: &str = "test-cluster";
pub const TOPIC_ID: [u8; 16] = [
    0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8,
];

pub fn key(topic: &str, partition: i32) -> PartitionKey {
    PartitionKey::new(CLUSTER, topic, TOPIC_ID, partition)
}

/// Small chunks and a low multipart threshold so tests exercise both.
pub fn small_options() -> TierOptions {
    TierOptions {
        chunk_size: 64 << 10,
        memory_cache_bytes: 8 << 20,
        multipart_threshold: 256 << 10,
        multipart_part_size: 5 << 20,
        ..TierOptions::default()
    }
}

/// Three consecutive segments: small, medium, and one above 5 MiB (multipart
/// with two parts).
pub fn three_segments(dir: &Path) -> Vec<TestSegment> {
    let a = TestSegment::write(&dir.join("a"), 0, 40, 5, 100, 1_000_000).expect("seg a");
    let b = TestSegment::write(&dir.join("b"), a.last_offset + 1, 300, 4, 300, 2_000_000)
        .expect("seg b");
    let c = TestSegment::write(&dir.join("c"), b.last_offset + 1, 1400, 4, 1000, 3_000_000)
        .expect("seg c");
    vec![a, b, c]
}

/// Offsets worth reading in a segment: every batch base, a middle offset and
/// the last offset of some batches.
pub fn probe_offsets(seg: &TestSegment) -> Vec<i64> {
    let mut v = Vec::new();
    for (i, &(base, _, _)) in seg.batches.iter().enumerate() {
        if i % 7 == 0 || i + 1 == seg.batches.len() {
            v.push(base);
            v.push(base + 1);
        }
    }
    v.push(seg.last_offset);
    v
}

/// Replays the whole tier from `from` by repeated reads.
pub async fn replay(part: &RemotePartition, from: i64, max_bytes: u64) -> Result<Bytes, TierError> {
    let mut out = BytesMut::new();
    let mut offset = from;
    let last = part.last_uploaded_offset().await?.unwrap_or(-1);
    while offset <= last {
        let bytes = part.read(offset, max_bytes).await?;
        assert!(!bytes.is_empty(), "empty read at {offset}");
        offset = last_offset_in(&bytes) + 1;
        out.extend_from_slice(&bytes);
    }
    Ok(out.freeze())
}

/// Last offset of the last batch in `bytes` (whole v2 batches).
pub fn last_offset_in(bytes: &[u8]) -> i64 {
    let mut at = 0;
    let mut last = -1;
    while at + 61 <= bytes.len() {
        let base = i64::from_be_bytes(bytes[at..at + 8].try_into().expect("8"));
        let len = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().expect("4")) as usize;
        let delta = i32::from_be_bytes(bytes[at + 23..at + 27].try_into().expect("4"));
        last = base + i64::from(delta);
        at += 12 + len;
    }
    last
}

pub fn all_logs(segs: &[TestSegment]) -> Bytes {
    let mut b = BytesMut::new();
    for s in segs {
        b.extend_from_slice(&s.log);
    }
    b.freeze()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Uploads `segs` in order at `epoch`, asserting each lands.
pub async fn upload_all(part: &RemotePartition, segs: &[TestSegment], epoch: i32) {
    for s in segs {
        match part.upload_segment(&s.upload(epoch)).await.expect("upload") {
            tiering::UploadOutcome::Uploaded(meta) => assert_eq!(meta.base_offset, s.base_offset),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Checks reads of every probe offset against the segment files, with a few
/// `max_bytes` values (one smaller than any batch: KIP-74).
pub async fn check_reads(part: &RemotePartition, segs: &[TestSegment]) {
    for s in segs {
        for off in probe_offsets(s) {
            for max in [1u64, 10_000, 300_000] {
                let got = part.read(off, max).await.expect("read");
                let want = s.expected_read(off, max);
                assert!(!want.is_empty());
                assert!(
                    got == want,
                    "offset {off} max {max}: {} vs {} bytes",
                    got.len(),
                    want.len()
                );
            }
        }
    }
}
