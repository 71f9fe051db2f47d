//! The membership snapshot (`GroupMetadataValue` in `__consumer_offsets`):
//! taken after the changes a restart should see, restored when the
//! coordinator loads.

use super::{millis, Group, GroupState, Member, Now, Protocol};
use crate::group::records::{GroupValue, MemberValue};

impl Group {
    /// The membership snapshot to persist (`GroupMetadataValue`).
    pub fn snapshot(&self) -> GroupValue {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol_name.clone(),
            leader: self.leader.clone(),
            current_state_timestamp: self.state_since_ms,
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis().min(i32::MAX as u128)
                        as i32,
                    session_timeout_ms: m.session_timeout.as_millis().min(i32::MAX as u128) as i32,
                    subscription: m.metadata(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Replaces the membership with a persisted snapshot (at load). A group
    /// with members comes back Stable and its members get a fresh session.
    pub fn restore(&mut self, mut v: GroupValue, now: Now) {
        if v.protocol.is_none() {
            // Members without a selected protocol cannot be Stable: they
            // rejoin anyway, so keep none.
            v.members.clear();
        }
        let protocol = v.protocol.clone().unwrap_or_default();
        self.members.clear();
        self.static_members.clear();
        self.pending_members.clear();
        self.pending_sync.clear();
        self.join_timer = None;
        self.sync_deadline = None;
        for m in v.members {
            if let Some(inst) = &m.group_instance_id {
                self.static_members
                    .insert(inst.clone(), m.member_id.clone());
            }
            let member = Member {
                id: m.member_id.clone(),
                instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                session_timeout: millis(m.session_timeout_ms),
                rebalance_timeout: millis(m.rebalance_timeout_ms),
                protocol_type: v.protocol_type.clone(),
                protocols: vec![Protocol {
                    name: protocol.clone(),
                    metadata: m.subscription,
                }],
                assignment: m.assignment,
                awaiting_join: None,
                awaiting_sync: None,
                is_new: false,
                heartbeat_deadline: Some(now.at + millis(m.session_timeout_ms)),
            };
            self.members.insert(m.member_id, member);
        }
        self.generation = v.generation;
        self.protocol_type = Some(v.protocol_type).filter(|t| !t.is_empty());
        self.protocol_name = v.protocol;
        self.leader = v.leader.filter(|l| self.members.contains_key(l));
        if self.leader.is_none() {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        self.previous_state = self.state;
        self.state_since_ms = if v.current_state_timestamp >= 0 {
            v.current_state_timestamp
        } else {
            now.wall_ms
        };
    }
}
