//! Topic and config administration: CreateTopics, DeleteTopics,
//! DescribeConfigs, IncrementalAlterConfigs.

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, DescribeLogDirsRequest,
    IncrementalAlterConfigsRequest,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::data::duration_ms;
use super::error::{self, ClientError, KafkaCode};
use super::{topic_name, Client};

/// A topic to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    /// `None`: the broker's default (`num.partitions`).
    pub num_partitions: Option<i32>,
    /// `None`: the broker's default.
    pub replication_factor: Option<i16>,
    pub configs: Vec<(String, String)>,
}

/// What the broker created (partitions and replication factor are -1 when
/// the broker's CreateTopics version does not report them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTopic {
    pub name: String,
    pub topic_id: Uuid,
    pub num_partitions: i32,
    pub replication_factor: i16,
}

/// Something that has configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigResource {
    Topic(String),
    Broker(i32),
}

impl ConfigResource {
    fn wire_type(&self) -> i8 {
        match self {
            ConfigResource::Topic(_) => 2,
            ConfigResource::Broker(_) => 4,
        }
    }

    fn wire_name(&self) -> String {
        match self {
            ConfigResource::Topic(t) => t.clone(),
            ConfigResource::Broker(id) => id.to_string(),
        }
    }

    fn describe(&self) -> String {
        match self {
            ConfigResource::Topic(t) => format!("topic={t}"),
            ConfigResource::Broker(id) => format!("broker={id}"),
        }
    }
}

/// One config value as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    /// `None` for sensitive or unset values.
    pub value: Option<String>,
    pub read_only: bool,
    pub sensitive: bool,
    /// Kafka's ConfigSource id; see [`ConfigEntry::source_name`].
    pub source: i8,
}

impl ConfigEntry {
    /// Kafka's name of the config source.
    pub fn source_name(&self) -> &'static str {
        match self.source {
            1 => "DYNAMIC_TOPIC_CONFIG",
            2 => "DYNAMIC_BROKER_CONFIG",
            3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
            4 => "STATIC_BROKER_CONFIG",
            5 => "DEFAULT_CONFIG",
            6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
            7 => "CLIENT_METRICS_CONFIG",
            8 => "GROUP_CONFIG",
            _ => "UNKNOWN",
        }
    }

    /// True unless the value was set on the resource itself.
    pub fn is_default(&self) -> bool {
        !matches!(self.source, 1 | 2)
    }
}

/// One change for IncrementalAlterConfigs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterOp {
    Set(String, String),
    /// Back to the default.
    Delete(String),
    /// Add to a list config.
    Append(String, String),
    /// Remove from a list config.
    Subtract(String, String),
}

impl AlterOp {
    fn wire(&self) -> AlterableConfig {
        let (name, op, value) = match self {
            AlterOp::Set(n, v) => (n, 0, Some(v)),
            AlterOp::Delete(n) => (n, 1, None),
            AlterOp::Append(n, v) => (n, 2, Some(v)),
            AlterOp::Subtract(n, v) => (n, 3, Some(v)),
        };
        AlterableConfig::default()
            .with_name(StrBytes::from_string(name.clone()))
            .with_config_operation(op)
            .with_value(value.map(|v| StrBytes::from_string(v.clone())))
    }
}

impl Client {
    /// Create one topic.
    pub async fn create_topic(&self, topic: &NewTopic) -> Result<CreatedTopic, ClientError> {
        let mut r = self.create_topics(std::slice::from_ref(topic)).await?;
        r.pop()
            .map(|(_, res)| res)
            .unwrap_or_else(|| Err(ClientError::InvalidArgument("no topic created".into())))
    }

    /// Create topics; each has its own outcome, in the order given.
    #[allow(clippy::type_complexity)]
    pub async fn create_topics(
        &self,
        topics: &[NewTopic],
    ) -> Result<Vec<(String, Result<CreatedTopic, ClientError>)>, ClientError> {
        let conn = self.admin_conn().await?;
        let version = conn.version::<CreateTopicsRequest>()?;
        let mut creatable = Vec::with_capacity(topics.len());
        for t in topics {
            let needs_v4 = t.num_partitions.is_none() || t.replication_factor.is_none();
            if needs_v4 && version < 4 {
                return Err(ClientError::InvalidArgument(format!(
                    "the broker needs explicit partitions and replication factor. topic={}",
                    t.name
                )));
            }
            creatable.push(
                CreatableTopic::default()
                    .with_name(topic_name(&t.name))
                    .with_num_partitions(t.num_partitions.unwrap_or(-1))
                    .with_replication_factor(t.replication_factor.unwrap_or(-1))
                    .with_configs(
                        t.configs
                            .iter()
                            .map(|(k, v)| {
                                CreatableTopicConfig::default()
                                    .with_name(StrBytes::from_string(k.clone()))
                                    .with_value(Some(StrBytes::from_string(v.clone())))
                            })
                            .collect(),
                    ),
            );
        }
        let req = CreateTopicsRequest::default()
            .with_topics(creatable)
            .with_timeout_ms(duration_ms(self.options.request_timeout));
        let resp = conn.send(&req).await?;
        self.lock().topics.clear();
        Ok(topics
            .iter()
            .map(|t| {
                let outcome = match resp.topics.iter().find(|r| r.name.0.as_str() == t.name) {
                    None => Err(ClientError::Protocol {
                        what: format!("create topics response lacks topic={}", t.name),
                        addr: conn.addr().to_owned(),
                    }),
                    Some(r) => match KafkaCode::from_code(r.error_code) {
                        Some(code) => Err(ClientError::kafka(
                            "create topic",
                            format!("topic={}", t.name),
                            code,
                            r.error_message.as_ref().map(|m| m.as_str()),
                        )),
                        None => Ok(CreatedTopic {
                            name: t.name.clone(),
                            topic_id: r.topic_id,
                            num_partitions: if version >= 5 { r.num_partitions } else { -1 },
                            replication_factor: if version >= 5 {
                                r.replication_factor
                            } else {
                                -1
                            },
                        }),
                    },
                };
                (t.name.clone(), outcome)
            })
            .collect())
    }

    /// Delete topics by name; each has its own outcome, in the order given.
    #[allow(clippy::type_complexity)]
    /// DescribeLogDirs on one broker: per log dir, (topic, partition, bytes,
    /// offset lag). Strata lists its tier as a second dir (its URL).
    pub async fn describe_log_dirs(
        &self,
        node: i32,
    ) -> Result<Vec<(String, Vec<(String, i32, i64, i64)>)>, ClientError> {
        let conn = self.node_conn(node).await?;
        let resp = conn
            .send(&DescribeLogDirsRequest::default().with_topics(None))
            .await?;
        error::check(
            resp.error_code,
            "describe log dirs",
            || format!("node={node}"),
            None,
        )?;
        Ok(resp
            .results
            .into_iter()
            .map(|d| {
                let parts = d
                    .topics
                    .iter()
                    .flat_map(|t| {
                        t.partitions.iter().map(move |p| {
                            (
                                t.name.0.to_string(),
                                p.partition_index,
                                p.partition_size,
                                p.offset_lag,
                            )
                        })
                    })
                    .collect();
                (d.log_dir.to_string(), parts)
            })
            .collect())
    }

    pub async fn delete_topics(
        &self,
        names: &[&str],
    ) -> Result<Vec<(String, Result<(), ClientError>)>, ClientError> {
        let conn = self.admin_conn().await?;
        let version = conn.version::<DeleteTopicsRequest>()?;
        let mut req = DeleteTopicsRequest::default()
            .with_timeout_ms(duration_ms(self.options.request_timeout));
        if version >= 6 {
            req = req.with_topics(
                names
                    .iter()
                    .map(|n| DeleteTopicState::default().with_name(Some(topic_name(n))))
                    .collect(),
            );
        } else {
            req = req.with_topic_names(names.iter().map(|n| topic_name(n)).collect());
        }
        let resp = conn.send(&req).await?;
        {
            let mut st = self.lock();
            for n in names {
                st.topics.remove(*n);
            }
        }
        Ok(names
            .iter()
            .map(|n| {
                let found = resp
                    .responses
                    .iter()
                    .find(|r| r.name.as_ref().is_some_and(|x| x.0.as_str() == *n));
                let outcome = match found {
                    None => Err(ClientError::Protocol {
                        what: format!("delete topics response lacks topic={n}"),
                        addr: conn.addr().to_owned(),
                    }),
                    Some(r) => error::check(
                        r.error_code,
                        "delete topic",
                        || format!("topic={n}"),
                        r.error_message.as_ref().map(|m| m.as_str()),
                    ),
                };
                ((*n).to_owned(), outcome)
            })
            .collect())
    }

    /// Configs of one resource (`keys`: `None` for all), sorted by name.
    pub async fn describe_configs(
        &self,
        resource: &ConfigResource,
        keys: Option<&[&str]>,
    ) -> Result<Vec<ConfigEntry>, ClientError> {
        let conn = match resource {
            ConfigResource::Broker(id) => self.node_conn(*id).await?,
            ConfigResource::Topic(_) => self.any_conn().await?,
        };
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(resource.wire_type())
                .with_resource_name(StrBytes::from_string(resource.wire_name()))
                .with_configuration_keys(keys.map(|ks| {
                    ks.iter()
                        .map(|k| StrBytes::from_string((*k).to_owned()))
                        .collect()
                })),
        ]);
        let resp = conn.send(&req).await?;
        let r = resp
            .results
            .into_iter()
            .find(|r| r.resource_name.as_str() == resource.wire_name())
            .ok_or_else(|| ClientError::Protocol {
                what: format!("describe configs response lacks {}", resource.describe()),
                addr: conn.addr().to_owned(),
            })?;
        error::check(
            r.error_code,
            "describe configs",
            || resource.describe(),
            r.error_message.as_ref().map(|m| m.as_str()),
        )?;
        let mut entries: Vec<ConfigEntry> = r
            .configs
            .into_iter()
            .map(|c| ConfigEntry {
                name: c.name.as_str().to_owned(),
                value: c.value.map(|v| v.as_str().to_owned()),
                read_only: c.read_only,
                sensitive: c.is_sensitive,
                source: c.config_source,
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Change configs of one resource.
    pub async fn incremental_alter_configs(
        &self,
        resource: &ConfigResource,
        ops: &[AlterOp],
        validate_only: bool,
    ) -> Result<(), ClientError> {
        let conn = match resource {
            ConfigResource::Broker(id) => self.node_conn(*id).await?,
            ConfigResource::Topic(_) => self.admin_conn().await?,
        };
        let req = IncrementalAlterConfigsRequest::default()
            .with_validate_only(validate_only)
            .with_resources(vec![AlterConfigsResource::default()
                .with_resource_type(resource.wire_type())
                .with_resource_name(StrBytes::from_string(resource.wire_name()))
                .with_configs(ops.iter().map(AlterOp::wire).collect())]);
        let resp = conn.send(&req).await?;
        let r = resp
            .responses
            .iter()
            .find(|r| r.resource_name.as_str() == resource.wire_name())
            .ok_or_else(|| ClientError::Protocol {
                what: format!("alter configs response lacks {}", resource.describe()),
                addr: conn.addr().to_owned(),
            })?;
        error::check(
            r.error_code,
            "alter configs",
            || resource.describe(),
            r.error_message.as_ref().map(|m| m.as_str()),
        )
    }
}

/// The metadata quorum as DescribeQuorum gives it.
#[derive(Debug, Clone)]
pub struct QuorumInfo {
    pub leader_id: i32,
    pub leader_epoch: i32,
    pub high_watermark: i64,
    /// Each voter's id and log end offset.
    pub voters: Vec<(i32, i64)>,
    /// Each observer's (learner's) id and log end offset.
    pub observers: Vec<(i32, i64)>,
}

impl Client {
    /// DescribeQuorum of the metadata log (`__cluster_metadata`, 0).
    pub async fn describe_quorum(&self) -> Result<QuorumInfo, ClientError> {
        use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
        use kafka_protocol::messages::{DescribeQuorumRequest, TopicName};
        let conn = self.admin_conn().await?;
        let req = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
            .with_topic_name(TopicName(
                kafka_protocol::protocol::StrBytes::from_static_str("__cluster_metadata"),
            ))
            .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
        let resp = conn.send(&req).await?;
        error::check(resp.error_code, "describe quorum", String::new, None)?;
        let p = resp
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| ClientError::Protocol {
                what: "describe quorum answered no partition".into(),
                addr: conn.addr().to_string(),
            })?;
        error::check(
            p.error_code,
            "describe quorum",
            || "topic=__cluster_metadata".into(),
            p.error_message.as_deref(),
        )?;
        Ok(QuorumInfo {
            leader_id: p.leader_id.0,
            leader_epoch: p.leader_epoch,
            high_watermark: p.high_watermark,
            voters: p
                .current_voters
                .iter()
                .map(|v| (v.replica_id.0, v.log_end_offset))
                .collect(),
            observers: p
                .observers
                .iter()
                .map(|v| (v.replica_id.0, v.log_end_offset))
                .collect(),
        })
    }
}

/// A partition's move to other brokers: its target replicas, or `None` to
/// cancel the move in progress.
#[derive(Debug, Clone)]
pub struct Reassignment {
    pub topic: String,
    pub partition: i32,
    pub replicas: Option<Vec<i32>>,
}

/// A move in progress, as ListPartitionReassignments shows it.
#[derive(Debug, Clone)]
pub struct OngoingReassignment {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

impl Client {
    /// AlterPartitionReassignments: one outcome per move, in order.
    pub async fn alter_partition_reassignments(
        &self,
        moves: &[Reassignment],
    ) -> Result<Vec<Result<(), ClientError>>, ClientError> {
        use kafka_protocol::messages::alter_partition_reassignments_request::{
            ReassignablePartition, ReassignableTopic,
        };
        use kafka_protocol::messages::{AlterPartitionReassignmentsRequest, BrokerId};
        let conn = self.admin_conn().await?;
        let mut topics: Vec<ReassignableTopic> = Vec::new();
        for m in moves {
            let p = ReassignablePartition::default()
                .with_partition_index(m.partition)
                .with_replicas(
                    m.replicas
                        .as_ref()
                        .map(|r| r.iter().map(|b| BrokerId(*b)).collect()),
                );
            match topics.iter_mut().find(|t| t.name.0.as_str() == m.topic) {
                Some(t) => t.partitions.push(p),
                None => topics.push(
                    ReassignableTopic::default()
                        .with_name(topic_name(&m.topic))
                        .with_partitions(vec![p]),
                ),
            }
        }
        let req = AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(duration_ms(self.options.request_timeout))
            .with_topics(topics);
        let resp = conn.send(&req).await?;
        error::check(
            resp.error_code,
            "alter partition reassignments",
            String::new,
            resp.error_message.as_deref(),
        )?;
        Ok(moves
            .iter()
            .map(|m| {
                let found = resp
                    .responses
                    .iter()
                    .filter(|t| t.name.0.as_str() == m.topic)
                    .flat_map(|t| t.partitions.iter())
                    .find(|p| p.partition_index == m.partition);
                match found {
                    None => Err(ClientError::Protocol {
                        what: format!(
                            "reassignment response lacks topic={}, partition={}",
                            m.topic, m.partition
                        ),
                        addr: conn.addr().to_owned(),
                    }),
                    Some(p) => error::check(
                        p.error_code,
                        "reassign partition",
                        || format!("topic={}, partition={}", m.topic, m.partition),
                        p.error_message.as_deref(),
                    ),
                }
            })
            .collect())
    }

    /// UnregisterBroker: removes a stopped, drained broker from the
    /// cluster.
    pub async fn unregister_broker(&self, broker_id: i32) -> Result<(), ClientError> {
        use kafka_protocol::messages::{BrokerId, UnregisterBrokerRequest};
        let conn = self.admin_conn().await?;
        let req = UnregisterBrokerRequest::default().with_broker_id(BrokerId(broker_id));
        let resp = conn.send(&req).await?;
        error::check(
            resp.error_code,
            "unregister broker",
            || format!("broker={broker_id}"),
            resp.error_message.as_deref(),
        )
    }

    /// AddRaftVoter: makes a broker that follows the metadata log a voter.
    pub async fn add_raft_voter(&self, broker_id: i32) -> Result<(), ClientError> {
        use kafka_protocol::messages::AddRaftVoterRequest;
        let conn = self.admin_conn().await?;
        let req = AddRaftVoterRequest::default()
            .with_cluster_id(None)
            .with_voter_id(broker_id)
            .with_timeout_ms(duration_ms(self.options.request_timeout));
        let resp = conn.send(&req).await?;
        error::check(
            resp.error_code,
            "add voter",
            || format!("broker={broker_id}"),
            resp.error_message.as_deref(),
        )
    }

    /// ListPartitionReassignments: every move in progress.
    pub async fn list_partition_reassignments(
        &self,
    ) -> Result<Vec<OngoingReassignment>, ClientError> {
        use kafka_protocol::messages::ListPartitionReassignmentsRequest;
        let conn = self.admin_conn().await?;
        let req = ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(duration_ms(self.options.request_timeout));
        let resp = conn.send(&req).await?;
        error::check(
            resp.error_code,
            "list partition reassignments",
            String::new,
            resp.error_message.as_deref(),
        )?;
        let ids = |v: &[kafka_protocol::messages::BrokerId]| v.iter().map(|b| b.0).collect();
        Ok(resp
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| OngoingReassignment {
                    topic: t.name.to_string(),
                    partition: p.partition_index,
                    replicas: ids(&p.replicas),
                    adding: ids(&p.adding_replicas),
                    removing: ids(&p.removing_replicas),
                })
            })
            .collect())
    }
}

/// A SCRAM credential to set: the password already salted by the caller
/// (the request never carries the password).
#[derive(Debug, Clone)]
pub struct ScramUpsert {
    pub user: String,
    /// Kafka's code: 1 SCRAM-SHA-256, 2 SCRAM-SHA-512.
    pub mechanism: i8,
    pub iterations: i32,
    pub salt: Vec<u8>,
    pub salted_password: Vec<u8>,
}

impl Client {
    /// DescribeUserScramCredentials: each user's (mechanism code,
    /// iterations), for `users` or every user with a credential.
    #[allow(clippy::type_complexity)]
    pub async fn describe_scram_credentials(
        &self,
        users: Option<&[String]>,
    ) -> Result<Vec<(String, Result<Vec<(i8, i32)>, ClientError>)>, ClientError> {
        use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
        use kafka_protocol::messages::DescribeUserScramCredentialsRequest;
        let conn = self.admin_conn().await?;
        let req = DescribeUserScramCredentialsRequest::default().with_users(users.map(|us| {
            us.iter()
                .map(|u| UserName::default().with_name(StrBytes::from_string(u.clone())))
                .collect()
        }));
        let resp = conn.send(&req).await?;
        error::check(
            resp.error_code,
            "describe SCRAM credentials",
            String::new,
            resp.error_message.as_deref(),
        )?;
        Ok(resp
            .results
            .into_iter()
            .map(|r| {
                let user = r.user.to_string();
                let outcome = error::check(
                    r.error_code,
                    "describe SCRAM credentials",
                    || format!("user={user}"),
                    r.error_message.as_deref(),
                )
                .map(|()| {
                    r.credential_infos
                        .iter()
                        .map(|c| (c.mechanism, c.iterations))
                        .collect()
                });
                (user, outcome)
            })
            .collect())
    }

    /// AlterUserScramCredentials: one outcome per user named.
    pub async fn alter_scram_credentials(
        &self,
        deletions: &[(String, i8)],
        upserts: &[ScramUpsert],
    ) -> Result<Vec<(String, Result<(), ClientError>)>, ClientError> {
        use kafka_protocol::messages::alter_user_scram_credentials_request::{
            ScramCredentialDeletion, ScramCredentialUpsertion,
        };
        use kafka_protocol::messages::AlterUserScramCredentialsRequest;
        let conn = self.admin_conn().await?;
        let req = AlterUserScramCredentialsRequest::default()
            .with_deletions(
                deletions
                    .iter()
                    .map(|(u, m)| {
                        ScramCredentialDeletion::default()
                            .with_name(StrBytes::from_string(u.clone()))
                            .with_mechanism(*m)
                    })
                    .collect(),
            )
            .with_upsertions(
                upserts
                    .iter()
                    .map(|u| {
                        ScramCredentialUpsertion::default()
                            .with_name(StrBytes::from_string(u.user.clone()))
                            .with_mechanism(u.mechanism)
                            .with_iterations(u.iterations)
                            .with_salt(u.salt.clone().into())
                            .with_salted_password(u.salted_password.clone().into())
                    })
                    .collect(),
            );
        let resp = conn.send(&req).await?;
        Ok(resp
            .results
            .into_iter()
            .map(|r| {
                let user = r.user.to_string();
                let outcome = error::check(
                    r.error_code,
                    "alter SCRAM credentials",
                    || format!("user={user}"),
                    r.error_message.as_deref(),
                );
                (user, outcome)
            })
            .collect())
    }
}
