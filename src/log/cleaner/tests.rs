//! Tests of the cleaner on real directories: what a pass keeps, the swap
//! after a crash at each step, and a model of puts and deletes.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::log::batch::{build_batch, validate_batches, TestRecord};
use crate::log::LogConfig;

const NOW: i64 = 1_700_000_000_000;

fn compaction(delete_retention_ms: i64) -> Compaction {
    Compaction {
        min_cleanable_dirty_ratio: 0.0,
        min_compaction_lag_ms: 0,
        max_compaction_lag_ms: i64::MAX,
        delete_retention_ms,
    }
}

fn config(segment_bytes: u64, delete_retention_ms: i64) -> LogConfig {
    LogConfig {
        segment_bytes,
        segment_ms: None,
        retention_ms: None,
        retention_bytes: None,
        index_interval_bytes: 128,
        compaction: Some(compaction(delete_retention_ms)),
        ..LogConfig::default()
    }
}

fn resources(dedupe_bytes: usize) -> Resources {
    Resources {
        dedupe_bytes,
        throttle: Throttle::new(None),
    }
}

/// One operation: put `key` = `value`, or delete `key` (None).
type Op = (u8, Option<u16>);

fn append_ops(log: &mut Log, ops: &[Op]) {
    let keys: Vec<Vec<u8>> = ops.iter().map(|(k, _)| vec![b'k', *k]).collect();
    let values: Vec<Option<Vec<u8>>> = ops
        .iter()
        .map(|(_, v)| v.map(|v| v.to_be_bytes().to_vec()))
        .collect();
    let records: Vec<TestRecord<'_>> = keys
        .iter()
        .zip(&values)
        .map(|(k, v)| (Some(k.as_slice()), v.as_deref(), NOW))
        .collect();
    let batch = build_batch(&records);
    let headers = validate_batches(&batch, usize::MAX).unwrap();
    log.append(&batch, &headers, 0, NOW, false).unwrap();
}

/// Every record of the log from its start: (offset, key, value).
fn records(log: &Log) -> Vec<(i64, Vec<u8>, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    while offset < end {
        let data = log.read(offset, 1 << 20, end).unwrap().data;
        if data.is_empty() {
            break;
        }
        let mut rest = data;
        while !rest.is_empty() {
            let h = BatchHeader::parse(&rest).unwrap();
            let batch = rest.split_to(h.total_len());
            for r in decode(&batch).unwrap() {
                if r.offset >= offset {
                    out.push((
                        r.offset,
                        r.key.unwrap().to_vec(),
                        r.value.map(|v| v.to_vec()),
                    ));
                }
            }
            offset = h.last_offset() + 1;
        }
    }
    out
}

fn pass(log: &mut Log, dedupe: usize) -> bool {
    let upper = log.log_end_offset();
    let Some(plan) = log.plan_clean(upper, NOW) else {
        return false;
    };
    if !plan.due {
        return false;
    }
    let cleaned = clean(&plan, &resources(dedupe)).unwrap();
    log.commit_clean(cleaned).unwrap()
}

/// Checks the log against the model: each key's last record holds its
/// latest value (or is a tombstone / gone when deleted), offsets increase,
/// and the cleaned part holds each key at most once.
fn check(log: &Log, model: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) {
    let recs = records(log);
    assert!(recs.windows(2).all(|w| w[0].0 < w[1].0), "offsets increase");
    let mut last: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    for (_, k, v) in &recs {
        last.insert(k.clone(), v.clone());
    }
    for (k, v) in model {
        match (v, last.get(k)) {
            (Some(v), Some(Some(got))) => assert_eq!(got, v, "key {k:?}"),
            (Some(_), other) => panic!("key {k:?} lost its value: {other:?}"),
            (None, None | Some(None)) => {}
            (None, Some(Some(got))) => panic!("deleted key {k:?} came back as {got:?}"),
        }
    }
    let dirty = log.first_dirty_offset();
    let mut seen = std::collections::HashSet::new();
    for (o, k, _) in recs.iter().filter(|r| r.0 < dirty) {
        assert!(
            seen.insert(k.clone()),
            "key {k:?} twice in the clean part, at {o}"
        );
    }
}

#[test]
fn a_pass_keeps_the_last_value_of_each_key_with_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config(300, i64::MAX)).unwrap();
    let mut model = BTreeMap::new();
    for round in 0..20u16 {
        let ops: Vec<Op> = (0..5u8).map(|k| (k, Some(round * 10 + k as u16))).collect();
        for (k, v) in &ops {
            model.insert(vec![b'k', *k], v.map(|v| v.to_be_bytes().to_vec()));
        }
        append_ops(&mut log, &ops);
    }
    log.roll_if_not_empty().unwrap();
    let before = log.size_bytes();
    let segments = log.segment_count();
    assert!(pass(&mut log, 1 << 20));
    check(&log, &model);
    assert!(
        log.size_bytes() < before / 4,
        "{} of {before}",
        log.size_bytes()
    );
    // Groups are made by the sizes read: the next pass merges what this
    // one shrank.
    assert_eq!(log.segment_count(), segments);
    let recs = records(&log);
    assert_eq!(recs.len(), 5);
    // Offsets are those of the last round.
    assert_eq!(recs[0].0, 95);
    assert_eq!(log.first_dirty_offset(), 100);
    // Nothing dirty: no pass.
    assert!(!pass(&mut log, 1 << 20));
    append_ops(&mut log, &[(9, Some(9))]);
    model.insert(vec![b'k', 9], Some(9u16.to_be_bytes().to_vec()));
    log.roll_if_not_empty().unwrap();
    assert!(pass(&mut log, 1 << 20));
    check(&log, &model);
    assert!(log.segment_count() <= 3, "merged: {}", log.segment_count());
    // Appends and reads go on; a reopen reads the same records (gaps).
    append_ops(&mut log, &[(0, Some(999))]);
    model.insert(vec![b'k', 0], Some(999u16.to_be_bytes().to_vec()));
    drop(log);
    let log = Log::open(dir.path(), config(300, i64::MAX)).unwrap();
    check(&log, &model);
    assert_eq!(log.log_end_offset(), 102);
}

#[test]
fn tombstones_go_after_delete_retention_once_clean() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config(1 << 20, 0)).unwrap();
    append_ops(&mut log, &[(1, Some(1)), (2, Some(2)), (1, None)]);
    log.roll_if_not_empty().unwrap();
    assert!(pass(&mut log, 1 << 20));
    let recs = records(&log);
    assert_eq!(
        recs.len(),
        2,
        "the tombstone stays while it was dirty: {recs:?}"
    );
    assert_eq!(recs[1].2, None);
    // Next pass (something new is dirty): the clean tombstone is older
    // than delete.retention.ms = 0 and goes.
    append_ops(&mut log, &[(3, Some(3))]);
    log.roll_if_not_empty().unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let upper = log.log_end_offset();
    let plan = log.plan_clean(upper, crate::clock::now_ms()).unwrap();
    let cleaned = clean(&plan, &resources(1 << 20)).unwrap();
    assert!(log.commit_clean(cleaned).unwrap());
    let keys: Vec<Vec<u8>> = records(&log).into_iter().map(|r| r.1).collect();
    assert_eq!(keys, vec![vec![b'k', 2], vec![b'k', 3]]);
}

#[test]
fn a_small_dedupe_buffer_cleans_in_several_passes() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config(400, i64::MAX)).unwrap();
    let mut model = BTreeMap::new();
    for round in 0..10u16 {
        let ops: Vec<Op> = (0..20u8).map(|k| (k, Some(round))).collect();
        for (k, v) in &ops {
            model.insert(vec![b'k', *k], v.map(|v| v.to_be_bytes().to_vec()));
        }
        append_ops(&mut log, &ops);
    }
    log.roll_if_not_empty().unwrap();
    let end = log.log_end_offset();
    let mut passes = 0;
    while log.first_dirty_offset() < end {
        assert!(pass(&mut log, 10 * (2 + ENTRY_OVERHEAD)));
        check(&log, &model);
        passes += 1;
        assert!(passes < 50);
    }
    assert!(passes > 1);
    assert_eq!(records(&log).len(), 20);
}

#[test]
fn a_pass_over_a_log_that_moved_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config(300, i64::MAX)).unwrap();
    for round in 0..6u16 {
        append_ops(&mut log, &[(1, Some(round)), (2, Some(round))]);
    }
    log.roll_if_not_empty().unwrap();
    let plan = log.plan_clean(log.log_end_offset(), NOW).unwrap();
    let cleaned = clean(&plan, &resources(1 << 20)).unwrap();
    log.truncate_to(2).unwrap();
    assert!(!log.commit_clean(cleaned).unwrap());
    let left: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|n| n.ends_with(".cleaned"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(records(&log).len(), 2);
}

/// The files of a log directory with their contents.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn restore(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for e in fs::read_dir(dir).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
    }
    for (name, bytes) in files {
        fs::write(dir.join(name), bytes).unwrap();
    }
}

/// One file operation of a swap.
type Step = Box<dyn Fn(&Path)>;

/// A kill at every step of a swap: the directory as the crash left it,
/// reopened, holds the old records or the cleaned ones, never a mix.
#[test]
fn a_crash_at_any_step_of_the_swap_leaves_old_or_new() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = BTreeMap::new();
    let old_records;
    {
        let mut log = Log::open(dir.path(), config(250, i64::MAX)).unwrap();
        for round in 0..8u16 {
            let ops: Vec<Op> = (0..3u8).map(|k| (k, Some(round))).collect();
            for (k, v) in &ops {
                model.insert(vec![b'k', *k], v.map(|v| v.to_be_bytes().to_vec()));
            }
            append_ops(&mut log, &ops);
        }
        log.roll_if_not_empty().unwrap();
        old_records = records(&log);
        log.close().unwrap();
    }
    let before = snapshot(dir.path());
    // The pass's files, and the swap it decides.
    let (written, swap) = {
        let log = Log::open(dir.path(), config(250, i64::MAX)).unwrap();
        let plan = log.plan_clean(log.log_end_offset(), NOW).unwrap();
        let cleaned = clean(&plan, &resources(1 << 20)).unwrap();
        let swap = Swap {
            replaced: cleaned.replaced.iter().map(|(b, _)| *b).collect(),
            new: cleaned.new.iter().map(|(b, _)| *b).collect(),
            first_dirty: cleaned.first_dirty,
        };
        (snapshot(dir.path()), swap)
    };
    // Each step of Swap::apply, as a list of file operations.
    let mut steps: Vec<Step> = Vec::new();
    for &base in swap.replaced.iter().filter(|b| !swap.new.contains(b)) {
        for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            steps.push(Box::new(move |d: &Path| {
                let _ = fs::remove_file(d.join(file_name(base, suffix)));
            }));
        }
    }
    for &base in &swap.new {
        for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX, LOG_SUFFIX] {
            steps.push(Box::new(move |d: &Path| {
                fs::rename(
                    cleaned_path(d, base, suffix),
                    d.join(file_name(base, suffix)),
                )
                .unwrap();
            }));
        }
    }
    let new_records = {
        restore(dir.path(), &written);
        fs::write(dir.path().join(SWAP_FILE), swap.encode()).unwrap();
        let log = Log::open(dir.path(), config(250, i64::MAX)).unwrap();
        records(&log)
    };
    assert!(new_records.len() < old_records.len());
    // Crash before the swap was decided: the old records.
    restore(dir.path(), &written);
    let log = Log::open(dir.path(), config(250, i64::MAX)).unwrap();
    assert_eq!(records(&log), old_records);
    drop(log);
    assert_eq!(
        snapshot(dir.path())
            .keys()
            .filter(|n| n.ends_with(".cleaned"))
            .count(),
        0
    );
    // Crash after the decision, after any number of steps: the new ones.
    for done in 0..=steps.len() {
        restore(dir.path(), &written);
        fs::write(dir.path().join(SWAP_FILE), swap.encode()).unwrap();
        for step in &steps[..done] {
            step(dir.path());
        }
        let log = Log::open(dir.path(), config(250, i64::MAX)).unwrap();
        assert_eq!(records(&log), new_records, "after {done} steps");
        check(&log, &model);
    }
    // And the untouched directory still reads the old records.
    restore(dir.path(), &before);
    let log = Log::open(dir.path(), config(250, i64::MAX)).unwrap();
    assert_eq!(records(&log), old_records);
}

#[test]
fn keyless_records_are_refused() {
    let keyed = Bytes::from(build_batch(&[(
        Some(b"k".as_slice()),
        Some(b"v".as_slice()),
        NOW,
    )]));
    assert!(check_keyed(&keyed, usize::MAX).is_ok());
    let keyless = Bytes::from(build_batch(&[
        (Some(b"k".as_slice()), Some(b"v".as_slice()), NOW),
        (None, Some(b"v".as_slice()), NOW),
    ]));
    let e = check_keyed(&keyless, usize::MAX).unwrap_err();
    assert!(matches!(e, BatchError::NotAllowed { .. }), "{e}");
    assert!(e.to_string().contains("key"), "{e}");
}

#[test]
fn key_lengths_read_in_place_agree_with_the_decoder() {
    let value = vec![b'v'; 300];
    let key = vec![b'k'; 200];
    for keyless_at in [None, Some(0), Some(3), Some(9)] {
        let records: Vec<TestRecord<'_>> = (0..10)
            .map(|i| {
                let k = (keyless_at != Some(i)).then_some(key.as_slice());
                let v = (i % 4 != 1).then_some(value.as_slice());
                (k, v, NOW + i as i64 * 1000)
            })
            .collect();
        let batch = build_batch(&records);
        assert_eq!(
            first_keyless(&batch, 10),
            Some(keyless_at),
            "{keyless_at:?}"
        );
        let decoded = decode(&Bytes::from(batch.clone())).unwrap();
        assert_eq!(decoded.iter().position(|r| r.key.is_none()), keyless_at);
        // Records cut short: a keyless one before the cut, or no answer;
        // never "all keyed", never a panic.
        for cut in [61, 62, 100, batch.len() - 1] {
            let got = first_keyless(&batch[..cut], 10);
            assert!(
                got.is_none() || got == Some(keyless_at).filter(|k| k.is_some()),
                "cut at {cut}: {got:?}"
            );
        }
        assert_ne!(first_keyless(&batch, 11), Some(None));
    }
    for n in [0i64, 1, -1, 63, -64, 64, 300, -300, i64::MAX, i64::MIN] {
        let mut buf = Vec::new();
        let mut z = ((n << 1) ^ (n >> 63)) as u64;
        loop {
            let b = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                buf.push(b);
                break;
            }
            buf.push(b | 0x80);
        }
        assert_eq!(
            crate::log::batch::read_varint(&buf),
            Some((n, buf.len())),
            "{n}"
        );
    }
}

proptest! {
    #[test]
    fn first_keyless_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400), count in -2i32..20) {
        let _ = first_keyless(&bytes, count);
    }
}

#[test]
fn swap_file_round_trips() {
    let s = Swap {
        replaced: vec![0, 10, 20],
        new: vec![0],
        first_dirty: 31,
    };
    assert_eq!(Swap::decode(&s.encode()), Some(s));
    assert_eq!(
        Swap::decode("version=2\nreplaced=\nnew=\nfirst_dirty=1\n"),
        None
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random puts and deletes, appended in batches, with cleaner passes
    /// (of random dedupe sizes) and reopens between them: the log always
    /// agrees with a model map.
    #[test]
    fn the_log_agrees_with_a_model(
        steps in proptest::collection::vec(
            (proptest::collection::vec((0u8..12, proptest::option::weighted(0.8, 0u16..1000)), 1..8),
             0u8..4, 1usize..30),
            1..25),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(300, i64::MAX)).unwrap();
        let mut model = BTreeMap::new();
        for (ops, action, dedupe_keys) in steps {
            for (k, v) in &ops {
                model.insert(vec![b'k', *k], v.map(|v| v.to_be_bytes().to_vec()));
            }
            append_ops(&mut log, &ops);
            match action {
                0 => {
                    log.roll_if_not_empty().unwrap();
                    pass(&mut log, dedupe_keys * (2 + ENTRY_OVERHEAD));
                }
                1 => {
                    drop(log);
                    log = Log::open(dir.path(), config(300, i64::MAX)).unwrap();
                }
                _ => {}
            }
            check(&log, &model);
        }
    }
}
