//! Uploading one sealed segment: objects first, then the manifest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use super::{lock, unix_ms, RemotePartition};
use crate::batch::BatchScan;
use crate::error::{io_err, store_err};
use crate::layout;
use crate::manifest::{AddOutcome, Manifest, ObjectKind, ObjectRef, SegmentMeta};
use crate::metrics::TierMetrics;
use crate::store::cancellable;
use crate::throttle::RateLimiter;
use crate::{TierError, TierStore};
use std::sync::Arc;

/// A sealed segment as the broker describes it: offsets, timestamps, epoch,
/// the paths of its files and its small per-segment state. The tier reads
/// the files; it never changes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentUpload {
    pub base_offset: i64,
    pub last_offset: i64,
    pub first_timestamp: Option<i64>,
    pub max_timestamp: i64,
    /// Epoch of the leader uploading it (fences the manifest write).
    pub leader_epoch: i32,
    /// Bytes of the `.log` file; checked against the file.
    pub size: u64,
    pub log: PathBuf,
    pub offset_index: PathBuf,
    pub time_index: PathBuf,
    /// Producer state as of the segment's end (opaque to the tier).
    pub producer_snapshot: Option<Bytes>,
    /// Leader epochs up to the segment's end (opaque to the tier).
    pub leader_epochs: Option<Bytes>,
    /// The segment's aborted-transaction index file, when it has one.
    pub txn_index: Option<PathBuf>,
}

impl SegmentUpload {
    fn files(&self) -> Vec<(ObjectKind, &Path)> {
        let mut v = vec![
            (ObjectKind::Log, self.log.as_path()),
            (ObjectKind::Index, self.offset_index.as_path()),
            (ObjectKind::Timeindex, self.time_index.as_path()),
        ];
        if let Some(p) = &self.txn_index {
            v.push((ObjectKind::Txnindex, p.as_path()));
        }
        v
    }

    fn small_objects(&self) -> Vec<(ObjectKind, Bytes)> {
        [
            (ObjectKind::Snapshot, &self.producer_snapshot),
            (ObjectKind::Epochs, &self.leader_epochs),
        ]
        .into_iter()
        .filter_map(|(kind, b)| b.clone().map(|b| (kind, b)))
        .collect()
    }
}

/// What an upload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadOutcome {
    /// The manifest names the segment now.
    Uploaded(SegmentMeta),
    /// The tier already held these offsets (a repeated upload); nothing new
    /// is named and any objects written for it were removed.
    AlreadyCovered,
}

/// CRC-32C per fixed-size chunk of a stream.
struct ChunkCrcs {
    chunk: u64,
    crc: u32,
    filled: u64,
    out: Vec<u32>,
}

impl ChunkCrcs {
    fn new(chunk: u64) -> Self {
        ChunkCrcs {
            chunk,
            crc: 0,
            filled: 0,
            out: Vec::new(),
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = (self.chunk - self.filled) as usize;
            let take = room.min(data.len());
            self.crc = crc32c::crc32c_append(self.crc, &data[..take]);
            self.filled += take as u64;
            data = &data[take..];
            if self.filled == self.chunk {
                self.out.push(self.crc);
                self.crc = 0;
                self.filled = 0;
            }
        }
    }

    fn finish(mut self) -> Bytes {
        if self.filled > 0 {
            self.out.push(self.crc);
        }
        self.out
            .iter()
            .flat_map(|c| c.to_be_bytes())
            .collect::<Vec<u8>>()
            .into()
    }
}

struct Written {
    size: u64,
    crc: u32,
    chunk_crcs: Option<Bytes>,
}

/// What [`RemotePartition::put_file`] checks besides sending: the chunk
/// CRCs of a log, and its batches (all from the same bytes).
struct LogChecks {
    chunk_crcs: ChunkCrcs,
    scan: BatchScan,
}

impl LogChecks {
    fn update(&mut self, file: &Path, data: &[u8]) -> Result<(), TierError> {
        self.chunk_crcs.update(data);
        self.scan.update(data).map_err(|e| damaged(file, e))
    }
}

fn damaged(file: &Path, e: crate::batch::ScanError) -> TierError {
    TierError::DamagedSegment {
        path: file.display().to_string(),
        position: e.position,
        message: e.message,
    }
}

/// Whether the objects of a write that failed with `e` are surely not
/// named by the manifest, so they may be removed at once: the manifest PUT
/// was never tried, or it was refused. (A cancelled write may have landed.)
fn surely_unnamed(e: &TierError, put_tried: bool) -> bool {
    !e.is_cancelled()
        && (!put_tried
            || matches!(
                e,
                TierError::Fenced { .. } | TierError::ManifestConflict { .. }
            ))
}

fn now_ms() -> i64 {
    unix_ms(std::time::SystemTime::now())
}

impl RemotePartition {
    /// Uploads a sealed segment with no cancellation and no bandwidth limit.
    pub async fn upload_segment(&self, upload: &SegmentUpload) -> Result<UploadOutcome, TierError> {
        self.upload_segment_with(upload, &CancellationToken::new(), &RateLimiter::unlimited())
            .await
    }

    /// Uploads a sealed segment: every file under a fresh unique name, then
    /// the manifest naming them (conditional PUT fenced by
    /// `upload.leader_epoch`). A repeated upload of tiered offsets is
    /// [`UploadOutcome::AlreadyCovered`]. On a failure after objects were
    /// written, the objects are removed when the manifest surely does not
    /// name them and otherwise left for orphan collection.
    pub async fn upload_segment_with(
        &self,
        upload: &SegmentUpload,
        cancel: &CancellationToken,
        limiter: &RateLimiter,
    ) -> Result<UploadOutcome, TierError> {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "tier_upload",
            partition = %self.inner.name,
            base_offset = upload.base_offset,
            last_offset = upload.last_offset,
            bytes = upload.size,
        );
        self.upload_segment_inner(upload, false, cancel, limiter)
            .instrument(span)
            .await
    }

    /// Uploads a local segment again, under new object names, in place of
    /// the manifest's segment of the same offsets (a scrub found its
    /// objects damaged or missing). The old objects are left for orphan
    /// collection, so reads in flight still find them.
    /// [`UploadOutcome::AlreadyCovered`] when the manifest no longer has a
    /// segment of those offsets.
    pub async fn reupload_segment(
        &self,
        upload: &SegmentUpload,
        cancel: &CancellationToken,
        limiter: &RateLimiter,
    ) -> Result<UploadOutcome, TierError> {
        let outcome = self
            .upload_segment_inner(upload, true, cancel, limiter)
            .await?;
        if let UploadOutcome::Uploaded(meta) = &outcome {
            TierMetrics::add(&self.metrics().scrub_reuploads, 1);
            tracing::warn!(
                partition = %self.inner.name,
                base_offset = meta.base_offset,
                last_offset = meta.last_offset,
                "damaged tier segment uploaded again from the local copy"
            );
        }
        Ok(outcome)
    }

    async fn upload_segment_inner(
        &self,
        upload: &SegmentUpload,
        replace: bool,
        cancel: &CancellationToken,
        limiter: &RateLimiter,
    ) -> Result<UploadOutcome, TierError> {
        let invalid = |message: &str| TierError::InvalidSegment {
            partition: self.inner.name.clone(),
            base_offset: upload.base_offset,
            message: message.to_string(),
        };
        if upload.last_offset < upload.base_offset || upload.base_offset < 0 {
            return Err(invalid("last offset is below base offset"));
        }
        if let Some((refused, _)) = self.refused_segment() {
            if upload.base_offset > refused {
                return Err(invalid(&format!(
                    "an earlier segment was refused as damaged; uploading past it would leave a gap. refused_base_offset={refused}"
                )));
            }
        }
        let on_disk = tokio::fs::metadata(&upload.log)
            .await
            .map_err(io_err("stat", &upload.log))?
            .len();
        if on_disk != upload.size {
            return Err(invalid(&format!(
                "log file size differs from the description. file_size={on_disk}, size={}",
                upload.size
            )));
        }
        // Cheap early checks on the cached manifest: fenced or already tiered.
        let current = cancellable(Some(cancel), self.manifest()).await?;
        current.check_fence(upload.leader_epoch, &self.inner.name)?;
        if !replace
            && current
                .last_offset()
                .is_some_and(|l| upload.last_offset <= l)
        {
            return Ok(UploadOutcome::AlreadyCovered);
        }

        let mut written: Vec<ObjectPath> = Vec::new();
        let put_tried = std::sync::atomic::AtomicBool::new(false);
        let result = async {
            let meta = self
                .put_segment_objects(upload, cancel, limiter, &mut written)
                .await?;
            let name = self.inner.name.clone();
            let committed = self
                .update_manifest(upload.leader_epoch, Some(cancel), |m| {
                    let next = if replace {
                        m.with_segment_replaced(meta.clone(), upload.leader_epoch, &name)?
                    } else {
                        match m.with_segment(meta.clone(), upload.leader_epoch, &name)? {
                            AddOutcome::Added(next) => Some(*next),
                            AddOutcome::AlreadyCovered => None,
                        }
                    };
                    if next.is_some() {
                        put_tried.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(next.map(|n| (n, ())))
                })
                .await?;
            Ok(committed.map(|_| meta))
        }
        .await;

        match result {
            Ok(Some(meta)) => {
                TierMetrics::add(&self.metrics().segments_uploaded, 1);
                Ok(UploadOutcome::Uploaded(meta))
            }
            Ok(None) => {
                self.remove_objects(&written).await;
                Ok(UploadOutcome::AlreadyCovered)
            }
            Err(e) => {
                if let TierError::DamagedSegment { .. } = &e {
                    TierMetrics::add(&self.metrics().segments_refused, 1);
                    tracing::error!(
                        partition = %self.inner.name,
                        base_offset = upload.base_offset,
                        error = %e,
                        "segment refused for upload: a batch failed its checks; this partition uploads nothing past it (DeleteRecords past the segment drops it)"
                    );
                    *lock(&self.inner.refused) = Some((upload.base_offset, e.to_string()));
                }
                if surely_unnamed(&e, put_tried.load(std::sync::atomic::Ordering::Relaxed)) {
                    self.remove_objects(&written).await;
                }
                TierMetrics::add(&self.metrics().upload_errors, 1);
                Err(e)
            }
        }
    }

    /// Tier compaction's swap: uploads `uploads` (the compacted records of
    /// the segments `replaced`, a run of the manifest by id, in offset
    /// order; each with the upload time of the newest segment it replaces,
    /// kept as its `uploaded_at_ms` so that `delete.retention.ms` counts
    /// from when its records reached the tier, not from the last pass),
    /// then replaces the run by them in one fenced conditional
    /// manifest write that marks offsets below `cleaned_upto` clean and
    /// retires the run's objects for `grace`. `None` when the manifest no
    /// longer holds the run (its objects are then removed again). A crash
    /// before the write leaves the old run and unnamed new objects
    /// (orphans); after it, the new run.
    #[allow(clippy::too_many_arguments)]
    pub async fn replace_run(
        &self,
        uploads: &[(SegmentUpload, i64)],
        replaced: &[String],
        cleaned_upto: i64,
        leader_epoch: i32,
        grace: std::time::Duration,
        cancel: &CancellationToken,
        limiter: &RateLimiter,
    ) -> Result<Option<Arc<Manifest>>, TierError> {
        let mut written: Vec<ObjectPath> = Vec::new();
        let put_tried = std::sync::atomic::AtomicBool::new(false);
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let result = async {
            let mut metas = Vec::with_capacity(uploads.len());
            for (upload, uploaded_at_ms) in uploads {
                let mut meta = self
                    .put_segment_objects(upload, cancel, limiter, &mut written)
                    .await?;
                meta.uploaded_at_ms = *uploaded_at_ms;
                metas.push(meta);
            }
            let committed = self
                .update_manifest(leader_epoch, Some(cancel), |m| {
                    let next =
                        m.with_run_replaced(replaced, &metas, cleaned_upto, now_ms(), grace_ms);
                    if next.is_some() {
                        put_tried.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(next.map(|n| (n, ())))
                })
                .await?;
            Ok::<_, TierError>(committed.map(|(m, ())| m))
        }
        .await;
        let unnamed = match &result {
            Ok(Some(_)) => false,
            Ok(None) => true,
            Err(e) => surely_unnamed(e, put_tried.load(std::sync::atomic::Ordering::Relaxed)),
        };
        if unnamed {
            self.remove_objects(&written).await;
        }
        result
    }

    /// Writes every object of `upload` under a fresh upload id (noting each
    /// in `written` before it is sent) and returns the segment's manifest
    /// entry; the manifest is not changed.
    async fn put_segment_objects(
        &self,
        upload: &SegmentUpload,
        cancel: &CancellationToken,
        limiter: &RateLimiter,
        written: &mut Vec<ObjectPath>,
    ) -> Result<SegmentMeta, TierError> {
        let invalid = |message: &str| TierError::InvalidSegment {
            partition: self.inner.name.clone(),
            base_offset: upload.base_offset,
            message: message.to_string(),
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut objects = BTreeMap::new();
        let chunk_size = self.inner.tier.inner.options.chunk_size;
        for (kind, file) in upload.files() {
            let name = layout::object_name(upload.base_offset, &id, kind);
            let dest = layout::child(&self.inner.dir, &name);
            let checks = (kind == ObjectKind::Log).then(|| LogChecks {
                chunk_crcs: ChunkCrcs::new(chunk_size),
                scan: BatchScan::new(upload.size, Some((upload.base_offset, upload.last_offset))),
            });
            written.push(dest.clone());
            let w = self
                .inner
                .tier
                .put_file(file, &dest, checks, cancel, limiter)
                .await?;
            if kind == ObjectKind::Log && w.size != upload.size {
                return Err(invalid("log file changed while it was uploaded"));
            }
            if let Some(crcs) = w.chunk_crcs {
                let name = layout::object_name(upload.base_offset, &id, ObjectKind::Crcs);
                let dest = layout::child(&self.inner.dir, &name);
                written.push(dest.clone());
                let crc = crc32c::crc32c(&crcs);
                let size = crcs.len() as u64;
                self.inner
                    .tier
                    .put_small(&dest, crcs, cancel, limiter)
                    .await?;
                objects.insert(
                    ObjectKind::Crcs,
                    ObjectRef {
                        name,
                        size,
                        crc32c: crc,
                    },
                );
            }
            objects.insert(
                kind,
                ObjectRef {
                    name,
                    size: w.size,
                    crc32c: w.crc,
                },
            );
        }
        for (kind, body) in upload.small_objects() {
            let name = layout::object_name(upload.base_offset, &id, kind);
            let dest = layout::child(&self.inner.dir, &name);
            written.push(dest.clone());
            let crc = crc32c::crc32c(&body);
            let size = body.len() as u64;
            self.inner
                .tier
                .put_small(&dest, body, cancel, limiter)
                .await?;
            objects.insert(
                kind,
                ObjectRef {
                    name,
                    size,
                    crc32c: crc,
                },
            );
        }
        Ok(SegmentMeta {
            id: id.clone(),
            base_offset: upload.base_offset,
            last_offset: upload.last_offset,
            first_timestamp: upload.first_timestamp,
            max_timestamp: upload.max_timestamp,
            size: upload.size,
            leader_epoch: upload.leader_epoch,
            uploaded_at_ms: now_ms(),
            chunk_size: Some(chunk_size),
            batches_checked: true,
            objects,
        })
    }

    async fn remove_objects(&self, paths: &[ObjectPath]) {
        for p in paths {
            if let Err(e) = self.inner.tier.inner.store.delete(p).await {
                if !matches!(e, object_store::Error::NotFound { .. }) {
                    tracing::debug!(error = %e, path = %p, "unused object not deleted; left as orphan");
                }
            }
        }
    }
}

impl TierStore {
    async fn put_small(
        &self,
        dest: &ObjectPath,
        body: Bytes,
        cancel: &CancellationToken,
        limiter: &RateLimiter,
    ) -> Result<(), TierError> {
        let len = body.len() as u64;
        limiter.acquire(len, Some(cancel)).await?;
        let store = &self.inner.store;
        let started = std::time::Instant::now();
        cancellable(Some(cancel), async {
            store
                .put(dest, PutPayload::from(body))
                .await
                .map_err(store_err("put", dest))
        })
        .await?;
        self.inner.metrics.put_latency.observe(started.elapsed());
        TierMetrics::add(&self.inner.metrics.bytes_uploaded, len);
        Ok(())
    }

    /// Writes one local file to `dest`, in parts when it is large, computing
    /// its CRC-32C from the bytes sent, and with `checks` (a log) its chunk
    /// CRCs and a scan of its batches from the same bytes; a bad batch
    /// stops the write ([`TierError::DamagedSegment`]).
    async fn put_file(
        &self,
        file: &Path,
        dest: &ObjectPath,
        mut checks: Option<LogChecks>,
        cancel: &CancellationToken,
        limiter: &RateLimiter,
    ) -> Result<Written, TierError> {
        let opts = &self.inner.options;
        let mut f = tokio::fs::File::open(file)
            .await
            .map_err(io_err("open", file))?;
        let len = f.metadata().await.map_err(io_err("stat", file))?.len();
        let finish = |checks: Option<LogChecks>| -> Result<Option<Bytes>, TierError> {
            checks
                .map(|c| {
                    c.scan.finish().map_err(|e| damaged(file, e))?;
                    Ok(c.chunk_crcs.finish())
                })
                .transpose()
        };
        if len < opts.multipart_threshold {
            let mut buf = Vec::with_capacity(len as usize);
            f.read_to_end(&mut buf)
                .await
                .map_err(io_err("read", file))?;
            let body = Bytes::from(buf);
            if let Some(c) = checks.as_mut() {
                c.update(file, &body)?;
            }
            let chunk_crcs = finish(checks)?;
            let crc = crc32c::crc32c(&body);
            let size = body.len() as u64;
            self.put_small(dest, body, cancel, limiter).await?;
            return Ok(Written {
                size,
                crc,
                chunk_crcs,
            });
        }
        let store = &self.inner.store;
        let upload = cancellable(Some(cancel), async {
            store
                .put_multipart(dest)
                .await
                .map_err(store_err("put_multipart", dest))
        })
        .await?;
        let part = opts.multipart_part_size;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part);
        let mut crc = 0u32;
        let mut size = 0u64;
        let sent = async {
            loop {
                let mut buf = BytesMut::zeroed(part);
                let mut filled = 0;
                while filled < part {
                    let n = f
                        .read(&mut buf[filled..])
                        .await
                        .map_err(io_err("read", file))?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    break;
                }
                buf.truncate(filled);
                crc = crc32c::crc32c_append(crc, &buf);
                if let Some(c) = checks.as_mut() {
                    c.update(file, &buf)?;
                }
                size += filled as u64;
                limiter.acquire(filled as u64, Some(cancel)).await?;
                cancellable(Some(cancel), async {
                    writer
                        .wait_for_capacity(opts.multipart_concurrency)
                        .await
                        .map_err(store_err("put_part", dest))
                })
                .await?;
                writer.put(buf.freeze());
                if filled < part {
                    break;
                }
            }
            Ok::<(), TierError>(())
        }
        .await;
        let chunk_crcs = sent.and_then(|()| finish(checks.take()));
        let chunk_crcs = match chunk_crcs {
            Ok(c) => c,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(e);
            }
        };
        cancellable(Some(cancel), async {
            writer
                .finish()
                .await
                .map_err(store_err("complete_multipart", dest))
        })
        .await?;
        TierMetrics::add(&self.inner.metrics.bytes_uploaded, size);
        Ok(Written {
            size,
            crc,
            chunk_crcs,
        })
    }

    /// Writes the local file `file` as the object `name` (under the tier
    /// prefix), in parts when it is large so memory stays bounded, at most
    /// as fast as `limiter` lets; returns its size.
    pub async fn put_local_file(
        &self,
        name: &str,
        file: &Path,
        cancel: &CancellationToken,
        limiter: &RateLimiter,
    ) -> Result<u64, TierError> {
        let dest = self.path(name);
        let w = self.put_file(file, &dest, None, cancel, limiter).await?;
        Ok(w.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_crcs_split_at_boundaries() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let mut c = ChunkCrcs::new(4096);
        for piece in data.chunks(777) {
            c.update(piece);
        }
        let out = c.finish();
        let expect: Vec<u8> = data
            .chunks(4096)
            .flat_map(|ch| crc32c::crc32c(ch).to_be_bytes())
            .collect();
        assert_eq!(&out[..], &expect[..]);
    }
}
