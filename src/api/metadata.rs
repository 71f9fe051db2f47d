//! Metadata: brokers, topics, partitions and leaders; auto-creates topics
//! when `auto.create.topics.enable` and the request allow it.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::admin::{self, validate_topic_name};
use super::error::Code;
use crate::broker::Broker;
use crate::metadata::TopicInfo;

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

/// Kafka's ACL operations as bits of an authorized-operations field.
const fn ops(list: &[u8]) -> i32 {
    let mut bits = 0;
    let mut i = 0;
    while i < list.len() {
        bits |= 1 << list[i];
        i += 1;
    }
    bits
}

/// What a client may do on a topic: everything Kafka defines for topics
/// (READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS,
/// ALTER_CONFIGS), as Kafka answers without an authorizer.
pub const TOPIC_AUTHORIZED_OPERATIONS: i32 = ops(&[3, 4, 5, 6, 7, 8, 10, 11]);

/// What a client may do on the cluster: CREATE, ALTER, DESCRIBE,
/// CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE.
pub const CLUSTER_AUTHORIZED_OPERATIONS: i32 = ops(&[5, 7, 8, 9, 10, 11, 12]);

/// The authorized-operations field: the set when asked for, else "not
/// asked" (`i32::MIN`), as Kafka encodes it.
pub fn authorized(asked: bool, set: i32) -> i32 {
    if asked {
        set
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

pub async fn handle(
    broker: &Broker,
    req: MetadataRequest,
    version: i16,
    listener: &str,
) -> MetadataResponse {
    let topic_ops = authorized(
        version >= 8 && req.include_topic_authorized_operations,
        TOPIC_AUTHORIZED_OPERATIONS,
    );
    let cluster_ops = authorized(
        (8..=10).contains(&version) && req.include_cluster_authorized_operations,
        CLUSTER_AUTHORIZED_OPERATIONS,
    );
    // Partitions led by a fenced broker have no leader to go to.
    let fenced = broker.view().fenced.clone();
    let mut topics = Vec::new();
    match req.topics {
        None => {
            for t in broker.view().topics.values() {
                topics.push(topic_entry(t, version, &fenced));
            }
        }
        Some(requested) => {
            // v4+ carries the client's wish; v0-v3 always allowed auto-creation.
            let allow_auto = version < 4 || req.allow_auto_topic_creation;
            for rt in requested {
                let view = broker.view();
                if let Some(name) = rt.name.as_ref().map(|n| n.0.to_string()) {
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
                    let ok = t.error_code == 0;
                    t.with_topic_authorized_operations(if ok { topic_ops } else { i32::MIN })
                })
                .collect(),
        )
        .with_cluster_authorized_operations(cluster_ops)
}
