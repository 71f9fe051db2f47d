//! Errors of the group coordinator. The API layer maps each variant to one
//! Kafka error code (`api::group::group_error_code`).

use crate::partition::PartitionError;

/// Why a group operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("group id is invalid. group={group:?}")]
    InvalidGroupId { group: String },
    #[error("session timeout is outside the broker's range. session_timeout_ms={got}, min={min}, max={max}")]
    InvalidSessionTimeout { got: i32, min: i32, max: i32 },
    #[error("a member id is required; rejoin with the one assigned. member_id={member_id}")]
    MemberIdRequired { member_id: String },
    #[error("unknown member. group={group}, member_id={member_id}")]
    UnknownMemberId { group: String, member_id: String },
    #[error("static member was fenced by a newer instance. group={group}, group_instance_id={instance_id}, member_id={member_id}")]
    FencedInstanceId {
        group: String,
        instance_id: String,
        member_id: String,
    },
    #[error("stale generation. group={group}, generation={got}, current={current}")]
    IllegalGeneration {
        group: String,
        got: i32,
        current: i32,
    },
    #[error("group is rebalancing; rejoin. group={group}")]
    RebalanceInProgress { group: String },
    #[error("protocol type or protocols do not match the group's. group={group}, protocol_type={protocol_type:?}")]
    InconsistentGroupProtocol {
        group: String,
        protocol_type: String,
    },
    #[error("group is being removed or reloaded; retry. group={group}")]
    CoordinatorNotAvailable { group: String },
    #[error("coordinator is shutting down")]
    NotCoordinator,
    #[error("coordinator is still loading __consumer_offsets")]
    LoadInProgress,
    #[error("group does not exist. group={group}")]
    GroupIdNotFound { group: String },
    #[error("group still has members. group={group}")]
    NonEmptyGroup { group: String },
    #[error("group is subscribed to the topic. group={group}, topic={topic}")]
    SubscribedToTopic { group: String, topic: String },
    #[error("offset metadata is too large. size={size}, max={max}")]
    OffsetMetadataTooLarge { size: usize, max: usize },
    #[error("unknown topic or partition. topic={topic}, partition={partition}")]
    UnknownTopicOrPartition { topic: String, partition: i32 },
    #[error("offset commit is too large for one record batch. partition={partition}")]
    CommitTooLarge {
        partition: i32,
        #[source]
        source: Box<PartitionError>,
    },
    #[error("cannot write __consumer_offsets. partition={partition}")]
    Storage {
        partition: i32,
        #[source]
        source: Box<PartitionError>,
    },
    #[error("__consumer_offsets is not available: {message}")]
    OffsetsTopicUnavailable { message: String },
    #[error("timed out waiting for __consumer_offsets to be durable. partition={partition}")]
    Timeout { partition: i32 },
}

impl GroupError {
    pub(crate) fn unknown_member(group: &str, member_id: &str) -> GroupError {
        GroupError::UnknownMemberId {
            group: group.to_string(),
            member_id: member_id.to_string(),
        }
    }
}

/// Why a `__consumer_offsets` record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record is truncated. field={field}")]
    Truncated { field: &'static str },
    #[error("unknown record version. kind={kind}, version={version}")]
    UnknownVersion { kind: &'static str, version: i16 },
    #[error("string is not utf-8. field={field}")]
    NotUtf8 { field: &'static str },
    #[error("negative length. field={field}, len={len}")]
    NegativeLength { field: &'static str, len: i64 },
}
