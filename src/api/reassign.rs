//! AlterPartitionReassignments and ListPartitionReassignments: moving a
//! partition's replicas to other brokers. The quorum records the target
//! ([`Command::Reassign`]): new replicas join as followers and catch up,
//! and once every target replica is in sync the others leave (the
//! reassignment completes in the same entry as the ISR change that makes
//! it possible). A cancelled one goes back to the original replicas.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::error::{Code, NONE};
use crate::broker::Broker;
use crate::metadata::{Command, CommandResult, ReassignOutcome};
use crate::security::acl::Operation;
use crate::security::Caller;

/// A partition's error in a reassignment answer.
type Refusal = (i16, Option<String>);

pub async fn alter(
    broker: &Broker,
    req: AlterPartitionReassignmentsRequest,
    version: i16,
    caller: &Caller,
) -> AlterPartitionReassignmentsResponse {
    if let Some(why) = caller.cluster_refusal(Operation::Alter) {
        return AlterPartitionReassignmentsResponse::default()
            .with_error_code(Code::ClusterAuthorizationFailed.code())
            .with_error_message(Some(StrBytes::from_string(why)));
    }
    let view = broker.view();
    // v0 has no flag: the factor may not change, as in Kafka.
    let factor_may_change = version >= 1 && req.allow_replication_factor_change;
    // Each asked partition: refused here, or proposed (its place among the
    // proposed ones).
    let mut asked: Vec<(String, i32, Result<usize, Refusal>)> = Vec::new();
    let mut proposed: Vec<(Uuid, i32, Option<Vec<i32>>)> = Vec::new();
    for t in &req.topics {
        let topic = view.topic(t.name.as_str());
        for p in &t.partitions {
            let name = t.name.to_string();
            let info = topic.and_then(|tp| {
                tp.partitions
                    .get(usize::try_from(p.partition_index).ok()?)
                    .map(|info| (tp, info))
            });
            let target: Option<Vec<i32>> =
                p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect());
            let outcome = match info {
                None => Err((
                    Code::UnknownTopicOrPartition.code(),
                    Some(format!(
                        "unknown topic or partition. topic={name}, partition={}",
                        p.partition_index
                    )),
                )),
                Some((_, info))
                    if !factor_may_change
                        && target
                            .as_ref()
                            .is_some_and(|t| t.len() != info.original_replicas().len()) =>
                {
                    Err((
                        Code::InvalidReplicationFactor.code(),
                        Some(format!(
                            "the target changes the replication factor, which this request does not allow. replicas={}, target={}",
                            info.original_replicas().len(),
                            target.as_ref().map_or(0, Vec::len)
                        )),
                    ))
                }
                Some((tp, _)) => {
                    proposed.push((tp.id, p.partition_index, target));
                    Ok(proposed.len() - 1)
                }
            };
            asked.push((name, p.partition_index, outcome));
        }
    }
    let decided: Result<Vec<ReassignOutcome>, Refusal> = if proposed.is_empty() {
        Ok(Vec::new())
    } else {
        match broker
            .metadata
            .propose(Command::Reassign {
                partitions: proposed,
            })
            .await
        {
            Ok(CommandResult::Reassignments { outcomes }) => Ok(outcomes),
            Ok(other) => Err((Code::UnknownServerError.code(), Some(format!("{other:?}")))),
            Err(e) => Err((Code::NotController.code(), Some(e.to_string()))),
        }
    };
    if decided.is_ok() {
        if let Err(e) = broker.reconcile().await {
            tracing::warn!(error = %e, "reconcile after a reassignment failed");
        }
    }
    let mut by_topic: BTreeMap<String, Vec<ReassignablePartitionResponse>> = BTreeMap::new();
    for (name, partition, outcome) in asked {
        let (code, message) = match outcome {
            Err(refusal) => refusal,
            Ok(i) => match &decided {
                Err(refusal) => refusal.clone(),
                Ok(outcomes) => match outcomes.get(i) {
                    Some(ReassignOutcome::Done) => (NONE, None),
                    Some(ReassignOutcome::NoReassignmentInProgress) => (
                        Code::NoReassignmentInProgress.code(),
                        Some("no reassignment of the partition is in progress".to_string()),
                    ),
                    Some(ReassignOutcome::InvalidReplicaAssignment { reason }) => {
                        (Code::InvalidReplicaAssignment.code(), Some(reason.clone()))
                    }
                    Some(ReassignOutcome::UnknownPartition) | None => {
                        (Code::UnknownTopicOrPartition.code(), None)
                    }
                },
            },
        };
        if code == NONE {
            tracing::info!(topic = %name, partition, "partition reassignment changed");
        } else {
            tracing::info!(topic = %name, partition, code, message = ?message, "partition reassignment refused");
        }
        by_topic.entry(name).or_default().push(
            ReassignablePartitionResponse::default()
                .with_partition_index(partition)
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string)),
        );
    }
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(factor_may_change)
        .with_responses(
            by_topic
                .into_iter()
                .map(|(name, partitions)| {
                    ReassignableTopicResponse::default()
                        .with_name(kafka_protocol::messages::TopicName(StrBytes::from_string(
                            name,
                        )))
                        .with_partitions(partitions)
                })
                .collect(),
        )
}

pub fn list(
    broker: &Broker,
    req: ListPartitionReassignmentsRequest,
    _version: i16,
    caller: &Caller,
) -> ListPartitionReassignmentsResponse {
    if let Some(why) = caller.cluster_refusal(Operation::Describe) {
        return ListPartitionReassignmentsResponse::default()
            .with_error_code(Code::ClusterAuthorizationFailed.code())
            .with_error_message(Some(StrBytes::from_string(why)));
    }
    let view = broker.view();
    let ongoing = |info: &crate::metadata::PartitionInfo, index: i32| {
        info.is_reassigning().then(|| {
            let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
            OngoingPartitionReassignment::default()
                .with_partition_index(index)
                .with_replicas(ids(&info.replicas))
                .with_adding_replicas(ids(&info.adding))
                .with_removing_replicas(ids(&info.removing))
        })
    };
    let topics: Vec<OngoingTopicReassignment> = match &req.topics {
        None => view
            .topics
            .values()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| ongoing(p, i as i32))
                    .collect();
                (t.name.clone(), partitions)
            })
            .collect::<Vec<(String, Vec<_>)>>(),
        Some(asked) => asked
            .iter()
            .filter_map(|a| {
                let t = view.topic(a.name.as_str())?;
                let partitions = a
                    .partition_indexes
                    .iter()
                    .filter_map(|i| ongoing(t.partitions.get(usize::try_from(*i).ok()?)?, *i))
                    .collect();
                Some((t.name.clone(), partitions))
            })
            .collect(),
    }
    .into_iter()
    .filter(|(_, partitions): &(String, Vec<OngoingPartitionReassignment>)| !partitions.is_empty())
    .map(|(name, partitions)| {
        OngoingTopicReassignment::default()
            .with_name(kafka_protocol::messages::TopicName(StrBytes::from_string(
                name,
            )))
            .with_partitions(partitions)
    })
    .collect();
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
