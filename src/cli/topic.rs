//! `strata topic create|list|describe|delete|alter-config`.

use clap::{Args, Subcommand};
use serde_json::json;

use super::output::{join, opt, print_json, print_str, Columns};
use super::{parse_key_value, usage, ConnectArgs, Output};
use crate::client::{
    AlterOp, Client, ConfigEntry, ConfigResource, KafkaCode, NewTopic, OffsetSpec, PartitionOffsets,
};
use kafka_protocol::error::ResponseError;

#[derive(Args, Debug)]
pub struct TopicArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    #[command(subcommand)]
    cmd: TopicCommand,
}

#[derive(Subcommand, Debug)]
enum TopicCommand {
    /// Create a topic
    Create {
        topic: String,
        /// Number of partitions (default: the broker's num-partitions)
        #[arg(long, short = 'p', value_parser = clap::value_parser!(i32).range(1..))]
        partitions: Option<i32>,
        /// Replication factor (default: the broker's)
        #[arg(long, short = 'r', value_parser = clap::value_parser!(i16).range(1..))]
        replication_factor: Option<i16>,
        /// Topic config, e.g. -c retention.ms=3600000 (repeatable)
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
        /// Succeed if the topic already exists
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List topics
    List {
        /// Leave out internal topics such as __consumer_offsets
        #[arg(long)]
        exclude_internal: bool,
    },
    /// Show partitions (leader, replicas, offsets) and configs of a topic
    Describe {
        topic: String,
        /// Show every config, not only those set on the topic
        #[arg(long)]
        all_configs: bool,
        /// A broker's metrics URL (once per broker): for a compacted topic,
        /// each partition's dirty ratio and last clean (DIRTY RATIO, LAST
        /// CLEAN: the largest ratio and newest clean over its replicas)
        #[arg(long = "metrics")]
        metrics: Vec<String>,
    },
    /// Delete topics
    Delete {
        #[arg(required = true)]
        topics: Vec<String>,
        /// Succeed if a topic does not exist
        #[arg(long)]
        if_exists: bool,
    },
    /// Set or reset topic configs
    AlterConfig {
        topic: String,
        /// Set a config (repeatable)
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        set: Vec<(String, String)>,
        /// Reset a config to its default (repeatable)
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
        /// Only check the change, do not apply it
        #[arg(long)]
        validate_only: bool,
    },
}

pub async fn run(args: TopicArgs) -> anyhow::Result<()> {
    let out = args.conn.output;
    if let TopicCommand::AlterConfig { set, delete, .. } = &args.cmd {
        if set.is_empty() && delete.is_empty() {
            return Err(usage("alter-config needs at least one --set or --delete"));
        }
    }
    let client = args.conn.connect().await?;
    match args.cmd {
        TopicCommand::Create {
            topic,
            partitions,
            replication_factor,
            configs,
            if_not_exists,
        } => {
            let new = NewTopic {
                name: topic,
                num_partitions: partitions,
                replication_factor,
                configs,
            };
            create(&client, new, if_not_exists, out).await
        }
        TopicCommand::List { exclude_internal } => list(&client, exclude_internal, out).await,
        TopicCommand::Describe {
            topic,
            all_configs,
            metrics,
        } => describe(&client, &topic, all_configs, &metrics, out).await,
        TopicCommand::Delete { topics, if_exists } => {
            delete_topics(&client, &topics, if_exists, out).await
        }
        TopicCommand::AlterConfig {
            topic,
            set,
            delete,
            validate_only,
        } => alter_config(&client, &topic, set, delete, validate_only, out).await,
    }
}

async fn create(
    client: &Client,
    new: NewTopic,
    if_not_exists: bool,
    out: Output,
) -> anyhow::Result<()> {
    let name = new.name.clone();
    match client.create_topic(&new).await {
        Ok(t) => {
            // Older CreateTopics versions do not echo the result.
            let (partitions, rf, id) = if t.num_partitions >= 0 {
                (t.num_partitions, t.replication_factor, t.topic_id)
            } else {
                let md = client.topic_metadata(&name).await?;
                let rf = md
                    .partitions
                    .first()
                    .map_or(-1, |p| p.replicas.len() as i16);
                (md.partitions.len() as i32, rf, md.topic_id)
            };
            match out {
                Output::Json => print_json(&json!({
                    "topic": name,
                    "created": true,
                    "topic_id": id.to_string(),
                    "partitions": partitions,
                    "replication_factor": rf,
                })),
                Output::Table => print_str(&format!(
                    "created topic {name} (partitions: {partitions}, replication factor: {rf}, id: {id})\n"
                )),
            }
        }
        Err(e)
            if if_not_exists
                && e.kafka_code() == Some(KafkaCode::from(ResponseError::TopicAlreadyExists)) =>
        {
            match out {
                Output::Json => print_json(&json!({ "topic": name, "created": false })),
                Output::Table => print_str(&format!("topic {name} already exists\n")),
            }
        }
        Err(e) => Err(e.into()),
    }
}

async fn list(client: &Client, exclude_internal: bool, out: Output) -> anyhow::Result<()> {
    let md = client.metadata(None).await?;
    let mut topics = md.topics;
    if exclude_internal {
        topics.retain(|t| !t.is_internal);
    }
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    match out {
        Output::Json => {
            let v: Vec<_> = topics
                .iter()
                .map(|t| {
                    json!({
                        "topic": t.name,
                        "topic_id": t.topic_id.to_string(),
                        "partitions": t.partitions.len(),
                        "replication_factor": t.partitions.first().map_or(0, |p| p.replicas.len()),
                        "internal": t.is_internal,
                        "error": t.error.map(|c| c.name()),
                    })
                })
                .collect();
            print_json(&json!(v))
        }
        Output::Table => {
            if topics.is_empty() {
                return print_str("no topics\n");
            }
            let mut c = Columns::new(&["TOPIC", "PARTITIONS", "REPLICATION", "TOPIC ID"]);
            for t in &topics {
                c.row([
                    t.name.clone(),
                    t.partitions.len().to_string(),
                    t.partitions
                        .first()
                        .map_or(0, |p| p.replicas.len())
                        .to_string(),
                    t.topic_id.to_string(),
                ]);
            }
            c.print()
        }
    }
}

async fn describe(
    client: &Client,
    topic: &str,
    all_configs: bool,
    metrics: &[String],
    out: Output,
) -> anyhow::Result<()> {
    let md = client.topic_metadata(topic).await?;
    let compaction = super::tier_cost::scrape_compaction(metrics).await?;
    // `None`: not asked for (no --metrics) or not reported (not compacted).
    let cleaner = |p: i32| {
        compaction
            .get(&(topic.to_owned(), p))
            .filter(|c| c.dirty_ratio.is_some())
            .copied()
    };
    let parts: Vec<(String, i32)> = md
        .partitions
        .iter()
        .map(|p| (topic.to_owned(), p.partition))
        .collect();
    let earliest = client.list_offsets(&parts, OffsetSpec::Earliest).await?;
    let latest = client.list_offsets(&parts, OffsetSpec::Latest).await?;
    let offset_of = |v: &PartitionOffsets, p: i32| {
        v.iter()
            .find(|((_, q), _)| *q == p)
            .and_then(|(_, r)| r.as_ref().ok())
            .map(|o| o.offset)
    };
    let configs: Vec<ConfigEntry> = client
        .describe_configs(&ConfigResource::Topic(topic.to_owned()), None)
        .await?
        .into_iter()
        .filter(|c| all_configs || !c.is_default())
        .collect();
    let rf = md.partitions.first().map_or(0, |p| p.replicas.len());
    match out {
        Output::Json => {
            let partitions: Vec<_> = md
                .partitions
                .iter()
                .map(|p| {
                    json!({
                        "partition": p.partition,
                        "leader": p.leader,
                        "leader_epoch": p.leader_epoch,
                        "replicas": p.replicas,
                        "isr": p.isr,
                        "offline_replicas": p.offline_replicas,
                        "earliest_offset": offset_of(&earliest, p.partition),
                        "latest_offset": offset_of(&latest, p.partition),
                        "dirty_ratio": cleaner(p.partition).and_then(|c| c.dirty_ratio),
                        "last_clean_seconds_ago": cleaner(p.partition)
                            .and_then(|c| c.last_clean_age)
                            .filter(|a| a.is_finite()),
                        "error": p.error.map(|c| c.name()),
                    })
                })
                .collect();
            print_json(&json!({
                "topic": md.name,
                "topic_id": md.topic_id.to_string(),
                "internal": md.is_internal,
                "replication_factor": rf,
                "partitions": partitions,
                "configs": configs.iter().map(config_json).collect::<Vec<_>>(),
            }))
        }
        Output::Table => {
            let mut s = format!(
                "Topic: {}  ID: {}  Partitions: {}  Replication factor: {}\n\n",
                md.name,
                md.topic_id,
                md.partitions.len(),
                rf
            );
            let with_cleaner = md.partitions.iter().any(|p| cleaner(p.partition).is_some());
            let mut headers = vec![
                "PARTITION",
                "LEADER",
                "REPLICAS",
                "ISR",
                "EARLIEST",
                "LATEST",
            ];
            if with_cleaner {
                headers.extend(["DIRTY RATIO", "LAST CLEAN"]);
            }
            let mut c = Columns::new(&headers);
            for p in &md.partitions {
                let mut row = vec![
                    p.partition.to_string(),
                    if p.leader >= 0 {
                        p.leader.to_string()
                    } else {
                        "none".into()
                    },
                    join(&p.replicas),
                    join(&p.isr),
                    opt(offset_of(&earliest, p.partition)),
                    opt(offset_of(&latest, p.partition)),
                ];
                if with_cleaner {
                    let state = cleaner(p.partition).unwrap_or_default();
                    row.push(state.dirty_ratio.map_or("-".into(), |d| format!("{d:.2}")));
                    row.push(super::tier_cost::age_text(state.last_clean_age));
                }
                c.row(row);
            }
            s.push_str(&c.render());
            s.push('\n');
            if configs.is_empty() {
                s.push_str("Configs: all defaults (--all-configs shows them)\n");
            } else {
                s.push_str(if all_configs {
                    "Configs:\n"
                } else {
                    "Configs set on the topic:\n"
                });
                let mut c = Columns::new(&["NAME", "VALUE", "SOURCE"]);
                for e in &configs {
                    let value = if e.sensitive {
                        "(sensitive)".to_owned()
                    } else {
                        e.value.clone().unwrap_or_else(|| "null".into())
                    };
                    c.row([e.name.clone(), value, e.source_name().to_owned()]);
                }
                s.push_str(&c.render());
            }
            print_str(&s)
        }
    }
}

fn config_json(e: &ConfigEntry) -> serde_json::Value {
    json!({
        "name": e.name,
        "value": e.value,
        "source": e.source_name(),
        "default": e.is_default(),
        "read_only": e.read_only,
        "sensitive": e.sensitive,
    })
}

async fn delete_topics(
    client: &Client,
    topics: &[String],
    if_exists: bool,
    out: Output,
) -> anyhow::Result<()> {
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let results = client.delete_topics(&names).await?;
    let missing = KafkaCode::from(ResponseError::UnknownTopicOrPartition);
    let mut first_err = None;
    let mut report = Vec::new();
    let mut text = String::new();
    for (name, r) in results {
        match r {
            Ok(()) => {
                text.push_str(&format!("deleted topic {name}\n"));
                report.push(json!({ "topic": name, "deleted": true }));
            }
            Err(e) if if_exists && e.kafka_code() == Some(missing) => {
                text.push_str(&format!("topic {name} does not exist\n"));
                report.push(json!({ "topic": name, "deleted": false }));
            }
            Err(e) => {
                report.push(json!({ "topic": name, "deleted": false, "error": e.to_string() }));
                first_err.get_or_insert(e);
            }
        }
    }
    match out {
        Output::Json => print_json(&json!(report))?,
        Output::Table => print_str(&text)?,
    }
    match first_err {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

async fn alter_config(
    client: &Client,
    topic: &str,
    set: Vec<(String, String)>,
    delete: Vec<String>,
    validate_only: bool,
    out: Output,
) -> anyhow::Result<()> {
    let mut ops: Vec<AlterOp> = set
        .iter()
        .map(|(k, v)| AlterOp::Set(k.clone(), v.clone()))
        .collect();
    ops.extend(delete.iter().map(|k| AlterOp::Delete(k.clone())));
    client
        .incremental_alter_configs(
            &ConfigResource::Topic(topic.to_owned()),
            &ops,
            validate_only,
        )
        .await?;
    match out {
        Output::Json => print_json(&json!({
            "topic": topic,
            "set": set.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "deleted": delete,
            "validate_only": validate_only,
        })),
        Output::Table => {
            let mut changes: Vec<String> = set.iter().map(|(k, v)| format!("{k}={v}")).collect();
            changes.extend(delete.iter().map(|k| format!("{k} reset to default")));
            let verb = if validate_only {
                "would update"
            } else {
                "updated"
            };
            print_str(&format!("{verb} topic {topic}: {}\n", changes.join(", ")))
        }
    }
}
