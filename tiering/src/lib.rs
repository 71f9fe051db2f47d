//! Strata's object-store tier.
//!
//! # Overview
//!
//! This crate owns everything that touches object storage; the broker never
//! sees `object_store` types. It sees a sealed segment as files plus a small
//! description ([`SegmentUpload`]) and never depends on the broker crate.
//!
//! - [`TierStore`]: the store named by a URL (`file:///abs`, `memory://`,
//!   `s3://bucket/prefix`) with the shared read cache and [`TierMetrics`].
//!   [`TierStore::from_url`] uses [`TierOptions::default`];
//!   [`TierStore::from_url_with`] takes options (S3 endpoint, region,
//!   credentials, allow-http; cache sizes; chunk size). `put`/`get`/`delete`/
//!   `probe` work on raw objects relative to the prefix.
//! - [`RemotePartition`] (`TierStore::partition(PartitionKey)`): one
//!   partition's remote log under
//!   `<prefix>/<cluster_id>/<topic>-<topic_id hex>/<partition>/`, holding
//!   `manifest.json` and `<base:020>-<upload id>.{log,index,timeindex,
//!   snapshot,epochs,txnindex,crcs}` objects (format: `docs/tier-format.md`).
//!   - uploads: [`RemotePartition::upload_segment`] (direct) or through the
//!     [`Uploader`] pipeline (bounded concurrency and bandwidth, retries with
//!     backoff, cancellation; [`Uploader::try_enqueue`] never waits);
//!   - reads: [`RemotePartition::read`] returns whole record batches from the
//!     batch holding an offset (at least one, KIP-74), every byte checked;
//!     [`RemotePartition::read_pieces`] returns them as pieces, where chunks
//!     in the disk cache are file ranges to send with sendfile (checked when
//!     they were cached, not read again);
//!   - offsets: [`RemotePartition::log_start_offset`],
//!     [`RemotePartition::last_uploaded_offset`],
//!     [`RemotePartition::offset_for_timestamp`], [`RemotePartition::tier_bytes`];
//!   - deletion: [`RemotePartition::apply_retention`],
//!     [`RemotePartition::delete_before`] (DeleteRecords),
//!     [`RemotePartition::collect_orphans`], [`RemotePartition::delete_partition`].
//! - Restore: [`TierStore::list_remote_topics`] lists what a bucket holds for
//!   a cluster; a [`RemotePartition`] on an empty broker loads the manifest on
//!   first use and serves reads from it.
//! - [`faults::FaultyStore`] injects errors, delays, truncated and corrupted
//!   bodies (deterministic by seed) for tests; [`testkit`] writes real Kafka
//!   segments.
//!
//! How the broker is expected to call it: at start, `from_url_with` + `probe`;
//! per partition (leader or not) a `RemotePartition` from the cluster id, the
//! topic name and id and the partition; the leader calls
//! `Uploader::try_enqueue(partition, upload)` for each sealed segment whose last
//! offset is below the high watermark (again later if it answers `QueueFull`),
//! deletes local segments up to `last_uploaded_offset()` by its local retention,
//! calls `apply_retention`/`collect_orphans` on a timer and `delete_before` for
//! DeleteRecords; Fetch below the local log start calls `read_pieces`; ListOffsets
//! uses `log_start_offset` (earliest) and `offset_for_timestamp`.
//!
//! # Consistency
//!
//! The manifest is the only source of truth: an object is part of the log
//! once the manifest names it. Objects are written first under names never
//! used before, then the manifest is replaced by a conditional PUT
//! (`PutMode::Create` when absent, `PutMode::Update` with the e-tag/version
//! read otherwise; on the local file system an e-tag check under a process
//! lock, see [`ConditionalPut`]). A writer whose leader epoch is below the
//! manifest's is refused ([`TierError::Fenced`]), so a deposed leader can
//! never overwrite a newer leader's manifest. A lost race re-reads and
//! re-applies the change. Each object's CRC-32C is in the manifest; readers
//! check whole-object CRCs of indexes, per-chunk CRCs of logs and each
//! returned batch's CRC (except batches sent as disk-cache file ranges, whose
//! chunk CRC was checked before they were cached). A mismatch is an error
//! and a metric, never data.
//!
//! # Crash safety
//!
//! A crash between object writes and the manifest write leaves objects no
//! manifest names: orphans, invisible to readers and removed by
//! [`RemotePartition::collect_orphans`] after a grace period longer than any
//! upload. Deletion goes manifest first, objects second, so a crash leaves
//! orphans, never a manifest naming missing objects. A manifest write whose
//! outcome is unknown makes the handle forget its cached copy and re-read.
//!
//! # Cancellation
//!
//! Uploads take a `tokio_util` [`CancellationToken`](tokio_util::sync::CancellationToken);
//! every store call of an upload races it and a multipart upload is aborted
//! on failure. A cancelled upload leaves at most orphans. Reads are plain
//! futures: dropping one abandons it; a cache fill it started completes for
//! the other waiters or is dropped with the last of them.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

mod batch;
mod cache;
pub mod cost;
mod error;
pub mod faults;
mod index;
pub mod layout;
pub mod manifest;
pub mod metrics;
mod multipart;
mod partition;
mod pool;
mod store;
pub mod testkit;
mod throttle;
mod topic_meta;
mod upload_queue;
mod uploader;

pub use cache::{FileSlice, Piece};
pub use error::{error_chain, TierError};
pub use layout::PartitionKey;
pub use manifest::{Manifest, ObjectKind, ObjectRef, SegmentMeta};
pub use metrics::TierMetrics;
pub use partition::{
    DeleteOutcome, ManifestHealth, OrphanReport, RemotePartition, RemoteRead, RepairReport,
    RepairedSegment, RetentionPolicy, ScrubProblem, ScrubReport, SegmentUpload, TimestampOffset,
    UploadOutcome,
};
pub use store::{ConditionalPut, S3Options, S3Sse, TierOptions};
pub use throttle::{Backoff, RateLimiter, TokenBucket};
pub use topic_meta::{TopicMeta, TOPIC_META_NAME};
pub use upload_queue::{PushError, QueueLimits, Started, UploadQueue};
pub use uploader::{UploadTicket, Uploader, UploaderConfig};

use error::store_err;

/// The directory under the tier's prefix that the start-up probe writes in;
/// every other directory there is a cluster's.
const PROBE_DIR: &str = "_probe";
/// The directory under the prefix that holds the topics' Parquet tables
/// (`tables/<topic>/...`, written by the broker); not a cluster.
pub const TABLES_DIR: &str = "tables";

/// A topic found in the tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTopic {
    pub topic: String,
    pub topic_id: [u8; 16],
    /// Partition numbers with a directory in the tier, ascending.
    pub partitions: Vec<i32>,
}

pub(crate) struct StoreInner {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: ObjectPath,
    pub url: String,
    pub conditional: ConditionalPut,
    /// Serializes manifest compare-and-swaps under [`ConditionalPut::ProcessLock`].
    pub manifest_lock: tokio::sync::Mutex<()>,
    pub options: TierOptions,
    pub cache: cache::ReadCache,
    pub metrics: Arc<TierMetrics>,
    /// Requests and bytes per topic ([`cost`]), counted by the wrapper
    /// `store` is.
    pub requests: Arc<cost::StoreRequests>,
    /// `file://`: the directory object paths map into, where a put cut
    /// short leaves a staging file the store neither lists nor deletes.
    pub local_root: Option<PathBuf>,
    /// `s3://`: aborts multipart uploads a crash left incomplete.
    pub s3: Option<multipart::S3Sweeper>,
}

/// A handle on the object store that holds the tier. Clones share the
/// store, the read cache and the metrics.
#[derive(Clone)]
pub struct TierStore {
    pub(crate) inner: Arc<StoreInner>,
}

impl std::fmt::Debug for TierStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TierStore")
            .field("url", &self.inner.url)
            .finish()
    }
}

impl TierStore {
    /// Builds the store named by `url` with default options: `file:///abs/path`
    /// (created if missing), `memory://`, or `s3://bucket/prefix` (settings
    /// from the standard `AWS_*` environment variables).
    pub fn from_url(url: &str) -> Result<TierStore, TierError> {
        Self::from_url_with(url, TierOptions::default())
    }

    /// Builds the store named by `url` with `options`.
    pub fn from_url_with(url: &str, options: TierOptions) -> Result<TierStore, TierError> {
        let built = store::build(url, &options)?;
        let s3 = built
            .s3_bucket
            .map(|bucket| multipart::S3Sweeper::new(&bucket, &options.s3));
        Self::assemble(
            built.store,
            built.prefix,
            url,
            built.conditional,
            options,
            built.local_root,
            s3,
        )
    }

    /// Wraps an existing store (tests: a [`faults::FaultyStore`] around
    /// `InMemory` or `LocalFileSystem`). `conditional` must match what the
    /// store supports.
    pub fn from_object_store(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        conditional: ConditionalPut,
        options: TierOptions,
    ) -> Result<TierStore, TierError> {
        let url = format!("custom://{store}/{prefix}");
        Self::assemble(
            store,
            ObjectPath::from(prefix),
            &url,
            conditional,
            options,
            None,
            None,
        )
    }

    fn assemble(
        store: Arc<dyn ObjectStore>,
        prefix: ObjectPath,
        url: &str,
        conditional: ConditionalPut,
        options: TierOptions,
        local_root: Option<PathBuf>,
        s3: Option<multipart::S3Sweeper>,
    ) -> Result<TierStore, TierError> {
        options.validate()?;
        let metrics = Arc::new(TierMetrics::default());
        let requests = Arc::new(cost::StoreRequests::new(&prefix));
        let store: Arc<dyn ObjectStore> =
            Arc::new(cost::CountingStore::new(store, Arc::clone(&requests)));
        let cache = cache::ReadCache::new(
            options.memory_cache_bytes,
            options.disk_cache_dir.clone(),
            options.disk_cache_bytes,
            metrics.clone(),
        )?;
        Ok(TierStore {
            inner: Arc::new(StoreInner {
                store,
                prefix,
                url: url.to_string(),
                conditional,
                manifest_lock: tokio::sync::Mutex::new(()),
                options,
                cache,
                metrics,
                requests,
                local_root,
                s3,
            }),
        })
    }

    /// The URL this store was built from.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The tier's metrics (shared by every clone and partition handle).
    pub fn metrics(&self) -> Arc<TierMetrics> {
        self.inner.metrics.clone()
    }

    /// Object-store requests and bytes per topic.
    pub fn requests(&self) -> Arc<cost::StoreRequests> {
        self.inner.requests.clone()
    }

    /// The options the store was built with.
    pub fn options(&self) -> &TierOptions {
        &self.inner.options
    }

    /// Bytes in the in-memory read cache.
    pub async fn cache_memory_bytes(&self) -> u64 {
        self.inner.cache.memory_bytes().await
    }

    /// Bytes in the disk read cache.
    pub async fn cache_disk_bytes(&self) -> u64 {
        self.inner.cache.disk_bytes().await
    }

    /// A handle on one partition's remote log (no I/O), writing for the
    /// cluster in its path.
    pub fn partition(&self, key: PartitionKey) -> RemotePartition {
        let writer = key.cluster_id.clone();
        RemotePartition::new(self.clone(), key, writer)
    }

    /// A handle on one partition's remote log (no I/O) whose writes are
    /// `writer_cluster`'s: refused unless the manifest names it as owner
    /// (a topic another cluster wrote and this one restored).
    pub fn partition_as(&self, key: PartitionKey, writer_cluster: &str) -> RemotePartition {
        RemotePartition::new(self.clone(), key, writer_cluster.to_string())
    }

    pub(crate) fn path(&self, name: &str) -> ObjectPath {
        let name = ObjectPath::from(name);
        ObjectPath::from_iter(self.inner.prefix.parts().chain(name.parts()))
    }

    /// Writes one whole object.
    pub async fn put(&self, name: &str, data: Bytes) -> Result<(), TierError> {
        let path = self.path(name);
        self.inner
            .store
            .put(&path, PutPayload::from(data))
            .await
            .map_err(store_err("put", &path))?;
        Ok(())
    }

    /// Writes one whole object unless one of that name exists; false when
    /// one does (another writer got there first).
    pub async fn put_new(&self, name: &str, data: Bytes) -> Result<bool, TierError> {
        let path = self.path(name);
        let inner = &self.inner;
        let put = store::put_conditional(
            inner.store.as_ref(),
            inner.conditional,
            &inner.manifest_lock,
            &path,
            data,
            None,
        );
        match put.await {
            Ok(_) => Ok(true),
            Err(TierError::ManifestConflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The absolute location of object `name`, as engines that read the
    /// store name it: `file:///abs/path/name`, `s3://bucket/prefix/name`.
    pub fn uri(&self, name: &str) -> String {
        format!("{}/{name}", self.inner.url.trim_end_matches('/'))
    }

    /// Reads one whole object.
    pub async fn get(&self, name: &str) -> Result<Bytes, TierError> {
        let path = self.path(name);
        let result = self
            .inner
            .store
            .get(&path)
            .await
            .map_err(store_err("get", &path))?;
        result.bytes().await.map_err(store_err("get", &path))
    }

    /// Reads one whole object; None when there is none.
    pub async fn get_if_exists(&self, name: &str) -> Result<Option<Bytes>, TierError> {
        let path = self.path(name);
        match self.inner.store.get(&path).await {
            Ok(result) => Ok(Some(result.bytes().await.map_err(store_err("get", &path))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_err("get", &path)(e)),
        }
    }

    /// Reads bytes `range` of one object.
    pub async fn get_range(
        &self,
        name: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, TierError> {
        let path = self.path(name);
        self.inner
            .store
            .get_range(&path, range)
            .await
            .map_err(store_err("get", &path))
    }

    /// Every object under `prefix` (a directory name under the tier
    /// prefix), as (name under the tier prefix, size), sorted by name.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, TierError> {
        let dir = self.path(prefix);
        let skip = self.inner.prefix.parts().count();
        let mut listing = self.inner.store.list(Some(&dir));
        let mut out = Vec::new();
        while let Some(item) = listing.next().await {
            let meta = item.map_err(store_err("list", &dir))?;
            let name: Vec<String> = meta
                .location
                .parts()
                .skip(skip)
                .map(|p| p.as_ref().to_string())
                .collect();
            out.push((name.join("/"), meta.size));
        }
        out.sort();
        Ok(out)
    }

    /// Deletes one object (one that is gone already counts as deleted).
    pub async fn delete(&self, name: &str) -> Result<(), TierError> {
        let path = self.path(name);
        match self.inner.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_err("delete", &path)(e)),
        }
    }

    /// Start-up check: write, read back and delete a probe object, so a
    /// misconfigured tier fails at start rather than at the first upload.
    pub async fn probe(&self, unique: &str) -> Result<(), TierError> {
        let name = format!("{PROBE_DIR}/{unique}");
        let body = Bytes::from(format!("strata tier probe {unique}"));
        self.put(&name, body.clone()).await?;
        let back = self.get(&name).await?;
        if back != body {
            return Err(TierError::Mismatch { path: name });
        }
        self.delete(&name).await
    }

    /// Cluster ids with data under this tier's prefix: every directory but
    /// the probe's and the tables'. Cluster ids are base64url (22
    /// characters), so one may begin with `_` and none is `tables`.
    pub async fn list_clusters(&self) -> Result<Vec<String>, TierError> {
        let root = self.inner.prefix.clone();
        let listing = self
            .inner
            .store
            .list_with_delimiter(Some(&root))
            .await
            .map_err(store_err("list", &root))?;
        let mut ids: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(String::from))
            .filter(|n| n != PROBE_DIR && n != TABLES_DIR)
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Every copy of topic `name` in the tier, across clusters, as
    /// (cluster id, topic).
    pub async fn find_remote_topic(
        &self,
        name: &str,
    ) -> Result<Vec<(String, RemoteTopic)>, TierError> {
        let mut found = Vec::new();
        for cluster in self.list_clusters().await? {
            for t in self.list_remote_topics(&cluster).await? {
                if t.topic == name {
                    found.push((cluster.clone(), t));
                }
            }
        }
        Ok(found)
    }

    /// Topics (and their partitions) the tier holds for `cluster_id`, for
    /// restoring a cluster from the bucket alone. Directories whose names do
    /// not parse as `<topic>-<32 hex digits>` are skipped.
    pub async fn list_remote_topics(
        &self,
        cluster_id: &str,
    ) -> Result<Vec<RemoteTopic>, TierError> {
        let store = &self.inner.store;
        let root = ObjectPath::from_iter(
            self.inner
                .prefix
                .parts()
                .chain([object_store::path::PathPart::from(cluster_id)]),
        );
        let listing = store
            .list_with_delimiter(Some(&root))
            .await
            .map_err(store_err("list", &root))?;
        let mut topics = Vec::new();
        for dir in listing.common_prefixes {
            let Some(name) = dir.filename() else { continue };
            let Some((topic, topic_id)) = layout::parse_topic_dir(name) else {
                continue;
            };
            let parts = store
                .list_with_delimiter(Some(&dir))
                .await
                .map_err(store_err("list", &dir))?;
            let mut partitions: Vec<i32> = parts
                .common_prefixes
                .iter()
                .filter_map(|p| p.filename()?.parse().ok())
                .collect();
            partitions.sort_unstable();
            // A long name is cut in the directory's name: its manifests
            // hold it whole.
            let topic = if layout::is_cut_topic(&topic) {
                match self.topic_name_from_manifests(&dir, &partitions).await {
                    Some(full) => full,
                    None => continue,
                }
            } else {
                topic
            };
            topics.push(RemoteTopic {
                topic,
                topic_id,
                partitions,
            });
        }
        topics.sort_by(|a, b| a.topic.cmp(&b.topic));
        Ok(topics)
    }

    /// The topic name a manifest under `topic_dir` gives (the first of
    /// `partitions` with a readable one).
    async fn topic_name_from_manifests(
        &self,
        topic_dir: &ObjectPath,
        partitions: &[i32],
    ) -> Option<String> {
        for p in partitions {
            let path = layout::child(
                &layout::child(topic_dir, &p.to_string()),
                layout::MANIFEST_NAME,
            );
            let Ok(got) = self.inner.store.get(&path).await else {
                continue;
            };
            let Ok(bytes) = got.bytes().await else {
                continue;
            };
            if let Ok(m) = Manifest::decode(path.as_ref(), &bytes) {
                return Some(m.topic);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_round_trip() {
        let s = TierStore::from_url("memory://").expect("memory store");
        s.put("a/b", Bytes::from_static(b"xyz")).await.expect("put");
        assert_eq!(s.get("a/b").await.expect("get"), Bytes::from_static(b"xyz"));
        s.probe("t1").await.expect("probe");
    }

    #[tokio::test]
    async fn local_files_are_put_whole_or_in_parts_and_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = TierOptions {
            multipart_threshold: 1 << 20,
            multipart_part_size: 5 << 20,
            ..TierOptions::default()
        };
        let s = TierStore::from_url_with("memory://", options).expect("memory store");
        let cancel = tokio_util::sync::CancellationToken::new();
        let limiter = RateLimiter::unlimited();
        // Below the multipart threshold, and in three parts.
        for (name, len) in [("t/small", 1000usize), ("t/large", (12 << 20) + 17)] {
            let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let path = dir.path().join("f");
            std::fs::write(&path, &body).expect("write");
            let size = s
                .put_local_file(name, &path, &cancel, &limiter)
                .await
                .expect("put");
            assert_eq!(size, len as u64);
            assert_eq!(s.get(name).await.expect("get"), Bytes::from(body.clone()));
            assert_eq!(
                s.get_range(name, 10..20).await.expect("range"),
                Bytes::from(body[10..20].to_vec())
            );
        }
        assert_eq!(
            s.list("t").await.expect("list"),
            vec![
                ("t/large".to_string(), (12 << 20) + 17),
                ("t/small".to_string(), 1000)
            ]
        );
        assert_eq!(s.get_if_exists("t/none").await.expect("get"), None);
        s.delete("t/small").await.expect("delete");
        s.delete("t/small")
            .await
            .expect("a second delete is no error");
        assert_eq!(s.list("t").await.expect("list").len(), 1);
    }

    #[tokio::test]
    async fn file_store_is_created_and_probed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("tier");
        let url = format!("file://{}", root.display());
        let s = TierStore::from_url(&url).expect("file store");
        s.probe("t2").await.expect("probe");
        assert!(root.is_dir());
    }

    #[test]
    fn bad_urls_are_refused() {
        for u in [
            "not a url",
            "ftp://x/y",
            "file://relative",
            "s3:///nobucket",
        ] {
            assert!(TierStore::from_url(u).is_err(), "{u}");
        }
    }

    #[test]
    fn bad_options_are_refused() {
        let o = TierOptions {
            chunk_size: 10,
            ..TierOptions::default()
        };
        let e = TierStore::from_url_with("memory://", o).expect_err("tiny chunk");
        assert!(e.to_string().contains("key=chunk_size"), "{e}");
    }
}

#[cfg(test)]
mod listing_tests {
    use super::*;

    #[tokio::test]
    async fn clusters_and_topics_are_listed_on_file_and_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        for url in [
            "memory://".to_string(),
            format!("file://{}", dir.path().display()),
        ] {
            let s = TierStore::from_url(&url).expect("store");
            s.probe("x").await.expect("probe");
            let id = "0123456789abcdef0123456789abcdef";
            s.put(
                &format!("c1/orders-{id}/0/manifest.json"),
                Bytes::from_static(b"{}"),
            )
            .await
            .expect("put");
            s.put(
                &format!("c2/orders-{id}/1/manifest.json"),
                Bytes::from_static(b"{}"),
            )
            .await
            .expect("put");
            // One cluster id in 64 begins with '_' (base64url).
            s.put(
                &format!("_IF3az0GQICmbYIvHMdm5A/orders-{id}/2/manifest.json"),
                Bytes::from_static(b"{}"),
            )
            .await
            .expect("put");
            assert_eq!(
                s.list_clusters().await.expect("clusters"),
                vec!["_IF3az0GQICmbYIvHMdm5A", "c1", "c2"],
                "{url}"
            );
            let found = s.find_remote_topic("orders").await.expect("find");
            assert_eq!(found.len(), 3, "{url}: {found:?}");
            assert_eq!(found[0].1.partitions, vec![2]);
            assert_eq!(found[2].1.partitions, vec![1]);
        }
    }

    /// The longest legal topic name tiers on `file://` (its directory name
    /// would pass 255 bytes whole) and is found by its full name.
    #[tokio::test]
    async fn a_249_character_topic_tiers_on_file_and_is_listed_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let segs = tempfile::tempdir().expect("segments");
        let s = TierStore::from_url(&format!("file://{}", dir.path().display())).expect("store");
        let long = format!("{}.x", "t".repeat(247));
        assert_eq!(long.len(), 249);
        let seg = testkit::TestSegment::write(segs.path(), 0, 3, 2, 10, 1_000).expect("segment");
        let part = s.partition(PartitionKey::new("c1", &long, [7; 16], 0));
        assert!(matches!(
            part.upload_segment(&seg.upload(1)).await.expect("upload"),
            UploadOutcome::Uploaded(_)
        ));
        let found = s.find_remote_topic(&long).await.expect("find");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].1.topic, long);
        assert_eq!(found[0].1.topic_id, [7; 16]);
    }
}
