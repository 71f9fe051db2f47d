//! The broker-facing workloads, all through librdkafka (the rdkafka crate):
//! topic admin, producing with delivery-report latency, consuming a whole
//! topic, and produce -> consume latency at a fixed rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::admin::TopicReplication;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use crate::cpu::{Cpu, Mark};
use crate::stats::Summary;

const OP_TIMEOUT: Duration = Duration::from_secs(60);

/// librdkafka properties from the command line, applied last.
static OVERRIDES: OnceLock<(Props, Props)> = OnceLock::new();

type Props = Vec<(String, String)>;

/// Sets the producer and consumer property overrides (once, at start).
pub fn set_overrides(producer: Props, consumer: Props) {
    let _ = OVERRIDES.set((producer, consumer));
}

fn apply(c: &mut ClientConfig, producer: bool) {
    if let Some((p, cons)) = OVERRIDES.get() {
        for (k, v) in if producer { p } else { cons } {
            c.set(k, v);
        }
    }
}

/// Client properties by bootstrap address: the security settings of a
/// listener (`--tls`), applied to every client of that address.
static SECURITY: Mutex<Vec<(String, Props)>> = Mutex::new(Vec::new());

/// Every client of `bootstrap` gets `props` (security.protocol, CA, ...).
pub fn secure(bootstrap: &str, props: Props) {
    let mut s = SECURITY.lock().unwrap_or_else(|e| e.into_inner());
    s.retain(|(b, _)| b != bootstrap);
    s.push((bootstrap.to_string(), props));
}

pub fn base_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("client.id", "strata-bench");
    let s = SECURITY.lock().unwrap_or_else(|e| e.into_inner());
    for (k, v) in s
        .iter()
        .filter(|(b, _)| b == bootstrap)
        .flat_map(|(_, p)| p)
    {
        c.set(k, v);
    }
    c
}

fn admin(bootstrap: &str) -> Result<AdminClient<DefaultClientContext>> {
    Ok(base_config(bootstrap).create()?)
}

fn admin_opts() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(OP_TIMEOUT))
}

/// CreateTopics with replication factor 1, then waits until the metadata
/// shows every partition with a leader.
pub fn create_topic(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    configs: &[(&str, String)],
) -> Result<()> {
    create_replicated_topic(bootstrap, name, partitions, 1, configs)
}

/// Creates a topic with `replicas` replicas per partition and waits until
/// every partition has a leader and a full ISR.
pub fn create_replicated_topic(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    replicas: i32,
    configs: &[(&str, String)],
) -> Result<()> {
    let a = admin(bootstrap)?;
    let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(replicas));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let res = futures::executor::block_on(a.create_topics([&t], &admin_opts()))
        .with_context(|| format!("CreateTopics {name}"))?;
    for r in res {
        if let Err((topic, code)) = r {
            bail!("CreateTopics {topic}: {code:?}");
        }
    }
    let c: BaseConsumer = base_config(bootstrap).create()?;
    let deadline = Instant::now() + OP_TIMEOUT;
    loop {
        if let Ok(md) = c.fetch_metadata(Some(name), Duration::from_secs(5)) {
            if let Some(t) = md.topics().first() {
                if t.error().is_none()
                    && t.partitions().len() == partitions as usize
                    && t.partitions()
                        .iter()
                        .all(|p| p.leader() >= 0 && p.isr().len() == replicas as usize)
                {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            bail!("topic {name} has no leaders after {OP_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// DeleteTopics (frees the disk a sustained run used).
pub fn delete_topic(bootstrap: &str, name: &str) -> Result<()> {
    let a = admin(bootstrap)?;
    let res = futures::executor::block_on(a.delete_topics(&[name], &admin_opts()))
        .with_context(|| format!("DeleteTopics {name}"))?;
    for r in res {
        if let Err((_, code)) = r {
            bail!("DeleteTopics {name}: {code:?}");
        }
    }
    Ok(())
}

/// AlterConfigs (whole set: configs not named go back to their defaults).
pub fn alter_topic(bootstrap: &str, name: &str, configs: &[(&str, String)]) -> Result<()> {
    let a = admin(bootstrap)?;
    let mut ac = AlterConfig::new(ResourceSpecifier::Topic(name));
    for (k, v) in configs {
        ac = ac.set(k, v);
    }
    let res = futures::executor::block_on(a.alter_configs([&ac], &admin_opts()))
        .with_context(|| format!("AlterConfigs {name}"))?;
    for r in res {
        if let Err((_, code)) = r {
            bail!("AlterConfigs {name}: {code:?}");
        }
    }
    Ok(())
}

/// (low, high) watermarks of every partition.
pub fn watermarks(bootstrap: &str, topic: &str, partitions: i32) -> Result<Vec<(i64, i64)>> {
    let c: BaseConsumer = base_config(bootstrap).create()?;
    (0..partitions)
        .map(|p| {
            c.fetch_watermarks(topic, p, OP_TIMEOUT)
                .with_context(|| format!("watermarks of {topic}-{p}"))
        })
        .collect()
}

/// Records delivery-report latency: the opaque of each record is its send
/// time in nanoseconds since `epoch`.
struct LatencyContext {
    epoch: Instant,
    windows: Mutex<ClientSplit>,
    lat_us: Mutex<Vec<u32>>,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for LatencyContext {
    /// librdkafka's statistics, every `STATS_INTERVAL_MS`: keeps the
    /// windows of the brokers that served requests.
    fn stats(&self, st: rdkafka::Statistics) {
        let mut w = self.windows.lock().expect("stats lock");
        for b in st.brokers.values().filter(|b| b.nodeid >= 0) {
            if let (Some(q), Some(r)) = (&b.int_latency, &b.rtt) {
                w.queue.add(q);
                w.rtt.add(r);
            }
        }
    }
}

/// How often librdkafka reports its statistics to a measured producer.
const STATS_INTERVAL_MS: &str = "1000";

/// One of librdkafka's latency figures over a run, from its per-interval
/// windows (HDR histograms, microseconds): the count-weighted means of the
/// windows' p50 and p99, and the largest value seen.
#[derive(Debug, Clone, Default)]
pub struct Windows {
    count: i64,
    p50_sum: f64,
    p99_sum: f64,
    max_us: i64,
}

impl Windows {
    fn add(&mut self, w: &rdkafka::statistics::Window) {
        if w.cnt <= 0 {
            return;
        }
        self.count += w.cnt;
        self.p50_sum += w.p50 as f64 * w.cnt as f64;
        self.p99_sum += w.p99 as f64 * w.cnt as f64;
        self.max_us = self.max_us.max(w.max);
    }

    pub fn p50_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.p50_sum / self.count as f64 / 1000.0)
    }

    pub fn p99_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.p99_sum / self.count as f64 / 1000.0)
    }

    pub fn max_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.max_us as f64 / 1000.0)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "samples": self.count,
            "p50_ms_window_mean": self.p50_ms(),
            "p99_ms_window_mean": self.p99_ms(),
            "max_ms": self.max_ms(),
        })
    }
}

/// Where librdkafka says a producer's latency went.
#[derive(Debug, Clone, Default)]
pub struct ClientSplit {
    /// From produce() to the record's batch going into a request
    /// (`int_latency`: linger and batching).
    pub queue: Windows,
    /// From a request written to its response read (`rtt`): the broker,
    /// the network stack, and the client's own delay in reading it.
    pub rtt: Windows,
}

impl ProducerContext for LatencyContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        let now = self.epoch.elapsed().as_nanos() as u64;
        match result {
            Ok(_) => {
                let us = now.saturating_sub(sent_ns as u64) / 1000;
                self.lat_us
                    .lock()
                    .expect("latency lock")
                    .push(us.min(u32::MAX as u64) as u32);
            }
            Err((e, _)) => {
                if self.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    *self.first_error.lock().expect("error lock") = Some(e.to_string());
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProduceSpec {
    pub topic: String,
    pub partitions: i32,
    pub record_bytes: usize,
    pub records: u64,
    pub acks: String,
    pub linger_ms: u32,
    /// Records per second; `None` produces as fast as the client can.
    pub rate: Option<f64>,
    /// Keyed records, over this many keys (record `i` has key `i % keys`);
    /// `None` leaves records without a key.
    pub keys: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct ProduceResult {
    pub records: u64,
    pub bytes: u64,
    pub secs: f64,
    pub latency: Summary,
    pub cpu: Cpu,
    pub client: ClientSplit,
}

impl ProduceResult {
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.secs
    }
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
}

/// Incompressible-looking bytes (xorshift), from which record values are cut.
pub fn payload_pool(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// How far ahead of a paced schedule the producer may send.
const PACE_AHEAD: Duration = Duration::from_millis(1);

/// Produces `spec.records` values of `spec.record_bytes` (no key),
/// round-robin over the partitions, after `warm_up` records (one per
/// partition) that are not measured. When `stamp_epoch` is set, the first 8
/// bytes of each value carry the send time (ns since that instant) for the
/// end-to-end measurement.
pub fn produce(
    bootstrap: &str,
    spec: &ProduceSpec,
    epoch: Instant,
    stamp: bool,
    warm_up: bool,
    broker_pid: Option<u32>,
) -> Result<ProduceResult> {
    let ctx = LatencyContext {
        epoch,
        windows: Mutex::new(ClientSplit::default()),
        lat_us: Mutex::new(Vec::with_capacity(spec.records as usize)),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
    };
    let mut config = base_config(bootstrap);
    config
        .set("acks", &spec.acks)
        .set("linger.ms", spec.linger_ms.to_string())
        .set("compression.type", "none")
        .set("message.timeout.ms", "120000")
        .set("queue.buffering.max.messages", "100000")
        .set("queue.buffering.max.kbytes", "262144")
        .set("batch.size", "1000000")
        .set("statistics.interval.ms", STATS_INTERVAL_MS);
    apply(&mut config, true);
    let producer: ThreadedProducer<LatencyContext> = config.create_with_context(ctx)?;
    let pool = payload_pool(spec.record_bytes + 4096);
    let mut value = vec![0u8; spec.record_bytes];
    // Warm-up, not measured: one record per partition, so the connection
    // and the topic's metadata are in place before the clock starts.
    if warm_up {
        for p in 0..spec.partitions {
            let mut r = BaseRecord::<[u8], [u8], usize>::with_opaque_to(&spec.topic, 0)
                .payload(&pool[..spec.record_bytes])
                .partition(p);
            if spec.keys.is_some() {
                r = r.key(b"warm-up");
            }
            producer
                .send(r)
                .map_err(|(e, _)| anyhow!("produce to {}: {e}", spec.topic))?;
        }
        // librdkafka's own cost grows with the partitions it produces to.
        let limit = OP_TIMEOUT.max(Duration::from_millis(
            5 * u64::try_from(spec.partitions).unwrap_or(0),
        ));
        producer.flush(limit).context("flush warm-up records")?;
        producer.context().lat_us.lock().expect("lock").clear();
        *producer.context().windows.lock().expect("lock") = ClientSplit::default();
    }
    let mark = Mark::now(broker_pid);
    let start = Instant::now();
    for i in 0..spec.records {
        if let Some(rate) = spec.rate {
            // Pace: at most PACE_AHEAD ahead of the schedule, like Kafka's
            // own perf tool (which sleeps once 2 ms ahead). No spinning (it
            // would take a core from the broker), and no sleep per record:
            // at 100k records/s that alone is a fifth of a core, taken from
            // the client whose latency is measured.
            let due = Duration::from_secs_f64(i as f64 / rate);
            let el = start.elapsed();
            if due > el + PACE_AHEAD {
                std::thread::sleep(due - el);
            }
        }
        // Values are slices of the pool (librdkafka copies them anyway);
        // only stamped values are built in `value`.
        let off = (i as usize * 61) % 4096;
        let sent = epoch.elapsed().as_nanos() as u64;
        let payload = if stamp && value.len() >= 8 {
            value.copy_from_slice(&pool[off..off + spec.record_bytes]);
            value[..8].copy_from_slice(&sent.to_le_bytes());
            &value[..]
        } else {
            &pool[off..off + spec.record_bytes]
        };
        let partition = (i % spec.partitions as u64) as i32;
        let key = spec.keys.map(|k| format!("key-{:010}", i % k.max(1)));
        let mut record =
            BaseRecord::<[u8], [u8], usize>::with_opaque_to(&spec.topic, sent as usize)
                .payload(payload)
                .partition(partition);
        if let Some(key) = &key {
            record = record.key(key.as_bytes());
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_micros(100));
                }
                Err((e, _)) => return Err(anyhow!("produce to {}: {e}", spec.topic)),
            }
        }
    }
    producer
        .flush(Duration::from_secs(300))
        .context("flush producer")?;
    let secs = start.elapsed().as_secs_f64();
    let cpu = mark.cpu();
    let ctx = producer.context();
    let errors = ctx.errors.load(Ordering::Relaxed);
    if errors > 0 {
        bail!(
            "{errors} records of {} failed: {}",
            spec.topic,
            ctx.first_error
                .lock()
                .expect("lock")
                .clone()
                .unwrap_or_default()
        );
    }
    let mut lat = std::mem::take(&mut *ctx.lat_us.lock().expect("lock"));
    if lat.len() as u64 != spec.records {
        bail!(
            "{} delivery reports for {} records",
            lat.len(),
            spec.records
        );
    }
    let client = std::mem::take(&mut *ctx.windows.lock().expect("lock"));
    Ok(ProduceResult {
        records: spec.records,
        bytes: spec.records * spec.record_bytes as u64,
        secs,
        latency: Summary::from_micros(&mut lat),
        cpu,
        client,
    })
}

fn consumer(bootstrap: &str, low_latency: bool) -> Result<BaseConsumer> {
    let mut c = base_config(bootstrap);
    c.set("group.id", format!("strata-bench-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.max.bytes", "67108864")
        .set("max.partition.fetch.bytes", "4194304")
        .set("queued.max.messages.kbytes", "262144")
        // librdkafka stops prefetching at queued.min.messages (100k) queued
        // records and then waits fetch.queue.backoff.ms (default 1 s)
        // before it looks again: with 100 B records that idles the consumer
        // for most of the run. 10 ms keeps the queue bound without the idling.
        .set("fetch.queue.backoff.ms", "10");
    if low_latency {
        c.set("fetch.wait.max.ms", "100")
            .set("fetch.min.bytes", "1");
    }
    apply(&mut c, false);
    Ok(c.create()?)
}

#[derive(Debug, Clone)]
pub struct ConsumeResult {
    pub records: u64,
    pub bytes: u64,
    pub secs: f64,
    pub cpu: Cpu,
}

impl ConsumeResult {
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.secs
    }
}

/// Reads every partition of `topic` from its low to its high watermark with
/// one consumer; the time runs from assign() to the last record.
pub fn consume_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    broker_pid: Option<u32>,
) -> Result<ConsumeResult> {
    let marks = watermarks(bootstrap, topic, partitions)?;
    let expected: i64 = marks.iter().map(|(l, h)| h - l).sum();
    let c = consumer(bootstrap, false)?;
    let mut tpl = TopicPartitionList::new();
    for (p, (low, _)) in marks.iter().enumerate() {
        tpl.add_partition_offset(topic, p as i32, Offset::Offset(*low))?;
    }
    let mark = Mark::now(broker_pid);
    let start = Instant::now();
    c.assign(&tpl)?;
    let (mut records, mut bytes) = (0u64, 0u64);
    // Progress is stamped when a poll comes back empty, not per message:
    // a clock read per message was 4.5% of the machine's samples in a
    // profile of a 1 KiB replay.
    let (mut last_progress, mut seen) = (Instant::now(), 0u64);
    while (records as i64) < expected {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                records += 1;
                bytes += m.payload_len() as u64;
            }
            Some(Err(e)) => bail!("consume {topic}: {e}"),
            None => {
                if records != seen {
                    (last_progress, seen) = (Instant::now(), records);
                } else if last_progress.elapsed() > Duration::from_secs(120) {
                    bail!("consume {topic} stalled at {records} of {expected} records");
                }
            }
        }
    }
    Ok(ConsumeResult {
        records,
        bytes,
        secs: start.elapsed().as_secs_f64(),
        cpu: mark.cpu(),
    })
}

#[derive(Debug, Clone)]
pub struct E2eResult {
    pub produce: ProduceResult,
    pub target_rate: f64,
    pub received: u64,
    pub latency: Summary,
}

/// Produces at `spec.rate` while one consumer tails the topic; the latency
/// of each record is its arrival at the consumer minus its send time.
pub fn end_to_end(
    bootstrap: &str,
    spec: &ProduceSpec,
    broker_pid: Option<u32>,
) -> Result<E2eResult> {
    let epoch = Instant::now();
    let marks = watermarks(bootstrap, &spec.topic, spec.partitions)?;
    let c = consumer(bootstrap, true)?;
    let mut tpl = TopicPartitionList::new();
    for (p, (_, high)) in marks.iter().enumerate() {
        tpl.add_partition_offset(&spec.topic, p as i32, Offset::Offset(*high))?;
    }
    c.assign(&tpl)?;
    // Let the consumer connect and start its long polls.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs(1) {
        if let Some(Err(e)) = c.poll(Duration::from_millis(50)) {
            bail!("consume {}: {e}", spec.topic);
        }
    }
    let total = spec.records;
    let received = Arc::new(AtomicU64::new(0));
    let rx = Arc::clone(&received);
    let topic = spec.topic.clone();
    let reader = std::thread::spawn(move || -> Result<Vec<u32>> {
        let mut lat = Vec::with_capacity(total as usize);
        let mut last = Instant::now();
        while (lat.len() as u64) < total {
            match c.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let now = epoch.elapsed().as_nanos() as u64;
                    let p = m.payload().unwrap_or_default();
                    if p.len() >= 8 {
                        let sent = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
                        lat.push((now.saturating_sub(sent) / 1000).min(u32::MAX as u64) as u32);
                    }
                    rx.fetch_add(1, Ordering::Relaxed);
                    last = Instant::now();
                }
                Some(Err(e)) => bail!("consume {topic}: {e}"),
                None => {
                    if last.elapsed() > Duration::from_secs(30) {
                        break;
                    }
                }
            }
        }
        Ok(lat)
    });
    let produced = produce(bootstrap, spec, epoch, true, true, broker_pid)?;
    let mut lat = reader
        .join()
        .map_err(|_| anyhow!("end-to-end reader panicked"))??;
    Ok(E2eResult {
        target_rate: spec.rate.unwrap_or(0.0),
        produce: produced,
        received: received.load(Ordering::Relaxed),
        latency: Summary::from_micros(&mut lat),
    })
}
