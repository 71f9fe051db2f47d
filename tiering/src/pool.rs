//! Buffers for the read cache's chunks, used again once a chunk is gone.
//!
//! A replay longer than the cache fills a chunk (4 MiB by default) for
//! each one it evicts. Freed and allocated again, such buffers leave the
//! allocator's heaps in pieces that small allocations then pin, and the
//! process grows past the cache's bound as the replay goes on. Here a
//! chunk's buffer goes back to a short free list when the last reference
//! to the chunk's bytes drops (the cache evicted it and no read holds a
//! slice of it), and the next fill takes it from there. Only whole chunks
//! are pooled: an object's last, shorter chunk gets a buffer of its own
//! size, so the cache's weight (the bytes' length) stays what it holds.

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

    /// A buffer of `len` bytes whose contents are unspecified (the caller
    /// overwrites all of them). For a `whole` chunk, a free buffer of that
    /// length if there is one; a full list that has none drops its oldest
    /// (the chunk size changed).
    pub(crate) fn take(&self, len: usize, whole: bool) -> Vec<u8> {
        if whole {
            let mut free = self.free_list();
            if let Some(i) = free.iter().position(|b| b.len() == len) {
                // Written before, whole: nothing to zero.
                return free.swap_remove(i);
            }
            if free.len() >= self.inner.keep && !free.is_empty() {
                free.remove(0);
            }
        }
        vec![0; len]
    }

    /// `buf` as bytes; a `whole` chunk's buffer comes back here when they
    /// are dropped.
    pub(crate) fn freeze(&self, buf: Vec<u8>, whole: bool) -> Bytes {
        if !whole {
            return Bytes::from(buf);
        }
        Bytes::from_owner(Pooled {
            buf,
            pool: Arc::downgrade(&self.inner),
        })
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
    /// is dropped, and the next whole chunk of its length reuses it; a
    /// shorter last chunk's buffer is its own.
    #[test]
    fn a_buffer_is_used_again_once_its_bytes_are_gone() {
        let pool = BufferPool::new(2);
        let mut buf = pool.take(1024, true);
        buf.fill(7);
        let first = buf.as_ptr();
        let bytes = pool.freeze(buf, true);
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(pool.free(), 0, "a slice still holds it");
        assert_eq!(&slice[..], &[7u8; 10]);
        drop(slice);
        assert_eq!(pool.free(), 1);
        let short = pool.take(512, false);
        assert_eq!(short.len(), 512);
        drop(pool.freeze(short, false));
        assert_eq!(pool.free(), 1, "a last chunk's buffer is not kept");
        let again = pool.take(1024, true);
        assert_eq!(again.as_ptr(), first);
        assert_eq!(again.len(), 1024);
    }

    /// The pool keeps at most `keep` buffers; the rest are freed. Another
    /// chunk size pushes the old size's buffers out.
    #[test]
    fn at_most_keep_buffers_are_kept() {
        let pool = BufferPool::new(2);
        let all: Vec<Bytes> = (0..5)
            .map(|_| pool.freeze(pool.take(64, true), true))
            .collect();
        drop(all);
        assert_eq!(pool.free(), 2);
        let other = pool.take(128, true);
        assert_eq!(other.len(), 128);
        assert_eq!(pool.free(), 1, "the oldest made room");
        drop(pool.freeze(other, true));
        assert_eq!(pool.take(128, true).len(), 128);
        assert_eq!(pool.free(), 1);
    }
}
