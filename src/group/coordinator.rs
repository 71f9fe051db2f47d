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
use super::log::GroupLog;
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
    /// The offsets topic's partition count and the partitions this node
    /// leads ([`Coordinator::set_ownership`]).
    ownership: std::sync::RwLock<Option<(i32, std::collections::HashSet<i32>)>>,
    /// Wall clock at a tokio instant: `now()` derives the wall clock from
    /// tokio's clock, so paused-time tests see both move together.
    epoch: (tokio::time::Instant, i64),
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
            ownership: std::sync::RwLock::new(None),
            epoch: (tokio::time::Instant::now(), wall_clock()),
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
        let ownership = self.ownership.read().unwrap_or_else(|e| e.into_inner());
        match &*ownership {
            Some((count, led)) if !led.contains(&partition_for(group_id, *count)) => {
                Err(GroupError::NotCoordinator)
            }
            _ => Ok(()),
        }
    }

    /// Which partitions of the offsets topic (of `count`) this node leads:
    /// it coordinates the groups that map to them. `None` while the topic
    /// does not exist.
    pub fn set_ownership(&self, ownership: Option<(i32, std::collections::HashSet<i32>)>) {
        *self.ownership.write().unwrap_or_else(|e| e.into_inner()) = ownership;
    }

    /// Makes sure the offsets topic exists, one creation at a time, and
    /// that this node coordinates `group_id` once it does.
    async fn ensure_topic<L: GroupLog>(&self, log: &L, group_id: &str) -> Result<(), GroupError> {
        {
            let _creating = self.topic_creation.lock().await;
            log.ensure_topic().await?;
        }
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

    /// Replays `__consumer_offsets` into memory; the coordinator serves
    /// requests only afterwards.
    pub async fn load<L: GroupLog>(&self, log: &L) -> Result<LoadStats, GroupError> {
        let now = self.now();
        let mut groups: HashMap<String, Group> = HashMap::new();
        let mut stats = LoadStats::default();
        for partition in 0..log.partitions() {
            let mut offset = 0;
            while let Some((records, next)) = log.read(partition, offset)? {
                for (key, value) in records {
                    stats.records += 1;
                    if let Err(e) = replay(&mut groups, &key, value.as_ref(), now) {
                        stats.skipped += 1;
                        tracing::warn!(partition, error = %e, "skipping an unreadable __consumer_offsets record");
                    }
                }
                offset = next;
                tokio::task::yield_now().await;
            }
        }
        groups.retain(|_, g| !(g.is_removable() && g.generation() == 0));
        stats.groups = groups.len();
        stats.offsets = groups.values().map(|g| g.offsets().len()).sum();
        {
            let mut map = self.map();
            for (id, g) in groups {
                map.insert(id, Slot::new(g));
            }
        }
        self.loaded.store(true, Ordering::Release);
        self.timer.notify_one();
        Ok(stats)
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
            let next = if self.is_loaded() {
                self.tick_all(log)
            } else {
                None
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
