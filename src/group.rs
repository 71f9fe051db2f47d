//! The group coordinator: consumer groups under Kafka's classic protocol and
//! their committed offsets.
//!
//! Overview: [`state::Group`] is one group as a pure state machine
//! (membership, generations, rebalances, static members, offsets), tested
//! without sockets or clocks. [`Coordinator`] holds every group behind a
//! per-group mutex, parks JoinGroup/SyncGroup requests until their group
//! answers them, runs the timers (session, rebalance, sync, initial delay)
//! in one task, and writes to `__consumer_offsets` through the narrow
//! [`GroupLog`] trait ([`log`]), which the broker implements
//! (`broker/group_log.rs`). The records
//! use Kafka's own schemas ([`records`]). This node is the coordinator of
//! every group (single node); groups map to the 50 partitions of
//! `__consumer_offsets` as in Kafka, `abs(hashCode(group)) % 50`.
//!
//! Consistency: all changes to one group happen under its mutex, in the
//! order the requests reach it. Offset writes of one group are also
//! serialised by a per-group async lock held from append to fsync, so the
//! in-memory cache follows the log order. A commit becomes visible only once
//! durable (OffsetFetch never returns an offset a crash could lose);
//! removals (DeleteGroups, OffsetDelete, expiry, deleted topics) are
//! visible at once.
//!
//! Crash safety: an OffsetCommit is acknowledged only after its records are
//! fsynced (`Partition::wait_durable`, acks=all). Membership snapshots
//! (GroupMetadata records) are appended without waiting: losing the last one
//! in a crash only makes members rejoin. At start, [`Coordinator::load`]
//! replays `__consumer_offsets` before the broker reports ready; a null
//! value (tombstone) deletes its key. The topic is created with
//! cleanup.policy=delete and retention.ms=-1 because the log cannot compact
//! yet: nothing expires, the topic only grows.
//!
//! Cancellation: a handler dropped while parked leaves a reply nobody reads;
//! [`Coordinator::shutdown`] answers every parked request with
//! NOT_COORDINATOR so the listener can drain.

pub mod coordinator;
pub mod error;
pub mod log;
pub mod records;
pub mod state;

use std::time::Duration;

pub use coordinator::{run_timers, Coordinator, WallClock};
pub use error::GroupError;
pub use log::GroupLog;

use crate::config::BrokerConfig;

/// Coordinator settings (Kafka's broker config names in the comments).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// group.min.session.timeout.ms
    pub min_session_timeout_ms: i32,
    /// group.max.session.timeout.ms
    pub max_session_timeout_ms: i32,
    /// group.initial.rebalance.delay.ms
    pub initial_rebalance_delay: Duration,
    /// How long a new member's JoinGroup may stay parked (Kafka: 5 minutes).
    pub new_member_join_timeout: Duration,
    /// offsets.retention.minutes, in ms
    pub offsets_retention_ms: i64,
    /// offsets.retention.check.interval.ms
    pub offsets_retention_check_interval: Duration,
    /// offset.metadata.max.bytes
    pub offset_metadata_max_bytes: usize,
    /// offsets.topic.num.partitions
    pub offsets_topic_partitions: i32,
    /// offsets.topic.segment.bytes
    pub offsets_topic_segment_bytes: u64,
    /// offsets.commit.timeout.ms: longest wait for a commit to be durable.
    pub offsets_commit_timeout: Duration,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay: Duration::from_millis(3_000),
            new_member_join_timeout: Duration::from_secs(300),
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offsets_retention_check_interval: Duration::from_secs(600),
            offset_metadata_max_bytes: 4096,
            offsets_topic_partitions: 50,
            offsets_topic_segment_bytes: 100 * 1024 * 1024,
            offsets_commit_timeout: Duration::from_secs(5),
        }
    }
}

impl GroupConfig {
    /// The coordinator settings of a broker configuration.
    pub fn from_broker(c: &BrokerConfig) -> GroupConfig {
        GroupConfig {
            min_session_timeout_ms: c.group_min_session_timeout_ms,
            max_session_timeout_ms: c.group_max_session_timeout_ms,
            initial_rebalance_delay: Duration::from_millis(c.group_initial_rebalance_delay_ms),
            offsets_retention_ms: c.offsets_retention_minutes.saturating_mul(60_000),
            offsets_retention_check_interval: Duration::from_millis(
                c.offsets_retention_check_interval_ms,
            ),
            ..GroupConfig::default()
        }
    }
}
