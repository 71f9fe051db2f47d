//! The group coordinator's log on this broker: [`GroupLog`] over the local
//! partitions of `__consumer_offsets`.
//!
//! The topic is created on first use with `offsets.topic.num.partitions`
//! partitions, cleanup.policy=compact (the cleaner keeps each key's last
//! record; nothing expires by age) and 100 MiB segments. An offsets topic
//! created by an older version with cleanup.policy=delete is switched to
//! compact when this broker first needs it.

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;

use super::Broker;
use crate::group::log::{decode_entries, Appended, Entry, GroupLog};
use crate::group::records::{
    encode_batch, encode_txn_batch, partition_for, KeyValue, OFFSETS_TOPIC,
};
use crate::group::{Coordinator, GroupConfig, GroupError};
use crate::log::batch::BatchError;
use crate::metadata::{Command, CommandResult};
use crate::partition::{Partition, PartitionError, ReadData};

/// How much of a partition one replay step reads.
const READ_CHUNK: usize = 1 << 20;

impl Broker {
    fn offsets_partition(&self, group: &str) -> Result<(i32, Arc<Partition>), GroupError> {
        let view = self.view();
        let topic =
            view.topic(OFFSETS_TOPIC)
                .ok_or_else(|| GroupError::OffsetsTopicUnavailable {
                    message: "topic does not exist".into(),
                })?;
        let index = partition_for(group, topic.partitions.len() as i32);
        if !self.leads_offsets_partition(topic, index) {
            return Err(GroupError::NotCoordinator);
        }
        let p =
            self.partition(topic.id, index)
                .ok_or_else(|| GroupError::OffsetsTopicUnavailable {
                    message: format!("partition is not open. partition={index}"),
                })?;
        Ok((index, p))
    }

    /// Whether the view has this broker lead partition `index` of the
    /// offsets topic (it coordinates the groups of that partition).
    fn leads_offsets_partition(&self, topic: &crate::metadata::TopicInfo, index: i32) -> bool {
        usize::try_from(index)
            .ok()
            .and_then(|i| topic.partitions.get(i))
            .is_some_and(|p| p.leader == self.node_id())
    }

    /// The broker that coordinates `group`: the leader of its offsets
    /// partition, once the offsets topic exists (none while that broker
    /// is fenced).
    pub fn group_coordinator(&self, group: &str) -> Option<crate::metadata::BrokerInfo> {
        let view = self.view();
        let topic = view.topic(OFFSETS_TOPIC)?;
        let index = partition_for(group, topic.partitions.len() as i32);
        let leader = topic.partitions.get(usize::try_from(index).ok()?)?.leader;
        if view.fenced.contains(&leader) {
            return None;
        }
        view.brokers.get(&leader).cloned()
    }

    /// Tells the group coordinator which offsets partitions this broker
    /// leads, each at its leader epoch (after every reconciliation, once
    /// the local replicas took their roles: a partition is the
    /// coordinator's only once this broker leads it at the view's epoch,
    /// so its log no longer moves under a load).
    pub(crate) fn update_group_ownership(&self) {
        let view = self.view();
        let mut arriving = std::collections::HashSet::new();
        let ownership = view.topic(OFFSETS_TOPIC).map(|t| {
            let mut led = std::collections::HashMap::new();
            for (i, info) in t.partitions.iter().enumerate() {
                if info.leader != self.node_id() {
                    continue;
                }
                let ready = self
                    .partition(t.id, i as i32)
                    .is_some_and(|p| p.is_leader() && p.leader_epoch() == info.leader_epoch);
                if ready {
                    led.insert(i as i32, info.leader_epoch);
                } else {
                    arriving.insert(i as i32);
                }
            }
            (t.partitions.len() as i32, led)
        });
        self.groups.set_arriving(arriving);
        self.groups.set_ownership(ownership);
    }

    /// Creates internal topic `name` (compacted, kept forever, replicated
    /// as [`Self::internal_topic_replication_factor`] says) with
    /// `partitions` and `segment_bytes`, then opens its partitions here.
    /// A topic another broker created meanwhile is fine.
    pub(super) async fn create_internal_topic(
        &self,
        name: &str,
        partitions: i32,
        segment_bytes: u64,
    ) -> Result<(), String> {
        let replication_factor = self.internal_topic_replication_factor()?;
        let configs: BTreeMap<String, String> = [
            ("cleanup.policy", "compact".to_string()),
            ("retention.ms", "-1".to_string()),
            ("segment.bytes", segment_bytes.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let result = self
            .metadata
            .propose(Command::CreateTopic {
                name: name.to_string(),
                id: Uuid::new_v4(),
                partitions,
                replication_factor,
                configs,
                assignments: None,
            })
            .await
            .map_err(|e| e.to_string())?;
        match result {
            CommandResult::Ok => {
                tracing::info!(topic = name, partitions, "created an internal topic")
            }
            CommandResult::TopicAlreadyExists => {}
            other => return Err(format!("topic creation refused: {other:?}")),
        }
        self.reconcile().await.map_err(|e| e.to_string())
    }

    /// The replication factor of an internal topic (`__consumer_offsets`,
    /// `__transaction_state`): `offsets.topic.replication.factor` capped at
    /// the cluster's size (its voters or its registered brokers, whichever
    /// are more, so a cluster still starting does not create a topic of one
    /// replica); refused while fewer brokers run (clients retry
    /// FindCoordinator).
    pub(super) fn internal_topic_replication_factor(&self) -> Result<i16, String> {
        let view = self.view();
        let voters = self
            .config
            .controller
            .as_ref()
            .map_or(1, |c| c.voters.len());
        let cluster = view.brokers.len().max(voters);
        let rf =
            usize::from(self.config.offsets_topic_replication_factor.unsigned_abs()).min(cluster);
        let running = view.live_brokers().len();
        if running < rf {
            return Err(format!(
                "internal topics are created once {rf} brokers run (offsets.topic.replication.factor, capped at the cluster's brokers). running={running}"
            ));
        }
        Ok(rf as i16)
    }

    fn offsets_partition_by_index(&self, index: i32) -> Option<Arc<Partition>> {
        let view = self.view();
        let topic = view.topic(OFFSETS_TOPIC)?;
        self.partition(topic.id, index)
    }

    /// The offsets topic exists and every partition of it this broker
    /// leads is open.
    fn offsets_topic_ready(&self) -> bool {
        let view = self.view();
        match view.topic(OFFSETS_TOPIC) {
            Some(t) => (0..t.partitions.len() as i32)
                .filter(|i| self.leads_offsets_partition(t, *i))
                .all(|i| self.partition(t.id, i).is_some()),
            None => false,
        }
    }
}

/// The coordinator whose records this broker keeps (for
/// [`crate::group::run_timers`]).
impl AsRef<Coordinator> for Broker {
    fn as_ref(&self) -> &Coordinator {
        &self.groups
    }
}

impl GroupLog for Broker {
    async fn ensure_topic(&self) -> Result<(), GroupError> {
        let outdated = self.view().topic(OFFSETS_TOPIC).is_some_and(|t| {
            !t.configs
                .get("cleanup.policy")
                .is_some_and(|p| crate::config::topic::policy_holds(p, "compact"))
        });
        if outdated {
            // Created before the log compacted: compact it from now on.
            let set = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
            match self
                .metadata
                .propose(Command::AlterTopicConfigs {
                    name: OFFSETS_TOPIC.to_string(),
                    set,
                    delete: Vec::new(),
                    replace: false,
                })
                .await
            {
                Ok(_) => tracing::info!(
                    topic = OFFSETS_TOPIC,
                    "the offsets topic compacts from now on"
                ),
                Err(e) => {
                    tracing::warn!(topic = OFFSETS_TOPIC, error = %e, "cannot switch the offsets topic to cleanup.policy=compact")
                }
            }
        }
        if self.offsets_topic_ready() {
            return Ok(());
        }
        let unavailable = |message: String| GroupError::OffsetsTopicUnavailable { message };
        if self.view().topic(OFFSETS_TOPIC).is_none() {
            let cfg = GroupConfig::from_broker(&self.config);
            self.create_internal_topic(
                OFFSETS_TOPIC,
                cfg.offsets_topic_partitions,
                cfg.offsets_topic_segment_bytes,
            )
            .await
            .map_err(unavailable)?;
        }
        self.reconcile()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if self.offsets_topic_ready() {
            Ok(())
        } else {
            Err(unavailable("partitions did not open".into()))
        }
    }

    fn append(
        &self,
        group: &str,
        records: &[KeyValue],
        now_ms: i64,
    ) -> Result<Appended, GroupError> {
        self.append_offsets(group, records, None, now_ms)
    }

    fn append_txn(
        &self,
        group: &str,
        records: &[KeyValue],
        producer: (i64, i16),
        now_ms: i64,
    ) -> Result<Appended, GroupError> {
        self.append_offsets(group, records, Some(producer), now_ms)
    }

    async fn wait_durable(&self, appended: Appended) -> Result<(), GroupError> {
        let p = self
            .offsets_partition_by_index(appended.partition)
            .ok_or_else(|| GroupError::OffsetsTopicUnavailable {
                message: format!("partition is not open. partition={}", appended.partition),
            })?;
        // Committed on every in-sync replica (a commit survives its
        // coordinator's broker), or durable where there is one replica.
        p.wait_committed(appended.end_offset)
            .await
            .map_err(|source| GroupError::Storage {
                partition: appended.partition,
                source: Box::new(source),
            })
    }

    fn partitions(&self) -> i32 {
        self.view()
            .topic(OFFSETS_TOPIC)
            .map(|t| t.partitions.len() as i32)
            .unwrap_or(0)
    }

    fn read(&self, partition: i32, offset: i64) -> Result<Option<(Vec<Entry>, i64)>, GroupError> {
        // Another broker leads it: its records are replayed there.
        let led_here = self
            .view()
            .topic(OFFSETS_TOPIC)
            .is_some_and(|t| self.leads_offsets_partition(t, partition));
        if !led_here {
            return Ok(None);
        }
        let p = self.offsets_partition_by_index(partition).ok_or_else(|| {
            GroupError::OffsetsTopicUnavailable {
                message: format!("partition is not open. partition={partition}"),
            }
        })?;
        // Up to the log end, not the high watermark: a new leader keeps
        // every record it has, and its followers catch up to them.
        let offset = offset.max(p.local_log_start_offset());
        if offset >= p.log_end_offset() {
            return Ok(None);
        }
        let read =
            p.read_for_follower(offset, READ_CHUNK)
                .map_err(|source| GroupError::Storage {
                    partition,
                    source: Box::new(source),
                })?;
        match read.data {
            ReadData::Bytes(data) => Ok(decode_entries(data, offset)),
            // Internal topics stay local; nothing of them is in the tier.
            ReadData::File { .. } | ReadData::InTier => Ok(None),
        }
    }

    fn topic_exists(&self, topic: &str) -> bool {
        self.view().topic(topic).is_some()
    }

    fn metadata_watch(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.metadata.subscribe())
    }
}

impl Broker {
    /// Appends offset records of `group` to its partition, as a
    /// transactional batch of `producer` when there is one.
    fn append_offsets(
        &self,
        group: &str,
        records: &[KeyValue],
        producer: Option<(i64, i16)>,
        now_ms: i64,
    ) -> Result<Appended, GroupError> {
        let (index, p) = self.offsets_partition(group)?;
        let batch = match producer {
            None => encode_batch(records, now_ms),
            Some(producer) => encode_txn_batch(records, now_ms, producer),
        }
        .map_err(|message| GroupError::OffsetsTopicUnavailable { message })?;
        let appended = match producer {
            None => p.append(&batch, now_ms),
            Some(_) => p.append_transactional(&batch, now_ms, None),
        };
        match appended {
            Ok(r) => Ok(Appended {
                partition: index,
                end_offset: r.last_offset + 1,
            }),
            Err(source @ PartitionError::Batch(BatchError::TooLarge { .. })) => {
                Err(GroupError::CommitTooLarge {
                    partition: index,
                    source: Box::new(source),
                })
            }
            Err(source) => Err(GroupError::Storage {
                partition: index,
                source: Box::new(source),
            }),
        }
    }
}
