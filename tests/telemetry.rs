//! Operability: `/metrics` figures match what a workload did, and spans of
//! produce and fetch requests reach an OTLP receiver with their attributes.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::clients::{self, TestRecord};
use common::Broker;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

#[test]
fn metrics_match_the_workload() {
    let broker = Broker::start();
    let topic = common::topic_name("metrics");
    clients::create_topic(&broker.bootstrap(), &topic, 2, &[]);
    let records: Vec<TestRecord> = (0..50)
        .map(|i| TestRecord::value(format!("value-{i:04}")).in_partition(i % 2))
        .collect();
    clients::produce(&broker.bootstrap(), &topic, &records);
    let consumed = clients::consume_ranges(
        &broker.bootstrap(),
        &topic,
        &[(0, 0, 25), (1, 0, 25)],
        clients::OP_TIMEOUT,
    );
    assert_eq!(consumed.len(), 50);

    let m = broker.metrics();
    let get = |k: &str| {
        m.get(k)
            .copied()
            .unwrap_or_else(|| panic!("missing {k} in {m:#?}"))
    };
    assert_eq!(
        get(&format!(
            "strata_topic_records_in_total{{topic=\"{topic}\"}}"
        )),
        50.0
    );
    assert!(
        get(&format!(
            "strata_topic_records_out_total{{topic=\"{topic}\"}}"
        )) >= 50.0
    );
    let bytes_in = get(&format!("strata_topic_bytes_in_total{{topic=\"{topic}\"}}"));
    let log_bytes: f64 = (0..2)
        .map(|p| {
            get(&format!(
                "strata_partition_log_size_bytes{{topic=\"{topic}\",partition=\"{p}\"}}"
            ))
        })
        .sum();
    assert_eq!(bytes_in, log_bytes, "bytes in equals what the log holds");
    for p in 0..2 {
        assert_eq!(
            get(&format!(
                "strata_partition_log_end_offset{{topic=\"{topic}\",partition=\"{p}\"}}"
            )),
            25.0
        );
        assert_eq!(
            get(&format!(
                "strata_partition_log_start_offset{{topic=\"{topic}\",partition=\"{p}\"}}"
            )),
            0.0
        );
    }
    assert_eq!(get("strata_under_replicated_partitions"), 0.0);
    assert!(get("strata_partitions") >= 2.0);
    assert!(m
        .keys()
        .any(|k| k.starts_with("strata_requests_total{api=\"Produce\"")));
    assert!(m
        .keys()
        .any(|k| k.starts_with("strata_request_duration_seconds_count{api=\"Fetch\"")));
    // The whole time in the broker, one sample per response written (every
    // Produce was answered before its delivery report), each one spanning
    // the request's handling.
    assert_eq!(
        get("strata_request_total_seconds_count{api=\"Produce\"}"),
        get("strata_request_duration_seconds_count{api=\"Produce\"}")
    );
    assert!(
        get("strata_request_total_seconds_sum{api=\"Produce\"}")
            >= get("strata_request_duration_seconds_sum{api=\"Produce\"}"),
        "{m:#?}"
    );

    // Consumer lag: high watermark minus the committed offset.
    {
        use rdkafka::consumer::{CommitMode, Consumer};
        let group = common::topic_name("lag-group");
        let c = clients::consumer(&broker.bootstrap(), &[("group.id", group.as_str())]);
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Offset(20))
            .expect("tpl");
        c.commit(&tpl, CommitMode::Sync).expect("commit");
        let m = broker.metrics();
        assert_eq!(
            m.get(&format!(
                "strata_consumer_group_lag{{group=\"{group}\",topic=\"{topic}\",partition=\"0\"}}"
            )),
            Some(&5.0),
            "{m:#?}"
        );
    }

    // An error is counted under its Kafka name.
    clients::try_create_topic(&broker.bootstrap(), &topic, 1, &[]).expect_err("exists");
    let m = broker.metrics();
    assert_eq!(
        m.get("strata_request_errors_total{api=\"CreateTopics\",error=\"TopicAlreadyExists\"}"),
        Some(&1.0),
        "{m:#?}"
    );
    broker.assert_no_error_logs();
}

/// Spans received: (name, attributes).
type Spans = Arc<Mutex<Vec<(String, BTreeMap<String, String>)>>>;

/// A minimal OTLP/HTTP receiver: collects every span's name and attributes.
struct Receiver {
    addr: String,
    spans: Spans,
}

fn start_receiver() -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
    let addr = listener.local_addr().expect("addr").to_string();
    let spans: Spans = Arc::default();
    let sink = spans.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let sink = sink.clone();
            std::thread::spawn(move || serve_one(&mut stream, &sink));
        }
    });
    Receiver { addr, spans }
}

fn serve_one(stream: &mut std::net::TcpStream, sink: &Spans) {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if let Ok(req) = ExportTraceServiceRequest::decode(&body[..]) {
            let mut out = sink.lock().expect("lock");
            for rs in req.resource_spans {
                for ss in rs.scope_spans {
                    for span in ss.spans {
                        let attrs = span
                            .attributes
                            .iter()
                            .map(|kv| {
                                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                    Some(Value::StringValue(s)) => s.clone(),
                                    Some(Value::IntValue(i)) => i.to_string(),
                                    Some(Value::BoolValue(b)) => b.to_string(),
                                    Some(Value::DoubleValue(d)) => d.to_string(),
                                    _ => String::new(),
                                };
                                (kv.key.clone(), v)
                            })
                            .collect();
                        out.push((span.name.clone(), attrs));
                    }
                }
            }
        }
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
        );
    }
}

#[test]
fn request_spans_are_exported_over_otlp() {
    let receiver = start_receiver();
    let mut broker = Broker::builder()
        .args(["--tier-interval-ms", "100"])
        .arg("--otlp-endpoint")
        .arg(format!("http://{}", receiver.addr))
        .start();
    let topic = common::topic_name("otlp");
    clients::create_topic(&broker.bootstrap(), &topic, 1, &[]);
    clients::produce(&broker.bootstrap(), &topic, &[TestRecord::value("traced")]);
    let got = clients::consume_ranges(
        &broker.bootstrap(),
        &topic,
        &[(0, 0, 1)],
        clients::OP_TIMEOUT,
    );
    assert_eq!(got.len(), 1);
    // Uploads and remote reads have spans too: a topic with tiny segments
    // that leave local disk at once, read back from offset 0.
    let tiered = common::topic_name("otlp-tier");
    clients::create_topic(
        &broker.bootstrap(),
        &tiered,
        1,
        &[("segment.bytes", "1024"), ("local.retention.bytes", "1")],
    );
    for _ in 0..6 {
        clients::produce(
            &broker.bootstrap(),
            &tiered,
            &[TestRecord::value(vec![b'x'; 600]).in_partition(0)],
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let first_local_base = || {
        std::fs::read_dir(broker.data_dir().join(format!("{tiered}-0")))
            .expect("partition dir")
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_suffix(".log")
                    .and_then(|b| b.parse::<i64>().ok())
            })
            .min()
            .unwrap_or(0)
    };
    while first_local_base() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no segment left local disk"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let back = clients::consume_ranges(
        &broker.bootstrap(),
        &tiered,
        &[(0, 0, 1)],
        clients::OP_TIMEOUT,
    );
    assert_eq!(back.len(), 1);
    // A clean stop flushes the exporter.
    let status = broker.stop();
    assert!(status.success(), "broker exit: {status:?}");

    let spans = receiver.spans.lock().expect("lock").clone();
    let find = |api: &str| {
        spans
            .iter()
            .find(|(name, a)| {
                name == "request"
                    && a.get("api").map(String::as_str) == Some(api)
                    && a.get("topic").map(String::as_str) == Some(topic.as_str())
            })
            .cloned()
            .unwrap_or_else(|| panic!("no {api} span for {topic}; got {spans:#?}"))
    };
    for name in ["tier_upload", "tier_read"] {
        let (_, attrs) = spans
            .iter()
            .find(|(n, a)| n == name && a.get("partition").is_some_and(|p| p.starts_with(&tiered)))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} span for {tiered}; got {spans:#?}"));
        assert!(attrs.contains_key("partition"), "{name}: {attrs:?}");
    }
    for api in ["Produce", "Fetch"] {
        let (_, attrs) = find(api);
        for key in ["version", "correlation_id", "client_id", "partition"] {
            assert!(attrs.contains_key(key), "{api} span lacks {key}: {attrs:?}");
        }
        assert_eq!(attrs.get("partition").map(String::as_str), Some("0"));
        assert_eq!(
            attrs.get("client_id").map(String::as_str),
            Some("strata-it")
        );
    }
}
