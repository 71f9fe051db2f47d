//! Unit and property tests of transactions in a partition: the last
//! stable offset, aborted transactions in reads, markers, and how both
//! survive a restart, a lost snapshot and a truncation.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use prometheus_client::metrics::histogram::Histogram;
use proptest::prelude::*;

use super::durability::{Durability, SyncMetrics};
use super::*;
use crate::log::batch::{build_batch_with, ControlType};

const TRANSACTIONAL: i16 = 0x10;

fn open(dir: &Path) -> Arc<Partition> {
    let log_dir = LogDir {
        path: dir.to_path_buf(),
        durability: Durability::new(false, SyncMetrics::new(Histogram::new([0.01]))),
        node_id: 1,
    };
    // Small segments: a few batches seal several.
    let topic = TopicConfig::with("t", &[("segment.bytes", "400"), ("retention.ms", "-1")]);
    let config = PartitionConfig::from_topic(
        Arc::new(topic),
        &crate::writeback::Writeback::default(),
        &Arc::default(),
    );
    let id = Uuid::from_u128(0x0074_786e);
    Arc::new(Partition::open(&log_dir, "t", id, 0, 0, config, None).expect("open"))
}

/// Sequences per producer, so every batch is the next one.
#[derive(Default)]
struct Producers(BTreeMap<i64, i32>);

impl Producers {
    fn batch(&mut self, pid: i64, transactional: bool, records: usize) -> Bytes {
        let seq = self.0.entry(pid).or_default();
        let values: Vec<Vec<u8>> = (0..records).map(|i| format!("v{i}").into_bytes()).collect();
        let recs: Vec<_> = values
            .iter()
            .map(|v| (None, Some(v.as_slice()), 1_000))
            .collect();
        let attributes = if transactional { TRANSACTIONAL } else { 0 };
        let b = build_batch_with(attributes, pid, 0, *seq, &recs);
        *seq += records as i32;
        Bytes::from(b)
    }
}

fn txn(p: &Partition, ps: &mut Producers, pid: i64, records: usize) -> AppendResult {
    p.append_transactional(&ps.batch(pid, true, records), 0, None)
        .expect("transactional append")
}

fn marker(p: &Partition, pid: i64, kind: ControlType) -> i64 {
    p.append_marker(pid, 0, kind, 0, 0)
        .expect("marker")
        .base_offset
}

fn committed_read(p: &Partition, from: i64) -> PartitionRead {
    p.read_isolated(from, 1 << 20, ReadMode::Bytes, true)
        .expect("read")
}

fn data_len(r: &PartitionRead) -> usize {
    match &r.data {
        ReadData::Bytes(b) => b.len(),
        other => panic!("expected bytes, got {other:?}"),
    }
}

#[test]
fn clients_cannot_write_transactional_batches_outside_a_transaction_or_markers() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path());
    let mut ps = Producers::default();
    let err = p
        .append(&ps.batch(7, true, 1), 0)
        .expect_err("transactional batch without a transaction");
    assert!(
        matches!(err, PartitionError::Batch(BatchError::NotAllowed { .. })),
        "{err:?}"
    );
    let control = Bytes::from(crate::log::batch::marker_batch(
        7,
        0,
        ControlType::Commit,
        0,
        0,
    ));
    let err = p
        .append_transactional(&control, 0, None)
        .expect_err("a client's control batch");
    assert!(
        matches!(err, PartitionError::Batch(BatchError::NotAllowed { .. })),
        "{err:?}"
    );
    assert_eq!(p.log_end_offset(), 0);
}

#[test]
fn the_last_stable_offset_waits_for_the_oldest_open_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path());
    let mut ps = Producers::default();
    p.append(&ps.batch(9, false, 2), 0).expect("plain"); // 0..1
    let t7 = txn(&p, &mut ps, 7, 3); // 2..4
    p.append(&ps.batch(9, false, 1), 0).expect("plain"); // 5
    let t8 = txn(&p, &mut ps, 8, 1); // 6
    assert_eq!((t7.base_offset, t8.base_offset), (2, 6));
    assert_eq!(p.high_watermark(), 7);
    assert_eq!(p.last_stable_offset(), 2);
    assert_eq!(p.open_transactions(), 2);

    // read_committed stops at the LSO; read_uncommitted does not.
    let r = committed_read(&p, 0);
    assert_eq!(r.last_stable_offset, 2);
    assert_eq!(read_to_end(&p, true), (2, vec![]));
    assert_eq!(read_to_end(&p, false), (7, vec![]));
    let r = committed_read(&p, 2);
    assert_eq!(data_len(&r), 0, "nothing stable at the LSO yet");

    assert_eq!(marker(&p, 7, ControlType::Commit), 7);
    assert_eq!(p.last_stable_offset(), 6, "now transaction 8 holds it");
    assert_eq!(marker(&p, 8, ControlType::Abort), 8);
    assert_eq!(p.last_stable_offset(), 9);
    assert_eq!(p.open_transactions(), 0);
    assert_eq!(
        read_to_end(&p, true),
        (
            9,
            vec![AbortedTxn {
                producer_id: 8,
                first_offset: 6,
                last_offset: 8,
                last_stable_offset: 9
            }]
        )
    );
    // A read that ends before the aborted transaction begins lists nothing.
    let r = p.read_isolated(0, 1, ReadMode::Bytes, true).expect("read");
    assert_eq!(data_end(&bytes_of(&r)), Some(2));
    assert!(r.aborted.is_empty());
    // read_uncommitted never lists aborted transactions.
    assert_eq!(read_to_end(&p, false).1, vec![]);
}

/// Reads from 0 until a read returns nothing: where the data ends and
/// every aborted transaction the reads listed, once each.
fn read_to_end(p: &Partition, read_committed: bool) -> (i64, Vec<AbortedTxn>) {
    let (mut at, mut aborted) = (0, Vec::<AbortedTxn>::new());
    loop {
        let r = p
            .read_isolated(at, 1 << 20, ReadMode::Bytes, read_committed)
            .expect("read");
        let Some(end) = data_end(&bytes_of(&r)) else {
            return (at, aborted);
        };
        for a in r.aborted {
            if !aborted.contains(&a) {
                aborted.push(a);
            }
        }
        at = end;
    }
}

fn bytes_of(r: &PartitionRead) -> Bytes {
    match &r.data {
        ReadData::Bytes(b) => b.clone(),
        other => panic!("expected bytes, got {other:?}"),
    }
}

#[test]
fn a_marker_after_the_verification_refuses_the_append() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path());
    let mut ps = Producers::default();
    let guard = p.marker_guard();
    txn(&p, &mut ps, 7, 1);
    marker(&p, 7, ControlType::Abort);
    let batch = ps.batch(7, true, 1);
    let err = p
        .append_transactional(&batch, 0, Some(guard))
        .expect_err("a marker came since the verification");
    assert!(
        matches!(err, PartitionError::MarkerSinceVerified { .. }),
        "{err:?}"
    );
    assert_eq!(
        p.open_transactions(),
        0,
        "the aborted transaction stays closed"
    );
    let fresh = p.marker_guard();
    p.append_transactional(&batch, 0, Some(fresh))
        .expect("verified again");
}

#[test]
fn a_marker_from_an_older_epoch_is_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path());
    p.append_marker(7, 3, ControlType::Abort, 0, 0)
        .expect("marker at epoch 3");
    let err = p
        .append_marker(7, 2, ControlType::Commit, 0, 0)
        .expect_err("marker at epoch 2");
    assert!(
        matches!(
            err,
            PartitionError::InvalidProducerEpoch {
                current: 3,
                got: 2,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_truncation_below_a_marker_reopens_its_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path());
    let mut ps = Producers::default();
    txn(&p, &mut ps, 7, 2); // 0..1
    let abort = marker(&p, 7, ControlType::Abort); // 2
    assert_eq!(p.aborted_between(0, 3).len(), 1);
    p.truncate_to(abort).expect("truncate");
    assert!(p.aborted_between(0, 3).is_empty());
    assert_eq!(p.last_stable_offset(), 0);
    assert_eq!(p.open_transactions(), 1);
}

/// A compacted partition: an aborted transaction's records supersede
/// nothing and go at the next pass; an open transaction's stay.
#[test]
fn compaction_drops_aborted_records_and_keeps_what_they_would_supersede() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = LogDir {
        path: dir.path().to_path_buf(),
        durability: Durability::new(false, SyncMetrics::new(Histogram::new([0.01]))),
        node_id: 1,
    };
    let topic = TopicConfig::with(
        "t",
        &[
            ("segment.bytes", "200"),
            ("cleanup.policy", "compact"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("retention.ms", "-1"),
            ("remote.storage.enable", "false"),
        ],
    );
    let config = PartitionConfig::from_topic(
        Arc::new(topic),
        &crate::writeback::Writeback::default(),
        &Arc::default(),
    );
    let p = Partition::open(&log_dir, "t", Uuid::from_u128(9), 0, 0, config, None).expect("open");
    let keyed = |attributes: i16, pid: i64, seq: i32, key: &str, value: &str| {
        Bytes::from(build_batch_with(
            attributes,
            pid,
            0,
            seq,
            &[(Some(key.as_bytes()), Some(value.as_bytes()), 1_000)],
        ))
    };
    p.append(&keyed(0, -1, -1, "k", "committed"), 0)
        .expect("plain");
    p.append_transactional(&keyed(TRANSACTIONAL, 7, 0, "k", "aborted"), 0, None)
        .expect("txn");
    p.append_marker(7, 0, ControlType::Abort, 0, 0)
        .expect("abort");
    for i in 0..6 {
        p.append(&keyed(0, -1, -1, &format!("x{i}"), "filler"), 0)
            .expect("filler");
    }
    p.append_transactional(&keyed(TRANSACTIONAL, 8, 0, "k", "open"), 0, None)
        .expect("open txn");
    for i in 6..12 {
        p.append(&keyed(0, -1, -1, &format!("x{i}"), "filler"), 0)
            .expect("filler");
    }
    let plan = p
        .clean_plan(crate::clock::now_ms())
        .expect("plan")
        .expect("a plan");
    let resources = crate::log::cleaner::Resources {
        dedupe_bytes: 1 << 20,
        throttle: crate::log::cleaner::Throttle::new(None),
    };
    p.clean(&plan, &resources).expect("clean");
    let mut values = Vec::new();
    let mut at = 0;
    loop {
        let r = p.read(at, 1 << 20, ReadMode::Bytes).expect("read");
        let data = bytes_of(&r);
        let Some(end) = data_end(&data) else { break };
        let mut pos = 0;
        while pos < data.len() {
            let h = BatchHeader::parse(&data[pos..]).expect("header");
            let batch = data.slice(pos..pos + h.total_len());
            if !h.is_control() {
                for rec in crate::log::batch::stored_records(&batch, &h).expect("records") {
                    if rec.key.as_deref() == Some(b"k".as_slice()) {
                        values.push(String::from_utf8(rec.value.unwrap().to_vec()).unwrap());
                    }
                }
            }
            pos += h.total_len();
        }
        at = end;
    }
    assert_eq!(values, vec!["committed".to_string(), "open".to_string()]);
}

/// One step of a random history.
#[derive(Debug, Clone)]
enum Op {
    Plain(i64),
    Txn(i64, usize),
    Commit(i64),
    Abort(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0i64..3).prop_map(Op::Plain),
        (0i64..3, 1usize..4).prop_map(|(p, n)| Op::Txn(p, n)),
        (0i64..3).prop_map(Op::Commit),
        (0i64..3).prop_map(Op::Abort),
    ]
}

/// What the partition must say: open transactions' first offsets and the
/// aborted transactions as (producer, first, marker).
#[derive(Default, Debug)]
struct Model {
    open: BTreeMap<i64, i64>,
    aborted: Vec<(i64, i64, i64)>,
}

fn check(p: &Partition, m: &Model) -> Result<(), TestCaseError> {
    let hw = p.high_watermark();
    let lso = m.open.values().copied().min().unwrap_or(hw);
    prop_assert_eq!(p.last_stable_offset(), lso);
    prop_assert_eq!(p.open_transactions(), m.open.len());
    let got: Vec<(i64, i64, i64)> = p
        .aborted_between(0, i64::MAX)
        .iter()
        .map(|a| (a.producer_id, a.first_offset, a.last_offset))
        .collect();
    prop_assert_eq!(got, m.aborted.clone());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Any history of transactional and plain batches and markers: the
    /// LSO and aborted transactions follow the model, and stay the same
    /// after a clean restart, after a restart without close (a crash),
    /// and after a restart with every producer snapshot lost.
    #[test]
    fn transactions_follow_the_model_across_restarts(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut ps = Producers::default();
        let mut m = Model::default();
        let p = open(dir.path());
        for op in &ops {
            match *op {
                Op::Plain(pid) => {
                    // A producer with an open transaction only writes in it.
                    if !m.open.contains_key(&(pid + 10)) {
                        p.append(&ps.batch(pid + 10, false, 1), 0).expect("plain");
                    }
                }
                Op::Txn(pid, n) => {
                    let r = txn(&p, &mut ps, pid, n);
                    m.open.entry(pid).or_insert(r.base_offset);
                }
                Op::Commit(pid) | Op::Abort(pid) => {
                    let kind = if matches!(op, Op::Commit(_)) { ControlType::Commit } else { ControlType::Abort };
                    let at = marker(&p, pid, kind);
                    if let Some(first) = m.open.remove(&pid) {
                        if kind == ControlType::Abort {
                            m.aborted.push((pid, first, at));
                        }
                    }
                }
            }
            check(&p, &m)?;
        }
        p.close().expect("close");
        drop(p);
        let p = open(dir.path());
        check(&p, &m)?;
        // A crash: no close, so no snapshot at the end.
        drop(p);
        let p = open(dir.path());
        check(&p, &m)?;
        drop(p);
        for o in snapshot::list(dir.path()) {
            std::fs::remove_file(snapshot::path(dir.path(), o)).expect("remove snapshot");
        }
        let p = open(dir.path());
        check(&p, &m)?;
    }
}
