//! Records as the client's callers see them, and the conversion to and from
//! Kafka record batches (v2) with `kafka-protocol`'s encoder and decoder.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};

use super::error::{BoxError, ClientError};

/// A record to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProduceRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// Header keys are unique within a record (the codec keeps the last).
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Milliseconds since the epoch; `None` means now.
    pub timestamp: Option<i64>,
}

impl ProduceRecord {
    pub fn value(value: impl Into<Bytes>) -> ProduceRecord {
        ProduceRecord {
            value: Some(value.into()),
            ..ProduceRecord::default()
        }
    }

    /// Bytes of key, value and headers (for progress and batching).
    pub fn size(&self) -> usize {
        let kv =
            self.key.as_ref().map_or(0, Bytes::len) + self.value.as_ref().map_or(0, Bytes::len);
        kv + self
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Bytes::len))
            .sum::<usize>()
    }
}

/// A record read back from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub offset: i64,
    pub timestamp: i64,
    /// True when the broker stamped the time (LogAppendTime).
    pub log_append_time: bool,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Compression of produced batches, by Kafka's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchCompression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl BatchCompression {
    fn codec(self) -> Compression {
        match self {
            BatchCompression::None => Compression::None,
            BatchCompression::Gzip => Compression::Gzip,
            BatchCompression::Snappy => Compression::Snappy,
            BatchCompression::Lz4 => Compression::Lz4,
            BatchCompression::Zstd => Compression::Zstd,
        }
    }
}

/// Encode `records` as one v2 record batch (offsets relative from 0, no
/// producer id). `now_ms` stamps records without a timestamp.
pub fn encode_batch(
    records: &[ProduceRecord],
    compression: BatchCompression,
    now_ms: i64,
) -> Result<Bytes, ClientError> {
    if records.is_empty() {
        return Err(ClientError::InvalidArgument(
            "a produce request needs at least one record".into(),
        ));
    }
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let offset = i as i64;
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
                producer_id: NO_PRODUCER_ID,
                producer_epoch: NO_PRODUCER_EPOCH,
                timestamp_type: TimestampType::Creation,
                offset,
                // The encoder starts a new batch whenever `offset - sequence`
                // changes; keeping it constant gives one batch whose base
                // sequence is -1 (no sequence), as Kafka expects without a
                // producer id.
                sequence: (offset as i32).wrapping_sub(1),
                timestamp: r.timestamp.unwrap_or(now_ms),
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone()))
                    .collect::<IndexMap<_, _>>(),
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: compression.codec(),
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).map_err(|e| {
        ClientError::EncodeRecords {
            source: BoxError::from(e),
        }
    })?;
    Ok(buf.freeze())
}

/// Records decoded from a fetch response's `records` field.
#[derive(Debug, Default)]
pub struct DecodedRecords {
    /// Data records at or after the requested offset (control records and
    /// records before the fetch offset are dropped).
    pub records: Vec<ConsumedRecord>,
    /// The offset after the last complete batch, or the fetch offset if the
    /// data held no complete batch.
    pub next_offset: i64,
}

/// Offset of `lastOffsetDelta` within a v2 batch header.
const LAST_OFFSET_DELTA_POS: usize = 23;
/// Bytes before a batch's length field counts: baseOffset + batchLength.
const LOG_OVERHEAD: usize = 12;
/// Offset of the magic byte within a batch.
const MAGIC_POS: usize = 16;

/// Split `data` into complete batches (a fetch may end in a partial one),
/// decode each (checking its CRC) and keep records from `fetch_offset` on.
pub fn decode_fetched(
    mut data: Bytes,
    fetch_offset: i64,
    topic: &str,
    partition: i32,
) -> Result<DecodedRecords, ClientError> {
    let mut out = DecodedRecords {
        records: Vec::new(),
        next_offset: fetch_offset,
    };
    while data.len() >= LOG_OVERHEAD {
        let base_offset = i64::from_be_bytes(data[0..8].try_into().expect("8 bytes"));
        let batch_len = i32::from_be_bytes(data[8..12].try_into().expect("4 bytes"));
        let corrupt = |what: &str| ClientError::DecodeRecords {
            topic: topic.to_owned(),
            partition,
            offset: base_offset,
            source: what.to_owned().into(),
        };
        let Ok(batch_len) = usize::try_from(batch_len) else {
            return Err(corrupt("negative batch length"));
        };
        let total = LOG_OVERHEAD + batch_len;
        if data.len() < total {
            break; // a partial batch at the end of the response
        }
        let mut batch = data.split_to(total);
        if batch.len() <= LAST_OFFSET_DELTA_POS + 4 {
            return Err(corrupt("batch shorter than its header"));
        }
        if batch[MAGIC_POS] != 2 {
            return Err(corrupt("message format before v2 is not supported"));
        }
        let last_delta = i32::from_be_bytes(
            batch[LAST_OFFSET_DELTA_POS..LAST_OFFSET_DELTA_POS + 4]
                .try_into()
                .expect("4 bytes"),
        );
        let set =
            RecordBatchDecoder::decode(&mut batch).map_err(|e| ClientError::DecodeRecords {
                topic: topic.to_owned(),
                partition,
                offset: base_offset,
                source: e.into(),
            })?;
        for r in set.records {
            if r.control || r.offset < fetch_offset {
                continue;
            }
            out.records.push(ConsumedRecord {
                offset: r.offset,
                timestamp: r.timestamp,
                log_append_time: r.timestamp_type == TimestampType::LogAppend,
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v))
                    .collect(),
            });
        }
        let batch_end = base_offset
            .saturating_add(i64::from(last_delta))
            .saturating_add(1);
        out.next_offset = out.next_offset.max(batch_end);
        if batch.has_remaining() {
            return Err(corrupt("bytes left after the batch's records"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: Option<&str>, value: &str, headers: &[(&str, &str)]) -> ProduceRecord {
        ProduceRecord {
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Some(Bytes::copy_from_slice(v.as_bytes()))))
                .collect(),
            timestamp: None,
        }
    }

    /// Rewrite the base offset in place (as the broker does on append).
    fn with_base_offset(batch: &Bytes, base: i64) -> Bytes {
        let mut b = BytesMut::from(&batch[..]);
        b[0..8].copy_from_slice(&base.to_be_bytes());
        b.freeze()
    }

    #[test]
    fn many_records_make_one_batch_that_round_trips() {
        let records = vec![
            rec(Some("k1"), "v1", &[("h", "1")]),
            rec(None, "v2", &[]),
            rec(Some("k3"), "", &[("a", "x"), ("b", "y")]),
        ];
        for c in [
            BatchCompression::None,
            BatchCompression::Gzip,
            BatchCompression::Snappy,
            BatchCompression::Lz4,
            BatchCompression::Zstd,
        ] {
            let batch = encode_batch(&records, c, 1_700_000_000_000).unwrap();
            let base_seq = i32::from_be_bytes(batch[53..57].try_into().unwrap());
            assert_eq!(base_seq, -1, "{c:?}: no sequence without a producer id");
            let count = i32::from_be_bytes(batch[57..61].try_into().unwrap());
            assert_eq!(count, 3, "{c:?}: one batch");
            assert_eq!(
                12 + i32::from_be_bytes(batch[8..12].try_into().unwrap()) as usize,
                batch.len()
            );

            let d = decode_fetched(with_base_offset(&batch, 100), 100, "t", 0).unwrap();
            assert_eq!(d.next_offset, 103);
            let got: Vec<_> = d.records.iter().map(|r| r.offset).collect();
            assert_eq!(got, [100, 101, 102]);
            assert_eq!(d.records[0].key.as_deref(), Some(&b"k1"[..]));
            assert_eq!(d.records[1].key, None);
            assert_eq!(d.records[2].value.as_deref(), Some(&b""[..]));
            assert_eq!(d.records[2].headers.len(), 2);
            assert_eq!(d.records[0].timestamp, 1_700_000_000_000);
        }
    }

    #[test]
    fn fetch_offset_inside_a_batch_and_partial_tail() {
        let records: Vec<_> = (0..5).map(|i| rec(None, &format!("v{i}"), &[])).collect();
        let a = with_base_offset(
            &encode_batch(&records, BatchCompression::None, 1).unwrap(),
            0,
        );
        let b = with_base_offset(
            &encode_batch(&records, BatchCompression::None, 1).unwrap(),
            5,
        );
        let mut data = BytesMut::new();
        data.extend_from_slice(&a);
        data.extend_from_slice(&b[..b.len() - 3]); // truncated second batch
        let d = decode_fetched(data.freeze(), 3, "t", 0).unwrap();
        let got: Vec<_> = d.records.iter().map(|r| r.offset).collect();
        assert_eq!(got, [3, 4]);
        assert_eq!(d.next_offset, 5);
    }

    #[test]
    fn corruption_is_an_error_naming_the_offset() {
        let batch = encode_batch(&[rec(None, "hello", &[])], BatchCompression::None, 1).unwrap();
        let mut bad = BytesMut::from(&batch[..]);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let e = decode_fetched(with_base_offset(&bad.freeze(), 42), 0, "t", 7).unwrap_err();
        assert!(e.to_string().contains("offset=42"), "{e}");
        assert!(encode_batch(&[], BatchCompression::None, 1).is_err());
    }
}
