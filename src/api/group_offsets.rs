//! Committed offsets: OffsetCommit, OffsetFetch (single group, and several
//! groups in v8+) and OffsetDelete.
//!
//! OffsetCommit checks each partition at the edge (the topic and partition
//! exist; metadata fits `offset.metadata.max.bytes`), then the coordinator
//! checks the member and generation and answers only once the records are
//! durable in `__consumer_offsets`. Partitions that fail a check get their
//! own error; the others are committed.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::error::{Code, NONE};
use super::group::{group_error_code, log_error};
use crate::broker::Broker;
use crate::group::coordinator::TopicOffsets;
use crate::group::records::OffsetValue;
use crate::group::GroupError;
use crate::metadata::ClusterView;
use crate::security::acl::{Operation, ResourceType};
use crate::security::Caller;

fn partition_exists(view: &ClusterView, topic: &str, partition: i32) -> bool {
    view.topic(topic)
        .is_some_and(|t| partition >= 0 && (partition as usize) < t.partitions.len())
}

// ----- OffsetCommit --------------------------------------------------------

pub async fn offset_commit(
    broker: &Broker,
    req: OffsetCommitRequest,
    version: i16,
    caller: &Caller,
) -> OffsetCommitResponse {
    let group_id = req.group_id.0.to_string();
    // READ on the group, then READ on each topic.
    let group_denied = !caller.allows(Operation::Read, ResourceType::Group, &group_id);
    let now = broker.groups.now().wall_ms;
    let expire = (version <= 4 && req.retention_time_ms >= 0)
        .then(|| now.saturating_add(req.retention_time_ms));
    let asked = req
        .topics
        .iter()
        .map(|t| {
            let parts = t
                .partitions
                .iter()
                .map(|p| CommitAsked {
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: if version >= 6 {
                        p.committed_leader_epoch
                    } else {
                        -1
                    },
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                })
                .collect();
            (t.name.clone(), parts)
        })
        .collect();
    let Checked {
        mut codes,
        valid,
        offsets,
    } = check_commit(broker, caller, group_denied, asked, expire);
    let result = if group_denied {
        Ok(())
    } else {
        broker
            .groups
            .commit_offsets(
                broker,
                &group_id,
                req.member_id.as_str(),
                req.group_instance_id.as_ref().map(|i| i.as_str()),
                req.generation_id_or_member_epoch,
                offsets,
            )
            .await
    };
    if let Err(e) = result {
        fail_valid(&mut codes, &valid, "OffsetCommit", &group_id, &e);
    }
    let topics = codes
        .into_iter()
        .map(|(name, parts)| {
            OffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, code)| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// One partition's offset an OffsetCommit or TxnOffsetCommit asks for.
pub struct CommitAsked {
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// What the edge checks of a commit found.
pub struct Checked {
    /// Every partition with its code so far, by topic.
    pub codes: Vec<(TopicName, Vec<(i32, i16)>)>,
    /// (topic index, partition index) of each partition that passed.
    pub valid: Vec<(usize, usize)>,
    /// Their offsets, in the same order.
    pub offsets: Vec<(String, i32, OffsetValue)>,
}

/// The coordinator refused the partitions that passed the edge checks
/// (`valid`, indexes into `codes`): each gets `e`'s code.
pub fn fail_valid(
    codes: &mut [(TopicName, Vec<(i32, i16)>)],
    valid: &[(usize, usize)],
    api: &str,
    group: &str,
    e: &GroupError,
) {
    log_error(api, group, e);
    let code = group_error_code(e);
    for &(ti, pi) in valid {
        codes[ti].1[pi].1 = code;
    }
}

/// The edge checks of OffsetCommit and TxnOffsetCommit: READ on each topic
/// (after the group's, `group_denied`), the partition exists, metadata
/// within `offset.metadata.max.bytes`.
pub fn check_commit(
    broker: &Broker,
    caller: &Caller,
    group_denied: bool,
    asked: Vec<(TopicName, Vec<CommitAsked>)>,
    expire: Option<i64>,
) -> Checked {
    let view = broker.view();
    let now = broker.groups.now().wall_ms;
    let max_metadata = broker.groups.config().offset_metadata_max_bytes;
    let mut codes: Vec<(TopicName, Vec<(i32, i16)>)> = Vec::with_capacity(asked.len());
    let mut valid: Vec<(usize, usize)> = Vec::new();
    let mut offsets: Vec<(String, i32, OffsetValue)> = Vec::new();
    for (ti, (name, asked_parts)) in asked.into_iter().enumerate() {
        let topic = name.0.to_string();
        let topic_denied =
            !group_denied && !caller.allows(Operation::Read, ResourceType::Topic, &topic);
        let mut parts = Vec::with_capacity(asked_parts.len());
        for (pi, p) in asked_parts.into_iter().enumerate() {
            let metadata = p.metadata.unwrap_or_default();
            let code = if group_denied {
                EdgeCode(Code::GroupAuthorizationFailed.code())
            } else if topic_denied {
                EdgeCode(Code::TopicAuthorizationFailed.code())
            } else if !partition_exists(&view, &topic, p.partition) {
                GroupError::UnknownTopicOrPartition {
                    topic: topic.clone(),
                    partition: p.partition,
                }
                .into()
            } else if metadata.len() > max_metadata {
                GroupError::OffsetMetadataTooLarge {
                    size: metadata.len(),
                    max: max_metadata,
                }
                .into()
            } else {
                valid.push((ti, pi));
                offsets.push((
                    topic.clone(),
                    p.partition,
                    OffsetValue {
                        offset: p.offset,
                        leader_epoch: p.leader_epoch,
                        metadata,
                        commit_timestamp: now,
                        expire_timestamp: expire,
                    },
                ));
                EdgeCode(NONE)
            };
            parts.push((p.partition, code.0));
        }
        codes.push((name, parts));
    }
    Checked {
        codes,
        valid,
        offsets,
    }
}

/// An error code for the edge checks above.
struct EdgeCode(i16);

impl From<GroupError> for EdgeCode {
    fn from(e: GroupError) -> EdgeCode {
        tracing::debug!(error = %e, "offset commit refused for a partition");
        EdgeCode(group_error_code(&e))
    }
}

// ----- OffsetFetch ---------------------------------------------------------

/// One group's answer: its topics, each with the error code of its
/// partitions, or a group-level error code. The group takes DESCRIBE;
/// topics named that the caller may not DESCRIBE answer
/// TOPIC_AUTHORIZATION_FAILED, and those it may not see are left out of an
/// answer for all topics.
fn fetch_group(
    broker: &Broker,
    caller: &Caller,
    group_id: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Vec<(TopicOffsets, i16)>, i16> {
    if !caller.allows(Operation::Describe, ResourceType::Group, group_id) {
        return Err(Code::GroupAuthorizationFailed.code());
    }
    let (asked, denied): (Option<Vec<_>>, Vec<_>) = match topics {
        None => (None, Vec::new()),
        Some(ts) => {
            let (ok, denied) = ts
                .into_iter()
                .partition(|(t, _)| caller.allows(Operation::Describe, ResourceType::Topic, t));
            (Some(ok), denied)
        }
    };
    let all = asked.is_none();
    let found = broker.groups.fetch_offsets(group_id, asked).map_err(|e| {
        log_error("OffsetFetch", group_id, &e);
        group_error_code(&e)
    })?;
    Ok(found
        .into_iter()
        .filter(|(t, _)| !all || caller.may_see(Operation::Describe, ResourceType::Topic, t))
        .map(|t| (t, NONE))
        .chain(denied.into_iter().map(|(t, ps)| {
            (
                (t, ps.into_iter().map(|p| (p, None)).collect()),
                Code::TopicAuthorizationFailed.code(),
            )
        }))
        .collect())
}

fn metadata_of(v: &Option<OffsetValue>) -> Option<StrBytes> {
    Some(StrBytes::from_string(
        v.as_ref().map(|v| v.metadata.clone()).unwrap_or_default(),
    ))
}

pub fn offset_fetch(
    broker: &Broker,
    req: OffsetFetchRequest,
    version: i16,
    caller: &Caller,
) -> OffsetFetchResponse {
    // KIP-447: a consumer that asks for stable offsets is told to retry
    // while a transaction holds an undecided offset of the partition.
    let require_stable = version >= 7 && req.require_stable;
    let stable = |group: &str, topic: &str, p: i32| {
        !(require_stable && broker.groups.has_pending_txn_offset(group, topic, p))
    };
    if version >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let id = g.group_id.0.to_string();
                let wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let base = OffsetFetchResponseGroup::default().with_group_id(g.group_id);
                match fetch_group(broker, caller, &id, wanted) {
                    Ok(topics) => base.with_topics(
                        topics
                            .into_iter()
                            .map(|((name, parts), code)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(StrBytes::from_string(name.clone())))
                                    .with_partitions(
                                        parts
                                            .into_iter()
                                            .map(|(p, v)| {
                                                let (v, code) = if stable(&id, &name, p) {
                                                    (v, code)
                                                } else {
                                                    (None, Code::UnstableOffsetCommit.code())
                                                };
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_committed_offset(
                                                        v.as_ref().map_or(-1, |v| v.offset),
                                                    )
                                                    .with_committed_leader_epoch(
                                                        v.as_ref().map_or(-1, |v| v.leader_epoch),
                                                    )
                                                    .with_metadata(metadata_of(&v))
                                                    .with_error_code(code)
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    ),
                    Err(code) => base.with_error_code(code),
                }
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let group_id = req.group_id.0.to_string();
    let wanted: Option<Vec<(String, Vec<i32>)>> = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let (topics, group_code) = match fetch_group(broker, caller, &group_id, wanted.clone()) {
        Ok(t) => (t, NONE),
        // v1 has no top-level error: each requested partition carries it.
        Err(code) => (
            wanted
                .unwrap_or_default()
                .into_iter()
                .map(|(t, ps)| ((t, ps.into_iter().map(|p| (p, None)).collect()), NONE))
                .collect(),
            code,
        ),
    };
    let partition_code = if version < 2 { group_code } else { NONE };
    let topics = topics
        .into_iter()
        .map(|((name, parts), topic_code)| {
            let partition_code = if topic_code != NONE {
                topic_code
            } else {
                partition_code
            };
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.clone())))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, v)| {
                            let (v, partition_code) = if stable(&group_id, &name, p) {
                                (v, partition_code)
                            } else {
                                (None, Code::UnstableOffsetCommit.code())
                            };
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(v.as_ref().map_or(-1, |v| v.offset))
                                .with_committed_leader_epoch(
                                    v.as_ref().map_or(-1, |v| v.leader_epoch),
                                )
                                .with_metadata(metadata_of(&v))
                                .with_error_code(partition_code)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default()
        .with_topics(topics)
        .with_error_code(if version >= 2 { group_code } else { NONE })
}

// ----- OffsetDelete --------------------------------------------------------

/// A partition of an OffsetDelete: its index, and its error code when the
/// edge checks refused it.
type EdgeResult = (i32, Option<i16>);

pub async fn offset_delete(
    broker: &Broker,
    req: OffsetDeleteRequest,
    _version: i16,
    caller: &Caller,
) -> OffsetDeleteResponse {
    let group_id = req.group_id.0.to_string();
    if group_id.is_empty() {
        let e = GroupError::InvalidGroupId { group: group_id };
        return OffsetDeleteResponse::default().with_error_code(group_error_code(&e));
    }
    // DELETE on the group, READ on each topic.
    if !caller.allows(Operation::Delete, ResourceType::Group, &group_id) {
        return OffsetDeleteResponse::default()
            .with_error_code(Code::GroupAuthorizationFailed.code());
    }
    let view = broker.view();
    // Per partition: Some(code) when refused at the edge, None when asked of
    // the coordinator.
    let mut edge: Vec<(TopicName, Vec<EdgeResult>)> = Vec::new();
    let mut asked: Vec<(String, i32)> = Vec::new();
    for t in &req.topics {
        let topic = t.name.0.to_string();
        let topic_denied = !caller.allows(Operation::Read, ResourceType::Topic, &topic);
        let parts = t
            .partitions
            .iter()
            .map(|p| {
                if topic_denied {
                    (
                        p.partition_index,
                        Some(Code::TopicAuthorizationFailed.code()),
                    )
                } else if partition_exists(&view, &topic, p.partition_index) {
                    asked.push((topic.clone(), p.partition_index));
                    (p.partition_index, None)
                } else {
                    let e = GroupError::UnknownTopicOrPartition {
                        topic: topic.clone(),
                        partition: p.partition_index,
                    };
                    (p.partition_index, Some(group_error_code(&e)))
                }
            })
            .collect();
        edge.push((t.name.clone(), parts));
    }
    let results = match broker.groups.delete_offsets(broker, &group_id, asked).await {
        Ok(r) => r,
        Err(e) => {
            log_error("OffsetDelete", &group_id, &e);
            return OffsetDeleteResponse::default().with_error_code(group_error_code(&e));
        }
    };
    let mut results = results.into_iter();
    let topics = edge
        .into_iter()
        .map(|(name, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(p, code)| {
                    let code = code.unwrap_or_else(|| match results.next() {
                        Some(Ok(())) | None => NONE,
                        Some(Err(e)) => group_error_code(&e),
                    });
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p)
                        .with_error_code(code)
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
