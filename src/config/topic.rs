//! Kafka's topic configs: each one's type, default, validation (Kafka's
//! rules), and whether Strata applies it. Kafka users set all of these
//! (Kafka Streams, Debezium, admin tools); every one is accepted with
//! Kafka's validation, and those Strata has no mechanism for say so in
//! DescribeConfigs' documentation.

use std::collections::BTreeMap;

use kafka_protocol::records::Compression;

use super::BrokerConfig;

/// Kafka's config types, with their DescribeConfigs codes (v3+).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Boolean,
    /// One of the given values.
    OneOf(&'static [&'static str]),
    /// Free text.
    Text,
    Int {
        min: i64,
        max: i64,
    },
    Long {
        min: i64,
    },
    Double {
        min: f64,
        max: f64,
    },
    /// A comma-separated list (any items).
    List,
    /// A table's value schema (`super::table_schema`).
    ValueSchema,
}

impl Kind {
    /// Kafka's ConfigType code for DescribeConfigs.
    pub fn code(self) -> i8 {
        match self {
            Kind::Boolean => 1,
            Kind::OneOf(_) | Kind::Text | Kind::ValueSchema => 2,
            Kind::Int { .. } => 3,
            Kind::Long { .. } => 5,
            Kind::Double { .. } => 6,
            Kind::List => 7,
        }
    }
}

/// Where a config's default comes from.
#[derive(Debug, Clone, Copy)]
pub enum Default {
    Fixed(&'static str),
    /// The broker-wide setting of that name.
    Broker(fn(&BrokerConfig) -> String),
}

/// One topic config.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    pub default: Default,
    /// `None`: Strata applies it. `Some(why)`: accepted and stored, with no
    /// effect, for the reason given.
    pub no_effect: Option<&'static str>,
}

const LONG_MAX: &str = "9223372036854775807";
const NO_REPLICATION: Option<&str> =
    Some("Strata does not replicate partitions yet; accepted, without effect.");
const FSYNC: Option<&str> = Some(
    "Strata syncs to disk for acks=all in broker-wide rounds, not on a count or timer; accepted, without effect.",
);

/// Every topic config Kafka defines (and Strata's own), by name.
pub const SPECS: &[Spec] = &[
    Spec {
        name: "cleanup.policy",
        kind: Kind::List,
        default: Default::Fixed("delete"),
        no_effect: None,
    },
    Spec {
        name: "compression.gzip.level",
        kind: Kind::Int { min: -1, max: 9 },
        default: Default::Fixed("-1"),
        no_effect: Some("Strata recompresses with each codec's default level; accepted, without effect."),
    },
    Spec {
        name: "compression.lz4.level",
        kind: Kind::Int { min: 1, max: 17 },
        default: Default::Fixed("9"),
        no_effect: Some("Strata recompresses with each codec's default level; accepted, without effect."),
    },
    Spec {
        name: "compression.type",
        kind: Kind::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        default: Default::Fixed("producer"),
        no_effect: None,
    },
    Spec {
        name: "compression.zstd.level",
        kind: Kind::Int {
            min: -131_072,
            max: 22,
        },
        default: Default::Fixed("3"),
        no_effect: Some("Strata recompresses with each codec's default level; accepted, without effect."),
    },
    Spec {
        name: "delete.retention.ms",
        kind: Kind::Long { min: 0 },
        default: Default::Fixed("86400000"),
        no_effect: None,
    },
    Spec {
        name: "file.delete.delay.ms",
        kind: Kind::Long { min: 0 },
        default: Default::Fixed("60000"),
        no_effect: Some("Strata deletes a segment's files when retention drops it; accepted, without effect."),
    },
    Spec {
        name: "flush.messages",
        kind: Kind::Long { min: 1 },
        default: Default::Fixed(LONG_MAX),
        no_effect: FSYNC,
    },
    Spec {
        name: "flush.ms",
        kind: Kind::Long { min: 0 },
        default: Default::Fixed(LONG_MAX),
        no_effect: FSYNC,
    },
    Spec {
        name: "follower.replication.throttled.replicas",
        kind: Kind::List,
        default: Default::Fixed(""),
        no_effect: NO_REPLICATION,
    },
    Spec {
        name: "index.interval.bytes",
        kind: Kind::Int {
            min: 0,
            max: i32::MAX as i64,
        },
        default: Default::Fixed("4096"),
        no_effect: None,
    },
    Spec {
        name: "leader.replication.throttled.replicas",
        kind: Kind::List,
        default: Default::Fixed(""),
        no_effect: NO_REPLICATION,
    },
    Spec {
        name: "local.retention.bytes",
        kind: Kind::Long { min: -2 },
        default: Default::Fixed("-2"),
        no_effect: None,
    },
    Spec {
        name: "local.retention.ms",
        kind: Kind::Long { min: -2 },
        default: Default::Fixed("-2"),
        no_effect: None,
    },
    Spec {
        name: "max.compaction.lag.ms",
        kind: Kind::Long { min: 1 },
        default: Default::Fixed(LONG_MAX),
        no_effect: None,
    },
    Spec {
        name: "max.message.bytes",
        kind: Kind::Int {
            min: 0,
            max: i32::MAX as i64,
        },
        default: Default::Broker(|c| c.message_max_bytes.to_string()),
        no_effect: None,
    },
    Spec {
        name: "message.downconversion.enable",
        kind: Kind::Boolean,
        default: Default::Fixed("true"),
        no_effect: Some("Strata serves record batches as stored (magic 2); accepted, without effect."),
    },
    Spec {
        name: "message.format.version",
        kind: Kind::Text,
        default: Default::Fixed("3.0-IV1"),
        no_effect: Some("Strata stores magic 2 record batches only; accepted, without effect."),
    },
    Spec {
        name: "message.timestamp.after.max.ms",
        kind: Kind::Long { min: 0 },
        default: Default::Fixed(LONG_MAX),
        no_effect: Some("Strata does not check record timestamps against its clock yet; accepted, without effect."),
    },
    Spec {
        name: "message.timestamp.before.max.ms",
        kind: Kind::Long { min: 0 },
        default: Default::Fixed(LONG_MAX),
        no_effect: Some("Strata does not check record timestamps against its clock yet; accepted, without effect."),
    },
    Spec {
        name: "message.timestamp.difference.max.ms",
        kind: Kind::Long { min: 0 },
        default: Default::Fixed(LONG_MAX),
        no_effect: Some("Strata does not check record timestamps against its clock yet; accepted, without effect."),
    },
    Spec {
        name: "message.timestamp.type",
        kind: Kind::OneOf(&["CreateTime", "LogAppendTime"]),
        default: Default::Fixed("CreateTime"),
        no_effect: None,
    },
    Spec {
        name: "min.cleanable.dirty.ratio",
        kind: Kind::Double { min: 0.0, max: 1.0 },
        default: Default::Fixed("0.5"),
        no_effect: None,
    },
    Spec {
        name: "min.compaction.lag.ms",
        kind: Kind::Long { min: 0 },
        default: Default::Fixed("0"),
        no_effect: None,
    },
    Spec {
        name: "min.insync.replicas",
        kind: Kind::Int {
            min: 1,
            max: i32::MAX as i64,
        },
        default: Default::Fixed("1"),
        no_effect: None,
    },
    Spec {
        name: "preallocate",
        kind: Kind::Boolean,
        default: Default::Fixed("false"),
        no_effect: Some("Strata does not preallocate segment files; accepted, without effect."),
    },
    Spec {
        name: "remote.log.copy.disable",
        kind: Kind::Boolean,
        default: Default::Fixed("false"),
        no_effect: Some("Strata's uploads follow remote.storage.enable; accepted, without effect."),
    },
    Spec {
        name: "remote.log.delete.on.disable",
        kind: Kind::Boolean,
        default: Default::Fixed("false"),
        no_effect: Some("Strata keeps tiered data when tiering is turned off; accepted, without effect."),
    },
    Spec {
        name: "remote.storage.enable",
        kind: Kind::Boolean,
        default: Default::Fixed("true"),
        no_effect: None,
    },
    Spec {
        name: "strata.table.enable",
        kind: Kind::Boolean,
        default: Default::Fixed("false"),
        no_effect: None,
    },
    Spec {
        name: "strata.table.value.format",
        kind: Kind::OneOf(&["binary", "json"]),
        default: Default::Fixed("binary"),
        no_effect: None,
    },
    Spec {
        name: "strata.table.value.schema",
        kind: Kind::ValueSchema,
        default: Default::Fixed("{}"),
        no_effect: None,
    },
    Spec {
        name: "strata.table.retention.ms",
        kind: Kind::Long { min: -2 },
        default: Default::Fixed("-2"),
        no_effect: None,
    },
    Spec {
        name: "retention.bytes",
        kind: Kind::Long { min: -1 },
        default: Default::Fixed("-1"),
        no_effect: None,
    },
    Spec {
        name: "retention.ms",
        kind: Kind::Long { min: -1 },
        default: Default::Broker(|c| c.log_retention_ms.to_string()),
        no_effect: None,
    },
    Spec {
        name: "segment.bytes",
        kind: Kind::Int {
            min: 14,
            max: i32::MAX as i64,
        },
        default: Default::Broker(|c| c.log_segment_bytes.to_string()),
        no_effect: None,
    },
    Spec {
        name: "segment.index.bytes",
        kind: Kind::Int {
            min: 4,
            max: i32::MAX as i64,
        },
        default: Default::Fixed("10485760"),
        no_effect: Some("Strata sizes segment indexes itself; accepted, without effect."),
    },
    Spec {
        name: "segment.jitter.ms",
        kind: Kind::Long { min: 0 },
        default: Default::Fixed("0"),
        no_effect: Some("Strata rolls segments at segment.ms exactly; accepted, without effect."),
    },
    Spec {
        name: "segment.ms",
        kind: Kind::Long { min: 1 },
        default: Default::Fixed("604800000"),
        no_effect: None,
    },
    Spec {
        name: "unclean.leader.election.enable",
        kind: Kind::Boolean,
        default: Default::Fixed("false"),
        no_effect: None,
    },
];

/// A broker config Kafka allows to change at run time, and the topic config
/// whose default it sets (if any).
#[derive(Debug, Clone, Copy)]
pub struct DynamicBroker {
    pub name: &'static str,
    pub topic: Option<&'static str>,
    /// Its type, when it sets no topic config's default.
    pub kind: Kind,
}

const fn dynamic(name: &'static str, topic: &'static str) -> DynamicBroker {
    DynamicBroker {
        name,
        topic: Some(topic),
        kind: Kind::Text,
    }
}

/// Kafka's cluster-wide dynamic broker configs Strata takes (AlterConfigs on
/// the broker resource): the topic defaults, and the log cleaner's (read by
/// the cleaner before each round).
pub const DYNAMIC_BROKER: &[DynamicBroker] = &[
    dynamic("compression.type", "compression.type"),
    dynamic("log.cleaner.delete.retention.ms", "delete.retention.ms"),
    dynamic("log.cleaner.max.compaction.lag.ms", "max.compaction.lag.ms"),
    dynamic(
        "log.cleaner.min.cleanable.ratio",
        "min.cleanable.dirty.ratio",
    ),
    dynamic("log.cleaner.min.compaction.lag.ms", "min.compaction.lag.ms"),
    dynamic("log.index.interval.bytes", "index.interval.bytes"),
    dynamic("log.local.retention.bytes", "local.retention.bytes"),
    dynamic("log.local.retention.ms", "local.retention.ms"),
    dynamic("log.message.timestamp.type", "message.timestamp.type"),
    dynamic("log.retention.bytes", "retention.bytes"),
    dynamic("log.retention.ms", "retention.ms"),
    dynamic("log.roll.ms", "segment.ms"),
    dynamic("log.segment.bytes", "segment.bytes"),
    dynamic("message.max.bytes", "max.message.bytes"),
    dynamic("min.insync.replicas", "min.insync.replicas"),
    dynamic(
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
    ),
    DynamicBroker {
        name: "log.cleaner.threads",
        topic: None,
        kind: Kind::Int {
            min: 1,
            max: i32::MAX as i64,
        },
    },
    DynamicBroker {
        name: "log.cleaner.io.max.bytes.per.second",
        topic: None,
        kind: Kind::Double {
            min: 0.0,
            max: f64::MAX,
        },
    },
    DynamicBroker {
        name: "log.cleaner.dedupe.buffer.size",
        topic: None,
        kind: Kind::Long { min: 0 },
    },
    DynamicBroker {
        name: "log.cleaner.backoff.ms",
        topic: None,
        kind: Kind::Long { min: 0 },
    },
];

/// The dynamic broker config `name`, if Kafka allows changing it at run
/// time and Strata takes it.
pub fn dynamic_broker(name: &str) -> Option<&'static DynamicBroker> {
    DYNAMIC_BROKER.iter().find(|d| d.name == name)
}

/// Checks a dynamic broker config's value by the rules of the topic config
/// it sets, or its own type; the message names the broker config.
pub fn check_dynamic_broker(d: &DynamicBroker, value: &str) -> Result<(), String> {
    let kind = match d.topic.and_then(spec) {
        Some(s) => s.kind,
        None => d.kind,
    };
    check_kind(d.name, kind, value)
}

/// The spec of topic config `name`, if Kafka (or Strata) defines one.
pub fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

/// Checks `value` against `spec`'s type and Kafka's rules; returns the
/// message of an INVALID_CONFIG.
pub fn check(spec: &Spec, value: &str) -> Result<(), String> {
    check_kind(spec.name, spec.kind, value)
}

/// Checks the value of config `key` against its type.
fn check_kind(key: &str, kind: Kind, value: &str) -> Result<(), String> {
    let bad = |expected: String| {
        Err(format!(
            "invalid value for {key}: expected {expected}. value={value:?}"
        ))
    };
    match kind {
        Kind::Boolean => match value {
            "true" | "false" => Ok(()),
            _ => bad("true or false".into()),
        },
        Kind::OneOf(values) => {
            if values.contains(&value) {
                Ok(())
            } else {
                bad(format!("one of {}", values.join(", ")))
            }
        }
        Kind::Text | Kind::List => Ok(()),
        Kind::ValueSchema => super::table_schema::ValueSchema::parse(value)
            .map(|_| ())
            .map_err(|e| format!("invalid value for {key}: {e}. value={value:?}")),
        Kind::Int { min, max } => match value.trim().parse::<i64>() {
            Ok(v) if v >= min && v <= max => Ok(()),
            _ => bad(format!("an integer from {min} to {max}")),
        },
        Kind::Long { min } => match value.trim().parse::<i64>() {
            Ok(v) if v >= min => Ok(()),
            _ => bad(format!("an integer >= {min}")),
        },
        Kind::Double { min, max } => match value.trim().parse::<f64>() {
            Ok(v) if v >= min && v <= max => Ok(()),
            _ => bad(format!("a number from {min} to {max}")),
        },
    }
}

/// What DescribeConfigs says of a config: Strata's note when it has no
/// effect, else nothing.
pub fn documentation(name: &str) -> Option<&'static str> {
    spec(name).and_then(|s| s.no_effect)
}

/// Where a topic's config value comes from (DescribeConfigs' sources).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Set on the topic.
    Topic,
    /// A dynamic broker config (cluster-wide default) sets it.
    DynamicBroker,
    /// Kafka's default, or the broker's static setting.
    Default,
}

impl Source {
    /// Kafka's ConfigSource code.
    pub fn code(self) -> i8 {
        match self {
            Source::Topic => 1,
            Source::DynamicBroker => 3,
            Source::Default => 5,
        }
    }
}

/// How long a table topic's Parquet files stay (`strata.table.retention.ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TableRetention {
    /// -2 (the default): a file goes once tier retention has deleted all
    /// its offsets.
    #[default]
    FollowTier,
    /// -1: files stay.
    Forever,
    /// A file goes once its day ended this many ms ago, whatever the tier
    /// keeps.
    Ms(i64),
}

/// A topic's configs, resolved once from the defaults, the dynamic broker
/// configs and the topic's own, in that order. The fields are the configs
/// the broker applies, parsed; every config (applied or not) is kept as
/// text with its source for DescribeConfigs. Values were validated when
/// set; one that does not parse (stored by an older version) counts as its
/// default.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    values: BTreeMap<String, (String, Source)>,
    /// `retention.ms` (None: infinite).
    pub retention_ms: Option<i64>,
    /// `retention.bytes` (None: infinite).
    pub retention_bytes: Option<i64>,
    /// `local.retention.ms`, with -2 resolved to `retention.ms`.
    pub local_retention_ms: Option<i64>,
    /// `local.retention.bytes`, with -2 resolved to `retention.bytes`.
    pub local_retention_bytes: Option<i64>,
    /// `remote.storage.enable`; internal topics (`__` names) stay local.
    pub remote_storage: bool,
    /// `strata.table.enable`: uploaded segments are also written as
    /// Parquet beside the tier (see `crate::table`).
    pub table: bool,
    /// `strata.table.retention.ms`: how long table files stay.
    pub table_retention: TableRetention,
    /// With `strata.table.value.format=json`, the typed columns of
    /// `strata.table.value.schema` (None: values stay binary only).
    pub table_value: Option<std::sync::Arc<super::table_schema::ValueSchema>>,
    /// `segment.bytes`
    pub segment_bytes: u64,
    /// `segment.ms` (None: never roll by time).
    pub segment_ms: Option<i64>,
    /// `index.interval.bytes`
    pub index_interval_bytes: u32,
    /// `max.message.bytes`
    pub max_message_bytes: usize,
    /// `message.timestamp.type` is LogAppendTime.
    pub log_append_time: bool,
    /// `compression.type` as a codec (None: `producer`, stored as sent).
    pub compression: Option<Compression>,
    /// `min.insync.replicas`
    pub min_insync_replicas: i32,
    /// `strata.read.replica.of`: the cluster whose topic this one replicates
    /// from the tier, read-only.
    pub read_replica_of: Option<String>,
    /// `cleanup.policy` holds `delete`: retention deletes old segments.
    pub delete_policy: bool,
    /// `cleanup.policy` holds `compact`: the log cleaner keeps the last
    /// record of each key, with these settings.
    pub compaction: Option<crate::log::Compaction>,
}

impl TopicConfig {
    /// Topic `name`'s configs: `overrides` (its own) over `dynamic` (the
    /// dynamic broker configs) over the defaults of `broker`.
    pub fn resolve(
        broker: &BrokerConfig,
        dynamic: &BTreeMap<String, String>,
        name: &str,
        overrides: &BTreeMap<String, String>,
    ) -> TopicConfig {
        let mut values: BTreeMap<String, (String, Source)> = broker
            .topic_defaults()
            .into_iter()
            .map(|(k, v)| (k.to_string(), (v, Source::Default)))
            .collect();
        for (k, v) in dynamic {
            if let Some(t) = dynamic_broker(k).and_then(|d| d.topic) {
                values.insert(t.to_string(), (v.clone(), Source::DynamicBroker));
            }
        }
        for (k, v) in overrides {
            values.insert(k.clone(), (v.clone(), Source::Topic));
        }
        let text = |k: &str| values.get(k).map_or("", |(v, _)| v.as_str());
        let default = |k: &str| match spec(k).map(|s| s.default) {
            Some(Default::Fixed(v)) => v.parse().ok(),
            Some(Default::Broker(f)) => f(broker).parse().ok(),
            None => None,
        };
        let int = |k: &str| -> i64 {
            text(k)
                .trim()
                .parse()
                .ok()
                .or_else(|| default(k))
                .unwrap_or(-1)
        };
        let opt = |v: i64| (v >= 0).then_some(v);
        let policy = text("cleanup.policy");
        let delete_policy = policy_holds(policy, "delete");
        let compaction = policy_holds(policy, "compact").then(|| crate::log::Compaction {
            min_cleanable_dirty_ratio: text("min.cleanable.dirty.ratio")
                .trim()
                .parse()
                .unwrap_or(0.5),
            min_compaction_lag_ms: int("min.compaction.lag.ms").max(0),
            max_compaction_lag_ms: int("max.compaction.lag.ms").max(1),
            delete_retention_ms: int("delete.retention.ms").max(0),
        });
        // Retention deletes only under the `delete` policy.
        let retention_ms = opt(int("retention.ms")).filter(|_| delete_policy);
        let retention_bytes = opt(int("retention.bytes")).filter(|_| delete_policy);
        let local = |k: &str, total: Option<i64>| match int(k) {
            -2 => total,
            v => opt(v),
        };
        TopicConfig {
            retention_ms,
            retention_bytes,
            local_retention_ms: local("local.retention.ms", retention_ms),
            local_retention_bytes: local("local.retention.bytes", retention_bytes),
            remote_storage: !name.starts_with("__") && text("remote.storage.enable") != "false",
            table: text("strata.table.enable") == "true",
            table_value: super::table_schema::projection(
                text("strata.table.value.format"),
                text("strata.table.value.schema"),
            ),
            table_retention: match int("strata.table.retention.ms") {
                -2 => TableRetention::FollowTier,
                -1 => TableRetention::Forever,
                ms => TableRetention::Ms(ms.max(0)),
            },
            segment_bytes: int("segment.bytes").max(14) as u64,
            segment_ms: opt(int("segment.ms")),
            index_interval_bytes: int("index.interval.bytes").clamp(0, i64::from(u32::MAX)) as u32,
            max_message_bytes: int("max.message.bytes").max(0) as usize,
            log_append_time: text("message.timestamp.type") == "LogAppendTime",
            compression: codec(text("compression.type")),
            min_insync_replicas: int("min.insync.replicas").clamp(1, i64::from(i32::MAX)) as i32,
            read_replica_of: overrides.get(super::READ_REPLICA_CONFIG).cloned(),
            delete_policy,
            compaction,
            values,
        }
    }

    /// A topic's configs on the default broker settings, with `overrides`
    /// set on the topic (for tests).
    #[cfg(test)]
    pub(crate) fn with(name: &str, overrides: &[(&str, &str)]) -> TopicConfig {
        let broker = BrokerConfig::from_args(super::ServeArgs::default()).expect("defaults");
        let own = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TopicConfig::resolve(&broker, &BTreeMap::new(), name, &own)
    }

    /// The value of config `name`, if it is one.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|(v, _)| v.as_str())
    }

    /// Every config with its value and source, by name.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str, Source)> {
        self.values
            .iter()
            .map(|(k, (v, source))| (k.as_str(), v.as_str(), *source))
    }
}

/// Whether the `cleanup.policy` value `value` (a list) holds `policy`.
pub fn policy_holds(value: &str, policy: &str) -> bool {
    value.split(',').any(|p| p.trim() == policy)
}

/// The codec a `compression.type` names (None: `producer`, or unknown).
pub fn codec(compression_type: &str) -> Option<Compression> {
    match compression_type {
        "uncompressed" => Some(Compression::None),
        "gzip" => Some(Compression::Gzip),
        "snappy" => Some(Compression::Snappy),
        "lz4" => Some(Compression::Lz4),
        "zstd" => Some(Compression::Zstd),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_defaults_valid() {
        let c = BrokerConfig::from_args(super::super::ServeArgs::default()).expect("defaults");
        for (i, s) in SPECS.iter().enumerate() {
            assert!(SPECS[..i].iter().all(|o| o.name != s.name), "{}", s.name);
            let d = match s.default {
                Default::Fixed(v) => v.to_string(),
                Default::Broker(f) => f(&c),
            };
            assert!(check(s, &d).is_ok(), "{} default {d}", s.name);
        }
    }

    #[test]
    fn dynamic_broker_configs_name_topic_configs() {
        for d in DYNAMIC_BROKER {
            if let Some(t) = d.topic {
                assert!(spec(t).is_some(), "{} sets {t}", d.name);
            }
        }
        let d = dynamic_broker("log.retention.ms").expect("dynamic");
        assert!(check_dynamic_broker(d, "1000").is_ok());
        let e = check_dynamic_broker(d, "-5").expect_err("below -1");
        assert!(e.contains("log.retention.ms"), "{e}");
        assert!(dynamic_broker("listeners").is_none());
    }

    #[test]
    fn resolve_layers_topic_over_dynamic_over_default() {
        let c = BrokerConfig::from_args(super::super::ServeArgs::default()).expect("defaults");
        let map = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let dynamic = map(&[("log.retention.ms", "5000"), ("min.insync.replicas", "2")]);
        let own = map(&[
            ("min.insync.replicas", "3"),
            ("local.retention.bytes", "-2"),
            ("retention.bytes", "1000"),
            ("compression.type", "zstd"),
        ]);
        let t = TopicConfig::resolve(&c, &dynamic, "orders", &own);
        assert_eq!(t.retention_ms, Some(5000));
        assert_eq!(t.min_insync_replicas, 3);
        assert_eq!(t.local_retention_bytes, Some(1000), "-2 is retention.bytes");
        assert_eq!(t.compression, Some(Compression::Zstd));
        assert!(t.remote_storage);
        let source = |k| t.entries().find(|(n, _, _)| *n == k).map(|(_, _, s)| s);
        assert_eq!(source("retention.ms"), Some(Source::DynamicBroker));
        assert_eq!(source("min.insync.replicas"), Some(Source::Topic));
        assert_eq!(source("segment.ms"), Some(Source::Default));
        assert_eq!(t.get("segment.ms"), Some("604800000"));

        let internal =
            TopicConfig::resolve(&c, &BTreeMap::new(), "__consumer_offsets", &BTreeMap::new());
        assert!(!internal.remote_storage);
        assert_eq!(internal.min_insync_replicas, 1);
        // A stored value that does not parse counts as the default.
        let odd = TopicConfig::resolve(&c, &BTreeMap::new(), "t", &map(&[("segment.ms", "soon")]));
        assert_eq!(odd.segment_ms, Some(604_800_000));
    }

    #[test]
    fn kafkas_rules() {
        let s = |n| spec(n).expect("known");
        assert!(check(s("compression.type"), "lz4").is_ok());
        assert!(check(s("compression.type"), "brotli").is_err());
        assert!(check(s("min.cleanable.dirty.ratio"), "0.3").is_ok());
        assert!(check(s("min.cleanable.dirty.ratio"), "1.5").is_err());
        assert!(check(s("flush.messages"), "0").is_err());
        assert!(check(s("compression.gzip.level"), "10").is_err());
        assert!(check(s("preallocate"), "yes").is_err());
        assert!(check(s("segment.bytes"), "13").is_err());
        assert!(spec("no.such.config").is_none());
    }
}
