//! Followers copying their leaders' logs, and leaders keeping their ISR.
//!
//! One fetcher task per leader this broker follows, carrying every
//! partition it follows from that leader. A partition joins it in
//! "check" state: the fetcher asks the leader OffsetForLeaderEpoch about
//! its latest epoch and cuts what diverged ([`Partition::divergence`]),
//! asking again while the answer names an older epoch. Then it fetches:
//! Fetch with this broker's replica id, each partition at its log end
//! (which is durable: the fetcher waits for its sync round after every
//! append before it asks again, so the offset a follower reports is on
//! its disk), appends what comes as it is ([`Partition::append_replicated`])
//! and takes the leader's high watermark.
//!
//! Failures: a leader that does not answer is dialled again after a pause,
//! with the partitions kept; an answer that says the partition moved (not
//! the leader, a stale or unknown epoch) waits for the metadata to say
//! where, and reconciliation moves the partition to another fetcher or
//! makes it lead; batches that do not continue the log send the partition
//! back to the check. A fetch offset the leader answers out of range may
//! be below the leader's log start (it deleted, by retention or after
//! upload, what this follower still lacked): the fetcher asks the leader
//! for its local log start and the follower restarts there, after the
//! tier when the tier holds what lies between.
//!
//! The leader's answer to a follower also carries the tier's last offset
//! (a tagged field of Strata's own, [`TIER_LAST_TAG`], that Kafka's
//! decoders skip): a follower whose cached manifest ends before it reads
//! the manifest again and drops the local segments it covers.
//!
//! [`run_isr_updates`] is the leader's half: once a second it asks the
//! controller (AlterPartition) to drop followers that fell behind for
//! `replica.lag.time.max.ms` from the ISR and to add caught-up ones.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, OffsetForLeaderEpochRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::broker::{now_ms, Broker};
use crate::client::{ConnOptions, Connection};
use crate::metadata::Command;
use crate::partition::Partition;

/// Longest a follower's fetch waits at the leader for data.
const FETCH_WAIT_MS: i32 = 500;
/// Bytes per partition per fetch (`replica.fetch.max.bytes`).
const FETCH_PARTITION_BYTES: i32 = 1 << 20;
/// Bytes per fetch response (`replica.fetch.response.max.bytes`).
const FETCH_RESPONSE_BYTES: i32 = 10 << 20;
/// Pause after a failure before trying again.
const BACKOFF: Duration = Duration::from_millis(300);
/// How often leaders review their ISR.
const ISR_REVIEW_EVERY: Duration = Duration::from_secs(1);

type Key = (Uuid, i32);

/// The tag of the tier's last offset (8 bytes, big-endian) in a partition
/// of a Fetch answer to a follower (flexible versions, 12 and later).
/// Far above the tags Kafka assigns, so none of them collides with it.
pub const TIER_LAST_TAG: i32 = 0x5354_0001;

/// The tier's last offset a Fetch answer's partition carries, if any.
pub fn tier_last_of(pd: &PartitionData) -> Option<i64> {
    let raw = pd.unknown_tagged_fields.get(&TIER_LAST_TAG)?;
    Some(i64::from_be_bytes(raw.as_ref().try_into().ok()?))
}

/// Puts the tier's last offset `offset` in a Fetch answer's partition.
pub fn set_tier_last(pd: &mut PartitionData, offset: i64) {
    pd.unknown_tagged_fields.insert(
        TIER_LAST_TAG,
        bytes::Bytes::copy_from_slice(&offset.to_be_bytes()),
    );
}

/// A partition a fetcher copies.
struct Followed {
    partition: Arc<Partition>,
    topic: String,
    /// Its log must be checked against the leader's before fetching.
    check: bool,
    /// The leader answered its fetch offset out of range: it may end
    /// below the leader's log start.
    behind: bool,
}

/// A followed partition as a fetch round sees it.
#[derive(Clone)]
struct Target {
    key: Key,
    topic: String,
    partition: Arc<Partition>,
    check: bool,
    behind: bool,
}

/// The fetcher of one leader.
struct Link {
    leader: i32,
    partitions: Mutex<HashMap<Key, Followed>>,
    changed: Notify,
    cancel: CancellationToken,
}

/// Every fetcher of this broker.
#[derive(Default)]
pub struct Fetchers {
    broker: OnceLock<Weak<Broker>>,
    links: Mutex<HashMap<i32, Arc<Link>>>,
    cancel: CancellationToken,
}

impl Fetchers {
    /// Hands the fetchers their broker (once, before any partition follows).
    pub fn attach(&self, broker: &Arc<Broker>) {
        let _ = self.broker.set(Arc::downgrade(broker));
    }

    fn links(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Arc<Link>>> {
        self.links.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes partition `p` of `topic` follow `leader`, starting with a
    /// check of its log; a partition already following it is left as it is.
    pub fn follow(&self, topic: &str, p: &Arc<Partition>, leader: i32) {
        let key = (p.topic_id, p.index);
        let Some(broker) = self.broker.get().and_then(Weak::upgrade) else {
            return;
        };
        let mut links = self.links();
        for (l, link) in links.iter() {
            if *l != leader {
                link.remove(key);
            }
        }
        let link = links.entry(leader).or_insert_with(|| {
            let link = Arc::new(Link {
                leader,
                partitions: Mutex::new(HashMap::new()),
                changed: Notify::new(),
                cancel: self.cancel.child_token(),
            });
            tokio::spawn(run(broker, Arc::clone(&link)));
            link
        });
        let mut parts = link.lock();
        let same = parts
            .get(&key)
            .is_some_and(|f| Arc::ptr_eq(&f.partition, p));
        if !same {
            parts.insert(
                key,
                Followed {
                    partition: Arc::clone(p),
                    topic: topic.to_string(),
                    check: true,
                    behind: false,
                },
            );
            drop(parts);
            link.changed.notify_one();
        }
    }

    /// Stops copying partition `p` (it leads, has no leader, or is gone).
    pub fn unfollow(&self, p: &Partition) {
        for link in self.links().values() {
            link.remove((p.topic_id, p.index));
        }
    }

    /// Stops every fetcher.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }
}

impl Link {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Followed>> {
        self.partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn remove(&self, key: Key) {
        if self.lock().remove(&key).is_some() {
            self.changed.notify_one();
        }
    }

    fn snapshot(&self) -> Vec<Target> {
        self.lock()
            .iter()
            .map(|(k, f)| Target {
                key: *k,
                topic: f.topic.clone(),
                partition: Arc::clone(&f.partition),
                check: f.check,
                behind: f.behind,
            })
            .collect()
    }

    fn checked(&self, key: Key) {
        if let Some(f) = self.lock().get_mut(&key) {
            f.check = false;
        }
    }

    fn recheck(&self, key: Key) {
        if let Some(f) = self.lock().get_mut(&key) {
            f.check = true;
        }
    }

    fn set_behind(&self, key: Key, behind: bool) {
        if let Some(f) = self.lock().get_mut(&key) {
            f.behind = behind;
        }
    }
}

async fn run(broker: Arc<Broker>, link: Arc<Link>) {
    let me = broker.node_id();
    let mut conn: Option<Connection> = None;
    loop {
        if link.cancel.is_cancelled() {
            return;
        }
        let followed = link.snapshot();
        if followed.is_empty() {
            tokio::select! {
                _ = link.cancel.cancelled() => return,
                _ = link.changed.notified() => continue,
            }
        }
        if conn.as_ref().is_none_or(Connection::is_closed) {
            let Some(addr) = broker
                .view()
                .brokers
                .get(&link.leader)
                .map(|b| format!("{}:{}", b.host, b.port))
            else {
                pause(&link.cancel).await;
                continue;
            };
            let opts = ConnOptions {
                client_id: format!("strata-replica-{me}"),
                connect_timeout: Duration::from_secs(3),
                request_timeout: Duration::from_secs(30),
                security: broker.inter_broker_security.clone(),
            };
            match Connection::open(&addr, &opts).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::debug!(leader = link.leader, error = %e, "cannot reach the leader to fetch from");
                    pause(&link.cancel).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_ref() else {
            continue;
        };
        let behind: Vec<Target> = followed.iter().filter(|f| f.behind).cloned().collect();
        if !behind.is_empty() {
            if let Err(e) = catch_up_with_start(c, me, &link, &behind).await {
                tracing::debug!(leader = link.leader, error = %e, "ListOffsets for the leader's log start failed");
                conn = None;
            }
            pause(&link.cancel).await;
            continue;
        }
        let to_check: Vec<Target> = followed.iter().filter(|f| f.check).cloned().collect();
        if !to_check.is_empty() {
            match check_logs(c, me, &link, &to_check).await {
                Ok(true) => {}
                // Refused: the leader or this broker is behind on metadata.
                Ok(false) => pause(&link.cancel).await,
                Err(e) => {
                    tracing::debug!(leader = link.leader, error = %e, "OffsetForLeaderEpoch failed");
                    conn = None;
                    pause(&link.cancel).await;
                }
            }
            continue;
        }
        match fetch_once(c, me, &link, &followed).await {
            Ok(true) => {}
            Ok(false) => pause(&link.cancel).await,
            Err(e) => {
                tracing::debug!(leader = link.leader, error = %e, "replica fetch failed");
                conn = None;
                pause(&link.cancel).await;
            }
        }
    }
}

/// Waits [`BACKOFF`], or until `cancel`.
async fn pause(cancel: &CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(BACKOFF) => {}
    }
}

/// Cuts each partition's log where it leaves the leader's: asks about its
/// latest epoch until the answer names that epoch (each round asks about
/// an older one). Returns false when the leader refused a partition (it
/// stays to check).
async fn check_logs(
    c: &Connection,
    me: i32,
    link: &Link,
    parts: &[Target],
) -> Result<bool, crate::client::ClientError> {
    let mut all_checked = true;
    'partition: for Target {
        key,
        topic,
        partition: p,
        ..
    } in parts
    {
        let mut rounds = 0;
        loop {
            rounds += 1;
            let Some(epoch) = p.latest_epoch() else {
                break;
            };
            let asked = (link.leader, p.leader_epoch());
            let req = OffsetForLeaderEpochRequest::default()
                .with_replica_id(BrokerId(me))
                .with_topics(vec![OffsetForLeaderTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partitions(vec![OffsetForLeaderPartition::default()
                        .with_partition(p.index)
                        .with_current_leader_epoch(asked.1)
                        .with_leader_epoch(epoch)])]);
            let resp = c.send(&req).await?;
            let Some(r) = resp
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .find(|r| r.partition == p.index)
            else {
                return Ok(false);
            };
            if r.error_code != 0 {
                // Moved, or the leader is behind on metadata: try later.
                tracing::debug!(partition = %p.name(), leader = link.leader, epoch = p.leader_epoch(), code = r.error_code, "leader refused OffsetForLeaderEpoch");
                all_checked = false;
                continue 'partition;
            }
            let cut = p.divergence(r.leader_epoch, r.end_offset);
            if cut < p.log_end_offset() {
                tracing::info!(partition = %p.name(), from = p.log_end_offset(), to = cut, leader_epoch = r.leader_epoch, "truncating what diverged from the leader");
            }
            if let Err(e) = p.truncate_diverged(cut, asked) {
                if e.is_role_change() {
                    tracing::debug!(partition = %p.name(), error = %e, "role changed during the check");
                } else {
                    tracing::warn!(partition = %p.name(), error = %e, "cannot truncate the follower's log");
                }
                all_checked = false;
                continue 'partition;
            }
            if r.leader_epoch == epoch || r.leader_epoch < 0 || rounds > 64 {
                break;
            }
        }
        link.checked(*key);
    }
    Ok(all_checked)
}

/// For partitions whose fetch offset the leader answered out of range:
/// asks the leader for its local log start (ListOffsets, earliest local)
/// and restarts a log that ends below it
/// ([`Partition::restart_below_leader`]); then the log is checked again.
async fn catch_up_with_start(
    c: &Connection,
    me: i32,
    link: &Link,
    parts: &[Target],
) -> Result<(), crate::client::ClientError> {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::ListOffsetsRequest;
    for Target {
        key,
        topic,
        partition: p,
        ..
    } in parts
    {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(me))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.clone())))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(p.index)
                    .with_current_leader_epoch(p.leader_epoch())
                    .with_timestamp(
                        crate::client::OffsetSpec::EarliestLocal.wire(),
                    )])]);
        let resp = c.send(&req).await?;
        let Some(r) = resp
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .find(|r| r.partition_index == p.index)
        else {
            continue;
        };
        if r.error_code != 0 {
            tracing::debug!(partition = %p.name(), code = r.error_code, "leader refused ListOffsets");
            continue;
        }
        if let Err(e) = p.restart_below_leader(r.offset).await {
            tracing::warn!(partition = %p.name(), leader_start = r.offset, error = %e, "cannot restart the follower's log at its leader's log start");
            continue;
        }
        link.set_behind(*key, false);
        link.recheck(*key);
    }
    Ok(())
}

/// One fetch from the leader for every followed partition; returns whether
/// it went well (false: errors to wait out).
async fn fetch_once(
    c: &Connection,
    me: i32,
    link: &Link,
    parts: &[Target],
) -> Result<bool, crate::client::ClientError> {
    let version = c.version::<FetchRequest>()?;
    let mut by_topic: HashMap<Uuid, FetchTopic> = HashMap::new();
    // The epoch each partition was fetched at: an answer is appended only
    // while the partition still follows this leader at it.
    let mut epochs: HashMap<Key, i32> = HashMap::new();
    for Target {
        key,
        topic,
        partition: p,
        ..
    } in parts
    {
        let epoch = p.leader_epoch();
        epochs.insert(*key, epoch);
        by_topic
            .entry(key.0)
            .or_insert_with(|| {
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                    .with_topic_id(key.0)
            })
            .partitions
            .push(
                FetchPartition::default()
                    .with_partition(p.index)
                    .with_current_leader_epoch(epoch)
                    .with_fetch_offset(p.log_end_offset())
                    .with_last_fetched_epoch(p.latest_epoch().unwrap_or(-1))
                    .with_log_start_offset(p.local_log_start_offset())
                    .with_partition_max_bytes(FETCH_PARTITION_BYTES),
            );
    }
    let mut req = FetchRequest::default()
        .with_max_wait_ms(FETCH_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_RESPONSE_BYTES)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(by_topic.into_values().collect());
    if version >= 15 {
        req.replica_state = ReplicaState::default()
            .with_replica_id(BrokerId(me))
            .with_replica_epoch(-1);
        req.replica_id = BrokerId(-1);
    } else {
        req.replica_id = BrokerId(me);
    }
    let timeout = Duration::from_millis(FETCH_WAIT_MS as u64) + Duration::from_secs(10);
    let resp = c.send_version(&req, version, timeout).await?;
    let mut ok = true;
    let mut appended = Vec::new();
    let now = now_ms();
    for t in &resp.responses {
        for pd in &t.partitions {
            let found = parts.iter().find(|f| {
                f.partition.index == pd.partition_index
                    && if version >= 13 {
                        f.key.0 == t.topic_id
                    } else {
                        f.topic == t.topic.0.as_str()
                    }
            });
            let Some(Target {
                key, partition: p, ..
            }) = found
            else {
                continue;
            };
            if pd.error_code != 0 {
                ok = false;
                tracing::debug!(partition = %p.name(), code = pd.error_code, "leader refused a replica fetch");
                if pd.error_code == kafka_protocol::error::ResponseError::OffsetOutOfRange.code() {
                    link.set_behind(*key, true);
                }
                continue;
            }
            if let Some(records) = pd.records.as_ref().filter(|r| !r.is_empty()) {
                let from = (link.leader, epochs.get(key).copied().unwrap_or(-1));
                match p.append_replicated(records, from, now) {
                    Ok(end) => appended.push((Arc::clone(p), end)),
                    Err(e) if e.is_role_change() => {
                        // Moving to another leader or taking the lead: the
                        // answer is stale, the new role checks the log.
                        tracing::debug!(partition = %p.name(), error = %e, "role changed during the fetch");
                        continue;
                    }
                    Err(e) => {
                        ok = false;
                        tracing::warn!(partition = %p.name(), error = %e, "cannot append the leader's batches; checking the log again");
                        link.recheck(*key);
                        continue;
                    }
                }
            }
            p.on_leader_high_watermark(pd.high_watermark);
            if let Some(tiered) = tier_last_of(pd) {
                p.note_leader_tier_last(tiered);
            }
        }
    }
    // What the next fetch reports must be durable.
    let waits = appended.iter().map(|(p, end)| p.wait_durable(*end));
    for (r, (p, _)) in futures::future::join_all(waits)
        .await
        .into_iter()
        .zip(&appended)
    {
        if let Err(e) = r {
            ok = false;
            tracing::warn!(partition = %p.name(), error = %e, "follower's fsync failed");
        }
    }
    Ok(ok)
}

/// The leaders' ISR upkeep until `cancel`: each replicated partition this
/// broker leads asks the controller for the ISR its followers' fetches
/// call for.
pub async fn run_isr_updates(broker: Arc<Broker>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(ISR_REVIEW_EVERY) => {}
        }
        let now = now_ms();
        for p in broker.all_partitions() {
            if !p.is_replicated() || !p.is_leader() {
                continue;
            }
            let Some(isr) = p.isr_change(now) else {
                continue;
            };
            let view = broker.view();
            let Some(info) = view
                .topic_by_id(p.topic_id)
                .and_then(|t| t.partitions.get(usize::try_from(p.index).ok()?))
            else {
                continue;
            };
            let isr = isr_to_propose(isr, broker.node_id(), &info.replicas, &view.fenced);
            if isr == p.isr().unwrap_or_default() {
                continue;
            }
            let cmd = Command::AlterPartition {
                topic_id: p.topic_id,
                partition: p.index,
                leader: broker.node_id(),
                leader_epoch: p.leader_epoch(),
                isr: isr.iter().copied().collect(),
            };
            let before: BTreeSet<i32> = p.isr().unwrap_or_default();
            match broker.metadata.propose(cmd).await {
                Ok(crate::metadata::CommandResult::Ok) => {
                    tracing::info!(partition = %p.name(), from = ?before, to = ?isr, "ISR changed");
                }
                Ok(other) => {
                    tracing::debug!(partition = %p.name(), result = ?other, "ISR change refused");
                }
                Err(e) => {
                    tracing::debug!(partition = %p.name(), error = %e, "ISR change not proposed");
                }
            }
        }
    }
}

/// The ISR a leader proposes from the one its followers' fetches call for
/// (`fetched`, holding the leader `me`, which stays): only the view's
/// replicas (a follower that a reassignment removed may have fetched
/// last), and no fenced broker. A follower that stopped is fenced at once (a controlled
/// shutdown) while its last fetches still count as caught up for
/// `replica.lag.time.max.ms`; the controller refuses an ISR that adds a
/// fenced broker, so proposing it would keep every other follower out
/// of the ISR until then.
fn isr_to_propose(
    mut fetched: BTreeSet<i32>,
    me: i32,
    replicas: &[i32],
    fenced: &BTreeSet<i32>,
) -> BTreeSet<i32> {
    fetched.retain(|b| *b == me || (replicas.contains(b) && !fenced.contains(b)));
    fetched
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::FetchableTopicResponse;
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::protocol::{Decodable, Encodable};

    /// A caught-up follower joins although a stopped (fenced) one still
    /// counts as caught up; a removed replica does not come back.
    #[test]
    fn the_proposed_isr_leaves_out_fenced_brokers_and_non_replicas() {
        let fetched = BTreeSet::from([1, 3, 4, 5]);
        let replicas = [1, 3, 4];
        let fenced = BTreeSet::from([4]);
        assert_eq!(
            isr_to_propose(fetched, 1, &replicas, &fenced),
            BTreeSet::from([1, 3])
        );
        assert_eq!(
            isr_to_propose(BTreeSet::from([1, 3]), 1, &replicas, &BTreeSet::new()),
            BTreeSet::from([1, 3])
        );
        // The leader stays, whatever the view says of it.
        assert_eq!(
            isr_to_propose(BTreeSet::from([1]), 1, &replicas, &BTreeSet::from([1])),
            BTreeSet::from([1])
        );
    }

    /// The tier's last offset survives the wire in every flexible version,
    /// beside the known tagged fields, and an answer without it has none.
    #[test]
    fn tier_last_offset_crosses_the_wire_as_a_tagged_field() {
        for version in 12..=16i16 {
            let mut pd = PartitionData::default()
                .with_partition_index(3)
                .with_high_watermark(100);
            pd.diverging_epoch.epoch = 4;
            set_tier_last(&mut pd, 4242);
            let plain = PartitionData::default().with_partition_index(4);
            let resp = FetchResponse::default().with_responses(vec![
                FetchableTopicResponse::default().with_partitions(vec![pd, plain]),
            ]);
            let mut buf = bytes::BytesMut::new();
            resp.encode(&mut buf, version).expect("encode");
            let back = FetchResponse::decode(&mut buf.freeze(), version).expect("decode");
            let parts = &back.responses[0].partitions;
            assert_eq!(tier_last_of(&parts[0]), Some(4242), "v{version}");
            assert_eq!(parts[0].diverging_epoch.epoch, 4, "v{version}");
            assert_eq!(parts[0].high_watermark, 100, "v{version}");
            assert_eq!(tier_last_of(&parts[1]), None, "v{version}");
        }
    }
}
