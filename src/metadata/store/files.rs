//! CRC-framed records and atomically replaced small files.
//!
//! A record is `[len: u32 LE][crc32c(payload): u32 LE][payload: len bytes]`;
//! every payload in the metadata directory is JSON.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::metadata::MetadataError;

/// Bytes before a record's payload.
pub(super) const FRAME_HEADER_LEN: usize = 8;
/// Largest payload; a larger length field is treated as garbage.
pub(super) const MAX_RECORD_LEN: u32 = 256 << 20;

/// Serializes `value` and appends it to `out` as one framed record.
pub(super) fn encode_record<T: Serialize>(
    what: &'static str,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), MetadataError> {
    let payload =
        serde_json::to_vec(value).map_err(|source| MetadataError::Encode { what, source })?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|len| *len <= MAX_RECORD_LEN)
        .ok_or(MetadataError::RecordTooLarge {
            what,
            len: payload.len(),
            max: MAX_RECORD_LEN,
        })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// What [`decode_frame`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Frame<'a> {
    /// A complete record with a good checksum, and its total length.
    Record { payload: &'a [u8], len: usize },
    /// Nothing left.
    End,
    /// An incomplete or damaged record.
    Bad { reason: String },
}

pub(super) fn decode_frame(buf: &[u8]) -> Frame<'_> {
    if buf.is_empty() {
        return Frame::End;
    }
    let Some((header, rest)) = buf.split_first_chunk::<FRAME_HEADER_LEN>() else {
        return Frame::Bad {
            reason: format!("incomplete record header. len={}", buf.len()),
        };
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_RECORD_LEN {
        return Frame::Bad {
            reason: format!("record length out of range. len={len}"),
        };
    }
    let len = len as usize;
    let Some(payload) = rest.get(..len) else {
        return Frame::Bad {
            reason: format!("incomplete record. len={len}, available={}", rest.len()),
        };
    };
    let actual = crc32c::crc32c(payload);
    if actual != crc {
        return Frame::Bad {
            reason: format!(
                "record checksum mismatch. expected={crc:#010x}, actual={actual:#010x}"
            ),
        };
    }
    Frame::Record {
        payload,
        len: FRAME_HEADER_LEN + len,
    }
}

pub(super) fn io_error(
    op: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> MetadataError {
    let path = path.to_path_buf();
    move |source| MetadataError::Io { op, path, source }
}

/// Fsyncs a directory so that renames and new files in it are durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), MetadataError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync dir", dir))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` with `bytes`: write a temporary file, fsync, rename, fsync
/// the directory. A crash leaves either the old or the new file.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), MetadataError> {
    let tmp = tmp_path(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_error("create", &tmp))?;
    file.write_all(bytes).map_err(io_error("write", &tmp))?;
    file.sync_all().map_err(io_error("sync", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_error("rename", path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Writes `value` as the only record of `path`, atomically.
pub(super) fn write_record_file<T: Serialize>(
    what: &'static str,
    path: &Path,
    value: &T,
) -> Result<(), MetadataError> {
    let mut bytes = Vec::new();
    encode_record(what, value, &mut bytes)?;
    write_atomically(path, &bytes)
}

/// Reads a file written by [`write_record_file`]; `None` if it does not exist.
/// Such files are replaced atomically, so any damage is corruption.
pub(super) fn read_record_file<T: DeserializeOwned>(
    path: &Path,
) -> Result<Option<T>, MetadataError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("read", path)(e)),
    };
    let corrupt = |reason: String| MetadataError::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason,
    };
    match decode_frame(&bytes) {
        Frame::Record { payload, len } if len == bytes.len() => serde_json::from_slice(payload)
            .map(Some)
            .map_err(|e| corrupt(format!("undecodable record. error={e}"))),
        Frame::Record { len, .. } => Err(corrupt(format!(
            "trailing bytes after the record. len={}, record_len={len}",
            bytes.len()
        ))),
        Frame::End => Err(corrupt("empty file".to_string())),
        Frame::Bad { reason } => Err(corrupt(reason)),
    }
}

/// Fails unless `version` is `supported`.
pub(super) fn check_version(
    path: &Path,
    version: u32,
    supported: u32,
) -> Result<(), MetadataError> {
    if version == supported {
        Ok(())
    } else {
        Err(MetadataError::UnsupportedVersion {
            path: path.to_path_buf(),
            version,
            supported,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_damage() {
        let mut buf = Vec::new();
        encode_record("test", &"hello", &mut buf).expect("encode");
        encode_record("test", &42u32, &mut buf).expect("encode");
        let Frame::Record { payload, len } = decode_frame(&buf) else {
            panic!("first record");
        };
        assert_eq!(payload, b"\"hello\"");
        let Frame::Record { payload, len: len2 } = decode_frame(&buf[len..]) else {
            panic!("second record");
        };
        assert_eq!(payload, b"42");
        assert_eq!(decode_frame(&buf[len + len2..]), Frame::End);

        for cut in 1..len {
            assert!(
                matches!(decode_frame(&buf[..cut]), Frame::Bad { .. }),
                "cut={cut}"
            );
        }
        let mut flipped = buf.clone();
        flipped[FRAME_HEADER_LEN + 1] ^= 0x40;
        assert!(matches!(decode_frame(&flipped), Frame::Bad { .. }));
        let mut huge = buf.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_frame(&huge), Frame::Bad { .. }));
    }

    #[test]
    fn record_file_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        assert_eq!(
            read_record_file::<u64>(&path).expect("missing is none"),
            None
        );
        write_record_file("test", &path, &7u64).expect("write");
        write_record_file("test", &path, &8u64).expect("overwrite");
        assert_eq!(read_record_file::<u64>(&path).expect("read"), Some(8));
        assert!(!tmp_path(&path).exists());

        let mut bytes = fs::read(&path).expect("read raw");
        bytes.pop();
        fs::write(&path, &bytes).expect("damage");
        assert!(matches!(
            read_record_file::<u64>(&path),
            Err(MetadataError::Corrupt { .. })
        ));
    }
}
