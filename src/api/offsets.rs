//! ListOffsets (earliest, latest, by timestamp, max timestamp) and
//! OffsetForLeaderEpoch.

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

use super::error::{partition_error_code, Code};
use crate::broker::Broker;

pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;
pub const EARLIEST_LOCAL: i64 = -4;
pub const LATEST_TIERED: i64 = -5;

pub fn list_offsets(broker: &Broker, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let view = broker.view();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = view.topic(t.name.0.as_str());
            let partitions = t
                .partitions
                .iter()
                .map(|lp| {
                    let mut r = ListOffsetsPartitionResponse::default()
                        .with_partition_index(lp.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1)
                        .with_leader_epoch(-1);
                    let Some(p) = topic.and_then(|tp| broker.partition(tp.id, lp.partition_index))
                    else {
                        r.error_code = Code::UnknownTopicOrPartition.code();
                        return r;
                    };
                    if lp.current_leader_epoch >= 0 && lp.current_leader_epoch != p.leader_epoch {
                        r.error_code = if lp.current_leader_epoch > p.leader_epoch {
                            Code::UnknownLeaderEpoch.code()
                        } else {
                            Code::FencedLeaderEpoch.code()
                        };
                        return r;
                    }
                    if version >= 4 {
                        r.leader_epoch = p.leader_epoch;
                    }
                    match lp.timestamp {
                        LATEST => r.offset = p.high_watermark(),
                        EARLIEST | EARLIEST_LOCAL => r.offset = p.log_start_offset(),
                        LATEST_TIERED => {
                            // Nothing is tiered yet: Kafka answers -1 then.
                            r.offset = -1;
                        }
                        MAX_TIMESTAMP => {
                            if let Some((ts, off)) = p.max_timestamp() {
                                r.timestamp = ts;
                                r.offset = off;
                            }
                        }
                        ts if ts >= 0 => match p.offset_for_timestamp(ts) {
                            Ok(Some((off, found_ts))) => {
                                r.offset = off;
                                r.timestamp = found_ts;
                            }
                            Ok(None) => {}
                            Err(e) => r.error_code = partition_error_code(&e),
                        },
                        _ => r.error_code = Code::InvalidRequest.code(),
                    }
                    r
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// Every partition has had one leader epoch since its creation on this
/// broker, starting at offset 0, so the end offset of that epoch is the log
/// end offset, and any newer epoch is unknown.
pub fn offset_for_leader_epoch(
    broker: &Broker,
    req: OffsetForLeaderEpochRequest,
    _version: i16,
) -> OffsetForLeaderEpochResponse {
    let view = broker.view();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = view.topic(t.topic.0.as_str());
            let partitions = t
                .partitions
                .iter()
                .map(|lp| {
                    let mut r = EpochEndOffset::default()
                        .with_partition(lp.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    let Some(p) = topic.and_then(|tp| broker.partition(tp.id, lp.partition)) else {
                        r.error_code = Code::UnknownTopicOrPartition.code();
                        return r;
                    };
                    if lp.current_leader_epoch >= 0 && lp.current_leader_epoch != p.leader_epoch {
                        r.error_code = if lp.current_leader_epoch > p.leader_epoch {
                            Code::UnknownLeaderEpoch.code()
                        } else {
                            Code::FencedLeaderEpoch.code()
                        };
                        return r;
                    }
                    if lp.leader_epoch <= p.leader_epoch {
                        r.leader_epoch = p.leader_epoch;
                        r.end_offset = p.log_end_offset();
                    }
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
