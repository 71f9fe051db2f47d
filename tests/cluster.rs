//! Several brokers, one cluster: a metadata quorum of three voters
//! (`--controller-quorum-voters`), partitions spread over the brokers, and
//! real clients that find each partition's leader and each group's
//! coordinator on their own.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::clients::{self, TestRecord};
use common::Broker;
use rdkafka::consumer::Consumer;
use rdkafka::Message;

/// Three brokers, each a metadata voter on its own controller port.
fn three_brokers() -> Vec<Broker> {
    brokers(3, 3)
}

/// `n` brokers, the first `voters` of them metadata voters and the others
/// learners, each on its own controller port.
fn brokers(n: usize, voters: usize) -> Vec<Broker> {
    brokers_with(n, voters, &[])
}

/// [`brokers`] with `extra` arguments for each.
fn brokers_with(n: usize, voters: usize, extra: &[&str]) -> Vec<Broker> {
    brokers_with_env(n, voters, extra, &[])
}

/// [`brokers_with`], each broker also with the environment `envs`.
fn brokers_with_env(n: usize, voters: usize, extra: &[&str], envs: &[(&str, &str)]) -> Vec<Broker> {
    brokers_built(n, voters, extra, |_, mut b| {
        for (k, v) in envs {
            b = b.env(*k, *v);
        }
        b
    })
}

/// [`brokers_with`], each broker's builder (node `i`, from 1) finished by
/// `build`.
fn brokers_built(
    n: usize,
    voters: usize,
    extra: &[&str],
    build: impl Fn(usize, common::BrokerBuilder) -> common::BrokerBuilder,
) -> Vec<Broker> {
    let session: &[&str] = if extra.contains(&"--broker-session-timeout-ms") {
        &[]
    } else {
        &["--broker-session-timeout-ms", "2000"]
    };
    let addrs: Vec<String> = (0..n).map(|_| common::free_addr()).collect();
    let voters = addrs[..voters]
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}@{a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let brokers: Vec<Broker> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            // A fixed Kafka port, so a restarted broker is where clients
            // last saw it, as in a real deployment.
            build(i + 1, Broker::builder())
                .listen(common::free_addr())
                .args([
                    "--node-id".to_string(),
                    (i + 1).to_string(),
                    "--controller-listen".to_string(),
                    a.clone(),
                    "--controller-quorum-voters".to_string(),
                    voters.clone(),
                ])
                .args(session.iter().chain(extra).map(|a| a.to_string()))
                .start()
        })
        .collect();
    for b in &brokers {
        common::wait_ready(&b.admin_addr());
    }
    brokers
}

fn bootstrap(brokers: &[Broker]) -> String {
    brokers
        .iter()
        .map(Broker::bootstrap)
        .collect::<Vec<_>>()
        .join(",")
}

/// Partition -> leader id, as broker `b` describes `topic`.
fn leaders(b: &Broker, topic: &str) -> BTreeMap<i32, i32> {
    let consumer = clients::metadata_client(&b.bootstrap());
    let md = consumer
        .fetch_metadata(Some(topic), clients::OP_TIMEOUT)
        .expect("metadata");
    let t = &md.topics()[0];
    assert!(t.error().is_none(), "{:?}", t.error());
    t.partitions()
        .iter()
        .map(|p| (p.id(), p.leader()))
        .collect()
}

#[test]
fn three_brokers_share_metadata_spread_partitions_and_serve_clients() {
    let mut brokers = three_brokers();
    let all = bootstrap(&brokers);

    // Created through one broker, known to all: every broker leads some
    // of the six partitions.
    clients::create_topic(&brokers[1].bootstrap(), "orders", 6, &[]);
    let by_first = leaders(&brokers[0], "orders");
    assert_eq!(by_first.len(), 6);
    for b in &brokers[1..] {
        assert_eq!(leaders(b, "orders"), by_first);
    }
    let mut led: Vec<i32> = by_first.values().copied().collect();
    led.sort_unstable();
    led.dedup();
    assert_eq!(led, vec![1, 2, 3], "{by_first:?}");
    let consumer = clients::consumer(&brokers[2].bootstrap(), &[]);
    let md = consumer
        .fetch_metadata(None, clients::OP_TIMEOUT)
        .expect("metadata");
    assert_eq!(md.brokers().len(), 3);

    // Keyed records, acks=all, to whichever broker leads each partition.
    let records: Vec<TestRecord> = (0..600)
        .map(|i| TestRecord::keyed(format!("k{}", i % 37), format!("v{i}")))
        .collect();
    let placed = clients::produce(&all, "orders", &records);
    assert_eq!(placed.len(), 600);

    // A consumer group reads everything back through its coordinator
    // (the leader of the group's offsets partition) and commits.
    let group = clients::consumer(
        &all,
        &[
            ("group.id", "cluster-readers"),
            ("auto.offset.reset", "earliest"),
            ("enable.auto.commit", "true"),
            ("enable.auto.offset.store", "true"),
        ],
    );
    group.subscribe(&["orders"]).expect("subscribe");
    let mut seen: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while seen.values().map(Vec::len).sum::<usize>() < 600 {
        assert!(
            Instant::now() < deadline,
            "read {:?}",
            seen.values().map(Vec::len).collect::<Vec<_>>()
        );
        if let Some(m) = group.poll(Duration::from_millis(500)) {
            let m = m.expect("message");
            let v = String::from_utf8(m.payload().expect("value").to_vec()).unwrap();
            seen.entry(m.partition()).or_default().push((m.offset(), v));
        }
    }
    // Each record once, at the offset its producer was told.
    let mut sent: BTreeMap<(i32, i64), &[u8]> = BTreeMap::new();
    for ((part, offset), r) in placed.iter().zip(&records) {
        sent.insert((*part, *offset), r.value.as_deref().expect("value"));
    }
    for (p, got) in &seen {
        let offsets: Vec<i64> = got.iter().map(|(o, _)| *o).collect();
        assert_eq!(
            offsets,
            (0..got.len() as i64).collect::<Vec<_>>(),
            "partition {p}"
        );
        for (o, v) in got {
            assert_eq!(sent.get(&(*p, *o)).copied(), Some(v.as_bytes()), "{p}@{o}");
        }
    }
    // Closing commits what was read (LeaveGroup after it); a new member of
    // the group finds those offsets at the coordinator.
    drop(group);
    let check = clients::consumer(&all, &[("group.id", "cluster-readers")]);
    let mut asked = rdkafka::TopicPartitionList::new();
    for p in 0..6 {
        asked.add_partition("orders", p);
    }
    let committed = check
        .committed_offsets(asked, clients::OP_TIMEOUT)
        .expect("committed offsets");
    let total: i64 = committed
        .elements()
        .iter()
        .filter_map(|e| e.offset().to_raw())
        .sum();
    assert_eq!(total, 600);

    // The metadata quorum outlives one broker: with broker 1 down the
    // other two fence it (clients stop seeing it, its partitions have no
    // leader) and place a new topic on themselves alone, every partition
    // writable; broker 1 comes back unfenced with its partitions' data.
    brokers[0].kill9();
    let brokers_seen = |b: &Broker| {
        clients::metadata_client(&b.bootstrap())
            .fetch_metadata(None, clients::OP_TIMEOUT)
            .map(|m| m.brokers().len())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while brokers_seen(&brokers[2]) != 2 {
        assert!(Instant::now() < deadline, "broker 1 never fenced");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(leaders(&brokers[2], "orders").values().all(|l| *l != 1));
    clients::create_topic(&brokers[2].bootstrap(), "while-one-is-down", 4, &[]);
    let mut led: Vec<i32> = leaders(&brokers[1], "while-one-is-down")
        .into_values()
        .collect();
    led.sort_unstable();
    assert!(led.iter().all(|l| *l == 2 || *l == 3), "{led:?}");
    let up = bootstrap(&brokers[1..]);
    let spread: Vec<TestRecord> = (0..4)
        .map(|p| TestRecord::value("x").in_partition(p))
        .collect();
    assert_eq!(clients::produce(&up, "while-one-is-down", &spread).len(), 4);
    brokers[0].restart();
    common::wait_ready(&brokers[0].admin_addr());
    let deadline = Instant::now() + Duration::from_secs(30);
    while brokers_seen(&brokers[2]) != 3 {
        assert!(Instant::now() < deadline, "broker 1 never unfenced");
        std::thread::sleep(Duration::from_millis(200));
    }
    let on_first: Vec<i32> = by_first
        .iter()
        .filter(|(_, l)| **l == 1)
        .map(|(p, _)| *p)
        .collect();
    let all = bootstrap(&brokers);
    // Every broker's view lifts the fence shortly after the leader's.
    for p in on_first {
        let high = high_watermark(&all, "orders", p);
        assert_eq!(high, seen[&p].len() as i64, "partition {p} after kill -9");
    }
}

/// A partition's high watermark, asked until a leader answers (30 s at
/// most). A new client each attempt: one that met the partition without a
/// leader, or every broker it knew down, may keep that view for a while.
fn high_watermark(bootstrap: &str, topic: &str, p: i32) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let consumer = clients::metadata_client(bootstrap);
        match consumer.fetch_watermarks(topic, p, Duration::from_secs(5)) {
            Ok((_, high)) => return high,
            Err(e) => {
                assert!(Instant::now() < deadline, "{topic}-{p}: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Sends `count` numbered records of about 200 bytes to `topic` at once
/// (`n` numbers them on), notes each acknowledged one by its offset and
/// returns how many were not acknowledged.
fn send_numbered(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    n: &mut usize,
    count: usize,
    acked: &mut BTreeMap<i64, String>,
) -> usize {
    let futures: Vec<_> = (0..count)
        .map(|_| {
            *n += 1;
            let v = format!("{topic}-{:06}-{}", *n, "x".repeat(180));
            (
                v.clone(),
                clients::enqueue(producer, topic, &TestRecord::value(v)),
            )
        })
        .collect();
    let mut failed = 0;
    for (v, f) in futures {
        match clients::await_delivery(f) {
            Ok((_, o)) => {
                acked.insert(o, v);
            }
            Err(_) => failed += 1,
        }
    }
    failed
}

/// A consumed record's value as text.
fn value_of(c: &clients::Consumed) -> String {
    String::from_utf8(c.record.value.clone().expect("a value").to_vec()).expect("utf-8")
}

/// Creates `topic` with the replicas `named` (one list per partition).
fn create_assigned(bootstrap: &str, topic: &str, named: &[&[i32]]) {
    use rdkafka::admin::{NewTopic, TopicReplication};
    let admin = clients::admin(bootstrap);
    let r = futures::executor::block_on(admin.create_topics(
        [&NewTopic::new(
            topic,
            named.len() as i32,
            TopicReplication::Variable(named),
        )],
        &clients::admin_opts(),
    ))
    .expect("CreateTopics");
    assert!(r[0].is_ok(), "{r:?}");
}

/// `n` records `{prefix}-{i:04}` spread over `partitions`, produced to
/// `topic`: the records and where each landed.
fn produce_spread(
    bootstrap: &str,
    topic: &str,
    prefix: &str,
    n: usize,
    partitions: usize,
) -> (Vec<TestRecord>, Vec<(i32, i64)>) {
    let records: Vec<TestRecord> = (0..n)
        .map(|i| {
            TestRecord::value(format!("{prefix}-{i:04}")).in_partition((i % partitions) as i32)
        })
        .collect();
    let placed = clients::produce(bootstrap, topic, &records);
    (records, placed)
}

/// Every record of [`produce_spread`] reads back from `bootstrap` at the
/// offset it was placed at.
fn assert_all_read(bootstrap: &str, topic: &str, records: &[TestRecord], placed: &[(i32, i64)]) {
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o) in placed {
        let end = ends.entry(*p).or_default();
        *end = (*end).max(o + 1);
    }
    let ranges: Vec<(i32, i64, i64)> = ends.iter().map(|(p, end)| (*p, 0, *end)).collect();
    let got = clients::consume_ranges(bootstrap, topic, &ranges, Duration::from_secs(60));
    let mut read: BTreeMap<(i32, i64), String> = BTreeMap::new();
    for c in &got {
        read.insert((c.partition, c.offset), value_of(c));
    }
    for ((p, o), r) in placed.iter().zip(records) {
        let want = String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap();
        assert_eq!(read.get(&(*p, *o)), Some(&want), "{p}@{o}");
    }
}

/// Consumed records of one partition: value by offset.
fn by_offset(got: &[clients::Consumed]) -> BTreeMap<i64, String> {
    got.iter().map(|c| (c.offset, value_of(c))).collect()
}

/// A partition or group asked of a broker that does not serve it answers
/// Kafka's "go elsewhere" codes, which clients follow.
#[test]
fn requests_to_the_wrong_broker_are_redirected() {
    use common::raw::RawConn;
    let brokers = three_brokers();
    clients::create_topic(&brokers[0].bootstrap(), "spread", 3, &[]);
    let leaders = leaders(&brokers[0], "spread");
    let (p, leader) = leaders.iter().next().map(|(p, l)| (*p, *l)).unwrap();
    let other = brokers
        .iter()
        .enumerate()
        .find(|(i, _)| *i as i32 + 1 != leader)
        .map(|(_, b)| b)
        .unwrap();
    let mut c = RawConn::connect(&other.bootstrap());
    let v = c.produce_version();
    let batch = common::raw::batch(
        &[common::raw::record(0, None, Some(b"x"), clients::now_ms())],
        kafka_protocol::records::Compression::None,
    );
    let (code, _) = c.produce(v, "spread", p, batch.clone(), -1);
    assert_eq!(code, 6, "NOT_LEADER_OR_FOLLOWER");

    // Produce v12 and Fetch v16 name the leader and its endpoint with the
    // refusal (KIP-951), so clients go there without asking Metadata.
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{fetch_request, FetchRequest, FetchResponse};
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let leader_port: i32 = brokers[(leader - 1) as usize]
        .bootstrap()
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("spread")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(p)
                .with_records(Some(batch))])]);
    let r: ProduceResponse = c.roundtrip(ApiKey::Produce, 12, &produce);
    let pr = &r.responses[0].partition_responses[0];
    assert_eq!(pr.error_code, 6);
    assert_eq!(pr.current_leader.leader_id.0, leader, "{r:?}");
    assert!(pr.current_leader.leader_epoch >= 0, "{r:?}");
    assert_eq!(r.node_endpoints.len(), 1, "{r:?}");
    assert_eq!(r.node_endpoints[0].node_id.0, leader);
    assert_eq!(r.node_endpoints[0].port, leader_port);
    let topic_id = c.topic_ids(&["spread"])["spread"];
    let fetch = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic_id(topic_id)
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_partition(p)
                .with_current_leader_epoch(-1)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(1 << 20)])]);
    let r: FetchResponse = c.roundtrip(ApiKey::Fetch, 16, &fetch);
    let fp = &r.responses[0].partitions[0];
    assert_eq!(fp.error_code, 6);
    assert_eq!(fp.current_leader.leader_id.0, leader, "{r:?}");
    assert_eq!(r.node_endpoints.len(), 1, "{r:?}");
    assert_eq!(r.node_endpoints[0].port, leader_port);

    // A group's coordinator is the leader of its offsets partition; every
    // broker names the same one, and the others answer NOT_COORDINATOR.
    use kafka_protocol::messages::{ApiKey, FindCoordinatorRequest, FindCoordinatorResponse};
    let find = FindCoordinatorRequest::default().with_key(
        kafka_protocol::protocol::StrBytes::from_static_str("spread-readers"),
    );
    // The first one creates the offsets topic; a coordinator may answer
    // COORDINATOR_NOT_AVAILABLE a moment while its partitions open.
    let coordinators: Vec<i32> = brokers
        .iter()
        .map(|b| {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let r: FindCoordinatorResponse =
                    RawConn::connect(&b.bootstrap()).roundtrip(ApiKey::FindCoordinator, 3, &find);
                if r.error_code == 0 {
                    break r.node_id.0;
                }
                assert!(
                    Instant::now() < deadline && [14, 15].contains(&r.error_code),
                    "{r:?}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .collect();
    assert!(
        coordinators.iter().all(|c| *c == coordinators[0]),
        "{coordinators:?}"
    );
    let elsewhere = brokers
        .iter()
        .enumerate()
        .find(|(i, _)| *i as i32 + 1 != coordinators[0])
        .map(|(_, b)| b)
        .unwrap();
    let mut conn = RawConn::connect(&elsewhere.bootstrap());
    let join = common::groups::requests::join_req("spread-readers", "", "range");
    let r = common::groups::requests::join(&mut conn, 5, &join);
    assert_eq!(r.error_code, 16, "NOT_COORDINATOR: {r:?}");
    let coordinator = &brokers[(coordinators[0] - 1) as usize];
    let mut conn = RawConn::connect(&coordinator.bootstrap());
    let (member, _) = common::groups::requests::join_alone(&mut conn, "spread-readers", None);
    assert!(!member.is_empty());
}

#[test]
fn quorum_flags_are_checked_and_name_the_key() {
    let out = std::process::Command::new(common::strata_bin())
        .args([
            "serve",
            "--node-id",
            "4",
            "--controller-listen",
            "0.0.0.0:0",
            "--controller-quorum-voters",
            "1@127.0.0.1:9093,2@127.0.0.1:9193",
        ])
        .output()
        .expect("run strata");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("controller-listen"), "{err}");
    assert!(err.contains("node-id 4 is not a voter"), "{err}");

    let out = std::process::Command::new(common::strata_bin())
        .args([
            "serve",
            "--controller-listen",
            "127.0.0.1:0",
            "--controller-quorum-voters",
            "1@127.0.0.1:9093,1@127.0.0.1:9193",
        ])
        .output()
        .expect("run strata");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node id 1 appears twice"), "{err}");

    let out = std::process::Command::new(common::strata_bin())
        .args(["serve", "--controller-quorum-voters", "1@127.0.0.1:9093"])
        .output()
        .expect("run strata");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("controller-listen"), "{err}");
}

fn cluster_status(b: &Broker) -> serde_json::Value {
    let out = std::process::Command::new(common::strata_bin())
        .args([
            "cluster",
            "status",
            "--output",
            "json",
            "-b",
            &b.bootstrap(),
        ])
        .output()
        .expect("run strata cluster status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// `strata cluster status` (DescribeQuorum and Metadata): the brokers, the
/// quorum's leader and every voter's position, from any broker.
#[test]
fn cluster_status_shows_brokers_and_the_quorum() {
    let brokers = three_brokers();
    clients::create_topic(&brokers[0].bootstrap(), "status", 1, &[]);
    let mut leaders = Vec::new();
    for b in &brokers {
        let s = cluster_status(b);
        assert_eq!(s["brokers"].as_array().unwrap().len(), 3, "{s}");
        let voters = s["quorum"]["voters"].as_array().unwrap();
        let ids: Vec<i64> = voters
            .iter()
            .map(|v| v["node_id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, vec![1, 2, 3], "{s}");
        let hw = s["quorum"]["high_watermark"].as_i64().unwrap();
        assert!(hw > 0, "{s}");
        assert!(
            voters
                .iter()
                .all(|v| v["log_end_offset"].as_i64().unwrap() > 0),
            "{s}"
        );
        leaders.push(s["quorum"]["leader_id"].as_i64().unwrap());
    }
    assert!(leaders.iter().all(|l| *l == leaders[0]), "{leaders:?}");

    // A single broker is a quorum of one.
    let alone = Broker::start();
    let s = cluster_status(&alone);
    assert_eq!(s["quorum"]["leader_id"], 1, "{s}");
    assert_eq!(s["quorum"]["voters"].as_array().unwrap().len(), 1, "{s}");
}

/// The node ids of the quorum's `key` ("voters" or "observers") in a
/// `strata cluster status --output json`.
fn quorum_ids(status: &serde_json::Value, key: &str) -> Vec<i64> {
    status["quorum"][key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["node_id"].as_i64().unwrap())
        .collect()
}

/// A broker outside the voters follows the metadata log as a learner: it
/// leads partitions like the others and shows as an observer of the quorum.
#[test]
fn a_fourth_broker_joins_as_a_learner() {
    let brokers = brokers(4, 3);
    let s = cluster_status(&brokers[3]);
    let ids = |key: &str| quorum_ids(&s, key);
    assert_eq!(ids("voters"), vec![1, 2, 3], "{s}");
    assert_eq!(ids("observers"), vec![4], "{s}");
    assert_eq!(s["brokers"].as_array().unwrap().len(), 4, "{s}");
    let table = std::process::Command::new(common::strata_bin())
        .args(["cluster", "status", "-b", &brokers[0].bootstrap()])
        .output()
        .expect("run strata cluster status");
    let table = String::from_utf8_lossy(&table.stdout);
    let roles: Vec<&str> = table
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "leader").count(),
        1,
        "{table}"
    );
    assert_eq!(
        roles.iter().filter(|r| **r == "voter").count(),
        2,
        "{table}"
    );
    assert_eq!(
        roles.iter().filter(|r| **r == "learner").count(),
        1,
        "{table}"
    );
    clients::create_topic(&brokers[3].bootstrap(), "eight", 8, &[]);
    let led = leaders(&brokers[0], "eight");
    assert!(led.values().any(|l| *l == 4), "{led:?}");
    let records: Vec<TestRecord> = (0..8)
        .map(|p| TestRecord::value("x").in_partition(p))
        .collect();
    assert_eq!(
        clients::produce(&bootstrap(&brokers), "eight", &records).len(),
        8
    );
}

/// Partition -> (leader, ISR), as broker `b` describes `topic`.
fn leaders_and_isr(b: &Broker, topic: &str) -> BTreeMap<i32, (i32, Vec<i32>)> {
    let consumer = clients::metadata_client(&b.bootstrap());
    let md = consumer
        .fetch_metadata(Some(topic), clients::OP_TIMEOUT)
        .expect("metadata");
    let t = &md.topics()[0];
    t.partitions()
        .iter()
        .map(|p| {
            let mut isr = p.isr().to_vec();
            isr.sort_unstable();
            (p.id(), (p.leader(), isr))
        })
        .collect()
}

/// Waits until `check` holds for what broker `b` says of `topic`.
fn wait_for(
    b: &Broker,
    topic: &str,
    what: &str,
    check: impl Fn(&BTreeMap<i32, (i32, Vec<i32>)>) -> bool,
) -> BTreeMap<i32, (i32, Vec<i32>)> {
    wait_for_within(b, topic, what, Duration::from_secs(60), check)
}

fn wait_for_within(
    b: &Broker,
    topic: &str,
    what: &str,
    within: Duration,
    check: impl Fn(&BTreeMap<i32, (i32, Vec<i32>)>) -> bool,
) -> BTreeMap<i32, (i32, Vec<i32>)> {
    let deadline = Instant::now() + within;
    loop {
        let now = leaders_and_isr(b, topic);
        if check(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "{what}: {now:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Replicated partitions (three replicas): followers copy the leader, `acks=all` is
/// answered once every in-sync replica has the batch, a leader killed with
/// SIGKILL is replaced by an in-sync follower, its records all there, and
/// it comes back as a follower that rejoins the ISR. Nothing acknowledged
/// is lost or duplicated, in order.
#[test]
fn replicated_partitions_survive_the_leader_killed() {
    let mut brokers = brokers(3, 3);
    let all = bootstrap(&brokers);
    clients::create_replicated_topic(&all, "repl", 2, 3, &[]);
    let full = |m: &BTreeMap<i32, (i32, Vec<i32>)>| {
        m.values().all(|(l, isr)| *l > 0 && isr == &vec![1, 2, 3])
    };
    let placed = wait_for(&brokers[0], "repl", "every partition led, ISR full", full);
    let producer = clients::producer(&all, &[("enable.idempotence", "true"), ("acks", "all")]);
    let send = |tag: &str| -> Vec<(i32, i64, String)> {
        let records: Vec<TestRecord> = (0..200)
            .map(|i| TestRecord::value(format!("{tag}-{i:04}")).in_partition(i % 2))
            .collect();
        clients::produce_all(&producer, "repl", &records)
            .into_iter()
            .zip(records)
            .map(|((p, o), r)| (p, o, String::from_utf8(r.value.unwrap().to_vec()).unwrap()))
            .collect()
    };
    let mut acked = send("before");

    // Kill the leader of partition 0 (SIGKILL: its page cache stays, so
    // this shows the election, not the fsyncs).
    let old = placed[&0].0;
    brokers[(old - 1) as usize].kill9();
    let other = (old % 3) as usize;
    let moved = wait_for(
        &brokers[other],
        "repl",
        "a new leader for partition 0",
        |m| m[&0].0 > 0 && m[&0].0 != old && !m[&0].1.contains(&old),
    );
    assert!(moved[&0].1.len() == 2, "{moved:?}");
    acked.extend(send("during"));

    // It comes back as a follower, catches up and rejoins every ISR.
    brokers[(old - 1) as usize].restart();
    common::wait_ready(&brokers[(old - 1) as usize].admin_addr());
    wait_for(
        &brokers[other],
        "repl",
        "the restarted broker back in every ISR",
        full,
    );
    acked.extend(send("after"));

    // Every acknowledged record once, at the offset it was given, in order.
    let end: BTreeMap<i32, i64> = (0..2)
        .map(|p| (p, high_watermark(&all, "repl", p)))
        .collect();
    let got = clients::consume_ranges(
        &all,
        "repl",
        &[(0, 0, end[&0]), (1, 0, end[&1])],
        clients::OP_TIMEOUT,
    );
    let read: BTreeMap<(i32, i64), String> = got
        .iter()
        .map(|c| ((c.partition, c.offset), value_of(c)))
        .collect();
    assert_eq!(read.len(), got.len(), "no offset twice");
    for (p, o, v) in &acked {
        assert_eq!(read.get(&(*p, *o)), Some(v), "acknowledged {v} at {p}@{o}");
    }
    let values: std::collections::BTreeSet<&String> = read.values().collect();
    assert_eq!(values.len(), read.len(), "no record twice");
    // The replicas' logs end up the same, byte for byte.
    let log_of = |b: &Broker, p: i32| -> Vec<u8> {
        let dir = b.data_dir().join(format!("repl-{p}"));
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("partition dir")
            .flatten()
            .map(|e| e.path())
            .filter(|f| f.extension().is_some_and(|e| e == "log"))
            .collect();
        files.sort();
        files
            .iter()
            .flat_map(|f| std::fs::read(f).expect("segment"))
            .collect()
    };
    for p in 0..2 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let logs: Vec<Vec<u8>> = brokers.iter().map(|b| log_of(b, p)).collect();
            if logs.iter().all(|l| l == &logs[0]) {
                break;
            }
            assert!(Instant::now() < deadline, "replicas of repl-{p} differ");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // Each broker's high-watermark checkpoint comes to name the high
    // watermark of both partitions (a restarted replica starts from it).
    let deadline = Instant::now() + Duration::from_secs(30);
    for b in &brokers {
        loop {
            let text = std::fs::read_to_string(b.data_dir().join("replication-offset-checkpoint"))
                .unwrap_or_default();
            if (0..2).all(|p| text.lines().any(|l| l == format!("repl {p} {}", end[&p]))) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "checkpoint {text:?}, high watermarks {end:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    println!(
        "replicated: {} records acknowledged, {} read, leader {old} killed and back",
        acked.len(),
        read.len()
    );
}

/// The ledger: an idempotent `acks=all` producer writes numbered records
/// without pause while the leader of partition 0 is lost, 21 times
/// (SIGKILL and back at once, before its session ends; SIGKILL or
/// SIGTERM and back once another broker leads), a follower is killed,
/// all three restart in turn (SIGTERM), then all three are killed at once
/// and restarted. Every acknowledged record is read back once, at the
/// offset it was given, in order per partition.
#[test]
fn the_ledger_loses_nothing_through_leader_kills() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const CYCLES: usize = 21;
    let mut brokers = brokers(3, 3);
    let all = bootstrap(&brokers);
    clients::create_replicated_topic(&all, "ledger", 2, 3, &[]);
    let full = |m: &BTreeMap<i32, (i32, Vec<i32>)>| {
        m.values().all(|(l, isr)| *l > 0 && isr == &vec![1, 2, 3])
    };
    wait_for(&brokers[0], "ledger", "every partition led, ISR full", full);

    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let writer = {
        let (all, stop) = (all.clone(), stop.clone());
        std::thread::spawn(move || {
            let producer =
                clients::producer(&all, &[("enable.idempotence", "true"), ("acks", "all")]);
            let mut acked: Vec<(i32, i64, String)> = Vec::new();
            let mut failed = 0usize;
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<(String, rdkafka::producer::DeliveryFuture)> = (0..50)
                    .map(|_| {
                        n += 1;
                        let v = format!("ledger-{n:07}");
                        let r = TestRecord::value(v.clone()).in_partition((n % 2) as i32);
                        (v, clients::enqueue(&producer, "ledger", &r))
                    })
                    .collect();
                for (v, f) in batch {
                    match clients::await_delivery(f) {
                        Ok((p, o)) => acked.push((p, o, v)),
                        Err(_) => failed += 1,
                    }
                }
            }
            (acked, failed)
        })
    };
    let mut restarts_before_fence = 0;
    for cycle in 0..CYCLES {
        std::thread::sleep(Duration::from_millis(700));
        // Every broker runs between cycles.
        let now = leaders_and_isr(&brokers[cycle % 3], "ledger");
        let leader = now[&0].0;
        if leader <= 0 {
            continue;
        }
        let i = (leader - 1) as usize;
        // Three ways to lose the leader: SIGKILL and back at once; SIGKILL
        // and back once another broker leads; SIGTERM likewise.
        match cycle % 3 {
            0 => {
                brokers[i].kill9();
                restarts_before_fence += 1;
            }
            mode => {
                if mode == 1 {
                    brokers[i].kill9();
                } else {
                    brokers[i].stop();
                }
                let other = (i + 1) % 3;
                wait_for(&brokers[other], "ledger", "a new leader", |m| {
                    m[&0].0 > 0 && m[&0].0 != leader
                });
            }
        }
        brokers[i].restart();
        common::wait_ready(&brokers[i].admin_addr());
        wait_for(&brokers[i], "ledger", "every ISR full again", full);
    }
    // A follower of partition 0 killed and back.
    let leader = leaders_and_isr(&brokers[0], "ledger")[&0].0;
    let f = (0..3)
        .find(|i| *i as i32 + 1 != leader)
        .expect("a follower");
    brokers[f].kill9();
    std::thread::sleep(Duration::from_millis(700));
    brokers[f].restart();
    common::wait_ready(&brokers[f].admin_addr());
    wait_for(
        &brokers[f],
        "ledger",
        "every ISR full after a follower's return",
        full,
    );
    // A rolling restart: each broker stopped (SIGTERM) and back in turn.
    for b in &mut brokers {
        b.stop();
        b.restart();
        common::wait_ready(&b.admin_addr());
        wait_for(b, "ledger", "every ISR full in a rolling restart", full);
    }
    // All three at once, as a power cut would (though SIGKILL keeps the
    // page cache: `all_brokers_losing_power_at_once_lose_nothing_acknowledged`
    // drops it), while the producer keeps writing.
    for b in &mut brokers {
        b.kill9();
    }
    for b in &mut brokers {
        b.restart();
    }
    for b in &brokers {
        common::wait_ready(&b.admin_addr());
    }
    wait_for(
        &brokers[0],
        "ledger",
        "every ISR full after all restarted",
        full,
    );
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = writer.join().expect("writer");

    // A restarted leader learns its high watermark from its followers'
    // fetches: it covers every acknowledged record within moments, or
    // what it misses counts as lost below.
    let end: BTreeMap<i32, i64> = (0..2)
        .map(|p| {
            let want = acked
                .iter()
                .filter(|(q, _, _)| *q == p)
                .map(|(_, o, _)| o + 1)
                .max()
                .unwrap_or(0);
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let hwm = high_watermark(&all, "ledger", p);
                if hwm >= want || Instant::now() >= deadline {
                    break (p, hwm);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
        .collect();
    let got = clients::consume_ranges(
        &all,
        "ledger",
        &[(0, 0, end[&0]), (1, 0, end[&1])],
        clients::OP_TIMEOUT,
    );
    let mut read: BTreeMap<(i32, i64), String> = BTreeMap::new();
    for c in &got {
        let v = value_of(c);
        assert!(
            read.insert((c.partition, c.offset), v).is_none(),
            "offset read twice"
        );
    }
    let mut lost = 0;
    for (p, o, v) in &acked {
        if read.get(&(*p, *o)) != Some(v) {
            lost += 1;
        }
    }
    let distinct: std::collections::BTreeSet<&String> = read.values().collect();
    let duplicated = read.len() - distinct.len();
    // Per partition, the numbers only grow (the producer's order kept).
    for p in 0..2 {
        let numbers: Vec<&String> = read
            .iter()
            .filter(|((q, _), _)| *q == p)
            .map(|(_, v)| v)
            .collect();
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "partition {p} out of order"
        );
    }
    println!(
        "ledger: {CYCLES} leaders lost ({restarts_before_fence} SIGKILLed and back before their session ended), a follower SIGKILLed, a rolling restart, then all three SIGKILLed at once; {} acknowledged, {failed} not, {} read, {lost} lost, {duplicated} duplicated",
        acked.len(),
        read.len()
    );
    assert_eq!(lost, 0, "acknowledged records lost");
    assert_eq!(duplicated, 0, "records written twice");
}

/// `min.insync.replicas=2` on a partition with two replicas: a follower
/// that stops (SIGSTOP: no fetches, no heartbeats) leaves the ISR. An
/// `acks=all` append waiting then is stored but answered
/// NOT_ENOUGH_REPLICAS_AFTER_APPEND; later ones are refused with
/// NOT_ENOUGH_REPLICAS while `acks=1` still writes. Resumed, the follower
/// catches up and rejoins the ISR, and `acks=all` is answered again.
/// Every record answered as written is there, once, in order.
#[test]
fn min_insync_replicas_refuses_writes_the_isr_cannot_cover() {
    use common::raw::RawConn;
    use kafka_protocol::error::ResponseError;
    let brokers = brokers(3, 3);
    let all = bootstrap(&brokers);
    clients::create_replicated_topic(&all, "guarded", 1, 2, &[("min.insync.replicas", "2")]);
    let m = wait_for(&brokers[0], "guarded", "led with an ISR of two", |m| {
        m[&0].0 > 0 && m[&0].1.len() == 2
    });
    let (leader, isr) = m[&0].clone();
    let follower = *isr.iter().find(|b| **b != leader).expect("a follower");
    let lb = &brokers[(leader - 1) as usize];
    let fb = &brokers[(follower - 1) as usize];
    let mut conn = RawConn::connect(&lb.bootstrap());
    let v = conn.produce_version();
    let batch = |v: &str| {
        common::raw::batch(
            &[common::raw::record(
                0,
                None,
                Some(v.as_bytes()),
                clients::now_ms(),
            )],
            kafka_protocol::records::Compression::None,
        )
    };
    assert_eq!(conn.produce(v, "guarded", 0, batch("g0"), -1), (0, 0));

    fb.signal("STOP");
    let (code, _) = conn.produce(v, "guarded", 0, batch("g1"), -1);
    assert_eq!(
        code,
        ResponseError::NotEnoughReplicasAfterAppend.code(),
        "an acks=all append the stopped follower never confirmed"
    );
    wait_for(lb, "guarded", "the stopped follower out of the ISR", |m| {
        m[&0].1 == vec![leader]
    });
    let (code, _) = conn.produce(v, "guarded", 0, batch("refused"), -1);
    assert_eq!(code, ResponseError::NotEnoughReplicas.code());
    let m = lb.metrics();
    assert_eq!(m["strata_under_replicated_partitions"], 1.0);
    assert_eq!(m["strata_under_min_isr_partitions"], 1.0);
    assert_eq!(m["strata_isr_shrinks_total"], 1.0);
    assert_eq!(conn.produce(v, "guarded", 0, batch("g2"), 1), (0, 2));

    fb.signal("CONT");
    wait_for(lb, "guarded", "the follower back in the ISR", |m| {
        m[&0].1.len() == 2
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The leader applies the ISR change a moment after the controller.
        let (code, offset) = conn.produce(v, "guarded", 0, batch("g3"), -1);
        if code == 0 {
            assert_eq!(offset, 3);
            break;
        }
        assert_eq!(code, ResponseError::NotEnoughReplicas.code());
        assert!(Instant::now() < deadline, "acks=all still refused");
        std::thread::sleep(Duration::from_millis(200));
    }
    let m = lb.metrics();
    assert_eq!(m["strata_under_replicated_partitions"], 0.0);
    assert_eq!(m["strata_under_min_isr_partitions"], 0.0);
    assert_eq!(m["strata_isr_expands_total"], 1.0);
    // The follower, caught up, reports no lag.
    let deadline = Instant::now() + Duration::from_secs(30);
    while fb.metrics()["strata_replica_max_lag"] != 0.0 {
        assert!(Instant::now() < deadline, "the follower still lags");
        std::thread::sleep(Duration::from_millis(200));
    }
    let got = clients::consume_ranges(&all, "guarded", &[(0, 0, 4)], clients::OP_TIMEOUT);
    let values: Vec<String> = got.iter().map(value_of).collect();
    assert_eq!(values, ["g0", "g1", "g2", "g3"]);
}

/// A follower stopped while its leader keeps writing and deletes old
/// segments by retention comes back to find its fetch offset below the
/// leader's log start: it restarts its log at the leader's log start,
/// catches up, rejoins the ISR, and once the leader is killed it leads
/// with every committed record from there on.
#[test]
fn a_follower_behind_the_leaders_log_start_restarts_there() {
    let mut brokers = brokers_with(3, 3, &["--log-retention-check-interval-ms", "200"]);
    let all = bootstrap(&brokers);
    clients::create_replicated_topic(
        &all,
        "behind",
        1,
        2,
        &[
            ("remote.storage.enable", "false"),
            ("segment.bytes", "2048"),
            ("retention.bytes", "8192"),
        ],
    );
    let m = wait_for(&brokers[0], "behind", "led with an ISR of two", |m| {
        m[&0].0 > 0 && m[&0].1.len() == 2
    });
    let (leader, isr) = m[&0].clone();
    let follower = *isr.iter().find(|b| **b != leader).expect("a follower");
    let (li, fi) = ((leader - 1) as usize, (follower - 1) as usize);
    let producer = clients::producer(&brokers[li].bootstrap(), &[("acks", "1")]);
    let mut acked: BTreeMap<i64, String> = BTreeMap::new();
    let mut n = 0;
    let mut send = |count: usize, acked: &mut BTreeMap<i64, String>| {
        let failed = send_numbered(&producer, "behind", &mut n, count, acked);
        assert_eq!(failed, 0, "acks=1 deliveries failed");
    };
    send(20, &mut acked);

    brokers[fi].signal("STOP");
    wait_for(&brokers[li], "behind", "the follower out of the ISR", |m| {
        m[&0].1 == vec![leader]
    });
    // Far more than retention keeps: the leader's log start moves past
    // everything the follower holds.
    let deadline = Instant::now() + Duration::from_secs(60);
    let start = loop {
        send(100, &mut acked);
        let consumer = clients::metadata_client(&brokers[li].bootstrap());
        let (low, _) = consumer
            .fetch_watermarks("behind", 0, Duration::from_secs(5))
            .expect("watermarks");
        if low > 20 {
            break low;
        }
        assert!(
            Instant::now() < deadline,
            "retention never moved the log start: {low}"
        );
    };
    brokers[fi].signal("CONT");
    wait_for(
        &brokers[li],
        "behind",
        "the follower back in the ISR",
        |m| m[&0].1.len() == 2,
    );
    // Committed on both before the leader goes.
    let committed = clients::producer(&brokers[li].bootstrap(), &[("acks", "all")]);
    let (_, last) = clients::await_delivery(clients::enqueue(
        &committed,
        "behind",
        &TestRecord::value("last"),
    ))
    .expect("acks=all delivery");
    acked.insert(last, "last".into());
    assert!(
        brokers[fi]
            .logs()
            .contains("its log restarts at the leader's log start"),
        "the follower restarted its log"
    );

    brokers[li].kill9();
    wait_for(&brokers[fi], "behind", "the follower leads", |m| {
        m[&0].0 == follower
    });
    let (low, high) = clients::metadata_client(&brokers[fi].bootstrap())
        .fetch_watermarks("behind", 0, Duration::from_secs(5))
        .expect("watermarks");
    assert!(low >= start, "log start {low} below the leader's {start}");
    assert_eq!(high, last + 1);
    let got = clients::consume_ranges(
        &brokers[fi].bootstrap(),
        "behind",
        &[(0, low, high)],
        clients::OP_TIMEOUT,
    );
    let read = by_offset(&got);
    let expected: BTreeMap<i64, String> =
        acked.range(low..).map(|(o, v)| (*o, v.clone())).collect();
    assert_eq!(read, expected);
}

/// A leader stopped cleanly (SIGTERM) hands its partitions over before it
/// exits (controlled shutdown): with sessions of 60 s, a new leader is in
/// place long before the stopped broker's session could time out, and
/// `acks=all` writes go on there. Started again, it rejoins the ISR.
#[test]
fn a_clean_stop_hands_leadership_over_at_once() {
    let mut brokers = brokers_with(3, 3, &["--broker-session-timeout-ms", "60000"]);
    let all = bootstrap(&brokers);
    clients::create_replicated_topic(&all, "handover", 1, 3, &[]);
    let full = |m: &BTreeMap<i32, (i32, Vec<i32>)>| m[&0].0 > 0 && m[&0].1 == vec![1, 2, 3];
    let leader = wait_for(&brokers[0], "handover", "led, ISR full", full)[&0].0;
    let i = (leader - 1) as usize;
    brokers[i].stop();
    assert!(
        brokers[i]
            .logs()
            .contains("controlled shutdown: leaderships handed over"),
        "the stopping leader handed over"
    );
    let other = (i + 1) % 3;
    wait_for_within(
        &brokers[other],
        "handover",
        "a new leader well within the session",
        Duration::from_secs(20),
        |m| m[&0].0 > 0 && m[&0].0 != leader && !m[&0].1.contains(&leader),
    );
    let live: Vec<&Broker> = brokers
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, b)| b)
        .collect();
    let live_bootstrap = live
        .iter()
        .map(|b| b.bootstrap())
        .collect::<Vec<_>>()
        .join(",");
    let producer = clients::producer(&live_bootstrap, &[("acks", "all")]);
    let (_, offset) = clients::await_delivery(clients::enqueue(
        &producer,
        "handover",
        &TestRecord::value("after the handover"),
    ))
    .expect("acks=all after the handover");
    brokers[i].restart();
    common::wait_ready(&brokers[i].admin_addr());
    wait_for(
        &brokers[i],
        "handover",
        "the stopped broker back in the ISR",
        full,
    );
    let got = clients::consume_ranges(
        &all,
        "handover",
        &[(0, offset, offset + 1)],
        clients::OP_TIMEOUT,
    );
    assert_eq!(got.len(), 1);
}

/// Tiering under leadership: three brokers share a `file://` tier; only
/// the leader uploads. Both followers are stopped while the leader takes
/// writes and catch up in large fetches; the leader is killed, a follower
/// takes over and goes on uploading from where the manifest ends: its
/// segments continue the old leader's, with no gap and no overlap, and
/// with local retention keeping almost nothing every acknowledged record
/// reads back from the tier, once, in order. A new broker on an empty data
/// directory then restores the topic from the tier, byte for byte.
#[test]
fn a_new_leader_continues_the_tier_where_the_old_one_stopped() {
    let tier = tempfile::tempdir().expect("tier dir");
    let tier_url = format!("file://{}", tier.path().display());
    let table = tier.path().join("tables/tiered");
    tier_continues_under_a_new_leader(
        &["--tier-url", &tier_url],
        &[],
        || {
            let dir = common::find_tier_partition_dir(tier.path(), "tiered").expect("tier dir");
            serde_json::from_str(
                &std::fs::read_to_string(dir.join("manifest.json")).expect("manifest"),
            )
            .expect("manifest json")
        },
        || {
            let checkpoint = std::fs::read(table.join("_strata/partition=0.json")).ok();
            let mut files = Vec::new();
            let mut dirs = vec![table.clone()];
            while let Some(d) = dirs.pop() {
                for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                    let path = e.path();
                    if path.is_dir() {
                        dirs.push(path);
                    } else if path.extension().is_some_and(|x| x == "parquet") {
                        files.push(std::fs::read(&path).expect("table file").into());
                    }
                }
            }
            let get = |name: &str| std::fs::read(tier.path().join(name)).ok().map(Into::into);
            let root = format!("{tier_url}/");
            let iceberg = common::table::iceberg_files(&get, &root, "tables/tiered")
                .keys()
                .map(|uri| get(uri.strip_prefix(&root).expect("under the tier")).expect("a file"))
                .collect();
            (checkpoint.map(Into::into), files, iceberg)
        },
    );
}

/// The same on LocalStack S3, the manifest read from the bucket.
#[test]
fn a_new_leader_continues_the_s3_tier_where_the_old_one_stopped() {
    use common::s3::{s3_client, s3_endpoint};
    let Some(endpoint) = s3_endpoint() else {
        eprintln!("STRATA_SKIP_S3=1: skipping the LocalStack test");
        return;
    };
    let s3 = s3_client(&endpoint);
    let bucket = common::s3::new_bucket(&s3);
    let url = format!("s3://{bucket}/strata");
    let envs = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    tier_continues_under_a_new_leader(
        &["--tier-url", &url, "--tier-s3-endpoint", &endpoint],
        &envs,
        || {
            let key = common::s3::list_keys(&s3, &bucket, "strata/")
                .into_iter()
                .find(|k| k.contains("/tiered-") && k.ends_with("/0/manifest.json"))
                .expect("the manifest in the bucket");
            let bytes = common::s3::get_bytes(&s3, &bucket, &key);
            serde_json::from_slice(&bytes).expect("manifest json")
        },
        || {
            let keys = common::s3::list_keys(&s3, &bucket, "strata/tables/tiered/");
            let checkpoint = keys
                .iter()
                .find(|k| k.ends_with("_strata/partition=0.json"))
                .map(|k| common::s3::get_bytes(&s3, &bucket, k));
            let files = keys
                .iter()
                .filter(|k| k.ends_with(".parquet"))
                .map(|k| common::s3::get_bytes(&s3, &bucket, k))
                .collect();
            // Read now, not as listed: the table may have moved on since,
            // and its version hint then names metadata the listing lacks.
            let get = |key: &str| common::s3::try_get_bytes(&s3, &bucket, key);
            let root = format!("s3://{bucket}/");
            let iceberg = common::table::iceberg_files(&get, &root, "strata/tables/tiered")
                .keys()
                .map(|uri| common::s3::get_bytes(&s3, &bucket, uri.strip_prefix(&root).unwrap()))
                .collect();
            (checkpoint, files, iceberg)
        },
    );
}

/// The body of the two tests above: `tier` names the tier (flags), `envs`
/// the brokers' environment, `manifest` reads partition 0's manifest and
/// `table` the topic's table (partition 0's checkpoint, every file, and the
/// files the Iceberg table's current snapshot names).
///
/// The topic is also a table (`strata.table.enable`): the new leader, whose
/// segments end at other offsets and whose older ones local retention
/// removed, continues the table where the old leader's checkpoint stopped,
/// so the table holds every offset below its checkpoint exactly once.
fn tier_continues_under_a_new_leader(
    tier: &[&str],
    envs: &[(&str, &str)],
    manifest: impl Fn() -> serde_json::Value,
    table: impl Fn() -> (Option<bytes::Bytes>, Vec<bytes::Bytes>, Vec<bytes::Bytes>),
) {
    let mut extra: Vec<&str> = tier.to_vec();
    extra.extend(["--tier-interval-ms", "200"]);
    let mut brokers = brokers_with_env(3, 3, &extra, envs);
    let all = bootstrap(&brokers);
    clients::create_replicated_topic(
        &all,
        "tiered",
        1,
        3,
        &[
            ("segment.bytes", "4096"),
            ("local.retention.bytes", "1"),
            ("strata.table.enable", "true"),
        ],
    );
    let full = |m: &BTreeMap<i32, (i32, Vec<i32>)>| m[&0].0 > 0 && m[&0].1 == vec![1, 2, 3];
    let leader = wait_for(&brokers[0], "tiered", "led, ISR full", full)[&0].0;
    let mut acked: BTreeMap<i64, String> = BTreeMap::new();
    let mut n = 0;
    let mut send =
        |bootstrap: &str, acks: &str, count: usize, acked: &mut BTreeMap<i64, String>| {
            // Small batches, so that segments roll often.
            let producer = clients::producer(
                bootstrap,
                &[("acks", acks), ("linger.ms", "2"), ("batch.size", "1024")],
            );
            send_numbered(&producer, "tiered", &mut n, count, acked);
        };
    let tiered_past = |b: &Broker, offset: i64| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut c = common::raw::RawConn::connect(&b.bootstrap());
            let (code, last) = c.list_offset_answer("tiered", 0, -5, 0);
            if code == 0 && last >= offset {
                return last;
            }
            assert!(
                Instant::now() < deadline,
                "tier stuck at {last} (error code {code}), waiting for {offset}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // Both followers stopped while the leader takes acks=1 writes: back,
    // they fetch many batches at a time, so their segments roll at other
    // offsets than the leader's. Once the high watermark covers it all,
    // everything acknowledged is committed.
    send(&all, "all", 300, &mut acked);
    let followers: Vec<usize> = (0..3).filter(|i| *i as i32 + 1 != leader).collect();
    for f in &followers {
        brokers[*f].signal("STOP");
    }
    send(
        &brokers[(leader - 1) as usize].bootstrap(),
        "1",
        1200,
        &mut acked,
    );
    for f in &followers {
        brokers[*f].signal("CONT");
    }
    let end = *acked.keys().last().unwrap() + 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    while high_watermark(&all, "tiered", 0) < end {
        assert!(Instant::now() < deadline, "the followers never caught up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = tiered_past(&brokers[(leader - 1) as usize], 500);

    brokers[(leader - 1) as usize].kill9();
    let other = leader as usize % 3;
    let next = wait_for(&brokers[other], "tiered", "a new leader", |m| {
        m[&0].0 > 0 && m[&0].0 != leader
    })[&0]
        .0;
    let live = brokers[(next - 1) as usize].bootstrap();
    send(&live, "all", 1500, &mut acked);
    let end = *acked.keys().last().unwrap() + 1;
    // The new leader uploads past everything but its active segment.
    let last = tiered_past(&brokers[(next - 1) as usize], end - 200);
    assert!(last > first);
    // It read the manifest from the store before its first upload, not the
    // copy it cached as a follower: no upload raced a newer manifest.
    let conflicts = brokers[(next - 1) as usize]
        .metrics()
        .get("strata_tier_manifest_conflicts_total")
        .copied();
    assert_eq!(conflicts, Some(0.0), "manifest conflicts on the new leader");
    // The other follower learns of the uploads from the new leader's fetch
    // answers, reads the manifest again and drops the segments it covers:
    // of the ~190 segments, it keeps about those the tier lacks.
    let third = (0..3)
        .find(|i| *i as i32 + 1 != leader && *i as i32 + 1 != next)
        .expect("a third broker");
    let local_dir = brokers[third].data_dir().join("tiered-0");
    let local_segments = || {
        std::fs::read_dir(&local_dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                    .count()
            })
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while local_segments() > 40 {
        assert!(
            Instant::now() < deadline,
            "the follower keeps {} local segments the tier covers",
            local_segments()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let got = clients::consume_ranges(&live, "tiered", &[(0, 0, end)], clients::OP_TIMEOUT);
    let read = by_offset(&got);
    assert_eq!(read.len(), got.len(), "an offset read twice");
    for (o, v) in &acked {
        assert_eq!(read.get(o), Some(v), "acknowledged record at {o}");
    }
    // The manifest: segments end to end, no gap and no overlap.
    let manifest = manifest();
    let segments: Vec<(i64, i64)> = manifest["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .map(|s| {
            (
                s["base_offset"].as_i64().unwrap(),
                s["last_offset"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(segments.first().map(|s| s.0), Some(0));
    for w in segments.windows(2) {
        assert_eq!(w[1].0, w[0].1 + 1, "segments {w:?} leave a gap or overlap");
    }
    assert!(segments.last().map(|s| s.1) >= Some(last));
    // The table: every offset below the checkpoint once, with its record.
    let deadline = Instant::now() + Duration::from_secs(60);
    let exported = loop {
        let (checkpoint, _, _) = table();
        let exported = checkpoint.map_or(-1, |c| {
            let c: serde_json::Value = serde_json::from_slice(&c).expect("checkpoint json");
            c["exported_to"].as_i64().expect("exported_to")
        });
        if exported > last {
            break exported;
        }
        assert!(
            Instant::now() < deadline,
            "table exported to {exported}, tier at {last}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut rows = common::table::Rows::new();
    for file in table().1 {
        common::table::parquet_rows(file, &mut rows);
    }
    for o in 0..exported {
        let row = rows.get(&(0, o));
        assert!(row.is_some(), "offset {o} missing from the table");
        if let Some(v) = acked.get(&o) {
            let value = row.and_then(|r| r.1.clone());
            assert_eq!(value.as_deref(), Some(v.as_bytes()), "table row at {o}");
        }
    }
    // The Iceberg table's snapshot catches up with the files: the same
    // rows, each once.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Both read at once: an export may still add a file meanwhile.
        let (_, files, named) = table();
        let (mut all, mut snapshot) = (common::table::Rows::new(), common::table::Rows::new());
        for file in files {
            common::table::parquet_rows(file, &mut all);
        }
        for file in named {
            common::table::parquet_rows(file, &mut snapshot);
        }
        if snapshot == all {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the iceberg table has {} rows of {}",
            snapshot.len(),
            all.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    brokers[(leader - 1) as usize].restart();
    common::wait_ready(&brokers[(leader - 1) as usize].admin_addr());

    // Another cluster, one broker on an empty data directory, restores the
    // topic from the tier once these have stopped: what the tier holds
    // reads back byte for byte, at the same offsets.
    for b in &mut brokers {
        b.kill9();
    }
    let mut fresh = Broker::builder().args(tier.iter().copied());
    for (k, v) in envs {
        fresh = fresh.env(*k, *v);
    }
    let fresh = fresh.start();
    clients::create_topic(
        &fresh.bootstrap(),
        "tiered",
        1,
        &[("strata.restore", "true"), ("strata.tier.takeover", "true")],
    );
    let (low, high) = clients::watermarks(&fresh.bootstrap(), "tiered", 0);
    assert_eq!(low, 0);
    assert!(
        high > last,
        "restored up to {high}, the tier held up to {last}"
    );
    let got = clients::consume_ranges(
        &fresh.bootstrap(),
        "tiered",
        &[(0, 0, high)],
        clients::OP_TIMEOUT,
    );
    let restored = by_offset(&got);
    assert_eq!(
        restored.len() as i64,
        high,
        "an offset missing or read twice"
    );
    assert_eq!(got.len() as i64, high, "an offset read twice");
    for (o, v) in acked.range(..high) {
        assert_eq!(restored.get(o), Some(v), "restored record at {o}");
    }
}

/// `unclean.leader.election.enable`: two topics with a partition on the
/// same two brokers, one topic allowing an unclean election. One of the
/// two stops (it leaves both ISRs), the other is killed, the stopped one
/// comes back: the topic that allows it elects it (alone in its ISR,
/// writes go on, what only the killed broker had is gone); the other
/// stays without a leader until the killed broker returns, with
/// everything it acknowledged.
#[test]
fn an_unclean_election_only_where_the_topic_allows_it() {
    let mut brokers = brokers(3, 3);
    let all = bootstrap(&brokers);
    clients::create_replicated_topic(&all, "clean", 3, 2, &[]);
    clients::create_replicated_topic(
        &all,
        "unclean",
        3,
        2,
        &[("unclean.leader.election.enable", "true")],
    );
    let in_sync =
        |m: &BTreeMap<i32, (i32, Vec<i32>)>| m.values().all(|(l, isr)| *l > 0 && isr.len() == 2);
    let clean = wait_for(&brokers[0], "clean", "every ISR of two", in_sync);
    let unclean = wait_for(&brokers[0], "unclean", "every ISR of two", in_sync);
    // A partition of each on the same two brokers.
    let (pc, pu, pair) = clean
        .iter()
        .find_map(|(pc, (_, isr))| {
            unclean
                .iter()
                .find(|(_, (_, i))| i == isr)
                .map(|(pu, _)| (*pc, *pu, isr.clone()))
        })
        .expect("two partitions on the same brokers");
    let (kept, stopped) = ((pair[0] - 1) as usize, (pair[1] - 1) as usize);
    // A producer per write: one that knew the stopped broker as a leader
    // would wait out its request timeout on it.
    let write = |bootstrap: &str, topic: &str, p: i32, v: &str| {
        let producer = clients::producer(bootstrap, &[("acks", "all")]);
        clients::await_delivery(clients::enqueue(
            &producer,
            topic,
            &TestRecord::value(v).in_partition(p),
        ))
    };
    write(&all, "clean", pc, "both").expect("written on both");
    write(&all, "unclean", pu, "both").expect("written on both");
    brokers[stopped].signal("STOP");
    for (t, p) in [("clean", pc), ("unclean", pu)] {
        wait_for(
            &brokers[kept],
            t,
            "the stopped broker out of the ISR",
            |m| m[&p].1 == vec![pair[0]],
        );
        write(&brokers[kept].bootstrap(), t, p, "only one").expect("written on one alone");
    }
    brokers[kept].kill9();
    brokers[stopped].signal("CONT");
    let other = 3 - kept - stopped;
    let m = wait_for(&brokers[other], "unclean", "an unclean election", |m| {
        m[&pu].0 == pair[1]
    });
    assert_eq!(m[&pu].1, vec![pair[1]]);
    let c = leaders_and_isr(&brokers[other], "clean");
    assert!(
        c[&pc].0 <= 0,
        "no clean election without an in-sync replica: {c:?}"
    );
    let p2 = clients::producer(&all, &[("acks", "all")]);
    let (_, o) = clients::await_delivery(clients::enqueue(
        &p2,
        "unclean",
        &TestRecord::value("after").in_partition(pu),
    ))
    .expect("writes go on after the unclean election");
    assert_eq!(o, 1, "the record only the killed broker had is gone");

    brokers[kept].restart();
    common::wait_ready(&brokers[kept].admin_addr());
    wait_for(
        &brokers[other],
        "clean",
        "the killed broker leads again",
        |m| m[&pc].0 == pair[0],
    );
    let got = clients::consume_ranges(&all, "clean", &[(pc, 0, 2)], clients::OP_TIMEOUT);
    let values: Vec<String> = got.iter().map(value_of).collect();
    assert_eq!(values, ["both", "only one"]);
}

/// Partition -> replicas in order, as broker `b` describes `topic`.
fn replicas(b: &Broker, topic: &str) -> BTreeMap<i32, Vec<i32>> {
    let consumer = clients::metadata_client(&b.bootstrap());
    let md = consumer
        .fetch_metadata(Some(topic), clients::OP_TIMEOUT)
        .expect("metadata");
    let t = &md.topics()[0];
    assert!(t.error().is_none(), "{topic}: {:?}", t.error());
    t.partitions()
        .iter()
        .map(|p| (p.id(), p.replicas().to_vec()))
        .collect()
}

/// Placement: a topic created without a replication factor gets min(3,
/// brokers) replicas (auto-created topics and `__consumer_offsets` too),
/// leaders spread over the brokers; explicit replica assignments are taken
/// as named, at creation and when partitions are added; impossible ones
/// answer INVALID_REPLICA_ASSIGNMENT / INVALID_REPLICATION_FACTOR.
#[test]
fn topics_get_three_replicas_by_default_or_the_ones_named() {
    use rdkafka::admin::{NewPartitions, NewTopic, TopicReplication};
    use rdkafka::types::RDKafkaErrorCode;
    let brokers = brokers(3, 3);
    let all = bootstrap(&brokers);
    let admin = clients::admin(&all);
    let create = |t: NewTopic<'_>| {
        let r = futures::executor::block_on(admin.create_topics([&t], &clients::admin_opts()))
            .expect("CreateTopics");
        r.into_iter().next().expect("one result").map(|_| ())
    };

    create(NewTopic::new("defaulted", 6, TopicReplication::Fixed(-1))).expect("defaulted");
    let placed = replicas(&brokers[0], "defaulted");
    assert!(placed.values().all(|r| r.len() == 3), "{placed:?}");
    let mut led: Vec<i32> = placed.values().map(|r| r[0]).collect();
    led.sort_unstable();
    assert_eq!(led, vec![1, 1, 2, 2, 3, 3], "leaders spread: {placed:?}");
    wait_for(&brokers[1], "defaulted", "every ISR full", |m| {
        m.values().all(|(_, isr)| isr == &vec![1, 2, 3])
    });

    let named: &[&[i32]] = &[&[2, 3], &[3, 1]];
    create(NewTopic::new("named", 2, TopicReplication::Variable(named))).expect("named");
    let placed = replicas(&brokers[2], "named");
    assert_eq!(placed[&0], vec![2, 3]);
    assert_eq!(placed[&1], vec![3, 1]);
    assert_eq!(
        leaders(&brokers[0], "named"),
        BTreeMap::from([(0, 2), (1, 3)])
    );
    let grow: &[&[i32]] = &[&[1, 2]];
    let r = futures::executor::block_on(admin.create_partitions(
        [&NewPartitions::new("named", 3).assign(grow)],
        &clients::admin_opts(),
    ))
    .expect("CreatePartitions");
    assert!(r[0].is_ok(), "{r:?}");
    assert_eq!(replicas(&brokers[1], "named")[&2], vec![1, 2]);
    // Records go through the named leaders and come back.
    let records: Vec<TestRecord> = (0..3)
        .map(|p| TestRecord::value(format!("named-{p}")).in_partition(p))
        .collect();
    assert_eq!(clients::produce(&all, "named", &records).len(), 3);

    let unknown: &[&[i32]] = &[&[1, 9]];
    let twice: &[&[i32]] = &[&[2, 2]];
    for bad in [unknown, twice] {
        let got = create(NewTopic::new("bad", 1, TopicReplication::Variable(bad)));
        assert!(
            matches!(got, Err((_, RDKafkaErrorCode::InvalidReplicaAssignment))),
            "{bad:?}: {got:?}"
        );
    }
    let got = create(NewTopic::new("bad", 1, TopicReplication::Fixed(4)));
    assert!(
        matches!(got, Err((_, RDKafkaErrorCode::InvalidReplicationFactor))),
        "{got:?}"
    );
    let wrong_width: &[&[i32]] = &[&[1, 2, 3]];
    let r = futures::executor::block_on(admin.create_partitions(
        [&NewPartitions::new("named", 4).assign(wrong_width)],
        &clients::admin_opts(),
    ))
    .expect("CreatePartitions");
    assert!(
        matches!(r[0], Err((_, RDKafkaErrorCode::InvalidReplicaAssignment))),
        "{r:?}"
    );

    // First use creates a topic and the offsets topic with three replicas.
    clients::produce(&all, "made-on-use", &[TestRecord::value("x")]);
    assert!(replicas(&brokers[0], "made-on-use")
        .values()
        .all(|r| r.len() == 3));
    let group = clients::consumer(&all, &[("group.id", "placement")]);
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("named", 0, rdkafka::Offset::Offset(1))
        .expect("offset");
    group
        .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .expect("commit");
    let offsets = replicas(&brokers[1], "__consumer_offsets");
    assert_eq!(offsets.len(), 50);
    assert!(offsets.values().all(|r| r.len() == 3), "{offsets:?}");
}

/// The broker coordinating `group` (FindCoordinator, asked until a broker
/// names one).
fn coordinator_of(brokers: &[&Broker], group: &str) -> i32 {
    use common::raw::RawConn;
    use kafka_protocol::messages::{ApiKey, FindCoordinatorRequest, FindCoordinatorResponse};
    let find = FindCoordinatorRequest::default().with_key(
        kafka_protocol::protocol::StrBytes::from_string(group.to_string()),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for b in brokers {
            let r: FindCoordinatorResponse =
                RawConn::connect(&b.bootstrap()).roundtrip(ApiKey::FindCoordinator, 3, &find);
            if r.error_code == 0 {
                return r.node_id.0;
            }
        }
        assert!(Instant::now() < deadline, "no coordinator for {group}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Committed offsets of `group` on `topic`, summed over its partitions.
/// librdkafka's committed() gives up on the first NOT_COORDINATOR (a
/// coordinator that moved after the client looked it up); asked again, it
/// looks the coordinator up again, as an application would.
fn committed_total(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> i64 {
    let c = clients::consumer(bootstrap, &[("group.id", group)]);
    let mut asked = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        asked.add_partition(topic, p);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        match c.committed_offsets(asked.clone(), clients::OP_TIMEOUT) {
            Ok(got) => break got,
            Err(e) if Instant::now() < deadline && e.to_string().contains("Coordinator") => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("committed offsets: {e}"),
        }
    };
    got.elements()
        .iter()
        .filter_map(|e| e.offset().to_raw())
        .filter(|o| *o >= 0)
        .sum()
}

/// A group's coordinator is the leader of its `__consumer_offsets`
/// partition (three replicas). With that broker killed, another broker
/// takes the partition, loads the group from its copy of the log and
/// serves it: the offsets committed before the kill are there, the
/// consumer goes on to the end, and what it reads twice is at most what
/// it had read after its last commit.
#[test]
fn a_group_keeps_consuming_while_its_coordinator_is_killed() {
    use rdkafka::consumer::CommitMode;
    let mut brokers = brokers(3, 3);
    let all = bootstrap(&brokers);
    clients::create_replicated_topic(&all, "work", 3, 3, &[]);
    wait_for(&brokers[0], "work", "every ISR full", |m| {
        m.values().all(|(l, isr)| *l > 0 && isr == &vec![1, 2, 3])
    });
    let producer = clients::producer(&all, &[("enable.idempotence", "true"), ("acks", "all")]);
    let records: Vec<TestRecord> = (0..3000)
        .map(|i| TestRecord::value(format!("w-{i:05}")).in_partition(i % 3))
        .collect();
    assert_eq!(
        clients::produce_all(&producer, "work", &records).len(),
        3000
    );

    let group = clients::consumer(
        &all,
        &[
            ("group.id", "failover"),
            ("auto.offset.reset", "earliest"),
            ("enable.auto.commit", "false"),
            ("session.timeout.ms", "30000"),
            ("max.poll.interval.ms", "60000"),
        ],
    );
    group.subscribe(&["work"]).expect("subscribe");
    let mut read: Vec<(i32, i64)> = Vec::new();
    let poll_until = |read: &mut Vec<(i32, i64)>, n: usize, within: Duration| {
        let deadline = Instant::now() + within;
        let mut distinct: std::collections::BTreeSet<(i32, i64)> = read.iter().copied().collect();
        while distinct.len() < n {
            assert!(
                Instant::now() < deadline,
                "read {} distinct of {n}",
                distinct.len()
            );
            if let Some(m) = group.poll(Duration::from_millis(200)) {
                let m = m.expect("message");
                read.push((m.partition(), m.offset()));
                distinct.insert((m.partition(), m.offset()));
            }
        }
    };
    // Commits the position after what was read of each partition.
    let commit = |read: &[(i32, i64)]| {
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for (p, o) in read {
            let n = next.entry(*p).or_default();
            *n = (*n).max(o + 1);
        }
        let mut tpl = rdkafka::TopicPartitionList::new();
        for (p, o) in next {
            tpl.add_partition_offset("work", p, rdkafka::Offset::Offset(o))
                .expect("offset");
        }
        group.commit(&tpl, CommitMode::Sync)
    };
    poll_until(&mut read, 1000, Duration::from_secs(60));
    commit(&read).expect("commit");
    let committed_at = read.len();
    let committed = committed_total(&all, "failover", "work", 3);
    assert!(committed >= 1000, "committed {committed}");
    poll_until(&mut read, 1200, Duration::from_secs(60));
    let read_after_commit = read.len() - committed_at;

    let offsets_isr = leaders_and_isr(&brokers[0], "__consumer_offsets");
    assert!(
        offsets_isr.values().all(|(_, isr)| isr.len() == 3),
        "{offsets_isr:?}"
    );
    let coordinator = coordinator_of(&brokers.iter().collect::<Vec<_>>(), "failover");
    brokers[(coordinator - 1) as usize].kill9();
    // Brokers are numbered from 1 in order.
    let alive: Vec<&Broker> = (1..=3)
        .filter(|id| *id != coordinator)
        .map(|id| &brokers[(id - 1) as usize])
        .collect();
    let up = alive
        .iter()
        .map(|b| b.bootstrap())
        .collect::<Vec<_>>()
        .join(",");
    // The commit made before the kill is at the new coordinator.
    let new_coordinator = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let c = coordinator_of(&alive, "failover");
            if c != coordinator {
                break c;
            }
            assert!(Instant::now() < deadline, "the coordinator never moved");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    assert_eq!(committed_total(&up, "failover", "work", 3), committed);

    poll_until(&mut read, 3000, Duration::from_secs(120));
    let distinct: std::collections::BTreeSet<(i32, i64)> = read.iter().copied().collect();
    let reread = read.len() - distinct.len();
    println!(
        "coordinator {coordinator} killed, {new_coordinator} took over: read {} records, {} distinct, {reread} read twice ({read_after_commit} read after the last commit)",
        read.len(),
        distinct.len()
    );
    assert_eq!(distinct.len(), 3000);
    assert!(
        reread <= read_after_commit,
        "read {reread} twice; only {read_after_commit} were read after the last commit"
    );
    // Commits go on at the new coordinator.
    commit(&read).expect("commit after the move");
    assert_eq!(committed_total(&up, "failover", "work", 3), 3000);
}

/// A broker that starts catches up with the metadata log before it says
/// it is ready: at its first 200 from `/ready` it has applied everything
/// the metadata leader had applied when it started, topics created while
/// it was down included, and it follows the partition it was given
/// meanwhile. The metadata leader reports every node's lag.
#[test]
fn a_restarted_broker_is_ready_only_once_caught_up_with_metadata() {
    use rdkafka::admin::{NewTopic, TopicReplication};
    let mut brokers = three_brokers();
    brokers[2].stop();
    let up = bootstrap(&brokers[..2]);
    for i in 0..10 {
        clients::create_topic(&up, &format!("missed-{i}"), 1, &[]);
    }
    let named: &[&[i32]] = &[&[1, 3]];
    let admin = clients::admin(&up);
    let r = futures::executor::block_on(admin.create_topics(
        [&NewTopic::new(
            "kept-for-3",
            1,
            TopicReplication::Variable(named),
        )],
        &clients::admin_opts(),
    ))
    .expect("CreateTopics");
    assert!(r[0].is_ok(), "{r:?}");
    clients::produce(&up, "kept-for-3", &[TestRecord::value("while 3 was down")]);
    let applied = |b: &Broker| b.metrics()["strata_metadata_applied_end"];
    let leader_end = applied(&brokers[0]).max(applied(&brokers[1]));
    assert!(leader_end > 0.0);

    brokers[2].restart();
    common::wait_ready(&brokers[2].admin_addr());
    let at_ready = applied(&brokers[2]);
    assert!(
        at_ready >= leader_end,
        "ready having applied {at_ready} of the leader's {leader_end} entries"
    );
    wait_for(&brokers[2], "kept-for-3", "broker 3 in the ISR", |m| {
        m[&0].1 == vec![1, 3]
    });
    let lag_rows = |b: &Broker| {
        b.metrics()
            .keys()
            .filter(|k| k.starts_with("strata_metadata_replica_lag_entries{"))
            .count()
    };
    let rows: Vec<usize> = brokers.iter().map(lag_rows).collect();
    let mut sorted = rows.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![0, 0, 3], "lag rows per broker: {rows:?}");
}

/// Leader rebalance: a broker killed and started again leads none of its
/// partitions (the others took them); the metadata leader's check
/// (`--leader-imbalance-check-interval-ms`) finds it holding none of its
/// preferred leaderships and gives them back. ElectLeaders then has
/// nothing left to do, and an unclean election of a led partition is not
/// needed either.
#[test]
fn leaderships_return_to_their_preferred_replicas() {
    use common::raw::RawConn;
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    use kafka_protocol::messages::{ApiKey, ElectLeadersRequest, ElectLeadersResponse};
    let mut brokers = brokers_with(3, 3, &["--leader-imbalance-check-interval-ms", "500"]);
    let all = bootstrap(&brokers);
    clients::create_replicated_topic(&all, "prefer", 6, 3, &[]);
    let preferred: BTreeMap<i32, i32> = replicas(&brokers[1], "prefer")
        .into_iter()
        .map(|(p, r)| (p, r[0]))
        .collect();
    let full = |m: &BTreeMap<i32, (i32, Vec<i32>)>| {
        m.values().all(|(l, isr)| *l > 0 && isr == &vec![1, 2, 3])
    };
    wait_for(&brokers[1], "prefer", "every ISR full", full);

    brokers[0].kill9();
    wait_for(&brokers[1], "prefer", "broker 1 leads nothing", |m| {
        m.values().all(|(l, _)| *l > 1)
    });
    brokers[0].restart();
    common::wait_ready(&brokers[0].admin_addr());
    let back = wait_for(
        &brokers[1],
        "prefer",
        "leaders back on their preferred replicas",
        |m| full(m) && m.iter().all(|(p, (l, _))| *l == preferred[p]),
    );
    assert!(back.values().any(|(l, _)| *l == 1), "{back:?}");

    let ask = |election_type: i8, partitions: Vec<i32>| -> Vec<i16> {
        let req = ElectLeadersRequest::default()
            .with_election_type(election_type)
            .with_timeout_ms(10_000)
            .with_topic_partitions(Some(vec![TopicPartitions::default()
                .with_topic(kafka_protocol::messages::TopicName(
                    kafka_protocol::protocol::StrBytes::from_static_str("prefer"),
                ))
                .with_partitions(partitions)]));
        let r: ElectLeadersResponse =
            RawConn::connect(&brokers[2].bootstrap()).roundtrip(ApiKey::ElectLeaders, 2, &req);
        assert_eq!(r.error_code, 0, "{r:?}");
        r.replica_election_results[0]
            .partition_result
            .iter()
            .map(|p| p.error_code)
            .collect()
    };
    // ELECTION_NOT_NEEDED, then UNKNOWN_TOPIC_OR_PARTITION for partition 9.
    assert_eq!(ask(0, vec![0, 9]), vec![84, 3]);
    assert_eq!(ask(1, vec![0]), vec![84]);
}

/// Reassignment: a partition's replicas move from brokers 1 and 2 to 3
/// and 4 while an idempotent `acks=all` producer writes to it: the new
/// replicas catch up, the old ones leave (their local copies removed),
/// leadership moves to a new replica, ListPartitionReassignments shows the
/// move while it runs, and every acknowledged record is read back once,
/// in order, from the new replicas. A cancelled move goes back.
#[test]
fn replicas_move_to_other_brokers_under_load() {
    use common::raw::RawConn;
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::{
        AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ApiKey, BrokerId,
        ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
    };
    use rdkafka::admin::{NewTopic, TopicReplication};
    let brokers = brokers(4, 3);
    let all = bootstrap(&brokers);
    let named: &[&[i32]] = &[&[1, 2], &[2, 1]];
    let admin = clients::admin(&all);
    let r = futures::executor::block_on(admin.create_topics(
        [&NewTopic::new(
            "moving",
            2,
            TopicReplication::Variable(named),
        )],
        &clients::admin_opts(),
    ))
    .expect("CreateTopics");
    assert!(r[0].is_ok(), "{r:?}");
    wait_for(&brokers[0], "moving", "both ISRs full", |m| {
        m.values().all(|(l, isr)| *l > 0 && isr == &vec![1, 2])
    });
    let reassign = |moves: Vec<(i32, Option<Vec<i32>>)>| -> Vec<i16> {
        let req = AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![ReassignableTopic::default()
                .with_name(TopicName(
                    kafka_protocol::protocol::StrBytes::from_static_str("moving"),
                ))
                .with_partitions(
                    moves
                        .into_iter()
                        .map(|(p, r)| {
                            ReassignablePartition::default()
                                .with_partition_index(p)
                                .with_replicas(r.map(|r| r.into_iter().map(BrokerId).collect()))
                        })
                        .collect(),
                )]);
        let r: AlterPartitionReassignmentsResponse = RawConn::connect(&brokers[3].bootstrap())
            .roundtrip(ApiKey::AlterPartitionReassignments, 0, &req);
        assert_eq!(r.error_code, 0, "{r:?}");
        r.responses[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect()
    };
    let ongoing = || -> usize {
        let r: ListPartitionReassignmentsResponse = RawConn::connect(&brokers[0].bootstrap())
            .roundtrip(
                ApiKey::ListPartitionReassignments,
                0,
                &ListPartitionReassignmentsRequest::default().with_timeout_ms(10_000),
            );
        r.topics.iter().map(|t| t.partitions.len()).sum()
    };

    let producer = clients::producer(&all, &[("enable.idempotence", "true"), ("acks", "all")]);
    let mut acked: BTreeMap<i64, String> = BTreeMap::new();
    let mut n = 0;
    // Partition 0 only: the producer's records go where the move happens.
    let send = |n: &mut usize, acked: &mut BTreeMap<i64, String>| {
        let futures: Vec<_> = (0..200)
            .map(|_| {
                *n += 1;
                let v = format!("moving-{:06}", *n);
                (
                    v.clone(),
                    clients::enqueue(&producer, "moving", &TestRecord::value(v).in_partition(0)),
                )
            })
            .collect();
        for (v, f) in futures {
            if let Ok((_, o)) = clients::await_delivery(f) {
                acked.insert(o, v);
            }
        }
    };
    send(&mut n, &mut acked);
    // A bad target and a change of factor are refused; nothing moves.
    assert_eq!(reassign(vec![(0, Some(vec![3, 9]))]), vec![39]);
    assert_eq!(reassign(vec![(0, Some(vec![3]))]), vec![38]);
    assert_eq!(
        reassign(vec![(1, None)]),
        vec![85],
        "NO_REASSIGNMENT_IN_PROGRESS"
    );

    assert_eq!(reassign(vec![(0, Some(vec![3, 4]))]), vec![0]);
    let mut seen_ongoing = ongoing() > 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        send(&mut n, &mut acked);
        let m = leaders_and_isr(&brokers[0], "moving");
        if replicas(&brokers[0], "moving")[&0] == vec![3, 4] && m[&0].1 == vec![3, 4] {
            break;
        }
        seen_ongoing |= ongoing() > 0;
        assert!(Instant::now() < deadline, "the move never finished: {m:?}");
    }
    send(&mut n, &mut acked);
    assert!(
        seen_ongoing,
        "ListPartitionReassignments never showed the move"
    );
    assert_eq!(ongoing(), 0);
    let leader = leaders(&brokers[0], "moving")[&0];
    assert!(leader == 3 || leader == 4, "leader {leader}");
    // The old replicas' local copies are gone.
    for b in &brokers[..2] {
        let dirs: Vec<String> = std::fs::read_dir(b.data_dir())
            .expect("data dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|d| d.starts_with("moving-0"))
            .collect();
        assert!(dirs.is_empty(), "{dirs:?} left behind");
    }

    // Everything acknowledged is there, once, in order, read from the new
    // replicas alone.
    let new_ones = bootstrap(&brokers[2..]);
    let end = high_watermark(&new_ones, "moving", 0);
    let got = clients::consume_ranges(&new_ones, "moving", &[(0, 0, end)], Duration::from_secs(60));
    let read = by_offset(&got);
    let lost: Vec<_> = acked
        .iter()
        .filter(|(o, v)| read.get(o) != Some(v))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged records lost, first {:?}",
        lost.len(),
        &lost[..lost.len().min(3)]
    );
    let values: Vec<&String> = read.values().collect();
    let mut sorted = values.clone();
    sorted.sort();
    assert_eq!(values, sorted, "out of order");
    sorted.dedup();
    assert_eq!(sorted.len(), values.len(), "duplicated");
    println!(
        "moved partition 0 from [1, 2] to [3, 4] under load: {} acknowledged, {} read, leader {leader}",
        acked.len(),
        read.len()
    );

    // A cancelled move goes back to where it was.
    assert_eq!(reassign(vec![(1, Some(vec![4, 3]))]), vec![0]);
    assert_eq!(reassign(vec![(1, None)]).len(), 1);
    wait_for(&brokers[0], "moving", "partition 1 back on 2 and 1", |m| {
        m[&1].1 == vec![1, 2]
    });
    assert_eq!(replicas(&brokers[0], "moving")[&1], vec![2, 1]);
}

/// A voter whose quorum never forms waits for it, and SIGTERM still stops
/// it at once, cleanly.
#[test]
fn a_broker_waiting_for_its_quorum_stops_on_sigterm() {
    let controller = common::free_addr();
    let voters = format!(
        "1@{controller},2@{},3@{}",
        common::free_addr(),
        common::free_addr()
    );
    let mut b = Broker::builder()
        .args([
            "--node-id",
            "1",
            "--controller-listen",
            controller.as_str(),
            "--controller-quorum-voters",
            voters.as_str(),
        ])
        .start();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !b.logs().contains("serving the controller listener") {
        assert!(Instant::now() < deadline, "{}", b.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (code, _) = common::http_get(&b.admin_addr(), "/ready");
    assert_eq!(code, 503, "ready without a quorum");
    // Exits 0 within the harness's stop timeout, or panics.
    b.stop();
}

/// `strata cluster drain --broker 3 --wait` moves every replica off broker
/// 3 (partition reassignment) while the records stay readable, and
/// `strata cluster reassignments` then lists nothing in progress.
#[test]
fn strata_cluster_drain_empties_a_broker() {
    let brokers = three_brokers();
    let all = bootstrap(&brokers);
    create_assigned(&all, "drained", &[&[1, 3], &[3, 2], &[2, 3]]);
    let (records, placed) = produce_spread(&all, "drained", "d", 300, 3);
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(common::strata_bin())
            .args(args)
            .args(["--output", "json", "-b", &brokers[0].bootstrap()])
            .output()
            .expect("run strata");
        assert!(
            out.status.success(),
            "strata {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    let moves = cli(&["cluster", "drain", "--broker", "3", "--wait"]);
    let moves = moves.as_array().expect("moves");
    assert_eq!(moves.len(), 3, "{moves:?}");
    assert!(moves.iter().all(|m| m["outcome"] == "moving"), "{moves:?}");
    assert_eq!(cli(&["cluster", "reassignments"]), serde_json::json!([]));
    let now = replicas(&brokers[0], "drained");
    assert!(
        now.values().all(|r| r.len() == 2 && !r.contains(&3)),
        "{now:?}"
    );
    // Every record, at its offset.
    assert_all_read(&bootstrap(&brokers[..2]), "drained", &records, &placed);
}

/// `strata <args> --output json -b <b>`: exit status, stdout, stderr.
fn strata_json(b: &Broker, args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = std::process::Command::new(common::strata_bin())
        .args(args)
        .args(["--output", "json", "-b", &b.bootstrap()])
        .output()
        .expect("run strata");
    let stdout = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.success(),
        stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `strata cluster remove-broker` (UnregisterBroker) removes a broker for
/// good once it is stopped and drained, and only then: a running broker,
/// one that hosts replicas, a voter and an unknown id are refused with
/// the reason. The removed broker leaves the metadata log's learners, the
/// records stay readable, and it may come back by starting again.
#[test]
fn strata_cluster_remove_broker_unregisters_a_stopped_drained_broker() {
    let mut brokers = brokers(4, 3);
    let first = bootstrap(&brokers[..3]);
    create_assigned(&first, "leaving", &[&[1, 4], &[4, 2]]);
    let (records, placed) = produce_spread(&bootstrap(&brokers), "leaving", "l", 100, 2);
    let mut last = brokers.pop().expect("broker 4");
    let remove = |id: &str| strata_json(&brokers[0], &["cluster", "remove-broker", "--broker", id]);
    let refused = |id: &str, why: &str| {
        let (ok, _, err) = remove(id);
        assert!(!ok && err.contains(why), "remove-broker {id}: {err}");
    };
    refused("4", "running");
    refused("1", "voter");
    refused("9", "not registered");

    // Stopped (it hands over its leaderships), it still hosts replicas.
    last.stop();
    refused("4", "drain it first");
    let (ok, moves, err) = strata_json(
        &brokers[0],
        &["cluster", "drain", "--broker", "4", "--wait"],
    );
    assert!(ok, "drain: {err}");
    assert_eq!(moves.as_array().map(Vec::len), Some(2), "{moves}");
    let (ok, out, err) = remove("4");
    assert!(ok, "remove-broker 4: {err}");
    assert_eq!(out, serde_json::json!({ "removed": 4 }));

    // Gone from the brokers clients see, and from the quorum's learners
    // once its session (2 s) has passed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = cluster_status(&brokers[0]);
        let brokers_seen = s["brokers"].as_array().unwrap().len();
        let observers = s["quorum"]["observers"].as_array().unwrap().len();
        if brokers_seen == 3 && observers == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "still there: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_all_read(&first, "leaving", &records, &placed);

    // Started again, it joins as a learner and registers.
    last.restart();
    common::wait_ready(&last.admin_addr());
    let s = cluster_status(&brokers[0]);
    assert_eq!(s["brokers"].as_array().unwrap().len(), 4, "{s}");
    assert_eq!(s["quorum"]["observers"][0]["node_id"], 4, "{s}");
}

/// A single node grows into a cluster: restarted with a controller
/// listener as the one voter, joined by two brokers as learners, which
/// `strata cluster add-voter` makes voters. `strata cluster drain` then
/// moves the first node's partitions to the new brokers, and the cluster
/// keeps its quorum and every record when the first node is killed.
#[test]
fn a_single_node_grows_into_a_cluster_of_three_voters() {
    let data = tempfile::tempdir().expect("tempdir");
    let kafka = common::free_addr();
    let mut alone = Broker::builder()
        .data_dir(data.path())
        .listen(kafka.clone())
        .start();
    create_assigned(&alone.bootstrap(), "grown", &[&[1], &[1]]);
    let (records, placed) = produce_spread(&alone.bootstrap(), "grown", "g", 100, 2);
    alone.stop();
    drop(alone);

    let controllers: Vec<String> = (0..3).map(|_| common::free_addr()).collect();
    let voters = format!("1@{}", controllers[0]);
    let start = |id: usize, b: common::BrokerBuilder| {
        b.args([
            "--node-id".to_string(),
            id.to_string(),
            "--controller-listen".to_string(),
            controllers[id - 1].clone(),
            "--controller-quorum-voters".to_string(),
            voters.clone(),
            "--broker-session-timeout-ms".to_string(),
            "2000".to_string(),
        ])
        .start()
    };
    let mut first = start(1, Broker::builder().data_dir(data.path()).listen(kafka));
    common::wait_ready(&first.admin_addr());
    let others: Vec<Broker> = (2..=3)
        .map(|id| start(id, Broker::builder().listen(common::free_addr())))
        .collect();
    for b in &others {
        common::wait_ready(&b.admin_addr());
    }
    for id in ["2", "3"] {
        let (ok, out, err) = strata_json(&first, &["cluster", "add-voter", "--broker", id]);
        assert!(ok, "add-voter {id}: {err}");
        assert_eq!(out["voter"].to_string(), id, "{out}");
    }
    let s = cluster_status(&others[0]);
    let ids = |key: &str| quorum_ids(&s, key);
    assert_eq!(ids("voters"), vec![1, 2, 3], "{s}");
    assert!(ids("observers").is_empty(), "{s}");

    // The first node's partitions move to the new brokers.
    let (ok, moves, err) = strata_json(&first, &["cluster", "drain", "--broker", "1", "--wait"]);
    assert!(ok, "drain: {err}");
    assert_eq!(moves.as_array().map(Vec::len), Some(2), "{moves}");

    // Without the first node: a quorum still, and every record.
    first.kill9();
    let rest = bootstrap(&others);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Refused until the two elect a leader.
        let (_, s, _) = strata_json(&others[0], &["cluster", "status"]);
        if s["quorum"]["leader_id"]
            .as_i64()
            .is_some_and(|l| l == 2 || l == 3)
        {
            break;
        }
        assert!(Instant::now() < deadline, "no new metadata leader: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    clients::create_topic(&others[0].bootstrap(), "after", 2, &[]);
    assert_all_read(&rest, "grown", &records, &placed);
}

/// A network partition: each broker in its own network namespace, the
/// leader of a replicated partition cut off from both other brokers (its
/// followers and the rest of the metadata quorum) while the clients still
/// reach it. The other two fence it and elect a new leader; an idempotent
/// `acks=all` producer keeps writing (nothing it sent to the cut-off
/// leader is acknowledged there: no follower confirms it); once the
/// network heals the old leader truncates what it took alone and rejoins.
/// Zero acknowledged records lost or duplicated, in order.
#[test]
fn a_leader_cut_off_from_the_other_brokers_loses_nothing_acknowledged() {
    if !common::netns::available() {
        // Network namespaces need root; the CI machine runs as root.
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let mut net = common::netns::Net::new(3);
    let voters = (1..=3)
        .map(|i| format!("{i}@{}:9093", net.ip(i)))
        .collect::<Vec<_>>()
        .join(",");
    let brokers: Vec<Broker> = (1..=3)
        .map(|i| {
            Broker::builder()
                .netns(net.ns(i))
                .listen(format!("{}:9092", net.ip(i)))
                .admin_listen(format!("{}:9644", net.ip(i)))
                .args([
                    "--node-id".to_string(),
                    i.to_string(),
                    "--controller-listen".to_string(),
                    format!("{}:9093", net.ip(i)),
                    "--controller-quorum-voters".to_string(),
                    voters.clone(),
                    "--broker-session-timeout-ms".to_string(),
                    "2000".to_string(),
                ])
                .start()
        })
        .collect();
    for b in &brokers {
        common::wait_ready(&b.admin_addr());
    }
    let all = bootstrap(&brokers);
    clients::create_replicated_topic(&all, "cut", 1, 3, &[("min.insync.replicas", "2")]);
    let placed = wait_for(&brokers[0], "cut", "ISR full", |m| {
        m[&0].0 > 0 && m[&0].1 == vec![1, 2, 3]
    });
    let leader = placed[&0].0 as usize;
    let others: Vec<usize> = (1..=3).filter(|i| *i != leader).collect();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = write_numbered_until(&all, "cut", 100, &stop);
    std::thread::sleep(Duration::from_secs(2));
    for o in &others {
        net.cut(leader, *o);
    }
    // The others fence it and elect one of themselves.
    let moved = wait_for(&brokers[others[0] - 1], "cut", "a new leader", |m| {
        m[&0].0 > 0 && m[&0].0 as usize != leader
    });
    let new_leader = moved[&0].0;
    std::thread::sleep(Duration::from_secs(5));
    net.heal();
    wait_for(
        &brokers[others[0] - 1],
        "cut",
        "the old leader back in the ISR",
        |m| m[&0].1 == vec![1, 2, 3],
    );
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, failed) = writer.join().expect("writer");

    check_numbered(
        &all,
        "cut",
        &acked,
        failed,
        &format!("leader {leader} cut off, {new_leader} took over"),
    );
    drop(brokers);
}

/// A thread with an idempotent `acks=all` producer that sends numbered
/// records to `topic` ([`send_numbered`], `batch` at a time) until `stop`;
/// it returns the acknowledged records by offset and the count of those
/// that were not.
fn write_numbered_until(
    all: &str,
    topic: &str,
    batch: usize,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(BTreeMap<i64, String>, usize)> {
    let (all, topic, stop) = (all.to_string(), topic.to_string(), stop.clone());
    std::thread::spawn(move || {
        let producer = clients::producer(
            &all,
            &[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("request.timeout.ms", "5000"),
                ("message.timeout.ms", "120000"),
                ("topic.metadata.refresh.interval.ms", "1000"),
            ],
        );
        let (mut n, mut acked, mut failed) = (0, BTreeMap::new(), 0);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            failed += send_numbered(&producer, &topic, &mut n, batch, &mut acked);
        }
        (acked, failed)
    })
}

/// Reads partition 0 of `topic` (records sent by [`send_numbered`]) to
/// its high watermark and checks that every acknowledged record is there
/// at its offset, none twice, in the order sent; prints the figures after
/// `what`.
fn check_numbered(
    all: &str,
    topic: &str,
    acked: &BTreeMap<i64, String>,
    failed: usize,
    what: &str,
) {
    let end = high_watermark(all, topic, 0);
    let got = clients::consume_ranges(all, topic, &[(0, 0, end)], Duration::from_secs(60));
    let read = by_offset(&got);
    let lost: Vec<_> = acked
        .iter()
        .filter(|(o, v)| read.get(o) != Some(v))
        .collect();
    let values: Vec<&String> = read.values().collect();
    let mut sorted = values.clone();
    sorted.sort();
    let in_order = values == sorted;
    sorted.dedup();
    let duplicated = values.len() - sorted.len();
    println!(
        "{what}: {} acknowledged, {failed} not, {} read, {} lost, {duplicated} duplicated",
        acked.len(),
        read.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "lost {:?}", &lost[..lost.len().min(5)]);
    assert_eq!(duplicated, 0);
    assert!(in_order, "out of order");
    assert!(acked.len() > 100, "too little was written: {}", acked.len());
}

/// The power-cut filesystem itself: after a cut, a file holds what it
/// held at its last fsync, names stay, and nothing works until the power
/// is back.
#[test]
fn the_power_cut_filesystem_keeps_only_what_was_fsynced() {
    use std::io::{Read, Seek, Write};
    if !common::lazyfs::available() {
        eprintln!("skipped: a FUSE mount needs root and /dev/fuse");
        return;
    }
    let mut fs = common::lazyfs::LazyFs::mount();
    let dir = fs.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    let path = |name: &str| dir.join(name);
    // Synced, then more appended.
    let mut a = std::fs::File::create(path("a")).unwrap();
    a.write_all(b"kept").unwrap();
    a.sync_data().unwrap();
    a.write_all(b" lost").unwrap();
    // Never synced.
    std::fs::write(path("b"), b"never synced").unwrap();
    // Synced, then cut short without a sync.
    let c = std::fs::File::create(path("c")).unwrap();
    (&c).write_all(b"0123456789").unwrap();
    c.sync_all().unwrap();
    c.set_len(4).unwrap();
    // Overwritten in place and synced: the new bytes stay.
    let mut d = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path("d"))
        .unwrap();
    d.write_all(b"aaaa").unwrap();
    d.sync_all().unwrap();
    d.seek(std::io::SeekFrom::Start(1)).unwrap();
    d.write_all(b"bb").unwrap();
    d.sync_data().unwrap();
    // Written under a temporary name and renamed, with no sync.
    std::fs::write(path("e.tmp"), b"renamed").unwrap();
    std::fs::rename(path("e.tmp"), path("e")).unwrap();
    assert_eq!(std::fs::read(path("a")).unwrap(), b"kept lost");

    let dropped = fs.cut_power();
    let mut buf = Vec::new();
    let err = std::fs::File::open(path("a"))
        .and_then(|mut f| f.read_to_end(&mut buf))
        .expect_err("no power, no reads");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    drop((a, c, d));
    fs.restore_power();

    assert_eq!(std::fs::read(path("a")).unwrap(), b"kept");
    assert_eq!(std::fs::read(path("b")).unwrap(), b"");
    assert_eq!(std::fs::read(path("c")).unwrap(), b"0123456789");
    assert_eq!(std::fs::read(path("d")).unwrap(), b"abba");
    assert_eq!(std::fs::read(path("e")).unwrap(), b"");
    assert!(!path("e.tmp").exists());
    assert_eq!(dropped, 5 + 12 + 6 + 7, "bytes thrown away");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c", "d", "e"]);
}

/// All three brokers lose power at once, twice, while idempotent
/// `acks=all` producers write to four topics: the brokers' data
/// directories are on a filesystem that throws away every write not
/// fsynced (see `common::lazyfs`), so unlike a SIGKILL, which keeps the
/// page cache, this shows what the fsyncs behind `acks=all` buy. Every
/// acknowledged record is there after the power comes back, once, in
/// order; the metadata quorum, written to the same disks, comes back too,
/// and every partition takes writes again.
#[test]
fn all_brokers_losing_power_at_once_lose_nothing_acknowledged() {
    const TOPICS: usize = 4;
    if !common::lazyfs::available() {
        eprintln!("skipped: a FUSE mount needs root and /dev/fuse");
        return;
    }
    let mut fs = common::lazyfs::LazyFs::mount();
    let root = fs.path().to_path_buf();
    // Operations fail between the cut and the kill: those errors are the
    // point of the test.
    let mut brokers = brokers_built(3, 3, &[], |i, b| {
        b.data_dir(root.join(format!("broker-{i}"))).expect_errors()
    });
    let all = bootstrap(&brokers);
    let topics: Vec<String> = (0..TOPICS).map(|i| format!("power-{i}")).collect();
    let full = |m: &BTreeMap<i32, (i32, Vec<i32>)>| m[&0].0 > 0 && m[&0].1 == vec![1, 2, 3];
    for t in &topics {
        clients::create_replicated_topic(&all, t, 1, 3, &[("min.insync.replicas", "2")]);
        wait_for(&brokers[0], t, "ISR full", full);
    }

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = topics
        .iter()
        .map(|t| write_numbered_until(&all, t, 50, &stop))
        .collect();
    let mut dropped = Vec::new();
    for _ in 0..2 {
        std::thread::sleep(Duration::from_secs(3));
        dropped.push(fs.cut_power());
        for b in &mut brokers {
            b.kill9();
        }
        fs.restore_power();
        for b in &mut brokers {
            b.restart();
        }
        for b in &brokers {
            common::wait_ready(&b.admin_addr());
        }
        for t in &topics {
            wait_for(&brokers[0], t, "ISR full after the power came back", full);
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for (t, w) in topics.iter().zip(writers) {
        let (acked, failed) = w.join().expect("writer");
        check_numbered(
            &all,
            t,
            &acked,
            failed,
            &format!("{t}: two power cuts ({dropped:?} bytes not fsynced thrown away)"),
        );
    }
    drop(brokers);
}

/// Brokers replicate over a SASL_SSL inter-broker listener: followers log
/// in with the inter-broker client properties, and acks=all with
/// min.insync.replicas=2 succeeds only if they copy the leader's records
/// through it. Clients keep the PLAINTEXT listener's addresses.
#[test]
fn replication_runs_over_a_sasl_ssl_inter_broker_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = common::pki::Pki::create(dir.path());
    let users = dir.path().join("users.toml");
    std::fs::write(&users, "[users]\nbroker = \"broker-secret\"\n").expect("users");
    let client = dir.path().join("inter-broker.properties");
    std::fs::write(
        &client,
        format!(
            "security.protocol=SASL_SSL\nssl.ca.location={}\nsasl.mechanism=PLAIN\nsasl.username=broker\nsasl.password=broker-secret\n",
            pki.ca.display()
        ),
    )
    .expect("client properties");
    let brokers = brokers_built(2, 2, &[], |_, b| {
        b.args([
            "--listeners",
            "PLAINTEXT://127.0.0.1:0,INTERNAL://127.0.0.1:0",
            "--listener-security-protocol-map",
            "INTERNAL:SASL_SSL",
            "--inter-broker-listener-name",
            "INTERNAL",
            "--inter-broker-client-config",
            client.to_str().expect("utf8"),
            "--sasl-plain-users-file",
            users.to_str().expect("utf8"),
        ])
        .args(pki.broker_args())
    });
    let plain = brokers[0].listener("PLAINTEXT");
    clients::create_replicated_topic(&plain, "secured", 2, 2, &[("min.insync.replicas", "2")]);
    let records: Vec<TestRecord> = (0..200)
        .map(|i| TestRecord::keyed(format!("k{i}"), format!("v{i}")).in_partition(i % 2))
        .collect();
    let producer = clients::producer(&plain, &[("acks", "all")]);
    let at = clients::produce_all(&producer, "secured", &records);
    assert_eq!(at.len(), 200);
    // Clients of the PLAINTEXT listener are told both brokers' PLAINTEXT
    // addresses.
    let md = clients::metadata_client(&plain)
        .fetch_metadata(Some("secured"), clients::OP_TIMEOUT)
        .expect("metadata");
    let mut ports: Vec<String> = md
        .brokers()
        .iter()
        .map(|b| format!("{}:{}", b.host(), b.port()))
        .collect();
    ports.sort();
    let mut want: Vec<String> = brokers.iter().map(|b| b.listener("PLAINTEXT")).collect();
    want.sort();
    assert_eq!(ports, want);
    let logins: f64 = brokers
        .iter()
        .map(|b| b.metrics()["strata_sasl_authentications_total"])
        .sum();
    assert!(logins >= 1.0, "followers log in to their leaders");
}

/// The metadata voters talk TLS with client certificates both ways
/// (`--controller-security-protocol SSL`): the cluster forms, serves, and a
/// plain TCP client on a controller port is refused before it is read.
#[test]
fn the_controller_quorum_runs_over_mutual_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = common::pki::Pki::create(dir.path());
    let brokers = brokers_built(3, 3, &["--controller-security-protocol", "SSL"], |_, b| {
        b.args(pki.broker_args())
    });
    let all = bootstrap(&brokers);
    clients::create_replicated_topic(&all, "over-mtls", 3, 3, &[]);
    let at = clients::produce(
        &all,
        "over-mtls",
        &(0..30)
            .map(|i| TestRecord::value(format!("v{i}")).in_partition(i % 3))
            .collect::<Vec<_>>(),
    );
    assert_eq!(at.len(), 30);
    for b in &brokers {
        assert_eq!(leaders(b, "over-mtls").len(), 3);
    }
    // A plain TCP client on a controller port: the frame it sends is never
    // answered; the handshake failure is logged.
    let controller = brokers[0]
        .logs()
        .lines()
        .find_map(|l| {
            l.split("controller_addr=")
                .nth(1)
                .map(|r| r.split_whitespace().next().unwrap_or("").to_string())
        })
        .expect("controller address in the log");
    let mut raw = common::raw::RawConn::connect(&controller);
    raw.write_frame(br#"{"Heartbeat":{"node_id":9}}"#)
        .expect("write");
    let answered = raw.wait_closed(Duration::from_secs(30)).expect("closed");
    assert!(
        !answered.starts_with(&[0, 0, 0]),
        "a plain client got an answer: {answered:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !brokers[0]
        .logs()
        .contains("controller TLS handshake failed")
    {
        assert!(Instant::now() < deadline, "no handshake failure logged");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A replicated compacted topic: the leader cleans its log; a follower
/// whose copy of the partition is lost (its directory removed, as after a
/// disk replacement) copies the leader's cleaned batches, gaps and all,
/// rejoins the ISR, and once it leads serves each key's last acknowledged
/// value at its offset.
#[test]
fn a_follower_copies_a_cleaned_log_and_serves_it_as_leader() {
    const TOPIC: &str = "compacted-rep";
    const KEYS: usize = 50;
    let mut brokers = brokers_with(
        3,
        3,
        &[
            "--log-cleaner-backoff-ms",
            "50",
            "--log-retention-check-interval-ms",
            "200",
        ],
    );
    let all = bootstrap(&brokers);
    clients::create_replicated_topic(
        &all,
        TOPIC,
        1,
        2,
        &[
            ("cleanup.policy", "compact"),
            ("remote.storage.enable", "false"),
            ("segment.bytes", "4096"),
            ("segment.ms", "300"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ],
    );
    let m = wait_for(&brokers[0], TOPIC, "led with an ISR of two", |m| {
        m[&0].0 > 0 && m[&0].1.len() == 2
    });
    let (leader, isr) = m[&0].clone();
    let follower = *isr.iter().find(|b| **b != leader).expect("a follower");
    let (li, fi) = ((leader - 1) as usize, (follower - 1) as usize);
    let producer = clients::producer(&brokers[li].bootstrap(), &[("acks", "all")]);
    let mut last: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for i in 0..3000 {
        let (key, value) = (format!("k{:02}", i % KEYS), format!("v{i:05}"));
        let f = clients::enqueue(
            &producer,
            TOPIC,
            &TestRecord::keyed(key.clone(), value.clone()),
        );
        if i % 500 == 499 || i == 2999 {
            // Wait now and then so segments roll by time in between.
            let (_, o) = clients::await_delivery(f).expect("acks=all delivery");
            last.insert(key, (o, value));
        } else {
            drop(f);
        }
    }
    let producer_done = clients::producer(&brokers[li].bootstrap(), &[("acks", "all")]);
    drop(producer_done);
    // Every key's last value as acknowledged: read it back before cleaning
    // decides anything (the offsets of each key's last record).
    let high = high_watermark(&brokers[li].bootstrap(), TOPIC, 0);
    let got = clients::consume_ranges(
        &brokers[li].bootstrap(),
        TOPIC,
        &[(0, 0, high)],
        clients::OP_TIMEOUT,
    );
    let mut expected: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for c in &got {
        let key = String::from_utf8(c.record.key.clone().expect("key")).expect("utf-8");
        expected.insert(key, (c.offset, value_of(c)));
    }
    for (k, v) in &last {
        assert!(
            expected[k].0 >= v.0,
            "{k}: read {:?} before acknowledged {v:?}",
            expected[k]
        );
    }
    // The leader cleans (more than once: segments keep rolling).
    let deadline = Instant::now() + Duration::from_secs(60);
    while brokers[li]
        .metrics()
        .get("strata_log_cleaner_passes_total")
        .copied()
        .unwrap_or(0.0)
        < 2.0
    {
        assert!(Instant::now() < deadline, "the leader never cleaned");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The follower loses its copy and fetches the cleaned one.
    brokers[fi].kill9();
    let dir = brokers[fi].data_dir().join(format!("{TOPIC}-0"));
    std::fs::remove_dir_all(&dir).expect("remove the follower's partition");
    brokers[fi].restart();
    // Caught up: its log ends where the leader's does (the ISR in metadata
    // may still name it from before the kill).
    let leader_end = high_watermark(&brokers[li].bootstrap(), TOPIC, 0);
    let series = format!("strata_partition_log_end_offset{{topic=\"{TOPIC}\",partition=\"0\"}}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let end = brokers[fi].metrics().get(&series).copied().unwrap_or(0.0);
        if end as i64 >= leader_end {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the follower stays at {end} of {leader_end}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        brokers[fi].logs().contains("log cleaner pass"),
        "the follower cleans its own copy too"
    );
    brokers[li].kill9();
    wait_for(&brokers[fi], TOPIC, "the follower leads", |m| {
        m[&0].0 == follower
    });
    let high = high_watermark(&brokers[fi].bootstrap(), TOPIC, 0);
    let got = clients::consume_ranges(
        &brokers[fi].bootstrap(),
        TOPIC,
        &[(0, 0, high)],
        clients::OP_TIMEOUT,
    );
    assert!(
        got.len() < 3000,
        "the copy is compacted: {} records",
        got.len()
    );
    let mut read: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for c in &got {
        let key = String::from_utf8(c.record.key.clone().expect("key")).expect("utf-8");
        if let Some((o, _)) = read.get(&key) {
            assert!(*o < c.offset, "{key} out of order");
        }
        read.insert(key, (c.offset, value_of(c)));
    }
    assert_eq!(read, expected, "each key's last value at its offset");
}
