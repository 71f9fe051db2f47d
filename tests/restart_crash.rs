//! Durability: a clean restart keeps topics, ids, configs and data; a
//! kill -9 loses nothing acknowledged; a torn or corrupt segment tail is cut
//! back to the last whole batch on start.

mod common;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::clients::{self, TestRecord};
use common::raw::RawConn;
use common::{segments, Broker};
use rdkafka::producer::Producer;

#[test]
fn restart_keeps_topics_configs_and_data() {
    let mut broker = Broker::start();
    let bs = broker.bootstrap();
    let a = common::topic_name("restart-a");
    let b = common::topic_name("restart-b");
    clients::create_topic(&bs, &a, 3, &[]);
    clients::create_topic(&bs, &b, 2, &[("max.message.bytes", "200000")]);
    clients::alter_topic_configs(&bs, &a, &[("retention.ms", "123456789")]);
    let before = clients::describe_topic_configs(&bs, &a);
    assert_eq!(
        before
            .get("retention.ms")
            .and_then(|(v, _)| v.clone())
            .as_deref(),
        Some("123456789"),
        "retention.ms right after AlterConfigs"
    );
    let ids_before = RawConn::connect(&bs).topic_ids(&[&a, &b]);
    assert_eq!(
        ids_before.len(),
        2,
        "topic ids before restart: {ids_before:?}"
    );

    let ts = clients::now_ms() - 60_000;
    let recs_a: Vec<TestRecord> = (0..3000)
        .map(|i| TestRecord::keyed(format!("k{}", i % 50), format!("a-{i}")).at(ts + i))
        .collect();
    let recs_b: Vec<TestRecord> = (0..500)
        .map(|i| {
            TestRecord::value(vec![b'b'; 100 + i])
                .in_partition((i % 2) as i32)
                .at(ts)
        })
        .collect();
    let at_a = clients::produce(&bs, &a, &recs_a);
    let at_b = clients::produce(&bs, &b, &recs_b);

    broker.restart(); // SIGTERM, must exit 0, then start on the same data
    let bs = broker.bootstrap();

    assert_eq!(clients::partition_count(&bs, &a), Some(3));
    assert_eq!(clients::partition_count(&bs, &b), Some(2));
    let ids_after = RawConn::connect(&bs).topic_ids(&[&a, &b]);
    assert_eq!(ids_before, ids_after, "topic ids changed across restart");

    let cfg_a = clients::describe_topic_configs(&bs, &a);
    let (v, src) = cfg_a.get("retention.ms").expect("retention.ms described");
    assert_eq!(
        v.as_deref(),
        Some("123456789"),
        "retention.ms after restart"
    );
    assert!(
        clients::is_topic_override(src),
        "retention.ms source after restart: {src:?}"
    );
    let cfg_b = clients::describe_topic_configs(&bs, &b);
    let (v, src) = cfg_b
        .get("max.message.bytes")
        .expect("max.message.bytes described");
    assert_eq!(
        v.as_deref(),
        Some("200000"),
        "max.message.bytes after restart"
    );
    assert!(
        clients::is_topic_override(src),
        "max.message.bytes source: {src:?}"
    );

    for (topic, recs, at, parts) in [(&a, &recs_a, &at_a, 3), (&b, &recs_b, &at_b, 2)] {
        let got = clients::consume_all(&bs, topic, parts, Duration::from_secs(60));
        assert_eq!(got.len(), recs.len(), "{topic}: records after restart");
        let by_pos: HashMap<(i32, i64), &TestRecord> =
            at.iter().copied().zip(recs.iter()).collect();
        for c in &got {
            let want = by_pos.get(&(c.partition, c.offset)).unwrap_or_else(|| {
                panic!("{topic}: unexpected record at {}/{}", c.partition, c.offset)
            });
            want.matches(c)
                .unwrap_or_else(|e| panic!("{topic} {}/{}: {e}", c.partition, c.offset));
        }
    }

    // Producing continues after the old end.
    let hw0 = clients::watermarks(&bs, &b, 0).1;
    let more = vec![TestRecord::value("after restart")
        .in_partition(0)
        .at(clients::now_ms())];
    let at = clients::produce(&bs, &b, &more);
    assert_eq!(at[0], (0, hw0), "first offset after restart");

    broker.stop();
    broker.assert_no_error_logs();
}

/// kill -9 while an idempotent acks=all producer is producing; after a
/// restart every acknowledged record id is there exactly once, in order.
#[test]
fn kill9_loses_no_acknowledged_record() {
    kill9_case(&[]);
}

/// The same with acks=all sync rounds fsyncing each partition on its own.
#[test]
fn kill9_loses_no_acknowledged_record_with_fdatasync_rounds() {
    kill9_case(&["--sync-rounds-syncfs", "false"]);
}

fn kill9_case(args: &[&str]) {
    const PARTITIONS: i32 = 3;
    let mut broker = Broker::builder().args(args.iter().copied()).start();
    let bs = broker.bootstrap();
    let topic = common::topic_name("crash");
    clients::create_topic(&bs, &topic, PARTITIONS, &[]);

    let acked: Arc<Mutex<Vec<(u64, i32, i64)>>> = Arc::default();
    let failed: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producer_thread = {
        let (acked, failed, stop, bs, topic) = (
            acked.clone(),
            failed.clone(),
            stop.clone(),
            bs.clone(),
            topic.clone(),
        );
        std::thread::spawn(move || {
            let p = clients::producer(
                &bs,
                &[
                    ("enable.idempotence", "true"),
                    ("acks", "all"),
                    ("linger.ms", "2"),
                    ("message.timeout.ms", "5000"),
                    ("request.timeout.ms", "2000"),
                    ("max.in.flight.requests.per.connection", "5"),
                ],
            );
            let mut inflight = VecDeque::new();
            let mut id = 0u64;
            let settle = |entry: (u64, rdkafka::producer::DeliveryFuture)| {
                let (id, f) = entry;
                match clients::await_delivery(f) {
                    Ok((p, o)) => acked.lock().unwrap().push((id, p, o)),
                    Err(e) => failed.lock().unwrap().push((id, e.to_string())),
                }
            };
            while !stop.load(Ordering::Relaxed) {
                let r = TestRecord::value(format!("id={id:010}"))
                    .in_partition((id % PARTITIONS as u64) as i32);
                inflight.push_back((id, clients::enqueue(&p, &topic, &r)));
                id += 1;
                if inflight.len() >= 1000 {
                    settle(inflight.pop_front().unwrap());
                }
            }
            // Outstanding records either were acknowledged before the kill
            // or fail after message.timeout.ms.
            while let Some(e) = inflight.pop_front() {
                settle(e);
            }
            let _ = p.flush(Duration::from_secs(1));
            id
        })
    };

    // Let it run until a good number of acks are in, then crash the broker.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 5_000 {
        assert!(
            Instant::now() < deadline,
            "producer made too little progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    broker.kill9();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let sent = producer_thread.join().expect("producer thread");
    let acked = acked.lock().unwrap().clone();
    let failed = failed.lock().unwrap().len();
    eprintln!(
        "crash test: enqueued {sent}, acknowledged {}, failed {failed}",
        acked.len()
    );
    assert_eq!(
        acked.len() as u64 + failed as u64,
        sent,
        "every record is acked or failed"
    );

    broker.restart();
    let bs = broker.bootstrap();
    let got = clients::consume_all(&bs, &topic, PARTITIONS, Duration::from_secs(120));

    // Everything present is unique and in order per partition.
    let mut where_is: HashMap<u64, (i32, i64)> = HashMap::new();
    let mut last: HashMap<i32, u64> = HashMap::new();
    for c in &got {
        let v = c.record.value.as_deref().unwrap_or_default();
        let id: u64 = std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.strip_prefix("id="))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "{}/{}: bad value {:?}",
                    c.partition,
                    c.offset,
                    String::from_utf8_lossy(v)
                )
            });
        assert_eq!(
            (id % PARTITIONS as u64) as i32,
            c.partition,
            "id {id} in the wrong partition"
        );
        if let Some(prev) = where_is.insert(id, (c.partition, c.offset)) {
            panic!(
                "id {id} stored twice: at {prev:?} and {}/{}",
                c.partition, c.offset
            );
        }
        if let Some(prev) = last.insert(c.partition, id) {
            assert!(id > prev, "partition {}: id {id} after {prev}", c.partition);
        }
    }
    // Every acknowledged id is where the ack said.
    let mut lost = Vec::new();
    for (id, p, o) in &acked {
        match where_is.get(id) {
            Some(pos) if *pos == (*p, *o) => {}
            Some(pos) => panic!("acked id {id} at {p}/{o} but found at {pos:?}"),
            None => lost.push(*id),
        }
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged record(s) lost after kill -9, e.g. ids {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );

    // And a new idempotent producer carries on.
    let p = clients::producer(&bs, &[("enable.idempotence", "true"), ("acks", "all")]);
    let recs: Vec<TestRecord> = (0..PARTITIONS)
        .map(|p| TestRecord::value("after crash").in_partition(p))
        .collect();
    let at = clients::produce_all(&p, &topic, &recs);
    for (p, o) in at {
        let expected = got.iter().filter(|c| c.partition == p).count() as i64;
        assert_eq!(
            o, expected,
            "partition {p}: first offset after crash recovery"
        );
    }
    broker.stop();
    broker.assert_no_error_logs();
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    /// Cut the file in the middle of its last batch.
    Truncate,
    /// Flip bytes inside the last batch's records (CRC no longer matches).
    FlipBytes,
}

#[derive(Clone, Copy, Debug)]
enum Shutdown {
    Sigterm,
    Kill9,
}

fn damaged_tail(damage: Damage, shutdown: Shutdown) {
    // The tail stays in the active segment through a clean stop (no
    // shutdown upload seals it), so the restart rescans it.
    let mut broker = Broker::builder()
        .args(["--tier-shutdown-upload-timeout-ms", "0"])
        .start();
    let bs = broker.bootstrap();
    let topic = common::topic_name("torn");
    clients::create_topic(&bs, &topic, 1, &[]);

    // 20 groups of 50 records, flushed one group at a time, so the segment
    // holds many batches.
    let ts = clients::now_ms() - 60_000;
    let producer = clients::producer(&bs, &[("linger.ms", "50")]);
    let mut expected: HashMap<i64, TestRecord> = HashMap::new();
    for g in 0..20 {
        let group: Vec<TestRecord> = (0..50)
            .map(|i| {
                let n = g * 50 + i;
                TestRecord::keyed(format!("k{n}"), format!("record {n} {}", "x".repeat(80)))
                    .at(ts + n)
            })
            .collect();
        let at = clients::produce_all(&producer, &topic, &group);
        producer.flush(clients::OP_TIMEOUT).expect("flush");
        for (r, (_, o)) in group.into_iter().zip(at) {
            expected.insert(o, r);
        }
    }
    drop(producer);

    match shutdown {
        Shutdown::Sigterm => {
            broker.stop();
        }
        Shutdown::Kill9 => broker.kill9(),
    }

    let seg = segments::last_nonempty_segment(broker.data_dir(), &topic, 0);
    let batches = segments::batches(&seg);
    assert!(
        batches.len() >= 2,
        "expected several batches in {}, got {batches:?}",
        seg.display()
    );
    let last = batches.last().unwrap().clone();
    let file_len = std::fs::metadata(&seg).unwrap().len();
    assert_eq!(
        last.position + last.size,
        file_len,
        "segment {} does not end on a batch boundary before damage",
        seg.display()
    );
    assert!(last.size > 100, "last batch too small to damage: {last:?}");
    match damage {
        Damage::Truncate => {
            let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
            f.set_len(last.position + last.size / 2).unwrap();
            f.sync_all().unwrap();
        }
        Damage::FlipBytes => {
            let mut data = std::fs::read(&seg).unwrap();
            let n = data.len();
            for b in &mut data[n - 10..n - 7] {
                *b ^= 0xFF;
            }
            std::fs::write(&seg, &data).unwrap();
        }
    }

    broker.restart();
    let bs = broker.bootstrap();
    let (low, high) = clients::watermarks(&bs, &topic, 0);
    assert_eq!(low, 0);
    assert_eq!(
        high, last.base_offset,
        "{damage:?} after {shutdown:?}: high watermark should fall back to the damaged batch's base offset"
    );
    let got = clients::consume_ranges(&bs, &topic, &[(0, 0, high)], Duration::from_secs(60));
    assert_eq!(got.len() as i64, high);
    for c in &got {
        expected[&c.offset]
            .matches(c)
            .unwrap_or_else(|e| panic!("offset {}: {e}", c.offset));
    }

    // Producing continues at the truncation point.
    let more: Vec<TestRecord> = (0..50)
        .map(|i| {
            TestRecord::keyed(format!("new{i}"), format!("after damage {i}")).at(clients::now_ms())
        })
        .collect();
    let at = clients::produce(&bs, &topic, &more);
    for (i, (_, o)) in at.iter().enumerate() {
        assert_eq!(*o, high + i as i64, "offset of new record {i}");
    }
    let got = clients::consume_ranges(
        &bs,
        &topic,
        &[(0, high, high + 50)],
        Duration::from_secs(60),
    );
    for (want, c) in more.iter().zip(&got) {
        want.matches(c)
            .unwrap_or_else(|e| panic!("new record at {}: {e}", c.offset));
    }
    assert_eq!(got.len(), 50);
    broker.assert_running();
    // Damage is expected to be reported; a panic never is.
    let panics: Vec<String> = broker
        .error_log_lines()
        .into_iter()
        .filter(|l| l.contains("panicked"))
        .collect();
    assert!(panics.is_empty(), "broker panicked:\n{}", panics.join("\n"));
}

#[test]
fn torn_tail_after_sigterm() {
    damaged_tail(Damage::Truncate, Shutdown::Sigterm);
}

#[test]
fn torn_tail_after_kill9() {
    damaged_tail(Damage::Truncate, Shutdown::Kill9);
}

#[test]
fn flipped_tail_bytes_after_sigterm() {
    damaged_tail(Damage::FlipBytes, Shutdown::Sigterm);
}

#[test]
fn flipped_tail_bytes_after_kill9() {
    damaged_tail(Damage::FlipBytes, Shutdown::Kill9);
}
