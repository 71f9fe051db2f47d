//! One consumer group under Kafka's classic protocol, as a pure state machine.
//!
//! Overview: [`Group`] holds the membership (members, generation, leader,
//! selected protocol, assignments) and the committed offsets of one group.
//! Every operation takes the time as a [`Now`] and returns [`Effects`]:
//! replies to JoinGroup/SyncGroup requests that were parked (identified by
//! the caller's [`Token`]) and whether the membership snapshot must be
//! persisted. Timers are deadlines inside the struct: the caller asks for
//! [`Group::next_deadline`] and calls [`Group::tick`] when it passes. No
//! sockets, disks or clocks: every path is unit-tested with plain values.
//! This file is the membership state machine; the request and result types
//! are in `requests`, the committed offsets in `offsets`, the persisted
//! snapshot in `snapshot`.
//!
//! States, as in Kafka: `Empty` (no members; may hold offsets),
//! `PreparingRebalance` (waiting for members to (re)join, bounded by the
//! rebalance timeout, and on an empty group by the initial rebalance delay),
//! `CompletingRebalance` (joined; waiting for the leader's assignment),
//! `Stable`, and `Dead` (removed; callers retry and find a fresh group).
//!
//! Consistency: the caller serialises all calls on one group (a mutex).
//! Generation fencing: SyncGroup, Heartbeat and OffsetCommit carry the
//! generation and member id they were given; a mismatch is
//! ILLEGAL_GENERATION / UNKNOWN_MEMBER_ID, a replaced static member is
//! FENCED_INSTANCE_ID.
//!
//! Crash safety: none here; the coordinator persists the snapshot
//! ([`Group::snapshot`]) and the offsets, and rebuilds groups from them.

mod offsets;
mod requests;
mod snapshot;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::config::GroupConfig;
use super::error::GroupError;
use super::records::OffsetValue;

pub use requests::{
    Effects, JoinRequest, JoinResult, JoinedMember, LeavingMember, Protocol, Reply, SyncRequest,
    SyncResult, Token,
};

/// The time of an event: monotonic for timers, wall clock (ms since the
/// epoch) for timestamps that are persisted.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub at: Instant,
    pub wall_ms: i64,
}

impl Now {
    pub fn after(self, d: Duration) -> Now {
        Now {
            at: self.at + d,
            wall_ms: self.wall_ms + d.as_millis() as i64,
        }
    }
}

/// The group states of Kafka's classic protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// Kafka's name of the state (DescribeGroups, ListGroups).
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// One member of a group.
#[derive(Clone, Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    pub assignment: Bytes,
    awaiting_join: Option<Token>,
    awaiting_sync: Option<Token>,
    /// Joined but its first rebalance has not completed: the session timeout
    /// does not apply yet, the new-member join timeout does.
    is_new: bool,
    /// When the member expires unless it heartbeats (None: no timer, e.g.
    /// while it waits in a rebalance).
    heartbeat_deadline: Option<Instant>,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    /// Same protocols with the same metadata, in the same order.
    fn matches(&self, protocols: &[Protocol]) -> bool {
        self.protocols == protocols
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|p| p.name == protocol)
    }

    pub fn is_awaiting_join(&self) -> bool {
        self.awaiting_join.is_some()
    }
}

/// A member as DescribeGroups shows it.
#[derive(Clone, Debug)]
pub struct DescribedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// DescribeGroups' view of a group.
#[derive(Clone, Debug)]
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    /// The selected protocol, only in Stable (as Kafka).
    pub protocol_data: String,
    pub members: Vec<DescribedMember>,
}

#[derive(Clone, Copy, Debug)]
enum JoinTimer {
    /// The first rebalance of an empty group waits `delay`, and again while
    /// new members keep arriving, up to the rebalance timeout.
    Initial {
        at: Instant,
        delay: Duration,
        remaining: Duration,
    },
    /// A rebalance of a non-empty group: complete at the rebalance timeout
    /// with whoever has rejoined.
    Regular { at: Instant },
}

impl JoinTimer {
    fn at(self) -> Instant {
        match self {
            JoinTimer::Initial { at, .. } | JoinTimer::Regular { at } => at,
        }
    }
}

/// A consumer group: membership state machine plus committed offsets.
#[derive(Debug)]
pub struct Group {
    id: String,
    state: GroupState,
    previous_state: GroupState,
    /// Wall-clock ms when the group entered `state` (offset expiry of empty groups).
    state_since_ms: i64,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// group.instance.id -> member id.
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with their expiry.
    pending_members: HashMap<String, Instant>,
    /// Members that got their JoinGroup response but have not synced yet.
    pending_sync: BTreeSet<String>,
    join_timer: Option<JoinTimer>,
    /// (deadline, generation) for members to send SyncGroup.
    sync_deadline: Option<(Instant, i32)>,
    new_member_added: bool,
    offsets: BTreeMap<(String, i32), OffsetValue>,
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

impl Group {
    /// A new, empty group.
    pub fn new(id: &str, now: Now) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            previous_state: GroupState::Empty,
            state_since_ms: now.wall_ms,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            pending_sync: BTreeSet::new(),
            join_timer: None,
            sync_deadline: None,
            new_member_added: false,
            offsets: BTreeMap::new(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.get(id)
    }

    pub fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    /// No members, no pending members, no offsets, never rebalanced: a group
    /// that a failed request created and nothing refers to.
    pub fn is_unused(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending_members.is_empty()
            && self.offsets.is_empty()
            && self.generation == 0
    }

    /// Empty with no offsets left: the coordinator may delete it.
    pub fn is_removable(&self) -> bool {
        self.is_removable_without_offsets() && self.offsets.is_empty()
    }

    /// Empty with no members: removable once its offsets are gone.
    pub fn is_removable_without_offsets(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending_members.is_empty()
    }

    fn transition(&mut self, to: GroupState, now: Now) {
        self.previous_state = self.state;
        self.state = to;
        self.state_since_ms = now.wall_ms;
    }

    /// Marks the group removed; requests still holding it get
    /// COORDINATOR_NOT_AVAILABLE and retry on a fresh group.
    pub fn mark_dead(&mut self, now: Now) {
        self.transition(GroupState::Dead, now);
        self.join_timer = None;
        self.sync_deadline = None;
    }

    fn rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    fn has_all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.is_awaiting_join())
    }

    fn can_rebalance(&self) -> bool {
        matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty
        )
    }

    fn unknown(&self, member_id: &str) -> GroupError {
        GroupError::unknown_member(&self.id, member_id)
    }

    fn not_available(&self) -> GroupError {
        GroupError::CoordinatorNotAvailable {
            group: self.id.clone(),
        }
    }

    /// A request names a current member: a static member must be the one
    /// currently registered for its instance id.
    fn validate_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        match instance_id {
            Some(inst) => match self.static_members.get(inst) {
                None => Err(self.unknown(member_id)),
                Some(current) if current != member_id => Err(GroupError::FencedInstanceId {
                    group: self.id.clone(),
                    instance_id: inst.to_string(),
                    member_id: member_id.to_string(),
                }),
                Some(_) => Ok(()),
            },
            None if self.members.contains_key(member_id) => Ok(()),
            None => Err(self.unknown(member_id)),
        }
    }

    fn check_generation(&self, got: i32) -> Result<(), GroupError> {
        if got == self.generation {
            Ok(())
        } else {
            Err(GroupError::IllegalGeneration {
                group: self.id.clone(),
                got,
                current: self.generation,
            })
        }
    }

    fn supports_protocols(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if self.state == GroupState::Empty {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols
                .iter()
                .any(|p| self.members.values().all(|m| m.supports(&p.name)))
    }

    /// The protocol all members support that most members prefer (ties: the
    /// earlier one in the first member's list).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|n| self.members.values().all(|m| m.supports(n)))
            .collect();
        let mut votes = vec![0usize; candidates.len()];
        for m in self.members.values() {
            if let Some(i) = m
                .protocols
                .iter()
                .find_map(|p| candidates.iter().position(|c| *c == p.name))
            {
                votes[i] += 1;
            }
        }
        let mut best: Option<usize> = None;
        for (i, v) in votes.iter().enumerate() {
            if best.is_none_or(|b| *v > votes[b]) {
                best = Some(i);
            }
        }
        best.map(|i| candidates[i].to_string())
    }

    fn current_members(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol_name.as_deref().unwrap_or("");
        self.members
            .values()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                metadata: m.metadata(protocol),
            })
            .collect()
    }

    fn join_result(
        &self,
        member_id: &str,
        members: Vec<JoinedMember>,
        leader: String,
    ) -> JoinResult {
        JoinResult {
            member_id: member_id.to_string(),
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader,
            skip_assignment: false,
            members,
        }
    }

    fn leader_or_empty(&self) -> String {
        self.leader.clone().unwrap_or_default()
    }

    // ----- JoinGroup -----------------------------------------------------

    /// Handles a JoinGroup. The reply for `token` is in the returned effects,
    /// now or from a later call (when the rebalance completes).
    pub fn join(&mut self, now: Now, req: JoinRequest, token: Token, cfg: &GroupConfig) -> Effects {
        let mut fx = Effects::default();
        if self.state == GroupState::Dead {
            fx.join(token, Err(self.not_available()));
            return fx;
        }
        if !self.supports_protocols(&req.protocol_type, &req.protocols) {
            fx.join(
                token,
                Err(GroupError::InconsistentGroupProtocol {
                    group: self.id.clone(),
                    protocol_type: req.protocol_type.clone(),
                }),
            );
            return fx;
        }
        if req.member_id.is_empty() {
            let new_id = req.new_member_id.clone();
            match req.group_instance_id.clone() {
                Some(inst) => match self.static_members.get(&inst).cloned() {
                    Some(old) => {
                        self.replace_static_member(now, req, token, old, new_id, cfg, &mut fx)
                    }
                    None => self.add_member_and_rebalance(now, req, new_id, token, cfg, &mut fx),
                },
                None if req.require_known_member_id => {
                    self.pending_members
                        .insert(new_id.clone(), now.at + millis(req.session_timeout_ms));
                    fx.join(
                        token,
                        Err(GroupError::MemberIdRequired { member_id: new_id }),
                    );
                }
                None => self.add_member_and_rebalance(now, req, new_id, token, cfg, &mut fx),
            }
            return fx;
        }
        if self.pending_members.remove(&req.member_id).is_some() {
            let id = req.member_id.clone();
            self.add_member_and_rebalance(now, req, id, token, cfg, &mut fx);
            return fx;
        }
        if let Err(e) = self.validate_member(&req.member_id, req.group_instance_id.as_deref()) {
            fx.join(token, Err(e));
            return fx;
        }
        let Some(member) = self.members.get(&req.member_id) else {
            fx.join(token, Err(self.unknown(&req.member_id)));
            return fx;
        };
        let same = member.matches(&req.protocols);
        let is_leader = self.leader.as_deref() == Some(req.member_id.as_str());
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member_and_rebalance(now, req, token, cfg, &mut fx)
            }
            GroupState::CompletingRebalance if same => {
                // The member lost its JoinGroup response: send it again.
                let members = if is_leader {
                    self.current_members()
                } else {
                    Vec::new()
                };
                let r = self.join_result(&req.member_id, members, self.leader_or_empty());
                fx.join(token, Ok(r));
            }
            GroupState::Stable if same && !is_leader => {
                let r = self.join_result(&req.member_id, Vec::new(), self.leader_or_empty());
                fx.join(token, Ok(r));
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                // Changed metadata, or the leader asks for a new assignment.
                self.update_member_and_rebalance(now, req, token, cfg, &mut fx)
            }
            GroupState::Empty | GroupState::Dead => {
                fx.join(token, Err(self.unknown(&req.member_id)))
            }
        }
        fx
    }

    fn add_member_and_rebalance(
        &mut self,
        now: Now,
        req: JoinRequest,
        id: String,
        token: Token,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) {
        let member = Member {
            id: id.clone(),
            instance_id: req.group_instance_id,
            client_id: req.client_id,
            client_host: req.client_host,
            session_timeout: millis(req.session_timeout_ms),
            rebalance_timeout: millis(req.rebalance_timeout_ms),
            protocol_type: req.protocol_type,
            protocols: req.protocols,
            assignment: Bytes::new(),
            awaiting_join: Some(token),
            awaiting_sync: None,
            is_new: true,
            heartbeat_deadline: Some(now.at + cfg.new_member_join_timeout),
        };
        if self.state == GroupState::PreparingRebalance && self.previous_state == GroupState::Empty
        {
            self.new_member_added = true;
        }
        if self.members.is_empty() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(id.clone());
        }
        if let Some(inst) = &member.instance_id {
            self.static_members.insert(inst.clone(), id.clone());
        }
        self.members.insert(id, member);
        self.maybe_prepare_rebalance_or_complete_join(now, cfg, fx);
    }

    fn update_member_and_rebalance(
        &mut self,
        now: Now,
        req: JoinRequest,
        token: Token,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) {
        if let Some(m) = self.members.get_mut(&req.member_id) {
            if let Some(old) = m.awaiting_join.replace(token) {
                // A second JoinGroup while the first is parked: the client
                // gave up on the first one.
                fx.join(
                    old,
                    Err(GroupError::RebalanceInProgress {
                        group: self.id.clone(),
                    }),
                );
            }
            m.protocols = req.protocols;
            m.rebalance_timeout = millis(req.rebalance_timeout_ms);
            m.session_timeout = millis(req.session_timeout_ms);
        }
        self.maybe_prepare_rebalance_or_complete_join(now, cfg, fx);
    }

    /// A static member restarted (JoinGroup with its instance id and no
    /// member id): it takes over the old member's place and assignment. In
    /// Stable, with the same protocols, the group does not rebalance.
    #[allow(clippy::too_many_arguments)]
    fn replace_static_member(
        &mut self,
        now: Now,
        req: JoinRequest,
        token: Token,
        old_id: String,
        new_id: String,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) {
        let current_leader = self.leader_or_empty();
        let Some(mut member) = self.members.remove(&old_id) else {
            self.static_members
                .remove(req.group_instance_id.as_deref().unwrap_or_default());
            self.add_member_and_rebalance(now, req, new_id, token, cfg, fx);
            return;
        };
        let fenced = || GroupError::FencedInstanceId {
            group: self.id.clone(),
            instance_id: req.group_instance_id.clone().unwrap_or_default(),
            member_id: old_id.clone(),
        };
        if let Some(t) = member.awaiting_join.take() {
            fx.join(t, Err(fenced()));
        }
        if let Some(t) = member.awaiting_sync.take() {
            fx.sync(t, Err(fenced()));
        }
        member.id = new_id.clone();
        member.heartbeat_deadline = Some(now.at + millis(req.session_timeout_ms));
        member.protocols = req.protocols;
        member.rebalance_timeout = millis(req.rebalance_timeout_ms);
        member.session_timeout = millis(req.session_timeout_ms);
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        member.awaiting_join = Some(token);
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(new_id.clone());
        }
        if self.pending_sync.remove(&old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        if let Some(inst) = &member.instance_id {
            self.static_members.insert(inst.clone(), new_id.clone());
        }
        self.members.insert(new_id.clone(), member);
        match self.state {
            GroupState::Stable => {
                if self.select_protocol() == self.protocol_name {
                    // Same protocol: keep the assignment, no rebalance.
                    fx.store = true;
                    let is_leader = self.leader.as_deref() == Some(new_id.as_str());
                    let result = if req.supports_skip_assignment {
                        let mut r = self.join_result(
                            &new_id,
                            if is_leader {
                                self.current_members()
                            } else {
                                Vec::new()
                            },
                            self.leader_or_empty(),
                        );
                        r.skip_assignment = is_leader;
                        r
                    } else {
                        // The old leader id, so that a restarted leader does
                        // not compute an assignment a stable group would
                        // never hand out.
                        self.join_result(&new_id, Vec::new(), current_leader)
                    };
                    if let Some(m) = self.members.get_mut(&new_id) {
                        m.awaiting_join = None;
                    }
                    fx.join(token, Ok(result));
                } else {
                    self.maybe_prepare_rebalance_or_complete_join(now, cfg, fx);
                }
            }
            // The leader may already have an assignment for the old member
            // id: start over.
            GroupState::CompletingRebalance => self.prepare_rebalance(now, cfg, fx),
            _ => self.maybe_complete_join_phase(now, cfg, fx),
        }
    }

    fn maybe_prepare_rebalance_or_complete_join(
        &mut self,
        now: Now,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) {
        if self.can_rebalance() {
            self.prepare_rebalance(now, cfg, fx);
        } else {
            self.maybe_complete_join_phase(now, cfg, fx);
        }
    }

    fn maybe_complete_join_phase(&mut self, now: Now, cfg: &GroupConfig, fx: &mut Effects) {
        if self.state == GroupState::PreparingRebalance
            && self.has_all_members_joined()
            && self.previous_state != GroupState::Empty
        {
            self.complete_join(now, cfg, fx);
        }
    }

    fn prepare_rebalance(&mut self, now: Now, cfg: &GroupConfig, fx: &mut Effects) {
        if self.state == GroupState::CompletingRebalance {
            self.reset_and_propagate_error(now, fx);
        }
        self.pending_sync.clear();
        self.sync_deadline = None;
        let initial = self.state == GroupState::Empty;
        if initial {
            let delay = cfg.initial_rebalance_delay;
            self.new_member_added = false;
            self.join_timer = Some(JoinTimer::Initial {
                at: now.at + delay,
                delay,
                remaining: self.rebalance_timeout().saturating_sub(delay),
            });
        }
        self.transition(GroupState::PreparingRebalance, now);
        if !initial {
            if self.has_all_members_joined() {
                self.complete_join(now, cfg, fx);
            } else {
                self.join_timer = Some(JoinTimer::Regular {
                    at: now.at + self.rebalance_timeout(),
                });
            }
        }
    }

    /// Members waiting in SyncGroup are told to rejoin.
    fn reset_and_propagate_error(&mut self, now: Now, fx: &mut Effects) {
        let group = self.id.clone();
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            if let Some(t) = m.awaiting_sync.take() {
                fx.sync(
                    t,
                    Err(GroupError::RebalanceInProgress {
                        group: group.clone(),
                    }),
                );
                m.heartbeat_deadline = Some(now.at + m.session_timeout);
            }
        }
    }

    fn maybe_elect_new_joined_leader(&mut self) -> bool {
        if let Some(l) = &self.leader {
            if self.members.get(l).is_some_and(Member::is_awaiting_join) {
                return true;
            }
        }
        match self.members.values().find(|m| m.is_awaiting_join()) {
            Some(m) => {
                self.leader = Some(m.id.clone());
                true
            }
            None => false,
        }
    }

    /// The join phase ends (everyone rejoined, or the timer fired): drop the
    /// dynamic members that did not rejoin, start the next generation and
    /// answer every parked JoinGroup.
    fn complete_join(&mut self, now: Now, cfg: &GroupConfig, fx: &mut Effects) {
        self.join_timer = None;
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.is_awaiting_join() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id, fx);
        }
        if self.state == GroupState::Dead {
            return;
        }
        if !self.maybe_elect_new_joined_leader() && !self.members.is_empty() {
            // Only static members that have not rejoined: wait another round.
            self.join_timer = Some(JoinTimer::Regular {
                at: now.at + self.rebalance_timeout(),
            });
            return;
        }
        self.generation += 1;
        if self.members.is_empty() {
            self.protocol_name = None;
            self.transition(GroupState::Empty, now);
            fx.store = true;
            return;
        }
        self.protocol_name = self.select_protocol();
        self.transition(GroupState::CompletingRebalance, now);
        let all = self.current_members();
        let leader = self.leader_or_empty();
        let mut replies = Vec::new();
        for m in self.members.values_mut() {
            if let Some(t) = m.awaiting_join.take() {
                let members = if m.id == leader {
                    all.clone()
                } else {
                    Vec::new()
                };
                replies.push((t, m.id.clone(), members));
            }
            m.heartbeat_deadline = Some(now.at + m.session_timeout);
            m.is_new = false;
            self.pending_sync.insert(m.id.clone());
        }
        for (t, id, members) in replies {
            let r = self.join_result(&id, members, leader.clone());
            fx.join(t, Ok(r));
        }
        self.sync_deadline = Some((now.at + self.rebalance_timeout(), self.generation));
        let _ = cfg;
    }

    /// Removes a member, answering its parked requests with UNKNOWN_MEMBER_ID.
    fn remove_member(&mut self, id: &str, fx: &mut Effects) {
        let Some(m) = self.members.remove(id) else {
            return;
        };
        if let Some(t) = m.awaiting_join {
            fx.join(t, Err(self.unknown(id)));
        }
        if let Some(t) = m.awaiting_sync {
            fx.sync(t, Err(self.unknown(id)));
        }
        if let Some(inst) = &m.instance_id {
            if self.static_members.get(inst).map(String::as_str) == Some(id) {
                self.static_members.remove(inst);
            }
        }
        self.pending_sync.remove(id);
        if self.leader.as_deref() == Some(id) {
            self.leader = self.members.keys().next().cloned();
        }
    }

    fn remove_member_and_update(
        &mut self,
        now: Now,
        id: &str,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) {
        self.remove_member(id, fx);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance_or_complete_join(now, cfg, fx)
            }
            GroupState::PreparingRebalance if self.has_all_members_joined() => {
                self.complete_join(now, cfg, fx)
            }
            _ => {}
        }
    }

    // ----- SyncGroup -----------------------------------------------------

    /// Handles a SyncGroup. The leader's request carries the assignment; the
    /// others wait for it (their replies come from the leader's call).
    pub fn sync(&mut self, now: Now, req: SyncRequest, token: Token) -> Effects {
        let mut fx = Effects::default();
        if let Err(e) = self.validate_sync(&req) {
            fx.sync(token, Err(e));
            return fx;
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => {
                fx.sync(token, Err(self.unknown(&req.member_id)))
            }
            GroupState::PreparingRebalance => fx.sync(
                token,
                Err(GroupError::RebalanceInProgress {
                    group: self.id.clone(),
                }),
            ),
            GroupState::CompletingRebalance => {
                let group = self.id.clone();
                if let Some(m) = self.members.get_mut(&req.member_id) {
                    if let Some(old) = m.awaiting_sync.replace(token) {
                        fx.sync(old, Err(GroupError::RebalanceInProgress { group }));
                    }
                }
                self.sync_received(&req.member_id);
                if self.leader.as_deref() == Some(req.member_id.as_str()) {
                    let mut given: HashMap<String, Bytes> = req.assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.remove(&m.id).unwrap_or_default();
                    }
                    fx.store = true;
                    self.propagate_assignment(now, &mut fx);
                    self.transition(GroupState::Stable, now);
                }
            }
            GroupState::Stable => {
                self.sync_received(&req.member_id);
                let protocol_type = self.protocol_type.clone();
                let protocol_name = self.protocol_name.clone();
                if let Some(m) = self.members.get_mut(&req.member_id) {
                    m.heartbeat_deadline = Some(now.at + m.session_timeout);
                    fx.sync(
                        token,
                        Ok(SyncResult {
                            protocol_type,
                            protocol_name,
                            assignment: m.assignment.clone(),
                        }),
                    );
                }
            }
        }
        fx
    }

    fn validate_sync(&self, req: &SyncRequest) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(self.not_available());
        }
        self.validate_member(&req.member_id, req.group_instance_id.as_deref())?;
        self.check_generation(req.generation_id)?;
        let inconsistent = |given: &Option<String>, ours: &Option<String>| matches!((given, ours), (Some(g), Some(o)) if g != o);
        if inconsistent(&req.protocol_type, &self.protocol_type)
            || inconsistent(&req.protocol_name, &self.protocol_name)
        {
            return Err(GroupError::InconsistentGroupProtocol {
                group: self.id.clone(),
                protocol_type: req.protocol_type.clone().unwrap_or_default(),
            });
        }
        Ok(())
    }

    fn sync_received(&mut self, member_id: &str) {
        self.pending_sync.remove(member_id);
        if self.pending_sync.is_empty() {
            self.sync_deadline = None;
        }
    }

    fn propagate_assignment(&mut self, now: Now, fx: &mut Effects) {
        let protocol_type = self.protocol_type.clone();
        let protocol_name = self.protocol_name.clone();
        for m in self.members.values_mut() {
            if let Some(t) = m.awaiting_sync.take() {
                fx.sync(
                    t,
                    Ok(SyncResult {
                        protocol_type: protocol_type.clone(),
                        protocol_name: protocol_name.clone(),
                        assignment: m.assignment.clone(),
                    }),
                );
                m.heartbeat_deadline = Some(now.at + m.session_timeout);
            }
        }
    }

    // ----- Heartbeat and LeaveGroup --------------------------------------

    /// Handles a Heartbeat: keeps the member alive, and tells it when a
    /// rebalance needs it to rejoin.
    pub fn heartbeat(
        &mut self,
        now: Now,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(self.not_available());
        }
        self.validate_member(member_id, instance_id)?;
        self.check_generation(generation)?;
        if self.state == GroupState::Empty {
            return Err(self.unknown(member_id));
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.heartbeat_deadline = Some(now.at + m.session_timeout);
        }
        if self.state == GroupState::PreparingRebalance {
            return Err(GroupError::RebalanceInProgress {
                group: self.id.clone(),
            });
        }
        Ok(())
    }

    /// Handles a LeaveGroup: one result per leaving member, or a group-level
    /// error.
    pub fn leave(
        &mut self,
        now: Now,
        leaving: &[LeavingMember],
        cfg: &GroupConfig,
    ) -> (Result<Vec<Result<(), GroupError>>, GroupError>, Effects) {
        let mut fx = Effects::default();
        if self.state == GroupState::Dead {
            return (Err(self.not_available()), fx);
        }
        let mut results = Vec::with_capacity(leaving.len());
        let mut any = false;
        for l in leaving {
            let r = if l.member_id.is_empty() {
                match l
                    .group_instance_id
                    .as_ref()
                    .and_then(|i| self.static_members.get(i).cloned())
                {
                    Some(id) => {
                        self.remove_member(&id, &mut fx);
                        Ok(())
                    }
                    None => Err(self.unknown(&l.member_id)),
                }
            } else if self.pending_members.remove(&l.member_id).is_some() {
                Ok(())
            } else {
                self.validate_member(&l.member_id, l.group_instance_id.as_deref())
                    .map(|()| self.remove_member(&l.member_id, &mut fx))
            };
            any |= r.is_ok();
            results.push(r);
        }
        if any {
            match self.state {
                GroupState::Stable | GroupState::CompletingRebalance => {
                    self.maybe_prepare_rebalance_or_complete_join(now, cfg, &mut fx)
                }
                GroupState::PreparingRebalance => self.maybe_complete_join_phase(now, cfg, &mut fx),
                _ => {}
            }
        }
        (Ok(results), fx)
    }

    // ----- Timers --------------------------------------------------------

    /// The earliest time [`Group::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let members = self.members.values().filter_map(|m| m.heartbeat_deadline);
        let pending = self.pending_members.values().copied();
        members
            .chain(pending)
            .chain(self.join_timer.map(JoinTimer::at))
            .chain(self.sync_deadline.map(|(at, _)| at))
            .min()
    }

    /// Fires every timer due at `now`: member and pending-member expiry, the
    /// end of the join phase, the SyncGroup deadline.
    pub fn tick(&mut self, now: Now, cfg: &GroupConfig) -> Effects {
        let mut fx = Effects::default();
        if self.state == GroupState::Dead {
            return fx;
        }
        let expired: Vec<String> = self
            .pending_members
            .iter()
            .filter(|(_, d)| **d <= now.at)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.pending_members.remove(&id);
            if self.state == GroupState::PreparingRebalance && self.has_all_members_joined() {
                self.complete_join(now, cfg, &mut fx);
            }
        }
        let due: Vec<String> = self
            .members
            .values()
            .filter(|m| m.heartbeat_deadline.is_some_and(|d| d <= now.at))
            .map(|m| m.id.clone())
            .collect();
        for id in due {
            let Some(m) = self.members.get_mut(&id) else {
                continue;
            };
            if m.heartbeat_deadline.is_none_or(|d| d > now.at) {
                continue; // rescheduled by a rebalance completed in this tick
            }
            if !m.is_new && (m.awaiting_join.is_some() || m.awaiting_sync.is_some()) {
                // Waiting in a rebalance counts as alive; the timer restarts
                // when the rebalance answers it.
                m.heartbeat_deadline = None;
            } else {
                self.remove_member_and_update(now, &id, cfg, &mut fx);
            }
        }
        if let Some(timer) = self.join_timer.filter(|t| t.at() <= now.at) {
            match timer {
                JoinTimer::Initial {
                    delay, remaining, ..
                } if self.new_member_added && !remaining.is_zero() => {
                    self.new_member_added = false;
                    let next = cfg.initial_rebalance_delay.min(remaining);
                    self.join_timer = Some(JoinTimer::Initial {
                        at: now.at + next,
                        delay: next,
                        remaining: remaining.saturating_sub(delay),
                    });
                }
                _ => {
                    if self.state == GroupState::PreparingRebalance {
                        self.complete_join(now, cfg, &mut fx);
                    } else {
                        self.join_timer = None;
                    }
                }
            }
        }
        if let Some((at, generation)) = self.sync_deadline.filter(|(at, _)| *at <= now.at) {
            let _ = at;
            self.sync_deadline = None;
            if generation == self.generation
                && matches!(
                    self.state,
                    GroupState::CompletingRebalance | GroupState::Stable
                )
                && !self.pending_sync.is_empty()
            {
                let late: Vec<String> =
                    std::mem::take(&mut self.pending_sync).into_iter().collect();
                for id in late {
                    self.remove_member(&id, &mut fx);
                }
                self.prepare_rebalance(now, cfg, &mut fx);
            }
        }
        fx
    }

    // ----- Describe ------------------------------------------------------

    pub fn describe(&self) -> GroupDescription {
        let stable = self.state == GroupState::Stable;
        let protocol = self.protocol_name.clone().unwrap_or_default();
        GroupDescription {
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_data: if stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: self
                .members
                .values()
                .map(|m| DescribedMember {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata(&protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
