//! ListOffsets (earliest, latest, by timestamp, max timestamp) and
//! OffsetForLeaderEpoch.

use crate::security::acl::{Operation, ResourceType};
use crate::security::Caller;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
};

use super::error::{leader_epoch_error, partition_error_code, Code};
use crate::broker::Broker;
use crate::partition::{Partition, PartitionError};

pub const LATEST: i64 = -1;
/// ListOffsets' `isolation_level` for read_committed (v2+).
const READ_COMMITTED: i8 = 1;
pub const EARLIEST: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;
pub const EARLIEST_LOCAL: i64 = -4;
pub const LATEST_TIERED: i64 = -5;

pub async fn list_offsets(
    broker: &Broker,
    req: ListOffsetsRequest,
    version: i16,
    caller: &Caller,
) -> ListOffsetsResponse {
    let view = broker.view();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let denied = !caller.allows(Operation::Describe, ResourceType::Topic, &t.name);
        let topic = view.topic(t.name.0.as_str()).filter(|_| !denied);
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for lp in &t.partitions {
            let mut r = ListOffsetsPartitionResponse::default()
                .with_partition_index(lp.partition_index)
                .with_timestamp(-1)
                .with_offset(-1)
                .with_leader_epoch(-1);
            if denied {
                r.error_code = Code::TopicAuthorizationFailed.code();
                partitions.push(r);
                continue;
            }
            let served = match topic {
                Some(tp) => broker.leader_partition(tp, lp.partition_index),
                None => Err(crate::broker::NotServed::UnknownPartition),
            };
            let p = match served {
                Ok(p) => p,
                Err(why) => {
                    r.error_code = super::error::not_served_code(why);
                    partitions.push(r);
                    continue;
                }
            };
            if let Some(code) = leader_epoch_error(lp.current_leader_epoch, p.leader_epoch()) {
                r.error_code = code;
                partitions.push(r);
                continue;
            }
            if version >= 4 {
                r.leader_epoch = p.leader_epoch();
            }
            match lp.timestamp {
                // read_committed consumers start at the last stable offset.
                LATEST if version >= 2 && req.isolation_level == READ_COMMITTED => {
                    r.offset = p.last_stable_offset()
                }
                LATEST => r.offset = p.high_watermark(),
                EARLIEST => r.offset = p.log_start_offset(),
                EARLIEST_LOCAL => r.offset = p.local_log_start_offset(),
                LATEST_TIERED => r.offset = p.tier_last_offset().unwrap_or(-1),
                MAX_TIMESTAMP => {
                    if let Some((ts, off)) = p.max_timestamp() {
                        r.timestamp = ts;
                        r.offset = off;
                    }
                }
                ts if ts >= 0 => {
                    // The tier may be down or hang: bounded like a fetch's
                    // tier reads.
                    let wait = std::time::Duration::from_millis(broker.config.tier.read_timeout_ms);
                    match tokio::time::timeout(wait, offset_for_timestamp(&p, ts)).await {
                        Ok(Ok(Some((off, found_ts)))) => {
                            r.offset = off;
                            r.timestamp = found_ts;
                        }
                        Ok(Ok(None)) => {}
                        Ok(Err(e)) => r.error_code = partition_error_code(&e),
                        Err(_) => r.error_code = Code::RequestTimedOut.code(),
                    }
                }
                _ => r.error_code = Code::InvalidRequest.code(),
            }
            partitions.push(r);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// The first record with a timestamp at least `ts`: in the tier when the
/// tier holds one, else in the local log. The tier answers per batch; the
/// batch is read back and decoded to find the exact record.
async fn offset_for_timestamp(
    p: &Partition,
    ts: i64,
) -> Result<Option<(i64, i64)>, PartitionError> {
    if let (Some(remote), Some(_)) = (p.remote(), p.tier_last_offset()) {
        let found =
            remote
                .offset_for_timestamp(ts)
                .await
                .map_err(|source| PartitionError::Tier {
                    partition: p.name(),
                    source: Box::new(source),
                })?;
        if let Some(found) = found {
            if found.offset >= p.log_start_offset() {
                let read = p.read_remote(found.offset, 1, false).await?;
                let exact = crate::zerocopy::Part::join(&read.pieces)
                    .ok()
                    .and_then(|batch| first_record_at_or_after(batch, found.offset, ts));
                return Ok(Some(exact.unwrap_or((found.offset, found.timestamp))));
            }
        }
    }
    p.offset_for_timestamp(ts)
}

fn first_record_at_or_after(mut data: bytes::Bytes, offset: i64, ts: i64) -> Option<(i64, i64)> {
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut data).ok()?;
    set.records
        .iter()
        .filter(|r| r.offset >= offset && !r.control)
        .find(|r| r.timestamp >= ts)
        .map(|r| (r.offset, r.timestamp))
}

/// Answers from each partition's leader-epoch cache (Kafka's rules:
/// [`crate::partition::epochs::LeaderEpochCache::end_offset_for`]).
pub fn offset_for_leader_epoch(
    broker: &Broker,
    req: OffsetForLeaderEpochRequest,
    _version: i16,
    caller: &Caller,
) -> OffsetForLeaderEpochResponse {
    let view = broker.view();
    // Followers need CLUSTER_ACTION; consumers DESCRIBE on each topic.
    let follower_denied = req.replica_id.0 >= 0 && !caller.allows_cluster(Operation::ClusterAction);
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let denied = follower_denied
                || (req.replica_id.0 < 0
                    && !caller.allows(Operation::Describe, ResourceType::Topic, &t.topic));
            let topic = view.topic(t.topic.0.as_str());
            let partitions = t
                .partitions
                .iter()
                .map(|lp| {
                    let mut r = EpochEndOffset::default()
                        .with_partition(lp.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    if denied {
                        r.error_code = Code::TopicAuthorizationFailed.code();
                        return r;
                    }
                    let served = match topic {
                        Some(tp) => broker.leader_partition(tp, lp.partition),
                        None => Err(crate::broker::NotServed::UnknownPartition),
                    };
                    let p = match served {
                        Ok(p) => p,
                        Err(why) => {
                            r.error_code = super::error::not_served_code(why);
                            return r;
                        }
                    };
                    if let Some(code) =
                        leader_epoch_error(lp.current_leader_epoch, p.leader_epoch())
                    {
                        r.error_code = code;
                        return r;
                    }
                    (r.leader_epoch, r.end_offset) = p.end_offset_for_epoch(lp.leader_epoch);
                    r
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
