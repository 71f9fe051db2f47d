//! A raw Kafka connection over `std::net::TcpStream`, with requests built by
//! the `kafka-protocol` crate: for bad input and exact error codes.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

pub const ERR_NONE: i16 = 0;
pub const ERR_CORRUPT_MESSAGE: i16 = 2;
pub const ERR_UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const ERR_MESSAGE_TOO_LARGE: i16 = 10;
pub const ERR_UNSUPPORTED_VERSION: i16 = 35;
pub const ERR_OUT_OF_ORDER_SEQUENCE: i16 = 45;
pub const ERR_INVALID_RECORD: i16 = 87;

const IO_TIMEOUT: Duration = Duration::from_secs(30);

pub struct RawConn {
    stream: TcpStream,
    next_correlation: i32,
}

impl RawConn {
    pub fn connect(addr: &str) -> RawConn {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("set timeout");
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .expect("set timeout");
        stream.set_nodelay(true).expect("nodelay");
        RawConn {
            stream,
            next_correlation: 1,
        }
    }

    /// Whether response bytes are waiting to be read (without reading them).
    pub fn has_data_ready(&self) -> bool {
        self.stream.set_nonblocking(true).expect("nonblocking");
        let mut b = [0u8; 1];
        let ready = matches!(self.stream.peek(&mut b), Ok(n) if n > 0);
        self.stream.set_nonblocking(false).expect("blocking");
        ready
    }

    /// Write bytes as they are (no framing).
    pub fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Write a 4-byte big-endian length followed by `body`.
    pub fn write_frame(&mut self, body: &[u8]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(4 + body.len());
        buf.extend_from_slice(&(body.len() as i32).to_be_bytes());
        buf.extend_from_slice(body);
        self.write_raw(&buf)
    }

    /// Close our write side (the broker sees EOF).
    pub fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }

    /// Encode header + body for `api_key`/`version`; returns (frame body, correlation id).
    pub fn encode_request<R: Encodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        header_version: i16,
        body: &R,
        body_version: i16,
    ) -> (BytesMut, i32) {
        let correlation_id = self.next_correlation;
        self.next_correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("strata-it-raw")));
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, header_version)
            .expect("encode request header");
        body.encode(&mut buf, body_version)
            .expect("encode request body");
        (buf, correlation_id)
    }

    /// Send a well-formed request; returns its correlation id.
    pub fn send<R: Encodable>(&mut self, api_key: ApiKey, version: i16, body: &R) -> i32 {
        let hv = api_key.request_header_version(version);
        let (buf, corr) = self.encode_request(api_key, version, hv, body, version);
        self.write_frame(&buf)
            .unwrap_or_else(|e| panic!("write {api_key:?} v{version}: {e}"));
        corr
    }

    /// Read one response frame (without its length prefix).
    pub fn read_frame(&mut self) -> std::io::Result<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len = i32::from_be_bytes(len);
        if !(0..=(256 << 20)).contains(&len) {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                format!("response frame length {len}"),
            ));
        }
        let mut body = vec![0u8; len as usize];
        self.stream.read_exact(&mut body)?;
        Ok(Bytes::from(body))
    }

    /// Read and decode the response to `corr`, checking the correlation id
    /// and that the body decodes with no bytes left over.
    pub fn receive<R: Decodable>(&mut self, api_key: ApiKey, version: i16, corr: i32) -> R {
        let mut frame = self
            .read_frame()
            .unwrap_or_else(|e| panic!("read response to {api_key:?} v{version}: {e}"));
        let hv = api_key.response_header_version(version);
        let header = ResponseHeader::decode(&mut frame, hv)
            .unwrap_or_else(|e| panic!("decode {api_key:?} v{version} response header: {e}"));
        assert_eq!(
            header.correlation_id, corr,
            "{api_key:?} v{version}: response correlation id"
        );
        let resp = R::decode(&mut frame, version)
            .unwrap_or_else(|e| panic!("decode {api_key:?} v{version} response: {e}"));
        assert!(
            frame.is_empty(),
            "{api_key:?} v{version} response has {} trailing bytes",
            frame.len()
        );
        resp
    }

    pub fn roundtrip<Req: Encodable, Resp: Decodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        body: &Req,
    ) -> Resp {
        let corr = self.send(api_key, version, body);
        self.receive(api_key, version, corr)
    }

    /// Wait until the broker closes the connection (EOF or reset). Any
    /// bytes it sends first are returned. Err if still open after `within`.
    pub fn wait_closed(&mut self, within: Duration) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "connection still open after {within:?} ({} bytes received)",
                    got.len()
                ));
            }
            self.stream
                .set_read_timeout(Some(left.min(Duration::from_millis(500))))
                .expect("set timeout");
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Ok(got), // reset / broken pipe: closed
            }
        }
    }

    /// ApiVersions v3 (what librdkafka sends first).
    pub fn api_versions(&mut self) -> ApiVersionsResponse {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("strata-it"))
            .with_client_software_version(StrBytes::from_static_str("0.1"));
        self.roundtrip(ApiKey::ApiVersions, 3, &req)
    }

    /// The advertised range for one API key.
    pub fn version_range(&mut self, key: ApiKey) -> Option<ApiVersion> {
        let resp = self.api_versions();
        assert_eq!(resp.error_code, ERR_NONE, "ApiVersions v3 error");
        resp.api_keys.into_iter().find(|k| k.api_key == key as i16)
    }

    /// A Produce version the broker advertises that still names topics
    /// (v13 uses topic ids): min(max advertised, 9).
    pub fn produce_version(&mut self) -> i16 {
        let r = self
            .version_range(ApiKey::Produce)
            .expect("broker does not advertise Produce");
        let v = r.max_version.min(9);
        assert!(v >= 3, "broker's max Produce version {} < 3", r.max_version);
        v
    }

    /// Produce one batch to one partition; returns (error code, base offset).
    pub fn produce(
        &mut self,
        version: i16,
        topic: &str,
        partition: i32,
        batch: Bytes,
        acks: i16,
    ) -> (i16, i64) {
        let req = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch))])]);
        let resp: ProduceResponse = self.roundtrip(ApiKey::Produce, version, &req);
        assert_eq!(resp.responses.len(), 1, "Produce response topics: {resp:?}");
        let t = &resp.responses[0];
        assert_eq!(
            t.partition_responses.len(),
            1,
            "Produce response partitions: {resp:?}"
        );
        let p = &t.partition_responses[0];
        assert_eq!(p.index, partition, "Produce response partition index");
        (p.error_code, p.base_offset)
    }

    /// Fetch v11 of `topic`'s `(partition, offset)`s, each up to 1 MiB and
    /// the whole up to `max_bytes`, waiting at most 100 ms: per partition,
    /// its error code and records.
    pub fn fetch(&mut self, topic: &str, at: &[(i32, i64)], max_bytes: i32) -> Vec<(i16, Bytes)> {
        use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
        use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(
                    at.iter()
                        .map(|(p, offset)| {
                            FetchPartition::default()
                                .with_partition(*p)
                                .with_fetch_offset(*offset)
                                .with_current_leader_epoch(-1)
                                .with_partition_max_bytes(1 << 20)
                        })
                        .collect(),
                )]);
        let resp: FetchResponse = self.roundtrip(ApiKey::Fetch, 11, &req);
        resp.responses
            .into_iter()
            .flat_map(|t| t.partitions)
            .map(|p| (p.error_code, p.records.unwrap_or_default()))
            .collect()
    }

    /// ListOffsets v9 of `topic`-`partition` at `timestamp` (-1 latest,
    /// -2 earliest, -4 earliest local, -5 latest tiered): the offset, -1
    /// on an error.
    pub fn list_offset(&mut self, topic: &str, partition: i32, timestamp: i64) -> i64 {
        self.list_offset_isolated(topic, partition, timestamp, 0)
    }

    /// [`Self::list_offset`] with an isolation level (1: read_committed).
    pub fn list_offset_isolated(
        &mut self,
        topic: &str,
        partition: i32,
        timestamp: i64,
        isolation_level: i8,
    ) -> i64 {
        match self.list_offset_answer(topic, partition, timestamp, isolation_level) {
            (0, offset) => offset,
            _ => -1,
        }
    }

    /// ListOffsets' answer for one partition: (error code, offset).
    pub fn list_offset_answer(
        &mut self,
        topic: &str,
        partition: i32,
        timestamp: i64,
        isolation_level: i8,
    ) -> (i16, i64) {
        use kafka_protocol::messages::list_offsets_request::{
            ListOffsetsPartition, ListOffsetsTopic,
        };
        use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, ListOffsetsResponse};
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(isolation_level)
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_current_leader_epoch(-1)
                    .with_timestamp(timestamp)])]);
        let resp: ListOffsetsResponse = self.roundtrip(ApiKey::ListOffsets, 9, &req);
        let p = &resp.topics[0].partitions[0];
        (p.error_code, p.offset)
    }

    /// Topic ids from Metadata (a version >= 10, which carries them).
    pub fn topic_ids(&mut self, topics: &[&str]) -> HashMap<String, uuid::Uuid> {
        let r = self
            .version_range(ApiKey::Metadata)
            .expect("broker does not advertise Metadata");
        let v = r.max_version.min(12);
        assert!(
            v >= 10,
            "broker's max Metadata version {} < 10",
            r.max_version
        );
        let req = MetadataRequest::default()
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string((*t).to_owned()))))
                    })
                    .collect(),
            ))
            .with_allow_auto_topic_creation(false);
        let resp: MetadataResponse = self.roundtrip(ApiKey::Metadata, v, &req);
        resp.topics
            .into_iter()
            .filter(|t| t.error_code == ERR_NONE)
            .filter_map(|t| {
                let name = t.name?.0.to_string();
                Some((name, uuid::Uuid::from_bytes(*t.topic_id.as_bytes())))
            })
            .collect()
    }
}

/// A plain record for RecordBatchEncoder.
pub fn record(offset_delta: i64, key: Option<&[u8]>, value: Option<&[u8]>, ts: i64) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: offset_delta,
        sequence: -1,
        timestamp: ts,
        key: key.map(Bytes::copy_from_slice),
        value: value.map(Bytes::copy_from_slice),
        headers: Default::default(),
    }
}

/// A batch of `count` records from idempotent producer `producer_id`
/// (epoch `epoch`), with sequences from `sequence`; values `{tag}-{i}`.
/// `transactional` and `control` set those attribute bits.
pub fn producer_batch(
    producer_id: i64,
    epoch: i16,
    sequence: i32,
    count: usize,
    tag: &str,
    transactional: bool,
    control: bool,
) -> Bytes {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let records: Vec<Record> = (0..count)
        .map(|i| {
            let value = format!("{tag}-{i}");
            Record {
                transactional,
                control,
                producer_id,
                producer_epoch: epoch,
                sequence: sequence + i as i32,
                ..record(i as i64, None, Some(value.as_bytes()), ts)
            }
        })
        .collect();
    batch(&records, Compression::None)
}

/// Encode a magic-v2 RecordBatch.
pub fn batch(records: &[Record], compression: Compression) -> Bytes {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode record batch");
    buf.freeze()
}

/// Tiny deterministic PRNG (xorshift64*), so "random" input is repeatable.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}
