//! A partition replica: the local log plus the state that sits around it.
//!
//! Overview: [`Partition`] owns one [`Log`] behind a mutex (one writer per
//! partition, no global lock), the idempotent-producer table, and two
//! watermarks published through `watch` channels: the high watermark, which
//! wakes long-polling fetches, and the durable offset, which `acks=all`
//! produce requests wait on.
//!
//! Consistency: on a single replica the high watermark is the log end offset
//! (every in-sync replica, i.e. the leader, has the data). Appends, producer
//! checks and watermark updates happen under one lock, so offsets are assigned
//! in order and a fetch never sees an offset above the high watermark.
//!
//! Crash safety: `acks=all` is answered only after an fsync that covers the
//! batch. fsyncs are shared: partitions with appends waiting join the next
//! sync round of their broker (`durability.rs`), which fsyncs each of them once
//! and covers every append made before it started (group commit). The fsync
//! itself runs outside the partition lock, on a blocking thread, so appends
//! continue while it runs.
//!
//! Producer state and leader epochs outlive the segments they came from:
//! the producer table is snapshotted whenever the log rolls and at a clean
//! close (`snapshot.rs`), the leader-epoch cache is a checkpoint file
//! (`epochs.rs`), and both travel with every tiered segment, so a restart
//! after local deletion or a restore from the tier still recognises retried
//! batches.

pub mod durability;
pub mod epochs;
pub mod hw_checkpoint;
pub mod producer_state;
mod rebuild;
pub mod replica;
mod replication;
pub mod snapshot;
mod tier;
pub mod txn_index;

pub use tier::TIER_MANIFEST_COPY;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::TopicConfig;
use crate::log::batch::{check_client_batches, validate_batches, BatchError, BatchHeader};
use crate::log::{Log, LogConfig, LogError};
use crate::zerocopy::FileRegion;
use epochs::LeaderEpochCache;
use producer_state::{AbortedTxn, BatchIdentity, ProducerStateTable, SequenceCheck};
use rebuild::{identities, rebuild_state, store_epochs};
use tier::tier_offsets;

/// Errors of partition operations, mapped to Kafka codes by the API layer.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("duplicate sequence number. producer_id={producer_id}")]
    DuplicateSequence { producer_id: i64 },
    #[error(
        "out of order sequence number. producer_id={producer_id}, expected={expected}, got={got}"
    )]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error("producer epoch is fenced. producer_id={producer_id}, current={current}, got={got}")]
    InvalidProducerEpoch {
        producer_id: i64,
        current: i16,
        got: i16,
    },
    #[error("offset out of range. offset={offset}, log_start={log_start}, high_watermark={high_watermark}")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        high_watermark: i64,
    },
    #[error("fsync failed. partition={partition}")]
    Sync {
        partition: String,
        #[source]
        source: std::io::Error,
    },
    #[error("partition is closed. partition={partition}")]
    Closed { partition: String },
    /// A transaction marker came between a transactional produce's
    /// verification and its append: verify again.
    #[error("a transaction marker came after the produce was verified. partition={partition}")]
    MarkerSinceVerified { partition: String },
    /// The replica refuses (not the leader, or a stale or unknown epoch).
    #[error("{source}. partition={partition}")]
    Replica {
        partition: String,
        #[source]
        source: replica::ReplicaError,
    },
    #[error("tier operation failed. partition={partition}")]
    Tier {
        partition: String,
        #[source]
        source: Box<tiering::TierError>,
    },
}

impl PartitionError {
    /// The replica's role changed under the operation: it leads now, or
    /// follows another leader or epoch than the request was sent to.
    pub fn is_role_change(&self) -> bool {
        matches!(
            self,
            PartitionError::Replica {
                source: replica::ReplicaError::NotFollower
                    | replica::ReplicaError::NotFollowing { .. },
                ..
            }
        )
    }
}

/// Per-topic settings that the partition applies beside the log's own,
/// derived from the topic's resolved configs, which it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionConfig {
    pub log: LogConfig,
    pub max_message_bytes: usize,
    pub log_append_time: bool,
    /// `compression.type` as a codec: produced batches in another codec are
    /// recompressed (`None`: `producer`, stored as sent).
    pub compression: Option<kafka_protocol::records::Compression>,
    pub tier: TierPolicy,
    /// The topic's configs as resolved (`min.insync.replicas`, ...).
    pub topic: Arc<TopicConfig>,
}

impl PartitionConfig {
    /// The settings of a partition of a topic configured as `topic`, with
    /// the broker's write-back and open segment files.
    pub fn from_topic(
        topic: Arc<TopicConfig>,
        writeback: &crate::writeback::Writeback,
        files: &Arc<crate::log::files::OpenFiles>,
    ) -> Self {
        let tier = TierPolicy {
            enabled: topic.remote_storage,
            local_retention_ms: topic.local_retention_ms,
            local_retention_bytes: topic.local_retention_bytes,
            retention_ms: topic.retention_ms,
            retention_bytes: topic.retention_bytes,
            read_replica: topic.read_replica_of.is_some(),
        };
        PartitionConfig {
            log: LogConfig {
                segment_bytes: topic.segment_bytes,
                segment_ms: topic.segment_ms,
                // With tiering, local segments go only after upload (tier loop).
                retention_ms: if tier.enabled {
                    None
                } else {
                    topic.retention_ms
                },
                retention_bytes: if tier.enabled {
                    None
                } else {
                    topic.retention_bytes
                },
                index_interval_bytes: topic.index_interval_bytes,
                writeback: writeback.clone(),
                files: Arc::clone(files),
                compaction: topic.compaction.clone(),
            },
            max_message_bytes: topic.max_message_bytes,
            log_append_time: topic.log_append_time,
            compression: topic.compression,
            tier,
            topic,
        }
    }
}

/// Tiering settings of a topic (Kafka's names). With tiering on, the local
/// log's own retention is off: local segments are deleted only once
/// uploaded, by the local limits, and the total limits apply to the tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TierPolicy {
    /// `remote.storage.enable`
    pub enabled: bool,
    /// `local.retention.ms` resolved (-2 means retention.ms); None keeps all.
    pub local_retention_ms: Option<i64>,
    /// `local.retention.bytes` resolved (-2 means retention.bytes).
    pub local_retention_bytes: Option<i64>,
    /// `retention.ms`, over the whole log.
    pub retention_ms: Option<i64>,
    /// `retention.bytes`, over the whole log.
    pub retention_bytes: Option<i64>,
    /// A read replica: the log follows another cluster's manifest, and
    /// takes no writes.
    pub read_replica: bool,
}

impl TierPolicy {
    /// Whether this partition's leader writes its tier: tiering is on and
    /// it is no read replica of another cluster's.
    pub fn writes(&self) -> bool {
        self.enabled && !self.read_replica
    }
}

/// Result of a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_append_time: i64,
    pub log_start_offset: i64,
}

/// What a cleaner pass did ([`Partition::clean`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CleanReport {
    /// The cleaned segments replaced the old ones (false: the log moved
    /// meanwhile and the pass was dropped).
    pub swapped: bool,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// The dirty ratio that called for the pass.
    pub dirty_ratio: f64,
    pub seconds: f64,
}

/// Where an offset of a partition is ([`Partition::locate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// In the local log (or at the high watermark: nothing there yet).
    Local,
    /// Below the local log, in the tier.
    Tier,
    /// Before the log start or past the high watermark.
    OutOfRange { log_start: i64, high_watermark: i64 },
}

/// How a local read hands over its batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Read into memory.
    Bytes,
    /// As a file range, to send with sendfile(2).
    File,
}

/// What a read of a partition yields: its watermarks and the data.
#[derive(Debug, Clone)]
pub struct PartitionRead {
    pub data: ReadData,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    /// For a `read_committed` read: the aborted transactions within the
    /// data, whose records the consumer drops.
    pub aborted: Vec<AbortedTxn>,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// The batches a read found.
#[derive(Debug, Clone)]
pub enum ReadData {
    /// Whole batches in memory; empty when there is nothing to send.
    Bytes(Bytes),
    /// Whole batches as a file range, and how many offsets it covers.
    File { region: FileRegion, offsets: u64 },
    /// The offset is in the tier ([`Partition::read_remote`] reads it).
    InTier,
}

struct State {
    log: Option<Log>,
    producers: ProducerStateTable,
    epochs: LeaderEpochCache,
    config: PartitionConfig,
}

/// What a tiered segment carries besides its files.
#[derive(Debug, Clone)]
pub struct SegmentState {
    /// Producer snapshot as of the segment's end.
    pub producer_snapshot: Bytes,
    /// Leader-epoch checkpoint up to the segment's end.
    pub leader_epochs: Bytes,
}

/// One partition replica: the leader, or a follower copying its leader's
/// log (`replication.rs`).
pub struct Partition {
    pub topic: String,
    pub topic_id: Uuid,
    pub index: i32,
    dir: PathBuf,
    state: Mutex<State>,
    high_watermark: watch::Sender<i64>,
    /// The log end offset, for followers' fetches waiting on the leader.
    log_end: watch::Sender<i64>,
    durable: watch::Sender<Durable>,
    /// Queued for the next sync round (`durability.rs`).
    sync_queued: AtomicBool,
    /// Highest log end offset a sync round has started to make durable.
    sync_end: AtomicI64,
    /// The broker's sync rounds.
    durability: durability::Durability,
    remote: Option<tiering::RemotePartition>,
    /// First offset in the tier, -1 when nothing is tiered.
    tier_start: AtomicI64,
    /// Last offset in the tier, -1 when nothing is tiered.
    tier_last: AtomicI64,
    /// On a follower, the tier's last offset as its leader last told it
    /// (-1: nothing told): a manifest cached here that ends before it is
    /// stale and is read again.
    leader_tier_last: AtomicI64,
    /// The leader epoch at which this broker last read the manifest from
    /// the store as the partition's leader (-1: never): a new leader reads
    /// it before its first upload, as the copy it cached as a follower may
    /// be old.
    tier_read_epoch: AtomicI32,
    /// The leader's word (`leader_tier_last`) when this follower last
    /// read the manifest from the store: read once per word.
    tier_reread_for: AtomicI64,
    /// Since when reads from the tier have run past fetches' waits with no
    /// answer (`None` once one answers): how long the object store has
    /// been silent for this partition.
    remote_silent_since: Mutex<Option<std::time::Instant>>,
    /// When the tier's manifest was last read or confirmed (ms), -1 never.
    tier_refreshed_ms: AtomicI64,
    /// Segments the last scrub found damaged and could not upload again.
    tier_scrub_damaged: AtomicI64,
    /// The replica's role and high-watermark arithmetic (`replica.rs`); a
    /// single broker leads with itself as the only in-sync replica. Role
    /// changes take the state lock first, so an append sees one role and
    /// stamps its epoch.
    replica: Mutex<replica::Replica>,
    /// More than one replica: the leader's term in the high watermark is
    /// its durable offset, not its log end (`replication.rs`).
    replicated: AtomicBool,
    /// On a follower: its leader's high watermark minus its log end after
    /// the last fetch.
    follower_lag: AtomicI64,
    /// When a cleaner pass last replaced segments (ms), -1 never.
    last_clean_ms: AtomicI64,
    /// Tiered segments whose `.txnindex` object was read into the
    /// producer table's aborted transactions.
    tier_txn_loaded: Mutex<std::collections::BTreeSet<i64>>,
}

/// `replica.lag.time.max.ms` (Kafka's default).
const REPLICA_LAG_TIME_MAX_MS: i64 = 30_000;

/// A broker's log directory: where its partitions live and the sync rounds
/// that make their appends durable.
#[derive(Debug, Clone)]
pub struct LogDir {
    pub path: PathBuf,
    pub durability: durability::Durability,
    /// The broker's id: its replica id in every partition.
    pub node_id: replica::BrokerId,
}

/// The durable offset as the sync rounds publish it.
#[derive(Debug, Clone)]
struct Durable {
    /// Everything below this offset is on stable storage.
    offset: i64,
    /// Sync rounds this partition has been through (and restarts).
    round: u64,
    /// The last round's failure, if it failed.
    error: Option<Arc<PartitionError>>,
}

/// The name of a partition's directory: `<topic>-<partition>`, as in Kafka.
pub fn dir_name(topic: &str, index: i32) -> String {
    format!("{topic}-{index}")
}

const PARTITION_METADATA: &str = "partition.metadata";

/// Reads the topic id stored in a partition directory, if any.
pub fn read_topic_id(dir: &Path) -> Option<Uuid> {
    let text = std::fs::read_to_string(dir.join(PARTITION_METADATA)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("topic_id: "))
        .and_then(|v| Uuid::parse_str(v.trim()).ok())
}

impl Partition {
    /// Opens (recovering if needed) the partition's log in `log_dir`.
    pub fn open(
        log_dir: &LogDir,
        topic: &str,
        topic_id: Uuid,
        index: i32,
        leader_epoch: i32,
        config: PartitionConfig,
        remote: Option<tiering::RemotePartition>,
    ) -> Result<Partition, PartitionError> {
        let dir = log_dir.path.join(dir_name(topic, index));
        let log = Log::open(&dir, config.log.clone())?;
        let (producers, mut epochs, epochs_changed) = rebuild_state(&dir, &log)?;
        let leo = log.log_end_offset();
        // As Kafka's leader does on taking over: its epoch starts at the
        // log end.
        let epochs_changed = epochs.assign(leader_epoch, leo) || epochs_changed;
        if read_topic_id(&dir) != Some(topic_id) {
            // The topic id (a new partition), with the epochs if they
            // changed: one fsync of the directory for both.
            let meta = format!("version: 0\ntopic_id: {topic_id}\n");
            let (meta_path, epochs_path) =
                (dir.join(PARTITION_METADATA), LeaderEpochCache::path(&dir));
            let epochs_text = epochs.encode();
            let mut files: Vec<(&Path, &[u8])> = vec![(&meta_path, meta.as_bytes())];
            if epochs_changed {
                files.push((&epochs_path, epochs_text.as_bytes()));
            }
            crate::log::checkpoint::write_atomic_all(&files).map_err(|source| {
                PartitionError::Sync {
                    partition: dir_name(topic, index),
                    source,
                }
            })?;
        } else if epochs_changed {
            store_epochs(&dir, &epochs);
        }
        // The tier's offsets as last known here, until the manifest is read:
        // a manifest that cannot be read must not move the log start.
        let (tier_start, tier_last) = match &remote {
            Some(r) => {
                r.keep_local_copy(dir.join(TIER_MANIFEST_COPY));
                r.last_known_manifest()
                    .map_or((-1, -1), |m| tier_offsets(&m))
            }
            None => (-1, -1),
        };
        let (high_watermark, _) = watch::channel(leo);
        let (log_end, _) = watch::channel(leo);
        let (durable, _) = watch::channel(Durable {
            offset: leo,
            round: 0,
            error: None,
        });
        Ok(Partition {
            topic: topic.to_string(),
            topic_id,
            index,
            dir,
            state: Mutex::new(State {
                log: Some(log),
                producers,
                epochs,
                config,
            }),
            high_watermark,
            log_end,
            durable,
            sync_queued: AtomicBool::new(false),
            sync_end: AtomicI64::new(leo),
            durability: log_dir.durability.clone(),
            remote,
            tier_start: AtomicI64::new(tier_start),
            tier_last: AtomicI64::new(tier_last),
            leader_tier_last: AtomicI64::new(-1),
            tier_read_epoch: AtomicI32::new(-1),
            tier_reread_for: AtomicI64::new(-1),
            remote_silent_since: Mutex::new(None),
            tier_refreshed_ms: AtomicI64::new(-1),
            tier_scrub_damaged: AtomicI64::new(0),
            replica: Mutex::new(replica::Replica::leader_alone(
                log_dir.node_id,
                leader_epoch,
                leo,
                REPLICA_LAG_TIME_MAX_MS,
            )),
            replicated: AtomicBool::new(false),
            follower_lag: AtomicI64::new(0),
            last_clean_ms: AtomicI64::new(-1),
            tier_txn_loaded: Mutex::new(std::collections::BTreeSet::new()),
        })
    }

    pub fn name(&self) -> String {
        dir_name(&self.topic, self.index)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent log (appends are
        // single writes); keep serving rather than poisoning the partition.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_log<T>(
        &self,
        f: impl FnOnce(&mut Log, &mut ProducerStateTable, &PartitionConfig) -> Result<T, PartitionError>,
    ) -> Result<T, PartitionError> {
        let mut st = self.lock();
        let State {
            log,
            producers,
            config,
            ..
        } = &mut *st;
        match log.as_mut() {
            Some(log) => f(log, producers, config),
            None => Err(PartitionError::Closed {
                partition: self.name(),
            }),
        }
    }

    /// Validates and appends a produce payload (one or more record batches)
    /// outside any transaction: transactional batches are refused.
    pub fn append(&self, records: &Bytes, now_ms: i64) -> Result<AppendResult, PartitionError> {
        self.append_checked(records, now_ms, None)
    }

    /// [`Self::append`] for a produce its transaction coordinator has
    /// verified: transactional batches are taken and open (or continue)
    /// the producer's transaction here. With `guard` (the
    /// [`Self::marker_guard`] taken before the verification) the append is
    /// refused with `MarkerSinceVerified` if a marker came since, so a
    /// transaction aborted meanwhile is never opened again here.
    pub fn append_transactional(
        &self,
        records: &Bytes,
        now_ms: i64,
        guard: Option<u64>,
    ) -> Result<AppendResult, PartitionError> {
        self.append_checked(records, now_ms, Some(guard))
    }

    /// The guard of a transactional produce's verification: how many
    /// markers the partition has seen.
    pub fn marker_guard(&self) -> u64 {
        self.lock().producers.markers_seen()
    }

    /// Appends a coordinator's COMMIT or ABORT marker for the producer's
    /// transaction (WriteTxnMarkers). A marker from an epoch older than the
    /// producer's is refused as fenced.
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: crate::log::batch::ControlType,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendResult, PartitionError> {
        let batch = crate::log::batch::marker_batch(
            producer_id,
            producer_epoch,
            marker,
            coordinator_epoch,
            now_ms,
        );
        let batch = Bytes::from(batch);
        let headers = validate_batches(&batch, usize::MAX)?;
        self.append_headers(&batch, headers, now_ms, None)
    }

    /// `transactional`: None outside a transaction, else the verification
    /// guard, if any.
    fn append_checked(
        &self,
        records: &Bytes,
        now_ms: i64,
        transactional: Option<Option<u64>>,
    ) -> Result<AppendResult, PartitionError> {
        self.check_leader()?;
        let max = self.lock().config.max_message_bytes;
        let headers = validate_batches(records, max)?;
        check_client_batches(&headers, transactional.is_some())?;
        self.append_headers(records, headers, now_ms, transactional.flatten())
    }

    fn append_headers(
        &self,
        records: &Bytes,
        headers: Vec<BatchHeader>,
        now_ms: i64,
        guard: Option<u64>,
    ) -> Result<AppendResult, PartitionError> {
        self.check_leader()?;
        let result = self.with_log(|log, producers, config| {
            if guard.is_some_and(|g| g != producers.markers_seen()) {
                return Err(PartitionError::MarkerSinceVerified {
                    partition: self.name(),
                });
            }
            let ids: Vec<BatchIdentity> = identities(records, &headers);
            for (i, id) in ids.iter().enumerate() {
                match producers.check(id) {
                    SequenceCheck::Append => {}
                    SequenceCheck::Duplicate {
                        base_offset,
                        last_offset,
                    } if headers.len() == 1 => {
                        let _ = i;
                        return Ok(AppendResult {
                            base_offset,
                            last_offset,
                            log_append_time: -1,
                            log_start_offset: log.log_start_offset(),
                        });
                    }
                    SequenceCheck::Duplicate { .. } | SequenceCheck::DuplicateSequence => {
                        return Err(PartitionError::DuplicateSequence {
                            producer_id: id.producer_id,
                        })
                    }
                    SequenceCheck::OutOfOrder { expected, got } => {
                        return Err(PartitionError::OutOfOrderSequence {
                            producer_id: id.producer_id,
                            expected,
                            got,
                        })
                    }
                    SequenceCheck::InvalidEpoch { current, got } => {
                        return Err(PartitionError::InvalidProducerEpoch {
                            producer_id: id.producer_id,
                            current,
                            got,
                        })
                    }
                }
            }
            // The role as of this append (role changes hold the state lock).
            let epoch = {
                let r = self.replica();
                r.check_produce()
                    .map_err(|source| PartitionError::Replica {
                        partition: self.name(),
                        source,
                    })?;
                r.epoch()
            };
            let active_before = log.active_base_offset();
            let info = log.append(records, &headers, epoch, now_ms, config.log_append_time)?;
            // Rolled before these batches: the table is the state at the
            // new segment's base.
            self.snapshot_if_rolled(log, producers, active_before);
            let mut next = info.base_offset;
            for (h, id) in headers.iter().zip(&ids) {
                let last = next + h.last_offset_delta as i64;
                // With LogAppendTime the batch is stored with the broker's.
                let id = match info.log_append_time {
                    -1 => *id,
                    at => id.with_max_timestamp(at),
                };
                producers.observe(&id, next, last);
                next = last + 1;
            }
            let leo = log.log_end_offset();
            self.publish_log_end(leo);
            Ok(AppendResult {
                base_offset: info.base_offset,
                last_offset: info.last_offset,
                log_append_time: info.log_append_time,
                log_start_offset: info.log_start_offset,
            })
        })?;
        Ok(result)
    }

    /// OffsetForLeaderEpoch: (epoch, end offset) from the leader-epoch cache.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        let st = self.lock();
        let leo = st.log.as_ref().map_or(0, Log::log_end_offset);
        st.epochs.end_offset_for(epoch, leo)
    }

    /// Removes producer snapshots outside the log and moves the epoch
    /// cache's start to the partition's log start (after deletions).
    fn after_start_moved(&self) {
        let start = self.log_start_offset();
        let mut st = self.lock();
        let Some(log) = st.log.as_ref() else {
            return;
        };
        snapshot::remove_outside(&self.dir, log.log_start_offset(), log.log_end_offset());
        txn_index::remove_below(&self.dir, log.first_segment_base());
        let end = log.log_end_offset();
        st.producers.retain_aborted(start, end);
        if st.epochs.truncate_from_start(start) {
            store_epochs(&self.dir, &st.epochs);
        }
    }

    /// Joins the broker's next sync round unless one already started covers
    /// everything below `offset`. A handler calls it at the append, before
    /// its answer waits: answers leave in request order, so a wait that
    /// asked only when first polled would ask only once the answers before
    /// it are out, and pipelined acks=all requests would take one round
    /// after the other instead of sharing them.
    pub fn sync_to(self: &Arc<Self>, offset: i64) {
        if self.sync_end.load(Ordering::Acquire) < offset {
            self.durability.request(self);
        }
    }

    /// Waits until everything below `offset` is on stable storage: joins
    /// the broker's next sync round unless one already started covers it.
    /// Fails when a round for this partition fails after the wait began.
    pub async fn wait_durable(self: &Arc<Self>, offset: i64) -> Result<(), PartitionError> {
        let mut rx = self.durable.subscribe();
        let started = rx.borrow().round;
        loop {
            let failed = {
                let d = rx.borrow_and_update();
                if d.offset >= offset {
                    return Ok(());
                }
                (d.round > started).then(|| d.error.clone()).flatten()
            };
            if let Some(e) = failed {
                return Err(self.sync_failure(&e));
            }
            self.sync_to(offset);
            if rx.changed().await.is_err() {
                return Err(PartitionError::Closed {
                    partition: self.name(),
                });
            }
        }
    }

    /// Publishes the outcome of this partition's part of a sync round. A
    /// failed sync marks the log failed (see [`Log::mark_sync_failed`]); once
    /// it is, a round that succeeded publishes that failure instead, so
    /// nothing written after a lost page is acknowledged.
    fn publish_durable(&self, res: Result<i64, PartitionError>) {
        let res = {
            let mut st = self.lock();
            match (st.log.as_mut(), res) {
                (Some(log), Err(e @ PartitionError::Sync { .. })) => {
                    log.mark_sync_failed();
                    Err(e)
                }
                (Some(log), Ok(end)) => log.check_sync_ok().map(|()| end).map_err(Into::into),
                (_, res) => res,
            }
        };
        let mut durable = None;
        self.durable.send_modify(|d| {
            d.round += 1;
            match res {
                Ok(end) => {
                    d.offset = d.offset.max(end);
                    d.error = None;
                    durable = Some(d.offset);
                }
                Err(e) => d.error = Some(Arc::new(e)),
            }
        });
        if let Some(offset) = durable {
            self.on_durable(offset);
        }
    }

    /// This partition's error for a waiter, from a failed round's error.
    fn sync_failure(&self, e: &PartitionError) -> PartitionError {
        let partition = self.name();
        match e {
            PartitionError::Closed { .. } => PartitionError::Closed { partition },
            PartitionError::Sync { source, .. } => PartitionError::Sync {
                partition,
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            other => PartitionError::Sync {
                partition,
                source: std::io::Error::other(other.to_string()),
            },
        }
    }

    /// Where `offset` is: in the local log, in the tier, or outside the
    /// partition.
    pub fn locate(&self, offset: i64) -> Location {
        self.with_log(|log, _, _| Ok(self.locate_in(log, offset)))
            .unwrap_or(Location::OutOfRange {
                log_start: -1,
                high_watermark: -1,
            })
    }

    /// [`Partition::locate`] with the log locked.
    fn locate_in(&self, log: &Log, offset: i64) -> Location {
        let hwm = *self.high_watermark.borrow();
        let local_start = log.log_start_offset();
        let tier_start = self.tier_start.load(Ordering::Acquire);
        if offset < local_start && tier_start >= 0 && offset >= tier_start {
            return Location::Tier;
        }
        let log_start = if tier_start >= 0 {
            tier_start.min(local_start)
        } else {
            local_start
        };
        // Between the high watermark and the log end (a replica whose high
        // watermark is behind after a restart or a leader change) there is
        // no data to send yet, but the offset exists.
        if offset < log_start || offset > hwm.max(log.log_end_offset()) {
            return Location::OutOfRange {
                log_start,
                high_watermark: hwm,
            };
        }
        Location::Local
    }

    /// Reads whole batches from `offset`, up to the high watermark: at least
    /// one batch when one is there, unless `max_bytes` is 0 (watermarks
    /// only). Local data comes as bytes or, with [`ReadMode::File`], as a
    /// file range; an offset in the tier yields [`ReadData::InTier`] (read
    /// it with [`Partition::read_remote`]); one outside the partition is
    /// `OffsetOutOfRange`.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        mode: ReadMode,
    ) -> Result<PartitionRead, PartitionError> {
        self.read_isolated(offset, max_bytes, mode, false)
    }

    /// [`Self::read`]; `read_committed` reads only up to the last stable
    /// offset and lists the aborted transactions in the data.
    pub fn read_isolated(
        &self,
        offset: i64,
        max_bytes: usize,
        mode: ReadMode,
        read_committed: bool,
    ) -> Result<PartitionRead, PartitionError> {
        self.with_log(|log, producers, _| {
            let hwm = *self.high_watermark.borrow();
            let lso = producers.last_stable_offset(hwm);
            let upper = if read_committed { lso } else { hwm };
            let (log_start, data) = match self.locate_in(log, offset) {
                Location::OutOfRange {
                    log_start,
                    high_watermark,
                } => {
                    return Err(PartitionError::OffsetOutOfRange {
                        offset,
                        log_start,
                        high_watermark,
                    })
                }
                Location::Tier => (self.log_start_in(log), ReadData::InTier),
                Location::Local if offset >= upper || max_bytes == 0 => {
                    (self.log_start_in(log), ReadData::Bytes(Bytes::new()))
                }
                Location::Local => {
                    let data = match mode {
                        ReadMode::Bytes => {
                            ReadData::Bytes(log.read(offset, max_bytes, upper)?.data)
                        }
                        ReadMode::File => match log.read_region(offset, max_bytes, upper)? {
                            Some((region, next)) if region.len > 0 => ReadData::File {
                                region,
                                offsets: (next - offset).max(0) as u64,
                            },
                            _ => ReadData::Bytes(Bytes::new()),
                        },
                    };
                    (self.log_start_in(log), data)
                }
            };
            let aborted = match (&data, read_committed) {
                (_, false) => Vec::new(),
                (ReadData::Bytes(b), true) => data_end(b)
                    .map(|end| producers.aborted_between(offset, end))
                    .unwrap_or_default(),
                (ReadData::File { offsets, .. }, true) => {
                    producers.aborted_between(offset, offset + *offsets as i64)
                }
                (ReadData::InTier, true) => Vec::new(),
            };
            Ok(PartitionRead {
                data,
                high_watermark: hwm,
                last_stable_offset: lso,
                aborted,
                log_start_offset: log_start,
                log_end_offset: log.log_end_offset(),
            })
        })
    }

    /// The partition's log start with the log locked.
    fn log_start_in(&self, log: &Log) -> i64 {
        let local = log.log_start_offset();
        match self.tier_start.load(Ordering::Acquire) {
            tier if tier >= 0 => tier.min(local),
            _ => local,
        }
    }

    /// The last stable offset: `read_committed` consumers read below it.
    pub fn last_stable_offset(&self) -> i64 {
        let hwm = *self.high_watermark.borrow();
        self.lock().producers.last_stable_offset(hwm)
    }

    /// The aborted transactions a read of `[from, to)` reports (a read from
    /// the tier).
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.lock().producers.aborted_between(from, to)
    }

    /// The producers with state here (DescribeProducers), by id.
    pub fn producers(&self) -> Vec<producer_state::ProducerView> {
        self.lock().producers.producers()
    }

    /// Whether the producer has a transaction open in this partition.
    pub fn has_open_txn(&self, producer_id: i64) -> bool {
        self.lock().producers.has_open_txn(producer_id)
    }

    /// How many transactions are open in this partition.
    pub fn open_transactions(&self) -> usize {
        self.lock().producers.open_txns()
    }

    /// Subscribes to high-watermark changes (fetch long-poll).
    pub fn watch_high_watermark(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    /// The partition's log start: the tier's first offset when it holds
    /// data, else the local log's.
    pub fn log_start_offset(&self) -> i64 {
        self.with_log(|log, _, _| Ok(self.log_start_in(log)))
            .unwrap_or(0)
    }

    /// The first offset held on local disk.
    pub fn local_log_start_offset(&self) -> i64 {
        self.with_log(|log, _, _| Ok(log.log_start_offset()))
            .unwrap_or(0)
    }

    /// Whether the topic compacts (its records need keys), and the batch
    /// size limit.
    pub fn compacted(&self) -> Option<usize> {
        let st = self.lock();
        st.config
            .log
            .compaction
            .is_some()
            .then_some(st.config.max_message_bytes)
    }

    /// Carries out `plan` (from [`Partition::clean_plan`], see
    /// `log::cleaner`): the pass outside the partition's lock, then its
    /// swap, dropped if the log moved meanwhile. Blocking. Returns the
    /// pass's figures.
    pub fn clean(
        &self,
        plan: &crate::log::cleaner::CleanPlan,
        resources: &crate::log::cleaner::Resources,
    ) -> Result<CleanReport, PartitionError> {
        let started = std::time::Instant::now();
        let cleaned = crate::log::cleaner::clean(plan, resources)?;
        let (read, written) = (cleaned.bytes_read, cleaned.bytes_written);
        let swapped = self.with_log(|log, _, _| Ok(log.commit_clean(cleaned)?))?;
        if swapped {
            self.last_clean_ms
                .store(crate::clock::now_ms(), Ordering::Release);
        }
        Ok(CleanReport {
            swapped,
            bytes_read: read,
            bytes_written: written,
            dirty_ratio: plan.dirty_ratio,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// When a cleaner pass last replaced segments (ms), -1 never.
    pub fn last_clean_ms(&self) -> i64 {
        self.last_clean_ms.load(Ordering::Acquire)
    }

    /// The pass the cleaner would make now, over the segments below the
    /// high watermark and, when the tier is written, below the tier's end
    /// (the tier keeps what it was sent); None when the topic does not
    /// compact or nothing is dirty. Its `due` says whether the dirty ratio
    /// or `max.compaction.lag.ms` calls for it.
    pub fn clean_plan(
        &self,
        now_ms: i64,
    ) -> Result<Option<crate::log::cleaner::CleanPlan>, PartitionError> {
        // Below the last stable offset: an undecided transaction's records
        // neither supersede nor go.
        let mut upper = self.last_stable_offset();
        let tier = self.lock().config.tier;
        if tier.read_replica {
            return Ok(None);
        }
        if tier.writes() {
            upper = upper.min(self.tier_last.load(Ordering::Acquire) + 1);
        }
        self.with_log(|log, producers, _| {
            let mut plan = log.plan_clean(upper, now_ms);
            if let Some(plan) = plan.as_mut() {
                let aborted = producers
                    .aborted_between(log.log_start_offset(), upper)
                    .into_iter()
                    .map(|a| (a.producer_id, a.first_offset, a.last_offset))
                    .collect();
                plan.set_aborted(aborted);
            }
            Ok(plan)
        })
    }

    /// The codec produced batches are stored in, and the batch size limit,
    /// when the topic's `compression.type` names one.
    pub fn recompression(&self) -> Option<(kafka_protocol::records::Compression, usize)> {
        let st = self.lock();
        st.config
            .compression
            .map(|c| (c, st.config.max_message_bytes))
    }

    pub fn config(&self) -> PartitionConfig {
        self.lock().config.clone()
    }

    /// The topic's resolved configs, as this partition applies them.
    pub fn topic_config(&self) -> Arc<TopicConfig> {
        Arc::clone(&self.lock().config.topic)
    }

    /// Sealed local segments, oldest first.
    pub fn sealed_segments(&self) -> Vec<crate::log::SealedSegmentInfo> {
        self.with_log(|log, _, _| Ok(log.sealed_segments()))
            .unwrap_or_default()
    }

    fn replica(&self) -> MutexGuard<'_, replica::Replica> {
        self.replica.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The log ends at `leo`: the replica moves the high watermark (over
    /// the in-sync replicas) and fetches waiting on it wake.
    fn publish_log_end(&self, leo: i64) {
        self.log_end.send_replace(leo);
        let mut r = self.replica();
        // A replicated leader counts what its sync rounds made durable.
        if self.replicated.load(Ordering::Acquire) && r.is_leader() {
            return;
        }
        if let Some(hwm) = r.on_log_end(leo) {
            self.high_watermark.send_replace(hwm);
        }
    }

    /// Whether this replica takes produce requests (it leads).
    pub fn check_leader(&self) -> Result<(), PartitionError> {
        self.replica()
            .check_produce()
            .map_err(|source| PartitionError::Replica {
                partition: self.name(),
                source,
            })
    }

    pub fn log_end_offset(&self) -> i64 {
        self.with_log(|log, _, _| Ok(log.log_end_offset()))
            .unwrap_or(0)
    }

    pub fn size_bytes(&self) -> u64 {
        self.with_log(|log, _, _| Ok(log.size_bytes())).unwrap_or(0)
    }

    /// ListOffsets by timestamp: the first offset whose timestamp is at
    /// least `ts`, with that timestamp. The log finds the batch; the batch
    /// is decoded (decompressing if needed) to find the exact record, as
    /// Kafka answers per record, not per batch.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, PartitionError> {
        self.with_log(|log, _, _| {
            let hwm = *self.high_watermark.borrow();
            let Some((batch_offset, batch_ts)) = log.offset_for_timestamp(ts)? else {
                return Ok(None);
            };
            if batch_offset >= hwm {
                return Ok(None);
            }
            let exact = first_record_matching(log, batch_offset, hwm, |r| r.timestamp >= ts);
            Ok(Some(exact.unwrap_or((batch_offset, batch_ts))))
        })
    }

    /// ListOffsets MAX_TIMESTAMP: (timestamp, offset) of the first record
    /// with the largest timestamp.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        self.with_log(|log, _, _| {
            let hwm = *self.high_watermark.borrow();
            let Some((ts, batch_offset)) = log.max_timestamp() else {
                return Ok(None);
            };
            let exact = first_record_matching(log, batch_offset, hwm, |r| r.timestamp == ts);
            Ok(Some(
                exact.map(|(o, t)| (t, o)).unwrap_or((ts, batch_offset)),
            ))
        })
        .ok()
        .flatten()
    }

    fn delete_local_records(&self, offset: i64) -> Result<i64, PartitionError> {
        self.with_log(|log, producers, _| {
            let hwm = *self.high_watermark.borrow();
            let target = if offset == -1 { hwm } else { offset };
            if target < 0 || target > hwm {
                return Err(PartitionError::OffsetOutOfRange {
                    offset,
                    log_start: log.log_start_offset(),
                    high_watermark: hwm,
                });
            }
            if target <= log.log_start_offset() {
                return Ok(log.log_start_offset());
            }
            self.snapshot_roll(log, producers, |log| log.delete_records_before(target))
        })
    }

    /// Applies a changed topic config.
    pub fn set_config(&self, config: PartitionConfig) {
        let mut st = self.lock();
        if st.config != config {
            if let Some(log) = st.log.as_mut() {
                log.set_config(config.log.clone());
            }
            st.config = config;
        }
    }

    /// Time-based housekeeping: retention, after rolling an active segment
    /// that `segment.ms` or `retention.ms` says is due (an append rolls by
    /// `segment.ms` too).
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize, PartitionError> {
        let deleted = self.with_log(|log, producers, _| {
            self.snapshot_roll(log, producers, |log| log.apply_retention(now_ms))
        })?;
        if deleted > 0 {
            self.after_start_moved();
        }
        Ok(deleted)
    }

    /// Seals the active segment if it holds anything (a new, empty one
    /// takes appends), with the producer snapshot at its end, so that the
    /// tier can take all of the log: a clean shutdown does this. Returns
    /// whether it rolled.
    pub fn seal_active(&self) -> Result<bool, PartitionError> {
        self.with_log(|log, producers, _| {
            self.snapshot_roll(log, producers, Log::roll_if_not_empty)
        })
    }

    /// Snapshots the producer state at the log end, then flushes and closes
    /// the log; later calls fail with `Closed`.
    pub fn close(&self) -> Result<(), PartitionError> {
        let mut st = self.lock();
        let Some(log) = st.log.take() else {
            return Ok(());
        };
        let leo = log.log_end_offset();
        if self.persist_txn_index(&st.producers, log.active_base_offset(), leo) {
            self.persist_snapshot(leo, &st.producers.encode(leo));
        }
        Ok(log.close()?)
    }
}

/// The offset after the last whole batch of `data` (whole batches, as a
/// read returns them), `None` when there is none.
fn data_end(data: &[u8]) -> Option<i64> {
    let mut pos = 0usize;
    let mut end = None;
    while let Some(h) = data.get(pos..).and_then(|d| BatchHeader::parse(d).ok()) {
        if h.total_len() == 0 || pos + h.total_len() > data.len() {
            break;
        }
        end = Some(h.next_offset());
        pos += h.total_len();
    }
    end
}

/// Decodes the batch holding `offset` and returns (offset, timestamp) of its
/// first record that satisfies `pred`, at or after `offset`.
fn first_record_matching(
    log: &Log,
    offset: i64,
    hwm: i64,
    pred: impl Fn(&kafka_protocol::records::Record) -> bool,
) -> Option<(i64, i64)> {
    let slice = log.read(offset, 1, hwm).ok()?;
    let mut data = slice.data;
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut data).ok()?;
    set.records
        .iter()
        .filter(|r| r.offset >= offset && !r.control)
        .find(|r| pred(r))
        .map(|r| (r.offset, r.timestamp))
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod txn_tests;
