//! The workloads and their references, measured against one broker (the
//! tool's own or `--bootstrap`): produce at maximum throughput, end to end
//! at a fixed rate, hot consume, loopback and disk references; then the
//! tier runs ([`crate::tier`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use serde_json::json;

use crate::broker::{self, Broker};
use crate::cli::{say, Args, Plan};
use crate::kafka::{self, ConsumeResult, ProduceResult, ProduceSpec};
use crate::reference::{self, Transfer};
use crate::stats::{self, metric_sum, BucketSummary};
use crate::tier::{self, TierRun};

/// Everything one run measured, for the report and the tables.
pub struct Results {
    /// The broker binary the tool started (none with `--bootstrap`).
    pub strata_bin: Option<PathBuf>,
    /// Produce at maximum throughput, one row per record size, acks and
    /// partition count.
    pub produce_rows: Vec<(ProduceSpec, ProduceResult)>,
    /// Hot reads of the acks=1 topics of `produce_rows`.
    pub hot_rows: Vec<(ProduceSpec, ConsumeResult)>,
    /// One end-to-end run per acks setting.
    pub e2e_runs: Vec<(ProduceSpec, E2eRun)>,
    /// The hot read of the replay set.
    pub hot: ConsumeResult,
    pub loopback: Transfer,
    pub sendfile_ref: Transfer,
    /// The same consumer over the replay set from librdkafka's mock broker.
    pub mock_consume: ConsumeResult,
    /// Sequential disk write, fdatasync every 1 MiB.
    pub disk_sync: Transfer,
    /// Sequential disk write, one fdatasync at the end.
    pub disk_end: Transfer,
    /// 4 KiB append + fdatasync latency.
    pub fsync_lat: stats::Summary,
    pub tiers: Vec<TierRun>,
    /// Peak RSS of the first broker the tool started.
    pub rss_file_broker: Option<u64>,
}

/// Runs every workload and its references, in order: produce, end to end,
/// hot consume, the physical references, then the tier (`file://` on the
/// first broker, `s3://` on a second one).
pub fn run_in(a: &Args, plan: &Plan, work: &Path) -> Result<Results> {
    let prefix = format!("sb{}", std::process::id());
    let strata_bin = match (&a.bootstrap, &a.strata_bin) {
        (Some(_), _) => None,
        (None, Some(p)) => Some(p.clone()),
        (None, None) => Some(broker::find_strata_bin()?),
    };
    let mut file_broker = match &strata_bin {
        Some(bin) => Some(start_file_broker(a, plan, bin, &work.join("file-broker"))?),
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
                    keys: None,
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
                    .map_or("n/a".into(), |s| format!("{:.2}", s.p99_ms)),
                split
                    .rounds
                    .as_ref()
                    .map_or("n/a".into(), |s| format!("{:.2}", s.p99_ms)),
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
    let fill = |bootstrap: &str, topic: &str, pid: Option<u32>| -> Result<ProduceResult> {
        fill_replay_set(a, plan, bootstrap, topic, pid)
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
        tier::wait_tiered(b, &consume_topic, a.consume_partitions, None)?;
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
        let raw = file_tier_reads(a, b);
        let run = tier::tier_run(a, plan, b, &consume_topic, "file", &raw)?;
        tiers.push(run);
    }
    let rss_file_broker = file_broker.as_ref().and_then(Broker::peak_rss);
    drop(file_broker);
    if let (Some(bin), Some(endpoint), false) = (&strata_bin, &a.s3_endpoint, a.no_tier) {
        let (mut b, s3, s3_prefix) =
            start_s3_broker(a, plan, bin, endpoint, &work.join("s3-broker"))?;
        let topic = format!("{prefix}-replay-s3");
        kafka::create_topic(
            &b.bootstrap,
            &topic,
            a.consume_partitions,
            &tier_configs(-1),
        )?;
        fill(&b.bootstrap, &topic, b.pid())?;
        let raw = s3_tier_reads(a, &s3, &s3_prefix);
        let run = tier::tier_run(a, plan, &mut b, &topic, "s3", &raw)?;
        tiers.push(run);
    }

    Ok(Results {
        strata_bin,
        produce_rows,
        hot_rows,
        e2e_runs,
        hot,
        loopback,
        sendfile_ref,
        mock_consume,
        disk_sync,
        disk_end,
        fsync_lat,
        tiers,
        rss_file_broker,
    })
}

/// Starts `bin` with its data in `dir` and its tier on `file://` in
/// `dir/tier`.
pub fn start_file_broker(a: &Args, plan: &Plan, bin: &Path, dir: &Path) -> Result<Broker> {
    let tier = format!("file://{}", dir.join("tier").display());
    say(format!("starting {} (tier {tier})", bin.display()));
    let b = Broker::start(bin, dir, broker_args(a, plan, &tier, dir), Vec::new())?;
    say(format!(
        "broker at {}, log {}",
        b.bootstrap,
        b.log_path().display()
    ));
    Ok(b)
}

/// Starts `bin` with its data in `dir` and its tier under a new prefix of
/// `--s3-bucket` at `endpoint` (created if missing; LocalStack's test
/// credentials); returns the broker, an S3 client for the raw reads and
/// the prefix.
pub fn start_s3_broker(
    a: &Args,
    plan: &Plan,
    bin: &Path,
    endpoint: &str,
    dir: &Path,
) -> Result<(Broker, reference::S3, String)> {
    let s3 = reference::S3::new(endpoint, &a.s3_bucket)?;
    s3.create_bucket()?;
    let s3_prefix = format!("bench-{}-{}", std::process::id(), unix_ms());
    let url = format!("s3://{}/{s3_prefix}", a.s3_bucket);
    say(format!(
        "starting {} (tier {url} at {endpoint})",
        bin.display()
    ));
    let mut args = broker_args(a, plan, &url, dir);
    args.extend(["--tier-s3-endpoint".to_string(), endpoint.to_string()]);
    let envs = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec();
    let b = Broker::start(bin, dir, args, envs)?;
    say(format!(
        "broker at {}, log {}",
        b.bootstrap,
        b.log_path().display()
    ));
    Ok((b, s3, s3_prefix))
}

/// The raw reference of a `file://` tier broker started by
/// [`start_file_broker`]: preads of a topic's segment files.
pub fn file_tier_reads<'a>(a: &'a Args, b: &Broker) -> impl Fn(&str) -> Result<Transfer> + 'a {
    let root = b.data_dir().join("tier");
    move |topic| {
        let objs = reference::file_tier_objects(&root, topic, a.consume_partitions)?;
        reference::read_files(&objs, a.tier_chunk_bytes, a.raw_read_threads)
    }
}

/// The raw reference of an `s3://` tier: ranged GETs of a topic's segment
/// objects under `prefix`.
pub fn s3_tier_reads<'a>(
    a: &'a Args,
    s3: &'a reference::S3,
    prefix: &'a str,
) -> impl Fn(&str) -> Result<Transfer> + 'a {
    move |topic| {
        let objs = s3.tier_objects(prefix, topic, a.consume_partitions)?;
        s3.read_objects(&objs, a.tier_chunk_bytes, a.raw_read_threads)
    }
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
    sync_fs(data_dir);
}

/// Writes out everything dirty on the filesystem holding `dir` (`sync -f`),
/// so the next run does not wait behind the last one's write-back.
pub fn sync_fs(dir: &Path) {
    match std::process::Command::new("sync")
        .arg("-f")
        .arg(dir)
        .status()
    {
        Ok(s) if s.success() => {}
        other => say(format!("sync -f {}: {other:?}", dir.display())),
    }
}

/// One end-to-end measurement: the maximum it took a fraction of, the
/// producer alone at that rate, then with a consumer, and the broker's side
/// of each one's latency.
pub struct E2eRun {
    pub max: kafka::ProduceResult,
    /// The producer alone at the rate.
    pub paced: kafka::ProduceResult,
    pub paced_split: BrokerSplit,
    /// The producer alone at the rate against librdkafka's in-process mock
    /// broker: what the client stack itself takes on the machine the bench runs on.
    pub client_floor: kafka::ProduceResult,
    /// acks=all: the disk's own write-to-durable latency at the rate
    /// (`reference::paced_sync_latency`).
    pub disk_floor: Option<stats::Summary>,
    /// The producer at the rate with a consumer tailing the topic.
    pub e2e: kafka::E2eResult,
    pub split: BrokerSplit,
}

/// Where an end-to-end run's produce latency went inside the broker, from
/// its histograms (empty for a broker the tool did not start).
#[derive(Default)]
pub struct BrokerSplit {
    /// Produce requests, decode to response (for acks=all, the wait for
    /// the sync round included).
    pub produce: Option<BucketSummary>,
    /// Produce requests, length prefix read to response written: the above
    /// plus reading the body and waiting behind earlier responses.
    pub produce_total: Option<BucketSummary>,
    /// acks=all sync rounds: their syncfs/fdatasync time.
    pub rounds: Option<BucketSummary>,
    /// Partitions per sync round, on average.
    pub round_partitions: Option<f64>,
}

impl BrokerSplit {
    /// Runs `run` between two scrapes of `broker` (none: an empty split).
    pub fn around<T>(
        broker: Option<&Broker>,
        run: impl FnOnce() -> Result<T>,
    ) -> Result<(T, Self)> {
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

    pub fn json(&self) -> serde_json::Value {
        json!({
            "produce_request": self.produce.as_ref().map(BucketSummary::json),
            "produce_request_total": self.produce_total.as_ref().map(BucketSummary::json),
            "sync_round": self.rounds.as_ref().map(BucketSummary::json),
            "partitions_per_sync_round": self.round_partitions,
        })
    }
}

/// Milliseconds since the Unix epoch, to name work directories and S3
/// prefixes apart.
pub fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Writes the replay set (--consume-bytes of --consume-record-size records
/// over --consume-partitions, acks=1, as fast as the client goes) to
/// `topic`, which exists.
pub fn fill_replay_set(
    a: &Args,
    plan: &Plan,
    bootstrap: &str,
    topic: &str,
    pid: Option<u32>,
) -> Result<ProduceResult> {
    let spec = ProduceSpec {
        topic: topic.to_string(),
        partitions: a.consume_partitions,
        record_bytes: a.consume_record_size,
        records: (plan.consume_bytes / a.consume_record_size as u64).max(1),
        acks: "1".into(),
        linger_ms: a.linger_ms,
        rate: None,
        keys: None,
    };
    kafka::produce(bootstrap, &spec, Instant::now(), false, false, pid)
}
