//! Tests of [`Log`] on real directories.

use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::batch::{build_batch, TestRecord};
use super::checkpoint::RECOVERY_CHECKPOINT_FILE;
use super::*;

const NOW: i64 = 1_700_000_000_000;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        segment_ms: None,
        retention_ms: None,
        retention_bytes: None,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

fn small_segments(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        ..config()
    }
}

/// A batch of `records` records, each value `value_len` bytes, timestamps
/// `ts`, `ts + 1`, ...
fn batch(records: usize, ts: i64, value_len: usize) -> Vec<u8> {
    let value = vec![b'v'; value_len];
    let recs: Vec<TestRecord<'_>> = (0..records)
        .map(|i| {
            (
                Some(b"key".as_slice()),
                Some(value.as_slice()),
                ts + i as i64,
            )
        })
        .collect();
    build_batch(&recs)
}

/// Appends one payload; returns the info and the bytes as stored.
fn append_at(
    log: &mut Log,
    payload: &[u8],
    now_ms: i64,
    log_append_time: bool,
) -> (AppendInfo, Vec<u8>) {
    let headers = validate_batches(payload, usize::MAX).unwrap();
    let info = log
        .append(payload, &headers, 3, now_ms, log_append_time)
        .unwrap();
    // What the log should hold: the payload with the broker's fields
    // rewritten in place.
    let mut stored = payload.to_vec();
    assign_offsets(
        &mut stored,
        &headers,
        info.base_offset,
        3,
        log_append_time.then_some(now_ms),
    );
    (info, stored)
}

fn append(log: &mut Log, payload: &[u8]) -> (AppendInfo, Vec<u8>) {
    append_at(log, payload, NOW, false)
}

fn headers(data: &[u8]) -> Vec<BatchHeader> {
    if data.is_empty() {
        return Vec::new();
    }
    validate_batches(data, usize::MAX).unwrap()
}

/// Everything from the log start to the log end, one read per segment.
fn read_all(log: &Log) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let slice = log.read(offset, 1 << 20, i64::MAX).unwrap();
        let batches = headers(&slice.data);
        assert!(!batches.is_empty(), "no progress at offset {offset}");
        offset = batches.last().unwrap().next_offset();
        out.extend_from_slice(&slice.data);
    }
    out
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

#[test]
fn empty_dir_opens_empty_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topic-0");
    let mut log = Log::open(&path, config()).unwrap();
    assert_eq!(log.dir(), path.as_path());
    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.size_bytes(), 0);
    assert_eq!(log.max_timestamp(), None);
    assert_eq!(log.offset_for_timestamp(0).unwrap(), None);
    assert!(log.read(0, 100, i64::MAX).unwrap().data.is_empty());
    assert_eq!(log.sync().unwrap(), 0);
    assert!(path.join("00000000000000000000.log").exists());
}

#[test]
fn append_read_round_trip_with_consecutive_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    let (a, stored_a) = append(&mut log, &batch(3, 1_000, 10));
    let (b, stored_b) = append(
        &mut log,
        &[batch(1, 2_000, 10), batch(2, 3_000, 10)].concat(),
    );
    assert_eq!((a.base_offset, a.last_offset), (0, 2));
    assert_eq!((b.base_offset, b.last_offset), (3, 5));
    assert_eq!(a.log_append_time, -1);
    assert_eq!(a.log_start_offset, 0);
    assert_eq!(log.log_end_offset(), 6);
    let all = log.read(0, usize::MAX, i64::MAX).unwrap().data;
    assert_eq!(
        all.as_ref(),
        [stored_a.clone(), stored_b].concat().as_slice()
    );
    let bases: Vec<i64> = headers(&all).iter().map(|h| h.base_offset).collect();
    assert_eq!(bases, vec![0, 3, 4]);
    assert!(headers(&all).iter().all(|h| h.partition_leader_epoch == 3));
    // An offset inside a batch returns that whole batch.
    let from_one = log.read(1, usize::MAX, i64::MAX).unwrap().data;
    assert_eq!(headers(&from_one)[0].base_offset, 0);
    let from_five = log.read(5, usize::MAX, i64::MAX).unwrap().data;
    assert_eq!(headers(&from_five).len(), 1);
    assert_eq!(headers(&from_five)[0].base_offset, 4);
    assert_eq!(log.size_bytes(), all.len() as u64);
    assert_eq!(log.sync().unwrap(), 6);
    let (file, durable) = log.sync_handle().unwrap();
    file.sync_data().unwrap();
    assert_eq!(durable, 6);
}

#[test]
fn a_failed_fsync_stops_appends_and_syncs_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_segments(1_000)).unwrap();
    for i in 0..10 {
        append(&mut log, &batch(2, 1_000 + i, 100));
    }
    let recovery_point = |dir: &Path| checkpoint::read_recovery(dir).unwrap().unwrap();
    assert!(recovery_point(dir.path()).recovery_point > 0, "rolled");
    log.mark_sync_failed();
    let one = batch(1, 2_000, 10);
    let headers = validate_batches(&one, usize::MAX).unwrap();
    let err = log.append(&one, &headers, 0, 0, false).unwrap_err();
    assert!(matches!(err, LogError::SyncFailed { .. }), "{err}");
    assert!(matches!(log.sync(), Err(LogError::SyncFailed { .. })));
    assert!(matches!(
        log.sync_handle(),
        Err(LogError::SyncFailed { .. })
    ));
    assert_eq!(log.log_end_offset(), 20);
    // The next open scans every segment, and a close does not undo that.
    let recovery = recovery_point(dir.path());
    assert_eq!(recovery.recovery_point, 0);
    assert!(!recovery.clean_shutdown);
    assert!(matches!(log.close(), Err(LogError::SyncFailed { .. })));
    let recovery = recovery_point(dir.path());
    assert_eq!(recovery.recovery_point, 0);
    assert!(!recovery.clean_shutdown, "a failed log is not closed clean");
    let mut log = Log::open(dir.path(), small_segments(1_000)).unwrap();
    assert_eq!(append(&mut log, &one).0.base_offset, 20);
    assert_eq!(log.sync().unwrap(), 21);
}

#[test]
fn append_rejects_mismatched_headers() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    let buf = batch(1, 1, 1);
    let h = validate_batches(&buf, usize::MAX).unwrap();
    assert!(matches!(
        log.append(&buf, &[], 0, NOW, false),
        Err(LogError::AppendMismatch { .. })
    ));
    assert!(matches!(
        log.append(&buf, &[h[0], h[0]], 0, NOW, false),
        Err(LogError::AppendMismatch { .. })
    ));
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn log_append_time_rewrites_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    let (info, stored) = append_at(&mut log, &batch(2, 5, 10), 42_000, true);
    assert_eq!(info.log_append_time, 42_000);
    let h = BatchHeader::parse(&stored).unwrap();
    assert!(h.is_log_append_time());
    assert_eq!(h.max_timestamp, 42_000);
    assert_eq!(log.max_timestamp(), Some((42_000, 0)));
    // The CRC was recomputed.
    validate_batches(&log.read(0, usize::MAX, i64::MAX).unwrap().data, usize::MAX).unwrap();
}

#[test]
fn rolls_on_segment_bytes_and_reads_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_segments(1_000)).unwrap();
    let mut stored = Vec::new();
    for i in 0..20 {
        let (info, bytes) = append(&mut log, &batch(2, 1_000 + i, 100));
        assert_eq!(info.base_offset, 2 * i);
        stored.extend_from_slice(&bytes);
    }
    assert!(log.segment_count() > 5, "segments={}", log.segment_count());
    let files = segment_files(dir.path());
    assert_eq!(files.len(), log.segment_count());
    for file in &files {
        assert!(fs::metadata(file).unwrap().len() <= 1_000);
    }
    assert_eq!(read_all(&log), stored);
    // One read returns data of one segment only.
    let first = log.read(0, usize::MAX, i64::MAX).unwrap().data;
    assert_eq!(first.len() as u64, fs::metadata(&files[0]).unwrap().len());
    // Every offset finds its batch, in every segment.
    for offset in 0..40 {
        let data = log.read(offset, 1, i64::MAX).unwrap().data;
        let h = headers(&data);
        assert_eq!(h.len(), 1);
        assert!(h[0].base_offset <= offset && offset <= h[0].last_offset());
    }
    // Sealed segments have index files.
    assert!(files[0].with_extension("index").exists());
    assert!(files[0].with_extension("timeindex").exists());
}

#[test]
fn a_new_log_writes_its_checkpoint_at_the_first_roll_and_recovers_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join(RECOVERY_CHECKPOINT_FILE);
    let mut log = Log::open(dir.path(), small_segments(1_000)).unwrap();
    assert!(!checkpoint.exists(), "nothing to checkpoint in a new log");
    let mut stored = Vec::new();
    stored.extend_from_slice(&append(&mut log, &batch(2, 1_000, 100)).1);
    // A crash before the first roll: the reopen recovers the segment.
    drop(log);
    let mut log = Log::open(dir.path(), small_segments(1_000)).unwrap();
    assert_eq!(read_all(&log), stored);
    assert!(checkpoint.exists(), "a log with data writes it at open");
    for i in 1..20 {
        stored.extend_from_slice(&append(&mut log, &batch(2, 1_000 + i, 100)).1);
    }
    drop(log);
    let log = Log::open(dir.path(), small_segments(1_000)).unwrap();
    assert_eq!(read_all(&log), stored);
}

#[test]
fn each_log_config_brings_its_own_open_files_budget() {
    // Two brokers' logs in one process: each counts and closes its own.
    let dir = tempfile::tempdir().unwrap();
    let tight = Arc::new(files::OpenFiles::new(2));
    let loose = Arc::new(files::OpenFiles::new(1_000));
    let mut logs = Vec::new();
    for (name, files) in [("tight", &tight), ("loose", &loose)] {
        let config = LogConfig {
            files: Arc::clone(files),
            ..small_segments(1_000)
        };
        let mut log = Log::open(&dir.path().join(name), config).unwrap();
        let mut stored = Vec::new();
        for i in 0..20 {
            stored.extend_from_slice(&append(&mut log, &batch(2, 1_000 + i, 100)).1);
        }
        logs.push((log, stored));
    }
    for (log, stored) in &logs {
        assert!(log.segment_count() > 5);
        assert_eq!(&read_all(log), stored);
    }
    assert_eq!(tight.open_gauge().get(), 2, "the tight budget holds");
    let segments = i64::try_from(logs[1].0.segment_count()).unwrap();
    assert_eq!(
        loose.open_gauge().get(),
        segments,
        "the loose one keeps all"
    );
    assert!(tight.opens_counter().get() > loose.opens_counter().get());
}

#[test]
fn oversized_append_goes_to_a_fresh_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_segments(500)).unwrap();
    append(&mut log, &batch(1, 1, 10));
    append(&mut log, &batch(1, 1, 2_000));
    assert_eq!(log.segment_count(), 2);
    append(&mut log, &batch(1, 1, 10));
    assert_eq!(log.segment_count(), 3);
}

#[test]
fn index_lookup_finds_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(
        dir.path(),
        LogConfig {
            index_interval_bytes: 100,
            ..config()
        },
    )
    .unwrap();
    for i in 0..200 {
        append(&mut log, &batch(1 + (i % 3) as usize, i, 20));
    }
    let end = log.log_end_offset();
    for offset in 0..end {
        let data = log.read(offset, 0, i64::MAX).unwrap().data;
        let h = headers(&data);
        assert_eq!(h.len(), 1, "offset {offset}");
        assert!(h[0].base_offset <= offset && offset <= h[0].last_offset());
    }
}

#[test]
fn read_stops_at_max_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    for _ in 0..5 {
        append(&mut log, &batch(2, 1, 10)); // bases 0, 2, 4, 6, 8
    }
    let below_hwm = log.read(0, usize::MAX, 4).unwrap().data;
    let bases: Vec<i64> = headers(&below_hwm).iter().map(|h| h.base_offset).collect();
    assert_eq!(bases, vec![0, 2]);
    assert!(log.read(4, usize::MAX, 4).unwrap().data.is_empty());
    assert!(log.read(5, usize::MAX, 4).unwrap().data.is_empty());
    assert_eq!(headers(&log.read(3, usize::MAX, 5).unwrap().data).len(), 2);
    assert!(log.read(0, usize::MAX, 0).unwrap().data.is_empty());
}

#[test]
fn read_returns_one_oversized_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    let (_, big) = append(&mut log, &batch(1, 1, 10_000));
    append(&mut log, &batch(1, 1, 10));
    let data = log.read(0, 100, i64::MAX).unwrap().data;
    assert_eq!(data.as_ref(), big.as_slice());
    // Not when the high watermark excludes it.
    assert!(log.read(0, 100, 0).unwrap().data.is_empty());
    // max_bytes that fits the first batch but not the second.
    let data = log.read(0, big.len() + 20, i64::MAX).unwrap().data;
    assert_eq!(data.len(), big.len());
}

#[test]
fn offsets_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    for _ in 0..4 {
        append(&mut log, &batch(2, 1, 10));
    }
    assert!(matches!(
        log.read(-1, 100, i64::MAX),
        Err(LogError::OffsetOutOfRange { offset: -1, .. })
    ));
    let err = log.read(9, 100, i64::MAX).unwrap_err();
    assert_eq!(
        err.to_string(),
        "offset out of range. offset=9, log_start_offset=0, log_end_offset=8"
    );
    assert!(log.read(8, 100, i64::MAX).unwrap().data.is_empty());
    log.delete_records_before(5).unwrap();
    assert!(matches!(
        log.read(4, 100, i64::MAX),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    // Offset 5 is inside the batch at 4: that batch is returned whole.
    let data = log.read(5, 100, i64::MAX).unwrap().data;
    assert_eq!(headers(&data)[0].base_offset, 4);
}

#[test]
fn timestamp_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(
        dir.path(),
        LogConfig {
            segment_bytes: 600,
            index_interval_bytes: 0,
            ..config()
        },
    )
    .unwrap();
    // Max timestamps per batch: 1000, 5000, 2000, 5000, 7000 (bases 0, 2, ...).
    for ts in [1_000, 5_000, 2_000, 5_000, 7_000] {
        append(&mut log, &batch(2, ts - 1, 100));
    }
    assert!(log.segment_count() > 1);
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 1_000)));
    assert_eq!(log.offset_for_timestamp(1_000).unwrap(), Some((0, 1_000)));
    assert_eq!(log.offset_for_timestamp(1_001).unwrap(), Some((2, 5_000)));
    assert_eq!(log.offset_for_timestamp(5_001).unwrap(), Some((8, 7_000)));
    assert_eq!(log.offset_for_timestamp(7_001).unwrap(), None);
    assert_eq!(log.max_timestamp(), Some((7_000, 8)));
    log.delete_records_before(3).unwrap();
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((3, 5_000)));
    log.truncate_to(8).unwrap();
    assert_eq!(log.max_timestamp(), Some((5_000, 3)));
    assert_eq!(log.offset_for_timestamp(5_001).unwrap(), None);
    log.close().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.max_timestamp(), Some((5_000, 3)));
    assert_eq!(log.offset_for_timestamp(4_000).unwrap(), Some((3, 5_000)));
}

#[test]
fn retention_by_bytes_keeps_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_segments(1_000)).unwrap();
    for i in 0..30 {
        append(&mut log, &batch(1, i, 200));
    }
    let segments = log.segment_count();
    let before = log.size_bytes();
    log.set_config(LogConfig {
        retention_bytes: Some(1_500),
        ..small_segments(1_000)
    });
    let deleted = log.apply_retention(NOW).unwrap();
    assert!(deleted > 0);
    assert_eq!(log.segment_count(), segments - deleted);
    assert!(log.size_bytes() >= 1_500 && log.size_bytes() < before);
    assert_eq!(segment_files(dir.path()).len(), log.segment_count());
    assert!(log.log_start_offset() > 0);
    assert_eq!(
        headers(&log.read(log.log_start_offset(), 1, i64::MAX).unwrap().data)[0].base_offset,
        log.log_start_offset()
    );
    // Down to the active segment at most.
    log.set_config(LogConfig {
        retention_bytes: Some(0),
        ..small_segments(1_000)
    });
    log.apply_retention(NOW).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert!(log.size_bytes() > 0);
    assert_eq!(log.apply_retention(NOW).unwrap(), 0);
}

#[test]
fn retention_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(
        dir.path(),
        LogConfig {
            retention_ms: Some(1_000),
            ..small_segments(1_000)
        },
    )
    .unwrap();
    for ts in [
        10_000, 10_000, 10_000, 10_000, 50_000, 50_000, 50_000, 90_000,
    ] {
        append(&mut log, &batch(1, ts, 300));
    }
    // Two batches per segment: max timestamps 10k, 10k, 50k, 90k (active).
    assert_eq!(log.segment_count(), 4);
    assert_eq!(log.apply_retention(10_500).unwrap(), 0);
    assert_eq!(log.apply_retention(12_000).unwrap(), 2);
    assert_eq!(log.log_start_offset(), 4);
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((4, 50_000)));
    // Everything is old now: the active segment rolls and goes too, as in
    // Kafka; the log is empty at its end, which does not move.
    assert_eq!(log.apply_retention(i64::MAX).unwrap(), 2);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), 8);
    assert_eq!(log.log_end_offset(), 8);
    assert_eq!(log.size_bytes(), 0);
    drop(log);
    let mut log = Log::open(dir.path(), config()).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (8, 8));
    assert_eq!(append(&mut log, &batch(1, 95_000, 10)).0.base_offset, 8);
}

#[test]
fn an_idle_partition_rolls_on_segment_ms_in_the_retention_pass() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(
        dir.path(),
        LogConfig {
            segment_ms: Some(2_000),
            retention_ms: Some(4_000),
            ..config()
        },
    )
    .unwrap();
    append_at(&mut log, &batch(3, 10_000, 10), 10_000, false);
    append_at(&mut log, &batch(3, 10_500, 10), 10_500, false);
    // Nothing is due yet: no roll, nothing deleted.
    assert_eq!(log.apply_retention(11_999).unwrap(), 0);
    assert_eq!(log.segment_count(), 1);
    // segment.ms passed with no append: the pass rolls, but the records
    // are not yet past retention.ms.
    assert_eq!(log.apply_retention(12_000).unwrap(), 0);
    assert_eq!(log.segment_count(), 2);
    assert_eq!(log.log_start_offset(), 0);
    // An empty active segment is never rolled again.
    assert_eq!(log.apply_retention(12_100).unwrap(), 0);
    assert_eq!(log.segment_count(), 2);
    // Past retention.ms: the sealed segment goes; the empty active stays.
    assert_eq!(log.apply_retention(14_503).unwrap(), 1);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (6, 6));
    assert_eq!(log.segment_count(), 1);
}

#[test]
fn the_retention_pass_leaves_an_active_segment_that_is_not_due() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(
        dir.path(),
        LogConfig {
            retention_ms: Some(4_000),
            ..config()
        },
    )
    .unwrap();
    append_at(&mut log, &batch(2, 10_000, 10), 10_000, false);
    // No segment.ms and the records are within retention.ms.
    assert_eq!(log.apply_retention(14_000).unwrap(), 0);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_end_offset(), 2);
    // retention.ms -1 keeps everything, however old.
    log.set_config(LogConfig {
        retention_ms: Some(-1),
        ..config()
    });
    assert_eq!(log.apply_retention(i64::MAX).unwrap(), 0);
    assert_eq!(log.segment_count(), 1);
}

#[test]
fn delete_records_before() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_segments(1_000)).unwrap();
    for i in 0..20 {
        append(&mut log, &batch(1, i, 200));
    }
    let segments = log.segment_count();
    assert_eq!(log.delete_records_before(1).unwrap(), 1);
    assert_eq!(log.segment_count(), segments);
    assert_eq!(log.delete_records_before(0).unwrap(), 1);
    assert_eq!(log.delete_records_before(10).unwrap(), 10);
    assert!(log.segment_count() < segments);
    assert!(matches!(
        log.delete_records_before(21),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    drop(log);
    let mut log = Log::open(dir.path(), small_segments(1_000)).unwrap();
    assert_eq!(log.log_start_offset(), 10);
    assert_eq!(
        log.read(10, 1, i64::MAX).unwrap().data.len(),
        batch(1, 0, 200).len()
    );
    // Up to the log end: every segment goes, the log end stays.
    assert_eq!(log.delete_records_before(20).unwrap(), 20);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.size_bytes(), 0);
    assert_eq!(log.log_end_offset(), 20);
    let (info, _) = append(&mut log, &batch(1, 0, 10));
    assert_eq!(info.base_offset, 20);
    assert_eq!(info.log_start_offset, 20);
    log.close().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (20, 21));
}

#[test]
fn reopen_after_close_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_segments(2_000)).unwrap();
    let mut stored = Vec::new();
    for i in 0..30 {
        stored.extend(append(&mut log, &batch(1 + i % 4, 1_000 + i as i64, 90)).1);
    }
    log.delete_records_before(3).unwrap();
    let (end, start, segments, max) = (
        log.log_end_offset(),
        log.log_start_offset(),
        log.segment_count(),
        log.max_timestamp(),
    );
    let all = read_all(&log);
    log.close().unwrap();
    let checkpoint = fs::read_to_string(dir.path().join(RECOVERY_CHECKPOINT_FILE)).unwrap();
    assert!(checkpoint.contains("clean_shutdown=true"), "{checkpoint}");

    let mut log = Log::open(dir.path(), small_segments(2_000)).unwrap();
    let checkpoint = fs::read_to_string(dir.path().join(RECOVERY_CHECKPOINT_FILE)).unwrap();
    assert!(checkpoint.contains("clean_shutdown=false"), "{checkpoint}");
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.log_start_offset(), start);
    assert_eq!(log.segment_count(), segments);
    assert_eq!(log.max_timestamp(), max);
    assert_eq!(read_all(&log), all);
    assert!(stored.ends_with(&all));
    let (info, _) = append(&mut log, &batch(1, 5, 10));
    assert_eq!(info.base_offset, end);
}

#[test]
fn reopen_without_close_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_segments(1_500)).unwrap();
    let mut stored = Vec::new();
    for i in 0..25 {
        stored.extend(append(&mut log, &batch(2, i, 100)).1);
    }
    let max = log.max_timestamp();
    drop(log);
    let log = Log::open(dir.path(), small_segments(1_500)).unwrap();
    assert_eq!(read_all(&log), stored);
    assert_eq!(log.log_end_offset(), 50);
    assert_eq!(log.max_timestamp(), max);
}

#[test]
fn missing_or_bad_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_segments(1_500)).unwrap();
    let mut stored = Vec::new();
    for i in 0..25 {
        stored.extend(append(&mut log, &batch(2, i, 100)).1);
    }
    log.close().unwrap();
    let files = segment_files(dir.path());
    fs::remove_file(files[0].with_extension("index")).unwrap();
    fs::write(files[1].with_extension("timeindex"), b"12345").unwrap();
    let last = files.last().unwrap();
    fs::write(last.with_extension("index"), [0u8, 0, 0, 1, 0x7f, 0, 0, 0]).unwrap();
    let log = Log::open(dir.path(), small_segments(1_500)).unwrap();
    assert_eq!(read_all(&log), stored);
    assert_eq!(log.log_end_offset(), 50);
    assert!(files[0].with_extension("index").exists());
    for offset in 0..50 {
        let h = headers(&log.read(offset, 0, i64::MAX).unwrap().data);
        assert!(h[0].base_offset <= offset && offset <= h[0].last_offset());
    }
}

/// Appends `n` batches of 2 records; returns the stored bytes of each batch.
fn fill(log: &mut Log, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| append(log, &batch(2, 1_000 + i as i64, 50 + i % 7)).1)
        .collect()
}

fn damage_last_file(dir: &Path, damage: impl FnOnce(&mut Vec<u8>)) {
    let last = segment_files(dir).pop().unwrap();
    let mut bytes = fs::read(&last).unwrap();
    damage(&mut bytes);
    fs::write(&last, bytes).unwrap();
}

#[test]
fn torn_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_segments(2_000)).unwrap();
    let batches = fill(&mut log, 30);
    drop(log);
    let last_len = batches.last().unwrap().len();
    damage_last_file(dir.path(), |bytes| {
        bytes.truncate(bytes.len() - last_len / 2)
    });
    let mut log = Log::open(dir.path(), small_segments(2_000)).unwrap();
    assert_eq!(log.log_end_offset(), 58);
    assert_eq!(read_all(&log), batches[..29].concat());
    let (info, _) = append(&mut log, &batch(1, 1, 1));
    assert_eq!(info.base_offset, 58);
}

#[test]
fn corrupt_last_batch_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_segments(2_000)).unwrap();
    let batches = fill(&mut log, 30);
    log.close().unwrap();
    let last_len = batches.last().unwrap().len();
    damage_last_file(dir.path(), |bytes| {
        let at = bytes.len() - last_len / 3;
        bytes[at] ^= 0x40;
    });
    // After a clean close nothing is CRC-checked at open (as in Kafka);
    // remove the marker as a crash after the reopen would.
    fs::remove_file(dir.path().join(RECOVERY_CHECKPOINT_FILE)).unwrap();
    let log = Log::open(dir.path(), small_segments(2_000)).unwrap();
    assert_eq!(log.log_end_offset(), 58);
    assert_eq!(read_all(&log), batches[..29].concat());
}

#[test]
fn damage_in_a_middle_segment_drops_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_segments(1_000)).unwrap();
    let batches = fill(&mut log, 30);
    drop(log);
    let files = segment_files(dir.path());
    assert!(files.len() > 3);
    // Corrupt the first batch of the third segment; rescan everything.
    let mut bytes = fs::read(&files[2]).unwrap();
    bytes[30] ^= 0x01;
    fs::write(&files[2], bytes).unwrap();
    fs::remove_file(dir.path().join(RECOVERY_CHECKPOINT_FILE)).unwrap();
    let base: i64 = files[2]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut log = Log::open(dir.path(), small_segments(1_000)).unwrap();
    assert_eq!(log.log_end_offset(), base);
    assert_eq!(log.segment_count(), 3);
    assert_eq!(segment_files(dir.path()).len(), 3);
    let kept = usize::try_from(base / 2).unwrap();
    assert_eq!(read_all(&log), batches[..kept].concat());
    let (info, _) = append(&mut log, &batch(1, 1, 1));
    assert_eq!(info.base_offset, base);
}

#[test]
fn truncate_to_drops_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_segments(1_000)).unwrap();
    let batches = fill(&mut log, 30);
    let segments = log.segment_count();
    log.truncate_to(21).unwrap(); // inside the batch at 20
    assert_eq!(log.log_end_offset(), 20);
    assert!(log.segment_count() < segments);
    assert_eq!(read_all(&log), batches[..10].concat());
    assert_eq!(segment_files(dir.path()).len(), log.segment_count());
    let (info, _) = append(&mut log, &batch(1, 1, 1));
    assert_eq!(info.base_offset, 20);
    drop(log);
    let mut log = Log::open(dir.path(), small_segments(1_000)).unwrap();
    assert_eq!(log.log_end_offset(), 21);
    log.truncate_to(100).unwrap();
    assert_eq!(log.log_end_offset(), 21);
    log.truncate_to(0).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    assert_eq!(log.segment_count(), 1);
}

#[test]
fn truncate_below_log_start_restarts_there() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_segments(1_000)).unwrap();
    fill(&mut log, 30);
    log.delete_records_before(40).unwrap();
    assert!(log.read(40, 1, i64::MAX).is_ok());
    log.truncate_to(30).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (30, 30));
    assert_eq!(log.segment_count(), 1);
    let (info, _) = append(&mut log, &batch(1, 1, 1));
    assert_eq!(info.base_offset, 30);
    drop(log);
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (30, 31));
}

#[test]
fn rolls_on_segment_ms() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(
        dir.path(),
        LogConfig {
            segment_ms: Some(1_000),
            ..config()
        },
    )
    .unwrap();
    append_at(&mut log, &batch(1, 1, 1), 10_000, false);
    append_at(&mut log, &batch(1, 1, 1), 10_999, false);
    assert_eq!(log.segment_count(), 1);
    append_at(&mut log, &batch(1, 1, 1), 11_000, false);
    assert_eq!(log.segment_count(), 2);
    append_at(&mut log, &batch(1, 1, 1), 11_500, false);
    assert_eq!(log.segment_count(), 2);
}

#[test]
fn log_start_above_recovered_end_restarts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    let batches = fill(&mut log, 5);
    log.delete_records_before(10).unwrap();
    log.close().unwrap();
    // The whole tail is lost after the log start moved past it.
    damage_last_file(dir.path(), |bytes| bytes.truncate(batches[0].len() + 3));
    fs::remove_file(dir.path().join(RECOVERY_CHECKPOINT_FILE)).unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (10, 10));
    assert_eq!(segment_files(dir.path()).len(), 1);
}

#[test]
fn error_messages() {
    let err = LogError::io(
        "read",
        Path::new("/data/t-0/00000000000000000000.log"),
        std::io::Error::other("boom"),
    );
    assert_eq!(
        err.to_string(),
        "log i/o failed. op=read, file=/data/t-0/00000000000000000000.log"
    );
}

/// Byte positions of the partition leader epoch fields in a segment file:
/// the CRC does not cover them, so no check can see a flip there.
fn epoch_fields(file: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Ok(h) = BatchHeader::parse(&file[pos..]) {
        out.push(pos + 12..pos + 16);
        pos += h.total_len();
        if pos >= file.len() {
            break;
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Append batches, damage one segment file (cut it or flip a byte),
    /// reopen: exactly the batches fully before the damage remain,
    /// byte-identical, and appends continue at the right offset.
    #[test]
    fn recovery_keeps_exactly_the_batches_before_damage(
        shapes in proptest::collection::vec((1usize..5, 0usize..200), 1..25),
        cut in any::<bool>(),
        where_in_file in any::<prop::sample::Index>(),
        which_file in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        rescan_all in any::<bool>(),
        clean_close in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { segment_bytes: 1_200, index_interval_bytes: 128, ..config() };
        let mut log = Log::open(dir.path(), config.clone()).unwrap();
        let mut stored = Vec::new();
        for (i, (records, value_len)) in shapes.iter().enumerate() {
            stored.push(append(&mut log, &batch(*records, i as i64, *value_len)).1);
        }
        if clean_close && !rescan_all {
            log.close().unwrap();
            // A crash after a clean close and a reopen: the marker is gone.
            drop(Log::open(dir.path(), config.clone()).unwrap());
        } else {
            drop(log);
        }
        let files = segment_files(dir.path());
        // Without the checkpoint every segment is scanned; with it, only the
        // active one, so only that one may be damaged.
        let target = if rescan_all {
            // (A log that never rolled has none yet.)
            match fs::remove_file(dir.path().join(RECOVERY_CHECKPOINT_FILE)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                other => other.unwrap(),
            }
            which_file.index(files.len())
        } else {
            files.len() - 1
        };
        let mut bytes = fs::read(&files[target]).unwrap();
        let damage_at = if bytes.is_empty() {
            None
        } else if cut {
            let len = where_in_file.index(bytes.len() + 1);
            bytes.truncate(len);
            (len < fs::metadata(&files[target]).unwrap().len() as usize).then_some(len)
        } else {
            let mut at = where_in_file.index(bytes.len());
            if let Some(epoch) = epoch_fields(&bytes).into_iter().find(|r| r.contains(&at)) {
                at = epoch.end; // the magic byte instead
            }
            bytes[at] ^= flip;
            Some(at)
        };
        fs::write(&files[target], &bytes).unwrap();

        // Expected: every batch of earlier segments, and the batches of the
        // target that end at or before the damage.
        let mut expected = Vec::new();
        let mut position_in_file = 0usize;
        let mut segment = 0usize;
        let file_lens: Vec<usize> = files
            .iter()
            .enumerate()
            .map(|(i, f)| if i == target { usize::MAX } else { fs::metadata(f).unwrap().len() as usize })
            .collect();
        for b in &stored {
            while segment < target && position_in_file + b.len() > file_lens[segment] {
                segment += 1;
                position_in_file = 0;
            }
            if segment == target {
                if let Some(at) = damage_at {
                    if position_in_file + b.len() > at {
                        break;
                    }
                }
            }
            expected.extend_from_slice(b);
            position_in_file += b.len();
        }
        let expected_end = headers(&expected).last().map_or(0, BatchHeader::next_offset);

        let mut log = Log::open(dir.path(), config.clone()).unwrap();
        prop_assert_eq!(log.log_end_offset(), expected_end);
        prop_assert_eq!(read_all(&log), expected.clone());
        let (info, _) = append(&mut log, &batch(1, 0, 5));
        prop_assert_eq!(info.base_offset, expected_end);
        drop(log);
        let log = Log::open(dir.path(), config).unwrap();
        prop_assert_eq!(log.log_end_offset(), expected_end + 1);
    }
}
