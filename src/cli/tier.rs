//! `strata tier status|restore`.
//!
//! Both speak the Kafka protocol: status reads ListOffsets (earliest,
//! earliest-local, latest-tiered, latest) and DescribeLogDirs (Strata lists
//! its tier as a second log dir, whose sizes are the bytes in the object
//! store); restore is a CreateTopics with `strata.restore=true`.

use std::collections::BTreeMap;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;

use super::output::{print_json, print_str, Columns};
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
    },
    /// Recreate a topic from the tier (for a new cluster or an empty data dir)
    Restore {
        topic: String,
        /// The cluster whose tier prefix holds the topic, when several do
        #[arg(long)]
        from_cluster: Option<String>,
    },
}

pub async fn run(args: TierArgs) -> anyhow::Result<()> {
    let client = args.conn.connect().await?;
    match args.cmd {
        TierCommand::Status { topics } => status(&client, &topics, args.conn.output).await,
        TierCommand::Restore {
            topic,
            from_cluster,
        } => restore(&client, &topic, from_cluster, args.conn.output).await,
    }
}

struct Row {
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

async fn status(client: &Client, topics: &[String], out: Output) -> anyhow::Result<()> {
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
    // Sizes: the first log dir is local disk, the second the tier.
    let mut local: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut tier: BTreeMap<(String, i32), (i64, i64)> = BTreeMap::new();
    for b in &md.brokers {
        for (i, (_dir, parts)) in client
            .describe_log_dirs(b.node_id)
            .await?
            .into_iter()
            .enumerate()
        {
            for (t, p, size, lag) in parts {
                if i == 0 {
                    *local.entry((t, p)).or_default() += size;
                } else {
                    tier.insert((t, p), (size, lag));
                }
            }
        }
    }
    let rows: Vec<Row> = offsets
        .into_iter()
        .map(
            |((topic, partition), [earliest, earliest_local, latest_tiered, latest])| {
                let key = (topic.clone(), partition);
                let (tier_bytes, upload_lag) = tier.get(&key).copied().unwrap_or((0, 0));
                Row {
                    local_bytes: local.get(&key).copied().unwrap_or(0),
                    topic,
                    partition,
                    earliest,
                    earliest_local,
                    latest_tiered,
                    latest,
                    tier_bytes,
                    upload_lag,
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
                ]);
            }
            c.print()
        }
    }
}

async fn restore(
    client: &Client,
    topic: &str,
    from_cluster: Option<String>,
    out: Output,
) -> anyhow::Result<()> {
    let mut configs = vec![("strata.restore".to_string(), "true".to_string())];
    if let Some(c) = from_cluster {
        configs.push(("strata.tier.cluster.id".to_string(), c));
    }
    let created = client
        .create_topics(&[NewTopic {
            name: topic.to_string(),
            num_partitions: None,
            replication_factor: None,
            configs,
        }])
        .await?;
    for (name, r) in created {
        let r = r.with_context(|| format!("restore {name}"))?;
        match out {
            Output::Json => print_json(&json!({
                "topic": name,
                "partitions": r.num_partitions,
                "restored": true,
            }))?,
            Output::Table => print_str(&format!(
                "restored {name} from the tier ({} partitions)\n",
                r.num_partitions
            ))?,
        }
    }
    Ok(())
}
