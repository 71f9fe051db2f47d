//! Produce and fetch with a real client (rdkafka / librdkafka 2.12):
//! byte-identical round trips in every codec, per-key order across
//! partitions, replay from an offset and from a timestamp.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::clients::{self, Consumed, TestRecord};
use common::segments;
use common::Broker;
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

const RECORDS: usize = 100_000;
const PARTITIONS: i32 = 16;
const KEYS: usize = 1_000;

/// Record `i` of the codec test: its key's sequence number is `i / KEYS`.
fn codec_record(i: usize, base_ts: i64) -> TestRecord {
    let key = format!("key-{:04}", i % KEYS);
    let seq = i / KEYS;
    let value = if i % 997 == 0 {
        None // a tombstone now and then
    } else {
        let mut v = format!("id={i} key={key} seq={seq} ").into_bytes();
        // Binary filler of varying length, some of it incompressible-ish.
        let len = (i * 7919) % 300;
        v.extend((0..len).map(|j| ((i * 31 + j * j * 7) % 251) as u8));
        Some(v)
    };
    let mut headers = vec![
        ("id".to_owned(), Some(i.to_string().into_bytes())),
        ("seq".to_owned(), Some(seq.to_string().into_bytes())),
    ];
    if i % 3 == 0 {
        headers.push(("null-header".to_owned(), None));
    }
    if i % 5 == 0 {
        headers.push((
            "bin".to_owned(),
            Some(vec![0, 255, 1, 254, (i % 256) as u8]),
        ));
        headers.push(("empty".to_owned(), Some(Vec::new())));
    }
    TestRecord {
        key: Some(key.into_bytes()),
        value,
        headers,
        timestamp: Some(base_ts + i as i64),
        partition: None,
    }
}

fn header_usize(c: &Consumed, name: &str) -> usize {
    let v = c
        .record
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.as_ref())
        .unwrap_or_else(|| {
            panic!(
                "partition {} offset {}: no {name:?} header in {:?}",
                c.partition, c.offset, c.record.headers
            )
        });
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "partition {} offset {}: bad {name:?} header {v:?}",
                c.partition, c.offset
            )
        })
}

fn codec_roundtrip(codec: &str) {
    codec_roundtrip_with(codec, true)
}

/// The round trip with fetches answered by sendfile (`zero_copy`) or by
/// copying; both must give every record back.
fn codec_roundtrip_with(codec: &str, zero_copy: bool) {
    let broker = Broker::builder()
        .args(["--zero-copy", if zero_copy { "true" } else { "false" }])
        .start();
    let bs = broker.bootstrap();
    let topic = common::topic_name(&format!("codec-{codec}"));
    clients::create_topic(&bs, &topic, PARTITIONS, &[]);

    let base_ts = clients::now_ms() - 3_600_000;
    let records: Vec<TestRecord> = (0..RECORDS).map(|i| codec_record(i, base_ts)).collect();
    let producer = clients::producer(
        &bs,
        &[
            ("compression.type", codec),
            ("linger.ms", "20"),
            ("acks", "all"),
        ],
    );
    let delivered = clients::produce_all(&producer, &topic, &records);

    // Consume every partition from offset 0 up to its high watermark.
    let got = clients::consume_all(&bs, &topic, PARTITIONS, Duration::from_secs(240));
    assert_eq!(
        got.len(),
        RECORDS,
        "consumed {} of {RECORDS} records",
        got.len()
    );

    let mut seen = vec![false; RECORDS];
    let mut last_seq: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut key_partition: HashMap<Vec<u8>, i32> = HashMap::new();
    let mut next_offset: HashMap<i32, i64> = HashMap::new();
    for c in &got {
        let id = header_usize(c, "id");
        assert!(
            id < RECORDS,
            "partition {} offset {}: id {id} out of range",
            c.partition,
            c.offset
        );
        assert!(
            !seen[id],
            "record id {id} consumed twice (partition {} offset {})",
            c.partition, c.offset
        );
        seen[id] = true;
        records[id].matches(c).unwrap_or_else(|e| {
            panic!(
                "{codec}: record id {id} at {}/{}: {e}",
                c.partition, c.offset
            )
        });
        assert_eq!(
            delivered[id],
            (c.partition, c.offset),
            "record id {id}: delivery report vs consumed position"
        );
        // Offsets within a partition are dense.
        let n = next_offset.entry(c.partition).or_insert(0);
        assert_eq!(c.offset, *n, "partition {}: offset gap", c.partition);
        *n += 1;
        // Per-key order and a key's single partition.
        let key = c.record.key.clone().expect("keyed record");
        let seq = header_usize(c, "seq");
        if let Some(prev) = last_seq.insert(key.clone(), seq) {
            assert!(
                seq > prev,
                "key {:?}: seq {seq} after {prev} in partition {}",
                String::from_utf8_lossy(&key),
                c.partition
            );
        }
        let p = *key_partition.entry(key.clone()).or_insert(c.partition);
        assert_eq!(
            p,
            c.partition,
            "key {:?} in two partitions",
            String::from_utf8_lossy(&key)
        );
    }
    assert!(seen.iter().all(|s| *s), "some records missing");
    let used: HashSet<i32> = key_partition.values().copied().collect();
    assert!(
        used.len() > 8,
        "1000 keys landed in only {} of 16 partitions",
        used.len()
    );

    // The broker stores batches as they came: compressed on disk.
    // (librdkafka sends a batch uncompressed when compression would not make
    // it smaller, which happens for batches of a few records.)
    let want = match codec {
        "none" => 0,
        "gzip" => 1,
        "snappy" => 2,
        "lz4" => 3,
        "zstd" => 4,
        other => panic!("unknown codec {other}"),
    };
    let (mut compressed, mut total) = (0, 0);
    for p in 0..PARTITIONS {
        for b in segments::partition_batches(broker.data_dir(), &topic, p) {
            assert_eq!(
                b.magic, 2,
                "partition {p}: batch at {} not magic v2",
                b.position
            );
            assert!(
                b.compression() == want || b.compression() == 0,
                "partition {p}: batch at offset {} stored with codec {} ({codec} produced)",
                b.base_offset,
                b.compression()
            );
            if b.record_count >= 20 {
                total += 1;
                compressed += usize::from(b.compression() == want);
            }
        }
    }
    assert!(total > 0, "no batch of 20+ records on disk");
    assert_eq!(
        compressed, total,
        "{codec}: only {compressed} of {total} batches of 20+ records are stored with codec {want}"
    );
    let sent_zero_copy = broker
        .metrics()
        .get("strata_fetch_zero_copy_bytes_total")
        .copied()
        .unwrap_or(0.0);
    if zero_copy {
        assert!(sent_zero_copy > 0.0, "no fetch data went by sendfile");
    } else {
        assert_eq!(sent_zero_copy, 0.0, "sendfile used with --zero-copy false");
    }
    broker.assert_no_error_logs();
}

#[test]
fn roundtrip_100k_none() {
    codec_roundtrip("none");
}

#[test]
fn roundtrip_100k_none_copying_fetches() {
    codec_roundtrip_with("none", false);
}

#[test]
fn roundtrip_100k_gzip() {
    codec_roundtrip("gzip");
}

#[test]
fn roundtrip_100k_snappy() {
    codec_roundtrip("snappy");
}

#[test]
fn roundtrip_100k_lz4() {
    codec_roundtrip("lz4");
}

#[test]
fn roundtrip_100k_zstd() {
    codec_roundtrip("zstd");
}

/// Three partitions of 100 records each; record `i` of a partition has
/// timestamp `base + i * 1000`.
fn replay_fixture(bs: &str, topic: &str, base_ts: i64) -> Vec<Vec<TestRecord>> {
    clients::create_topic(bs, topic, 3, &[]);
    let per_partition: Vec<Vec<TestRecord>> = (0..3)
        .map(|p| {
            (0..100)
                .map(|i| {
                    TestRecord::keyed(format!("p{p}-k{i}"), format!("p{p} record {i}"))
                        .in_partition(p)
                        .at(base_ts + i * 1000)
                })
                .collect()
        })
        .collect();
    let all: Vec<TestRecord> = per_partition.iter().flatten().cloned().collect();
    let at = clients::produce(bs, topic, &all);
    for (r, (p, o)) in all.iter().zip(&at) {
        assert_eq!(Some(*p), r.partition);
        let i = (r.timestamp.unwrap() - base_ts) / 1000;
        assert_eq!(*o, i, "partition {p}: record {i} got offset {o}");
    }
    per_partition
}

#[test]
fn replay_from_offset() {
    let broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = common::topic_name("replay-offset");
    let base_ts = clients::now_ms() - 600_000;
    let data = replay_fixture(&bs, &topic, base_ts);

    for (p, start) in [(0, 0), (1, 37), (2, 99)] {
        let got = clients::consume_ranges(&bs, &topic, &[(p, start, 100)], clients::OP_TIMEOUT);
        assert_eq!(
            got.len(),
            (100 - start) as usize,
            "partition {p} from {start}"
        );
        for (k, c) in got.iter().enumerate() {
            let i = start as usize + k;
            assert_eq!(c.offset, i as i64);
            data[p as usize][i]
                .matches(c)
                .unwrap_or_else(|e| panic!("partition {p} offset {i}: {e}"));
        }
    }

    // Replaying the same range twice gives the same records.
    let a = clients::consume_ranges(&bs, &topic, &[(1, 10, 20)], clients::OP_TIMEOUT);
    let b = clients::consume_ranges(&bs, &topic, &[(1, 10, 20)], clients::OP_TIMEOUT);
    let strip = |v: &[Consumed]| {
        v.iter()
            .map(|c| (c.offset, c.record.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&a), strip(&b));

    // Offset::OffsetTail(5) -> ListOffsets(latest) - 5.
    let c = clients::consumer(&bs, &[]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 2, Offset::OffsetTail(5))
        .unwrap();
    c.assign(&tpl).unwrap();
    let first = match c.poll(clients::OP_TIMEOUT) {
        Some(Ok(m)) => Consumed::from_message(&m),
        Some(Err(e)) => panic!("tail read: {e}"),
        None => panic!("tail read: nothing within {:?}", clients::OP_TIMEOUT),
    };
    assert_eq!(
        first.offset, 95,
        "OffsetTail(5) started at {}",
        first.offset
    );
    drop(c);

    // Earliest / latest.
    for p in 0..3 {
        assert_eq!(clients::watermarks(&bs, &topic, p), (0, 100));
    }
    broker.assert_no_error_logs();
}

#[test]
fn replay_from_timestamp() {
    let broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = common::topic_name("replay-ts");
    let base_ts = clients::now_ms() - 600_000;
    let data = replay_fixture(&bs, &topic, base_ts);

    let c = clients::consumer(&bs, &[]);
    let cases: [(i32, i64, Offset); 6] = [
        (0, base_ts - 1_000_000, Offset::Offset(0)),
        (0, base_ts, Offset::Offset(0)),
        (1, base_ts + 50_000, Offset::Offset(50)),
        (1, base_ts + 49_500, Offset::Offset(50)),
        (2, base_ts + 99_000, Offset::Offset(99)),
        (2, base_ts + 99_001, Offset::End),
    ];
    for (p, ts, want) in cases {
        let mut one = TopicPartitionList::new();
        one.add_partition_offset(&topic, p, Offset::Offset(ts))
            .unwrap();
        let res = c
            .offsets_for_times(one, clients::OP_TIMEOUT)
            .unwrap_or_else(|e| panic!("offsets_for_times({p}, {ts}): {e}"));
        let e = res.find_partition(&topic, p).expect("partition in result");
        e.error()
            .unwrap_or_else(|err| panic!("offsets_for_times({p}, {ts}): {err}"));
        assert_eq!(
            e.offset(),
            want,
            "offsets_for_times(partition {p}, base + {} ms)",
            ts - base_ts
        );
    }

    // Replay partition 1 from the offset found for base + 50 s.
    let mut one = TopicPartitionList::new();
    one.add_partition_offset(&topic, 1, Offset::Offset(base_ts + 50_000))
        .unwrap();
    let res = c.offsets_for_times(one, clients::OP_TIMEOUT).unwrap();
    let start = match res.find_partition(&topic, 1).unwrap().offset() {
        Offset::Offset(o) => o,
        other => panic!("offsets_for_times gave {other:?}"),
    };
    let got = clients::consume_ranges_with(&c, &topic, &[(1, start, 100)], clients::OP_TIMEOUT);
    assert_eq!(got.len(), 50);
    for c in &got {
        let i = c.offset as usize;
        data[1][i]
            .matches(c)
            .unwrap_or_else(|e| panic!("offset {i}: {e}"));
        assert!(c.record.timestamp.unwrap() >= base_ts + 50_000);
    }
    broker.assert_no_error_logs();
}

/// Kafka's ordering guarantee: produce requests pipelined on one connection
/// are applied in the order they were sent (librdkafka keeps up to
/// max.in.flight requests outstanding without idempotence).
#[test]
fn pipelined_produce_requests_keep_order() {
    use common::raw::{self, RawConn};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::Compression;

    const REQUESTS: usize = 300;
    let broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = common::topic_name("pipelined");
    clients::create_topic(&bs, &topic, 1, &[]);
    let mut conn = RawConn::connect(&bs);
    let v = conn.produce_version();
    let ts = clients::now_ms();
    let mut sent = Vec::new();
    for i in 0..REQUESTS {
        // Requests of different sizes, so that some take longer than others.
        let value = format!("request {i} {}", "z".repeat((i * 997) % 5000));
        let recs: Vec<_> = (0..(1 + i % 7))
            .map(|j| raw::record(j as i64, None, Some(value.as_bytes()), ts))
            .collect();
        let req = ProduceRequest::default()
            .with_acks(if i % 2 == 0 { -1 } else { 1 })
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.clone())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(raw::batch(&recs, Compression::None)))])]);
        sent.push((conn.send(ApiKey::Produce, v, &req), recs.len() as i64));
    }
    let mut next = 0i64;
    for (i, (corr, n)) in sent.iter().enumerate() {
        let resp: ProduceResponse = conn.receive(ApiKey::Produce, v, *corr);
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0, "request {i}");
        assert_eq!(
            p.base_offset, next,
            "request {i} of {REQUESTS} pipelined on one connection was appended out of order"
        );
        next += n;
    }
    broker.assert_no_error_logs();
}

/// Responses leave in request order, but one that is ready is not held back
/// by a later one that waits: an acks=all produce pipelined with a
/// long-polling fetch is answered while the fetch still waits.
#[test]
fn a_ready_response_is_not_held_behind_a_waiting_one() {
    use common::raw::{self, RawConn};
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        ApiKey, BrokerId, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::Compression;

    let broker = Broker::start();
    let topic = common::topic_name("ready-first");
    clients::create_topic(&broker.bootstrap(), &topic, 1, &[]);
    let name = TopicName(StrBytes::from_string(topic.clone()));
    let mut conn = RawConn::connect(&broker.bootstrap());
    let pv = conn.produce_version();
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name.clone())
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(raw::batch(
                    &[raw::record(0, None, Some(b"first"), 0)],
                    Compression::None,
                )))])]);
    // Offset 1 is not there yet: the fetch waits up to two minutes.
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(120_000)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name)
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(1)
                .with_current_leader_epoch(-1)
                .with_partition_max_bytes(1 << 20)])]);
    let (p_body, p_corr) = conn.encode_request(
        ApiKey::Produce,
        pv,
        ApiKey::Produce.request_header_version(pv),
        &produce,
        pv,
    );
    let (f_body, f_corr) = conn.encode_request(
        ApiKey::Fetch,
        11,
        ApiKey::Fetch.request_header_version(11),
        &fetch,
        11,
    );
    // One write: the fetch is read while the produce's fsync runs.
    let mut bytes = Vec::new();
    for body in [&p_body, &f_body] {
        bytes.extend_from_slice(&(body.len() as i32).to_be_bytes());
        bytes.extend_from_slice(body);
    }
    conn.write_raw(&bytes).expect("write produce and fetch");
    // The produce answer comes while the fetch waits (the read gives up
    // after 30 s, long before the fetch's wait ends).
    let produced: ProduceResponse = conn.receive(ApiKey::Produce, pv, p_corr);
    let p = &produced.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 0), "{produced:?}");
    assert!(
        !conn.has_data_ready(),
        "the fetch was answered with no data"
    );
    // A record at offset 1, from another connection, answers the fetch.
    assert_eq!(
        clients::produce(&broker.bootstrap(), &topic, &[TestRecord::value("second")]),
        vec![(0, 1)]
    );
    let fetched: FetchResponse = conn.receive(ApiKey::Fetch, 11, f_corr);
    let part = &fetched.responses[0].partitions[0];
    assert_eq!(part.error_code, 0, "{fetched:?}");
    assert!(part.records.as_ref().is_some_and(|r| !r.is_empty()));
}

/// Produces 2 MB to one partition and returns how many bytes the broker
/// started writing back early (`strata_log_writeback_started_bytes_total`).
fn writeback_started_after_2mb(every: &str) -> f64 {
    let broker = Broker::builder()
        .args(["--log-writeback-bytes", every])
        .start();
    let bs = broker.bootstrap();
    let topic = common::topic_name("writeback");
    clients::create_topic(&bs, &topic, 1, &[]);
    let records: Vec<TestRecord> = (0..200)
        .map(|i| TestRecord::keyed(format!("k{i}"), vec![b'w'; 10_000]).in_partition(0))
        .collect();
    let delivered = clients::produce(&bs, &topic, &records);
    assert_eq!(delivered.len(), records.len());
    let started = broker
        .metrics()
        .get("strata_log_writeback_started_bytes_total")
        .copied()
        .unwrap_or(0.0);
    broker.assert_no_error_logs();
    started
}

/// Appended data has its write-back started every --log-writeback-bytes
/// (so an acks=all sync does not wait behind a pile of dirty pages), and
/// never with 0.
#[test]
fn appends_start_their_write_back_every_configured_bytes() {
    let started = writeback_started_after_2mb("262144");
    assert!(
        started >= 1.5e6,
        "write-back started for only {started} of 2 MB appended"
    );
    assert_eq!(writeback_started_after_2mb("0"), 0.0);
}

/// acks=all appends are made durable by sync rounds, and each round is
/// counted with its time and its partitions (the figures the benchmark
/// uses to split an acks=all answer's latency).
#[test]
fn sync_rounds_are_timed_and_counted() {
    let broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = common::topic_name("rounds");
    clients::create_topic(&bs, &topic, 3, &[]);
    let m = broker.metrics();
    let before = |n: &str| m.get(n).copied().unwrap_or(0.0);
    let (rounds0, parts0) = (
        before("strata_sync_round_duration_seconds_count"),
        before("strata_sync_round_partitions_total"),
    );
    let records: Vec<TestRecord> = (0..30)
        .map(|i| TestRecord::value(format!("v{i}")).in_partition(i % 3))
        .collect();
    // librdkafka's default is acks=all.
    assert_eq!(clients::produce(&bs, &topic, &records).len(), 30);
    let m = broker.metrics();
    let after = |n: &str| m.get(n).copied().unwrap_or(0.0);
    let rounds = after("strata_sync_round_duration_seconds_count") - rounds0;
    let parts = after("strata_sync_round_partitions_total") - parts0;
    assert!(rounds >= 1.0, "no sync round counted: {m:?}");
    assert!(
        parts >= 3.0 && parts >= rounds,
        "{parts} partitions over {rounds} rounds for 3 partitions written"
    );
    assert!(after("strata_sync_round_duration_seconds_sum") > 0.0);
    broker.assert_no_error_logs();
}

/// Kafka's response limit: only the first partition with data may exceed
/// the fetch's `max_bytes`; librdkafka refuses a larger response ("Invalid
/// response size") and retries forever. Three partitions hold two ~910 KB
/// batches each, the first in the tier and the second on local disk; a fetch
/// of all three with `max_bytes` 1,000,000 returns the first partition's
/// batch and at most what fits after it, from the tier as from local disk.
/// The tier reads stay within the budget too: the partitions after the
/// first are not read from the object store only to be dropped.
#[test]
fn fetch_max_bytes_bounds_every_partition_after_the_first() {
    use common::raw::{self, RawConn};
    use kafka_protocol::records::Compression;

    let broker = Broker::builder()
        .args(["--tier-interval-ms", "100"])
        .start();
    let topic = common::topic_name("fetchmax");
    clients::create_topic(
        &broker.bootstrap(),
        &topic,
        3,
        &[("segment.bytes", "1048576"), ("local.retention.bytes", "1")],
    );
    let mut c = RawConn::connect(&broker.bootstrap());
    let v = c.produce_version();
    let mut rng = raw::XorShift::new(7);
    for p in 0..3 {
        for b in 0..2 {
            let values: Vec<Vec<u8>> = (0..100).map(|_| rng.bytes(9100)).collect();
            let records: Vec<_> = values
                .iter()
                .enumerate()
                .map(|(i, val)| raw::record(i as i64, None, Some(val), clients::now_ms()))
                .collect();
            let batch = raw::batch(&records, Compression::None);
            assert!(
                (900_000..1_000_000).contains(&batch.len()),
                "{}",
                batch.len()
            );
            assert_eq!(c.produce(v, &topic, p, batch, -1), (0, b * 100));
        }
    }
    // The first batch of each partition leaves the local disk for the tier.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (0..3).any(|p| {
        let dir = broker.data_dir().join(format!("{topic}-{p}"));
        std::fs::read_dir(dir)
            .expect("partition dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .count()
            > 1
    }) {
        assert!(std::time::Instant::now() < deadline, "no offload");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut fetch = |offset: i64| -> Vec<usize> {
        let at: Vec<(i32, i64)> = (0..3).map(|p| (p, offset)).collect();
        c.fetch(&topic, &at, 1_000_000)
            .into_iter()
            .map(|(code, records)| {
                assert_eq!(code, 0, "offset {offset}");
                records.len()
            })
            .collect()
    };
    let downloaded = || broker.metrics()["strata_tier_bytes_downloaded_total"];
    let before = downloaded();
    for (offset, place) in [(0, "tier"), (100, "local")] {
        let sizes = fetch(offset);
        if place == "tier" {
            let read = downloaded() - before;
            assert!(
                read < 1_800_000.0,
                "one partition's batch comes from the tier, not three: {read} bytes"
            );
        }
        assert!(sizes[0] > 900_000, "{place}: {sizes:?}");
        assert!(
            sizes.iter().sum::<usize>() <= 1_000_000,
            "{place}: only the first partition may exceed max_bytes: {sizes:?}"
        );
    }
}

/// An idle partition's records expire: with `segment.ms` and
/// `retention.ms` short and nothing produced after the first burst, the
/// retention pass rolls the active segment and deletes it (locally and in
/// the tier), so the earliest offset reaches the log end; the next record
/// goes on from there.
#[test]
fn an_idle_partition_expires_its_records() {
    let broker = Broker::builder()
        .args(["--log-retention-check-interval-ms", "200"])
        .start();
    let bootstrap = broker.bootstrap();
    let topic = common::topic_name("idle");
    clients::create_topic(
        &bootstrap,
        &topic,
        1,
        &[("retention.ms", "4000"), ("segment.ms", "2000")],
    );
    let records: Vec<TestRecord> = (0..3_000)
        .map(|i| TestRecord::value(format!("idle-{i}")))
        .collect();
    clients::produce(&bootstrap, &topic, &records);
    assert_eq!(clients::watermarks(&bootstrap, &topic, 0), (0, 3_000));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut low = 0;
    while low < 3_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the earliest offset is still {low} a minute after the records expired"
        );
        std::thread::sleep(Duration::from_millis(200));
        low = clients::watermarks(&bootstrap, &topic, 0).0;
    }
    assert_eq!(clients::watermarks(&bootstrap, &topic, 0), (3_000, 3_000));
    let at = clients::produce(&bootstrap, &topic, &[TestRecord::value("after")]);
    assert_eq!(at, vec![(0, 3_000)]);
    let got = clients::consume_ranges(
        &bootstrap,
        &topic,
        &[(0, 3_000, 3_001)],
        clients::OP_TIMEOUT,
    );
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].offset, 3_000);
    broker.assert_no_error_logs();
}
