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
    pub partition_leader_epoch: i32,
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
        partition_leader_epoch: be_i32(bytes, 12),
    })
}

/// What a [`BatchScan`] found in a whole segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanSummary {
    pub batches: u64,
    /// Base offset of the first batch (`None` for an empty segment).
    pub first_offset: Option<i64>,
    pub last_offset: i64,
    pub max_timestamp: i64,
    /// Highest partition leader epoch of any batch.
    pub max_leader_epoch: i32,
}

/// Checks a segment's batches as its bytes stream past, in pieces of any
/// size: every header parses, every batch's CRC-32C holds, offsets
/// increase, and (when given) every batch lies within an offset range.
/// Only a batch that straddles two pieces is copied.
#[derive(Debug)]
pub struct BatchScan {
    range: Option<(i64, i64)>,
    /// Bytes in the whole segment: no batch may run past them.
    size: u64,
    /// Bytes of a batch begun in an earlier piece.
    pending: Vec<u8>,
    /// Position in the segment of the first byte not yet consumed.
    pos: u64,
    summary: ScanSummary,
}

/// Where a scan found a bad batch, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    pub position: u64,
    pub message: String,
}

impl BatchScan {
    /// A scan of a segment of `size` bytes whose batches must lie within
    /// `range` (first, last offset).
    pub fn new(size: u64, range: Option<(i64, i64)>) -> BatchScan {
        BatchScan {
            range,
            size,
            pending: Vec::new(),
            pos: 0,
            summary: ScanSummary {
                batches: 0,
                first_offset: None,
                last_offset: -1,
                max_timestamp: -1,
                max_leader_epoch: -1,
            },
        }
    }

    /// Consumes the next bytes of the segment.
    pub fn update(&mut self, mut data: &[u8]) -> Result<(), ScanError> {
        // Complete a straddling batch first: its header, then its body.
        while !self.pending.is_empty() {
            let need = needed(self.pos, self.size, &self.pending)?;
            if self.pending.len() >= need {
                let batch = std::mem::take(&mut self.pending);
                self.batch(&batch)?;
                break;
            }
            if data.is_empty() {
                return Ok(());
            }
            let take = (need - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        while !data.is_empty() {
            let need = needed(self.pos, self.size, data)?;
            if data.len() < need {
                self.pending.extend_from_slice(data);
                return Ok(());
            }
            let (batch, rest) = data.split_at(need);
            self.batch(batch)?;
            data = rest;
        }
        Ok(())
    }

    /// Ends the scan: the segment must end on a batch boundary.
    pub fn finish(self) -> Result<ScanSummary, ScanError> {
        if !self.pending.is_empty() {
            return Err(self.error("the last batch is truncated"));
        }
        Ok(self.summary)
    }

    fn batch(&mut self, b: &[u8]) -> Result<(), ScanError> {
        let h = parse_header(b).map_err(|p| self.error(&p.to_string()))?;
        if let Err((expected, actual)) = check_crc(b) {
            return Err(self.error(&format!(
                "batch crc mismatch. base_offset={}, expected={expected:#010x}, actual={actual:#010x}",
                h.base_offset
            )));
        }
        let s = &mut self.summary;
        if s.batches > 0 && h.base_offset <= s.last_offset {
            return Err(self.error(&format!(
                "batch offsets are not increasing. base_offset={}, previous_last_offset={}",
                h.base_offset, self.summary.last_offset
            )));
        }
        if h.last_offset < h.base_offset {
            return Err(self.error("batch last offset is below its base offset"));
        }
        if let Some((lo, hi)) = self.range {
            if h.base_offset < lo || h.last_offset > hi {
                return Err(self.error(&format!(
                    "batch lies outside the segment's offsets. base_offset={}, last_offset={}, segment_first={lo}, segment_last={hi}",
                    h.base_offset, h.last_offset
                )));
            }
        }
        let s = &mut self.summary;
        s.first_offset.get_or_insert(h.base_offset);
        s.batches += 1;
        s.last_offset = h.last_offset;
        s.max_timestamp = s.max_timestamp.max(h.max_timestamp);
        s.max_leader_epoch = s.max_leader_epoch.max(h.partition_leader_epoch);
        self.pos += b.len() as u64;
        Ok(())
    }

    fn error(&self, message: &str) -> ScanError {
        scan_error(self.pos, message)
    }
}

fn scan_error(position: u64, message: &str) -> ScanError {
    ScanError {
        position,
        message: message.to_string(),
    }
}

/// Bytes the batch at the start of `b` (at position `pos` of a segment of
/// `size` bytes) takes: its whole length once its header is there, else the
/// header's length.
fn needed(pos: u64, size: u64, b: &[u8]) -> Result<usize, ScanError> {
    if b.len() < HEADER_LEN {
        return Ok(HEADER_LEN);
    }
    let h = parse_header(b).map_err(|p| scan_error(pos, &p.to_string()))?;
    if pos.saturating_add(h.total_len) > size {
        return Err(scan_error(pos, "batch runs past the end of the segment"));
    }
    usize::try_from(h.total_len).map_err(|_| scan_error(pos, "batch length does not fit in memory"))
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

    fn segment(batches: &[(i64, usize)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (base, records) in batches {
            let mut b = BatchBuilder::new(*base).timestamp(1_000 + base);
            for i in 0..*records {
                b = b.record(b"key", format!("value-{i}").as_bytes());
            }
            out.extend_from_slice(&b.build());
        }
        out
    }

    #[test]
    fn scan_accepts_a_segment_in_any_pieces() {
        let seg = segment(&[(10, 3), (13, 1), (14, 5)]);
        for piece in [1, 7, 61, 62, 100, seg.len()] {
            let mut scan = BatchScan::new(seg.len() as u64, Some((10, 18)));
            for p in seg.chunks(piece) {
                scan.update(p).expect("good batches");
            }
            let s = scan.finish().expect("ends on a batch");
            assert_eq!(s.batches, 3);
            assert_eq!(s.first_offset, Some(10));
            assert_eq!(s.last_offset, 18);
        }
    }

    #[test]
    fn scan_refuses_damage_truncation_and_foreign_offsets() {
        let seg = segment(&[(0, 2), (2, 2)]);
        let first_len = parse_header(&seg).expect("header").total_len as usize;
        let mut bad = seg.clone();
        bad[first_len + 70] ^= 0x40;
        let mut scan = BatchScan::new(bad.len() as u64, None);
        let e = scan.update(&bad).expect_err("crc");
        assert_eq!(e.position, first_len as u64);
        assert!(e.message.contains("crc"), "{}", e.message);

        let mut scan = BatchScan::new(seg.len() as u64, None);
        scan.update(&seg[..seg.len() - 1]).expect("so far so good");
        assert!(scan.finish().is_err());

        let mut scan = BatchScan::new(seg.len() as u64, Some((100, 200)));
        assert!(scan.update(&seg).is_err());
        let mut scan = BatchScan::new(seg.len() as u64, Some((0, 2)));
        let e = scan.update(&seg).expect_err("last batch beyond the range");
        assert!(e.message.contains("outside"), "{}", e.message);

        let twice = [seg.clone(), seg].concat();
        let mut scan = BatchScan::new(twice.len() as u64, None);
        assert!(scan.update(&twice).is_err());
    }

    proptest::proptest! {
        #[test]
        fn scan_never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            piece in 1usize..100,
        ) {
            let mut scan = BatchScan::new(bytes.len() as u64, Some((0, 10)));
            let mut ok = true;
            for p in bytes.chunks(piece) {
                if scan.update(p).is_err() {
                    ok = false;
                    break;
                }
            }
            if ok {
                let _ = scan.finish();
            }
        }
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
