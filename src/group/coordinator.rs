//! The coordinator: every group of this node, parked requests, timers, and
//! the offsets written to `__consumer_offsets` (see the parent module for
//! the consistency and crash-safety rules). The offset operations are in
//! `offsets`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

use super::config::GroupConfig;
use super::error::GroupError;
use super::log::{Entry, GroupLog};
use super::records::partition_for;
use super::records::OffsetValue;
use super::records::{
    decode_group_value, decode_key, decode_offset_value, encode_group_value, encode_key, KeyValue,
    RecordKey,
};
use super::state::{
    Effects, Group, GroupDescription, GroupState, JoinRequest, JoinResult, LeavingMember, Now,
    Reply, SyncRequest, SyncResult, Token,
};

enum Waiter {
    Join(oneshot::Sender<Result<JoinResult, GroupError>>),
    Sync(oneshot::Sender<Result<SyncResult, GroupError>>),
}

struct Inner {
    group: Group,
    waiters: HashMap<Token, Waiter>,
}

/// One group and its locks.
struct Slot {
    inner: Mutex<Inner>,
    /// Held from the append of a group's offset records to their fsync and
    /// the cache update, so the cache follows the log order.
    writes: tokio::sync::Mutex<()>,
}

impl Slot {
    fn new(group: Group) -> Arc<Slot> {
        Arc::new(Slot {
            inner: Mutex::new(Inner {
                group,
                waiters: HashMap::new(),
            }),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Group operations leave the state consistent between statements;
        // keep serving after a panic elsewhere rather than poisoning it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A group as ListGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
}

/// Committed offsets of one topic, as OffsetFetch returns them.
pub type TopicOffsets = (String, Vec<(i32, Option<OffsetValue>)>);

/// How long a failed load of an offsets partition waits before it is
/// tried again.
const LOAD_RETRY: Duration = Duration::from_secs(1);

/// The offsets partitions this node leads.
#[derive(Debug, Default)]
struct Ownership {
    /// Partitions of the offsets topic; None while it does not exist
    /// (any node may then create it).
    count: Option<i32>,
    /// Led partitions by index.
    led: HashMap<i32, Led>,
    /// Partitions the metadata makes this node the leader of whose replica
    /// has not taken the role yet: their groups are about to load here.
    arriving: std::collections::HashSet<i32>,
}

/// An offsets partition this node leads, at a leader epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Led {
    epoch: i32,
    /// Its groups are in memory.
    loaded: bool,
}

impl Ownership {
    /// Whether this node serves `group_id` now: NOT_COORDINATOR when
    /// another node leads its partition, COORDINATOR_LOAD_IN_PROGRESS
    /// while the partition loads or is about to (a client that found this
    /// node the coordinator waits and retries rather than asking again).
    fn check(&self, group_id: &str) -> Result<(), GroupError> {
        let Some(count) = self.count else {
            return Ok(());
        };
        let p = partition_for(group_id, count);
        match self.led.get(&p) {
            None if self.arriving.contains(&p) => Err(GroupError::LoadInProgress),
            None => Err(GroupError::NotCoordinator),
            Some(l) if !l.loaded => Err(GroupError::LoadInProgress),
            Some(_) => Ok(()),
        }
    }

    fn has_pending(&self) -> bool {
        self.led.values().any(|l| !l.loaded)
    }
}

/// What [`Coordinator::load`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadStats {
    pub records: u64,
    pub groups: usize,
    pub offsets: usize,
    pub skipped: u64,
}

/// The wall clock, in milliseconds since the Unix epoch. The coordinator
/// reads it once, when it is built; its later times advance with tokio's
/// clock from there (see [`Coordinator::now`]).
pub type WallClock = fn() -> i64;

/// The group coordinator of this node.
pub struct Coordinator {
    config: GroupConfig,
    groups: Mutex<HashMap<String, Arc<Slot>>>,
    next_token: AtomicU64,
    /// Wakes the timer task when a deadline may have moved earlier.
    timer: Notify,
    loaded: AtomicBool,
    closed: AtomicBool,
    /// Serialises the creation of the offsets topic.
    topic_creation: tokio::sync::Mutex<()>,
    /// The offsets partitions this node leads, each loaded or not
    /// ([`Coordinator::set_ownership`]).
    ownership: std::sync::RwLock<Ownership>,
    /// One partition load at a time.
    loading: tokio::sync::Mutex<()>,
    /// Wall clock at a tokio instant: `now()` derives the wall clock from
    /// tokio's clock, so paused-time tests see both move together.
    epoch: (tokio::time::Instant, i64),
    /// Offsets of open transactions (TxnOffsetCommit), by offsets
    /// partition and producer id: applied at the COMMIT marker, dropped
    /// at the ABORT.
    txn_offsets: Mutex<HashMap<(i32, i64), Vec<PendingOffset>>>,
}

/// An offset a transaction committed, not yet decided.
#[derive(Debug, Clone)]
struct PendingOffset {
    group: String,
    topic: String,
    partition: i32,
    value: OffsetValue,
}

impl Coordinator {
    pub fn new(config: GroupConfig, wall_clock: WallClock) -> Coordinator {
        Coordinator {
            config,
            groups: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            timer: Notify::new(),
            loaded: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            topic_creation: tokio::sync::Mutex::new(()),
            ownership: std::sync::RwLock::new(Ownership::default()),
            loading: tokio::sync::Mutex::new(()),
            epoch: (tokio::time::Instant::now(), wall_clock()),
            txn_offsets: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// The current time, monotonic and wall clock.
    pub fn now(&self) -> Now {
        let at = tokio::time::Instant::now();
        let since = at.saturating_duration_since(self.epoch.0);
        Now {
            at: at.into_std(),
            wall_ms: self.epoch.1 + since.as_millis() as i64,
        }
    }

    /// Whether this node serves `group_id` now (FindCoordinator asks):
    /// COORDINATOR_LOAD_IN_PROGRESS while it loads the group's partition.
    pub fn serving(&self, group_id: &str) -> Result<(), GroupError> {
        self.check_open_for(group_id)
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    fn check_open(&self) -> Result<(), GroupError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(GroupError::NotCoordinator);
        }
        if !self.is_loaded() {
            return Err(GroupError::LoadInProgress);
        }
        Ok(())
    }

    /// [`Coordinator::check_open`], and this node coordinates `group_id`:
    /// it leads the group's partition of the offsets topic (once the topic
    /// exists: until then any node may create it).
    fn check_open_for(&self, group_id: &str) -> Result<(), GroupError> {
        self.check_open()?;
        self.check_owner(group_id)
    }

    fn check_owner(&self, group_id: &str) -> Result<(), GroupError> {
        self.ownership().check(group_id)
    }

    fn ownership(&self) -> std::sync::RwLockReadGuard<'_, Ownership> {
        self.ownership.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Which partitions of the offsets topic (of `count`) this node leads,
    /// each with its leader epoch: it coordinates the groups that map to
    /// them. `None` while the topic does not exist. A partition it no
    /// longer leads (or leads at another epoch) drops its groups from
    /// memory, their parked requests answered NOT_COORDINATOR; one it
    /// newly leads answers COORDINATOR_LOAD_IN_PROGRESS until
    /// [`Coordinator::load_pending`] has replayed it.
    /// The offsets partitions the metadata makes this node the leader of
    /// whose replicas have not taken the role yet (see
    /// [`Coordinator::set_ownership`] for those that have).
    pub fn set_arriving(&self, partitions: std::collections::HashSet<i32>) {
        let mut o = self.ownership.write().unwrap_or_else(|e| e.into_inner());
        o.arriving = partitions;
    }

    pub fn set_ownership(&self, ownership: Option<(i32, HashMap<i32, i32>)>) {
        let (dropped, pending) = {
            let mut o = self.ownership.write().unwrap_or_else(|e| e.into_inner());
            let (count, led) = ownership.unwrap_or_default();
            let old_count = o.count;
            o.count = (count > 0).then_some(count);
            let lost: Vec<i32> = o
                .led
                .iter()
                .filter(|(p, l)| led.get(p) != Some(&l.epoch) || old_count != o.count)
                .map(|(p, _)| *p)
                .collect();
            for p in &lost {
                o.led.remove(p);
            }
            let mut pending = false;
            for (p, epoch) in led {
                o.led.entry(p).or_insert_with(|| {
                    pending = true;
                    Led {
                        epoch,
                        loaded: false,
                    }
                });
            }
            // Taken out of the map under the ownership lock, so a load
            // of the partition's next term cannot be installed first.
            let dropped: Vec<(String, Arc<Slot>)> = match old_count {
                Some(old) if !lost.is_empty() => {
                    let mut map = self.map();
                    let ids: Vec<String> = map
                        .keys()
                        .filter(|g| lost.contains(&partition_for(g, old)))
                        .cloned()
                        .collect();
                    ids.into_iter()
                        .filter_map(|g| map.remove(&g).map(|s| (g, s)))
                        .collect()
                }
                _ => Vec::new(),
            };
            (dropped, pending)
        };
        for (group_id, slot) in dropped {
            let mut inner = slot.lock();
            for (_, w) in inner.waiters.drain() {
                match w {
                    Waiter::Join(tx) => drop(tx.send(Err(GroupError::NotCoordinator))),
                    Waiter::Sync(tx) => drop(tx.send(Err(GroupError::NotCoordinator))),
                }
            }
            tracing::info!(group = %group_id, "group moved to another coordinator");
        }
        if pending {
            self.timer.notify_one();
        }
    }

    /// Makes sure the offsets topic exists, one creation at a time, and
    /// that the partitions this node has just started to lead are loaded
    /// (FindCoordinator asks this before it names a coordinator).
    pub async fn prepare<L: GroupLog>(&self, log: &L) -> Result<(), GroupError> {
        {
            let _creating = self.topic_creation.lock().await;
            log.ensure_topic().await?;
        }
        if self.ownership().has_pending() {
            self.load_pending(log).await?;
        }
        Ok(())
    }

    /// [`Coordinator::prepare`], then whether this node coordinates
    /// `group_id`.
    async fn ensure_topic<L: GroupLog>(&self, log: &L, group_id: &str) -> Result<(), GroupError> {
        self.prepare(log).await?;
        self.check_owner(group_id)
    }

    /// Waits until `a` is durable, for at most offsets.commit.timeout.ms.
    async fn wait_durable<L: GroupLog>(
        &self,
        log: &L,
        a: super::log::Appended,
    ) -> Result<(), GroupError> {
        match tokio::time::timeout(self.config.offsets_commit_timeout, log.wait_durable(a)).await {
            Ok(r) => r,
            Err(_) => Err(GroupError::Timeout {
                partition: a.partition,
            }),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn slot(&self, group_id: &str, create: bool) -> Option<Arc<Slot>> {
        let mut map = self.map();
        if let Some(s) = map.get(group_id) {
            return Some(s.clone());
        }
        if !create {
            return None;
        }
        let s = Slot::new(Group::new(group_id, self.now()));
        map.insert(group_id.to_string(), s.clone());
        Some(s)
    }

    fn slots(&self) -> Vec<(String, Arc<Slot>)> {
        self.map()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Marks the group dead and forgets it (the caller holds its lock).
    fn remove(&self, group_id: &str, slot: &Arc<Slot>, inner: &mut Inner, now: Now) {
        inner.group.mark_dead(now);
        for (_, w) in inner.waiters.drain() {
            let err = GroupError::CoordinatorNotAvailable {
                group: group_id.to_string(),
            };
            match w {
                Waiter::Join(tx) => drop(tx.send(Err(err))),
                Waiter::Sync(tx) => drop(tx.send(Err(err))),
            }
        }
        let mut map = self.map();
        if map.get(group_id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            map.remove(group_id);
        }
    }

    fn drop_if_unused(&self, group_id: &str, slot: &Arc<Slot>, inner: &mut Inner, now: Now) {
        if inner.group.is_unused() && inner.waiters.is_empty() {
            self.remove(group_id, slot, inner, now);
        }
    }

    fn token(&self) -> Token {
        self.next_token.fetch_add(1, Ordering::Relaxed)
    }

    /// Persists the snapshot if asked and delivers the replies.
    fn apply<L: GroupLog>(&self, log: &L, inner: &mut Inner, fx: Effects, now: Now) {
        if fx.store {
            store_group(log, &inner.group, now);
        }
        for reply in fx.replies {
            match reply {
                Reply::Join(t, r) => {
                    if let Some(Waiter::Join(tx)) = inner.waiters.remove(&t) {
                        let _ = tx.send(r);
                    }
                }
                Reply::Sync(t, r) => {
                    if let Some(Waiter::Sync(tx)) = inner.waiters.remove(&t) {
                        let _ = tx.send(r);
                    }
                }
            }
        }
    }

    // ----- Membership ----------------------------------------------------

    /// JoinGroup: parks until the group answers (rebalance done, or an error).
    pub async fn join<L: GroupLog>(
        &self,
        log: &L,
        group_id: &str,
        req: JoinRequest,
    ) -> Result<JoinResult, GroupError> {
        self.check_open_for(group_id)?;
        let (min, max) = (
            self.config.min_session_timeout_ms,
            self.config.max_session_timeout_ms,
        );
        if req.session_timeout_ms < min || req.session_timeout_ms > max {
            return Err(GroupError::InvalidSessionTimeout {
                got: req.session_timeout_ms,
                min,
                max,
            });
        }
        self.ensure_topic(log, group_id).await?;
        let Some(slot) = self.slot(group_id, req.member_id.is_empty()) else {
            return Err(GroupError::unknown_member(group_id, &req.member_id));
        };
        let (tx, rx) = oneshot::channel();
        let token = self.token();
        {
            let mut inner = slot.lock();
            inner.waiters.insert(token, Waiter::Join(tx));
            let now = self.now();
            let before = (inner.group.state(), inner.group.generation());
            let fx = inner.group.join(now, req, token, &self.config);
            log_transition(&inner.group, before);
            self.apply(log, &mut inner, fx, now);
            self.drop_if_unused(group_id, &slot, &mut inner, now);
        }
        self.timer.notify_one();
        rx.await.unwrap_or(Err(GroupError::NotCoordinator))
    }

    /// SyncGroup: the leader hands out the assignment; the others wait for it.
    pub async fn sync<L: GroupLog>(
        &self,
        log: &L,
        group_id: &str,
        req: SyncRequest,
    ) -> Result<SyncResult, GroupError> {
        self.check_open_for(group_id)?;
        self.ensure_topic(log, group_id).await?;
        let Some(slot) = self.slot(group_id, false) else {
            return Err(GroupError::unknown_member(group_id, &req.member_id));
        };
        let (tx, rx) = oneshot::channel();
        let token = self.token();
        {
            let mut inner = slot.lock();
            inner.waiters.insert(token, Waiter::Sync(tx));
            let now = self.now();
            let before = (inner.group.state(), inner.group.generation());
            let fx = inner.group.sync(now, req, token);
            log_transition(&inner.group, before);
            self.apply(log, &mut inner, fx, now);
        }
        self.timer.notify_one();
        rx.await.unwrap_or(Err(GroupError::NotCoordinator))
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        self.check_open_for(group_id)?;
        let Some(slot) = self.slot(group_id, false) else {
            return Err(GroupError::unknown_member(group_id, member_id));
        };
        let mut inner = slot.lock();
        let now = self.now();
        inner
            .group
            .heartbeat(now, member_id, instance_id, generation)
    }

    /// LeaveGroup: one result per member, or a group-level error.
    pub fn leave<L: GroupLog>(
        &self,
        log: &L,
        group_id: &str,
        leaving: &[LeavingMember],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        self.check_open_for(group_id)?;
        let Some(slot) = self.slot(group_id, false) else {
            return Ok(leaving
                .iter()
                .map(|l| Err(GroupError::unknown_member(group_id, &l.member_id)))
                .collect());
        };
        let result = {
            let mut inner = slot.lock();
            let now = self.now();
            let before = (inner.group.state(), inner.group.generation());
            let (result, fx) = inner.group.leave(now, leaving, &self.config);
            log_transition(&inner.group, before);
            self.apply(log, &mut inner, fx, now);
            result
        };
        self.timer.notify_one();
        result
    }

    // ----- DeleteGroups --------------------------------------------------

    /// DeleteGroups for one group: only an empty group can go; its offsets
    /// and snapshot are tombstoned.
    pub async fn delete_group<L: GroupLog>(
        &self,
        log: &L,
        group_id: &str,
    ) -> Result<(), GroupError> {
        self.check_open_for(group_id)?;
        let not_found = || GroupError::GroupIdNotFound {
            group: group_id.to_string(),
        };
        let slot = self.slot(group_id, false).ok_or_else(not_found)?;
        self.ensure_topic(log, group_id).await?;
        let _writes = slot.writes.lock().await;
        let appended = {
            let mut inner = slot.lock();
            match inner.group.state() {
                GroupState::Dead => return Err(not_found()),
                GroupState::Empty => {}
                _ => {
                    return Err(GroupError::NonEmptyGroup {
                        group: group_id.to_string(),
                    })
                }
            }
            let now = self.now();
            let appended = log.append(group_id, &tombstones(&inner.group), now.wall_ms)?;
            self.remove(group_id, &slot, &mut inner, now);
            appended
        };
        self.wait_durable(log, appended).await
    }

    // ----- Describe and list ---------------------------------------------

    pub fn describe(&self, group_id: &str) -> Result<Option<GroupDescription>, GroupError> {
        self.check_open_for(group_id)?;
        Ok(self.slot(group_id, false).and_then(|s| {
            let inner = s.lock();
            (inner.group.state() != GroupState::Dead).then(|| inner.group.describe())
        }))
    }

    pub fn list(&self) -> Result<Vec<GroupListing>, GroupError> {
        self.check_open()?;
        let mut out: Vec<GroupListing> = self
            .slots()
            .into_iter()
            // Only groups this node serves (a request that raced a move
            // of its partition may have left one behind).
            .filter(|(id, _)| self.check_owner(id).is_ok())
            .filter_map(|(id, s)| {
                let inner = s.lock();
                let g = &inner.group;
                (g.state() != GroupState::Dead).then(|| GroupListing {
                    group_id: id,
                    protocol_type: g.protocol_type().unwrap_or_default().to_string(),
                    state: g.state(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(out)
    }

    // ----- Timers, load, shutdown ----------------------------------------

    /// Fires the timers that are due; returns the next deadline.
    pub fn tick_all<L: GroupLog>(&self, log: &L) -> Option<std::time::Instant> {
        let now = self.now();
        let mut next: Option<std::time::Instant> = None;
        for (group_id, slot) in self.slots() {
            let mut inner = slot.lock();
            if inner.group.next_deadline().is_some_and(|d| d <= now.at) {
                let before = (inner.group.state(), inner.group.generation());
                let fx = inner.group.tick(now, &self.config);
                log_transition(&inner.group, before);
                self.apply(log, &mut inner, fx, now);
                self.drop_if_unused(&group_id, &slot, &mut inner, now);
            }
            if let Some(d) = inner.group.next_deadline() {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        }
        next
    }

    /// Replays the offsets partitions this node leads into memory (see
    /// [`Coordinator::load_pending`]); the coordinator serves requests
    /// only afterwards.
    pub async fn load<L: GroupLog>(&self, log: &L) -> Result<LoadStats, GroupError> {
        let stats = self.load_pending(log).await?;
        self.loaded.store(true, Ordering::Release);
        self.timer.notify_one();
        Ok(stats)
    }

    /// Replays every offsets partition this node leads and has not loaded
    /// yet, one at a time: the groups of each are served once it is in
    /// memory. A partition whose read fails stays pending (the timers
    /// retry); the first failure is returned after the others loaded.
    pub async fn load_pending<L: GroupLog>(&self, log: &L) -> Result<LoadStats, GroupError> {
        let _one = self.loading.lock().await;
        let mut total = LoadStats::default();
        let mut first_error = None;
        let pending: Vec<(i32, i32)> = self
            .ownership()
            .led
            .iter()
            .filter(|(_, l)| !l.loaded)
            .map(|(p, l)| (*p, l.epoch))
            .collect();
        for (partition, epoch) in pending {
            let started = std::time::Instant::now();
            let (groups, open_txns, stats) = match self.replay_partition(log, partition).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(partition, error = %e, "cannot load consumer groups of an offsets partition");
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            let mut o = self.ownership.write().unwrap_or_else(|e| e.into_inner());
            let Some(led) = o
                .led
                .get_mut(&partition)
                .filter(|l| l.epoch == epoch && !l.loaded)
            else {
                // Lost (or moved to a newer term) while it loaded.
                continue;
            };
            led.loaded = true;
            let mut map = self.map();
            for (id, g) in groups {
                map.insert(id, Slot::new(g));
            }
            drop(map);
            let mut txn = self.txn_offsets();
            txn.retain(|(p, _), _| *p != partition);
            for (producer_id, offsets) in open_txns {
                txn.insert((partition, producer_id), offsets);
            }
            drop(txn);
            drop(o);
            let elapsed_ms = started.elapsed().as_millis() as u64;
            if stats.records > 0 {
                tracing::info!(
                    partition,
                    leader_epoch = epoch,
                    groups = stats.groups,
                    offsets = stats.offsets,
                    records = stats.records,
                    elapsed_ms,
                    "loaded consumer groups of an offsets partition"
                );
            } else {
                tracing::debug!(
                    partition,
                    leader_epoch = epoch,
                    "an empty offsets partition is ours"
                );
            }
            total.records += stats.records;
            total.groups += stats.groups;
            total.offsets += stats.offsets;
            total.skipped += stats.skipped;
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }

    /// The groups recorded in one offsets partition, and the offsets of
    /// transactions still open there (by producer id). A transaction's
    /// records count once its COMMIT marker follows them.
    async fn replay_partition<L: GroupLog>(
        &self,
        log: &L,
        partition: i32,
    ) -> Result<
        (
            HashMap<String, Group>,
            Vec<(i64, Vec<PendingOffset>)>,
            LoadStats,
        ),
        GroupError,
    > {
        let now = self.now();
        let mut groups: HashMap<String, Group> = HashMap::new();
        let mut open: HashMap<i64, Vec<KeyValue>> = HashMap::new();
        let mut stats = LoadStats::default();
        let mut offset = 0;
        let apply = |groups: &mut HashMap<String, Group>,
                     stats: &mut LoadStats,
                     (key, value): KeyValue| {
            stats.records += 1;
            if let Err(e) = replay(groups, &key, value.as_ref(), now) {
                stats.skipped += 1;
                tracing::warn!(partition, error = %e, "skipping an unreadable __consumer_offsets record");
            }
        };
        while let Some((entries, next)) = log.read(partition, offset)? {
            for entry in entries {
                match entry {
                    Entry::Record(r) => apply(&mut groups, &mut stats, r),
                    Entry::Txn {
                        producer_id,
                        record,
                    } => open.entry(producer_id).or_default().push(record),
                    Entry::Marker {
                        producer_id,
                        commit,
                    } => {
                        for r in open.remove(&producer_id).unwrap_or_default() {
                            if commit {
                                apply(&mut groups, &mut stats, r);
                            }
                        }
                    }
                }
            }
            offset = next;
            tokio::task::yield_now().await;
        }
        groups.retain(|_, g| !(g.is_removable() && g.generation() == 0));
        stats.groups = groups.len();
        stats.offsets = groups.values().map(|g| g.offsets().len()).sum();
        let open_txns = open
            .into_iter()
            .map(|(producer_id, records)| {
                let offsets = records
                    .iter()
                    .filter_map(|(k, v)| pending_offset(k, v.as_ref()))
                    .collect();
                (producer_id, offsets)
            })
            .collect();
        Ok((groups, open_txns, stats))
    }

    fn txn_offsets(&self) -> std::sync::MutexGuard<'_, HashMap<(i32, i64), Vec<PendingOffset>>> {
        self.txn_offsets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A transaction marker reached offsets partition `partition`: the
    /// producer's transactional offsets there are committed or dropped.
    pub fn complete_txn_offsets(&self, partition: i32, producer_id: i64, commit: bool) {
        let Some(offsets) = self.txn_offsets().remove(&(partition, producer_id)) else {
            return;
        };
        if !commit {
            return;
        }
        for o in offsets {
            if let Some(slot) = self.slot(&o.group, true) {
                let mut inner = slot.lock();
                if inner.group.state() != GroupState::Dead {
                    inner.group.commit_offset(&o.topic, o.partition, o.value);
                }
            }
        }
    }

    /// Whether a transaction holds an undecided offset of the group's
    /// `topic`/`partition` (OffsetFetch with require_stable answers
    /// UNSTABLE_OFFSET_COMMIT then).
    pub fn has_pending_txn_offset(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.txn_offsets()
            .values()
            .flatten()
            .any(|o| o.group == group && o.topic == topic && o.partition == partition)
    }

    /// Answers every parked request with NOT_COORDINATOR and refuses new ones.
    pub fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        for (_, slot) in self.slots() {
            let mut inner = slot.lock();
            for (_, w) in inner.waiters.drain() {
                match w {
                    Waiter::Join(tx) => drop(tx.send(Err(GroupError::NotCoordinator))),
                    Waiter::Sync(tx) => drop(tx.send(Err(GroupError::NotCoordinator))),
                }
            }
        }
        self.timer.notify_one();
    }

    /// Runs the group timers and the offset expiry until `shutdown`.
    pub async fn run_timers<L: GroupLog>(&self, log: &L, shutdown: CancellationToken) {
        let mut expiry = tokio::time::interval(self.config.offsets_retention_check_interval);
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        expiry.tick().await;
        let mut metadata = log.metadata_watch();
        // Topics deleted before the watch started.
        if self.is_loaded() {
            self.drop_deleted_topics(log).await;
        }
        loop {
            let metadata_changed = async {
                let alive = match metadata.as_mut() {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => false,
                };
                if !alive {
                    std::future::pending::<()>().await;
                }
            };
            // Offsets partitions this node started to lead; one that
            // cannot be read yet is tried again a second later.
            let mut retry = None;
            if self.is_loaded()
                && !self.closed.load(Ordering::Acquire)
                && self.ownership().has_pending()
                && self.load_pending(log).await.is_err()
            {
                retry = Some(std::time::Instant::now() + LOAD_RETRY);
            }
            let next = if self.is_loaded() {
                self.tick_all(log)
            } else {
                None
            };
            let next = match (next, retry) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sleep = match next {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)),
                None => tokio::time::sleep(Duration::from_secs(3600)),
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = sleep => {}
                _ = self.timer.notified() => {}
                _ = expiry.tick() => {
                    if self.is_loaded() && !self.closed.load(Ordering::Acquire) {
                        self.expire_offsets(log).await;
                    }
                }
                _ = metadata_changed => {
                    if self.is_loaded() && !self.closed.load(Ordering::Acquire) {
                        self.drop_deleted_topics(log).await;
                    }
                }
            }
        }
    }
}

/// Runs the timers of the coordinator `host` carries, with `host` as its
/// log, until `shutdown` (the broker is both).
pub async fn run_timers<H>(host: Arc<H>, shutdown: CancellationToken)
where
    H: GroupLog + AsRef<Coordinator>,
{
    let coordinator: &Coordinator = (*host).as_ref();
    coordinator.run_timers(&*host, shutdown).await;
}

/// Logs a group's state changes (rebalances) once, where they happen.
fn log_transition(group: &Group, (state, generation): (GroupState, i32)) {
    if group.state() == state && group.generation() == generation {
        return;
    }
    tracing::info!(
        group = %group.id(),
        from = state.as_str(),
        to = group.state().as_str(),
        generation = group.generation(),
        members = group.members().count(),
        "group state changed"
    );
}

fn store_group<L: GroupLog>(log: &L, group: &Group, now: Now) {
    let record = (
        encode_key(&RecordKey::Group {
            group: group.id().to_string(),
        }),
        Some(encode_group_value(&group.snapshot())),
    );
    if let Err(e) = log.append(group.id(), &[record], now.wall_ms) {
        tracing::warn!(group = %group.id(), error = %e, "cannot persist group metadata; members will rejoin after a restart");
    }
}

/// Tombstones for every offset of `group` and its snapshot.
fn tombstones(group: &Group) -> Vec<KeyValue> {
    let mut out: Vec<KeyValue> = group
        .offsets()
        .keys()
        .map(|(topic, partition)| {
            let key = RecordKey::Offset {
                group: group.id().to_string(),
                topic: topic.clone(),
                partition: *partition,
            };
            (encode_key(&key), None)
        })
        .collect();
    out.push((
        encode_key(&RecordKey::Group {
            group: group.id().to_string(),
        }),
        None,
    ));
    out
}

/// The offset a transactional record commits, if it is an offset record.
fn pending_offset(key: &Bytes, value: Option<&Bytes>) -> Option<PendingOffset> {
    match decode_key(key).ok()? {
        RecordKey::Offset {
            group,
            topic,
            partition,
        } => Some(PendingOffset {
            group,
            topic,
            partition,
            value: decode_offset_value(value?).ok()?,
        }),
        RecordKey::Group { .. } => None,
    }
}

/// Applies one record of `__consumer_offsets` to the groups being loaded.
fn replay(
    groups: &mut HashMap<String, Group>,
    key: &Bytes,
    value: Option<&Bytes>,
    now: Now,
) -> Result<(), super::error::RecordError> {
    match decode_key(key)? {
        RecordKey::Offset {
            group,
            topic,
            partition,
        } => match value {
            Some(v) => {
                let v = decode_offset_value(v)?;
                groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(&group, now))
                    .commit_offset(&topic, partition, v);
            }
            None => {
                if let Some(g) = groups.get_mut(&group) {
                    g.remove_offset(&topic, partition);
                }
            }
        },
        RecordKey::Group { group } => match value {
            Some(v) => {
                let v = decode_group_value(v)?;
                groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(&group, now))
                    .restore(v, now);
            }
            None => {
                groups.remove(&group);
            }
        },
    }
    Ok(())
}

mod offsets;
#[cfg(test)]
mod tests;
