//! Rebuilding a partition's manifest from its segment objects, for a
//! manifest that is missing while segment objects exist, or damaged.
//!
//! Every `.log` object under the partition is read in chunks and each of
//! its batches checked (header, CRC-32C, increasing offsets, the first at
//! the base offset its name gives); a `.log` that fails is left out. The
//! other objects of a segment are named with their CRC-32C; its `.crcs` is
//! kept when it matches the chunk CRCs computed from the log read here.
//! Segments are chained by offset as uploads chain them (`last_offset`
//! strictly increasing); of several uploads of the same offsets (a retried
//! upload's orphans) the newest is taken. Offsets no segment covers are
//! reported as gaps. Nothing is deleted: objects left out stay orphans.
//!
//! The manifest is written with the same conditional PUT as any manifest
//! write: a create when none exists, else a replace of exactly the damaged
//! object read, so a repair never overwrites a manifest a broker wrote in
//! the meantime.

use std::collections::BTreeMap;

use futures::StreamExt;
use object_store::{ObjectStoreExt, UpdateVersion};

use super::{Loaded, RemotePartition};
use crate::batch::BatchScan;
use crate::error::store_err;
use crate::layout;
use crate::manifest::{Manifest, ObjectKind, ObjectRef, SegmentMeta};
use crate::store::put_conditional;
use crate::TierError;

/// A segment the rebuilt manifest names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairedSegment {
    /// The `.log` object's name.
    pub name: String,
    pub base_offset: i64,
    pub last_offset: i64,
    pub size: u64,
    pub batches: u64,
    /// Whether its chunk CRCs were kept (else reads check every batch).
    pub chunk_crcs: bool,
}

/// What a repair found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// The partition, as `topic-partition`.
    pub partition: String,
    /// What was wrong with the manifest.
    pub problem: String,
    pub segments: Vec<RepairedSegment>,
    /// `.log` objects left out, with why.
    pub skipped: Vec<(String, String)>,
    /// Offset ranges (first, last) between segments that no segment holds.
    pub gaps: Vec<(i64, i64)>,
    /// The rebuilt manifest's start offset (`None` when it names nothing).
    pub log_start_offset: Option<i64>,
    /// Whether the rebuilt manifest was written (not for a dry run).
    pub written: bool,
}

/// A listed object: (name, size, last modified in ms).
type Listed = (String, u64, i64);

/// A `.log` object that passed its checks, with its segment's other objects.
struct Candidate {
    meta: SegmentMeta,
    batches: u64,
    modified_ms: i64,
}

/// Splits `<base:020>-<id>.<ext>` into its parts.
fn parse_object_name(name: &str) -> Option<(i64, String, ObjectKind)> {
    let (stem, ext) = name.rsplit_once('.')?;
    let (base, id) = stem.split_once('-')?;
    if base.len() != 20 || !base.bytes().all(|b| b.is_ascii_digit()) || id.is_empty() {
        return None;
    }
    let kind = ObjectKind::from_extension(ext)?;
    Some((base.parse().ok()?, id.to_string(), kind))
}

impl RemotePartition {
    /// Rebuilds the manifest from the segment objects (module docs) and,
    /// unless `dry_run`, writes it. Refused with
    /// [`TierError::NothingToRepair`] when the manifest reads fine, and with
    /// [`TierError::UnsupportedManifestVersion`] for a manifest a newer
    /// version wrote.
    pub async fn repair_manifest(&self, dry_run: bool) -> Result<RepairReport, TierError> {
        let path = self.inner.manifest_path.clone();
        let store = self.inner.tier.inner.store.clone();
        let (problem, version) = match self.fetch_manifest_once().await {
            Ok(Loaded {
                version: Some(_), ..
            }) => {
                return Err(TierError::NothingToRepair {
                    path: path.to_string(),
                })
            }
            Ok(Loaded { version: None, .. }) => {
                // No manifest and no segment object: an empty tier.
                return Ok(RepairReport {
                    partition: self.inner.name.clone(),
                    problem: "no manifest and no segment objects".into(),
                    ..RepairReport::default()
                });
            }
            Err(e @ TierError::ManifestMissing { .. }) => (e.to_string(), None),
            Err(e @ TierError::ManifestFormat { .. }) => {
                let meta = store.head(&path).await.map_err(store_err("head", &path))?;
                let version = UpdateVersion {
                    e_tag: meta.e_tag,
                    version: meta.version,
                };
                (e.to_string(), Some(version))
            }
            Err(e) => return Err(e),
        };
        let mut report = RepairReport {
            partition: self.inner.name.clone(),
            problem,
            ..RepairReport::default()
        };

        // Every object by segment (base offset and upload id).
        let mut by_segment: BTreeMap<(i64, String), BTreeMap<ObjectKind, Listed>> = BTreeMap::new();
        let mut listing = store.list(Some(&self.inner.dir));
        while let Some(item) = listing.next().await {
            let meta = item.map_err(store_err("list", &self.inner.dir))?;
            let Some(name) = meta.location.filename() else {
                continue;
            };
            let Some((base, id, kind)) = parse_object_name(name) else {
                continue;
            };
            by_segment.entry((base, id)).or_default().insert(
                kind,
                (
                    name.to_string(),
                    meta.size,
                    meta.last_modified.timestamp_millis(),
                ),
            );
        }

        let mut candidates = Vec::new();
        for ((base, id), objects) in &by_segment {
            let Some((log_name, _, _)) = objects.get(&ObjectKind::Log) else {
                continue;
            };
            match self.check_segment(*base, id, objects).await {
                Ok(c) => candidates.push(c),
                Err(why) => report.skipped.push((log_name.clone(), why)),
            }
        }
        // Oldest offsets first; of equal ranges the newest upload first.
        candidates.sort_by(|a, b| {
            (a.meta.base_offset, std::cmp::Reverse(a.meta.last_offset))
                .cmp(&(b.meta.base_offset, std::cmp::Reverse(b.meta.last_offset)))
                .then(b.modified_ms.cmp(&a.modified_ms))
        });
        let k = &self.inner.key;
        let mut manifest = Manifest::empty(&k.cluster_id, &k.topic, &k.topic_id_hex(), k.partition);
        for c in candidates {
            let log_name = c.meta.objects[&ObjectKind::Log].name.clone();
            if let Some(prev) = manifest.segments.last() {
                if c.meta.last_offset <= prev.last_offset {
                    let why = format!(
                        "its offsets are covered by {}",
                        prev.objects[&ObjectKind::Log].name
                    );
                    report.skipped.push((log_name, why));
                    continue;
                }
                if c.meta.base_offset > prev.last_offset + 1 {
                    report
                        .gaps
                        .push((prev.last_offset + 1, c.meta.base_offset - 1));
                }
            }
            report.segments.push(RepairedSegment {
                name: log_name,
                base_offset: c.meta.base_offset,
                last_offset: c.meta.last_offset,
                size: c.meta.size,
                batches: c.batches,
                chunk_crcs: c.meta.chunk_size.is_some(),
            });
            manifest.leader_epoch = manifest.leader_epoch.max(c.meta.leader_epoch);
            manifest.segments.push(c.meta);
        }
        let Some(first) = manifest.segments.first() else {
            return Ok(report);
        };
        manifest.log_start_offset = first.base_offset;
        manifest.generation = 1;
        report.log_start_offset = Some(manifest.log_start_offset);
        manifest
            .check()
            .map_err(|message| TierError::ManifestFormat {
                path: path.to_string(),
                message: format!("rebuilt manifest is invalid: {message}"),
            })?;
        if dry_run {
            return Ok(report);
        }
        let _writer = self.inner.write_lock.lock().await;
        let tier = &self.inner.tier.inner;
        put_conditional(
            tier.store.as_ref(),
            tier.conditional,
            &tier.manifest_lock,
            &path,
            bytes::Bytes::from(manifest.encode()),
            version,
        )
        .await?;
        self.forget_manifest();
        report.written = true;
        tracing::info!(
            partition = %self.inner.name,
            segments = report.segments.len(),
            gaps = report.gaps.len(),
            log_start_offset = manifest.log_start_offset,
            "tier manifest rebuilt from the segment objects"
        );
        Ok(report)
    }

    /// Reads and checks one segment's `.log`, and describes its objects.
    /// `Err` says why it is left out.
    async fn check_segment(
        &self,
        base: i64,
        id: &str,
        objects: &BTreeMap<ObjectKind, Listed>,
    ) -> Result<Candidate, String> {
        let tier = &self.inner.tier.inner;
        let store = &tier.store;
        let (log_name, size, modified_ms) = objects[&ObjectKind::Log].clone();
        if size == 0 {
            return Err("the log object is empty".into());
        }
        let log_path = layout::child(&self.inner.dir, &log_name);
        let chunk = tier.options.chunk_size;
        let mut scan = BatchScan::new(size, None);
        let mut chunk_crcs = Vec::with_capacity(size.div_ceil(chunk) as usize);
        let mut whole = 0u32;
        let mut at = 0u64;
        while at < size {
            let end = (at + chunk).min(size);
            let bytes = store
                .get_range(&log_path, at..end)
                .await
                .map_err(|e| format!("cannot read it: {e}"))?;
            if bytes.len() as u64 != end - at {
                return Err(format!(
                    "the store returned {} bytes at position {at}, not {}",
                    bytes.len(),
                    end - at
                ));
            }
            scan.update(&bytes)
                .map_err(|e| format!("{} at position {}", e.message, e.position))?;
            chunk_crcs.extend_from_slice(&crc32c::crc32c(&bytes).to_be_bytes());
            whole = crc32c::crc32c_append(whole, &bytes);
            at = end;
        }
        let summary = scan
            .finish()
            .map_err(|e| format!("{} at position {}", e.message, e.position))?;
        if summary.first_offset != Some(base) {
            return Err(format!(
                "its first batch is at offset {:?}, not the base offset {base} its name gives",
                summary.first_offset
            ));
        }
        let mut refs = BTreeMap::new();
        refs.insert(
            ObjectKind::Log,
            ObjectRef {
                name: log_name.clone(),
                size,
                crc32c: whole,
            },
        );
        let mut chunk_size = None;
        for (kind, (name, obj_size, _)) in objects {
            if *kind == ObjectKind::Log {
                continue;
            }
            let path = layout::child(&self.inner.dir, name);
            let Ok(body) = store.get(&path).await else {
                continue;
            };
            let Ok(body) = body.bytes().await else {
                continue;
            };
            if body.len() as u64 != *obj_size {
                continue;
            }
            let usable = match kind {
                // Kept only when it is exactly the CRCs of this log's chunks.
                ObjectKind::Crcs => body[..] == chunk_crcs[..],
                ObjectKind::Index => body.len() % 8 == 0,
                ObjectKind::Timeindex => body.len() % 12 == 0,
                _ => true,
            };
            if !usable {
                continue;
            }
            if *kind == ObjectKind::Crcs {
                chunk_size = Some(chunk);
            }
            refs.insert(
                *kind,
                ObjectRef {
                    name: name.clone(),
                    size: *obj_size,
                    crc32c: crc32c::crc32c(&body),
                },
            );
        }
        Ok(Candidate {
            meta: SegmentMeta {
                id: id.to_string(),
                base_offset: base,
                last_offset: summary.last_offset,
                first_timestamp: None,
                max_timestamp: summary.max_timestamp,
                size,
                leader_epoch: summary.max_leader_epoch.max(0),
                uploaded_at_ms: modified_ms,
                chunk_size,
                batches_checked: chunk_size.is_some(),
                objects: refs,
            },
            batches: summary.batches,
            modified_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_parse() {
        let id = "5f0c1a4e9d3b4c7fa1e2d3c4b5a69788";
        let name = layout::object_name(1200, id, ObjectKind::Timeindex);
        assert_eq!(
            parse_object_name(&name),
            Some((1200, id.to_string(), ObjectKind::Timeindex))
        );
        assert_eq!(parse_object_name("manifest.json"), None);
        assert_eq!(parse_object_name("12-abc.log"), None);
        assert_eq!(parse_object_name("00000000000000001200-abc.unknown"), None);
    }
}
