//! One partition's remote log: its manifest, uploads, reads and deletions.
//!
//! A [`RemotePartition`] is a cheap handle (clone it freely) on
//! `<prefix>/<cluster_id>/<topic>-<topic_id>/<partition>/`. It caches the
//! last manifest it read or wrote; reads use that copy, writes re-check it
//! with a conditional PUT. [`RemotePartition::refresh`] re-reads it (a
//! follower or a read-only cluster calls it when it wants news).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, UpdateVersion};
use tokio_util::sync::CancellationToken;

use crate::error::{io_err, store_err};
use crate::layout::{self, PartitionKey, MANIFEST_NAME};
use crate::manifest::{Manifest, SegmentMeta};
use crate::metrics::TierMetrics;
use crate::store::{cancellable, put_conditional};
use crate::{TierError, TierStore};

mod read;
mod repair;
mod scrub;
mod upload;

pub use read::RemoteRead;
pub use repair::{RepairReport, RepairedSegment};
pub use scrub::{ScrubProblem, ScrubReport};
pub use upload::{SegmentUpload, UploadOutcome};

/// How many times a manifest update re-reads and re-applies after losing a race.
const MAX_CAS_ATTEMPTS: usize = 8;

/// A manifest as read from (or written to) the store, with its version.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub manifest: Arc<Manifest>,
    /// `None` when no manifest object exists yet.
    pub version: Option<UpdateVersion>,
}

/// Remote retention limits. Negative values mean unlimited, as in Kafka.
#[derive(Debug, Clone, Copy)]
pub struct RetentionPolicy {
    /// `retention.ms`: segments whose max timestamp is older expire.
    pub retention_ms: i64,
    /// `retention.bytes`: the oldest segments expire while the partition is
    /// larger than this by at least their size.
    pub retention_bytes: i64,
    /// Bytes of the partition held only locally (not yet tiered), counted
    /// towards `retention_bytes` so the limit covers the whole log.
    pub local_only_bytes: u64,
}

/// What a deletion (retention or DeleteRecords) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOutcome {
    /// The tier's start offset after the deletion.
    pub log_start_offset: Option<i64>,
    pub segments_removed: usize,
    pub bytes_removed: u64,
    /// Objects whose deletion failed; they are orphans now.
    pub objects_left: usize,
}

/// What orphan collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrphanReport {
    pub deleted: usize,
    /// Unnamed objects younger than the grace period (maybe uploads in flight).
    pub kept_young: usize,
}

/// Whether `name` is a local file store's staging file: the object's name,
/// `#`, and digits (a put writes there, then renames). The store hides
/// these from listings and refuses to delete them.
fn is_staging_name(name: &str) -> bool {
    name.split_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes the staging files in `dir` older than `grace_ms` at `now_ms`:
/// what puts cut short by a crash left behind. A missing `dir` holds none.
async fn remove_old_staging_files(
    dir: &std::path::Path,
    grace_ms: i64,
    now_ms: i64,
) -> Result<OrphanReport, TierError> {
    let mut report = OrphanReport::default();
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    while let Some(entry) = entries.next_entry().await.map_err(io_err("list", dir))? {
        if !entry.file_name().to_str().is_some_and(is_staging_name) {
            continue;
        }
        let path = entry.path();
        // A put in flight renames its staging file into place meanwhile.
        let modified = match entry.metadata().await.and_then(|m| m.modified()) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("stat", &path)(e)),
        };
        if now_ms.saturating_sub(unix_ms(modified)) < grace_ms {
            report.kept_young += 1;
            continue;
        }
        match tokio::fs::remove_file(&path).await {
            Ok(()) => report.deleted += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("delete", &path)(e)),
        }
    }
    Ok(report)
}

/// Writes the local manifest copy: a temporary file, fsynced, renamed over
/// the old one, so a crash or a power cut leaves the old copy or the new
/// one, never an empty file.
fn write_local_copy(path: &std::path::Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(body)?;
    f.sync_data()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Milliseconds since the Unix epoch at `t` (0 before it).
fn unix_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The first batch at or after a timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    /// Base offset of the first batch whose max timestamp is `>= ts`
    /// (raised to the log start offset).
    pub offset: i64,
    /// That batch's max timestamp.
    pub timestamp: i64,
}

pub(crate) struct PartitionInner {
    pub tier: TierStore,
    pub key: PartitionKey,
    /// The cluster this handle writes for: the manifest's owner or refused.
    pub writer: String,
    /// Whether a refusal for want of ownership was logged (once per handle).
    pub not_owner_logged: std::sync::atomic::AtomicBool,
    pub name: String,
    pub dir: ObjectPath,
    pub manifest_path: ObjectPath,
    pub loaded: Mutex<Option<Arc<Loaded>>>,
    pub write_lock: tokio::sync::Mutex<()>,
    /// End of the last read: (segment id, byte position) for prefetch.
    pub last_read: Mutex<Option<(String, u64)>>,
    /// Where the last good manifest is mirrored on local disk, if anywhere.
    pub local_copy: OnceLock<PathBuf>,
    /// The last good manifest this handle knew (read, written, or loaded
    /// from the local copy); survives [`RemotePartition::forget_manifest`].
    pub known: Mutex<Option<Arc<Manifest>>>,
    /// Whether the manifest was last found usable.
    pub health: Mutex<ManifestHealth>,
    /// A local segment refused for upload as damaged: (base offset, why).
    pub refused: Mutex<Option<(i64, String)>>,
    /// The `topic.json` this handle last wrote (`topic_meta.rs`).
    pub topic_meta_written: tokio::sync::Mutex<Option<Vec<u8>>>,
}

/// The state of a partition's manifest as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ManifestHealth {
    /// Read (or absent with no tiered data) the last time it was loaded.
    #[default]
    Usable,
    /// Absent although the partition has tiered data.
    Missing,
    /// Present but damaged or of an unknown version.
    Unreadable,
}

/// A handle on one partition's remote log.
#[derive(Clone)]
pub struct RemotePartition {
    pub(crate) inner: Arc<PartitionInner>,
}

impl std::fmt::Debug for RemotePartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemotePartition")
            .field("dir", &self.inner.dir.to_string())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RemotePartition {
    pub(crate) fn new(tier: TierStore, key: PartitionKey, writer: String) -> RemotePartition {
        let dir = key.dir(&tier.inner.prefix);
        let manifest_path = layout::child(&dir, MANIFEST_NAME);
        RemotePartition {
            inner: Arc::new(PartitionInner {
                name: key.display_name(),
                tier,
                key,
                writer,
                not_owner_logged: std::sync::atomic::AtomicBool::new(false),
                dir,
                manifest_path,
                loaded: Mutex::new(None),
                write_lock: tokio::sync::Mutex::new(()),
                last_read: Mutex::new(None),
                local_copy: OnceLock::new(),
                known: Mutex::new(None),
                health: Mutex::new(ManifestHealth::Usable),
                refused: Mutex::new(None),
                topic_meta_written: tokio::sync::Mutex::new(None),
            }),
        }
    }

    pub fn key(&self) -> &PartitionKey {
        &self.inner.key
    }

    /// The partition's directory in the store (for messages and tests).
    pub fn dir(&self) -> String {
        self.inner.dir.to_string()
    }

    fn metrics(&self) -> &TierMetrics {
        &self.inner.tier.inner.metrics
    }

    /// The manifest this handle holds, without I/O (`None` before the first
    /// load, or after a write whose outcome is unknown).
    pub fn cached_manifest(&self) -> Option<Arc<Manifest>> {
        lock(&self.inner.loaded)
            .as_ref()
            .map(|l| l.manifest.clone())
    }

    /// The manifest, read from the store if this handle holds none.
    pub async fn manifest(&self) -> Result<Arc<Manifest>, TierError> {
        Ok(self.loaded().await?.manifest.clone())
    }

    /// Re-reads the manifest from the store.
    pub async fn refresh(&self) -> Result<Arc<Manifest>, TierError> {
        Ok(self.reload().await?.manifest.clone())
    }

    pub(crate) async fn loaded(&self) -> Result<Arc<Loaded>, TierError> {
        if let Some(l) = lock(&self.inner.loaded).clone() {
            return Ok(l);
        }
        self.reload().await
    }

    pub(crate) async fn reload(&self) -> Result<Arc<Loaded>, TierError> {
        let loaded = Arc::new(self.fetch_manifest().await?);
        self.remember(&loaded.manifest);
        *lock(&self.inner.loaded) = Some(loaded.clone());
        Ok(loaded)
    }

    /// Mirrors the manifest at `path` (a file in the partition's local
    /// directory) from now on, and loads the copy there as the last known
    /// manifest. The copy is what tells a manifest that vanished from one
    /// that never existed, and keeps the partition's tier offsets while the
    /// manifest cannot be read. A damaged copy is ignored (and replaced at
    /// the next good read).
    pub fn keep_local_copy(&self, path: PathBuf) {
        match std::fs::read(&path) {
            Ok(bytes) => match Manifest::decode(&path.display().to_string(), &bytes) {
                Ok(m) if self.names_this_partition(&m) => {
                    *lock(&self.inner.known) = Some(Arc::new(m));
                }
                Ok(_) => {
                    tracing::warn!(path = %path.display(), "local manifest copy names another partition; ignored");
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "local manifest copy is unreadable; ignored");
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "local manifest copy cannot be read; ignored");
            }
        }
        let _ = self.inner.local_copy.set(path);
    }

    /// The last good manifest this handle knew, without I/O: the one read
    /// or written last, or the local copy's (see
    /// [`RemotePartition::keep_local_copy`]).
    pub fn last_known_manifest(&self) -> Option<Arc<Manifest>> {
        lock(&self.inner.known).clone()
    }

    /// The local segment last refused for upload as damaged, if any: its
    /// base offset and why. Nothing after it uploads while it stands.
    pub fn refused_segment(&self) -> Option<(i64, String)> {
        lock(&self.inner.refused).clone()
    }

    /// Forgets a refused segment (the local log no longer holds it).
    pub fn clear_refused(&self) {
        *lock(&self.inner.refused) = None;
    }

    /// Whether the manifest was usable the last time it was loaded.
    pub fn manifest_health(&self) -> ManifestHealth {
        *lock(&self.inner.health)
    }

    fn names_this_partition(&self, m: &Manifest) -> bool {
        let k = &self.inner.key;
        m.cluster_id == k.cluster_id
            && m.topic == k.topic
            && m.topic_id == k.topic_id_hex()
            && m.partition == k.partition
    }

    /// Records `m` as the last known good manifest, and mirrors it to the
    /// local copy when it is news (another generation).
    fn remember(&self, m: &Arc<Manifest>) {
        {
            let mut known = lock(&self.inner.known);
            if known.as_ref().is_some_and(|k| **k == **m) {
                return;
            }
            *known = Some(m.clone());
        }
        if let Some(path) = self.inner.local_copy.get() {
            if let Err(e) = write_local_copy(path, &m.encode()) {
                tracing::warn!(path = %path.display(), error = %e, "local manifest copy not written");
            }
        }
    }

    /// Notes whether the manifest could be used; a change is logged once
    /// (ERROR when it becomes unusable, naming the object) and kept in the
    /// gauges of [`TierMetrics`].
    fn set_health(&self, result: Result<(), &TierError>) {
        let next = match result {
            Ok(()) => ManifestHealth::Usable,
            Err(TierError::ManifestMissing { .. }) => ManifestHealth::Missing,
            Err(e) if e.is_manifest_unusable() => ManifestHealth::Unreadable,
            // Unreachable store and the like say nothing about the manifest.
            Err(_) => return,
        };
        let prev = std::mem::replace(&mut *lock(&self.inner.health), next);
        if prev == next {
            return;
        }
        let m = self.metrics();
        let gauge = |h| match h {
            ManifestHealth::Missing => Some(&m.manifests_missing),
            ManifestHealth::Unreadable => Some(&m.manifests_unreadable),
            ManifestHealth::Usable => None,
        };
        if let Some(g) = gauge(prev) {
            TierMetrics::sub(g, 1);
        }
        if let Some(g) = gauge(next) {
            TierMetrics::add(g, 1);
        }
        match result {
            Err(e) => tracing::error!(
                partition = %self.inner.name,
                object = %self.inner.manifest_path,
                error = %e,
                "tier manifest unusable: no upload, trim or orphan collection for this partition, and tiered offsets answer an error, until it is readable again (strata tier repair rebuilds a missing or damaged one)"
            ),
            Ok(()) => tracing::info!(
                partition = %self.inner.name,
                object = %self.inner.manifest_path,
                "tier manifest readable again"
            ),
        }
    }

    /// Why a partition with no manifest object still has tiered data, if it
    /// does: the local copy names a manifest that existed, or (with no
    /// local copy to ask) segment objects lie under the partition. Objects
    /// with a local copy of a never-written manifest are an interrupted
    /// first upload's, orphans.
    async fn tiered_data_evidence(&self) -> Result<Option<String>, TierError> {
        if let Some(known) = self.last_known_manifest() {
            return Ok((known.generation > 0).then(|| {
                format!(
                    "the local copy names generation {} with {} segments from offset {}",
                    known.generation,
                    known.segments.len(),
                    known.log_start_offset
                )
            }));
        }
        let store = &self.inner.tier.inner.store;
        let mut listing = store.list(Some(&self.inner.dir));
        let mut logs = 0usize;
        let mut first: Option<String> = None;
        while let Some(item) = listing.next().await {
            let meta = item.map_err(store_err("list", &self.inner.dir))?;
            if let Some(name) = meta.location.filename().filter(|n| n.ends_with(".log")) {
                logs += 1;
                if first.as_deref().is_none_or(|f| name < f) {
                    first = Some(name.to_string());
                }
            }
        }
        Ok(first.map(|f| format!("{logs} segment objects are in the tier, the first {f}")))
    }

    fn forget_manifest(&self) {
        *lock(&self.inner.loaded) = None;
    }

    async fn fetch_manifest(&self) -> Result<Loaded, TierError> {
        let result = match self.fetch_manifest_once().await {
            Err(e) if e.is_integrity() => {
                TierMetrics::add(&self.metrics().crc_mismatches, 1);
                self.fetch_manifest_once().await
            }
            r => r,
        };
        self.set_health(result.as_ref().map(|_| ()));
        result
    }

    async fn fetch_manifest_once(&self) -> Result<Loaded, TierError> {
        let path = &self.inner.manifest_path;
        let store = &self.inner.tier.inner.store;
        let result = match store.get(path).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => {
                if let Some(evidence) = self.tiered_data_evidence().await? {
                    return Err(TierError::ManifestMissing {
                        path: path.to_string(),
                        evidence,
                    });
                }
                let k = &self.inner.key;
                return Ok(Loaded {
                    manifest: Arc::new(Manifest::empty(
                        &k.cluster_id,
                        &k.topic,
                        &k.topic_id_hex(),
                        k.partition,
                    )),
                    version: None,
                });
            }
            Err(e) => {
                TierMetrics::add(&self.metrics().store_errors, 1);
                return Err(store_err("get", path)(e));
            }
        };
        let version = UpdateVersion {
            e_tag: result.meta.e_tag.clone(),
            version: result.meta.version.clone(),
        };
        let expected_size = result.meta.size;
        let bytes = result.bytes().await.map_err(store_err("get", path))?;
        if bytes.len() as u64 != expected_size {
            return Err(TierError::ShortRead {
                path: path.to_string(),
                expected: expected_size,
                actual: bytes.len() as u64,
            });
        }
        let manifest = Manifest::decode(path.as_ref(), &bytes).map_err(|e| match e {
            // A damaged manifest body is a manifest problem, whatever check caught it.
            TierError::Corrupt {
                expected, actual, ..
            } => TierError::ManifestFormat {
                path: path.to_string(),
                message: format!(
                    "crc32c mismatch. expected={expected:#010x}, actual={actual:#010x}"
                ),
            },
            other => other,
        })?;
        if !self.names_this_partition(&manifest) {
            return Err(TierError::ManifestFormat {
                path: path.to_string(),
                message: "manifest names another partition".into(),
            });
        }
        Ok(Loaded {
            manifest: Arc::new(manifest),
            version: Some(version),
        })
    }

    /// Refuses to write for a cluster that does not own the manifest
    /// (counted; logged at ERROR once per handle, INFO when it owns it
    /// again).
    fn note_owner(&self, m: &Manifest) -> Result<(), TierError> {
        use std::sync::atomic::Ordering;
        let result = m.check_owner(&self.inner.writer, &self.inner.name);
        let was = self
            .inner
            .not_owner_logged
            .swap(result.is_err(), Ordering::Relaxed);
        match &result {
            Err(e) => {
                TierMetrics::add(&self.metrics().not_owner_writes, 1);
                if !was {
                    tracing::error!(
                        partition = %self.inner.name,
                        object = %self.inner.manifest_path,
                        error = %e,
                        "tier manifest taken over by another cluster: no upload, trim or orphan collection for this partition; local data is still served"
                    );
                }
            }
            Ok(()) if was => tracing::info!(
                partition = %self.inner.name,
                "this cluster owns the tier manifest again"
            ),
            Ok(()) => {}
        }
        result
    }

    /// Whether this handle's cluster writes `m` (a manifest of this
    /// partition): it owns it, or nobody wrote it yet.
    pub fn writes(&self, m: &Manifest) -> bool {
        m.generation == 0 || m.owner() == self.inner.writer
    }

    /// Whether this handle's cluster may write the partition's manifest,
    /// as of the manifest last loaded (loading it if none is).
    pub async fn check_owner(&self) -> Result<(), TierError> {
        let loaded = self.loaded().await?;
        match loaded.version {
            // Nobody wrote it yet: the first writer will own it.
            None => Ok(()),
            Some(_) => self.note_owner(&loaded.manifest),
        }
    }

    /// Makes this handle's cluster the manifest's owner, so that it, and no
    /// longer the cluster that wrote the partition before, writes it (a
    /// restore that continues another cluster's topic). With `quiet`, it
    /// is refused ([`TierError::OwnerActive`]) while the manifest was
    /// written less than `quiet` before `now_ms` (wall clock): its owner
    /// may still be running. Without, the caller vouches that it stopped.
    /// From then on the old owner's writes are refused
    /// ([`TierError::NotOwner`]); nothing it wrote before is lost. Returns
    /// whether ownership changed.
    pub async fn take_over(&self, quiet: Option<Duration>, now_ms: i64) -> Result<bool, TierError> {
        let _writer = self.inner.write_lock.lock().await;
        let tier = &self.inner.tier.inner;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let current = self.reload().await?;
            if current.manifest.owner() == self.inner.writer {
                return Ok(false);
            }
            if let (Some(quiet), Some(_)) = (quiet, &current.version) {
                let path = &self.inner.manifest_path;
                let meta = tier
                    .store
                    .head(path)
                    .await
                    .map_err(store_err("head", path))?;
                let ago = now_ms.saturating_sub(meta.last_modified.timestamp_millis());
                let quiet_ms = i64::try_from(quiet.as_millis()).unwrap_or(i64::MAX);
                if ago < quiet_ms {
                    return Err(TierError::OwnerActive {
                        partition: self.inner.name.clone(),
                        owner: current.manifest.owner().to_string(),
                        written_ms_ago: ago,
                        quiet_ms,
                    });
                }
            }
            let mut next = (*current.manifest).clone();
            next.owner_cluster_id = Some(self.inner.writer.clone());
            next.generation += 1;
            let put = put_conditional(
                tier.store.as_ref(),
                tier.conditional,
                &tier.manifest_lock,
                &self.inner.manifest_path,
                bytes::Bytes::from(next.encode()),
                current.version.clone(),
            );
            match put.await {
                Ok(version) => {
                    let manifest = Arc::new(next);
                    self.remember(&manifest);
                    *lock(&self.inner.loaded) = Some(Arc::new(Loaded {
                        manifest,
                        version: Some(version),
                    }));
                    tracing::info!(
                        partition = %self.inner.name,
                        from = %current.manifest.owner(),
                        to = %self.inner.writer,
                        "took the tier manifest over"
                    );
                    return Ok(true);
                }
                Err(TierError::ManifestConflict { .. }) => {
                    TierMetrics::add(&self.metrics().manifest_conflicts, 1);
                }
                Err(e) => {
                    self.forget_manifest();
                    return Err(e);
                }
            }
        }
        Err(TierError::ManifestConflict {
            path: self.inner.manifest_path.to_string(),
        })
    }

    /// Applies `f` to the current manifest and writes the result with a
    /// conditional PUT, re-reading and re-applying after a lost race. `f`
    /// returns `None` for "nothing to change". Writers at an epoch below the
    /// manifest's are refused with [`TierError::Fenced`].
    pub(crate) async fn update_manifest<T>(
        &self,
        writer_epoch: i32,
        cancel: Option<&CancellationToken>,
        f: impl Fn(&Manifest) -> Result<Option<(Manifest, T)>, TierError>,
    ) -> Result<Option<(Arc<Manifest>, T)>, TierError> {
        let _writer = self.inner.write_lock.lock().await;
        let mut current = cancellable(cancel, self.loaded()).await?;
        let tier = &self.inner.tier.inner;
        for _ in 0..MAX_CAS_ATTEMPTS {
            // No manifest yet: the first writer creates it (create-only) and
            // owns it.
            if current.version.is_some() {
                self.note_owner(&current.manifest)?;
            }
            if let Err(e) = current.manifest.check_fence(writer_epoch, &self.inner.name) {
                TierMetrics::add(&self.metrics().fenced_writes, 1);
                return Err(e);
            }
            let Some((mut next, extra)) = f(&current.manifest)? else {
                return Ok(None);
            };
            next.leader_epoch = current.manifest.leader_epoch.max(writer_epoch);
            next.generation = current.manifest.generation + 1;
            if current.version.is_none() && self.inner.writer != self.inner.key.cluster_id {
                next.owner_cluster_id = Some(self.inner.writer.clone());
            }
            let body = bytes::Bytes::from(next.encode());
            let put = put_conditional(
                tier.store.as_ref(),
                tier.conditional,
                &tier.manifest_lock,
                &self.inner.manifest_path,
                body,
                current.version.clone(),
            );
            match cancellable(cancel, put).await {
                Ok(version) => {
                    let manifest = Arc::new(next);
                    self.remember(&manifest);
                    let loaded = Arc::new(Loaded {
                        manifest: manifest.clone(),
                        version: Some(version),
                    });
                    *lock(&self.inner.loaded) = Some(loaded);
                    return Ok(Some((manifest, extra)));
                }
                Err(TierError::ManifestConflict { .. }) => {
                    TierMetrics::add(&self.metrics().manifest_conflicts, 1);
                    current = cancellable(cancel, self.reload()).await?;
                }
                Err(e) => {
                    // The write may or may not have landed: read it again next time.
                    self.forget_manifest();
                    TierMetrics::add(&self.metrics().store_errors, 1);
                    return Err(e);
                }
            }
        }
        Err(TierError::ManifestConflict {
            path: self.inner.manifest_path.to_string(),
        })
    }

    /// The tier's first readable offset, `None` while nothing is tiered.
    pub async fn log_start_offset(&self) -> Result<Option<i64>, TierError> {
        let m = self.manifest().await?;
        Ok((!m.segments.is_empty()).then_some(m.log_start_offset))
    }

    /// The last offset in the tier, `None` while nothing is tiered.
    pub async fn last_uploaded_offset(&self) -> Result<Option<i64>, TierError> {
        Ok(self.manifest().await?.last_offset())
    }

    /// Bytes of the tiered `.log` objects.
    pub async fn tier_bytes(&self) -> Result<u64, TierError> {
        Ok(self.manifest().await?.total_bytes())
    }

    /// DeleteRecords: raises the tier's start offset to `offset` and removes
    /// the segments wholly below it. Manifest first, objects second; objects
    /// that fail to delete become orphans.
    pub async fn delete_before(
        &self,
        offset: i64,
        leader_epoch: i32,
    ) -> Result<DeleteOutcome, TierError> {
        let updated = self
            .update_manifest(leader_epoch, None, |m| {
                if offset <= m.log_start_offset {
                    return Ok(None);
                }
                Ok(Some(m.without_before(offset)))
            })
            .await?;
        match updated {
            None => {
                let m = self.manifest().await?;
                Ok(DeleteOutcome {
                    log_start_offset: (!m.segments.is_empty()).then_some(m.log_start_offset),
                    ..DeleteOutcome::default()
                })
            }
            Some((m, removed)) => Ok(self.finish_delete(&m, removed).await),
        }
    }

    /// Remote retention: removes the segments that `policy` expires at
    /// `now_ms` (manifest first, then objects) and advances the start offset.
    pub async fn apply_retention(
        &self,
        policy: RetentionPolicy,
        now_ms: i64,
        leader_epoch: i32,
    ) -> Result<DeleteOutcome, TierError> {
        let updated = self
            .update_manifest(leader_epoch, None, |m| {
                let Some(offset) = m.retention_offset(
                    policy.retention_ms,
                    policy.retention_bytes,
                    policy.local_only_bytes,
                    now_ms,
                ) else {
                    return Ok(None);
                };
                Ok(Some(m.without_before(offset)))
            })
            .await?;
        match updated {
            None => {
                let m = self.manifest().await?;
                Ok(DeleteOutcome {
                    log_start_offset: (!m.segments.is_empty()).then_some(m.log_start_offset),
                    ..DeleteOutcome::default()
                })
            }
            Some((m, removed)) => Ok(self.finish_delete(&m, removed).await),
        }
    }

    async fn finish_delete(&self, m: &Manifest, removed: Vec<SegmentMeta>) -> DeleteOutcome {
        let mut out = DeleteOutcome {
            log_start_offset: (!m.segments.is_empty()).then_some(m.log_start_offset),
            segments_removed: removed.len(),
            bytes_removed: removed.iter().map(|s| s.size).sum(),
            objects_left: 0,
        };
        for seg in &removed {
            for obj in seg.objects.values() {
                let path = layout::child(&self.inner.dir, &obj.name);
                match self.inner.tier.inner.store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                        TierMetrics::add(&self.metrics().objects_deleted, 1);
                        self.inner
                            .tier
                            .inner
                            .cache
                            .invalidate(&crate::cache::ReadCache::whole_key(&path))
                            .await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, path = %path, "tiered object not deleted; left as orphan");
                        TierMetrics::add(&self.metrics().store_errors, 1);
                        out.objects_left += 1;
                    }
                }
            }
        }
        out
    }

    /// Removes objects under the partition that the manifest does not name
    /// and that are older than `grace` at `now_ms` (wall clock). The grace
    /// period must exceed the longest upload, whose objects exist before the
    /// manifest names them. On `file://` it also removes, by the same rule,
    /// the staging files of puts a crash cut short, which the store hides;
    /// on `s3://`, it aborts the multipart uploads a crash left incomplete.
    pub async fn collect_orphans(
        &self,
        grace: Duration,
        now_ms: i64,
    ) -> Result<OrphanReport, TierError> {
        // The freshest manifest, so objects named by a write this handle has
        // not seen are kept. Only the owner collects: another cluster's
        // uploads in flight are not orphans.
        let manifest = self.refresh().await?;
        self.note_owner(&manifest)?;
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        // Objects tier compaction retired stay for the grace period from
        // their retirement, however old they are.
        let named: HashSet<&str> = manifest
            .segments
            .iter()
            .flat_map(|s| s.objects.values().map(|o| o.name.as_str()))
            .chain(manifest.retired_kept(grace_ms, now_ms))
            .collect();
        let store = &self.inner.tier.inner.store;
        let mut listing = store.list(Some(&self.inner.dir));
        let mut report = OrphanReport::default();
        while let Some(item) = listing.next().await {
            let meta = item.map_err(store_err("list", &self.inner.dir))?;
            let Some(name) = meta.location.filename() else {
                continue;
            };
            if name == MANIFEST_NAME || named.contains(name) {
                continue;
            }
            if now_ms.saturating_sub(meta.last_modified.timestamp_millis()) < grace_ms {
                report.kept_young += 1;
                continue;
            }
            match store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    TierMetrics::add(&self.metrics().orphans_deleted, 1);
                    report.deleted += 1;
                }
                Err(e) => return Err(store_err("delete", &meta.location)(e)),
            }
        }
        if let Some(s3) = &self.inner.tier.inner.s3 {
            let prefix = format!("{}/", self.inner.dir);
            let (aborted, young) = s3
                .abort_stale(&prefix, now_ms.saturating_sub(grace_ms))
                .await?;
            TierMetrics::add(&self.metrics().orphans_deleted, aborted as u64);
            report.deleted += aborted;
            report.kept_young += young;
        }
        if let Some(root) = &self.inner.tier.inner.local_root {
            let dir = root.join(self.inner.dir.as_ref());
            let staged = remove_old_staging_files(&dir, grace_ms, now_ms).await?;
            TierMetrics::add(&self.metrics().orphans_deleted, staged.deleted as u64);
            report.deleted += staged.deleted;
            report.kept_young += staged.kept_young;
        }
        Ok(report)
    }

    /// Removes the whole partition from the tier (topic deletion): the
    /// manifest first, then every object under the partition directory
    /// (and, for partition 0, the topic's `topic.json`).
    pub async fn delete_partition(&self) -> Result<usize, TierError> {
        let _writer = self.inner.write_lock.lock().await;
        // A partition another cluster took over is left to it (as last
        // seen: a missing or damaged manifest does not stop a deletion).
        if let Some(known) = self.last_known_manifest() {
            self.note_owner(&known)?;
        }
        let store = &self.inner.tier.inner.store;
        match store.delete(&self.inner.manifest_path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(store_err("delete", &self.inner.manifest_path)(e)),
        }
        self.forget_manifest();
        let mut listing = store.list(Some(&self.inner.dir));
        let mut deleted = 0;
        while let Some(item) = listing.next().await {
            let meta = item.map_err(store_err("list", &self.inner.dir))?;
            match store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                Err(e) => return Err(store_err("delete", &meta.location)(e)),
            }
        }
        TierMetrics::add(&self.metrics().objects_deleted, deleted as u64);
        if self.inner.key.partition == 0 {
            self.delete_topic_meta().await?;
        }
        Ok(deleted)
    }
}
