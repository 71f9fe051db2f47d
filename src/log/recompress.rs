//! Recompression of produced batches for topics whose `compression.type`
//! is a codec (not `producer`), as Kafka's broker does: a batch in another
//! codec is checked (header, CRC-32C), decoded and encoded again with the
//! topic's codec, keeping its producer id, epoch and sequences, timestamps,
//! keys, values and headers. Batches already in the codec, and control
//! batches, pass unchanged.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};

use super::batch::{validate_batches, BatchError};

/// `records` with every batch in `target`, or `None` when every batch
/// already is (nothing to copy). Batches are checked first, as an append
/// checks them (`max_batch_bytes` per batch), so a damaged batch is never
/// re-encoded into a valid one.
pub fn recompress(
    records: &[u8],
    target: Compression,
    max_batch_bytes: usize,
) -> Result<Option<Bytes>, BatchError> {
    let headers = validate_batches(records, max_batch_bytes)?;
    let keep = |h: &super::batch::BatchHeader| {
        h.compression() == target as u8 || h.is_control() || h.record_count() == 0
    };
    if headers.iter().all(keep) {
        return Ok(None);
    }
    let mut out = BytesMut::with_capacity(records.len());
    let mut pos = 0;
    for h in &headers {
        let batch = &records[pos..pos + h.total_len()];
        pos += h.total_len();
        if keep(h) {
            out.extend_from_slice(batch);
            continue;
        }
        let failed = |what: &str, e: anyhow::Error| BatchError::Corrupt {
            reason: format!("cannot {what} the batch for compression.type: {e}"),
        };
        let mut bytes = Bytes::copy_from_slice(batch);
        let mut set = RecordBatchDecoder::decode(&mut bytes).map_err(|e| failed("decode", e))?;
        if h.base_sequence == -1 {
            // No sequences (not idempotent): the encoder keeps records in
            // one batch while offset minus sequence is constant, and takes
            // the first record's sequence as the base: -1, as sent.
            let first = set.records.first().map_or(0, |r| r.offset);
            for r in &mut set.records {
                r.sequence = (r.offset - first) as i32 - 1;
            }
        }
        RecordBatchEncoder::encode(
            &mut out,
            set.records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: target,
            },
        )
        .map_err(|e| failed("encode", e))?;
    }
    Ok(Some(out.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::BatchHeader;
    use kafka_protocol::records::{Record, TimestampType};

    fn records(n: i64, producer_id: i64) -> Vec<Record> {
        (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch: if producer_id >= 0 { 3 } else { -1 },
                timestamp_type: TimestampType::Creation,
                offset: i,
                // Without a producer id a batch's base sequence is -1.
                sequence: if producer_id >= 0 {
                    10 + i as i32
                } else {
                    i as i32 - 1
                },
                timestamp: 1_000 + i,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(vec![b'v'; 300])),
                headers: [(
                    kafka_protocol::protocol::StrBytes::from_static_str("h"),
                    Some(Bytes::from_static(b"x")),
                )]
                .into_iter()
                .collect(),
                delete_horizon: false,
            })
            .collect()
    }

    fn encode(recs: &[Record], c: Compression) -> Bytes {
        let mut b = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut b,
            recs.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: c,
            },
        )
        .expect("encode");
        b.freeze()
    }

    #[test]
    fn batches_take_the_topic_codec_and_keep_their_records() {
        let recs = records(20, 77);
        let plain = encode(&recs, Compression::None);
        let lz4 = encode(&recs, Compression::Lz4);
        let both = [plain.clone(), lz4.clone()].concat();
        for target in [
            Compression::Zstd,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::None,
        ] {
            let out = recompress(&both, target, 1 << 20)
                .expect("valid")
                .unwrap_or_else(|| Bytes::from(both.clone()));
            let headers = validate_batches(&out, 1 << 20).expect("valid output");
            assert_eq!(headers.len(), 2);
            for h in &headers {
                assert_eq!(h.compression(), target as u8);
                assert_eq!(h.producer_id, 77);
                assert_eq!(h.base_sequence, 10);
                assert_eq!(h.record_count(), 20);
            }
            let mut buf = out.clone();
            for set in RecordBatchDecoder::decode_all(&mut buf).expect("decode") {
                assert_eq!(set.records.len(), recs.len());
                for (a, b) in set.records.iter().zip(&recs) {
                    assert_eq!(
                        (&a.key, &a.value, a.timestamp),
                        (&b.key, &b.value, b.timestamp)
                    );
                    assert_eq!(a.headers, b.headers);
                }
            }
        }
        // Already in the codec: nothing to copy.
        assert!(recompress(&lz4, Compression::Lz4, 1 << 20)
            .expect("valid")
            .is_none());
    }

    #[test]
    fn a_batch_without_sequences_stays_one_batch() {
        let plain = encode(&records(30, -1), Compression::None);
        let out = recompress(&plain, Compression::Zstd, 1 << 20)
            .expect("valid")
            .expect("recompressed");
        let headers = validate_batches(&out, 1 << 20).expect("valid output");
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].record_count(), 30);
        assert_eq!(headers[0].base_sequence, -1);
        assert_eq!(headers[0].producer_id, -1);
    }

    #[test]
    fn a_damaged_batch_is_refused_not_reencoded() {
        let mut bad = encode(&records(5, -1), Compression::None).to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(
            recompress(&bad, Compression::Zstd, 1 << 20),
            Err(BatchError::Crc { .. })
        ));
        let _ = BatchHeader::parse(&bad).expect("header still parses");
    }
}
