//! A small async Kafka client on `kafka-protocol`, for the CLI, follower
//! fetchers and tests.
//!
//! Overview: [`Client::connect`] opens a connection to a bootstrap broker
//! and negotiates API versions (the highest version both this crate's codec
//! and the broker support, per API; see [`versions`]). Typed helpers build
//! requests at the negotiated version, send them on the right connection and
//! turn Kafka error codes into [`ClientError::Kafka`], which names the code.
//! Partition requests (produce, fetch, list offsets) go to the partition's
//! leader, found in cached metadata and refreshed when the broker says the
//! cache is stale; group requests go to the group's coordinator. Each broker
//! gets one connection (`conn`) with many requests in flight.
//!
//! Consistency: nothing is retried that could duplicate data; a produce that
//! times out may or may not have been written (no idempotence here).
//!
//! Cancellation: every helper is cancel-safe. Dropping a request's future
//! abandons it (its response is discarded); the connection stays usable.
//! Dropping the `Client` closes its connections.

mod acls;
mod admin;
mod conn;
mod data;
mod error;
mod groups;
mod records;
mod security;
mod txns;
pub mod versions;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

pub use admin::{
    AlterOp, ConfigEntry, ConfigResource, CreatedTopic, NewTopic, OngoingReassignment,
    Reassignment, ScramUpsert,
};
pub use conn::Connection;
pub use data::{
    Acks, FetchOptions, FetchRequestPartition, FetchedPartition, ListedOffset, OffsetSpec,
    PartitionOffsets, ProduceAck,
};
pub use error::{ClientError, KafkaCode};
pub use groups::{CommittedOffset, GroupDescription, GroupListing, GroupMember, MemberAssignment};
pub use records::{BatchCompression, ConsumedRecord, ProduceRecord};
pub use txns::{TxnDescription, TxnListing};

pub use conn::ConnOptions;
pub use security::{read_properties, SaslLogin, Security};

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Sent in every request header.
    pub client_id: String,
    /// How long to wait for a TCP connection and the ApiVersions handshake.
    pub connect_timeout: Duration,
    /// How long to wait for a response (a fetch waits this plus its max wait).
    pub request_timeout: Duration,
    /// TLS and SASL of every connection.
    pub security: Security,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            client_id: "strata-client".to_owned(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            security: Security::default(),
        }
    }
}

/// A broker as metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl BrokerInfo {
    pub fn addr(&self) -> String {
        format_addr(&self.host, self.port)
    }
}

/// The answer to a Metadata request.
#[derive(Debug, Clone)]
pub struct ClusterMetadata {
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    pub brokers: Vec<BrokerInfo>,
    pub topics: Vec<TopicMetadata>,
}

#[derive(Debug, Clone)]
pub struct TopicMetadata {
    pub name: String,
    pub topic_id: Uuid,
    pub is_internal: bool,
    pub error: Option<KafkaCode>,
    /// Sorted by partition index.
    pub partitions: Vec<PartitionMetadata>,
}

#[derive(Debug, Clone)]
pub struct PartitionMetadata {
    pub partition: i32,
    /// -1 when there is no leader.
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
    pub error: Option<KafkaCode>,
}

/// Cached leaders of one topic.
#[derive(Debug, Clone)]
struct TopicRoute {
    topic_id: Uuid,
    leaders: BTreeMap<i32, i32>,
}

#[derive(Default)]
struct State {
    /// node id -> "host:port"
    nodes: HashMap<i32, String>,
    controller: Option<i32>,
    /// "host:port" -> open connection
    conns: HashMap<String, Arc<Connection>>,
    topics: HashMap<String, TopicRoute>,
}

/// A connection pool plus metadata cache; see the module docs.
pub struct Client {
    options: ClientOptions,
    /// The bootstrap address that answered.
    bootstrap: String,
    state: Mutex<State>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("bootstrap", &self.bootstrap)
            .finish_non_exhaustive()
    }
}

/// How often a request is retried after stale-metadata errors.
const ROUTE_ATTEMPTS: usize = 4;
/// Pause before retrying after a stale-metadata error.
const ROUTE_BACKOFF: Duration = Duration::from_millis(200);

impl Client {
    /// Connect to the first reachable of `bootstrap` (`HOST:PORT`, several
    /// separated by commas) with default options.
    pub async fn connect(bootstrap: &str) -> Result<Client, ClientError> {
        Client::connect_with(bootstrap, ClientOptions::default()).await
    }

    pub async fn connect_with(
        bootstrap: &str,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let addrs = parse_bootstrap(bootstrap)?;
        let conn_opts = conn_options(&options);
        let mut last_err = None;
        for addr in addrs {
            match Connection::open(&addr, &conn_opts).await {
                Ok(conn) => {
                    let mut state = State::default();
                    state.conns.insert(addr.clone(), Arc::new(conn));
                    return Ok(Client {
                        options,
                        bootstrap: addr,
                        state: Mutex::new(state),
                    });
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| ClientError::InvalidBootstrap {
            bootstrap: bootstrap.to_owned(),
        }))
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The bootstrap address in use.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// What the bootstrap broker advertised in ApiVersions.
    pub async fn broker_versions(&self) -> Result<versions::ApiVersionTable, ClientError> {
        Ok(self.any_conn().await?.versions().clone())
    }

    /// The version this client uses for request type `R` on the bootstrap
    /// broker, or `None` if the broker does not support it.
    pub async fn api_version<R: kafka_protocol::protocol::Request>(
        &self,
    ) -> Result<Option<i16>, ClientError> {
        Ok(self.any_conn().await?.versions().pick_for::<R>())
    }

    /// Fetch metadata for `topics` (`None`: every topic) and refresh the
    /// routing cache from it. Per-topic errors are in the result.
    pub async fn metadata(&self, topics: Option<&[&str]>) -> Result<ClusterMetadata, ClientError> {
        let conn = self.any_conn().await?;
        let version = conn.version::<MetadataRequest>()?;
        let mut req = MetadataRequest::default().with_topics(topics.map(|ts| {
            ts.iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                .collect()
        }));
        if version >= 4 {
            req = req.with_allow_auto_topic_creation(false);
        }
        let resp = conn
            .send_version(&req, version, self.options.request_timeout)
            .await?;
        if version >= 13 {
            error::check(
                resp.error_code,
                "metadata",
                || format!("broker={}", conn.addr()),
                None,
            )?;
        }
        let md = cluster_metadata(resp);
        self.update_routes(&md, topics.is_none());
        Ok(md)
    }

    /// Metadata of one topic; an error if the broker reports one for it.
    pub async fn topic_metadata(&self, topic: &str) -> Result<TopicMetadata, ClientError> {
        let md = self.metadata(Some(&[topic])).await?;
        let t = md
            .topics
            .into_iter()
            .find(|t| t.name == topic)
            .ok_or_else(|| ClientError::Protocol {
                what: format!("metadata response lacks topic {topic}"),
                addr: self.bootstrap.clone(),
            })?;
        if let Some(code) = t.error {
            return Err(ClientError::kafka(
                "metadata",
                format!("topic={topic}"),
                code,
                None,
            ));
        }
        Ok(t)
    }

    fn update_routes(&self, md: &ClusterMetadata, all_topics: bool) {
        let mut st = self.lock();
        st.nodes = md.brokers.iter().map(|b| (b.node_id, b.addr())).collect();
        st.controller = (md.controller_id >= 0).then_some(md.controller_id);
        if all_topics {
            st.topics.clear();
        }
        for t in &md.topics {
            if t.error.is_some() {
                st.topics.remove(&t.name);
                continue;
            }
            let route = TopicRoute {
                topic_id: t.topic_id,
                leaders: t
                    .partitions
                    .iter()
                    .map(|p| (p.partition, p.leader))
                    .collect(),
            };
            st.topics.insert(t.name.clone(), route);
        }
    }

    /// Forget cached leaders of `topic` (after a stale-metadata error).
    fn invalidate(&self, topic: &str) {
        self.lock().topics.remove(topic);
    }

    /// (leader node id, topic id) of a partition, from cache or metadata.
    async fn route(&self, topic: &str, partition: i32) -> Result<(i32, Uuid), ClientError> {
        let cached = self.lock().topics.get(topic).cloned();
        let route = match cached {
            Some(r) if r.leaders.contains_key(&partition) => r,
            _ => {
                let t = self.topic_metadata(topic).await?;
                TopicRoute {
                    topic_id: t.topic_id,
                    leaders: t
                        .partitions
                        .iter()
                        .map(|p| (p.partition, p.leader))
                        .collect(),
                }
            }
        };
        match route.leaders.get(&partition) {
            None => Err(ClientError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
            }),
            Some(&leader) if leader < 0 => {
                self.invalidate(topic);
                Err(ClientError::NoLeader {
                    topic: topic.to_owned(),
                    partition,
                })
            }
            Some(&leader) => Ok((leader, route.topic_id)),
        }
    }

    /// A connection to `node_id`, opening one if needed.
    async fn node_conn(&self, node_id: i32) -> Result<Arc<Connection>, ClientError> {
        let mut addr = self.lock().nodes.get(&node_id).cloned();
        if addr.is_none() {
            self.metadata(Some(&[])).await?;
            addr = self.lock().nodes.get(&node_id).cloned();
        }
        let addr = addr.ok_or(ClientError::UnknownNode { node_id })?;
        self.conn_to(&addr).await
    }

    /// A connection for requests any broker can answer: the controller if
    /// known (admin requests), else the bootstrap broker.
    async fn admin_conn(&self) -> Result<Arc<Connection>, ClientError> {
        let controller = self.lock().controller;
        if let Some(id) = controller {
            if let Ok(c) = self.node_conn(id).await {
                return Ok(c);
            }
        }
        self.any_conn().await
    }

    /// The bootstrap connection (reopened if it was closed).
    async fn any_conn(&self) -> Result<Arc<Connection>, ClientError> {
        let addr = self.bootstrap.clone();
        self.conn_to(&addr).await
    }

    async fn conn_to(&self, addr: &str) -> Result<Arc<Connection>, ClientError> {
        if let Some(c) = self.lock().conns.get(addr) {
            if !c.is_closed() {
                return Ok(Arc::clone(c));
            }
        }
        let conn = Arc::new(Connection::open(addr, &conn_options(&self.options)).await?);
        let mut st = self.lock();
        match st.conns.get(addr) {
            // Another task raced us and won: use its connection.
            Some(c) if !c.is_closed() => Ok(Arc::clone(c)),
            _ => {
                st.conns.insert(addr.to_owned(), Arc::clone(&conn));
                Ok(conn)
            }
        }
    }

    /// The node ids of every known broker (from the last metadata).
    async fn broker_ids(&self) -> Result<Vec<i32>, ClientError> {
        let md = self.metadata(Some(&[])).await?;
        Ok(md.brokers.iter().map(|b| b.node_id).collect())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain maps: a panic elsewhere cannot leave them inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn conn_options(o: &ClientOptions) -> ConnOptions {
    ConnOptions {
        client_id: o.client_id.clone(),
        connect_timeout: o.connect_timeout,
        request_timeout: o.request_timeout,
        security: o.security.clone(),
    }
}

/// `host:port[,host:port...]` -> addresses; each must have a port.
fn parse_bootstrap(bootstrap: &str) -> Result<Vec<String>, ClientError> {
    let invalid = || ClientError::InvalidBootstrap {
        bootstrap: bootstrap.to_owned(),
    };
    let addrs: Vec<String> = bootstrap
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if addrs.is_empty() {
        return Err(invalid());
    }
    for a in &addrs {
        let (host, port) = a.rsplit_once(':').ok_or_else(invalid)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(invalid());
        }
    }
    Ok(addrs)
}

/// `host:port`, with brackets for IPv6 literals.
fn format_addr(host: &str, port: i32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

pub(crate) fn topic_name(t: &str) -> TopicName {
    TopicName(StrBytes::from_string(t.to_owned()))
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn cluster_metadata(resp: MetadataResponse) -> ClusterMetadata {
    let brokers = resp
        .brokers
        .into_iter()
        .map(|b| BrokerInfo {
            node_id: b.node_id.0,
            host: b.host.as_str().to_owned(),
            port: b.port,
            rack: b.rack.map(|r| r.as_str().to_owned()),
        })
        .collect();
    let topics = resp
        .topics
        .into_iter()
        .map(|t| {
            let mut partitions: Vec<PartitionMetadata> = t
                .partitions
                .into_iter()
                .map(|p| PartitionMetadata {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|n| n.0).collect(),
                    isr: p.isr_nodes.iter().map(|n| n.0).collect(),
                    offline_replicas: p.offline_replicas.iter().map(|n| n.0).collect(),
                    error: KafkaCode::from_code(p.error_code),
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            TopicMetadata {
                name: t.name.map(|n| n.0.as_str().to_owned()).unwrap_or_default(),
                topic_id: t.topic_id,
                is_internal: t.is_internal,
                error: KafkaCode::from_code(t.error_code),
                partitions,
            }
        })
        .collect();
    ClusterMetadata {
        cluster_id: resp.cluster_id.map(|c| c.as_str().to_owned()),
        controller_id: resp.controller_id.0,
        brokers,
        topics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_lists_parse() {
        assert_eq!(parse_bootstrap("a:1").unwrap(), ["a:1"]);
        assert_eq!(parse_bootstrap("a:1, b:2,").unwrap(), ["a:1", "b:2"]);
        assert_eq!(parse_bootstrap("[::1]:9092").unwrap(), ["[::1]:9092"]);
        for bad in ["", "a", "a:", ":1", "a:99999", "a:x"] {
            assert!(parse_bootstrap(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn addresses_bracket_ipv6() {
        assert_eq!(format_addr("::1", 9092), "[::1]:9092");
        assert_eq!(format_addr("h", 1), "h:1");
    }
}
