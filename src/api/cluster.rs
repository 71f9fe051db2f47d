//! DescribeCluster, DescribeLogDirs, UnregisterBroker and AddRaftVoter.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{
    AddRaftVoterRequest, AddRaftVoterResponse, BrokerId, DescribeClusterRequest,
    DescribeClusterResponse, DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName,
    UnregisterBrokerRequest, UnregisterBrokerResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::error::Code;
use super::metadata::broker_list;
use crate::broker::Broker;
use crate::metadata::{Command, CommandResult};
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::security::Caller;

/// Endpoint type 1: brokers (2, controllers, is not served here).
const ENDPOINT_BROKERS: i8 = 1;

pub fn describe_cluster(
    broker: &Broker,
    req: DescribeClusterRequest,
    version: i16,
    caller: &Caller,
) -> DescribeClusterResponse {
    let listener = caller.listener.name.as_str();
    let view = broker.view();
    let mut resp = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(view.cluster_id.clone()))
        .with_controller_id(BrokerId(broker.node_id()))
        .with_cluster_authorized_operations(super::metadata::authorized_operations(
            caller,
            req.include_cluster_authorized_operations,
            ResourceType::Cluster,
            CLUSTER_NAME,
            super::acls::CLUSTER_OPERATIONS,
        ));
    if version >= 1 {
        resp.endpoint_type = ENDPOINT_BROKERS;
        if req.endpoint_type != ENDPOINT_BROKERS {
            resp.error_code = Code::UnsupportedEndpointType.code();
            resp.error_message = Some(StrBytes::from_string(format!(
                "only broker endpoints are described. endpoint_type={}",
                req.endpoint_type
            )));
            return resp;
        }
    }
    resp.brokers = broker_list(broker, listener)
        .into_iter()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(b.node_id)
                .with_host(b.host)
                .with_port(b.port)
                .with_rack(b.rack)
        })
        .collect();
    resp
}

/// Removes a stopped, drained broker from the cluster for good (`strata
/// cluster remove-broker`, Kafka's Admin `unregisterBroker`). A metadata
/// voter cannot be removed: voters are only ever added.
pub async fn unregister_broker(
    broker: &Broker,
    req: UnregisterBrokerRequest,
    _version: i16,
    caller: &Caller,
) -> UnregisterBrokerResponse {
    let refused = |code: Code, message: String| {
        tracing::info!(node_id = req.broker_id.0, code = code.code(), %message, "broker not unregistered");
        UnregisterBrokerResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    if !caller.allows_cluster(Operation::Alter) {
        return refused(
            Code::ClusterAuthorizationFailed,
            "unregistering a broker takes ALTER on the cluster".to_string(),
        );
    }
    let node_id = req.broker_id.0;
    if broker.metadata.is_voter(node_id) {
        return refused(
            Code::InvalidRequest,
            format!("the broker is a metadata voter; voters cannot be removed. node_id={node_id}"),
        );
    }
    match broker
        .metadata
        .propose(Command::UnregisterBroker { node_id })
        .await
    {
        Ok(CommandResult::Ok) => {
            tracing::info!(node_id, "broker unregistered");
            UnregisterBrokerResponse::default()
        }
        Ok(CommandResult::BrokerNotRegistered) => refused(
            Code::BrokerIdNotRegistered,
            format!("the broker is not registered. node_id={node_id}"),
        ),
        Ok(CommandResult::BrokerStillHosting { reason }) => refused(Code::InvalidRequest, reason),
        Ok(other) => refused(Code::UnknownServerError, format!("{other:?}")),
        Err(e) => refused(Code::NotController, e.to_string()),
    }
}

/// Makes a broker that follows the metadata log as a learner a voter of
/// the metadata quorum (`strata cluster add-voter`, Kafka's AddRaftVoter):
/// how a single node grows into a cluster. The voter is reached at the
/// controller address it joined with; the request's directory id and
/// listeners are not used (Strata's controllers have no directory ids).
pub async fn add_raft_voter(
    broker: &Broker,
    req: AddRaftVoterRequest,
    _version: i16,
    caller: &Caller,
) -> AddRaftVoterResponse {
    let node_id = req.voter_id;
    let refused = |code: Code, message: String| {
        tracing::info!(node_id, code = code.code(), %message, "voter not added");
        AddRaftVoterResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    if !caller.allows_cluster(Operation::Alter) {
        return refused(
            Code::ClusterAuthorizationFailed,
            "adding a metadata voter takes ALTER on the cluster".to_string(),
        );
    }
    let cluster_id = broker.view().cluster_id.clone();
    // Null or empty: not checked.
    if let Some(asked) = req
        .cluster_id
        .as_deref()
        .filter(|c| !c.is_empty() && **c != *cluster_id)
    {
        return refused(
            Code::InconsistentClusterId,
            format!("another cluster. asked={asked}, cluster_id={cluster_id}"),
        );
    }
    let Ok(id) = u64::try_from(node_id) else {
        return refused(
            Code::InvalidRequest,
            format!("a voter id must not be negative. node_id={node_id}"),
        );
    };
    match broker.metadata.add_voter(id).await {
        Ok(()) => AddRaftVoterResponse::default(),
        Err(e @ crate::metadata::MetadataError::AddVoter { .. }) => {
            refused(Code::InvalidRequest, e.to_string())
        }
        Err(e) => refused(Code::RequestTimedOut, e.to_string()),
    }
}

/// The local data dir, and the tier as a second, remote "log dir" whose
/// partition sizes are the bytes each partition holds in the object store
/// (so `strata tier status` and other tools see both through the protocol).
pub async fn describe_log_dirs(
    broker: &Broker,
    req: DescribeLogDirsRequest,
    _version: i16,
    caller: &Caller,
) -> DescribeLogDirsResponse {
    if !caller.allows_cluster(Operation::Describe) {
        return DescribeLogDirsResponse::default()
            .with_error_code(Code::ClusterAuthorizationFailed.code());
    }
    let view = broker.view();
    let wanted: Option<BTreeMap<String, Vec<i32>>> = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect()
    });
    let mut local: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    let mut tier: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for p in broker.all_partitions() {
        if view.topic_by_id(p.topic_id).is_none() {
            continue;
        }
        if let Some(w) = &wanted {
            match w.get(&p.topic) {
                Some(parts) if parts.contains(&p.index) => {}
                _ => continue,
            }
        }
        local.entry(p.topic.clone()).or_default().push(
            DescribeLogDirsPartition::default()
                .with_partition_index(p.index)
                .with_partition_size(p.size_bytes() as i64)
                .with_offset_lag(0),
        );
        if let (Some(remote), true) = (p.remote(), p.config().tier.enabled) {
            if let Ok(bytes) = remote.tier_bytes().await {
                // offset_lag: offsets not yet in the tier (the copy lag).
                let tiered_to = p.tier_last_offset().unwrap_or(p.log_start_offset() - 1);
                tier.entry(p.topic.clone()).or_default().push(
                    DescribeLogDirsPartition::default()
                        .with_partition_index(p.index)
                        .with_partition_size(bytes as i64)
                        .with_offset_lag((p.high_watermark() - tiered_to - 1).max(0)),
                );
            }
        }
    }
    let topics = |by_topic: BTreeMap<String, Vec<DescribeLogDirsPartition>>| {
        by_topic
            .into_iter()
            .map(|(name, mut partitions)| {
                partitions.sort_by_key(|p| p.partition_index);
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(partitions)
            })
            .collect()
    };
    let dir = std::path::absolute(&broker.config.data_dir)
        .unwrap_or_else(|_| broker.config.data_dir.clone());
    DescribeLogDirsResponse::default().with_results(vec![
        DescribeLogDirsResult::default()
            .with_log_dir(StrBytes::from_string(dir.display().to_string()))
            .with_topics(topics(local))
            .with_total_bytes(-1)
            .with_usable_bytes(-1),
        DescribeLogDirsResult::default()
            .with_log_dir(StrBytes::from_string(broker.tier.url().to_string()))
            .with_topics(topics(tier))
            .with_total_bytes(-1)
            .with_usable_bytes(-1),
    ])
}

/// The metadata log as a Kafka client names it in DescribeQuorum.
const METADATA_TOPIC: &str = "__cluster_metadata";

/// DescribeQuorum: the metadata quorum's leader, term, high watermark and
/// each voter's log end (what `kafka-metadata-quorum describe` prints).
/// Only partition 0 of `__cluster_metadata` exists; the leader answers,
/// asked over the controller transport when this broker does not lead.
pub async fn describe_quorum(
    broker: &Broker,
    req: kafka_protocol::messages::DescribeQuorumRequest,
    version: i16,
    caller: &Caller,
) -> kafka_protocol::messages::DescribeQuorumResponse {
    use kafka_protocol::messages::describe_quorum_response::{
        Listener, Node, PartitionData, ReplicaState, TopicData,
    };
    use kafka_protocol::messages::DescribeQuorumResponse;
    if let Some(why) = caller.cluster_refusal(Operation::Describe) {
        return DescribeQuorumResponse::default()
            .with_error_code(Code::ClusterAuthorizationFailed.code())
            .with_error_message(Some(StrBytes::from_string(why)));
    }
    let status = broker.metadata.quorum_status().await;
    let replica_state = |v: &crate::metadata::VoterStatus| {
        ReplicaState::default()
            .with_replica_id(BrokerId(v.node_id as i32))
            .with_log_end_offset(v.log_end)
            .with_last_fetch_timestamp(-1)
            .with_last_caught_up_timestamp(-1)
    };
    let partition = |index: i32| -> PartitionData {
        let p = PartitionData::default().with_partition_index(index);
        if index != 0 {
            return p.with_error_code(Code::UnknownTopicOrPartition.code());
        }
        match &status {
            Err(e) => p
                .with_error_code(Code::NotLeaderOrFollower.code())
                .with_error_message(Some(StrBytes::from_string(e.to_string())))
                .with_leader_id(BrokerId(-1)),
            Ok(s) => p
                .with_leader_id(BrokerId(s.leader as i32))
                .with_leader_epoch(i32::try_from(s.term).unwrap_or(i32::MAX))
                .with_high_watermark(s.high_watermark)
                .with_current_voters(s.voters.iter().map(replica_state).collect())
                .with_observers(s.observers.iter().map(replica_state).collect()),
        }
    };
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let known = t.topic_name.0.as_str() == METADATA_TOPIC;
            TopicData::default()
                .with_topic_name(t.topic_name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            if known {
                                partition(p.partition_index)
                            } else {
                                PartitionData::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(Code::UnknownTopicOrPartition.code())
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    let mut resp = DescribeQuorumResponse::default().with_topics(topics);
    if version >= 2 {
        if let Ok(s) = &status {
            resp.nodes = s
                .voters
                .iter()
                .chain(&s.observers)
                .filter_map(|v| {
                    let (host, port) = v.addr.rsplit_once(':')?;
                    Some(
                        Node::default()
                            .with_node_id(BrokerId(v.node_id as i32))
                            .with_listeners(vec![Listener::default()
                                .with_name(StrBytes::from_static_str("CONTROLLER"))
                                .with_host(StrBytes::from_string(host.to_string()))
                                .with_port(port.parse().ok()?)]),
                    )
                })
                .collect();
        }
    }
    resp
}
