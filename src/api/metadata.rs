//! Metadata: brokers, topics, partitions and leaders; auto-creates topics
//! when `auto.create.topics.enable` and the request allow it.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::acls::{CLUSTER_OPERATIONS, TOPIC_OPERATIONS};
use super::admin::{self, validate_topic_name};
use super::error::Code;
use crate::broker::Broker;
use crate::metadata::TopicInfo;
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::security::Caller;

/// The running brokers as clients of `listener` reach them: this one,
/// and the others that are not fenced and have a listener of that name.
pub fn broker_list(broker: &Broker, listener: &str) -> Vec<MetadataResponseBroker> {
    let view = broker.view();
    let me = &broker.me;
    let mut out: Vec<MetadataResponseBroker> = view
        .brokers
        .values()
        .filter(|b| b.node_id != me.node_id && !view.fenced.contains(&b.node_id))
        .chain(std::iter::once(me))
        .filter_map(|b| {
            let (host, port) = b.endpoint(listener)?;
            Some(
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(b.node_id))
                    .with_host(StrBytes::from_string(host))
                    .with_port(port)
                    .with_rack(b.rack.clone().map(StrBytes::from_string)),
            )
        })
        .collect();
    out.sort_by_key(|b| b.node_id.0);
    out
}

/// An authorized-operations field: the caller's operations among `ops` on
/// the resource when the client asked, else "not asked" (`i32::MIN`), as
/// Kafka encodes it.
pub fn authorized_operations(
    caller: &Caller,
    asked: bool,
    rt: ResourceType,
    name: &str,
    ops: &[Operation],
) -> i32 {
    if asked {
        caller.authorized_operations(rt, name, ops)
    } else {
        i32::MIN
    }
}

/// A topic's entry; a partition whose leader is fenced answers
/// LEADER_NOT_AVAILABLE with no leader, as Kafka does for an offline one.
fn topic_entry(
    topic: &TopicInfo,
    version: i16,
    fenced: &std::collections::BTreeSet<i32>,
) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let offline = fenced.contains(&p.leader);
            MetadataResponsePartition::default()
                .with_partition_index(i as i32)
                .with_error_code(if offline {
                    Code::LeaderNotAvailable.code()
                } else {
                    0
                })
                .with_leader_id(BrokerId(if offline { -1 } else { p.leader }))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(p.replicas.iter().map(|r| BrokerId(*r)).collect())
                .with_isr_nodes(p.isr.iter().map(|r| BrokerId(*r)).collect())
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(if version >= 10 { topic.id } else { Uuid::nil() })
        .with_is_internal(topic.name.starts_with("__"))
        .with_partitions(partitions)
}

fn error_entry(name: Option<String>, id: Uuid, code: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(code)
        .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
        .with_topic_id(id)
}

/// Topics the caller may not DESCRIBE are left out of a listing and
/// answer TOPIC_AUTHORIZATION_FAILED when named; auto-creation takes
/// CREATE on the cluster or the topic.
pub async fn handle(
    broker: &Broker,
    req: MetadataRequest,
    version: i16,
    caller: &Caller,
) -> MetadataResponse {
    let listener = caller.listener.name.as_str();
    let topics_asked = version >= 8 && req.include_topic_authorized_operations;
    let cluster_ops = authorized_operations(
        caller,
        (8..=10).contains(&version) && req.include_cluster_authorized_operations,
        ResourceType::Cluster,
        CLUSTER_NAME,
        CLUSTER_OPERATIONS,
    );
    let describe = |name: &str| caller.allows(Operation::Describe, ResourceType::Topic, name);
    let denied = |name: Option<String>, id: Uuid| {
        error_entry(name, id, Code::TopicAuthorizationFailed.code())
    };
    // Partitions led by a fenced broker have no leader to go to.
    let fenced = broker.view().fenced.clone();
    let mut topics = Vec::new();
    match req.topics {
        None => {
            for t in broker.view().topics.values() {
                if caller.may_see(Operation::Describe, ResourceType::Topic, &t.name) {
                    topics.push(topic_entry(t, version, &fenced));
                }
            }
        }
        Some(requested) => {
            // v4+ carries the client's wish; v0-v3 always allowed auto-creation.
            let allow_auto = version < 4 || req.allow_auto_topic_creation;
            for rt in requested {
                let view = broker.view();
                if let Some(name) = rt.name.as_ref().map(|n| n.0.to_string()) {
                    if !describe(&name) {
                        topics.push(denied(Some(name), Uuid::nil()));
                        continue;
                    }
                    if let Some(t) = view.topic(&name) {
                        topics.push(topic_entry(t, version, &fenced));
                        continue;
                    }
                    if let Err(msg) = validate_topic_name(&name) {
                        tracing::debug!(topic = %name, %msg, "metadata for an illegal topic name");
                        topics.push(error_entry(
                            Some(name),
                            Uuid::nil(),
                            Code::InvalidTopicException.code(),
                        ));
                        continue;
                    }
                    if allow_auto && broker.config.auto_create_topics {
                        if !admin::may_create_topic(caller, &name) {
                            topics.push(denied(Some(name), Uuid::nil()));
                            continue;
                        }
                        match admin::auto_create(broker, &name).await {
                            Ok(t) => {
                                // Kafka answers LEADER_NOT_AVAILABLE until the
                                // leader is up; ours is up once created.
                                topics.push(topic_entry(&t, version, &fenced));
                            }
                            Err((code, msg)) => {
                                tracing::warn!(topic = %name, code, %msg, "auto-create failed");
                                topics.push(error_entry(Some(name), Uuid::nil(), code));
                            }
                        }
                    } else {
                        topics.push(error_entry(
                            Some(name),
                            Uuid::nil(),
                            Code::UnknownTopicOrPartition.code(),
                        ));
                    }
                } else if !rt.topic_id.is_nil() {
                    match view.topic_by_id(rt.topic_id) {
                        Some(t) if !describe(&t.name) => topics.push(denied(None, rt.topic_id)),
                        Some(t) => topics.push(topic_entry(t, version, &fenced)),
                        None => {
                            topics.push(error_entry(None, rt.topic_id, Code::UnknownTopicId.code()))
                        }
                    }
                }
            }
        }
    }
    let view = broker.view();
    MetadataResponse::default()
        .with_brokers(broker_list(broker, listener))
        .with_cluster_id(if version >= 2 {
            Some(StrBytes::from_string(view.cluster_id.clone()))
        } else {
            None
        })
        .with_controller_id(BrokerId(if version >= 1 { broker.node_id() } else { -1 }))
        .with_topics(
            topics
                .into_iter()
                .map(|t| {
                    let ops = match (&t.name, t.error_code) {
                        (Some(name), 0) => authorized_operations(
                            caller,
                            topics_asked,
                            ResourceType::Topic,
                            name,
                            TOPIC_OPERATIONS,
                        ),
                        _ => i32::MIN,
                    };
                    t.with_topic_authorized_operations(ops)
                })
                .collect(),
        )
        .with_cluster_authorized_operations(cluster_ops)
}
