//! Bad network input over a raw TcpStream: the broker answers with Kafka's
//! error codes or closes the connection, never dies, and keeps serving
//! well-behaved clients afterwards.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::clients::{self, TestRecord};
use common::raw::{self, RawConn, XorShift};
use common::Broker;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::records::Compression;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

const CLOSE_WITHIN: Duration = Duration::from_secs(10);

/// After a bad request: the process lives, a fresh rdkafka client produces
/// and consumes, and nothing was logged at ERROR.
fn assert_still_serving(broker: &mut Broker) {
    broker.assert_running();
    clients::smoke(&broker.bootstrap());
    broker.assert_running();
    broker.assert_no_error_logs();
}

fn api_versions_frame(conn: &mut RawConn, version: i16, header_version: i16) -> (Vec<u8>, i32) {
    let req = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("strata-it"))
        .with_client_software_version(StrBytes::from_static_str("0.1"));
    let (buf, corr) = conn.encode_request(ApiKey::ApiVersions, version, header_version, &req, 3);
    (buf.to_vec(), corr)
}

#[test]
fn random_bytes() {
    let mut broker = Broker::start();
    let bs = broker.bootstrap();

    // Unframed garbage, then EOF.
    let mut rng = XorShift::new(0x5eed);
    let mut c = RawConn::connect(&bs);
    let _ = c.write_raw(&rng.bytes(64 * 1024));
    c.shutdown_write();
    c.wait_closed(CLOSE_WITHIN)
        .unwrap_or_else(|e| panic!("unframed random bytes + EOF: {e}"));

    // A well-framed request with an API key that does not exist.
    let mut c = RawConn::connect(&bs);
    let mut body = vec![0x7f, 0xff, 0, 0, 0, 0, 0, 1, 0xff, 0xff];
    body.extend(rng.bytes(500));
    let _ = c.write_frame(&body);
    c.wait_closed(CLOSE_WITHIN)
        .unwrap_or_else(|e| panic!("unknown api key 32767: {e}"));

    // Well-framed garbage bodies for real API keys and random versions:
    // an error response or a close are both fine; the broker must survive.
    for seed in 1..=40u64 {
        let mut rng = XorShift::new(seed);
        let mut body = rng.bytes(64 + (seed as usize * 37) % 2000);
        let key = (seed % 70) as i16;
        body[0..2].copy_from_slice(&key.to_be_bytes());
        let mut c = RawConn::connect(&bs);
        let _ = c.write_frame(&body);
        let _ = c.wait_closed(Duration::from_millis(300));
    }
    assert_still_serving(&mut broker);
}

#[test]
fn truncated_frame_then_close() {
    let mut broker = Broker::start();
    let bs = broker.bootstrap();

    // Length prefix and half of a valid ApiVersions body, then EOF.
    let mut c = RawConn::connect(&bs);
    let (body, _) = api_versions_frame(&mut c, 3, 2);
    let mut bytes = (body.len() as i32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&body[..body.len() / 2]);
    c.write_raw(&bytes).unwrap();
    c.shutdown_write();
    c.wait_closed(CLOSE_WITHIN)
        .unwrap_or_else(|e| panic!("half a frame + EOF: {e}"));

    // Half a length prefix, then EOF.
    let mut c = RawConn::connect(&bs);
    c.write_raw(&[0, 0]).unwrap();
    c.shutdown_write();
    c.wait_closed(CLOSE_WITHIN)
        .unwrap_or_else(|e| panic!("half a length prefix + EOF: {e}"));

    // Half a frame, then drop the socket without a FIN handshake on our side.
    let mut c = RawConn::connect(&bs);
    c.write_raw(&bytes).unwrap();
    drop(c);
    assert_still_serving(&mut broker);
}

#[test]
fn oversized_or_negative_frame_length_closes_connection() {
    let mut broker = Broker::start();
    let bs = broker.bootstrap();
    for len in [200 << 20, (100 << 20) + 1, i32::MAX, -1, i32::MIN] {
        let mut c = RawConn::connect(&bs);
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0u8; 1024]);
        let _ = c.write_raw(&bytes);
        c.wait_closed(CLOSE_WITHIN)
            .unwrap_or_else(|e| panic!("frame length {len}: {e}"));
    }
    assert_still_serving(&mut broker);
}

#[test]
fn api_versions_unknown_version_gets_v0_error_layout() {
    let mut broker = Broker::start();
    let bs = broker.bootstrap();
    let mut c = RawConn::connect(&bs);
    // A client from the future: ApiVersions v99 with a flexible (v2) header.
    let (body, corr) = api_versions_frame(&mut c, 99, 2);
    c.write_frame(&body).unwrap();
    let mut frame = c.read_frame().expect("a response to ApiVersions v99");
    let header = ResponseHeader::decode(&mut frame, 0).expect("v0 response header");
    assert_eq!(header.correlation_id, corr);
    let resp = ApiVersionsResponse::decode(&mut frame, 0)
        .unwrap_or_else(|e| panic!("ApiVersions v99 response is not in the v0 layout: {e}"));
    assert!(
        frame.is_empty(),
        "ApiVersions v99 response has {} bytes after the v0 body (not the v0 layout)",
        frame.len()
    );
    assert_eq!(
        resp.error_code,
        raw::ERR_UNSUPPORTED_VERSION,
        "error code for v99"
    );
    let av = resp
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::ApiVersions as i16)
        .unwrap_or_else(|| panic!("v99 error response lists no ApiVersions range: {resp:?}"));
    assert!(
        av.min_version <= 3 && av.max_version >= 3,
        "ApiVersions range {av:?}"
    );

    // As KIP-511 clients do, retry on the same connection with v3.
    let resp = c.api_versions();
    assert_eq!(resp.error_code, 0, "ApiVersions v3 after the v99 attempt");
    assert_still_serving(&mut broker);
}

#[test]
fn api_versions_v3_advertises_consistent_ranges() {
    let mut broker = Broker::start();
    let mut c = RawConn::connect(&broker.bootstrap());
    let resp = c.api_versions();
    assert_eq!(resp.error_code, 0);
    for k in &resp.api_keys {
        assert!(k.min_version <= k.max_version, "bad range {k:?}");
    }
    let get = |key: ApiKey| {
        resp.api_keys
            .iter()
            .find(|k| k.api_key == key as i16)
            .unwrap_or_else(|| panic!("{key:?} not advertised"))
    };
    // Produce is reported from v0 (like Kafka 4.0, for old
    // librdkafka's compression), ApiVersions up to v3 at least.
    assert_eq!(get(ApiKey::Produce).min_version, 0, "Produce min version");
    assert!(get(ApiKey::Produce).max_version >= 9, "Produce max version");
    assert!(get(ApiKey::ApiVersions).max_version >= 3);
    assert!(get(ApiKey::Metadata).max_version >= 12);
    assert!(get(ApiKey::Fetch).max_version >= 12);
    assert_still_serving(&mut broker);
}

#[test]
fn produce_with_bad_crc_gets_corrupt_message() {
    let mut broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = common::topic_name("bad-crc");
    clients::create_topic(&bs, &topic, 1, &[]);
    let mut c = RawConn::connect(&bs);
    let v = c.produce_version();
    let ts = clients::now_ms();
    let records = [
        raw::record(0, Some(b"k0"), Some(b"valid record"), ts),
        raw::record(1, Some(b"k1"), Some(b"another valid record"), ts),
    ];
    let good = raw::batch(&records, Compression::None);

    // The same encoding unchanged is accepted (so the request itself is right).
    let (err, base) = c.produce(v, &topic, 0, good.clone(), -1);
    assert_eq!((err, base), (raw::ERR_NONE, 0), "valid batch, Produce v{v}");

    // Flip one byte of the last record's value: the CRC-32C no longer matches.
    let mut bad = good.to_vec();
    let n = bad.len();
    bad[n - 3] ^= 0x55;
    let (err, _) = c.produce(v, &topic, 0, Bytes::from(bad), -1);
    assert_eq!(
        err,
        raw::ERR_CORRUPT_MESSAGE,
        "batch with a wrong CRC, Produce v{v}"
    );

    // And a wrong CRC field itself.
    let mut bad = good.to_vec();
    bad[17] ^= 0x01;
    let (err, _) = c.produce(v, &topic, 0, Bytes::from(bad), 1);
    assert_eq!(
        err,
        raw::ERR_CORRUPT_MESSAGE,
        "batch with a flipped CRC field"
    );

    // Nothing of the bad batches was stored.
    assert_eq!(clients::watermarks(&bs, &topic, 0), (0, 2));
    let got = clients::consume_ranges(&bs, &topic, &[(0, 0, 2)], clients::OP_TIMEOUT);
    assert_eq!(
        got[1].record.value.as_deref(),
        Some(&b"another valid record"[..])
    );
    assert_still_serving(&mut broker);
}

#[test]
fn control_and_transactional_batches_from_clients_are_refused() {
    let mut broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = common::topic_name("control");
    clients::create_topic(&bs, &topic, 1, &[]);
    let mut c = RawConn::connect(&bs);
    let v = c.produce_version();
    // A forged abort marker and a transactional batch (no transactional id).
    let control = raw::producer_batch(42, 0, 0, 1, "marker", true, true);
    let (err, _) = c.produce(v, &topic, 0, control, -1);
    assert_eq!(err, raw::ERR_INVALID_RECORD, "control batch from a client");
    let txn = raw::producer_batch(42, 0, 0, 3, "txn", true, false);
    let (err, _) = c.produce(v, &topic, 0, txn, -1);
    assert_eq!(err, raw::ERR_INVALID_RECORD, "transactional batch");
    // The same producer's plain idempotent batch is accepted, at offset 0:
    // nothing of the refused batches was stored.
    let plain = raw::producer_batch(42, 0, 0, 3, "plain", false, false);
    assert_eq!(c.produce(v, &topic, 0, plain, -1), (raw::ERR_NONE, 0));
    assert_eq!(clients::watermarks(&bs, &topic, 0), (0, 3));
    assert_still_serving(&mut broker);
}

#[test]
fn record_larger_than_max_message_bytes_is_rejected() {
    let mut broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = common::topic_name("too-large");
    clients::create_topic(&bs, &topic, 1, &[("max.message.bytes", "10000")]);

    let mut c = RawConn::connect(&bs);
    let v = c.produce_version();
    let ts = clients::now_ms();
    let big = vec![b'x'; 20_000];
    let batch = raw::batch(&[raw::record(0, None, Some(&big), ts)], Compression::None);
    let (err, _) = c.produce(v, &topic, 0, batch, -1);
    assert_eq!(
        err,
        raw::ERR_MESSAGE_TOO_LARGE,
        "20 kB batch, max.message.bytes=10000"
    );

    let small = vec![b'y'; 5_000];
    let batch = raw::batch(&[raw::record(0, None, Some(&small), ts)], Compression::None);
    let (err, base) = c.produce(v, &topic, 0, batch, -1);
    assert_eq!(
        (err, base),
        (raw::ERR_NONE, 0),
        "5 kB batch under the limit"
    );

    // librdkafka surfaces the same error to the application.
    let p = clients::producer(&bs, &[("message.timeout.ms", "10000")]);
    let f = clients::enqueue(&p, &topic, &TestRecord::value(big.clone()));
    match clients::await_delivery(f) {
        Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {}
        other => panic!("rdkafka produce of 20 kB to max.message.bytes=10000: {other:?}"),
    }
    drop(p);
    assert_eq!(clients::watermarks(&bs, &topic, 0), (0, 1));
    assert_still_serving(&mut broker);
}

#[test]
fn unknown_topic_without_auto_create() {
    let mut broker = Broker::builder()
        .args(["--auto-create-topics", "false"])
        .start();
    let bs = broker.bootstrap();
    let topic = common::topic_name("nope");

    // Metadata with allow_auto_topic_creation=true must not create it either.
    let c = clients::consumer(&bs, &[("allow.auto.create.topics", "true")]);
    let md = rdkafka::consumer::Consumer::fetch_metadata(&c, Some(&topic), clients::OP_TIMEOUT)
        .expect("metadata");
    let t = md.topics().iter().find(|t| t.name() == topic);
    assert!(
        t.is_none_or(|t| t.error().is_some()),
        "topic {topic} was auto-created despite --auto-create-topics false"
    );
    drop(c);

    let mut raw_conn = RawConn::connect(&bs);
    let v = raw_conn.produce_version();
    let batch = raw::batch(
        &[raw::record(0, None, Some(b"to nowhere"), clients::now_ms())],
        Compression::None,
    );
    let (err, _) = raw_conn.produce(v, &topic, 0, batch, -1);
    assert_eq!(
        err,
        raw::ERR_UNKNOWN_TOPIC_OR_PARTITION,
        "produce to unknown topic"
    );
    assert_eq!(
        clients::partition_count(&bs, &topic),
        None,
        "topic exists after produce"
    );
    assert_still_serving(&mut broker);
}

/// A disk that fills: segment writes fail (here past `ulimit -f`, which
/// fails writes with EFBIG exactly where a full disk fails them with
/// ENOSPC). Produce gets KAFKA_STORAGE_ERROR, the broker keeps serving,
/// nothing acknowledged is lost, and after a restart with room it goes on.
#[test]
fn a_full_disk_fails_produce_cleanly_and_loses_nothing() {
    let mut broker = Broker::builder()
        .file_size_limit_kib(1024)
        .expect_error("append failed")
        .start();
    let bootstrap = broker.bootstrap();
    let topic = common::topic_name("diskfull");
    clients::create_topic(&bootstrap, &topic, 1, &[("remote.storage.enable", "false")]);
    let mut raw = RawConn::connect(&bootstrap);
    let v = raw.produce_version();
    let value = |i: usize| format!("{i:06}-").repeat(10_000).into_bytes();
    let mut acked = 0usize;
    let failure = loop {
        let b = common::raw::batch(
            &[common::raw::record(
                0,
                None,
                Some(&value(acked)),
                1_700_000_000_000,
            )],
            kafka_protocol::records::Compression::None,
        );
        let (code, offset) = raw.produce(v, &topic, 0, b, -1);
        if code != 0 {
            break code;
        }
        assert_eq!(offset, acked as i64);
        acked += 1;
        assert!(acked < 1000, "the file size limit never hit");
    };
    assert_eq!(
        failure, 56,
        "KAFKA_STORAGE_ERROR when the segment cannot grow"
    );
    assert!(acked > 0);
    broker.assert_running();
    // Everything acknowledged reads back; other partitions still take writes.
    let got = clients::consume_ranges(
        &bootstrap,
        &topic,
        &[(0, 0, acked as i64)],
        clients::OP_TIMEOUT,
    );
    for (i, c) in got.iter().enumerate() {
        assert_eq!(c.record.value.as_deref(), Some(&value(i)[..]), "offset {i}");
    }
    clients::smoke(&bootstrap);
    broker.assert_no_error_logs_except(&["append failed"]);
    broker.stop();

    // With room again, the partition continues where it stopped.
    let again = Broker::builder()
        .data_dir(broker.data_dir().to_path_buf())
        .start();
    let at = clients::produce(
        &again.bootstrap(),
        &topic,
        &[TestRecord::value("after").in_partition(0)],
    );
    assert_eq!(at[0], (0, acked as i64));
    let all = clients::consume_ranges(
        &again.bootstrap(),
        &topic,
        &[(0, 0, acked as i64 + 1)],
        clients::OP_TIMEOUT,
    );
    assert_eq!(all.len(), acked + 1);
    again.assert_no_error_logs();
}

/// A long-polling fetch whose frame is at least 1 KiB: the same partition
/// asked for many times.
fn big_long_poll(topic: &str, wait_ms: i32) -> kafka_protocol::messages::FetchRequest {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let partitions = (0..64)
        .map(|_| {
            FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_current_leader_epoch(-1)
                .with_partition_max_bytes(1 << 20)
        })
        .collect();
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partitions(partitions)])
}

/// Sends a big long-poll on one connection and an ApiVersions on another;
/// returns whether the long-poll's answer was already there when the
/// ApiVersions answer arrived.
fn long_poll_answered_first(broker: &Broker, topic: &str) -> bool {
    use kafka_protocol::messages::FetchResponse;
    let mut a = RawConn::connect(&broker.bootstrap());
    let mut b = RawConn::connect(&broker.bootstrap());
    let fetch_corr = a.send(ApiKey::Fetch, 11, &big_long_poll(topic, 1500));
    // The long-poll is read and parked before the second request is sent.
    wait_in_flight(broker, |b| b >= 1024.0);
    let corr = b.send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let _: ApiVersionsResponse = b.receive(ApiKey::ApiVersions, 3, corr);
    let first = a.has_data_ready();
    let _: FetchResponse = a.receive(ApiKey::Fetch, 11, fetch_corr);
    first
}

/// Waits until the broker's request bytes in flight satisfy `ok`; returns them.
fn wait_in_flight(broker: &Broker, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let b = broker
            .metrics()
            .get("strata_request_bytes_in_flight")
            .copied()
            .unwrap_or(0.0);
        if ok(b) {
            return b;
        }
        assert!(std::time::Instant::now() < deadline, "in flight: {b}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn request_bytes_in_flight_are_bounded_per_connection() {
    use kafka_protocol::messages::{FetchResponse, MetadataRequest, MetadataResponse};
    let broker = Broker::builder()
        .args(["--connection-max-request-bytes", "1024"])
        .start();
    let topic = common::topic_name("inflight-conn");
    clients::create_topic(&broker.bootstrap(), &topic, 1, &[]);
    let mut a = RawConn::connect(&broker.bootstrap());
    let fetch_corr = a.send(ApiKey::Fetch, 11, &big_long_poll(&topic, 1500));
    let parked = wait_in_flight(&broker, |b| b >= 1024.0);
    // Pipelined behind it on the same connection: not read while the
    // fetch holds the connection's budget...
    let meta_corr = a.send(ApiKey::Metadata, 9, &MetadataRequest::default());
    // ...while other connections are served.
    let mut b = RawConn::connect(&broker.bootstrap());
    let corr = b.send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let _: ApiVersionsResponse = b.receive(ApiKey::ApiVersions, 3, corr);
    // (The ApiVersions bytes are given back just after its answer is sent.)
    wait_in_flight(&broker, |b| b == parked);
    let _: FetchResponse = a.receive(ApiKey::Fetch, 11, fetch_corr);
    let _: MetadataResponse = a.receive(ApiKey::Metadata, 9, meta_corr);
    wait_in_flight(&broker, |b| b == 0.0);
}

#[test]
fn request_bytes_in_flight_are_bounded_per_broker() {
    // With 1 KiB for the whole broker, a parked 1 KiB+ fetch holds all of
    // it: the next request, on another connection, is not even read until
    // the fetch is answered.
    let broker = Broker::builder()
        .args(["--queued-max-request-bytes", "1024"])
        .start();
    let topic = common::topic_name("inflight");
    clients::create_topic(&broker.bootstrap(), &topic, 1, &[]);
    assert!(long_poll_answered_first(&broker, &topic));
    // Everything given back once answered, and the broker still serves.
    wait_in_flight(&broker, |b| b == 0.0);
    assert_eq!(
        clients::produce(&broker.bootstrap(), &topic, &[TestRecord::value("after")]),
        vec![(0, 0)]
    );

    // With the default bounds the second request is answered at once.
    let roomy = Broker::start();
    clients::create_topic(&roomy.bootstrap(), &topic, 1, &[]);
    assert!(!long_poll_answered_first(&roomy, &topic));
}

/// Length prefixes announcing 100 MiB (within socket.request.max.bytes)
/// with no body: the first two take 200 of the broker's 256 MiB, the third
/// waits for room. A small request from anyone else is still served: room
/// is not handed out first come first served, so the waiting giant holds
/// up nobody.
#[test]
fn announced_bodies_that_never_come_do_not_stall_other_clients() {
    let mut broker = Broker::builder()
        .args(["--request-body-timeout-ms", "600000"])
        .start();
    let mut hostile: Vec<RawConn> = (0..3)
        .map(|_| {
            let mut c = RawConn::connect(&broker.bootstrap());
            c.write_raw(&(100i32 << 20).to_be_bytes()).expect("prefix");
            c
        })
        .collect();
    wait_in_flight(&broker, |b| b >= f64::from(200 << 20));
    let mut c = RawConn::connect(&broker.bootstrap());
    let versions = c.api_versions();
    assert_eq!(versions.error_code, 0);
    let topic = common::topic_name("unstalled");
    clients::create_topic(&broker.bootstrap(), &topic, 1, &[]);
    assert_eq!(
        clients::produce(&broker.bootstrap(), &topic, &[TestRecord::value("through")]),
        vec![(0, 0)]
    );
    for h in &mut hostile {
        h.shutdown_write();
    }
    wait_in_flight(&broker, |b| b == 0.0);
    assert_still_serving(&mut broker);
}

/// A body that does not arrive in time, and a connection that sends nothing,
/// are closed; a long-poll longer than the idle limit is not idle.
#[test]
fn slow_bodies_and_idle_connections_are_closed() {
    use kafka_protocol::messages::FetchResponse;
    let mut broker = Broker::builder()
        .args(["--request-body-timeout-ms", "300"])
        .args(["--connections-max-idle-ms", "500"])
        .start();
    let topic = common::topic_name("idle");
    clients::create_topic(&broker.bootstrap(), &topic, 1, &[]);
    let mut slow = RawConn::connect(&broker.bootstrap());
    slow.write_raw(&[0, 0, 4, 0, 1, 2, 3])
        .expect("part of a frame");
    slow.wait_closed(CLOSE_WITHIN).expect("slow body closed");
    assert!(
        broker
            .metrics()
            .get("strata_request_body_timeouts_total")
            .copied()
            .unwrap_or(0.0)
            >= 1.0
    );
    let mut quiet = RawConn::connect(&broker.bootstrap());
    quiet
        .wait_closed(CLOSE_WITHIN)
        .expect("idle connection closed");
    // A fetch parked for three idle periods is answered on its connection.
    let mut polling = RawConn::connect(&broker.bootstrap());
    let corr = polling.send(ApiKey::Fetch, 11, &big_long_poll(&topic, 1500));
    let _: FetchResponse = polling.receive(ApiKey::Fetch, 11, corr);
    assert_still_serving(&mut broker);
}

#[test]
fn connections_over_the_per_ip_cap_are_closed_on_accept() {
    let mut broker = Broker::builder()
        .args(["--max-connections-per-ip", "2"])
        .start();
    let mut a = RawConn::connect(&broker.bootstrap());
    let mut b = RawConn::connect(&broker.bootstrap());
    assert_eq!(a.api_versions().error_code, 0);
    assert_eq!(b.api_versions().error_code, 0);
    let mut c = RawConn::connect(&broker.bootstrap());
    c.wait_closed(CLOSE_WITHIN)
        .expect("third connection closed");
    assert!(
        broker
            .metrics()
            .get("strata_connections_refused_total")
            .copied()
            .unwrap_or(0.0)
            >= 1.0
    );
    drop(a);
    drop(b);
    drop(c);
    // Room again once the broker has seen them go.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while broker
        .metrics()
        .get("strata_connections")
        .copied()
        .unwrap_or(0.0)
        > 0.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "connections not closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut d = RawConn::connect(&broker.bootstrap());
    assert_eq!(d.api_versions().error_code, 0);
    broker.assert_running();
    broker.assert_no_error_logs();
}

/// Lines a client can cause at will are rate-limited, and a response that
/// quotes a client's 32,760-byte config key still encodes (the quote is
/// clipped) instead of failing with an ERROR and a closed connection.
#[test]
fn client_caused_log_lines_are_rate_limited() {
    let mut broker = Broker::start();
    for _ in 0..200 {
        let mut c = RawConn::connect(&broker.bootstrap());
        c.write_frame(&[0xff, 0xff, 0, 0]).expect("short frame");
        c.wait_closed(CLOSE_WITHIN).expect("closed");
    }
    let lines = broker
        .logs()
        .lines()
        .filter(|l| l.contains("closing connection"))
        .count();
    assert!((1..=3).contains(&lines), "{lines} lines for 200 bad frames");
    let key = "k".repeat(32_760);
    let topic = common::topic_name("longkey");
    assert_eq!(
        clients::try_create_topic(&broker.bootstrap(), &topic, 1, &[(key.as_str(), "x")]),
        Err(RDKafkaErrorCode::InvalidConfig)
    );
    assert_still_serving(&mut broker);
}

/// Descriptors run out (connections past `ulimit -n`): metadata writes
/// fail and the raft core stops. Once descriptors are back the broker
/// restarts it from its durable state, reports ready again, and creates
/// topics: one I/O error no longer leaves NOT_CONTROLLER until a restart.
#[test]
fn the_metadata_quorum_survives_running_out_of_descriptors() {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, TopicName};
    // The raft core's write fails (EMFILE), openraft reports it on each of
    // its channels, and the broker restarts the core.
    let broker = Broker::builder()
        .open_files_limit(256)
        .expect_error("Too many open files")
        .expect_error("with_raft_state: rx recv error")
        .start();
    let ready = |b: &Broker| b.admin_get("/ready").0 == 200;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ready(&broker) {
        assert!(std::time::Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut admin = RawConn::connect(&broker.bootstrap());
    assert_eq!(admin.api_versions().error_code, 0);
    let create = |name: &str| {
        CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.to_string())))
                .with_num_partitions(1)
                .with_replication_factor(1)])
    };
    let fds = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    // Hog the broker's descriptors with connections it accepts.
    let mut hogs = Vec::new();
    for _ in 0..400 {
        if let Ok(s) = std::net::TcpStream::connect(broker.bootstrap()) {
            hogs.push(s);
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while fds(broker.pid()) < 250 {
        assert!(
            std::time::Instant::now() < deadline,
            "fds {}",
            fds(broker.pid())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let starved: CreateTopicsResponse =
        admin.roundtrip(ApiKey::CreateTopics, 4, &create("starved"));
    let starved_code = starved.topics[0].error_code;
    drop(hogs);
    // Descriptors come back as the broker sees the hogs close.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut code = -1;
    while std::time::Instant::now() < deadline {
        if ready(&broker) {
            let r: CreateTopicsResponse =
                admin.roundtrip(ApiKey::CreateTopics, 4, &create("after"));
            code = r.topics[0].error_code;
            if code == 0 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        code, 0,
        "CreateTopics after the descriptors came back (starved: {starved_code})"
    );
    assert_eq!(
        clients::produce(
            &broker.bootstrap(),
            "after",
            &[TestRecord::value("back").in_partition(0)]
        ),
        vec![(0, 0)]
    );
    // It did stop (NOT_CONTROLLER while starved), and was restarted.
    assert_eq!(starved_code, 41, "NOT_CONTROLLER while descriptors ran out");
    let logs = broker.logs();
    assert!(
        logs.contains("metadata raft restarted"),
        "{}",
        broker.log_tail()
    );
}

/// A disk that is full when the broker starts: it starts anyway, serves
/// every acknowledged record it holds, and refuses produce with
/// KAFKA_STORAGE_ERROR (its logs are read-only until a restart), instead of
/// not starting at all. The disk is a small tmpfs, which takes root to
/// mount (the test command runs as root in CI); elsewhere it says so and
/// returns.
#[test]
fn a_broker_starts_read_only_on_a_full_disk() {
    use std::io::Write;
    let mnt = tempfile::tempdir().expect("mount point");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(mnt.path())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("cannot mount a tmpfs here (needs root): not run");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(mnt.path().to_path_buf());
    let tier = tempfile::tempdir().expect("tier dir");
    let tier_url = format!("file://{}", tier.path().display());
    let data = mnt.path().join("data");
    let start = |listen: &str| {
        Broker::builder()
            .data_dir(data.clone())
            .listen(listen)
            .args(["--tier-url", tier_url.as_str()])
            .start()
    };
    let mut broker = start("127.0.0.1:0");
    let topic = common::topic_name("fulldisk");
    clients::create_topic(&broker.bootstrap(), &topic, 1, &[]);
    let records: Vec<TestRecord> = (0..2000)
        .map(|i| TestRecord::value(format!("{i:06}").repeat(150)).in_partition(0))
        .collect();
    clients::produce(&broker.bootstrap(), &topic, &records);
    // The consumer below asks for a group coordinator: the offsets topic
    // is made now, while the metadata log can still be written.
    let mut asked = rdkafka::TopicPartitionList::new();
    asked.add_partition(&topic, 0);
    rdkafka::consumer::Consumer::committed_offsets(
        &clients::consumer(&broker.bootstrap(), &[]),
        asked,
        clients::OP_TIMEOUT,
    )
    .expect("committed offsets");
    broker.stop();
    // Fill what is left of the disk.
    let mut filler = std::fs::File::create(mnt.path().join("filler")).expect("filler");
    let block = vec![0u8; 64 << 10];
    while filler.write_all(&block).is_ok() {}
    drop(filler);

    // The same address (as a deployment has): nothing to register anew.
    let mut again = start(&broker.bootstrap());
    again.expect_error("the partition is read-only until a restart");
    again.expect_error("append failed");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(again.is_running(), "stopped: {}", again.log_tail());
        if again.admin_get("/ready").0 == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", again.log_tail());
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = clients::consume_ranges(
        &again.bootstrap(),
        &topic,
        &[(0, 0, 2000)],
        clients::OP_TIMEOUT,
    );
    assert_eq!(got.len(), 2000);
    let mut c = RawConn::connect(&again.bootstrap());
    let v = c.produce_version();
    let batch = raw::batch(
        &[raw::record(0, None, Some(b"more"), clients::now_ms())],
        Compression::None,
    );
    assert_eq!(
        c.produce(v, &topic, 0, batch, -1).0,
        56,
        "KAFKA_STORAGE_ERROR"
    );
    assert!(again.logs().contains("read-only until a restart"));
    drop(again);
    drop(broker);
}
