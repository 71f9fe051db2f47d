//! Where the coordinator's records go: the narrow [`GroupLog`] trait over the
//! partitions of `__consumer_offsets`, and [`decode_records`] for its
//! implementations. The broker implements it on its local partitions; the
//! coordinator's tests on memory.

use std::future::Future;

use bytes::{Buf, Bytes};
use kafka_protocol::records::RecordBatchDecoder;

use super::error::GroupError;
use super::records::{KeyValue, OFFSETS_TOPIC};
use crate::log::batch::BatchHeader;

/// Records appended (in the page cache) but maybe not yet durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The `__consumer_offsets` partition.
    pub partition: i32,
    /// The offset after the last record appended.
    pub end_offset: i64,
}

/// One thing a read of `__consumer_offsets` found.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A record outside any transaction.
    Record(KeyValue),
    /// A record of a producer's transaction (TxnOffsetCommit): it counts
    /// once that producer's COMMIT marker follows.
    Txn { producer_id: i64, record: KeyValue },
    /// A producer's transaction marker.
    Marker { producer_id: i64, commit: bool },
}

/// The storage the coordinator writes to and replays from.
pub trait GroupLog: Send + Sync {
    /// Makes sure the offsets topic exists, creating it on first use. The
    /// coordinator never runs two of these at once.
    fn ensure_topic(&self) -> impl Future<Output = Result<(), GroupError>> + Send;

    /// Appends `records` of `group` to its partition, as one batch.
    fn append(
        &self,
        group: &str,
        records: &[KeyValue],
        now_ms: i64,
    ) -> Result<Appended, GroupError>;

    /// Appends `records` of `group` as one transactional batch of the
    /// producer (TxnOffsetCommit).
    fn append_txn(
        &self,
        group: &str,
        records: &[KeyValue],
        producer: (i64, i16),
        now_ms: i64,
    ) -> Result<Appended, GroupError>;

    /// Waits until `appended` is on stable storage.
    fn wait_durable(
        &self,
        appended: Appended,
    ) -> impl Future<Output = Result<(), GroupError>> + Send;

    /// Number of partitions of the offsets topic (0 when it does not exist).
    fn partitions(&self) -> i32;

    /// Records and markers of `partition` from `offset` on, in log order,
    /// with the offset to continue from; None at the end of the partition.
    fn read(&self, partition: i32, offset: i64) -> Result<Option<(Vec<Entry>, i64)>, GroupError>;

    /// Whether `topic` exists (committed offsets of deleted topics go).
    fn topic_exists(&self, topic: &str) -> bool;

    /// Changes whenever the cluster metadata does (None: never).
    fn metadata_watch(&self) -> Option<tokio::sync::watch::Receiver<u64>>;
}

/// Decodes whole batches into (key, value) pairs, skipping control records
/// and records below `from`; returns them with the offset after the last
/// batch, or None if no batch could be read.
pub fn decode_records(data: Bytes, from: i64) -> Option<(Vec<KeyValue>, i64)> {
    decode_entries(data, from).map(|(entries, next)| {
        let records = entries
            .into_iter()
            .filter_map(|e| match e {
                Entry::Record(r) | Entry::Txn { record: r, .. } => Some(r),
                Entry::Marker { .. } => None,
            })
            .collect();
        (records, next)
    })
}

/// Decodes whole batches into entries: records (transactional ones with
/// their producer) and transaction markers, skipping what lies below
/// `from`; returns them with the offset after the last batch, or None if
/// no batch could be read.
pub fn decode_entries(mut data: Bytes, from: i64) -> Option<(Vec<Entry>, i64)> {
    let mut out = Vec::new();
    let mut next = None;
    while !data.is_empty() {
        let Ok(h) = BatchHeader::parse(&data) else {
            break;
        };
        let len = h.total_len();
        if len == 0 || len > data.len() {
            break;
        }
        let mut batch = data.slice(..len);
        data.advance(len);
        next = Some(h.last_offset() + 1);
        if h.is_control() {
            let commit = match crate::log::batch::control_type(&batch) {
                crate::log::batch::ControlType::Commit => true,
                crate::log::batch::ControlType::Abort => false,
                crate::log::batch::ControlType::Other(_) => continue,
            };
            if h.base_offset >= from {
                out.push(Entry::Marker {
                    producer_id: h.producer_id,
                    commit,
                });
            }
            continue;
        }
        let txn = h.is_transactional().then_some(h.producer_id);
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            RecordBatchDecoder::decode(&mut batch)
        }));
        match decoded {
            Ok(Ok(set)) => {
                for r in set.records {
                    if r.control || r.offset < from {
                        continue;
                    }
                    if let Some(k) = r.key {
                        out.push(match txn {
                            Some(producer_id) => Entry::Txn {
                                producer_id,
                                record: (k, r.value),
                            },
                            None => Entry::Record((k, r.value)),
                        });
                    }
                }
            }
            _ => tracing::warn!(
                topic = OFFSETS_TOPIC,
                offset = h.base_offset,
                "skipping a batch that does not decode"
            ),
        }
    }
    next.map(|n| (out, n))
}
