//! Buffers for the read cache's chunks, used again once a chunk is gone.
//!
//! A replay longer than the cache fills a chunk (4 MiB by default) for
//! each one it evicts. Freed and allocated again, such buffers leave the
//! allocator's heaps in pieces that small allocations then pin, and the
//! process grows past the cache's bound as the replay goes on. Here a
//! chunk's buffer goes back to a short free list when the last reference
//! to the chunk's bytes drops (the cache evicted it and no read holds a
//! slice of it), and the next fill takes it from there. An object's last,
//! shorter chunk is pooled too when it is at least half a chunk: it then
//! holds a whole chunk's buffer, and the cache weighs it by that buffer
//! ([`Frozen::held`]), so the bound counts what is really held. A shorter
//! one gets a buffer of its own size, so small segments do not each pin a
//! whole chunk.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use bytes::Bytes;

/// Free buffers of whole chunks, at most `keep` of them.
pub(crate) struct BufferPool {
    inner: Arc<Inner>,
}

struct Inner {
    free: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

/// Whether a chunk of `len` bytes (of chunks of `chunk_size`) gets a
/// pooled buffer: a whole chunk, or a last one of at least half a chunk.
fn pooled(len: usize, chunk_size: usize) -> bool {
    len <= chunk_size && len >= chunk_size.div_ceil(2)
}

/// A chunk's bytes and the bytes of memory they hold (their buffer's).
#[derive(Debug, Clone)]
pub(crate) struct Frozen {
    pub bytes: Bytes,
    pub held: u64,
}

/// A chunk's buffer: back to its pool when the chunk's bytes are dropped.
struct Pooled {
    buf: Vec<u8>,
    pool: Weak<Inner>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        let mut free = pool.free.lock().unwrap_or_else(PoisonError::into_inner);
        if free.len() < pool.keep {
            free.push(std::mem::take(&mut self.buf));
        }
    }
}

impl BufferPool {
    /// A pool that keeps at most `keep` free buffers.
    pub(crate) fn new(keep: usize) -> BufferPool {
        BufferPool {
            inner: Arc::new(Inner {
                free: Mutex::new(Vec::with_capacity(keep)),
                keep,
            }),
        }
    }

    fn free_list(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.inner
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A buffer for `len` bytes of a chunk of `chunk_size`, whose contents
    /// are unspecified (the caller overwrites its first `len` bytes). For
    /// a chunk worth pooling, a buffer of `chunk_size` bytes, free in the
    /// list if one is; a full list that has none drops its oldest (the
    /// chunk size changed). Else a buffer of `len` bytes.
    pub(crate) fn take(&self, len: usize, chunk_size: usize) -> Vec<u8> {
        if !pooled(len, chunk_size) {
            return vec![0; len];
        }
        let mut free = self.free_list();
        if let Some(i) = free.iter().position(|b| b.len() == chunk_size) {
            // Written before, whole: nothing to zero.
            return free.swap_remove(i);
        }
        if free.len() >= self.inner.keep && !free.is_empty() {
            free.remove(0);
        }
        vec![0; chunk_size]
    }

    /// The first `len` bytes of `buf` (from [`BufferPool::take`] with the
    /// same `len` and `chunk_size`); a pooled buffer comes back here when
    /// they are dropped.
    pub(crate) fn freeze(&self, buf: Vec<u8>, len: usize, chunk_size: usize) -> Frozen {
        debug_assert!(buf.len() >= len, "a buffer from take holds len bytes");
        let held = buf.len() as u64;
        if !pooled(len, chunk_size) {
            let mut buf = buf;
            buf.truncate(len);
            return Frozen {
                held: buf.len() as u64,
                bytes: Bytes::from(buf),
            };
        }
        let bytes = Bytes::from_owner(Pooled {
            buf,
            pool: Arc::downgrade(&self.inner),
        })
        .slice(..len);
        Frozen { bytes, held }
    }

    /// Free buffers held.
    #[cfg(test)]
    fn free(&self) -> usize {
        self.free_list().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole chunk's buffer comes back once the last slice of its bytes
    /// is dropped, and the next chunk of that size reuses it.
    #[test]
    fn a_buffer_is_used_again_once_its_bytes_are_gone() {
        let pool = BufferPool::new(2);
        let mut buf = pool.take(1024, 1024);
        buf.fill(7);
        let first = buf.as_ptr();
        let frozen = pool.freeze(buf, 1024, 1024);
        assert_eq!(frozen.held, 1024);
        let slice = frozen.bytes.slice(10..20);
        drop(frozen);
        assert_eq!(pool.free(), 0, "a slice still holds it");
        assert_eq!(&slice[..], &[7u8; 10]);
        drop(slice);
        assert_eq!(pool.free(), 1);
        let again = pool.take(1024, 1024);
        assert_eq!(again.as_ptr(), first);
        assert_eq!(again.len(), 1024);
    }

    /// A last chunk of at least half a chunk holds a whole chunk's buffer
    /// (and says so); a shorter one has a buffer of its own size.
    #[test]
    fn a_last_chunk_is_pooled_when_it_is_at_least_half_a_chunk() {
        let pool = BufferPool::new(2);
        let mut buf = pool.take(700, 1024);
        assert_eq!(buf.len(), 1024);
        buf[..700].fill(3);
        let frozen = pool.freeze(buf, 700, 1024);
        assert_eq!((frozen.bytes.len(), frozen.held), (700, 1024));
        assert!(frozen.bytes.iter().all(|b| *b == 3));
        drop(frozen);
        assert_eq!(pool.free(), 1);
        let short = pool.take(300, 1024);
        assert_eq!(short.len(), 300);
        let frozen = pool.freeze(short, 300, 1024);
        assert_eq!((frozen.bytes.len(), frozen.held), (300, 300));
        drop(frozen);
        assert_eq!(pool.free(), 1, "a short last chunk's buffer is not kept");
        assert_eq!(pool.take(1024, 1024).len(), 1024);
        assert_eq!(pool.free(), 0, "the whole chunk took the kept one");
    }

    /// The pool keeps at most `keep` buffers; the rest are freed. Another
    /// chunk size pushes the old size's buffers out.
    #[test]
    fn at_most_keep_buffers_are_kept() {
        let pool = BufferPool::new(2);
        let all: Vec<Frozen> = (0..5)
            .map(|_| pool.freeze(pool.take(64, 64), 64, 64))
            .collect();
        drop(all);
        assert_eq!(pool.free(), 2);
        let other = pool.take(128, 128);
        assert_eq!(other.len(), 128);
        assert_eq!(pool.free(), 1, "the oldest made room");
        drop(pool.freeze(other, 128, 128));
        assert_eq!(pool.take(128, 128).len(), 128);
        assert_eq!(pool.free(), 1);
    }
}
