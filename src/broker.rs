//! The broker's shared state: configuration, the metadata handle, the local
//! partition replicas and the tier.
//!
//! Overview: request handlers get an `Arc<Broker>`. The set of local
//! partitions follows the metadata view: [`Broker::reconcile`] opens a log
//! for every partition this node leads and closes and deletes the ones whose
//! topic is gone. It runs at start, after every metadata change this broker
//! proposes, and from a watcher on the metadata log.
//!
//! Consistency: reconciliation is serialised by a mutex; the partition map
//! itself is read under a short read lock and hands out `Arc<Partition>`s.
//!
//! Crash safety: a topic is deleted in metadata first, then its directories
//! are renamed to `*.deleted` and removed. At start, directories whose
//! `partition.metadata` names a topic id that metadata no longer has are
//! removed the same way, so a crash between the two steps leaves no
//! resurrected data.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use futures::{StreamExt, TryStreamExt};
use tokio::sync::Mutex as AsyncMutex;
use uuid::Uuid;

use crate::config::{BrokerConfig, TopicConfig};
use crate::metadata::{ClusterView, Metadata, TopicInfo};
use crate::partition::{self, Partition, PartitionConfig, PartitionError};

mod group_log;
pub mod read_replica;
pub mod replication;
pub mod scrub;
pub mod table_export;
pub mod tier;
pub mod tier_compaction;
pub mod tier_stage;
mod txn_log;

pub use crate::clock::now_ms;

/// Errors of broker-level operations.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Partition(#[from] PartitionError),
    #[error(transparent)]
    Metadata(#[from] crate::metadata::MetadataError),
    #[error("data dir io failed. path={path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

type PartitionKey = (Uuid, i32);

/// Why a partition is not served by this broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotServed {
    /// The topic has no partition of that index.
    UnknownPartition,
    /// Another broker leads it, or this one has not opened it yet.
    NotLeader,
}

/// The shared state every request handler sees.
pub struct Broker {
    pub config: BrokerConfig,
    pub metadata: Metadata,
    pub tier: tiering::TierStore,
    /// Where topics as tables keep their files: the tier, or the store of
    /// `--table-url`.
    pub tables: tiering::TierStore,
    /// This broker's registration: where other brokers and the clients of
    /// each listener reach it.
    pub me: crate::metadata::BrokerInfo,
    /// How this broker's connections to the others' inter-broker listener
    /// are secured (`--inter-broker-client-config`).
    pub inter_broker_security: crate::client::Security,
    pub metrics: Arc<crate::telemetry::metrics::Metrics>,
    /// Paces the bytes fetches request from the tier (`--tier-fetch-bytes-per-sec`).
    pub tier_fetch_limiter: Arc<tiering::RateLimiter>,
    /// The group coordinator (consumer groups and committed offsets).
    pub groups: crate::group::Coordinator,
    /// The transaction coordinator.
    pub txns: crate::txn::Coordinator,
    /// Connections to other brokers for WriteTxnMarkers and the
    /// verification of transactional produces, by broker id.
    txn_links: std::sync::Mutex<HashMap<i32, Arc<crate::client::Connection>>>,
    /// The fetchers copying the partitions this broker follows.
    pub fetchers: crate::broker::replication::Fetchers,
    /// Where partitions live, and the sync rounds of `acks=all`.
    log_dir: partition::LogDir,
    /// Early write-back of appended data (`--log-writeback-bytes`).
    writeback: crate::writeback::Writeback,
    /// The segment files open across this broker's logs, and their budget.
    open_files: Arc<crate::log::files::OpenFiles>,
    partitions: RwLock<HashMap<PartitionKey, Arc<Partition>>>,
    reconcile_lock: AsyncMutex<()>,
    producer_ids: std::sync::Mutex<(i64, i64)>,
    ready: AtomicBool,
    /// Why the object store is unusable, while it is (`None`: it answered
    /// the last probe). The broker serves local data meanwhile.
    tier_down: std::sync::Mutex<Option<String>>,
    /// High watermarks read from the checkpoint at start, each taken by
    /// its partition when it first opens.
    checkpointed_hwm: std::sync::Mutex<HashMap<partition::hw_checkpoint::Key, i64>>,
    /// What the checkpoint holds now (not written again while it would be
    /// the same).
    written_hwm: std::sync::Mutex<Vec<(partition::hw_checkpoint::Key, i64)>>,
}

/// Manifests read at once when partitions open.
pub(crate) const TIER_REFRESH_CONCURRENCY: usize = 64;

/// Partitions opened (or closed) at once at start-up and on metadata
/// changes: each open of an idle partition is mostly waiting for fsyncs of
/// its checkpoints, which overlap on the disk.
pub(crate) const PARALLEL_OPENS: usize = 16;

/// How long a request waits for the tier before going on without it (the
/// tier loop and later requests try again).
pub const TIER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Broker {
    pub fn new(
        config: BrokerConfig,
        metadata: Metadata,
        tier: tiering::TierStore,
        me: crate::metadata::BrokerInfo,
    ) -> Broker {
        let groups =
            crate::group::Coordinator::new(crate::group::GroupConfig::from_broker(&config), now_ms);
        let mut metrics = crate::telemetry::metrics::Metrics::new();
        metrics.register_tier(tier.metrics(), tier.requests());
        let durability = partition::durability::Durability::new(
            config.sync_rounds_syncfs,
            partition::durability::SyncMetrics::new(crate::telemetry::metrics::latency_histogram()),
        );
        let writeback = crate::writeback::Writeback::new(config.log_writeback_bytes);
        let open_files = Arc::new(crate::log::files::OpenFiles::new(
            config
                .max_open_segment_files
                .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX)),
        ));
        metrics.register_storage(durability.metrics(), &writeback, &open_files);
        let config_data_dir = config.data_dir.clone();
        let log_dir = partition::LogDir {
            path: config.data_dir.clone(),
            durability,
            node_id: config.node_id,
        };
        let metrics = Arc::new(metrics);
        let tier_fetch_limiter =
            Arc::new(tiering::RateLimiter::new(config.tier.fetch_bytes_per_sec));
        Broker {
            groups,
            txns: crate::txn::Coordinator::new(
                crate::txn::TxnConfig::from_broker(&config),
                crate::txn::coordinator::TxnCounters {
                    commits: metrics.txn_commits.clone(),
                    aborts: metrics.txn_aborts.clone(),
                    timed_out: metrics.txn_timed_out.clone(),
                    load_seconds: metrics.txn_coordinator_load_seconds.clone(),
                },
            ),
            txn_links: std::sync::Mutex::new(HashMap::new()),
            fetchers: crate::broker::replication::Fetchers::default(),
            log_dir,
            writeback,
            open_files,
            config,
            metadata,
            tables: tier.clone(),
            tier,
            me,
            inter_broker_security: crate::client::Security::default(),
            tier_fetch_limiter,
            metrics,
            partitions: RwLock::new(HashMap::new()),
            reconcile_lock: AsyncMutex::new(()),
            producer_ids: std::sync::Mutex::new((0, 0)),
            ready: AtomicBool::new(false),
            tier_down: std::sync::Mutex::new(None),
            checkpointed_hwm: std::sync::Mutex::new(partition::hw_checkpoint::read(
                &config_data_dir,
            )),
            written_hwm: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Why the tier is unusable, if it is (for `/ready` and the metrics).
    pub fn tier_down(&self) -> Option<String> {
        self.tier_down
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records the outcome of a tier probe.
    pub fn set_tier_down(&self, why: Option<String>) {
        self.metrics.tier_available.set(i64::from(why.is_none()));
        *self.tier_down.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }

    /// This broker's id. Clients also get it as the controller's id: every
    /// broker takes admin requests and forwards the metadata changes they
    /// make to the quorum's leader (as KRaft brokers do), so the broker a
    /// client asks is one it can send them to.
    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    pub fn view(&self) -> Arc<ClusterView> {
        self.metadata.view()
    }

    /// Serving: started, and the metadata quorum runs (it is restarted
    /// when a storage error stopped it).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.metadata.is_healthy()
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// The local replica of `topic_id`/`index`, if this node hosts it.
    pub fn partition(&self, topic_id: Uuid, index: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(topic_id, index))
            .cloned()
    }

    /// The partition `index` of `topic` if this broker leads it and has it
    /// open; else why not: the topic has no such partition, or another
    /// broker leads it (or this one is still opening it).
    pub fn leader_partition(
        &self,
        topic: &TopicInfo,
        index: i32,
    ) -> Result<Arc<Partition>, NotServed> {
        let info = usize::try_from(index)
            .ok()
            .and_then(|i| topic.partitions.get(i))
            .ok_or(NotServed::UnknownPartition)?;
        if info.leader != self.node_id() {
            return Err(NotServed::NotLeader);
        }
        self.partition(topic.id, index).ok_or(NotServed::NotLeader)
    }

    /// Every local replica.
    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// A topic's configs: its own over the dynamic broker configs over the
    /// defaults.
    pub fn effective_topic_config(&self, topic: &TopicInfo) -> TopicConfig {
        TopicConfig::resolve(
            &self.config,
            &self.view().broker_configs,
            &topic.name,
            &topic.configs,
        )
    }

    fn partition_config(&self, topic: &TopicInfo) -> PartitionConfig {
        PartitionConfig::from_topic(
            Arc::new(self.effective_topic_config(topic)),
            &self.writeback,
            &self.open_files,
        )
    }

    /// Brings the local partitions in line with the metadata view, then
    /// tells the group coordinator which offsets partitions it leads (also
    /// when a partition failed to open: the others' roles stand).
    pub async fn reconcile(&self) -> Result<(), BrokerError> {
        let _guard = self.reconcile_lock.lock().await;
        let result = self.reconcile_partitions().await;
        self.update_group_ownership();
        result
    }

    async fn reconcile_partitions(&self) -> Result<(), BrokerError> {
        let view = self.view();
        let me = self.node_id();
        let mut wanted: HashMap<PartitionKey, (&TopicInfo, i32)> = HashMap::new();
        for topic in view.topics.values() {
            for (i, p) in topic.partitions.iter().enumerate() {
                if p.leader == me || p.replicas.contains(&me) {
                    wanted.insert((topic.id, i as i32), (topic, p.leader_epoch));
                }
            }
        }
        // Close and delete local replicas this broker no longer holds:
        // their topic is gone, or a reassignment moved them elsewhere.
        let stale: Vec<Arc<Partition>> = {
            let mut map = self.partitions.write().unwrap_or_else(|e| e.into_inner());
            let keys: Vec<PartitionKey> = map
                .keys()
                .filter(|k| !wanted.contains_key(k))
                .cloned()
                .collect();
            keys.iter().filter_map(|k| map.remove(k)).collect()
        };
        for p in stale {
            self.fetchers.unfollow(&p);
            if let Err(e) = p.close() {
                tracing::warn!(partition = %p.name(), error = %e, "closing deleted partition failed");
            }
            remove_partition_dir(p.dir());
            if view.topic_by_id(p.topic_id).is_some() {
                // Moved to other brokers: the tier is theirs now.
                tracing::info!(partition = %p.name(), "replica moved away; local copy removed");
                continue;
            }
            if p.topic_config().table {
                // The table goes with its topic.
                let (tier, topic, index, name) =
                    (self.tables.clone(), p.topic.clone(), p.index, p.name());
                tokio::spawn(async move {
                    let deleted = table_export::delete_partition_table(&tier, &topic, index).await;
                    if let Err(e) = deleted {
                        tracing::warn!(partition = %name, error = %e, "deleting the table of a deleted topic failed");
                    }
                });
            }
            if let Some(remote) = p.remote().cloned() {
                // Manifest first, then objects; what fails is left to orphan
                // collection. Not awaited: a slow store must not hold up
                // metadata changes.
                let name = p.name();
                tokio::spawn(async move {
                    match remote.delete_partition().await {
                        Ok(_) => {}
                        Err(e) if e.is_not_owner() => {
                            tracing::info!(partition = %name, "tier data of the deleted topic left to the cluster that owns it");
                        }
                        Err(e) => {
                            tracing::warn!(partition = %name, error = %e, "deleting tier data of a deleted topic failed");
                        }
                    }
                });
            }
        }
        // Open new ones (blocking file I/O: recovery may scan segments,
        // checkpoints are fsynced), several at a time.
        let mut opening = Vec::new();
        for (key, (topic, epoch)) in &wanted {
            if let Some(existing) = self.partition(key.0, key.1) {
                existing.set_config(self.partition_config(topic));
                continue;
            }
            let log_dir = self.log_dir.clone();
            let dir = log_dir.path.join(partition::dir_name(&topic.name, key.1));
            if let Some(old) = partition::read_topic_id(&dir) {
                if old != topic.id {
                    tracing::info!(dir = %dir.display(), old_topic_id = %old, "removing data of a deleted topic with the same name");
                    remove_partition_dir(&dir);
                }
            }
            let (name, id, index, epoch, cfg) = (
                topic.name.clone(),
                topic.id,
                key.1,
                *epoch,
                self.partition_config(topic),
            );
            let tier_cluster = topic
                .configs
                .get(crate::config::TIER_CLUSTER_ID_CONFIG)
                .unwrap_or(&view.cluster_id);
            let remote = Some(self.tier.partition_as(
                tiering::PartitionKey::new(tier_cluster, &topic.name, topic.id.into_bytes(), index),
                &view.cluster_id,
            ));
            let replicated = topic
                .partitions
                .get(key.1 as usize)
                .is_some_and(|p| p.replicas.len() > 1);
            let checkpointed = self
                .checkpointed_hwm
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(name.clone(), index));
            let key = *key;
            opening.push(async move {
                let p = tokio::task::spawn_blocking(move || {
                    let p = Partition::open(&log_dir, &name, id, index, epoch, cfg, remote)?;
                    if replicated {
                        p.forget_high_watermark(checkpointed);
                    }
                    Ok::<_, crate::partition::PartitionError>(p)
                })
                .await
                .map_err(|e| BrokerError::Io {
                    path: dir.display().to_string(),
                    source: std::io::Error::other(e.to_string()),
                })??;
                Ok::<_, BrokerError>((key, Arc::new(p)))
            });
        }
        let opened: Vec<_> = futures::stream::iter(opening)
            .buffer_unordered(PARALLEL_OPENS)
            .try_collect()
            .await?;
        // The tier's offsets of every new partition, read at once and
        // bounded: a hanging object store must not hold up start-up or
        // metadata changes (CreateTopics waits for this). The tier loop
        // retries; local data is served meanwhile. A partition is served only
        // after this, so a local log behind a restored tier restarts after it
        // before it takes an append.
        let deadline = tokio::time::Instant::now() + TIER_WAIT;
        let refreshed: Vec<_> = {
            use futures::StreamExt;
            let handles: Vec<Arc<Partition>> = opened.iter().map(|(_, p)| Arc::clone(p)).collect();
            futures::stream::iter(handles)
                .map(|p| async move { tokio::time::timeout_at(deadline, p.refresh_tier()).await })
                .buffered(TIER_REFRESH_CONCURRENCY)
                .collect()
                .await
        };
        for ((key, p), r) in opened.into_iter().zip(refreshed) {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(partition = %p.name(), error = %tiering::error_chain(&e), "cannot read the tier manifest");
                }
                Err(_) => {
                    tracing::warn!(partition = %p.name(), wait_ms = TIER_WAIT.as_millis() as u64, "tier manifest read did not answer; the tier loop retries");
                }
            }
            // Its role before anyone can reach it: a replicated partition
            // opens leading alone, which would acknowledge a produce on
            // its own disk only.
            if let Some((topic, info)) = view
                .topic_by_id(key.0)
                .and_then(|t| Some((t, t.partitions.get(usize::try_from(key.1).ok()?)?)))
            {
                self.apply_role(topic, info, &p, now_ms());
            }
            self.partitions
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, p);
        }
        self.apply_roles(&view);
        Ok(())
    }

    /// Each local replica takes the role the view gives it: it leads (with
    /// the view's ISR), or follows the leader through a fetcher, or (no
    /// leader) waits.
    fn apply_roles(&self, view: &crate::metadata::ClusterView) {
        let now = now_ms();
        for topic in view.topics.values() {
            for (i, info) in topic.partitions.iter().enumerate() {
                if let Some(p) = self.partition(topic.id, i as i32) {
                    self.apply_role(topic, info, &p, now);
                }
            }
        }
    }

    /// The role `info` gives local replica `p` of `topic`.
    fn apply_role(
        &self,
        topic: &TopicInfo,
        info: &crate::metadata::PartitionInfo,
        p: &Arc<Partition>,
        now: i64,
    ) {
        let replicated = info.replicas.len() > 1;
        tracing::debug!(partition = %p.name(), leader = info.leader, epoch = info.leader_epoch, "applying role");
        let result = if info.leader == self.node_id() {
            self.fetchers.unfollow(p);
            let isr: std::collections::BTreeSet<i32> = info.isr.iter().copied().collect();
            p.become_leader(info.leader_epoch, isr.clone(), replicated, now)
                .map(|_| {
                    let (left, joined) = p.set_isr(isr);
                    self.metrics.isr_shrinks.inc_by(left as u64);
                    self.metrics.isr_expands.inc_by(joined as u64);
                })
        } else if info.leader >= 0 {
            p.become_follower(info.leader_epoch, info.leader)
                .map(|_| self.fetchers.follow(&topic.name, p, info.leader))
        } else {
            self.fetchers.unfollow(p);
            Ok(())
        };
        if let Err(e) = result {
            tracing::warn!(partition = %p.name(), error = %e, "cannot take the partition's role");
        }
    }

    /// Removes partition directories that no topic in metadata owns (left by a
    /// crash during a topic deletion).
    pub fn remove_orphan_dirs(&self) -> Result<(), BrokerError> {
        let view = self.view();
        let dir = &self.config.data_dir;
        let entries = std::fs::read_dir(dir).map_err(|source| BrokerError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(".deleted") {
                remove_partition_dir(&path);
                continue;
            }
            if let Some(id) = partition::read_topic_id(&path) {
                if view.topic_by_id(id).is_none() {
                    tracing::info!(dir = %path.display(), topic_id = %id, "removing partition of a deleted topic");
                    remove_partition_dir(&path);
                }
            }
        }
        Ok(())
    }

    /// Hands out the next producer id, taking a new block from the
    /// controller when the current one is used up.
    pub async fn next_producer_id(&self) -> Result<i64, BrokerError> {
        {
            let mut ids = self.producer_ids.lock().unwrap_or_else(|e| e.into_inner());
            if ids.0 < ids.1 {
                let id = ids.0;
                ids.0 += 1;
                return Ok(id);
            }
        }
        let block = self
            .metadata
            .propose(crate::metadata::Command::AllocateProducerIds { count: 1000 })
            .await?;
        let (first, count) = match block {
            crate::metadata::CommandResult::ProducerIdBlock { first, count } => (first, count),
            other => {
                return Err(BrokerError::Io {
                    path: "producer-id-block".into(),
                    source: std::io::Error::other(format!("unexpected metadata result {other:?}")),
                })
            }
        };
        let mut ids = self.producer_ids.lock().unwrap_or_else(|e| e.into_inner());
        *ids = (first + 1, first + count);
        Ok(first)
    }

    /// Refreshes the per-partition gauges before a scrape.
    pub async fn refresh_gauges(&self) {
        let m = &self.metrics;
        m.txn_ongoing.set(self.txns.ongoing() as i64);
        m.log_end_offset.clear();
        m.log_start_offset.clear();
        m.log_size_bytes.clear();
        m.tier_copy_lag_bytes.clear();
        m.tier_copy_lag_segments.clear();
        m.table_export_lag_segments.clear();
        m.tier_view_age.clear();
        m.tier_scrub_damaged.clear();
        m.tier_bytes.clear();
        m.consumer_group_lag.clear();
        m.cleaner_dirty_ratio.clear();
        m.cleaner_last_clean_age.clear();
        m.tier_compaction_dirty_ratio.clear();
        m.tier_compaction_last_age.clear();
        self.refresh_group_lag();
        m.tier_cache_size_bytes.set(
            (self.tier.cache_memory_bytes().await + self.tier.cache_disk_bytes().await) as i64,
        );
        let parts = self.all_partitions();
        m.partitions.set(parts.len() as i64);
        let view = self.view();
        let under = view
            .topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.leader == self.node_id() && p.isr.len() < p.replicas.len())
            .count();
        m.under_replicated.set(under as i64);
        m.under_min_isr.set(
            parts
                .iter()
                .filter(|p| p.is_replicated())
                .filter(|p| {
                    p.isr().is_some_and(|isr| {
                        (isr.len() as i32) < p.topic_config().min_insync_replicas
                    })
                })
                .count() as i64,
        );
        let offline = if view.controller_id == self.node_id() {
            view.topics
                .values()
                .flat_map(|t| t.partitions.iter())
                .filter(|p| p.leader < 0)
                .count()
        } else {
            0
        };
        m.offline_partitions.set(offline as i64);
        m.metadata_applied_end.set(self.metadata.applied_end());
        m.metadata_replica_lag.clear();
        if let Some(q) = self.metadata.local_quorum_status() {
            let end = q
                .voters
                .iter()
                .find(|v| v.node_id == q.leader)
                .map_or(0, |v| v.log_end);
            for v in q.voters.iter().chain(&q.observers) {
                m.metadata_replica_lag
                    .get_or_create(&crate::telemetry::metrics::NodeLabels {
                        node: v.node_id.to_string(),
                    })
                    .set((end - v.log_end).max(0));
            }
        }
        m.replica_max_lag.set(
            parts
                .iter()
                .filter(|p| p.followed_leader().is_some())
                .map(|p| p.follower_lag())
                .max()
                .unwrap_or(0),
        );
        let mut max_dirty = 0.0f64;
        for p in parts {
            let l = crate::telemetry::metrics::PartitionLabels {
                topic: p.topic.clone(),
                partition: p.index.to_string(),
            };
            if p.compacted().is_some() {
                let ratio = p
                    .clean_plan(now_ms())
                    .ok()
                    .flatten()
                    .map_or(0.0, |plan| plan.dirty_ratio);
                max_dirty = max_dirty.max(ratio);
                m.cleaner_dirty_ratio.get_or_create(&l).set(ratio);
                let last = p.last_clean_ms();
                let age = if last < 0 {
                    f64::INFINITY
                } else {
                    (now_ms() - last).max(0) as f64 / 1000.0
                };
                m.cleaner_last_clean_age.get_or_create(&l).set(age);
                if let Some((ratio, age)) = tier_compaction::state(&p, now_ms()) {
                    m.tier_compaction_dirty_ratio.get_or_create(&l).set(ratio);
                    m.tier_compaction_last_age.get_or_create(&l).set(age);
                }
            }
            m.log_end_offset.get_or_create(&l).set(p.log_end_offset());
            m.log_start_offset
                .get_or_create(&l)
                .set(p.log_start_offset());
            m.log_size_bytes
                .get_or_create(&l)
                .set(p.size_bytes() as i64);
            if p.config().tier.enabled {
                let polled = p.tier_refreshed_ms();
                let age = if polled < 0 {
                    f64::INFINITY
                } else {
                    (now_ms() - polled).max(0) as f64 / 1000.0
                };
                m.tier_view_age.get_or_create(&l).set(age);
                m.tier_scrub_damaged
                    .get_or_create(&l)
                    .set(p.tier_scrub_damaged());
                let uploaded = p.tier_last_offset().unwrap_or(-1);
                let sealed = p.sealed_segments();
                let lagging: Vec<_> = sealed
                    .iter()
                    .filter(|s| s.next_offset - 1 > uploaded)
                    .collect();
                m.tier_copy_lag_bytes
                    .get_or_create(&l)
                    .set(lagging.iter().map(|s| s.size as i64).sum());
                m.tier_copy_lag_segments
                    .get_or_create(&l)
                    .set(lagging.len() as i64);
                if p.is_leader() && p.topic_config().table {
                    // Tiered segments the table does not have yet.
                    let exported = crate::table::exported_to(p.dir()).unwrap_or(i64::MIN);
                    let behind = sealed
                        .iter()
                        .filter(|s| s.next_offset - 1 <= uploaded && s.next_offset > exported)
                        .count();
                    m.table_export_lag_segments
                        .get_or_create(&l)
                        .set(behind as i64);
                }
                if let Some(remote) = p.remote() {
                    if let Ok(bytes) = remote.tier_bytes().await {
                        m.tier_bytes.get_or_create(&l).set(bytes as i64);
                    }
                }
            }
        }
        m.cleaner_max_dirty_ratio.set(max_dirty);
    }

    /// The cleaner's settings now: the dynamic broker configs
    /// (`log.cleaner.*`) over the broker's own.
    pub fn cleaner_settings(&self) -> crate::config::CleanerSettings {
        let view = self.view();
        let dynamic = |key: &str| -> Option<u64> {
            let v = view.broker_configs.get(key)?;
            v.trim()
                .parse::<u64>()
                .ok()
                .or_else(|| v.trim().parse::<f64>().ok().map(|f| f as u64))
        };
        let mut s = self.config.log_cleaner;
        if let Some(t) = dynamic("log.cleaner.threads").filter(|t| *t >= 1) {
            s.threads = u32::try_from(t).unwrap_or(u32::MAX);
        }
        if let Some(b) = dynamic("log.cleaner.dedupe.buffer.size") {
            s.dedupe_buffer_size = b.max(1 << 10);
        }
        if let Some(r) = dynamic("log.cleaner.io.max.bytes.per.second") {
            s.io_max_bytes_per_second = r;
        }
        if let Some(b) = dynamic("log.cleaner.backoff.ms").filter(|b| *b >= 1) {
            s.backoff_ms = b;
        }
        s
    }

    /// One cleaner round (blocking): every compacted partition whose pass
    /// is due gets one, the dirtiest first, on `threads` threads sharing
    /// the I/O limit, each with its share of the dedupe buffer. Returns
    /// how many passes replaced segments.
    pub fn clean_logs(&self, settings: crate::config::CleanerSettings) -> usize {
        let now = now_ms();
        let mut due: Vec<(crate::log::cleaner::CleanPlan, Arc<Partition>)> = self
            .all_partitions()
            .into_iter()
            .filter(|p| p.compacted().is_some())
            .filter_map(|p| match p.clean_plan(now) {
                Ok(Some(plan)) if plan.due => Some((plan, p)),
                _ => None,
            })
            .collect();
        if due.is_empty() {
            return 0;
        }
        due.sort_by(|a, b| b.0.dirty_ratio.total_cmp(&a.0.dirty_ratio));
        let threads = (settings.threads as usize).clamp(1, due.len());
        let resources = crate::log::cleaner::Resources {
            dedupe_bytes: usize::try_from(settings.dedupe_buffer_size / threads as u64)
                .unwrap_or(usize::MAX),
            throttle: crate::log::cleaner::Throttle::new(
                Some(settings.io_max_bytes_per_second).filter(|r| *r > 0),
            ),
        };
        let queue = std::sync::Mutex::new(due.into_iter());
        let swapped = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some((plan, p)) = next else {
                        return;
                    };
                    match p.clean(&plan, &resources) {
                        Ok(r) => {
                            self.metrics.cleaner_read_bytes.inc_by(r.bytes_read);
                            if r.swapped {
                                self.metrics.cleaner_passes.inc();
                                self.metrics.cleaner_written_bytes.inc_by(r.bytes_written);
                                swapped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            tracing::info!(
                                partition = %p.name(),
                                dirty_ratio = format!("{:.2}", r.dirty_ratio),
                                read_bytes = r.bytes_read,
                                written_bytes = r.bytes_written,
                                seconds = format!("{:.3}", r.seconds),
                                swapped = r.swapped,
                                "log cleaner pass"
                            );
                        }
                        Err(e) => {
                            tracing::warn!(partition = %p.name(), error = %e, "log cleaner pass failed")
                        }
                    }
                });
            }
        });
        swapped.into_inner()
    }

    /// Consumer lag per group and partition: high watermark minus the
    /// committed offset.
    fn refresh_group_lag(&self) {
        let Ok(groups) = self.groups.list() else {
            return;
        };
        let view = self.view();
        for g in groups {
            let Ok(offsets) = self.groups.fetch_offsets(&g.group_id, None) else {
                continue;
            };
            for (topic, parts) in offsets {
                let Some(t) = view.topic(&topic) else {
                    continue;
                };
                for (partition, committed) in parts {
                    let (Some(c), Some(p)) = (committed, self.partition(t.id, partition)) else {
                        continue;
                    };
                    let l = crate::telemetry::metrics::GroupPartitionLabels {
                        group: g.group_id.clone(),
                        topic: topic.clone(),
                        partition: partition.to_string(),
                    };
                    self.metrics
                        .consumer_group_lag
                        .get_or_create(&l)
                        .set((p.high_watermark() - c.offset).max(0));
                }
            }
        }
    }

    /// Runs retention on every partition.
    pub fn apply_retention(&self) {
        let now = now_ms();
        for p in self.all_partitions() {
            match p.apply_retention(now) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(partition = %p.name(), segments = n, "retention deleted segments")
                }
                Err(e) => tracing::warn!(partition = %p.name(), error = %e, "retention failed"),
            }
        }
    }

    /// Writes the high watermark of every replicated partition to the
    /// checkpoint when it changed (blocking I/O). A broker with no
    /// replicated partition writes none.
    pub fn checkpoint_high_watermarks(&self) {
        let mut entries: Vec<(partition::hw_checkpoint::Key, i64)> = self
            .all_partitions()
            .iter()
            .filter(|p| p.is_replicated())
            .map(|p| ((p.topic.clone(), p.index), p.high_watermark()))
            .collect();
        entries.sort();
        let mut written = self.written_hwm.lock().unwrap_or_else(|e| e.into_inner());
        if *written == entries {
            return;
        }
        match partition::hw_checkpoint::write(&self.config.data_dir, &entries) {
            Ok(()) => *written = entries,
            Err(e) => {
                tracing::warn!(dir = %self.config.data_dir.display(), error = %e, "cannot write the high-watermark checkpoint");
            }
        }
    }

    /// Flushes and closes every partition (clean shutdown),
    /// `PARALLEL_OPENS` at a time (each close waits for its fsyncs).
    pub fn close_all(&self) {
        let partitions = std::sync::Mutex::new(self.all_partitions().into_iter());
        let next = || partitions.lock().unwrap_or_else(|e| e.into_inner()).next();
        std::thread::scope(|s| {
            for _ in 0..PARALLEL_OPENS {
                s.spawn(|| {
                    while let Some(p) = next() {
                        if let Err(e) = p.close() {
                            tracing::warn!(partition = %p.name(), error = %e, "closing partition failed");
                        }
                    }
                });
            }
        });
    }
}

fn remove_partition_dir(dir: &std::path::Path) {
    let target = if dir
        .file_name()
        .map(|n| n.to_string_lossy().ends_with(".deleted"))
        .unwrap_or(false)
    {
        dir.to_path_buf()
    } else {
        let mut name = dir.as_os_str().to_owned();
        name.push(format!(".{}.deleted", Uuid::new_v4().simple()));
        let renamed = std::path::PathBuf::from(name);
        match std::fs::rename(dir, &renamed) {
            Ok(()) => renamed,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot rename partition dir for deletion");
                dir.to_path_buf()
            }
        }
    };
    if let Err(e) = std::fs::remove_dir_all(&target) {
        tracing::warn!(dir = %target.display(), error = %e, "cannot remove partition dir");
    }
}
