//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs.
//!
//! Topic configs use Kafka's names and report their source: DYNAMIC_TOPIC_CONFIG
//! for values set on the topic, DEFAULT_CONFIG for the broker's defaults.
//! Broker configs are described read-only (STATIC_BROKER_CONFIG); changing
//! them at run time is refused.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncResponse;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::error::Code;
use crate::broker::Broker;
use crate::config::{is_topic_config, validate_topic_config};
use crate::metadata::{Command, CommandResult};
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::security::Caller;

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
const SOURCE_STATIC_BROKER: i8 = 4;

/// Kafka's config type codes, for DescribeConfigs v3+.
fn config_type(key: &str) -> i8 {
    if let Some(spec) = crate::config::topic::spec(key) {
        return spec.kind.code();
    }
    match key {
        "cleanup.policy" => 7,
        "compression.type"
        | "message.timestamp.type"
        | "log.dirs"
        | "listeners"
        | "advertised.listeners"
        | "inter.broker.listener.name"
        | "listener.security.protocol.map" => 2,
        "index.interval.bytes"
        | "max.message.bytes"
        | "min.insync.replicas"
        | "num.partitions"
        | "default.replication.factor"
        | "node.id"
        | "socket.request.max.bytes"
        | "message.max.bytes" => 3,
        "auto.create.topics.enable" => 1,
        "offsets.topic.replication.factor" => 4,
        _ => 5,
    }
}

fn entry(
    name: &str,
    value: String,
    source: i8,
    read_only: bool,
    version: i16,
) -> DescribeConfigsResourceResult {
    let mut e = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(name.to_string()))
        .with_value(Some(StrBytes::from_string(value)))
        .with_read_only(read_only)
        .with_config_source(source);
    if version >= 3 {
        e.config_type = config_type(name);
        e.documentation = crate::config::topic::documentation(name).map(StrBytes::from_static_str);
    }
    e
}

fn broker_configs(broker: &Broker) -> BTreeMap<String, String> {
    let c = &broker.config;
    let mut m = BTreeMap::new();
    m.insert("node.id".into(), c.node_id.to_string());
    m.insert("log.dirs".into(), c.data_dir.display().to_string());
    let listeners: Vec<String> = c
        .security
        .listeners
        .iter()
        .map(|l| format!("{}://{}", l.name, l.addr))
        .collect();
    m.insert("listeners".into(), listeners.join(","));
    let advertised: Vec<String> = broker
        .me
        .listeners
        .iter()
        .map(|e| format!("{}://{}:{}", e.listener, e.host, e.port))
        .collect();
    m.insert("advertised.listeners".into(), advertised.join(","));
    m.insert(
        "inter.broker.listener.name".into(),
        c.security.inter_broker().name.clone(),
    );
    let protocols: Vec<String> = c
        .security
        .listeners
        .iter()
        .map(|l| format!("{}:{}", l.name, l.protocol.name()))
        .collect();
    m.insert("listener.security.protocol.map".into(), protocols.join(","));
    m.insert(
        "auto.create.topics.enable".into(),
        c.auto_create_topics.to_string(),
    );
    m.insert("num.partitions".into(), c.num_partitions.to_string());
    m.insert(
        "default.replication.factor".into(),
        super::admin::default_replication_factor(broker).to_string(),
    );
    m.insert(
        "offsets.topic.replication.factor".into(),
        c.offsets_topic_replication_factor.to_string(),
    );
    m.insert(
        "socket.request.max.bytes".into(),
        c.socket_request_max_bytes.to_string(),
    );
    m.insert("message.max.bytes".into(), c.message_max_bytes.to_string());
    m.insert("log.segment.bytes".into(), c.log_segment_bytes.to_string());
    m.insert("log.retention.ms".into(), c.log_retention_ms.to_string());
    m.insert(
        "log.retention.check.interval.ms".into(),
        c.log_retention_check_interval_ms.to_string(),
    );
    let cleaner = &c.log_cleaner;
    for (key, value) in [
        ("log.cleaner.threads", u64::from(cleaner.threads)),
        ("log.cleaner.dedupe.buffer.size", cleaner.dedupe_buffer_size),
        (
            "log.cleaner.io.max.bytes.per.second",
            cleaner.io_max_bytes_per_second,
        ),
        ("log.cleaner.backoff.ms", cleaner.backoff_ms),
    ] {
        m.insert(key.into(), value.to_string());
    }
    m
}

/// Why the caller may not do `op` (DESCRIBE_CONFIGS or ALTER_CONFIGS) on a
/// config resource: a topic's take the operation on the topic, a broker's
/// on the cluster.
fn config_denied(
    caller: &Caller,
    resource_type: i8,
    name: &str,
    op: Operation,
) -> Option<(i16, String)> {
    let (rt, name, code) = match resource_type {
        RESOURCE_TOPIC => (ResourceType::Topic, name, Code::TopicAuthorizationFailed),
        _ => (
            ResourceType::Cluster,
            CLUSTER_NAME,
            Code::ClusterAuthorizationFailed,
        ),
    };
    (!caller.allows(op, rt, name)).then(|| (code.code(), caller.denied_message(op, rt, name)))
}

pub fn describe(
    broker: &Broker,
    req: DescribeConfigsRequest,
    version: i16,
    caller: &Caller,
) -> DescribeConfigsResponse {
    let view = broker.view();
    let results = req
        .resources
        .into_iter()
        .map(|res| {
            let keys: Option<Vec<String>> = res
                .configuration_keys
                .as_ref()
                .map(|ks| ks.iter().map(|k| k.to_string()).collect());
            let wanted = |k: &str| keys.as_ref().is_none_or(|ks| ks.iter().any(|x| x == k));
            let mut r = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            if let Some((code, message)) = config_denied(
                caller,
                res.resource_type,
                &res.resource_name,
                Operation::DescribeConfigs,
            ) {
                r.error_code = code;
                r.error_message = Some(StrBytes::from_string(message));
                return r;
            }
            match res.resource_type {
                RESOURCE_TOPIC => match view.topic(res.resource_name.as_str()) {
                    Some(topic) => {
                        r.configs = broker
                            .effective_topic_config(topic)
                            .entries()
                            .filter(|(k, _, _)| wanted(k))
                            .map(|(k, v, source)| {
                                entry(k, v.to_string(), source.code(), false, version)
                            })
                            .collect();
                    }
                    None => {
                        r.error_code = Code::UnknownTopicOrPartition.code();
                        r.error_message = Some(StrBytes::from_string(format!(
                            "unknown topic. topic={}",
                            res.resource_name.as_str()
                        )));
                    }
                },
                RESOURCE_BROKER => {
                    let name = res.resource_name.as_str();
                    if name.is_empty() || name == broker.node_id().to_string() {
                        let dynamic = &view.broker_configs;
                        let mut all: BTreeMap<String, (String, i8, bool)> = broker_configs(broker)
                            .into_iter()
                            .map(|(k, v)| (k, (v, SOURCE_STATIC_BROKER, true)))
                            .collect();
                        for (k, v) in dynamic {
                            all.insert(
                                k.clone(),
                                (v.clone(), SOURCE_DYNAMIC_DEFAULT_BROKER, false),
                            );
                        }
                        r.configs = all
                            .into_iter()
                            .filter(|(k, _)| wanted(k))
                            .map(|(k, (v, source, read_only))| {
                                entry(&k, v, source, read_only, version)
                            })
                            .collect();
                    } else {
                        r.error_code = Code::InvalidRequest.code();
                        r.error_message = Some(StrBytes::from_string(format!(
                            "unknown broker. broker={name}"
                        )));
                    }
                }
                other => {
                    r.error_code = Code::InvalidRequest.code();
                    r.error_message = Some(StrBytes::from_string(format!(
                        "unsupported resource type. type={other}"
                    )));
                }
            }
            r
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// Validates and applies a new set of explicit topic configs.
async fn apply_topic_configs(
    broker: &Broker,
    name: &str,
    mut new: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    let Some(current) = broker.view().topic(name).cloned() else {
        return Err((
            Code::UnknownTopicOrPartition.code(),
            format!("unknown topic. topic={name}"),
        ));
    };
    // Where the topic's tier is, and whether it is a read replica, are set
    // at creation for good: carried over by AlterConfigs (which replaces
    // the whole set), never changed or removed.
    for key in [
        crate::config::READ_REPLICA_CONFIG,
        crate::config::TIER_CLUSTER_ID_CONFIG,
    ] {
        match (current.configs.get(key), new.get(key)) {
            (Some(was), None) => {
                new.insert(key.to_string(), was.clone());
            }
            (was, now) if was == now => {}
            _ => {
                return Err((
                    Code::InvalidConfig.code(),
                    format!(
                        "{key} is set when the topic is created and cannot change. topic={name}"
                    ),
                ))
            }
        }
    }
    for (k, v) in &new {
        validate_topic_config(k, v).map_err(|m| (Code::InvalidConfig.code(), m))?;
    }
    if validate_only {
        return Ok(());
    }
    let result = broker
        .metadata
        .propose(Command::AlterTopicConfigs {
            name: name.to_string(),
            set: new,
            delete: vec![],
            replace: true,
        })
        .await
        .map_err(|e| (Code::NotController.code(), e.to_string()))?;
    match result {
        CommandResult::Ok => {}
        CommandResult::UnknownTopic => {
            return Err((
                Code::UnknownTopicOrPartition.code(),
                format!("unknown topic. topic={name}"),
            ))
        }
        other => return Err((Code::UnknownServerError.code(), format!("{other:?}"))),
    }
    broker
        .reconcile()
        .await
        .map_err(|e| (Code::KafkaStorageError.code(), e.to_string()))
}

/// A change to the dynamic broker configs: `set` upserted and `delete`
/// removed, or with `replace` exactly `set` (AlterConfigs).
struct BrokerChange {
    set: BTreeMap<String, String>,
    delete: Vec<String>,
    replace: bool,
}

/// Validates and applies a change to the dynamic broker configs, persisted
/// in cluster metadata. The resource is the cluster default (`""`) or this
/// broker; Kafka's dynamic configs only (others need a restart).
async fn apply_broker_configs(
    broker: &Broker,
    name: &str,
    change: BrokerChange,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    if !(name.is_empty() || name == broker.node_id().to_string()) {
        return Err((
            Code::InvalidRequest.code(),
            format!("unknown broker. broker={name}"),
        ));
    }
    for key in change.set.keys().chain(&change.delete) {
        if crate::config::topic::dynamic_broker(key).is_none() {
            return Err((
                Code::InvalidConfig.code(),
                crate::config::clip_message(format!(
                    "not a broker config that can change at run time; restart with the new flag. key={key}"
                )),
            ));
        }
    }
    for (k, v) in &change.set {
        let d = crate::config::topic::dynamic_broker(k).expect("checked above");
        crate::config::topic::check_dynamic_broker(d, v)
            .map_err(|m| (Code::InvalidConfig.code(), crate::config::clip_message(m)))?;
    }
    if validate_only {
        return Ok(());
    }
    broker
        .metadata
        .propose(Command::AlterBrokerConfigs {
            set: change.set,
            delete: change.delete,
            replace: change.replace,
        })
        .await
        .map_err(|e| (Code::NotController.code(), e.to_string()))?;
    broker
        .reconcile()
        .await
        .map_err(|e| (Code::KafkaStorageError.code(), e.to_string()))
}

pub async fn alter(
    broker: &Broker,
    req: AlterConfigsRequest,
    _version: i16,
    caller: &Caller,
) -> AlterConfigsResponse {
    let mut responses = Vec::new();
    for res in req.resources {
        let name = res.resource_name.to_string();
        let denied = config_denied(caller, res.resource_type, &name, Operation::AlterConfigs);
        let outcome = match res.resource_type {
            _ if denied.is_some() => Err(denied.expect("checked just now")),
            RESOURCE_TOPIC => {
                let mut new = BTreeMap::new();
                let mut bad = None;
                for c in &res.configs {
                    match &c.value {
                        Some(v) => {
                            new.insert(c.name.to_string(), v.to_string());
                        }
                        None => {
                            bad = Some((
                                Code::InvalidConfig.code(),
                                crate::config::clip_message(format!(
                                    "null value for topic config. key={}",
                                    c.name.as_str()
                                )),
                            ))
                        }
                    }
                }
                match bad {
                    Some(e) => Err(e),
                    None => apply_topic_configs(broker, &name, new, req.validate_only).await,
                }
            }
            RESOURCE_BROKER => {
                let mut set = BTreeMap::new();
                for c in &res.configs {
                    if let Some(v) = &c.value {
                        set.insert(c.name.to_string(), v.to_string());
                    }
                }
                let change = BrokerChange {
                    set,
                    delete: vec![],
                    replace: true,
                };
                apply_broker_configs(broker, &name, change, req.validate_only).await
            }
            other => Err((
                Code::InvalidRequest.code(),
                format!("unsupported resource type. type={other}"),
            )),
        };
        let mut r = AlterConfigsResourceResponse::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        if let Err((code, msg)) = outcome {
            r.error_code = code;
            r.error_message = Some(StrBytes::from_string(msg));
        }
        responses.push(r);
    }
    AlterConfigsResponse::default().with_responses(responses)
}

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

pub async fn incremental_alter(
    broker: &Broker,
    req: IncrementalAlterConfigsRequest,
    _version: i16,
    caller: &Caller,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::new();
    for res in req.resources {
        let name = res.resource_name.to_string();
        let denied = config_denied(caller, res.resource_type, &name, Operation::AlterConfigs);
        let outcome = match res.resource_type {
            _ if denied.is_some() => Err(denied.expect("checked just now")),
            RESOURCE_TOPIC => match broker.view().topic(&name) {
                None => Err((
                    Code::UnknownTopicOrPartition.code(),
                    format!("unknown topic. topic={name}"),
                )),
                Some(topic) => {
                    let mut new = topic.configs.clone();
                    let mut bad = None;
                    for c in &res.configs {
                        let key = c.name.to_string();
                        if !is_topic_config(&key) {
                            bad = Some((
                                Code::InvalidConfig.code(),
                                crate::config::clip_message(format!(
                                    "unknown topic config. key={key}"
                                )),
                            ));
                            break;
                        }
                        match (c.config_operation, &c.value) {
                            (OP_SET, Some(v)) => {
                                new.insert(key, v.to_string());
                            }
                            (OP_DELETE, _) => {
                                new.remove(&key);
                            }
                            (OP_APPEND | OP_SUBTRACT, _) if key != "cleanup.policy" => {
                                bad = Some((
                                    Code::InvalidConfig.code(),
                                    crate::config::clip_message(format!(
                                        "append/subtract apply only to list configs. key={key}"
                                    )),
                                ));
                            }
                            (OP_APPEND, Some(v)) => {
                                let cur = broker
                                    .effective_topic_config(topic)
                                    .get(&key)
                                    .unwrap_or_default()
                                    .to_string();
                                let mut items: Vec<String> = cur
                                    .split(',')
                                    .filter(|s| !s.is_empty())
                                    .map(String::from)
                                    .collect();
                                for item in v.split(',') {
                                    if !items.iter().any(|i| i == item) {
                                        items.push(item.to_string());
                                    }
                                }
                                new.insert(key, items.join(","));
                            }
                            (OP_SUBTRACT, Some(v)) => {
                                let cur = broker
                                    .effective_topic_config(topic)
                                    .get(&key)
                                    .unwrap_or_default()
                                    .to_string();
                                let drop: Vec<&str> = v.split(',').collect();
                                let items: Vec<&str> = cur
                                    .split(',')
                                    .filter(|s| !s.is_empty() && !drop.contains(s))
                                    .collect();
                                new.insert(key, items.join(","));
                            }
                            (op, _) => {
                                bad = Some((
                                    Code::InvalidConfig.code(),
                                    crate::config::clip_message(format!("invalid config operation or null value. key={key}, op={op}")),
                                ));
                            }
                        }
                    }
                    match bad {
                        Some(e) => Err(e),
                        None => apply_topic_configs(broker, &name, new, req.validate_only).await,
                    }
                }
            },
            RESOURCE_BROKER => {
                let mut change = BrokerChange {
                    set: BTreeMap::new(),
                    delete: vec![],
                    replace: false,
                };
                let mut bad = None;
                for c in &res.configs {
                    let key = c.name.to_string();
                    match (c.config_operation, &c.value) {
                        (OP_SET, Some(v)) => {
                            change.set.insert(key, v.to_string());
                        }
                        (OP_DELETE, _) => change.delete.push(key),
                        (op, _) => {
                            bad = Some((
                                Code::InvalidConfig.code(),
                                crate::config::clip_message(format!(
                                    "invalid operation for a broker config. key={key}, op={op}"
                                )),
                            ));
                        }
                    }
                }
                match bad {
                    Some(e) => Err(e),
                    None => apply_broker_configs(broker, &name, change, req.validate_only).await,
                }
            }
            other => Err((
                Code::InvalidRequest.code(),
                format!("unsupported resource type. type={other}"),
            )),
        };
        let mut r = IncResponse::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        if let Err((code, msg)) = outcome {
            r.error_code = code;
            r.error_message = Some(StrBytes::from_string(msg));
        }
        responses.push(r);
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
