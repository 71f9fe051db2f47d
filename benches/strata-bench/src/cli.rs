//! The command line: its arguments, the sizes a run uses after `--quick`,
//! and the progress lines the tool prints on stderr.

use std::path::PathBuf;

use clap::Parser;

pub const MIB: u64 = 1 << 20;

/// A broker to compare with (`--peer NAME=HOST:PORT`).
#[derive(Debug, Clone)]
pub struct Peer {
    pub name: String,
    pub addr: String,
}

fn parse_peer(s: &str) -> Result<Peer, String> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("--peer {s}: expected NAME=HOST:PORT"))?;
    if name.is_empty()
        || addr
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
    {
        return Err(format!("--peer {s}: expected NAME=HOST:PORT"));
    }
    Ok(Peer {
        name: name.to_string(),
        addr: addr.to_string(),
    })
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "strata-bench",
    about = "Benchmark a Kafka-compatible broker against loopback, disk and object-store references"
)]
pub struct Args {
    /// Broker to drive (HOST:PORT). Without it the tool starts Strata itself;
    /// the tier workloads (warm, cold, RSS) need a broker the tool started.
    #[arg(long)]
    pub bootstrap: Option<String>,
    /// Strata binary [default: target/release/strata, else target/debug/strata].
    #[arg(long)]
    pub strata_bin: Option<PathBuf>,
    /// Small sizes for a smoke test (well under a minute).
    #[arg(long)]
    pub quick: bool,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// S3 endpoint (LocalStack) for the s3:// tier runs, e.g. http://127.0.0.1:4566.
    #[arg(long)]
    pub s3_endpoint: Option<String>,
    /// Bucket for the s3:// tier runs (created with an unsigned PUT).
    #[arg(long, default_value = "strata-bench")]
    pub s3_bucket: String,
    /// Record sizes of the produce runs, bytes.
    #[arg(long, value_delimiter = ',', default_value = "100,1024,16384")]
    pub record_sizes: Vec<usize>,
    /// acks settings of the produce runs.
    #[arg(long, value_delimiter = ',', default_value = "1,all")]
    pub acks: Vec<String>,
    /// Partition counts of the produce runs.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub partitions: Vec<i32>,
    /// Payload bytes per produce run [default: 128 MiB; --quick 1 MiB].
    #[arg(long)]
    pub produce_bytes: Option<u64>,
    /// linger.ms of every producer (max-throughput and end-to-end runs).
    /// librdkafka's default is 5, which alone would put most of a 5 ms
    /// latency budget into batching.
    #[arg(long, default_value_t = 1)]
    pub linger_ms: u32,
    /// Payload bytes of the consume data set [default: 512 MiB; --quick 16 MiB].
    #[arg(long)]
    pub consume_bytes: Option<u64>,
    /// Record size of the consume data set, bytes.
    #[arg(long, default_value_t = 1024)]
    pub consume_record_size: usize,
    /// Partitions of the consume data set.
    #[arg(long, default_value_t = 4)]
    pub consume_partitions: i32,
    /// segment.bytes of the tiered topic [default: 8 MiB; --quick 1 MiB];
    /// local.retention.bytes is set to the same value for the tier reads.
    #[arg(long)]
    pub tier_segment_bytes: Option<u64>,
    /// The broker's tier memory cache (--tier-cache-memory-bytes) [default:
    /// 1 GiB; --quick 256 MiB]; it should hold the consume data set so the
    /// second tier read is warm.
    #[arg(long)]
    pub tier_cache_bytes: Option<u64>,
    /// Bytes per ranged GET, for the broker (--tier-chunk-bytes) and the raw reference.
    #[arg(long, default_value_t = 4 * MIB)]
    pub tier_chunk_bytes: u64,
    /// Gives the broker a tier disk cache of this many bytes
    /// (--tier-cache-dir in the work directory, --tier-cache-disk-bytes).
    /// With a memory cache smaller than the data set, the warm read then
    /// comes from the disk cache, sent with sendfile [default: no disk cache].
    #[arg(long)]
    pub tier_disk_cache_bytes: Option<u64>,
    /// Concurrent ranged reads (threads, one connection each) of the raw
    /// tier reference.
    #[arg(long, default_value_t = 8)]
    pub raw_read_threads: usize,
    /// End-to-end run: fraction of the maximum throughput to produce at.
    #[arg(long, default_value_t = 0.5)]
    pub e2e_fraction: f64,
    /// End-to-end run: seconds [default: 10; --quick 2].
    #[arg(long)]
    pub e2e_seconds: Option<f64>,
    /// End-to-end runs: the maximum throughput they take a fraction of is
    /// measured first by producing flat out for this many seconds with the
    /// same settings (a sustained maximum; a short burst is absorbed by the
    /// page cache and overstates it). 0: use the produce run of the matrix
    /// [default: 10; --quick 0].
    #[arg(long)]
    pub e2e_max_seconds: Option<f64>,
    /// End-to-end runs: record size; one run per acks setting, each at the
    /// fraction of the produce run with this size, that acks and the most
    /// partitions (and the same producer settings).
    #[arg(long, default_value_t = 1024)]
    pub e2e_record_size: usize,
    /// Where data directories and reference files go [default: the system temp dir].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Extra librdkafka producer property KEY=VALUE, applied last (repeatable).
    #[arg(long = "producer-config", value_parser = parse_kv)]
    pub producer_config: Vec<(String, String)>,
    /// Extra librdkafka consumer property KEY=VALUE, applied last (repeatable).
    #[arg(long = "consumer-config", value_parser = parse_kv)]
    pub consumer_config: Vec<(String, String)>,
    /// Skip the tier workloads (warm, cold, raw tier reads, s3://).
    #[arg(long)]
    pub no_tier: bool,
    /// TCP congestion control for the brokers the tool starts
    /// (--tcp-congestion-control) and for the loopback references' sending
    /// sockets, so both use the same [default: the system's,
    /// net.ipv4.tcp_congestion_control].
    #[arg(long)]
    pub tcp_congestion_control: Option<String>,
    /// Start this many brokers as one cluster and measure what replication
    /// costs instead of the single-broker runs: produce (--e2e-record-size
    /// records, the largest --partitions count, each --acks setting) to a
    /// topic of replication factor 1 and to one of factor N, same run.
    #[arg(long, value_parser = clap::value_parser!(u8).range(2..=5))]
    pub brokers: Option<u8>,
    /// Measure what TLS costs instead of the single-broker runs: one broker
    /// with a PLAINTEXT and an SSL listener, a hot consume of the consume
    /// data set and an acks=1 produce (--e2e-record-size records, 16
    /// partitions, --produce-bytes) over each, alternating, same run.
    #[arg(long, conflicts_with_all = ["brokers", "bootstrap"])]
    pub tls: bool,
    /// What the log cleaner does and costs: its throughput on a compacted
    /// topic of keyed updates (--produce-bytes) beside the disk's
    /// sequential read + write, and acks=1 produce to a compacted topic
    /// while the cleaner runs beside produce to a delete topic, same run.
    #[arg(long, conflicts_with_all = ["brokers", "bootstrap", "tls"])]
    pub compaction: bool,
    /// What topics as tables cost: the export's throughput (MB of tiered
    /// segment turned into Parquet per second, --produce-bytes of 1 KiB
    /// records on 16 partitions) beside the disk's sequential read +
    /// write, and acks=1 produce to a tiered table topic beside a tiered
    /// topic without a table, same run (tier on file:// in the work dir)
    #[arg(long, conflicts_with_all = ["brokers", "bootstrap", "tls", "compaction"])]
    pub table_export: bool,
    /// What transactions cost the producer: a transactional producer
    /// (transactions of 1,000 records, --produce-bytes of 1 KiB records on
    /// 16 partitions) beside an idempotent producer (acks=all), alternating
    /// rounds on one broker; the ratio of their MB/s
    #[arg(long, conflicts_with_all = ["brokers", "bootstrap", "tls", "compaction", "table_export"])]
    pub transactions: bool,
    /// The broker's own ceiling without a client library: raw protocol
    /// drivers (pipelined Produce of pre-encoded batches, acks=1 and
    /// acks=all, --produce-bytes; pipelined Fetch of what acks=1 wrote,
    /// --consume-bytes in all) beside the loopback copy, loopback sendfile
    /// and fdatasync'd disk write, and the librdkafka consumer against
    /// Strata beside the same consumer against librdkafka's mock broker.
    /// With --bootstrap, drives that broker instead of starting Strata
    #[arg(long, conflicts_with_all = ["brokers", "tls", "compaction", "table_export", "transactions"])]
    pub raw: bool,
    /// Another Kafka-compatible broker, NAME=HOST:PORT, started beforehand:
    /// with --raw every round drives it too, right after (or before) the
    /// Strata the tool starts, and the report gives Strata's figures as
    /// ratios of the peer's.
    #[arg(long, requires = "raw", conflicts_with = "bootstrap", value_parser = parse_peer)]
    pub peer: Option<Peer>,
    /// How one broker scales with partitions: for each of
    /// --partition-counts, a fresh broker, a topic of that many partitions
    /// (creation timed), RSS and file descriptors per idle partition, an
    /// acks=1 produce at --partition-rate-mb over every partition (p99),
    /// and the time to stop and to be ready again after a stop and after a
    /// kill -9
    #[arg(long, conflicts_with_all = ["brokers", "bootstrap", "tls", "compaction", "table_export", "transactions", "raw"])]
    pub partition_scaling: bool,
    /// Long replay from the tier: --consume-bytes of --consume-record-size
    /// records to a topic whose local retention is one segment from its
    /// creation (the set lives only in the tier once uploaded), on
    /// file:// and, with --s3-endpoint, --s3-replay-bytes on s3://; each
    /// read first, warm, and cold (restarted broker, empty cache) beside raw
    /// reads of the same objects, with GETs per MiB and the broker's peak
    /// RSS against the tier cache bound
    #[arg(long, conflicts_with_all = ["brokers", "bootstrap", "tls", "compaction", "table_export", "transactions", "raw", "partition_scaling"])]
    pub long_replay: bool,
    /// Bytes --long-replay writes to and replays from s3:// [default:
    /// 2 GiB; with --quick 16 MiB].
    #[arg(long)]
    pub s3_replay_bytes: Option<u64>,
    /// Partition counts of --partition-scaling (above 10,000 the broker is
    /// started with --max-partitions-per-request raised to the count).
    #[arg(long, value_delimiter = ',', default_value = "16,1000,10000")]
    pub partition_counts: Vec<i32>,
    /// Total produce rate of --partition-scaling, MB/s of 1 KiB records.
    #[arg(long, default_value_t = 16.0)]
    pub partition_rate_mb: f64,
    /// Keep the work directory (broker data and logs) at the end.
    #[arg(long)]
    pub keep: bool,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

/// Sizes after applying --quick.
#[derive(Clone)]
pub struct Plan {
    pub produce_bytes: u64,
    pub consume_bytes: u64,
    pub segment_bytes: u64,
    pub cache_bytes: u64,
    pub e2e_seconds: f64,
    pub e2e_max_seconds: f64,
}

impl Plan {
    pub fn new(a: &Args) -> Plan {
        let q = a.quick;
        Plan {
            produce_bytes: a.produce_bytes.unwrap_or(if q { MIB } else { 128 * MIB }),
            consume_bytes: a
                .consume_bytes
                .unwrap_or(if q { 16 * MIB } else { 512 * MIB }),
            segment_bytes: a
                .tier_segment_bytes
                .unwrap_or(if q { MIB } else { 8 * MIB }),
            cache_bytes: a
                .tier_cache_bytes
                .unwrap_or(if q { 256 * MIB } else { 1024 * MIB }),
            e2e_seconds: a.e2e_seconds.unwrap_or(if q { 2.0 } else { 10.0 }),
            e2e_max_seconds: a.e2e_max_seconds.unwrap_or(if q { 0.0 } else { 10.0 }),
        }
    }
}

pub fn say(msg: impl AsRef<str>) {
    eprintln!("[strata-bench] {}", msg.as_ref());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_a_name_and_an_address() {
        let p = parse_peer("nisshi=127.0.0.1:19092").expect("peer");
        assert_eq!(
            (p.name.as_str(), p.addr.as_str()),
            ("nisshi", "127.0.0.1:19092")
        );
        for bad in [
            "nisshi",
            "=127.0.0.1:9092",
            "nisshi=127.0.0.1",
            "n=:9092",
            "n=h:port",
        ] {
            let e = parse_peer(bad).expect_err(bad);
            assert!(e.contains("NAME=HOST:PORT"), "{bad}: {e}");
        }
    }
}
