//! ElectLeaders: an operator moves leaderships back to the preferred
//! replicas (the first of each partition's replicas), or gives a partition
//! without a leader an out-of-sync replica. The quorum decides each
//! partition in one entry ([`Command::ElectLeaders`]); the partitions not
//! asked for by name (a null list: every partition) are answered only where
//! an election was needed, as Kafka does.

use std::collections::BTreeMap;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::error::{Code, NONE};
use crate::broker::Broker;
use crate::metadata::{Command, CommandResult, Election, ElectionOutcome};
use crate::security::acl::Operation;
use crate::security::Caller;

/// One asked-for partition: by topic name and index, with its topic id when
/// the topic has that partition.
struct Asked {
    topic: String,
    partition: i32,
    id: Option<Uuid>,
}

pub async fn elect_leaders(
    broker: &Broker,
    req: ElectLeadersRequest,
    version: i16,
    caller: &Caller,
) -> ElectLeadersResponse {
    if !caller.allows_cluster(Operation::Alter) {
        return ElectLeadersResponse::default()
            .with_error_code(Code::ClusterAuthorizationFailed.code());
    }
    // v0 has no election type: preferred.
    let election = match (version, req.election_type) {
        (0, _) | (_, 0) => Election::Preferred,
        (_, 1) => Election::Unclean,
        (_, other) => {
            tracing::info!(election_type = other, "unknown leader election type");
            return ElectLeadersResponse::default().with_error_code(Code::InvalidRequest.code());
        }
    };
    let view = broker.view();
    let every = req.topic_partitions.is_none();
    let asked: Vec<Asked> = match &req.topic_partitions {
        None => view
            .topics
            .values()
            .flat_map(|t| {
                (0..t.partitions.len() as i32).map(move |p| Asked {
                    topic: t.name.clone(),
                    partition: p,
                    id: Some(t.id),
                })
            })
            .collect(),
        Some(tps) => tps
            .iter()
            .flat_map(|tp| {
                let topic = view.topic(tp.topic.as_str());
                tp.partitions.iter().map(move |&p| Asked {
                    topic: tp.topic.to_string(),
                    partition: p,
                    id: topic
                        .filter(|t| p >= 0 && (p as usize) < t.partitions.len())
                        .map(|t| t.id),
                })
            })
            .collect(),
    };
    let known: Vec<(Uuid, i32)> = asked
        .iter()
        .filter_map(|a| Some((a.id?, a.partition)))
        .collect();
    let decided: Result<Vec<ElectionOutcome>, (i16, String)> = if known.is_empty() {
        Ok(Vec::new())
    } else {
        match broker
            .metadata
            .propose(Command::ElectLeaders {
                election,
                partitions: known,
            })
            .await
        {
            Ok(CommandResult::Elections { outcomes }) => Ok(outcomes),
            Ok(other) => Err((Code::UnknownServerError.code(), format!("{other:?}"))),
            Err(e) => Err((Code::NotController.code(), e.to_string())),
        }
    };
    if decided
        .as_ref()
        .is_ok_and(|o| o.contains(&ElectionOutcome::Elected))
    {
        if let Err(e) = broker.reconcile().await {
            tracing::warn!(error = %e, "reconcile after a leader election failed");
        }
    }
    let mut outcomes = decided.as_ref().ok().map(|o| o.iter());
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for a in asked {
        let (code, message) = match (&a.id, &decided, outcomes.as_mut()) {
            (None, _, _) => (
                Code::UnknownTopicOrPartition.code(),
                Some(format!(
                    "unknown topic or partition. topic={}, partition={}",
                    a.topic, a.partition
                )),
            ),
            (Some(_), Err((code, msg)), _) => (*code, Some(msg.clone())),
            (Some(_), Ok(_), Some(it)) => match it.next() {
                Some(ElectionOutcome::Elected) => (NONE, None),
                Some(ElectionOutcome::NotNeeded) if every => continue,
                Some(ElectionOutcome::NotNeeded) => (Code::ElectionNotNeeded.code(), None),
                Some(ElectionOutcome::NotAvailable) => match election {
                    Election::Preferred => (
                        Code::PreferredLeaderNotAvailable.code(),
                        Some("the preferred replica is not a live in-sync replica".to_string()),
                    ),
                    Election::Unclean => (
                        Code::EligibleLeadersNotAvailable.code(),
                        Some("no replica of the partition is live".to_string()),
                    ),
                },
                Some(ElectionOutcome::UnknownPartition) | None => {
                    (Code::UnknownTopicOrPartition.code(), None)
                }
            },
            (Some(_), Ok(_), None) => (Code::UnknownServerError.code(), None),
        };
        if code != NONE {
            tracing::info!(topic = %a.topic, partition = a.partition, code, "leader election refused");
        }
        by_topic.entry(a.topic).or_default().push(
            PartitionResult::default()
                .with_partition_id(a.partition)
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string)),
        );
    }
    ElectLeadersResponse::default().with_replica_election_results(
        by_topic
            .into_iter()
            .map(|(topic, partition_result)| {
                ReplicaElectionResult::default()
                    .with_topic(TopicName(StrBytes::from_string(topic)))
                    .with_partition_result(partition_result)
            })
            .collect(),
    )
}
