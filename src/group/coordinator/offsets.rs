//! Committed offsets: OffsetCommit, OffsetFetch and OffsetDelete, and the
//! removal of expired offsets and of offsets of deleted topics. A write
//! holds the group's `writes` lock from its append to its fsync, so the
//! cache follows the log order.

use std::collections::BTreeSet;

use super::{Coordinator, GroupError, GroupLog, GroupState, PendingOffset, TopicOffsets};
use crate::group::records::{encode_key, encode_offset_value, KeyValue, OffsetValue, RecordKey};
use crate::group::state::{Group, Now};

impl Coordinator {
    /// OffsetCommit: validates the member and generation, appends the
    /// records, waits until they are durable, then updates the cache.
    pub async fn commit_offsets<L: GroupLog>(
        &self,
        log: &L,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        offsets: Vec<(String, i32, OffsetValue)>,
    ) -> Result<(), GroupError> {
        self.commit_offsets_as(
            log,
            group_id,
            (member_id, instance_id, generation),
            offsets,
            None,
        )
        .await
    }

    /// TxnOffsetCommit: as [`Self::commit_offsets`], but the records go in
    /// a transactional batch of `producer` and count only once its
    /// transaction commits ([`Self::complete_txn_offsets`]).
    pub async fn commit_txn_offsets<L: GroupLog>(
        &self,
        log: &L,
        group_id: &str,
        member: (&str, Option<&str>, i32),
        offsets: Vec<(String, i32, OffsetValue)>,
        producer: (i64, i16),
    ) -> Result<(), GroupError> {
        self.commit_offsets_as(log, group_id, member, offsets, Some(producer))
            .await
    }

    async fn commit_offsets_as<L: GroupLog>(
        &self,
        log: &L,
        group_id: &str,
        (member_id, instance_id, generation): (&str, Option<&str>, i32),
        offsets: Vec<(String, i32, OffsetValue)>,
        producer: Option<(i64, i16)>,
    ) -> Result<(), GroupError> {
        self.check_open_for(group_id)?;
        if offsets.is_empty() {
            return Ok(());
        }
        self.ensure_topic(log, group_id).await?;
        let slot = match self.slot(group_id, false) {
            Some(s) => s,
            // A group that does not use Kafka's membership commits with
            // generation -1; anything else is a stale member.
            None if generation < 0 => self
                .slot(group_id, true)
                .ok_or(GroupError::NotCoordinator)?,
            None => {
                return Err(GroupError::IllegalGeneration {
                    group: group_id.to_string(),
                    got: generation,
                    current: -1,
                })
            }
        };
        let _writes = slot.writes.lock().await;
        let appended = {
            let mut inner = slot.lock();
            let now = self.now();
            if let Err(e) = inner
                .group
                .validate_offset_commit(member_id, instance_id, generation)
            {
                self.drop_if_unused(group_id, &slot, &mut inner, now);
                return Err(e);
            }
            let records: Vec<KeyValue> = offsets
                .iter()
                .map(|(topic, partition, v)| {
                    (
                        encode_key(&RecordKey::Offset {
                            group: group_id.to_string(),
                            topic: topic.clone(),
                            partition: *partition,
                        }),
                        Some(encode_offset_value(v)),
                    )
                })
                .collect();
            let appended = match producer {
                None => log.append(group_id, &records, now.wall_ms),
                Some(p) => log.append_txn(group_id, &records, p, now.wall_ms),
            };
            match appended {
                Ok(a) => a,
                Err(e) => {
                    self.drop_if_unused(group_id, &slot, &mut inner, now);
                    return Err(e);
                }
            }
        };
        self.wait_durable(log, appended).await?;
        if let Some((producer_id, _)) = producer {
            let pending = offsets
                .into_iter()
                .map(|(topic, partition, value)| PendingOffset {
                    group: group_id.to_string(),
                    topic,
                    partition,
                    value,
                });
            self.txn_offsets()
                .entry((appended.partition, producer_id))
                .or_default()
                .extend(pending);
            return Ok(());
        }
        let mut inner = slot.lock();
        if inner.group.state() != GroupState::Dead {
            for (topic, partition, v) in offsets {
                inner.group.commit_offset(&topic, partition, v);
            }
        }
        Ok(())
    }

    /// OffsetFetch: the committed offsets of the listed partitions (None for
    /// every committed offset of the group).
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<TopicOffsets>, GroupError> {
        self.check_open_for(group_id)?;
        let slot = self.slot(group_id, false);
        let inner = slot.as_ref().map(|s| s.lock());
        let group = inner
            .as_ref()
            .map(|i| &i.group)
            .filter(|g| g.state() != GroupState::Dead);
        Ok(match topics {
            Some(topics) => topics
                .into_iter()
                .map(|(topic, partitions)| {
                    let parts = partitions
                        .into_iter()
                        .map(|p| (p, group.and_then(|g| g.offset(&topic, p)).cloned()))
                        .collect();
                    (topic, parts)
                })
                .collect(),
            None => {
                let mut out: Vec<TopicOffsets> = Vec::new();
                for ((topic, p), v) in group.map(|g| g.offsets().iter()).into_iter().flatten() {
                    match out.last_mut() {
                        Some((t, parts)) if t == topic => parts.push((*p, Some(v.clone()))),
                        _ => out.push((topic.clone(), vec![(*p, Some(v.clone()))])),
                    }
                }
                out
            }
        })
    }

    /// OffsetDelete: removes committed offsets of topics the group does not
    /// consume (all of them when the group is empty).
    pub async fn delete_offsets<L: GroupLog>(
        &self,
        log: &L,
        group_id: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        self.check_open_for(group_id)?;
        let not_found = || GroupError::GroupIdNotFound {
            group: group_id.to_string(),
        };
        let slot = self.slot(group_id, false).ok_or_else(not_found)?;
        let _writes = slot.writes.lock().await;
        let (results, appended, deleted) = {
            let inner = slot.lock();
            let g = &inner.group;
            let subscribed: Option<Option<BTreeSet<String>>> = match g.state() {
                GroupState::Dead => return Err(not_found()),
                GroupState::Empty => Some(Some(BTreeSet::new())),
                _ if g.protocol_type() == Some("consumer") => Some(g.subscribed_topics()),
                _ => None,
            };
            let Some(subscribed) = subscribed else {
                return Err(GroupError::NonEmptyGroup {
                    group: group_id.to_string(),
                });
            };
            let mut results = Vec::with_capacity(partitions.len());
            let mut tombstones = Vec::new();
            let mut deleted = Vec::new();
            for (topic, p) in &partitions {
                let in_use = subscribed.as_ref().is_none_or(|s| s.contains(topic));
                if in_use {
                    results.push(Err(GroupError::SubscribedToTopic {
                        group: group_id.to_string(),
                        topic: topic.clone(),
                    }));
                    continue;
                }
                if g.offset(topic, *p).is_some() {
                    tombstones.push((
                        encode_key(&RecordKey::Offset {
                            group: group_id.to_string(),
                            topic: topic.clone(),
                            partition: *p,
                        }),
                        None,
                    ));
                    deleted.push((topic.clone(), *p));
                }
                results.push(Ok(()));
            }
            let appended = if tombstones.is_empty() {
                None
            } else {
                Some(log.append(group_id, &tombstones, self.now().wall_ms)?)
            };
            (results, appended, deleted)
        };
        if let Some(a) = appended {
            self.wait_durable(log, a).await?;
        }
        let mut inner = slot.lock();
        for (topic, p) in deleted {
            inner.group.remove_offset(&topic, p);
        }
        Ok(results)
    }

    /// Removes expired offsets (KIP-211) and the empty groups left with none.
    pub async fn expire_offsets<L: GroupLog>(&self, log: &L) -> (usize, usize) {
        let retention = self.config.offsets_retention_ms;
        let (offsets, groups) = self
            .purge(log, true, |g, now| {
                g.expired_offsets(now.wall_ms, retention)
            })
            .await;
        if offsets > 0 || groups > 0 {
            tracing::info!(offsets, groups, "removed expired offsets and empty groups");
        }
        (offsets, groups)
    }

    /// Removes the committed offsets of topics that no longer exist (as
    /// Kafka does when a topic is deleted).
    pub async fn drop_deleted_topics<L: GroupLog>(&self, log: &L) -> usize {
        let (offsets, _) = self
            .purge(log, false, |g, _| {
                g.offsets()
                    .keys()
                    .filter(|(topic, _)| !log.topic_exists(topic))
                    .cloned()
                    .collect()
            })
            .await;
        if offsets > 0 {
            tracing::info!(offsets, "removed committed offsets of deleted topics");
        }
        offsets
    }

    /// Tombstones the offsets `select` picks in every group and, with
    /// `drop_empty`, removes empty groups left without offsets. Returns the
    /// number of offsets and groups removed.
    async fn purge<L: GroupLog>(
        &self,
        log: &L,
        drop_empty: bool,
        select: impl Fn(&Group, Now) -> Vec<(String, i32)>,
    ) -> (usize, usize) {
        let (mut offsets, mut groups) = (0, 0);
        for (group_id, slot) in self.slots() {
            let _writes = slot.writes.lock().await;
            let appended = {
                let mut inner = slot.lock();
                let now = self.now();
                if inner.group.state() == GroupState::Dead {
                    continue;
                }
                let picked = select(&inner.group, now);
                let left = inner
                    .group
                    .offsets()
                    .keys()
                    .filter(|k| !picked.contains(k))
                    .count();
                let gone = drop_empty && left == 0 && inner.group.is_removable_without_offsets();
                if picked.is_empty() && !gone {
                    continue;
                }
                let mut records: Vec<KeyValue> = picked
                    .iter()
                    .map(|(topic, partition)| {
                        let key = RecordKey::Offset {
                            group: group_id.clone(),
                            topic: topic.clone(),
                            partition: *partition,
                        };
                        (encode_key(&key), None)
                    })
                    .collect();
                if gone {
                    let key = RecordKey::Group {
                        group: group_id.clone(),
                    };
                    records.push((encode_key(&key), None));
                }
                let appended = match log.append(&group_id, &records, now.wall_ms) {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(group = %group_id, error = %e, "cannot remove committed offsets");
                        continue;
                    }
                };
                for (topic, partition) in &picked {
                    inner.group.remove_offset(topic, *partition);
                }
                offsets += picked.len();
                if gone {
                    self.remove(&group_id, &slot, &mut inner, now);
                    groups += 1;
                }
                appended
            };
            if let Err(e) = self.wait_durable(log, appended).await {
                tracing::warn!(group = %group_id, error = %e, "offset removal not durable");
            }
        }
        (offsets, groups)
    }
}
