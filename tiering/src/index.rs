//! Lookups in Kafka-format segment indexes fetched from the tier.
//!
//! `.index` entries are 8 bytes (relative offset u32, position u32) and
//! `.timeindex` entries are 12 bytes (timestamp i64, relative offset u32),
//! big-endian, offsets relative to the segment's base offset. Both are sparse
//! hints: a lookup gives a position at or before the wanted batch and the
//! reader walks batch headers forward from there, so an index that is
//! missing, empty or malformed only costs a longer walk, never a wrong answer.

/// Largest `.index` position whose offset is `<= offset`, or 0.
pub fn position_for_offset(index: &[u8], base_offset: i64, offset: i64, segment_size: u64) -> u64 {
    let rel = offset - base_offset;
    if rel <= 0 || index.len() % 8 != 0 {
        return 0;
    }
    let entries = index.len() / 8;
    let entry = |i: usize| -> (i64, u64) {
        let e = &index[i * 8..i * 8 + 8];
        (
            i64::from(u32::from_be_bytes([e[0], e[1], e[2], e[3]])),
            u64::from(u32::from_be_bytes([e[4], e[5], e[6], e[7]])),
        )
    };
    // Binary search for the last entry with relative offset <= rel.
    let (mut lo, mut hi) = (0usize, entries);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if entry(mid).0 <= rel {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if lo == 0 {
        return 0;
    }
    let (_, pos) = entry(lo - 1);
    // A hint past the segment cannot be trusted; walk from the start then.
    if pos >= segment_size {
        0
    } else {
        pos
    }
}

/// Offset of the largest `.timeindex` entry with timestamp `<= ts`, or the
/// base offset when there is none. Every batch before it has a smaller max
/// timestamp, so the first batch reaching `ts` is at or after it.
pub fn offset_for_timestamp(timeindex: &[u8], base_offset: i64, ts: i64) -> i64 {
    if timeindex.len() % 12 != 0 {
        return base_offset;
    }
    let mut best = base_offset;
    for e in timeindex.chunks_exact(12) {
        let t = i64::from_be_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
        let rel = i64::from(u32::from_be_bytes([e[8], e[9], e[10], e[11]]));
        if t > ts {
            break;
        }
        // The entry says batch `rel` is the first to reach `t <= ts`;
        // batches before it are all below `t`, hence below `ts`.
        best = base_offset + rel;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(entries: &[(u32, u32)]) -> Vec<u8> {
        entries
            .iter()
            .flat_map(|(o, p)| o.to_be_bytes().into_iter().chain(p.to_be_bytes()))
            .collect()
    }

    #[test]
    fn offset_lookup() {
        let i = idx(&[(10, 100), (20, 200), (30, 300)]);
        assert_eq!(position_for_offset(&i, 1000, 1000, 1000), 0);
        assert_eq!(position_for_offset(&i, 1000, 1009, 1000), 0);
        assert_eq!(position_for_offset(&i, 1000, 1010, 1000), 100);
        assert_eq!(position_for_offset(&i, 1000, 1025, 1000), 200);
        assert_eq!(position_for_offset(&i, 1000, 5000, 1000), 300);
        assert_eq!(position_for_offset(&i, 1000, 5000, 250), 0);
        assert_eq!(position_for_offset(&[1, 2, 3], 0, 5, 100), 0);
        assert_eq!(position_for_offset(&[], 0, 5, 100), 0);
    }

    #[test]
    fn time_lookup() {
        let mut t = Vec::new();
        for (ts, rel) in [(100i64, 0u32), (200, 5), (300, 9)] {
            t.extend_from_slice(&ts.to_be_bytes());
            t.extend_from_slice(&rel.to_be_bytes());
        }
        assert_eq!(offset_for_timestamp(&t, 50, 10), 50);
        assert_eq!(offset_for_timestamp(&t, 50, 100), 50);
        assert_eq!(offset_for_timestamp(&t, 50, 250), 55);
        assert_eq!(offset_for_timestamp(&t, 50, 9999), 59);
    }
}
