//! Scrubbing: reading back every object a partition's manifest names and
//! checking it against what the manifest and the batches say.
//!
//! For each segment: the `.log` object is read straight from the store
//! (not through the read cache, which may hold a good copy of a bad
//! object), in the chunk size the segment was uploaded with; every batch is
//! checked (header, CRC-32C, offsets within the segment's), each chunk
//! against the segment's chunk CRCs, the whole object against the CRC-32C
//! and size in the manifest, and the first and last offsets against the
//! segment's. Every other object is read whole and checked against its
//! size and CRC-32C. Reads go through a rate limiter: a scrub must not
//! crowd out uploads and replays.
//!
//! Failure cases: an object the store says is not there is a problem
//! (`missing`); any other store error ends the pass with that error (a
//! slow or failing store is not corruption; the next pass tries again). A
//! segment that retention removed while the pass ran is not reported: the
//! problems are checked against the manifest read again at the end.

use object_store::ObjectStoreExt;
use tokio_util::sync::CancellationToken;

use super::RemotePartition;
use crate::batch::BatchScan;
use crate::error::store_err;
use crate::layout;
use crate::manifest::{ObjectKind, ObjectRef, SegmentMeta};
use crate::metrics::TierMetrics;
use crate::store::cancellable;
use crate::throttle::RateLimiter;
use crate::TierError;

/// A segment whose objects failed a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubProblem {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The object's name, relative to the partition's directory.
    pub object: String,
    pub problem: String,
}

/// What a scrub of one partition read and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// The partition, as `topic-partition`.
    pub partition: String,
    pub segments: u64,
    pub objects: u64,
    pub bytes: u64,
    pub problems: Vec<ScrubProblem>,
}

/// The outcome of one object's read: its bytes, or a problem to report.
enum Read {
    Ok(bytes::Bytes),
    Problem(String),
}

impl RemotePartition {
    /// Reads back and checks every object of every segment the manifest
    /// names (module docs), at most `limiter`'s rate.
    pub async fn scrub(
        &self,
        limiter: &RateLimiter,
        cancel: &CancellationToken,
    ) -> Result<ScrubReport, TierError> {
        let manifest = cancellable(Some(cancel), self.refresh()).await?;
        let mut report = ScrubReport {
            partition: self.inner.name.clone(),
            ..ScrubReport::default()
        };
        for seg in &manifest.segments {
            let found = self
                .scrub_segment(seg, limiter, cancel, &mut report)
                .await?;
            report.segments += 1;
            report.problems.extend(found);
        }
        if !report.problems.is_empty() {
            // Only what the manifest still names.
            let now = cancellable(Some(cancel), self.refresh()).await?;
            report.problems.retain(|p| {
                now.segments
                    .iter()
                    .any(|s| s.base_offset == p.base_offset && s.last_offset == p.last_offset)
            });
        }
        let m = self.metrics();
        TierMetrics::add(&m.scrub_segments, report.segments);
        TierMetrics::add(&m.scrub_bytes, report.bytes);
        TierMetrics::add(&m.scrub_problems, report.problems.len() as u64);
        for p in &report.problems {
            tracing::error!(
                partition = %self.inner.name,
                base_offset = p.base_offset,
                last_offset = p.last_offset,
                object = %p.object,
                problem = %p.problem,
                "tier scrub: a segment object is damaged or missing; fetches of its offsets fail"
            );
        }
        Ok(report)
    }

    async fn scrub_segment(
        &self,
        seg: &SegmentMeta,
        limiter: &RateLimiter,
        cancel: &CancellationToken,
        report: &mut ScrubReport,
    ) -> Result<Vec<ScrubProblem>, TierError> {
        let problem = |obj: &ObjectRef, what: String| ScrubProblem {
            base_offset: seg.base_offset,
            last_offset: seg.last_offset,
            object: obj.name.clone(),
            problem: what,
        };
        let mut problems = Vec::new();
        let mut chunk_crcs = None;
        for (kind, obj) in &seg.objects {
            if *kind == ObjectKind::Log {
                continue;
            }
            report.objects += 1;
            match self.read_whole(obj, limiter, cancel, report).await? {
                Read::Ok(body) if *kind == ObjectKind::Crcs => chunk_crcs = Some(body),
                Read::Ok(_) => {}
                Read::Problem(p) => problems.push(problem(obj, p)),
            }
        }
        let Some(log) = seg.object(ObjectKind::Log) else {
            return Ok(problems);
        };
        report.objects += 1;
        if let Some(p) = self
            .scrub_log(seg, log, chunk_crcs, limiter, cancel, report)
            .await?
        {
            problems.push(problem(log, p));
        }
        Ok(problems)
    }

    /// Reads one object whole and checks its size and CRC-32C.
    async fn read_whole(
        &self,
        obj: &ObjectRef,
        limiter: &RateLimiter,
        cancel: &CancellationToken,
        report: &mut ScrubReport,
    ) -> Result<Read, TierError> {
        limiter.acquire(obj.size, Some(cancel)).await?;
        let path = layout::child(&self.inner.dir, &obj.name);
        let store = &self.inner.tier.inner.store;
        let got = cancellable(Some(cancel), async {
            match store.get(&path).await {
                Ok(r) => r.bytes().await.map(Some).map_err(store_err("get", &path)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(store_err("get", &path)(e)),
            }
        })
        .await?;
        let Some(body) = got else {
            return Ok(Read::Problem("missing from the store".into()));
        };
        report.bytes += body.len() as u64;
        if body.len() as u64 != obj.size {
            return Ok(Read::Problem(format!(
                "{} bytes, the manifest says {}",
                body.len(),
                obj.size
            )));
        }
        let crc = crc32c::crc32c(&body);
        if crc != obj.crc32c {
            return Ok(Read::Problem(format!(
                "CRC-32C {crc:08x}, the manifest says {:08x}",
                obj.crc32c
            )));
        }
        Ok(Read::Ok(body))
    }

    /// Reads the log object in chunks and checks every batch, every chunk
    /// CRC and the whole object's CRC. Returns the problem, if any.
    async fn scrub_log(
        &self,
        seg: &SegmentMeta,
        log: &ObjectRef,
        chunk_crcs: Option<bytes::Bytes>,
        limiter: &RateLimiter,
        cancel: &CancellationToken,
        report: &mut ScrubReport,
    ) -> Result<Option<String>, TierError> {
        let tier = &self.inner.tier.inner;
        let chunk = match (seg.chunk_size, &chunk_crcs) {
            (Some(c), Some(_)) if c > 0 => c,
            _ => tier.options.chunk_size,
        };
        let path = layout::child(&self.inner.dir, &log.name);
        let mut scan = BatchScan::new(log.size, Some((seg.base_offset, seg.last_offset)));
        let mut whole = 0u32;
        let mut at = 0u64;
        let mut i = 0usize;
        while at < log.size {
            let end = (at + chunk).min(log.size);
            limiter.acquire(end - at, Some(cancel)).await?;
            let got = cancellable(Some(cancel), async {
                match tier.store.get_range(&path, at..end).await {
                    Ok(b) => Ok(Some(b)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(store_err("get", &path)(e)),
                }
            })
            .await?;
            let Some(bytes) = got else {
                return Ok(Some("missing from the store".into()));
            };
            report.bytes += bytes.len() as u64;
            if bytes.len() as u64 != end - at {
                return Ok(Some(format!(
                    "the store returned {} bytes at position {at}, not {} (the object is shorter than the manifest says)",
                    bytes.len(),
                    end - at
                )));
            }
            let crc = crc32c::crc32c(&bytes);
            if let Some(want) = chunk_crcs
                .as_ref()
                .and_then(|c| c.get(i * 4..i * 4 + 4))
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            {
                if crc != want {
                    return Ok(Some(format!(
                        "chunk {i} at position {at}: CRC-32C {crc:08x}, the segment's chunk CRCs say {want:08x}"
                    )));
                }
            }
            if let Err(e) = scan.update(&bytes) {
                return Ok(Some(format!("{} at position {}", e.message, e.position)));
            }
            whole = crc32c::crc32c_append(whole, &bytes);
            at = end;
            i += 1;
        }
        let summary = match scan.finish() {
            Ok(s) => s,
            Err(e) => return Ok(Some(format!("{} at position {}", e.message, e.position))),
        };
        if whole != log.crc32c {
            return Ok(Some(format!(
                "CRC-32C {whole:08x}, the manifest says {:08x}",
                log.crc32c
            )));
        }
        if summary.first_offset != Some(seg.base_offset) || summary.last_offset != seg.last_offset {
            return Ok(Some(format!(
                "its batches hold offsets {:?}..={}, the manifest says {}..={}",
                summary.first_offset, summary.last_offset, seg.base_offset, seg.last_offset
            )));
        }
        Ok(None)
    }
}
