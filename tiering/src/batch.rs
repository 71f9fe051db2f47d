//! Just enough of Kafka's RecordBatch v2 format to cut whole batches out of a
//! tiered segment and check their CRC-32C.
//!
//! Layout of the 61-byte header (big-endian): baseOffset i64 @0,
//! batchLength i32 @8 (bytes after this field), partitionLeaderEpoch i32 @12,
//! magic i8 @16, crc u32 @17 (CRC-32C over bytes 21..end), attributes i16
//! @21, lastOffsetDelta i32 @23, baseTimestamp i64 @27, maxTimestamp i64 @35,
//! producerId i64 @43, producerEpoch i16 @51, baseSequence i32 @53,
//! recordCount i32 @57. The batch occupies `12 + batchLength` bytes.

/// Bytes of the fixed v2 batch header.
pub const HEADER_LEN: usize = 61;
/// Bytes before the length field's coverage starts (baseOffset + batchLength).
pub const LOG_OVERHEAD: usize = 12;
const CRC_AT: usize = 17;
const CRC_FROM: usize = 21;

/// The fields of a batch header the tier uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Total bytes of the batch, header included (`12 + batchLength`).
    pub total_len: u64,
    pub magic: i8,
    pub crc: u32,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// Why bytes are not a usable batch header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderProblem {
    /// Fewer than [`HEADER_LEN`] bytes.
    Short,
    /// Not magic 2.
    Magic(i8),
    /// batchLength too small to hold the header.
    Length(i32),
}

impl std::fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderProblem::Short => write!(f, "header is truncated"),
            HeaderProblem::Magic(m) => write!(f, "unsupported magic. magic={m}"),
            HeaderProblem::Length(l) => write!(f, "batch length too small. batch_length={l}"),
        }
    }
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}

/// Parses the header at the start of `bytes`.
pub fn parse_header(bytes: &[u8]) -> Result<BatchHeader, HeaderProblem> {
    if bytes.len() < HEADER_LEN {
        return Err(HeaderProblem::Short);
    }
    let batch_length = be_i32(bytes, 8);
    let magic = bytes[16] as i8;
    if magic != 2 {
        return Err(HeaderProblem::Magic(magic));
    }
    if batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(HeaderProblem::Length(batch_length));
    }
    let base_offset = be_i64(bytes, 0);
    Ok(BatchHeader {
        base_offset,
        total_len: LOG_OVERHEAD as u64 + batch_length as u64,
        magic,
        crc: be_i32(bytes, CRC_AT) as u32,
        last_offset: base_offset.saturating_add(i64::from(be_i32(bytes, 23))),
        max_timestamp: be_i64(bytes, 35),
    })
}

/// CRC-32C of a whole batch as Kafka computes it (bytes 21..end).
pub fn batch_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(batch.get(CRC_FROM..).unwrap_or(&[]))
}

/// Checks the CRC of one whole batch; returns `(stored, computed)` on mismatch.
pub fn check_crc(batch: &[u8]) -> Result<(), (u32, u32)> {
    if batch.len() < HEADER_LEN {
        return Err((0, 0));
    }
    let stored = be_i32(batch, CRC_AT) as u32;
    let actual = batch_crc(batch);
    if stored == actual {
        Ok(())
    } else {
        Err((stored, actual))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::BatchBuilder;

    #[test]
    fn header_of_built_batch() {
        let b = BatchBuilder::new(100)
            .timestamp(5_000)
            .record(b"k", b"v1")
            .record(b"k", b"v2")
            .build();
        let h = parse_header(&b).expect("header");
        assert_eq!(h.base_offset, 100);
        assert_eq!(h.last_offset, 101);
        assert_eq!(h.total_len, b.len() as u64);
        assert_eq!(h.max_timestamp, 5_001);
        assert!(check_crc(&b).is_ok());
        let mut bad = b.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(check_crc(&bad).is_err());
    }

    #[test]
    fn bad_headers() {
        assert_eq!(parse_header(&[0u8; 10]), Err(HeaderProblem::Short));
        let mut b = BatchBuilder::new(0).record(b"", b"x").build().to_vec();
        b[16] = 1;
        assert_eq!(parse_header(&b), Err(HeaderProblem::Magic(1)));
        b[16] = 2;
        b[8..12].copy_from_slice(&3i32.to_be_bytes());
        assert_eq!(parse_header(&b), Err(HeaderProblem::Length(3)));
    }
}
