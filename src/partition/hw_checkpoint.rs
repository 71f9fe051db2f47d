//! The high-watermark checkpoint: one file per data directory,
//! `replication-offset-checkpoint` (Kafka's name and layout: a version
//! line `0`, a count line, then `topic partition offset` lines), written
//! every few seconds and at shutdown with the high watermark of each
//! replicated partition.
//!
//! A replicated partition opened after a restart cannot otherwise tell
//! which of its records were committed, and would expose none until its
//! followers' fetches (or its leader) said so: a consumer asking for the
//! latest offset in that moment would be sent back to the log start. The
//! checkpoint is never ahead of what was committed (a high watermark only
//! counts records every in-sync replica had made durable), so starting
//! from it, cut to the log end, exposes nothing uncommitted.
//!
//! A missing, unreadable or damaged file is not an error: partitions start
//! at their log start as without one, and the damage is logged.

use std::collections::HashMap;
use std::path::Path;

use crate::log::checkpoint::write_atomic;

pub const FILE: &str = "replication-offset-checkpoint";

/// Topic and partition index.
pub type Key = (String, i32);

/// Writes `entries` atomically (tmp, fsync, rename).
pub fn write(dir: &Path, entries: &[(Key, i64)]) -> std::io::Result<()> {
    let mut text = format!("0\n{}\n", entries.len());
    for ((topic, partition), offset) in entries {
        text.push_str(&format!("{topic} {partition} {offset}\n"));
    }
    write_atomic(&dir.join(FILE), text.as_bytes())
}

/// Reads the checkpoint of `dir`: empty when there is none or it is
/// damaged (logged).
pub fn read(dir: &Path) -> HashMap<Key, i64> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the high-watermark checkpoint; replicated partitions start at their log start");
            return HashMap::new();
        }
    };
    match decode(&text) {
        Ok(m) => m,
        Err(why) => {
            tracing::warn!(path = %path.display(), why, "damaged high-watermark checkpoint; replicated partitions start at their log start");
            HashMap::new()
        }
    }
}

fn decode(text: &str) -> Result<HashMap<Key, i64>, String> {
    let mut lines = text.lines();
    match lines.next() {
        Some("0") => {}
        other => return Err(format!("unknown version {other:?}")),
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.parse().ok())
        .ok_or("no entry count")?;
    let mut out = HashMap::with_capacity(count);
    for line in lines.by_ref().take(count) {
        let mut f = line.rsplitn(3, ' ');
        let (Some(offset), Some(partition), Some(topic)) = (f.next(), f.next(), f.next()) else {
            return Err(format!("malformed entry {line:?}"));
        };
        let offset: i64 = offset
            .parse()
            .map_err(|_| format!("bad offset in {line:?}"))?;
        let partition: i32 = partition
            .parse()
            .map_err(|_| format!("bad partition in {line:?}"))?;
        if offset < 0 || partition < 0 || topic.is_empty() {
            return Err(format!("bad entry {line:?}"));
        }
        out.insert((topic.to_string(), partition), offset);
    }
    if out.len() != count || lines.next().is_some() {
        return Err(format!("{count} entries announced, {} found", out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_missing_file_reads_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).is_empty());
    }

    #[test]
    fn damage_reads_empty() {
        let dir = tempfile::tempdir().unwrap();
        for text in [
            "",
            "1\n0\n",
            "0\n2\nt 0 5\n",
            "0\n1\nt 0 5\nextra 1 1\n",
            "0\n1\nt x 5\n",
            "0\n1\nt 0 -5\n",
            "0\n1\nt0 5\n",
        ] {
            std::fs::write(dir.path().join(FILE), text).unwrap();
            assert!(read(dir.path()).is_empty(), "{text:?}");
        }
    }

    proptest! {
        #[test]
        fn entries_round_trip(
            entries in proptest::collection::hash_map(
                ("[a-zA-Z0-9._-]{1,20}", 0i32..10_000),
                0i64..i64::MAX,
                0..50,
            )
        ) {
            let dir = tempfile::tempdir().unwrap();
            let list: Vec<(Key, i64)> = entries.clone().into_iter().collect();
            write(dir.path(), &list).unwrap();
            prop_assert_eq!(read(dir.path()), entries);
        }
    }
}
