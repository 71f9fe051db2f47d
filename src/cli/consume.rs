//! `strata consume TOPIC`: records to stdout (kcat -C), from an offset or a
//! timestamp, optionally stopping after N records or at the end.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use serde_json::json;

use super::format::{base64, unescape, Format, FORMAT_HELP};
use super::{progress_bar, usage, ConnectArgs, Output, Unit};
use crate::client::{
    Client, ConsumedRecord, FetchOptions, FetchRequestPartition, ListedOffset, OffsetSpec,
};

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    /// Topic to read
    topic: String,
    /// Partition to read (repeatable; default: all)
    #[arg(long, short = 'p', value_parser = clap::value_parser!(i32).range(0..))]
    partition: Vec<i32>,
    /// Where to start: beginning, end, an offset N, or -N (N records before the end)
    #[arg(
        long,
        short = 'o',
        default_value = "beginning",
        allow_hyphen_values = true,
        value_parser = parse_start,
        conflicts_with = "timestamp"
    )]
    offset: Start,
    /// Start at the first record whose timestamp is >= MS (ms since the epoch)
    #[arg(long, value_name = "MS")]
    timestamp: Option<i64>,
    /// Stop after N records
    #[arg(long, short = 'c', value_name = "N")]
    count: Option<u64>,
    /// Exit once the end of every partition is reached
    #[arg(long, short = 'e')]
    exit: bool,
    /// Output format, e.g. '%k %s %o %p %T %h\n'
    #[arg(long, short = 'f', long_help = format!("Output format (kcat -f): {FORMAT_HELP}"))]
    format: Option<String>,
    /// Print the key and SEP before each value
    #[arg(long, short = 'K', value_name = "SEP")]
    key_separator: Option<String>,
    /// Written after each record (ignored with --format)
    #[arg(long, short = 'D', value_name = "DELIM", default_value = "\\n")]
    delimiter: String,
    /// Bytes to fetch per partition and request
    #[arg(long, default_value_t = 1_048_576, value_parser = clap::value_parser!(i32).range(1..))]
    fetch_bytes: i32,
}

/// Where consumption starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Beginning,
    End,
    Offset(i64),
    /// N records before the end.
    FromEnd(i64),
}

fn parse_start(s: &str) -> Result<Start, String> {
    match s {
        "beginning" | "earliest" => Ok(Start::Beginning),
        "end" | "latest" => Ok(Start::End),
        _ => match s.parse::<i64>() {
            Ok(n) if s.starts_with('-') => Ok(Start::FromEnd(n.saturating_neg())),
            Ok(n) if n >= 0 => Ok(Start::Offset(n)),
            _ => Err(format!("expected beginning, end, N or -N, got {s:?}")),
        },
    }
}

/// Consecutive failed fetches of one partition before giving up.
const MAX_RETRIES: u32 = 50;
const RETRY_BACKOFF: Duration = Duration::from_millis(200);

struct PartitionCursor {
    next: i64,
    done: bool,
    failures: u32,
}

pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let output = args.conn.output;
    let format = match (&args.format, output) {
        (Some(_), Output::Json) => {
            return Err(usage("--format and --output json exclude each other"))
        }
        (Some(f), _) => Format::parse(f).map_err(usage)?,
        (None, _) => {
            let delimiter = unescape(&args.delimiter);
            let sep = args.key_separator.as_deref().map(unescape);
            Format::default_for(sep.as_deref(), &delimiter)
        }
    };
    if args.count == Some(0) {
        return Ok(());
    }

    let client = args.conn.connect().await?;
    let topic = args.topic.as_str();
    let md = client.topic_metadata(topic).await?;
    let partitions: Vec<i32> = if args.partition.is_empty() {
        md.partitions.iter().map(|p| p.partition).collect()
    } else {
        for p in &args.partition {
            if !md.partitions.iter().any(|q| q.partition == *p) {
                return Err(usage(format!(
                    "partition {p} does not exist: topic {topic} has {} partitions",
                    md.partitions.len()
                )));
            }
        }
        let mut ps = args.partition.clone();
        ps.sort_unstable();
        ps.dedup();
        ps
    };
    let mut cursors =
        start_offsets(&client, topic, &partitions, args.offset, args.timestamp).await?;
    if args.exit {
        let ends = offsets(&client, topic, &partitions, OffsetSpec::Latest).await?;
        for (p, c) in cursors.iter_mut() {
            c.done = ends.get(p).is_some_and(|end| c.next >= end.offset);
        }
    }

    let show_progress = !std::io::stdout().is_terminal();
    let pb = progress_bar(args.count, Unit::Records, show_progress);
    let opts = FetchOptions {
        partition_max_bytes: args.fetch_bytes,
        ..FetchOptions::default()
    };
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut emitted: u64 = 0;
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    'outer: loop {
        let wanted: Vec<FetchRequestPartition> = cursors
            .iter()
            .filter(|(_, c)| !c.done)
            .map(|(p, c)| FetchRequestPartition {
                topic: topic.to_owned(),
                partition: *p,
                offset: c.next,
            })
            .collect();
        if wanted.is_empty() {
            break;
        }
        let results = tokio::select! {
            _ = &mut ctrl_c => break,
            r = client.fetch_many(&wanted, &opts) => r?,
        };
        let mut any_failed = false;
        for (req, result) in wanted.iter().zip(results) {
            let Some(cursor) = cursors.get_mut(&req.partition) else {
                continue;
            };
            let fetched = match result {
                Ok(f) => f,
                Err(e) if e.is_retriable() && cursor.failures < MAX_RETRIES => {
                    cursor.failures += 1;
                    any_failed = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            cursor.failures = 0;
            for r in &fetched.records {
                if r.offset < cursor.next {
                    continue;
                }
                write_record(&mut buf, output, &format, topic, req.partition, r)?;
                cursor.next = r.offset + 1;
                emitted += 1;
                if args.count.is_some_and(|n| emitted >= n) {
                    flush(&mut buf)?;
                    break 'outer;
                }
            }
            cursor.next = cursor.next.max(fetched.next_offset);
            if args.exit && cursor.next >= fetched.high_watermark {
                cursor.done = true;
            }
        }
        flush(&mut buf)?;
        pb.set_position(emitted);
        if any_failed {
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
    }
    flush(&mut buf)?;
    pb.finish_and_clear();
    Ok(())
}

async fn offsets(
    client: &Client,
    topic: &str,
    partitions: &[i32],
    spec: OffsetSpec,
) -> anyhow::Result<BTreeMap<i32, ListedOffset>> {
    let tps: Vec<(String, i32)> = partitions.iter().map(|p| (topic.to_owned(), *p)).collect();
    let mut out = BTreeMap::new();
    for ((_, p), r) in client.list_offsets(&tps, spec).await? {
        out.insert(p, r?);
    }
    Ok(out)
}

async fn start_offsets(
    client: &Client,
    topic: &str,
    partitions: &[i32],
    start: Start,
    timestamp: Option<i64>,
) -> anyhow::Result<BTreeMap<i32, PartitionCursor>> {
    let earliest = offsets(client, topic, partitions, OffsetSpec::Earliest).await?;
    let latest = offsets(client, topic, partitions, OffsetSpec::Latest).await?;
    let by_time = match timestamp {
        Some(ts) => Some(offsets(client, topic, partitions, OffsetSpec::Timestamp(ts)).await?),
        None => None,
    };
    let mut cursors = BTreeMap::new();
    for &p in partitions {
        let lo = earliest.get(&p).map_or(0, |o| o.offset);
        let hi = latest.get(&p).map_or(lo, |o| o.offset);
        let next = match (&by_time, start) {
            // No record that late: start at the end.
            (Some(t), _) => t
                .get(&p)
                .map_or(hi, |o| if o.offset < 0 { hi } else { o.offset }),
            (None, Start::Beginning) => lo,
            (None, Start::End) => hi,
            (None, Start::Offset(n)) => n,
            (None, Start::FromEnd(n)) => hi.saturating_sub(n).max(lo),
        };
        cursors.insert(
            p,
            PartitionCursor {
                next,
                done: false,
                failures: 0,
            },
        );
    }
    Ok(cursors)
}

fn write_record(
    buf: &mut Vec<u8>,
    output: Output,
    format: &Format,
    topic: &str,
    partition: i32,
    r: &ConsumedRecord,
) -> anyhow::Result<()> {
    match output {
        Output::Table => format.write(buf, topic, partition, r),
        Output::Json => {
            let v = json!({
                "topic": topic,
                "partition": partition,
                "offset": r.offset,
                "timestamp": r.timestamp,
                "timestamp_type": if r.log_append_time { "log_append_time" } else { "create_time" },
                "key": bytes_json(r.key.as_ref()),
                "value": bytes_json(r.value.as_ref()),
                "headers": r.headers.iter().map(|(k, v)| json!({
                    "key": k,
                    "value": bytes_json(v.as_ref()),
                })).collect::<Vec<_>>(),
            });
            serde_json::to_writer(&mut *buf, &v)?;
            buf.push(b'\n');
        }
    }
    Ok(())
}

/// A string when the bytes are UTF-8, else `{"base64": "..."}`; null stays null.
fn bytes_json(b: Option<&Bytes>) -> serde_json::Value {
    match b {
        None => serde_json::Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => json!(s),
            Err(_) => json!({ "base64": base64(b) }),
        },
    }
}

fn flush(buf: &mut Vec<u8>) -> anyhow::Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    out.write_all(buf)?;
    out.flush()?;
    buf.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse() {
        assert_eq!(parse_start("beginning"), Ok(Start::Beginning));
        assert_eq!(parse_start("end"), Ok(Start::End));
        assert_eq!(parse_start("42"), Ok(Start::Offset(42)));
        assert_eq!(parse_start("-5"), Ok(Start::FromEnd(5)));
        assert!(parse_start("soon").is_err());
        assert_eq!(parse_start("-0"), Ok(Start::FromEnd(0)));
    }

    #[test]
    fn binary_values_are_base64_in_json() {
        assert_eq!(bytes_json(None), serde_json::Value::Null);
        assert_eq!(bytes_json(Some(&Bytes::from_static(b"hi"))), json!("hi"));
        assert_eq!(
            bytes_json(Some(&Bytes::from_static(&[0xff, 0x00]))),
            json!({"base64": "/wA="})
        );
    }
}
