//! The process allocator: the system allocator, except that very large
//! requests are served by lazily-backed anonymous mappings.
//!
//! Why: the `kafka-protocol` decoders reserve `Vec` capacity from an element
//! count read off the wire before decoding any element. A request of a few
//! bytes that claims two billion topics asks for hundreds of GiB; the system
//! allocator refuses, and Rust aborts the process on a refused allocation.
//! Served here with `MAP_NORESERVE`, such a reservation costs address space
//! only: the decoder fails on the next missing byte and the mapping is
//! returned untouched. Memory that is really written is still bounded by
//! the request size limits.
//!
//! At start the broker also bounds glibc's malloc arenas
//! ([`limit_malloc_arenas`]), so memory freed on many threads is not kept
//! in many arenas.
//!
//! This is one of the modules allowed `unsafe` (with `zerocopy` and
//! `writeback`): implementing `GlobalAlloc` and calling `mallopt` cannot be
//! done without it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::null_mut;

/// Requests at least this large are mapped directly.
const HUGE: usize = 1 << 30;
/// Page size alignment that mmap guarantees.
const MAP_ALIGN: usize = 4096;

/// See the module docs.
pub struct GuardedAlloc;

fn mapped(layout: &Layout) -> bool {
    layout.size() >= HUGE && layout.align() <= MAP_ALIGN
}

// SAFETY: every pointer handed out comes either from `System` or from
// `mmap` with the requested size; `dealloc`/`realloc` route a pointer back to
// the same source by the layout's size, which Rust guarantees to be the one
// it was allocated with.
unsafe impl GlobalAlloc for GuardedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if mapped(&layout) {
            // SAFETY: an anonymous private mapping with no address hint has
            // no preconditions; failure is reported as MAP_FAILED.
            let p = unsafe {
                libc::mmap(
                    null_mut(),
                    layout.size(),
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                null_mut()
            } else {
                p.cast()
            }
        } else {
            // SAFETY: forwarded with the caller's layout.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if mapped(&layout) {
            // SAFETY: anonymous mappings are zero-filled.
            unsafe { self.alloc(layout) }
        } else {
            // SAFETY: forwarded with the caller's layout.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if mapped(&layout) {
            // SAFETY: `ptr` came from our mmap of exactly this size.
            unsafe {
                libc::munmap(ptr.cast(), layout.size());
            }
        } else {
            // SAFETY: `ptr` came from System with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` is valid for this align.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !mapped(&layout) && !mapped(&new_layout) {
            // SAFETY: both sides belong to System.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: allocate, copy the common prefix, free the old block, each
        // routed to its own source.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

/// How many arenas glibc's malloc may create: one per core (at least
/// two), unless the operator set `MALLOC_ARENA_MAX` (`env`), which wins.
///
/// Why: glibc creates up to 8 arenas per core, and memory a thread frees
/// goes back to that thread's arena, which keeps it for reuse instead of
/// returning it to the system. The tier cache's chunks (4 MiB) are
/// allocated and freed on many threads (the runtime's workers, the
/// blocking pool), so with many arenas freed chunks stayed behind in each:
/// replaying 4-10 GiB from the tier through a 1 GiB cache, the broker's
/// RSS rose 140-200 MiB above the cache plus 256 MiB. With one arena per
/// core it stayed under that bound at the same throughput.
fn arena_limit(env: Option<&std::ffi::OsStr>, cores: usize) -> Option<usize> {
    match env {
        Some(v) if !v.is_empty() => None,
        _ => Some(cores.max(2)),
    }
}

/// Applies [`arena_limit`] to this process's malloc (glibc only); returns
/// the limit set, `None` when the environment sets it or the C library is
/// not glibc. Called first in `main`, before any other thread exists.
pub fn limit_malloc_arenas() -> Option<usize> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let limit = arena_limit(std::env::var_os("MALLOC_ARENA_MAX").as_deref(), cores)?;
    set_arena_max(limit)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_arena_max(limit: usize) -> Option<usize> {
    let n = libc::c_int::try_from(limit).ok()?;
    // SAFETY: mallopt takes two integers and changes only malloc's own
    // settings; M_ARENA_MAX bounds arenas created from now on.
    let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, n) };
    (ok == 1).then_some(limit)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_limit: usize) -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arenas_are_one_per_core_unless_the_environment_says() {
        use std::ffi::OsStr;
        assert_eq!(arena_limit(None, 8), Some(8));
        assert_eq!(arena_limit(None, 1), Some(2));
        assert_eq!(arena_limit(Some(OsStr::new("")), 4), Some(4));
        assert_eq!(arena_limit(Some(OsStr::new("16")), 4), None);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        assert_eq!(set_arena_max(4), Some(4));
    }

    #[test]
    fn huge_reservation_is_lazy_and_small_ones_round_trip() {
        let a = GuardedAlloc;
        // 512 GiB: far beyond the memory of any machine the tests run on, but never touched.
        let big = Layout::from_size_align(512 << 30, 8).expect("layout");
        // SAFETY: paired alloc/dealloc with the same layout.
        unsafe {
            let p = a.alloc(big);
            assert!(!p.is_null());
            *p = 7;
            assert_eq!(*p, 7);
            a.dealloc(p, big);
            let small = Layout::from_size_align(64, 8).expect("layout");
            let q = a.alloc(small);
            assert!(!q.is_null());
            let q = a.realloc(q, small, HUGE + 64);
            assert!(!q.is_null());
            let q2 = a.realloc(
                q,
                Layout::from_size_align(HUGE + 64, 8).expect("layout"),
                32,
            );
            a.dealloc(q2, Layout::from_size_align(32, 8).expect("layout"));
        }
    }
}
