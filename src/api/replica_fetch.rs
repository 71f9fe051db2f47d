//! Fetch from a follower: a request naming a replica id (`replica_id`
//! before version 15, `replica_state` since) comes from another broker
//! copying this leader's log.
//!
//! Each partition must be led here, at the epoch the follower names, with
//! the follower among its replicas (else NOT_LEADER_OR_FOLLOWER or the
//! epoch's error). Its fetch offset is its durable log end, which the
//! leader records first ([`Partition::on_follower_fetch`]): that may move
//! the high watermark. Data comes from the local log up to the log end,
//! not the high watermark, in memory (a follower's fetch is small next to
//! a consumer's, and never reads the tier: an offset below the local log
//! answers OFFSET_OUT_OF_RANGE). The request long-polls on the partitions'
//! log ends. From version 12 each partition also carries the tier's last
//! offset in a tagged field (`broker::replication::TIER_LAST_TAG`), so the
//! follower knows when its copy of the manifest is stale.

use crate::security::acl::Operation;
use crate::security::Caller;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use tokio::sync::watch;

use super::error::{leader_epoch_error, partition_error_code, Code};
use crate::broker::{now_ms, Broker};
use crate::partition::{Partition, ReadData};

/// The replica a fetch comes from, -1 for a consumer.
pub fn replica_of(req: &FetchRequest, version: i16) -> i32 {
    if version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    }
}

struct Target {
    topic_idx: usize,
    index: i32,
    offset: i64,
    max_bytes: i32,
    partition: Result<Arc<Partition>, i16>,
}

pub async fn handle(
    broker: &Broker,
    req: FetchRequest,
    version: i16,
    replica: i32,
    caller: &Caller,
) -> FetchResponse {
    let view = broker.view();
    // Followers need CLUSTER_ACTION on the cluster; without it every
    // partition is refused, as Kafka does.
    let denied = !caller.allows_cluster(Operation::ClusterAction);
    let now = now_ms();
    let mut topics = Vec::new();
    let mut targets = Vec::new();
    for ft in &req.topics {
        let topic = if version >= 13 {
            view.topic_by_id(ft.topic_id)
        } else {
            view.topic(ft.topic.0.as_str())
        };
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(ft.topic.clone())
                .with_topic_id(ft.topic_id),
        );
        for fp in &ft.partitions {
            let partition = match topic {
                _ if denied => Err(Code::TopicAuthorizationFailed.code()),
                None if version >= 13 => Err(Code::UnknownTopicId.code()),
                None => Err(Code::UnknownTopicOrPartition.code()),
                Some(t) => {
                    let is_replica = t
                        .partitions
                        .get(usize::try_from(fp.partition).unwrap_or(usize::MAX))
                        .is_some_and(|p| p.replicas.contains(&replica));
                    match broker.leader_partition(t, fp.partition) {
                        Ok(_) if !is_replica => Err(Code::NotLeaderOrFollower.code()),
                        Ok(p) => {
                            match leader_epoch_error(fp.current_leader_epoch, p.leader_epoch()) {
                                Some(code) => Err(code),
                                None => p
                                    .on_follower_fetch(replica, fp.fetch_offset, now)
                                    .map(|()| p)
                                    .map_err(|e| partition_error_code(&e)),
                            }
                        }
                        Err(why) => Err(super::error::not_served_code(why)),
                    }
                }
            };
            targets.push(Target {
                topic_idx: topics.len() - 1,
                index: fp.partition,
                offset: fp.fetch_offset,
                max_bytes: fp.partition_max_bytes,
                partition,
            });
        }
    }
    let mut watches: Vec<watch::Receiver<i64>> = targets
        .iter()
        .filter_map(|t| t.partition.as_ref().ok().map(|p| p.watch_log_end()))
        .collect();
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let limit = usize::try_from(req.max_bytes)
        .ok()
        .filter(|m| *m > 0)
        .unwrap_or(usize::MAX);
    loop {
        for w in &mut watches {
            w.borrow_and_update();
        }
        let mut total = 0usize;
        let mut any_error = false;
        let mut parts = Vec::with_capacity(targets.len());
        for t in &targets {
            let mut pd = PartitionData::default()
                .with_partition_index(t.index)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_preferred_read_replica(BrokerId(-1));
            match &t.partition {
                Err(code) => {
                    pd.error_code = *code;
                    any_error = true;
                }
                Ok(p) => {
                    let budget = usize::try_from(t.max_bytes).unwrap_or(0).min(limit - total);
                    match p.read_for_follower(t.offset, budget) {
                        Ok(r) => {
                            pd.high_watermark = r.high_watermark;
                            pd.last_stable_offset = r.high_watermark;
                            pd.log_start_offset = r.log_start_offset;
                            if let (true, Some(tiered)) = (version >= 12, p.tier_last_offset()) {
                                crate::broker::replication::set_tier_last(&mut pd, tiered);
                            }
                            if let ReadData::Bytes(b) = r.data {
                                total += b.len();
                                pd.records = Some(b);
                            }
                        }
                        Err(e) => {
                            pd.error_code = partition_error_code(&e);
                            pd.high_watermark = p.high_watermark();
                            pd.log_start_offset = p.log_start_offset();
                            any_error = true;
                        }
                    }
                }
            }
            parts.push((t.topic_idx, pd));
        }
        let waited_enough = tokio::time::Instant::now() >= deadline;
        if any_error
            || waited_enough
            || total >= req.min_bytes.max(1) as usize
            || watches.is_empty()
        {
            let mut topics = topics;
            for (i, pd) in parts {
                topics[i].partitions.push(pd);
            }
            return FetchResponse::default()
                .with_responses(topics)
                .with_session_id(0);
        }
        let changed =
            futures::future::select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            continue;
        }
    }
}
