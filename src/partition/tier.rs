//! The tier half of a partition: the tier's offsets as its manifest gives
//! them, reads below the local log, restarting the local log after a tier
//! that is ahead of it (a restored or replaced data directory), local
//! retention of uploaded segments, and DeleteRecords across both.

use std::sync::atomic::Ordering;

use super::{
    rebuild::store_epochs, snapshot, LeaderEpochCache, Partition, PartitionError,
    ProducerStateTable, State, TierPolicy,
};

impl Partition {
    /// What the tier needs to upload sealed segment `seg`: its files, its
    /// offsets and times, and the producer state and leader epochs at its end.
    pub fn segment_upload(
        &self,
        seg: &crate::log::SealedSegmentInfo,
    ) -> Result<tiering::SegmentUpload, PartitionError> {
        let state = self.segment_state(seg)?;
        Ok(tiering::SegmentUpload {
            base_offset: seg.base_offset,
            last_offset: seg.next_offset - 1,
            first_timestamp: None,
            max_timestamp: seg.max_timestamp.unwrap_or(-1),
            leader_epoch: self.leader_epoch(),
            size: seg.size,
            log: seg.log_path.clone(),
            offset_index: seg.index_path.clone(),
            time_index: seg.time_index_path.clone(),
            producer_snapshot: Some(state.producer_snapshot),
            leader_epochs: Some(state.leader_epochs),
            // Only segments holding ABORT markers have a `.txnindex`
            // (segment_state wrote it before the snapshot at their end).
            txn_index: Some(super::txn_index::path(&self.dir, seg.base_offset))
                .filter(|p| p.exists()),
        })
    }

    /// The producer table was replaced: the tier's aborted transactions
    /// are read again when needed.
    pub(super) fn forget_tier_aborted(&self) {
        self.tier_txn_loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Before a `read_committed` read of `[from, to)` from the tier: the
    /// aborted transactions of the tiered segments from the one holding
    /// `from` on, from their `.txnindex` objects (each read once, then
    /// kept with the partition's own), until one says no later abort can
    /// begin before `to`.
    pub async fn load_tier_aborted(&self, from: i64, to: i64) -> Result<(), PartitionError> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let manifest = remote.manifest().await.map_err(|e| self.tier_err(e))?;
        for seg in manifest.segments.iter().filter(|s| s.last_offset >= from) {
            if seg.object(tiering::ObjectKind::Txnindex).is_none() {
                continue;
            }
            let loaded = self
                .tier_txn_loaded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&seg.base_offset);
            if !loaded {
                let bytes = remote
                    .segment_object(seg, tiering::ObjectKind::Txnindex)
                    .await
                    .map_err(|e| self.tier_err(e))?
                    .unwrap_or_default();
                let (entries, bad) = super::txn_index::decode(&bytes);
                if bad > 0 {
                    tracing::warn!(partition = %self.name(), base = seg.base_offset, bad, "tier transaction index entries skipped");
                }
                self.lock().producers.add_aborted(entries);
                self.tier_txn_loaded
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(seg.base_offset);
            }
            let complete = self
                .lock()
                .producers
                .aborted_markers_in(seg.base_offset, seg.last_offset + 1)
                .iter()
                .any(|a| a.last_offset >= from && a.last_stable_offset >= to);
            if complete {
                break;
            }
        }
        Ok(())
    }

    /// When the tier's manifest was last read or confirmed (ms since the
    /// epoch), -1 when never.
    pub fn tier_refreshed_ms(&self) -> i64 {
        self.tier_refreshed_ms.load(Ordering::Acquire)
    }

    /// Segments the last scrub found damaged and could not upload again.
    pub fn tier_scrub_damaged(&self) -> i64 {
        self.tier_scrub_damaged.load(Ordering::Relaxed)
    }

    pub fn set_tier_scrub_damaged(&self, n: i64) {
        self.tier_scrub_damaged.store(n, Ordering::Relaxed);
    }

    /// The last offset in the tier, if any.
    pub fn tier_last_offset(&self) -> Option<i64> {
        Some(self.tier_last.load(Ordering::Acquire)).filter(|o| *o >= 0)
    }

    /// The tier handle of this partition (None when the broker has no tier).
    pub fn remote(&self) -> Option<&tiering::RemotePartition> {
        self.remote.as_ref()
    }

    pub(super) fn tier_err(&self, source: tiering::TierError) -> PartitionError {
        PartitionError::Tier {
            partition: self.name(),
            source: Box::new(source),
        }
    }

    /// Reloads the tier's offsets from its manifest. When the tier holds
    /// offsets at or beyond the local log end (a restored or replaced data
    /// dir), the local log restarts after the tier's last offset so no
    /// offset is ever assigned twice.
    ///
    /// A read replica re-reads the manifest from the store every time (the
    /// source cluster writes it) and follows it the same way: its local
    /// log stays empty, after the tier's last offset.
    pub async fn refresh_tier(&self) -> Result<(), PartitionError> {
        self.load_tier(false).await
    }

    /// [`Self::refresh_tier`] with the manifest read from the store, not
    /// the copy cached here: on a new leader before its first upload, and
    /// on a follower whose leader's tier is ahead of its copy (see
    /// [`Self::tier_pass_rereads`]).
    pub async fn reread_tier(&self) -> Result<(), PartitionError> {
        self.load_tier(true).await
    }

    /// Whether a tier pass must read the manifest from the store first: a
    /// leader that has not read it since it took the lead at its epoch (a
    /// follower's cached copy does not follow the old leader's uploads),
    /// or a follower whose leader told it of tiered offsets past its copy
    /// (so it can drop the local segments they cover), once per offset it
    /// is told: a copy that still ends before it (another cluster took the
    /// partition over, and only the part below the local log counts) waits
    /// for the leader's next word. `tier` is the partition's tier policy
    /// (the caller has its config at hand).
    pub fn tier_pass_rereads(&self, tier: &TierPolicy) -> bool {
        if self.remote.is_none() || !tier.enabled || tier.read_replica {
            // Without a tier nothing is read; a read replica reads the
            // manifest from the store at every pass anyway.
            return false;
        }
        if self.is_leader() {
            self.tier_read_epoch.load(Ordering::Acquire) != self.leader_epoch()
        } else {
            let told = self.leader_tier_last.load(Ordering::Acquire);
            told > self.tier_last.load(Ordering::Acquire)
                && told != self.tier_reread_for.load(Ordering::Acquire)
        }
    }

    /// On a follower: the tier's last offset as the leader's latest fetch
    /// answer gave it.
    pub fn note_leader_tier_last(&self, offset: i64) {
        self.leader_tier_last.store(offset, Ordering::Release);
    }

    async fn load_tier(&self, reread: bool) -> Result<(), PartitionError> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let read_replica = self.config().tier.read_replica;
        let from_store = read_replica || reread || remote.cached_manifest().is_none();
        // Taken before the read: a read that starts once this broker leads
        // at an epoch sees everything the leaders before it wrote.
        let leading_at = self.is_leader().then(|| self.leader_epoch());
        let told = self.leader_tier_last.load(Ordering::Acquire);
        let manifest = if from_store {
            remote.refresh().await
        } else {
            remote.manifest().await
        }
        .map_err(|e| self.tier_err(e))?;
        self.tier_refreshed_ms
            .store(crate::clock::now_ms(), Ordering::Release);
        let (readable_start, mut last) = tier_offsets(&manifest);
        let ours = remote.writes(&manifest) || read_replica;
        if !ours {
            // Another cluster took the partition over and writes the tier
            // on from what this one uploaded: only the part below the local
            // log is this partition's history.
            last = last.min(self.local_log_start_offset() - 1);
        }
        self.tier_start.store(readable_start, Ordering::Release);
        self.tier_last.store(last, Ordering::Release);
        if from_store {
            if let Some(epoch) = leading_at {
                self.tier_read_epoch.store(epoch, Ordering::Release);
            }
            self.tier_reread_for.store(told, Ordering::Release);
        }
        if ours && last >= 0 && self.log_end_offset() <= last {
            self.restart_after_tier(remote, last).await?;
        }
        Ok(())
    }

    /// Restarts the local log after the tier's last offset `last`, with the
    /// producer state and leader epochs of the tier's newest segment (a
    /// damaged or missing one is logged and starts empty).
    async fn restart_after_tier(
        &self,
        remote: &tiering::RemotePartition,
        last: i64,
    ) -> Result<(), PartitionError> {
        let next = last + 1;
        let fetch = |kind| async move {
            match remote.last_segment_object(kind).await {
                Ok(found) => Ok(found
                    .filter(|(seg, _)| seg.last_offset == last)
                    .map(|(_, b)| b)),
                Err(e) => Err(self.tier_err(e)),
            }
        };
        let producers = match fetch(tiering::ObjectKind::Snapshot).await? {
            Some(bytes) => match ProducerStateTable::decode(&bytes) {
                Ok((offset, table)) if offset == next => Some(table),
                Ok((offset, _)) => {
                    tracing::warn!(partition = %self.name(), offset, expected = next, "tier producer snapshot is for another offset; producer state starts empty");
                    None
                }
                Err(e) => {
                    tracing::warn!(partition = %self.name(), error = %e, "tier producer snapshot unusable; producer state starts empty");
                    None
                }
            },
            None => None,
        };
        let epochs = match fetch(tiering::ObjectKind::Epochs).await? {
            Some(bytes) => match std::str::from_utf8(&bytes)
                .map_err(|e| e.to_string())
                .and_then(|t| LeaderEpochCache::decode(t).map_err(|e| e.to_string()))
            {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(partition = %self.name(), error = %e, "tier leader epochs unusable");
                    None
                }
            },
            None => None,
        };
        let mut st = self.lock();
        let st = &mut *st;
        let Some(log) = st.log.as_mut() else {
            return Err(PartitionError::Closed {
                partition: self.name(),
            });
        };
        if log.log_end_offset() > last {
            return Ok(());
        }
        tracing::info!(
            partition = %self.name(),
            local_end = log.log_end_offset(),
            tier_last = last,
            producers = producers.as_ref().map_or(0, ProducerStateTable::len),
            "tier holds offsets beyond the local log; local log restarts after them"
        );
        self.restart_log_at(
            st,
            next,
            producers.unwrap_or_default(),
            epochs.unwrap_or_default(),
        )
    }

    /// Drops the whole local log and starts it empty at `next` (past its
    /// end), with `producers` as the producer state there and `epochs` cut
    /// at `next`; a leader's own epoch starts there, a follower's epochs
    /// come with the batches it fetches next.
    pub(super) fn restart_log_at(
        &self,
        st: &mut State,
        next: i64,
        producers: ProducerStateTable,
        epochs: LeaderEpochCache,
    ) -> Result<(), PartitionError> {
        let Some(log) = st.log.as_mut() else {
            return Err(self.closed());
        };
        log.reset_to(next)?;
        snapshot::remove_outside(&self.dir, next, next);
        st.producers = producers;
        self.forget_tier_aborted();
        self.persist_snapshot(next, &st.producers.encode(next));
        st.epochs = epochs;
        st.epochs.truncate_from_end(next);
        if self.is_leader() {
            st.epochs.assign(self.leader_epoch(), next);
        }
        store_epochs(&self.dir, &st.epochs);
        let leo = log.log_end_offset();
        self.publish_log_end(leo);
        self.durable.send_modify(|d| {
            d.offset = d.offset.max(leo);
            d.round += 1;
        });
        // Everything below is in the tier: a replicated leader's term in
        // the high watermark moves there too.
        self.on_durable(leo);
        Ok(())
    }

    /// Reads whole batches from the tier (for offsets below the local log):
    /// the batches as parts, with the offsets they cover from `offset`.
    /// With `files`, chunks in the tier's disk cache are file ranges (not
    /// read); without, the parts are bytes.
    pub async fn read_remote(
        &self,
        offset: i64,
        max_bytes: usize,
        files: bool,
    ) -> Result<tiering::RemoteRead, PartitionError> {
        let Some(remote) = &self.remote else {
            return Err(PartitionError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset(),
                high_watermark: self.high_watermark(),
            });
        };
        remote
            .read_pieces(offset, max_bytes as u64, files)
            .await
            .map_err(|e| self.tier_err(e))
    }

    /// Notes that a read from the tier answered (data or an error).
    pub fn remote_read_answered(&self) {
        *self
            .remote_silent_since
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Notes that a read from the tier ran past a fetch's wait; returns for
    /// how long this partition's tier reads have had no answer.
    pub fn remote_read_silent(&self) -> std::time::Duration {
        self.remote_silent_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(std::time::Instant::now)
            .elapsed()
    }

    /// Deletes local sealed segments that are in the tier and beyond the
    /// local retention limits (oldest first); returns how many.
    pub fn apply_local_retention(&self, now_ms: i64) -> Result<usize, PartitionError> {
        let policy = self.lock().config.tier;
        let Some(mut uploaded) = self.tier_last_offset() else {
            return Ok(0);
        };
        if self.topic_config().table && self.is_leader() {
            // A table topic's leader keeps its segments until it has
            // exported them.
            let exported = crate::table::exported_to(&self.dir).unwrap_or(i64::MIN);
            uploaded = uploaded.min(exported.saturating_sub(1));
        }
        let segments = self.sealed_segments();
        let mut local_bytes = self.size_bytes();
        let mut delete_to = None;
        let mut count = 0;
        for seg in &segments {
            if seg.next_offset - 1 > uploaded {
                break;
            }
            // Kafka's rule: delete while what stays is still >= the limit.
            let too_big = policy
                .local_retention_bytes
                .is_some_and(|max| local_bytes >= seg.size + max.max(0) as u64);
            let too_old = policy
                .local_retention_ms
                .is_some_and(|ms| seg.retention_timestamp.is_some_and(|ts| ts < now_ms - ms));
            if !(too_big || too_old) {
                break;
            }
            local_bytes -= seg.size;
            delete_to = Some(seg.next_offset);
            count += 1;
        }
        if let Some(offset) = delete_to {
            self.with_log(|log, _, _| Ok(log.delete_records_before(offset)?))?;
            self.after_start_moved();
        }
        Ok(count)
    }

    /// DeleteRecords: moves the log start to `offset` (-1: the high
    /// watermark), in the tier first (manifest, then objects), then locally.
    pub async fn delete_records(&self, offset: i64) -> Result<i64, PartitionError> {
        let hwm = self.high_watermark();
        let target = if offset == -1 { hwm } else { offset };
        if let (Some(remote), true) = (&self.remote, self.tier_start.load(Ordering::Acquire) >= 0) {
            if target >= 0 && target <= hwm && target > self.log_start_offset() {
                remote
                    .delete_before(target, self.leader_epoch())
                    .await
                    .map_err(|e| self.tier_err(e))?;
                self.refresh_tier().await?;
            }
        }
        self.delete_local_records(offset)?;
        self.after_start_moved();
        Ok(self.log_start_offset())
    }
}

/// The file in a partition's directory that mirrors its tier manifest.
pub const TIER_MANIFEST_COPY: &str = "tier-manifest.json";

/// The tier's (readable start, last offset) by a manifest, -1 for none. The
/// tier counts for reads only while it holds offsets at or after its start
/// (DeleteRecords may move the start past its end).
pub(super) fn tier_offsets(m: &tiering::Manifest) -> (i64, i64) {
    let last = m.last_offset().unwrap_or(-1);
    let start = if !m.segments.is_empty() && m.log_start_offset <= last {
        m.log_start_offset
    } else {
        -1
    };
    (start, last)
}
