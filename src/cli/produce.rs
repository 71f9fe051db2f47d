//! `strata produce TOPIC`: records from stdin or a file, one per delimiter
//! (kcat -P). Keyed records go to Kafka's murmur2 partition of the key;
//! unkeyed ones stick to a partition per request and then move on.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use clap::{Args, ValueEnum};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::format::unescape;
use super::output::{print_json, Columns};
use super::{parse_key_value, progress_bar, usage, ConnectArgs, Output, Unit};
use crate::client::{Acks, BatchCompression, Client, ProduceRecord};

#[derive(Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    /// Topic to produce to
    topic: String,
    /// Read records from this file instead of stdin
    #[arg(long, short = 'f', value_name = "PATH")]
    file: Option<PathBuf>,
    /// Partition (default: murmur2 of the key; unkeyed records spread out)
    #[arg(long, short = 'p', value_parser = clap::value_parser!(i32).range(0..))]
    partition: Option<i32>,
    /// Split each record into key and value at the first SEP (e.g. ':' or '\t')
    #[arg(long, short = 'K', value_name = "SEP")]
    key_separator: Option<String>,
    /// Record delimiter
    #[arg(long, short = 'D', value_name = "DELIM", default_value = "\\n")]
    delimiter: String,
    /// Header added to every record (repeatable)
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    headers: Vec<(String, String)>,
    /// Acknowledgements: 0, 1 or all
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    acks: Acks,
    /// Compression of record batches
    #[arg(long, short = 'z', value_enum, default_value_t = CompressionArg::None)]
    compression: CompressionArg,
    /// Bytes of records per produce request and partition
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    batch_bytes: u64,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum CompressionArg {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl From<CompressionArg> for BatchCompression {
    fn from(c: CompressionArg) -> BatchCompression {
        match c {
            CompressionArg::None => BatchCompression::None,
            CompressionArg::Gzip => BatchCompression::Gzip,
            CompressionArg::Snappy => BatchCompression::Snappy,
            CompressionArg::Lz4 => BatchCompression::Lz4,
            CompressionArg::Zstd => BatchCompression::Zstd,
        }
    }
}

fn parse_acks(s: &str) -> Result<Acks, String> {
    match s {
        "0" => Ok(Acks::None),
        "1" => Ok(Acks::Leader),
        "all" | "-1" => Ok(Acks::All),
        _ => Err(format!("expected 0, 1 or all, got {s:?}")),
    }
}

/// Records produced to one partition.
#[derive(Default)]
struct PartitionStats {
    records: u64,
    first_offset: Option<i64>,
    last_offset: Option<i64>,
}

struct Producer<'a> {
    client: &'a Client,
    topic: &'a str,
    acks: Acks,
    compression: BatchCompression,
    batch_bytes: usize,
    partitions: i32,
    fixed_partition: Option<i32>,
    sticky: i32,
    pending: BTreeMap<i32, (Vec<ProduceRecord>, usize)>,
    stats: BTreeMap<i32, PartitionStats>,
    records: u64,
    bytes: u64,
}

impl Producer<'_> {
    async fn add(&mut self, r: ProduceRecord) -> anyhow::Result<()> {
        let p = match (self.fixed_partition, &r.key) {
            (Some(p), _) => p,
            (None, Some(k)) => key_partition(k, self.partitions),
            (None, None) => self.sticky,
        };
        self.records += 1;
        self.bytes += r.size() as u64;
        let size = r.size() + 64;
        let entry = self.pending.entry(p).or_default();
        entry.0.push(r);
        entry.1 += size;
        if entry.1 >= self.batch_bytes {
            self.flush(p).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, p: i32) -> anyhow::Result<()> {
        let Some((records, _)) = self.pending.remove(&p) else {
            return Ok(());
        };
        if records.is_empty() {
            return Ok(());
        }
        let ack = self
            .client
            .produce_with(self.topic, p, &records, self.acks, self.compression)
            .await?;
        let s = self.stats.entry(p).or_default();
        s.records += records.len() as u64;
        if let Some(base) = ack.base_offset {
            s.first_offset.get_or_insert(base);
            s.last_offset = Some(base + records.len() as i64 - 1);
        }
        if p == self.sticky && self.fixed_partition.is_none() {
            self.sticky = (self.sticky + 1) % self.partitions;
        }
        Ok(())
    }

    async fn flush_all(&mut self) -> anyhow::Result<()> {
        let ps: Vec<i32> = self.pending.keys().copied().collect();
        for p in ps {
            self.flush(p).await?;
        }
        Ok(())
    }
}

pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let delimiter = unescape(&args.delimiter);
    if delimiter.is_empty() {
        return Err(usage("--delimiter must not be empty"));
    }
    let key_sep = args.key_separator.as_deref().map(unescape);
    if key_sep.as_ref().is_some_and(Vec::is_empty) {
        return Err(usage("--key-separator must not be empty"));
    }
    let (mut input, size): (Box<dyn AsyncRead + Unpin>, Option<u64>) = match &args.file {
        Some(path) => {
            let f = tokio::fs::File::open(path).await.map_err(|e| {
                anyhow::Error::new(e).context(format!("cannot open {}", path.display()))
            })?;
            let size = f.metadata().await.ok().map(|m| m.len());
            (Box::new(f), size)
        }
        None => (Box::new(tokio::io::stdin()), None),
    };

    let client = args.conn.connect().await?;
    let md = client.topic_metadata(&args.topic).await?;
    let partitions = i32::try_from(md.partitions.len()).unwrap_or(i32::MAX);
    if partitions == 0 {
        anyhow::bail!("topic has no partitions. topic={}", args.topic);
    }
    if let Some(p) = args.partition {
        if p >= partitions {
            return Err(usage(format!(
                "partition {p} does not exist: topic {} has {partitions} partitions",
                args.topic
            )));
        }
    }
    let headers: Vec<(String, Option<Bytes>)> = args
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Some(Bytes::copy_from_slice(v.as_bytes()))))
        .collect();

    let mut producer = Producer {
        client: &client,
        topic: &args.topic,
        acks: args.acks,
        compression: args.compression.into(),
        batch_bytes: usize::try_from(args.batch_bytes).unwrap_or(usize::MAX),
        partitions,
        fixed_partition: args.partition,
        sticky: rand::random_range(0..partitions),
        pending: BTreeMap::new(),
        stats: BTreeMap::new(),
        records: 0,
        bytes: 0,
    };
    let pb = progress_bar(size, Unit::Bytes, true);
    let make = |piece: Bytes| -> ProduceRecord {
        let (key, value) = split_key(piece, key_sep.as_deref());
        ProduceRecord {
            key,
            value: Some(value),
            headers: headers.clone(),
            timestamp: None,
        }
    };

    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut scanned = 0usize;
    loop {
        let n = input.read_buf(&mut buf).await?;
        pb.inc(n as u64);
        if n == 0 {
            if !buf.is_empty() {
                producer.add(make(buf.split().freeze())).await?;
            }
            break;
        }
        while let Some(i) = find(&buf[scanned..], &delimiter) {
            let piece = buf.split_to(scanned + i).freeze();
            let _ = buf.split_to(delimiter.len());
            scanned = 0;
            producer.add(make(piece)).await?;
        }
        // Resume the search where a delimiter could still start.
        scanned = buf.len().saturating_sub(delimiter.len() - 1);
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        pb.set_message(format!("{} records", producer.records));
    }
    producer.flush_all().await?;
    pb.finish_and_clear();

    let (records, bytes) = (producer.records, producer.bytes);
    match args.conn.output {
        Output::Json => print_json(&json!({
            "topic": args.topic,
            "records": records,
            "bytes": bytes,
            "partitions": producer.stats.iter().map(|(p, s)| json!({
                "partition": p,
                "records": s.records,
                "first_offset": s.first_offset,
                "last_offset": s.last_offset,
            })).collect::<Vec<_>>(),
        })),
        Output::Table => {
            eprintln!(
                "produced {records} records ({bytes} bytes) to {}",
                args.topic
            );
            if producer.stats.len() > 1 {
                let mut c = Columns::new(&["PARTITION", "RECORDS", "FIRST OFFSET", "LAST OFFSET"]);
                for (p, s) in &producer.stats {
                    c.row([
                        p.to_string(),
                        s.records.to_string(),
                        super::output::opt(s.first_offset),
                        super::output::opt(s.last_offset),
                    ]);
                }
                eprint!("{}", c.render());
            }
            Ok(())
        }
    }
}

/// Split at the first `sep`; without one (or without a separator option)
/// the whole piece is the value and the key is null.
fn split_key(piece: Bytes, sep: Option<&[u8]>) -> (Option<Bytes>, Bytes) {
    let Some(sep) = sep else {
        return (None, piece);
    };
    match find(&piece, sep) {
        Some(i) => (Some(piece.slice(..i)), piece.slice(i + sep.len()..)),
        None => (None, piece),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() == 1 {
        return haystack.iter().position(|b| *b == needle[0]);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Kafka's default partitioner for keyed records.
fn key_partition(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`).
fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from Kafka's UtilsTest.testMurmur2.
    #[test]
    fn murmur2_matches_kafka() {
        let cases: &[(&str, i32)] = &[
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(murmur2(input.as_bytes()), *want, "{input}");
        }
    }

    #[test]
    fn keys_split_at_the_first_separator() {
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        assert_eq!(split_key(b("k:v:w"), Some(b":")), (Some(b("k")), b("v:w")));
        assert_eq!(split_key(b("novalue"), Some(b":")), (None, b("novalue")));
        assert_eq!(split_key(b(":v"), Some(b":")), (Some(b("")), b("v")));
        assert_eq!(split_key(b("a::b"), Some(b"::")), (Some(b("a")), b("b")));
        assert_eq!(split_key(b("k:v"), None), (None, b("k:v")));
    }
}
