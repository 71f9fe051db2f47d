//! `--raw`: the broker's own ceiling, with no client library in the way.
//!
//! Two drivers written on `kafka-protocol` do no per-record work:
//! - the produce driver sends the same pre-encoded record batches (1 KiB
//!   records, 64 to a batch, 16 partitions) in Produce requests encoded once
//!   per connection, several in flight on each connection, with acks=1 and
//!   with acks=all; only the answers' error codes are read;
//! - the fetch driver reads back what the acks=1 run wrote, over several
//!   connections, one Fetch per partition in flight (so several per
//!   connection); it reads only batch headers, for the next offset, and
//!   counts the bytes of whole batches.
//!
//! Each run reports MB/s, request latency and the driver's own CPU, beside
//! the loopback copy, the loopback sendfile and the fdatasync'd disk write
//! measured in the same run. The librdkafka consumer against Strata is set
//! beside the same consumer against librdkafka's in-process mock broker
//! (the client's own ceiling). Rounds alternate; each figure is the best
//! of its rounds.
//!
//! With `--peer NAME=HOST:PORT` every round also drives another
//! Kafka-compatible broker, started beforehand, with the same drivers and
//! the same consumer, right after Strata (the peer first in every other
//! round), and the report gives Strata's figures as ratios of the peer's.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    FetchRequest, MetadataRequest, ProduceRequest, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::broker::{self, Broker};
use crate::cli::{say, Args, Plan};
use crate::cpu::{Cpu, Mark};
use crate::kafka;
use crate::reference::{self, Transfer};
use crate::report::Ratio;
use crate::stats::Summary;
use crate::workloads::BrokerSplit;

const ROUNDS: usize = 3;
const PARTITIONS: i32 = 16;
const RECORD_BYTES: usize = 1024;
const BATCH_RECORDS: usize = 64;
const PRODUCE_CONNECTIONS: usize = 2;
/// Produce requests in flight on each connection.
const PRODUCE_DEPTH: usize = 4;
/// The most unanswered requests on a connection of a paced run: enough
/// that a slow answer delays the requests behind it (whose latency then
/// counts from when they were due) rather than holding back the schedule.
const PACED_DEPTH: usize = 256;
/// The paced acks=all run's rate, as a fraction of the round's acks=all
/// maximum.
const PACED_FRACTION: f64 = 0.5;
const FETCH_CONNECTIONS: usize = 4;
/// librdkafka's default max.partition.fetch.bytes.
const PARTITION_MAX_BYTES: i32 = 1 << 20;
const PRODUCE_VERSION: i16 = 9;
/// Fetch by topic ID (version 13 and later), as Kafka 3.x clients do.
const FETCH_VERSION: i16 = 16;
const METADATA_VERSION: i16 = 12;
/// Where the correlation id sits in a request frame: after the length,
/// the API key and the API version.
const CORRELATION_AT: usize = 8;
const MAX_FRAME: usize = 256 << 20;

/// One driver run.
#[derive(Debug, Clone)]
struct DriverRun {
    bytes: u64,
    requests: u64,
    secs: f64,
    latency: Summary,
    cpu: Cpu,
}

impl DriverRun {
    fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "bytes": self.bytes,
            "requests": self.requests,
            "seconds": self.secs,
            "mb_per_sec": self.mb_per_sec(),
            "request_latency": self.latency.json(),
            "driver_cpu_pct": self.cpu.client_pct,
            "broker_cpu_pct": self.cpu.broker_pct,
        })
    }
}

/// A request frame (length prefix included) with correlation id 0.
fn frame<R: Request + Encodable>(req: &R, version: i16) -> Result<BytesMut> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(0)
        .with_client_id(Some(StrBytes::from_static_str("strata-bench-raw")));
    let mut buf = BytesMut::with_capacity(1024);
    buf.put_i32(0);
    header.encode(&mut buf, R::header_version(version))?;
    req.encode(&mut buf, version)?;
    let len = i32::try_from(buf.len() - 4).context("request too large")?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

fn set_correlation(frame: &mut [u8], id: i32) {
    frame[CORRELATION_AT..CORRELATION_AT + 4].copy_from_slice(&id.to_be_bytes());
}

/// Reads one response frame (without its length prefix) into `buf`'s
/// storage, which is reused once the previous frame is dropped.
async fn read_frame<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut BytesMut) -> Result<Bytes> {
    while buf.len() < 4 {
        ensure!(
            rd.read_buf(buf).await? > 0,
            "the broker closed the connection"
        );
    }
    let len = usize::try_from(i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]))
        .ok()
        .filter(|l| (4..=MAX_FRAME).contains(l))
        .context("the broker sent an invalid frame length")?;
    buf.reserve(4 + len);
    while buf.len() < 4 + len {
        ensure!(
            rd.read_buf(buf).await? > 0,
            "the broker closed the connection"
        );
    }
    buf.advance(4);
    Ok(buf.split_to(len).freeze())
}

/// Decodes a response frame of `R` and checks its correlation id.
fn decode<R: Request>(mut frame: Bytes, version: i16, correlation: i32) -> Result<R::Response> {
    let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version))?;
    ensure!(
        header.correlation_id == correlation,
        "answer {} where {correlation} was expected",
        header.correlation_id
    );
    R::Response::decode(&mut frame, version)
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

/// One batch of `BATCH_RECORDS` values of `RECORD_BYTES`, cut from the
/// incompressible pool, without keys; the broker gives it its offsets.
fn record_batch(pool: &[u8], partition: i32) -> Result<Bytes> {
    let now = crate::workloads::unix_ms() as i64;
    let records: Vec<Record> = (0..BATCH_RECORDS)
        .map(|i| {
            let off = (i * 61 + partition as usize * 17) % (pool.len() - RECORD_BYTES);
            Record {
                transactional: false,
                control: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder starts a new batch wherever offset minus
                // sequence changes; the header's base sequence is set back
                // to -1 below.
                sequence: i as i32,
                timestamp: now,
                key: None,
                value: Some(Bytes::copy_from_slice(&pool[off..off + RECORD_BYTES])),
                headers: Default::default(),
                delete_horizon: false,
            }
        })
        .collect();
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )?;
    // No producer id, so no sequence; the CRC covers the attributes on.
    const CRC_AT: usize = 17;
    const ATTRIBUTES_AT: usize = 21;
    const BASE_SEQUENCE_AT: usize = 53;
    ensure!(
        whole_batches(&out) == (out.len(), Some(BATCH_RECORDS as i64)),
        "the records were not encoded as one batch"
    );
    out[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&(-1i32).to_be_bytes());
    let crc = crc32c::crc32c(&out[ATTRIBUTES_AT..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out.freeze())
}

/// The partitions connection `conn` of `conns` drives.
fn partitions_of(conn: usize, conns: usize) -> Vec<i32> {
    (0..PARTITIONS)
        .filter(|p| *p as usize % conns == conn)
        .collect()
}

async fn connect(addr: &str) -> Result<TcpStream> {
    let s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Sends `requests` copies of `frame` (ids 0, 1, ..); returns each
/// request's latency. Without `interval`, as fast as answers come with at
/// most `PRODUCE_DEPTH` unanswered. With it, request `id` is due at
/// `id * interval` from the start (at most `PACED_DEPTH` unanswered); a
/// request the broker held back counts from when it was due, so time spent
/// queued behind a slow answer is counted too.
async fn produce_conn(
    addr: String,
    mut frame: BytesMut,
    requests: u64,
    interval: Option<Duration>,
) -> Result<Vec<u32>> {
    let (mut rd, mut wr) = connect(&addr).await?.into_split();
    // The channel's capacity is the pipeline depth: a send time is queued
    // before each request and taken when its answer comes.
    let depth = if interval.is_some() {
        PACED_DEPTH
    } else {
        PRODUCE_DEPTH
    };
    let (sent_tx, mut sent_rx) = mpsc::channel::<Instant>(depth);
    let writer = async move {
        let start = Instant::now();
        // When the previous request was written. A request whose due time
        // passed while the one before it was still being written was held
        // back by the broker (a full socket or pipeline) and counts from
        // when it was due; one the timer woke late (tokio's timer ticks
        // every millisecond) counts from when it was sent.
        let mut written = start;
        for id in 0..requests {
            let sent = match interval {
                Some(every) => {
                    let due = start + every * u32::try_from(id).unwrap_or(u32::MAX);
                    tokio::time::sleep_until(due.into()).await;
                    if written > due {
                        due
                    } else {
                        Instant::now()
                    }
                }
                None => Instant::now(),
            };
            sent_tx.send(sent).await?;
            set_correlation(&mut frame, id as i32);
            wr.write_all(&frame).await?;
            written = Instant::now();
        }
        anyhow::Ok(())
    };
    let reader = async move {
        let mut latency = Vec::with_capacity(requests as usize);
        let mut buf = BytesMut::with_capacity(64 << 10);
        for id in 0..requests {
            let answer = read_frame(&mut rd, &mut buf).await?;
            let sent = sent_rx.recv().await.context("no send time")?;
            latency.push(micros(sent.elapsed()));
            let r = decode::<ProduceRequest>(answer, PRODUCE_VERSION, id as i32)?;
            for t in &r.responses {
                for p in &t.partition_responses {
                    ensure!(
                        p.error_code == 0,
                        "produce to partition {} failed with error code {}",
                        p.index,
                        p.error_code
                    );
                }
            }
        }
        anyhow::Ok(latency)
    };
    let ((), latency) = tokio::try_join!(writer, reader)?;
    Ok(latency)
}

/// Produces at least `bytes` of record batches to `topic` with `acks`
/// (1 or -1), spread evenly over the partitions and the connections; at
/// `rate` bytes per second if given, else as fast as the broker answers.
fn produce(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    topic: &str,
    acks: i16,
    bytes: u64,
    rate: Option<f64>,
    pid: Option<u32>,
) -> Result<DriverRun> {
    let pool = kafka::payload_pool(64 << 10);
    let batches = (0..PARTITIONS)
        .map(|p| record_batch(&pool, p))
        .collect::<Result<Vec<_>>>()?;
    let per_request = (PARTITIONS as usize / PRODUCE_CONNECTIONS) as u64 * batches[0].len() as u64;
    let requests = bytes.div_ceil(per_request).max(1);
    let mut frames = Vec::new();
    for conn in 0..PRODUCE_CONNECTIONS {
        let req = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(
                    partitions_of(conn, PRODUCE_CONNECTIONS)
                        .into_iter()
                        .map(|p| {
                            PartitionProduceData::default()
                                .with_index(p)
                                .with_records(Some(batches[p as usize].clone()))
                        })
                        .collect(),
                )]);
        frames.push(frame(&req, PRODUCE_VERSION)?);
    }
    // Each connection carries its share of the rate.
    let interval = rate.map(|r| {
        Duration::from_secs_f64(per_request as f64 * PRODUCE_CONNECTIONS as f64 / r.max(1.0))
    });
    let mark = Mark::now(pid);
    let start = Instant::now();
    let latencies = rt.block_on(async {
        let runs = frames
            .into_iter()
            .map(|f| tokio::spawn(produce_conn(addr.to_string(), f, requests, interval)));
        let mut all = Vec::new();
        for r in futures::future::join_all(runs).await {
            all.extend(r??);
        }
        anyhow::Ok(all)
    })?;
    let secs = start.elapsed().as_secs_f64();
    let cpu = mark.cpu();
    let mut latencies = latencies;
    Ok(DriverRun {
        bytes: requests * per_request * PRODUCE_CONNECTIONS as u64,
        requests: requests * PRODUCE_CONNECTIONS as u64,
        secs,
        latency: Summary::from_micros(&mut latencies),
        cpu,
    })
}

/// Walks the record batches of a fetched partition: the bytes of the whole
/// batches and the offset after the last of them (a batch cut by the
/// response's size limit is not counted).
fn whole_batches(records: &[u8]) -> (usize, Option<i64>) {
    const LAST_OFFSET_DELTA_AT: usize = 23;
    let (mut pos, mut next) = (0usize, None);
    while records.len() - pos >= LAST_OFFSET_DELTA_AT + 4 {
        let at = |i: usize, n: usize| &records[pos + i..pos + i + n];
        let base = i64::from_be_bytes(at(0, 8).try_into().unwrap_or_default());
        let len = i32::from_be_bytes(at(8, 4).try_into().unwrap_or_default());
        let Some(total) = usize::try_from(len).ok().map(|l| l + 12) else {
            break;
        };
        if total < LAST_OFFSET_DELTA_AT + 4 || records.len() - pos < total {
            break;
        }
        let delta = i32::from_be_bytes(at(LAST_OFFSET_DELTA_AT, 4).try_into().unwrap_or_default());
        next = Some(base + i64::from(delta) + 1);
        pos += total;
    }
    (pos, next)
}

/// The ID of `topic`, from a Metadata request.
async fn topic_id(addr: &str, topic: &str) -> Result<uuid::Uuid> {
    let mut conn = connect(addr).await?;
    let req = MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.to_string()))))]));
    conn.write_all(&frame(&req, METADATA_VERSION)?).await?;
    let mut buf = BytesMut::new();
    let answer = read_frame(&mut conn, &mut buf).await?;
    let r = decode::<MetadataRequest>(answer, METADATA_VERSION, 0)?;
    let t = r
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        .with_context(|| format!("metadata without topic {topic}"))?;
    ensure!(
        t.error_code == 0 && !t.topic_id.is_nil(),
        "metadata of {topic}: error code {}, topic ID {}",
        t.error_code,
        t.topic_id
    );
    Ok(t.topic_id)
}

/// A Fetch request for one partition of topic `id` from `offset`.
fn fetch_frame(id: uuid::Uuid, partition: i32, offset: i64) -> Result<BytesMut> {
    let req = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(64 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(id)
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(PARTITION_MAX_BYTES)])]);
    frame(&req, FETCH_VERSION)
}

/// Reads `parts` (partition, end offset) of `topic` from offset 0 to their
/// ends, one request per partition in flight; returns the bytes of whole
/// batches and each request's latency.
async fn fetch_conn(
    addr: String,
    topic: String,
    id: uuid::Uuid,
    parts: Vec<(i32, i64)>,
) -> Result<(u64, Vec<u32>)> {
    let (mut rd, mut wr) = connect(&addr).await?.into_split();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<(i32, i64)>();
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<Instant>();
    let mut left = 0;
    for (p, end) in &parts {
        if *end > 0 {
            ready_tx.send((*p, 0))?;
            left += 1;
        }
    }
    let writer = {
        async move {
            let mut correlation = 0i32;
            while let Some((p, offset)) = ready_rx.recv().await {
                let mut f = fetch_frame(id, p, offset)?;
                set_correlation(&mut f, correlation);
                correlation += 1;
                sent_tx.send(Instant::now())?;
                wr.write_all(&f).await?;
            }
            anyhow::Ok(())
        }
    };
    let reader = async move {
        let mut latency = Vec::new();
        let (mut bytes, mut id) = (0u64, 0i32);
        let mut buf = BytesMut::with_capacity(2 << 20);
        while left > 0 {
            let answer = read_frame(&mut rd, &mut buf).await?;
            let sent = sent_rx.recv().await.context("no send time")?;
            latency.push(micros(sent.elapsed()));
            let r = decode::<FetchRequest>(answer, FETCH_VERSION, id)?;
            id += 1;
            ensure!(
                r.error_code == 0,
                "fetch failed with error code {}",
                r.error_code
            );
            let part = r
                .responses
                .first()
                .and_then(|t| t.partitions.first())
                .context("a fetch answer without its partition")?;
            ensure!(
                part.error_code == 0,
                "fetch of {topic}/{} failed with error code {}",
                part.partition_index,
                part.error_code
            );
            let records = part.records.as_deref().unwrap_or_default();
            let (whole, next) = whole_batches(records);
            let end = parts
                .iter()
                .find(|(p, _)| *p == part.partition_index)
                .map(|(_, e)| *e)
                .context("an answer for a partition not asked for")?;
            let Some(next) = next else {
                bail!(
                    "fetch of {topic}/{} returned no whole batch ({} bytes)",
                    part.partition_index,
                    records.len()
                );
            };
            bytes += whole as u64;
            if next >= end {
                left -= 1;
            } else {
                ready_tx.send((part.partition_index, next))?;
            }
        }
        // Dropping the last sender ends the writer.
        drop(ready_tx);
        anyhow::Ok((bytes, latency))
    };
    let ((), read) = tokio::try_join!(writer, reader)?;
    Ok(read)
}

/// Reads all of `topic` (`ends`: each partition's high watermark) `passes`
/// times over `FETCH_CONNECTIONS` connections.
fn fetch(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    topic: &str,
    ends: &[i64],
    passes: u64,
    pid: Option<u32>,
) -> Result<DriverRun> {
    let mark = Mark::now(pid);
    let start = Instant::now();
    let (bytes, mut latencies) = rt.block_on(async {
        let id = topic_id(addr, topic).await?;
        let (mut bytes, mut all) = (0u64, Vec::new());
        for _ in 0..passes {
            let runs = (0..FETCH_CONNECTIONS).map(|c| {
                let parts = partitions_of(c, FETCH_CONNECTIONS)
                    .into_iter()
                    .map(|p| (p, ends[p as usize]))
                    .collect();
                tokio::spawn(fetch_conn(addr.to_string(), topic.to_string(), id, parts))
            });
            for r in futures::future::join_all(runs).await {
                let (b, l) = r??;
                bytes += b;
                all.extend(l);
            }
        }
        anyhow::Ok((bytes, all))
    })?;
    let secs = start.elapsed().as_secs_f64();
    let cpu = mark.cpu();
    Ok(DriverRun {
        bytes,
        requests: latencies.len() as u64,
        secs,
        latency: Summary::from_micros(&mut latencies),
        cpu,
    })
}

/// acks=all at a fraction of the round's maximum, beside the disk's own
/// group commit at the same byte rate.
struct PacedRun {
    /// Bytes per second asked for.
    rate: f64,
    run: DriverRun,
    /// The broker's histograms over the run (empty for a broker given with
    /// --bootstrap).
    split: BrokerSplit,
    /// A write per millisecond and fdatasync back to back, at `rate`.
    disk: Summary,
}

impl PacedRun {
    /// The driver's p99 over the disk's: both exact, and the driver's
    /// includes the loopback and the answer's way back.
    fn ratio(&self) -> f64 {
        self.run.latency.p99_ms / self.disk.p99_ms
    }

    /// The broker's Produce p99, the same with reading and queueing, the
    /// sync round p99 (bucket bounds) and the partitions a round.
    fn broker_cells(&self) -> [String; 4] {
        let p99 = |s: &Option<crate::stats::BucketSummary>| {
            s.as_ref()
                .map_or("n/a".into(), |s| format!("<= {:.2} ms", s.p99_ms))
        };
        [
            p99(&self.split.produce),
            p99(&self.split.produce_total),
            p99(&self.split.rounds),
            self.split
                .round_partitions
                .map_or("n/a".into(), |n| format!("{n:.1}")),
        ]
    }

    fn split_text(&self) -> String {
        let [produce, total, rounds, parts] = self.broker_cells();
        format!(
            "broker Produce p99 {produce}, with reading and queueing {total}, sync round p99 {rounds} ({parts} partitions a round)"
        )
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "rate_mb_per_sec": self.rate / 1e6,
            "driver": self.run.json(),
            "broker": self.split.json(),
            "disk_group_commit_latency": self.disk.json(),
            "p99_over_disk_p99": self.ratio(),
        })
    }
}

/// Produces acks=all to a new topic `topic` at `PACED_FRACTION` of `max`'s
/// rate for `plan.e2e_seconds`, between two scrapes of `broker`'s
/// histograms, then takes the disk's group commit at the same rate. The
/// filesystem is synced first, as the disk reference starts with nothing
/// dirty.
#[allow(clippy::too_many_arguments)]
fn paced_acks_all(
    rt: &tokio::runtime::Runtime,
    bs: &str,
    broker: Option<&Broker>,
    max: &DriverRun,
    plan: &Plan,
    disk_dir: &Path,
    pid: Option<u32>,
    topic: &str,
) -> Result<PacedRun> {
    let rate = max.mb_per_sec() * 1e6 * PACED_FRACTION;
    // The acks=1 run left up to --produce-bytes to write back, and every
    // sync round (a syncfs) would wait for it.
    crate::workloads::sync_fs(broker.map_or(disk_dir, Broker::data_dir));
    kafka::create_topic(bs, topic, PARTITIONS, &[])?;
    let bytes = (rate * plan.e2e_seconds) as u64;
    let (run, split) = BrokerSplit::around(broker, || {
        produce(rt, bs, topic, -1, bytes, Some(rate), pid)
    })?;
    kafka::delete_topic(bs, topic)?;
    let disk = reference::paced_sync_latency(disk_dir, rate, plan.e2e_seconds)?;
    Ok(PacedRun {
        rate,
        run,
        split,
        disk,
    })
}

/// What the drivers and the librdkafka consumer measure on one broker in
/// one round.
struct Drive {
    acks1: DriverRun,
    acks_all: DriverRun,
    fetch: DriverRun,
    consume: kafka::ConsumeResult,
}

/// The produce and fetch drivers and the librdkafka consumer against the
/// broker at `bs`, on topics named by `name`.
fn drive(
    a: &Args,
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    bs: &str,
    pid: Option<u32>,
    name: &dyn Fn(&str) -> String,
) -> Result<Drive> {
    let (t1, tall) = (name("acks1"), name("acksall"));
    kafka::create_topic(bs, &t1, PARTITIONS, &[])?;
    kafka::create_topic(bs, &tall, PARTITIONS, &[])?;
    let acks1 = produce(rt, bs, &t1, 1, plan.produce_bytes, None, pid)?;
    let acks_all = produce(rt, bs, &tall, -1, plan.produce_bytes, None, pid)?;
    let ends: Vec<i64> = kafka::watermarks(bs, &t1, PARTITIONS)?
        .into_iter()
        .map(|(_, high)| high)
        .collect();
    let passes = plan.consume_bytes.div_ceil(acks1.bytes).max(1);
    let fetch = fetch(rt, bs, &t1, &ends, passes, pid)?;
    ensure!(
        fetch.bytes >= acks1.bytes * passes,
        "the fetch driver read {} bytes of the {} written ({passes} passes)",
        fetch.bytes,
        acks1.bytes * passes
    );
    kafka::delete_topic(bs, &t1)?;
    kafka::delete_topic(bs, &tall)?;
    let ct = name("consume");
    kafka::create_topic(bs, &ct, a.consume_partitions, &[])?;
    crate::workloads::fill_replay_set(a, plan, bs, &ct, None)?;
    let consume = kafka::consume_all(bs, &ct, a.consume_partitions, pid)?;
    kafka::delete_topic(bs, &ct)?;
    Ok(Drive {
        acks1,
        acks_all,
        fetch,
        consume,
    })
}

struct Round {
    acks1: DriverRun,
    acks_all: DriverRun,
    paced: PacedRun,
    fetch: DriverRun,
    /// The same drivers against `--peer`.
    peer: Option<Drive>,
    loopback: Transfer,
    loopback_store: Transfer,
    sendfile: Transfer,
    disk_sync: Transfer,
    consume: kafka::ConsumeResult,
    mock_consume: kafka::ConsumeResult,
}

pub fn run(a: &Args, plan: &Plan, work: &Path) -> Result<()> {
    // A broker given with --bootstrap is driven as it is (its CPU is not
    // measured); otherwise the tool starts Strata.
    let mut started = None;
    let (bs, pid) = match &a.bootstrap {
        Some(bs) => (bs.clone(), None),
        None => {
            let bin = match &a.strata_bin {
                Some(p) => p.clone(),
                None => broker::find_strata_bin()?,
            };
            let mut args = Vec::new();
            if let Some(cc) = &a.tcp_congestion_control {
                args.extend(["--tcp-congestion-control".to_string(), cc.clone()]);
            }
            let b = Broker::start(&bin, &work.join("broker"), args, Vec::new())?;
            let out = (b.bootstrap.clone(), b.pid());
            started = Some(b);
            out
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let cc = a.tcp_congestion_control.as_deref();
    let disk_dir = work.join("disk");
    std::fs::create_dir_all(&disk_dir)?;
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        let name = |kind: &str| format!("raw{}-{round}-{kind}", std::process::id());
        let peer_name = |kind: &str| name(&format!("peer-{kind}"));
        let drive_peer = || {
            a.peer
                .as_ref()
                .map(|peer| {
                    drive(a, plan, &rt, &peer.addr, None, &peer_name)
                        .with_context(|| format!("drive the peer {}", peer.name))
                })
                .transpose()
        };
        // The peer first in every other round, so neither always runs on
        // a machine the other just warmed (or filled).
        let mut peer = if round % 2 == 1 { drive_peer()? } else { None };
        let Drive {
            acks1,
            acks_all,
            fetch: fetched,
            consume,
        } = drive(a, plan, &rt, &bs, pid, &name)?;
        if round % 2 == 0 {
            peer = drive_peer()?;
        }
        let paced = paced_acks_all(
            &rt,
            &bs,
            started.as_ref(),
            &acks_all,
            plan,
            &disk_dir,
            pid,
            &name("paced"),
        )?;
        let loopback = reference::loopback_copy(plan.produce_bytes, cc)?;
        let loopback_store = reference::loopback_to_file(&disk_dir, plan.produce_bytes, cc)?;
        let sendfile = reference::loopback_sendfile(&disk_dir, fetched.bytes, cc)?;
        let disk_sync = reference::disk_write(&disk_dir, plan.produce_bytes, true)?;

        // The librdkafka consumer against its own in-process mock broker,
        // over the same records as against Strata.
        let ct = name("consume");
        let mock_consume = {
            let mock = rdkafka::mocking::MockCluster::new(1)?;
            mock.create_topic(&ct, a.consume_partitions, 1)?;
            let mbs = mock.bootstrap_servers();
            crate::workloads::fill_replay_set(a, plan, &mbs, &ct, None)?;
            kafka::consume_all(&mbs, &ct, a.consume_partitions, None)?
        };
        say(format!(
            "round {}: acks=all at {:.1} MB/s: p99 {:.2} ms against the disk's group commit {:.2} ms; {}",
            round + 1,
            paced.rate / 1e6,
            paced.run.latency.p99_ms,
            paced.disk.p99_ms,
            paced.split_text(),
        ));
        say(format!(
            "round {}: produce acks=1 {:.1} MB/s, acks=all {:.1} MB/s, fetch {:.1} MB/s; loopback copy {:.1}, into a file {:.1}, sendfile {:.1}, disk fdatasync'd {:.1} MB/s; librdkafka consumer {:.1} MB/s (mock broker {:.1})",
            round + 1,
            acks1.mb_per_sec(),
            acks_all.mb_per_sec(),
            fetched.mb_per_sec(),
            loopback.mb_per_sec(),
            loopback_store.mb_per_sec(),
            sendfile.mb_per_sec(),
            disk_sync.mb_per_sec(),
            consume.mb_per_sec(),
            mock_consume.mb_per_sec(),
        ));
        if let (Some(p), Some(d)) = (&a.peer, &peer) {
            say(format!(
                "round {}: {}: produce acks=1 {:.1} MB/s, acks=all {:.1} MB/s, fetch {:.1} MB/s; librdkafka consumer {:.1} MB/s",
                round + 1,
                p.name,
                d.acks1.mb_per_sec(),
                d.acks_all.mb_per_sec(),
                d.fetch.mb_per_sec(),
                d.consume.mb_per_sec(),
            ));
        }
        rounds.push(Round {
            acks1,
            acks_all,
            paced,
            fetch: fetched,
            peer,
            loopback,
            loopback_store,
            sendfile,
            disk_sync,
            consume,
            mock_consume,
        });
    }
    let rss = match started {
        Some(mut b) => {
            let rss = b.peak_rss();
            b.stop()?;
            rss
        }
        None => None,
    };
    report(a, &rounds, rss)
}

impl Round {
    /// This round's figures of Strata, as a peer's are kept.
    fn drive(&self) -> Drive {
        Drive {
            acks1: self.acks1.clone(),
            acks_all: self.acks_all.clone(),
            fetch: self.fetch.clone(),
            consume: self.consume.clone(),
        }
    }
}

fn best<T>(rounds: &[Round], f: impl Fn(&Round) -> &T, mb: impl Fn(&T) -> f64) -> f64 {
    rounds.iter().map(|r| mb(f(r))).fold(0.0, f64::max)
}

/// A figure set beside the peer's: its name, unit, whether higher is
/// better, and its value in one round.
type PeerFigure = (&'static str, &'static str, bool, fn(&Drive) -> f64);

/// Strata's figures over the peer's, best round against best round (the
/// lowest p99 for latencies); prints them as a table.
fn peer_report(peer: &crate::cli::Peer, rounds: &[Round]) -> Vec<Ratio> {
    let ours: Vec<Drive> = rounds.iter().map(Round::drive).collect();
    let peers: Vec<&Drive> = rounds.iter().filter_map(|r| r.peer.as_ref()).collect();
    let figures: [PeerFigure; 6] = [
        ("raw produce acks=1", "MB/s", true, |d| d.acks1.mb_per_sec()),
        ("raw produce acks=all", "MB/s", true, |d| {
            d.acks_all.mb_per_sec()
        }),
        ("raw fetch", "MB/s", true, |d| d.fetch.mb_per_sec()),
        ("librdkafka consumer", "MB/s", true, |d| {
            d.consume.mb_per_sec()
        }),
        (
            "raw produce acks=1 p99 (lower is better)",
            "ms",
            false,
            |d| d.acks1.latency.p99_ms,
        ),
        (
            "raw produce acks=all p99 (lower is better)",
            "ms",
            false,
            |d| d.acks_all.latency.p99_ms,
        ),
    ];
    let pick = |higher: bool, values: &mut dyn Iterator<Item = f64>| {
        if higher {
            values.fold(0.0, f64::max)
        } else {
            values.fold(f64::MAX, f64::min)
        }
    };
    let ratios: Vec<Ratio> = figures
        .iter()
        .map(|&(name, unit, higher, f)| Ratio {
            name: name.into(),
            value: pick(higher, &mut ours.iter().map(f)),
            unit,
            reference_name: peer.name.clone(),
            reference: pick(higher, &mut peers.iter().map(|d| f(d))),
            target: None,
        })
        .collect();
    if peers.is_empty() {
        return Vec::new();
    }
    println!(
        "\n## Strata against {} ({}), the same drivers in the same rounds\n",
        peer.name, peer.addr
    );
    crate::tables::ratios_table(&ratios.iter().collect::<Vec<_>>());
    println!("\n| round | broker | produce acks=1 MB/s | produce acks=all MB/s | fetch MB/s | librdkafka consumer MB/s | acks=1 p99 ms | acks=all p99 ms |");
    println!("|---|---|---|---|---|---|---|---|");
    for (i, r) in rounds.iter().enumerate() {
        for (name, d) in [
            ("Strata", Some(&ours[i])),
            (peer.name.as_str(), r.peer.as_ref()),
        ] {
            let Some(d) = d else { continue };
            println!(
                "| {} | {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} |",
                i + 1,
                d.acks1.mb_per_sec(),
                d.acks_all.mb_per_sec(),
                d.fetch.mb_per_sec(),
                d.consume.mb_per_sec(),
                d.acks1.latency.p99_ms,
                d.acks_all.latency.p99_ms,
            );
        }
    }
    ratios
}

fn report(a: &Args, rounds: &[Round], rss: Option<u64>) -> Result<()> {
    let driver = |f: fn(&Round) -> &DriverRun| best(rounds, f, DriverRun::mb_per_sec);
    let transfer = |f: fn(&Round) -> &Transfer| best(rounds, f, Transfer::mb_per_sec);
    let consumed =
        |f: fn(&Round) -> &kafka::ConsumeResult| best(rounds, f, kafka::ConsumeResult::mb_per_sec);
    let ratio =
        |name: &str, value: f64, reference_name: &str, reference: f64, bound: Option<f64>| Ratio {
            name: name.into(),
            value,
            unit: "MB/s",
            reference_name: reference_name.into(),
            reference,
            target: bound.map(|b| (b, true)),
        };
    // The paced run's figure is the median round's (by its ratio), not the
    // best: both sides are tails.
    let mut paced: Vec<&PacedRun> = rounds.iter().map(|r| &r.paced).collect();
    paced.sort_by(|x, y| x.ratio().total_cmp(&y.ratio()));
    let median = paced[paced.len() / 2];
    let ratios = [
        ratio(
            "raw hot fetch",
            driver(|r| &r.fetch),
            "loopback sendfile",
            transfer(|r| &r.sendfile),
            Some(0.80),
        ),
        ratio(
            "raw produce acks=1",
            driver(|r| &r.acks1),
            "loopback copy",
            transfer(|r| &r.loopback),
            Some(0.50),
        ),
        ratio(
            "raw produce acks=1",
            driver(|r| &r.acks1),
            "loopback copy into a file (no sync)",
            transfer(|r| &r.loopback_store),
            None,
        ),
        ratio(
            "raw produce acks=all",
            driver(|r| &r.acks_all),
            "disk write, fdatasync every 1 MiB",
            transfer(|r| &r.disk_sync),
            Some(0.60),
        ),
        Ratio {
            name: format!(
                "raw produce acks=all p99 at {:.0} MB/s (half the max; median round)",
                median.rate / 1e6
            ),
            value: median.run.latency.p99_ms,
            unit: "ms",
            reference_name: "disk group commit p99, same rate".into(),
            reference: median.disk.p99_ms,
            target: Some((2.0, false)),
        },
        ratio(
            "librdkafka consumer",
            consumed(|r| &r.consume),
            crate::report::MOCK_CONSUMER,
            consumed(|r| &r.mock_consume),
            Some(0.95),
        ),
    ];
    println!(
        "\n## Raw protocol drivers: {PARTITIONS} partitions, {RECORD_BYTES} B records, {BATCH_RECORDS} to a batch; best of {ROUNDS} rounds\n"
    );
    crate::tables::ratios_table(&ratios.iter().collect::<Vec<_>>());
    println!("\n| round | driver | MB/s | requests | p50 ms | p99 ms | p99.9 ms | driver CPU % | broker CPU % |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (i, r) in rounds.iter().enumerate() {
        for (name, d) in [
            ("produce acks=1", &r.acks1),
            ("produce acks=all", &r.acks_all),
            ("fetch", &r.fetch),
        ] {
            let [broker_cpu, driver_cpu] = d.cpu.cells();
            println!(
                "| {} | {name} | {:.1} | {} | {:.2} | {:.2} | {:.2} | {driver_cpu} | {broker_cpu} |",
                i + 1,
                d.mb_per_sec(),
                d.requests,
                d.latency.p50_ms,
                d.latency.p99_ms,
                d.latency.p999_ms,
            );
        }
    }
    println!("\n| round | acks=all paced MB/s | driver p50 ms | driver p99 ms | driver p99.9 ms | disk group commit p50 ms | disk p99 ms | broker Produce p99 | with reading and queueing p99 | sync round p99 | partitions a round | p99 / disk p99 |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, r) in rounds.iter().enumerate() {
        let p = &r.paced;
        let [produce, total, round_p99, parts] = p.broker_cells();
        println!(
            "| {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {produce} | {total} | {round_p99} | {parts} | {:.2} |",
            i + 1,
            p.run.mb_per_sec(),
            p.run.latency.p50_ms,
            p.run.latency.p99_ms,
            p.run.latency.p999_ms,
            p.disk.p50_ms,
            p.disk.p99_ms,
            p.ratio(),
        );
    }
    println!(
        "\nProduce: {PRODUCE_CONNECTIONS} connections, {PRODUCE_DEPTH} requests in flight on each, {} partitions per request. Fetch: {FETCH_CONNECTIONS} connections, one request per partition in flight, {PARTITION_MAX_BYTES} B per partition.",
        PARTITIONS as usize / PRODUCE_CONNECTIONS
    );
    crate::report::print_peak_rss(rss);
    let peer_ratios = a
        .peer
        .as_ref()
        .map(|peer| peer_report(peer, rounds))
        .unwrap_or_default();
    if let Some(path) = &a.json {
        let rounds_json: Vec<_> = rounds
            .iter()
            .map(|r| {
                json!({
                    "produce_acks_1": r.acks1.json(),
                    "produce_acks_all": r.acks_all.json(),
                    "produce_acks_all_paced": r.paced.json(),
                    "fetch": r.fetch.json(),
                    "loopback_copy_mb_per_sec": r.loopback.mb_per_sec(),
                    "loopback_into_file_mb_per_sec": r.loopback_store.mb_per_sec(),
                    "loopback_sendfile_mb_per_sec": r.sendfile.mb_per_sec(),
                    "disk_write_fdatasync_mb_per_sec": r.disk_sync.mb_per_sec(),
                    "librdkafka_consumer_mb_per_sec": r.consume.mb_per_sec(),
                    "librdkafka_consumer_mock_mb_per_sec": r.mock_consume.mb_per_sec(),
                })
            })
            .collect();
        let report = json!({
            "ratios": ratios.iter().map(Ratio::json).collect::<Vec<_>>(),
            "peer": a.peer.as_ref().map(|p| json!({
                "name": p.name,
                "addr": p.addr,
                "ratios": peer_ratios.iter().map(Ratio::json).collect::<Vec<_>>(),
            })),
            "rounds": rounds_json,
            "broker_peak_rss_bytes": rss,
        });
        crate::report::write_mode_json(a, path, report)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_one_batch_of_every_record_without_sequence() {
        let pool = kafka::payload_pool(64 << 10);
        let batch = record_batch(&pool, 0).expect("batch");
        let h = strata::log::batch::BatchHeader::parse(&batch).expect("header");
        assert_eq!(h.total_len(), batch.len());
        assert_eq!(h.records_count, BATCH_RECORDS as i32);
        assert_eq!((h.producer_id, h.base_sequence), (-1, -1));
        strata::log::batch::verify_crc(&batch).expect("crc");
    }

    #[test]
    fn whole_batches_stop_at_a_cut_batch() {
        let pool = kafka::payload_pool(64 << 10);
        let one = record_batch(&pool, 3).expect("batch");
        let mut two = BytesMut::new();
        two.extend_from_slice(&one);
        // The second batch starts at offset 64.
        let mut second = one.to_vec();
        second[..8].copy_from_slice(&64i64.to_be_bytes());
        two.extend_from_slice(&second);
        assert_eq!(whole_batches(&two), (2 * one.len(), Some(128)));
        assert_eq!(
            whole_batches(&two[..two.len() - 1]),
            (one.len(), Some(BATCH_RECORDS as i64))
        );
        assert_eq!(whole_batches(&two[..10]), (0, None));
        assert_eq!(whole_batches(&[]), (0, None));
    }

    #[test]
    fn frames_carry_their_correlation_id() {
        let id = uuid::Uuid::from_u128(7);
        let mut f = fetch_frame(id, 2, 100).expect("frame");
        set_correlation(&mut f, 77);
        let mut body = f.freeze();
        let len = body.get_i32() as usize;
        assert_eq!(len, body.len());
        let header = RequestHeader::decode(&mut body, FetchRequest::header_version(FETCH_VERSION))
            .expect("header");
        assert_eq!(header.correlation_id, 77);
        let req = FetchRequest::decode(&mut body, FETCH_VERSION).expect("request");
        assert_eq!(req.topics[0].topic_id, id);
        assert_eq!(req.topics[0].partitions[0].fetch_offset, 100);
    }

    #[tokio::test]
    async fn frames_are_read_whole_across_reads() {
        let mut wire = Vec::new();
        for body in [&b"abcdef"[..], &b"0123456789"[..]] {
            wire.extend_from_slice(&(body.len() as i32).to_be_bytes());
            wire.extend_from_slice(body);
        }
        // A reader that hands out 3 bytes at a time.
        let (mut a, mut b) = tokio::io::duplex(3);
        tokio::spawn(async move { a.write_all(&wire).await });
        let mut buf = BytesMut::new();
        assert_eq!(&read_frame(&mut b, &mut buf).await.unwrap()[..], b"abcdef");
        assert_eq!(
            &read_frame(&mut b, &mut buf).await.unwrap()[..],
            b"0123456789"
        );
        assert!(read_frame(&mut b, &mut buf).await.is_err());
    }
}
