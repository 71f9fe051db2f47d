//! `strata tier status|restore|repair|cost`.
//!
//! Status and restore speak the Kafka protocol: status reads ListOffsets
//! (earliest, earliest-local, latest-tiered, latest) and DescribeLogDirs
//! (Strata lists its tier as a second log dir, whose sizes are the bytes in
//! the object store); restore is a CreateTopics with `strata.restore=true`.
//! Repair works on the bucket itself, with the tier settings `strata serve`
//! reads (flags, `STRATA_*`, `--config` file): it rebuilds a partition's
//! lost or damaged manifest from its segment objects.

use std::collections::BTreeMap;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;

use super::output::{print_json, print_str, Columns};
use super::tier_cost::{age_text, CompactionScrape};
use super::{ConnectArgs, Output};
use crate::client::{Client, NewTopic, OffsetSpec};

#[derive(Args, Debug)]
pub struct TierArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    #[command(subcommand)]
    cmd: TierCommand,
}

#[derive(Subcommand, Debug)]
enum TierCommand {
    /// Per partition: local bytes, tier bytes, offsets on each side and upload lag
    Status {
        /// Topics to show (default: every topic)
        topics: Vec<String>,
        /// A broker's metrics URL (once per broker), for the segments each
        /// partition's last scrub found damaged (column SCRUB DAMAGED) and,
        /// for compacted topics, the tier's dirty ratio and last tier
        /// compaction
        #[arg(long = "metrics")]
        metrics: Vec<String>,
    },
    /// Recreate a topic from the tier, or with --all every topic of a
    /// cluster (for a new cluster or an empty data dir), with its partition
    /// count and configs. This cluster becomes the topic's only writer in
    /// the tier: the cluster that wrote it before can no longer write it
    Restore(RestoreArgs),
    /// Rebuild a topic's missing or damaged tier manifests from the segment
    /// objects in the bucket (reads the tier directly, with the broker's tier
    /// settings; a readable manifest is left alone)
    Repair(RepairArgs),
    /// Read back every tier object of a topic and check it (CRC-32C of
    /// every batch, chunk and object, sizes, offsets) against its
    /// manifest; reads the tier directly, with the broker's tier settings.
    /// Exits non-zero when an object is damaged or missing
    Scrub(ScrubArgs),
    /// Object-store requests and bytes per topic (from each broker's
    /// /metrics), bytes stored, and an estimated monthly cost from a price
    /// table (S3 Standard by default)
    Cost(super::tier_cost::CostArgs),
}

#[derive(Args, Debug)]
struct RestoreArgs {
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    topic: Option<String>,
    /// Every topic the tier holds for the cluster --from-cluster names (or
    /// for the only cluster in the tier): reads the tier's listing with the
    /// broker's tier settings; topics that exist already are left alone
    #[arg(long)]
    all: bool,
    /// The cluster whose tier prefix holds the topic, when several do
    #[arg(long)]
    from_cluster: Option<String>,
    /// Take the topic over even though its manifests were written
    /// recently (within the broker's --tier-takeover-quiet-ms): only
    /// when the cluster that wrote it has stopped
    #[arg(long)]
    take_over: bool,
    #[command(flatten)]
    settings: Box<crate::config::ServeArgs>,
}

/// A topic's partitions in the tier, read directly with the broker's tier
/// settings (`scrub`, `repair`).
#[derive(Args, Debug)]
pub(super) struct InTierArgs {
    pub(super) topic: String,
    /// Only this partition [default: every partition the tier holds]
    #[arg(long)]
    partition: Option<i32>,
    /// The cluster whose tier prefix holds the topic, when several do
    #[arg(long)]
    from_cluster: Option<String>,
    /// The topic id (32 hex digits), when the tier holds several topics of this name
    #[arg(long)]
    topic_id: Option<String>,
    #[command(flatten)]
    settings: Box<crate::config::ServeArgs>,
}

#[derive(Args, Debug)]
struct ScrubArgs {
    #[command(flatten)]
    target: InTierArgs,
    /// Read at most this many bytes per second (0: no limit)
    #[arg(long, default_value_t = 0)]
    bytes_per_second: u64,
}

#[derive(Args, Debug)]
struct RepairArgs {
    #[command(flatten)]
    target: InTierArgs,
    /// Show what would be written; write nothing
    #[arg(long)]
    dry_run: bool,
}

pub async fn run(args: TierArgs) -> anyhow::Result<()> {
    match args.cmd {
        TierCommand::Repair(r) => return repair(r, args.conn.output).await,
        TierCommand::Scrub(r) => return scrub(r, args.conn.output).await,
        _ => {}
    }
    let client = args.conn.connect().await?;
    match args.cmd {
        TierCommand::Status { topics, metrics } => {
            status(&client, &topics, &metrics, args.conn.output).await
        }
        TierCommand::Restore(r) => match r.topic {
            Some(topic) => {
                let partitions = restore(&client, &topic, r.from_cluster, r.take_over).await?;
                print_restored(&topic, partitions, args.conn.output)
            }
            None => restore_all(&client, r, args.conn.output).await,
        },
        TierCommand::Cost(c) => super::tier_cost::run(&client, c, args.conn.output).await,
        TierCommand::Repair(_) | TierCommand::Scrub(_) => unreachable!("handled above"),
    }
}

/// The tier the broker settings `settings` name, read directly (no disk
/// cache: building one empties its directory, which may be a running
/// broker's); and its URL.
fn open_tier(settings: crate::config::ServeArgs) -> anyhow::Result<(tiering::TierStore, String)> {
    let (tier, config) = open_tier_with_config(settings)?;
    Ok((tier, config.tier_url))
}

fn open_tier_with_config(
    settings: crate::config::ServeArgs,
) -> anyhow::Result<(tiering::TierStore, crate::config::BrokerConfig)> {
    let config = crate::config::BrokerConfig::load(settings)?;
    let options = tiering::TierOptions {
        disk_cache_dir: None,
        ..config.tier_options()
    };
    let tier = tiering::TierStore::from_url_with(&config.tier_url, options)
        .with_context(|| format!("invalid tier settings. tier-url={}", config.tier_url))?;
    Ok((tier, config))
}

/// A topic's copy in the tier (one cluster's, one topic id).
pub(super) struct InTier {
    pub(super) tier: tiering::TierStore,
    /// Where the topic's table is (`--table-url`, or the tier).
    pub(super) tables: tiering::TierStore,
    pub(super) topic: String,
    pub(super) cluster: String,
    /// The topic as the tier's listing found it.
    pub(super) remote: tiering::RemoteTopic,
    /// The partitions to work on: `--partition`, or every one the tier
    /// holds, each with its handle.
    pub(super) partitions: Vec<(i32, tiering::RemotePartition)>,
}

/// Opens the tier with the broker settings of `args` and finds its topic.
pub(super) async fn open_in_tier(args: InTierArgs) -> anyhow::Result<InTier> {
    let (tier, config) = open_tier_with_config(*args.settings)?;
    let tables = config.table_store(&tier).with_context(|| {
        format!(
            "invalid table settings. table-url={}",
            config.table_url.as_deref().unwrap_or_default()
        )
    })?;
    let tier_url = config.tier_url;
    let topic = args.topic;
    let mut found = tier.find_remote_topic(&topic).await?;
    if let Some(c) = &args.from_cluster {
        found.retain(|(cluster, _)| cluster == c);
    }
    if let Some(id) = &args.topic_id {
        let id = tiering::layout::parse_topic_id(id)
            .with_context(|| format!("--topic-id is not 32 hex digits: {id}"))?;
        found.retain(|(_, t)| t.topic_id == id);
    }
    let (cluster, remote) = match found.len() {
        0 => anyhow::bail!("no topic {topic} in the tier. tier-url={tier_url}"),
        1 => found.remove(0),
        _ => anyhow::bail!(
            "the tier holds topic {topic} several times; choose one with --from-cluster and --topic-id: {}",
            found
                .iter()
                .map(|(c, t)| format!("cluster {c} topic id {}", tiering::layout::hex(&t.topic_id)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let numbers: Vec<i32> = match args.partition {
        Some(p) if remote.partitions.contains(&p) => vec![p],
        Some(p) => anyhow::bail!("the tier holds no partition {p} of {topic}"),
        None => remote.partitions.clone(),
    };
    let partitions = numbers
        .into_iter()
        .map(|p| {
            let key = tiering::PartitionKey::new(&cluster, &remote.topic, remote.topic_id, p);
            (p, tier.partition(key))
        })
        .collect();
    Ok(InTier {
        tables,
        tier,
        topic: remote.topic.clone(),
        remote,
        cluster,
        partitions,
    })
}

async fn scrub(args: ScrubArgs, out: Output) -> anyhow::Result<()> {
    let InTier {
        topic,
        cluster,
        partitions,
        ..
    } = open_in_tier(args.target).await?;
    let limiter = tiering::RateLimiter::new(args.bytes_per_second);
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut reports = Vec::new();
    for (p, part) in partitions {
        let r = part
            .scrub(&limiter, &cancel)
            .await
            .with_context(|| format!("scrub of {topic}-{p} stopped"))?;
        reports.push((p, r));
    }
    let damaged: usize = reports.iter().map(|(_, r)| r.problems.len()).sum();
    match out {
        Output::Json => print_json(&json!({
            "topic": topic,
            "cluster_id": cluster,
            "partitions": reports.iter().map(|(p, r)| json!({
                "partition": p,
                "segments": r.segments,
                "objects": r.objects,
                "bytes": r.bytes,
                "problems": r.problems.iter().map(|x| json!({
                    "base_offset": x.base_offset,
                    "last_offset": x.last_offset,
                    "object": x.object,
                    "problem": x.problem,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }))?,
        Output::Table => {
            let mut c = Columns::new(&["PARTITION", "SEGMENTS", "OBJECTS", "BYTES", "DAMAGED"]);
            for (p, r) in &reports {
                c.row([
                    p.to_string(),
                    r.segments.to_string(),
                    r.objects.to_string(),
                    r.bytes.to_string(),
                    r.problems.len().to_string(),
                ]);
            }
            let mut text = c.render();
            for (p, r) in &reports {
                for x in &r.problems {
                    text.push_str(&format!(
                        "partition {p}, offsets {}..={}: {}: {}\n",
                        x.base_offset, x.last_offset, x.object, x.problem
                    ));
                }
            }
            print_str(&text)?;
        }
    }
    if damaged > 0 {
        anyhow::bail!(
            "{damaged} damaged or missing tier object(s) in {topic}; a broker whose local log still holds such a segment uploads it again on its next scrub pass"
        );
    }
    Ok(())
}

async fn repair(args: RepairArgs, out: Output) -> anyhow::Result<()> {
    let InTier {
        topic,
        cluster,
        partitions,
        ..
    } = open_in_tier(args.target).await?;
    let mut reports = Vec::new();
    let mut failed = 0;
    for (p, part) in partitions {
        let r = match part.repair_manifest(args.dry_run).await {
            Ok(r) => json!({
                "partition": p,
                "status": if r.written { "repaired" } else if r.segments.is_empty() { "nothing found" } else { "dry run" },
                "problem": r.problem,
                "segments": r.segments.len(),
                "log_start_offset": r.log_start_offset,
                "last_offset": r.segments.last().map(|s| s.last_offset),
                "gaps": r.gaps.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>(),
                "skipped": r.skipped.iter().map(|(n, why)| json!({"object": n, "why": why})).collect::<Vec<_>>(),
            }),
            Err(tiering::TierError::NothingToRepair { .. }) => json!({
                "partition": p,
                "status": "readable",
            }),
            Err(e) => {
                failed += 1;
                json!({"partition": p, "status": "failed", "problem": e.to_string()})
            }
        };
        reports.push(r);
    }
    match out {
        Output::Json => print_json(&json!({
            "topic": topic,
            "cluster_id": cluster,
            "partitions": reports,
        }))?,
        Output::Table => {
            let mut c = Columns::new(&[
                "PARTITION",
                "STATUS",
                "SEGMENTS",
                "LOG START",
                "LAST OFFSET",
                "GAPS",
                "SKIPPED",
                "PROBLEM",
            ]);
            let cell = |v: &serde_json::Value| match v {
                serde_json::Value::Null => "-".to_string(),
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(a) => a.len().to_string(),
                other => other.to_string(),
            };
            for r in &reports {
                c.row(
                    [
                        "partition",
                        "status",
                        "segments",
                        "log_start_offset",
                        "last_offset",
                        "gaps",
                        "skipped",
                        "problem",
                    ]
                    .map(|k| cell(&r[k])),
                );
            }
            c.print()?;
            for r in &reports {
                for g in r["gaps"].as_array().into_iter().flatten() {
                    print_str(&format!(
                        "partition {}: offsets {} to {} are in no segment object\n",
                        r["partition"], g[0], g[1]
                    ))?;
                }
                for s in r["skipped"].as_array().into_iter().flatten() {
                    print_str(&format!(
                        "partition {}: left out {}: {}\n",
                        r["partition"],
                        cell(&s["object"]),
                        cell(&s["why"])
                    ))?;
                }
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} partitions could not be repaired");
    }
    Ok(())
}

struct Row {
    /// `None` without `--metrics`.
    scrub_damaged: Option<f64>,
    /// Tier compaction of a compacted topic, from its leader's gauges
    /// (`None` without `--metrics`, or for other topics).
    tier_dirty_ratio: Option<f64>,
    /// Seconds since the last tier compaction (+Inf: never).
    tier_compaction_age: Option<f64>,
    topic: String,
    partition: i32,
    earliest: i64,
    earliest_local: i64,
    latest_tiered: i64,
    latest: i64,
    local_bytes: i64,
    tier_bytes: i64,
    upload_lag: i64,
}

async fn status(
    client: &Client,
    topics: &[String],
    metrics: &[String],
    out: Output,
) -> anyhow::Result<()> {
    // Damaged segments per partition as its leader's last scrub left them
    // (the other brokers report 0).
    let mut damaged: BTreeMap<(String, i32), f64> = BTreeMap::new();
    let mut compaction: BTreeMap<(String, i32), CompactionScrape> = BTreeMap::new();
    for url in metrics {
        let scraped = super::tier_cost::scrape(url).await?;
        for (key, n) in scraped.scrub_damaged {
            let d = damaged.entry(key).or_default();
            *d = d.max(n);
        }
        for (key, c) in scraped.compaction {
            compaction.entry(key).or_default().merge(&c);
        }
    }
    let damaged_of = |key: &(String, i32)| {
        (!metrics.is_empty()).then(|| damaged.get(key).copied().unwrap_or(0.0))
    };
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let md = client
        .metadata(if names.is_empty() { None } else { Some(&names) })
        .await?;
    let mut partitions = Vec::new();
    for t in md.topics.iter().filter(|t| !t.is_internal) {
        if let Some(e) = &t.error {
            anyhow::bail!("topic {}: {e:?}", t.name);
        }
        for p in &t.partitions {
            partitions.push((t.name.clone(), p.partition));
        }
    }
    let mut offsets: BTreeMap<(String, i32), [i64; 4]> = BTreeMap::new();
    for (i, spec) in [
        OffsetSpec::Earliest,
        OffsetSpec::EarliestLocal,
        OffsetSpec::LatestTiered,
        OffsetSpec::Latest,
    ]
    .into_iter()
    .enumerate()
    {
        for (key, r) in client.list_offsets(&partitions, spec).await? {
            let o = r.with_context(|| format!("list offsets of {}-{}", key.0, key.1))?;
            offsets.entry(key).or_insert([-1; 4])[i] = o.offset;
        }
    }
    let sizes = super::log_dirs::log_dir_sizes(client, &md).await?;
    let rows: Vec<Row> = offsets
        .into_iter()
        .map(
            |((topic, partition), [earliest, earliest_local, latest_tiered, latest])| {
                let s = sizes
                    .get(&(topic.clone(), partition))
                    .copied()
                    .unwrap_or_default();
                let scrub_damaged = damaged_of(&(topic.clone(), partition));
                let c = compaction
                    .get(&(topic.clone(), partition))
                    .copied()
                    .unwrap_or_default();
                Row {
                    scrub_damaged,
                    tier_dirty_ratio: c.tier_dirty_ratio,
                    tier_compaction_age: c.tier_last_age,
                    local_bytes: s.local_bytes,
                    topic,
                    partition,
                    earliest,
                    earliest_local,
                    latest_tiered,
                    latest,
                    tier_bytes: s.tier_bytes,
                    upload_lag: s.upload_lag,
                }
            },
        )
        .collect();
    match out {
        Output::Json => print_json(&json!(rows
            .iter()
            .map(|r| json!({
                "topic": r.topic,
                "partition": r.partition,
                "log_start_offset": r.earliest,
                "local_log_start_offset": r.earliest_local,
                "last_tiered_offset": r.latest_tiered,
                "high_watermark": r.latest,
                "local_bytes": r.local_bytes,
                "tier_bytes": r.tier_bytes,
                "upload_lag_offsets": r.upload_lag,
                "scrub_damaged_segments": r.scrub_damaged,
                "tier_dirty_ratio": r.tier_dirty_ratio,
                "tier_compaction_seconds_ago": r.tier_compaction_age.filter(|a| a.is_finite()),
                "tier_compacted": r.tier_compaction_age.map(f64::is_finite),
            }))
            .collect::<Vec<_>>())),
        Output::Table => {
            if rows.is_empty() {
                return print_str("no partitions\n");
            }
            let mut c = Columns::new(&[
                "TOPIC",
                "PARTITION",
                "LOG START",
                "LOCAL START",
                "LAST TIERED",
                "HIGH WATERMARK",
                "LOCAL BYTES",
                "TIER BYTES",
                "UPLOAD LAG",
                "SCRUB DAMAGED",
                "TIER DIRTY RATIO",
                "LAST TIER COMPACTION",
            ]);
            for r in &rows {
                c.row([
                    r.topic.clone(),
                    r.partition.to_string(),
                    r.earliest.to_string(),
                    r.earliest_local.to_string(),
                    if r.latest_tiered < 0 {
                        "-".into()
                    } else {
                        r.latest_tiered.to_string()
                    },
                    r.latest.to_string(),
                    r.local_bytes.to_string(),
                    r.tier_bytes.to_string(),
                    r.upload_lag.to_string(),
                    r.scrub_damaged.map_or("-".into(), |d| format!("{d:.0}")),
                    r.tier_dirty_ratio.map_or("-".into(), |d| format!("{d:.2}")),
                    age_text(r.tier_compaction_age),
                ]);
            }
            c.print()
        }
    }
}

/// `restore --all`: each topic the tier holds for the cluster, one
/// CreateTopics each, with a line per topic on stderr as it goes.
async fn restore_all(client: &Client, args: RestoreArgs, out: Output) -> anyhow::Result<()> {
    let (tier, tier_url) = open_tier(*args.settings)?;
    let clusters = tier.list_clusters().await?;
    let cluster = match args.from_cluster {
        Some(c) if clusters.contains(&c) => c,
        Some(c) => anyhow::bail!("the tier holds no cluster {c}. tier-url={tier_url}, clusters={clusters:?}"),
        None => match clusters.as_slice() {
            [one] => one.clone(),
            [] => anyhow::bail!("the tier holds no cluster. tier-url={tier_url}"),
            many => anyhow::bail!(
                "the tier holds several clusters; name one with --from-cluster. tier-url={tier_url}, clusters={many:?}"
            ),
        },
    };
    let topics = tier.list_remote_topics(&cluster).await?;
    let total = topics.len();
    let mut rows = Vec::new();
    let mut failed = 0usize;
    for (i, t) in topics.iter().enumerate() {
        let outcome = restore(client, &t.topic, Some(cluster.clone()), args.take_over).await;
        let (status, partitions) = match outcome {
            Ok(n) => ("restored".to_string(), n),
            Err(e)
                if e.downcast_ref::<crate::client::ClientError>()
                    .and_then(|c| c.kafka_code())
                    .is_some_and(|c| {
                        c.code() == kafka_protocol::error::ResponseError::TopicAlreadyExists.code()
                    }) =>
            {
                ("exists".to_string(), -1)
            }
            Err(e) => {
                failed += 1;
                (format!("failed: {e:#}"), -1)
            }
        };
        eprintln!("[{}/{total}] {}: {status}", i + 1, t.topic);
        rows.push((t.topic.clone(), status, partitions));
    }
    match out {
        Output::Json => print_json(&json!({
            "cluster": cluster,
            "topics": rows
                .iter()
                .map(|(t, s, p)| json!({"topic": t, "status": s, "partitions": p}))
                .collect::<Vec<_>>(),
        }))?,
        Output::Table => {
            let restored = rows.iter().filter(|r| r.1 == "restored").count();
            let exists = rows.iter().filter(|r| r.1 == "exists").count();
            print_str(&format!(
                "restored {restored} of {total} topics of cluster {cluster} ({exists} existed, {failed} failed)\n"
            ))?;
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {total} topics not restored");
    }
    Ok(())
}

/// Prints one restored topic.
fn print_restored(topic: &str, partitions: i32, out: Output) -> anyhow::Result<()> {
    match out {
        Output::Json => print_json(&json!({
            "topic": topic,
            "partitions": partitions,
            "restored": true,
        })),
        Output::Table => print_str(&format!(
            "restored {topic} from the tier ({partitions} partitions)\n"
        )),
    }
}

/// Restores `topic` (CreateTopics with `strata.restore=true`); returns its
/// partition count.
async fn restore(
    client: &Client,
    topic: &str,
    from_cluster: Option<String>,
    take_over: bool,
) -> anyhow::Result<i32> {
    let mut configs = vec![(
        crate::config::RESTORE_CONFIG.to_string(),
        "true".to_string(),
    )];
    if take_over {
        configs.push((
            crate::config::TAKEOVER_CONFIG.to_string(),
            "true".to_string(),
        ));
    }
    if let Some(c) = from_cluster {
        configs.push((crate::config::TIER_CLUSTER_ID_CONFIG.to_string(), c));
    }
    let created = client
        .create_topics(&[NewTopic {
            name: topic.to_string(),
            num_partitions: None,
            replication_factor: None,
            configs,
        }])
        .await?;
    let (name, r) = created
        .into_iter()
        .next()
        .context("CreateTopics answered no topic")?;
    let r = r.with_context(|| format!("restore {name}"))?;
    Ok(r.num_partitions)
}
