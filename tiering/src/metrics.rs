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
    /// Segment objects deleted by retention or DeleteRecords.
    pub objects_deleted: AtomicU64,
    /// Orphan objects removed.
    pub orphans_deleted: AtomicU64,
    /// Object-store errors of any operation.
    pub store_errors: AtomicU64,
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
            ("objects_deleted", g(&self.objects_deleted)),
            ("orphans_deleted", g(&self.orphans_deleted)),
            ("store_errors", g(&self.store_errors)),
        ]
    }
}
