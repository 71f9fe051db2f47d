//! Producer state and leader epochs from the log: rebuilt at open from the
//! newest snapshot and the batches after it, snapshotted when the log rolls,
//! and handed to the tier with each sealed segment.

use std::path::Path;

use bytes::Bytes;

use super::producer_state::BatchKind;
use super::{
    snapshot, txn_index, BatchHeader, BatchIdentity, LeaderEpochCache, Partition, PartitionError,
    ProducerStateTable, SegmentState,
};
use crate::log::batch::control_marker;
use crate::log::{Log, SealedSegmentInfo};

impl Partition {
    /// Runs `f` on the log, then writes the producer snapshot at the new
    /// active segment's base if `f` rolled it (whether or not `f` then
    /// failed): for rolls that take no records (retention, DeleteRecords,
    /// sealing), after which `producers` is the state at the new base.
    pub(super) fn snapshot_roll<T>(
        &self,
        log: &mut Log,
        producers: &ProducerStateTable,
        f: impl FnOnce(&mut Log) -> Result<T, crate::log::LogError>,
    ) -> Result<T, PartitionError> {
        let active_before = log.active_base_offset();
        let out = f(log);
        self.snapshot_if_rolled(log, producers, active_before);
        Ok(out?)
    }

    /// Writes the sealed segment's aborted transactions and then the
    /// producer snapshot at the active segment's base when the log rolled
    /// since `active_before` (fsynced: once tiered segments are deleted,
    /// the snapshot is what remains of their producer state). A failed
    /// write is logged; the tier path rebuilds missing snapshots, and a
    /// missing transaction index leaves no snapshot after it, so the next
    /// open replays its segment.
    pub(super) fn snapshot_if_rolled(
        &self,
        log: &Log,
        producers: &ProducerStateTable,
        active_before: i64,
    ) {
        let base = log.active_base_offset();
        if base == active_before {
            return;
        }
        if self.persist_txn_index(producers, active_before, base) {
            self.persist_snapshot(base, &producers.encode(base));
        }
    }

    /// Writes the `.txnindex` of the segment `[base, next)`; false (logged)
    /// when that failed.
    pub(super) fn persist_txn_index(
        &self,
        producers: &ProducerStateTable,
        base: i64,
        next: i64,
    ) -> bool {
        let entries = producers.aborted_markers_in(base, next);
        match txn_index::write(&self.dir, base, &entries) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(partition = %self.name(), base, error = %e, "transaction index not written");
                false
            }
        }
    }

    /// Writes the producer snapshot at `offset`; a failure is logged (open
    /// falls back to an older snapshot, the tier path rebuilds it).
    pub(super) fn persist_snapshot(&self, offset: i64, bytes: &[u8]) {
        if let Err(e) = snapshot::write(&self.dir, offset, bytes) {
            tracing::warn!(partition = %self.name(), offset, error = %e, "producer snapshot not written");
        }
    }

    /// The producer snapshot and leader epochs to upload with a sealed
    /// segment: the snapshot file at its end (rebuilt from the newest older
    /// snapshot and the log when missing), and the epochs up to its end.
    pub fn segment_state(&self, seg: &SealedSegmentInfo) -> Result<SegmentState, PartitionError> {
        let leader_epochs = Bytes::from(self.lock().epochs.until(seg.next_offset).encode());
        if let Some((bytes, _)) = snapshot::read(&self.dir, seg.next_offset) {
            return Ok(SegmentState {
                producer_snapshot: Bytes::from(bytes),
                leader_epochs,
            });
        }
        let table = self.with_log(|log, _, _| {
            let start = log.log_start_offset();
            let (from, mut table) = snapshot::latest(&self.dir, start, seg.next_offset)
                .unwrap_or_else(|| (start, ProducerStateTable::new()));
            replay(log, from, seg.next_offset, |h, id| {
                table.observe(id, h.base_offset, h.last_offset());
            })?;
            Ok(table)
        })?;
        let bytes = table.encode(seg.next_offset);
        if self.persist_txn_index(&table, seg.base_offset, seg.next_offset) {
            self.persist_snapshot(seg.next_offset, &bytes);
        }
        Ok(SegmentState {
            producer_snapshot: Bytes::from(bytes),
            leader_epochs,
        })
    }
}

/// The batch `batch` (header `h`, whole batch bytes) as the producer
/// table sees it: a control batch's marker is read from its record.
pub(super) fn identity(h: &BatchHeader, batch: &[u8]) -> BatchIdentity {
    let (kind, coordinator_epoch) = if h.is_control() {
        let (kind, epoch) = control_marker(batch);
        (BatchKind::Control(kind), epoch)
    } else if h.is_transactional() {
        (BatchKind::Transactional, -1)
    } else {
        (BatchKind::Plain, -1)
    };
    BatchIdentity::new(
        h.producer_id,
        h.producer_epoch,
        h.base_sequence,
        h.last_offset_delta + 1,
    )
    .with_kind(kind)
    .with_max_timestamp(h.max_timestamp)
    .with_coordinator_epoch(coordinator_epoch)
}

/// The identities of the batches of `records` (whose headers are
/// `headers`, in order).
pub(super) fn identities(records: &[u8], headers: &[BatchHeader]) -> Vec<BatchIdentity> {
    let mut pos = 0usize;
    headers
        .iter()
        .map(|h| {
            let end = (pos + h.total_len()).min(records.len());
            let id = identity(h, records.get(pos..end).unwrap_or_default());
            pos = end;
            id
        })
        .collect()
}

/// Persists the epoch cache; a failure is logged (the cache is rebuilt
/// from the log at the next open).
pub(super) fn store_epochs(dir: &Path, epochs: &LeaderEpochCache) {
    if let Err(e) = epochs.store(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "leader epoch checkpoint not written");
    }
}

/// The producer table and leader-epoch cache at open: the newest valid
/// snapshot within the log plus the batch headers after it (all of the log
/// when there is none), with the aborted transactions of the `.txnindex`
/// files, and the epoch checkpoint (rebuilt from the same headers,
/// starting with the first batch's epoch, when it is missing or
/// unreadable). Snapshots and transaction indexes outside the log are
/// removed first. The flag says whether the epochs differ from the stored
/// checkpoint.
pub(super) fn rebuild_state(
    dir: &Path,
    log: &Log,
) -> Result<(ProducerStateTable, LeaderEpochCache, bool), PartitionError> {
    let start = log.log_start_offset();
    let end = log.log_end_offset();
    snapshot::remove_outside(dir, start, end);
    let stored = LeaderEpochCache::load(dir).unwrap_or_else(|e| {
        tracing::warn!(dir = %dir.display(), error = %e, "leader epoch checkpoint unreadable; rebuilt from the log");
        None
    });
    let rebuild_epochs = stored.is_none();
    let mut epochs = stored.unwrap_or_default();
    let (from, mut table) =
        snapshot::latest(dir, start, end).unwrap_or_else(|| (start, ProducerStateTable::new()));
    table.add_aborted(txn_index::load(dir, log.first_segment_base(), end));
    if rebuild_epochs && from > start {
        replay(log, start, start + 1, |h, _| {
            epochs.assign(h.partition_leader_epoch, start);
        })?;
    }
    replay(log, from, end, |h, id| {
        table.observe(id, h.base_offset, h.last_offset());
        if rebuild_epochs {
            epochs.assign(h.partition_leader_epoch, h.base_offset);
        }
    })?;
    let truncated = epochs.truncate_from_end(end);
    Ok((table, epochs, rebuild_epochs || truncated))
}

/// Calls `f` with the header and identity of every batch from the one
/// holding `from` up to (not including) the batch that starts at or after
/// `to`.
pub(super) fn replay(
    log: &Log,
    from: i64,
    to: i64,
    mut f: impl FnMut(&BatchHeader, &BatchIdentity),
) -> Result<(), PartitionError> {
    let end = to.min(log.log_end_offset());
    let mut offset = from.max(log.log_start_offset());
    while offset < end {
        let slice = log.read(offset, 1 << 20, end)?;
        if slice.data.is_empty() {
            break;
        }
        let mut pos = 0;
        let data = &slice.data[..];
        let mut advanced = false;
        while pos < data.len() {
            let Ok(h) = BatchHeader::parse(&data[pos..]) else {
                break;
            };
            let len = h.total_len();
            if len == 0 || pos + len > data.len() {
                break;
            }
            if h.base_offset >= end {
                return Ok(());
            }
            f(&h, &identity(&h, &data[pos..pos + len]));
            offset = h.last_offset() + 1;
            advanced = true;
            pos += len;
        }
        if !advanced {
            break;
        }
    }
    Ok(())
}
