//! The committed offsets of a group: who may commit, what expires
//! (KIP-211), and which topics the members consume (OffsetDelete).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::{Group, GroupState};
use crate::group::error::GroupError;
use crate::group::records::OffsetValue;

impl Group {
    /// May this (member, generation) commit offsets now?
    pub fn validate_offset_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(self.not_available());
        }
        if generation >= 0 || !member_id.is_empty() || instance_id.is_some() {
            self.validate_member(member_id, instance_id)?;
            self.check_generation(generation)?;
        } else if self.state != GroupState::Empty {
            // Only members commit for a group that has members.
            return Err(self.unknown(member_id));
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress {
                group: self.id.clone(),
            });
        }
        Ok(())
    }

    pub fn commit_offset(&mut self, topic: &str, partition: i32, v: OffsetValue) {
        self.offsets.insert((topic.to_string(), partition), v);
    }

    pub fn remove_offset(&mut self, topic: &str, partition: i32) -> bool {
        self.offsets
            .remove(&(topic.to_string(), partition))
            .is_some()
    }

    pub fn offset(&self, topic: &str, partition: i32) -> Option<&OffsetValue> {
        self.offsets.get(&(topic.to_string(), partition))
    }

    pub fn offsets(&self) -> &BTreeMap<(String, i32), OffsetValue> {
        &self.offsets
    }

    /// Offsets due for expiry (KIP-211): in an empty group, those not
    /// committed and not in use for `retention_ms`; an explicit expiry time
    /// from OffsetCommit v2-v4 wins. Groups with members keep theirs.
    pub fn expired_offsets(&self, now_ms: i64, retention_ms: i64) -> Vec<(String, i32)> {
        if self.state != GroupState::Empty {
            return Vec::new();
        }
        self.offsets
            .iter()
            .filter(|(_, v)| match v.expire_timestamp {
                Some(t) => now_ms >= t,
                None => {
                    let base = v.commit_timestamp.max(self.state_since_ms);
                    base.saturating_add(retention_ms) <= now_ms
                }
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Topics the members subscribe to, when the group uses the consumer
    /// protocol and every subscription decodes; None means unknown.
    pub fn subscribed_topics(&self) -> Option<BTreeSet<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut topics = BTreeSet::new();
        for m in self.members.values() {
            topics.extend(subscription_topics(&m.metadata(protocol))?);
        }
        Some(topics)
    }
}

/// The topics of a `ConsumerProtocolSubscription` (the consumer protocol's
/// member metadata); None if it does not decode.
pub fn subscription_topics(metadata: &Bytes) -> Option<Vec<String>> {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::{Decodable, Message};
    let mut b = metadata.clone();
    if b.len() < 2 {
        return None;
    }
    let version = i16::from_be_bytes([b[0], b[1]]);
    let _ = bytes::Buf::get_i16(&mut b);
    if version < 0 {
        return None;
    }
    // Newer versions only add fields at the end: read them as the newest we know.
    let version = version.min(ConsumerProtocolSubscription::VERSIONS.max);
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ConsumerProtocolSubscription::decode(&mut b, version)
    }));
    match decoded {
        Ok(Ok(s)) => Some(s.topics.iter().map(|t| t.to_string()).collect()),
        _ => None,
    }
}
