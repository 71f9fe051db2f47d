//! strata-bench: drives a Kafka-compatible broker with librdkafka and puts
//! every figure beside what the machine physically allows, measured in the
//! same run. See benches/README.md.

mod broker;
mod cpu;
mod http;
mod kafka;
mod reference;
mod stats;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};

use broker::Broker;
use kafka::{ConsumeResult, ProduceResult, ProduceSpec};
use reference::Transfer;
use stats::BucketSummary;

const MIB: u64 = 1 << 20;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "strata-bench",
    about = "Benchmark a Kafka-compatible broker against loopback, disk and object-store references"
)]
struct Args {
    /// Broker to drive (HOST:PORT). Without it the tool starts Strata itself;
    /// the tier workloads (warm, cold, RSS) need a broker the tool started.
    #[arg(long)]
    bootstrap: Option<String>,
    /// Strata binary [default: target/release/strata, else target/debug/strata].
    #[arg(long)]
    strata_bin: Option<PathBuf>,
    /// Small sizes for a smoke test (well under a minute).
    #[arg(long)]
    quick: bool,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// S3 endpoint (LocalStack) for the s3:// tier runs, e.g. http://127.0.0.1:4566.
    #[arg(long)]
    s3_endpoint: Option<String>,
    /// Bucket for the s3:// tier runs (created with an unsigned PUT).
    #[arg(long, default_value = "strata-bench")]
    s3_bucket: String,
    /// Record sizes of the produce runs, bytes.
    #[arg(long, value_delimiter = ',', default_value = "100,1024,16384")]
    record_sizes: Vec<usize>,
    /// acks settings of the produce runs.
    #[arg(long, value_delimiter = ',', default_value = "1,all")]
    acks: Vec<String>,
    /// Partition counts of the produce runs.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    partitions: Vec<i32>,
    /// Payload bytes per produce run [default: 128 MiB; --quick 1 MiB].
    #[arg(long)]
    produce_bytes: Option<u64>,
    /// linger.ms of every producer (max-throughput and end-to-end runs).
    /// librdkafka's default is 5, which alone would put most of a 5 ms
    /// latency budget into batching.
    #[arg(long, default_value_t = 1)]
    linger_ms: u32,
    /// Payload bytes of the consume data set [default: 512 MiB; --quick 16 MiB].
    #[arg(long)]
    consume_bytes: Option<u64>,
    /// Record size of the consume data set, bytes.
    #[arg(long, default_value_t = 1024)]
    consume_record_size: usize,
    /// Partitions of the consume data set.
    #[arg(long, default_value_t = 4)]
    consume_partitions: i32,
    /// segment.bytes of the tiered topic [default: 8 MiB; --quick 1 MiB];
    /// local.retention.bytes is set to the same value for the tier reads.
    #[arg(long)]
    tier_segment_bytes: Option<u64>,
    /// The broker's tier memory cache (--tier-cache-memory-bytes) [default:
    /// 1 GiB; --quick 256 MiB]; it should hold the consume data set so the
    /// second tier read is warm.
    #[arg(long)]
    tier_cache_bytes: Option<u64>,
    /// Bytes per ranged GET, for the broker (--tier-chunk-bytes) and the raw reference.
    #[arg(long, default_value_t = MIB)]
    tier_chunk_bytes: u64,
    /// Gives the broker a tier disk cache of this many bytes
    /// (--tier-cache-dir in the work directory, --tier-cache-disk-bytes).
    /// With a memory cache smaller than the data set, the warm read then
    /// comes from the disk cache, sent with sendfile [default: no disk cache].
    #[arg(long)]
    tier_disk_cache_bytes: Option<u64>,
    /// Concurrent ranged reads (threads, one connection each) of the raw
    /// tier reference.
    #[arg(long, default_value_t = 8)]
    raw_read_threads: usize,
    /// End-to-end run: fraction of the maximum throughput to produce at.
    #[arg(long, default_value_t = 0.5)]
    e2e_fraction: f64,
    /// End-to-end run: seconds [default: 10; --quick 2].
    #[arg(long)]
    e2e_seconds: Option<f64>,
    /// End-to-end runs: the maximum throughput they take a fraction of is
    /// measured first by producing flat out for this many seconds with the
    /// same settings (a sustained maximum; a short burst is absorbed by the
    /// page cache and overstates it). 0: use the produce run of the matrix
    /// [default: 10; --quick 0].
    #[arg(long)]
    e2e_max_seconds: Option<f64>,
    /// End-to-end runs: record size; one run per acks setting, each at the
    /// fraction of the produce run with this size, that acks and the most
    /// partitions (and the same producer settings).
    #[arg(long, default_value_t = 1024)]
    e2e_record_size: usize,
    /// Where data directories and reference files go [default: the system temp dir].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Extra librdkafka producer property KEY=VALUE, applied last (repeatable).
    #[arg(long = "producer-config", value_parser = parse_kv)]
    producer_config: Vec<(String, String)>,
    /// Extra librdkafka consumer property KEY=VALUE, applied last (repeatable).
    #[arg(long = "consumer-config", value_parser = parse_kv)]
    consumer_config: Vec<(String, String)>,
    /// Skip the tier workloads (warm, cold, raw tier reads, s3://).
    #[arg(long)]
    no_tier: bool,
    /// TCP congestion control for the brokers the tool starts
    /// (--tcp-congestion-control) and for the loopback references' sending
    /// sockets, so both use the same [default: the system's,
    /// net.ipv4.tcp_congestion_control].
    #[arg(long)]
    tcp_congestion_control: Option<String>,
    /// Keep the work directory (broker data and logs) at the end.
    #[arg(long)]
    keep: bool,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

/// Sizes after applying --quick.
struct Plan {
    produce_bytes: u64,
    consume_bytes: u64,
    segment_bytes: u64,
    cache_bytes: u64,
    e2e_seconds: f64,
    e2e_max_seconds: f64,
}

impl Plan {
    fn new(a: &Args) -> Plan {
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

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn say(msg: impl AsRef<str>) {
    eprintln!("[strata-bench] {}", msg.as_ref());
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn produce_json(r: &ProduceResult) -> Value {
    json!({
        "records": r.records,
        "bytes": r.bytes,
        "seconds": r.secs,
        "records_per_sec": r.records_per_sec(),
        "mb_per_sec": r.mb_per_sec(),
        "latency": r.latency.json(),
        "broker_cpu_pct": r.cpu.broker_pct,
        "client_cpu_pct": r.cpu.client_pct,
    })
}

fn client_json(c: &kafka::ClientSplit) -> Value {
    json!({
        "queue_to_request": c.queue.json(),
        "request_round_trip": c.rtt.json(),
    })
}

/// The label of the replay set read by the same consumer from librdkafka's
/// mock broker, wherever it is printed (a "librdkafka" reference is shown
/// in the Targets table).
const MOCK_CONSUMER: &str = "librdkafka's mock broker, same consumer";

fn consume_json(r: &ConsumeResult) -> Value {
    json!({
        "records": r.records,
        "bytes": r.bytes,
        "seconds": r.secs,
        "records_per_sec": r.records_per_sec(),
        "mb_per_sec": r.mb_per_sec(),
        "broker_cpu_pct": r.cpu.broker_pct,
        "client_cpu_pct": r.cpu.client_pct,
    })
}

fn transfer_json(t: &Transfer) -> Value {
    json!({ "bytes": t.bytes, "seconds": t.secs, "mb_per_sec": t.mb_per_sec() })
}

/// One Strata figure beside its reference.
struct Ratio {
    name: String,
    value: f64,
    unit: &'static str,
    reference_name: String,
    reference: f64,
    /// Target on value/reference: (bound, true = at least, false = at most).
    target: Option<(f64, bool)>,
}

impl Ratio {
    fn ratio(&self) -> f64 {
        self.value / self.reference
    }
    fn met(&self) -> Option<bool> {
        let (bound, at_least) = self.target?;
        Some(if at_least {
            self.ratio() >= bound
        } else {
            self.ratio() <= bound
        })
    }
    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "reference_name": self.reference_name,
            "reference": self.reference,
            "ratio": self.ratio(),
            "target": self.target.map(|(b, at_least)| format!("{} {b}", if at_least { ">=" } else { "<=" })),
            "met": self.met(),
        })
    }
}

/// Results of the tier workloads of one backend.
struct TierRun {
    backend: &'static str,
    first: ConsumeResult,
    warm: ConsumeResult,
    cold: ConsumeResult,
    raw: Transfer,
    raw_name: &'static str,
    tier_bytes: f64,
    warm_hit_ratio: Option<f64>,
    warm_zero_copy_bytes: f64,
    cold_downloaded: Option<f64>,
    rss_first_process: Option<u64>,
    rss_cold_process: Option<u64>,
    cache_bytes: u64,
}

impl TierRun {
    fn json(&self) -> Value {
        json!({
            "first_read": consume_json(&self.first),
            "warm": consume_json(&self.warm),
            "cold": consume_json(&self.cold),
            "raw_reads": transfer_json(&self.raw),
            "raw_reads_kind": self.raw_name,
            "tier_bytes": self.tier_bytes,
            "warm_cache_hit_ratio": self.warm_hit_ratio,
            "warm_zero_copy_bytes": self.warm_zero_copy_bytes,
            "cold_bytes_downloaded": self.cold_downloaded,
            "broker_peak_rss_bytes": self.rss_first_process,
            "cold_broker_peak_rss_bytes": self.rss_cold_process,
            "cache_capacity_bytes": self.cache_bytes,
        })
    }
}

/// /proc/loadavg when the run started: other load on the machine skews
/// every figure, so the report says how busy it was.
static LOADAVG_AT_START: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn run(a: &Args) -> Result<()> {
    let plan = Plan::new(a);
    let _ = LOADAVG_AT_START.set(loadavg());
    kafka::set_overrides(a.producer_config.clone(), a.consumer_config.clone());
    let started = Instant::now();
    let base = a.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = base.join(format!("strata-bench-{}-{}", std::process::id(), unix_ms()));
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    say(format!(
        "work dir {}; /proc/loadavg: {}; TCP congestion control: {}",
        work.display(),
        loadavg(),
        match &a.tcp_congestion_control {
            Some(cc) => format!("{cc} (--tcp-congestion-control)"),
            None => format!(
                "{} (the system's default)",
                reference::system_congestion_control().unwrap_or_else(|| "unknown".into())
            ),
        }
    ));
    let result = run_in(a, &plan, &work);
    if a.keep || result.is_err() {
        say(format!("kept {}", work.display()));
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    say(format!("done in {:.1} s", started.elapsed().as_secs_f64()));
    result
}

/// The tier arguments of a broker whose data directory is `dir`.
fn broker_args(a: &Args, plan: &Plan, tier_url: &str, dir: &Path) -> Vec<String> {
    let mut args = vec![
        "--tier-url".into(),
        tier_url.into(),
        "--tier-cache-memory-bytes".into(),
        plan.cache_bytes.to_string(),
        "--tier-chunk-bytes".into(),
        a.tier_chunk_bytes.to_string(),
    ];
    if let Some(cc) = &a.tcp_congestion_control {
        args.extend(["--tcp-congestion-control".into(), cc.clone()]);
    }
    if let Some(bytes) = a.tier_disk_cache_bytes {
        args.extend([
            "--tier-cache-dir".into(),
            dir.with_extension("tier-cache").display().to_string(),
            "--tier-cache-disk-bytes".into(),
            bytes.to_string(),
        ]);
    }
    args
}

fn run_in(a: &Args, plan: &Plan, work: &Path) -> Result<()> {
    let prefix = format!("sb{}", std::process::id());
    let strata_bin = match (&a.bootstrap, &a.strata_bin) {
        (Some(_), _) => None,
        (None, Some(p)) => Some(p.clone()),
        (None, None) => Some(broker::find_strata_bin()?),
    };
    let mut file_broker = match &strata_bin {
        Some(bin) => {
            let dir = work.join("file-broker");
            let tier = format!("file://{}", dir.join("tier").display());
            say(format!("starting {} (tier {tier})", bin.display()));
            let b = Broker::start(bin, &dir, broker_args(a, plan, &tier, &dir), Vec::new())?;
            say(format!(
                "broker at {}, log {}",
                b.bootstrap,
                b.log_path().display()
            ));
            Some(b)
        }
        None => None,
    };
    if a.bootstrap.is_some() && a.s3_endpoint.is_some() {
        say("--s3-endpoint needs a broker the tool starts; ignored with --bootstrap");
    }
    let bootstrap = match (&file_broker, &a.bootstrap) {
        (Some(b), _) => b.bootstrap.clone(),
        (None, Some(b)) => b.clone(),
        (None, None) => unreachable!("either a bootstrap or a started broker"),
    };

    let pid = file_broker.as_ref().and_then(Broker::pid);

    // 1. Produce at maximum throughput over the whole matrix.
    let mut produce_rows = Vec::new();
    for &size in &a.record_sizes {
        for acks in &a.acks {
            for &parts in &a.partitions {
                let topic = format!("{prefix}-p{size}-a{acks}-n{parts}");
                kafka::create_topic(&bootstrap, &topic, parts, &[])?;
                let spec = ProduceSpec {
                    topic,
                    partitions: parts,
                    record_bytes: size,
                    records: (plan.produce_bytes / size as u64).max(1),
                    acks: acks.clone(),
                    linger_ms: a.linger_ms,
                    rate: None,
                };
                let r = kafka::produce(&bootstrap, &spec, Instant::now(), false, true, pid)?;
                say(format!(
                    "produce {size} B acks={acks} partitions={parts}: {:.0} rec/s, {:.1} MB/s, p99 {:.2} ms",
                    r.records_per_sec(),
                    r.mb_per_sec(),
                    r.latency.p99_ms
                ));
                produce_rows.push((spec, r));
            }
        }
    }

    // Hot reads of the acks=1 topics just written: every record size.
    let mut hot_rows = Vec::new();
    for (spec, _) in produce_rows.iter().filter(|(s, _)| s.acks == "1") {
        let c = kafka::consume_all(&bootstrap, &spec.topic, spec.partitions, pid)?;
        say(format!(
            "hot consume {} B, {} partitions: {:.0} rec/s, {:.1} MB/s",
            spec.record_bytes,
            spec.partitions,
            c.records_per_sec(),
            c.mb_per_sec()
        ));
        hot_rows.push((spec.clone(), c));
    }

    // Disk references write where the broker keeps its data.
    let disk_dir = file_broker
        .as_ref()
        .map(|b| b.data_dir().to_path_buf())
        .unwrap_or_else(|| work.to_path_buf());

    // 2. End to end at a fraction of the maximum of the matching run.
    let mut e2e_runs = Vec::new();
    for acks in &a.acks {
        let Some((base, max)) = produce_rows
            .iter()
            .filter(|(s, _)| s.record_bytes == a.e2e_record_size && &s.acks == acks)
            .max_by_key(|(s, _)| s.partitions)
        else {
            continue;
        };
        let max = if plan.e2e_max_seconds > 0.0 {
            let spec = ProduceSpec {
                topic: format!("{prefix}-max-a{acks}"),
                records: ((max.records_per_sec() * plan.e2e_max_seconds) as u64).max(10),
                ..base.clone()
            };
            kafka::create_topic(&bootstrap, &spec.topic, spec.partitions, &[])?;
            let r = kafka::produce(&bootstrap, &spec, Instant::now(), false, true, pid)?;
            say(format!(
                "sustained max {} B acks={acks} partitions={}: {:.0} rec/s, {:.1} MB/s over {:.1} s (burst: {:.0} rec/s)",
                spec.record_bytes,
                spec.partitions,
                r.records_per_sec(),
                r.mb_per_sec(),
                r.secs,
                max.records_per_sec()
            ));
            kafka::delete_topic(&bootstrap, &spec.topic)?;
            if let Some(b) = &file_broker {
                settle_after_delete(b.data_dir(), &spec.topic);
            }
            r
        } else {
            max.clone()
        };
        let rate = (max.records_per_sec() * a.e2e_fraction).max(1.0);
        let spec = ProduceSpec {
            topic: format!("{prefix}-e2e-a{acks}"),
            record_bytes: base.record_bytes.max(8),
            records: ((rate * plan.e2e_seconds) as u64).max(10),
            rate: Some(rate),
            ..base.clone()
        };
        let broker_p99s = |split: &BrokerSplit| {
            format!(
                "broker: Produce p99 <= {} ms, sync round p99 <= {} ms",
                split
                    .produce
                    .as_ref()
                    .map_or("n/a".into(), |s| f2(s.p99_ms)),
                split.rounds.as_ref().map_or("n/a".into(), |s| f2(s.p99_ms)),
            )
        };
        // The producer alone at the rate, then with a consumer tailing.
        let paced_spec = ProduceSpec {
            topic: format!("{prefix}-paced-a{acks}"),
            ..spec.clone()
        };
        kafka::create_topic(&bootstrap, &paced_spec.topic, spec.partitions, &[])?;
        let (paced, paced_split) = BrokerSplit::around(file_broker.as_ref(), || {
            kafka::produce(&bootstrap, &paced_spec, Instant::now(), false, true, pid)
        })?;
        say(format!(
            "produce alone at {:.0} rec/s ({} B, acks={}, {} partitions): p99 {:.2} ms; {}",
            rate,
            spec.record_bytes,
            spec.acks,
            spec.partitions,
            paced.latency.p99_ms,
            broker_p99s(&paced_split)
        ));
        // The client stack's own latency at the same rate: librdkafka
        // against its in-process mock broker (memory only, no other process).
        let client_floor = {
            let mock = rdkafka::mocking::MockCluster::new(1)?;
            mock.create_topic(&paced_spec.topic, spec.partitions, 1)?;
            kafka::produce(
                &mock.bootstrap_servers(),
                &paced_spec,
                Instant::now(),
                false,
                true,
                None,
            )?
        };
        say(format!(
            "librdkafka's mock broker at {rate:.0} rec/s: p99 {:.2} ms",
            client_floor.latency.p99_ms
        ));
        // For acks=all, what the disk itself allows at the same rate.
        let disk_floor = if matches!(acks.as_str(), "all" | "-1") {
            let floor = reference::paced_sync_latency(
                &disk_dir,
                rate * spec.record_bytes as f64,
                plan.e2e_seconds.min(5.0),
            )?;
            say(format!(
                "disk at {:.1} MB/s, a write per ms and fdatasync back to back: write to durable p99 {:.2} ms",
                rate * spec.record_bytes as f64 / 1e6,
                floor.p99_ms
            ));
            Some(floor)
        } else {
            None
        };
        kafka::create_topic(&bootstrap, &spec.topic, spec.partitions, &[])?;
        let (e2e, split) = BrokerSplit::around(file_broker.as_ref(), || {
            kafka::end_to_end(&bootstrap, &spec, pid)
        })?;
        say(format!(
            "end to end at {:.0} rec/s ({} B, acks={}, {} partitions): produce p99 {:.2} ms, e2e p99 {:.2} ms; {}",
            rate,
            spec.record_bytes,
            spec.acks,
            spec.partitions,
            e2e.produce.latency.p99_ms,
            e2e.latency.p99_ms,
            broker_p99s(&split)
        ));
        e2e_runs.push((
            spec,
            E2eRun {
                max,
                paced,
                paced_split,
                client_floor,
                disk_floor,
                e2e,
                split,
            },
        ));
    }
    if e2e_runs.is_empty() {
        bail!(
            "no produce run with --e2e-record-size {}",
            a.e2e_record_size
        );
    }

    // 3. The consume data set; hot read from the local log.
    let consume_topic = format!("{prefix}-replay");
    let tier_configs = |local: i64| -> Vec<(&'static str, String)> {
        vec![
            ("segment.bytes", plan.segment_bytes.to_string()),
            ("local.retention.bytes", local.to_string()),
        ]
    };
    let consume_records = (plan.consume_bytes / a.consume_record_size as u64).max(1);
    let fill = |bootstrap: &str, topic: &str, pid: Option<u32>| -> Result<ProduceResult> {
        let spec = ProduceSpec {
            topic: topic.to_string(),
            partitions: a.consume_partitions,
            record_bytes: a.consume_record_size,
            records: consume_records,
            acks: "1".into(),
            linger_ms: a.linger_ms,
            rate: None,
        };
        kafka::produce(bootstrap, &spec, Instant::now(), false, false, pid)
    };
    let managed_configs = if file_broker.is_some() {
        tier_configs(-1)
    } else {
        Vec::new()
    };
    kafka::create_topic(
        &bootstrap,
        &consume_topic,
        a.consume_partitions,
        &managed_configs,
    )?;
    fill(&bootstrap, &consume_topic, pid)?;
    if let Some(b) = &file_broker {
        wait_tiered(b, &consume_topic, a.consume_partitions, None)?;
    }
    let hot = kafka::consume_all(&bootstrap, &consume_topic, a.consume_partitions, pid)?;
    say(format!("hot consume: {:.1} MB/s", hot.mb_per_sec()));

    // 4. Physical references for the above.
    let cc = a.tcp_congestion_control.as_deref();
    let loopback = reference::loopback_copy(hot.bytes, cc)?;
    say(format!(
        "loopback TCP copy: {:.1} MB/s",
        loopback.mb_per_sec()
    ));
    let sendfile_ref = reference::loopback_sendfile(work, hot.bytes, cc)?;
    say(format!(
        "loopback sendfile copy: {:.1} MB/s",
        sendfile_ref.mb_per_sec()
    ));
    // The same consumer over the same records served by librdkafka's
    // in-process mock broker (memory only, no other process): how fast the
    // client itself takes them in on the machine the bench runs on.
    let mock_consume = {
        let mock = rdkafka::mocking::MockCluster::new(1)?;
        mock.create_topic(&consume_topic, a.consume_partitions, 1)?;
        let bootstrap = mock.bootstrap_servers();
        fill(&bootstrap, &consume_topic, None)?;
        kafka::consume_all(&bootstrap, &consume_topic, a.consume_partitions, None)?
    };
    say(format!(
        "the same consumer from librdkafka's mock broker: {:.1} MB/s",
        mock_consume.mb_per_sec()
    ));
    let disk_sync = reference::disk_write(&disk_dir, plan.produce_bytes, true)?;
    let disk_end = reference::disk_write(&disk_dir, plan.produce_bytes, false)?;
    let fsync_lat = reference::fdatasync_latency(&disk_dir, if a.quick { 20 } else { 200 })?;
    say(format!(
        "disk write: {:.1} MB/s (fdatasync every 1 MiB), {:.1} MB/s (fdatasync at the end); 4 KiB write + fdatasync p50 {:.2} ms, p99 {:.2} ms",
        disk_sync.mb_per_sec(),
        disk_end.mb_per_sec(),
        fsync_lat.p50_ms,
        fsync_lat.p99_ms
    ));

    // 5. The tier: file:// on the broker above, then s3:// on its own broker.
    let mut tiers = Vec::new();
    if let Some(b) = file_broker.as_mut().filter(|_| !a.no_tier) {
        let tier_root = b.data_dir().join("tier");
        let run = tier_run(a, plan, b, &consume_topic, "file", &|topic| {
            let objs = reference::file_tier_objects(&tier_root, topic, a.consume_partitions)?;
            reference::read_files(&objs, a.tier_chunk_bytes, a.raw_read_threads)
        })?;
        tiers.push(run);
    }
    let rss_file_broker = file_broker.as_ref().and_then(Broker::peak_rss);
    drop(file_broker);
    if let (Some(bin), Some(endpoint), false) = (&strata_bin, &a.s3_endpoint, a.no_tier) {
        let s3 = reference::S3::new(endpoint, &a.s3_bucket)?;
        s3.create_bucket()?;
        let s3_prefix = format!("bench-{}-{}", std::process::id(), unix_ms());
        let url = format!("s3://{}/{s3_prefix}", a.s3_bucket);
        say(format!(
            "starting {} (tier {url} at {endpoint})",
            bin.display()
        ));
        let dir = work.join("s3-broker");
        let mut args = broker_args(a, plan, &url, &dir);
        args.extend(["--tier-s3-endpoint".to_string(), endpoint.clone()]);
        let envs = [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec();
        let mut b = Broker::start(bin, &dir, args, envs)?;
        say(format!(
            "broker at {}, log {}",
            b.bootstrap,
            b.log_path().display()
        ));
        let topic = format!("{prefix}-replay-s3");
        kafka::create_topic(
            &b.bootstrap,
            &topic,
            a.consume_partitions,
            &tier_configs(-1),
        )?;
        fill(&b.bootstrap, &topic, b.pid())?;
        let run = tier_run(a, plan, &mut b, &topic, "s3", &|topic| {
            let objs = s3.tier_objects(&s3_prefix, topic, a.consume_partitions)?;
            s3.read_objects(&objs, a.tier_chunk_bytes, a.raw_read_threads)
        })?;
        tiers.push(run);
    }

    // 6. Report.
    let mut ratios = vec![
        Ratio {
            name: "hot consume".into(),
            value: hot.mb_per_sec(),
            unit: "MB/s",
            reference_name: "loopback TCP copy".into(),
            reference: loopback.mb_per_sec(),
            target: Some((0.60, true)),
        },
        Ratio {
            name: "hot consume".into(),
            value: hot.mb_per_sec(),
            unit: "MB/s",
            reference_name: "loopback sendfile copy".into(),
            reference: sendfile_ref.mb_per_sec(),
            target: None,
        },
        Ratio {
            name: "hot consume".into(),
            value: hot.mb_per_sec(),
            unit: "MB/s",
            reference_name: MOCK_CONSUMER.into(),
            reference: mock_consume.mb_per_sec(),
            target: None,
        },
        Ratio {
            name: MOCK_CONSUMER.into(),
            value: mock_consume.mb_per_sec(),
            unit: "MB/s",
            reference_name: "loopback TCP copy".into(),
            reference: loopback.mb_per_sec(),
            target: None,
        },
    ];
    for (spec, r) in &produce_rows {
        let is_target = spec.record_bytes == 1024 && spec.acks == "all" && spec.partitions == 16;
        ratios.push(Ratio {
            name: format!(
                "produce {} B acks={} {} partitions",
                spec.record_bytes, spec.acks, spec.partitions
            ),
            value: r.mb_per_sec(),
            unit: "MB/s",
            reference_name: "disk write, fdatasync at the end".into(),
            reference: disk_end.mb_per_sec(),
            target: is_target.then_some((0.25, true)),
        });
        if is_target {
            ratios.push(Ratio {
                name: "produce 1024 B acks=all 16 partitions".into(),
                value: r.mb_per_sec(),
                unit: "MB/s",
                reference_name: "disk write, fdatasync every 1 MiB".into(),
                reference: disk_sync.mb_per_sec(),
                target: None,
            });
        }
    }
    for t in &tiers {
        ratios.push(Ratio {
            name: format!("cold replay ({})", t.backend),
            value: t.cold.mb_per_sec(),
            unit: "MB/s",
            reference_name: t.raw_name.into(),
            reference: t.raw.mb_per_sec(),
            target: (t.backend == "s3").then_some((0.80, true)),
        });
        ratios.push(Ratio {
            name: format!("warm replay ({})", t.backend),
            value: t.warm.mb_per_sec(),
            unit: "MB/s",
            reference_name: "hot consume".into(),
            reference: hot.mb_per_sec(),
            target: Some((0.70, true)),
        });
        if let Some(rss) = t.rss_cold_process {
            ratios.push(Ratio {
                name: format!("broker peak RSS, cold replay ({})", t.backend),
                value: rss as f64 / MIB as f64,
                unit: "MiB",
                reference_name: "tier cache capacity + 256 MiB".into(),
                reference: (t.cache_bytes + 256 * MIB) as f64 / MIB as f64,
                target: Some((1.0, false)),
            });
        }
    }
    for (
        spec,
        E2eRun {
            paced,
            e2e,
            client_floor,
            disk_floor,
            ..
        },
    ) in &e2e_runs
    {
        let name = |how: &str| {
            format!(
                "produce p99 at {:.0}% of max ({} B acks={} {} partitions{how})",
                a.e2e_fraction * 100.0,
                spec.record_bytes,
                spec.acks,
                spec.partitions
            )
        };
        // The producer alone beside each reference: the client's own floor,
        // the disk's (acks=all), and the target.
        let mut refs = vec![(
            "librdkafka's mock broker: p99, same rate",
            client_floor.latency.p99_ms,
            None,
        )];
        if let Some(floor) = disk_floor {
            refs.push((
                "disk: write to fdatasync'd p99, same rate",
                floor.p99_ms,
                None,
            ));
        }
        refs.push(("5 ms", 5.0, Some((1.0, false))));
        for (reference_name, reference, target) in refs {
            ratios.push(Ratio {
                name: name(""),
                value: paced.latency.p99_ms,
                unit: "ms",
                reference_name: reference_name.into(),
                reference,
                target,
            });
        }
        ratios.push(Ratio {
            name: name(", consumer tailing"),
            value: e2e.produce.latency.p99_ms,
            unit: "ms",
            reference_name: "5 ms".into(),
            reference: 5.0,
            target: None,
        });
    }

    print_tables(
        &produce_rows,
        &hot_rows,
        a.consume_record_size,
        &disk_sync,
        &disk_end,
        &hot,
        &loopback,
        &sendfile_ref,
        &mock_consume,
        &tiers,
        &e2e_runs,
        &fsync_lat,
        &ratios,
    );

    let machine = machine_json();
    let report = json!({
        "tool": "strata-bench",
        "version": env!("CARGO_PKG_VERSION"),
        "command": std::env::args().collect::<Vec<_>>(),
        "quick": a.quick,
        "machine": machine,
        "broker": {
            "managed": strata_bin.is_some(),
            "bin": strata_bin.as_ref().map(|p| p.display().to_string()),
            "bootstrap": a.bootstrap,
            "tier_cache_memory_bytes": strata_bin.as_ref().map(|_| plan.cache_bytes),
            "tier_chunk_bytes": strata_bin.as_ref().map(|_| a.tier_chunk_bytes),
            "tcp_congestion_control": a.tcp_congestion_control,
        },
        "settings": {
            "produce_bytes_per_run": plan.produce_bytes,
            "linger_ms": a.linger_ms,
            "consume_bytes": plan.consume_bytes,
            "consume_record_size": a.consume_record_size,
            "consume_partitions": a.consume_partitions,
            "tier_segment_bytes": plan.segment_bytes,
            "raw_read_threads": a.raw_read_threads,
            "e2e_fraction": a.e2e_fraction,
            "producer_config": a.producer_config.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "consumer_config": a.consumer_config.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "e2e_seconds": plan.e2e_seconds,
            "mb": "10^6 bytes of record values",
        },
        "produce": produce_rows.iter().map(|(s, r)| {
            let mut v = produce_json(r);
            v["record_bytes"] = json!(s.record_bytes);
            v["acks"] = json!(s.acks);
            v["partitions"] = json!(s.partitions);
            v
        }).collect::<Vec<_>>(),
        "e2e": e2e_runs.iter().map(|(spec, E2eRun { max, paced, paced_split, client_floor, disk_floor, e2e, split })| json!({
            "record_bytes": spec.record_bytes,
            "acks": spec.acks,
            "partitions": spec.partitions,
            "linger_ms": spec.linger_ms,
            "fraction_of_max": a.e2e_fraction,
            "max_records_per_sec": max.records_per_sec(),
            "max_seconds": max.secs,
            "target_records_per_sec": e2e.target_rate,
            "produce_alone": produce_json(paced),
            "produce_alone_broker": paced_split.json(),
            "produce_alone_client": client_json(&paced.client),
            "client_floor_mock_broker": produce_json(client_floor),
            "disk_paced_sync_latency": disk_floor.as_ref().map(stats::Summary::json),
            "broker": split.json(),
            "produce": produce_json(&e2e.produce),
            "received": e2e.received,
            "e2e_latency": e2e.latency.json(),
        })).collect::<Vec<_>>(),
        "consume": {
            "hot": consume_json(&hot),
        "hot_by_record_size": hot_rows.iter().map(|(s, c)| {
            let mut v = consume_json(c);
            v["record_bytes"] = json!(s.record_bytes);
            v["partitions"] = json!(s.partitions);
            v
        }).collect::<Vec<_>>(),
            "file": tiers.iter().find(|t| t.backend == "file").map(TierRun::json),
            "s3": tiers.iter().find(|t| t.backend == "s3").map(TierRun::json),
        },
        "references": {
            "loopback_tcp": transfer_json(&loopback),
            "loopback_sendfile": transfer_json(&sendfile_ref),
            "consume_mock_broker": consume_json(&mock_consume),
            "disk_fdatasync_1mib": transfer_json(&disk_sync),
            "disk_fdatasync_end": transfer_json(&disk_end),
            "fdatasync_4kib_latency": fsync_lat.json(),
            "file_tier_reads": tiers.iter().find(|t| t.backend == "file").map(|t| transfer_json(&t.raw)),
            "s3_ranged_gets": tiers.iter().find(|t| t.backend == "s3").map(|t| transfer_json(&t.raw)),
        },
        "rss": {
            "file_broker_peak_bytes": rss_file_broker,
            "tier_cache_capacity_bytes": plan.cache_bytes,
        },
        "targets": ratios.iter().map(Ratio::json).collect::<Vec<_>>(),
    });
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("write {}", path.display()))?;
        say(format!("wrote {}", path.display()));
    }
    Ok(())
}

/// Waits until every sealed segment of `topic` is in the tier (copy lag 0)
/// and, with `local_limit`, until every partition's local log has been cut
/// to at most that many bytes and no longer starts at offset 0.
fn wait_tiered(b: &Broker, topic: &str, partitions: i32, local_limit: Option<u64>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let m = b.metrics()?;
        let lag_ok = (0..partitions).all(|p| {
            m.get(&format!(
                "strata_tier_copy_lag_segments{{topic=\"{topic}\",partition=\"{p}\"}}"
            )) == Some(&0.0)
        });
        let local_ok = match local_limit {
            None => true,
            Some(limit) => (0..partitions).all(|p| {
                let (first, bytes) = local_segments(&b.data_dir().join(format!("{topic}-{p}")));
                first.is_some_and(|f| f > 0) && bytes <= limit
            }),
        };
        if lag_ok && local_ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{topic}: tiering not done after 300 s (copy lag ok: {lag_ok}, local log cut: {local_ok})\n{}",
                b.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// First base offset and total bytes of the local `.log` segments.
fn local_segments(dir: &Path) -> (Option<i64>, u64) {
    let mut first = None::<i64>;
    let mut bytes = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(base) = name
            .strip_suffix(".log")
            .and_then(|b| b.parse::<i64>().ok())
        {
            first = Some(first.map_or(base, |f| f.min(base)));
            bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    (first, bytes)
}

fn metric_sum(m: &BTreeMap<String, f64>, name: &str, topic: Option<&str>) -> f64 {
    m.iter()
        .filter(|(k, _)| {
            (k.as_str() == name || k.starts_with(&format!("{name}{{")))
                && topic.is_none_or(|t| k.contains(&format!("topic=\"{t}\"")))
        })
        .map(|(_, v)| v)
        .sum()
}

/// After a topic's deletion, waits (up to 60 s) until the broker has
/// removed its partition directories, then syncs the data filesystem
/// (`sync -f`), so the next run does not share the disk with the deleted
/// data's write-back.
fn settle_after_delete(data_dir: &Path, topic: &str) {
    let prefix = format!("{topic}-");
    let deadline = Instant::now() + Duration::from_secs(60);
    let left = || {
        std::fs::read_dir(data_dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        })
    };
    while left() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if left() {
        say(format!(
            "{topic}: partition directories still there after 60 s"
        ));
    }
    match std::process::Command::new("sync")
        .arg("-f")
        .arg(data_dir)
        .status()
    {
        Ok(s) if s.success() => {}
        other => say(format!("sync -f {}: {other:?}", data_dir.display())),
    }
}

/// One end-to-end measurement: the maximum it took a fraction of, the
/// producer alone at that rate, then with a consumer, and the broker's side
/// of each one's latency.
struct E2eRun {
    max: kafka::ProduceResult,
    /// The producer alone at the rate.
    paced: kafka::ProduceResult,
    paced_split: BrokerSplit,
    /// The producer alone at the rate against librdkafka's in-process mock
    /// broker: what the client stack itself takes on the machine the bench runs on.
    client_floor: kafka::ProduceResult,
    /// acks=all: the disk's own write-to-durable latency at the rate
    /// (`reference::paced_sync_latency`).
    disk_floor: Option<stats::Summary>,
    /// The producer at the rate with a consumer tailing the topic.
    e2e: kafka::E2eResult,
    split: BrokerSplit,
}

/// Where an end-to-end run's produce latency went inside the broker, from
/// its histograms (empty for a broker the tool did not start).
#[derive(Default)]
struct BrokerSplit {
    /// Produce requests, decode to response (for acks=all, the wait for
    /// the sync round included).
    produce: Option<BucketSummary>,
    /// Produce requests, length prefix read to response written: the above
    /// plus reading the body and waiting behind earlier responses.
    produce_total: Option<BucketSummary>,
    /// acks=all sync rounds: their syncfs/fdatasync time.
    rounds: Option<BucketSummary>,
    /// Partitions per sync round, on average.
    round_partitions: Option<f64>,
}

impl BrokerSplit {
    /// Runs `run` between two scrapes of `broker` (none: an empty split).
    fn around<T>(broker: Option<&Broker>, run: impl FnOnce() -> Result<T>) -> Result<(T, Self)> {
        let Some(b) = broker else {
            return Ok((run()?, BrokerSplit::default()));
        };
        let before = b.metrics()?;
        let out = run()?;
        Ok((out, BrokerSplit::between(&before, &b.metrics()?)))
    }

    fn between(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BrokerSplit {
        let rounds =
            BucketSummary::between(before, after, "strata_sync_round_duration_seconds", "");
        let parts = metric_sum(after, "strata_sync_round_partitions_total", None)
            - metric_sum(before, "strata_sync_round_partitions_total", None);
        BrokerSplit {
            produce: BucketSummary::between(
                before,
                after,
                "strata_request_duration_seconds",
                "api=\"Produce\"",
            ),
            produce_total: BucketSummary::between(
                before,
                after,
                "strata_request_total_seconds",
                "api=\"Produce\"",
            ),
            round_partitions: rounds.as_ref().map(|r| parts / r.count as f64),
            rounds,
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "produce_request": self.produce.as_ref().map(BucketSummary::json),
            "produce_request_total": self.produce_total.as_ref().map(BucketSummary::json),
            "sync_round": self.rounds.as_ref().map(BucketSummary::json),
            "partitions_per_sync_round": self.round_partitions,
        })
    }
}

/// Moves the data set of `topic` to the tier (local retention down to one
/// segment), reads it twice (the second read is warm), restarts the broker
/// (empty cache) and reads it cold, then runs the raw reference.
fn tier_run(
    a: &Args,
    plan: &Plan,
    b: &mut Broker,
    topic: &str,
    backend: &'static str,
    raw: &dyn Fn(&str) -> Result<Transfer>,
) -> Result<TierRun> {
    let parts = a.consume_partitions;
    wait_tiered(b, topic, parts, None)?;
    kafka::alter_topic(
        &b.bootstrap,
        topic,
        &[
            ("segment.bytes", plan.segment_bytes.to_string()),
            ("local.retention.bytes", plan.segment_bytes.to_string()),
        ],
    )?;
    // What stays local: the retention plus the active segment and one being
    // cut (a batch may overshoot a segment).
    wait_tiered(b, topic, parts, Some(plan.segment_bytes * 3))?;
    let m = b.metrics()?;
    let tier_bytes = metric_sum(&m, "strata_tier_partition_bytes", Some(topic));
    say(format!(
        "{backend}: {:.1} MB of {topic} in the tier, local log cut",
        tier_bytes / 1e6
    ));
    let first = kafka::consume_all(&b.bootstrap, topic, parts, b.pid())?;
    say(format!(
        "{backend}: first tier read {:.1} MB/s",
        first.mb_per_sec()
    ));
    let before = b.metrics()?;
    let warm = kafka::consume_all(&b.bootstrap, topic, parts, b.pid())?;
    let after = b.metrics()?;
    let delta = |n: &str| metric_sum(&after, n, None) - metric_sum(&before, n, None);
    // Hits in memory, and misses there that the disk cache served.
    let (hits, misses, disk_hits) = (
        delta("strata_tier_cache_hits_total"),
        delta("strata_tier_cache_misses_total"),
        delta("strata_tier_disk_cache_hits_total"),
    );
    let warm_hit_ratio = (hits + misses > 0.0).then(|| (hits + disk_hits) / (hits + misses));
    let warm_zero_copy = delta("strata_fetch_zero_copy_bytes_total");
    say(format!(
        "{backend}: warm tier read {:.1} MB/s (cache hit ratio {}, {:.1} MB sent zero-copy)",
        warm.mb_per_sec(),
        warm_hit_ratio.map_or("n/a".into(), |r| format!("{r:.3}")),
        warm_zero_copy / 1e6
    ));
    let rss_first_process = b.peak_rss();
    b.restart()?;
    let before = b.metrics()?;
    let cold = kafka::consume_all(&b.bootstrap, topic, parts, b.pid())?;
    let after = b.metrics()?;
    let cold_downloaded = Some(
        metric_sum(&after, "strata_tier_bytes_downloaded_total", None)
            - metric_sum(&before, "strata_tier_bytes_downloaded_total", None),
    );
    let rss_cold_process = b.peak_rss();
    say(format!(
        "{backend}: cold tier read {:.1} MB/s, broker peak RSS {:.0} MiB",
        cold.mb_per_sec(),
        rss_cold_process.unwrap_or(0) as f64 / MIB as f64
    ));
    let raw_t = raw(topic)?;
    say(format!(
        "{backend}: raw reads of the tier objects {:.1} MB/s",
        raw_t.mb_per_sec()
    ));
    Ok(TierRun {
        backend,
        first,
        warm,
        cold,
        raw: raw_t,
        raw_name: if backend == "s3" {
            "raw ranged GETs of the tier objects"
        } else {
            "raw preads of the tier files"
        },
        tier_bytes,
        warm_hit_ratio,
        warm_zero_copy_bytes: warm_zero_copy,
        cold_downloaded,
        rss_first_process,
        rss_cold_process,
        cache_bytes: plan.cache_bytes,
    })
}

fn machine_json() -> Value {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string());
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "memory_bytes": mem_kib.map(|k| k * 1024),
        "cpu": model,
        "os": std::env::consts::OS,
        "loadavg_at_start": LOADAVG_AT_START.get(),
        "loadavg_at_end": loadavg(),
        "tcp_congestion_control_default": reference::system_congestion_control(),
    })
}

/// A Markdown table with columns padded to their widest cell.
struct Table {
    head: Vec<&'static str>,
    /// Right-aligned (numeric) columns.
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(cols: &[(&'static str, bool)]) -> Table {
        Table {
            head: cols.iter().map(|c| c.0).collect(),
            right: cols.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let mut w: Vec<usize> = self.head.iter().map(|h| h.len()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |cells: Vec<String>| {
            let cells: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if self.right[i] {
                        format!("{c:>width$}", width = w[i])
                    } else {
                        format!("{c:<width$}", width = w[i])
                    }
                })
                .collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut out = line(self.head.iter().map(|h| h.to_string()).collect());
        let sep: Vec<String> = w
            .iter()
            .zip(&self.right)
            .map(|(n, r)| {
                if *r {
                    format!("{}:", "-".repeat(n + 1))
                } else {
                    "-".repeat(n + 2)
                }
            })
            .collect();
        out.push_str(&format!("|{}|\n", sep.join("|")));
        for r in &self.rows {
            out.push_str(&line(r.clone()));
        }
        out
    }
}

fn f0(x: f64) -> String {
    format!("{x:.0}")
}
fn f1(x: f64) -> String {
    format!("{x:.1}")
}
fn f2(x: f64) -> String {
    format!("{x:.2}")
}

#[allow(clippy::too_many_arguments)]
fn print_tables(
    produce: &[(ProduceSpec, ProduceResult)],
    hot_rows: &[(ProduceSpec, ConsumeResult)],
    consume_record_size: usize,
    disk_sync: &Transfer,
    disk_end: &Transfer,
    hot: &ConsumeResult,
    loopback: &Transfer,
    sendfile_ref: &Transfer,
    mock_consume: &ConsumeResult,
    tiers: &[TierRun],
    e2e_runs: &[(ProduceSpec, E2eRun)],
    fsync_lat: &stats::Summary,
    ratios: &[Ratio],
) {
    let mut t = Table::new(&[
        ("record B", true),
        ("acks", true),
        ("partitions", true),
        ("records/s", true),
        ("MB/s", true),
        ("p50 ms", true),
        ("p99 ms", true),
        ("p999 ms", true),
        ("vs disk", true),
        ("broker CPU %", true),
        ("client CPU %", true),
    ]);
    for (s, r) in produce {
        t.row(vec![
            s.record_bytes.to_string(),
            s.acks.clone(),
            s.partitions.to_string(),
            f0(r.records_per_sec()),
            f1(r.mb_per_sec()),
            f2(r.latency.p50_ms),
            f2(r.latency.p99_ms),
            f2(r.latency.p999_ms),
            f2(r.mb_per_sec() / disk_end.mb_per_sec()),
            r.cpu.cells()[0].clone(),
            r.cpu.cells()[1].clone(),
        ]);
    }
    println!(
        "\nProduce at maximum throughput (latency: delivery reports; vs disk: MB/s over the sequential write with one fdatasync at the end, {:.1} MB/s)\n\n{}",
        disk_end.mb_per_sec(),
        t.render()
    );

    let mut t = Table::new(&[
        ("workload", false),
        ("records/s", true),
        ("MB/s", true),
        ("reference", false),
        ("ref MB/s", true),
        ("ratio", true),
        ("broker CPU %", true),
        ("client CPU %", true),
    ]);
    let mut row = |name: String, c: &ConsumeResult, rname: &str, rmb: f64| {
        let [b, cl] = c.cpu.cells();
        t.row(vec![
            name,
            f0(c.records_per_sec()),
            f1(c.mb_per_sec()),
            rname.to_string(),
            f1(rmb),
            f2(c.mb_per_sec() / rmb),
            b,
            cl,
        ]);
    };
    for (s, c) in hot_rows {
        row(
            format!("hot, {} B x {} partitions", s.record_bytes, s.partitions),
            c,
            "loopback TCP copy",
            loopback.mb_per_sec(),
        );
    }
    row(
        format!("hot, replay set ({consume_record_size} B)"),
        hot,
        "loopback TCP copy",
        loopback.mb_per_sec(),
    );
    row(
        format!("hot, replay set ({consume_record_size} B)"),
        hot,
        "loopback sendfile copy",
        sendfile_ref.mb_per_sec(),
    );
    row(
        format!("hot, replay set ({consume_record_size} B)"),
        hot,
        MOCK_CONSUMER,
        mock_consume.mb_per_sec(),
    );
    row(
        format!("replay set from librdkafka's mock broker ({consume_record_size} B)"),
        mock_consume,
        "loopback TCP copy",
        loopback.mb_per_sec(),
    );
    for tr in tiers {
        let b = tr.backend;
        row(
            format!("{b}:// first tier read"),
            &tr.first,
            "hot consume",
            hot.mb_per_sec(),
        );
        row(
            format!("{b}:// warm (tier cache)"),
            &tr.warm,
            "hot consume",
            hot.mb_per_sec(),
        );
        row(
            format!("{b}:// cold (restarted)"),
            &tr.cold,
            tr.raw_name,
            tr.raw.mb_per_sec(),
        );
    }
    println!(
        "Consume, one consumer, whole topic from the start\n\n{}",
        t.render()
    );
    println!(
        "mock broker: the same consumer over the same records from librdkafka's in-process mock broker (memory only), \
         the client's own ceiling on the machine the bench runs on"
    );

    let mut t = Table::new(&[
        ("acks", true),
        ("max rec/s", true),
        ("records/s", true),
        ("MB/s", true),
        ("latency", false),
        ("p50 ms", true),
        ("p99 ms", true),
        ("p999 ms", true),
        ("max ms", true),
        ("broker CPU %", true),
        ("client CPU %", true),
    ]);
    let mut title = String::new();
    let mut rounds_note = String::new();
    for (spec, run) in e2e_runs {
        let E2eRun {
            max,
            paced,
            paced_split,
            client_floor,
            disk_floor,
            e2e,
            split,
        } = run;
        title = format!(
            "{} B records, {} partitions, linger.ms={}; max: producing flat out for {:.1} s",
            spec.record_bytes, spec.partitions, spec.linger_ms, max.secs
        );
        let lead = |t: &mut Table, name: &str, cells: [String; 4], cpu: [String; 2]| {
            let [p50, p99, p999, top] = cells;
            let [bc, cc] = cpu;
            t.row(vec![
                spec.acks.clone(),
                f0(max.records_per_sec()),
                f0(e2e.target_rate),
                f1(e2e.target_rate * spec.record_bytes as f64 / 1e6),
                name.into(),
                p50,
                p99,
                p999,
                top,
                bc,
                cc,
            ]);
        };
        let at_most = |v: f64| format!("<= {}", f2(v));
        let broker_rows = |t: &mut Table, split: &BrokerSplit| {
            for (name, h) in [
                ("  broker: Produce request", &split.produce),
                ("  broker: read to response written", &split.produce_total),
                ("  broker: sync round", &split.rounds),
            ] {
                if let Some(h) = h {
                    lead(
                        t,
                        name,
                        [
                            at_most(h.p50_ms),
                            at_most(h.p99_ms),
                            at_most(h.p999_ms),
                            "".into(),
                        ],
                        ["".into(), "".into()],
                    );
                }
            }
        };
        let latency_cells =
            |l: &stats::Summary| [f2(l.p50_ms), f2(l.p99_ms), f2(l.p999_ms), f2(l.max_ms)];
        lead(
            &mut t,
            "produce alone (delivery report)",
            latency_cells(&paced.latency),
            paced.cpu.cells(),
        );
        broker_rows(&mut t, paced_split);
        for (name, w) in [
            ("  librdkafka: queue to request", &paced.client.queue),
            ("  librdkafka: request round trip", &paced.client.rtt),
        ] {
            let ms = |v: Option<f64>| v.map_or("n/a".into(), f2);
            lead(
                &mut t,
                name,
                [ms(w.p50_ms()), ms(w.p99_ms()), "".into(), ms(w.max_ms())],
                ["".into(), "".into()],
            );
        }
        lead(
            &mut t,
            "  same client, librdkafka's mock broker",
            latency_cells(&client_floor.latency),
            client_floor.cpu.cells(),
        );
        if let Some(floor) = disk_floor {
            lead(
                &mut t,
                "  disk alone: write to fdatasync'd",
                latency_cells(floor),
                ["".into(), "".into()],
            );
        }
        let cpu = e2e.produce.cpu.cells();
        for (name, l) in [
            ("consumer tailing: produce", &e2e.produce.latency),
            ("consumer tailing: produce -> consume", &e2e.latency),
        ] {
            lead(&mut t, name, latency_cells(l), cpu.clone());
        }
        broker_rows(&mut t, split);
        for (how, split) in [("alone", paced_split), ("consumer tailing", split)] {
            let mut parts = Vec::new();
            if let Some(r) = &split.produce {
                parts.push(format!(
                    "{} Produce requests, {:.2} ms each on average",
                    r.count, r.mean_ms
                ));
            }
            if let Some(r) = &split.produce_total {
                parts.push(format!(
                    "{:.2} ms from reading each to writing its response",
                    r.mean_ms
                ));
            }
            if let (Some(r), Some(p)) = (&split.rounds, split.round_partitions) {
                parts.push(format!(
                    "{} sync rounds, {:.1} partitions and {:.2} ms each on average",
                    r.count, p, r.mean_ms
                ));
            }
            if !parts.is_empty() {
                rounds_note += &format!("acks={} ({how}): {}\n", spec.acks, parts.join("; "));
            }
        }
    }
    println!("End to end at a fixed rate ({title})\n\n{}", t.render());
    println!(
        "librdkafka rows: from its statistics, the count-weighted mean of each second's p50 and p99, and the largest value; \
         mock broker: the same producer at the same rate against librdkafka's in-process mock broker (memory only), the client's own floor on the machine the bench runs on"
    );
    if e2e_runs.iter().any(|(_, r)| r.split.produce.is_some()) {
        println!(
            "broker rows: from the broker's histograms, each figure the upper bound of its bucket\n{rounds_note}"
        );
    }

    let mut t = Table::new(&[
        ("reference", false),
        ("bytes", true),
        ("seconds", true),
        ("MB/s", true),
    ]);
    let mut refs = vec![
        ("loopback TCP copy (1 MiB writes)".to_string(), *loopback),
        (
            "loopback sendfile copy (from the page cache)".to_string(),
            *sendfile_ref,
        ),
        ("disk write, fdatasync every 1 MiB".to_string(), *disk_sync),
        ("disk write, fdatasync at the end".to_string(), *disk_end),
    ];
    for tr in tiers {
        refs.push((format!("{} ({}://)", tr.raw_name, tr.backend), tr.raw));
    }
    for (name, x) in refs {
        t.row(vec![
            name,
            x.bytes.to_string(),
            format!("{:.3}", x.secs),
            f1(x.mb_per_sec()),
        ]);
    }
    println!(
        "Physical references (same run); 4 KiB append + fdatasync latency: p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms\n\n{}",
        fsync_lat.p50_ms,
        fsync_lat.p99_ms,
        fsync_lat.p999_ms,
        t.render()
    );

    let mut t = Table::new(&[
        ("figure", false),
        ("value", true),
        ("reference", false),
        ("ref", true),
        ("ratio", true),
        ("target", true),
        ("met", false),
    ]);
    for r in ratios.iter().filter(|r| {
        r.target.is_some()
            || r.name.contains("1024 B acks=all 16")
            || r.reference_name.starts_with("librdkafka")
    }) {
        t.row(vec![
            format!("{} ({})", r.name, r.unit),
            f2(r.value),
            r.reference_name.clone(),
            f2(r.reference),
            f2(r.ratio()),
            r.target
                .map(|(b, l)| format!("{}{b}", if l { ">= " } else { "<= " }))
                .unwrap_or_default(),
            match r.met() {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "",
            }
            .into(),
        ]);
    }
    println!("Targets\n\n{}", t.render());
}
