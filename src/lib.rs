//! Strata: a Kafka-compatible event streaming broker with tiered storage.
//!
//! See ARCHITECTURE.md for the map of modules and the path of a produce and
//! a fetch through them.

pub mod alloc;
pub mod api;
pub mod broker;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod fuzzing;
pub mod group;
pub mod log;
pub mod metadata;
pub mod partition;
pub mod run;
pub mod security;
pub mod server;
pub mod table;
pub mod telemetry;
pub mod txn;
pub mod writeback;
pub mod zerocopy;
