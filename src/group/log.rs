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

    /// Waits until `appended` is on stable storage.
    fn wait_durable(
        &self,
        appended: Appended,
    ) -> impl Future<Output = Result<(), GroupError>> + Send;

    /// Number of partitions of the offsets topic (0 when it does not exist).
    fn partitions(&self) -> i32;

    /// Records of `partition` from `offset` on, in log order, with the offset
    /// to continue from; None at the end of the partition.
    fn read(&self, partition: i32, offset: i64)
        -> Result<Option<(Vec<KeyValue>, i64)>, GroupError>;

    /// Whether `topic` exists (committed offsets of deleted topics go).
    fn topic_exists(&self, topic: &str) -> bool;

    /// Changes whenever the cluster metadata does (None: never).
    fn metadata_watch(&self) -> Option<tokio::sync::watch::Receiver<u64>>;
}

/// Decodes whole batches into (key, value) pairs, skipping control records
/// and records below `from`; returns them with the offset after the last
/// batch, or None if no batch could be read.
pub fn decode_records(mut data: Bytes, from: i64) -> Option<(Vec<KeyValue>, i64)> {
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
                        out.push((k, r.value));
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
