//! The raft log file, `raft.log`.
//!
//! Format (version 1): framed records (see `files.rs`). The first record is a
//! [`LogHeader`]; every following record is one JSON `openraft::Entry`, in
//! increasing index order (openraft never leaves holes; the format does not
//! depend on it). Entries at or before the header's last purged index are
//! ignored. Appends go to the end and are fsync'd before
//! they are reported durable. Truncation (raft conflict) cuts the file at the
//! first removed entry; purging rewrites the file (temporary file, fsync,
//! rename) with a header naming the last purged log id.
//!
//! Recovery: a damaged or incomplete record ends the log; it and everything
//! after it are the unflushed tail of an interrupted append, and are cut off
//! (the store then checks that nothing committed was lost).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use openraft::{Entry, LogId};
use serde::{Deserialize, Serialize};

use super::files::{check_version, decode_frame, encode_record, io_error, write_atomically, Frame};
use crate::metadata::{MetadataError, NodeId, TypeConfig};

const LOG_VERSION: u32 = 1;

/// The first record of the log file.
#[derive(Debug, Serialize, Deserialize)]
struct LogHeader {
    version: u32,
    last_purged: Option<LogId<NodeId>>,
}

/// An open log file. In-memory copies of the entries live in the store.
pub(crate) struct LogFile {
    path: PathBuf,
    file: File,
    /// Length of the valid prefix; appends go here.
    len: u64,
    /// File offset of each entry's record, by log index.
    offsets: BTreeMap<u64, u64>,
    last_purged: Option<LogId<NodeId>>,
}

/// The result of opening a log file.
pub(crate) struct Recovered {
    pub(crate) log: LogFile,
    pub(crate) entries: Vec<Entry<TypeConfig>>,
    /// The torn tail that was cut off, if any.
    pub(crate) torn: Option<TornTail>,
}

/// An incomplete or damaged end of the log, cut off on open.
#[derive(Debug)]
pub(crate) struct TornTail {
    pub(crate) offset: u64,
    pub(crate) bytes: u64,
    pub(crate) reason: String,
}

impl LogFile {
    /// Opens `path`, creating an empty log if it does not exist, and cuts off
    /// a torn tail.
    pub(crate) fn open(path: &Path) -> Result<Recovered, MetadataError> {
        if !path.exists() {
            write_atomically(path, &header_bytes(None)?)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_error("open", path))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf).map_err(io_error("read", path))?;

        let corrupt = |offset: usize, reason: String| MetadataError::Corrupt {
            path: path.to_path_buf(),
            offset: offset as u64,
            reason,
        };
        // The header is written atomically with the file: it cannot be torn.
        let (header, mut pos) = match decode_frame(&buf) {
            Frame::Record { payload, len } => {
                let header: LogHeader = serde_json::from_slice(payload)
                    .map_err(|e| corrupt(0, format!("undecodable log header. error={e}")))?;
                (header, len)
            }
            Frame::End => return Err(corrupt(0, "missing log header".to_string())),
            Frame::Bad { reason } => return Err(corrupt(0, reason)),
        };
        check_version(path, header.version, LOG_VERSION)?;

        let mut entries: Vec<Entry<TypeConfig>> = Vec::new();
        let mut offsets = BTreeMap::new();
        let mut previous = header.last_purged.map(|p| p.index);
        let mut torn_reason = None;
        loop {
            match decode_frame(&buf[pos..]) {
                Frame::Record { payload, len } => {
                    let entry: Entry<TypeConfig> = serde_json::from_slice(payload)
                        .map_err(|e| corrupt(pos, format!("undecodable log entry. error={e}")))?;
                    let index = entry.log_id.index;
                    if header.last_purged.is_some_and(|p| index <= p.index) {
                        // Appended at a purged index (only the openraft
                        // storage suite does this): purged by definition.
                        pos += len;
                        continue;
                    }
                    if previous.is_some_and(|prev| index <= prev) {
                        return Err(corrupt(
                            pos,
                            format!(
                                "log entries out of order. previous={previous:?}, found={index}"
                            ),
                        ));
                    }
                    previous = Some(index);
                    offsets.insert(index, pos as u64);
                    entries.push(entry);
                    pos += len;
                }
                Frame::End => break,
                Frame::Bad { reason } => {
                    torn_reason = Some(reason);
                    break;
                }
            }
        }
        let len = pos as u64;
        let torn = torn_reason.map(|reason| TornTail {
            offset: len,
            bytes: buf.len() as u64 - len,
            reason,
        });
        if torn.is_some() {
            file.set_len(len).map_err(io_error("truncate", path))?;
            file.sync_all().map_err(io_error("sync", path))?;
        }
        Ok(Recovered {
            log: LogFile {
                path: path.to_path_buf(),
                file,
                len,
                offsets,
                last_purged: header.last_purged,
            },
            entries,
            torn,
        })
    }

    pub(crate) fn last_purged(&self) -> Option<LogId<NodeId>> {
        self.last_purged
    }

    /// Appends `entries` and fsyncs.
    pub(crate) fn append<'a>(
        &mut self,
        entries: impl IntoIterator<Item = &'a Entry<TypeConfig>>,
    ) -> Result<(), MetadataError> {
        let mut buf = Vec::new();
        let mut new_offsets = Vec::new();
        for entry in entries {
            new_offsets.push((entry.log_id.index, self.len + buf.len() as u64));
            encode_record("log entry", entry, &mut buf)?;
        }
        if buf.is_empty() {
            return Ok(());
        }
        let written = self
            .file
            .seek(SeekFrom::Start(self.len))
            .and_then(|_| self.file.write_all(&buf))
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Best effort: do not leave a partial record in front of later
            // appends. Recovery would cut it off anyway.
            let _ = self.file.set_len(self.len);
            return Err(io_error("append", &self.path)(e));
        }
        self.len += buf.len() as u64;
        self.offsets.extend(new_offsets);
        Ok(())
    }

    /// Removes the entries with index `>= index`.
    pub(crate) fn truncate_from(&mut self, index: u64) -> Result<(), MetadataError> {
        let Some(cut) = self.offsets.range(index..).next().map(|(_, off)| *off) else {
            return Ok(());
        };
        self.file
            .set_len(cut)
            .and_then(|()| self.file.sync_all())
            .map_err(io_error("truncate", &self.path))?;
        self.len = cut;
        self.offsets.split_off(&index);
        Ok(())
    }

    /// Marks everything up to `upto` purged and rewrites the file with
    /// `remaining`, the entries after `upto`.
    pub(crate) fn purge<'a>(
        &mut self,
        upto: LogId<NodeId>,
        remaining: impl IntoIterator<Item = &'a Entry<TypeConfig>>,
    ) -> Result<(), MetadataError> {
        let mut buf = header_bytes(Some(upto))?;
        let mut offsets = BTreeMap::new();
        for entry in remaining {
            offsets.insert(entry.log_id.index, buf.len() as u64);
            encode_record("log entry", entry, &mut buf)?;
        }
        write_atomically(&self.path, &buf)?;
        self.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(io_error("open", &self.path))?;
        self.len = buf.len() as u64;
        self.offsets = offsets;
        self.last_purged = Some(upto);
        Ok(())
    }
}

fn header_bytes(last_purged: Option<LogId<NodeId>>) -> Result<Vec<u8>, MetadataError> {
    let mut buf = Vec::new();
    encode_record(
        "log header",
        &LogHeader {
            version: LOG_VERSION,
            last_purged,
        },
        &mut buf,
    )?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::metadata::Command;

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Command::AllocateProducerIds {
                count: index as i64 + 1,
            }),
        }
    }

    fn indexes(entries: &[Entry<TypeConfig>]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    #[test]
    fn append_reopen_truncate_purge() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft.log");
        let mut log = LogFile::open(&path).expect("create").log;
        let all: Vec<_> = (0..10).map(entry).collect();
        log.append(&all[..4]).expect("append");
        log.append(&all[4..]).expect("append");
        drop(log);

        let recovered = LogFile::open(&path).expect("reopen");
        assert_eq!(recovered.entries, all);
        assert!(recovered.torn.is_none());
        let mut log = recovered.log;
        log.truncate_from(7).expect("truncate");
        log.append([&entry(7)]).expect("append after truncate");
        drop(log);
        assert_eq!(
            indexes(&LogFile::open(&path).expect("reopen").entries),
            (0..8).collect::<Vec<_>>()
        );

        let mut log = LogFile::open(&path).expect("reopen").log;
        log.purge(entry(4).log_id, &all[5..8]).expect("purge");
        log.append([&entry(8)]).expect("append after purge");
        drop(log);
        let recovered = LogFile::open(&path).expect("reopen");
        assert_eq!(recovered.log.last_purged(), Some(entry(4).log_id));
        assert_eq!(indexes(&recovered.entries), vec![5, 6, 7, 8]);
    }

    #[test]
    fn torn_last_record_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft.log");
        let mut log = LogFile::open(&path).expect("create").log;
        log.append(&(0..3).map(entry).collect::<Vec<_>>())
            .expect("append");
        drop(log);
        let full = fs::read(&path).expect("read");
        // Cut the last record in the middle, as a crash mid-append would.
        fs::write(&path, &full[..full.len() - 5]).expect("tear");

        let recovered = LogFile::open(&path).expect("reopen");
        assert_eq!(indexes(&recovered.entries), vec![0, 1]);
        assert!(recovered.torn.is_some_and(|t| t.bytes > 0));
        let mut log = recovered.log;
        log.append([&entry(2)]).expect("append after recovery");
        drop(log);
        let recovered = LogFile::open(&path).expect("reopen");
        assert_eq!(indexes(&recovered.entries), vec![0, 1, 2]);
        assert!(recovered.torn.is_none());
    }

    #[test]
    fn damaged_last_record_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft.log");
        let mut log = LogFile::open(&path).expect("create").log;
        log.append(&(0..3).map(entry).collect::<Vec<_>>())
            .expect("append");
        drop(log);
        let mut bytes = fs::read(&path).expect("read");
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        fs::write(&path, &bytes).expect("damage");
        assert_eq!(
            indexes(&LogFile::open(&path).expect("reopen").entries),
            vec![0, 1]
        );
    }

    #[test]
    fn out_of_order_is_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft.log");
        let mut log = LogFile::open(&path).expect("create").log;
        log.append([&entry(0), &entry(2), &entry(1)])
            .expect("append");
        drop(log);
        assert!(matches!(
            LogFile::open(&path),
            Err(MetadataError::Corrupt { .. })
        ));
    }
}
