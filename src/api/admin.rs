//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions and
//! DeleteRecords. Topic changes are proposed to the metadata quorum; the
//! broker then reconciles its local partitions with the new view before it
//! answers, so a client that sees success can use the topic at once.
//!
//! The rules for a new topic (its name, partitions, replication factor and
//! configs) live here; Metadata checks names and auto-creates topics
//! through them.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteRecordsRequest, DeleteRecordsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::error::{partition_error_code, Code, NONE};
use crate::broker::Broker;
use crate::config::validate_topic_config;
use crate::metadata::{Command, CommandResult, TopicInfo};
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::security::Caller;

/// Most partitions one topic may have (a guard against absurd requests).
pub const MAX_PARTITIONS: i32 = 100_000;

/// A failed admin operation: Kafka error code and message.
pub type AdminError = (i16, String);

fn err(code: Code, msg: impl Into<String>) -> AdminError {
    (code.code(), msg.into())
}

/// The Kafka error of a topic change the quorum refused.
fn refused(result: CommandResult) -> AdminError {
    match result {
        CommandResult::UnknownTopic => err(Code::UnknownTopicOrPartition, "unknown topic"),
        CommandResult::TopicAlreadyExists => err(Code::TopicAlreadyExists, "topic already exists"),
        CommandResult::InvalidPartitions { reason } => err(Code::InvalidPartitions, reason),
        CommandResult::InvalidReplicationFactor { reason } => {
            err(Code::InvalidReplicationFactor, reason)
        }
        CommandResult::InvalidReplicaAssignment { reason } => {
            err(Code::InvalidReplicaAssignment, reason)
        }
        CommandResult::InvalidTopic { reason } => err(Code::InvalidTopicException, reason),
        CommandResult::InvalidRequest { reason } => err(Code::InvalidRequest, reason),
        other => err(Code::UnknownServerError, format!("{other:?}")),
    }
}

/// A topic to create, after request parsing.
pub struct NewTopic {
    /// Set when restoring: the id the topic had (its tier paths use it).
    pub id: Option<Uuid>,
    pub name: String,
    pub partitions: i32,
    /// -1: the default (`default.replication.factor`, else min(3, running
    /// brokers)).
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
    /// Explicit replicas, one list per partition (then `partitions` is
    /// their count and `replication_factor` the lists' length).
    pub assignments: Option<Vec<Vec<i32>>>,
}

impl NewTopic {
    /// Its replication factor as the quorum is asked for it: a default
    /// resolved from `default.replication.factor` where set (else left to
    /// the quorum: min(3, running brokers)).
    fn replication_factor(&self, broker: &Broker) -> i16 {
        match self.replication_factor {
            -1 => broker.config.default_replication_factor.unwrap_or(-1),
            rf => rf,
        }
    }

    /// The replication factor the topic would get now.
    fn planned_replication_factor(&self, broker: &Broker) -> i16 {
        if let Some(a) = &self.assignments {
            return a.first().map_or(0, |r| r.len() as i16);
        }
        match self.replication_factor {
            -1 => default_replication_factor(broker),
            rf => rf,
        }
    }
}

/// The replication factor of a topic created without one now:
/// `default.replication.factor`, else min(3, running brokers).
pub fn default_replication_factor(broker: &Broker) -> i16 {
    broker.config.default_replication_factor.unwrap_or_else(|| {
        let live = broker.view().live_brokers().len();
        live.clamp(1, crate::metadata::DEFAULT_REPLICATION_FACTOR) as i16
    })
}

/// Partitions a request adds, checked against `--max-partitions-per-request`
/// (summed over the request's topics) and `--max-partitions` (the cluster's
/// total): a request of 100,000 partitions must not reach the metadata log.
struct PartitionBudget {
    added: u64,
}

impl PartitionBudget {
    fn new() -> PartitionBudget {
        PartitionBudget { added: 0 }
    }

    fn take(&mut self, broker: &Broker, new: i32) -> Result<(), AdminError> {
        let new = u64::try_from(new).unwrap_or(0);
        let per_request = u64::from(broker.config.max_partitions_per_request);
        if self.added + new > per_request {
            return Err(err(
                Code::InvalidPartitions,
                format!(
                    "one request may add at most {per_request} partitions (max-partitions-per-request). requested={}",
                    self.added + new
                ),
            ));
        }
        let existing: u64 = broker
            .view()
            .topics
            .values()
            .map(|t| t.partitions.len() as u64)
            .sum();
        let max = u64::from(broker.config.max_partitions);
        if existing + self.added + new > max {
            return Err(err(
                Code::PolicyViolation,
                format!(
                    "the cluster may hold at most {max} partitions (max-partitions). existing={existing}, requested={}",
                    self.added + new
                ),
            ));
        }
        self.added += new;
        Ok(())
    }
}

/// Kafka's rules for a legal topic name.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name cannot be {name:?}"));
    }
    if name.len() > 249 {
        return Err(format!(
            "topic name is longer than 249 characters. len={}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "topic name contains an illegal character (legal: ASCII alphanumerics, '.', '_', '-'). char={c:?}"
        ));
    }
    Ok(())
}

/// Checks a topic creation against Kafka's rules without applying it.
pub fn check_new_topic(broker: &Broker, t: &NewTopic) -> Result<(), AdminError> {
    validate_topic_name(&t.name).map_err(|m| err(Code::InvalidTopicException, m))?;
    if broker.view().topic(&t.name).is_some() {
        return Err(err(
            Code::TopicAlreadyExists,
            format!("topic already exists. topic={}", t.name),
        ));
    }
    if t.partitions < 1 || t.partitions > MAX_PARTITIONS {
        return Err(err(
            Code::InvalidPartitions,
            format!(
                "number of partitions must be between 1 and {MAX_PARTITIONS}. partitions={}",
                t.partitions
            ),
        ));
    }
    let rf = t.replication_factor(broker);
    let view = broker.view();
    match &t.assignments {
        Some(a) => {
            if let Err(CommandResult::InvalidReplicaAssignment { reason }) =
                view.explicit_partitions(a, None)
            {
                return Err(err(Code::InvalidReplicaAssignment, reason));
            }
        }
        None => {
            let live = view.live_brokers().len();
            if rf != -1 && (rf < 1 || usize::from(rf.unsigned_abs()) > live) {
                return Err(err(
                    Code::InvalidReplicationFactor,
                    format!(
                        "replication factor must be between 1 and the running brokers. replication_factor={rf}, brokers={live}"
                    ),
                ));
            }
        }
    }
    for (k, v) in &t.configs {
        validate_topic_config(k, v).map_err(|m| err(Code::InvalidConfig, m))?;
    }
    Ok(())
}

/// Creates `name` as a read replica of the topic of that name that cluster
/// `source` writes to the tier (the broker-wide `--read-replica-of`).
pub async fn create_read_replica(
    broker: &Broker,
    name: &str,
    source: &str,
) -> Result<TopicInfo, AdminError> {
    let mut t = NewTopic {
        id: None,
        name: name.to_string(),
        partitions: -1,
        replication_factor: -1,
        configs: BTreeMap::from([(
            crate::config::READ_REPLICA_CONFIG.to_string(),
            source.to_string(),
        )]),
        assignments: None,
    };
    plan_restore(broker, &mut t, -1).await?;
    create_topic(broker, t).await
}

/// Creates a topic through the metadata quorum and opens its partitions.
pub async fn create_topic(broker: &Broker, t: NewTopic) -> Result<TopicInfo, AdminError> {
    check_new_topic(broker, &t)?;
    let result = broker
        .metadata
        .propose(Command::CreateTopic {
            name: t.name.clone(),
            id: t.id.unwrap_or_else(Uuid::new_v4),
            partitions: t.partitions,
            replication_factor: t.replication_factor(broker),
            configs: t.configs,
            assignments: t.assignments,
        })
        .await
        .map_err(|e| err(Code::NotController, e.to_string()))?;
    match result {
        CommandResult::Ok => {}
        CommandResult::TopicAlreadyExists => {
            return Err(err(
                Code::TopicAlreadyExists,
                format!("topic already exists. topic={}", t.name),
            ))
        }
        other => return Err(refused(other)),
    }
    broker
        .reconcile()
        .await
        .map_err(|e| err(Code::KafkaStorageError, e.to_string()))?;
    broker.view().topic(&t.name).cloned().ok_or_else(|| {
        err(
            Code::UnknownTopicOrPartition,
            "topic vanished after creation",
        )
    })
}

/// `strata.restore=true` at creation: find the topic of that name in the
/// tier (optionally `strata.tier.cluster.id` names the source cluster) and
/// create it with its old id and partition count, reading its history from
/// there. The local logs then start after what the tier holds.
///
/// `strata.read.replica.of=<cluster>` likewise, from that cluster's
/// prefix, but without taking the topic over: the source cluster goes on
/// writing it, and this one only reads (see [`crate::config::READ_REPLICA_CONFIG`]).
async fn plan_restore(
    broker: &Broker,
    t: &mut NewTopic,
    requested_partitions: i32,
) -> Result<(), AdminError> {
    use crate::config::{
        READ_REPLICA_CONFIG, RESTORE_CONFIG, TAKEOVER_CONFIG, TIER_CLUSTER_ID_CONFIG,
    };
    let takeover = t.configs.remove(TAKEOVER_CONFIG);
    let replica_of = t.configs.get(READ_REPLICA_CONFIG).cloned();
    if let Some(source) = &replica_of {
        if t.configs.contains_key(RESTORE_CONFIG) || takeover.is_some() {
            return Err(err(
                Code::InvalidConfig,
                format!("{READ_REPLICA_CONFIG} does not go with {RESTORE_CONFIG} or {TAKEOVER_CONFIG}: a read replica never takes the topic over"),
            ));
        }
        if *source == broker.view().cluster_id {
            return Err(err(
                Code::InvalidConfig,
                format!("a topic cannot be a read replica of its own cluster. {READ_REPLICA_CONFIG}={source}"),
            ));
        }
        if t.configs
            .get(TIER_CLUSTER_ID_CONFIG)
            .is_some_and(|c| c != source)
        {
            return Err(err(
                Code::InvalidConfig,
                format!("{TIER_CLUSTER_ID_CONFIG} differs from {READ_REPLICA_CONFIG}"),
            ));
        }
        t.configs
            .insert(TIER_CLUSTER_ID_CONFIG.to_string(), source.clone());
    }
    let flag = match (t.configs.remove(RESTORE_CONFIG), &replica_of) {
        (_, Some(_)) => "true".to_string(),
        (Some(flag), None) => flag,
        (None, None) => {
            return match takeover {
                Some(_) => Err(err(
                    Code::InvalidConfig,
                    format!("{TAKEOVER_CONFIG} applies only to a restore ({RESTORE_CONFIG}=true)"),
                )),
                None => Ok(()),
            };
        }
    };
    let forced = match takeover.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(err(
                Code::InvalidConfig,
                format!(
                    "invalid value for {TAKEOVER_CONFIG}: expected true or false. value={other:?}"
                ),
            ))
        }
    };
    if flag != "true" {
        return Err(err(
            Code::InvalidConfig,
            format!("invalid value for {RESTORE_CONFIG}: expected true. value={flag:?}"),
        ));
    }
    let found = broker.tier.find_remote_topic(&t.name).await.map_err(|e| {
        err(
            Code::KafkaStorageError,
            format!("cannot list the tier: {e}"),
        )
    })?;
    let wanted_cluster = t.configs.get(TIER_CLUSTER_ID_CONFIG).cloned();
    let matches: Vec<_> = found
        .into_iter()
        .filter(|(c, _)| wanted_cluster.as_ref().is_none_or(|w| w == c))
        .collect();
    let (cluster, remote) = match matches.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(err(
                Code::InvalidConfig,
                format!(
                    "no topic of this name in the tier. topic={}, tier={}",
                    t.name,
                    broker.tier.url()
                ),
            ))
        }
        many => {
            let clusters: Vec<&str> = many.iter().map(|(c, _)| c.as_str()).collect();
            return Err(err(
                Code::InvalidConfig,
                format!(
                    "the tier holds this topic for several clusters; name one with {TIER_CLUSTER_ID_CONFIG}. topic={}, clusters={clusters:?}",
                    t.name
                ),
            ));
        }
    };
    // The topic's configs and partition count as its cluster last wrote
    // them (none in a tier written before topic.json existed); configs
    // given with the restore win.
    let meta = broker
        .tier
        .read_topic_meta(&cluster, &remote)
        .await
        .map_err(|e| {
            err(
                Code::KafkaStorageError,
                format!("cannot read the topic's configs in the tier: {e}"),
            )
        })?;
    let mut count = remote.partitions.iter().max().map(|p| p + 1).unwrap_or(1);
    if let Some(meta) = meta {
        count = count.max(meta.partitions);
        for (k, v) in meta.configs {
            if t.configs.contains_key(&k) {
                continue;
            }
            match validate_topic_config(&k, &v) {
                Ok(()) => {
                    t.configs.insert(k, v);
                }
                Err(why) => {
                    tracing::warn!(topic = %t.name, key = %k, %why, "a config from the tier is not restored");
                }
            }
        }
    }
    if replica_of.is_some() {
        // A replica has the source's partitions, no more, no fewer.
        if requested_partitions != -1 && requested_partitions != count {
            return Err(err(
                Code::InvalidPartitions,
                format!("a read replica has the source's {count} partitions. requested={requested_partitions}"),
            ));
        }
        t.partitions = count;
    }
    if requested_partitions != -1 && requested_partitions < count {
        return Err(err(
            Code::InvalidPartitions,
            format!("the tier holds {count} partitions; cannot restore into fewer. requested={requested_partitions}"),
        ));
    }
    t.partitions = t.partitions.max(count);
    t.id = Some(Uuid::from_bytes(remote.topic_id));
    if broker
        .view()
        .topic_by_id(Uuid::from_bytes(remote.topic_id))
        .is_some()
    {
        return Err(err(
            Code::TopicAlreadyExists,
            format!(
                "a topic with the restored topic's id exists. topic={}",
                t.name
            ),
        ));
    }
    if replica_of.is_some() {
        tracing::info!(topic = %t.name, partitions = t.partitions, source_cluster = %cluster, "serving a read replica of a topic another cluster writes to the tier");
        return Ok(());
    }
    take_over(broker, &cluster, &remote, t, forced).await?;
    if cluster != broker.view().cluster_id {
        t.configs
            .insert(TIER_CLUSTER_ID_CONFIG.to_string(), cluster);
    }
    tracing::info!(topic = %t.name, partitions = t.partitions, "restoring topic from the tier");
    Ok(())
}

/// Makes this cluster the writer of every partition of a restored topic
/// (a topic another cluster wrote, or one taken from this cluster since),
/// so that two clusters never write one manifest: refused while the
/// manifests were written within `--tier-takeover-quiet-ms`, unless
/// `forced`. The old writer's later writes are refused; what it wrote
/// before stays.
async fn take_over(
    broker: &Broker,
    cluster: &str,
    remote: &tiering::RemoteTopic,
    t: &NewTopic,
    forced: bool,
) -> Result<(), AdminError> {
    let me = broker.view().cluster_id.clone();
    let quiet =
        (!forced).then(|| std::time::Duration::from_millis(broker.config.tier.takeover_quiet_ms));
    for p in 0..t.partitions {
        let key = tiering::PartitionKey::new(cluster, &remote.topic, remote.topic_id, p);
        let part = broker.tier.partition_as(key, &me);
        match part.take_over(quiet, crate::broker::now_ms()).await {
            Ok(_) => {}
            Err(e @ tiering::TierError::OwnerActive { .. }) => {
                return Err(err(
                    Code::PolicyViolation,
                    format!("cannot restore {}: {e}; if that cluster has stopped, restore with {}=true (strata tier restore --take-over)", t.name, crate::config::TAKEOVER_CONFIG),
                ))
            }
            Err(e) => {
                return Err(err(
                    Code::KafkaStorageError,
                    format!("cannot take the tier's topic over. topic={}, partition={p}: {e}", t.name),
                ))
            }
        }
    }
    Ok(())
}

/// Whether the caller may create the topic `name`: CREATE on the cluster
/// or on the topic, as Kafka checks it.
pub fn may_create_topic(caller: &Caller, name: &str) -> bool {
    caller.may_see(Operation::Create, ResourceType::Cluster, CLUSTER_NAME)
        || caller.allows(Operation::Create, ResourceType::Topic, name)
}

/// TOPIC_AUTHORIZATION_FAILED with its message.
fn topic_denied(caller: &Caller, op: Operation, name: &str) -> AdminError {
    err(
        Code::TopicAuthorizationFailed,
        caller.denied_message(op, ResourceType::Topic, name),
    )
}

/// Auto-creation on first use with the broker's defaults.
pub async fn auto_create(broker: &Broker, name: &str) -> Result<TopicInfo, AdminError> {
    let t = NewTopic {
        id: None,
        name: name.to_string(),
        partitions: broker.config.num_partitions,
        replication_factor: -1,
        configs: BTreeMap::new(),
        assignments: None,
    };
    match create_topic(broker, t).await {
        // Lost a race with another creator: use theirs.
        Err((code, _)) if code == Code::TopicAlreadyExists.code() => broker
            .view()
            .topic(name)
            .cloned()
            .ok_or_else(|| err(Code::UnknownTopicOrPartition, "topic vanished")),
        other => other,
    }
}

pub async fn create_topics(
    broker: &Broker,
    req: CreateTopicsRequest,
    version: i16,
    caller: &Caller,
) -> CreateTopicsResponse {
    let mut results = Vec::new();
    let mut budget = PartitionBudget::new();
    for ct in req.topics {
        let name = ct.name.0.to_string();
        let mut configs = BTreeMap::new();
        let mut config_error = None;
        if !may_create_topic(caller, &name) {
            config_error = Some(topic_denied(caller, Operation::Create, &name));
        }
        for c in &ct.configs {
            match &c.value {
                Some(v) => {
                    configs.insert(c.name.to_string(), v.to_string());
                }
                None => {
                    config_error = Some(err(
                        Code::InvalidConfig,
                        crate::config::clip_message(format!(
                            "null value for topic config. key={}",
                            c.name.as_str()
                        )),
                    ))
                }
            }
        }
        let mut assignments = None;
        let partitions = if ct.assignments.is_empty() {
            if ct.num_partitions == -1 {
                broker.config.num_partitions
            } else {
                ct.num_partitions
            }
        } else {
            if ct.num_partitions != -1 || ct.replication_factor != -1 {
                config_error.get_or_insert(err(
                    Code::InvalidRequest,
                    "both replica assignments and partitions/replication factor were given",
                ));
            }
            let mut a: Vec<_> = ct.assignments.iter().collect();
            a.sort_by_key(|a| a.partition_index);
            if a.iter()
                .enumerate()
                .any(|(i, a)| a.partition_index != i as i32)
            {
                config_error.get_or_insert(err(
                    Code::InvalidReplicaAssignment,
                    "replica assignments must name partitions 0 to n-1, each once",
                ));
            }
            assignments = Some(
                a.iter()
                    .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                    .collect::<Vec<Vec<i32>>>(),
            );
            a.len() as i32
        };
        let mut new = NewTopic {
            id: None,
            name: name.clone(),
            partitions,
            replication_factor: if assignments.is_some() {
                -1
            } else {
                ct.replication_factor
            },
            configs,
            assignments,
        };
        if config_error.is_none() {
            if let Err(e) = plan_restore(broker, &mut new, ct.num_partitions).await {
                config_error = Some(e);
            }
        }
        if config_error.is_none() && new.partitions >= 1 {
            if let Err(e) = budget.take(broker, new.partitions) {
                config_error = Some(e);
            }
        }
        let planned = (new.partitions, new.planned_replication_factor(broker));
        let outcome = match config_error {
            Some(e) => Err(e),
            None if req.validate_only => check_new_topic(broker, &new).map(|_| None),
            None => create_topic(broker, new).await.map(Some),
        };
        let mut r = CreatableTopicResult::default().with_name(ct.name.clone());
        match outcome {
            Ok(created) => {
                // What the topic got (validate_only: what it asked for).
                let (partitions, replication_factor) = match &created {
                    Some(t) => (
                        t.partitions.len() as i32,
                        t.partitions.first().map_or(0, |p| p.replicas.len() as i16),
                    ),
                    None => planned,
                };
                r.num_partitions = partitions;
                r.replication_factor = replication_factor;
                if let Some(t) = &created {
                    if version >= 7 {
                        r.topic_id = t.id;
                    }
                }
                if version >= 5
                    && !caller.may_see(Operation::DescribeConfigs, ResourceType::Topic, &name)
                {
                    r.topic_config_error_code = Code::TopicAuthorizationFailed.code();
                } else if version >= 5 {
                    let topic_configs = created
                        .as_ref()
                        .map(|t| t.configs.clone())
                        .unwrap_or_default();
                    let probe = TopicInfo {
                        name: name.clone(),
                        id: Uuid::nil(),
                        partitions: vec![],
                        configs: topic_configs,
                    };
                    let eff = broker.effective_topic_config(&probe);
                    r.configs = Some(
                        eff.entries()
                            .map(|(k, v, source)| {
                                CreatableTopicConfigs::default()
                                    .with_name(StrBytes::from_string(k.to_string()))
                                    .with_value(Some(StrBytes::from_string(v.to_string())))
                                    .with_config_source(source.code())
                            })
                            .collect(),
                    );
                }
            }
            Err((code, msg)) => {
                tracing::info!(topic = %name, code, %msg, "create topic refused");
                r.error_code = code;
                if version >= 1 {
                    r.error_message = Some(StrBytes::from_string(msg));
                }
                if version >= 5 {
                    r.num_partitions = -1;
                    r.replication_factor = -1;
                }
            }
        }
        results.push(r);
    }
    CreateTopicsResponse::default().with_topics(results)
}

pub async fn delete_topics(
    broker: &Broker,
    req: DeleteTopicsRequest,
    version: i16,
    caller: &Caller,
) -> DeleteTopicsResponse {
    // v0-v5 name topics in `topic_names`; v6+ in `topics` (by name or id).
    let mut wanted: Vec<(Option<String>, Uuid)> = req
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), Uuid::nil()))
        .collect();
    wanted.extend(
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)),
    );
    let mut responses = Vec::new();
    let mut changed = false;
    for (name, id) in wanted {
        let view = broker.view();
        let topic = match (&name, id.is_nil()) {
            (Some(n), _) => view.topic(n).cloned(),
            (None, false) => view.topic_by_id(id).cloned(),
            (None, true) => None,
        };
        let mut r = DeletableTopicResult::default()
            .with_name(name.clone().map(|n| TopicName(StrBytes::from_string(n))));
        if version >= 6 {
            r.topic_id = id;
        }
        // The name to authorize: the one given, or the one the id has.
        let auth_name = name
            .clone()
            .or_else(|| topic.as_ref().map(|t| t.name.clone()));
        match topic {
            _ if auth_name
                .as_deref()
                .is_some_and(|n| !caller.allows(Operation::Delete, ResourceType::Topic, n)) =>
            {
                let (code, msg) = topic_denied(
                    caller,
                    Operation::Delete,
                    auth_name.as_deref().unwrap_or(""),
                );
                r.error_code = code;
                r.error_message = Some(StrBytes::from_string(msg));
            }
            None => {
                r.error_code = if name.is_none() {
                    Code::UnknownTopicId.code()
                } else {
                    Code::UnknownTopicOrPartition.code()
                };
            }
            Some(t) if t.name.starts_with("__") => {
                r.error_code = Code::InvalidTopicException.code();
                r.error_message = Some(StrBytes::from_string(format!(
                    "internal topics cannot be deleted. topic={}",
                    t.name
                )));
            }
            Some(t) => {
                if version >= 6 {
                    r.topic_id = t.id;
                    r.name = Some(TopicName(StrBytes::from_string(t.name.clone())));
                }
                match broker
                    .metadata
                    .propose(Command::DeleteTopic { id: t.id })
                    .await
                {
                    Ok(CommandResult::Ok) => changed = true,
                    Ok(CommandResult::UnknownTopic) => {
                        r.error_code = Code::UnknownTopicOrPartition.code()
                    }
                    Ok(other) => {
                        r.error_code = Code::UnknownServerError.code();
                        r.error_message = Some(StrBytes::from_string(format!("{other:?}")));
                    }
                    Err(e) => {
                        r.error_code = Code::NotController.code();
                        r.error_message = Some(StrBytes::from_string(e.to_string()));
                    }
                }
            }
        }
        if version < 5 {
            r.error_message = None;
        }
        responses.push(r);
    }
    if changed {
        if let Err(e) = broker.reconcile().await {
            tracing::warn!(error = %e, "reconcile after topic deletion failed");
        }
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub async fn create_partitions(
    broker: &Broker,
    req: CreatePartitionsRequest,
    _version: i16,
    caller: &Caller,
) -> CreatePartitionsResponse {
    let mut results = Vec::new();
    let mut changed = false;
    let mut budget = PartitionBudget::new();
    for t in req.topics {
        let name = t.name.0.to_string();
        let view = broker.view();
        let budget_err = view.topic(&name).and_then(|tp| {
            let grow = t.count - tp.partitions.len() as i32;
            (grow > 0 && t.count <= MAX_PARTITIONS)
                .then(|| budget.take(broker, grow).err())
                .flatten()
        });
        let outcome: Result<(), AdminError> = match view.topic(&name) {
            _ if !caller.allows(Operation::Alter, ResourceType::Topic, &name) => {
                Err(topic_denied(caller, Operation::Alter, &name))
            }
            None => Err(err(
                Code::UnknownTopicOrPartition,
                format!("unknown topic. topic={name}"),
            )),
            Some(topic) if t.count <= topic.partitions.len() as i32 => Err(err(
                Code::InvalidPartitions,
                format!(
                    "topic has {} partitions; the count can only grow. requested={}",
                    topic.partitions.len(),
                    t.count
                ),
            )),
            Some(_) if t.count > MAX_PARTITIONS => Err(err(
                Code::InvalidPartitions,
                format!(
                    "too many partitions. requested={}, max={MAX_PARTITIONS}",
                    t.count
                ),
            )),
            Some(topic)
                if t.assignments
                    .as_ref()
                    .is_some_and(|a| a.len() as i32 != t.count - topic.partitions.len() as i32) =>
            {
                Err(err(
                    Code::InvalidReplicaAssignment,
                    "assignments must cover exactly the new partitions",
                ))
            }
            Some(_) if budget_err.is_some() => Err(budget_err.clone().expect("checked just now")),
            Some(_) if req.validate_only => Ok(()),
            Some(_) => match broker
                .metadata
                .propose(Command::CreatePartitions {
                    name: name.clone(),
                    total_count: t.count,
                    assignments: t.assignments.as_ref().map(|a| {
                        a.iter()
                            .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                            .collect()
                    }),
                })
                .await
            {
                Ok(CommandResult::Ok) => {
                    changed = true;
                    Ok(())
                }
                Ok(other) => Err(refused(other)),
                Err(e) => Err(err(Code::NotController, e.to_string())),
            },
        };
        let mut r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        if let Err((code, msg)) = outcome {
            r.error_code = code;
            r.error_message = Some(StrBytes::from_string(msg));
        }
        results.push(r);
    }
    if changed {
        if let Err(e) = broker.reconcile().await {
            tracing::warn!(error = %e, "reconcile after partition creation failed");
        }
    }
    CreatePartitionsResponse::default().with_results(results)
}

pub async fn delete_records(
    broker: &Broker,
    req: DeleteRecordsRequest,
    _version: i16,
    caller: &Caller,
) -> DeleteRecordsResponse {
    let view = broker.view();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let denied = !caller.allows(Operation::Delete, ResourceType::Topic, &t.name);
        let topic = view.topic(t.name.0.as_str());
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let mut r = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            let served = match topic {
                Some(tp) => broker.leader_partition(tp, p.partition_index),
                None => Err(crate::broker::NotServed::UnknownPartition),
            };
            match served {
                _ if denied => r.error_code = Code::TopicAuthorizationFailed.code(),
                Err(why) => r.error_code = super::error::not_served_code(why),
                Ok(part) if part.config().tier.read_replica => {
                    // Its history is the source cluster's to delete.
                    r.error_code = Code::PolicyViolation.code();
                }
                Ok(part) if !part.topic_config().delete_policy => {
                    // As Kafka: records of a compact-only topic go by
                    // compaction alone.
                    tracing::info!(partition = %part.name(), "delete records refused: cleanup.policy does not hold delete");
                    r.error_code = Code::PolicyViolation.code();
                }
                Ok(part) => {
                    // The tier is written first; a hanging object store
                    // answers REQUEST_TIMED_OUT after the request's timeout.
                    let wait = std::time::Duration::from_millis(req.timeout_ms.max(1) as u64);
                    match tokio::time::timeout(wait, part.delete_records(p.offset)).await {
                        Ok(Ok(low)) => {
                            r.error_code = NONE;
                            r.low_watermark = low;
                        }
                        Ok(Err(e)) => {
                            tracing::info!(partition = %part.name(), error = %e, "delete records refused");
                            r.error_code = partition_error_code(&e);
                        }
                        Err(_) => r.error_code = Code::RequestTimedOut.code(),
                    }
                }
            }
            partitions.push(r);
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_a-b").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", "ü"] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
        assert!(validate_topic_name(&"x".repeat(249)).is_ok());
    }
}
