//! Small durable files of a partition directory: the recovery checkpoint,
//! the log start offset, and atomic whole-file writes.
//!
//! # Overview
//!
//! Both checkpoints are text, `key=value` per line, version first:
//!
//! ```text
//! recovery-point-offset-checkpoint      log-start-offset
//!   version=1                             version=1
//!   recovery_point=1200                   log_start_offset=800
//!   clean_shutdown=false
//! ```
//!
//! # Consistency
//!
//! A file that is missing or does not parse reads as absent (with a warning
//! for the latter): recovery then scans more, which is always safe.
//!
//! # Crash safety
//!
//! Every write goes to `<name>.tmp`, is fsynced, renamed over the old file,
//! and the directory is fsynced: a reader sees the old or the new file whole.
//! Leftover `.tmp` files are removed by the loader.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::LogError;

pub(crate) const RECOVERY_CHECKPOINT_FILE: &str = "recovery-point-offset-checkpoint";
pub(crate) const LOG_START_FILE: &str = "log-start-offset";
pub(crate) const TMP_SUFFIX: &str = ".tmp";
const VERSION: &str = "1";

/// Contents of `recovery-point-offset-checkpoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecoveryCheckpoint {
    /// Every batch below this offset is known to be durable and valid.
    pub recovery_point: i64,
    /// The log was closed cleanly and nothing has been written since.
    pub clean_shutdown: bool,
}

impl RecoveryCheckpoint {
    pub(crate) fn encode(&self) -> String {
        format!(
            "version={VERSION}\nrecovery_point={}\nclean_shutdown={}\n",
            self.recovery_point, self.clean_shutdown
        )
    }

    pub(crate) fn decode(text: &str) -> Option<Self> {
        let fields = fields(text, &["version", "recovery_point", "clean_shutdown"])?;
        if fields[0] != VERSION {
            return None;
        }
        Some(RecoveryCheckpoint {
            recovery_point: fields[1].parse().ok().filter(|o: &i64| *o >= 0)?,
            clean_shutdown: fields[2].parse().ok()?,
        })
    }
}

pub(crate) fn encode_log_start(offset: i64) -> String {
    format!("version={VERSION}\nlog_start_offset={offset}\n")
}

pub(crate) fn decode_log_start(text: &str) -> Option<i64> {
    let fields = fields(text, &["version", "log_start_offset"])?;
    if fields[0] != VERSION {
        return None;
    }
    fields[1].parse().ok().filter(|o: &i64| *o >= 0)
}

/// The values of exactly `keys`, in order, one `key=value` per line.
pub(crate) fn fields<'a>(text: &'a str, keys: &[&str]) -> Option<Vec<&'a str>> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() != keys.len() {
        return None;
    }
    lines
        .iter()
        .zip(keys)
        .map(|(line, key)| {
            let (k, v) = line.split_once('=')?;
            (k.trim() == *key).then_some(v.trim())
        })
        .collect()
}

pub(crate) fn read_recovery(dir: &Path) -> Result<Option<RecoveryCheckpoint>, LogError> {
    let path = dir.join(RECOVERY_CHECKPOINT_FILE);
    let Some(text) = read_optional(&path)? else {
        return Ok(None);
    };
    let checkpoint = RecoveryCheckpoint::decode(&text);
    if checkpoint.is_none() {
        tracing::warn!(file = %path.display(), "ignoring unreadable recovery checkpoint; scanning every segment");
    }
    Ok(checkpoint)
}

pub(crate) fn write_recovery(dir: &Path, checkpoint: RecoveryCheckpoint) -> Result<(), LogError> {
    let path = dir.join(RECOVERY_CHECKPOINT_FILE);
    write_atomic(&path, checkpoint.encode().as_bytes()).map_err(|e| LogError::io("write", &path, e))
}

pub(crate) fn read_log_start(dir: &Path) -> Result<Option<i64>, LogError> {
    let path = dir.join(LOG_START_FILE);
    let Some(text) = read_optional(&path)? else {
        return Ok(None);
    };
    let offset = decode_log_start(&text);
    if offset.is_none() {
        tracing::warn!(file = %path.display(), "ignoring unreadable log start offset checkpoint");
    }
    Ok(offset)
}

pub(crate) fn write_log_start(dir: &Path, offset: i64) -> Result<(), LogError> {
    let path = dir.join(LOG_START_FILE);
    write_atomic(&path, encode_log_start(offset).as_bytes())
        .map_err(|e| LogError::io("write", &path, e))
}

fn read_optional(path: &Path) -> Result<Option<String>, LogError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::io("read", path, e)),
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
}

/// Replaces `path` with `bytes` atomically and durably (tmp, fsync, rename,
/// fsync of the directory).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_all(&[(path, bytes)])
}

/// [`write_atomic`] of several files of one directory, with one fsync of
/// the directory for all: every tmp file written and fsynced, then each
/// renamed, then the directory fsynced. A crash leaves each file old or
/// new, as [`write_atomic`] does.
pub(crate) fn write_atomic_all(files: &[(&Path, &[u8])]) -> io::Result<()> {
    for (path, bytes) in files {
        let mut file = File::create(tmp_path(path))?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    let mut dirs: Vec<&Path> = Vec::new();
    for (path, _) in files {
        fs::rename(tmp_path(path), path)?;
        if let Some(dir) = path.parent().filter(|d| !dirs.contains(d)) {
            dirs.push(dir);
        }
    }
    dirs.into_iter().try_for_each(sync_dir)
}

/// fsyncs a directory so that created, renamed and removed entries persist.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_checkpoint_round_trip() {
        let cp = RecoveryCheckpoint {
            recovery_point: 1200,
            clean_shutdown: true,
        };
        assert_eq!(
            cp.encode(),
            "version=1\nrecovery_point=1200\nclean_shutdown=true\n"
        );
        assert_eq!(RecoveryCheckpoint::decode(&cp.encode()), Some(cp));
        assert_eq!(RecoveryCheckpoint::decode(""), None);
        assert_eq!(
            RecoveryCheckpoint::decode("version=2\nrecovery_point=1\nclean_shutdown=true\n"),
            None
        );
        assert_eq!(
            RecoveryCheckpoint::decode("version=1\nrecovery_point=-1\nclean_shutdown=true\n"),
            None
        );
        assert_eq!(
            RecoveryCheckpoint::decode("version=1\nrecovery_point=1\n"),
            None
        );
    }

    #[test]
    fn log_start_round_trip() {
        assert_eq!(decode_log_start(&encode_log_start(77)), Some(77));
        assert_eq!(decode_log_start("version=1\nlog_start_offset=x\n"), None);
        assert_eq!(decode_log_start("garbage"), None);
    }

    #[test]
    fn several_files_replace_theirs_and_leave_no_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, b"old").unwrap();
        write_atomic_all(&[(&a, b"new a"), (&b, b"new b")]).unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"new a");
        assert_eq!(fs::read(&b).unwrap(), b"new b");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // A directory that is not there: an error, and nothing renamed.
        let missing = dir.path().join("no").join("c");
        assert!(write_atomic_all(&[(&a, b"newer"), (&missing, b"c")]).is_err());
        assert_eq!(fs::read(&a).unwrap(), b"new a");
    }

    #[test]
    fn files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_recovery(dir.path()).unwrap(), None);
        assert_eq!(read_log_start(dir.path()).unwrap(), None);
        let cp = RecoveryCheckpoint {
            recovery_point: 5,
            clean_shutdown: false,
        };
        write_recovery(dir.path(), cp).unwrap();
        write_log_start(dir.path(), 3).unwrap();
        assert_eq!(read_recovery(dir.path()).unwrap(), Some(cp));
        assert_eq!(read_log_start(dir.path()).unwrap(), Some(3));
        fs::write(dir.path().join(LOG_START_FILE), b"nonsense").unwrap();
        assert_eq!(read_log_start(dir.path()).unwrap(), None);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(TMP_SUFFIX))
            .collect();
        assert!(leftovers.is_empty());
    }
}
