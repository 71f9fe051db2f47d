//! ACLs against the real broker: the ACL authorizer (`--authorizer acl`)
//! deciding for rdkafka clients logged in with SASL/PLAIN or a client
//! certificate, ACLs changed with `strata acl`, kept in cluster metadata
//! across a restart, and the SECURITY_DISABLED answer without an
//! authorizer.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use common::clients::{self, TestRecord};
use common::pki::Pki;
use common::Broker;

const LISTENERS: &str = "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0";

/// A broker with the ACL authorizer. `admin` is a super user; so is the
/// PLAINTEXT listener's anonymous principal, which the test harness uses.
fn acl_broker(dir: &Path, extra: &[&str]) -> (Broker, Pki) {
    let pki = Pki::create(dir);
    let users = dir.join("users.toml");
    std::fs::write(
        &users,
        "[users]\nadmin = \"admin-secret\"\nalice = \"alice-secret\"\nbob = \"bob-secret\"\n",
    )
    .expect("write users");
    let broker = Broker::builder()
        .args(["--listeners", LISTENERS, "--ssl-client-auth", "requested"])
        .args(pki.broker_args())
        .arg("--sasl-plain-users-file")
        .arg(users.display().to_string())
        .args([
            "--authorizer",
            "acl",
            "--super-users",
            "User:admin;User:ANONYMOUS",
        ])
        .args(extra.iter().copied())
        .start();
    (broker, pki)
}

fn sasl(user: &str) -> Vec<(String, String)> {
    vec![
        ("security.protocol".into(), "SASL_PLAINTEXT".into()),
        ("sasl.mechanism".into(), "PLAIN".into()),
        ("sasl.username".into(), user.into()),
        ("sasl.password".into(), format!("{user}-secret")),
    ]
}

fn refs(s: &[(String, String)]) -> Vec<(&str, &str)> {
    s.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Client properties for the `strata` CLI logging in as `admin`.
fn admin_properties(dir: &Path) -> PathBuf {
    let path = dir.join("admin.properties");
    std::fs::write(
        &path,
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.username=admin\nsasl.password=admin-secret\n",
    )
    .expect("write properties");
    path
}

/// Runs `strata acl ARGS` as admin on the SASL listener; (success, stdout,
/// stderr).
fn acl(broker: &Broker, props: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(common::strata_bin())
        .arg("acl")
        .args(args)
        .args(["--bootstrap", &broker.listener("SASL_PLAINTEXT")])
        .arg("--command-config")
        .arg(props)
        .env("NO_COLOR", "1")
        .output()
        .expect("run strata");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn acl_ok(broker: &Broker, props: &Path, args: &[&str]) -> String {
    let (ok, out, err) = acl(broker, props, args);
    assert!(ok, "strata acl {args:?}: {out}{err}");
    out
}

/// Produces one record with a fresh producer; the delivery's outcome.
fn produce_one(bootstrap: &str, s: &[(String, String)], topic: &str) -> Result<i64, KafkaError> {
    let mut extra = refs(s);
    extra.push(("message.timeout.ms", "15000"));
    let producer = clients::producer(bootstrap, &extra);
    let f = clients::enqueue(&producer, topic, &TestRecord::keyed("k", "v"));
    clients::await_delivery(f).map(|(_, offset)| offset)
}

fn is_code(e: &KafkaError, want: RDKafkaErrorCode) -> bool {
    e.rdkafka_error_code() == Some(want)
}

/// The topics a client sees in a Metadata answer for all topics.
fn visible_topics(bootstrap: &str, s: &[(String, String)]) -> Vec<String> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4");
    for (k, v) in s {
        c.set(k, v);
    }
    let consumer: BaseConsumer = c.create().expect("client");
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(20))
        .expect("metadata");
    md.topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| t.name().to_string())
        .collect()
}

/// Reads partition 0 from offset 0 with `assign()`: the first record's
/// value, or the error the fetch got.
fn read_first(bootstrap: &str, s: &[(String, String)], topic: &str) -> Result<Vec<u8>, KafkaError> {
    let mut extra = refs(s);
    extra.push(("auto.offset.reset", "earliest"));
    let consumer = clients::consumer(bootstrap, &extra);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => return Ok(rdkafka::Message::payload(&m).unwrap_or_default().to_vec()),
            // librdkafka looks up the (random, ACL-less) group of an
            // assign()-only consumer too: that refusal is not the fetch's.
            Some(Err(e)) if is_code(&e, RDKafkaErrorCode::GroupAuthorizationFailed) => {}
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    panic!("no record and no error from {topic} within 20 s");
}

/// Commits offset 1 of partition 0 for `group`.
fn commit(
    bootstrap: &str,
    s: &[(String, String)],
    group: &str,
    topic: &str,
) -> Result<(), KafkaError> {
    let mut extra = refs(s);
    extra.push(("group.id", group));
    let consumer = clients::consumer(bootstrap, &extra);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(1))
        .expect("tpl");
    consumer.commit(&tpl, CommitMode::Sync)
}

#[test]
fn acls_decide_what_each_principal_may_do_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut broker, _pki) = acl_broker(dir.path(), &[]);
    let props = admin_properties(dir.path());
    let sasl_addr = broker.listener("SASL_PLAINTEXT");
    let prefix = common::topic_name("acl");
    let topic = format!("{prefix}-orders");
    let hidden = format!("{prefix}-hidden");
    clients::create_topic(&broker.bootstrap(), &topic, 1, &[]);
    clients::create_topic(&broker.bootstrap(), &hidden, 1, &[]);
    let (alice, bob) = (sasl("alice"), sasl("bob"));

    // Without ACLs alice may do nothing: she sees no topic, cannot write.
    assert!(visible_topics(&sasl_addr, &alice).is_empty());
    let e = produce_one(&sasl_addr, &alice, &topic).expect_err("no ACL: refused");
    assert!(
        is_code(&e, RDKafkaErrorCode::TopicAuthorizationFailed),
        "{e}"
    );

    // WRITE on every topic with the prefix (WRITE implies DESCRIBE).
    acl_ok(
        &broker,
        &props,
        &[
            "add",
            "--principal",
            "User:alice",
            "--operation",
            "WRITE",
            "--topic",
            &prefix,
            "--prefixed",
        ],
    );
    assert_eq!(
        produce_one(&sasl_addr, &alice, &topic).expect("alice writes"),
        0
    );
    let mut seen = visible_topics(&sasl_addr, &alice);
    seen.sort();
    let mut want = vec![hidden.clone(), topic.clone()];
    want.sort();
    assert_eq!(seen, want, "prefixed DESCRIBE shows both topics");

    // Reading takes READ: refused, then allowed on the one topic.
    let e = read_first(&sasl_addr, &alice, &topic).expect_err("no READ");
    assert!(
        is_code(&e, RDKafkaErrorCode::TopicAuthorizationFailed),
        "{e}"
    );
    acl_ok(
        &broker,
        &props,
        &[
            "add",
            "--principal",
            "User:*",
            "--operation",
            "READ",
            "--topic",
            &topic,
        ],
    );
    assert_eq!(
        read_first(&sasl_addr, &alice, &topic).expect("alice reads"),
        b"v"
    );
    // Committing offsets takes READ on the group too.
    let group = format!("{prefix}-group");
    // (librdkafka reports the refused coordinator lookup as still waiting
    // for the coordinator.)
    let e = commit(&sasl_addr, &alice, &group, &topic).expect_err("no group ACL");
    assert!(
        is_code(&e, RDKafkaErrorCode::GroupAuthorizationFailed)
            || matches!(
                e,
                KafkaError::ConsumerCommit(RDKafkaErrorCode::WaitingForCoordinator)
            ),
        "{e}"
    );
    acl_ok(
        &broker,
        &props,
        &[
            "add",
            "--principal",
            "User:alice",
            "--operation",
            "READ",
            "--group",
            &group,
        ],
    );
    commit(&sasl_addr, &alice, &group, &topic).expect("alice commits");

    // A DENY wins over the ALLOW for everyone.
    assert_eq!(
        read_first(&sasl_addr, &bob, &topic).expect("bob reads"),
        b"v"
    );
    acl_ok(
        &broker,
        &props,
        &[
            "add",
            "--principal",
            "User:bob",
            "--operation",
            "READ",
            "--topic",
            &topic,
            "--deny",
        ],
    );
    let e = read_first(&sasl_addr, &bob, &topic).expect_err("denied");
    assert!(
        is_code(&e, RDKafkaErrorCode::TopicAuthorizationFailed),
        "{e}"
    );
    // A DENY names one operation: the DESCRIBE that everyone's READ
    // implies still holds for bob.
    assert_eq!(visible_topics(&sasl_addr, &bob), vec![topic.clone()]);

    // Listing, as JSON.
    let listed: serde_json::Value =
        serde_json::from_str(&acl_ok(&broker, &props, &["list", "--output", "json"]))
            .expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(4), "{listed}");
    let of_topic = acl_ok(&broker, &props, &["list", "--topic", &topic]);
    assert!(
        of_topic.contains("User:bob") && of_topic.contains("DENY"),
        "{of_topic}"
    );
    assert!(!of_topic.contains("PREFIXED"), "{of_topic}");

    // Refusals are logged and counted.
    assert!(broker.metrics()["strata_authorization_failures_total"] >= 4.0);
    assert!(broker.logs().contains("authorization failed"));

    // ACLs live in cluster metadata: a restart keeps them.
    broker.restart();
    let sasl_addr = broker.listener("SASL_PLAINTEXT");
    assert_eq!(
        produce_one(&sasl_addr, &alice, &topic).expect("alice writes"),
        1
    );
    assert!(read_first(&sasl_addr, &bob, &topic).is_err());

    // Removing alice's ACLs takes her rights away again.
    let removed = acl_ok(
        &broker,
        &props,
        &[
            "remove",
            "--principal",
            "User:alice",
            "--topic",
            &prefix,
            "--prefixed",
        ],
    );
    assert!(removed.contains("WRITE"), "{removed}");
    let e = produce_one(&sasl_addr, &alice, &topic).expect_err("ACL removed");
    assert!(
        is_code(&e, RDKafkaErrorCode::TopicAuthorizationFailed),
        "{e}"
    );

    // Only a principal with ALTER on the cluster changes ACLs.
    let alice_props = dir.path().join("alice.properties");
    std::fs::write(
        &alice_props,
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.username=alice\nsasl.password=alice-secret\n",
    )
    .expect("write");
    let (ok, _, err) = acl(
        &broker,
        &alice_props,
        &[
            "add",
            "--principal",
            "User:alice",
            "--operation",
            "ALL",
            "--cluster",
        ],
    );
    assert!(!ok);
    assert!(err.contains("CLUSTER_AUTHORIZATION_FAILED"), "{err}");
    // As do unregistering a broker and adding a metadata voter.
    for cmd in ["remove-broker", "add-voter"] {
        let out = std::process::Command::new(common::strata_bin())
            .args(["cluster", cmd, "--broker", "1"])
            .args(["--bootstrap", &broker.listener("SASL_PLAINTEXT")])
            .arg("--command-config")
            .arg(&alice_props)
            .env("NO_COLOR", "1")
            .output()
            .expect("run strata");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd}");
        assert!(err.contains("CLUSTER_AUTHORIZATION_FAILED"), "{cmd}: {err}");
    }
    // Bad ACLs are refused with a message naming the field.
    let (ok, _, err) = acl(
        &broker,
        &props,
        &[
            "add",
            "--principal",
            "alice",
            "--operation",
            "READ",
            "--topic",
            "t",
        ],
    );
    assert!(!ok);
    assert!(err.contains("principal"), "{err}");
}

#[test]
fn a_client_certificate_names_the_principal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, pki) = acl_broker(dir.path(), &[]);
    let props = admin_properties(dir.path());
    let topic = common::topic_name("mtls-acl");
    clients::create_topic(&broker.bootstrap(), &topic, 1, &[]);
    let ssl: Vec<(String, String)> = vec![
        ("security.protocol".into(), "SSL".into()),
        ("ssl.ca.location".into(), pki.ca.display().to_string()),
        (
            "ssl.certificate.location".into(),
            pki.client_cert.display().to_string(),
        ),
        (
            "ssl.key.location".into(),
            pki.client_key.display().to_string(),
        ),
    ];
    let addr = broker.listener("SSL");
    let e = produce_one(&addr, &ssl, &topic).expect_err("no ACL for the certificate");
    assert!(
        is_code(&e, RDKafkaErrorCode::TopicAuthorizationFailed),
        "{e}"
    );
    acl_ok(
        &broker,
        &props,
        &[
            "add",
            "--principal",
            "User:CN=strata-client",
            "--operation",
            "WRITE",
            "--topic",
            &topic,
        ],
    );
    assert_eq!(
        produce_one(&addr, &ssl, &topic).expect("the certificate's principal writes"),
        0
    );
    // The refusal's log line names the certificate's principal.
    assert!(broker.logs().contains("User:CN=strata-client"));
}

#[test]
fn allow_everyone_if_no_acl_found_opens_resources_no_acl_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, _pki) = acl_broker(dir.path(), &["--allow-everyone-if-no-acl-found", "true"]);
    let props = admin_properties(dir.path());
    let addr = broker.listener("SASL_PLAINTEXT");
    let topic = common::topic_name("open");
    clients::create_topic(&broker.bootstrap(), &topic, 1, &[]);
    produce_one(&addr, &sasl("alice"), &topic).expect("no ACL names the topic");
    acl_ok(
        &broker,
        &props,
        &[
            "add",
            "--principal",
            "User:bob",
            "--operation",
            "WRITE",
            "--topic",
            &topic,
        ],
    );
    let e = produce_one(&addr, &sasl("alice"), &topic).expect_err("an ACL names it now");
    assert!(
        is_code(&e, RDKafkaErrorCode::TopicAuthorizationFailed),
        "{e}"
    );
    produce_one(&addr, &sasl("bob"), &topic).expect("bob may");
}

#[test]
fn without_an_authorizer_acl_requests_answer_security_disabled() {
    let broker = Broker::start();
    let out = std::process::Command::new(common::strata_bin())
        .args(["acl", "list", "--bootstrap", &broker.bootstrap()])
        .output()
        .expect("run strata");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SECURITY_DISABLED"), "{err}");
    // Everything else is served as before.
    clients::smoke(&broker.bootstrap());
}
