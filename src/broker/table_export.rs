//! The broker side of topics as tables (`strata.table.enable`): after a
//! sealed segment is in the tier, the leader writes its records as Parquet
//! (`crate::table`) from the local copy and puts the files beside the tier.
//!
//! Progress is the partition's `table-export-checkpoint` (the offset after
//! the last exported segment), written once every file of a segment is in
//! the store. A crash before that exports the segment again on the next
//! pass: the files have the same names and rows, so they are overwritten,
//! never doubled. Local retention keeps a table topic's segments until they
//! are exported. Export runs in the tier loop, after uploads.

use std::path::Path;

use tiering::{TierError, TierStore};

use crate::partition::{Partition, PartitionError};
use crate::table::{self, TableError};

/// Where exports stage their files, under the data dir.
pub const STAGING_DIR: &str = "table-export";

/// Errors of an export pass.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Tier(#[from] TierError),
    #[error(transparent)]
    Partition(#[from] PartitionError),
    #[error("table export: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
}

fn write_exported_to(dir: &Path, offset: i64) -> Result<(), ExportError> {
    let path = dir.join(table::CHECKPOINT_FILE);
    crate::log::checkpoint::write_atomic(&path, offset.to_string().as_bytes()).map_err(|source| {
        ExportError::Io {
            op: "write",
            path: path.display().to_string(),
            source,
        }
    })
}

/// What one pass exported.
#[derive(Debug, Default, Clone, Copy)]
pub struct Exported {
    pub segments: u64,
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
}

/// Exports `p`'s sealed segments that are in the tier and not yet in its
/// table, oldest first, staging files under `staging`.
pub async fn export(
    p: &Partition,
    tier: &TierStore,
    staging: &Path,
) -> Result<Exported, ExportError> {
    let mut done = Exported::default();
    let Some(tiered) = p.tier_last_offset() else {
        return Ok(done);
    };
    let mut next = table::exported_to(p.dir()).unwrap_or(i64::MIN);
    let out_dir = staging.join(p.name());
    for seg in p.sealed_segments() {
        if seg.next_offset <= next {
            continue;
        }
        if seg.next_offset - 1 > tiered {
            break;
        }
        let (log, topic, index, base) = (
            seg.log_path.clone(),
            p.topic.clone(),
            p.index,
            seg.base_offset,
        );
        let dir = out_dir.clone();
        let files = tokio::task::spawn_blocking(move || {
            table::export_segment(&log, &topic, index, base, &dir)
        })
        .await
        .map_err(|e| ExportError::Io {
            op: "export",
            path: seg.log_path.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })??;
        for f in &files {
            let body = tokio::fs::read(&f.path)
                .await
                .map_err(|source| ExportError::Io {
                    op: "read",
                    path: f.path.display().to_string(),
                    source,
                })?;
            done.bytes += body.len() as u64;
            tier.put(&f.name, body.into()).await?;
            let _ = tokio::fs::remove_file(&f.path).await;
            done.files += 1;
            done.rows += f.rows;
        }
        write_exported_to(p.dir(), seg.next_offset)?;
        next = seg.next_offset;
        done.segments += 1;
        tracing::debug!(partition = %p.name(), base_offset = base, files = files.len(), "segment exported as parquet");
    }
    Ok(done)
}
