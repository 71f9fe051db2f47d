//! The group state machine without sockets or clocks: time is a value.

use super::offsets::subscription_topics;
use super::*;
use crate::group::records::{GroupValue, MemberValue};

const SESSION: i32 = 10_000;
const REBALANCE: i32 = 30_000;

fn cfg() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay: Duration::from_millis(3_000),
        ..GroupConfig::default()
    }
}

struct Clock {
    t0: Instant,
    ms: u64,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            t0: Instant::now(),
            ms: 0,
        }
    }

    fn now(&self) -> Now {
        Now {
            at: self.t0 + Duration::from_millis(self.ms),
            wall_ms: 1_700_000_000_000 + self.ms as i64,
        }
    }

    fn advance(&mut self, ms: u64) -> Now {
        self.ms += ms;
        self.now()
    }
}

fn proto(name: &str, meta: &[u8]) -> Protocol {
    Protocol {
        name: name.into(),
        metadata: Bytes::copy_from_slice(meta),
    }
}

fn join_req(member_id: &str, instance: Option<&str>, new_id: &str) -> JoinRequest {
    JoinRequest {
        member_id: member_id.into(),
        group_instance_id: instance.map(Into::into),
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION,
        rebalance_timeout_ms: REBALANCE,
        protocol_type: "consumer".into(),
        protocols: vec![proto("range", b"m"), proto("roundrobin", b"m")],
        require_known_member_id: false,
        supports_skip_assignment: false,
        new_member_id: new_id.into(),
    }
}

fn sync_req(member_id: &str, generation: i32, assignments: &[(&str, &[u8])]) -> SyncRequest {
    SyncRequest {
        member_id: member_id.into(),
        group_instance_id: None,
        generation_id: generation,
        protocol_type: None,
        protocol_name: None,
        assignments: assignments
            .iter()
            .map(|(m, a)| (m.to_string(), Bytes::copy_from_slice(a)))
            .collect(),
    }
}

/// The join replies in `fx`, by token.
fn joins(fx: &Effects) -> Vec<(Token, &Result<JoinResult, GroupError>)> {
    fx.replies
        .iter()
        .filter_map(|r| match r {
            Reply::Join(t, r) => Some((*t, r)),
            Reply::Sync(..) => None,
        })
        .collect()
}

fn syncs(fx: &Effects) -> Vec<(Token, &Result<SyncResult, GroupError>)> {
    fx.replies
        .iter()
        .filter_map(|r| match r {
            Reply::Sync(t, r) => Some((*t, r)),
            Reply::Join(..) => None,
        })
        .collect()
}

fn join_ok(fx: &Effects, token: Token) -> JoinResult {
    match joins(fx).into_iter().find(|(t, _)| *t == token) {
        Some((_, Ok(r))) => r.clone(),
        other => panic!("no successful join reply for token {token}: {other:?}"),
    }
}

fn join_err(fx: &Effects, token: Token) -> &GroupError {
    match joins(fx).into_iter().find(|(t, _)| *t == token) {
        Some((_, Err(e))) => e,
        other => panic!("no join error for token {token}: {other:?}"),
    }
}

/// Fires the group's timers until some request is answered (the initial
/// delay extends while members keep arriving, as in Kafka).
fn settle(g: &mut Group, c: &mut Clock) -> Effects {
    for _ in 0..20 {
        let at = g.next_deadline().expect("a timer is pending");
        let ms = at.saturating_duration_since(c.now().at).as_millis() as u64;
        let fx = g.tick(c.advance(ms), &cfg());
        if !fx.replies.is_empty() {
            return fx;
        }
    }
    panic!("the group never answered");
}

/// Drives a group of `n` dynamic members through its first rebalance;
/// returns (group, member ids, generation, clock).
fn stable_group(n: usize) -> (Group, Vec<String>, Clock) {
    let mut c = Clock::new();
    let cfg = cfg();
    let mut g = Group::new("g", c.now());
    let mut ids = Vec::new();
    let mut fx_all = Vec::new();
    for i in 0..n {
        let id = format!("m{i}");
        fx_all.push(g.join(c.now(), join_req("", None, &id), i as Token, &cfg));
        ids.push(id);
    }
    assert!(
        fx_all.iter().all(|fx| fx.replies.is_empty()),
        "joins answer only after the delay"
    );
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    let fx = settle(&mut g, &mut c);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    assert_eq!(joins(&fx).len(), n);
    let leader = join_ok(&fx, 0);
    assert_eq!(leader.generation_id, 1);
    assert_eq!(leader.leader, "m0");
    assert_eq!(leader.members.len(), n);
    assert_eq!(leader.protocol_name.as_deref(), Some("range"));
    for i in 1..n {
        assert!(
            join_ok(&fx, i as Token).members.is_empty(),
            "followers get no member list"
        );
    }
    // Followers sync first and wait for the leader.
    for (i, id) in ids.iter().enumerate().skip(1) {
        let fx = g.sync(c.now(), sync_req(id, 1, &[]), 100 + i as Token);
        assert!(fx.replies.is_empty());
    }
    let assignments: Vec<(String, Vec<u8>)> = ids
        .iter()
        .map(|id| (id.clone(), format!("a-{id}").into_bytes()))
        .collect();
    let refs: Vec<(&str, &[u8])> = assignments
        .iter()
        .map(|(m, a)| (m.as_str(), a.as_slice()))
        .collect();
    let fx = g.sync(c.now(), sync_req("m0", 1, &refs), 100);
    assert!(fx.store, "the assignment is persisted");
    assert_eq!(g.state(), GroupState::Stable);
    let got = syncs(&fx);
    assert_eq!(got.len(), n);
    for (t, r) in got {
        let id = format!("m{}", t - 100);
        assert_eq!(
            r.as_ref().expect("assignment").assignment,
            format!("a-{id}").as_bytes()
        );
    }
    (g, ids, c)
}

#[test]
fn member_id_required_then_first_rebalance_after_the_initial_delay() {
    let mut c = Clock::new();
    let cfg = cfg();
    let mut g = Group::new("g", c.now());
    let mut req = join_req("", None, "m-1");
    req.require_known_member_id = true;
    let fx = g.join(c.now(), req.clone(), 1, &cfg);
    assert!(
        matches!(join_err(&fx, 1), GroupError::MemberIdRequired { member_id } if member_id == "m-1")
    );
    assert_eq!(g.state(), GroupState::Empty);
    let mut again = req;
    again.member_id = "m-1".into();
    again.new_member_id = "unused".into();
    let fx = g.join(c.advance(10), again, 2, &cfg);
    assert!(fx.replies.is_empty());
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert!(
        g.tick(c.advance(2_000), &cfg).replies.is_empty(),
        "still in the initial delay"
    );
    let fx = g.tick(c.advance(1_000), &cfg);
    let r = join_ok(&fx, 2);
    assert_eq!(
        (r.member_id.as_str(), r.leader.as_str(), r.generation_id),
        ("m-1", "m-1", 1)
    );
    assert_eq!(r.members.len(), 1);
}

#[test]
fn initial_delay_extends_while_members_arrive_up_to_the_rebalance_timeout() {
    let mut c = Clock::new();
    let cfg = cfg();
    let mut g = Group::new("g", c.now());
    g.join(c.now(), join_req("", None, "a"), 1, &cfg);
    // A new member every 2.5 s keeps extending the 3 s delay.
    for token in 2..6 {
        let fx = g.join(
            c.advance(2_500),
            join_req("", None, &format!("m{token}")),
            token,
            &cfg,
        );
        assert!(fx.replies.is_empty());
        let fx = g.tick(c.advance(500), &cfg);
        assert!(fx.replies.is_empty(), "delay extended at {} ms", c.ms);
    }
    // Nobody else comes: done at the next expiry.
    let fx = g.tick(c.advance(3_000), &cfg);
    assert_eq!(joins(&fx).len(), 5);
    assert_eq!(g.generation(), 1);
}

#[test]
fn leave_rebalances_the_rest_and_fences_the_old_generation() {
    let (mut g, _ids, mut c) = stable_group(3);
    let cfg = cfg();
    let (res, fx) = g.leave(
        c.now(),
        &[LeavingMember {
            member_id: "m1".into(),
            group_instance_id: None,
        }],
        &cfg,
    );
    assert!(res.expect("group ok")[0].is_ok());
    assert!(fx.replies.is_empty());
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert!(matches!(
        g.heartbeat(c.now(), "m0", None, 1),
        Err(GroupError::RebalanceInProgress { .. })
    ));
    assert!(matches!(
        g.heartbeat(c.now(), "m1", None, 1),
        Err(GroupError::UnknownMemberId { .. })
    ));
    // Both remaining members rejoin: completes at once (no initial delay).
    assert!(g
        .join(c.advance(5), join_req("m0", None, "x"), 10, &cfg)
        .replies
        .is_empty());
    let fx = g.join(c.advance(5), join_req("m2", None, "x"), 11, &cfg);
    assert_eq!(joins(&fx).len(), 2);
    assert_eq!(g.generation(), 2);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    // The old generation is fenced.
    assert!(matches!(
        g.heartbeat(c.now(), "m2", None, 1),
        Err(GroupError::IllegalGeneration {
            got: 1,
            current: 2,
            ..
        })
    ));
    let fx = g.sync(c.now(), sync_req("m2", 1, &[]), 12);
    assert!(matches!(
        syncs(&fx)[0].1,
        Err(GroupError::IllegalGeneration { .. })
    ));
    assert!(matches!(
        g.validate_offset_commit("m2", None, 1),
        Err(GroupError::IllegalGeneration { .. })
    ));
    assert!(matches!(
        g.validate_offset_commit("m2", None, 2),
        Err(GroupError::RebalanceInProgress { .. })
    ));
}

#[test]
fn a_silent_member_expires_after_its_session_timeout() {
    let (mut g, _ids, mut c) = stable_group(2);
    let cfg = cfg();
    // m0 heartbeats, m1 is silent.
    for _ in 0..4 {
        c.advance(3_000);
        g.heartbeat(c.now(), "m0", None, 1).expect("alive");
        let fx = g.tick(c.now(), &cfg);
        assert!(fx.replies.is_empty());
    }
    // 12 s after m1's last sign of life: gone, and a rebalance started.
    assert!(g.member("m1").is_none());
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    let fx = g.join(c.advance(10), join_req("m0", None, "x"), 5, &cfg);
    let r = join_ok(&fx, 5);
    assert_eq!((r.generation_id, r.members.len()), (2, 1));
}

#[test]
fn members_that_do_not_rejoin_are_dropped_at_the_rebalance_timeout() {
    let (mut g, _ids, mut c) = stable_group(3);
    let cfg = cfg();
    let fx = g.join(c.advance(1), join_req("", None, "m3"), 9, &cfg);
    assert!(fx.replies.is_empty());
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    g.join(c.advance(1), join_req("m0", None, "x"), 10, &cfg);
    // m1 and m2 keep heartbeating but never rejoin.
    for _ in 0..9 {
        c.advance(3_000);
        let _ = g.heartbeat(c.now(), "m1", None, 1);
        let _ = g.heartbeat(c.now(), "m2", None, 1);
        let fx = g.tick(c.now(), &cfg);
        assert!(fx.replies.is_empty(), "completed early at {} ms", c.ms);
    }
    let fx = g.tick(c.advance(3_000), &cfg);
    assert_eq!(joins(&fx).len(), 2);
    let members: Vec<&str> = g.members().map(|m| m.id.as_str()).collect();
    assert_eq!(members, vec!["m0", "m3"]);
}

#[test]
fn unknown_protocols_and_types_are_inconsistent() {
    let (mut g, _ids, c) = stable_group(1);
    let cfg = cfg();
    let mut other = join_req("", None, "z");
    other.protocols = vec![proto("sticky", b"")];
    let fx = g.join(c.now(), other, 7, &cfg);
    assert!(matches!(
        join_err(&fx, 7),
        GroupError::InconsistentGroupProtocol { .. }
    ));
    let mut other = join_req("", None, "z");
    other.protocol_type = "connect".into();
    let fx = g.join(c.now(), other, 8, &cfg);
    assert!(matches!(
        join_err(&fx, 8),
        GroupError::InconsistentGroupProtocol { .. }
    ));
    // An empty group needs a protocol type and at least one protocol.
    let mut empty = Group::new("e", c.now());
    let mut none = join_req("", None, "z");
    none.protocols.clear();
    let fx = empty.join(c.now(), none, 9, &cfg);
    assert!(matches!(
        join_err(&fx, 9),
        GroupError::InconsistentGroupProtocol { .. }
    ));
    assert!(empty.is_unused());
    assert_eq!(g.state(), GroupState::Stable, "the group is unaffected");
}

#[test]
fn protocol_selection_takes_the_common_protocol_most_members_prefer() {
    let mut c = Clock::new();
    let cfg = cfg();
    let mut g = Group::new("g", c.now());
    let mut a = join_req("", None, "a");
    a.protocols = vec![proto("range", b""), proto("sticky", b"")];
    let mut b = join_req("", None, "b");
    b.protocols = vec![proto("sticky", b""), proto("range", b"")];
    let mut d = join_req("", None, "d");
    d.protocols = vec![
        proto("sticky", b""),
        proto("range", b""),
        proto("other", b""),
    ];
    g.join(c.now(), a, 1, &cfg);
    g.join(c.now(), b, 2, &cfg);
    g.join(c.now(), d, 3, &cfg);
    let fx = settle(&mut g, &mut c);
    assert_eq!(join_ok(&fx, 1).protocol_name.as_deref(), Some("sticky"));
}

#[test]
fn rejoins_in_stable_follow_kafka() {
    let (mut g, _ids, c) = stable_group(2);
    let cfg = cfg();
    // A follower with unchanged metadata gets the current generation at once.
    let fx = g.join(c.now(), join_req("m1", None, "x"), 20, &cfg);
    let r = join_ok(&fx, 20);
    assert_eq!((r.generation_id, r.leader.as_str()), (1, "m0"));
    assert_eq!(g.state(), GroupState::Stable);
    // Changed metadata (a cooperative member revoking partitions) rebalances.
    let mut changed = join_req("m1", None, "x");
    changed.protocols = vec![proto("range", b"owned:none"), proto("roundrobin", b"m")];
    let fx = g.join(c.now(), changed, 21, &cfg);
    assert!(fx.replies.is_empty());
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    let fx = g.join(c.now(), join_req("m0", None, "x"), 22, &cfg);
    assert_eq!(joins(&fx).len(), 2);
    assert_eq!(g.generation(), 2);
    // The leader rejoining always rebalances.
    let refs: [(&str, &[u8]); 2] = [("m0", b"a0"), ("m1", b"a1")];
    g.sync(c.now(), sync_req("m1", 2, &[]), 23);
    g.sync(c.now(), sync_req("m0", 2, &refs), 24);
    assert_eq!(g.state(), GroupState::Stable);
    let fx = g.join(c.now(), join_req("m0", None, "x"), 25, &cfg);
    assert!(fx.replies.is_empty());
    assert_eq!(g.state(), GroupState::PreparingRebalance);
}

#[test]
fn a_rebalance_during_sync_tells_waiting_members_to_rejoin() {
    let mut c = Clock::new();
    let cfg = cfg();
    let mut g = Group::new("g", c.now());
    g.join(c.now(), join_req("", None, "m0"), 1, &cfg);
    g.join(c.now(), join_req("", None, "m1"), 2, &cfg);
    settle(&mut g, &mut c);
    assert!(g
        .sync(c.now(), sync_req("m1", 1, &[]), 3)
        .replies
        .is_empty());
    // A new member arrives before the leader syncs.
    let fx = g.join(c.now(), join_req("", None, "m2"), 4, &cfg);
    let s = syncs(&fx);
    assert_eq!(s.len(), 1);
    assert!(matches!(
        s[0],
        (3, Err(GroupError::RebalanceInProgress { .. }))
    ));
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    // The leader's late sync is refused the same way.
    let fx = g.sync(c.now(), sync_req("m0", 1, &[]), 5);
    assert!(matches!(
        syncs(&fx)[0].1,
        Err(GroupError::RebalanceInProgress { .. })
    ));
}

#[test]
fn members_that_never_sync_are_removed_after_the_rebalance_timeout() {
    let mut c = Clock::new();
    let cfg = cfg();
    let mut g = Group::new("g", c.now());
    g.join(c.now(), join_req("", None, "m0"), 1, &cfg);
    g.join(c.now(), join_req("", None, "m1"), 2, &cfg);
    settle(&mut g, &mut c);
    let refs: [(&str, &[u8]); 2] = [("m0", b"a0"), ("m1", b"a1")];
    g.sync(c.now(), sync_req("m0", 1, &refs), 3);
    assert_eq!(g.state(), GroupState::Stable);
    // m1 heartbeats but never syncs.
    for _ in 0..9 {
        c.advance(3_000);
        g.heartbeat(c.now(), "m0", None, 1).expect("m0 alive");
        let _ = g.heartbeat(c.now(), "m1", None, 1);
        g.tick(c.now(), &cfg);
    }
    assert!(g.member("m1").is_some());
    g.tick(c.advance(3_000), &cfg);
    assert!(g.member("m1").is_none(), "removed at the sync deadline");
    assert_eq!(g.state(), GroupState::PreparingRebalance);
}

#[test]
fn static_member_restart_within_the_session_timeout_keeps_the_assignment() {
    let mut c = Clock::new();
    let cfg = cfg();
    let mut g = Group::new("g", c.now());
    g.join(c.now(), join_req("", Some("i0"), "s0-a"), 1, &cfg);
    g.join(c.now(), join_req("", Some("i1"), "s1-a"), 2, &cfg);
    settle(&mut g, &mut c);
    let refs: [(&str, &[u8]); 2] = [("s0-a", b"p0"), ("s1-a", b"p1")];
    g.sync(c.now(), sync_req("s1-a", 1, &[]), 3);
    g.sync(c.now(), sync_req("s0-a", 1, &refs), 4);
    assert_eq!(g.state(), GroupState::Stable);
    // i1 restarts: a new JoinGroup with no member id, 4 s later.
    let fx = g.join(c.advance(4_000), join_req("", Some("i1"), "s1-b"), 5, &cfg);
    assert!(fx.store, "the new member id is persisted");
    let r = join_ok(&fx, 5);
    assert_eq!(
        (r.member_id.as_str(), r.generation_id, r.leader.as_str()),
        ("s1-b", 1, "s0-a")
    );
    assert_eq!(g.state(), GroupState::Stable, "no rebalance");
    let mut sync = sync_req("s1-b", 1, &[]);
    sync.group_instance_id = Some("i1".into());
    let fx = g.sync(c.now(), sync, 6);
    assert_eq!(
        syncs(&fx)[0].1.as_ref().expect("assignment").assignment,
        &b"p1"[..]
    );
    // The old incarnation is fenced.
    assert!(matches!(
        g.heartbeat(c.now(), "s1-a", Some("i1"), 1),
        Err(GroupError::FencedInstanceId { .. })
    ));
    // The restarted leader does not think it leads (pre-v9): old leader id.
    let fx = g.join(c.now(), join_req("", Some("i0"), "s0-b"), 7, &cfg);
    let r = join_ok(&fx, 7);
    assert_eq!((r.leader.as_str(), r.members.len()), ("s0-a", 0));
    assert_eq!(g.leader(), Some("s0-b"));
    // v9: the leader learns it leads but must skip the assignment.
    let mut v9 = join_req("", Some("i0"), "s0-c");
    v9.supports_skip_assignment = true;
    let fx = g.join(c.now(), v9, 8, &cfg);
    let r = join_ok(&fx, 8);
    assert!(r.skip_assignment);
    assert_eq!((r.leader.as_str(), r.members.len()), ("s0-c", 2));
    assert_eq!(g.generation(), 1);
}

#[test]
fn static_members_survive_a_rebalance_they_sleep_through_until_their_session_ends() {
    let mut c = Clock::new();
    let cfg = cfg();
    let mut g = Group::new("g", c.now());
    g.join(c.now(), join_req("", Some("i0"), "s0"), 1, &cfg);
    g.join(c.now(), join_req("", None, "d1"), 2, &cfg);
    settle(&mut g, &mut c);
    let refs: [(&str, &[u8]); 2] = [("s0", b"p0"), ("d1", b"p1")];
    g.sync(c.now(), sync_req("d1", 1, &[]), 3);
    g.sync(c.now(), sync_req("s0", 1, &refs), 4);
    // The dynamic member rejoins with new metadata; the static one is down.
    let mut changed = join_req("d1", None, "x");
    changed.protocols = vec![proto("range", b"other")];
    g.join(c.now(), changed, 5, &cfg);
    // It is alive (heartbeats) but does not rejoin.
    let mut fx = Effects::default();
    for _ in 0..10 {
        c.advance(3_000);
        let _ = g.heartbeat(c.now(), "s0", Some("i0"), 1);
        fx = g.tick(c.now(), &cfg);
    }
    // The static member stayed in (only its session removes it).
    let r = join_ok(&fx, 5);
    assert_eq!(r.leader, "d1");
    assert_eq!(r.members.len(), 2);
    assert!(g.member("s0").is_some());
}

#[test]
fn leave_by_instance_id_and_unknown_members() {
    let mut c = Clock::new();
    let cfg = cfg();
    let mut g = Group::new("g", c.now());
    g.join(c.now(), join_req("", Some("i0"), "s0"), 1, &cfg);
    g.tick(c.advance(3_000), &cfg);
    let (res, _) = g.leave(
        c.now(),
        &[
            LeavingMember {
                member_id: "nope".into(),
                group_instance_id: None,
            },
            LeavingMember {
                member_id: "".into(),
                group_instance_id: Some("i0".into()),
            },
        ],
        &cfg,
    );
    let res = res.expect("group ok");
    assert!(matches!(res[0], Err(GroupError::UnknownMemberId { .. })));
    assert!(res[1].is_ok());
    assert_eq!(g.state(), GroupState::Empty);
    assert_eq!(g.generation(), 2);
}

#[test]
fn a_pending_member_that_never_returns_expires() {
    let mut c = Clock::new();
    let cfg = cfg();
    let mut g = Group::new("g", c.now());
    let mut req = join_req("", None, "p");
    req.require_known_member_id = true;
    g.join(c.now(), req, 1, &cfg);
    assert!(!g.is_unused());
    assert_eq!(
        g.next_deadline(),
        Some(c.now().at + Duration::from_millis(SESSION as u64))
    );
    g.tick(c.advance(SESSION as u64), &cfg);
    assert!(g.is_unused());
    assert_eq!(g.next_deadline(), None);
}

#[test]
fn commits_without_membership_only_for_empty_groups() {
    let c = Clock::new();
    let g = Group::new("g", c.now());
    g.validate_offset_commit("", None, -1)
        .expect("simple consumer commit");
    assert!(matches!(
        g.validate_offset_commit("m", None, 1),
        Err(GroupError::UnknownMemberId { .. })
    ));
    let (g, _ids, _c) = stable_group(1);
    assert!(matches!(
        g.validate_offset_commit("", None, -1),
        Err(GroupError::UnknownMemberId { .. })
    ));
    g.validate_offset_commit("m0", None, 1)
        .expect("member commit");
}

#[test]
fn offsets_of_empty_groups_expire_after_the_retention() {
    let mut c = Clock::new();
    let mut g = Group::new("g", c.now());
    let v = |ts: i64, expire: Option<i64>| OffsetValue {
        offset: 1,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp: ts,
        expire_timestamp: expire,
    };
    let t = c.now().wall_ms;
    g.commit_offset("a", 0, v(t, None));
    g.commit_offset("b", 0, v(t + 5_000, None));
    g.commit_offset("c", 0, v(t, Some(t + 1_000)));
    c.advance(1_000);
    let retention = 10_000;
    assert_eq!(
        g.expired_offsets(c.now().wall_ms, retention),
        vec![("c".to_string(), 0)]
    );
    c.advance(9_000);
    let mut e = g.expired_offsets(c.now().wall_ms, retention);
    e.sort();
    assert_eq!(e, vec![("a".to_string(), 0), ("c".to_string(), 0)]);
    // A group with members keeps its offsets.
    let (mut s, _, _) = stable_group(1);
    s.commit_offset("a", 0, v(0, Some(1)));
    assert!(s.expired_offsets(i64::MAX, retention).is_empty());
}

#[test]
fn snapshot_and_restore_bring_back_a_stable_group() {
    let (g, _ids, mut c) = stable_group(2);
    let snap = g.snapshot();
    assert_eq!(snap.generation, 1);
    assert_eq!(snap.members.len(), 2);
    let encoded = crate::group::records::encode_group_value(&snap);
    let decoded = crate::group::records::decode_group_value(&encoded).expect("decodes");
    let mut r = Group::new("g", c.now());
    r.restore(decoded, c.advance(100));
    assert_eq!(r.state(), GroupState::Stable);
    assert_eq!(r.generation(), 1);
    assert_eq!(r.leader(), Some("m0"));
    r.heartbeat(c.now(), "m1", None, 1)
        .expect("member survives the restart");
    let fx = r.sync(c.now(), sync_req("m1", 1, &[]), 1);
    assert_eq!(
        syncs(&fx)[0].1.as_ref().expect("assignment").assignment,
        &b"a-m1"[..]
    );
    // Members that do not come back expire.
    r.tick(c.advance(SESSION as u64 + 1), &cfg());
    assert!(!r.has_members() || r.state() == GroupState::PreparingRebalance);
}

#[test]
fn subscriptions_decode_for_offset_delete() {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let sub = ConsumerProtocolSubscription::default().with_topics(vec![
        StrBytes::from_static_str("t1"),
        StrBytes::from_static_str("t2"),
    ]);
    let mut b = bytes::BytesMut::new();
    bytes::BufMut::put_i16(&mut b, 1);
    sub.encode(&mut b, 1).expect("encodes");
    let meta = b.freeze();
    assert_eq!(
        subscription_topics(&meta),
        Some(vec!["t1".to_string(), "t2".to_string()])
    );
    assert_eq!(subscription_topics(&Bytes::from_static(b"\x00")), None);
    let mut c = Clock::new();
    let cfg = cfg();
    let mut g = Group::new("g", c.now());
    let mut req = join_req("", None, "m0");
    req.protocols = vec![Protocol {
        name: "range".into(),
        metadata: meta,
    }];
    g.join(c.now(), req, 1, &cfg);
    g.tick(c.advance(3_000), &cfg);
    let topics = g.subscribed_topics().expect("known");
    assert!(topics.contains("t1") && !topics.contains("t3"));
}

#[test]
fn a_snapshot_without_a_protocol_restores_an_empty_group() {
    let c = Clock::new();
    let mut g = Group::new("g", c.now());
    g.commit_offset(
        "t",
        0,
        crate::group::records::OffsetValue {
            offset: 4,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: 0,
            expire_timestamp: None,
        },
    );
    g.restore(
        GroupValue {
            protocol_type: "consumer".into(),
            generation: 3,
            protocol: None,
            leader: Some("m".into()),
            current_state_timestamp: -1,
            members: vec![MemberValue {
                member_id: "m".into(),
                group_instance_id: None,
                client_id: "c".into(),
                client_host: String::new(),
                rebalance_timeout_ms: 1000,
                session_timeout_ms: 1000,
                subscription: Bytes::new(),
                assignment: Bytes::new(),
            }],
        },
        c.now(),
    );
    assert_eq!(g.state(), GroupState::Empty);
    assert!(!g.has_members());
    assert_eq!(g.generation(), 3);
    assert_eq!(
        g.offset("t", 0).map(|v| v.offset),
        Some(4),
        "offsets are kept"
    );
}
