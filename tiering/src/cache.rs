//! The read cache: chunks of segment objects and whole index objects in a
//! byte-bounded `moka` cache, over an optional byte-bounded disk directory.
//!
//! Concurrent misses on one key share one fill (`try_get_with`), so N
//! readers of a cold chunk cause one GET. Disk entries carry their key and a
//! CRC-32C of their data; an entry read into memory is checked against both,
//! so a torn or foreign file is a miss, never data.
//! The disk directory is emptied when the cache is built (entries are not
//! reused across restarts).
//!
//! Record data for fetches can come out of the disk cache as a file range
//! ([`ReadCache::chunk_piece`]) instead of bytes, so the broker sends it
//! with sendfile(2) and the chunk does not enter memory. Such a range is
//! not read, so it is trusted as the local log is: its bytes passed the
//! chunk's CRC-32C before they were written (ranges are only for chunks that
//! have one), files are written once under a temporary name and never
//! changed, and when one is opened its key, its recorded CRC (which must be
//! the chunk's) and its length are checked.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use moka::future::Cache;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore};

use crate::error::store_err;
use crate::metrics::TierMetrics;
use crate::pool::{BufferPool, Frozen};
use crate::TierError;

/// Chunk number that marks a whole object.
const WHOLE: u64 = u64::MAX;

/// Overhead charged per entry on top of its bytes.
const ENTRY_OVERHEAD: u64 = 128;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    pub path: Arc<str>,
    pub chunk: u64,
}

/// A piece of remote data as a fetch can send it.
#[derive(Debug, Clone)]
pub enum Piece {
    /// In memory (from the memory cache or just fetched).
    Mem(Bytes),
    /// A range of a disk-cache file.
    File(FileSlice),
}

/// A byte range of an open file.
#[derive(Debug, Clone)]
pub struct FileSlice {
    pub file: Arc<std::fs::File>,
    pub position: u64,
    pub len: u64,
}

impl FileSlice {
    /// The bytes of the range (a positional read).
    pub fn read(&self) -> std::io::Result<Bytes> {
        use std::os::unix::fs::FileExt;
        let len = usize::try_from(self.len).map_err(std::io::Error::other)?;
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, self.position)?;
        Ok(Bytes::from(buf))
    }
}

impl Piece {
    pub fn len(&self) -> u64 {
        match self {
            Piece::Mem(b) => b.len() as u64,
            Piece::File(f) => f.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pieces' bytes, one after another, in memory (file ranges are
    /// read with positional reads).
    pub fn join(pieces: &[Piece]) -> std::io::Result<Bytes> {
        if let [Piece::Mem(b)] = pieces {
            return Ok(b.clone());
        }
        let mut out = BytesMut::with_capacity(pieces.iter().map(Piece::len).sum::<u64>() as usize);
        for p in pieces {
            match p {
                Piece::Mem(b) => out.extend_from_slice(b),
                Piece::File(f) => out.extend_from_slice(&f.read()?),
            }
        }
        Ok(out.freeze())
    }

    /// Bytes `[from, to)` of the piece (the caller keeps them in range).
    pub(crate) fn slice(&self, from: u64, to: u64) -> Piece {
        match self {
            Piece::Mem(b) => Piece::Mem(b.slice(from as usize..to as usize)),
            Piece::File(f) => Piece::File(FileSlice {
                file: f.file.clone(),
                position: f.position + from,
                len: to - from,
            }),
        }
    }
}

#[derive(Debug, Clone)]
struct DiskEntry {
    file: PathBuf,
    size: u64,
}

struct DiskCache {
    dir: PathBuf,
    index: Cache<CacheKey, DiskEntry>,
    seq: AtomicU64,
}

pub(crate) struct ReadCache {
    /// Chunks and whole objects, weighed by the memory they hold.
    mem: Cache<CacheKey, Frozen>,
    disk: Option<Arc<DiskCache>>,
    /// Buffers of whole chunks, used again once the cache let them go.
    buffers: BufferPool,
    /// Prefetches in flight ([`ReadCache::start_prefetch`]).
    prefetching: Arc<AtomicUsize>,
    metrics: Arc<TierMetrics>,
}

/// A prefetch in flight; it ends when this drops.
pub(crate) struct Prefetching(Arc<AtomicUsize>);

impl Drop for Prefetching {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Free chunk buffers kept for the next fills (32 MiB of 4 MiB chunks).
const FREE_BUFFERS: usize = 8;

/// Chunks fetched ahead of readers at once, over all partitions (32 MiB
/// of 4 MiB chunks): what a prefetch holds is not yet in the cache's
/// bound, and a replay of many partitions would otherwise fetch ahead for
/// every one of them.
const MAX_PREFETCHES: usize = 8;

fn weigh(key: &CacheKey, len: u64) -> u32 {
    u32::try_from(len + key.path.len() as u64 + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
}

impl ReadCache {
    pub fn new(
        memory_bytes: u64,
        disk_dir: Option<PathBuf>,
        disk_bytes: u64,
        metrics: Arc<TierMetrics>,
    ) -> Result<ReadCache, TierError> {
        let evictions = metrics.clone();
        let mem = Cache::builder()
            .max_capacity(memory_bytes)
            // Least recently used, not moka's TinyLFU: TinyLFU may turn a
            // chunk away as it is filled when the cache is full, and a replay
            // longer than the cache then fetched prefetched chunks again.
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .weigher(|k: &CacheKey, v: &Frozen| weigh(k, v.held))
            .eviction_listener(move |_k, _v, cause| {
                if cause.was_evicted() {
                    TierMetrics::add(&evictions.cache_evictions, 1);
                }
            })
            .build();
        let disk = match disk_dir {
            None => None,
            Some(dir) => {
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).map_err(|source| TierError::Io {
                        op: "clear disk cache",
                        path: dir.display().to_string(),
                        source,
                    })?;
                }
                std::fs::create_dir_all(&dir).map_err(|source| TierError::CreateDir {
                    path: dir.display().to_string(),
                    source,
                })?;
                let index = Cache::builder()
                    .max_capacity(disk_bytes)
                    .weigher(|k: &CacheKey, v: &DiskEntry| weigh(k, v.size))
                    .eviction_listener(|_k, v: DiskEntry, _cause| {
                        // Every write has its own file name, so removing the
                        // evicted entry's file never removes a newer one.
                        let _ = std::fs::remove_file(&v.file);
                    })
                    .build();
                Some(Arc::new(DiskCache {
                    dir,
                    index,
                    seq: AtomicU64::new(0),
                }))
            }
        };
        Ok(ReadCache {
            mem,
            disk,
            buffers: BufferPool::new(FREE_BUFFERS),
            prefetching: Arc::new(AtomicUsize::new(0)),
            metrics,
        })
    }

    /// Bytes held in memory (after pending maintenance).
    pub async fn memory_bytes(&self) -> u64 {
        self.mem.run_pending_tasks().await;
        self.mem.weighted_size()
    }

    /// Bytes held on disk (after pending maintenance).
    pub async fn disk_bytes(&self) -> u64 {
        match &self.disk {
            None => 0,
            Some(d) => {
                d.index.run_pending_tasks().await;
                d.index.weighted_size()
            }
        }
    }

    pub async fn invalidate(&self, key: &CacheKey) {
        self.mem.invalidate(key).await;
        if let Some(d) = &self.disk {
            d.index.invalidate(key).await;
        }
    }

    /// Chunk `chunk` (of `chunk_size` bytes) of the object at `path` whose
    /// size is `object_size`. Errors if the store returns a short body.
    pub async fn chunk(
        &self,
        store: &Arc<dyn ObjectStore>,
        path: &ObjectPath,
        object_size: u64,
        chunk: u64,
        chunk_size: u64,
        expected_crc: Option<u32>,
    ) -> Result<Bytes, TierError> {
        let (start, end) = chunk_bounds(chunk, chunk_size, object_size);
        let key = Self::chunk_key(path, chunk);
        let check = match expected_crc {
            Some(crc) => Check::Crc {
                crc,
                position: start,
            },
            None => Check::Nothing,
        };
        let fill = Fill::Range {
            range: start..end,
            chunk_size,
        };
        self.get_or_fill(key, store, path, fill, check).await
    }

    /// Room for one more prefetch, if fewer than [`MAX_PREFETCHES`] are in
    /// flight (else the reader fetches the chunk when it gets there).
    pub(crate) fn start_prefetch(&self) -> Option<Prefetching> {
        self.prefetching
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_PREFETCHES).then_some(n + 1)
            })
            .ok()
            .map(|_| Prefetching(Arc::clone(&self.prefetching)))
    }

    /// Whether the memory holds the entry.
    pub(crate) fn in_memory(&self, key: &CacheKey) -> bool {
        self.mem.contains_key(key)
    }

    /// Whether chunks can come from a disk directory.
    pub fn has_disk(&self) -> bool {
        self.disk.is_some()
    }

    /// Whether the disk directory holds the entry (no I/O).
    pub fn on_disk(&self, key: &CacheKey) -> bool {
        self.disk
            .as_ref()
            .is_some_and(|d| d.index.contains_key(key))
    }

    /// Like [`ReadCache::chunk`], but a chunk that is on disk and not in
    /// memory comes back as its file range (not read, not put in memory).
    /// Only for chunks with a CRC-32C (module docs).
    pub async fn chunk_piece(
        &self,
        store: &Arc<dyn ObjectStore>,
        path: &ObjectPath,
        object_size: u64,
        chunk: u64,
        chunk_size: u64,
        expected_crc: u32,
    ) -> Result<Piece, TierError> {
        let key = Self::chunk_key(path, chunk);
        if !self.mem.contains_key(&key) {
            if let Some(disk) = &self.disk {
                let (start, end) = chunk_bounds(chunk, chunk_size, object_size);
                let want = end.saturating_sub(start);
                if let Some(slice) = disk.open(&key, want, expected_crc).await {
                    TierMetrics::add(&self.metrics.cache_misses, 1);
                    TierMetrics::add(&self.metrics.disk_cache_hits, 1);
                    return Ok(Piece::File(slice));
                }
            }
        }
        self.chunk(
            store,
            path,
            object_size,
            chunk,
            chunk_size,
            Some(expected_crc),
        )
        .await
        .map(Piece::Mem)
    }

    /// The whole object at `path`, checked against its size and CRC-32C.
    pub async fn whole(
        &self,
        store: &Arc<dyn ObjectStore>,
        path: &ObjectPath,
        size: u64,
        crc: u32,
    ) -> Result<Bytes, TierError> {
        let key = CacheKey {
            path: Arc::from(path.as_ref()),
            chunk: WHOLE,
        };
        self.get_or_fill(key, store, path, Fill::Object, Check::Whole { size, crc })
            .await
    }

    pub fn chunk_key(path: &ObjectPath, chunk: u64) -> CacheKey {
        CacheKey {
            path: Arc::from(path.as_ref()),
            chunk,
        }
    }

    pub fn whole_key(path: &ObjectPath) -> CacheKey {
        Self::chunk_key(path, WHOLE)
    }

    async fn get_or_fill(
        &self,
        key: CacheKey,
        store: &Arc<dyn ObjectStore>,
        path: &ObjectPath,
        what: Fill,
        check: Check,
    ) -> Result<Bytes, TierError> {
        if let Some(hit) = self.mem.get(&key).await {
            TierMetrics::add(&self.metrics.cache_hits, 1);
            return Ok(hit.bytes);
        }
        TierMetrics::add(&self.metrics.cache_misses, 1);
        let fill_key = key.clone();
        let fill = async move {
            let key = fill_key;
            let own = |bytes: Bytes| Frozen {
                held: bytes.len() as u64,
                bytes,
            };
            if let Some(disk) = &self.disk {
                if let Some(bytes) = disk.read(&key).await {
                    TierMetrics::add(&self.metrics.disk_cache_hits, 1);
                    return Ok(own(bytes));
                }
            }
            let filled = match what {
                Fill::Object => own(fetch(store, path, None, &self.metrics).await?),
                Fill::Range { range, chunk_size } => {
                    fetch_into(store, path, range, &self.buffers, chunk_size, &self.metrics).await?
                }
            };
            check.verify(path, &filled.bytes, &self.metrics)?;
            if let Some(disk) = &self.disk {
                let disk = Arc::clone(disk);
                let (key, bytes) = (key.clone(), filled.bytes.clone());
                tokio::spawn(async move { disk.write(key, bytes).await });
            }
            Ok(filled)
        };
        let filled = self
            .mem
            .try_get_with(key, fill)
            .await
            .map(|f| f.bytes)
            .map_err(TierError::from_shared);
        // Apply the insert now, evicting what no longer fits: moka applies
        // writes in batches (64 entries, or after a few hundred ms), and a
        // batch of 4 MiB chunks held past the capacity is 256 MiB of memory
        // the bound does not count.
        self.mem.run_pending_tasks().await;
        filled
    }
}

/// What a fill checks before the bytes enter the cache.
#[derive(Debug, Clone, Copy)]
enum Check {
    Nothing,
    /// A whole object: its size and CRC-32C.
    Whole {
        size: u64,
        crc: u32,
    },
    /// A chunk starting at `position`: its CRC-32C.
    Crc {
        crc: u32,
        position: u64,
    },
}

impl Check {
    fn verify(
        self,
        path: &ObjectPath,
        bytes: &[u8],
        metrics: &TierMetrics,
    ) -> Result<(), TierError> {
        let (expected, position) = match self {
            Check::Nothing => return Ok(()),
            Check::Whole { size, crc } => {
                if bytes.len() as u64 != size {
                    return Err(TierError::ShortRead {
                        path: path.to_string(),
                        expected: size,
                        actual: bytes.len() as u64,
                    });
                }
                (crc, 0)
            }
            Check::Crc { crc, position } => (crc, position),
        };
        let actual = crc32c::crc32c(bytes);
        if actual != expected {
            TierMetrics::add(&metrics.crc_mismatches, 1);
            return Err(TierError::Corrupt {
                path: path.to_string(),
                position,
                expected,
                actual,
            });
        }
        Ok(())
    }
}

/// One GET (ranged when `range` is set), checking the body's length.
/// What a cache fill reads: a whole object, or a range of one (a chunk
/// of chunks of `chunk_size`, shorter if it is an object's last one).
enum Fill {
    Object,
    Range {
        range: std::ops::Range<u64>,
        chunk_size: u64,
    },
}

/// [`fetch`] of `range` into a buffer of `pool` (see [`BufferPool`]): a
/// local file is read straight into it, a stream copied into it.
async fn fetch_into(
    store: &Arc<dyn ObjectStore>,
    path: &ObjectPath,
    range: std::ops::Range<u64>,
    pool: &BufferPool,
    chunk_size: u64,
    metrics: &TierMetrics,
) -> Result<Frozen, TierError> {
    use futures::StreamExt;
    use object_store::GetResultPayload;
    let want = range.end - range.start;
    let chunk_size = usize::try_from(chunk_size).unwrap_or(usize::MAX);
    let short = |actual: u64| TierError::ShortRead {
        path: path.to_string(),
        expected: want,
        actual,
    };
    let opts = GetOptions::new().with_range(Some(GetRange::Bounded(range.clone())));
    let filled = timed_get(metrics, async {
        let r = store
            .get_opts(path, opts)
            .await
            .map_err(store_err("get", path))?;
        let len = usize::try_from(want).map_err(|_| short(0))?;
        let mut buf = pool.take(len, chunk_size);
        match r.payload {
            GetResultPayload::File(file, local) => {
                let at = r.range.start;
                let read = tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt;
                    file.read_exact_at(&mut buf[..len], at).map(|()| buf)
                })
                .await
                .map_err(|e| TierError::Io {
                    op: "read",
                    path: local.display().to_string(),
                    source: std::io::Error::other(e),
                })?;
                match read {
                    Ok(buf) => Ok(Filled { buf, len }),
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(short(0)),
                    Err(source) => Err(TierError::Io {
                        op: "read",
                        path: local.display().to_string(),
                        source,
                    }),
                }
            }
            GetResultPayload::Stream(mut parts) => {
                let mut at = 0usize;
                while let Some(part) = parts.next().await {
                    let part = part.map_err(store_err("get", path))?;
                    let Some(to) = buf[..len].get_mut(at..at + part.len()) else {
                        return Err(short((at + part.len()) as u64));
                    };
                    to.copy_from_slice(&part);
                    at += part.len();
                }
                if at != len {
                    return Err(short(at as u64));
                }
                Ok(Filled { buf, len })
            }
        }
    })
    .await?;
    Ok(pool.freeze(filled.buf, filled.len, chunk_size))
}

/// A buffer whose first `len` bytes a GET filled.
struct Filled {
    buf: Vec<u8>,
    len: usize,
}

impl AsRef<[u8]> for Filled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// One GET as the tier's metrics count it: a request, its latency, an
/// error on failure and the body's bytes on success.
async fn timed_get<B: AsRef<[u8]>>(
    metrics: &TierMetrics,
    get: impl std::future::Future<Output = Result<B, TierError>>,
) -> Result<B, TierError> {
    TierMetrics::add(&metrics.get_requests, 1);
    let started = std::time::Instant::now();
    let result = get.await;
    metrics.get_latency.observe(started.elapsed());
    match &result {
        Ok(body) => TierMetrics::add(&metrics.bytes_downloaded, body.as_ref().len() as u64),
        Err(_) => TierMetrics::add(&metrics.store_errors, 1),
    }
    result
}

pub(crate) async fn fetch(
    store: &Arc<dyn ObjectStore>,
    path: &ObjectPath,
    range: Option<std::ops::Range<u64>>,
    metrics: &TierMetrics,
) -> Result<Bytes, TierError> {
    let opts = GetOptions::new().with_range(range.clone().map(GetRange::Bounded));
    let bytes = timed_get(metrics, async {
        let r = store
            .get_opts(path, opts)
            .await
            .map_err(store_err("get", path))?;
        r.bytes().await.map_err(store_err("get", path))
    })
    .await?;
    if let Some(r) = range {
        let want = r.end - r.start;
        if bytes.len() as u64 != want {
            return Err(TierError::ShortRead {
                path: path.to_string(),
                expected: want,
                actual: bytes.len() as u64,
            });
        }
    }
    Ok(bytes)
}

impl DiskCache {
    fn file_for(&self, key: &CacheKey) -> PathBuf {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{:016x}-{seq}", h.finish()))
    }

    async fn read(&self, key: &CacheKey) -> Option<Bytes> {
        let entry = self.index.get(key).await?;
        let raw = tokio::fs::read(&entry.file).await.ok()?;
        match decode_entry(key, Bytes::from(raw)) {
            Some(b) => Some(b),
            None => {
                self.index.invalidate(key).await;
                None
            }
        }
    }

    /// The data range of `key`'s entry file, when it is there, names `key`,
    /// records `crc` as its data's CRC-32C and holds `want` bytes of data.
    /// A file that does not is dropped from the index; one that cannot be
    /// opened or read now (say, out of descriptors) is only a miss.
    async fn open(&self, key: &CacheKey, want: u64, crc: u32) -> Option<FileSlice> {
        let entry = self.index.get(key).await?;
        let header = entry_header_len(key) as u64;
        let file = entry.file.clone();
        let expect = key.clone();
        let opened =
            tokio::task::spawn_blocking(move || -> std::io::Result<Option<std::fs::File>> {
                use std::os::unix::fs::FileExt;
                let f = std::fs::File::open(&file)?;
                let mut head = vec![0u8; header as usize];
                if f.read_exact_at(&mut head, 0).is_err() {
                    return Ok(None);
                }
                let ok =
                    entry_crc(&expect, &head) == Some(crc) && f.metadata()?.len() == header + want;
                Ok(ok.then_some(f))
            })
            .await;
        match opened {
            Ok(Ok(Some(f))) => Some(FileSlice {
                file: Arc::new(f),
                position: header,
                len: want,
            }),
            Ok(Ok(None)) => {
                // Only this entry: a newer write has its own file, which
                // `index` names instead when it is there.
                if self
                    .index
                    .get(key)
                    .await
                    .is_some_and(|e| e.file == entry.file)
                {
                    self.index.invalidate(key).await;
                }
                None
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, file = %entry.file.display(), "disk cache entry not opened");
                None
            }
            Err(_) => None,
        }
    }

    async fn write(&self, key: CacheKey, bytes: Bytes) {
        let file = self.file_for(&key);
        let tmp = file.with_extension("tmp");
        let body = encode_entry(&key, &bytes);
        let written = async {
            tokio::fs::write(&tmp, &body).await?;
            tokio::fs::rename(&tmp, &file).await
        }
        .await;
        match written {
            Ok(()) => {
                let size = body.len() as u64;
                self.index.insert(key, DiskEntry { file, size }).await;
                // Evict now, not at the next read: the files of evicted
                // entries go with their eviction, so the directory stays
                // within the bound while chunks stream in.
                self.index.run_pending_tasks().await;
            }
            Err(e) => {
                tracing::debug!(error = %e, path = %tmp.display(), "disk cache write failed");
                let _ = tokio::fs::remove_file(&tmp).await;
            }
        }
    }
}

/// `[key_len u32][key][chunk u64][crc32c u32][data]`.
fn encode_entry(key: &CacheKey, data: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::with_capacity(entry_header_len(key) + data.len());
    b.put_u32(key.path.len() as u32);
    b.put_slice(key.path.as_bytes());
    b.put_u64(key.chunk);
    b.put_u32(crc32c::crc32c(data));
    b.put_slice(data);
    b.to_vec()
}

/// Where chunk `chunk` of an object of `object_size` bytes starts and ends.
fn chunk_bounds(chunk: u64, chunk_size: u64, object_size: u64) -> (u64, u64) {
    let start = chunk * chunk_size;
    (start, (start + chunk_size).min(object_size))
}

/// Bytes before an entry's data.
fn entry_header_len(key: &CacheKey) -> usize {
    4 + key.path.len() + 8 + 4
}

/// The data CRC-32C an entry's header records, when the header (the first
/// [`entry_header_len`] bytes of `raw`, or more) names `key`.
fn entry_crc(key: &CacheKey, mut raw: &[u8]) -> Option<u32> {
    if raw.len() < entry_header_len(key) {
        return None;
    }
    let klen = raw.get_u32() as usize;
    if klen != key.path.len() || &raw[..klen] != key.path.as_bytes() {
        return None;
    }
    raw.advance(klen);
    if raw.get_u64() != key.chunk {
        return None;
    }
    Some(raw.get_u32())
}

fn decode_entry(key: &CacheKey, raw: Bytes) -> Option<Bytes> {
    let crc = entry_crc(key, &raw)?;
    let data = raw.slice(entry_header_len(key)..);
    (crc32c::crc32c(&data) == crc).then_some(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};

    /// Each fill is applied at once: the cache's weighed size counts every
    /// chunk filled so far and never passes the capacity, though moka
    /// would otherwise apply inserts only 64 at a time.
    #[tokio::test]
    async fn fills_are_weighed_and_evicted_at_once() {
        const CHUNK: u64 = 64 << 10;
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = ObjectPath::from("t/0/00000000000000000000.log");
        let body = vec![7u8; (40 * CHUNK) as usize];
        store.put(&path, PutPayload::from(body)).await.expect("put");
        let capacity = 10 * CHUNK + 10 * (path.as_ref().len() as u64 + ENTRY_OVERHEAD);
        let cache =
            ReadCache::new(capacity, None, 0, Arc::new(TierMetrics::default())).expect("cache");
        let weight = u64::from(weigh(&ReadCache::chunk_key(&path, 0), CHUNK));
        for i in 0..40u64 {
            cache
                .chunk(&store, &path, 40 * CHUNK, i, CHUNK, None)
                .await
                .expect("chunk");
            let held = cache.mem.weighted_size();
            assert!(held <= capacity, "chunk {i}: {held} > {capacity}");
            if i < 10 {
                assert_eq!(held, (i + 1) * weight, "chunk {i}");
            }
        }
    }

    /// An object's last chunk of at least half a chunk weighs a whole
    /// chunk's buffer, which it holds; a shorter one its own bytes.
    #[tokio::test]
    async fn a_last_chunk_weighs_the_buffer_it_holds() {
        const CHUNK: u64 = 64 << 10;
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let cache =
            ReadCache::new(1 << 30, None, 0, Arc::new(TierMetrics::default())).expect("cache");
        for (name, size, held) in [("a", CHUNK + CHUNK / 2, CHUNK), ("b", CHUNK + 100, 100)] {
            let path = ObjectPath::from(format!("t/0/{name}.log"));
            store
                .put(&path, PutPayload::from(vec![7u8; size as usize]))
                .await
                .expect("put");
            let before = cache.memory_bytes().await;
            let last = cache
                .chunk(&store, &path, size, 1, CHUNK, None)
                .await
                .expect("chunk");
            assert_eq!(last.len() as u64, size - CHUNK);
            assert!(last.iter().all(|b| *b == 7));
            let key = ReadCache::chunk_key(&path, 1);
            assert_eq!(
                cache.memory_bytes().await - before,
                u64::from(weigh(&key, held)),
                "{name}"
            );
        }
    }

    #[test]
    fn prefetches_in_flight_are_bounded() {
        let cache =
            ReadCache::new(1 << 20, None, 0, Arc::new(TierMetrics::default())).expect("cache");
        let slots: Vec<Prefetching> = (0..MAX_PREFETCHES)
            .map(|_| cache.start_prefetch().expect("room"))
            .collect();
        assert!(cache.start_prefetch().is_none());
        drop(slots);
        assert!(cache.start_prefetch().is_some());
    }

    #[test]
    fn disk_entries_round_trip_and_reject_foreign_or_torn() {
        let k = CacheKey {
            path: Arc::from("a/b.log"),
            chunk: 3,
        };
        let e = Bytes::from(encode_entry(&k, b"hello"));
        assert_eq!(decode_entry(&k, e.clone()).as_deref(), Some(&b"hello"[..]));
        let other = CacheKey {
            path: Arc::from("a/c.log"),
            chunk: 3,
        };
        assert!(decode_entry(&other, e.clone()).is_none());
        assert!(decode_entry(&k, e.slice(..e.len() - 1)).is_none());
        let mut flipped = e.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert!(decode_entry(&k, Bytes::from(flipped)).is_none());
    }
}
