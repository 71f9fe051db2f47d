//! The broker side of topics as tables (`strata.table.enable`): after a
//! sealed segment is in the tier, the leader writes its records as Parquet
//! (`crate::table`) from the local copy and puts the files beside the tier.
//!
//! Progress is the partition's `table-export-checkpoint` (the offset after
//! the last exported segment), written once every file of a segment is in
//! the store. A crash before that exports the segment again on the next
//! pass: the files have the same names and rows, so they are overwritten,
//! never doubled. Local retention keeps a table topic's segments until they
//! are exported. Export runs in a loop of its own ([`run`]), every tier
//! interval, so a long export never holds up uploads.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tiering::{TierError, TierStore};
use tokio_util::sync::CancellationToken;

use super::Broker;

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

/// Exports the table topics' partitions this broker leads, every tier
/// interval, until `shutdown`.
pub async fn run(broker: Arc<Broker>, shutdown: CancellationToken) {
    let _ = std::fs::remove_dir_all(broker.config.data_dir.join(STAGING_DIR));
    let every = Duration::from_millis(broker.config.tier.interval_ms);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        for p in broker.all_partitions() {
            if shutdown.is_cancelled() {
                return;
            }
            if p.is_leader() && p.topic_config().table && p.config().tier.enabled {
                export_table(&broker, &p).await;
            }
        }
    }
}

/// Writes `p`'s newly tiered segments as Parquet; a failure is logged and
/// counted, and the segments are tried again on the next round (local
/// retention keeps them meanwhile).
async fn export_table(broker: &Broker, p: &Partition) {
    let staging = broker.config.data_dir.join(STAGING_DIR);
    let m = &broker.metrics;
    match export(p, &broker.tier, &staging).await {
        Ok(done) => {
            m.table_export_segments.inc_by(done.segments);
            m.table_export_files.inc_by(done.files);
            m.table_export_rows.inc_by(done.rows);
            m.table_export_bytes.inc_by(done.bytes);
            if done.segments > 0 {
                tracing::info!(
                    partition = %p.name(),
                    segments = done.segments,
                    files = done.files,
                    rows = done.rows,
                    bytes = done.bytes,
                    "segments exported as parquet"
                );
            }
        }
        Err(e) => {
            m.table_export_errors.inc();
            tracing::warn!(partition = %p.name(), error = %e, "table export failed; retried at the next tier pass");
        }
    }
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
