//! Transactions with the rdkafka crate (librdkafka) against the real
//! broker: commit and abort seen by read_committed and read_uncommitted
//! consumers, and commits that survive a kill -9 right after EndTxn
//! answered (the markers are written by the coordinator after the
//! restart, from its prepared state).

mod common;

use std::time::{Duration, Instant};

use common::clients::{consumer, create_topic, producer};
use common::Broker;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);

fn txn_producer(bootstrap: &str, id: &str) -> FutureProducer {
    let p = producer(bootstrap, &[("transactional.id", id)]);
    p.init_transactions(TIMEOUT).expect("init_transactions");
    p
}

/// Sends `values` to `partitions` round robin inside the open transaction
/// and waits for every delivery.
fn send(p: &FutureProducer, topic: &str, partitions: i32, values: &[String]) {
    let futures: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            p.send_result(
                FutureRecord::<(), _>::to(topic)
                    .payload(v.as_bytes())
                    .partition(i as i32 % partitions),
            )
            .expect("enqueue")
        })
        .collect();
    for f in futures {
        common::clients::block_on(f)
            .expect("delivery future")
            .expect("delivered");
    }
}

/// Values of `topic` from offset 0 with `isolation`: polls until `expect`
/// arrived, then a second more for any that should not be there.
fn read(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    isolation: &str,
    expect: usize,
) -> Vec<String> {
    let c: BaseConsumer = consumer(bootstrap, &[("isolation.level", isolation)]);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("add partition");
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    let mut grace: Option<Instant> = None;
    while Instant::now() < deadline && grace.is_none_or(|g| Instant::now() < g) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
        if out.len() >= expect && grace.is_none() {
            grace = Some(Instant::now() + Duration::from_secs(1));
        }
    }
    out.sort();
    out
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

#[test]
fn commits_are_read_and_aborts_are_dropped_by_read_committed_only() {
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    let topic = common::topic_name("txn");
    create_topic(&bootstrap, &topic, 2, &[]);
    let p = txn_producer(&bootstrap, &common::topic_name("rs-txn"));
    let mut committed = Vec::new();
    let mut all = Vec::new();
    for t in 0..6 {
        let v = values(&format!("t{t}"), 25);
        p.begin_transaction().expect("begin");
        send(&p, &topic, 2, &v);
        if t % 2 == 0 {
            p.commit_transaction(TIMEOUT).expect("commit");
            committed.extend(v.iter().cloned());
        } else {
            p.abort_transaction(TIMEOUT).expect("abort");
        }
        all.extend(v);
    }
    committed.sort();
    all.sort();
    assert_eq!(
        read(&bootstrap, &topic, 2, "read_committed", committed.len()),
        committed
    );
    assert_eq!(
        read(&bootstrap, &topic, 2, "read_uncommitted", all.len()),
        all
    );
    broker.assert_no_error_logs();
}

#[test]
fn list_offsets_latest_is_the_last_stable_offset_for_read_committed() {
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    let topic = common::topic_name("txn-lso");
    create_topic(&bootstrap, &topic, 1, &[]);
    common::clients::produce(
        &bootstrap,
        &topic,
        &(0..3)
            .map(|i| common::clients::TestRecord::value(format!("plain-{i}")))
            .collect::<Vec<_>>(),
    );
    let p = txn_producer(&bootstrap, &common::topic_name("rs-lso"));
    p.begin_transaction().expect("begin");
    send(&p, &topic, 1, &values("open", 2));
    let mut raw = common::raw::RawConn::connect(&bootstrap);
    let latest = |raw: &mut common::raw::RawConn, isolation| {
        raw.list_offset_isolated(&topic, 0, -1, isolation)
    };
    assert_eq!(
        latest(&mut raw, 0),
        5,
        "read_uncommitted: the high watermark"
    );
    assert_eq!(
        latest(&mut raw, 1),
        3,
        "read_committed: the open transaction's start"
    );
    p.commit_transaction(TIMEOUT).expect("commit");
    // The marker lands after EndTxn answered.
    let deadline = Instant::now() + TIMEOUT;
    while latest(&mut raw, 1) != 6 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!((latest(&mut raw, 0), latest(&mut raw, 1)), (6, 6));
    broker.assert_no_error_logs();
}

/// Requests a transaction refuses, each with its Kafka code: a produce to a
/// partition never added (KIP-890), wrong producer ids and epochs, an
/// unknown id, a timeout above the maximum, the other outcome after a
/// commit, and a fenced producer.
#[test]
fn bad_transaction_requests_get_clear_errors() {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    const INVALID_TXN_STATE: i16 = 48;
    const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
    const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
    const PRODUCER_FENCED: i16 = 90;

    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    let topic = common::topic_name("txn-bad");
    create_topic(&bootstrap, &topic, 2, &[]);
    let mut c = common::raw::RawConn::connect(&bootstrap);
    let id = |s: &str| TransactionalId(StrBytes::from_string(s.to_string()));
    let init = |c: &mut common::raw::RawConn, timeout_ms: i32| {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(id("bad")))
            .with_transaction_timeout_ms(timeout_ms)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let r: InitProducerIdResponse = c.roundtrip(ApiKey::InitProducerId, 4, &req);
        (r.error_code, r.producer_id.0, r.producer_epoch)
    };
    let (code, pid, epoch) = init(&mut c, 60_000);
    assert_eq!((code, epoch), (0, 0));
    assert_eq!(init(&mut c, 900_001).0, INVALID_TRANSACTION_TIMEOUT);
    let (_, pid, epoch) = {
        let again = init(&mut c, 60_000);
        assert_eq!((again.1, again.2), (pid, 1), "a new init bumps the epoch");
        again
    };
    let produce = |c: &mut common::raw::RawConn, partition: i32, seq: i32, epoch: i16| {
        let batch = common::raw::producer_batch(pid, epoch, seq, 1, "bad", true, false);
        let req = ProduceRequest::default()
            .with_transactional_id(Some(id("bad")))
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.clone())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch))])]);
        let r: ProduceResponse = c.roundtrip(ApiKey::Produce, 9, &req);
        r.responses[0].partition_responses[0].error_code
    };
    assert_eq!(produce(&mut c, 0, 0, epoch), INVALID_TXN_STATE, "not added");
    let add = |c: &mut common::raw::RawConn, txn: &str, pid: i64, epoch: i16| {
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(id(txn))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.clone())))
                .with_partitions(vec![0])]);
        let r: AddPartitionsToTxnResponse = c.roundtrip(ApiKey::AddPartitionsToTxn, 3, &req);
        r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
    };
    assert_eq!(add(&mut c, "bad", pid, epoch), 0);
    assert_eq!(
        produce(&mut c, 1, 0, epoch),
        INVALID_TXN_STATE,
        "partition 1 was not added"
    );
    assert_eq!(produce(&mut c, 0, 0, epoch), 0, "partition 0 was");
    assert_eq!(
        add(&mut c, "bad", pid + 1, epoch),
        INVALID_PRODUCER_ID_MAPPING
    );
    assert_eq!(
        add(&mut c, "never-seen", pid, epoch),
        INVALID_PRODUCER_ID_MAPPING
    );
    let end = |c: &mut common::raw::RawConn, epoch: i16, commit: bool| {
        let req = EndTxnRequest::default()
            .with_transactional_id(id("bad"))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit);
        let r: EndTxnResponse = c.roundtrip(ApiKey::EndTxn, 3, &req);
        r.error_code
    };
    assert_eq!(
        end(&mut c, epoch + 1, true),
        PRODUCER_FENCED,
        "a future epoch"
    );
    assert_eq!(end(&mut c, epoch, true), 0);
    assert_eq!(end(&mut c, epoch, true), 0, "a retried commit");
    assert_eq!(
        end(&mut c, epoch, false),
        INVALID_TXN_STATE,
        "an abort after the commit"
    );
    // A new producer of the id fences this one.
    assert_eq!(init(&mut c, 60_000).2, epoch + 1);
    assert_eq!(add(&mut c, "bad", pid, epoch), PRODUCER_FENCED);
    broker.assert_no_error_logs();
}

#[test]
fn commits_answered_before_a_kill_9_are_completed_after_the_restart() {
    let mut broker = Broker::start();
    let topic = common::topic_name("txn-crash");
    create_topic(&broker.bootstrap(), &topic, 3, &[]);
    let id = common::topic_name("rs-crash");
    let mut committed = Vec::new();
    let mut opened = Vec::new();
    for cycle in 0..5 {
        let bootstrap = broker.bootstrap();
        let p = txn_producer(&bootstrap, &id);
        // One transaction committed, then one left open: kill -9 as soon
        // as EndTxn answered, before its markers may be written.
        let v = values(&format!("c{cycle}"), 30);
        p.begin_transaction().expect("begin");
        send(&p, &topic, 3, &v);
        p.commit_transaction(TIMEOUT).expect("commit");
        committed.extend(v);
        let open = values(&format!("o{cycle}"), 10);
        p.begin_transaction().expect("begin");
        send(&p, &topic, 3, &open);
        opened.extend(open);
        broker.kill9();
        drop(p);
        broker.restart();
    }
    // The next producer of the id aborts the open transaction.
    let _p = txn_producer(&broker.bootstrap(), &id);
    committed.sort();
    let got = read(
        &broker.bootstrap(),
        &topic,
        3,
        "read_committed",
        committed.len(),
    );
    assert_eq!(got, committed, "exactly the committed records");
    // acks=all: the open transactions' records were durable and stay in
    // the log, aborted.
    let mut all: Vec<String> = committed.iter().chain(&opened).cloned().collect();
    all.sort();
    let got = read(
        &broker.bootstrap(),
        &topic,
        3,
        "read_uncommitted",
        all.len(),
    );
    assert_eq!(got, all);
    broker.assert_no_error_logs();
}
