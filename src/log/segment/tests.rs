//! Unit tests of segments: appends, indexes, reads, truncation, sealing,
//! and the recovery scan of a segment file.

use super::super::batch::{assign_offsets, build_batch, validate_batches};
use super::super::recovery::{load_with_indexes, scan};
use super::*;
use std::fs::OpenOptions;

fn batch_at(offset: i64, ts: i64, value_len: usize) -> (Vec<u8>, BatchHeader) {
    let value = vec![b'x'; value_len];
    let mut batch = build_batch(&[
        (None, Some(value.as_slice()), ts),
        (None, Some(b"y".as_slice()), ts - 1),
    ]);
    let headers = validate_batches(&batch, usize::MAX).unwrap();
    assign_offsets(&mut batch, &headers, offset, 0, None);
    let header = BatchHeader::parse(&batch).unwrap();
    (batch, header)
}

#[test]
fn vectored_write_covers_more_slices_than_one_call_takes() {
    let dir = tempfile::tempdir().unwrap();
    let file = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .open(dir.path().join("v"))
        .unwrap();
    // 3000 slices of 1..=7 bytes (some empty), more than IOV_MAX.
    let owned: Vec<Vec<u8>> = (0..3000u32)
        .map(|i| vec![(i % 251) as u8; (i % 8) as usize])
        .collect();
    let parts: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
    write_all_vectored_at(&file, &parts, 5).unwrap();
    let mut back = vec![0u8; parts.iter().map(|p| p.len()).sum::<usize>() + 5];
    file.read_exact_at(&mut back, 0).unwrap();
    assert_eq!(&back[..5], &[0u8; 5]);
    assert_eq!(back[5..], parts.concat()[..]);
}

fn filled(dir: &Path, base: i64, batches: usize, interval: u32) -> ActiveSegment {
    let mut segment = ActiveSegment::create(dir, base, &Arc::default()).unwrap();
    let mut offset = base;
    let config = LogConfig {
        index_interval_bytes: interval,
        ..LogConfig::default()
    };
    for i in 0..batches {
        let (batch, header) = batch_at(offset, 1_000 + i as i64, 100);
        segment.append(&[&batch], &[header], 0, &config).unwrap();
        offset = header.next_offset();
    }
    segment
}

#[test]
fn file_names() {
    assert_eq!(file_name(1200, LOG_SUFFIX), "00000000000000001200.log");
    assert_eq!(
        parse_file_name("00000000000000001200.log", LOG_SUFFIX),
        Some(1200)
    );
    assert_eq!(parse_file_name("0000000000000001200.log", LOG_SUFFIX), None);
    assert_eq!(
        parse_file_name("00000000000000001200.index", LOG_SUFFIX),
        None
    );
    assert_eq!(
        parse_file_name("0000000000000000120x.log", LOG_SUFFIX),
        None
    );
}

#[test]
fn append_indexes_and_finds_batches() {
    let dir = tempfile::tempdir().unwrap();
    let segment = filled(dir.path(), 50, 40, 500);
    let core = segment.core();
    assert_eq!(core.next_offset(), 50 + 80);
    assert!(core.state.offset_index.len() > 3);
    let file = core.open().unwrap();
    for offset in 50..130 {
        let (_, header) = core.find_batch(&file, offset).unwrap().unwrap();
        assert!(header.base_offset <= offset && offset <= header.last_offset());
    }
    assert!(core.find_batch(&file, 130).unwrap().is_none());
    // Time index: strictly increasing max timestamps at index points.
    assert_eq!(core.state.max_timestamp(), Some((1_039, 128)));
    assert_eq!(core.find_timestamp(1_010, 0).unwrap(), Some((70, 1_010)));
    assert_eq!(core.find_timestamp(0, 0).unwrap(), Some((50, 1_000)));
    assert_eq!(core.find_timestamp(0, 61).unwrap(), Some((61, 1_005)));
    assert_eq!(core.find_timestamp(1_040, 0).unwrap(), None);
}

#[test]
fn read_respects_limits() {
    let dir = tempfile::tempdir().unwrap();
    let segment = filled(dir.path(), 0, 10, 0);
    let core = segment.core();
    let file = core.open().unwrap();
    let one = core.find_batch(&file, 0).unwrap().unwrap().1.total_len();
    let all = core.read(0, usize::MAX, i64::MAX).unwrap().unwrap();
    assert_eq!(all.len(), 10 * one);
    let two = core.read(3, 2 * one + 5, i64::MAX).unwrap().unwrap();
    assert_eq!(two.len(), 2 * one);
    assert_eq!(BatchHeader::parse(&two).unwrap().base_offset, 2);
    let kip74 = core.read(0, 1, i64::MAX).unwrap().unwrap();
    assert_eq!(kip74.len(), one);
    let hwm = core.read(0, usize::MAX, 6).unwrap().unwrap();
    assert_eq!(hwm.len(), 3 * one);
    let empty = core.read(6, usize::MAX, 6).unwrap().unwrap();
    assert!(empty.is_empty());
    assert!(core.read(20, usize::MAX, i64::MAX).unwrap().is_none());
}

#[test]
fn truncate_recomputes_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut segment = filled(dir.path(), 0, 30, 300);
    assert_eq!(segment.truncate_to(21).unwrap(), 20);
    let state = &segment.core().state;
    assert_eq!(state.next_offset, 20);
    assert_eq!(state.max_timestamp(), Some((1_009, 18)));
    let size = state.size;
    assert_eq!(
        segment.core().open().unwrap().metadata().unwrap().len(),
        size
    );
    let (loaded, damage) = scan(dir.path(), 0, 300, false).unwrap();
    assert!(damage.is_none());
    assert_eq!(loaded.state.offset_index, state.offset_index);
    assert_eq!(loaded.state.max_timestamp(), state.max_timestamp());
    assert_eq!(segment.truncate_to(0).unwrap(), 0);
    assert!(segment.core().state.is_empty());
    assert_eq!(segment.core().state.max_timestamp(), None);
}

#[test]
fn seal_writes_indexes_that_load_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut segment = filled(dir.path(), 10, 25, 256);
    segment.prepare_seal().unwrap();
    let expected = segment.core().state.clone();
    let sealed = segment.into_sealed();
    let loaded = load_with_indexes(dir.path(), 10, Some(expected.next_offset), false).unwrap();
    assert_eq!(loaded.state.offset_index, expected.offset_index);
    assert_eq!(loaded.state.time_index, expected.time_index);
    assert_eq!(loaded.state.max_timestamp(), expected.max_timestamp());
    let tail = load_with_indexes(dir.path(), 10, None, false).unwrap();
    assert_eq!(tail.state.next_offset, expected.next_offset);
    assert_eq!(tail.state.size, expected.size);
    assert!(sealed.retention_timestamp().is_some());
    assert!(load_with_indexes(dir.path(), 10, Some(20), false).is_err());
    sealed.delete().unwrap();
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn scan_reports_damage() {
    let dir = tempfile::tempdir().unwrap();
    let segment = filled(dir.path(), 0, 5, 4096);
    let size = segment.core().size();
    let path = dir.path().join(file_name(0, LOG_SUFFIX));
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(size - 3).unwrap();
    let (loaded, damage) = scan(dir.path(), 0, 4096, false).unwrap();
    let damage = damage.unwrap();
    assert_eq!(loaded.state.next_offset, 8);
    assert_eq!(damage.offset, 8);
    assert_eq!(damage.position, loaded.state.size);
    assert!(damage.reason.contains("incomplete"), "{}", damage.reason);
}
