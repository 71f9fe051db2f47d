//! ApiVersions: the table of what Strata implements, and the request itself.
//!
//! The table is the single source of truth: the dispatcher refuses versions
//! outside it, and ApiVersions reports exactly it. Produce is reported from
//! version 0 while v0–v2 requests are refused (as Kafka 4.0 does,
//! KAFKA-18659): librdkafka before 2.11.1 stops compressing when Produce v0
//! is missing from the list.

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};

use super::error::Code;
use super::Outcome;

/// (api, min version, max version) for every API that has a handler.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 13),
    (ApiKey::Fetch, 4, 18),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DescribeQuorum, 0, 2),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::UnregisterBroker, 0, 0),
    (ApiKey::AddRaftVoter, 0, 0),
    // Group coordinator: every version kafka-protocol 0.18 decodes. The
    // KIP-848 fields of OffsetCommit v9 / OffsetFetch v9 (member epochs)
    // only concern the new consumer protocol; classic groups use them as
    // generations, as Kafka does. FindCoordinator v6 adds share-group keys,
    // which get INVALID_REQUEST.
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    // Transactions. AddPartitionsToTxn v4-5 is the brokers' batched and
    // verify-only form (KIP-890 part 1). EndTxn v5 and TxnOffsetCommit v5
    // belong to KIP-890 part 2 (an epoch bump per transaction), which is
    // not offered. ListTransactions v2's regular expression filter is not
    // taken.
    (ApiKey::AddPartitionsToTxn, 0, 5),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    (ApiKey::EndTxn, 0, 4),
    (ApiKey::TxnOffsetCommit, 0, 4),
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::DescribeProducers, 0, 0),
    // SASL: handshake v0 (tokens then come as bare frames) and v1
    // (tokens in SaslAuthenticate); authenticate v1+ carries the session
    // lifetime (KIP-368).
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    // SCRAM credentials in cluster metadata (KIP-554).
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    // ACLs in cluster metadata; SECURITY_DISABLED without --authorizer acl.
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
];

/// The advertised (min, max) of `key`, if Strata handles it.
pub fn supported(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, min, max)| (*min, *max))
}

/// Whether a request of `key` at `version` is served: inside the
/// advertised range and one the codec decodes (Produce v0-v2 are
/// advertised but refused).
pub fn accepted(key: ApiKey, version: i16) -> bool {
    supported(key).is_some_and(|(min, max)| {
        version >= min && version <= max && version >= key.valid_versions().min
    })
}

fn api_list() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|(k, min, max)| {
            ApiVersion::default()
                .with_api_key(*k as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect()
}

pub fn handle(_req: ApiVersionsRequest, _version: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(0)
        .with_api_keys(api_list())
}

/// KIP-511: an ApiVersions request of a version we do not know gets
/// UNSUPPORTED_VERSION in the v0 layout (header v0, body v0) with our ranges,
/// so the client can retry with a version we support.
pub fn unsupported_version_response(correlation_id: i32) -> Outcome {
    let mut buf = BytesMut::with_capacity(16 + SUPPORTED.len() * 6);
    buf.put_i32(correlation_id);
    buf.put_i16(Code::UnsupportedVersion.code());
    buf.put_i32(SUPPORTED.len() as i32);
    for (k, min, max) in SUPPORTED {
        buf.put_i16(*k as i16);
        buf.put_i16(*min);
        buf.put_i16(*max);
    }
    Outcome::Reply(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::{Decodable, Encodable, Message};

    #[test]
    fn table_is_within_what_the_codec_handles() {
        for (k, min, max) in SUPPORTED {
            let codec = k.valid_versions();
            assert!(*max <= codec.max, "{k:?} max {max} > codec {}", codec.max);
            assert!(
                *min >= codec.min || *k == ApiKey::Produce,
                "{k:?} min {min} < codec {}",
                codec.min
            );
        }
    }

    #[test]
    fn fallback_is_a_decodable_v0_response() {
        let Outcome::Reply(b) = unsupported_version_response(42) else {
            panic!("expected a reply");
        };
        let mut body = b.slice(4..);
        let r = ApiVersionsResponse::decode(&mut body, 0).expect("v0 layout");
        assert_eq!(r.error_code, 35);
        assert_eq!(r.api_keys.len(), SUPPORTED.len());
    }

    #[test]
    fn every_version_encodes() {
        let r = handle(ApiVersionsRequest::default(), 0);
        for v in ApiVersionsResponse::VERSIONS.min..=ApiVersionsResponse::VERSIONS.max {
            let mut b = BytesMut::new();
            r.encode(&mut b, v).expect("encodes");
        }
    }
}
