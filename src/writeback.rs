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

use prometheus_client::metrics::counter::Counter;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// A broker's write-back setting and its counter; clones share the counter.
#[derive(Debug, Clone)]
pub struct Writeback {
    /// Appended bytes of a segment after which their write-back is started
    /// (`--log-writeback-bytes`; 0: never).
    every: u64,
    /// Bytes whose write-back was started
    /// (`strata_log_writeback_started_bytes_total`).
    started: Counter,
}

impl Default for Writeback {
    fn default() -> Self {
        Writeback::new(1 << 20)
    }
}

/// Two settings are equal when they start write-back at the same size.
impl PartialEq for Writeback {
    fn eq(&self, other: &Self) -> bool {
        self.every == other.every
    }
}

impl Eq for Writeback {}

impl Writeback {
    pub fn new(every: u64) -> Writeback {
        Writeback {
            every,
            started: Counter::default(),
        }
    }

    /// How many appended bytes wait before [`Writeback::start`] is called;
    /// 0 means never.
    pub fn every(&self) -> u64 {
        self.every
    }

    pub fn started_bytes(&self) -> &Counter {
        &self.started
    }

    /// Starts writing bytes `[offset, offset + len)` of `file` to disk
    /// without waiting for them, counting them.
    pub fn start(&self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        start(file, offset, len)?;
        self.started.inc_by(len);
        Ok(())
    }
}

/// Starts writing bytes `[offset, offset + len)` of `file` to disk without
/// waiting for them. Errors are the kernel's (`EBADF`, `EIO`, ...); the
/// caller may ignore them, as a later fdatasync reports any that matter.
fn start(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let off = libc::off64_t::try_from(offset).map_err(io::Error::other)?;
    let n = libc::off64_t::try_from(len).map_err(io::Error::other)?;
    // SAFETY: the descriptor belongs to `file`, which is borrowed for the
    // whole call; sync_file_range takes only integers and touches no memory
    // of this process.
    let r = unsafe { libc::sync_file_range(file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
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
        let w = Writeback::new(4096);
        w.start(&f, 0, 8192).expect("sync_file_range");
        // Past the end is fine (nothing to write); a length beyond off64_t
        // is refused before the call.
        w.start(&f, 1 << 20, 4096).expect("past the end");
        assert!(w.start(&f, 0, u64::MAX).is_err());
        assert_eq!(w.started_bytes().get(), 8192 + 4096);
    }
}
