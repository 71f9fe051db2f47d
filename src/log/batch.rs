//! Kafka RecordBatch v2 (magic 2): header parsing, produce validation and
//! offset assignment.
//!
//! # Overview
//!
//! Batches stay opaque bytes on the hot path. [`BatchHeader::parse`] reads the
//! fixed 61-byte header (big-endian, Kafka's layout), [`validate_batches`]
//! walks a produce payload and checks every batch (complete, magic 2, sane
//! lengths and counts, CRC-32C, size limit), and [`assign_offsets`] rewrites the
//! fields the broker owns (base offset, partition leader epoch and, for
//! `LogAppendTime` topics, the timestamps) in place. Records are never decoded
//! here; compressed batches are stored as they came.
//!
//! # Consistency
//!
//! The CRC covers bytes 21.. (attributes to the end of the batch). The base
//! offset and the partition leader epoch sit before it, so rewriting them does
//! not change the CRC; rewriting timestamps does, and [`assign_offsets`]
//! recomputes it in that case.
//!
//! # Crash safety
//!
//! Pure functions over byte slices; no I/O. The same parser and CRC check are
//! used by log recovery to find the last valid batch of a torn segment.

use thiserror::Error;

/// Bytes of the RecordBatch v2 header, up to the first record.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes before the `batchLength` count starts: baseOffset (8) + batchLength (4).
pub const LOG_OVERHEAD: usize = 12;
/// Smallest legal `batchLength`: a header with no records.
pub const MIN_BATCH_LENGTH: i32 = 49;
/// The only supported RecordBatch magic.
pub const CURRENT_MAGIC: i8 = 2;
/// The timestamp value meaning "no timestamp".
pub const NO_TIMESTAMP: i64 = -1;

const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const PARTITION_LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;
/// Highest compression codec Kafka defines (zstd).
const MAX_COMPRESSION_CODEC: u8 = 4;

/// Why a record batch was refused.
///
/// Kafka error codes at the API edge: `Corrupt` and `Crc` map to
/// CORRUPT_MESSAGE (2), `UnsupportedMagic` to UNSUPPORTED_FOR_MESSAGE_FORMAT
/// (43) (or CORRUPT_MESSAGE), `TooLarge` to MESSAGE_TOO_LARGE (10),
/// `NotAllowed` to INVALID_RECORD (87).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    #[error("corrupt record batch: {reason}")]
    Corrupt { reason: String },
    #[error("record batch crc mismatch. expected={expected:#010x}, actual={actual:#010x}")]
    Crc { expected: u32, actual: u32 },
    #[error("unsupported record batch magic. magic={magic}")]
    UnsupportedMagic { magic: i8 },
    #[error("record batch too large. size={size}, max={max}")]
    TooLarge { size: usize, max: usize },
    /// A well-formed batch that clients may not write (control batches;
    /// transactional batches while transactions are not supported).
    #[error("record batch not accepted from clients: {reason}")]
    NotAllowed { reason: String },
}

impl BatchError {
    fn corrupt(reason: impl Into<String>) -> Self {
        BatchError::Corrupt {
            reason: reason.into(),
        }
    }
}

/// The fixed header of a RecordBatch v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn bytes_at<const N: usize>(h: &[u8; BATCH_HEADER_LEN], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&h[at..at + N]);
    out
}

impl BatchHeader {
    /// Parses the header at the start of `buf` (which may hold more bytes).
    ///
    /// Checks only what the header alone can prove: length, magic 2,
    /// `batchLength >= 49`, non-negative `lastOffsetDelta` and
    /// `recordsCount`, a known compression codec. The CRC needs the whole
    /// batch: see [`verify_crc`].
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        // Magic sits at byte 16 in every message format, so check it first:
        // a v0/v1 message set gets UnsupportedMagic even when it is short.
        let Some(&magic) = buf.get(MAGIC_AT) else {
            return Err(BatchError::corrupt(format!(
                "batch header truncated. available={}, needed={BATCH_HEADER_LEN}",
                buf.len()
            )));
        };
        let magic = i8::from_be_bytes([magic]);
        if magic != CURRENT_MAGIC {
            return Err(BatchError::UnsupportedMagic { magic });
        }
        let h: &[u8; BATCH_HEADER_LEN] = buf
            .get(..BATCH_HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| {
                BatchError::corrupt(format!(
                    "batch header truncated. available={}, needed={BATCH_HEADER_LEN}",
                    buf.len()
                ))
            })?;
        let header = BatchHeader {
            base_offset: i64::from_be_bytes(bytes_at(h, BASE_OFFSET_AT)),
            batch_length: i32::from_be_bytes(bytes_at(h, BATCH_LENGTH_AT)),
            partition_leader_epoch: i32::from_be_bytes(bytes_at(h, PARTITION_LEADER_EPOCH_AT)),
            magic,
            crc: u32::from_be_bytes(bytes_at(h, CRC_AT)),
            attributes: i16::from_be_bytes(bytes_at(h, ATTRIBUTES_AT)),
            last_offset_delta: i32::from_be_bytes(bytes_at(h, LAST_OFFSET_DELTA_AT)),
            base_timestamp: i64::from_be_bytes(bytes_at(h, BASE_TIMESTAMP_AT)),
            max_timestamp: i64::from_be_bytes(bytes_at(h, MAX_TIMESTAMP_AT)),
            producer_id: i64::from_be_bytes(bytes_at(h, PRODUCER_ID_AT)),
            producer_epoch: i16::from_be_bytes(bytes_at(h, PRODUCER_EPOCH_AT)),
            base_sequence: i32::from_be_bytes(bytes_at(h, BASE_SEQUENCE_AT)),
            records_count: i32::from_be_bytes(bytes_at(h, RECORDS_COUNT_AT)),
        };
        if header.batch_length < MIN_BATCH_LENGTH {
            return Err(BatchError::corrupt(format!(
                "batch length below minimum. batch_length={}, min={MIN_BATCH_LENGTH}",
                header.batch_length
            )));
        }
        if header.last_offset_delta < 0 {
            return Err(BatchError::corrupt(format!(
                "negative last offset delta. last_offset_delta={}",
                header.last_offset_delta
            )));
        }
        if header.records_count < 0 {
            return Err(BatchError::corrupt(format!(
                "negative records count. records_count={}",
                header.records_count
            )));
        }
        if header.compression() > MAX_COMPRESSION_CODEC {
            return Err(BatchError::corrupt(format!(
                "unknown compression codec. codec={}",
                header.compression()
            )));
        }
        Ok(header)
    }

    /// Bytes of the whole batch: `12 + batchLength`.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + usize::try_from(self.batch_length).unwrap_or(0)
    }

    /// Offset of the batch's last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// Offset after the batch: `last_offset() + 1`.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    /// Compression codec: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> u8 {
        // Masked to three bits, so always in 0..=7.
        (self.attributes & COMPRESSION_MASK) as u8
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }

    /// The `recordsCount` field.
    pub fn record_count(&self) -> i32 {
        self.records_count
    }
}

/// Checks the CRC-32C of one whole batch (`batch` is exactly the batch).
pub fn verify_crc(batch: &[u8]) -> Result<(), BatchError> {
    let header = BatchHeader::parse(batch)?;
    if batch.len() != header.total_len() {
        return Err(BatchError::corrupt(format!(
            "batch size does not match its length field. size={}, expected={}",
            batch.len(),
            header.total_len()
        )));
    }
    let actual = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    if actual != header.crc {
        return Err(BatchError::Crc {
            expected: header.crc,
            actual,
        });
    }
    Ok(())
}

/// Walks a produce payload and checks every batch.
///
/// Every batch must be complete, magic 2, `batchLength >= 49`, with
/// non-negative `lastOffsetDelta` and `recordsCount`, a known compression
/// codec and a correct CRC-32C. `max_batch_bytes` limits each batch (Kafka's
/// `max.message.bytes` applies per batch). An empty payload is an error.
/// Never panics.
pub fn validate_batches(
    buf: &[u8],
    max_batch_bytes: usize,
) -> Result<Vec<BatchHeader>, BatchError> {
    if buf.is_empty() {
        return Err(BatchError::corrupt("empty record set"));
    }
    let mut headers = Vec::new();
    let mut pos = 0usize;
    while let Some(rest) = buf.get(pos..).filter(|rest| !rest.is_empty()) {
        let header = BatchHeader::parse(rest)?;
        let size = header.total_len();
        if size > max_batch_bytes {
            return Err(BatchError::TooLarge {
                size,
                max: max_batch_bytes,
            });
        }
        let Some(batch) = rest.get(..size) else {
            return Err(BatchError::corrupt(format!(
                "batch truncated. position={pos}, size={size}, available={}",
                rest.len()
            )));
        };
        verify_crc(batch)?;
        headers.push(header);
        pos += size;
    }
    Ok(headers)
}

/// Marks a whole batch (header first) as LogAppendTime and updates its
/// CRC; a batch shorter than its header is left as it is.
pub fn set_log_append_time(batch: &mut [u8]) {
    if batch.len() < BATCH_HEADER_LEN {
        return;
    }
    let attributes =
        i16::from_be_bytes([batch[ATTRIBUTES_AT], batch[ATTRIBUTES_AT + 1]]) | TIMESTAMP_TYPE_BIT;
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// What a control batch says (the `type` in its record's key, Kafka's
/// `ControlRecordType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    /// A transaction's ABORT marker (type 0).
    Abort,
    /// A transaction's COMMIT marker (type 1).
    Commit,
    /// Any other control record (Kafka uses them for its own quorum), or one
    /// whose key does not parse: no transaction marker.
    Other(i16),
}

/// Bytes of a control record's key: `version: i16, type: i16`.
const CONTROL_KEY_LEN: usize = 4;
/// Bytes of a transaction marker's value: `version: i16, coordinator_epoch: i32`.
const MARKER_VALUE_LEN: usize = 6;

impl ControlType {
    fn code(self) -> i16 {
        match self {
            ControlType::Abort => 0,
            ControlType::Commit => 1,
            ControlType::Other(c) => c,
        }
    }
}

/// The varint at `*at` in `buf`, moving `at` past it.
fn varint_at(buf: &[u8], at: &mut usize) -> Option<i64> {
    let (v, n) = read_varint(buf.get(*at..)?)?;
    *at += n;
    Some(v)
}

/// The varint-length-prefixed bytes at `*at` in `buf` (`Some(None)` for a
/// null, negative length), moving `at` past them.
fn varbytes_at<'a>(buf: &'a [u8], at: &mut usize) -> Option<Option<&'a [u8]>> {
    let Ok(len) = usize::try_from(varint_at(buf, at)?) else {
        return Some(None);
    };
    let bytes = buf.get(*at..at.checked_add(len)?)?;
    *at += len;
    Some(Some(bytes))
}

/// The key and value of the first record of the control batch `batch`
/// (header first), which Kafka writes uncompressed; None if it does not
/// parse (never panics).
fn control_record(batch: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let records = batch.get(BATCH_HEADER_LEN..)?;
    let mut at = 0usize;
    // length, attributes (1 byte), timestamp delta, offset delta
    varint_at(records, &mut at)?;
    at += 1;
    varint_at(records, &mut at)?;
    varint_at(records, &mut at)?;
    let key = varbytes_at(records, &mut at)??;
    let value = varbytes_at(records, &mut at)?;
    Some((key, value))
}

/// The control type of the whole control batch `batch` (header first),
/// read from its first record's key, and the coordinator epoch a
/// transaction marker carries in its value. A key that does not parse is
/// `Other(-1)`, a value that does not parse -1; never panics.
pub fn control_marker(batch: &[u8]) -> (ControlType, i32) {
    let Some((key, value)) = control_record(batch) else {
        return (ControlType::Other(-1), -1);
    };
    let kind = match key.get(..CONTROL_KEY_LEN) {
        Some(key) => match i16::from_be_bytes([key[2], key[3]]) {
            0 => ControlType::Abort,
            1 => ControlType::Commit,
            other => ControlType::Other(other),
        },
        None => ControlType::Other(-1),
    };
    let epoch = match value.and_then(|v| v.get(..MARKER_VALUE_LEN)) {
        Some(v) => i32::from_be_bytes([v[2], v[3], v[4], v[5]]),
        None => -1,
    };
    (kind, epoch)
}

/// The control type of the whole control batch `batch` (header first);
/// see [`control_marker`].
pub fn control_type(batch: &[u8]) -> ControlType {
    control_marker(batch).0
}

/// A transaction marker as the coordinator writes it: a transactional
/// control batch of one record (key `version 0, type`, value `version 0,
/// coordinator_epoch`) from `producer_id` at `producer_epoch`, base
/// offset 0 (the log assigns it), no sequence.
pub fn marker_batch(
    producer_id: i64,
    producer_epoch: i16,
    marker: ControlType,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Vec<u8> {
    let mut key = [0u8; CONTROL_KEY_LEN];
    key[2..].copy_from_slice(&marker.code().to_be_bytes());
    let mut value = [0u8; MARKER_VALUE_LEN];
    value[2..].copy_from_slice(&coordinator_epoch.to_be_bytes());
    build_batch_with(
        TRANSACTIONAL_BIT | CONTROL_BIT,
        producer_id,
        producer_epoch,
        -1,
        &[(Some(&key), Some(&value), timestamp)],
    )
}

/// Refuses batches clients may not write: control batches (only a
/// transaction coordinator writes markers, as in Kafka) and, unless
/// `transactional` (the produce belongs to a transaction the coordinator
/// knows), transactional batches, which no marker would ever end.
pub fn check_client_batches(
    headers: &[BatchHeader],
    transactional: bool,
) -> Result<(), BatchError> {
    for h in headers {
        let reason = if h.is_control() {
            "clients may not write control batches"
        } else if h.is_transactional() && !transactional {
            "transactional batches need the transactional id of a transaction (transactional.id)"
        } else {
            continue;
        };
        return Err(BatchError::NotAllowed {
            reason: format!("{reason}. base_offset={}", h.base_offset),
        });
    }
    Ok(())
}

/// Rewrites the broker-owned fields of each batch in place: the headers of
/// [`assigned_headers`] replace the batches' own.
///
/// A header that runs past the end of `buf` stops the rewrite (callers check
/// that the headers cover `buf` exactly, as `Log::append` does).
pub fn assign_offsets(
    buf: &mut [u8],
    headers: &[BatchHeader],
    first_offset: i64,
    partition_leader_epoch: i32,
    log_append_time: Option<i64>,
) {
    let assigned = assigned_headers(
        buf,
        headers,
        first_offset,
        partition_leader_epoch,
        log_append_time,
    );
    let mut pos = 0usize;
    for (header, bytes) in headers.iter().zip(&assigned) {
        buf[pos..pos + BATCH_HEADER_LEN].copy_from_slice(bytes);
        pos += header.total_len();
    }
}

/// The header of each batch of `records` with the broker-owned fields
/// rewritten, to be written ahead of the rest of the batch as received (the
/// payload itself is neither copied nor changed).
///
/// `headers` are the batches of `records`, in order and back to back (as
/// returned by [`validate_batches`]). Base offsets become consecutive from
/// `first_offset` (next base = previous base + lastOffsetDelta + 1) and every
/// partition leader epoch becomes `partition_leader_epoch`; neither is
/// covered by the CRC. With `log_append_time`, the timestamp-type bit is
/// set, base and max timestamps are set to it and the CRC is recomputed over
/// the new header fields and the unchanged rest of the batch.
///
/// A header that runs past the end of `records` ends the list there.
pub fn assigned_headers(
    records: &[u8],
    headers: &[BatchHeader],
    first_offset: i64,
    partition_leader_epoch: i32,
    log_append_time: Option<i64>,
) -> Vec<[u8; BATCH_HEADER_LEN]> {
    let mut out = Vec::with_capacity(headers.len());
    let mut pos = 0usize;
    let mut next_offset = first_offset;
    for header in headers {
        let end = pos.saturating_add(header.total_len());
        let Some(batch) = records.get(pos..end) else {
            break;
        };
        let Some(Ok(mut h)) = batch
            .get(..BATCH_HEADER_LEN)
            .map(<[u8; BATCH_HEADER_LEN]>::try_from)
        else {
            break;
        };
        h[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&next_offset.to_be_bytes());
        h[PARTITION_LEADER_EPOCH_AT..PARTITION_LEADER_EPOCH_AT + 4]
            .copy_from_slice(&partition_leader_epoch.to_be_bytes());
        if let Some(time) = log_append_time {
            let attributes =
                i16::from_be_bytes([h[ATTRIBUTES_AT], h[ATTRIBUTES_AT + 1]]) | TIMESTAMP_TYPE_BIT;
            h[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
            h[BASE_TIMESTAMP_AT..BASE_TIMESTAMP_AT + 8].copy_from_slice(&time.to_be_bytes());
            h[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&time.to_be_bytes());
            let crc = crc32c::crc32c_append(
                crc32c::crc32c(&h[ATTRIBUTES_AT..]),
                &batch[BATCH_HEADER_LEN..],
            );
            h[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        }
        out.push(h);
        next_offset = next_offset
            .saturating_add(i64::from(header.last_offset_delta))
            .saturating_add(1);
        pos = end;
    }
    out
}

/// One record for [`build_batch`]: key, value, timestamp.
#[doc(hidden)]
pub type TestRecord<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, i64);

/// Builds an uncompressed, non-transactional RecordBatch v2 with base offset
/// 0 and a valid CRC. For tests (here and in other modules).
#[doc(hidden)]
pub fn build_batch(records: &[TestRecord<'_>]) -> Vec<u8> {
    build_batch_with(0, -1, -1, -1, records)
}

/// Like [`build_batch`] with explicit attributes and producer fields. The
/// records are always written uncompressed, whatever `attributes` says.
/// Also builds the coordinator's markers ([`marker_batch`]).
#[doc(hidden)]
pub fn build_batch_with(
    attributes: i16,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    records: &[TestRecord<'_>],
) -> Vec<u8> {
    let base_timestamp = records.first().map_or(NO_TIMESTAMP, |r| r.2);
    let max_timestamp = records.iter().map(|r| r.2).max().unwrap_or(NO_TIMESTAMP);
    let mut body = Vec::new();
    for (delta, (key, value, timestamp)) in records.iter().enumerate() {
        let mut record = vec![0u8]; // attributes
        put_varlong(&mut record, timestamp.wrapping_sub(base_timestamp));
        put_varlong(&mut record, i64::try_from(delta).unwrap_or(i64::MAX));
        put_bytes(&mut record, *key);
        put_bytes(&mut record, *value);
        put_varlong(&mut record, 0); // headers
        put_varlong(&mut body, i64::try_from(record.len()).unwrap_or(i64::MAX));
        body.extend_from_slice(&record);
    }
    let count = i32::try_from(records.len()).unwrap_or(i32::MAX);
    let batch_length =
        i32::try_from(BATCH_HEADER_LEN - LOG_OVERHEAD + body.len()).unwrap_or(i32::MAX);
    let mut batch = Vec::with_capacity(BATCH_HEADER_LEN + body.len());
    batch.extend_from_slice(&0i64.to_be_bytes());
    batch.extend_from_slice(&batch_length.to_be_bytes());
    batch.extend_from_slice(&0i32.to_be_bytes()); // partition leader epoch
    batch.push(CURRENT_MAGIC as u8);
    batch.extend_from_slice(&0u32.to_be_bytes()); // crc, set below
    batch.extend_from_slice(&attributes.to_be_bytes());
    batch.extend_from_slice(&(count - 1).max(0).to_be_bytes());
    batch.extend_from_slice(&base_timestamp.to_be_bytes());
    batch.extend_from_slice(&max_timestamp.to_be_bytes());
    batch.extend_from_slice(&producer_id.to_be_bytes());
    batch.extend_from_slice(&producer_epoch.to_be_bytes());
    batch.extend_from_slice(&base_sequence.to_be_bytes());
    batch.extend_from_slice(&count.to_be_bytes());
    batch.extend_from_slice(&body);
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    batch
}

fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varlong(out, -1),
        Some(bytes) => {
            put_varlong(out, i64::try_from(bytes.len()).unwrap_or(i64::MAX));
            out.extend_from_slice(bytes);
        }
    }
}

/// Zigzag varint, as Kafka's records use.
fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A zigzag varint (Kafka's record fields) and its length in bytes.
pub fn read_varint(bytes: &[u8]) -> Option<(i64, usize)> {
    let mut raw = 0u64;
    for (i, b) in bytes.iter().take(10).enumerate() {
        raw |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(((raw >> 1) as i64 ^ -((raw & 1) as i64), i + 1));
        }
    }
    None
}

/// One record as the batch stores it, with every header in order
/// (kafka-protocol's decoder keeps headers in a map, so two with one key
/// become one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<bytes::Bytes>,
    pub value: Option<bytes::Bytes>,
    pub headers: Vec<(bytes::Bytes, Option<bytes::Bytes>)>,
}

/// The records of the whole batch `batch` (whose header is `h`),
/// decompressed; an error (never a panic) when they do not parse.
pub fn stored_records(batch: &bytes::Bytes, h: &BatchHeader) -> Result<Vec<StoredRecord>, String> {
    use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};
    let mut body = batch.slice(BATCH_HEADER_LEN.min(batch.len())..);
    let keep = |b: &mut bytes::Bytes| Ok(b.clone());
    let records =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match h.compression() {
            0 => Ok(body.clone()),
            1 => Gzip::decompress(&mut body, keep).map_err(|e| e.to_string()),
            2 => Snappy::decompress(&mut body, keep).map_err(|e| e.to_string()),
            3 => Lz4::decompress(&mut body, keep).map_err(|e| e.to_string()),
            4 => Zstd::decompress(&mut body, keep).map_err(|e| e.to_string()),
            c => Err(format!("unknown compression codec {c}")),
        }))
        .map_err(|_| "the batch does not decompress".to_string())??;
    let count = usize::try_from(h.records_count).map_err(|_| "negative record count")?;
    let mut out = Vec::with_capacity(count.min(records.len()));
    let mut at = 0usize;
    let bad = |what: &str, i: usize| format!("record {i}: {what}");
    for i in 0..count {
        let field = |at: &mut usize| -> Result<i64, String> {
            let (v, n) = read_varint(records.get(*at..).unwrap_or_default())
                .ok_or_else(|| bad("a length or delta is cut short", i))?;
            *at += n;
            Ok(v)
        };
        let len = field(&mut at)?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| at.checked_add(l))
            .filter(|e| *e <= records.len())
            .ok_or_else(|| bad("its length runs past the batch", i))?;
        at += 1; // attributes
        let timestamp_delta = field(&mut at)?;
        let offset_delta = field(&mut at)?;
        let bytes_field = |at: &mut usize| -> Result<Option<bytes::Bytes>, String> {
            let len = field(at)?;
            if len < 0 {
                return Ok(None);
            }
            let stop = usize::try_from(len)
                .ok()
                .and_then(|l| at.checked_add(l))
                .filter(|e| *e <= end)
                .ok_or_else(|| bad("a field runs past the record", i))?;
            let got = records.slice(*at..stop);
            *at = stop;
            Ok(Some(got))
        };
        let key = bytes_field(&mut at)?;
        let value = bytes_field(&mut at)?;
        let header_count = field(&mut at)?;
        let mut headers = Vec::with_capacity(usize::try_from(header_count).unwrap_or(0).min(64));
        for _ in 0..header_count.max(0) {
            let k = bytes_field(&mut at)?.ok_or_else(|| bad("a header has a null key", i))?;
            let v = bytes_field(&mut at)?;
            headers.push((k, v));
        }
        if at != end {
            return Err(bad("its fields do not fill its length", i));
        }
        out.push(StoredRecord {
            offset: h.base_offset + offset_delta,
            timestamp: if h.is_log_append_time() {
                h.max_timestamp
            } else {
                h.base_timestamp + timestamp_delta
            },
            key,
            value,
            headers,
        });
    }
    if at != records.len() {
        return Err("bytes after the last record".to_string());
    }
    Ok(out)
}

/// The records of a whole batch, decompressed; an error (never a panic)
/// when it does not decode.
pub fn decode_records(
    batch: &bytes::Bytes,
) -> Result<Vec<kafka_protocol::records::Record>, String> {
    let mut bytes = batch.clone();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes)
    }))
    .map_err(|_| "the batch does not decode".to_string())?
    .map(|set| set.records)
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn markers_are_transactional_control_batches_that_say_their_type() {
        for kind in [ControlType::Abort, ControlType::Commit] {
            let b = marker_batch(7, 3, kind, 11, 1_000);
            let headers = validate_batches(&b, usize::MAX).expect("valid");
            let h = headers[0];
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.records_count),
                (7, 3, 1)
            );
            assert_eq!(control_marker(&b), (kind, 11));
        }
        // Kafka's other control records, and a body that does not parse.
        let other = build_batch_with(0x30, 7, 0, -1, &[(Some(&[0, 0, 0, 3]), None, 0)]);
        assert_eq!(
            control_marker(&other),
            (ControlType::Other(3), -1),
            "no value"
        );
        let short = build_batch_with(0x30, 7, 0, -1, &[(Some(&[0]), None, 0)]);
        assert_eq!(control_type(&short), ControlType::Other(-1));
        assert_eq!(control_type(&[1, 2, 3]), ControlType::Other(-1));
    }

    proptest! {
        #[test]
        fn control_type_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut b = marker_batch(1, 0, ControlType::Commit, 0, 0);
            b.truncate(BATCH_HEADER_LEN);
            b.extend_from_slice(&tail);
            let _ = control_marker(&b);
        }
    }

    /// A batch of `values` (keys k0, k1, ...; headers h=i and g=value) in
    /// codec `compression`, encoded by kafka-protocol.
    fn encoded(values: &[Option<Vec<u8>>], compression: u8, log_append: bool) -> bytes::Bytes {
        use kafka_protocol::protocol::StrBytes;
        use kafka_protocol::records::{
            Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: -1,
                producer_id: 7,
                producer_epoch: 0,
                timestamp_type: if log_append {
                    TimestampType::LogAppend
                } else {
                    TimestampType::Creation
                },
                offset: 100 + i as i64,
                sequence: i as i32,
                timestamp: 5_000 - i as i64,
                key: (i % 3 != 0).then(|| bytes::Bytes::from(format!("k{i}"))),
                value: v.clone().map(bytes::Bytes::from),
                headers: [
                    (StrBytes::from_string(format!("h{i}")), None),
                    (
                        StrBytes::from_static_str("g"),
                        v.clone().map(bytes::Bytes::from),
                    ),
                ]
                .into_iter()
                .collect(),
                delete_horizon: false,
            })
            .collect();
        let mut out = bytes::BytesMut::new();
        let compression = match compression {
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            _ => Compression::None,
        };
        RecordBatchEncoder::encode(
            &mut out,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .expect("encode");
        out.freeze()
    }

    proptest! {
        /// Stored records read as kafka-protocol decodes them, in every
        /// codec; a cut batch never panics.
        #[test]
        fn stored_records_match_the_decoder(
            values in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)), 1..20),
            codec in 0u8..5,
            log_append in any::<bool>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let batch = encoded(&values, codec, log_append);
            let h = BatchHeader::parse(&batch).expect("header");
            let got = stored_records(&batch, &h).expect("stored records");
            let want = decode_records(&batch).expect("decoded");
            prop_assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                prop_assert_eq!(g.offset, w.offset);
                prop_assert_eq!(g.timestamp, w.timestamp);
                prop_assert_eq!(&g.key, &w.key);
                prop_assert_eq!(&g.value, &w.value);
                let headers: Vec<(bytes::Bytes, Option<bytes::Bytes>)> = w
                    .headers
                    .iter()
                    .map(|(k, v)| (bytes::Bytes::copy_from_slice(k.as_bytes()), v.clone()))
                    .collect();
                prop_assert_eq!(&g.headers, &headers);
            }
            let short = batch.slice(..BATCH_HEADER_LEN + cut.index(batch.len() - BATCH_HEADER_LEN));
            // Cut short: an error uncompressed; compressed, a codec may
            // not notice a cut frame trailer (the batch CRC, checked
            // before, does), but nothing panics.
            let cut_result = stored_records(&short, &h);
            prop_assert!(codec != 0 || cut_result.is_err());
        }
    }

    #[test]
    fn stored_records_keep_headers_that_share_a_key() {
        // Headers h0 and g: renamed in place to g and g (same length), as a
        // producer may send them; kafka-protocol's map keeps one.
        let mut batch = encoded(&[Some(b"v".to_vec())], 0, false).to_vec();
        let at = batch
            .windows(2)
            .position(|w| w == b"h0")
            .expect("header key");
        batch[at..at + 2].copy_from_slice(b"g\0");
        // "g\0" is not "g": shorten by rewriting the length prefix instead.
        let at_len = at - 1;
        assert_eq!(batch[at_len], 4); // zigzag of 2
        batch[at_len] = 2; // zigzag of 1
        batch.remove(at + 1);
        // The record's length prefix and the batch length shrink by one.
        let record_len = BATCH_HEADER_LEN;
        let (len, n) = read_varint(&batch[record_len..]).expect("record length");
        let mut prefix = Vec::new();
        put_varlong(&mut prefix, len - 1);
        assert_eq!(prefix.len(), n);
        batch[record_len..record_len + n].copy_from_slice(&prefix);
        let batch_length = i32::from_be_bytes(batch[8..12].try_into().unwrap()) - 1;
        batch[8..12].copy_from_slice(&batch_length.to_be_bytes());
        let batch = bytes::Bytes::from(batch);
        let h = BatchHeader::parse(&batch).expect("header");
        let got = stored_records(&batch, &h).expect("stored records");
        let keys: Vec<&[u8]> = got[0].headers.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, vec![b"g".as_slice(), b"g".as_slice()]);
        assert_eq!(got[0].headers[1].1.as_deref(), Some(b"v".as_slice()));
    }

    fn sample() -> Vec<u8> {
        build_batch(&[
            (Some(b"k1".as_slice()), Some(b"v1".as_slice()), 1_000),
            (None, Some(b"value-two".as_slice()), 1_005),
            (Some(b"k3".as_slice()), None, 999),
        ])
    }

    #[test]
    fn build_and_parse_round_trip() {
        let batch = sample();
        let header = BatchHeader::parse(&batch).unwrap();
        assert_eq!(header.total_len(), batch.len());
        assert_eq!(header.magic, 2);
        assert_eq!(header.records_count, 3);
        assert_eq!(header.record_count(), 3);
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.base_timestamp, 1_000);
        assert_eq!(header.max_timestamp, 1_005);
        assert_eq!(header.producer_id, -1);
        assert_eq!(header.compression(), 0);
        assert!(!header.is_transactional());
        assert!(!header.is_control());
        assert!(!header.is_log_append_time());
        assert_eq!(validate_batches(&batch, 1 << 20).unwrap(), vec![header]);
    }

    #[test]
    fn record_encoding_matches_kafka_layout() {
        let batch = build_batch(&[(None, Some(b"ab".as_slice()), 7)]);
        // Zigzag varints: length 8, attributes, ts delta 0, offset delta 0,
        // key -1 (null), value length 2, "ab", 0 headers.
        assert_eq!(
            &batch[BATCH_HEADER_LEN..],
            &[16, 0, 0, 0, 1, 4, b'a', b'b', 0][..]
        );
    }

    #[test]
    fn attribute_bits() {
        let batch = build_batch_with(0x10 | 0x20 | 0x08 | 4, 7, 1, 0, &[(None, None, 1)]);
        let header = BatchHeader::parse(&batch).unwrap();
        assert!(header.is_transactional());
        assert!(header.is_control());
        assert!(header.is_log_append_time());
        assert_eq!(header.compression(), 4);
        assert_eq!(header.producer_id, 7);
    }

    #[test]
    fn validate_rejects_bad_input() {
        assert!(matches!(
            validate_batches(&[], 100),
            Err(BatchError::Corrupt { .. })
        ));

        let mut batch = sample();
        let last = batch.len() - 1;
        batch[last] ^= 0xff;
        assert!(matches!(
            validate_batches(&batch, 1 << 20),
            Err(BatchError::Crc { .. })
        ));

        let mut batch = sample();
        batch[MAGIC_AT] = 1;
        assert_eq!(
            validate_batches(&batch, 1 << 20),
            Err(BatchError::UnsupportedMagic { magic: 1 })
        );

        let batch = sample();
        assert_eq!(
            validate_batches(&batch, 10),
            Err(BatchError::TooLarge {
                size: batch.len(),
                max: 10
            })
        );

        let batch = sample();
        assert!(matches!(
            validate_batches(&batch[..batch.len() - 1], 1 << 20),
            Err(BatchError::Corrupt { .. })
        ));
        assert!(matches!(
            validate_batches(&batch[..30], 1 << 20),
            Err(BatchError::Corrupt { .. })
        ));

        let mut batch = sample();
        batch[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&48i32.to_be_bytes());
        assert!(matches!(
            validate_batches(&batch, 1 << 20),
            Err(BatchError::Corrupt { .. })
        ));

        let mut batch = sample();
        batch[ATTRIBUTES_AT + 1] |= 0x07;
        assert!(matches!(
            validate_batches(&batch, 1 << 20),
            Err(BatchError::Corrupt { .. })
        ));
    }

    #[test]
    fn error_messages_are_lowercase_with_values_after() {
        let err = BatchError::TooLarge { size: 5, max: 3 };
        assert_eq!(err.to_string(), "record batch too large. size=5, max=3");
        let err = BatchError::UnsupportedMagic { magic: 1 };
        assert_eq!(err.to_string(), "unsupported record batch magic. magic=1");
    }

    #[test]
    fn assign_offsets_rewrites_consecutively() {
        let a = sample();
        let b = build_batch(&[(None, Some(b"x".as_slice()), 5)]);
        let mut buf = [a.clone(), b.clone()].concat();
        let headers = validate_batches(&buf, 1 << 20).unwrap();
        assign_offsets(&mut buf, &headers, 100, 7, None);
        let after = validate_batches(&buf, 1 << 20).unwrap();
        assert_eq!(after[0].base_offset, 100);
        assert_eq!(after[0].partition_leader_epoch, 7);
        assert_eq!(after[1].base_offset, 103);
        assert_eq!(after[1].partition_leader_epoch, 7);
        // Only the offset and epoch changed; the CRC still holds.
        assert_eq!(after[0].crc, headers[0].crc);
        assert_eq!(&buf[21..a.len()], &a[21..]);
    }

    #[test]
    fn assign_offsets_log_append_time_recomputes_crc() {
        let mut buf = sample();
        let headers = validate_batches(&buf, 1 << 20).unwrap();
        assign_offsets(&mut buf, &headers, 0, 1, Some(42_000));
        let after = validate_batches(&buf, 1 << 20).unwrap();
        assert!(after[0].is_log_append_time());
        assert_eq!(after[0].max_timestamp, 42_000);
        assert_eq!(after[0].base_timestamp, 42_000);
        assert_ne!(after[0].crc, headers[0].crc);
        verify_crc(&buf).expect("the recomputed CRC covers the rewritten batch");
    }

    #[test]
    fn assigned_headers_leave_the_payload_alone() {
        let a = sample();
        let b = build_batch(&[(None, Some(b"x".as_slice()), 5)]);
        let records = [a.clone(), b.clone()].concat();
        let headers = validate_batches(&records, 1 << 20).unwrap();
        let assigned = assigned_headers(&records, &headers, 100, 7, Some(9));
        assert_eq!(assigned.len(), 2);
        // Each header ahead of the rest of its batch is the batch as stored.
        let stored = [
            &assigned[0][..],
            &a[BATCH_HEADER_LEN..],
            &assigned[1][..],
            &b[BATCH_HEADER_LEN..],
        ]
        .concat();
        let mut in_place = records.clone();
        assign_offsets(&mut in_place, &headers, 100, 7, Some(9));
        assert_eq!(stored, in_place);
        let after = validate_batches(&stored, 1 << 20).unwrap();
        assert_eq!((after[0].base_offset, after[1].base_offset), (100, 103));
        assert_eq!(records, [a, b].concat(), "the payload was changed");
        // A header past the end ends the list.
        let cut = headers[0].total_len() + 10;
        assert_eq!(
            assigned_headers(&records[..cut], &headers, 0, 0, None).len(),
            1
        );
    }

    #[test]
    fn assign_offsets_stops_at_short_buffer() {
        let mut buf = sample();
        let headers = validate_batches(&buf, 1 << 20).unwrap();
        let mut short = buf[..40].to_vec();
        assign_offsets(&mut short, &headers, 9, 1, None);
        assert_eq!(short, buf[..40].to_vec());
        assign_offsets(&mut buf, &[headers[0], headers[0]], 9, 1, None);
        assert_eq!(BatchHeader::parse(&buf).unwrap().base_offset, 9);
    }

    fn arb_record() -> impl Strategy<Value = (Option<Vec<u8>>, Option<Vec<u8>>, i64)> {
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
            0i64..1_000_000_000_000,
        )
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), max in 0usize..1024) {
            let _ = validate_batches(&bytes, max);
            let _ = BatchHeader::parse(&bytes);
            let _ = verify_crc(&bytes);
        }

        #[test]
        fn mutated_header_never_panics(pos in 0usize..BATCH_HEADER_LEN, byte in any::<u8>(), cut in 0usize..128) {
            let mut batch = sample();
            batch[pos] = byte;
            let len = batch.len().saturating_sub(cut);
            let _ = validate_batches(&batch[..len], 1 << 20);
            if let Ok(headers) = validate_batches(&batch[..len], 1 << 20) {
                assign_offsets(&mut batch, &headers, i64::MAX - 3, 1, Some(5));
            }
        }

        #[test]
        fn built_batches_round_trip(batches in proptest::collection::vec(proptest::collection::vec(arb_record(), 0..8), 1..6)) {
            let mut buf = Vec::new();
            for records in &batches {
                let refs: Vec<TestRecord<'_>> = records
                    .iter()
                    .map(|(k, v, t)| (k.as_deref(), v.as_deref(), *t))
                    .collect();
                buf.extend_from_slice(&build_batch(&refs));
            }
            let headers = validate_batches(&buf, usize::MAX).unwrap();
            prop_assert_eq!(headers.len(), batches.len());
            for (header, records) in headers.iter().zip(&batches) {
                prop_assert_eq!(header.records_count as usize, records.len());
                let max = records.iter().map(|r| r.2).max().unwrap_or(NO_TIMESTAMP);
                prop_assert_eq!(header.max_timestamp, max);
            }
            let total: usize = headers.iter().map(BatchHeader::total_len).sum();
            prop_assert_eq!(total, buf.len());
            assign_offsets(&mut buf, &headers, 10, 3, None);
            let after = validate_batches(&buf, usize::MAX).unwrap();
            let mut next = 10;
            for header in &after {
                prop_assert_eq!(header.base_offset, next);
                next = header.next_offset();
            }
        }
    }
}
