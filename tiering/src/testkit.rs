//! Test support shared by this crate's tests and the broker's: real Kafka
//! v2 record batches and whole sealed segments (log + Kafka-format indexes)
//! written to a directory. Not used on any production path.

use std::path::{Path, PathBuf};

use bytes::{BufMut, Bytes, BytesMut};

use crate::SegmentUpload;

/// Builds one uncompressed RecordBatch v2 with a valid CRC-32C.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    base_offset: i64,
    base_timestamp: i64,
    leader_epoch: i32,
    records: Vec<(Vec<u8>, Vec<u8>)>,
}

fn put_varint(buf: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            buf.put_u8(z as u8);
            return;
        }
        buf.put_u8((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

impl BatchBuilder {
    pub fn new(base_offset: i64) -> Self {
        BatchBuilder {
            base_offset,
            base_timestamp: 1_700_000_000_000,
            leader_epoch: 0,
            records: Vec::new(),
        }
    }

    /// Timestamp of the first record; record `i` gets `timestamp + i`.
    pub fn timestamp(mut self, ts: i64) -> Self {
        self.base_timestamp = ts;
        self
    }

    pub fn leader_epoch(mut self, epoch: i32) -> Self {
        self.leader_epoch = epoch;
        self
    }

    pub fn record(mut self, key: &[u8], value: &[u8]) -> Self {
        self.records.push((key.to_vec(), value.to_vec()));
        self
    }

    pub fn build(&self) -> Bytes {
        let count = self.records.len().max(1);
        let mut records = BytesMut::new();
        for (i, (k, v)) in self.records.iter().enumerate() {
            let mut body = BytesMut::new();
            body.put_i8(0); // attributes
            put_varint(&mut body, i as i64); // timestamp delta
            put_varint(&mut body, i as i64); // offset delta
            put_varint(&mut body, k.len() as i64);
            body.put_slice(k);
            put_varint(&mut body, v.len() as i64);
            body.put_slice(v);
            put_varint(&mut body, 0); // headers
            put_varint(&mut records, body.len() as i64);
            records.put_slice(&body);
        }
        let last_delta = (count - 1) as i32;
        let mut b = BytesMut::with_capacity(61 + records.len());
        b.put_i64(self.base_offset);
        b.put_i32(0); // length, patched below
        b.put_i32(self.leader_epoch);
        b.put_i8(2);
        b.put_u32(0); // crc, patched below
        b.put_i16(0); // attributes
        b.put_i32(last_delta);
        b.put_i64(self.base_timestamp);
        b.put_i64(self.base_timestamp + i64::from(last_delta));
        b.put_i64(-1); // producer id
        b.put_i16(-1);
        b.put_i32(-1);
        b.put_i32(self.records.len() as i32);
        b.put_slice(&records);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b.freeze()
    }
}

/// A sealed segment written to disk the way the broker writes one.
#[derive(Debug, Clone)]
pub struct TestSegment {
    pub base_offset: i64,
    pub last_offset: i64,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    /// The whole `.log` file.
    pub log: Bytes,
    /// `(base_offset, position, len)` of every batch.
    pub batches: Vec<(i64, u64, u64)>,
    pub dir: PathBuf,
}

impl TestSegment {
    /// Writes `batches` batches of `records_per_batch` records with values of
    /// `value_len` bytes, starting at `base_offset` and timestamp `ts0`, with
    /// a sparse `.index` every `index_interval` bytes and a `.timeindex`.
    pub fn write(
        dir: &Path,
        base_offset: i64,
        batches: usize,
        records_per_batch: usize,
        value_len: usize,
        ts0: i64,
    ) -> std::io::Result<TestSegment> {
        std::fs::create_dir_all(dir)?;
        let mut log = BytesMut::new();
        let mut index = BytesMut::new();
        let mut timeindex = BytesMut::new();
        let mut offset = base_offset;
        let mut spans = Vec::new();
        let mut last_indexed: Option<u64> = None;
        let mut max_ts = i64::MIN;
        let index_interval = 4096u64;
        for b in 0..batches {
            let ts = ts0 + (b * records_per_batch) as i64;
            let mut builder = BatchBuilder::new(offset).timestamp(ts);
            for r in 0..records_per_batch {
                let value: Vec<u8> = (0..value_len)
                    .map(|i| ((offset as usize + r + i) % 251) as u8)
                    .collect();
                builder = builder.record(format!("k{}", offset + r as i64).as_bytes(), &value);
            }
            let batch = builder.build();
            let pos = log.len() as u64;
            if last_indexed.is_none_or(|p| pos - p >= index_interval) && b > 0 {
                index.put_u32((offset - base_offset) as u32);
                index.put_u32(pos as u32);
                last_indexed = Some(pos);
            }
            if last_indexed.is_none() {
                last_indexed = Some(0);
            }
            let batch_max = ts + records_per_batch as i64 - 1;
            if batch_max > max_ts {
                timeindex.put_i64(batch_max);
                timeindex.put_u32((offset - base_offset) as u32);
                max_ts = batch_max;
            }
            spans.push((offset, pos, batch.len() as u64));
            log.put_slice(&batch);
            offset += records_per_batch as i64;
        }
        let name = format!("{base_offset:020}");
        std::fs::write(dir.join(format!("{name}.log")), &log)?;
        std::fs::write(dir.join(format!("{name}.index")), &index)?;
        std::fs::write(dir.join(format!("{name}.timeindex")), &timeindex)?;
        Ok(TestSegment {
            base_offset,
            last_offset: offset - 1,
            first_timestamp: ts0,
            max_timestamp: max_ts,
            log: log.freeze(),
            batches: spans,
            dir: dir.to_path_buf(),
        })
    }

    /// The upload description of this segment at `leader_epoch`.
    pub fn upload(&self, leader_epoch: i32) -> SegmentUpload {
        let name = format!("{:020}", self.base_offset);
        let f = |ext: &str| self.dir.join(format!("{name}.{ext}"));
        SegmentUpload {
            base_offset: self.base_offset,
            last_offset: self.last_offset,
            first_timestamp: Some(self.first_timestamp),
            max_timestamp: self.max_timestamp,
            leader_epoch,
            size: self.log.len() as u64,
            log: f("log"),
            offset_index: f("index"),
            time_index: f("timeindex"),
            producer_snapshot: Some(Bytes::from(format!(
                "producer-state {}",
                self.last_offset + 1
            ))),
            leader_epochs: Some(Bytes::from_static(b"0\n1\n0 0\n")),
            txn_index: None,
        }
    }

    /// The bytes a reader must return for `offset` with `max_bytes`: whole
    /// batches from the one holding `offset`, at least one, within this segment.
    pub fn expected_read(&self, offset: i64, max_bytes: u64) -> Bytes {
        let Some(first) = self
            .batches
            .iter()
            .position(|&(base, _, _)| base <= offset && offset < base + self.next_base_after(base))
        else {
            return Bytes::new();
        };
        let start = self.batches[first].1;
        let mut end = start + self.batches[first].2;
        for &(_, pos, len) in &self.batches[first + 1..] {
            if end - start + len > max_bytes {
                break;
            }
            end = pos + len;
        }
        self.log.slice(start as usize..end as usize)
    }

    fn next_base_after(&self, base: i64) -> i64 {
        let i = self
            .batches
            .iter()
            .position(|&(b, _, _)| b == base)
            .unwrap_or(0);
        match self.batches.get(i + 1) {
            Some(&(next, _, _)) => next - base,
            None => self.last_offset + 1 - base,
        }
    }
}
