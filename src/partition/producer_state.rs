//! Idempotent-producer state of one partition.
//!
//! Overview: for every producer id that wrote to the partition we keep its
//! epoch, the sequence of the last batch and the last few batches' sequence
//! and offset ranges. A new batch is checked against it before the append:
//! a retry of one of the cached batches is answered with the offsets it got
//! the first time (nothing is appended again), an older sequence is a
//! DUPLICATE_SEQUENCE_NUMBER, a gap is an OUT_OF_ORDER_SEQUENCE_NUMBER and an
//! older epoch is INVALID_PRODUCER_EPOCH.
//!
//! Transactions: a producer's first transactional batch opens its
//! transaction at that batch's offset; the coordinator's marker (a control
//! batch, COMMIT or ABORT) closes it. The last stable offset (LSO) is the
//! first offset of the oldest transaction still open, or whose marker is not
//! yet below the high watermark, capped at the high watermark:
//! `read_committed` consumers read up to it. Every aborted transaction is
//! kept as an [`AbortedTxn`] (by its marker's offset) so that fetches can
//! tell consumers which records to drop; they persist per segment in
//! `.txnindex` files (`txn_index.rs`), not in the snapshot.
//!
//! Consistency: pure data, mutated only under the partition's lock, in append
//! order.
//!
//! Crash safety: the table is persisted as snapshots at segment boundaries
//! ([`ProducerStateTable::encode`], files in `snapshot.rs`); at start it is
//! loaded from the newest snapshot and the batches after it are replayed
//! ([`ProducerStateTable::observe`]), which also rebuilds the open
//! transactions and the aborted ones whose markers are in that range.
//!
//! Snapshot format (big-endian): `version: u16 = 3`, `crc32c: u32` of all
//! that follows, `offset: i64` (the state is that of every batch below it),
//! `producers: u32`, then per producer `producer_id: i64`, `epoch: i16`,
//! `open_txn_first_offset: i64` (-1: none; absent in version 1),
//! `last_timestamp: i64` and `coordinator_epoch: i32` (-1: none; absent
//! before version 3), `batches: u8` and per cached batch `base_sequence:
//! i32`, `last_sequence: i32`, `base_offset: i64`, `last_offset: i64`.
//! Version 1 snapshots (written before transactions existed) are read as
//! having no open transaction; versions 1 and 2 as knowing no last
//! timestamp or coordinator epoch.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::log::batch::ControlType;

/// How many recent batches per producer are kept for duplicate detection
/// (Kafka allows 5 in-flight requests per idempotent producer).
pub const CACHED_BATCHES: usize = 5;

const NO_PRODUCER_ID: i64 = -1;

/// What kind of batch, as far as transactions are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    /// Outside any transaction.
    Plain,
    /// Records of a transaction.
    Transactional,
    /// A control batch: a coordinator's marker or another control record.
    Control(ControlType),
}

/// One appended batch as far as idempotence and transactions are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchIdentity {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub last_sequence: i32,
    pub kind: BatchKind,
    /// The batch's max timestamp as stored (-1: unknown).
    pub max_timestamp: i64,
    /// A transaction marker's coordinator epoch (-1 for other batches).
    pub coordinator_epoch: i32,
}

impl BatchIdentity {
    pub fn new(producer_id: i64, producer_epoch: i16, base_sequence: i32, count: i32) -> Self {
        // Sequences wrap at i32::MAX like Kafka's.
        let last = if count <= 0 {
            base_sequence
        } else {
            ((base_sequence as i64 + count as i64 - 1) % (i32::MAX as i64 + 1)) as i32
        };
        BatchIdentity {
            producer_id,
            producer_epoch,
            base_sequence,
            last_sequence: last,
            kind: BatchKind::Plain,
            max_timestamp: -1,
            coordinator_epoch: -1,
        }
    }

    pub fn with_kind(self, kind: BatchKind) -> Self {
        BatchIdentity { kind, ..self }
    }

    pub fn with_max_timestamp(self, max_timestamp: i64) -> Self {
        BatchIdentity {
            max_timestamp,
            ..self
        }
    }

    pub fn with_coordinator_epoch(self, coordinator_epoch: i32) -> Self {
        BatchIdentity {
            coordinator_epoch,
            ..self
        }
    }

    pub fn is_idempotent(&self) -> bool {
        self.producer_id != NO_PRODUCER_ID && self.base_sequence >= 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CachedBatch {
    base_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
    last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    recent: VecDeque<CachedBatch>,
    /// First offset of the producer's open transaction.
    open_txn: Option<i64>,
    /// Max timestamp of the producer's last batch or marker (-1: none).
    last_timestamp: i64,
    /// Coordinator epoch of the last marker written for it (-1: none).
    coordinator_epoch: i32,
}

impl Default for ProducerEntry {
    fn default() -> Self {
        ProducerEntry {
            epoch: 0,
            recent: VecDeque::new(),
            open_txn: None,
            last_timestamp: -1,
            coordinator_epoch: -1,
        }
    }
}

/// A producer's state in a partition, as DescribeProducers reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerView {
    pub producer_id: i64,
    pub epoch: i16,
    /// Sequence of its last batch, -1 if none is cached.
    pub last_sequence: i32,
    /// Max timestamp of its last batch or marker, -1 if unknown.
    pub last_timestamp: i64,
    /// Coordinator epoch of its last marker, -1 if none.
    pub coordinator_epoch: i32,
    /// First offset of its open transaction, -1 if none.
    pub txn_start_offset: i64,
}

/// A transaction its coordinator aborted, as fetches report it and as
/// Kafka's `.txnindex` entries hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    /// Offset of the transaction's first batch.
    pub first_offset: i64,
    /// Offset of its ABORT marker.
    pub last_offset: i64,
    /// The LSO once it was aborted: every transaction aborted later began
    /// at or after it.
    pub last_stable_offset: i64,
}

impl ProducerEntry {
    fn last_sequence(&self) -> Option<i32> {
        self.recent.back().map(|b| b.last_sequence)
    }
}

/// The outcome of checking a batch before it is appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Append,
    /// Already appended: answer with these offsets, append nothing.
    Duplicate { base_offset: i64, last_offset: i64 },
    /// A sequence older than the cached batches.
    DuplicateSequence,
    /// A gap in the sequence.
    OutOfOrder { expected: i32, got: i32 },
    /// The producer has been fenced by a newer epoch.
    InvalidEpoch { current: i16, got: i16 },
}

/// Producer states of one partition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
    /// (first offset, producer id) of every open transaction.
    open: BTreeSet<(i64, i64)>,
    /// (first offset, marker offset) of transactions closed since the
    /// LSO was last computed with a high watermark past their marker.
    closing: BTreeSet<(i64, i64)>,
    /// Aborted transactions by marker offset.
    aborted: BTreeMap<i64, AbortedTxn>,
    /// Markers seen since the table was built (not persisted): a produce
    /// verified with the coordinator appends only if none came meanwhile.
    markers_seen: u64,
}

fn next_sequence(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

impl ProducerStateTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Checks `batch` against the producer's state; does not change it.
    pub fn check(&self, batch: &BatchIdentity) -> SequenceCheck {
        if let BatchKind::Control(_) = batch.kind {
            // A marker from an older epoch than the producer's is a zombie's.
            return match self.producers.get(&batch.producer_id) {
                Some(e) if batch.producer_epoch < e.epoch => SequenceCheck::InvalidEpoch {
                    current: e.epoch,
                    got: batch.producer_epoch,
                },
                _ => SequenceCheck::Append,
            };
        }
        if !batch.is_idempotent() {
            return SequenceCheck::Append;
        }
        let Some(entry) = self.producers.get(&batch.producer_id) else {
            // Unknown producer (new, or its state left the log): accept.
            return SequenceCheck::Append;
        };
        if batch.producer_epoch < entry.epoch {
            return SequenceCheck::InvalidEpoch {
                current: entry.epoch,
                got: batch.producer_epoch,
            };
        }
        if batch.producer_epoch > entry.epoch {
            // A bumped epoch restarts sequences at 0.
            return if batch.base_sequence == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::OutOfOrder {
                    expected: 0,
                    got: batch.base_sequence,
                }
            };
        }
        if let Some(c) = entry.recent.iter().find(|c| {
            c.base_sequence == batch.base_sequence && c.last_sequence == batch.last_sequence
        }) {
            return SequenceCheck::Duplicate {
                base_offset: c.base_offset,
                last_offset: c.last_offset,
            };
        }
        let Some(last) = entry.last_sequence() else {
            return SequenceCheck::Append;
        };
        let expected = next_sequence(last);
        if batch.base_sequence == expected {
            return SequenceCheck::Append;
        }
        // Not the next one: older than what we hold is a duplicate we can no
        // longer answer with offsets; anything else is a gap.
        let oldest = entry.recent.front().map(|c| c.base_sequence).unwrap_or(0);
        if batch.base_sequence < expected
            && batch.base_sequence >= 0
            && batch.base_sequence < oldest
            || (batch.base_sequence < expected && batch.last_sequence <= last)
        {
            SequenceCheck::DuplicateSequence
        } else {
            SequenceCheck::OutOfOrder {
                expected,
                got: batch.base_sequence,
            }
        }
    }

    /// Records an appended batch (after a successful append, and while
    /// replaying the log at start). Returns the transaction an ABORT
    /// marker ended.
    pub fn observe(
        &mut self,
        batch: &BatchIdentity,
        base_offset: i64,
        last_offset: i64,
    ) -> Option<AbortedTxn> {
        if let BatchKind::Control(marker) = batch.kind {
            return self.observe_marker(batch, marker, base_offset);
        }
        // Transactional batches without a sequence (offsets a transaction
        // commits) still open the transaction.
        let transactional =
            batch.kind == BatchKind::Transactional && batch.producer_id != NO_PRODUCER_ID;
        if !batch.is_idempotent() && !transactional {
            return None;
        }
        let entry = self.producers.entry(batch.producer_id).or_default();
        if batch.producer_epoch != entry.epoch {
            entry.epoch = batch.producer_epoch;
            entry.recent.clear();
        }
        entry.last_timestamp = batch.max_timestamp;
        if transactional && entry.open_txn.is_none() {
            entry.open_txn = Some(base_offset);
            self.open.insert((base_offset, batch.producer_id));
        }
        if !batch.is_idempotent() {
            return None;
        }
        entry.recent.push_back(CachedBatch {
            base_sequence: batch.base_sequence,
            last_sequence: batch.last_sequence,
            base_offset,
            last_offset,
        });
        while entry.recent.len() > CACHED_BATCHES {
            entry.recent.pop_front();
        }
        None
    }

    /// A control batch at `offset`: a COMMIT or ABORT marker closes the
    /// producer's open transaction (a marker for a transaction with no
    /// records here closes nothing). A marker's newer epoch is the
    /// producer's from then on.
    fn observe_marker(
        &mut self,
        batch: &BatchIdentity,
        marker: ControlType,
        offset: i64,
    ) -> Option<AbortedTxn> {
        if matches!(marker, ControlType::Other(_)) || batch.producer_id == NO_PRODUCER_ID {
            return None;
        }
        self.markers_seen += 1;
        let entry = self.producers.entry(batch.producer_id).or_default();
        if batch.producer_epoch > entry.epoch {
            entry.epoch = batch.producer_epoch;
            entry.recent.clear();
        }
        entry.last_timestamp = batch.max_timestamp;
        entry.coordinator_epoch = batch.coordinator_epoch;
        let first = entry.open_txn.take()?;
        self.open.remove(&(first, batch.producer_id));
        self.closing.insert((first, offset));
        if marker != ControlType::Abort {
            return None;
        }
        let aborted = AbortedTxn {
            producer_id: batch.producer_id,
            first_offset: first,
            last_offset: offset,
            last_stable_offset: self.open.first().map_or(offset + 1, |&(o, _)| o),
        };
        self.aborted.insert(offset, aborted);
        Some(aborted)
    }

    /// The last stable offset under the high watermark `hwm`: the first
    /// offset of the oldest transaction open or closed by a marker at or
    /// above `hwm`, or `hwm` itself. Forgets closings below `hwm`.
    pub fn last_stable_offset(&mut self, hwm: i64) -> i64 {
        self.closing.retain(|&(_, marker)| marker >= hwm);
        let open = self.open.first().map(|&(o, _)| o);
        let closing = self.closing.first().map(|&(o, _)| o);
        [open, closing].into_iter().flatten().fold(hwm, i64::min)
    }

    /// Every producer with state here, by id.
    pub fn producers(&self) -> Vec<ProducerView> {
        let mut out: Vec<ProducerView> = self
            .producers
            .iter()
            .map(|(id, e)| ProducerView {
                producer_id: *id,
                epoch: e.epoch,
                last_sequence: e.last_sequence().unwrap_or(-1),
                last_timestamp: e.last_timestamp,
                coordinator_epoch: e.coordinator_epoch,
                txn_start_offset: e.open_txn.unwrap_or(-1),
            })
            .collect();
        out.sort_unstable_by_key(|p| p.producer_id);
        out
    }

    /// How many transaction markers this table has seen (the guard of a
    /// verified transactional produce).
    pub fn markers_seen(&self) -> u64 {
        self.markers_seen
    }

    /// Whether the producer has a transaction open in this partition.
    pub fn has_open_txn(&self, producer_id: i64) -> bool {
        self.producers
            .get(&producer_id)
            .is_some_and(|e| e.open_txn.is_some())
    }

    /// How many transactions are open in this partition.
    pub fn open_txns(&self) -> usize {
        self.open.len()
    }

    /// The aborted transactions a read of `[from, to)` must report: those
    /// whose marker is at or after `from` and whose first batch is before
    /// `to`, in marker order.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        let mut out = Vec::new();
        for a in self.aborted.range(from..).map(|(_, a)| a) {
            if a.first_offset < to {
                out.push(*a);
            }
            // Every later abort began at or after this one's LSO.
            if a.last_stable_offset >= to {
                break;
            }
        }
        out
    }

    /// The aborted transactions whose markers are in `[from, to)` (one
    /// segment's `.txnindex`).
    pub fn aborted_markers_in(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        if from >= to {
            return Vec::new();
        }
        self.aborted.range(from..to).map(|(_, a)| *a).collect()
    }

    /// Adds aborted transactions read from a `.txnindex` file.
    pub fn add_aborted(&mut self, entries: impl IntoIterator<Item = AbortedTxn>) {
        for a in entries {
            self.aborted.insert(a.last_offset, a);
        }
    }

    /// Keeps only the aborted transactions whose markers are in
    /// `[from, to)` (after the log start moved, or a truncation).
    pub fn retain_aborted(&mut self, from: i64, to: i64) {
        self.aborted
            .retain(|&marker, _| marker >= from && marker < to);
    }
}

const SNAPSHOT_VERSION: u16 = 3;
/// Snapshots written before transactions: no open-transaction field.
const SNAPSHOT_VERSION_1: u16 = 1;
/// Snapshots without the last timestamp and coordinator epoch.
const SNAPSHOT_VERSION_2: u16 = 2;
const SNAPSHOT_HEADER: usize = 2 + 4 + 8 + 4;
const PRODUCER_LEN: usize = 8 + 2 + 1;
const OPEN_TXN_LEN: usize = 8;
/// `last_timestamp: i64`, `coordinator_epoch: i32` (version 3).
const LAST_WRITE_LEN: usize = 8 + 4;
const BATCH_LEN: usize = 4 + 4 + 8 + 8;

/// Why a snapshot could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("producer snapshot is invalid: {0}")]
pub struct SnapshotError(String);

/// A cursor over snapshot bytes that fails instead of panicking.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let (head, rest) = self
            .0
            .split_at_checked(N)
            .ok_or_else(|| SnapshotError("truncated".into()))?;
        self.0 = rest;
        Ok(head.try_into().unwrap_or([0; N]))
    }
}

impl ProducerStateTable {
    /// The table as a snapshot taken at `offset` (format in the module docs).
    pub fn encode(&self, offset: i64) -> Vec<u8> {
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort_unstable();
        let mut body = Vec::with_capacity(
            12 + self.producers.len()
                * (PRODUCER_LEN + OPEN_TXN_LEN + LAST_WRITE_LEN + CACHED_BATCHES * BATCH_LEN),
        );
        body.extend_from_slice(&offset.to_be_bytes());
        body.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        for id in ids {
            let e = &self.producers[id];
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&e.epoch.to_be_bytes());
            body.extend_from_slice(&e.open_txn.unwrap_or(-1).to_be_bytes());
            body.extend_from_slice(&e.last_timestamp.to_be_bytes());
            body.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
            body.push(e.recent.len() as u8);
            for b in &e.recent {
                body.extend_from_slice(&b.base_sequence.to_be_bytes());
                body.extend_from_slice(&b.last_sequence.to_be_bytes());
                body.extend_from_slice(&b.base_offset.to_be_bytes());
                body.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        let mut out = Vec::with_capacity(6 + body.len());
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a snapshot into (its offset, the table). Checks the version,
    /// the CRC and every length; never panics.
    pub fn decode(bytes: &[u8]) -> Result<(i64, ProducerStateTable), SnapshotError> {
        if bytes.len() < SNAPSHOT_HEADER {
            return Err(SnapshotError(format!("too short. size={}", bytes.len())));
        }
        let mut r = Reader(bytes);
        let version = u16::from_be_bytes(r.take()?);
        if !matches!(
            version,
            SNAPSHOT_VERSION | SNAPSHOT_VERSION_2 | SNAPSHOT_VERSION_1
        ) {
            return Err(SnapshotError(format!("unknown version. version={version}")));
        }
        let crc = u32::from_be_bytes(r.take()?);
        let actual = crc32c::crc32c(r.0);
        if crc != actual {
            return Err(SnapshotError(format!(
                "crc mismatch. expected={crc}, actual={actual}"
            )));
        }
        let offset = i64::from_be_bytes(r.take()?);
        let count = u32::from_be_bytes(r.take()?) as usize;
        if count > r.0.len() / PRODUCER_LEN {
            return Err(SnapshotError(format!(
                "producer count too large. count={count}"
            )));
        }
        let mut table = ProducerStateTable::new();
        for _ in 0..count {
            let id = i64::from_be_bytes(r.take()?);
            let epoch = i16::from_be_bytes(r.take()?);
            let open_txn = if version == SNAPSHOT_VERSION_1 {
                None
            } else {
                Some(i64::from_be_bytes(r.take()?)).filter(|o| *o >= 0)
            };
            let (last_timestamp, coordinator_epoch) = if version == SNAPSHOT_VERSION {
                (i64::from_be_bytes(r.take()?), i32::from_be_bytes(r.take()?))
            } else {
                (-1, -1)
            };
            let [n] = r.take::<1>()?;
            if n as usize > CACHED_BATCHES {
                return Err(SnapshotError(format!(
                    "too many batches. producer_id={id}, batches={n}"
                )));
            }
            let mut recent = VecDeque::with_capacity(n as usize);
            for _ in 0..n {
                recent.push_back(CachedBatch {
                    base_sequence: i32::from_be_bytes(r.take()?),
                    last_sequence: i32::from_be_bytes(r.take()?),
                    base_offset: i64::from_be_bytes(r.take()?),
                    last_offset: i64::from_be_bytes(r.take()?),
                });
            }
            if let Some(first) = open_txn {
                table.open.insert((first, id));
            }
            table.producers.insert(
                id,
                ProducerEntry {
                    epoch,
                    recent,
                    open_txn,
                    last_timestamp,
                    coordinator_epoch,
                },
            );
        }
        if !r.0.is_empty() {
            return Err(SnapshotError(format!("{} trailing bytes", r.0.len())));
        }
        Ok((offset, table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(seq: i32, count: i32) -> BatchIdentity {
        BatchIdentity::new(7, 0, seq, count)
    }

    #[test]
    fn in_order_batches_append() {
        let mut t = ProducerStateTable::new();
        assert_eq!(t.check(&b(0, 5)), SequenceCheck::Append);
        t.observe(&b(0, 5), 0, 4);
        assert_eq!(t.check(&b(5, 5)), SequenceCheck::Append);
    }

    #[test]
    fn retry_of_cached_batch_is_a_duplicate_with_offsets() {
        let mut t = ProducerStateTable::new();
        t.observe(&b(0, 5), 10, 14);
        t.observe(&b(5, 5), 15, 19);
        assert_eq!(
            t.check(&b(0, 5)),
            SequenceCheck::Duplicate {
                base_offset: 10,
                last_offset: 14
            }
        );
    }

    #[test]
    fn gap_is_out_of_order() {
        let mut t = ProducerStateTable::new();
        t.observe(&b(0, 5), 0, 4);
        assert_eq!(
            t.check(&b(7, 1)),
            SequenceCheck::OutOfOrder {
                expected: 5,
                got: 7
            }
        );
    }

    #[test]
    fn old_sequence_beyond_cache_is_duplicate_sequence() {
        let mut t = ProducerStateTable::new();
        for i in 0..10 {
            t.observe(&b(i, 1), i as i64, i as i64);
        }
        assert_eq!(t.check(&b(1, 1)), SequenceCheck::DuplicateSequence);
    }

    #[test]
    fn older_epoch_is_fenced_and_new_epoch_restarts_at_zero() {
        let mut t = ProducerStateTable::new();
        t.observe(&BatchIdentity::new(7, 2, 0, 1), 0, 0);
        assert_eq!(
            t.check(&BatchIdentity::new(7, 1, 1, 1)),
            SequenceCheck::InvalidEpoch { current: 2, got: 1 }
        );
        assert_eq!(
            t.check(&BatchIdentity::new(7, 3, 0, 1)),
            SequenceCheck::Append
        );
        assert!(matches!(
            t.check(&BatchIdentity::new(7, 3, 4, 1)),
            SequenceCheck::OutOfOrder { .. }
        ));
    }

    #[test]
    fn non_idempotent_batches_are_not_tracked() {
        let mut t = ProducerStateTable::new();
        let plain = BatchIdentity::new(-1, -1, -1, 3);
        assert_eq!(t.check(&plain), SequenceCheck::Append);
        t.observe(&plain, 0, 2);
        assert!(t.is_empty());
    }

    fn table_from(ops: &[(i64, i16, i32, i32)]) -> ProducerStateTable {
        let mut t = ProducerStateTable::new();
        let mut offset = 0i64;
        for &(pid, epoch, seq, count) in ops {
            let id = BatchIdentity::new(pid, epoch, seq, count).with_max_timestamp(1_000 + offset);
            t.observe(&id, offset, offset + count as i64 - 1);
            offset += count as i64;
        }
        t
    }

    #[test]
    fn snapshot_round_trips_and_answers_retries_the_same() {
        let t = table_from(&[(7, 0, 0, 5), (8, 1, 0, 2), (7, 0, 5, 5), (7, 0, 10, 1)]);
        let bytes = t.encode(13);
        let (offset, back) = ProducerStateTable::decode(&bytes).expect("decode");
        assert_eq!(offset, 13);
        assert_eq!(back, t);
        assert_eq!(
            back.check(&b(5, 5)),
            SequenceCheck::Duplicate {
                base_offset: 7,
                last_offset: 11
            }
        );
    }

    #[test]
    fn a_version_1_snapshot_reads_as_having_no_open_transaction() {
        let mut body = Vec::new();
        body.extend_from_slice(&40i64.to_be_bytes()); // offset
        body.extend_from_slice(&1u32.to_be_bytes()); // producers
        body.extend_from_slice(&7i64.to_be_bytes());
        body.extend_from_slice(&2i16.to_be_bytes());
        body.push(1);
        for v in [3i32, 4] {
            body.extend_from_slice(&v.to_be_bytes());
        }
        for v in [30i64, 31] {
            body.extend_from_slice(&v.to_be_bytes());
        }
        let mut bytes = 1u16.to_be_bytes().to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        bytes.extend_from_slice(&body);
        let (offset, t) = ProducerStateTable::decode(&bytes).expect("decode");
        assert_eq!(offset, 40);
        assert!(!t.has_open_txn(7));
        assert_eq!(
            t.check(&BatchIdentity::new(7, 2, 3, 2)),
            SequenceCheck::Duplicate {
                base_offset: 30,
                last_offset: 31
            }
        );
    }

    #[test]
    fn the_last_timestamp_and_coordinator_epoch_come_from_the_last_write() {
        let mut t = ProducerStateTable::new();
        let view = |t: &ProducerStateTable| t.producers()[0];
        t.observe(&BatchIdentity::new(7, 0, 0, 1), 0, 0);
        assert_eq!(
            (view(&t).last_timestamp, view(&t).coordinator_epoch),
            (-1, -1)
        );
        let txn = BatchIdentity::new(7, 0, 1, 2)
            .with_kind(BatchKind::Transactional)
            .with_max_timestamp(1_500);
        t.observe(&txn, 1, 2);
        assert_eq!(
            (view(&t).last_timestamp, view(&t).txn_start_offset),
            (1_500, 1)
        );
        let commit = BatchIdentity::new(7, 0, -1, 1)
            .with_kind(BatchKind::Control(ControlType::Commit))
            .with_max_timestamp(1_600)
            .with_coordinator_epoch(4);
        t.observe(&commit, 3, 3);
        let v = view(&t);
        assert_eq!(
            (
                v.last_sequence,
                v.last_timestamp,
                v.coordinator_epoch,
                v.txn_start_offset
            ),
            (2, 1_600, 4, -1)
        );
        let (_, back) = ProducerStateTable::decode(&t.encode(4)).expect("decode");
        assert_eq!(back.producers(), t.producers());
    }

    #[test]
    fn a_version_2_snapshot_reads_as_knowing_no_last_write() {
        let mut body = Vec::new();
        body.extend_from_slice(&40i64.to_be_bytes()); // offset
        body.extend_from_slice(&1u32.to_be_bytes()); // producers
        body.extend_from_slice(&7i64.to_be_bytes());
        body.extend_from_slice(&2i16.to_be_bytes());
        body.extend_from_slice(&35i64.to_be_bytes()); // open transaction
        body.push(0);
        let mut bytes = 2u16.to_be_bytes().to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        bytes.extend_from_slice(&body);
        let (_, t) = ProducerStateTable::decode(&bytes).expect("decode");
        let v = t.producers()[0];
        assert_eq!((v.producer_id, v.epoch, v.txn_start_offset), (7, 2, 35));
        assert_eq!((v.last_timestamp, v.coordinator_epoch), (-1, -1));
    }

    #[test]
    fn open_transactions_round_trip_through_a_snapshot() {
        let mut t = ProducerStateTable::new();
        let txn = |pid, seq| BatchIdentity::new(pid, 0, seq, 1).with_kind(BatchKind::Transactional);
        t.observe(&txn(7, 0), 5, 5);
        t.observe(&txn(8, 0), 6, 6);
        t.observe(&txn(7, 1), 7, 7);
        assert_eq!(t.last_stable_offset(100), 5);
        let (_, mut back) = ProducerStateTable::decode(&t.encode(8)).expect("decode");
        assert!(back.has_open_txn(7) && back.has_open_txn(8));
        assert_eq!(back.last_stable_offset(100), 5);
        let abort =
            BatchIdentity::new(7, 0, -1, 1).with_kind(BatchKind::Control(ControlType::Abort));
        let aborted = back.observe(&abort, 8, 8).expect("aborted");
        assert_eq!((aborted.first_offset, aborted.last_stable_offset), (5, 6));
        // The marker is not below the high watermark yet: still unstable.
        assert_eq!(back.last_stable_offset(8), 5);
        assert_eq!(back.last_stable_offset(9), 6);
    }

    #[test]
    fn damaged_snapshots_are_refused() {
        let bytes = table_from(&[(7, 0, 0, 5), (9, 2, 0, 1)]).encode(6);
        for cut in 0..bytes.len() {
            assert!(
                ProducerStateTable::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(ProducerStateTable::decode(&bad).is_err(), "flip at {i}");
        }
    }

    proptest::proptest! {
        #[test]
        fn snapshot_round_trip_any_table(
            ops in proptest::collection::vec((0i64..6, 0i16..3, 0i32..1000, 1i32..20), 0..60),
            offset in 0i64..i64::MAX,
        ) {
            let t = table_from(&ops);
            let (o, back) = ProducerStateTable::decode(&t.encode(offset)).expect("decode");
            proptest::prop_assert_eq!(o, offset);
            proptest::prop_assert_eq!(back, t);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = ProducerStateTable::decode(&bytes);
        }
    }

    #[test]
    fn sequence_wraps() {
        let mut t = ProducerStateTable::new();
        t.observe(&b(i32::MAX, 1), 0, 0);
        assert_eq!(t.check(&b(0, 1)), SequenceCheck::Append);
    }
}
