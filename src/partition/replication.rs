//! A partition's replica roles and the log operations of replication:
//! taking the lead or following at a leader epoch, appending the leader's
//! batches as they are, cutting what diverged from the leader, and the
//! high watermark over the in-sync replicas.
//!
//! Durability: with more than one replica, the leader's term in the high
//! watermark is its durable offset (what its sync rounds made durable),
//! not its log end, and a follower reports an offset to its leader only
//! once everything below it is durable. So a record below the high
//! watermark is fsynced on every in-sync replica, and survives any number
//! of them losing power at once. With one replica the high watermark is
//! the log end, as on a single broker.
//!
//! Role changes take the state lock, then the replica lock (the order
//! every caller keeps): an append sees one role and stamps its epoch, and
//! a follower's append never lands after the partition took the lead.
//! Each change wakes the waiters on the high watermark, so an `acks=all`
//! request parked on a deposed leader answers NOT_LEADER_OR_FOLLOWER.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::replica::{BrokerId, ReplicaError, Role};
use super::{
    identities, store_epochs, validate_batches, Partition, PartitionError, PartitionRead, ReadData,
    State,
};

impl Partition {
    /// The leader epoch this replica is at.
    pub fn leader_epoch(&self) -> i32 {
        self.replica().epoch()
    }

    /// Whether this replica leads its partition.
    pub fn is_leader(&self) -> bool {
        self.replica().is_leader()
    }

    /// Whether the partition has more than one replica.
    pub fn is_replicated(&self) -> bool {
        self.replicated.load(Ordering::Acquire)
    }

    /// The leader this replica follows, if it follows.
    pub fn followed_leader(&self) -> Option<BrokerId> {
        self.following().map(|(leader, _)| leader)
    }

    /// The leader this replica follows and at which epoch, if it follows.
    pub fn following(&self) -> Option<(BrokerId, i32)> {
        match self.replica().role() {
            Role::Follower { leader, epoch } => Some((*leader, *epoch)),
            Role::Leader { .. } => None,
        }
    }

    /// Refuses an answer from `leader` at `epoch` unless this replica still
    /// follows it at that epoch (callers hold the state lock, which role
    /// changes take first, so the role cannot change before they are done).
    fn check_following(&self, leader: BrokerId, epoch: i32) -> Result<(), PartitionError> {
        match self.replica().role() {
            Role::Follower {
                leader: l,
                epoch: e,
            } if *l == leader && *e == epoch => Ok(()),
            Role::Leader { .. } => Err(self.refuse(ReplicaError::NotFollower)),
            Role::Follower {
                leader: l,
                epoch: e,
            } => Err(self.refuse(ReplicaError::NotFollowing {
                from: leader,
                epoch,
                now: Some((*l, *e)),
            })),
        }
    }

    /// The in-sync replicas, when leading.
    pub fn isr(&self) -> Option<BTreeSet<BrokerId>> {
        self.replica().isr().cloned()
    }

    /// Subscribes to log end changes (a follower's fetch waiting at the
    /// leader's log end).
    pub fn watch_log_end(&self) -> tokio::sync::watch::Receiver<i64> {
        self.log_end.subscribe()
    }

    /// On the leader: the in-sync replicas as the controller committed
    /// them (this replica is added). The high watermark may move. Returns
    /// how many members left and how many joined.
    pub fn set_isr(&self, isr: BTreeSet<BrokerId>) -> (usize, usize) {
        let mut r = self.replica();
        let before = r.isr().cloned().unwrap_or_default();
        let moved = r.set_isr(isr);
        let after = r.isr().cloned().unwrap_or_default();
        drop(r);
        if let Some(hwm) = moved {
            self.high_watermark.send_replace(hwm);
        }
        (
            before.difference(&after).count(),
            after.difference(&before).count(),
        )
    }

    /// On a follower: how far its log end was behind the leader's high
    /// watermark after its last fetch (0 when caught up or leading).
    pub fn follower_lag(&self) -> i64 {
        self.follower_lag.load(Ordering::Relaxed)
    }

    /// On the leader: the ISR it should ask the controller for at
    /// `now_ms` (followers that fell behind for `replica.lag.time.max.ms`
    /// leave it, caught-up ones join it), if it differs.
    pub fn isr_change(&self, now_ms: i64) -> Option<BTreeSet<BrokerId>> {
        self.replica().isr_change(now_ms).map(|c| c.isr)
    }

    fn refuse(&self, source: ReplicaError) -> PartitionError {
        PartitionError::Replica {
            partition: self.name(),
            source,
        }
    }

    /// Takes the lead at `epoch` with the in-sync replicas `isr` (this
    /// replica is added); `replicated` when the partition has other
    /// replicas. The epoch starts at the log end in the epoch cache. An
    /// older epoch, or the one it already leads at, changes nothing
    /// (returns false). The high watermark stays where it was until the
    /// followers' fetches move it.
    pub fn become_leader(
        &self,
        epoch: i32,
        isr: BTreeSet<BrokerId>,
        replicated: bool,
        now_ms: i64,
    ) -> Result<bool, PartitionError> {
        let mut st = self.lock();
        let State { log, epochs, .. } = &mut *st;
        let Some(log) = log.as_ref() else {
            return Err(self.closed());
        };
        let leo = log.log_end_offset();
        let mut r = self.replica();
        if epoch < r.epoch() {
            return Ok(false);
        }
        let durable = self.durable.borrow().offset.min(leo);
        // The followers first, at unknown positions, then the log end: a
        // log end taken while the replica still led alone would raise the
        // high watermark over records no follower has.
        if epoch == r.epoch() && r.is_leader() {
            // Already leading at this epoch (a partition opens leading
            // alone): only whether it is replicated may be news.
            if self.replicated.swap(replicated, Ordering::AcqRel) != replicated {
                r.become_leader(epoch, isr, now_ms);
                r.on_log_end(if replicated { durable } else { leo });
                let hwm = r.high_watermark();
                drop(r);
                self.high_watermark.send_replace(hwm);
            }
            return Ok(false);
        }
        if epochs.assign(epoch, leo) {
            store_epochs(&self.dir, epochs);
        }
        self.replicated.store(replicated, Ordering::Release);
        r.become_leader(epoch, isr, now_ms);
        r.on_log_end(if replicated { durable } else { leo });
        let hwm = r.high_watermark();
        drop(r);
        self.high_watermark.send_replace(hwm);
        Ok(true)
    }

    /// For a replicated partition just opened: its log may hold records
    /// that were never committed, so its high watermark starts at the
    /// `checkpointed` one (see [`super::hw_checkpoint`]), else at the log
    /// start, and moves with the leader's word or the followers' fetches.
    /// Offsets between it and the log end answer no data, not out of
    /// range.
    pub fn forget_high_watermark(&self, checkpointed: Option<i64>) {
        let start = self.local_log_start_offset();
        let known = checkpointed.map_or(start, |c| c.max(start));
        let mut r = self.replica();
        r.forget_high_watermark(known);
        let hwm = r.high_watermark();
        drop(r);
        self.high_watermark.send_replace(hwm);
    }

    /// Follows `leader` at `epoch`. An older epoch, or the leader and
    /// epoch it already follows, changes nothing (returns false). Waiters
    /// on the high watermark wake and find the partition no longer leads.
    pub fn become_follower(&self, epoch: i32, leader: BrokerId) -> Result<bool, PartitionError> {
        let st = self.lock();
        let Some(log) = st.log.as_ref() else {
            return Err(self.closed());
        };
        let leo = log.log_end_offset();
        let mut r = self.replica();
        let same = matches!(r.role(), Role::Follower { epoch: e, leader: l } if *e == epoch && *l == leader);
        if epoch < r.epoch() || same {
            return Ok(false);
        }
        self.replicated.store(true, Ordering::Release);
        // Role first: a leader's log end would move its high watermark.
        r.become_follower(epoch, leader);
        r.on_log_end(leo);
        drop(r);
        self.high_watermark.send_modify(|_| {});
        Ok(true)
    }

    /// Appends batches fetched from the leader as they are (offsets, leader
    /// epochs and timestamps kept; sizes and CRC-32C checked): the first
    /// must start at the log end. The epoch cache and producer state follow
    /// the batches' headers, so a follower that takes the lead knows the
    /// epochs and recognises retried batches. Refused on a leader. Returns
    /// the new log end; nothing is durable yet. Refused unless the replica
    /// still follows `leader` at `epoch`, those the fetch was sent to.
    pub fn append_replicated(
        &self,
        records: &Bytes,
        (leader, epoch): (BrokerId, i32),
        now_ms: i64,
    ) -> Result<i64, PartitionError> {
        let headers = validate_batches(records, usize::MAX)?;
        let mut st = self.lock();
        self.check_following(leader, epoch)?;
        let State {
            log,
            producers,
            epochs,
            ..
        } = &mut *st;
        let Some(log) = log.as_mut() else {
            return Err(self.closed());
        };
        let active_before = log.active_base_offset();
        log.append_replicated(records, &headers, now_ms)?;
        // Rolled before these batches: the table is the state at the new
        // segment's base.
        self.snapshot_if_rolled(log, producers, active_before);
        let mut epochs_changed = false;
        for (h, id) in headers.iter().zip(identities(records, &headers)) {
            epochs_changed |= epochs.assign(h.partition_leader_epoch, h.base_offset);
            producers.observe(&id, h.base_offset, h.last_offset());
        }
        if epochs_changed {
            store_epochs(&self.dir, epochs);
        }
        let leo = log.log_end_offset();
        self.publish_log_end(leo);
        Ok(leo)
    }

    /// A follower learned its leader's high watermark: it exposes up to
    /// that, within its own log.
    pub fn on_leader_high_watermark(&self, leader_hwm: i64) {
        self.follower_lag.store(
            (leader_hwm - self.log_end_offset()).max(0),
            Ordering::Relaxed,
        );
        if let Some(hwm) = self.replica().on_leader_high_watermark(leader_hwm) {
            self.high_watermark.send_replace(hwm);
        }
    }

    /// The latest leader epoch in this replica's log (what a follower asks
    /// its leader about with OffsetForLeaderEpoch), if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.lock().epochs.latest_epoch()
    }

    /// Where a follower's log must end to agree with its leader, given the
    /// leader's answer to OffsetForLeaderEpoch for this replica's latest
    /// epoch: the largest epoch the leader has at or below it and where
    /// that epoch ended on the leader. The cut is the smaller of that end
    /// and this replica's own end of the same epoch. An answer without an
    /// epoch (the leader has none that old) cuts to the high watermark.
    /// When the leader answered an older epoch than asked, the cut drops
    /// every newer epoch here too: the caller asks again about the latest
    /// epoch left until the answer names it (each round asks about an
    /// older epoch, so this ends).
    pub fn divergence(&self, leader_epoch: i32, leader_end: i64) -> i64 {
        let st = self.lock();
        let leo = st.log.as_ref().map_or(0, |l| l.log_end_offset());
        if leader_epoch < 0 || leader_end < 0 {
            return self.high_watermark().min(leo);
        }
        let (_, mine) = st.epochs.end_offset_for(leader_epoch, leo);
        let mine = if mine < 0 { leo } else { mine };
        leader_end.min(mine).min(leo)
    }

    /// Drops every batch at or above `offset` (a follower cutting what
    /// diverged from its leader), with the epochs that started there; the
    /// producer state is rebuilt from the newest snapshot below the cut
    /// and the batches after it. The durable offset and the high watermark
    /// come down to the new log end at most.
    pub fn truncate_to(&self, offset: i64) -> Result<(), PartitionError> {
        let mut st = self.lock();
        self.truncate_locked(&mut st, offset)
    }

    /// [`Self::truncate_to`] by a follower on its leader's word: refused
    /// unless the replica still follows `leader` at `epoch`, those the
    /// question was asked of (a leader's log is never cut this way).
    pub fn truncate_diverged(
        &self,
        offset: i64,
        (leader, epoch): (BrokerId, i32),
    ) -> Result<(), PartitionError> {
        let mut st = self.lock();
        self.check_following(leader, epoch)?;
        self.truncate_locked(&mut st, offset)
    }

    fn truncate_locked(&self, st: &mut State, offset: i64) -> Result<(), PartitionError> {
        let State {
            log,
            producers,
            epochs,
            ..
        } = &mut *st;
        let Some(log) = log.as_mut() else {
            return Err(self.closed());
        };
        if offset >= log.log_end_offset() {
            // No record goes, but an epoch that starts at the cut has none
            // here: it goes, so the next question is about an older one.
            if epochs.truncate_from_end(offset) {
                store_epochs(&self.dir, epochs);
            }
            return Ok(());
        }
        log.truncate_to(offset)?;
        let leo = log.log_end_offset();
        if epochs.truncate_from_end(leo) {
            store_epochs(&self.dir, epochs);
        }
        let (table, rebuilt, _) = super::rebuild_state(&self.dir, log)?;
        *producers = table;
        self.forget_tier_aborted();
        *epochs = rebuilt;
        self.sync_end.fetch_min(leo, Ordering::AcqRel);
        self.durable.send_modify(|d| d.offset = d.offset.min(leo));
        self.log_end.send_replace(leo);
        let mut r = self.replica();
        r.on_truncate(leo);
        let hwm = r.high_watermark();
        drop(r);
        self.high_watermark.send_replace(hwm);
        Ok(())
    }

    /// A follower whose log ends below its leader's local log start
    /// `leader_start` (the leader no longer holds what it needs): when the
    /// tier holds what it lacks, it restarts after the tier (with the
    /// tier's producer state and epochs), else it starts empty at
    /// `leader_start`. Either way it then fetches what the leader holds.
    /// Refused on a leader; nothing changes when the log already reaches
    /// `leader_start`.
    pub async fn restart_below_leader(&self, leader_start: i64) -> Result<(), PartitionError> {
        if self.is_leader() {
            return Err(self.refuse(ReplicaError::NotFollower));
        }
        if self.log_end_offset() >= leader_start {
            return Ok(());
        }
        self.refresh_tier().await?;
        let mut st = self.lock();
        let leo = st.log.as_ref().map_or(0, |l| l.log_end_offset());
        if leo >= leader_start {
            return Ok(());
        }
        if self.replica().is_leader() {
            return Err(self.refuse(ReplicaError::NotFollower));
        }
        tracing::info!(partition = %self.name(), local_end = leo, leader_start, "the leader no longer holds what this follower lacks; its log restarts at the leader's log start");
        self.restart_log_at(
            &mut st,
            leader_start,
            Default::default(),
            Default::default(),
        )
    }

    /// On the leader: follower `follower` fetched from `fetch_offset` at
    /// `now_ms`, so everything below it is durable there. The high
    /// watermark may move, waking consumers and `acks=all` requests.
    pub fn on_follower_fetch(
        &self,
        follower: BrokerId,
        fetch_offset: i64,
        now_ms: i64,
    ) -> Result<(), PartitionError> {
        let fetch_offset = fetch_offset.min(self.log_end_offset());
        let moved = self
            .replica()
            .on_follower_fetch(follower, fetch_offset, now_ms)
            .map_err(|e| self.refuse(e))?;
        if let Some(hwm) = moved {
            self.high_watermark.send_replace(hwm);
        }
        Ok(())
    }

    /// On the leader: whole batches from `offset` up to the log end (not
    /// the high watermark) for a follower, in memory.
    pub fn read_for_follower(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<PartitionRead, PartitionError> {
        self.with_log(|log, producers, _| {
            let leo = log.log_end_offset();
            let start = log.log_start_offset();
            if offset < start || offset > leo {
                return Err(PartitionError::OffsetOutOfRange {
                    offset,
                    log_start: start,
                    high_watermark: self.high_watermark(),
                });
            }
            let data = if offset == leo || max_bytes == 0 {
                Bytes::new()
            } else {
                log.read(offset, max_bytes, leo)?.data
            };
            let hwm = self.high_watermark();
            Ok(PartitionRead {
                data: ReadData::Bytes(data),
                high_watermark: hwm,
                last_stable_offset: producers.last_stable_offset(hwm),
                aborted: Vec::new(),
                log_start_offset: self.log_start_in(log),
                log_end_offset: leo,
            })
        })
    }

    /// What a finished sync round made durable: a replicated leader's term
    /// in the high watermark.
    pub(super) fn on_durable(&self, offset: i64) {
        if !self.is_replicated() {
            return;
        }
        let mut r = self.replica();
        if !r.is_leader() {
            return;
        }
        if let Some(hwm) = r.on_log_end(offset) {
            drop(r);
            self.high_watermark.send_replace(hwm);
        }
    }

    /// On a replicated leader, joins the next sync round when the log end
    /// is past what rounds already cover: the high watermark moves only
    /// with the leader's durable offset, `acks=1` appends included.
    pub fn sync_soon(self: &Arc<Self>) {
        if self.is_replicated() && self.sync_end.load(Ordering::Acquire) < self.log_end_offset() {
            self.durability.request(self);
        }
    }

    /// Waits until the record before `offset` is committed: below the high
    /// watermark of a replicated partition (on every in-sync replica,
    /// durably), or durable on a partition with one replica. Fails with
    /// NOT_LEADER_OR_FOLLOWER's error when the partition stops leading
    /// meanwhile.
    pub async fn wait_committed(self: &Arc<Self>, offset: i64) -> Result<(), PartitionError> {
        if !self.is_replicated() {
            return self.wait_durable(offset).await;
        }
        let mut rx = self.high_watermark.subscribe();
        loop {
            if *rx.borrow_and_update() >= offset {
                return Ok(());
            }
            if let Err(e) = self.replica().check_produce() {
                return Err(self.refuse(e));
            }
            self.sync_soon();
            if rx.changed().await.is_err() {
                return Err(self.closed());
            }
        }
    }

    pub(super) fn closed(&self) -> PartitionError {
        PartitionError::Closed {
            partition: self.name(),
        }
    }
}

#[cfg(test)]
mod tests;
