//! One topic with 1,000 partitions: created, produced to, consumed.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::clients::{self, TestRecord};
use common::Broker;

const PARTITIONS: i32 = 1_000;
const PER_PARTITION: i64 = 3;

#[test]
fn thousand_partitions() {
    let broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = common::topic_name("wide");
    clients::create_topic(&bs, &topic, PARTITIONS, &[]);

    let c = clients::consumer(&bs, &[]);
    let md = rdkafka::consumer::Consumer::fetch_metadata(&c, Some(&topic), clients::OP_TIMEOUT)
        .expect("metadata");
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .expect("topic in metadata");
    assert_eq!(t.partitions().len(), PARTITIONS as usize);
    for p in t.partitions() {
        assert!(
            p.error().is_none(),
            "partition {} error {:?}",
            p.id(),
            p.error()
        );
        assert!(p.leader() >= 0, "partition {} has no leader", p.id());
    }
    drop(c);

    let ts = clients::now_ms() - 10_000;
    let records: Vec<TestRecord> = (0..PARTITIONS)
        .flat_map(|p| {
            (0..PER_PARTITION).map(move |i| {
                TestRecord::keyed(format!("p{p}"), format!("partition {p} record {i}"))
                    .in_partition(p)
                    .at(ts + i)
            })
        })
        .collect();
    let at = clients::produce(&bs, &topic, &records);
    let mut expected: HashMap<(i32, i64), &TestRecord> = HashMap::new();
    for (r, (p, o)) in records.iter().zip(&at) {
        assert_eq!(Some(*p), r.partition);
        assert!((0..PER_PARTITION).contains(o), "partition {p}: offset {o}");
        expected.insert((*p, *o), r);
    }

    let ranges: Vec<(i32, i64, i64)> = (0..PARTITIONS).map(|p| (p, 0, PER_PARTITION)).collect();
    let got = clients::consume_ranges(&bs, &topic, &ranges, Duration::from_secs(120));
    assert_eq!(got.len(), records.len());
    for c in &got {
        expected[&(c.partition, c.offset)]
            .matches(c)
            .unwrap_or_else(|e| panic!("{}/{}: {e}", c.partition, c.offset));
    }

    // Kafka's layout: one directory per partition.
    let dirs = std::fs::read_dir(broker.data_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(&format!("{topic}-")))
                .is_some_and(|p| p.parse::<i32>().is_ok())
        })
        .count();
    assert_eq!(
        dirs, PARTITIONS as usize,
        "partition directories in the data dir"
    );
    broker.assert_no_error_logs();
}

/// A descriptor per segment: the broker raises its soft limit on open
/// files to the hard one at start, and logs it.
#[test]
fn the_soft_open_files_limit_is_raised_to_the_hard_one() {
    let broker = Broker::builder().soft_open_files_limit(512).start();
    // The limit is raised (and logged) just after the listeners are bound.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !broker.logs().contains("open files limit") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            broker.log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", broker.pid())).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    // "Max open files <soft> <hard> files"
    assert_eq!(fields[3], fields[4], "{line}");
    assert_ne!(fields[3], "512", "{line}");
    assert!(
        broker.logs().contains("open files limit"),
        "{}",
        broker.log_tail()
    );
}

/// More segments than the broker may hold open: segment files open when
/// used and the least recently used close beyond the budget (half the open
/// files limit here), so every segment is written, read back and found
/// again after a restart, where a descriptor per segment would run out.
#[test]
fn more_segments_than_open_files_are_written_read_and_reopened() {
    const PARTITIONS: i32 = 200;
    const ROUNDS: i64 = 4;
    let mut broker = Broker::builder().open_files_limit(256).start();
    let bs = broker.bootstrap();
    let topic = common::topic_name("many-segments");
    // One batch of a round fills a segment: each round rolls a new one.
    clients::create_topic(&bs, &topic, PARTITIONS, &[("segment.bytes", "600")]);
    let mut expected: HashMap<(i32, i64), TestRecord> = HashMap::new();
    for round in 0..ROUNDS {
        let records: Vec<TestRecord> = (0..PARTITIONS)
            .map(|p| {
                TestRecord::keyed(
                    format!("p{p}"),
                    format!("round {round} {}", "v".repeat(500)),
                )
                .in_partition(p)
            })
            .collect();
        let at = clients::produce(&bs, &topic, &records);
        for (r, (p, o)) in records.into_iter().zip(at) {
            assert_eq!(o, round, "partition {p}");
            expected.insert((p, o), r);
        }
    }
    let segments = count_segment_files(broker.data_dir(), &topic);
    assert!(
        segments >= (PARTITIONS as usize) * ROUNDS as usize,
        "{segments} segment files: more than the open files limit of 256"
    );

    let ranges: Vec<(i32, i64, i64)> = (0..PARTITIONS).map(|p| (p, 0, ROUNDS)).collect();
    let check = |broker: &Broker| {
        let got = clients::consume_ranges(
            &broker.bootstrap(),
            &topic,
            &ranges,
            Duration::from_secs(120),
        );
        assert_eq!(got.len(), expected.len());
        for c in &got {
            expected[&(c.partition, c.offset)]
                .matches(c)
                .unwrap_or_else(|e| panic!("{}/{}: {e}", c.partition, c.offset));
        }
        let metrics = broker.metrics();
        let open = metrics["strata_log_open_segment_files"];
        let opens = metrics["strata_log_segment_file_opens_total"];
        assert!(open <= 128.0, "{open} segment files open, budget 128");
        assert!(
            opens > 128.0,
            "{opens} opens: files beyond the budget were closed and opened again"
        );
    };
    check(&broker);
    broker.stop();
    broker.restart();
    check(&broker);
    assert!(
        broker.logs().contains("max_open_segment_files=128"),
        "the budget is logged: {}",
        broker.log_tail()
    );
    broker.assert_no_error_logs();
}

fn count_segment_files(data_dir: &std::path::Path, topic: &str) -> usize {
    std::fs::read_dir(data_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{topic}-"))
        })
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().filter_map(|e| e.ok()))
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .count()
}
