//! The coordinator's settings, from the broker configuration.

use std::time::Duration;

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
