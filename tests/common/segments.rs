//! Reading Kafka-layout segment files (`<data>/<topic>-<p>/<base:020>.log`)
//! directly, to damage them on purpose and to see what the broker stored.

use std::path::{Path, PathBuf};

/// One record batch header as stored in a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    /// Byte position of the batch in the file.
    pub position: u64,
    /// Total size in bytes (12 + batchLength).
    pub size: u64,
    pub base_offset: i64,
    pub last_offset_delta: i32,
    pub magic: i8,
    pub attributes: i16,
    pub record_count: i32,
}

impl BatchInfo {
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> i16 {
        self.attributes & 0x07
    }
}

pub fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

/// All `.log` files of a partition, sorted by base offset.
pub fn segment_files(data_dir: &Path, topic: &str, partition: i32) -> Vec<PathBuf> {
    let dir = partition_dir(data_dir, topic, partition);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read partition dir {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    files
}

/// The last segment that holds data (a shutdown may leave an empty active
/// segment after it).
pub fn last_nonempty_segment(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    segment_files(data_dir, topic, partition)
        .into_iter()
        .rev()
        .find(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
        .unwrap_or_else(|| {
            panic!(
                "no non-empty .log segment in {}",
                partition_dir(data_dir, topic, partition).display()
            )
        })
}

/// Walk the batch headers of a segment file. Stops at the first header that
/// does not fit in the file (or a zero-filled preallocated tail).
pub fn batches(path: &Path) -> Vec<BatchInfo> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 61 <= data.len() {
        let b = &data[pos..];
        let base_offset = i64::from_be_bytes(b[0..8].try_into().expect("8 bytes"));
        let length = i32::from_be_bytes(b[8..12].try_into().expect("4 bytes"));
        if length <= 0 {
            break;
        }
        let size = 12 + length as usize;
        if pos + size > data.len() {
            break;
        }
        out.push(BatchInfo {
            position: pos as u64,
            size: size as u64,
            base_offset,
            magic: b[16] as i8,
            attributes: i16::from_be_bytes(b[21..23].try_into().expect("2 bytes")),
            last_offset_delta: i32::from_be_bytes(b[23..27].try_into().expect("4 bytes")),
            record_count: i32::from_be_bytes(b[57..61].try_into().expect("4 bytes")),
        });
        pos += size;
    }
    out
}

/// Batches of every segment of a partition, in order.
pub fn partition_batches(data_dir: &Path, topic: &str, partition: i32) -> Vec<BatchInfo> {
    segment_files(data_dir, topic, partition)
        .iter()
        .flat_map(|p| batches(p))
        .collect()
}
