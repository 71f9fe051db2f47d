//! Log compaction with a real client (librdkafka through rdkafka): keyless
//! records and DeleteRecords refused, and kill -9 of the broker while the cleaner runs,
//! repeated, losing no acknowledged latest value and bringing back no
//! older one.

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::clients::{self, TestRecord};
use common::Broker;
use rdkafka::admin::AdminOptions;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};

const KEYS: u64 = 300;

/// A compacted topic of small segments, kept local (a tiered one cleans
/// only what the tier holds).
fn compacted_topic(bs: &str) -> String {
    let topic = common::topic_name("compact");
    clients::create_topic(
        bs,
        &topic,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("remote.storage.enable", "false"),
            ("segment.bytes", "30000"),
            ("segment.ms", "300"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ],
    );
    topic
}

/// The value of record `id`: its key is `id % KEYS`.
fn record(id: u64) -> TestRecord {
    TestRecord::keyed(format!("k{:04}", id % KEYS), format!("{id:012}"))
}

fn id_of(c: &clients::Consumed) -> (String, u64) {
    let key = String::from_utf8(c.record.key.clone().expect("keyed")).expect("utf8 key");
    let value = c.record.value.as_deref().expect("no tombstones here");
    let id: u64 = std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad value at {}: {value:?}", c.offset));
    assert_eq!(key, format!("k{:04}", id % KEYS), "offset {}", c.offset);
    (key, id)
}

#[test]
fn keyless_records_and_delete_records_are_refused_by_a_compacted_topic() {
    let broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = compacted_topic(&bs);
    let p = clients::producer(&bs, &[("message.timeout.ms", "10000")]);
    let keyless = clients::enqueue(&p, &topic, &TestRecord::value("no key"));
    match clients::await_delivery(keyless) {
        Err(KafkaError::MessageProduction(RDKafkaErrorCode::InvalidRecord)) => {}
        other => panic!("expected INVALID_RECORD, got {other:?}"),
    }
    let keyed = clients::enqueue(&p, &topic, &record(1));
    clients::await_delivery(keyed).expect("a keyed record is taken");

    // As in Kafka, DeleteRecords needs the delete policy.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(1))
        .expect("tpl");
    let admin = clients::admin(&bs);
    let deleted = clients::block_on(admin.delete_records(&tpl, &AdminOptions::new()))
        .expect("delete records");
    let answer = format!("{:?}", deleted.elements()[0].error());
    assert!(
        answer.contains("PolicyViolation"),
        "DeleteRecords on a compact topic: {answer}"
    );
}

/// Produces with acks=all while the cleaner compacts; kills the broker
/// with SIGKILL at a moment that differs from cycle to cycle; after each
/// restart every key's last record holds its last acknowledged value or a
/// later one that was sent (in doubt at the kill), each key's values
/// appear in the order they were sent, and nothing else is there.
#[test]
fn kill9_while_cleaning_loses_no_acknowledged_latest_value() {
    let broker = Broker::builder()
        .args([
            "--log-cleaner-backoff-ms",
            "20",
            "--log-retention-check-interval-ms",
            "100",
        ])
        .start();
    let topic = compacted_topic(&broker.bootstrap());
    let passes = kill9_cycles(broker, &topic, 6, "strata_log_cleaner_passes_total");
    assert!(passes > 0.0, "the cleaner never replaced a segment");
}

/// The same with the history in the tier (`file://`): kills land while
/// tier compaction stages, uploads and swaps, and the tier's compacted
/// log stays true to the acknowledged records; a small dedupe buffer makes
/// passes that end with their key map full.
#[test]
fn kill9_while_compacting_the_tier_loses_no_acknowledged_latest_value() {
    let tier_dir = tempfile::tempdir().expect("tier dir");
    let url = format!("file://{}", tier_dir.path().display());
    // A dedupe buffer of about a hundred keys: passes end early, with
    // the map full, and the next one goes on.
    let broker = Broker::builder()
        .args(["--tier-interval-ms", "100", "--tier-url", url.as_str()])
        .args(["--log-cleaner-backoff-ms", "20"])
        .args(["--log-cleaner-dedupe-buffer-size", "8192"])
        .start();
    let topic = tiered_compacted_topic(&broker.bootstrap(), &[]);
    let passes = kill9_cycles(broker, &topic, 6, "strata_tier_compaction_passes_total");
    assert!(passes > 0.0, "tier compaction never replaced a segment");
}

/// A compacted topic of small segments whose history is only in the tier
/// (local retention keeps about one segment).
fn tiered_compacted_topic(bs: &str, extra: &[(&str, &str)]) -> String {
    let topic = common::topic_name("tcompact");
    let mut configs = vec![
        ("cleanup.policy", "compact"),
        ("remote.storage.enable", "true"),
        ("segment.bytes", "30000"),
        ("segment.ms", "300"),
        ("local.retention.bytes", "30000"),
        ("min.cleanable.dirty.ratio", "0.01"),
    ];
    configs.extend_from_slice(extra);
    clients::create_topic(bs, &topic, 1, &configs);
    topic
}

/// Produces with an idempotent producer while killing the broker with -9
/// after a delay that varies by cycle; after each restart, reads the topic
/// from offset 0 and checks it against what was acknowledged. Returns the
/// sum over cycles of `passes_metric` just before each kill.
fn kill9_cycles(mut broker: Broker, topic: &str, cycles: u64, passes_metric: &str) -> f64 {
    let topic = topic.to_string();
    // Last acknowledged id per key, over all cycles.
    let mut acked_last: BTreeMap<String, u64> = BTreeMap::new();
    let mut next_id = 0u64;
    let mut passes = 0.0;
    for cycle in 0..cycles {
        let bs = broker.bootstrap();
        let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let producer = {
            let (acked, stop, bs, topic) = (acked.clone(), stop.clone(), bs.clone(), topic.clone());
            let first = next_id;
            std::thread::spawn(move || {
                let p = clients::producer(
                    &bs,
                    &[
                        ("enable.idempotence", "true"),
                        ("acks", "all"),
                        ("linger.ms", "5"),
                        ("compression.type", "lz4"),
                        ("message.timeout.ms", "5000"),
                        ("request.timeout.ms", "2000"),
                    ],
                );
                let mut inflight = VecDeque::new();
                let mut id = first;
                let settle = |(id, f)| {
                    if clients::await_delivery(f).is_ok() {
                        acked.lock().unwrap().push(id);
                    }
                };
                while !stop.load(Ordering::Relaxed) {
                    inflight.push_back((id, clients::enqueue(&p, &topic, &record(id))));
                    id += 1;
                    if inflight.len() >= 2000 {
                        settle(inflight.pop_front().unwrap());
                    }
                }
                while let Some(e) = inflight.pop_front() {
                    settle(e);
                }
                let _ = p.flush(Duration::from_secs(1));
                id
            })
        };
        // Enough acknowledged records for several segments to roll and be
        // cleaned, then a kill after a delay that varies by cycle.
        let deadline = Instant::now() + Duration::from_secs(120);
        while acked.lock().unwrap().len() < 20_000 {
            assert!(
                Instant::now() < deadline,
                "producer made too little progress"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(37 * cycle));
        passes += broker.metrics().get(passes_metric).copied().unwrap_or(0.0);
        broker.kill9();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        next_id = producer.join().expect("producer thread");
        for id in acked.lock().unwrap().iter() {
            let key = format!("k{:04}", id % KEYS);
            let e = acked_last.entry(key).or_insert(*id);
            *e = (*e).max(*id);
        }

        broker.restart();
        let bs = broker.bootstrap();
        let got = clients::consume_all(&bs, &topic, 1, Duration::from_secs(120));
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        for c in &got {
            let (key, id) = id_of(c);
            assert!(id < next_id, "cycle {cycle}: id {id} was never sent");
            if let Some(prev) = last.insert(key.clone(), id) {
                assert!(
                    prev < id,
                    "cycle {cycle}: {key} went back from {prev} to {id}"
                );
            }
        }
        for (key, want) in &acked_last {
            let have = last.get(key).copied();
            assert!(
                have.is_some_and(|h| h >= *want),
                "cycle {cycle}: {key} holds {have:?}, last acknowledged {want}"
            );
        }
        eprintln!(
            "cycle {cycle}: {} records read back for {} keys; passes so far {passes}",
            got.len(),
            last.len()
        );
    }
    passes
}

/// Reads `topic` from offset 0: each key's last value (None: a tombstone)
/// and the number of records read.
fn latest_values(bs: &str, topic: &str) -> (BTreeMap<String, Option<String>>, usize) {
    let got = clients::consume_all(bs, topic, 1, Duration::from_secs(120));
    let mut last = BTreeMap::new();
    let mut prev_offset = -1;
    for c in &got {
        assert!(c.offset > prev_offset, "offsets go back at {}", c.offset);
        prev_offset = c.offset;
        let key = String::from_utf8(c.record.key.clone().expect("keyed")).expect("utf8 key");
        let value = c
            .record
            .value
            .as_deref()
            .map(|v| String::from_utf8(v.to_vec()).expect("utf8 value"));
        last.insert(key, value);
    }
    (last, got.len())
}

/// A compacted topic whose history is only in the tier (`file://`): tier
/// compaction shrinks the bucket, reading from offset 0 gives each key's
/// latest value at its offset, tombstoned keys go once
/// `delete.retention.ms` has passed, and a fresh broker restoring the topic
/// from the tier reads the same key set.
#[test]
fn tier_compaction_compacts_history_only_in_the_tier_and_a_restore_reads_it() {
    let tier_dir = tempfile::tempdir().expect("tier dir");
    let url = format!("file://{}", tier_dir.path().display());
    let root = tier_dir.path().to_path_buf();
    tier_compaction_round(
        || Broker::builder().args(["--tier-url", url.as_str()]),
        |topic| {
            let dir = common::tier_partition_dir(&root, topic);
            std::fs::read_dir(dir)
                .expect("tier dir")
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .map(|e| e.metadata().expect("stat").len())
                .sum()
        },
    );
}

/// The same on LocalStack S3.
#[test]
fn tier_compaction_on_s3_shrinks_the_bucket_and_a_restore_reads_it() {
    let Some(endpoint) = common::s3::s3_endpoint() else {
        eprintln!("STRATA_SKIP_S3=1: skipping the LocalStack test");
        return;
    };
    let s3 = common::s3::s3_client(&endpoint);
    let bucket = common::s3::new_bucket(&s3);
    tier_compaction_round(
        || common::s3::tiered_to(Broker::builder(), &endpoint, &bucket),
        |topic| {
            common::s3::list_sizes(&s3, &bucket, "strata/")
                .into_iter()
                .filter(|(k, _)| k.contains(&format!("/{topic}-")) && k.ends_with(".log"))
                .map(|(_, size)| size)
                .sum()
        },
    );
}

/// Produces updates and tombstones to a compacted tiered topic until tier
/// compaction has run and the tombstones are gone, checks what a consumer
/// reads and that the bucket's `.log` objects (`bucket_log_bytes`) shrank
/// (once orphan collection removed the retired ones), then restores the
/// topic on a fresh broker and reads it again.
fn tier_compaction_round(
    tiered: impl Fn() -> common::BrokerBuilder,
    bucket_log_bytes: impl Fn(&str) -> u64,
) {
    let fast = [
        "--tier-interval-ms",
        "100",
        "--tier-orphan-grace-ms",
        "1000",
    ];
    let mut first = tiered()
        .args(fast)
        .args(["--log-cleaner-backoff-ms", "50"])
        .start();
    let bs = first.bootstrap();
    let topic = tiered_compacted_topic(&bs, &[("delete.retention.ms", "2000")]);
    let producer = clients::producer(&bs, &[("linger.ms", "5"), ("batch.size", "4096")]);
    let mut expected: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut produced = 0usize;
    let mut send = |records: Vec<TestRecord>, expected: &mut BTreeMap<_, _>| {
        for r in &records {
            let key = String::from_utf8(r.key.clone().expect("keyed")).expect("key");
            let value = r
                .value
                .as_ref()
                .map(|v| String::from_utf8(v.clone()).expect("value"));
            expected.insert(key, value);
        }
        produced += records.len();
        clients::produce_all(&producer, &topic, &records);
    };
    // 30,000 updates of 300 keys, then tombstones for ten of them.
    send((0..30_000).map(record).collect(), &mut expected);
    let tombstoned: Vec<String> = (0..10).map(|k| format!("k{k:04}")).collect();
    let tombstones = tombstoned
        .iter()
        .map(|k| {
            let mut t = TestRecord::keyed(k.clone(), "");
            t.value = None;
            t
        })
        .collect();
    send(tombstones, &mut expected);
    // Until the tier is compacted and the tombstones are gone: a few more
    // updates of the other keys now and then keep passes coming (a pass
    // needs dirty data, and tombstones go in a pass after their retention).
    let mut id = 30_000u64;
    let deadline = Instant::now() + Duration::from_secs(180);
    let (read, count) = loop {
        let (read, count) = latest_values(&bs, &topic);
        let passes = first
            .metrics()
            .get("strata_tier_compaction_passes_total")
            .copied()
            .unwrap_or(0.0);
        let tombstones_gone = tombstoned.iter().all(|k| !read.contains_key(k));
        if passes >= 2.0 && tombstones_gone {
            break (read, count);
        }
        assert!(
            Instant::now() < deadline,
            "tier compaction passes {passes}, tombstones gone {tombstones_gone}"
        );
        std::thread::sleep(Duration::from_millis(500));
        let more: Vec<TestRecord> = (0..290)
            .map(|i| {
                id += 1;
                TestRecord::keyed(format!("k{:04}", 10 + i), format!("{id:012}"))
            })
            .collect();
        send(more, &mut expected);
    };
    let live: BTreeMap<String, Option<String>> = expected
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(
        read, live,
        "each live key's latest value, tombstoned keys gone"
    );
    assert!(
        count < produced / 4,
        "{count} records read back of {produced} produced"
    );
    // The bucket holds far fewer bytes than were uploaded to it.
    let uploaded = first
        .metrics()
        .get("strata_tier_bytes_uploaded_total")
        .copied()
        .unwrap_or(0.0);
    let tier_bytes = first
        .metrics()
        .get(&format!(
            "strata_tier_partition_bytes{{topic=\"{topic}\",partition=\"0\"}}"
        ))
        .copied()
        .unwrap_or(f64::MAX);
    eprintln!("tier: {uploaded} bytes uploaded, the manifest names {tier_bytes}");
    assert!(
        tier_bytes < uploaded / 4.0,
        "tier holds {tier_bytes} bytes after compaction, {uploaded} uploaded"
    );
    check_cli_views(&first, &topic);
    // Retired objects go after the grace period (orphan collection runs
    // every 120 tier passes).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let stored = bucket_log_bytes(&topic);
        if (stored as f64) < uploaded / 4.0 {
            eprintln!("bucket: {stored} bytes of .log objects");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bucket still holds {stored} bytes of .log objects, {uploaded} uploaded"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The whole log reaches the tier at a clean stop; a fresh cluster
    // restores the topic from it and reads the same keys and values.
    first.stop();
    let second = tiered().args(fast).start();
    clients::create_topic(
        &second.bootstrap(),
        &topic,
        1,
        &[("strata.restore", "true"), ("strata.tier.takeover", "true")],
    );
    let (restored, _) = latest_values(&second.bootstrap(), &topic);
    assert_eq!(
        restored, live,
        "the restored topic reads the compacted key set"
    );
    second.assert_no_error_logs();
}

/// `strata topic describe` and `strata tier status` with `--metrics` show
/// the partition's dirty ratio, last clean and last tier compaction.
fn check_cli_views(broker: &Broker, topic: &str) {
    let metrics = format!("http://{}/metrics", broker.admin_addr());
    let bs = broker.bootstrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::strata_bin())
            .args(args)
            .args(["--metrics", &metrics, "--bootstrap", &bs])
            .env_remove("STRATA_BOOTSTRAP")
            .output()
            .expect("run strata");
        assert!(
            out.status.success(),
            "strata {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8 output")
    };
    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        serde_json::from_str(&run(&all)).expect("json output")
    };
    let described = json(&["topic", "describe", topic]);
    let p0 = &described["partitions"][0];
    assert!(p0["dirty_ratio"].as_f64().is_some(), "{described}");
    let table = run(&["topic", "describe", topic]);
    eprintln!("{table}");
    assert!(
        table.contains("DIRTY RATIO") && table.contains("LAST CLEAN"),
        "{table}"
    );
    let status = json(&["tier", "status", topic]);
    let row = &status[0];
    assert!(row["tier_dirty_ratio"].as_f64().is_some(), "{status}");
    assert_eq!(
        row["tier_compacted"],
        serde_json::Value::Bool(true),
        "{status}"
    );
    assert!(
        row["tier_compaction_seconds_ago"].as_f64().is_some(),
        "{status}"
    );
    let table = run(&["tier", "status", topic]);
    eprintln!("{table}");
    assert!(
        table.contains("LAST TIER COMPACTION") && table.contains("s ago"),
        "{table}"
    );
}
