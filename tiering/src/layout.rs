//! Object names: `<prefix>/<cluster_id>/<topic>-<topic_id>/<partition>/`
//! holding `manifest.json` and `<base_offset:020>-<upload id>.<ext>` objects.
//!
//! A path component stays within 255 bytes, the limit of local file
//! systems: a topic name longer than [`MAX_TOPIC_IN_DIR`] bytes is written
//! as its first [`MAX_TOPIC_IN_DIR`] bytes, `+` and the CRC-32C of the whole
//! name in 8 hex digits (`+` is never in a topic name); the full name is in
//! the partitions' manifests.

use object_store::path::{Path as ObjectPath, PathPart};

use crate::manifest::ObjectKind;

/// Longest topic name written whole in a topic directory's name.
pub const MAX_TOPIC_IN_DIR: usize = 200;

/// File name of a partition's manifest.
pub const MANIFEST_NAME: &str = "manifest.json";

/// Names one partition of one topic of one cluster in the tier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionKey {
    pub cluster_id: String,
    pub topic: String,
    /// The topic's id (stable for its life); written as 32 hex digits.
    pub topic_id: [u8; 16],
    pub partition: i32,
}

impl PartitionKey {
    pub fn new(cluster_id: &str, topic: &str, topic_id: [u8; 16], partition: i32) -> Self {
        PartitionKey {
            cluster_id: cluster_id.to_string(),
            topic: topic.to_string(),
            topic_id,
            partition,
        }
    }

    /// The topic id as written in paths and manifests (32 lowercase hex digits).
    pub fn topic_id_hex(&self) -> String {
        hex(&self.topic_id)
    }

    /// `topic-partition` for messages.
    pub fn display_name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }

    /// Directory of this partition under `root`.
    pub fn dir(&self, root: &ObjectPath) -> ObjectPath {
        let topic_dir = format!("{}-{}", topic_in_dir(&self.topic), self.topic_id_hex());
        let partition = self.partition.to_string();
        let parts = root.parts().chain([
            PathPart::from(self.cluster_id.as_str()),
            PathPart::from(topic_dir.as_str()),
            PathPart::from(partition.as_str()),
        ]);
        ObjectPath::from_iter(parts)
    }
}

/// A topic name as a directory name holds it: whole up to
/// [`MAX_TOPIC_IN_DIR`] bytes, else cut there and marked (module docs).
pub fn topic_in_dir(topic: &str) -> String {
    if topic.len() <= MAX_TOPIC_IN_DIR {
        return topic.to_string();
    }
    // Topic names are ASCII, so any byte is a character boundary; still,
    // cut at one.
    let mut cut = MAX_TOPIC_IN_DIR;
    while !topic.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}+{:08x}", &topic[..cut], crc32c::crc32c(topic.as_bytes()))
}

/// Whether a topic directory's topic part is a cut long name, whose full
/// name is in its manifests.
pub fn is_cut_topic(topic_part: &str) -> bool {
    topic_part.contains('+')
}

/// `dir/name`.
pub fn child(dir: &ObjectPath, name: &str) -> ObjectPath {
    dir.clone().join(name)
}

/// Name of one object of a segment: `<base:020>-<id>.<ext>`.
pub fn object_name(base_offset: i64, id: &str, kind: ObjectKind) -> String {
    format!("{base_offset:020}-{id}.{}", kind.extension())
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 32 hex digits.
pub fn parse_topic_id(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

/// Splits a topic directory name `<topic>-<32 hex digits>`.
pub fn parse_topic_dir(name: &str) -> Option<(String, [u8; 16])> {
    if name.len() < 34 {
        return None;
    }
    let (topic, rest) = name.split_at(name.len() - 33);
    let id = rest.strip_prefix('-')?;
    if topic.is_empty() {
        return None;
    }
    Some((topic.to_string(), parse_topic_id(id)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_parsing() {
        let id = [0xab; 16];
        let k = PartitionKey::new("clu-ster", "my-topic.v1", id, 3);
        let dir = k.dir(&ObjectPath::from("pre/fix"));
        assert_eq!(
            dir.to_string(),
            format!("pre/fix/clu-ster/my-topic.v1-{}/3", "ab".repeat(16))
        );
        assert_eq!(
            object_name(1234, "u1", ObjectKind::Timeindex),
            "00000000000000001234-u1.timeindex"
        );
        let (t, parsed) = parse_topic_dir(&format!("my-topic.v1-{}", "ab".repeat(16))).expect("p");
        assert_eq!(t, "my-topic.v1");
        assert_eq!(parsed, id);
        assert!(parse_topic_dir("short-abc").is_none());
        // The longest legal topic name still fits a file name.
        let long = "t".repeat(249);
        let k = PartitionKey::new("c", &long, id, 0);
        let dir = k.dir(&ObjectPath::from(""));
        let topic_dir = dir.parts().nth(1).expect("topic dir");
        assert!(
            topic_dir.as_ref().len() <= 255,
            "{}",
            topic_dir.as_ref().len()
        );
        let (t, parsed) = parse_topic_dir(topic_dir.as_ref()).expect("parses");
        assert!(is_cut_topic(&t) && t.starts_with(&"t".repeat(200)));
        assert_eq!(parsed, id);
        assert_ne!(topic_in_dir(&long), topic_in_dir(&"t".repeat(248)));
        assert!(parse_topic_dir(&format!("-{}", "ab".repeat(16))).is_none());
        assert!(parse_topic_dir(&format!("x_{}", "ab".repeat(16))).is_none());
    }
}
