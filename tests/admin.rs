//! The admin surface: HTTP /health and /ready, topic administration through
//! AdminClient, and the CLI flags / environment variables of `strata serve`.

mod common;

use common::clients::{self, TestRecord};
use common::Broker;
use rdkafka::types::RDKafkaErrorCode;

#[test]
fn health_and_ready() {
    let broker = Broker::start();
    let (code, body) = broker.admin_get("/health");
    assert_eq!(code, 200, "/health: {body}");
    // Ready may lag the "bound to" lines a little (metadata leader election).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (code, body) = broker.admin_get("/ready");
        if code == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/ready still {code} after 10 s: {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // And once ready, a client can use it at once.
    clients::smoke(&broker.bootstrap());
    broker.assert_no_error_logs();
}

#[test]
fn create_list_describe_alter_topics() {
    let broker = Broker::start();
    let bs = broker.bootstrap();
    let a = common::topic_name("admin-a");
    let b = common::topic_name("admin-b");
    clients::create_topic(&bs, &a, 6, &[]);
    clients::create_topic(&bs, &b, 1, &[("retention.ms", "3600000")]);

    // Listed through Metadata with the right partition counts.
    let c = clients::consumer(&bs, &[]);
    let md = rdkafka::consumer::Consumer::fetch_metadata(&c, None, clients::OP_TIMEOUT).unwrap();
    let names: Vec<&str> = md.topics().iter().map(|t| t.name()).collect();
    assert!(
        names.contains(&a.as_str()) && names.contains(&b.as_str()),
        "topics: {names:?}"
    );
    assert_eq!(md.brokers().len(), 1, "one broker in metadata");
    let port: i32 = bs.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(md.brokers()[0].port(), port, "advertised port");
    drop(c);
    assert_eq!(clients::partition_count(&bs, &a), Some(6));

    // Creating it again fails with TOPIC_ALREADY_EXISTS.
    assert_eq!(
        clients::try_create_topic(&bs, &a, 3, &[]),
        Err(RDKafkaErrorCode::TopicAlreadyExists)
    );

    // DescribeConfigs: the override set at creation, and defaults.
    let cfg = clients::describe_topic_configs(&bs, &b);
    let (v, src) = cfg.get("retention.ms").expect("retention.ms described");
    assert_eq!(v.as_deref(), Some("3600000"));
    assert!(
        clients::is_topic_override(src),
        "retention.ms source {src:?}"
    );
    let cfg = clients::describe_topic_configs(&bs, &a);
    let (_, src) = cfg.get("retention.ms").expect("retention.ms described");
    assert!(
        !clients::is_topic_override(src),
        "default retention.ms has source {src:?}"
    );
    for key in ["cleanup.policy", "max.message.bytes", "segment.bytes"] {
        assert!(
            cfg.contains_key(key),
            "{key} not described; got {:?}",
            cfg.keys()
        );
    }

    // AlterConfigs then DescribeConfigs.
    clients::alter_topic_configs(&bs, &a, &[("retention.ms", "86400000")]);
    let cfg = clients::describe_topic_configs(&bs, &a);
    let (v, src) = cfg.get("retention.ms").unwrap();
    assert_eq!(v.as_deref(), Some("86400000"));
    assert!(
        clients::is_topic_override(src),
        "altered retention.ms source {src:?}"
    );
    broker.assert_no_error_logs();
}

#[test]
fn auto_create_uses_num_partitions_flag() {
    let broker = Broker::builder().args(["--num-partitions", "3"]).start();
    let bs = broker.bootstrap();
    let topic = common::topic_name("auto");
    // Producing to a topic that does not exist creates it (default
    // auto.create.topics.enable=true).
    let at = clients::produce(&bs, &topic, &[TestRecord::value("hello").in_partition(2)]);
    assert_eq!(at, vec![(2, 0)]);
    assert_eq!(clients::partition_count(&bs, &topic), Some(3));
    broker.assert_no_error_logs();
}

#[test]
fn settings_from_environment() {
    let broker = Broker::builder()
        .env("STRATA_NUM_PARTITIONS", "5")
        .env("STRATA_AUTO_CREATE_TOPICS", "true")
        .start();
    let bs = broker.bootstrap();
    let topic = common::topic_name("env");
    clients::produce(&bs, &topic, &[TestRecord::value("hello")]);
    assert_eq!(clients::partition_count(&bs, &topic), Some(5));
    broker.assert_no_error_logs();
}

/// Starts `strata serve` with `args` on free ports, expects it to exit
/// with an error, and returns its stderr.
fn serve_fails(args: &[&str]) -> String {
    let out = std::process::Command::new(common::strata_bin())
        .arg("serve")
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .current_dir(tempfile::tempdir().unwrap().path())
        .output()
        .expect("run strata");
    assert!(!out.status.success(), "strata accepted {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn invalid_flag_value_fails_at_start_naming_the_key() {
    let stderr = serve_fails(&["--num-partitions", "not-a-number"]);
    assert!(
        stderr.contains("num-partitions"),
        "error does not name the key: {stderr}"
    );
}

#[test]
fn tcp_congestion_control_is_applied_or_refused_at_start() {
    // reno is built into every Linux kernel; the listener's connections
    // inherit it (unit test in server.rs), and clients work as before.
    let broker = Broker::builder()
        .args(["--tcp-congestion-control", "reno"])
        .start();
    clients::smoke(&broker.bootstrap());
    broker.assert_no_error_logs();

    let stderr = serve_fails(&["--tcp-congestion-control", "nosuchcc"]);
    assert!(
        stderr.contains("tcp-congestion-control=nosuchcc") && stderr.contains("reno"),
        "error does not name the key and what the kernel offers: {stderr}"
    );
}

#[test]
fn advertised_listener_is_what_metadata_returns() {
    let broker = Broker::builder()
        .args(["--advertised-listener", "localhost:19092", "--node-id", "7"])
        .start();
    let c = clients::consumer(&broker.bootstrap(), &[]);
    // Only the bootstrap connection is used for this one request.
    let md = rdkafka::consumer::Consumer::fetch_metadata(&c, None, clients::OP_TIMEOUT).unwrap();
    let brokers: Vec<(i32, String, i32)> = md
        .brokers()
        .iter()
        .map(|b| (b.id(), b.host().to_owned(), b.port()))
        .collect();
    assert_eq!(brokers, vec![(7, "localhost".to_owned(), 19092)]);
    drop(c);
    broker.assert_no_error_logs();
}

#[test]
fn config_file_env_and_flag_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strata.toml");
    std::fs::write(&file, "num-partitions = 4\nauto-create-topics = true\n").unwrap();
    let file = file.to_str().unwrap().to_owned();

    // The file alone.
    let broker = Broker::builder().args(["--config", &file]).start();
    let topic = common::topic_name("toml");
    clients::produce(&broker.bootstrap(), &topic, &[TestRecord::value("x")]);
    assert_eq!(
        clients::partition_count(&broker.bootstrap(), &topic),
        Some(4),
        "from the file"
    );
    broker.assert_no_error_logs();
    drop(broker);

    // The environment beats the file.
    let broker = Broker::builder()
        .args(["--config", &file])
        .env("STRATA_NUM_PARTITIONS", "2")
        .start();
    let topic = common::topic_name("toml-env");
    clients::produce(&broker.bootstrap(), &topic, &[TestRecord::value("x")]);
    assert_eq!(
        clients::partition_count(&broker.bootstrap(), &topic),
        Some(2),
        "env over file"
    );
    drop(broker);

    // A flag beats both.
    let broker = Broker::builder()
        .args(["--config", &file, "--num-partitions", "3"])
        .env("STRATA_NUM_PARTITIONS", "2")
        .start();
    let topic = common::topic_name("toml-flag");
    clients::produce(&broker.bootstrap(), &topic, &[TestRecord::value("x")]);
    assert_eq!(
        clients::partition_count(&broker.bootstrap(), &topic),
        Some(3),
        "flag over env"
    );
    broker.assert_no_error_logs();
}

/// `/ready` says ready only once log recovery is done: on a data dir whose
/// segment ends in a torn batch, the first 200 from `/ready` comes after the
/// tail was cut back. Many partitions make recovery long enough that the
/// 503 before it is seen too.
#[test]
fn ready_only_after_recovery_of_a_damaged_tail() {
    // No upload at the clean stop: the tail stays in the active segment,
    // which the restart rescans.
    let mut broker = Broker::builder()
        .args(["--tier-shutdown-upload-timeout-ms", "0"])
        .start();
    let bootstrap = broker.bootstrap();
    let many = common::topic_name("many");
    clients::create_topic(&bootstrap, &many, 400, &[]);
    let topic = common::topic_name("torn");
    clients::create_topic(&bootstrap, &topic, 1, &[]);
    let records: Vec<TestRecord> = (0..50)
        .map(|i| TestRecord::value(format!("v{i}")).in_partition(0))
        .collect();
    for r in &records {
        clients::produce(&bootstrap, &topic, std::slice::from_ref(r));
    }
    broker.stop();
    let seg = common::segments::last_nonempty_segment(broker.data_dir(), &topic, 0);
    let len = std::fs::metadata(&seg).expect("segment").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open");
    f.set_len(len - 7).expect("cut the last batch");
    let whole: u64 = common::segments::batches(&seg).iter().map(|b| b.size).sum();

    broker.restart();
    let mut saw_not_ready = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (code, _) = broker.admin_get("/ready");
        if code == 200 {
            break;
        }
        assert_eq!(code, 503, "/ready before recovery");
        saw_not_ready = true;
        assert!(std::time::Instant::now() < deadline, "never ready");
    }
    // Ready implies the torn batch is gone.
    let now = std::fs::metadata(&seg).expect("segment").len();
    assert_eq!(
        now, whole,
        "the torn tail was cut back before /ready said ready"
    );
    eprintln!("saw /ready 503 before 200: {saw_not_ready}");
    let (low, high) = clients::watermarks(&broker.bootstrap(), &topic, 0);
    assert_eq!((low, high), (0, 49));
}

/// Clients can neither write to nor delete the internal offsets topic.
#[test]
fn internal_topics_are_protected() {
    use rdkafka::consumer::{CommitMode, Consumer};
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    let topic = common::topic_name("commits");
    clients::create_topic(&bootstrap, &topic, 1, &[]);
    clients::produce(
        &bootstrap,
        &topic,
        &[TestRecord::value("x").in_partition(0)],
    );
    let c = clients::consumer(&bootstrap, &[("group.id", "protect-group")]);
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Offset(1))
        .expect("tpl");
    c.commit(&tpl, CommitMode::Sync)
        .expect("commit creates __consumer_offsets");

    let mut raw = common::raw::RawConn::connect(&bootstrap);
    let v = raw.produce_version();
    let batch = common::raw::batch(
        &[common::raw::record(
            0,
            None,
            Some(b"forged"),
            1_700_000_000_000,
        )],
        kafka_protocol::records::Compression::None,
    );
    let (code, _) = raw.produce(v, "__consumer_offsets", 0, batch, 1);
    assert_eq!(
        code, 17,
        "produce to an internal topic: INVALID_TOPIC_EXCEPTION"
    );

    let admin = clients::admin(&bootstrap);
    let res = clients::block_on(admin.delete_topics(
        &["__consumer_offsets"],
        &rdkafka::admin::AdminOptions::new(),
    ))
    .expect("delete topics request");
    assert!(
        res[0].is_err(),
        "deleting __consumer_offsets is refused: {res:?}"
    );
    assert!(clients::partition_count(&bootstrap, "__consumer_offsets").is_some());
    broker.assert_no_error_logs();
}

/// A request may add at most --max-partitions-per-request partitions and
/// the cluster hold at most --max-partitions, so one CreateTopics of
/// 100,000 partitions never reaches the metadata log.
#[test]
fn partitions_are_bounded_per_request_and_per_cluster() {
    let broker = Broker::builder()
        .args(["--max-partitions-per-request", "100"])
        .args(["--max-partitions", "400"])
        .start();
    let bootstrap = broker.bootstrap();
    let name = |i: usize| format!("bounded-{i}");
    assert_eq!(
        clients::try_create_topic(&bootstrap, &name(0), 101, &[]),
        Err(RDKafkaErrorCode::InvalidPartitions)
    );
    assert_eq!(
        clients::try_create_topic(&bootstrap, &name(0), 100_000, &[]),
        Err(RDKafkaErrorCode::InvalidPartitions)
    );
    let mut refused = None;
    for i in 1..=6 {
        match clients::try_create_topic(&bootstrap, &name(i), 100, &[]) {
            Ok(()) => {}
            Err(code) => {
                refused = Some(code);
                break;
            }
        }
    }
    assert_eq!(refused, Some(RDKafkaErrorCode::PolicyViolation));
    assert_eq!(
        clients::produce(
            &bootstrap,
            &name(1),
            &[TestRecord::value("ok").in_partition(0)]
        ),
        vec![(0, 0)]
    );
    broker.assert_no_error_logs();
}

/// Kafka's topic configs are accepted with Kafka's validation (Kafka
/// Streams, Debezium and admin tools set them), and compression.type names
/// the codec batches are stored in: an uncompressed batch produced to an
/// lz4 topic comes back from a fetch as lz4, with the same records.
#[test]
fn kafka_topic_configs_are_accepted_and_compression_type_recompresses() {
    use common::raw::{self, RawConn};
    use kafka_protocol::records::{Compression, RecordBatchDecoder};

    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    let topic = common::topic_name("kafkaconfigs");
    let configs = [
        ("compression.type", "lz4"),
        ("delete.retention.ms", "86400000"),
        ("file.delete.delay.ms", "60000"),
        ("flush.messages", "1"),
        ("flush.ms", "1000"),
        ("max.compaction.lag.ms", "3600000"),
        ("min.compaction.lag.ms", "0"),
        ("min.cleanable.dirty.ratio", "0.1"),
        ("message.timestamp.after.max.ms", "3600000"),
        ("message.timestamp.before.max.ms", "86400000"),
        ("preallocate", "false"),
        ("segment.index.bytes", "10485760"),
        ("segment.jitter.ms", "0"),
        ("unclean.leader.election.enable", "false"),
    ];
    clients::create_topic(&bootstrap, &topic, 1, &configs);
    let described = clients::describe_topic_configs(&bootstrap, &topic);
    for (k, v) in configs {
        let (value, source) = &described[k];
        assert_eq!(value.as_deref(), Some(v), "{k}");
        assert!(clients::is_topic_override(source), "{k}: {source:?}");
    }
    // Kafka's validation.
    for (k, v) in [
        ("min.cleanable.dirty.ratio", "2"),
        ("compression.type", "brotli"),
        ("flush.messages", "0"),
        ("preallocate", "maybe"),
    ] {
        assert_eq!(
            clients::try_create_topic(&bootstrap, &common::topic_name("badcfg"), 1, &[(k, v)]),
            Err(RDKafkaErrorCode::InvalidConfig),
            "{k}={v}"
        );
    }

    let mut c = RawConn::connect(&bootstrap);
    let v = c.produce_version();
    let values: Vec<Vec<u8>> = (0..50)
        .map(|i| format!("value-{i}").repeat(40).into_bytes())
        .collect();
    let records: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, val)| raw::record(i as i64, Some(b"key"), Some(val), clients::now_ms()))
        .collect();
    let batch = raw::batch(&records, Compression::None);
    assert_eq!(c.produce(v, &topic, 0, batch, -1), (0, 0));
    let (code, mut data) = c.fetch(&topic, &[(0, 0)], 1 << 20).remove(0);
    assert_eq!(code, 0);
    assert_eq!(data[22] & 0x07, 3, "stored as lz4 (attributes, low byte)");
    let mut got: Vec<Vec<u8>> = Vec::new();
    for set in RecordBatchDecoder::decode_all(&mut data).expect("decode") {
        assert_eq!(set.compression, Compression::Lz4);
        got.extend(
            set.records
                .iter()
                .map(|r| r.value.clone().expect("value").to_vec()),
        );
    }
    assert_eq!(got.len(), values.len());
    for (i, (g, w)) in got.iter().zip(&values).enumerate() {
        assert!(g == w, "record {i}: {} vs {} bytes", g.len(), w.len());
    }
    broker.assert_no_error_logs();
}

/// Kafka's dynamic broker configs change at run time through AlterConfigs
/// on the broker resource, set the topics' defaults (a topic's own value
/// still wins), persist in cluster metadata across a restart, and refuse
/// what Kafka cannot change at run time.
#[test]
fn dynamic_broker_configs_change_topic_defaults_and_persist() {
    use rdkafka::admin::ConfigSource;
    use rdkafka::admin::{AlterConfig, ResourceSpecifier};
    let mut broker = Broker::start();
    let bootstrap = broker.bootstrap();
    let topic = common::topic_name("dynbroker");
    let own = common::topic_name("dynown");
    clients::create_topic(&bootstrap, &topic, 1, &[]);
    clients::create_topic(&bootstrap, &own, 1, &[("retention.ms", "1000")]);
    let alter = |bootstrap: &str, pairs: &[(&str, &str)]| {
        let admin = clients::admin(bootstrap);
        let mut a = AlterConfig::new(ResourceSpecifier::Broker(1));
        for (k, v) in pairs {
            a = a.set(k, v);
        }
        let res = clients::block_on(admin.alter_configs([&a], &clients::admin_opts()))
            .expect("AlterConfigs");
        res.into_iter()
            .next()
            .expect("one result")
            .map(|_| ())
            .map_err(|(_, c)| c)
    };
    alter(
        &bootstrap,
        &[
            ("log.retention.ms", "3600000"),
            ("message.max.bytes", "2000000"),
        ],
    )
    .expect("dynamic configs");
    let check = |bootstrap: &str| {
        let d = clients::describe_topic_configs(bootstrap, &topic);
        assert_eq!(d["retention.ms"].0.as_deref(), Some("3600000"));
        assert_eq!(d["retention.ms"].1, ConfigSource::DynamicDefaultBroker);
        assert_eq!(d["max.message.bytes"].0.as_deref(), Some("2000000"));
        let o = clients::describe_topic_configs(bootstrap, &own);
        assert_eq!(
            o["retention.ms"].0.as_deref(),
            Some("1000"),
            "the topic's own wins"
        );
    };
    check(&bootstrap);
    // What Kafka cannot change at run time, and bad values, are refused
    // (checked on the wire: rust-rdkafka reports broker resources as Ok).
    let refused = |key: &str, value: &str| {
        use kafka_protocol::messages::alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse, ApiKey};
        use kafka_protocol::protocol::StrBytes;
        let req =
            AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(StrBytes::from_static_str("1"))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(StrBytes::from_string(key.to_string()))
                    .with_value(Some(StrBytes::from_string(value.to_string())))])]);
        let mut c = common::raw::RawConn::connect(&bootstrap);
        let resp: AlterConfigsResponse = c.roundtrip(ApiKey::AlterConfigs, 1, &req);
        resp.responses[0].error_code
    };
    assert_eq!(
        refused("num.partitions", "3"),
        40,
        "not dynamic in Kafka: INVALID_CONFIG"
    );
    assert_eq!(refused("log.retention.ms", "-7"), 40);
    // A refused change leaves the dynamic configs as they were.
    check(&bootstrap);
    broker.restart();
    check(&broker.bootstrap());
    broker.assert_no_error_logs();
}
