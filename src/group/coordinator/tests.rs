//! The coordinator over an in-memory log, with tokio's paused clock: the
//! timers run for real, in virtual time.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::*;
use crate::group::log::Appended;
use crate::group::records::partition_for;
use crate::group::records::OffsetValue;
use crate::group::state::Protocol;

const PARTITIONS: i32 = 4;

/// `__consumer_offsets` in memory: one Vec of records per partition.
struct MemLog {
    parts: Mutex<Vec<Vec<Entry>>>,
    deleted_topics: Mutex<BTreeSet<String>>,
    metadata: tokio::sync::watch::Sender<u64>,
}

impl MemLog {
    fn new() -> Arc<MemLog> {
        Arc::new(MemLog {
            parts: Mutex::new(vec![Vec::new(); PARTITIONS as usize]),
            deleted_topics: Mutex::new(BTreeSet::new()),
            metadata: tokio::sync::watch::channel(0).0,
        })
    }

    fn delete_topic(&self, topic: &str) {
        self.deleted_topics
            .lock()
            .unwrap()
            .insert(topic.to_string());
        self.metadata.send_modify(|v| *v += 1);
    }

    /// A transaction marker of `producer_id` on `group`'s partition.
    fn marker(&self, group: &str, producer_id: i64, commit: bool) -> i32 {
        let p = partition_for(group, PARTITIONS);
        self.parts.lock().unwrap()[p as usize].push(Entry::Marker {
            producer_id,
            commit,
        });
        p
    }

    fn records(&self) -> usize {
        self.parts.lock().unwrap().iter().map(Vec::len).sum()
    }
}

impl GroupLog for MemLog {
    async fn ensure_topic(&self) -> Result<(), GroupError> {
        Ok(())
    }

    fn append(
        &self,
        group: &str,
        records: &[KeyValue],
        _now_ms: i64,
    ) -> Result<Appended, GroupError> {
        let p = partition_for(group, PARTITIONS);
        let mut parts = self.parts.lock().unwrap();
        parts[p as usize].extend(records.iter().cloned().map(Entry::Record));
        Ok(Appended {
            partition: p,
            end_offset: parts[p as usize].len() as i64,
        })
    }

    fn append_txn(
        &self,
        group: &str,
        records: &[KeyValue],
        (producer_id, _): (i64, i16),
        _now_ms: i64,
    ) -> Result<Appended, GroupError> {
        let p = partition_for(group, PARTITIONS);
        let mut parts = self.parts.lock().unwrap();
        parts[p as usize].extend(records.iter().cloned().map(|record| Entry::Txn {
            producer_id,
            record,
        }));
        Ok(Appended {
            partition: p,
            end_offset: parts[p as usize].len() as i64,
        })
    }

    async fn wait_durable(&self, _appended: Appended) -> Result<(), GroupError> {
        Ok(())
    }

    fn partitions(&self) -> i32 {
        PARTITIONS
    }

    fn read(&self, partition: i32, offset: i64) -> Result<Option<(Vec<Entry>, i64)>, GroupError> {
        let parts = self.parts.lock().unwrap();
        let p = &parts[partition as usize];
        if offset as usize >= p.len() {
            return Ok(None);
        }
        Ok(Some((p[offset as usize..].to_vec(), p.len() as i64)))
    }

    fn topic_exists(&self, topic: &str) -> bool {
        !self.deleted_topics.lock().unwrap().contains(topic)
    }

    fn metadata_watch(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.metadata.subscribe())
    }
}

fn config() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay: Duration::from_millis(3_000),
        offsets_retention_ms: 60_000,
        offsets_retention_check_interval: Duration::from_secs(10),
        ..GroupConfig::default()
    }
}

/// The wall clock when a test's coordinator starts (2023-11-14).
const START_MS: i64 = 1_700_000_000_000;

async fn start(log: &Arc<MemLog>) -> (Arc<Coordinator>, CancellationToken) {
    let c = Arc::new(Coordinator::new(config(), || START_MS));
    c.set_ownership(Some((
        PARTITIONS,
        (0..PARTITIONS).map(|p| (p, 0)).collect(),
    )));
    c.load(&**log).await.expect("load");
    let token = CancellationToken::new();
    let (c2, l2, t2) = (c.clone(), log.clone(), token.clone());
    tokio::spawn(async move { c2.run_timers(&*l2, t2).await });
    (c, token)
}

fn join(member_id: &str, instance: Option<&str>, new_id: &str) -> JoinRequest {
    JoinRequest {
        member_id: member_id.into(),
        group_instance_id: instance.map(Into::into),
        client_id: "c".into(),
        client_host: String::new(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 20_000,
        protocol_type: "consumer".into(),
        protocols: vec![Protocol {
            name: "range".into(),
            metadata: Bytes::from_static(b"sub"),
        }],
        require_known_member_id: false,
        supports_skip_assignment: false,
        new_member_id: new_id.into(),
    }
}

fn sync(member_id: &str, generation: i32, assignment: &[(&str, &'static [u8])]) -> SyncRequest {
    SyncRequest {
        member_id: member_id.into(),
        group_instance_id: None,
        generation_id: generation,
        protocol_type: Some("consumer".into()),
        protocol_name: Some("range".into()),
        assignments: assignment
            .iter()
            .map(|(m, a)| (m.to_string(), Bytes::from_static(a)))
            .collect(),
    }
}

fn offset(o: i64, metadata: &str) -> OffsetValue {
    OffsetValue {
        offset: o,
        leader_epoch: 3,
        metadata: metadata.into(),
        commit_timestamp: 0,
        expire_timestamp: None,
    }
}

/// A commit by a simple consumer: no member, no generation.
async fn commit_standalone(
    c: &Coordinator,
    log: &Arc<MemLog>,
    group: &str,
    offsets: Vec<(String, i32, OffsetValue)>,
) -> Result<(), GroupError> {
    c.commit_offsets(&**log, group, "", None, -1, offsets).await
}

fn state(c: &Coordinator, group: &str) -> Option<GroupState> {
    c.describe(group).expect("loaded").map(|d| d.state)
}

#[tokio::test(start_paused = true)]
async fn first_join_waits_for_the_initial_delay_and_a_silent_member_expires() {
    let log = MemLog::new();
    let (c, stop) = start(&log).await;
    let t0 = tokio::time::Instant::now();
    let r = c
        .join(&*log, "g", join("", None, "m1"))
        .await
        .expect("joined");
    assert_eq!(r.generation_id, 1);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(3_000) && waited < Duration::from_millis(3_100),
        "{waited:?}"
    );
    let s = c
        .sync(&*log, "g", sync("m1", 1, &[("m1", b"a1")]))
        .await
        .expect("synced");
    assert_eq!(&s.assignment[..], b"a1");
    assert_eq!(state(&c, "g"), Some(GroupState::Stable));
    // Heartbeats keep it; silence for the session timeout removes it.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        c.heartbeat("g", "m1", None, 1).expect("alive");
    }
    tokio::time::sleep(Duration::from_millis(10_100)).await;
    assert_eq!(state(&c, "g"), Some(GroupState::Empty));
    assert!(matches!(
        c.heartbeat("g", "m1", None, 1),
        Err(GroupError::UnknownMemberId { .. })
    ));
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn followers_wait_for_the_leader_and_get_their_share() {
    let log = MemLog::new();
    let (c, stop) = start(&log).await;
    let (a, b) = tokio::join!(
        c.join(&*log, "g", join("", None, "m1")),
        c.join(&*log, "g", join("", None, "m2")),
    );
    let (a, b) = (a.expect("m1"), b.expect("m2"));
    assert_eq!(a.leader, "m1");
    assert_eq!((a.members.len(), b.members.len()), (2, 0));
    let follower = {
        let (c, log) = (c.clone(), log.clone());
        tokio::spawn(async move { c.sync(&*log, "g", sync("m2", 1, &[])).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!follower.is_finished(), "a follower waits for the leader");
    c.sync(&*log, "g", sync("m1", 1, &[("m1", b"p0"), ("m2", b"p1")]))
        .await
        .expect("leader");
    let got = follower.await.expect("task").expect("follower");
    assert_eq!(&got.assignment[..], b"p1");
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn commits_and_membership_survive_a_reload() {
    let log = MemLog::new();
    let (c, stop) = start(&log).await;
    c.join(&*log, "g", join("", Some("inst"), "m1"))
        .await
        .expect("joined");
    c.sync(&*log, "g", sync("m1", 1, &[("m1", b"all")]))
        .await
        .expect("synced");
    c.commit_offsets(
        &*log,
        "g",
        "m1",
        Some("inst"),
        1,
        vec![
            ("t".into(), 0, offset(10, "meta")),
            ("t".into(), 1, offset(20, "")),
        ],
    )
    .await
    .expect("committed");
    // A simple consumer (no membership) in another group.
    commit_standalone(&c, &log, "simple", vec![("u".into(), 0, offset(5, "x"))])
        .await
        .expect("standalone commit");
    // A stale generation is refused and changes nothing.
    assert!(matches!(
        c.commit_offsets(
            &*log,
            "g",
            "m1",
            Some("inst"),
            0,
            vec![("t".into(), 0, offset(99, ""))]
        )
        .await,
        Err(GroupError::IllegalGeneration { .. })
    ));
    stop.cancel();

    let (c2, stop2) = start(&log).await;
    let got = c2.fetch_offsets("g", None).expect("fetch");
    assert_eq!(got.len(), 1);
    let (topic, parts) = &got[0];
    assert_eq!(topic, "t");
    assert_eq!(
        parts[0]
            .1
            .as_ref()
            .map(|v| (v.offset, v.leader_epoch, v.metadata.as_str())),
        Some((10, 3, "meta"))
    );
    assert_eq!(parts[1].1.as_ref().map(|v| v.offset), Some(20));
    let simple = c2
        .fetch_offsets("simple", Some(vec![("u".into(), vec![0, 1])]))
        .expect("fetch");
    assert_eq!(simple[0].1[0].1.as_ref().map(|v| v.offset), Some(5));
    assert!(simple[0].1[1].1.is_none(), "no commit: no offset");
    // The static member is still in the restored group, same generation.
    assert_eq!(state(&c2, "g"), Some(GroupState::Stable));
    c2.heartbeat("g", "m1", Some("inst"), 1)
        .expect("member restored");
    let listed: Vec<String> = c2
        .list()
        .expect("list")
        .into_iter()
        .map(|l| l.group_id)
        .collect();
    assert_eq!(listed, vec!["g".to_string(), "simple".to_string()]);
    stop2.cancel();
}

#[tokio::test(start_paused = true)]
async fn deleted_groups_and_offsets_stay_deleted_after_a_reload() {
    let log = MemLog::new();
    let (c, stop) = start(&log).await;
    commit_standalone(
        &c,
        &log,
        "g",
        vec![
            ("t".into(), 0, offset(1, "")),
            ("t".into(), 1, offset(2, "")),
        ],
    )
    .await
    .expect("commit");
    commit_standalone(&c, &log, "h", vec![("t".into(), 0, offset(1, ""))])
        .await
        .expect("commit");
    let r = c
        .delete_offsets(&*log, "g", vec![("t".into(), 1)])
        .await
        .expect("delete offsets");
    assert!(r[0].is_ok());
    c.delete_group(&*log, "h").await.expect("delete group");
    assert!(matches!(
        c.delete_group(&*log, "h").await,
        Err(GroupError::GroupIdNotFound { .. })
    ));
    stop.cancel();
    let (c2, stop2) = start(&log).await;
    let g = c2.fetch_offsets("g", None).expect("fetch");
    assert_eq!(g[0].1.len(), 1, "only t-0 is left");
    assert!(c2.fetch_offsets("h", None).expect("fetch").is_empty());
    assert_eq!(state(&c2, "h"), None);
    stop2.cancel();
}

#[tokio::test(start_paused = true)]
async fn non_empty_groups_cannot_be_deleted_and_subscribed_offsets_stay() {
    let log = MemLog::new();
    let (c, stop) = start(&log).await;
    c.join(&*log, "g", join("", None, "m1"))
        .await
        .expect("join");
    assert!(matches!(
        c.delete_group(&*log, "g").await,
        Err(GroupError::NonEmptyGroup { .. })
    ));
    // The subscription b"sub" does not decode: every topic counts as in use.
    let r = c
        .delete_offsets(&*log, "g", vec![("t".into(), 0)])
        .await
        .expect("group ok");
    assert!(matches!(r[0], Err(GroupError::SubscribedToTopic { .. })));
    assert!(matches!(
        c.delete_offsets(&*log, "nope", vec![]).await,
        Err(GroupError::GroupIdNotFound { .. })
    ));
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn offsets_of_empty_groups_expire_and_the_group_goes() {
    let log = MemLog::new();
    let (c, stop) = start(&log).await;
    commit_standalone(&c, &log, "g", vec![("t".into(), 0, offset(1, ""))])
        .await
        .expect("commit");
    // Commit timestamps come from the caller; use the coordinator's clock.
    let now = c.now().wall_ms;
    commit_standalone(
        &c,
        &log,
        "g",
        vec![(
            "t".into(),
            0,
            OffsetValue {
                commit_timestamp: now,
                ..offset(1, "")
            },
        )],
    )
    .await
    .expect("commit");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(state(&c, "g").is_some(), "not expired yet");
    tokio::time::sleep(Duration::from_secs(45)).await;
    assert_eq!(state(&c, "g"), None, "expired after the retention");
    stop.cancel();
    let before = log.records();
    let (c2, stop2) = start(&log).await;
    assert_eq!(state(&c2, "g"), None);
    assert_eq!(log.records(), before);
    stop2.cancel();
}

#[tokio::test(start_paused = true)]
async fn shutdown_answers_parked_joins() {
    let log = MemLog::new();
    let (c, stop) = start(&log).await;
    let parked = {
        let (c, log) = (c.clone(), log.clone());
        tokio::spawn(async move { c.join(&*log, "g", join("", None, "m1")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.shutdown();
    let r = parked.await.expect("task");
    assert!(matches!(r, Err(GroupError::NotCoordinator)));
    assert!(matches!(
        c.join(&*log, "g", join("", None, "m2")).await,
        Err(GroupError::NotCoordinator)
    ));
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn session_timeouts_outside_the_range_are_refused() {
    let log = MemLog::new();
    let (c, stop) = start(&log).await;
    let mut r = join("", None, "m1");
    r.session_timeout_ms = 1_000;
    assert!(matches!(
        c.join(&*log, "g", r).await,
        Err(GroupError::InvalidSessionTimeout { got: 1_000, .. })
    ));
    assert_eq!(state(&c, "g"), None, "no group left behind");
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn offsets_of_deleted_topics_are_removed() {
    let log = MemLog::new();
    let (c, stop) = start(&log).await;
    commit_standalone(
        &c,
        &log,
        "g",
        vec![
            ("t".into(), 0, offset(1, "")),
            ("u".into(), 0, offset(2, "")),
        ],
    )
    .await
    .expect("commit");
    log.delete_topic("t");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let left = c.fetch_offsets("g", None).expect("fetch");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0, "u");
    stop.cancel();
    let (c2, stop2) = start(&log).await;
    let left = c2.fetch_offsets("g", None).expect("fetch");
    assert_eq!(
        left.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        vec!["u"]
    );
    stop2.cancel();
}

#[tokio::test(start_paused = true)]
async fn groups_follow_the_leadership_of_their_offsets_partition() {
    let log = MemLog::new();
    let (c, stop) = start(&log).await;
    let p = partition_for("g", PARTITIONS);
    let all = |epoch: i32| -> HashMap<i32, i32> { (0..PARTITIONS).map(|i| (i, epoch)).collect() };
    let mut without = all(0);
    without.remove(&p);
    c.join(&*log, "g", join("", Some("inst"), "m1"))
        .await
        .expect("joined");
    c.sync(&*log, "g", sync("m1", 1, &[("m1", b"all")]))
        .await
        .expect("synced");
    c.commit_offsets(
        &*log,
        "g",
        "m1",
        Some("inst"),
        1,
        vec![("t".into(), 0, offset(10, ""))],
    )
    .await
    .expect("committed");

    // The partition moves to another node: its groups leave memory.
    c.set_ownership(Some((PARTITIONS, without.clone())));
    assert!(matches!(
        c.heartbeat("g", "m1", Some("inst"), 1),
        Err(GroupError::NotCoordinator)
    ));
    assert!(matches!(
        c.fetch_offsets("g", None),
        Err(GroupError::NotCoordinator)
    ));
    assert!(c.list().expect("list").is_empty());
    // The metadata names this node the leader again, before its replica
    // takes the role: clients are told to wait, not to look elsewhere.
    c.set_arriving([p].into_iter().collect());
    assert!(matches!(c.serving("g"), Err(GroupError::LoadInProgress)));
    c.set_arriving(Default::default());
    assert!(matches!(c.serving("g"), Err(GroupError::NotCoordinator)));
    // Meanwhile the other node's coordinator commits (same log).
    log.append(
        "g",
        &[(
            encode_key(&RecordKey::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 0,
            }),
            Some(crate::group::records::encode_offset_value(&offset(42, ""))),
        )],
        START_MS,
    )
    .expect("append");

    // Back at a new epoch: loading until replayed, then the other node's
    // commit and the static member are there.
    let mut back = without;
    back.insert(p, 1);
    c.set_ownership(Some((PARTITIONS, back)));
    assert!(matches!(c.serving("g"), Err(GroupError::LoadInProgress)));
    assert!(matches!(
        c.heartbeat("g", "m1", Some("inst"), 1),
        Err(GroupError::LoadInProgress)
    ));
    // The timer task loads it.
    tokio::time::sleep(Duration::from_millis(1)).await;
    c.serving("g").expect("loaded");
    let got = c.fetch_offsets("g", None).expect("fetch");
    assert_eq!(got[0].1[0].1.as_ref().map(|v| v.offset), Some(42));
    c.heartbeat("g", "m1", Some("inst"), 1)
        .expect("member restored");
    // Other partitions never left.
    let other = (0..100)
        .map(|i| format!("h{i}"))
        .find(|g| partition_for(g, PARTITIONS) != p)
        .expect("a group elsewhere");
    c.serving(&other).expect("still served");
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_parked_join_is_answered_when_its_partition_moves() {
    let log = MemLog::new();
    let (c, stop) = start(&log).await;
    let p = partition_for("g", PARTITIONS);
    // The first member waits out the initial rebalance delay.
    let parked = {
        let (c, log) = (c.clone(), log.clone());
        tokio::spawn(async move { c.join(&*log, "g", join("", None, "m1")).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!parked.is_finished());
    let mut without: HashMap<i32, i32> = (0..PARTITIONS).map(|i| (i, 0)).collect();
    without.remove(&p);
    c.set_ownership(Some((PARTITIONS, without)));
    assert!(matches!(
        parked.await.expect("task"),
        Err(GroupError::NotCoordinator)
    ));
    stop.cancel();
}

fn committed(c: &Coordinator, group: &str, topic: &str, partition: i32) -> Option<i64> {
    let got = c
        .fetch_offsets(group, Some(vec![(topic.to_string(), vec![partition])]))
        .expect("fetch");
    got[0].1[0].1.as_ref().map(|v| v.offset)
}

#[tokio::test(start_paused = true)]
async fn transactional_offsets_count_at_the_commit_marker_live_and_after_a_load() {
    let log = MemLog::new();
    let (c, _t1) = start(&log).await;
    // Two transactions of producers 7 and 8 commit offsets of group g.
    c.commit_txn_offsets(
        &*log,
        "g",
        ("", None, -1),
        vec![("t".into(), 0, offset(10, ""))],
        (7, 0),
    )
    .await
    .expect("txn commit 7");
    c.commit_txn_offsets(
        &*log,
        "g",
        ("", None, -1),
        vec![("t".into(), 1, offset(20, ""))],
        (8, 0),
    )
    .await
    .expect("txn commit 8");
    assert_eq!(committed(&c, "g", "t", 0), None, "undecided");
    assert!(c.has_pending_txn_offset("g", "t", 0));
    let p = log.marker("g", 7, true);
    c.complete_txn_offsets(p, 7, true);
    assert_eq!(committed(&c, "g", "t", 0), Some(10));
    assert!(!c.has_pending_txn_offset("g", "t", 0));
    log.marker("g", 8, false);
    c.complete_txn_offsets(p, 8, false);
    assert_eq!(committed(&c, "g", "t", 1), None, "aborted");

    // A new coordinator replays the same: 7's offset, not 8's.
    let (c2, _t2) = start(&log).await;
    assert_eq!(committed(&c2, "g", "t", 0), Some(10));
    assert_eq!(committed(&c2, "g", "t", 1), None);

    // An open transaction at load stays pending until its marker.
    c2.commit_txn_offsets(
        &*log,
        "g",
        ("", None, -1),
        vec![("t".into(), 2, offset(30, ""))],
        (9, 0),
    )
    .await
    .expect("txn commit 9");
    let (c3, _t3) = start(&log).await;
    assert_eq!(committed(&c3, "g", "t", 2), None);
    assert!(c3.has_pending_txn_offset("g", "t", 2));
    c3.complete_txn_offsets(log.marker("g", 9, true), 9, true);
    assert_eq!(committed(&c3, "g", "t", 2), Some(30));
}
