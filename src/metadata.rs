//! Cluster metadata on openraft.
//!
//! # Overview
//!
//! Cluster metadata (registered brokers, topics with their ids, partitions,
//! replica assignment and dynamic configs, producer-id blocks, the cluster id)
//! is a replicated state machine on `openraft`, like KRaft. Every change is a
//! [`Command`] proposed with [`Metadata::propose`]; once the command is
//! committed, [`ClusterView::apply`] applies it. `apply` is a pure function of
//! the current view and the command: it validates deterministically and
//! returns a [`CommandResult`], so every replica reaches the same state and the
//! same answer.
//!
//! Readers never take a lock: [`Metadata::view`] returns the latest
//! `Arc<ClusterView>`, swapped in (`arc_swap`) after every applied batch, and
//! [`Metadata::subscribe`] yields the last applied log index for watchers.
//!
//! A single node is a one-voter raft cluster from day one: [`Metadata::open`]
//! on an empty directory initializes a membership holding only this node.
//! Several voters ([`Metadata::open_quorum`] with [`Quorum::Voters`]) talk
//! over the controller transport (`network.rs`: raft RPCs as length-framed
//! JSON on the controller listener); each voter initializes a new cluster
//! with the same membership, and a proposal made on a node that does not
//! lead is forwarded to the leader.
//!
//! Files in the metadata directory (all records CRC-32C framed JSON, each file
//! with a `version` field; see `store.rs`): `raft.log` (log entries), `vote`,
//! `committed`, `snapshot` (state machine, last applied log id, membership).
//!
//! # Consistency
//!
//! [`Metadata::propose`] returns once the command is committed by a quorum
//! of voters and applied on this node; the returned [`CommandResult`] is the one every
//! replica computes. A [`Metadata::view`] taken after `propose` returns
//! includes the command. Views are immutable snapshots: a reader sees either
//! all of an applied batch or none of it. `controller_id` in the view is the
//! current raft leader (-1 when unknown); it is not part of the replicated
//! state.
//!
//! # Crash safety
//!
//! The vote, the committed log id and snapshots are written to a temporary
//! file, fsync'd and renamed over the old file (then the directory is
//! fsync'd). Log entries are appended and fsync'd before openraft is told they
//! are durable, so nothing acknowledged is lost. On open, a torn last record of
//! the log (a crash mid-append) is dropped; a log that ends before the
//! persisted committed index is reported as corrupt instead of silently
//! losing committed commands. The state machine lives in memory: on restart it
//! is restored from the last snapshot and openraft re-applies the committed
//! log after it (a snapshot is taken every `SNAPSHOT_EVERY` logs).
//!
//! # Cancellation
//!
//! Dropping a `propose` future does not withdraw the command: it may still
//! commit and apply. [`Metadata::shutdown`] stops the leader watcher and the
//! raft core and waits (bounded) until the storage is released, so the
//! directory can be reopened.

mod apply;
mod network;
pub use network::ControllerTls;
mod quorum;
mod store;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use openraft::error::{ClientWriteError, RaftError};
use openraft::storage::Adaptor;
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub use apply::{DEFAULT_REPLICATION_FACTOR, MAX_PARTITIONS_PER_TOPIC, MAX_TOPIC_NAME_LEN};
use quorum::{Controller, Liveness};
pub use quorum::{QuorumStatus, VoterStatus};

/// Raft node id of a controller. Equal to the broker id of the node.
pub type NodeId = u64;

/// Logs between two snapshots of the state machine.
const SNAPSHOT_EVERY: u64 = 1000;
/// Logs already in a snapshot that are kept (for slow followers) before purge.
const KEEP_LOGS_IN_SNAPSHOT: u64 = 1000;
/// How long `open` waits for this node to become leader.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `shutdown` waits for the storage to be released.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// A registered broker.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BrokerInfo {
    pub node_id: i32,
    /// Where other brokers reach it (its inter-broker listener).
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// What clients of each listener are told; empty for a broker
    /// registered before listeners were named, which answers `host:port`
    /// on every listener.
    #[serde(default)]
    pub listeners: Vec<Endpoint>,
}

/// The address a broker advertises on one of its listeners.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoint {
    pub listener: String,
    pub host: String,
    pub port: i32,
}

impl BrokerInfo {
    /// The address for clients of `listener`; `None` when the broker has
    /// no listener of that name (Kafka leaves such brokers out).
    pub fn endpoint(&self, listener: &str) -> Option<(String, i32)> {
        if self.listeners.is_empty() {
            return Some((self.host.clone(), self.port));
        }
        self.listeners
            .iter()
            .find(|e| e.listener == listener)
            .map(|e| (e.host.clone(), e.port))
    }
}

/// One partition of a topic.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartitionInfo {
    pub leader: i32,
    pub leader_epoch: i32,
    /// During a reassignment: the target replicas, then those leaving.
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// A reassignment in progress: replicas joining (catching up) ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding: Vec<i32>,
    /// ... and replicas that leave once every target replica is in sync.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<i32>,
}

impl PartitionInfo {
    /// The replicas it had before the reassignment in progress, if any.
    pub fn original_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|b| !self.adding.contains(b))
            .collect()
    }

    /// The replicas a reassignment in progress moves it to.
    pub fn target_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|b| !self.removing.contains(b))
            .collect()
    }

    pub fn is_reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }
}

/// A topic; `partitions[i]` is partition `i`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub id: Uuid,
    pub partitions: Vec<PartitionInfo>,
    /// Only explicitly set (dynamic) topic configs; defaults live in the
    /// broker config.
    pub configs: BTreeMap<String, String>,
}

/// The applied cluster metadata, as request handlers see it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ClusterView {
    pub cluster_id: String,
    /// The current metadata leader, -1 when unknown. Not replicated: stamped
    /// on by the node that publishes the view.
    pub controller_id: i32,
    pub brokers: BTreeMap<i32, BrokerInfo>,
    pub topics: BTreeMap<String, TopicInfo>,
    pub topic_names_by_id: HashMap<Uuid, String>,
    /// The first producer id of the next block handed out.
    pub next_producer_id: i64,
    /// Dynamic broker configs set at run time (AlterConfigs on the broker
    /// resource), by Kafka's broker config name; they override the flags'
    /// defaults for every broker and topic.
    #[serde(default)]
    pub broker_configs: BTreeMap<String, String>,
    /// Registered brokers that stopped heartbeating to the quorum's leader
    /// (`broker.session.timeout.ms`): no new replicas go to them and
    /// clients are not told about them until they come back.
    #[serde(default)]
    pub fenced: std::collections::BTreeSet<i32>,
    /// Fenced brokers that stopped cleanly: their fence stays until they
    /// start again.
    #[serde(default)]
    pub shut_down: std::collections::BTreeSet<i32>,
    /// SCRAM credentials by user name and mechanism (salted; never the
    /// password).
    #[serde(default)]
    pub scram: BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>,
    /// The ACLs the authorizer reads (CreateAcls, DeleteAcls).
    #[serde(default)]
    pub acls: std::collections::BTreeSet<crate::security::acl::AclBinding>,
    /// Brokers unregistered ([`Command::UnregisterBroker`]) and not
    /// registered again since: the metadata leader removes them from the
    /// metadata log's learners.
    #[serde(default)]
    pub unregistered: std::collections::BTreeSet<i32>,
}

/// A SCRAM mechanism, with Kafka's code in the SCRAM admin APIs.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<ScramMechanism> {
        ScramMechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Kafka's code (1: SCRAM-SHA-256, 2: SCRAM-SHA-512).
    pub fn code(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_code(code: i8) -> Option<ScramMechanism> {
        ScramMechanism::ALL.into_iter().find(|m| m.code() == code)
    }
}

/// What the server keeps of a SCRAM password (RFC 5802): the salt, the
/// iteration count, and the stored and server keys derived from the
/// salted password.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl ClusterView {
    /// The topic called `name`.
    pub fn topic(&self, name: &str) -> Option<&TopicInfo> {
        self.topics.get(name)
    }

    /// The topic with id `id`.
    pub fn topic_by_id(&self, id: Uuid) -> Option<&TopicInfo> {
        self.topic_names_by_id
            .get(&id)
            .and_then(|name| self.topics.get(name))
    }
}

/// A change to the cluster metadata. The serialized form is the payload of
/// the persisted raft log: rename nothing, only add variants and optional
/// fields.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Command {
    /// Registers a broker, or replaces its registration (upsert).
    RegisterBroker(BrokerInfo),
    /// Creates a topic. Replicas are assigned round-robin over the running
    /// brokers (a replication factor of -1: min(3, running brokers)), or
    /// as `assignments` name them (one list of brokers per partition,
    /// `partitions` and `replication_factor` then -1); the first running
    /// replica leads with leader epoch 0, ISR = the running replicas.
    CreateTopic {
        name: String,
        id: Uuid,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        assignments: Option<Vec<Vec<i32>>>,
    },
    /// Deletes the topic with this id.
    DeleteTopic { id: Uuid },
    /// Grows a topic to `total_count` partitions (never shrinks), placed
    /// like the topic's first ones, or as `assignments` name them (one
    /// list per new partition).
    CreatePartitions {
        name: String,
        total_count: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        assignments: Option<Vec<Vec<i32>>>,
    },
    /// Changes dynamic topic configs. With `replace`, the result is exactly
    /// `set` (Kafka's AlterConfigs); without it, `delete` keys are removed and
    /// `set` keys are upserted (IncrementalAlterConfigs).
    AlterTopicConfigs {
        name: String,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
        replace: bool,
    },
    /// Hands out the next `count` producer ids.
    AllocateProducerIds { count: i64 },
    /// Sets the cluster id if none is set yet; later proposals are no-ops.
    /// `Metadata::open` proposes it once on a new cluster.
    InitCluster { cluster_id: String },
    /// Fences a registered broker (it missed its heartbeats).
    FenceBroker { node_id: i32 },
    /// Lifts a broker's fence (it heartbeats again).
    UnfenceBroker { node_id: i32 },
    /// Changes dynamic broker configs, as [`Command::AlterTopicConfigs`]
    /// does topic configs.
    AlterBrokerConfigs {
        set: BTreeMap<String, String>,
        delete: Vec<String>,
        replace: bool,
    },
    /// A partition's leader changes its in-sync replicas: accepted only
    /// from the current leader at the current leader epoch, for an ISR
    /// within the replicas that holds the leader and adds no fenced broker.
    AlterPartition {
        topic_id: Uuid,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
        isr: Vec<i32>,
    },
    /// A broker process started (proposed at each start): the replicated
    /// partitions it led get a new leader epoch, led by another live
    /// in-sync replica where there is one, so that nothing it wrote before
    /// its restart and lost with its page cache is ever mistaken for the
    /// same epoch's records on its followers.
    BrokerStarted { node_id: i32 },
    /// A broker stopping cleanly (SIGTERM) hands its leaderships to other
    /// live in-sync replicas and leaves the ISRs at once, rather than
    /// after its session times out; it stays fenced, heartbeats or not,
    /// until it starts again ([`Command::BrokerStarted`]).
    ControlledShutdown { node_id: i32 },
    /// Elects leaders (Kafka's ElectLeaders) for these partitions, by topic
    /// id and index; the result holds one outcome per partition, in order.
    /// Preferred: the first replica leads again where it is a live in-sync
    /// replica. Unclean: a partition without a leader gets its first live
    /// replica, alone in the ISR.
    ElectLeaders {
        election: Election,
        partitions: Vec<(Uuid, i32)>,
    },
    /// Starts (target replicas) or cancels (None) the reassignment of
    /// each partition, by topic id and index (Kafka's
    /// AlterPartitionReassignments); one outcome per partition. New
    /// replicas join as followers; once every target replica is in the
    /// ISR the others leave, and a leader that leaves hands over to an
    /// in-sync target replica.
    Reassign {
        partitions: Vec<(Uuid, i32, Option<Vec<i32>>)>,
    },
    /// Sets and removes SCRAM credentials (Kafka's
    /// AlterUserScramCredentials, checked by the caller): deletions first,
    /// then upserts; deleting a credential that does not exist does
    /// nothing.
    AlterScramCredentials {
        upserts: Vec<(String, ScramMechanism, ScramCredential)>,
        deletions: Vec<(String, ScramMechanism)>,
    },
    /// Adds ACLs (checked by the caller); one already there stays once.
    CreateAcls {
        acls: Vec<crate::security::acl::AclBinding>,
    },
    /// Removes the ACLs each filter matches; answers
    /// [`CommandResult::AclsDeleted`].
    DeleteAcls {
        filters: Vec<crate::security::acl::AclFilter>,
    },
    /// Removes a stopped broker's registration for good (Kafka's
    /// UnregisterBroker): refused while it runs (unfenced) or hosts a
    /// replica. The metadata leader then removes it from the metadata
    /// log's learners once it has been silent for a session.
    UnregisterBroker { node_id: i32 },
}

/// What a reassignment request did to one partition.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum ReassignOutcome {
    /// Started, completed at once, or cancelled.
    Done,
    UnknownPartition,
    /// A cancellation of a partition with no reassignment in progress.
    NoReassignmentInProgress,
    InvalidReplicaAssignment {
        reason: String,
    },
}

/// The kinds of leader election an operator asks for.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Election {
    Preferred,
    Unclean,
}

/// What an election did to one partition.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum ElectionOutcome {
    Elected,
    /// The partition already has the leader the election would give it.
    NotNeeded,
    /// No replica the election may pick is live (and in sync, for a
    /// preferred election).
    NotAvailable,
    UnknownPartition,
}

/// The outcome of applying a [`Command`]; identical on every replica.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum CommandResult {
    Ok,
    /// Producer ids `first..first + count` now belong to the caller.
    ProducerIdBlock {
        first: i64,
        count: i64,
    },
    TopicAlreadyExists,
    UnknownTopic,
    InvalidPartitions {
        reason: String,
    },
    InvalidReplicationFactor {
        reason: String,
    },
    /// Explicit replica assignments that cannot be taken.
    InvalidReplicaAssignment {
        reason: String,
    },
    /// The topic name is not a legal Kafka topic name.
    InvalidTopic {
        reason: String,
    },
    /// One outcome per partition of [`Command::Reassign`].
    Reassignments {
        outcomes: Vec<ReassignOutcome>,
    },
    /// One outcome per partition of [`Command::ElectLeaders`].
    Elections {
        outcomes: Vec<ElectionOutcome>,
    },
    /// The ACLs each filter of [`Command::DeleteAcls`] removed.
    AclsDeleted {
        per_filter: Vec<Vec<crate::security::acl::AclBinding>>,
    },
    /// [`Command::UnregisterBroker`] of a broker that is not registered.
    BrokerNotRegistered,
    /// [`Command::UnregisterBroker`] of a broker that still runs, or
    /// still hosts replicas.
    BrokerStillHosting {
        reason: String,
    },
    /// Any other malformed command (bad broker id, non-positive count, ...).
    InvalidRequest {
        reason: String,
    },
}

openraft::declare_raft_types!(
    /// openraft types of the metadata log.
    pub(crate) TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Errors of the metadata subsystem.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata io failed. op={op}, path={}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata file corrupt. path={}, offset={offset}, reason={reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("metadata file has an unsupported version. path={}, version={version}, supported={supported}", path.display())]
    UnsupportedVersion {
        path: PathBuf,
        version: u32,
        supported: u32,
    },
    #[error("metadata encoding failed. what={what}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("metadata record too large. what={what}, len={len}, max={max}")]
    RecordTooLarge {
        what: &'static str,
        len: usize,
        max: u32,
    },
    #[error("metadata state machine poisoned by an earlier panic")]
    Poisoned,
    #[error("node id does not fit a kafka broker id. node_id={node_id}")]
    InvalidNodeId { node_id: NodeId },
    #[error("cannot make the node a metadata voter: {reason}. node_id={node_id}")]
    AddVoter { node_id: NodeId, reason: String },
    #[error("node is not a voter of the persisted metadata membership. node_id={node_id}, voters={voters:?}")]
    NotAVoter {
        node_id: NodeId,
        voters: Vec<NodeId>,
    },
    #[error("the metadata directory belongs to another quorum of voters: every configured voter must be a voter of the stored membership, and a node started alone its only voter. stored={stored:?}, configured={configured:?}")]
    VotersChanged {
        stored: Vec<NodeId>,
        configured: Vec<NodeId>,
    },
    #[error("this node is not the metadata leader. leader={leader:?}")]
    NotLeader { leader: Option<NodeId> },
    #[error(
        "timed out waiting to become metadata leader. node_id={node_id}, waited_ms={waited_ms}"
    )]
    LeaderTimeout { node_id: NodeId, waited_ms: u128 },
    #[error("controller peer unreachable. target={target}, addr={addr}")]
    Unreachable {
        target: NodeId,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no metadata leader is known. node_id={node_id}")]
    NoLeader { node_id: NodeId },
    #[error("metadata is shut down")]
    ShutDown,
    #[error("metadata raft failed. op={op}")]
    Raft {
        op: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl MetadataError {
    fn raft<E>(op: &'static str) -> impl FnOnce(E) -> MetadataError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        move |e| MetadataError::Raft {
            op,
            source: Box::new(e),
        }
    }
}

/// Knobs that tests turn down; production uses [`Tuning::default`].
#[derive(Clone, Debug)]
pub(crate) struct Tuning {
    pub(crate) snapshot_every: u64,
    pub(crate) keep_logs_in_snapshot: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            snapshot_every: SNAPSHOT_EVERY,
            keep_logs_in_snapshot: KEEP_LOGS_IN_SNAPSHOT,
        }
    }
}

impl Tuning {
    /// openraft's config. Several voters exchange heartbeats over the
    /// network and may share a busy machine with their broker: they wait
    /// longer before calling an election than a voter alone.
    fn raft_config(&self, several_voters: bool) -> Result<Config, MetadataError> {
        let (heartbeat, election_min, election_max) = if several_voters {
            (200, 1000, 2000)
        } else {
            (50, 150, 300)
        };
        Config {
            cluster_name: "strata".to_string(),
            heartbeat_interval: heartbeat,
            election_timeout_min: election_min,
            election_timeout_max: election_max,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_logs_in_snapshot,
            // Purging rewrites the log file: do it in batches.
            purge_batch_size: self.snapshot_every.max(1),
            ..Config::default()
        }
        .validate()
        .map_err(MetadataError::raft("validate config"))
    }
}

/// Publishes applied views to lock-free readers. Shared by the state machine
/// (which publishes after every applied batch) and the leader watcher (which
/// stamps `controller_id`).
pub(crate) struct Publisher {
    view: ArcSwap<ClusterView>,
    applied: watch::Sender<u64>,
    /// Serializes writers; holds the current controller id.
    controller: Mutex<i32>,
}

impl Publisher {
    pub(crate) fn new() -> Publisher {
        let view = ClusterView {
            controller_id: -1,
            ..ClusterView::default()
        };
        Publisher {
            view: ArcSwap::from_pointee(view),
            applied: watch::channel(0).0,
            controller: Mutex::new(-1),
        }
    }

    /// Publishes `view` (stamped with the current controller) as applied up
    /// to `last_applied`.
    pub(crate) fn publish(&self, view: &ClusterView, last_applied: Option<u64>) {
        {
            let controller = self
                .controller
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut view = view.clone();
            view.controller_id = *controller;
            self.view.store(Arc::new(view));
        }
        if let Some(index) = last_applied {
            self.applied.send_replace(index);
        }
    }

    fn set_controller(&self, controller_id: i32) {
        let mut controller = self
            .controller
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *controller == controller_id {
            return;
        }
        *controller = controller_id;
        let mut view = ClusterView::clone(&self.view.load());
        view.controller_id = controller_id;
        self.view.store(Arc::new(view));
    }

    fn view(&self) -> Arc<ClusterView> {
        self.view.load_full()
    }
}

/// This node's handle on the replicated cluster metadata. Call
/// [`Metadata::shutdown`] before dropping it: dropping alone leaves the raft
/// tasks running until the runtime stops.
pub struct Metadata {
    node_id: NodeId,
    /// The running raft; replaced by [`Metadata::recover`] when its core
    /// stopped on an error (the controller listener shares it).
    raft: Arc<ArcSwap<Raft<TypeConfig>>>,
    publisher: Arc<Publisher>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    /// Closed once the storage (and everything holding it) is dropped.
    store_released: tokio::sync::Mutex<mpsc::Receiver<()>>,
    /// What a restart of the raft core needs.
    reopen: Reopen,
    /// One restart at a time.
    restart: tokio::sync::Mutex<()>,
    /// Brokers' heartbeats as they reach this node.
    liveness: Arc<Liveness>,
}

/// How the raft core was opened, to open it again.
struct Reopen {
    dir: PathBuf,
    broker_id: i32,
    raft_addr: String,
    /// The voters by node id and controller address; `None`: this node
    /// alone.
    voters: Option<BTreeMap<NodeId, String>>,
    config: Arc<Config>,
    /// TLS of the controller transport.
    tls: Option<network::ControllerTls>,
}

/// Who votes on the metadata.
pub enum Quorum {
    /// This node alone (a one-voter cluster); `raft_addr` is recorded as
    /// its address in the membership.
    Alone { raft_addr: String },
    /// Several voters, by node id and controller address (Kafka's
    /// `controller.quorum.voters`); this node, one of them, serves the
    /// controller transport on `listener`.
    Voters {
        voters: BTreeMap<NodeId, String>,
        listener: tokio::net::TcpListener,
        /// TLS with client certificates on the controller transport.
        tls: Option<network::ControllerTls>,
    },
}

/// How often a node waiting for a metadata leader says so.
const WAIT_LOG_EVERY: Duration = Duration::from_secs(10);

/// How often the health watch checks that the raft core runs, and waits
/// between restarts that fail.
const HEALTH_EVERY: Duration = Duration::from_secs(1);

impl Metadata {
    /// Opens (or creates) the metadata store in `dir`.
    ///
    /// On a fresh directory, initializes a one-voter cluster holding this
    /// node and a new random cluster id (persisted through the log); on
    /// restart, restores state from the persisted log and snapshot without
    /// re-initializing. Returns when this node is leader and the state
    /// machine has applied everything in the log.
    pub async fn open(
        dir: &Path,
        node_id: NodeId,
        raft_addr: String,
    ) -> Result<Metadata, MetadataError> {
        Metadata::open_with(dir, node_id, Quorum::Alone { raft_addr }, Tuning::default()).await
    }

    /// Opens (or creates) the metadata store in `dir` as one voter of
    /// `quorum`. With several voters, it serves the controller transport
    /// first, initializes a new cluster with every voter (each voter does,
    /// with the same membership), and returns once a leader is known and
    /// this node has applied the cluster id, waiting as long as it takes
    /// for a quorum of voters to start.
    pub async fn open_quorum(
        dir: &Path,
        node_id: NodeId,
        quorum: Quorum,
    ) -> Result<Metadata, MetadataError> {
        Metadata::open_with(dir, node_id, quorum, Tuning::default()).await
    }

    pub(crate) async fn open_with(
        dir: &Path,
        node_id: NodeId,
        quorum: Quorum,
        tuning: Tuning,
    ) -> Result<Metadata, MetadataError> {
        let broker_id =
            i32::try_from(node_id).map_err(|_| MetadataError::InvalidNodeId { node_id })?;
        let (raft_addr, voters, listener, tls) = match quorum {
            Quorum::Alone { raft_addr } => (raft_addr, None, None, None),
            Quorum::Voters {
                voters,
                listener,
                tls,
            } => {
                // A node outside the voters follows the log as a learner,
                // reached at its controller listener.
                let addr = match voters.get(&node_id) {
                    Some(addr) => addr.clone(),
                    None => listener
                        .local_addr()
                        .map_err(|source| MetadataError::Io {
                            op: "controller listener address",
                            path: dir.to_path_buf(),
                            source,
                        })?
                        .to_string(),
                };
                (addr, Some(voters), Some(listener), tls)
            }
        };
        let config = Arc::new(tuning.raft_config(voters.is_some())?);
        let publisher = Arc::new(Publisher::new());
        let expected = expected_voters(node_id, voters.as_ref());
        let (raft, store_released) = open_raft(
            dir,
            node_id,
            &expected,
            voters.is_none(),
            Arc::clone(&config),
            Arc::clone(&publisher),
            tls.clone(),
        )
        .await?;

        let metadata = Metadata {
            node_id,
            raft: Arc::new(ArcSwap::from_pointee(raft)),
            publisher,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            store_released: tokio::sync::Mutex::new(store_released),
            reopen: Reopen {
                dir: dir.to_path_buf(),
                broker_id,
                raft_addr: raft_addr.clone(),
                voters,
                config,
                tls: tls.clone(),
            },
            restart: tokio::sync::Mutex::new(()),
            liveness: Arc::new(Liveness::default()),
        };
        if let Some(listener) = listener {
            let handler = Arc::new(Controller {
                raft: Arc::clone(&metadata.raft),
                liveness: Arc::clone(&metadata.liveness),
            });
            metadata.tasks.spawn(network::serve(
                listener,
                handler,
                metadata.cancel.clone(),
                tls,
            ));
        }
        match metadata.start(broker_id, raft_addr).await {
            Ok(()) => Ok(metadata),
            Err(e) => {
                if let Err(shutdown) = metadata.shutdown().await {
                    tracing::warn!(error = %shutdown, "metadata shutdown after a failed open failed");
                }
                Err(e)
            }
        }
    }

    /// The running raft handle.
    fn raft(&self) -> Arc<Raft<TypeConfig>> {
        self.raft.load_full()
    }

    /// Whether the raft core runs (it stops for good on a storage error
    /// until [`Metadata::recover`] restarts it).
    pub fn is_healthy(&self) -> bool {
        self.raft().metrics().borrow().running_state.is_ok()
    }

    /// Restarts a raft core that stopped on an error (a write that failed
    /// for want of descriptors or disk space) from its durable state: the
    /// old one is shut down, its storage released and opened again, and
    /// this node elected as at a restart. Does nothing while it runs.
    pub async fn recover(&self) -> Result<(), MetadataError> {
        let _one = self.restart.lock().await;
        let old = self.raft();
        let why = match &old.metrics().borrow().running_state {
            Ok(()) => return Ok(()),
            // Shut down on purpose: stays down.
            Err(_) if self.cancel.is_cancelled() => return Err(MetadataError::ShutDown),
            Err(openraft::error::Fatal::Stopped) => return Err(MetadataError::ShutDown),
            Err(e) => e.to_string(),
        };
        tracing::error!(error = %why, "metadata raft stopped on an error; restarting it from its durable state");
        let _ = old.shutdown().await;
        drop(old);
        {
            let mut released = self.store_released.lock().await;
            let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, released.recv()).await;
        }
        let r = &self.reopen;
        let expected = expected_voters(self.node_id, r.voters.as_ref());
        let (raft, released) = open_raft(
            &r.dir,
            self.node_id,
            &expected,
            r.voters.is_none(),
            Arc::clone(&r.config),
            Arc::clone(&self.publisher),
            r.tls.clone(),
        )
        .await?;
        *self.store_released.lock().await = released;
        self.raft.store(Arc::new(raft));
        self.start(r.broker_id, r.raft_addr.clone()).await?;
        tracing::info!("metadata raft restarted");
        Ok(())
    }

    /// Keeps the raft core running until `cancel`: every `HEALTH_EVERY`,
    /// restarts it if it stopped (trying again while the cause lasts).
    pub async fn keep_running(&self, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(HEALTH_EVERY) => {}
            }
            if !self.is_healthy() {
                if let Err(e) = self.recover().await {
                    tracing::warn!(error = %e, "metadata raft restart failed; trying again");
                }
            }
        }
    }

    /// Initializes (first start) or elects (restart) this node, waits until
    /// a leader is known and this node has applied the log, then makes sure
    /// a cluster id exists.
    async fn start(&self, broker_id: i32, raft_addr: String) -> Result<(), MetadataError> {
        if self.reopen.voters.is_some() {
            return self.start_in_quorum().await;
        }
        let node_id = self.node_id;
        let raft = self.raft();
        let initialized = raft
            .is_initialized()
            .await
            .map_err(MetadataError::raft("check initialized"))?;
        if initialized {
            // A single voter need not wait for an election timeout.
            raft.trigger()
                .elect()
                .await
                .map_err(MetadataError::raft("trigger election"))?;
        } else {
            tracing::info!(node_id, %raft_addr, "initializing a new one-voter metadata cluster");
            let members = BTreeMap::from([(node_id, BasicNode::new(raft_addr))]);
            raft.initialize(members)
                .await
                .map_err(MetadataError::raft("initialize"))?;
        }

        raft.wait(Some(OPEN_TIMEOUT))
            .metrics(
                |m| m.state == ServerState::Leader && m.current_leader == Some(node_id),
                "metadata leader",
            )
            .await
            .map_err(|e| match e {
                openraft::metrics::WaitError::Timeout(waited, _) => MetadataError::LeaderTimeout {
                    node_id,
                    waited_ms: waited.as_millis(),
                },
                other => MetadataError::raft("wait for leadership")(other),
            })?;
        raft.ensure_linearizable().await.map_err(|e| match e {
            RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f)) => {
                MetadataError::NotLeader {
                    leader: f.leader_id,
                }
            }
            other => MetadataError::raft("wait for apply")(other),
        })?;
        self.publisher.set_controller(broker_id);
        self.spawn_leader_watcher();

        if self.view().cluster_id.is_empty() {
            let cluster_id = new_cluster_id();
            tracing::info!(%cluster_id, "assigning cluster id");
            self.propose(Command::InitCluster { cluster_id }).await?;
        }
        Ok(())
    }

    /// Keeps `controller_id` in published views equal to the raft leader.
    fn spawn_leader_watcher(&self) {
        let mut metrics = self.raft().metrics();
        let publisher = Arc::clone(&self.publisher);
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            loop {
                let leader = metrics.borrow_and_update().current_leader;
                let controller_id = leader.and_then(|l| i32::try_from(l).ok()).unwrap_or(-1);
                publisher.set_controller(controller_id);
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    changed = metrics.changed() => if changed.is_err() { break },
                }
            }
        });
    }

    /// Proposes `cmd`; returns its result once it is committed and applied
    /// here. With several voters a node that does not lead forwards the
    /// command to the leader and waits until it has applied it itself, so a
    /// view taken afterwards includes it. A refusal (the leader moved) is
    /// tried again for up to `network::PROPOSE_TIMEOUT`; a leader that
    /// cannot be reached is an error, as the command may have committed.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult, MetadataError> {
        let deadline = tokio::time::Instant::now() + network::PROPOSE_TIMEOUT;
        loop {
            let result = match self.raft().client_write(cmd.clone()).await {
                // The core stopped on an error: restart it and try once more.
                Err(RaftError::Fatal(openraft::error::Fatal::StorageError(_)))
                    if Box::pin(self.recover()).await.is_ok() =>
                {
                    self.raft().client_write(cmd.clone()).await
                }
                r => r,
            };
            let refused = match result {
                Ok(response) => return Ok(response.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))
                    if self.reopen.voters.is_some() =>
                {
                    match (f.leader_id, f.leader_node) {
                        (Some(leader), Some(node)) => {
                            match self.forward(leader, node.addr, &cmd).await? {
                                Ok((index, result)) => {
                                    self.wait_applied(index).await?;
                                    return Ok(result);
                                }
                                Err(refused) => refused.to_string(),
                            }
                        }
                        _ => "no leader known".to_string(),
                    }
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    return Err(MetadataError::NotLeader {
                        leader: f.leader_id,
                    })
                }
                Err(e) => return Err(MetadataError::raft("propose")(e)),
            };
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(node_id = self.node_id, why = %refused, "proposal not committed in time");
                return Err(MetadataError::NoLeader {
                    node_id: self.node_id,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The latest applied view; lock-free.
    pub fn view(&self) -> Arc<ClusterView> {
        self.publisher.view()
    }

    /// The last applied log index, for watchers of metadata changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.publisher.applied.subscribe()
    }

    /// Stops the leader watcher and raft, then waits (bounded) until the
    /// storage is released. Idempotent.
    pub async fn shutdown(&self) -> Result<(), MetadataError> {
        self.cancel.cancel();
        self.tasks.close();
        self.raft()
            .shutdown()
            .await
            .map_err(MetadataError::raft("shutdown raft"))?;
        self.tasks.wait().await;
        let mut released = self.store_released.lock().await;
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, released.recv())
            .await
            .is_err()
        {
            tracing::warn!(
                timeout_ms = SHUTDOWN_TIMEOUT.as_millis(),
                "metadata storage still held after raft shutdown"
            );
        }
        Ok(())
    }
}

/// Opens the storage in `dir` and starts a raft on it, for this node (a
/// voter of the persisted membership). The receiver closes once the
/// storage, and everything holding it, is dropped.
async fn open_raft(
    dir: &Path,
    node_id: NodeId,
    expected_voters: &std::collections::BTreeSet<NodeId>,
    alone: bool,
    config: Arc<Config>,
    publisher: Arc<Publisher>,
    tls: Option<network::ControllerTls>,
) -> Result<(Raft<TypeConfig>, mpsc::Receiver<()>), MetadataError> {
    let (alive, released) = mpsc::channel(1);
    let store = store::Store::open(dir, publisher, alive)?;
    if let Some(voters) = store.last_voters() {
        // A learner (outside the configured voters) is in no voter set.
        if expected_voters.contains(&node_id) && !voters.contains(&node_id) {
            return Err(MetadataError::NotAVoter {
                node_id,
                voters: voters.into_iter().collect(),
            });
        }
        // A directory written by another quorum (a single node started
        // with a voter list, or the reverse) would split the cluster in
        // two histories or wait forever for voters it does not know. A
        // quorum that grew (voters added since) still holds every voter
        // configured: the stored membership wins. A node alone must be
        // the only voter.
        let refused = if alone {
            &voters != expected_voters
        } else {
            !expected_voters.is_subset(&voters)
        };
        if refused {
            return Err(MetadataError::VotersChanged {
                stored: voters.into_iter().collect(),
                configured: expected_voters.iter().copied().collect(),
            });
        }
    }
    let (log_store, state_machine) = Adaptor::new(store);
    let raft = Raft::new(
        node_id,
        config,
        network::Network { tls },
        log_store,
        state_machine,
    )
    .await
    .map_err(MetadataError::raft("start raft"))?;
    Ok((raft, released))
}

/// The voters a metadata directory must have been written by: the
/// configured voters, or this node alone.
fn expected_voters(
    node_id: NodeId,
    voters: Option<&BTreeMap<NodeId, String>>,
) -> std::collections::BTreeSet<NodeId> {
    match voters {
        Some(v) => v.keys().copied().collect(),
        None => [node_id].into(),
    }
}

/// A Kafka-style cluster id: a random v4 uuid, base64url without padding,
/// never starting with '-' (Kafka's `Uuid.randomUuid` rule).
fn new_cluster_id() -> String {
    loop {
        let id = base64url(Uuid::new_v4().as_bytes());
        if !id.starts_with('-') {
            return id;
        }
    }
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let sextet = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(ALPHABET[sextet as usize]));
        }
    }
    out
}
