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
//! cleanup.policy=compact: the log cleaner keeps each key's last record,
//! and drops tombstones after `delete.retention.ms`, so replaying the
//! compacted log gives the same groups and offsets.
//!
//! Cancellation: a handler dropped while parked leaves a reply nobody reads;
//! [`Coordinator::shutdown`] answers every parked request with
//! NOT_COORDINATOR so the listener can drain.

mod config;
pub mod coordinator;
pub mod error;
pub mod log;
pub mod records;
pub mod state;

pub use config::GroupConfig;
pub use coordinator::{run_timers, Coordinator, WallClock};
pub use error::GroupError;
pub use log::GroupLog;
