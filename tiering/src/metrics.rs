//! Counters and gauges of the tier as plain atomics; the broker exports them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Tier metrics. Counters only grow; fields documented as gauges go both ways.
#[derive(Debug, Default)]
pub struct TierMetrics {
    /// Segments whose manifest entry was written.
    pub segments_uploaded: AtomicU64,
    /// Bytes of objects written (all kinds).
    pub bytes_uploaded: AtomicU64,
    /// Upload attempts that failed (each retry counts).
    pub upload_errors: AtomicU64,
    /// Upload attempts retried after a retriable error.
    pub upload_retries: AtomicU64,
    /// Gauge: uploads queued or running.
    pub uploads_pending: AtomicU64,
    /// Gauge: bytes of uploads queued or running.
    pub upload_bytes_pending: AtomicU64,
    /// Bytes fetched from the object store by reads (chunks and indexes).
    pub bytes_downloaded: AtomicU64,
    /// Ranged or whole-object GETs issued by reads.
    pub get_requests: AtomicU64,
    /// Read-cache lookups served from memory.
    pub cache_hits: AtomicU64,
    /// Read-cache lookups that had to fill (from disk cache or the store).
    pub cache_misses: AtomicU64,
    /// Read-cache fills served from the disk cache.
    pub disk_cache_hits: AtomicU64,
    /// Chunks fetched ahead of a sequential reader.
    pub prefetches: AtomicU64,
    /// Checksum failures seen (whole-object CRC or batch CRC).
    pub crc_mismatches: AtomicU64,
    /// Manifest writes that lost a race and were retried.
    pub manifest_conflicts: AtomicU64,
    /// Manifest writes refused because a newer leader owns the manifest.
    pub fenced_writes: AtomicU64,
    /// Manifest writes refused because another cluster owns the manifest.
    pub not_owner_writes: AtomicU64,
    /// Segment objects deleted by retention or DeleteRecords.
    pub objects_deleted: AtomicU64,
    /// Orphan objects removed.
    pub orphans_deleted: AtomicU64,
    /// Object-store errors of any operation.
    pub store_errors: AtomicU64,
    /// Remote reads that returned an error to the caller.
    pub read_errors: AtomicU64,
    /// Chunks evicted from the memory cache to stay within its bound.
    pub cache_evictions: AtomicU64,
    /// Gauge: partitions whose manifest is missing although they have
    /// tiered data.
    pub manifests_missing: AtomicU64,
    /// Gauge: partitions whose manifest is damaged or of an unknown version.
    pub manifests_unreadable: AtomicU64,
    /// Local segments refused for upload because a batch failed its checks.
    pub segments_refused: AtomicU64,
    /// Segments a scrub read back and checked.
    pub scrub_segments: AtomicU64,
    /// Bytes a scrub read back.
    pub scrub_bytes: AtomicU64,
    /// Damaged or missing segment objects a scrub found (each pass counts).
    pub scrub_problems: AtomicU64,
    /// Segments re-uploaded from a local copy after a scrub found them damaged.
    pub scrub_reuploads: AtomicU64,
    /// Latency of GETs (ranged and whole) issued by reads.
    pub get_latency: LatencyHistogram,
    /// Latency of PUTs of segment objects (whole files, multipart included).
    pub put_latency: LatencyHistogram,
}

/// Upper bounds, in seconds, of the latency buckets (an implicit +Inf last).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A fixed-bucket latency histogram of atomics, read by exporters.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Per-bucket (non-cumulative) counts; the last one is +Inf.
    pub buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    pub sum_micros: AtomicU64,
    pub count: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

impl TierMetrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        // Gauges never go below zero even if a caller double-counts.
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(n))
        });
    }

    /// A snapshot of every value by name, for exporters and tests.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("segments_uploaded", g(&self.segments_uploaded)),
            ("bytes_uploaded", g(&self.bytes_uploaded)),
            ("upload_errors", g(&self.upload_errors)),
            ("upload_retries", g(&self.upload_retries)),
            ("uploads_pending", g(&self.uploads_pending)),
            ("upload_bytes_pending", g(&self.upload_bytes_pending)),
            ("bytes_downloaded", g(&self.bytes_downloaded)),
            ("get_requests", g(&self.get_requests)),
            ("cache_hits", g(&self.cache_hits)),
            ("cache_misses", g(&self.cache_misses)),
            ("disk_cache_hits", g(&self.disk_cache_hits)),
            ("prefetches", g(&self.prefetches)),
            ("crc_mismatches", g(&self.crc_mismatches)),
            ("manifest_conflicts", g(&self.manifest_conflicts)),
            ("fenced_writes", g(&self.fenced_writes)),
            ("not_owner_writes", g(&self.not_owner_writes)),
            ("objects_deleted", g(&self.objects_deleted)),
            ("orphans_deleted", g(&self.orphans_deleted)),
            ("store_errors", g(&self.store_errors)),
            ("read_errors", g(&self.read_errors)),
            ("cache_evictions", g(&self.cache_evictions)),
            ("manifests_missing", g(&self.manifests_missing)),
            ("manifests_unreadable", g(&self.manifests_unreadable)),
            ("segments_refused", g(&self.segments_refused)),
            ("scrub_segments", g(&self.scrub_segments)),
            ("scrub_bytes", g(&self.scrub_bytes)),
            ("scrub_problems", g(&self.scrub_problems)),
            ("scrub_reuploads", g(&self.scrub_reuploads)),
        ]
    }
}
