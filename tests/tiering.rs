//! Tiered storage end to end: sealed segments go to the object store, the
//! local directory keeps only the tail, and a consumer from offset 0 gets
//! every record back byte-identical, with the embedded `file://` tier and
//! with LocalStack S3 (started by the test command, which sets
//! `STRATA_TEST_S3_ENDPOINT`).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::clients::{self, TestRecord};
use common::raw::{self, RawConn};
use common::s3::{s3_client, s3_endpoint};
use common::Broker;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

const RECORDS: usize = 20_000;
const VALUE_BYTES: usize = 10_000; // 20,000 x 10 kB = 200 MB
const SEGMENT_BYTES: u64 = 4 << 20;
const LOCAL_RETENTION_BYTES: u64 = 8 << 20;

/// The value of record `i`: deterministic, different for every record.
fn value(i: usize) -> Vec<u8> {
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = format!("record-{i:08}:").into_bytes();
    while v.len() < VALUE_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(VALUE_BYTES);
    v
}

/// The cluster id in a `file://` tier's partition directory
/// (`<root>/<cluster>/<topic>-<id>/<partition>`).
fn cluster_of(partition_dir: &Path) -> String {
    partition_dir
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .expect("cluster dir")
        .to_string_lossy()
        .to_string()
}

/// Base offsets and total bytes of the local `.log` segments of a partition.
fn local_segments(dir: &Path) -> (Vec<i64>, u64) {
    let mut bases = Vec::new();
    let mut bytes = 0;
    for e in std::fs::read_dir(dir).expect("partition dir").flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(base) = name.strip_suffix(".log") {
            // Local retention may delete it between the listing and here.
            let Ok(meta) = e.metadata() else { continue };
            bases.push(base.parse::<i64>().expect("segment name"));
            bytes += meta.len();
        }
    }
    bases.sort_unstable();
    (bases, bytes)
}

/// Produces 200 MB, waits for the offload, checks the local tail and
/// replays everything from offset 0. Returns the topic name.
fn offload_and_replay(broker: &Broker) -> String {
    let bootstrap = broker.bootstrap();
    let topic = common::topic_name("tiered");
    clients::create_topic(
        &bootstrap,
        &topic,
        1,
        &[
            ("segment.bytes", &SEGMENT_BYTES.to_string()),
            ("local.retention.bytes", &LOCAL_RETENTION_BYTES.to_string()),
        ],
    );
    let producer = clients::producer(&bootstrap, &[("acks", "all"), ("linger.ms", "20")]);
    let mut pending = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let r = TestRecord::keyed(format!("k{i}"), value(i)).in_partition(0);
        pending.push(clients::enqueue(&producer, &topic, &r));
    }
    for (i, f) in pending.into_iter().enumerate() {
        let (_, offset) = clients::await_delivery(f)
            .unwrap_or_else(|e| panic!("record {i} not acknowledged: {e}"));
        assert_eq!(offset, i as i64, "offsets are dense");
    }

    // The broker offloads sealed segments and trims the local log. The lag
    // gauge reaches 0 when the manifest names the last sealed segment; the
    // local trim follows on the next tier pass, so both are waited for.
    let dir = broker.data_dir().join(format!("{topic}-0"));
    let lag_key = format!("strata_tier_copy_lag_segments{{topic=\"{topic}\",partition=\"0\"}}");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (bases, bytes) = local_segments(&dir);
        let lag = broker.metrics().get(&lag_key).copied();
        let trimmed = bases.first().is_some_and(|b| *b > 0);
        if lag == Some(0.0) && trimmed && bytes <= LOCAL_RETENTION_BYTES + 2 * SEGMENT_BYTES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "offload did not finish or the local dir kept more than the tail: lag={lag:?}, \
             local segments={bases:?}, bytes={bytes}\n{}",
            broker.log_tail()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let m = broker.metrics();
    assert!(
        m.get("strata_tier_bytes_uploaded_total")
            .copied()
            .unwrap_or(0.0)
            >= 150e6,
        "{m:?}"
    );

    // Earliest is still 0: the tier holds the head of the log.
    let (low, high) = clients::watermarks(&bootstrap, &topic, 0);
    assert_eq!((low, high), (0, RECORDS as i64));

    replay_all(&bootstrap, &topic);
    let m = broker.metrics();
    assert!(
        m.get("strata_tier_bytes_downloaded_total")
            .copied()
            .unwrap_or(0.0)
            > 0.0
    );
    topic
}

/// Replays `topic` partition 0 from offset 0 with a new consumer and checks
/// every record, in order, byte-identical.
fn replay_all(bootstrap: &str, topic: &str) {
    let consumer = clients::consumer(bootstrap, &[("fetch.max.bytes", "8388608")]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(0))
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let mut next = 0usize;
    let deadline = Instant::now() + Duration::from_secs(180);
    while next < RECORDS {
        assert!(Instant::now() < deadline, "replay stalled at offset {next}");
        let Some(msg) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let msg = msg.unwrap_or_else(|e| panic!("consume error at offset {next}: {e}"));
        assert_eq!(msg.offset(), next as i64, "replay is in order");
        assert_eq!(msg.key(), Some(format!("k{next}").as_bytes()));
        assert!(
            msg.payload() == Some(&value(next)[..]),
            "record {next} differs from what was produced"
        );
        next += 1;
    }
}

#[test]
fn offload_and_replay_with_file_tier() {
    let cache = tempfile::tempdir().expect("tempdir");
    let broker = Broker::builder()
        .args(["--tier-interval-ms", "200"])
        .args(["--tier-cache-memory-bytes", &(16u64 << 20).to_string()])
        .arg("--tier-cache-dir")
        .arg(cache.path().display().to_string())
        .start();
    let topic = offload_and_replay(&broker);

    // Replayed again, the history comes from the tier's disk cache (the
    // memory cache holds 16 MiB of it), sent with sendfile: zero-copy bytes
    // grow by far more than the local tail could account for.
    let zero_copy = |b: &Broker| {
        b.metrics()
            .get("strata_fetch_zero_copy_bytes_total")
            .copied()
            .unwrap_or(0.0)
    };
    let before = zero_copy(&broker);
    replay_all(&broker.bootstrap(), &topic);
    let sent = zero_copy(&broker) - before;
    assert!(
        sent >= 120e6,
        "only {sent} bytes of a 200 MB replay went zero-copy"
    );
    let m = broker.metrics();
    assert!(
        m.get("strata_tier_disk_cache_hits_total")
            .copied()
            .unwrap_or(0.0)
            > 0.0,
        "{m:?}"
    );

    // The tier directory holds the segment objects.
    let tier = broker.data_dir().join("tier");
    let mut logs = 0;
    let mut stack = vec![tier];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("tier dir").flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else if e.file_name().to_string_lossy().ends_with(".log") {
                logs += 1;
            }
        }
    }
    assert!(
        logs >= 40,
        "expected the sealed segments in the tier, found {logs}"
    );
    broker.assert_no_error_logs();
}

/// `--tier-s3-sse`: every object the tier writes to S3 (segments, their
/// indexes, manifests, topic.json) carries the encryption asked for, SSE-S3
/// or SSE-KMS with the named key, as S3 (LocalStack) reports it. S3
/// encrypts with SSE-S3 when asked for nothing, so the SSE-KMS case is the
/// one that shows the broker's headers reach the store.
#[test]
fn tier_objects_carry_the_server_side_encryption_asked_for() {
    let Some(endpoint) = s3_endpoint() else {
        eprintln!("STRATA_SKIP_S3=1: skipping the LocalStack test");
        return;
    };
    let s3 = s3_client(&endpoint);
    // LocalStack's S3 takes any key id (it does not ask its KMS).
    let key_arn = "arn:aws:kms:us-east-1:000000000000:key/strata-test".to_string();
    for (args, want, want_key) in [
        (vec!["--tier-s3-sse", "AES256"], "AES256", None),
        (
            vec![
                "--tier-s3-sse",
                "aws:kms",
                "--tier-s3-kms-key-id",
                key_arn.as_str(),
            ],
            "aws:kms",
            Some(key_arn.as_str()),
        ),
    ] {
        let bucket = common::s3::new_bucket(&s3);
        let builder = Broker::builder()
            .args(["--tier-interval-ms", "200"])
            .args(args);
        let mut broker = common::s3::tiered_to(builder, &endpoint, &bucket).start();
        let topic = common::topic_name("sse");
        clients::create_topic(&broker.bootstrap(), &topic, 1, &[]);
        let records: Vec<TestRecord> = (0..200)
            .map(|i| TestRecord::value(format!("sse-{i}")))
            .collect();
        clients::produce(&broker.bootstrap(), &topic, &records);
        // The clean stop seals the segment and uploads it.
        broker.stop();
        broker.assert_no_error_logs();
        let keys = common::s3::list_keys(&s3, &bucket, "strata/");
        let kinds = [".log", ".index", "manifest.json", "topic.json"];
        for kind in kinds {
            assert!(
                keys.iter().any(|k| k.ends_with(kind)),
                "no {kind} in {keys:?}"
            );
        }
        for key in &keys {
            let (sse, kms_key) = common::s3::object_encryption(&s3, &bucket, key);
            assert_eq!(sse.as_deref(), Some(want), "{key}");
            if let Some(k) = want_key {
                assert!(
                    kms_key
                        .as_deref()
                        .is_some_and(|got| got.contains(k) || k.contains(got)),
                    "{key}: {kms_key:?}"
                );
            }
        }
    }
}

#[test]
fn offload_and_replay_with_localstack_s3() {
    let Some(endpoint) = s3_endpoint() else {
        eprintln!("STRATA_SKIP_S3=1: skipping the LocalStack test");
        return;
    };
    let s3 = s3_client(&endpoint);
    let bucket = common::s3::new_bucket(&s3);

    let builder = Broker::builder().args(["--tier-interval-ms", "200"]);
    let broker = common::s3::tiered_to(builder, &endpoint, &bucket).start();
    let topic = offload_and_replay(&broker);

    // Inspect the bucket independently of the broker's object_store client.
    let keys = common::s3::list_keys(&s3, &bucket, "strata/");
    let ours: Vec<&String> = keys
        .iter()
        .filter(|k| k.contains(&format!("/{topic}-")))
        .collect();
    let manifests = ours
        .iter()
        .filter(|k| k.ends_with("/0/manifest.json"))
        .count();
    let logs = ours.iter().filter(|k| k.ends_with(".log")).count();
    assert_eq!(manifests, 1, "one manifest for the partition: {ours:?}");
    assert!(logs >= 40, "segment objects in the bucket: {logs}");
    let manifest_key = ours
        .iter()
        .find(|k| k.ends_with("/0/manifest.json"))
        .expect("manifest key");
    let bytes = common::s3::get_bytes(&s3, &bucket, manifest_key);
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("manifest is json");
    assert!(
        json.get("version").is_some(),
        "manifest has a version: {json}"
    );
    broker.assert_no_error_logs();
}

/// A clean stop seals and uploads the active segments, so a restore from
/// the bucket alone brings back every acknowledged record, and the topic's
/// configs (kept in the tier's topic.json); with
/// `--tier-shutdown-upload-timeout-ms 0` the active segments stay local
/// and the tier has none of the topic's records.
#[test]
fn a_clean_stop_leaves_the_whole_log_in_the_tier() {
    const CONFIGS: &[(&str, &str)] = &[
        ("retention.ms", "86400000"),
        ("max.message.bytes", "200000"),
        ("segment.ms", "3600000"),
    ];
    let restored_end = |upload_timeout: &str| -> (Vec<i64>, String) {
        let tier_dir = tempfile::tempdir().expect("tier dir");
        let url = format!("file://{}", tier_dir.path().display());
        let args = ["--tier-interval-ms", "200", "--tier-url", url.as_str()];
        let mut first = Broker::builder()
            .args(args)
            .args(["--tier-shutdown-upload-timeout-ms", upload_timeout])
            .start();
        let topic = common::topic_name("whole");
        // Default segments (1 GiB): everything is in the active segments.
        clients::create_topic(
            &first.bootstrap(),
            &topic,
            2,
            &[("retention.ms", "86400000")],
        );
        // Configs changed after creation go to the tier too.
        clients::alter_topic_configs(&first.bootstrap(), &topic, CONFIGS);
        let records: Vec<TestRecord> = (0..1000)
            .map(|i| TestRecord::value(format!("whole-{i:05}")).in_partition(i % 2))
            .collect();
        let acked = clients::produce(&first.bootstrap(), &topic, &records);
        assert!(acked.iter().all(|(_, o)| *o < 500));
        // The tier pass writes the altered configs to topic.json.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let meta = common::find_tier_partition_dir(tier_dir.path(), &topic)
                .and_then(|d| std::fs::read_to_string(d.parent()?.join("topic.json")).ok());
            if meta.is_some_and(|m| m.contains("segment.ms")) {
                break;
            }
            assert!(Instant::now() < deadline, "topic.json never written");
            std::thread::sleep(Duration::from_millis(100));
        }
        first.stop();
        first.assert_no_error_logs();
        eprintln!("FIRSTLOG {}", first.logs());

        let second = Broker::builder().args(args).start();
        let out = std::process::Command::new(common::strata_bin())
            .args([
                "tier",
                "restore",
                &topic,
                "--take-over",
                "-b",
                &second.bootstrap(),
            ])
            .output()
            .expect("run strata tier restore");
        let printed = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return (
                Vec::new(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        let ends: Vec<i64> = (0..2)
            .map(|p| clients::watermarks(&second.bootstrap(), &topic, p).1)
            .collect();
        let configs = clients::describe_topic_configs(&second.bootstrap(), &topic);
        for (k, v) in CONFIGS {
            assert_eq!(configs[*k].0.as_deref(), Some(*v), "{k} restored");
            assert!(
                clients::is_topic_override(&configs[*k].1),
                "{k} is the topic's own"
            );
        }
        if ends == [500, 500] {
            for p in 0..2 {
                let got = clients::consume_ranges(
                    &second.bootstrap(),
                    &topic,
                    &[(p, 0, 500)],
                    clients::OP_TIMEOUT,
                );
                for c in &got {
                    let i = c.offset * 2 + i64::from(p);
                    let want = format!("whole-{i:05}");
                    assert_eq!(c.record.value.as_deref(), Some(want.as_bytes()));
                }
                assert_eq!(got.len(), 500);
            }
        }
        (ends, printed)
    };
    let (ends, printed) = restored_end("30000");
    assert_eq!(ends, [500, 500], "every acknowledged record restored");
    assert!(printed.contains("(2 partitions)"), "{printed}");
    // Without it no record of the topic reached the tier (its segments
    // were never sealed): the restore has its configs, not its records.
    let (ends, _) = restored_end("0");
    assert_eq!(
        ends,
        [0, 0],
        "without the shutdown upload the records stay local"
    );
}

/// `strata tier restore --all`: every topic the tier holds for a cluster
/// comes back on a new cluster (partition counts, configs, records); a
/// topic that exists already is left alone; each topic is reported as it
/// goes.
#[test]
fn restore_all_brings_back_every_topic_of_a_cluster() {
    let tier_dir = tempfile::tempdir().expect("tier dir");
    let url = format!("file://{}", tier_dir.path().display());
    let args = ["--tier-interval-ms", "200", "--tier-url", url.as_str()];
    let mut first = Broker::builder().args(args).start();
    let (wide, narrow) = (common::topic_name("wide"), common::topic_name("narrow"));
    clients::create_topic(&first.bootstrap(), &wide, 3, &[("retention.ms", "7200000")]);
    clients::create_topic(&first.bootstrap(), &narrow, 1, &[]);
    for (topic, partitions) in [(&wide, 3), (&narrow, 1)] {
        let records: Vec<TestRecord> = (0..60)
            .map(|i| TestRecord::value(format!("{topic}-{i}")).in_partition(i % partitions))
            .collect();
        clients::produce(&first.bootstrap(), topic, &records);
    }
    first.stop();
    let cluster = std::fs::read_dir(tier_dir.path())
        .expect("tier dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| !n.starts_with('_'))
        .expect("the first cluster's directory");

    let second = Broker::builder().args(args).start();
    // A topic of that name exists on the new cluster already.
    clients::create_topic(&second.bootstrap(), &narrow, 2, &[]);
    let out = std::process::Command::new(common::strata_bin())
        .args([
            "tier",
            "restore",
            "--all",
            "--take-over",
            "--from-cluster",
            &cluster,
        ])
        .args(["--tier-url", &url, "-b", &second.bootstrap()])
        .output()
        .expect("run strata tier restore --all");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains(&format!("{wide}: restored")), "{stderr}");
    assert!(stderr.contains(&format!("{narrow}: exists")), "{stderr}");
    assert!(stderr.contains("[2/2]"), "{stderr}");
    assert!(stdout.contains("restored 1 of 2 topics"), "{stdout}");
    assert_eq!(
        clients::partition_count(&second.bootstrap(), &wide),
        Some(3)
    );
    let configs = clients::describe_topic_configs(&second.bootstrap(), &wide);
    assert_eq!(configs["retention.ms"].0.as_deref(), Some("7200000"));
    let ranges: Vec<(i32, i64, i64)> = (0..3).map(|p| (p, 0, 20)).collect();
    let got = clients::consume_ranges(&second.bootstrap(), &wide, &ranges, clients::OP_TIMEOUT);
    assert_eq!(got.len(), 60);
    // The existing topic is untouched.
    assert_eq!(
        clients::partition_count(&second.bootstrap(), &narrow),
        Some(2)
    );
    assert_eq!(clients::watermarks(&second.bootstrap(), &narrow, 0), (0, 0));

    // Naming no cluster when the tier holds several is refused, naming them.
    let out = std::process::Command::new(common::strata_bin())
        .args([
            "tier",
            "restore",
            "--all",
            "--tier-url",
            &url,
            "-b",
            &second.bootstrap(),
        ])
        .output()
        .expect("run strata tier restore --all");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--from-cluster") && stderr.contains(&cluster),
        "{stderr}"
    );
}

#[test]
fn restore_into_an_empty_data_dir_serves_the_topic() {
    let tier_dir = tempfile::tempdir().expect("tier dir");
    let url = format!("file://{}", tier_dir.path().display());
    let args = ["--tier-interval-ms", "200", "--tier-url", url.as_str()];
    let mut first = Broker::builder().args(args).start();
    let topic = common::topic_name("restore");
    clients::create_topic(&first.bootstrap(), &topic, 2, &[("segment.bytes", "65536")]);
    let record = |p: i32, i: usize| format!("p{p}-record-{i:06}-").repeat(40);
    let records: Vec<TestRecord> = (0..2000)
        .map(|i| {
            TestRecord::keyed(format!("k{i}"), record((i % 2) as i32, i / 2))
                .in_partition((i % 2) as i32)
        })
        .collect();
    // Small producer batches, so the partitions roll many 64 KiB segments.
    let producer = clients::producer(&first.bootstrap(), &[("batch.size", "16384")]);
    clients::produce_all(&producer, &topic, &records);
    wait_for_offload(&first, &topic, 2);
    first.stop();

    // A new broker: empty data dir, a new cluster, the same bucket. The
    // first one has stopped, so the restore takes its topic over at once.
    let second = Broker::builder().args(args).start();
    clients::create_topic(
        &second.bootstrap(),
        &topic,
        2,
        &[("strata.restore", "true"), ("strata.tier.takeover", "true")],
    );
    for p in 0..2 {
        let (low, high) = clients::watermarks(&second.bootstrap(), &topic, p);
        assert_eq!(low, 0, "partition {p} history starts at 0");
        assert!(
            high > 100,
            "partition {p}: the tier's history is served (high={high})"
        );
        let got = clients::consume_ranges(
            &second.bootstrap(),
            &topic,
            &[(p, 0, high)],
            clients::OP_TIMEOUT,
        );
        assert_eq!(got.len() as i64, high);
        for (i, c) in got.iter().enumerate() {
            assert_eq!(c.offset, i as i64);
            assert_eq!(
                c.record.value.as_deref(),
                Some(record(p, i).as_bytes()),
                "partition {p} offset {i}"
            );
        }
        // New records continue after the restored history.
        let at = clients::produce(
            &second.bootstrap(),
            &topic,
            &[TestRecord::value("after").in_partition(p)],
        );
        assert_eq!(at[0], (p, high));
    }
    // `strata tier status` reports both sides per partition.
    let out = std::process::Command::new(common::strata_bin())
        .args([
            "tier",
            "status",
            &topic,
            "-b",
            &second.bootstrap(),
            "--output",
            "json",
        ])
        .output()
        .expect("run strata tier status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 2);
    for r in rows {
        assert_eq!(r["log_start_offset"], 0);
        assert!(r["tier_bytes"].as_i64().expect("tier bytes") > 0, "{r}");
        assert!(
            r["last_tiered_offset"].as_i64().expect("last tiered") > 100,
            "{r}"
        );
        assert!(
            r["local_log_start_offset"].as_i64() > r["log_start_offset"].as_i64(),
            "{r}"
        );
    }
    second.assert_no_error_logs();
}

/// Waits until every sealed segment of `partitions` partitions of `topic`
/// is in the tier (copy lag 0).
fn wait_for_offload(broker: &Broker, topic: &str, partitions: i32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = broker.metrics();
        let lag: f64 = (0..partitions)
            .map(|p| {
                m.get(&format!(
                    "strata_tier_copy_lag_segments{{topic=\"{topic}\",partition=\"{p}\"}}"
                ))
                .copied()
                .unwrap_or(1.0)
            })
            .sum();
        if lag == 0.0 {
            return;
        }
        assert!(Instant::now() < deadline, "offload did not finish: {m:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

const PRODUCER_ID: i64 = 4242;

/// Idempotent batches of 5 records from [`PRODUCER_ID`] at sequences
/// 0, 5, 10, ... (`batches` of them), then `fill` plain 5 kB records, all in
/// partition 0; returns the last idempotent batch, which a retry resends.
fn produce_idempotent_then_fill(broker: &Broker, topic: &str, batches: i32, fill: usize) -> Bytes {
    let mut c = RawConn::connect(&broker.bootstrap());
    let v = c.produce_version();
    let mut last = Bytes::new();
    for b in 0..batches {
        last = raw::producer_batch(PRODUCER_ID, 0, b * 5, 5, "idem", false, false);
        let (err, base) = c.produce(v, topic, 0, last.clone(), -1);
        assert_eq!(
            (err, base),
            (raw::ERR_NONE, b as i64 * 5),
            "idempotent batch {b}"
        );
    }
    let producer = clients::producer(&broker.bootstrap(), &[("batch.size", "16384")]);
    let records: Vec<TestRecord> = (0..fill)
        .map(|i| TestRecord::value(value(i)[..5000].to_vec()).in_partition(0))
        .collect();
    clients::produce_all(&producer, topic, &records);
    last
}

/// Resends `last` (the newest idempotent batch, sequences `batches*5-5..`)
/// and checks it is answered as a duplicate with its original offset, that
/// nothing was appended, and that the next sequence is accepted.
fn assert_retry_is_duplicate(broker: &Broker, topic: &str, batches: i32, last: Bytes) {
    let bs = broker.bootstrap();
    let (_, high) = clients::watermarks(&bs, topic, 0);
    let mut c = RawConn::connect(&bs);
    let v = c.produce_version();
    let first_offset = (batches as i64 - 1) * 5;
    assert_eq!(
        c.produce(v, topic, 0, last, -1),
        (raw::ERR_NONE, first_offset),
        "the retry gets its original offset"
    );
    assert_eq!(
        clients::watermarks(&bs, topic, 0).1,
        high,
        "nothing appended"
    );
    let next = raw::producer_batch(PRODUCER_ID, 0, batches * 5, 5, "idem", false, false);
    assert_eq!(c.produce(v, topic, 0, next, -1), (raw::ERR_NONE, high));
    let gap = raw::producer_batch(PRODUCER_ID, 0, batches * 5 + 50, 1, "idem", false, false);
    assert_eq!(
        c.produce(v, topic, 0, gap, -1).0,
        raw::ERR_OUT_OF_ORDER_SEQUENCE,
        "the sequence continues from the restored state"
    );
}

#[test]
fn producer_state_survives_kill9_after_its_segments_left_the_disk() {
    let mut broker = Broker::builder()
        .args(["--tier-interval-ms", "100"])
        .start();
    let topic = common::topic_name("pstate");
    clients::create_topic(
        &broker.bootstrap(),
        &topic,
        1,
        &[
            ("segment.bytes", "65536"),
            ("local.retention.bytes", "65536"),
        ],
    );
    let last = produce_idempotent_then_fill(&broker, &topic, 4, 200);
    // Wait until the idempotent batches' segment is gone from the disk.
    let dir = broker.data_dir().join(format!("{topic}-0"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while local_segments(&dir).0.first().is_none_or(|b| *b < 20) {
        assert!(Instant::now() < deadline, "local segments were not deleted");
        std::thread::sleep(Duration::from_millis(100));
    }
    broker.kill9();
    broker.restart();
    assert_retry_is_duplicate(&broker, &topic, 4, last);
    broker.assert_no_error_logs();
}

#[test]
fn restore_brings_producer_state_and_leader_epochs() {
    let tier_dir = tempfile::tempdir().expect("tier dir");
    let url = format!("file://{}", tier_dir.path().display());
    let args = ["--tier-interval-ms", "100", "--tier-url", url.as_str()];
    let mut first = Broker::builder().args(args).start();
    let topic = common::topic_name("prestore");
    clients::create_topic(&first.bootstrap(), &topic, 1, &[("segment.bytes", "65536")]);
    let last = produce_idempotent_then_fill(&first, &topic, 3, 100);
    wait_for_offload(&first, &topic, 1);
    first.stop();
    // Every tiered segment carries its producer snapshot and leader epochs.
    let part = common::tier_partition_dir(tier_dir.path(), &topic);
    let text = std::fs::read(part.join("manifest.json")).expect("manifest");
    let json: serde_json::Value = serde_json::from_slice(&text).expect("manifest json");
    let segments = json["segments"].as_array().expect("segments");
    assert!(segments.len() > 3, "{json}");
    for seg in segments {
        for kind in ["log", "index", "timeindex", "snapshot", "epochs"] {
            assert!(seg["objects"].get(kind).is_some(), "{kind} missing: {seg}");
        }
    }
    let epochs_name = segments[0]["objects"]["epochs"]["name"]
        .as_str()
        .expect("name");
    assert_eq!(
        std::fs::read_to_string(part.join(epochs_name)).expect("epochs object"),
        "0\n1\n0 0\n"
    );

    let second = Broker::builder().args(args).start();
    clients::create_topic(
        &second.bootstrap(),
        &topic,
        1,
        &[("strata.restore", "true"), ("strata.tier.takeover", "true")],
    );
    assert_retry_is_duplicate(&second, &topic, 3, last);
    second.assert_no_error_logs();
}

/// Two clusters restoring one topic never write one manifest. A writes
/// `t` and stops; B restores it (taking it over) and produces; C's restore
/// is refused while B writes; A, restarted, may no longer write it; a
/// fourth cluster restoring once the tier is quiet reads A's records then
/// B's, every one at the offset its producer was told.
#[test]
fn a_restored_topic_has_one_writer_in_the_tier() {
    let tier_dir = tempfile::tempdir().expect("tier dir");
    let url = format!("file://{}", tier_dir.path().display());
    let args = ["--tier-interval-ms", "100", "--tier-url", url.as_str()];
    let topic = common::topic_name("owned");
    let small = ("segment.bytes", "65536");
    // Small producer batches, so the partition rolls several segments.
    let produce = |b: &Broker, records: &[TestRecord]| {
        let producer = clients::producer(&b.bootstrap(), &[("batch.size", "16384")]);
        clients::produce_all(&producer, &topic, records)
    };
    let batch = |tag: &str| -> Vec<TestRecord> {
        (0..300)
            .map(|i| TestRecord::value(format!("{tag}-{i:05}-").repeat(150)))
            .collect()
    };
    let mut a = Broker::builder()
        .args(args)
        .expect_error("tier manifest taken over by another cluster")
        .start();
    clients::create_topic(&a.bootstrap(), &topic, 1, &[small]);
    let from_a = batch("a");
    let at_a = produce(&a, &from_a);
    let a_tiered = wait_tiered_past(&a, tier_dir.path(), &topic, 0);
    a.stop();

    // B restores. A wrote a moment ago, so without --take-over it is
    // refused; with it, B owns the partition's manifest.
    let restore = |b: &Broker, take_over: bool| {
        let mut cmd = std::process::Command::new(common::strata_bin());
        cmd.args(["tier", "restore", &topic, "-b", &b.bootstrap()]);
        if take_over {
            cmd.arg("--take-over");
        }
        cmd.output().expect("run strata tier restore")
    };
    let b = Broker::builder().args(args).start();
    let refused = restore(&b, false);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("--take-over"), "{why}");
    clients::create_topic(
        &b.bootstrap(),
        &topic,
        1,
        &[
            small,
            ("strata.restore", "true"),
            ("strata.tier.takeover", "true"),
        ],
    );
    let from_b = batch("b");
    let at_b = produce(&b, &from_b);
    // A's clean stop sealed and uploaded its last records too.
    assert!(a_tiered < at_a.last().unwrap().1);
    assert_eq!(
        at_b[0].1,
        at_a.last().unwrap().1 + 1,
        "B continues after all of A's records"
    );
    wait_tiered_past(&b, tier_dir.path(), &topic, at_b[0].1);

    // C cannot restore while B writes.
    let c = Broker::builder().args(args).start();
    let refused = restore(&c, false);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("may still be writing"), "{why}");
    drop(c);

    // A comes back: its manifest writes are refused, its own data served.
    a.restart();
    let at_a2 = produce(&a, &batch("a2"));
    assert_eq!(at_a2[0].1, at_a.last().unwrap().1 + 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while a
        .metrics()
        .get("strata_tier_not_owner_writes_total")
        .copied()
        .unwrap_or(0.0)
        == 0.0
    {
        assert!(
            Instant::now() < deadline,
            "A never found it lost the manifest"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(a);
    drop(b);

    // Once nobody has written for the quiet time, a restore needs no
    // --take-over; it reads A's records, then B's.
    let d = Broker::builder()
        .args(args)
        .args(["--tier-takeover-quiet-ms", "1000"])
        .start();
    std::thread::sleep(Duration::from_millis(1200));
    let out = restore(&d, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let end = at_b.last().unwrap().1;
    let tiered = clients::watermarks(&d.bootstrap(), &topic, 0).1;
    assert!(
        tiered > at_b[0].1,
        "B's sealed segments are in the tier: {tiered}"
    );
    let got = clients::consume_ranges(
        &d.bootstrap(),
        &topic,
        &[(0, 0, tiered)],
        clients::OP_TIMEOUT,
    );
    assert_eq!(got.len() as i64, tiered);
    for c in &got {
        let (sent, placed) = if c.offset < at_b[0].1 {
            (&from_a, &at_a)
        } else {
            (&from_b, &at_b)
        };
        let i = placed
            .iter()
            .position(|(_, o)| *o == c.offset)
            .expect("sent offset");
        assert_eq!(c.record.value, sent[i].value, "offset {}", c.offset);
    }
    assert!(tiered <= end + 1);
}

/// Waits until partition 0's manifest in a `file://` tier reaches past
/// `offset` and the broker has nothing sealed left to upload.
fn wait_tiered_past(broker: &Broker, tier: &Path, topic: &str, offset: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = common::find_tier_partition_dir(tier, topic)
            .and_then(|d| std::fs::read(d.join("manifest.json")).ok())
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|m| m["segments"].as_array()?.last()?["last_offset"].as_i64());
        let lag = broker
            .metrics()
            .get(&format!(
                "strata_tier_copy_lag_segments{{topic=\"{topic}\",partition=\"0\"}}"
            ))
            .copied();
        if let (Some(last), Some(0.0)) = (last, lag) {
            if last >= offset {
                return last;
            }
        }
        assert!(
            Instant::now() < deadline,
            "tier stops at {last:?}, lag {lag:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every object the partition's manifest names, read from a `file://` tier.
fn manifest_objects(partition_dir: &Path) -> Vec<(String, u64)> {
    let text = std::fs::read(partition_dir.join("manifest.json")).expect("manifest");
    let json: serde_json::Value = serde_json::from_slice(&text).expect("manifest json");
    let mut out = Vec::new();
    for seg in json["segments"].as_array().expect("segments") {
        for (_, obj) in seg["objects"].as_object().expect("objects") {
            out.push((
                obj["name"].as_str().expect("name").to_string(),
                obj["size"].as_u64().expect("size"),
            ));
        }
    }
    out
}

#[test]
fn kill9_during_uploads_loses_nothing_and_orphans_are_collected() {
    let tier_dir = tempfile::tempdir().expect("tier dir");
    let url = format!("file://{}", tier_dir.path().display());
    let mut broker = Broker::builder()
        .args(["--tier-interval-ms", "100", "--tier-url", url.as_str()])
        // Slow uploads, so the kill lands in the middle of some.
        .args(["--tier-upload-bytes-per-sec", "4000000"])
        .start();
    let topic = common::topic_name("tiercrash");
    clients::create_topic(
        &broker.bootstrap(),
        &topic,
        1,
        &[
            ("segment.bytes", "1048576"),
            ("local.retention.bytes", "2097152"),
        ],
    );
    let big = |i: usize| value(i)[..4000].to_vec();
    let producer = clients::producer(
        &broker.bootstrap(),
        &[("acks", "all"), ("batch.size", "65536")],
    );
    let records: Vec<TestRecord> = (0..6000)
        .map(|i| TestRecord::value(big(i)).in_partition(0))
        .collect();
    clients::produce_all(&producer, &topic, &records);
    let deadline = Instant::now() + Duration::from_secs(60);
    while broker
        .metrics()
        .get("strata_tier_bytes_uploaded_total")
        .copied()
        .unwrap_or(0.0)
        < 5e6
    {
        assert!(Instant::now() < deadline, "no upload progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    broker.kill9();

    // The manifest names only complete objects.
    let dir = common::tier_partition_dir(tier_dir.path(), &topic);
    for (name, size) in manifest_objects(&dir) {
        let len = std::fs::metadata(dir.join(&name)).map(|m| m.len());
        assert_eq!(
            len.ok(),
            Some(size),
            "manifest names {name}, which must be complete"
        );
    }

    // Restart after the orphans' grace: they are collected, the upload
    // resumes, and every record is still there.
    std::thread::sleep(Duration::from_millis(2500));
    let mut restarted = Broker::builder()
        .data_dir(broker.data_dir().to_path_buf())
        .args(["--tier-interval-ms", "100", "--tier-url", url.as_str()])
        .args(["--tier-orphan-grace-ms", "2000"])
        .start();
    let lag_key = format!("strata_tier_copy_lag_segments{{topic=\"{topic}\",partition=\"0\"}}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while restarted.metrics().get(&lag_key).copied() != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "upload did not finish after restart"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let named: std::collections::BTreeSet<String> =
        manifest_objects(&dir).into_iter().map(|(n, _)| n).collect();
    for e in std::fs::read_dir(&dir)
        .expect("tier partition dir")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        if name == "manifest.json" || name.starts_with('.') {
            continue;
        }
        assert!(named.contains(&name), "orphan {name} left after collection");
    }
    let got = clients::consume_ranges(
        &restarted.bootstrap(),
        &topic,
        &[(0, 0, 6000)],
        clients::OP_TIMEOUT,
    );
    assert_eq!(got.len(), 6000);
    for (i, c) in got.iter().enumerate() {
        assert_eq!(c.offset, i as i64);
        assert_eq!(c.record.value.as_deref(), Some(&big(i)[..]), "offset {i}");
    }
    restarted.stop();
    drop(broker);
}

#[test]
fn tier_retention_and_delete_records_move_the_log_start() {
    let broker = Broker::builder()
        .args(["--tier-interval-ms", "100"])
        .start();
    let bootstrap = broker.bootstrap();
    let topic = common::topic_name("tierret");
    clients::create_topic(
        &bootstrap,
        &topic,
        1,
        &[
            ("segment.bytes", "262144"),
            ("retention.bytes", "2097152"),
            ("local.retention.bytes", "1048576"),
        ],
    );
    let small = |i: usize| value(i)[..5000].to_vec();
    let producer = clients::producer(&bootstrap, &[("batch.size", "32768")]);
    let records: Vec<TestRecord> = (0..2000)
        .map(|i| TestRecord::value(small(i)).in_partition(0))
        .collect();
    clients::produce_all(&producer, &topic, &records);

    // Retention over the whole log (tier + local) moves the start. It acts
    // on each tier pass while uploads continue; wait until it has settled:
    // the copy is done and the start stays put over a whole pass.
    let lag_key = format!("strata_tier_copy_lag_segments{{topic=\"{topic}\",partition=\"0\"}}");
    let passes = || {
        broker
            .metrics()
            .get("strata_tier_passes_total")
            .copied()
            .unwrap_or(0.0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let low = loop {
        let (low, high) = clients::watermarks(&bootstrap, &topic, 0);
        assert_eq!(high, 2000);
        let m = broker.metrics();
        let tier_bytes = m
            .get(&format!(
                "strata_tier_partition_bytes{{topic=\"{topic}\",partition=\"0\"}}"
            ))
            .copied()
            .unwrap_or(f64::MAX);
        // Segment granularity: what stays is at least retention.bytes and
        // less than that plus a segment (Kafka's rule).
        let copied = low > 0
            && m.get(&lag_key) == Some(&0.0)
            && tier_bytes <= (2_097_152 + 2 * 262_144) as f64;
        if copied {
            // Two more passes end: one of them ran whole after this look.
            let seen = passes();
            while passes() < seen + 2.0 {
                assert!(Instant::now() < deadline, "no tier pass");
                std::thread::sleep(Duration::from_millis(50));
            }
            if clients::watermarks(&bootstrap, &topic, 0).0 == low {
                break low;
            }
        }
        assert!(
            Instant::now() < deadline,
            "retention did not settle: low={low}, tier={tier_bytes}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // The remaining head of the log is still in the tier, and readable.
    let head = clients::consume_ranges(
        &bootstrap,
        &topic,
        &[(0, low, low + 10)],
        clients::OP_TIMEOUT,
    );
    assert_eq!(head[0].offset, low);
    assert_eq!(
        head[0].record.value.as_deref(),
        Some(&small(low as usize)[..])
    );

    // DeleteRecords into the tier.
    let cut = low + 5;
    let admin = clients::admin(&bootstrap);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(cut))
        .expect("tpl");
    let result =
        clients::block_on(admin.delete_records(&tpl, &rdkafka::admin::AdminOptions::new()))
            .expect("delete records");
    let el = result.elements();
    assert_eq!(
        el[0].offset(),
        Offset::Offset(cut),
        "low watermark after DeleteRecords"
    );
    assert_eq!(clients::watermarks(&bootstrap, &topic, 0).0, cut);
    let after = clients::consume_ranges(
        &bootstrap,
        &topic,
        &[(0, cut, cut + 3)],
        clients::OP_TIMEOUT,
    );
    assert_eq!(after[0].offset, cut);
    assert_eq!(
        after[0].record.value.as_deref(),
        Some(&small(cut as usize)[..])
    );
    broker.assert_no_error_logs();
}

/// Replaying cold data costs at most one GET per tier chunk (4 MiB) of
/// each segment object, counted by a proxy in front of LocalStack, which
/// sees what the store really receives; the broker's own request counters
/// (`strata_tier_requests_total`) agree with it, and `strata tier cost`
/// prices them.
#[test]
fn cold_replay_costs_at_most_one_get_per_chunk() {
    const CHUNK: u64 = 4 << 20;
    const N: usize = 3_000; // 30 MB
    let Some(endpoint) = s3_endpoint() else {
        eprintln!("STRATA_SKIP_S3=1: skipping the LocalStack test");
        return;
    };
    let s3 = s3_client(&endpoint);
    let bucket = common::s3::new_bucket(&s3);
    let proxy = common::s3::CountingProxy::start(&endpoint);
    let builder = Broker::builder().args(["--tier-interval-ms", "500"]);
    let mut broker = common::s3::tiered_to(builder, &proxy.endpoint, &bucket).start();
    let topic = common::topic_name("cost");
    clients::create_topic(
        &broker.bootstrap(),
        &topic,
        1,
        &[
            ("segment.bytes", &(8u64 << 20).to_string()),
            ("local.retention.bytes", &(8u64 << 20).to_string()),
        ],
    );
    let records: Vec<TestRecord> = (0..N).map(|i| TestRecord::value(value(i))).collect();
    clients::produce(&broker.bootstrap(), &topic, &records);
    let dir = broker.data_dir().join(format!("{topic}-0"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while local_segments(&dir).0.first().is_none_or(|b| *b == 0) {
        assert!(
            Instant::now() < deadline,
            "the local log was not cut\n{}",
            broker.log_tail()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // Cold: a restart empties the tier cache.
    broker.restart();
    proxy.reset();
    let got = clients::consume_ranges(
        &broker.bootstrap(),
        &topic,
        &[(0, 0, N as i64)],
        Duration::from_secs(120),
    );
    assert_eq!(got.len(), N);
    for (i, c) in got.iter().enumerate() {
        assert_eq!(c.offset, i as i64);
        assert!(
            c.record.value.as_deref() == Some(&value(i)[..]),
            "record {i}"
        );
    }

    let ours = format!("/{topic}-");
    let objects = common::s3::list_sizes(&s3, &bucket, "strata/");
    let segments: Vec<&(String, u64)> = objects
        .iter()
        .filter(|(k, _)| k.contains(&ours) && k.ends_with(".log"))
        .collect();
    let chunks: u64 = segments.iter().map(|(_, size)| size.div_ceil(CHUNK)).sum();
    let data = proxy.requests_where(|m, p| m == "GET" && p.contains(&ours) && p.ends_with(".log"));
    assert!(!data.is_empty(), "nothing was read from the tier");
    assert!(
        data.len() as u64 <= chunks,
        "{} GETs of segment data for {} segment objects of {chunks} chunks",
        data.len(),
        segments.len()
    );
    // Each chunk once, none larger than a chunk.
    let mut ranges: Vec<(&str, Option<&str>)> = data
        .iter()
        .map(|r| (r.path.as_str(), r.range.as_deref()))
        .collect();
    ranges.sort_unstable();
    ranges.dedup();
    assert_eq!(
        ranges.len(),
        data.len(),
        "a chunk was fetched twice: {data:?}"
    );
    assert!(data.iter().all(|r| r.bytes as u64 <= CHUNK), "{data:?}");
    let read: usize = data.iter().map(|r| r.bytes).sum();
    println!(
        "cold replay: {} data GETs for {:.1} MiB read from the tier ({:.3} GETs per MiB)",
        data.len(),
        read as f64 / (1 << 20) as f64,
        data.len() as f64 / (read as f64 / (1 << 20) as f64)
    );
    let data_gets = data.len();

    // The broker counts what the store received (polled: the tier loop
    // may be between its count and the request).
    let series = format!("strata_tier_requests_total{{topic=\"{topic}\",op=\"get\"}}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let counted = broker.metrics().get(&series).copied().unwrap_or(0.0) as usize;
        let received = proxy.count("GET", &ours) + proxy.count("HEAD", &ours);
        if counted == received {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the broker counted {counted} GETs of {topic}, the store received {received}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let prices = tempfile::NamedTempFile::new().expect("price file");
    std::fs::write(prices.path(), "get_per_1000 = 1000.0\n").expect("write prices");
    let out = std::process::Command::new(common::strata_bin())
        .args([
            "tier",
            "cost",
            &topic,
            "--output",
            "json",
            "-b",
            &broker.bootstrap(),
        ])
        .arg("--metrics")
        .arg(format!("http://{}/metrics", broker.admin_addr()))
        .arg("--prices")
        .arg(prices.path())
        .output()
        .expect("strata tier cost");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let row = &report["topics"][0];
    assert_eq!(row["topic"], topic.as_str(), "{report}");
    let gets = row["get_requests"].as_f64().unwrap();
    assert!(gets >= data_gets as f64, "{report}");
    let stored = row["stored_bytes"].as_f64().unwrap();
    let all_objects: u64 = objects
        .iter()
        .filter(|(k, _)| k.contains(&ours))
        .map(|(_, s)| s)
        .sum();
    assert!(stored > 0.0 && stored <= all_objects as f64, "{report}");
    // At $1 a GET, the month's requests cost at least the GETs seen.
    assert!(
        row["monthly"]["requests_usd"].as_f64().unwrap() >= gets,
        "{report}"
    );
    broker.assert_no_error_logs();
}

/// A second cluster serves a topic that another cluster writes to the same
/// tier, read-only (`strata.read.replica.of`): its history replays byte for
/// byte through a consumer group, what the source uploads later shows up
/// within a few tier passes, produce and DeleteRecords are refused with
/// POLICY_VIOLATION, and the replica writes nothing to the tier.
#[test]
fn a_read_replica_cluster_serves_and_follows_another_clusters_topic() {
    use rdkafka::consumer::CommitMode;
    let tier = tempfile::tempdir().expect("tier dir");
    let url = format!("file://{}", tier.path().display());
    let tiered = ["--tier-interval-ms", "200", "--tier-url", url.as_str()];
    let source = Broker::builder().args(tiered).start();
    let topic = common::topic_name("replica");
    clients::create_topic(
        &source.bootstrap(),
        &topic,
        1,
        &[("segment.bytes", "262144")],
    );
    let batch = |from: usize, n: usize| -> Vec<TestRecord> {
        (from..from + n)
            .map(|i| TestRecord::keyed(format!("k{i}"), value(i)[..1000].to_vec()).in_partition(0))
            .collect()
    };
    clients::produce(&source.bootstrap(), &topic, &batch(0, 2000));
    let dir = common::tier_partition_dir(tier.path(), &topic);
    let tier_end = || -> i64 {
        std::fs::read(dir.join("manifest.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|m| m["segments"].as_array()?.last()?["last_offset"].as_i64())
            .map_or(0, |l| l + 1)
    };
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("the source's uploads", &|| tier_end() > 1500);
    let source_cluster = cluster_of(&dir);

    let replica = Broker::builder().args(tiered).start();
    clients::create_topic(
        &replica.bootstrap(),
        &topic,
        1,
        &[("strata.read.replica.of", source_cluster.as_str())],
    );
    let end = tier_end();
    wait("the replica to serve the tier", &|| {
        clients::watermarks(&replica.bootstrap(), &topic, 0).1 >= end
    });
    // History through a consumer group, committed like any topic's.
    let c = clients::consumer(&replica.bootstrap(), &[("auto.offset.reset", "earliest")]);
    c.subscribe(&[&topic]).expect("subscribe");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (got.len() as i64) < end {
        assert!(Instant::now() < deadline, "read {} of {end}", got.len());
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            got.push(clients::Consumed::from_message(&m.expect("message")));
        }
    }
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.offset, i as i64);
        assert_eq!(
            r.record.value.as_deref(),
            Some(&value(i)[..1000]),
            "offset {i}"
        );
    }
    let mut read_to = TopicPartitionList::new();
    read_to
        .add_partition_offset(&topic, 0, Offset::Offset(end))
        .expect("tpl");
    c.commit(&read_to, CommitMode::Sync).expect("commit");
    let committed = c.committed(Duration::from_secs(10)).expect("committed");
    let at = committed
        .find_partition(&topic, 0)
        .and_then(|p| p.offset().to_raw())
        .expect("a committed offset");
    assert!(at >= end, "committed {at}, read {end}");

    // Read-only: produce and DeleteRecords refused.
    let producer = clients::producer(&replica.bootstrap(), &[("message.timeout.ms", "10000")]);
    let refused = clients::await_delivery(clients::enqueue(
        &producer,
        &topic,
        &TestRecord::value("nope").in_partition(0),
    ))
    .expect_err("a produce to a read replica");
    assert!(
        matches!(
            refused,
            rdkafka::error::KafkaError::MessageProduction(
                rdkafka::types::RDKafkaErrorCode::PolicyViolation
            )
        ),
        "{refused:?}"
    );
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(10))
        .expect("tpl");
    let admin = clients::admin(&replica.bootstrap());
    let deleted =
        clients::block_on(admin.delete_records(&tpl, &rdkafka::admin::AdminOptions::new()))
            .expect("delete records");
    let answer = format!("{:?}", deleted.elements()[0].error());
    assert!(
        answer.contains("PolicyViolation"),
        "DeleteRecords on a read replica: {answer}"
    );

    // What the source uploads next shows up.
    clients::produce(&source.bootstrap(), &topic, &batch(2000, 2000));
    wait("more source uploads", &|| tier_end() > end + 1500);
    let later = tier_end();
    wait("the replica to follow", &|| {
        clients::watermarks(&replica.bootstrap(), &topic, 0).1 >= later
    });
    let tail = clients::consume_ranges(
        &replica.bootstrap(),
        &topic,
        &[(0, later - 5, later)],
        Duration::from_secs(30),
    );
    assert_eq!(tail.len(), 5);
    for r in &tail {
        assert_eq!(
            r.record.value.as_deref(),
            Some(&value(r.offset as usize)[..1000])
        );
    }
    let m = replica.metrics();
    let series = |op: &str| format!("strata_tier_requests_total{{topic=\"{topic}\",op=\"{op}\"}}");
    assert_eq!(
        m.get(&series("put")).copied().unwrap_or(0.0),
        0.0,
        "the replica wrote"
    );
    assert_eq!(
        m.get(&series("delete")).copied().unwrap_or(0.0),
        0.0,
        "the replica deleted"
    );
    let lag = format!("strata_tier_view_age_seconds{{topic=\"{topic}\",partition=\"0\"}}");
    assert!(m.get(&lag).is_some_and(|s| *s < 30.0), "{:?}", m.get(&lag));
    replica.assert_no_error_logs();
    source.assert_no_error_logs();
}

/// A whole cluster as a read replica (`--read-replica-of`): every topic
/// the source wrote to the tier appears, with its partition count, serves
/// every record the source acknowledged (a clean stop uploaded them all),
/// and takes no writes.
#[test]
fn a_read_replica_cluster_takes_every_topic_of_its_source() {
    let tier = tempfile::tempdir().expect("tier dir");
    let url = format!("file://{}", tier.path().display());
    let tiered = ["--tier-interval-ms", "200", "--tier-url", url.as_str()];
    let mut source = Broker::builder().args(tiered).start();
    let topics = [
        (common::topic_name("rc-a"), 2),
        (common::topic_name("rc-b"), 1),
    ];
    let records = |t: &str, p: i32| -> Vec<TestRecord> {
        (0..300)
            .map(|i| TestRecord::value(format!("{t}-{p}-{i}")).in_partition(p))
            .collect()
    };
    for (t, parts) in &topics {
        clients::create_topic(&source.bootstrap(), t, *parts, &[]);
        for p in 0..*parts {
            clients::produce(&source.bootstrap(), t, &records(t, p));
        }
    }
    source.stop();
    let dir = common::tier_partition_dir(tier.path(), &topics[0].0);
    let source_cluster = cluster_of(&dir);

    let replica = Broker::builder()
        .args(tiered)
        .args(["--read-replica-of", source_cluster.as_str()])
        .start();
    for (t, parts) in &topics {
        clients::wait_for_topic(&replica.bootstrap(), t, *parts as usize);
        let client = clients::metadata_client(&replica.bootstrap());
        for p in 0..*parts {
            // The topic may show in metadata a moment before it serves.
            let deadline = Instant::now() + Duration::from_secs(60);
            while client
                .fetch_watermarks(t, p, Duration::from_secs(5))
                .map_or(true, |(_, high)| high < 300)
            {
                assert!(Instant::now() < deadline, "{t}-{p} not served");
                std::thread::sleep(Duration::from_millis(100));
            }
            let got = clients::consume_ranges(
                &replica.bootstrap(),
                t,
                &[(p, 0, 300)],
                Duration::from_secs(30),
            );
            let want = records(t, p);
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.record.value, w.value, "{t}-{p} offset {}", g.offset);
            }
        }
    }
    let producer = clients::producer(&replica.bootstrap(), &[("message.timeout.ms", "10000")]);
    let refused = clients::await_delivery(clients::enqueue(
        &producer,
        &topics[1].0,
        &TestRecord::value("nope").in_partition(0),
    ));
    assert!(refused.is_err(), "a produce to a read replica: {refused:?}");
    replica.assert_no_error_logs();
}

/// On LocalStack S3, a read replica follows a source cluster under load:
/// while an idempotent acks=all producer writes to the source, a consumer
/// on the replica reads along; once the source stops cleanly (uploading
/// the rest), the replica serves every acknowledged record, at its offset,
/// and it wrote no object of the source's.
#[test]
fn a_read_replica_on_s3_follows_its_source_under_load() {
    let Some(endpoint) = s3_endpoint() else {
        eprintln!("STRATA_SKIP_S3=1: skipping the LocalStack test");
        return;
    };
    let s3 = s3_client(&endpoint);
    let bucket = common::s3::new_bucket(&s3);
    let builder = || Broker::builder().args(["--tier-interval-ms", "200"]);
    let mut source = common::s3::tiered_to(builder(), &endpoint, &bucket).start();
    let topic = common::topic_name("rr-s3");
    clients::create_topic(
        &source.bootstrap(),
        &topic,
        1,
        &[("segment.bytes", "131072")],
    );
    // A first segment in the tier, so the replica has something to plan.
    let first: Vec<TestRecord> = (0..400)
        .map(|i| TestRecord::value(value(i)[..500].to_vec()).in_partition(0))
        .collect();
    // In several requests: a segment rolls only at an append.
    for chunk in first.chunks(50) {
        clients::produce(&source.bootstrap(), &topic, chunk);
    }
    let ours = format!("/{topic}-");
    let manifest_key = || {
        common::s3::list_keys(&s3, &bucket, "strata/")
            .into_iter()
            .find(|k| k.contains(&ours) && k.ends_with("/0/manifest.json"))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let key = loop {
        if let Some(k) = manifest_key() {
            break k;
        }
        assert!(Instant::now() < deadline, "no manifest in the bucket");
        std::thread::sleep(Duration::from_millis(200));
    };
    let source_cluster = key
        .split('/')
        .nth(1)
        .expect("cluster in the key")
        .to_string();

    let replica = common::s3::tiered_to(builder(), &endpoint, &bucket).start();
    clients::create_topic(
        &replica.bootstrap(),
        &topic,
        1,
        &[("strata.read.replica.of", source_cluster.as_str())],
    );
    // Load on the source while the replica's consumer reads along.
    let writer = {
        let bootstrap = source.bootstrap();
        let topic = topic.clone();
        std::thread::spawn(move || {
            let producer = clients::producer(
                &bootstrap,
                &[
                    ("enable.idempotence", "true"),
                    ("acks", "all"),
                    ("linger.ms", "5"),
                ],
            );
            let records: Vec<TestRecord> = (400..4000)
                .map(|i| TestRecord::value(value(i)[..500].to_vec()).in_partition(0))
                .collect();
            let mut acked = Vec::new();
            for chunk in records.chunks(100) {
                acked.extend(clients::produce_all(&producer, &topic, chunk));
                std::thread::sleep(Duration::from_millis(300));
            }
            acked
        })
    };
    let c = clients::consumer(&replica.bootstrap(), &[("auto.offset.reset", "earliest")]);
    c.subscribe(&[&topic]).expect("subscribe");
    let mut got: Vec<clients::Consumed> = Vec::new();
    let mut read_during_load = 0;
    let mut stopped = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    while got.len() < 4000 {
        assert!(
            Instant::now() < deadline,
            "the replica served {} of 4000",
            got.len()
        );
        if !stopped && writer.is_finished() {
            read_during_load = got.len();
            // A clean stop uploads the active segment too.
            source.stop();
            stopped = true;
        }
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            got.push(clients::Consumed::from_message(&m.expect("message")));
        }
    }
    let acked = writer.join().expect("writer");
    assert_eq!(acked.len(), 3600);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.offset, i as i64);
        assert_eq!(
            r.record.value.as_deref(),
            Some(&value(i)[..500]),
            "offset {i}"
        );
    }
    for (_, offset) in &acked {
        assert!((*offset as usize) < got.len());
    }
    println!(
        "read replica on S3: {} records read while the source was writing, {} in all",
        read_during_load,
        got.len()
    );
    assert!(
        read_during_load > 400,
        "the replica did not follow while the source wrote"
    );
    let m = replica.metrics();
    let series = |op: &str| format!("strata_tier_requests_total{{topic=\"{topic}\",op=\"{op}\"}}");
    assert_eq!(
        m.get(&series("put")).copied().unwrap_or(0.0),
        0.0,
        "the replica wrote"
    );
    assert_eq!(
        m.get(&series("delete")).copied().unwrap_or(0.0),
        0.0,
        "the replica deleted"
    );
    replica.assert_no_error_logs();
}
