//! Raw group requests: Kafka's group error codes and builders for JoinGroup,
//! SyncGroup, OffsetCommit and OffsetFetch frames, for the tests that check
//! exact error codes and every advertised version.

use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::common::raw::RawConn;

pub const NONE: i16 = 0;
pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
pub const INVALID_GROUP_ID: i16 = 24;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const INVALID_SESSION_TIMEOUT: i16 = 26;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const NON_EMPTY_GROUP: i16 = 68;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const MEMBER_ID_REQUIRED: i16 = 79;
pub const FENCED_INSTANCE_ID: i16 = 82;

pub fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

pub fn join_req(group: &str, member: &str, protocol: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(6000)
        .with_rebalance_timeout_ms(6000)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s(protocol))
            .with_metadata(bytes::Bytes::from_static(b"\x00\x01"))])
}

pub fn join(conn: &mut RawConn, v: i16, req: &JoinGroupRequest) -> JoinGroupResponse {
    conn.roundtrip(ApiKey::JoinGroup, v, req)
}

/// Joins `group` as its only member (v5 + MEMBER_ID_REQUIRED dance) and
/// syncs; returns (member id, generation).
pub fn join_alone(conn: &mut RawConn, group: &str, instance: Option<&str>) -> (String, i32) {
    let mut req = join_req(group, "", "range");
    req.group_instance_id = instance.map(s);
    let r = join(conn, 5, &req);
    let r = if r.error_code == MEMBER_ID_REQUIRED {
        req.member_id = r.member_id.clone();
        join(conn, 5, &req)
    } else {
        r
    };
    assert_eq!(r.error_code, NONE, "join {group}");
    let member = r.member_id.to_string();
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id(r.generation_id)
        .with_member_id(s(&member))
        .with_group_instance_id(instance.map(s))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(s(&member))
            .with_assignment(bytes::Bytes::from_static(b"assignment"))]);
    let sr: SyncGroupResponse = conn.roundtrip(ApiKey::SyncGroup, 3, &sync);
    assert_eq!(sr.error_code, NONE);
    assert_eq!(&sr.assignment[..], b"assignment");
    (member, r.generation_id)
}

pub fn commit_req(
    group: &str,
    member: &str,
    generation: i32,
    topic: &str,
    metadata: &str,
) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_retention_time_ms(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(5)
                .with_committed_leader_epoch(-1)
                .with_committed_metadata(Some(s(metadata)))])])
}

pub fn commit_code(conn: &mut RawConn, v: i16, req: &OffsetCommitRequest) -> i16 {
    let r: OffsetCommitResponse = conn.roundtrip(ApiKey::OffsetCommit, v, req);
    r.topics[0].partitions[0].error_code
}

pub fn fetch_offset(conn: &mut RawConn, group: &str, topic: &str) -> i64 {
    let r: OffsetFetchResponse = conn.roundtrip(
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partition_indexes(vec![0])])),
    );
    r.topics[0].partitions[0].committed_offset
}
