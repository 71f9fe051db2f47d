//! Early write-back of appended log data.
//!
//! An fdatasync waits for all of a file's dirty pages and a syncfs(2) for
//! all of a filesystem's, so data appended with `acks=1` (never synced by a
//! request) piles up in the page cache and a later `acks=all` sync round
//! waits for the kernel to write the whole pile. Starting the write-back of
//! every few MiB as they are appended (sync_file_range(2) with
//! `SYNC_FILE_RANGE_WRITE`: start writing, do not wait) keeps that pile
//! small. It makes nothing durable by itself: durability is still only what
//! an fdatasync or syncfs reported.
//!
//! This is one of the modules allowed `unsafe` (with `zerocopy` and the
//! allocator): the one `sync_file_range` call.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;

/// Bytes whose write-back was started (`strata_log_writeback_started_bytes_total`).
pub static STARTED_BYTES: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Appended bytes of a segment after which their write-back is started
/// (`--log-writeback-bytes`; 0: never).
static EVERY: AtomicU64 = AtomicU64::new(1 << 20);

pub fn set_every(bytes: u64) {
    EVERY.store(bytes, Ordering::Relaxed);
}

/// How many appended bytes wait before [`start`] is called; 0 means never.
pub fn every() -> u64 {
    EVERY.load(Ordering::Relaxed)
}

/// Starts writing bytes `[offset, offset + len)` of `file` to disk without
/// waiting for them. Errors are the kernel's (`EBADF`, `EIO`, ...); the
/// caller may ignore them, as a later fdatasync reports any that matter.
pub fn start(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let off = libc::off64_t::try_from(offset).map_err(io::Error::other)?;
    let n = libc::off64_t::try_from(len).map_err(io::Error::other)?;
    // SAFETY: the descriptor belongs to `file`, which is borrowed for the
    // whole call; sync_file_range takes only integers and touches no memory
    // of this process.
    let r = unsafe { libc::sync_file_range(file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    STARTED_BYTES.inc_by(len);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn start_accepts_a_written_range_and_refuses_a_negative_one() {
        let mut f = tempfile::tempfile().expect("tempfile");
        f.write_all(&[7u8; 8192]).expect("write");
        start(&f, 0, 8192).expect("sync_file_range");
        // Past the end is fine (nothing to write); a length beyond off64_t
        // is refused before the call.
        start(&f, 1 << 20, 4096).expect("past the end");
        assert!(start(&f, 0, u64::MAX).is_err());
    }
}
