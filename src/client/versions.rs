//! API version negotiation: the highest version both this client's codec
//! (`kafka-protocol`'s `VERSIONS`) and the broker (its ApiVersions ranges)
//! support. Pure data, no I/O.

use std::collections::BTreeMap;

use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::{Message, Request, VersionRange};

/// The highest version in both ranges, or `None` if they do not overlap.
pub fn negotiate(ours: VersionRange, theirs: VersionRange) -> Option<i16> {
    let both = ours.intersect(&theirs);
    (!both.is_empty()).then_some(both.max)
}

/// What one broker advertised in ApiVersions, and the choice per API.
#[derive(Debug, Clone, Default)]
pub struct ApiVersionTable {
    broker: BTreeMap<i16, VersionRange>,
}

impl ApiVersionTable {
    /// The broker's ranges from its ApiVersions response (any version).
    pub fn from_response(resp: &ApiVersionsResponse) -> ApiVersionTable {
        let broker = resp
            .api_keys
            .iter()
            .map(|k| {
                (
                    k.api_key,
                    VersionRange {
                        min: k.min_version,
                        max: k.max_version,
                    },
                )
            })
            .collect();
        ApiVersionTable { broker }
    }

    /// Built from `(api key, min, max)` triples (tests, fallbacks).
    pub fn from_ranges(ranges: &[(i16, i16, i16)]) -> ApiVersionTable {
        let broker = ranges
            .iter()
            .map(|&(k, min, max)| (k, VersionRange { min, max }))
            .collect();
        ApiVersionTable { broker }
    }

    /// The range the broker advertised for `key`.
    pub fn broker_range(&self, key: ApiKey) -> Option<VersionRange> {
        self.broker.get(&(key as i16)).copied()
    }

    /// The version to use for `key` when this side can speak `ours`.
    pub fn pick(&self, key: ApiKey, ours: VersionRange) -> Option<i16> {
        negotiate(ours, self.broker_range(key)?)
    }

    /// The version to use for request type `R`: the highest that both
    /// `R`'s and its response's codecs and the broker support.
    pub fn pick_for<R: Request>(&self) -> Option<i16> {
        let key = ApiKey::try_from(R::KEY).ok()?;
        self.pick(key, codec_range::<R>())
    }
}

/// The versions `kafka-protocol` can both encode a request and decode its
/// response in (for some APIs the response codec knows a newer version).
pub fn codec_range<R: Request>() -> VersionRange {
    <R as Message>::VERSIONS.intersect(&<R::Response as Message>::VERSIONS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::{
        ApiVersionsRequest, FetchRequest, FindCoordinatorRequest, ListGroupsRequest,
        MetadataRequest, OffsetFetchRequest, ProduceRequest,
    };
    use kafka_protocol::protocol::Decodable;

    fn r(min: i16, max: i16) -> VersionRange {
        VersionRange { min, max }
    }

    #[test]
    fn picks_the_highest_common_version() {
        assert_eq!(negotiate(r(0, 13), r(0, 13)), Some(13));
        assert_eq!(negotiate(r(0, 13), r(3, 9)), Some(9), "broker older");
        assert_eq!(negotiate(r(4, 12), r(0, 17)), Some(12), "broker newer");
        assert_eq!(negotiate(r(3, 13), r(0, 3)), Some(3), "one common version");
        assert_eq!(negotiate(r(3, 13), r(0, 2)), None, "no overlap");
        assert_eq!(negotiate(r(0, 4), r(5, 9)), None, "no overlap above");
    }

    #[test]
    fn table_picks_per_api_and_misses_absent_ones() {
        let t = ApiVersionTable::from_ranges(&[
            (ApiKey::Produce as i16, 0, 13),
            (ApiKey::Fetch as i16, 4, 11),
            (ApiKey::Metadata as i16, 0, 99),
            (ApiKey::ListGroups as i16, 0, 0),
        ]);
        // Produce: the codec starts at 3 though the broker says 0.
        assert_eq!(t.pick_for::<ProduceRequest>(), Some(13));
        assert_eq!(t.pick_for::<FetchRequest>(), Some(11));
        assert_eq!(
            t.pick_for::<MetadataRequest>(),
            Some(MetadataRequest::VERSIONS.max),
            "capped at what the codec knows"
        );
        assert_eq!(t.pick_for::<ListGroupsRequest>(), Some(0));
        assert_eq!(
            t.pick_for::<FindCoordinatorRequest>(),
            None,
            "not advertised"
        );
    }

    #[test]
    fn unknown_api_keys_are_kept_but_never_picked() {
        let resp = ApiVersionsResponse::default().with_api_keys(vec![
            ApiVersion::default()
                .with_api_key(ApiKey::Metadata as i16)
                .with_min_version(0)
                .with_max_version(12),
            ApiVersion::default()
                .with_api_key(9999)
                .with_min_version(0)
                .with_max_version(1),
        ]);
        let t = ApiVersionTable::from_response(&resp);
        assert_eq!(t.pick_for::<MetadataRequest>(), Some(12));
        assert_eq!(t.broker_range(ApiKey::Metadata), Some(r(0, 12)));
    }

    /// OffsetFetch's response codec knows v10, its request codec only v9:
    /// a broker advertising v10 gets v9.
    #[test]
    fn request_and_response_codecs_both_bound_the_choice() {
        let codec = codec_range::<OffsetFetchRequest>();
        assert!(codec.max <= OffsetFetchRequest::VERSIONS.max);
        let t = ApiVersionTable::from_ranges(&[(ApiKey::OffsetFetch as i16, 0, 10)]);
        assert_eq!(t.pick_for::<OffsetFetchRequest>(), Some(codec.max));
        let e = t.pick_for::<OffsetFetchRequest>().unwrap();
        let req = OffsetFetchRequest::default();
        let mut buf = bytes::BytesMut::new();
        kafka_protocol::protocol::Encodable::encode(&req, &mut buf, e).expect("encodable");
    }

    /// Against Strata's own table every advertised API gets a version.
    #[test]
    fn every_api_strata_advertises_is_usable() {
        let resp = crate::api::versions::handle(ApiVersionsRequest::default(), 3);
        let t = ApiVersionTable::from_response(&resp);
        for (key, _min, max) in crate::api::versions::SUPPORTED {
            let codec = key.valid_versions();
            assert_eq!(t.pick(*key, codec), Some(*max), "{key:?}");
        }
    }

    /// KIP-511 fallback: an UNSUPPORTED_VERSION answer in the v0 layout still
    /// tells which ApiVersions version to retry with.
    #[test]
    fn unsupported_version_fallback_names_a_usable_version() {
        let crate::api::Outcome::Reply(frame) =
            crate::api::versions::unsupported_version_response(7)
        else {
            panic!("expected a reply");
        };
        let mut body = frame.slice(4..);
        let resp = ApiVersionsResponse::decode(&mut body, 0).expect("v0 layout");
        assert_eq!(resp.error_code, 35);
        let t = ApiVersionTable::from_response(&resp);
        assert!(t.pick_for::<ApiVersionsRequest>().is_some());
    }
}
