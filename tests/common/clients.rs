//! rdkafka helpers: producers, assign-only consumers (no consumer groups),
//! an admin client, and a record type that compares byte for byte.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, Timestamp, TopicPartitionList};

/// Generous timeout for one client operation against a debug-build broker.
pub const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// Run a future to completion on a fresh current-thread runtime. Tests are
/// plain `#[test]` functions; rdkafka's futures are driven by librdkafka's
/// own threads, so any executor will do.
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build tokio runtime")
        .block_on(f)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

fn base_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("client.id", "strata-it");
    c
}

/// A producer with test-friendly defaults; `extra` overrides them.
pub fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut c = base_config(bootstrap);
    c.set("message.timeout.ms", "60000")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("create producer")
}

/// A client for Metadata requests only: no group.id, so it never asks
/// for a group coordinator (which would create `__consumer_offsets`).
pub fn metadata_client(bootstrap: &str) -> BaseConsumer {
    base_config(bootstrap)
        .create()
        .expect("create metadata client")
}

/// A consumer for `assign()` only: a group.id is set because librdkafka's
/// assign() needs one, but nothing is committed and no group is joined.
pub fn consumer(bootstrap: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut c = base_config(bootstrap);
    c.set(
        "group.id",
        format!("strata-it-{}", uuid::Uuid::new_v4().simple()),
    )
    .set("enable.auto.commit", "false")
    .set("enable.auto.offset.store", "false")
    .set("auto.offset.reset", "error")
    .set("check.crcs", "true")
    .set("fetch.wait.max.ms", "100");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("create consumer")
}

pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    base_config(bootstrap)
        .create()
        .expect("create admin client")
}

pub fn admin_opts() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(OP_TIMEOUT))
}

/// Create a topic with replication factor 1; panics on any error.
pub fn create_topic(bootstrap: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    create_replicated_topic(bootstrap, name, partitions, 1, configs);
}

/// Create a topic with `replicas` replicas per partition; panics on any
/// error.
pub fn create_replicated_topic(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    replicas: i32,
    configs: &[(&str, &str)],
) {
    let admin = admin(bootstrap);
    let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(replicas));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let res = block_on(admin.create_topics([&t], &admin_opts()))
        .unwrap_or_else(|e| panic!("CreateTopics {name}: {e}"));
    for r in res {
        if let Err((topic, code)) = r {
            panic!("CreateTopics {topic}: {code:?}");
        }
    }
    wait_for_topic(bootstrap, name, partitions as usize);
}

/// Create a topic and return the per-topic result code (for negative tests).
pub fn try_create_topic(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<(), RDKafkaErrorCode> {
    let admin = admin(bootstrap);
    let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let res = block_on(admin.create_topics([&t], &admin_opts()))
        .unwrap_or_else(|e| panic!("CreateTopics {name}: {e}"));
    match res.into_iter().next() {
        Some(Ok(_)) => Ok(()),
        Some(Err((_, code))) => Err(code),
        None => panic!("CreateTopics {name}: empty result"),
    }
}

/// AlterConfigs (non-incremental) on a topic; panics on error.
pub fn alter_topic_configs(bootstrap: &str, topic: &str, configs: &[(&str, &str)]) {
    let admin = admin(bootstrap);
    let mut a = AlterConfig::new(ResourceSpecifier::Topic(topic));
    for (k, v) in configs {
        a = a.set(k, v);
    }
    let res = block_on(admin.alter_configs([&a], &admin_opts()))
        .unwrap_or_else(|e| panic!("AlterConfigs {topic}: {e}"));
    for r in res {
        if let Err((spec, code)) = r {
            panic!("AlterConfigs {spec:?}: {code:?}");
        }
    }
}

/// DescribeConfigs of a topic: name -> (value, source).
pub fn describe_topic_configs(
    bootstrap: &str,
    topic: &str,
) -> BTreeMap<String, (Option<String>, ConfigSource)> {
    let admin = admin(bootstrap);
    let spec = ResourceSpecifier::Topic(topic);
    let res = block_on(admin.describe_configs([&spec], &admin_opts()))
        .unwrap_or_else(|e| panic!("DescribeConfigs {topic}: {e}"));
    let resource = res
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("DescribeConfigs {topic}: empty result"))
        .unwrap_or_else(|code| panic!("DescribeConfigs {topic}: {code:?}"));
    resource
        .entries
        .into_iter()
        .map(|e| (e.name, (e.value, e.source)))
        .collect()
}

/// Partition count of `topic` from a Metadata request, or None if the broker
/// reports the topic as unknown.
pub fn partition_count(bootstrap: &str, topic: &str) -> Option<usize> {
    let mut cfg = base_config(bootstrap);
    cfg.set("allow.auto.create.topics", "false");
    let c: BaseConsumer = cfg.create().expect("create metadata client");
    let md = c
        .fetch_metadata(Some(topic), OP_TIMEOUT)
        .unwrap_or_else(|e| panic!("Metadata {topic}: {e}"));
    let t = md.topics().iter().find(|t| t.name() == topic)?;
    if t.error().is_some() {
        return None;
    }
    Some(t.partitions().len())
}

/// Wait until Metadata shows `topic` with `partitions` partitions.
pub fn wait_for_topic(bootstrap: &str, topic: &str, partitions: usize) {
    let deadline = Instant::now() + OP_TIMEOUT;
    loop {
        let n = partition_count(bootstrap, topic);
        if n == Some(partitions) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "topic {topic} not visible with {partitions} partitions after {OP_TIMEOUT:?}; last saw {n:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (low, high) watermarks of one partition.
pub fn watermarks(bootstrap: &str, topic: &str, partition: i32) -> (i64, i64) {
    let c = metadata_client(bootstrap);
    c.fetch_watermarks(topic, partition, OP_TIMEOUT)
        .unwrap_or_else(|e| panic!("ListOffsets {topic}-{partition}: {e}"))
}

/// A record as a client sees it, compared byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// CreateTime in ms; None lets the client pick "now".
    pub timestamp: Option<i64>,
    /// Explicit partition; None uses the default partitioner.
    pub partition: Option<i32>,
}

impl TestRecord {
    pub fn value(v: impl Into<Vec<u8>>) -> TestRecord {
        TestRecord {
            key: None,
            value: Some(v.into()),
            headers: Vec::new(),
            timestamp: None,
            partition: None,
        }
    }

    pub fn keyed(k: impl Into<Vec<u8>>, v: impl Into<Vec<u8>>) -> TestRecord {
        TestRecord {
            key: Some(k.into()),
            ..TestRecord::value(v)
        }
    }

    pub fn in_partition(mut self, p: i32) -> TestRecord {
        self.partition = Some(p);
        self
    }

    pub fn at(mut self, ts: i64) -> TestRecord {
        self.timestamp = Some(ts);
        self
    }

    /// Does a consumed record carry exactly this content? (The partition is
    /// compared only if this record names one; the timestamp only if set.)
    pub fn matches(&self, got: &Consumed) -> Result<(), String> {
        let r = &got.record;
        if self.key != r.key {
            return Err(format!(
                "key: want {:?}, got {:?}",
                show(&self.key),
                show(&r.key)
            ));
        }
        if self.value != r.value {
            return Err(format!(
                "value: want {:?}, got {:?}",
                show(&self.value),
                show(&r.value)
            ));
        }
        if self.headers != r.headers {
            return Err(format!(
                "headers: want {:?}, got {:?}",
                self.headers, r.headers
            ));
        }
        if self.timestamp.is_some() && self.timestamp != r.timestamp {
            return Err(format!(
                "timestamp: want {:?}, got {:?} ({:?})",
                self.timestamp, r.timestamp, got.timestamp_kind
            ));
        }
        if let Some(p) = self.partition {
            if p != got.partition {
                return Err(format!("partition: want {p}, got {}", got.partition));
            }
        }
        Ok(())
    }
}

fn show(b: &Option<Vec<u8>>) -> Option<String> {
    b.as_ref().map(|b| {
        let s = String::from_utf8_lossy(b);
        if s.chars().count() > 80 {
            let head: String = s.chars().take(80).collect();
            format!("{head}… ({} bytes)", b.len())
        } else {
            s.into_owned()
        }
    })
}

/// A consumed record with its position.
#[derive(Clone, Debug)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub record: TestRecord,
    pub timestamp_kind: &'static str,
}

impl Consumed {
    pub fn from_message<M: Message>(m: &M) -> Consumed {
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        let (timestamp, timestamp_kind) = match m.timestamp() {
            Timestamp::NotAvailable => (None, "none"),
            Timestamp::CreateTime(t) => (Some(t), "create"),
            Timestamp::LogAppendTime(t) => (Some(t), "log-append"),
        };
        Consumed {
            partition: m.partition(),
            offset: m.offset(),
            record: TestRecord {
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                headers,
                timestamp,
                partition: Some(m.partition()),
            },
            timestamp_kind,
        }
    }
}

/// Enqueue one record; waits while librdkafka's queue is full.
pub fn enqueue(producer: &FutureProducer, topic: &str, r: &TestRecord) -> DeliveryFuture {
    let mut headers = None;
    if !r.headers.is_empty() {
        let mut h = OwnedHeaders::new_with_capacity(r.headers.len());
        for (k, v) in &r.headers {
            h = h.insert(Header {
                key: k.as_str(),
                value: v.as_deref(),
            });
        }
        headers = Some(h);
    }
    let deadline = Instant::now() + OP_TIMEOUT;
    loop {
        let mut rec = FutureRecord::<[u8], [u8]>::to(topic);
        if let Some(k) = &r.key {
            rec = rec.key(k.as_slice());
        }
        if let Some(v) = &r.value {
            rec = rec.payload(v.as_slice());
        }
        if let Some(h) = &headers {
            rec = rec.headers(h.clone());
        }
        if let Some(ts) = r.timestamp {
            rec = rec.timestamp(ts);
        }
        if let Some(p) = r.partition {
            rec = rec.partition(p);
        }
        match producer.send_result(rec) {
            Ok(f) => return f,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                assert!(
                    Instant::now() < deadline,
                    "producer queue full for {OP_TIMEOUT:?}"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => panic!(
                "enqueue to {topic}: {e} ({:?})",
                producer.client().fatal_error()
            ),
        }
    }
}

/// Wait for one delivery report; Ok((partition, offset)).
pub fn await_delivery(f: DeliveryFuture) -> Result<(i32, i64), KafkaError> {
    match block_on(f) {
        Ok(Ok(d)) => Ok((d.partition, d.offset)),
        Ok(Err((e, _))) => Err(e),
        Err(_) => Err(KafkaError::Canceled),
    }
}

/// Produce all records (pipelined) and return where each one landed, in
/// input order. Panics on the first failed delivery.
pub fn produce_all(
    producer: &FutureProducer,
    topic: &str,
    records: &[TestRecord],
) -> Vec<(i32, i64)> {
    let futures: Vec<DeliveryFuture> = records
        .iter()
        .map(|r| enqueue(producer, topic, r))
        .collect();
    futures
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            await_delivery(f)
                .unwrap_or_else(|e| panic!("delivery of record #{i} to {topic} failed: {e}"))
        })
        .collect()
}

/// Produce records with a fresh producer; flushes before returning.
pub fn produce(bootstrap: &str, topic: &str, records: &[TestRecord]) -> Vec<(i32, i64)> {
    let p = producer(bootstrap, &[]);
    let out = produce_all(&p, topic, records);
    p.flush(OP_TIMEOUT).expect("flush");
    out
}

/// Consume `[start, end)` of each listed partition with assign(); returns
/// records in arrival order. Panics on client errors, on records outside
/// the range, and after `timeout` with what was missing.
pub fn consume_ranges(
    bootstrap: &str,
    topic: &str,
    ranges: &[(i32, i64, i64)],
    timeout: Duration,
) -> Vec<Consumed> {
    let c = consumer(bootstrap, &[]);
    consume_ranges_with(&c, topic, ranges, timeout)
}

pub fn consume_ranges_with(
    c: &BaseConsumer,
    topic: &str,
    ranges: &[(i32, i64, i64)],
    timeout: Duration,
) -> Vec<Consumed> {
    let mut tpl = TopicPartitionList::new();
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut end: HashMap<i32, i64> = HashMap::new();
    for &(p, start, stop) in ranges {
        if stop > start {
            tpl.add_partition_offset(topic, p, Offset::Offset(start))
                .expect("add partition");
            next.insert(p, start);
            end.insert(p, stop);
        }
    }
    let mut out = Vec::new();
    if next.is_empty() {
        return out;
    }
    c.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut remaining = next.len();
    while remaining > 0 {
        if Instant::now() >= deadline {
            let missing: Vec<String> = next
                .iter()
                .filter(|(p, n)| **n < end[p])
                .map(|(p, n)| format!("{topic}-{p}: at {n} of {}", end[p]))
                .take(20)
                .collect();
            panic!(
                "consume timed out after {timeout:?}; {remaining} partition(s) incomplete: {}",
                missing.join(", ")
            );
        }
        match c.poll(Duration::from_millis(200)) {
            None => {}
            // A connection to a broker that restarted: librdkafka reports
            // it and reconnects.
            Some(Err(rdkafka::error::KafkaError::MessageConsumption(
                RDKafkaErrorCode::BrokerTransportFailure,
            ))) => {}
            Some(Err(e)) => panic!("consumer error on {topic}: {e}"),
            Some(Ok(m)) => {
                let p = m.partition();
                let o = m.offset();
                let Some(n) = next.get_mut(&p) else {
                    panic!("record from unassigned partition {topic}-{p}");
                };
                if *n >= end[&p] {
                    continue; // past the range we asked for
                }
                assert!(
                    o >= *n,
                    "{topic}-{p}: offset went backwards or repeated: expected >= {n}, got {o}"
                );
                *n = o + 1;
                out.push(Consumed::from_message(&m));
                if *n >= end[&p] {
                    remaining -= 1;
                }
            }
        }
    }
    out
}

/// Consume every partition of `topic` from offset 0 to its high watermark.
pub fn consume_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Vec<Consumed> {
    let ranges: Vec<(i32, i64, i64)> = (0..partitions)
        .map(|p| (p, 0, watermarks(bootstrap, topic, p).1))
        .collect();
    consume_ranges(bootstrap, topic, &ranges, timeout)
}

/// A fresh client creates a topic, produces to it and reads it back:
/// proof the broker still serves after a bad request.
pub fn smoke(bootstrap: &str) {
    let topic = super::topic_name("smoke");
    create_topic(bootstrap, &topic, 1, &[]);
    let records: Vec<TestRecord> = (0..10)
        .map(|i| TestRecord::keyed(format!("k{i}"), format!("smoke value {i}")).at(now_ms()))
        .collect();
    let at = produce(bootstrap, &topic, &records);
    for (i, (p, o)) in at.iter().enumerate() {
        assert_eq!(
            (*p, *o),
            (0, i as i64),
            "smoke record {i} landed at {p}/{o}"
        );
    }
    let got = consume_ranges(bootstrap, &topic, &[(0, 0, 10)], OP_TIMEOUT);
    assert_eq!(got.len(), 10, "smoke: consumed {} of 10", got.len());
    for (want, got) in records.iter().zip(&got) {
        want.matches(got)
            .unwrap_or_else(|e| panic!("smoke: record at offset {}: {e}", got.offset));
    }
}

/// Is this ConfigSource a per-topic override?
pub fn is_topic_override(s: &ConfigSource) -> bool {
    matches!(s, ConfigSource::DynamicTopic)
}
