//! Where a partition's leader is now, for clients told
//! NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH (KIP-951): Produce v10+
//! and Fetch v12+ name the leader and its epoch in the partition's
//! answer, and Produce v10+ / Fetch v16+ add the endpoints of the leaders
//! named, so a client goes to the new leader without a Metadata round
//! trip.

use std::collections::BTreeSet;

use kafka_protocol::messages::{fetch_response, produce_response, BrokerId, FetchResponse};
use kafka_protocol::messages::{ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::error::Code;
use crate::metadata::ClusterView;

/// Whether a partition error sends the client to another leader.
fn moved(code: i16) -> bool {
    code == Code::NotLeaderOrFollower.code() || code == Code::FencedLeaderEpoch.code()
}

/// The leader and epoch of `topic` (by id when `by_id`, else by name)
/// partition `index`, as `view` has them: (-1, -1) when unknown.
fn leader_of(
    view: &ClusterView,
    name: &TopicName,
    id: Uuid,
    by_id: bool,
    index: i32,
) -> (i32, i32) {
    let topic = if by_id {
        view.topic_by_id(id)
    } else {
        view.topic(name.0.as_str())
    };
    topic
        .and_then(|t| t.partitions.get(usize::try_from(index).ok()?))
        .filter(|p| p.leader >= 0)
        .map_or((-1, -1), |p| (p.leader, p.leader_epoch))
}

/// The registered endpoints of `ids` on `listener` (unknown ones left
/// out).
fn endpoints(
    view: &ClusterView,
    ids: BTreeSet<i32>,
    listener: &str,
) -> Vec<(i32, StrBytes, i32, Option<StrBytes>)> {
    ids.into_iter()
        .filter_map(|id| {
            let b = view.brokers.get(&id)?;
            let (host, port) = b.endpoint(listener)?;
            Some((
                id,
                StrBytes::from_string(host),
                port,
                b.rack.clone().map(StrBytes::from_string),
            ))
        })
        .collect()
}

/// Fills the leader of each moved partition a Produce answer names (where
/// the answer has none yet) and the endpoints of those leaders.
pub fn produce(resp: &mut ProduceResponse, view: &ClusterView, version: i16, listener: &str) {
    if version < 10 {
        return;
    }
    let mut named = BTreeSet::new();
    for t in &mut resp.responses {
        for p in &mut t.partition_responses {
            if !moved(p.error_code) {
                continue;
            }
            if p.current_leader.leader_id.0 < 0 {
                let (leader, epoch) = leader_of(view, &t.name, t.topic_id, version >= 13, p.index);
                p.current_leader = produce_response::LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch);
            }
            if p.current_leader.leader_id.0 >= 0 {
                named.insert(p.current_leader.leader_id.0);
            }
        }
    }
    resp.node_endpoints = endpoints(view, named, listener)
        .into_iter()
        .map(|(id, host, port, rack)| {
            produce_response::NodeEndpoint::default()
                .with_node_id(BrokerId(id))
                .with_host(host)
                .with_port(port)
                .with_rack(rack)
        })
        .collect();
}

/// As [`produce`], for a Fetch answer.
pub fn fetch(resp: &mut FetchResponse, view: &ClusterView, version: i16, listener: &str) {
    if version < 12 {
        return;
    }
    let mut named = BTreeSet::new();
    for t in &mut resp.responses {
        for p in &mut t.partitions {
            if !moved(p.error_code) {
                continue;
            }
            let (leader, epoch) =
                leader_of(view, &t.topic, t.topic_id, version >= 13, p.partition_index);
            p.current_leader = fetch_response::LeaderIdAndEpoch::default()
                .with_leader_id(BrokerId(leader))
                .with_leader_epoch(epoch);
            if leader >= 0 {
                named.insert(leader);
            }
        }
    }
    if version < 16 {
        return;
    }
    resp.node_endpoints = endpoints(view, named, listener)
        .into_iter()
        .map(|(id, host, port, rack)| {
            fetch_response::NodeEndpoint::default()
                .with_node_id(BrokerId(id))
                .with_host(host)
                .with_port(port)
                .with_rack(rack)
        })
        .collect();
}
