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
    let mut broker = Broker::builder()
        .args([
            "--log-cleaner-backoff-ms",
            "20",
            "--log-retention-check-interval-ms",
            "100",
        ])
        .start();
    let bs = broker.bootstrap();
    let topic = compacted_topic(&bs);
    // Last acknowledged id per key, over all cycles.
    let mut acked_last: BTreeMap<String, u64> = BTreeMap::new();
    let mut next_id = 0u64;
    let mut passes = 0.0;
    for cycle in 0..6u64 {
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
        passes += broker
            .metrics()
            .get("strata_log_cleaner_passes_total")
            .copied()
            .unwrap_or(0.0);
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
    assert!(passes > 0.0, "the cleaner never replaced a segment");
}
