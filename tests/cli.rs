//! The `strata` client subcommands against a real broker: topic admin,
//! produce from a file and consume it back byte for byte, kcat-style keys,
//! headers, formats and start positions, group lag after rdkafka commits,
//! JSON output, one-line errors with non-zero exit codes. Also the library
//! client (`strata::client::Client`) directly.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::clients::{self, TestRecord};
use common::Broker;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

const CLI_TIMEOUT: Duration = Duration::from_secs(60);

struct Out {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

impl Out {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.text()))
    }
}

/// Run `strata ARGS` with a timeout, `stdin` piped in if given. STRATA_*
/// variables of the developer's shell are removed.
fn strata(args: &[&str], stdin: Option<&[u8]>) -> Out {
    let mut cmd = Command::new(common::strata_bin());
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars() {
        if key.starts_with("STRATA_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd.spawn().expect("spawn strata");
    if let Some(input) = stdin {
        let mut w = child.stdin.take().expect("piped stdin");
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = w.write_all(&input);
        });
    }
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + CLI_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait strata") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = t_err.join().unwrap_or_default();
            panic!("strata {args:?} did not finish within {CLI_TIMEOUT:?}; stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Out {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

/// `strata ARGS -b BOOTSTRAP`, which must succeed.
fn ok(bs: &str, args: &[&str], stdin: Option<&[u8]>) -> Out {
    let mut all = args.to_vec();
    all.extend(["--bootstrap", bs]);
    let o = strata(&all, stdin);
    assert!(
        o.status.success(),
        "strata {all:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        o.text(),
        o.stderr
    );
    o
}

/// `strata ARGS`, which must fail with exit code `code` and one line
/// starting with `error: ` on stderr; returns that line.
fn fails(args: &[&str], code: i32) -> String {
    let o = strata(args, None);
    assert_eq!(
        o.status.code(),
        Some(code),
        "strata {args:?}: exit status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        o.text(),
        o.stderr
    );
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "strata {args:?}: not one line:\n{}",
        o.stderr
    );
    assert!(
        lines[0].starts_with("error: "),
        "strata {args:?}: {}",
        o.stderr
    );
    lines[0].to_owned()
}

fn topic_names(bs: &str) -> Vec<String> {
    let list = ok(bs, &["topic", "list", "--output", "json"], None).json();
    list.as_array()
        .expect("topic list is an array")
        .iter()
        .map(|t| t["topic"].as_str().expect("topic name").to_owned())
        .collect()
}

/// Lines that exercise the byte-exact path: tabs, UTF-8, an empty line,
/// carriage returns, long and binary-ish content.
fn sample_file(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let mut data = Vec::new();
    for i in 0..300 {
        data.extend_from_slice(format!("record {i}\twith a tab and ünïcödé ✓").as_bytes());
        data.push(b'\n');
    }
    data.extend_from_slice(b"\n"); // an empty record
    data.extend_from_slice(b"carriage\rreturn\n");
    data.extend_from_slice(&[0x00, 0x01, 0xfe, 0xff, b'\n']);
    data.extend(std::iter::repeat_n(b'x', 200_000));
    data.push(b'\n');
    let path = dir.join("input.txt");
    std::fs::write(&path, &data).expect("write input file");
    (path, data)
}

#[test]
fn topic_lifecycle_and_byte_exact_round_trip() {
    let broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = common::topic_name("cli");

    let created = ok(
        &bs,
        &[
            "topic",
            "create",
            &topic,
            "--partitions",
            "3",
            "--config",
            "retention.ms=3600000",
            "--output",
            "json",
        ],
        None,
    )
    .json();
    assert_eq!(created["created"], true);
    assert_eq!(created["partitions"], 3);
    assert!(topic_names(&bs).contains(&topic));
    // Creating it again fails in one line, unless --if-not-exists.
    let line = fails(&["topic", "create", &topic, "-b", &bs], 1);
    assert!(line.contains("TOPIC_ALREADY_EXISTS"), "{line}");
    ok(&bs, &["topic", "create", &topic, "--if-not-exists"], None);

    // describe: partitions and the config set at creation.
    let d = ok(
        &bs,
        &["topic", "describe", &topic, "--output", "json"],
        None,
    )
    .json();
    assert_eq!(d["topic"], topic.as_str());
    assert_eq!(d["partitions"].as_array().unwrap().len(), 3);
    let cfg = |d: &Value, name: &str| -> Option<String> {
        d["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .and_then(|c| c["value"].as_str().map(str::to_owned))
    };
    assert_eq!(cfg(&d, "retention.ms").as_deref(), Some("3600000"));
    let table = ok(&bs, &["topic", "describe", &topic], None).text();
    assert!(
        table.contains("PARTITION") && table.contains("retention.ms"),
        "{table}"
    );

    // Produce a file into partition 1 in several requests; consume it back.
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = sample_file(dir.path());
    let path = path.to_str().unwrap();
    let produced = ok(
        &bs,
        &[
            "produce",
            &topic,
            "--file",
            path,
            "-p",
            "1",
            "--batch-bytes",
            "4096",
            "--output",
            "json",
        ],
        None,
    )
    .json();
    let records = data.iter().filter(|b| **b == b'\n').count() as u64;
    assert_eq!(produced["records"], records);
    let back = ok(&bs, &["consume", &topic, "-p", "1", "--exit"], None);
    assert!(back.stdout == data, "consumed bytes differ from the file");
    // Every record is on partition 1, and the offsets agree.
    let d = ok(
        &bs,
        &["topic", "describe", &topic, "--output", "json"],
        None,
    )
    .json();
    let latest: Vec<i64> = d["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["latest_offset"].as_i64().unwrap())
        .collect();
    assert_eq!(latest, vec![0, records as i64, 0]);

    // The same file through stdin, spread over partitions, compressed.
    ok(
        &bs,
        &["produce", &topic, "--compression", "zstd"],
        Some(&data),
    );
    let all = ok(&bs, &["consume", &topic, "--exit"], None);
    let mut want: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    want.pop();
    let mut want2 = want.clone();
    want2.extend(want.iter().copied());
    want2.sort();
    let mut got: Vec<&[u8]> = all.stdout.split(|b| *b == b'\n').collect();
    got.pop();
    got.sort();
    assert!(
        got == want2,
        "consumed {} records, want {}",
        got.len(),
        want2.len()
    );

    // alter-config, then delete.
    ok(
        &bs,
        &[
            "topic",
            "alter-config",
            &topic,
            "--set",
            "retention.ms=7200000",
            "--set",
            "cleanup.policy=delete",
        ],
        None,
    );
    let d = ok(
        &bs,
        &["topic", "describe", &topic, "--output", "json"],
        None,
    )
    .json();
    assert_eq!(cfg(&d, "retention.ms").as_deref(), Some("7200000"));
    ok(
        &bs,
        &["topic", "alter-config", &topic, "--delete", "retention.ms"],
        None,
    );
    let d = ok(
        &bs,
        &["topic", "describe", &topic, "--output", "json"],
        None,
    )
    .json();
    assert_eq!(cfg(&d, "retention.ms"), None, "back to the default");

    let deleted = ok(&bs, &["topic", "delete", &topic, "--output", "json"], None).json();
    assert_eq!(deleted[0]["deleted"], true);
    assert!(!topic_names(&bs).contains(&topic));
    let line = fails(&["topic", "delete", &topic, "-b", &bs], 1);
    assert!(line.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{line}");
    ok(&bs, &["topic", "delete", &topic, "--if-exists"], None);
    broker.assert_no_error_logs();
}

#[test]
fn keys_headers_formats_and_start_positions() {
    let broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = common::topic_name("cli-kv");
    ok(&bs, &["topic", "create", &topic, "-p", "2"], None);

    let input = b"k1:v1\nk2:v2:with:colons\nno-key\nk1:v3\n";
    ok(
        &bs,
        &["produce", &topic, "-K", ":", "-H", "app=cli", "-H", "n=1"],
        Some(input),
    );

    // rdkafka sees real keys and headers, and keyed records partitioned as
    // Kafka's default partitioner does (k1 twice on the same partition).
    let got = clients::consume_all(&bs, &topic, 2, clients::OP_TIMEOUT);
    assert_eq!(got.len(), 4);
    let k1: Vec<i32> = got
        .iter()
        .filter(|c| c.record.key.as_deref() == Some(b"k1"))
        .map(|c| c.partition)
        .collect();
    assert_eq!(k1.len(), 2);
    assert_eq!(k1[0], k1[1]);
    for c in &got {
        let names: Vec<&str> = c.record.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["app", "n"]);
    }
    let v2 = got
        .iter()
        .find(|c| c.record.key.as_deref() == Some(b"k2"))
        .unwrap();
    assert_eq!(v2.record.value.as_deref(), Some(&b"v2:with:colons"[..]));
    let nokey = got.iter().find(|c| c.record.key.is_none()).unwrap();
    assert_eq!(nokey.record.value.as_deref(), Some(&b"no-key"[..]));

    // kcat-style format and key separator.
    let p = k1[0].to_string();
    let out = ok(
        &bs,
        &[
            "consume",
            &topic,
            "-p",
            &p,
            "-e",
            "-f",
            "%t|%p|%o|%k|%s|%h|%K|%S\\n",
        ],
        None,
    )
    .text();
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.contains(&format!("{topic}|{p}|0|k1|v1|app=cli,n=1|2|2").as_str()),
        "{out}"
    );
    let out = ok(&bs, &["consume", &topic, "-p", &p, "-e", "-K", "="], None).text();
    assert!(out.starts_with("k1=v1\n"), "{out}");

    // JSON lines parse, with headers.
    let out = ok(&bs, &["consume", &topic, "-e", "--output", "json"], None);
    let recs: Vec<Value> = out
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(recs.len(), 4);
    assert!(recs.iter().all(|r| r["headers"][0]["key"] == "app"));

    // Start positions on a partition of its own.
    let t2 = common::topic_name("cli-pos");
    ok(&bs, &["topic", "create", &t2, "-p", "1"], None);
    // Recent timestamps, so retention never removes them.
    let base = clients::now_ms() - 60_000;
    let records: Vec<TestRecord> = (0..10)
        .map(|i| {
            TestRecord::value(format!("r{i}"))
                .in_partition(0)
                .at(base + i * 1000)
        })
        .collect();
    clients::produce(&bs, &t2, &records);
    let vals = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["consume", t2.as_str(), "-e"];
        a.extend_from_slice(args);
        ok(&bs, &a, None)
            .text()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(vals(&["-o", "8"]), ["r8", "r9"]);
    assert_eq!(vals(&["-o", "-3"]), ["r7", "r8", "r9"]);
    assert_eq!(vals(&["-o", "end"]), Vec::<String>::new());
    let after_r4 = (base + 4_500).to_string();
    assert_eq!(
        vals(&["--timestamp", &after_r4]),
        ["r5", "r6", "r7", "r8", "r9"]
    );
    let future = (base + 3_600_000).to_string();
    assert_eq!(vals(&["--timestamp", &future]), Vec::<String>::new());
    assert_eq!(vals(&["-c", "2"]), ["r0", "r1"]);
    // --count without --exit stops by itself once it has N records.
    let out = ok(&bs, &["consume", &t2, "-c", "3", "-o", "2"], None).text();
    assert_eq!(out, "r2\nr3\nr4\n");
    broker.assert_no_error_logs();
}

#[test]
fn group_describe_shows_committed_offsets_and_lag() {
    let broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = common::topic_name("cli-grp");
    ok(&bs, &["topic", "create", &topic, "-p", "2"], None);
    let records: Vec<TestRecord> = (0..10)
        .map(|i| TestRecord::value(format!("v{i}")).in_partition(i32::from(i >= 4)))
        .collect();
    clients::produce(&bs, &topic, &records); // 4 on partition 0, 6 on 1

    // A standalone commit (no membership): 1 of 4 and 5 of 6 consumed.
    let group = common::topic_name("cli-standalone");
    let c = clients::consumer(&bs, &[("group.id", &group)]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(1))
        .unwrap();
    tpl.add_partition_offset(&topic, 1, Offset::Offset(5))
        .unwrap();
    c.commit(&tpl, CommitMode::Sync).expect("commit offsets");
    drop(c);

    // The offsets topic now exists; --exclude-internal hides it.
    assert!(topic_names(&bs).contains(&"__consumer_offsets".to_owned()));
    let user = ok(
        &bs,
        &["topic", "list", "--exclude-internal", "--output", "json"],
        None,
    )
    .json();
    assert!(
        user.as_array()
            .unwrap()
            .iter()
            .all(|t| t["internal"] == false),
        "{user}"
    );

    let listed = ok(&bs, &["group", "list", "--output", "json"], None).json();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["group"] == group.as_str()),
        "{listed}"
    );
    let d = ok(
        &bs,
        &["group", "describe", &group, "--output", "json"],
        None,
    )
    .json();
    let lags: Vec<(i64, i64, i64, i64)> = d["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["partition"].as_i64().unwrap(),
                o["committed_offset"].as_i64().unwrap(),
                o["log_end_offset"].as_i64().unwrap(),
                o["lag"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(lags, vec![(0, 1, 4, 3), (1, 5, 6, 1)], "{d}");
    assert_eq!(d["total_lag"], 4);
    let table = ok(&bs, &["group", "describe", &group], None).text();
    assert!(table.contains("LAG") && table.contains(&topic), "{table}");

    // A subscribed member: describe shows it with its assignment.
    let group2 = common::topic_name("cli-member");
    let c = clients::consumer(
        &bs,
        &[
            ("group.id", &group2),
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "10000"),
        ],
    );
    c.subscribe(&[&topic]).expect("subscribe");
    let deadline = Instant::now() + clients::OP_TIMEOUT;
    let mut seen = 0;
    while seen < 10 {
        assert!(
            Instant::now() < deadline,
            "member consumed only {seen} of 10 records"
        );
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            m.expect("consume as a group member");
            seen += 1;
        }
    }
    let position = c.position().expect("consumer position");
    c.commit(&position, CommitMode::Sync).expect("commit");
    let d = ok(
        &bs,
        &["group", "describe", &group2, "--output", "json"],
        None,
    )
    .json();
    let members = d["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{d}");
    let mut assigned: Vec<i64> = members[0]["assignment"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["topic"] == topic.as_str())
        .flat_map(|a| {
            a["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_i64().unwrap())
        })
        .collect();
    assigned.sort_unstable();
    assert_eq!(assigned, vec![0, 1], "{d}");
    assert_eq!(d["total_lag"], 0, "{d}");
    // Dropping a subscribed BaseConsumer can block forever in
    // rust-rdkafka's close here (fede1024/rust-rdkafka#453, #611, also after
    // unsubscribe and polling), while librdkafka itself has left the group
    // (confluent-kafka's close returns at once against the same broker).
    // The test process ends soon; let the consumer go with it.
    std::mem::forget(c);
    broker.assert_no_error_logs();
}

#[test]
fn bad_arguments_and_unreachable_broker_fail_in_one_line() {
    // Nothing listens on port 1.
    let line = fails(&["topic", "list", "--bootstrap", "127.0.0.1:1"], 1);
    assert_eq!(
        line,
        "error: cannot connect to 127.0.0.1:1: connection refused"
    );
    let o = {
        let mut cmd = Command::new(common::strata_bin());
        cmd.args(["group", "list"])
            .env("STRATA_BOOTSTRAP", "127.0.0.1:1")
            .stdin(Stdio::null());
        cmd.output().expect("run strata")
    };
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim_end(),
        "error: cannot connect to 127.0.0.1:1: connection refused",
        "STRATA_BOOTSTRAP is the default"
    );

    for (args, code) in [
        (&["topic", "create"][..], 2),
        (&["topic", "frobnicate"][..], 2),
        (&["topic", "create", "t", "--partitions", "zero"][..], 2),
        (&["consume", "t", "--offset", "soon"][..], 2),
        (
            &["consume", "t", "--offset", "1", "--timestamp", "5"][..],
            2,
        ),
        (
            &["consume", "t", "--format", "%q", "-b", "127.0.0.1:1"][..],
            2,
        ),
        (&["produce", "t", "--acks", "2"][..], 2),
        (&["topic", "alter-config", "t", "-b", "127.0.0.1:1"][..], 2),
        (&["topic", "list", "--bootstrap", "no-port"][..], 1),
        (
            &[
                "topic",
                "list",
                "--bootstrap",
                "127.0.0.1:1",
                "--output",
                "yaml",
            ][..],
            2,
        ),
    ] {
        fails(args, code);
    }
    let o = strata(&["--help"], None);
    assert!(o.status.success());
    let help = o.text();
    for cmd in ["serve", "topic", "group", "produce", "consume"] {
        assert!(help.contains(cmd), "--help lacks {cmd}:\n{help}");
    }
}

#[test]
fn missing_topic_and_partition_are_clear_errors() {
    let broker = Broker::start();
    let bs = broker.bootstrap();
    let line = fails(&["consume", "no-such-topic", "-e", "-b", &bs], 1);
    assert!(line.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{line}");
    let line = fails(&["topic", "describe", "no-such-topic", "-b", &bs], 1);
    assert!(line.contains("no-such-topic"), "{line}");
    let topic = common::topic_name("cli-miss");
    ok(&bs, &["topic", "create", &topic, "-p", "1"], None);
    let line = fails(&["consume", &topic, "-p", "3", "-b", &bs], 2);
    assert!(line.contains("partition 3"), "{line}");
    let line = fails(&["produce", &topic, "-p", "3", "-b", &bs], 2);
    assert!(line.contains("partition 3"), "{line}");
    let line = fails(&["group", "describe", "no-such-group", "-b", &bs], 1);
    assert!(line.contains("no-such-group"), "{line}");
    broker.assert_no_error_logs();
}

/// The library client on its own: negotiation, produce, fetch, offsets.
#[test]
fn client_library_round_trip() {
    use kafka_protocol::messages::{FetchRequest, ProduceRequest};
    use strata::client::{Acks, Client, NewTopic, OffsetSpec, ProduceRecord};

    let broker = Broker::start();
    let bs = broker.bootstrap();
    let base = clients::now_ms() - 60_000;
    clients::block_on(async {
        let client = Client::connect(&bs).await.expect("connect");
        assert_eq!(
            client.api_version::<FetchRequest>().await.unwrap(),
            Some(18)
        );
        assert_eq!(
            client.api_version::<ProduceRequest>().await.unwrap(),
            Some(13)
        );

        let topic = common::topic_name("client");
        let created = client
            .create_topic(&NewTopic {
                name: topic.clone(),
                num_partitions: Some(2),
                ..NewTopic::default()
            })
            .await
            .expect("create topic");
        assert_eq!(created.num_partitions, 2);

        let recs: Vec<ProduceRecord> = (0..5)
            .map(|i| ProduceRecord {
                key: Some(format!("k{i}").into()),
                value: Some(format!("v{i}").into()),
                headers: vec![("h".into(), Some("x".into()))],
                timestamp: Some(base + i),
            })
            .collect();
        let ack = client
            .produce(&topic, 1, &recs, Acks::All)
            .await
            .expect("produce");
        assert_eq!(ack.base_offset, Some(0));
        let ack = client
            .produce(&topic, 1, &recs[..2], Acks::Leader)
            .await
            .unwrap();
        assert_eq!(ack.base_offset, Some(5));

        let f = client
            .fetch(&topic, 1, 3, 1 << 20, Duration::from_millis(100))
            .await
            .expect("fetch");
        assert_eq!(f.high_watermark, 7);
        let offsets: Vec<i64> = f.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [3, 4, 5, 6]);
        assert_eq!(f.records[0].value.as_deref(), Some(&b"v3"[..]));
        assert_eq!(
            f.records[0].headers,
            vec![("h".to_owned(), Some("x".into()))]
        );
        assert_eq!(f.next_offset, 7);

        let latest = client
            .list_offset(&topic, 1, OffsetSpec::Latest)
            .await
            .unwrap();
        assert_eq!(latest.offset, 7);
        let by_time = client
            .list_offset(&topic, 1, OffsetSpec::Timestamp(base + 2))
            .await
            .unwrap();
        assert_eq!(by_time.offset, 2);

        let e = client
            .fetch("no-such-topic", 0, 0, 1024, Duration::ZERO)
            .await
            .unwrap_err();
        assert_eq!(
            e.kafka_code().map(|c| c.name()).as_deref(),
            Some("UNKNOWN_TOPIC_OR_PARTITION")
        );
        let e = client
            .fetch(&topic, 9, 0, 1024, Duration::ZERO)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("partition=9"), "{e}");

        let deleted = client.delete_topics(&[&topic]).await.unwrap();
        assert!(deleted[0].1.is_ok());
    });
    broker.assert_no_error_logs();
}
