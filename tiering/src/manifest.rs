//! The per-partition manifest: the source of truth for what the tier holds.
//!
//! One `manifest.json` per partition lists its segments in offset order.
//! Every change is a pure function from one manifest to the next (this
//! module), written with a conditional PUT by [`crate::RemotePartition`].
//! The format is versioned and described in `docs/tier-format.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::TierError;

/// The manifest format version this build writes and reads.
pub const MANIFEST_VERSION: u64 = 1;

/// What a segment object holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    /// The segment's record batches (`.log`).
    Log,
    /// Sparse offset index (`.index`).
    Index,
    /// Sparse time index (`.timeindex`).
    Timeindex,
    /// Producer-state snapshot at the segment's end (`.snapshot`).
    Snapshot,
    /// Leader epochs the segment spans (`.epochs`).
    Epochs,
    /// Aborted-transaction index (`.txnindex`).
    Txnindex,
    /// CRC-32C of each fixed-size chunk of the log object (`.crcs`),
    /// big-endian u32s; written by the tier itself.
    Crcs,
}

impl ObjectKind {
    /// The kind whose object names end in `.ext`.
    pub fn from_extension(ext: &str) -> Option<ObjectKind> {
        [
            ObjectKind::Log,
            ObjectKind::Index,
            ObjectKind::Timeindex,
            ObjectKind::Snapshot,
            ObjectKind::Epochs,
            ObjectKind::Txnindex,
            ObjectKind::Crcs,
        ]
        .into_iter()
        .find(|k| k.extension() == ext)
    }

    /// File extension of this kind, also used in object names.
    pub fn extension(self) -> &'static str {
        match self {
            ObjectKind::Log => "log",
            ObjectKind::Index => "index",
            ObjectKind::Timeindex => "timeindex",
            ObjectKind::Snapshot => "snapshot",
            ObjectKind::Epochs => "epochs",
            ObjectKind::Txnindex => "txnindex",
            ObjectKind::Crcs => "crcs",
        }
    }
}

/// One object of a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// Object name relative to the partition directory.
    pub name: String,
    pub size: u64,
    /// CRC-32C (Castagnoli) of the whole object.
    pub crc32c: u32,
}

/// One tiered segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    /// Unique id of this upload; part of every object name.
    pub id: String,
    pub base_offset: i64,
    pub last_offset: i64,
    pub first_timestamp: Option<i64>,
    pub max_timestamp: i64,
    /// Bytes of the `.log` object.
    pub size: u64,
    /// Leader epoch of the broker that uploaded it.
    pub leader_epoch: i32,
    /// Wall-clock milliseconds when the manifest first named it.
    pub uploaded_at_ms: i64,
    /// Chunk size of the `crcs` object: reads of this segment fetch chunks
    /// of this size and check each against its CRC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<u64>,
    /// Every batch's CRC-32C and offsets were checked on the very bytes the
    /// chunk CRCs were computed from (at upload or repair), so a chunk that
    /// passes its CRC holds only good batches and may be sent from the disk
    /// cache without reading it again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub batches_checked: bool,
    pub objects: BTreeMap<ObjectKind, ObjectRef>,
}

impl SegmentMeta {
    /// The object of `kind`, if the segment has one.
    pub fn object(&self, kind: ObjectKind) -> Option<&ObjectRef> {
        self.objects.get(&kind)
    }
}

/// The whole manifest of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u64,
    pub cluster_id: String,
    pub topic: String,
    /// Topic id, 32 lowercase hex digits.
    pub topic_id: String,
    pub partition: i32,
    /// Highest leader epoch that ever wrote this manifest; writers with a
    /// lower epoch are fenced.
    pub leader_epoch: i32,
    /// Bumped by one on every write.
    pub generation: u64,
    /// First offset readers may see; at or after the first segment's base.
    pub log_start_offset: i64,
    /// Segments in offset order, `last_offset` strictly increasing.
    pub segments: Vec<SegmentMeta>,
    /// The cluster that writes this manifest when it is not the one in its
    /// path (`cluster_id`): another cluster restored the topic and took
    /// the partition over. Absent, the path's cluster owns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_cluster_id: Option<String>,
    /// Tier compaction (compacted topics): offsets below this one are
    /// clean, each key at most once. Absent, nothing in the tier is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleaned_upto: Option<i64>,
    /// Wall-clock milliseconds of the last tier compaction swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compacted_at_ms: Option<i64>,
    /// Objects a tier compaction replaced: no longer part of the log, kept
    /// from orphan collection for its grace period after `retired_at_ms`,
    /// so reads in flight still find them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<Retired>,
}

/// An object a tier compaction took out of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    pub name: String,
    pub retired_at_ms: i64,
}

/// The result of adding a segment to a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddOutcome {
    /// The manifest now names the segment.
    Added(Box<Manifest>),
    /// The manifest already covers these offsets (a retried or duplicate
    /// upload); nothing to write, the new objects are unused.
    AlreadyCovered,
}

impl Manifest {
    /// An empty manifest for a partition.
    pub fn empty(cluster_id: &str, topic: &str, topic_id: &str, partition: i32) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            cluster_id: cluster_id.to_string(),
            topic: topic.to_string(),
            topic_id: topic_id.to_string(),
            partition,
            leader_epoch: -1,
            generation: 0,
            log_start_offset: 0,
            segments: Vec::new(),
            owner_cluster_id: None,
            cleaned_upto: None,
            compacted_at_ms: None,
            retired: Vec::new(),
        }
    }

    /// The cluster allowed to write this manifest.
    pub fn owner(&self) -> &str {
        self.owner_cluster_id.as_deref().unwrap_or(&self.cluster_id)
    }

    /// Refuses a writer from a cluster other than the owner: two clusters
    /// writing one manifest would overwrite each other's history.
    pub fn check_owner(&self, writer_cluster: &str, partition: &str) -> Result<(), TierError> {
        if self.owner() != writer_cluster {
            return Err(TierError::NotOwner {
                partition: partition.to_string(),
                owner: self.owner().to_string(),
                writer: writer_cluster.to_string(),
            });
        }
        Ok(())
    }

    /// Decodes a manifest: checks its CRC-32C first (a damaged body is
    /// [`TierError::Corrupt`]), then its version, then its invariants.
    pub fn decode(path: &str, bytes: &[u8]) -> Result<Manifest, TierError> {
        let format = |message: String| TierError::ManifestFormat {
            path: path.to_string(),
            message,
        };
        let mut value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format(e.to_string()))?;
        let obj = value
            .as_object_mut()
            .ok_or_else(|| format("manifest is not a json object".into()))?;
        let stored = obj
            .remove("crc32c")
            .and_then(|v| v.as_u64())
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| format("manifest has no crc32c".into()))?;
        let actual =
            crc32c::crc32c(&serde_json::to_vec(&value).map_err(|e| format(e.to_string()))?);
        if actual != stored {
            return Err(TierError::Corrupt {
                path: path.to_string(),
                position: 0,
                expected: stored,
                actual,
            });
        }
        let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        if version != MANIFEST_VERSION {
            return Err(TierError::UnsupportedManifestVersion {
                path: path.to_string(),
                version,
            });
        }
        let m: Manifest = serde_json::from_value(value).map_err(|e| format(e.to_string()))?;
        m.check().map_err(format)?;
        Ok(m)
    }

    /// Encodes the manifest as pretty JSON (operators read it) with a
    /// `crc32c` field: the CRC-32C of the compact JSON of every other field,
    /// keys sorted.
    pub fn encode(&self) -> Vec<u8> {
        let mut value = serde_json::to_value(self).expect("a manifest always serializes to json");
        let crc = crc32c::crc32c(&canonical_json(&value));
        if let Some(obj) = value.as_object_mut() {
            obj.insert("crc32c".into(), serde_json::Value::from(crc));
        }
        serde_json::to_vec_pretty(&value).expect("a json value always serializes")
    }

    /// Checks the invariants readers rely on.
    pub fn check(&self) -> Result<(), String> {
        let mut prev: Option<&SegmentMeta> = None;
        for s in &self.segments {
            if s.last_offset < s.base_offset {
                return Err(format!(
                    "segment ends before it starts. base_offset={}",
                    s.base_offset
                ));
            }
            if !s.objects.contains_key(&ObjectKind::Log) {
                return Err(format!(
                    "segment has no log object. base_offset={}",
                    s.base_offset
                ));
            }
            // Ordered by last offset; a segment may start at or before an
            // earlier one's end (a new leader's segments are cut at other
            // offsets), and each offset is read from the first segment
            // that ends at or after it.
            if let Some(p) = prev {
                if s.last_offset <= p.last_offset {
                    return Err(format!(
                        "segments out of order. base_offset={}",
                        s.base_offset
                    ));
                }
            }
            prev = Some(s);
        }
        if let Some(last) = self.segments.last() {
            if self.log_start_offset > last.last_offset + 1 {
                return Err(format!(
                    "log start offset past the last segment. log_start_offset={}",
                    self.log_start_offset
                ));
            }
        }
        Ok(())
    }

    /// Offset after the last tiered record, if any segment is tiered.
    pub fn last_offset(&self) -> Option<i64> {
        self.segments.last().map(|s| s.last_offset)
    }

    /// Bytes of all `.log` objects.
    pub fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    /// Refuses a writer whose epoch is below the manifest's.
    pub fn check_fence(&self, writer_epoch: i32, partition: &str) -> Result<(), TierError> {
        if self.leader_epoch > writer_epoch {
            return Err(TierError::Fenced {
                partition: partition.to_string(),
                manifest_epoch: self.leader_epoch,
                writer_epoch,
            });
        }
        Ok(())
    }

    /// The segment to read `offset` from: the first whose last offset is at or
    /// after it (its base may be past `offset` where the log has a gap).
    pub fn segment_for(&self, offset: i64) -> Option<&SegmentMeta> {
        let i = self.segments.partition_point(|s| s.last_offset < offset);
        self.segments.get(i)
    }

    /// The manifest with `seg` appended by a writer at `writer_epoch`.
    pub fn with_segment(
        &self,
        seg: SegmentMeta,
        writer_epoch: i32,
        partition: &str,
    ) -> Result<AddOutcome, TierError> {
        self.check_fence(writer_epoch, partition)?;
        if let Some(last) = self.last_offset() {
            if seg.last_offset <= last {
                return Ok(AddOutcome::AlreadyCovered);
            }
        }
        let mut next = self.clone();
        if next.segments.is_empty() {
            if seg.last_offset < self.log_start_offset {
                // Deleted (DeleteRecords) before it was ever tiered.
                return Ok(AddOutcome::AlreadyCovered);
            }
            next.log_start_offset = self.log_start_offset.max(seg.base_offset);
        }
        next.segments.push(seg);
        next.leader_epoch = next.leader_epoch.max(writer_epoch);
        next.generation += 1;
        Ok(AddOutcome::Added(Box::new(next)))
    }

    /// The manifest with the segment of `seg`'s offsets (same base and last
    /// offset) replaced by `seg`: new objects for the same records (a
    /// re-upload of a segment a scrub found damaged). `None` when no
    /// segment has those offsets (retention removed it meanwhile).
    pub fn with_segment_replaced(
        &self,
        seg: SegmentMeta,
        writer_epoch: i32,
        partition: &str,
    ) -> Result<Option<Manifest>, TierError> {
        self.check_fence(writer_epoch, partition)?;
        let Some(i) = self
            .segments
            .iter()
            .position(|s| s.base_offset == seg.base_offset && s.last_offset == seg.last_offset)
        else {
            return Ok(None);
        };
        let mut next = self.clone();
        next.segments[i] = seg;
        next.leader_epoch = next.leader_epoch.max(writer_epoch);
        next.generation += 1;
        Ok(Some(next))
    }

    /// The first offset tier compaction has not cleaned.
    pub fn first_dirty_offset(&self) -> i64 {
        self.cleaned_upto
            .unwrap_or(self.log_start_offset)
            .max(self.log_start_offset)
    }

    /// Objects retired by tier compaction that orphan collection keeps at
    /// `now_ms` (retired less than `grace_ms` before).
    pub fn retired_kept(&self, grace_ms: i64, now_ms: i64) -> impl Iterator<Item = &str> {
        self.retired
            .iter()
            .filter(move |r| now_ms.saturating_sub(r.retired_at_ms) < grace_ms)
            .map(|r| r.name.as_str())
    }

    /// The manifest with the segments `replaced` (ids, a run in manifest
    /// order) swapped for `new` (their records after tier compaction, same
    /// offsets, in order), offsets below `cleaned_upto` marked clean, and
    /// the replaced objects retired at `now_ms` (entries retired `grace_ms`
    /// ago or more are dropped: their objects are plain orphans by then).
    /// `None` when the manifest no longer holds that run (retention or
    /// another pass changed it meanwhile).
    pub fn with_run_replaced(
        &self,
        replaced: &[String],
        new: &[SegmentMeta],
        cleaned_upto: i64,
        now_ms: i64,
        grace_ms: i64,
    ) -> Option<Manifest> {
        let first = replaced.first()?;
        let start = self.segments.iter().position(|s| &s.id == first)?;
        let run = self.segments.get(start..start + replaced.len())?;
        if run.iter().zip(replaced).any(|(s, id)| &s.id != id) {
            return None;
        }
        let (lo, hi) = (run[0].base_offset, run[run.len() - 1].last_offset);
        if new.iter().any(|s| s.base_offset < lo || s.last_offset > hi)
            || new.windows(2).any(|w| w[1].last_offset <= w[0].last_offset)
            || new.last().map(|s| s.last_offset) != Some(hi)
        {
            return None;
        }
        let mut next = self.clone();
        next.retired
            .retain(|r| now_ms.saturating_sub(r.retired_at_ms) < grace_ms);
        next.retired.extend(run.iter().flat_map(|s| {
            s.objects.values().map(|o| Retired {
                name: o.name.clone(),
                retired_at_ms: now_ms,
            })
        }));
        next.segments
            .splice(start..start + replaced.len(), new.iter().cloned());
        next.cleaned_upto = Some(cleaned_upto.max(self.first_dirty_offset()));
        next.compacted_at_ms = Some(now_ms);
        Some(next)
    }

    /// The manifest without segments wholly below `offset` and with its start
    /// offset raised to `offset` (never lowered, never past the tier's end).
    /// Returns the new manifest and the removed segments.
    pub fn without_before(&self, offset: i64) -> (Manifest, Vec<SegmentMeta>) {
        let mut next = self.clone();
        let keep_from = next.segments.partition_point(|s| s.last_offset < offset);
        let removed: Vec<SegmentMeta> = next.segments.drain(..keep_from).collect();
        let end = self.last_offset().map_or(offset, |l| l + 1);
        next.log_start_offset = self.log_start_offset.max(offset.min(end));
        if let Some(first) = next.segments.first() {
            next.log_start_offset = next.log_start_offset.max(first.base_offset);
        }
        (next, removed)
    }

    /// The offset retention would move the start to: past every segment
    /// whose max timestamp is older than `now_ms - retention_ms`, and past the
    /// oldest segments while the size (tier plus `extra_bytes` held only
    /// locally) exceeds `retention_bytes` by at least that segment's size.
    /// Negative limits mean unlimited. `None` when nothing expires.
    pub fn retention_offset(
        &self,
        retention_ms: i64,
        retention_bytes: i64,
        extra_bytes: u64,
        now_ms: i64,
    ) -> Option<i64> {
        let mut expired = 0usize;
        if retention_ms >= 0 {
            let cutoff = now_ms.saturating_sub(retention_ms);
            expired = self
                .segments
                .iter()
                .take_while(|s| s.max_timestamp < cutoff)
                .count();
        }
        if retention_bytes >= 0 {
            let mut excess =
                (self.total_bytes() + extra_bytes) as i128 - i128::from(retention_bytes);
            let mut by_size = 0usize;
            for s in &self.segments {
                if excess - i128::from(s.size) < 0 {
                    break;
                }
                excess -= i128::from(s.size);
                by_size += 1;
            }
            expired = expired.max(by_size);
        }
        if expired == 0 {
            return None;
        }
        Some(self.segments[expired - 1].last_offset + 1)
    }
}

/// Compact JSON with object keys sorted, whatever map type `serde_json`
/// was built with: the bytes the manifest checksum covers.
fn canonical_json(v: &serde_json::Value) -> Vec<u8> {
    fn write(v: &serde_json::Value, out: &mut Vec<u8>) {
        match v {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push(b'{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(&serde_json::to_vec(k).expect("a string serializes"));
                    out.push(b':');
                    if let Some(child) = map.get(k) {
                        write(child, out);
                    }
                }
                out.push(b'}');
            }
            serde_json::Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(item, out);
                }
                out.push(b']');
            }
            other => {
                out.extend_from_slice(&serde_json::to_vec(other).expect("a json scalar serializes"))
            }
        }
    }
    let mut out = Vec::new();
    write(v, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn seg(base: i64, last: i64, ts: i64, size: u64) -> SegmentMeta {
        let mut objects = BTreeMap::new();
        objects.insert(
            ObjectKind::Log,
            ObjectRef {
                name: format!("{base:020}-x.log"),
                size,
                crc32c: 0,
            },
        );
        SegmentMeta {
            id: "x".into(),
            base_offset: base,
            last_offset: last,
            first_timestamp: None,
            max_timestamp: ts,
            size,
            leader_epoch: 0,
            uploaded_at_ms: 0,
            chunk_size: None,
            batches_checked: false,
            objects,
        }
    }

    fn add(m: &Manifest, s: SegmentMeta, epoch: i32) -> Manifest {
        match m.with_segment(s, epoch, "t-0").expect("add") {
            AddOutcome::Added(m) => *m,
            AddOutcome::AlreadyCovered => panic!("covered"),
        }
    }

    fn with_id(mut s: SegmentMeta, id: &str) -> SegmentMeta {
        s.id = id.into();
        for o in s.objects.values_mut() {
            o.name = format!("{:020}-{id}.log", s.base_offset);
        }
        s
    }

    #[test]
    fn a_run_is_replaced_whole_and_its_objects_retired() {
        let m = Manifest::empty("c", "t", "00", 0);
        let m = add(&m, with_id(seg(0, 9, 100, 10), "a"), 1);
        let m = add(&m, with_id(seg(10, 19, 200, 10), "b"), 1);
        let m = add(&m, with_id(seg(20, 29, 300, 10), "c"), 1);
        assert_eq!(m.first_dirty_offset(), 0);
        let merged = with_id(seg(0, 19, 200, 6), "ab");
        let ids = ["a".to_string(), "b".to_string()];
        let next = m
            .with_run_replaced(&ids, std::slice::from_ref(&merged), 20, 1_000, 500)
            .expect("run present");
        assert!(next.check().is_ok());
        let kept: Vec<&str> = next.segments.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(kept, ["ab", "c"]);
        assert_eq!(next.first_dirty_offset(), 20);
        assert_eq!(next.compacted_at_ms, Some(1_000));
        assert_eq!(next.retired_kept(500, 1_499).count(), 2);
        assert_eq!(next.retired_kept(500, 1_500).count(), 0);
        // Survives encoding (and its CRC covers the new fields).
        let decoded = Manifest::decode("m", &next.encode()).expect("decode");
        assert_eq!(decoded, next);
        // A run that is gone or out of order is not replaced.
        assert!(next
            .with_run_replaced(&ids, std::slice::from_ref(&merged), 20, 2_000, 500)
            .is_none());
        let swapped = ["b".to_string(), "a".to_string()];
        assert!(m
            .with_run_replaced(&swapped, std::slice::from_ref(&merged), 20, 1_000, 500)
            .is_none());
        // Replacements must end where the run ends and stay inside it.
        let short = with_id(seg(0, 15, 200, 6), "short");
        assert!(m
            .with_run_replaced(&ids, &[short], 20, 1_000, 500)
            .is_none());
        // A later pass drops retired entries past the grace period.
        let c = ["ab".to_string(), "c".to_string()];
        let all = with_id(seg(0, 29, 300, 8), "abc");
        let later = next
            .with_run_replaced(&c, &[all], 30, 1_600, 500)
            .expect("run present");
        assert_eq!(later.retired.len(), 2);
        assert!(later.retired.iter().all(|r| r.retired_at_ms == 1_600));
        // Retention moving the start past the clean part leaves no clean part.
        let (trimmed, _) = later.without_before(30);
        assert_eq!(trimmed.first_dirty_offset(), 30);
    }

    #[test]
    fn add_fence_and_lookup() {
        let m = Manifest::empty("c", "t", "00", 0);
        let m = add(&m, seg(0, 9, 100, 10), 1);
        let m = add(&m, seg(10, 19, 200, 10), 2);
        assert_eq!(m.leader_epoch, 2);
        assert_eq!(m.generation, 2);
        assert!(matches!(
            m.with_segment(seg(20, 29, 300, 10), 1, "t-0"),
            Err(TierError::Fenced { .. })
        ));
        assert_eq!(
            m.with_segment(seg(10, 19, 200, 10), 2, "t-0").expect("dup"),
            AddOutcome::AlreadyCovered
        );
        // Overlapping a new leader's differently-cut segment is accepted.
        let m = add(&m, seg(15, 25, 300, 10), 2);
        assert_eq!(m.segment_for(0).map(|s| s.base_offset), Some(0));
        assert_eq!(m.segment_for(12).map(|s| s.base_offset), Some(10));
        assert_eq!(m.segment_for(20).map(|s| s.base_offset), Some(15));
        assert!(m.segment_for(26).is_none());
        // Even one that starts before the last segment does: offsets up to
        // 25 are still read from the segments before it.
        let m = add(&m, seg(12, 40, 400, 10), 3);
        assert!(m.check().is_ok());
        assert_eq!(m.segment_for(20).map(|s| s.base_offset), Some(15));
        assert_eq!(m.segment_for(26).map(|s| s.base_offset), Some(12));
        let bytes = m.encode();
        assert_eq!(Manifest::decode("p", &bytes).expect("decode"), m);
    }

    fn sample() -> Manifest {
        let m = Manifest::empty("c", "t", "00", 0);
        let m = add(&m, seg(0, 9, 100, 10), 1);
        add(&m, seg(10, 19, 200, 10), 2)
    }

    proptest::proptest! {
        /// Fuzzing the decoder: any bytes, and a good manifest with bytes
        /// flipped, cut or inserted, never panic, and whatever decodes is a
        /// manifest that passes its own checks and re-encodes to itself.
        #[test]
        fn decode_never_panics_and_accepts_only_checked_manifests(
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            edits in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>(), 0u8..3), 0..4),
        ) {
            let _ = Manifest::decode("p", &noise);
            let mut bytes = sample().encode();
            for (at, byte, op) in edits {
                let at = at % (bytes.len() + 1);
                match op {
                    0 if at < bytes.len() => bytes[at] ^= byte | 1,
                    1 => bytes.truncate(at),
                    _ => bytes.insert(at, byte),
                }
            }
            if let Ok(m) = Manifest::decode("p", &bytes) {
                proptest::prop_assert!(m.check().is_ok());
                proptest::prop_assert_eq!(Manifest::decode("p", &m.encode()).ok(), Some(m));
            }
        }
    }

    #[test]
    fn unknown_version_is_refused() {
        let mut m = Manifest::empty("c", "t", "00", 0);
        m.version = 99;
        assert!(matches!(
            Manifest::decode("p", &m.encode()),
            Err(TierError::UnsupportedManifestVersion { version: 99, .. })
        ));
        assert!(matches!(
            Manifest::decode("p", b"{nope"),
            Err(TierError::ManifestFormat { .. })
        ));
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{ "b": [1, {"z": 1, "a": "x"}], "a": null }"#).expect("json");
        assert_eq!(
            canonical_json(&v),
            br#"{"a":null,"b":[1,{"a":"x","z":1}]}"#.to_vec()
        );
    }

    #[test]
    fn damaged_manifest_is_detected() {
        let mut m = Manifest::empty("c", "t", "00", 0);
        m = add(&m, seg(1234, 1300, 100, 10), 1);
        let good = m.encode();
        let text = String::from_utf8(good.clone()).expect("utf8");
        let bad = text.replace("1234", "1235");
        assert!(matches!(
            Manifest::decode("p", bad.as_bytes()),
            Err(TierError::Corrupt { .. })
        ));
        // Flip every bit of every byte: never a different valid manifest.
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut b = good.clone();
                b[i] ^= 1 << bit;
                if let Ok(d) = Manifest::decode("p", &b) {
                    assert_eq!(d, m, "byte {i} bit {bit}");
                }
            }
        }
    }

    #[test]
    fn retention_and_delete_before() {
        let mut m = Manifest::empty("c", "t", "00", 0);
        for i in 0..5 {
            m = add(&m, seg(i * 10, i * 10 + 9, 1000 + i * 100, 100), 0);
        }
        assert_eq!(m.retention_offset(-1, -1, 0, 5000), None);
        // Time: segments with max ts < 5000 - 3800 = 1200 -> first two.
        assert_eq!(m.retention_offset(3800, -1, 0, 5000), Some(20));
        // Size: 500 bytes, keep >= 250: remove two (excess 250 -> 150 -> 50).
        assert_eq!(m.retention_offset(-1, 250, 0, 5000), Some(20));
        assert_eq!(m.retention_offset(-1, 250, 100, 5000), Some(30));
        assert_eq!(m.retention_offset(-1, 0, 0, 5000), Some(50));
        let (n, removed) = m.without_before(25);
        assert_eq!(removed.len(), 2);
        assert_eq!(n.log_start_offset, 25);
        assert_eq!(n.segments.first().map(|s| s.base_offset), Some(20));
        let (n2, removed) = n.without_before(10);
        assert!(removed.is_empty());
        assert_eq!(n2.log_start_offset, 25);
        let (n3, _) = n.without_before(1000);
        assert!(n3.segments.is_empty());
        assert_eq!(n3.log_start_offset, 50);
        assert!(n3.check().is_ok());
    }
}
