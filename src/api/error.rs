//! The one mapping from Strata's errors to Kafka error codes.

pub use kafka_protocol::error::ResponseError as Code;

use crate::log::batch::BatchError;
use crate::log::LogError;
use crate::partition::PartitionError;

/// The Kafka code for "no error".
pub const NONE: i16 = 0;

/// Kafka error code for a partition-level failure.
pub fn partition_error_code(e: &PartitionError) -> i16 {
    match e {
        PartitionError::Batch(b) => batch_error_code(b),
        PartitionError::Log(l) => log_error_code(l),
        PartitionError::DuplicateSequence { .. } => Code::DuplicateSequenceNumber.code(),
        PartitionError::OutOfOrderSequence { .. } => Code::OutOfOrderSequenceNumber.code(),
        PartitionError::InvalidProducerEpoch { .. } => Code::InvalidProducerEpoch.code(),
        PartitionError::OffsetOutOfRange { .. } => Code::OffsetOutOfRange.code(),
        PartitionError::Sync { .. } => Code::KafkaStorageError.code(),
        PartitionError::Closed { .. } => Code::NotLeaderOrFollower.code(),
        // Retriable: the produce is verified again.
        PartitionError::MarkerSinceVerified { .. } => Code::ConcurrentTransactions.code(),
        PartitionError::Replica { source, .. } => match source {
            crate::partition::replica::ReplicaError::NotLeader { .. }
            | crate::partition::replica::ReplicaError::NotFollower
            | crate::partition::replica::ReplicaError::NotFollowing { .. } => {
                Code::NotLeaderOrFollower.code()
            }
            crate::partition::replica::ReplicaError::FencedEpoch { .. } => {
                Code::FencedLeaderEpoch.code()
            }
            crate::partition::replica::ReplicaError::UnknownEpoch { .. } => {
                Code::UnknownLeaderEpoch.code()
            }
        },
        // Retriable for clients: they back off and fetch again.
        PartitionError::Tier { .. } => Code::KafkaStorageError.code(),
    }
}

/// Kafka error code for a record-batch validation failure.
pub fn batch_error_code(e: &BatchError) -> i16 {
    match e {
        BatchError::TooLarge { .. } => Code::MessageTooLarge.code(),
        BatchError::UnsupportedMagic { .. } => Code::UnsupportedForMessageFormat.code(),
        BatchError::NotAllowed { .. } => Code::InvalidRecord.code(),
        _ => Code::CorruptMessage.code(),
    }
}

/// Kafka error code for a log failure.
pub fn log_error_code(e: &LogError) -> i16 {
    match e {
        LogError::OffsetOutOfRange { .. } => Code::OffsetOutOfRange.code(),
        _ => Code::KafkaStorageError.code(),
    }
}

/// The error for a request naming `current` as the leader epoch when the
/// replica's is `actual` (-1: the client did not say): None when they agree.
pub fn leader_epoch_error(current: i32, actual: i32) -> Option<i16> {
    if current < 0 || current == actual {
        None
    } else if current > actual {
        Some(Code::UnknownLeaderEpoch.code())
    } else {
        Some(Code::FencedLeaderEpoch.code())
    }
}

/// The Kafka code for a partition this broker does not serve.
pub fn not_served_code(why: crate::broker::NotServed) -> i16 {
    match why {
        crate::broker::NotServed::UnknownPartition => Code::UnknownTopicOrPartition.code(),
        crate::broker::NotServed::NotLeader => Code::NotLeaderOrFollower.code(),
    }
}
