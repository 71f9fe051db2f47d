//! The records of `__consumer_offsets`, in Kafka's own key and value schemas,
//! so the topic reads the same as a Kafka broker's.
//!
//! Keys start with an int16 that names the record type:
//! - 0 and 1: `OffsetCommitKey` (group, topic, partition), value
//!   `OffsetCommitValue` (written as v3, or v1 when an explicit expiry time
//!   came with an OffsetCommit v2-v4 `retention_time_ms`).
//! - 2: `GroupMetadataKey` (group), value `GroupMetadataValue` (written as v3).
//!
//! A record with a null value is a tombstone: it deletes the key.
//! Values v0-v3 of both schemas are decoded (v4 is Kafka's flexible encoding,
//! which only Kafka 3.5+ brokers write, never Strata).
//!
//! Strings are int16-length-prefixed UTF-8 (-1 for null), bytes are
//! int32-length-prefixed, integers are big-endian, as in the Kafka protocol.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::error::RecordError;

/// Name of the internal topic.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The key of a `__consumer_offsets` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKey {
    /// A committed offset of `group` for `topic`-`partition`.
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    /// The membership snapshot of `group`.
    Group { group: String },
}

impl RecordKey {
    pub fn group(&self) -> &str {
        match self {
            RecordKey::Offset { group, .. } | RecordKey::Group { group } => group,
        }
    }
}

/// A committed offset (`OffsetCommitValue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    /// -1 when the client did not say.
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
    /// Only from OffsetCommit v2-v4 with an explicit retention time.
    pub expire_timestamp: Option<i64>,
}

/// One member in a `GroupMetadataValue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's selected protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A group's membership snapshot (`GroupMetadataValue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// When the group entered its current state (ms since the epoch), -1 if unknown.
    pub current_state_timestamp: i64,
    pub members: Vec<MemberValue>,
}

/// Kafka's `String.hashCode()` over UTF-16 code units.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// The `__consumer_offsets` partition of `group`, as Kafka computes it:
/// `abs(hashCode(group)) % partitions` (with `abs(MIN_VALUE) = 0`).
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let h = java_string_hash(group);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

fn put_str(buf: &mut BytesMut, s: &str) {
    // Callers keep strings below 32 KiB (group ids and topic names are
    // checked); longer ones are cut rather than written with a wrong length.
    let b = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
    buf.put_i16(b.len() as i16);
    buf.put_slice(b);
}

fn put_nullable_str(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(buf, s),
        None => buf.put_i16(-1),
    }
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    buf.put_i32(b.len() as i32);
    buf.put_slice(b);
}

/// Encodes a record key.
pub fn encode_key(key: &RecordKey) -> Bytes {
    let mut buf = BytesMut::with_capacity(64);
    match key {
        RecordKey::Offset {
            group,
            topic,
            partition,
        } => {
            buf.put_i16(1);
            put_str(&mut buf, group);
            put_str(&mut buf, topic);
            buf.put_i32(*partition);
        }
        RecordKey::Group { group } => {
            buf.put_i16(2);
            put_str(&mut buf, group);
        }
    }
    buf.freeze()
}

/// Encodes an offset value (v3, or v1 when it carries an expiry time).
pub fn encode_offset_value(v: &OffsetValue) -> Bytes {
    let mut buf = BytesMut::with_capacity(32 + v.metadata.len());
    match v.expire_timestamp {
        Some(expire) => {
            buf.put_i16(1);
            buf.put_i64(v.offset);
            put_str(&mut buf, &v.metadata);
            buf.put_i64(v.commit_timestamp);
            buf.put_i64(expire);
        }
        None => {
            buf.put_i16(3);
            buf.put_i64(v.offset);
            buf.put_i32(v.leader_epoch);
            put_str(&mut buf, &v.metadata);
            buf.put_i64(v.commit_timestamp);
        }
    }
    buf.freeze()
}

/// Encodes a group value (v3).
pub fn encode_group_value(v: &GroupValue) -> Bytes {
    let size: usize = v
        .members
        .iter()
        .map(|m| 64 + m.member_id.len() + m.subscription.len() + m.assignment.len())
        .sum();
    let mut buf = BytesMut::with_capacity(64 + size);
    buf.put_i16(3);
    put_str(&mut buf, &v.protocol_type);
    buf.put_i32(v.generation);
    put_nullable_str(&mut buf, v.protocol.as_deref());
    put_nullable_str(&mut buf, v.leader.as_deref());
    buf.put_i64(v.current_state_timestamp);
    buf.put_i32(v.members.len() as i32);
    for m in &v.members {
        put_str(&mut buf, &m.member_id);
        put_nullable_str(&mut buf, m.group_instance_id.as_deref());
        put_str(&mut buf, &m.client_id);
        put_str(&mut buf, &m.client_host);
        buf.put_i32(m.rebalance_timeout_ms);
        buf.put_i32(m.session_timeout_ms);
        put_bytes(&mut buf, &m.subscription);
        put_bytes(&mut buf, &m.assignment);
    }
    buf.freeze()
}

/// A bounds-checked reader over a record's bytes.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn i16(&mut self, field: &'static str) -> Result<i16, RecordError> {
        if self.0.remaining() < 2 {
            return Err(RecordError::Truncated { field });
        }
        Ok(self.0.get_i16())
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, RecordError> {
        if self.0.remaining() < 4 {
            return Err(RecordError::Truncated { field });
        }
        Ok(self.0.get_i32())
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, RecordError> {
        if self.0.remaining() < 8 {
            return Err(RecordError::Truncated { field });
        }
        Ok(self.0.get_i64())
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&[u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Truncated { field });
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn nullable_str(&mut self, field: &'static str) -> Result<Option<String>, RecordError> {
        let len = self.i16(field)?;
        if len == -1 {
            return Ok(None);
        }
        if len < 0 {
            return Err(RecordError::NegativeLength {
                field,
                len: len as i64,
            });
        }
        let b = self.take(len as usize, field)?;
        String::from_utf8(b.to_vec())
            .map(Some)
            .map_err(|_| RecordError::NotUtf8 { field })
    }

    fn str(&mut self, field: &'static str) -> Result<String, RecordError> {
        self.nullable_str(field).map(Option::unwrap_or_default)
    }

    fn bytes(&mut self, field: &'static str) -> Result<Bytes, RecordError> {
        let len = self.i32(field)?;
        if len == -1 {
            return Ok(Bytes::new());
        }
        if len < 0 {
            return Err(RecordError::NegativeLength {
                field,
                len: len as i64,
            });
        }
        Ok(Bytes::copy_from_slice(self.take(len as usize, field)?))
    }
}

/// Decodes a record key.
pub fn decode_key(b: &[u8]) -> Result<RecordKey, RecordError> {
    let mut r = Reader(b);
    match r.i16("key version")? {
        0 | 1 => Ok(RecordKey::Offset {
            group: r.str("group")?,
            topic: r.str("topic")?,
            partition: r.i32("partition")?,
        }),
        2 => Ok(RecordKey::Group {
            group: r.str("group")?,
        }),
        version => Err(RecordError::UnknownVersion {
            kind: "key",
            version,
        }),
    }
}

/// Decodes an offset value, v0 to v3.
pub fn decode_offset_value(b: &[u8]) -> Result<OffsetValue, RecordError> {
    let mut r = Reader(b);
    let version = r.i16("offset value version")?;
    if !(0..=3).contains(&version) {
        return Err(RecordError::UnknownVersion {
            kind: "offset value",
            version,
        });
    }
    let offset = r.i64("offset")?;
    let leader_epoch = if version >= 3 {
        r.i32("leader epoch")?
    } else {
        -1
    };
    let metadata = r.str("metadata")?;
    let commit_timestamp = r.i64("commit timestamp")?;
    let expire_timestamp = if version == 1 {
        Some(r.i64("expire timestamp")?).filter(|t| *t >= 0)
    } else {
        None
    };
    Ok(OffsetValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
        expire_timestamp,
    })
}

/// Decodes a group value, v0 to v3.
pub fn decode_group_value(b: &[u8]) -> Result<GroupValue, RecordError> {
    let mut r = Reader(b);
    let version = r.i16("group value version")?;
    if !(0..=3).contains(&version) {
        return Err(RecordError::UnknownVersion {
            kind: "group value",
            version,
        });
    }
    let protocol_type = r.str("protocol type")?;
    let generation = r.i32("generation")?;
    let protocol = r.nullable_str("protocol")?;
    let leader = r.nullable_str("leader")?;
    let current_state_timestamp = if version >= 2 {
        r.i64("current state timestamp")?
    } else {
        -1
    };
    let count = r.i32("member count")?;
    if count < 0 {
        return Err(RecordError::NegativeLength {
            field: "member count",
            len: count as i64,
        });
    }
    // Every member takes at least 20 bytes: do not trust a huge count.
    let mut members = Vec::with_capacity((count as usize).min(r.0.len() / 20 + 1));
    for _ in 0..count {
        let member_id = r.str("member id")?;
        let group_instance_id = if version >= 3 {
            r.nullable_str("group instance id")?
        } else {
            None
        };
        let client_id = r.str("client id")?;
        let client_host = r.str("client host")?;
        let rebalance_timeout_ms = if version >= 1 {
            r.i32("rebalance timeout")?
        } else {
            -1
        };
        let session_timeout_ms = r.i32("session timeout")?;
        let rebalance_timeout_ms = if rebalance_timeout_ms < 0 {
            session_timeout_ms
        } else {
            rebalance_timeout_ms
        };
        members.push(MemberValue {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription: r.bytes("subscription")?,
            assignment: r.bytes("assignment")?,
        });
    }
    Ok(GroupValue {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp,
        members,
    })
}

/// One `__consumer_offsets` record to write: key and value (None: tombstone).
pub type KeyValue = (Bytes, Option<Bytes>);

/// Encodes records as one uncompressed magic-v2 record batch, ready for
/// `Partition::append`.
pub fn encode_batch(records: &[KeyValue], now_ms: i64) -> Result<Bytes, String> {
    encode_batch_of(records, now_ms, None)
}

/// [`encode_batch`] as a transactional batch of `(producer id, epoch)`
/// (TxnOffsetCommit), for `Partition::append_transactional`.
pub fn encode_txn_batch(
    records: &[KeyValue],
    now_ms: i64,
    producer: (i64, i16),
) -> Result<Bytes, String> {
    encode_batch_of(records, now_ms, Some(producer))
}

fn encode_batch_of(
    records: &[KeyValue],
    now_ms: i64,
    producer: Option<(i64, i16)>,
) -> Result<Bytes, String> {
    let (producer_id, producer_epoch) = producer.unwrap_or((-1, -1));
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // Non-idempotent: base sequence -1. The encoder keeps records
            // in one batch while offset - sequence stays the same.
            sequence: i as i32 - 1,
            timestamp: now_ms,
            key: Some(k.clone()),
            value: v.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn java_hash_matches_known_values() {
        // Values of "...".hashCode() in Java.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99162322);
        assert_eq!(java_string_hash("console-consumer-12345"), 158_455_506);
        // Surrogate pairs count as two UTF-16 units, as in Java.
        assert_eq!(java_string_hash("\u{1F600}"), 1_772_899);
    }

    #[test]
    fn partition_for_is_in_range_and_stable() {
        for g in ["", "a", "group-1", "console-consumer-12345", "ÿüñ"] {
            let p = partition_for(g, 50);
            assert!((0..50).contains(&p), "{g}: {p}");
            assert_eq!(p, partition_for(g, 50));
        }
        assert_eq!(partition_for("hello", 50), 99162322 % 50);
    }

    #[test]
    fn decodes_kafka_v0_offset_value_and_v1_expiry() {
        let mut b = BytesMut::new();
        b.put_i16(0);
        b.put_i64(42);
        put_str(&mut b, "m");
        b.put_i64(1000);
        let v = decode_offset_value(&b).expect("v0");
        assert_eq!(
            (
                v.offset,
                v.leader_epoch,
                v.metadata.as_str(),
                v.commit_timestamp
            ),
            (42, -1, "m", 1000)
        );
        let v1 = OffsetValue {
            offset: 7,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: 5,
            expire_timestamp: Some(99),
        };
        assert_eq!(decode_offset_value(&encode_offset_value(&v1)), Ok(v1));
    }

    #[test]
    fn unknown_versions_and_truncation_are_errors() {
        assert!(matches!(
            decode_key(&[0, 9, 0, 0]),
            Err(RecordError::UnknownVersion { .. })
        ));
        assert!(matches!(
            decode_key(&[0, 1, 0, 5, b'a']),
            Err(RecordError::Truncated { .. })
        ));
        assert!(decode_group_value(&[0, 3, 0, 0, 0, 0, 0, 1, 255, 255]).is_err());
        let mut huge = BytesMut::new();
        huge.put_i16(3);
        put_str(&mut huge, "consumer");
        huge.put_i32(1);
        huge.put_i16(-1);
        huge.put_i16(-1);
        huge.put_i64(-1);
        huge.put_i32(i32::MAX);
        assert!(decode_group_value(&huge).is_err());
    }

    #[test]
    fn batch_passes_the_log_validation() {
        let recs = vec![
            (
                encode_key(&RecordKey::Group { group: "g".into() }),
                None::<Bytes>,
            ),
            (
                encode_key(&RecordKey::Offset {
                    group: "g".into(),
                    topic: "t".into(),
                    partition: 1,
                }),
                Some(encode_offset_value(&OffsetValue {
                    offset: 1,
                    leader_epoch: 0,
                    metadata: "x".into(),
                    commit_timestamp: 1,
                    expire_timestamp: None,
                })),
            ),
        ];
        let b = encode_batch(&recs, 1234).expect("encodes");
        let headers = crate::log::batch::validate_batches(&b, 1 << 20).expect("valid batch");
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].last_offset_delta, 1);
    }

    fn arb_string() -> impl Strategy<Value = String> {
        "\\PC{0,40}"
    }

    fn arb_bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
    }

    fn arb_member() -> impl Strategy<Value = MemberValue> {
        (
            arb_string(),
            proptest::option::of(arb_string()),
            arb_string(),
            arb_string(),
            0..i32::MAX,
            0..i32::MAX,
            arb_bytes(),
            arb_bytes(),
        )
            .prop_map(|(id, inst, cid, host, rt, st, sub, asg)| MemberValue {
                member_id: id,
                group_instance_id: inst,
                client_id: cid,
                client_host: host,
                rebalance_timeout_ms: rt,
                session_timeout_ms: st,
                subscription: sub,
                assignment: asg,
            })
    }

    proptest! {
        #[test]
        fn keys_round_trip(group in arb_string(), topic in arb_string(), partition in any::<i32>()) {
            let k = RecordKey::Offset { group: group.clone(), topic, partition };
            prop_assert_eq!(decode_key(&encode_key(&k)), Ok(k));
            let g = RecordKey::Group { group };
            prop_assert_eq!(decode_key(&encode_key(&g)), Ok(g));
        }

        #[test]
        fn offset_values_round_trip(offset in any::<i64>(), epoch in any::<i32>(), metadata in arb_string(), ts in any::<i64>()) {
            let v = OffsetValue { offset, leader_epoch: epoch, metadata, commit_timestamp: ts, expire_timestamp: None };
            prop_assert_eq!(decode_offset_value(&encode_offset_value(&v)), Ok(v));
        }

        #[test]
        fn group_values_round_trip(
            protocol_type in arb_string(),
            generation in any::<i32>(),
            protocol in proptest::option::of(arb_string()),
            leader in proptest::option::of(arb_string()),
            ts in any::<i64>(),
            members in proptest::collection::vec(arb_member(), 0..4),
        ) {
            let v = GroupValue { protocol_type, generation, protocol, leader, current_state_timestamp: ts, members };
            prop_assert_eq!(decode_group_value(&encode_group_value(&v)), Ok(v));
        }

        #[test]
        fn decoding_garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_key(&b);
            let _ = decode_offset_value(&b);
            let _ = decode_group_value(&b);
        }
    }
}
