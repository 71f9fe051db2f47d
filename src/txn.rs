//! The transaction coordinator: transactional ids, their producer ids and
//! epochs, and the transactions they run (`state.rs`, pure), kept in the
//! internal topic `__transaction_state` (`records.rs`) and driven by
//! [`Coordinator`] (`coordinator.rs`).
//!
//! Data flow: a transactional id maps to a partition of
//! `__transaction_state` (the Java string hash, as Kafka, modulo the
//! partition count); the leader of that partition is the id's
//! coordinator. It loads the partition when it first needs it at a leader
//! epoch, keeps each id's [`TxnMeta`] in memory, and changes one only after
//! the record of the change is committed (on every in-sync replica, or
//! durable on one). EndTxn writes `PrepareCommit`/`PrepareAbort` and
//! answers; the markers are then written to every partition of the
//! transaction (directly where this broker leads it, with WriteTxnMarkers
//! elsewhere), and `CompleteCommit`/`CompleteAbort` last. A timer aborts
//! transactions past their timeout, finishes prepared ones (after a load,
//! or when a marker write failed) and forgets idle ids.
//!
//! Failure cases: a crash between prepare and complete leaves the prepared
//! record; the next leader loads it and writes the markers again (a marker
//! for a transaction already closed in a partition closes nothing there).
//! A coordinator that lost its partition's leadership fails its writes
//! (NOT_COORDINATOR to clients, which look the coordinator up again).

pub mod coordinator;
pub mod records;
pub mod state;

use std::future::Future;

use bytes::Bytes;

pub use coordinator::Coordinator;
pub use state::{TxnError, TxnMeta, TxnPartition, TxnState};

/// Settings (Kafka's broker config names).
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// transaction.state.log.num.partitions
    pub partitions: i32,
    /// transaction.max.timeout.ms
    pub max_timeout_ms: i32,
    /// transactional.id.expiration.ms
    pub id_expiration_ms: i64,
    /// transaction.abort.timed.out.transaction.cleanup.interval.ms
    pub abort_check_interval_ms: u64,
}

impl TxnConfig {
    pub fn from_broker(c: &crate::config::BrokerConfig) -> TxnConfig {
        TxnConfig {
            partitions: 50,
            max_timeout_ms: c.transaction_max_timeout_ms,
            id_expiration_ms: c.transactional_id_expiration_ms,
            abort_check_interval_ms: c.transaction_abort_check_interval_ms,
        }
    }
}

/// A record of `__transaction_state`: key and value (None: tombstone).
pub type KeyValue = (Bytes, Option<Bytes>);

/// Why the coordinator cannot serve a request (beyond the state machine's
/// refusals); each maps to a Kafka error code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Txn(#[from] TxnError),
    #[error("this broker does not coordinate the transactional id")]
    NotCoordinator,
    #[error("the coordinator is loading its partition")]
    LoadInProgress,
    #[error("the transaction state topic is not available: {0}")]
    Unavailable(String),
    #[error("transactional id unknown. transactional_id={0}")]
    UnknownId(String),
}

impl CoordinatorError {
    pub fn code(&self) -> kafka_protocol::error::ResponseError {
        use kafka_protocol::error::ResponseError as Code;
        match self {
            CoordinatorError::Txn(e) => match e {
                TxnError::ConcurrentTransactions(_) => Code::ConcurrentTransactions,
                TxnError::ProducerFenced { .. } => Code::ProducerFenced,
                TxnError::InvalidProducerIdMapping { .. } => Code::InvalidProducerIdMapping,
                TxnError::InvalidTxnState { .. } => Code::InvalidTxnState,
                TxnError::InvalidTimeout { .. } => Code::InvalidTransactionTimeout,
            },
            CoordinatorError::NotCoordinator => Code::NotCoordinator,
            CoordinatorError::LoadInProgress => Code::CoordinatorLoadInProgress,
            CoordinatorError::Unavailable(_) => Code::CoordinatorNotAvailable,
            // As Kafka answers a transaction request of an id it does not
            // know (DescribeTransactions says TRANSACTIONAL_ID_NOT_FOUND).
            CoordinatorError::UnknownId(_) => Code::InvalidProducerIdMapping,
        }
    }
}

/// What the coordinator needs of its broker: the state topic, producer
/// ids, and the partitions markers go to.
pub trait TxnHost: Send + Sync + 'static {
    /// Makes sure `__transaction_state` exists, creating it on first use.
    fn ensure_topic(&self) -> impl Future<Output = Result<(), CoordinatorError>> + Send;

    /// Partitions of the state topic (0 while it does not exist).
    fn partitions(&self) -> i32;

    /// The leader epoch at which this broker leads state partition
    /// `index`, with the partition open (None: another broker, or not yet).
    fn leads(&self, index: i32) -> Option<i32>;

    /// Appends `records` to state partition `index` and waits until they
    /// are committed; fails when the partition stops being led at `epoch`.
    fn write(
        &self,
        index: i32,
        epoch: i32,
        records: Vec<KeyValue>,
    ) -> impl Future<Output = Result<(), CoordinatorError>> + Send;

    /// Records of state partition `index` from `offset`, with the offset
    /// to continue from; None at its end.
    fn read(
        &self,
        index: i32,
        offset: i64,
    ) -> Result<Option<(Vec<KeyValue>, i64)>, CoordinatorError>;

    /// A new producer id.
    fn new_producer_id(&self) -> impl Future<Output = Result<i64, CoordinatorError>> + Send;

    /// Writes the markers of a decided transaction to `partitions`;
    /// returns those that could not be written yet (retried later).
    fn write_markers(
        &self,
        marker: Marker,
        partitions: Vec<TxnPartition>,
    ) -> impl Future<Output = Vec<TxnPartition>> + Send;

    /// Whether `topic` exists (markers for deleted topics are dropped).
    fn topic_exists(&self, topic: &str) -> bool;
}

/// A transaction's outcome, as markers carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    /// The coordinator's epoch: its state partition's leader epoch.
    pub coordinator_epoch: i32,
}
