//! Copies a tiered segment's batches to a local file, reading through the
//! tier's reader (its read cache, every batch checked, bounded reads), for
//! the tasks that rework tiered history: tier compaction and the table
//! export of segments no longer on local disk.

use std::path::Path;

use bytes::Bytes;
use tiering::{RemotePartition, SegmentMeta, TierError};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::log::batch::BatchHeader;

/// Bytes asked of the tier per read while staging.
const STAGE_READ_BYTES: u64 = 1 << 20;

/// Errors of staging a segment.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Tier(#[from] TierError),
    #[error("staging a tiered segment: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("staging a tiered segment: a batch is damaged at offset {offset}: {message}")]
    Damaged { offset: i64, message: String },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StageError {
    let path = path.display().to_string();
    move |source| StageError::Io { op, path, source }
}

/// Copies the batches of `seg` at or after `from` (the previous segment's
/// end: segments may overlap) into `path`, reading through the tier's
/// reader; returns the first staged offset and the bytes read.
pub async fn stage_segment(
    remote: &RemotePartition,
    seg: &SegmentMeta,
    from: i64,
    path: &Path,
    cancel: &CancellationToken,
) -> Result<(i64, u64), StageError> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(io_err("create", path))?;
    let mut offset = seg.base_offset.max(from);
    let mut first: Option<i64> = None;
    let mut read = 0u64;
    'reads: while offset <= seg.last_offset {
        if cancel.is_cancelled() {
            return Err(TierError::Cancelled.into());
        }
        let bytes: Bytes = remote.read(offset, STAGE_READ_BYTES).await?;
        read += bytes.len() as u64;
        let mut at = 0usize;
        let mut progressed = false;
        while at < bytes.len() {
            let h = BatchHeader::parse(&bytes[at..]).map_err(|e| StageError::Damaged {
                offset,
                message: e.to_string(),
            })?;
            let len = h.total_len();
            let batch = bytes.get(at..at + len).ok_or(StageError::Damaged {
                offset,
                message: "batch is truncated".into(),
            })?;
            at += len;
            if h.base_offset > seg.last_offset {
                // The next segment's: this one has nothing more.
                break 'reads;
            }
            if h.last_offset() < offset {
                continue;
            }
            first.get_or_insert(h.base_offset);
            file.write_all(batch).await.map_err(io_err("write", path))?;
            offset = h.last_offset() + 1;
            progressed = true;
        }
        if !progressed {
            break;
        }
    }
    file.sync_all().await.map_err(io_err("sync", path))?;
    Ok((first.unwrap_or(seg.base_offset.max(from)), read))
}
