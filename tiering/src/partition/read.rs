//! Remote reads: manifest -> segment -> offset index -> byte range -> chunks.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;

use super::{lock, RemotePartition, TimestampOffset};
use crate::batch::{self, HEADER_LEN};
use crate::cache::{FileSlice, Piece, ReadCache};
use crate::index;
use crate::layout;
use crate::manifest::{ObjectKind, SegmentMeta};
use crate::metrics::TierMetrics;
use crate::TierError;

/// Reads byte ranges of one segment's log object through the chunk cache.
struct SegmentReader {
    part: RemotePartition,
    path: ObjectPath,
    size: u64,
    chunk: u64,
    /// Big-endian CRC-32C per chunk, when the segment has them.
    crcs: Option<Bytes>,
    /// Whether chunks in the disk cache may come back as file ranges: the
    /// segment has chunk CRCs and the cache has a disk directory.
    files: bool,
    /// Chunks this read used, as it got them (dropped from the cache on an
    /// integrity error).
    loaded: Vec<(u64, Piece)>,
    /// Bytes read ahead from a disk-cache file for the header walk, from
    /// this position of the log object (one pread serves many headers).
    block: Option<(u64, Bytes)>,
}

impl SegmentReader {
    /// `files`: whether chunks in the disk cache may come back as file
    /// ranges (then only for segments with chunk CRCs).
    async fn open(
        part: &RemotePartition,
        seg: &SegmentMeta,
        files: bool,
    ) -> Result<SegmentReader, TierError> {
        let log = seg
            .object(ObjectKind::Log)
            .ok_or_else(|| TierError::ManifestFormat {
                path: part.inner.manifest_path.to_string(),
                message: format!("segment has no log object. base_offset={}", seg.base_offset),
            })?;
        let path = layout::child(&part.inner.dir, &log.name);
        let (chunk, crcs) = match (seg.chunk_size, seg.object(ObjectKind::Crcs)) {
            (Some(c), Some(obj)) if c > 0 => {
                let crcs = part
                    .whole_object(obj.name.as_str(), obj.size, obj.crc32c)
                    .await?;
                let chunks = log.size.div_ceil(c);
                if crcs.len() as u64 != chunks * 4 {
                    return Err(TierError::ManifestFormat {
                        path: part.inner.manifest_path.to_string(),
                        message: format!("chunk crcs do not cover the log. object={}", obj.name),
                    });
                }
                (c, Some(crcs))
            }
            _ => (part.inner.tier.inner.options.chunk_size, None),
        };
        // File ranges are sent unread: only chunks whose CRCs were taken
        // from bytes whose every batch was checked.
        let files = files
            && crcs.is_some()
            && seg.batches_checked
            && part.inner.tier.inner.cache.has_disk();
        Ok(SegmentReader {
            part: part.clone(),
            path,
            size: log.size,
            chunk,
            crcs,
            files,
            loaded: Vec::new(),
            block: None,
        })
    }

    /// Fetches chunk `i` into the cache in the background, unless it is
    /// in memory already, or will be read from the disk cache as a file
    /// range when its turn comes (loading it into memory now would only
    /// cost memory), or the cache has all the prefetches in flight it
    /// allows.
    fn prefetch(&self, i: u64) {
        let tier = Arc::clone(&self.part.inner.tier.inner);
        let key = ReadCache::chunk_key(&self.path, i);
        if tier.cache.in_memory(&key) || (self.files && tier.cache.on_disk(&key)) {
            return;
        }
        let Some(slot) = tier.cache.start_prefetch() else {
            return;
        };
        let path = self.path.clone();
        let (size, chunk, crc) = (self.size, self.chunk, self.expected_crc(i));
        TierMetrics::add(&tier.metrics.prefetches, 1);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = tier
                .cache
                .chunk(&tier.store, &path, size, i, chunk, crc)
                .await
            {
                tracing::debug!(error = %e, path = %path, chunk = i, "prefetch failed");
            }
        });
    }

    fn expected_crc(&self, i: u64) -> Option<u32> {
        let c = self.crcs.as_ref()?;
        let at = (i * 4) as usize;
        let b = c.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Chunk `i`: a file range when it is in the disk cache (and `files`),
    /// else its bytes.
    async fn load(&self, i: u64) -> Result<Piece, TierError> {
        let tier = &self.part.inner.tier.inner;
        let (store, path, size, chunk) = (&tier.store, &self.path, self.size, self.chunk);
        match (self.files, self.expected_crc(i)) {
            (true, Some(crc)) => {
                tier.cache
                    .chunk_piece(store, path, size, i, chunk, crc)
                    .await
            }
            (_, crc) => tier
                .cache
                .chunk(store, path, size, i, chunk, crc)
                .await
                .map(Piece::Mem),
        }
    }

    /// Bytes `[start, start + len)` of the log object, as pieces of the
    /// chunks that hold them.
    async fn pieces(&mut self, start: u64, len: u64) -> Result<Vec<Piece>, TierError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let end = start + len;
        let first = start / self.chunk;
        let last = (end - 1) / self.chunk;
        let missing: Vec<u64> = (first..=last)
            .filter(|i| !self.loaded.iter().any(|(j, _)| j == i))
            .collect();
        let got = futures::future::try_join_all(missing.iter().map(|&i| self.load(i))).await?;
        self.loaded.extend(missing.into_iter().zip(got));
        let mut out = Vec::with_capacity((last - first + 1) as usize);
        let mut total = 0;
        for i in first..=last {
            let Some((_, p)) = self.loaded.iter().find(|(j, _)| *j == i) else {
                return Err(short(&self.path, start, len));
            };
            let chunk_start = i * self.chunk;
            let from = start.saturating_sub(chunk_start);
            let to = (end - chunk_start).min(p.len());
            if from > to {
                return Err(short(&self.path, start, len));
            }
            total += to - from;
            out.push(p.slice(from, to));
        }
        if total != len {
            return Err(short(&self.path, start, len));
        }
        Ok(out)
    }

    /// Bytes `[start, start + len)` of the log object, in memory. A range
    /// within one disk-cache file is read with up to [`READ_AHEAD`] bytes
    /// after it, which serve the next calls.
    async fn range(&mut self, start: u64, len: u64) -> Result<Bytes, TierError> {
        if let Some((at, b)) = &self.block {
            if start >= *at && start + len <= *at + b.len() as u64 {
                let from = (start - at) as usize;
                return Ok(b.slice(from..from + len as usize));
            }
        }
        let pieces = self.pieces(start, len).await?;
        let read = match &pieces[..] {
            [Piece::File(f)] => {
                // Never past the chunk, whose file holds exactly its bytes.
                let chunk_end = ((start / self.chunk + 1) * self.chunk).min(self.size);
                let ahead = READ_AHEAD
                    .max(len)
                    .min(chunk_end.saturating_sub(start).max(len));
                let f = FileSlice {
                    len: ahead,
                    ..f.clone()
                };
                f.read().map(|b| {
                    let out = b.slice(..len as usize);
                    self.block = Some((start, b));
                    out
                })
            }
            _ => Piece::join(&pieces),
        };
        read.map_err(|e| self.read_failed(start, len, e))
    }

    fn read_failed(&self, start: u64, len: u64, e: std::io::Error) -> TierError {
        tracing::warn!(path = %self.path, start, len, error = %e, "disk cache read failed");
        short(&self.path, start, len)
    }

    /// The batch header at `pos`, checked to fit in the segment.
    async fn header(&mut self, pos: u64) -> Result<batch::BatchHeader, TierError> {
        let want = (HEADER_LEN as u64).min(self.size - pos);
        let bytes = self.range(pos, want).await?;
        let h = batch::parse_header(&bytes).map_err(|p| self.bad(pos, &p.to_string()))?;
        if pos + h.total_len > self.size {
            return Err(self.bad(pos, "batch runs past the end of the segment"));
        }
        Ok(h)
    }

    fn bad(&self, position: u64, message: &str) -> TierError {
        TierError::BadBatch {
            path: self.path.to_string(),
            position,
            message: message.to_string(),
        }
    }

    /// Drops the chunks this read used from the cache (a chunk that failed
    /// its check never entered it).
    async fn invalidate_touched(&self) {
        let cache = &self.part.inner.tier.inner.cache;
        for (i, _) in &self.loaded {
            cache
                .invalidate(&ReadCache::chunk_key(&self.path, *i))
                .await;
        }
    }
}

/// Bytes a header read takes from a disk-cache file at once.
const READ_AHEAD: u64 = 16 << 10;

/// The batches of a remote read, as pieces in order.
#[derive(Debug, Clone, Default)]
pub struct RemoteRead {
    pub pieces: Vec<Piece>,
    /// Bytes in all pieces.
    pub len: u64,
    /// Offsets from the one asked for to the last one returned.
    pub offsets: u64,
}

/// A batch at `pos` must lie within the offsets the manifest records for
/// its segment: a manifest that is consistent with its own CRC but wrong
/// (ranges swapped, say) must never make a read skip or repeat offsets.
fn check_in_segment(
    r: &SegmentReader,
    seg: &SegmentMeta,
    pos: u64,
    h: &batch::BatchHeader,
) -> Result<(), TierError> {
    if h.base_offset < seg.base_offset || h.last_offset > seg.last_offset {
        return Err(r.bad(
            pos,
            &format!(
                "batch lies outside the segment's recorded offsets. base_offset={}, last_offset={}, segment_base_offset={}, segment_last_offset={}",
                h.base_offset, h.last_offset, seg.base_offset, seg.last_offset
            ),
        ));
    }
    Ok(())
}

fn short(path: &ObjectPath, start: u64, len: u64) -> TierError {
    TierError::ShortRead {
        path: path.to_string(),
        expected: start + len,
        actual: start,
    }
}

impl RemotePartition {
    /// A whole small object of this partition, checked against `size` and
    /// `crc` and cached.
    /// The object of `kind` of a segment the manifest names, whole and
    /// checked against its CRC-32C; `None` when the segment has none.
    pub async fn segment_object(
        &self,
        seg: &SegmentMeta,
        kind: ObjectKind,
    ) -> Result<Option<Bytes>, TierError> {
        match seg.object(kind) {
            Some(o) => Ok(Some(self.whole_object(&o.name, o.size, o.crc32c).await?)),
            None => Ok(None),
        }
    }

    pub(crate) async fn whole_object(
        &self,
        name: &str,
        size: u64,
        crc: u32,
    ) -> Result<Bytes, TierError> {
        let tier = &self.inner.tier.inner;
        let path = layout::child(&self.inner.dir, name);
        match tier.cache.whole(&tier.store, &path, size, crc).await {
            Err(e) if e.is_integrity() => {
                // Fetch once more: the first body may have been damaged in flight.
                tier.cache.invalidate(&ReadCache::whole_key(&path)).await;
                tier.cache.whole(&tier.store, &path, size, crc).await
            }
            r => r,
        }
    }

    /// The object of `kind` of the newest tiered segment (for example its
    /// producer snapshot), checked against its CRC-32C; `None` when nothing
    /// is tiered or that segment has no such object.
    pub async fn last_segment_object(
        &self,
        kind: ObjectKind,
    ) -> Result<Option<(SegmentMeta, Bytes)>, TierError> {
        let manifest = self.manifest().await?;
        let Some(seg) = manifest.segments.last() else {
            return Ok(None);
        };
        let Some(obj) = seg.object(kind) else {
            return Ok(None);
        };
        let body = self
            .whole_object(obj.name.as_str(), obj.size, obj.crc32c)
            .await?;
        Ok(Some((seg.clone(), body)))
    }

    /// Whole record batches starting with the batch that holds `offset`:
    /// at least one batch even when it exceeds `max_bytes` (KIP-74), then
    /// more while they fit, never past the end of that batch's segment.
    /// Every returned batch passed its CRC-32C (and every chunk its chunk
    /// CRC). Offsets below the tier's start or past its end are
    /// [`TierError::OffsetOutOfRange`]. Integrity errors are retried once
    /// after dropping the cached chunks; a missing object once after
    /// re-reading the manifest.
    pub async fn read(&self, offset: i64, max_bytes: u64) -> Result<Bytes, TierError> {
        let read = self.read_pieces(offset, max_bytes, false).await?;
        Piece::join(&read.pieces).map_err(|e| {
            TierMetrics::add(&self.inner.tier.inner.metrics.read_errors, 1);
            TierError::Io {
                op: "read disk cache",
                path: self.inner.name.clone(),
                source: e,
            }
        })
    }

    /// Like [`RemotePartition::read`], with the batches as pieces. With
    /// `files`, chunks in the disk cache are file ranges (to send with
    /// sendfile, never read into memory) and others bytes; a range's batches
    /// are not read here, so their own CRC-32C is not checked: the chunk they
    /// are in passed its chunk CRC before it was cached (see `cache`).
    /// Without `files`, or for segments without chunk CRCs, the batches are
    /// one piece of checked bytes.
    pub async fn read_pieces(
        &self,
        offset: i64,
        max_bytes: u64,
        files: bool,
    ) -> Result<RemoteRead, TierError> {
        use tracing::Instrument;
        let span =
            tracing::info_span!("tier_read", partition = %self.inner.name, offset, max_bytes);
        let result = self
            .read_retrying(offset, max_bytes, files)
            .instrument(span)
            .await;
        if result.is_err() {
            TierMetrics::add(&self.inner.tier.inner.metrics.read_errors, 1);
        }
        result
    }

    async fn read_retrying(
        &self,
        offset: i64,
        max_bytes: u64,
        files: bool,
    ) -> Result<RemoteRead, TierError> {
        match self.read_once(offset, max_bytes, files).await {
            Err(TierError::OffsetOutOfRange { last, .. }) if offset > last => {
                // Another broker may have tiered more since this handle's
                // manifest was read.
                self.refresh().await?;
                self.read_once(offset, max_bytes, files).await
            }
            Err(e) if e.is_integrity() => self.read_once(offset, max_bytes, files).await,
            Err(TierError::Store {
                source: object_store::Error::NotFound { .. },
                ..
            }) => {
                // Retention by another broker may have moved the manifest on.
                self.refresh().await?;
                self.read_once(offset, max_bytes, files).await
            }
            r => r,
        }
    }

    async fn read_once(
        &self,
        offset: i64,
        max_bytes: u64,
        files: bool,
    ) -> Result<RemoteRead, TierError> {
        let manifest = self.manifest().await?;
        let out_of_range = || TierError::OffsetOutOfRange {
            offset,
            start: manifest.log_start_offset,
            last: manifest.last_offset().unwrap_or(-1),
        };
        if offset < manifest.log_start_offset {
            return Err(out_of_range());
        }
        let first = manifest.segment_for(offset).ok_or_else(out_of_range)?;
        let from = manifest
            .segments
            .iter()
            .position(|s| s.id == first.id)
            .unwrap_or(0);
        // A compacted segment may hold no batch at or after `offset` (its
        // records up to its last offset were cleaned away): the next
        // segment then has the next batch.
        let mut read = RemoteRead::default();
        for (i, seg) in manifest.segments.iter().enumerate().skip(from) {
            let mut r = SegmentReader::open(self, seg, files).await?;
            match self.read_batches(&mut r, seg, offset, max_bytes).await {
                Ok((found, start)) => {
                    if found.len == 0 {
                        read = found;
                        continue;
                    }
                    let following = &manifest.segments[i + 1..];
                    self.note_read(seg, &r, start, start + found.len, following, files);
                    return Ok(found);
                }
                Err(e) => {
                    if e.is_integrity() {
                        r.invalidate_touched().await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(read)
    }

    /// Position of the first batch of `seg` whose last offset is `>= offset`
    /// (and whose max timestamp is `>= min_ts`), walking from the index hint.
    async fn find_batch(
        &self,
        r: &mut SegmentReader,
        seg: &SegmentMeta,
        offset: i64,
        min_ts: Option<i64>,
    ) -> Result<Option<(u64, batch::BatchHeader)>, TierError> {
        let mut pos = 0;
        if offset > seg.base_offset {
            if let Some(idx) = seg.object(ObjectKind::Index) {
                let bytes = self.whole_object(&idx.name, idx.size, idx.crc32c).await?;
                pos = index::position_for_offset(&bytes, seg.base_offset, offset, r.size);
            }
        }
        let mut prev_last: Option<i64> = None;
        while pos < r.size {
            let h = r.header(pos).await?;
            if prev_last.is_some_and(|p| h.base_offset <= p) {
                return Err(r.bad(pos, "batch offsets are not increasing"));
            }
            check_in_segment(r, seg, pos, &h)?;
            prev_last = Some(h.last_offset);
            if h.last_offset >= offset && min_ts.is_none_or(|t| h.max_timestamp >= t) {
                return Ok(Some((pos, h)));
            }
            pos += h.total_len;
        }
        Ok(None)
    }

    async fn read_batches(
        &self,
        r: &mut SegmentReader,
        seg: &SegmentMeta,
        offset: i64,
        max_bytes: u64,
    ) -> Result<(RemoteRead, u64), TierError> {
        let Some((start, first)) = self.find_batch(r, seg, offset, None).await? else {
            return Ok((RemoteRead::default(), r.size));
        };
        let mut end = start + first.total_len;
        let mut last = first.last_offset;
        while end < r.size {
            let h = r.header(end).await?;
            if h.base_offset <= last {
                return Err(r.bad(end, "batch offsets are not increasing"));
            }
            check_in_segment(r, seg, end, &h)?;
            if end - start + h.total_len > max_bytes {
                break;
            }
            last = h.last_offset;
            end += h.total_len;
        }
        let mut pieces = r.pieces(start, end - start).await?;
        if pieces.iter().all(|p| matches!(p, Piece::Mem(_))) {
            // In memory: every batch's own CRC-32C too, so no damaged byte
            // is returned even for segments without chunk CRCs.
            let bytes = Piece::join(&pieces).map_err(|e| r.read_failed(start, end - start, e))?;
            self.check_batches(r, start, &bytes)?;
            pieces = vec![Piece::Mem(bytes)];
        }
        let read = RemoteRead {
            pieces,
            len: end - start,
            offsets: (last + 1 - offset.max(first.base_offset)).max(0) as u64,
        };
        Ok((read, start))
    }

    fn check_batches(&self, r: &SegmentReader, start: u64, bytes: &[u8]) -> Result<(), TierError> {
        let mut at = 0usize;
        while at < bytes.len() {
            let h = batch::parse_header(&bytes[at..])
                .map_err(|p| r.bad(start + at as u64, &p.to_string()))?;
            let len = h.total_len as usize;
            let b = bytes
                .get(at..at + len)
                .ok_or_else(|| r.bad(start + at as u64, "batch is truncated"))?;
            if let Err((expected, actual)) = batch::check_crc(b) {
                TierMetrics::add(&self.metrics().crc_mismatches, 1);
                return Err(TierError::Corrupt {
                    path: r.path.to_string(),
                    position: start + at as u64,
                    expected,
                    actual,
                });
            }
            at += len;
        }
        Ok(())
    }

    /// Remembers where a read ended and prefetches the following chunks
    /// when reads are sequential: this read starts where the last one ended,
    /// or at the start of a segment after a read of another segment. The
    /// chunks ahead run on into the `following` segments, so a replay does
    /// not wait at each segment's start for its first chunk (and its chunk
    /// CRCs).
    fn note_read(
        &self,
        seg: &SegmentMeta,
        r: &SegmentReader,
        start: u64,
        end: u64,
        following: &[SegmentMeta],
        files: bool,
    ) {
        let sequential = {
            let mut last = lock(&self.inner.last_read);
            let seq = match last.as_ref() {
                Some((id, last_end)) if id == &seg.id => *last_end == start,
                Some(_) => start == 0,
                None => false,
            };
            *last = Some((seg.id.clone(), end));
            seq
        };
        let ahead = self.inner.tier.inner.options.prefetch_chunks;
        if !sequential || ahead == 0 || end == 0 {
            return;
        }
        let chunks = r.size.div_ceil(r.chunk);
        let from = (end - 1) / r.chunk + 1;
        let to = (from + ahead).min(chunks);
        for i in from..to {
            r.prefetch(i);
        }
        let mut left = ahead - to.saturating_sub(from);
        if left == 0 {
            return;
        }
        // The chunks left go to the following segments, in order, each
        // counted by its own reader. Each non-empty segment takes at least
        // one chunk, so no more are looked at than chunks are left.
        let following: Vec<SegmentMeta> = following
            .iter()
            .filter(|s| s.object(ObjectKind::Log).is_some_and(|log| log.size > 0))
            .take(usize::try_from(left).unwrap_or(usize::MAX))
            .cloned()
            .collect();
        if following.is_empty() {
            return;
        }
        let part = self.clone();
        tokio::spawn(async move {
            for next in &following {
                if left == 0 {
                    break;
                }
                match SegmentReader::open(&part, next, files).await {
                    Ok(r) => {
                        let n = left.min(r.size.div_ceil(r.chunk));
                        (0..n).for_each(|i| r.prefetch(i));
                        left -= n;
                    }
                    Err(e) => {
                        tracing::debug!(
                            error = %e,
                            partition = %part.inner.name,
                            base_offset = next.base_offset,
                            "prefetch of the next segment failed"
                        );
                        break;
                    }
                }
            }
        });
    }

    /// The first batch whose max timestamp is `>= ts` at or after the log
    /// start offset (batch precision: Kafka refines to the record within
    /// the batch; the broker may do so with the returned batch). `None` when
    /// no tiered batch reaches `ts`.
    pub async fn offset_for_timestamp(
        &self,
        ts: i64,
    ) -> Result<Option<TimestampOffset>, TierError> {
        let manifest = self.manifest().await?;
        let start = manifest.log_start_offset;
        for seg in manifest.segments.iter().filter(|s| s.last_offset >= start) {
            if seg.max_timestamp < ts {
                continue;
            }
            let mut from = seg.base_offset.max(start);
            if let Some(ti) = seg.object(ObjectKind::Timeindex) {
                let bytes = self.whole_object(&ti.name, ti.size, ti.crc32c).await?;
                from = from.max(index::offset_for_timestamp(&bytes, seg.base_offset, ts));
            }
            let mut r = SegmentReader::open(self, seg, false).await?;
            let found = match self.find_batch(&mut r, seg, from, Some(ts)).await {
                Err(e) if e.is_integrity() => {
                    r.invalidate_touched().await;
                    let mut r = SegmentReader::open(self, seg, false).await?;
                    self.find_batch(&mut r, seg, from, Some(ts)).await?
                }
                other => other?,
            };
            if let Some((_, h)) = found {
                return Ok(Some(TimestampOffset {
                    offset: h.base_offset.max(start),
                    timestamp: h.max_timestamp,
                }));
            }
        }
        Ok(None)
    }
}
