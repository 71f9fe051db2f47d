//! Partition data: Produce, Fetch and ListOffsets, each sent to the
//! partition's leader.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{FetchRequest, ListOffsetsRequest, ProduceRequest};
use uuid::Uuid;

use super::error::{ClientError, KafkaCode};
use super::records::{self, BatchCompression, ConsumedRecord, ProduceRecord};
use super::{now_ms, topic_name, Client, ROUTE_ATTEMPTS, ROUTE_BACKOFF};

/// Produce acknowledgement level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// acks=0: the broker sends no response.
    None,
    /// acks=1: the leader has appended.
    Leader,
    /// acks=all: durable on every in-sync replica.
    All,
}

impl Acks {
    fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// What the broker said about a produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceAck {
    /// Offset of the first record; `None` with acks=0.
    pub base_offset: Option<i64>,
    /// Broker time when the topic uses LogAppendTime, else `None`.
    pub log_append_time: Option<i64>,
}

/// Where to look an offset up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The log end offset (high watermark).
    Latest,
    /// The first offset whose timestamp is >= this (ms since the epoch).
    Timestamp(i64),
    /// The offset of the record with the highest timestamp.
    MaxTimestamp,
    /// The first offset on the broker's local disk (KIP-405).
    EarliestLocal,
    /// The last offset in the tier, -1 when nothing is tiered (KIP-1005).
    LatestTiered,
}

impl OffsetSpec {
    /// Its ListOffsets timestamp.
    pub fn wire(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::MaxTimestamp => -3,
            OffsetSpec::EarliestLocal => -4,
            OffsetSpec::LatestTiered => -5,
            OffsetSpec::Timestamp(ts) => ts,
        }
    }
}

/// A ListOffsets answer. For a timestamp later than every record, Kafka
/// answers offset -1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    pub offset: i64,
    pub timestamp: i64,
    pub leader_epoch: i32,
}

/// Fetch settings.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Byte limit of the whole response (at least one batch is returned).
    pub max_bytes: i32,
    /// Byte limit per partition.
    pub partition_max_bytes: i32,
    /// How long the broker may wait for `min_bytes`.
    pub max_wait: Duration,
    pub min_bytes: i32,
    /// Only records below the last stable offset.
    pub read_committed: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            max_bytes: 52_428_800,
            partition_max_bytes: 1_048_576,
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            read_committed: false,
        }
    }
}

/// Per-partition outcomes of [`Client::list_offsets`], in the order asked.
pub type PartitionOffsets = Vec<((String, i32), Result<ListedOffset, ClientError>)>;

/// One partition to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequestPartition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// What a fetch returned for one partition.
#[derive(Debug, Clone)]
pub struct FetchedPartition {
    pub topic: String,
    pub partition: i32,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// Data records at or after the fetch offset.
    pub records: Vec<ConsumedRecord>,
    /// Where the next fetch should start.
    pub next_offset: i64,
    /// The complete batches as the broker sent them (for replication).
    pub raw: Bytes,
}

impl Client {
    /// Produce `records` to one partition as a single uncompressed batch.
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: &[ProduceRecord],
        acks: Acks,
    ) -> Result<ProduceAck, ClientError> {
        self.produce_with(topic, partition, records, acks, BatchCompression::None)
            .await
    }

    /// Produce with a compression codec. Not retried: without idempotence a
    /// retry could duplicate records; only stale-leader errors, which mean
    /// nothing was written, are retried.
    pub async fn produce_with(
        &self,
        topic: &str,
        partition: i32,
        records: &[ProduceRecord],
        acks: Acks,
        compression: BatchCompression,
    ) -> Result<ProduceAck, ClientError> {
        let batch = records::encode_batch(records, compression, now_ms())?;
        let resource = || format!("topic={topic}, partition={partition}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (leader, topic_id) = self.route(topic, partition).await?;
            let conn = self.node_conn(leader).await?;
            let version = conn.version::<ProduceRequest>()?;
            let timeout_ms = duration_ms(self.options.request_timeout);
            let req = ProduceRequest::default()
                .with_acks(acks.wire())
                .with_timeout_ms(timeout_ms)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(topic_name(topic))
                    .with_topic_id(topic_id)
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(batch.clone()))])]);
            if acks == Acks::None {
                conn.send_no_response(&req, version).await?;
                return Ok(ProduceAck {
                    base_offset: None,
                    log_append_time: None,
                });
            }
            let resp = conn
                .send_version(&req, version, self.options.request_timeout)
                .await?;
            let p = resp
                .responses
                .iter()
                .flat_map(|t| t.partition_responses.iter())
                .find(|p| p.index == partition)
                .ok_or_else(|| ClientError::Protocol {
                    what: format!("produce response lacks {}", resource()),
                    addr: conn.addr().to_owned(),
                })?;
            if let Some(code) = KafkaCode::from_code(p.error_code) {
                if code.is_stale_metadata() && attempt < ROUTE_ATTEMPTS {
                    self.invalidate(topic);
                    tokio::time::sleep(ROUTE_BACKOFF).await;
                    continue;
                }
                let msg = p.error_message.as_ref().map(|m| m.as_str());
                return Err(ClientError::kafka("produce", resource(), code, msg));
            }
            return Ok(ProduceAck {
                base_offset: Some(p.base_offset),
                log_append_time: (p.log_append_time_ms >= 0).then_some(p.log_append_time_ms),
            });
        }
    }

    /// Fetch one partition from `offset`, waiting up to `max_wait` for data.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        max_wait: Duration,
    ) -> Result<FetchedPartition, ClientError> {
        let opts = FetchOptions {
            max_bytes,
            partition_max_bytes: max_bytes,
            max_wait,
            ..FetchOptions::default()
        };
        let req = [FetchRequestPartition {
            topic: topic.to_owned(),
            partition,
            offset,
        }];
        let mut results = self.fetch_many(&req, &opts).await?;
        match results.pop() {
            Some(r) => r,
            None => Err(ClientError::Protocol {
                what: format!("fetch response lacks topic={topic}, partition={partition}"),
                addr: self.bootstrap.clone(),
            }),
        }
    }

    /// Fetch many partitions: one request per leader, in turn. Results are
    /// in the order of `partitions`; each partition has its own outcome.
    pub async fn fetch_many(
        &self,
        partitions: &[FetchRequestPartition],
        opts: &FetchOptions,
    ) -> Result<Vec<Result<FetchedPartition, ClientError>>, ClientError> {
        let mut results: Vec<Option<Result<FetchedPartition, ClientError>>> =
            partitions.iter().map(|_| None).collect();
        let mut by_leader: BTreeMap<i32, Vec<(usize, Uuid)>> = BTreeMap::new();
        for (i, p) in partitions.iter().enumerate() {
            match self.route(&p.topic, p.partition).await {
                Ok((leader, id)) => by_leader.entry(leader).or_default().push((i, id)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        for (leader, members) in by_leader {
            let conn = self.node_conn(leader).await?;
            let version = conn.version::<FetchRequest>()?;
            let mut topics: Vec<FetchTopic> = Vec::new();
            for &(i, topic_id) in &members {
                let p = &partitions[i];
                let fp = FetchPartition::default()
                    .with_partition(p.partition)
                    .with_fetch_offset(p.offset)
                    .with_partition_max_bytes(opts.partition_max_bytes);
                match topics.iter_mut().find(|t| t.topic.0.as_str() == p.topic) {
                    Some(t) => t.partitions.push(fp),
                    None => topics.push(
                        FetchTopic::default()
                            .with_topic(topic_name(&p.topic))
                            .with_topic_id(topic_id)
                            .with_partitions(vec![fp]),
                    ),
                }
            }
            let req = FetchRequest::default()
                .with_max_wait_ms(duration_ms(opts.max_wait))
                .with_min_bytes(opts.min_bytes)
                .with_max_bytes(opts.max_bytes)
                .with_isolation_level(i8::from(opts.read_committed))
                .with_topics(topics);
            let timeout = self.options.request_timeout + opts.max_wait;
            let resp = conn.send_version(&req, version, timeout).await?;
            for &(i, topic_id) in &members {
                let want = &partitions[i];
                let found = resp
                    .responses
                    .iter()
                    .filter(|t| {
                        if version >= 13 {
                            t.topic_id == topic_id
                        } else {
                            t.topic.0.as_str() == want.topic
                        }
                    })
                    .flat_map(|t| t.partitions.iter())
                    .find(|p| p.partition_index == want.partition);
                let resource = format!("topic={}, partition={}", want.topic, want.partition);
                let outcome = match found {
                    None => Err(ClientError::Protocol {
                        what: format!("fetch response lacks {resource}"),
                        addr: conn.addr().to_owned(),
                    }),
                    Some(p) => match KafkaCode::from_code(p.error_code) {
                        Some(code) => {
                            if code.is_stale_metadata() {
                                self.invalidate(&want.topic);
                            }
                            Err(ClientError::kafka("fetch", resource, code, None))
                        }
                        None => {
                            let data = p.records.clone().unwrap_or_default();
                            records::decode_fetched(
                                data.clone(),
                                want.offset,
                                &want.topic,
                                want.partition,
                            )
                            .map(|d| {
                                let complete = complete_prefix(&data);
                                FetchedPartition {
                                    topic: want.topic.clone(),
                                    partition: want.partition,
                                    high_watermark: p.high_watermark,
                                    last_stable_offset: p.last_stable_offset,
                                    log_start_offset: p.log_start_offset,
                                    records: d.records,
                                    next_offset: d.next_offset,
                                    raw: data.slice(..complete),
                                }
                            })
                        }
                    },
                };
                results[i] = Some(outcome);
            }
        }
        Ok(results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(ClientError::InvalidArgument(
                        "partition was not fetched".into(),
                    ))
                })
            })
            .collect())
    }

    /// Look up one offset of one partition.
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
    ) -> Result<ListedOffset, ClientError> {
        let mut r = self
            .list_offsets(&[(topic.to_owned(), partition)], spec)
            .await?;
        match r.pop() {
            Some((_, res)) => res,
            None => Err(ClientError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
            }),
        }
    }

    /// Look up offsets of many partitions, one request per leader. Each
    /// partition has its own outcome, in the order asked.
    pub async fn list_offsets(
        &self,
        partitions: &[(String, i32)],
        spec: OffsetSpec,
    ) -> Result<PartitionOffsets, ClientError> {
        let mut results: Vec<Option<Result<ListedOffset, ClientError>>> =
            partitions.iter().map(|_| None).collect();
        for attempt in 1..=ROUTE_ATTEMPTS {
            let mut by_leader: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
            for (i, (topic, partition)) in partitions.iter().enumerate() {
                if matches!(results[i], Some(Ok(_))) {
                    continue;
                }
                match self.route(topic, *partition).await {
                    Ok((leader, _)) => by_leader.entry(leader).or_default().push(i),
                    Err(e) => results[i] = Some(Err(e)),
                }
            }
            let mut stale = false;
            for (leader, members) in by_leader {
                let conn = self.node_conn(leader).await?;
                let version = conn.version::<ListOffsetsRequest>()?;
                let mut topics: Vec<ListOffsetsTopic> = Vec::new();
                for &i in &members {
                    let (topic, partition) = &partitions[i];
                    let lp = ListOffsetsPartition::default()
                        .with_partition_index(*partition)
                        .with_timestamp(spec.wire());
                    match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                        Some(t) => t.partitions.push(lp),
                        None => topics.push(
                            ListOffsetsTopic::default()
                                .with_name(topic_name(topic))
                                .with_partitions(vec![lp]),
                        ),
                    }
                }
                let mut req = ListOffsetsRequest::default().with_topics(topics);
                if version >= 10 {
                    req = req.with_timeout_ms(duration_ms(self.options.request_timeout));
                }
                let resp = conn
                    .send_version(&req, version, self.options.request_timeout)
                    .await?;
                for &i in &members {
                    let (topic, partition) = &partitions[i];
                    let resource = format!("topic={topic}, partition={partition}");
                    let found = resp
                        .topics
                        .iter()
                        .filter(|t| t.name.0.as_str() == topic)
                        .flat_map(|t| t.partitions.iter())
                        .find(|p| p.partition_index == *partition);
                    results[i] = Some(match found {
                        None => Err(ClientError::Protocol {
                            what: format!("list offsets response lacks {resource}"),
                            addr: conn.addr().to_owned(),
                        }),
                        Some(p) => match KafkaCode::from_code(p.error_code) {
                            Some(code) => {
                                if code.is_stale_metadata() {
                                    self.invalidate(topic);
                                    stale = true;
                                }
                                Err(ClientError::kafka("list offsets", resource, code, None))
                            }
                            None => Ok(ListedOffset {
                                offset: p.offset,
                                timestamp: p.timestamp,
                                leader_epoch: p.leader_epoch,
                            }),
                        },
                    });
                }
            }
            if !stale || attempt == ROUTE_ATTEMPTS {
                break;
            }
            tokio::time::sleep(ROUTE_BACKOFF).await;
        }
        Ok(partitions
            .iter()
            .cloned()
            .zip(results)
            .map(|(tp, r)| {
                let r = r.unwrap_or_else(|| {
                    Err(ClientError::InvalidArgument(
                        "partition was not asked".into(),
                    ))
                });
                (tp, r)
            })
            .collect())
    }
}

/// Length of the leading complete batches of `data`.
fn complete_prefix(data: &[u8]) -> usize {
    let mut pos = 0usize;
    while data.len() - pos >= 12 {
        let len =
            i32::from_be_bytes([data[pos + 8], data[pos + 9], data[pos + 10], data[pos + 11]]);
        let Ok(len) = usize::try_from(len) else { break };
        if data.len() - pos < 12 + len {
            break;
        }
        pos += 12 + len;
    }
    pos
}

/// Milliseconds as the i32 Kafka uses, saturating.
pub(crate) fn duration_ms(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}
