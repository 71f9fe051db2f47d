//! Listener security against the real broker: TLS (with and without client
//! certificates), SASL/PLAIN over plaintext and TLS, refusals (wrong
//! passwords, untrusted and expired certificates, plaintext clients on TLS
//! listeners, requests before authentication), session lifetimes and the
//! SIGHUP reload. Clients are rdkafka (librdkafka with OpenSSL) and raw
//! Kafka frames.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use common::clients::{self, TestRecord};
use common::pki::Pki;
use common::raw::RawConn;
use common::Broker;

const TIMEOUT: Duration = Duration::from_secs(60);
const LISTENERS: &str =
    "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0";

fn users_file(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("users.toml");
    let mut text = String::from("[users]\n");
    for (u, p) in users {
        text.push_str(&format!("{u} = \"{p}\"\n"));
    }
    std::fs::write(&path, text).expect("write users");
    path
}

/// A broker with all four kinds of listener; clients may present a
/// certificate (`--ssl-client-auth requested`) unless `auth` says otherwise.
fn secure_broker(dir: &Path, auth: &str, extra: &[&str]) -> (Broker, Pki) {
    let pki = Pki::create(dir);
    let users = users_file(dir, &[("alice", "alice-secret"), ("bob", "bob-secret")]);
    let broker = Broker::builder()
        .args(["--listeners", LISTENERS, "--ssl-client-auth", auth])
        .args(pki.broker_args())
        .arg("--sasl-plain-users-file")
        .arg(users.display().to_string())
        .args(extra.iter().copied())
        .start();
    (broker, pki)
}

/// Client settings for a listener's protocol.
fn settings(protocol: &str, pki: &Pki, user: Option<(&str, &str)>) -> Vec<(String, String)> {
    let mut s = vec![("security.protocol".to_string(), protocol.to_string())];
    if protocol.ends_with("SSL") {
        s.push(("ssl.ca.location".into(), pki.ca.display().to_string()));
    }
    if let Some((u, p)) = user {
        s.push(("sasl.mechanism".into(), "PLAIN".into()));
        s.push(("sasl.username".into(), u.into()));
        s.push(("sasl.password".into(), p.into()));
    }
    s
}

fn refs(s: &[(String, String)]) -> Vec<(&str, &str)> {
    s.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A metadata-only client; `Err` carries what librdkafka reported.
fn metadata_with(
    bootstrap: &str,
    s: &[(String, String)],
) -> Result<Vec<(i32, String, i32)>, String> {
    metadata_within(bootstrap, s, Duration::from_secs(20))
}

/// Asserts that a client with these settings gets no metadata (librdkafka
/// retries a refused connection until the timeout, so it is short).
fn refused(bootstrap: &str, s: &[(String, String)], why: &str) {
    if let Ok(md) = metadata_within(bootstrap, s, Duration::from_secs(3)) {
        panic!("{why}: the client got metadata {md:?}");
    }
}

fn metadata_within(
    bootstrap: &str,
    s: &[(String, String)],
    timeout: Duration,
) -> Result<Vec<(i32, String, i32)>, String> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4");
    for (k, v) in s {
        c.set(k, v);
    }
    let consumer: BaseConsumer = c.create().map_err(|e| e.to_string())?;
    let md = consumer
        .fetch_metadata(None, timeout)
        .map_err(|e| e.to_string())?;
    Ok(md
        .brokers()
        .iter()
        .map(|b| (b.id(), b.host().to_string(), b.port()))
        .collect())
}

/// Produces `n` records of 4 KiB over the listener and reads them back.
fn round_trip(bootstrap: &str, s: &[(String, String)], topic: &str, n: usize) {
    let records: Vec<TestRecord> = (0..n)
        .map(|i| TestRecord::keyed(format!("k{i}"), vec![b'a' + (i % 26) as u8; 4096]))
        .collect();
    let producer = clients::producer(bootstrap, &refs(s));
    let at = clients::produce_all(&producer, topic, &records);
    let (first, last) = (at[0].1, at[n - 1].1);
    let consumer = clients::consumer(bootstrap, &refs(s));
    let got = clients::consume_ranges_with(&consumer, topic, &[(0, first, last + 1)], TIMEOUT);
    assert_eq!(got.len(), n, "read back over {bootstrap}");
    for (want, got) in records.iter().zip(&got) {
        want.matches(got).expect("same record");
    }
}

#[test]
fn every_listener_serves_clients_with_its_security_and_advertises_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, pki) = secure_broker(dir.path(), "requested", &[]);
    let topic = common::topic_name("secure");
    clients::create_topic(&broker.bootstrap(), &topic, 1, &[]);
    let alice = Some(("alice", "alice-secret"));
    for (listener, user) in [
        ("SSL", None),
        ("SASL_PLAINTEXT", alice),
        ("SASL_SSL", alice),
    ] {
        let addr = broker.listener(listener);
        let s = settings(listener, &pki, user);
        // Each listener's clients are told that listener's address.
        let brokers = metadata_with(&addr, &s).unwrap_or_else(|e| panic!("{listener}: {e}"));
        let port: i32 = addr
            .rsplit_once(':')
            .expect("port")
            .1
            .parse()
            .expect("port");
        assert_eq!(brokers, [(1, "127.0.0.1".to_string(), port)], "{listener}");
        // 400 KiB: fetches over TLS copy the file data in several chunks.
        round_trip(&addr, &s, &topic, 100);
    }
    // A client certificate is accepted when offered (requested, not required).
    let mut s = settings("SSL", &pki, None);
    s.push((
        "ssl.certificate.location".into(),
        pki.client_cert.display().to_string(),
    ));
    s.push((
        "ssl.key.location".into(),
        pki.client_key.display().to_string(),
    ));
    round_trip(&broker.listener("SSL"), &s, &topic, 5);
    let m = broker.metrics();
    assert!(m["strata_sasl_authentications_total"] >= 2.0, "{m:?}");
    assert_eq!(m["strata_sasl_authentication_failures_total"], 0.0);
    assert_eq!(m["strata_tls_handshake_failures_total"], 0.0);
}

#[test]
fn wrong_passwords_are_refused_and_logged_while_others_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, pki) = secure_broker(dir.path(), "none", &[]);
    for listener in ["SASL_PLAINTEXT", "SASL_SSL"] {
        let addr = broker.listener(listener);
        for (user, pass) in [
            ("alice", "wrong"),
            ("mallory", "alice-secret"),
            ("alice", ""),
        ] {
            refused(
                &addr,
                &settings(listener, &pki, Some((user, pass))),
                "wrong credentials",
            );
        }
        // No credentials at all: the client cannot get past the handshake.
        refused(&addr, &settings(listener, &pki, None), "no SASL");
    }
    let logs = broker.logs();
    assert!(logs.contains("SASL authentication failed"), "{logs}");
    assert!(broker.metrics()["strata_sasl_authentication_failures_total"] >= 2.0);
    // The broker goes on serving good clients on every listener.
    let topic = common::topic_name("after-refusals");
    clients::create_topic(&broker.bootstrap(), &topic, 1, &[]);
    round_trip(
        &broker.listener("SASL_SSL"),
        &settings("SASL_SSL", &pki, Some(("bob", "bob-secret"))),
        &topic,
        3,
    );
}

#[test]
fn a_plaintext_client_on_a_tls_listener_is_refused_and_the_listener_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, pki) = secure_broker(dir.path(), "none", &[]);
    let mut raw = RawConn::connect(&broker.listener("SSL"));
    raw.send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let sent = raw.wait_closed(TIMEOUT).expect("closed");
    assert!(
        !sent.starts_with(&[0, 0]),
        "no Kafka response on a TLS listener: {sent:?}"
    );
    // A TLS client that does not trust the broker's CA gives up itself.
    let mut untrusting = settings("SSL", &pki, None);
    untrusting[1].1 = pki.other_ca.display().to_string();
    refused(&broker.listener("SSL"), &untrusting, "untrusted broker");
    // librdkafka on a plaintext client to TLS and SASL_SSL listeners.
    refused(
        &broker.listener("SASL_SSL"),
        &settings("SASL_PLAINTEXT", &pki, Some(("alice", "alice-secret"))),
        "plaintext SASL on TLS",
    );
    let logs = broker.logs();
    assert!(logs.contains("TLS handshake failed"), "{logs}");
    assert!(broker.metrics()["strata_tls_handshake_failures_total"] >= 2.0);
    let topic = common::topic_name("tls-after");
    clients::create_topic(&broker.bootstrap(), &topic, 1, &[]);
    round_trip(
        &broker.listener("SSL"),
        &settings("SSL", &pki, None),
        &topic,
        3,
    );
}

#[test]
fn required_client_certificates_refuse_missing_expired_and_foreign_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, pki) = secure_broker(dir.path(), "required", &[]);
    let addr = broker.listener("SSL");
    let with_cert = |cert: &Path, key: &Path| {
        let mut s = settings("SSL", &pki, None);
        s.push((
            "ssl.certificate.location".into(),
            cert.display().to_string(),
        ));
        s.push(("ssl.key.location".into(), key.display().to_string()));
        s
    };
    refused(&addr, &settings("SSL", &pki, None), "no client certificate");
    refused(
        &addr,
        &with_cert(&pki.expired_client_cert, &pki.expired_client_key),
        "expired client certificate",
    );
    refused(
        &addr,
        &with_cert(&pki.stranger_cert, &pki.stranger_key),
        "client certificate from another CA",
    );
    let logs = broker.logs();
    assert!(logs.contains("TLS handshake failed"), "{logs}");
    assert!(broker.metrics()["strata_tls_handshake_failures_total"] >= 3.0);
    let topic = common::topic_name("mtls");
    clients::create_topic(&broker.bootstrap(), &topic, 1, &[]);
    round_trip(
        &addr,
        &with_cert(&pki.client_cert, &pki.client_key),
        &topic,
        10,
    );
}

/// SaslHandshake then SaslAuthenticate (PLAIN) on a raw connection.
fn raw_login(raw: &mut RawConn, user: &str, pass: &str) -> SaslAuthenticateResponse {
    let hs: SaslHandshakeResponse = raw.roundtrip(
        ApiKey::SaslHandshake,
        1,
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
    );
    assert_eq!(hs.error_code, 0);
    assert_eq!(hs.mechanisms, [StrBytes::from_static_str("PLAIN")]);
    raw.roundtrip(
        ApiKey::SaslAuthenticate,
        2,
        &SaslAuthenticateRequest::default()
            .with_auth_bytes(format!("\0{user}\0{pass}").into_bytes().into()),
    )
}

#[test]
fn before_authentication_only_the_handshake_is_served_and_frames_are_small() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, _pki) =
        secure_broker(dir.path(), "none", &["--connections-max-reauth-ms", "1500"]);
    let addr = broker.listener("SASL_PLAINTEXT");

    // ApiVersions is served before authentication, Metadata closes.
    let mut raw = RawConn::connect(&addr);
    let versions: ApiVersionsResponse =
        raw.roundtrip(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert!(versions
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::SaslAuthenticate as i16));
    raw.send(ApiKey::Metadata, 12, &MetadataRequest::default());
    raw.wait_closed(TIMEOUT)
        .expect("closed before authentication");

    // A big frame before authentication closes the connection unread.
    let mut raw = RawConn::connect(&addr);
    raw.write_raw(&(1i32 << 20).to_be_bytes())
        .expect("write length");
    raw.wait_closed(TIMEOUT).expect("closed on a 1 MiB frame");

    // SaslAuthenticate without a handshake: ILLEGAL_SASL_STATE, closed.
    let mut raw = RawConn::connect(&addr);
    let r: SaslAuthenticateResponse = raw.roundtrip(
        ApiKey::SaslAuthenticate,
        2,
        &SaslAuthenticateRequest::default()
            .with_auth_bytes(b"\0alice\0alice-secret".to_vec().into()),
    );
    assert_eq!(r.error_code, 34, "ILLEGAL_SASL_STATE");
    raw.wait_closed(TIMEOUT).expect("closed");

    // A wrong password: SASL_AUTHENTICATION_FAILED with a message, closed.
    let mut raw = RawConn::connect(&addr);
    let r = raw_login(&mut raw, "alice", "nope");
    assert_eq!(r.error_code, 58, "SASL_AUTHENTICATION_FAILED");
    assert!(r
        .error_message
        .expect("message")
        .contains("Invalid username or password"));
    raw.wait_closed(TIMEOUT)
        .expect("closed after a failed login");

    // A session lasts --connections-max-reauth-ms: served until then,
    // closed at the first request after it; authenticating again (as the
    // same user only) extends it.
    let mut raw = RawConn::connect(&addr);
    let r = raw_login(&mut raw, "alice", "alice-secret");
    assert_eq!(r.error_code, 0);
    assert_eq!(r.session_lifetime_ms, 1500);
    let _: kafka_protocol::messages::MetadataResponse =
        raw.roundtrip(ApiKey::Metadata, 12, &MetadataRequest::default());
    let r = raw_login(&mut raw, "bob", "bob-secret");
    assert_eq!(r.error_code, 58, "re-authentication as someone else");
    raw.wait_closed(TIMEOUT).expect("closed");
    let mut raw = RawConn::connect(&addr);
    assert_eq!(raw_login(&mut raw, "alice", "alice-secret").error_code, 0);
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(raw_login(&mut raw, "alice", "alice-secret").error_code, 0);
    std::thread::sleep(Duration::from_millis(1000));
    assert!(started.elapsed() > Duration::from_millis(1500));
    let _: kafka_protocol::messages::MetadataResponse =
        raw.roundtrip(ApiKey::Metadata, 12, &MetadataRequest::default());
    std::thread::sleep(Duration::from_millis(1600));
    raw.send(ApiKey::Metadata, 12, &MetadataRequest::default());
    raw.wait_closed(TIMEOUT)
        .expect("closed after the session ended");

    // SaslHandshake v0: the token follows as a bare frame, answered by a
    // bare (empty, for PLAIN) frame; then Kafka requests are served. A
    // wrong password closes the connection without an answer.
    for (password, accepted) in [("alice-secret", true), ("nope", false)] {
        let mut raw = RawConn::connect(&addr);
        let hs: SaslHandshakeResponse = raw.roundtrip(
            ApiKey::SaslHandshake,
            0,
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
        );
        assert_eq!(hs.error_code, 0);
        raw.write_frame(format!("\0alice\0{password}").as_bytes())
            .expect("token");
        if accepted {
            assert!(raw.read_frame().expect("bare answer").is_empty());
            let _: kafka_protocol::messages::MetadataResponse =
                raw.roundtrip(ApiKey::Metadata, 12, &MetadataRequest::default());
        } else {
            raw.wait_closed(TIMEOUT)
                .expect("closed after a failed v0 login");
        }
    }

    // SaslHandshake on a listener without SASL: ILLEGAL_SASL_STATE.
    let mut raw = RawConn::connect(&broker.bootstrap());
    let hs: SaslHandshakeResponse = raw.roundtrip(
        ApiKey::SaslHandshake,
        1,
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
    );
    assert_eq!(hs.error_code, 34);

    let logs = broker.logs();
    assert!(
        logs.contains("request before SASL authentication"),
        "{logs}"
    );
    assert!(
        logs.contains("SASL session ended without re-authentication"),
        "{logs}"
    );
}

#[test]
fn sighup_reloads_users_and_keeps_them_when_the_file_breaks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut broker, pki) = secure_broker(dir.path(), "none", &[]);
    let addr = broker.listener("SASL_SSL");
    let carol = settings("SASL_SSL", &pki, Some(("carol", "carol-secret")));
    refused(&addr, &carol, "carol is not a user yet");
    users_file(
        dir.path(),
        &[("alice", "alice-secret"), ("carol", "carol-secret")],
    );
    broker.signal("HUP");
    let deadline = Instant::now() + TIMEOUT;
    while metadata_with(&addr, &carol).is_err() {
        assert!(
            Instant::now() < deadline,
            "carol never accepted after SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    refused(
        &addr,
        &settings("SASL_SSL", &pki, Some(("bob", "bob-secret"))),
        "bob was removed",
    );
    // A broken file: an error naming it, and carol still gets in.
    broker.expect_error("cannot reload the SASL users");
    std::fs::write(dir.path().join("users.toml"), "not toml [").expect("write");
    broker.signal("HUP");
    let deadline = Instant::now() + TIMEOUT;
    while !broker.logs().contains("cannot reload the SASL users") {
        assert!(Instant::now() < deadline, "no reload error logged");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(broker.logs().contains("sasl-plain-users-file="));
    metadata_with(&addr, &carol).expect("carol still a user");
}

#[test]
fn invalid_security_settings_stop_the_broker_with_a_message_naming_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::create(dir.path());
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--listeners".into(),
                "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0".into(),
            ],
            "ssl-certificate-file",
        ),
        (
            vec![
                "--listeners".into(),
                "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0".into(),
                "--ssl-certificate-file".into(),
                pki.server_cert.display().to_string(),
                "--ssl-key-file".into(),
                pki.client_key.display().to_string(),
            ],
            "does not match",
        ),
        (
            vec![
                "--listeners".into(),
                "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0".into(),
                "--ssl-certificate-file".into(),
                dir.path().join("missing.pem").display().to_string(),
                "--ssl-key-file".into(),
                pki.server_key.display().to_string(),
            ],
            "ssl-certificate-file=",
        ),
        (
            vec![
                "--listeners".into(),
                "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0".into(),
                "--sasl-plain-users-file".into(),
                dir.path().join("missing.toml").display().to_string(),
            ],
            "sasl-plain-users-file=",
        ),
    ];
    let mut cases = cases;
    cases.push((vec!["--admin-ssl".into(), "true".into()], "admin-ssl"));
    cases.push((
        vec!["--super-users".into(), "User:admin".into()],
        "super-users",
    ));
    cases.push((vec!["--authorizer".into(), "ranger".into()], "authorizer"));
    cases.push((
        vec![
            "--authorizer".into(),
            "acl".into(),
            "--super-users".into(),
            "admin".into(),
        ],
        "super-users",
    ));
    let plaintext_client = dir.path().join("plain.properties");
    std::fs::write(&plaintext_client, "security.protocol=PLAINTEXT\n").expect("write");
    cases.push((
        vec![
            "--listeners".into(),
            "PLAINTEXT://127.0.0.1:0,INTERNAL://127.0.0.1:0".into(),
            "--listener-security-protocol-map".into(),
            "INTERNAL:SSL".into(),
            "--inter-broker-listener-name".into(),
            "INTERNAL".into(),
            "--ssl-certificate-file".into(),
            pki.server_cert.display().to_string(),
            "--ssl-key-file".into(),
            pki.server_key.display().to_string(),
            "--inter-broker-client-config".into(),
            plaintext_client.display().to_string(),
        ],
        "must be SSL",
    ));
    cases.push((
        vec!["--controller-security-protocol".into(), "SSL".into()],
        "controller-security-protocol",
    ));
    cases.push((
        vec![
            "--controller-listen".into(),
            "127.0.0.1:0".into(),
            "--controller-quorum-voters".into(),
            "1@127.0.0.1:19093".into(),
            "--controller-security-protocol".into(),
            "SSL".into(),
            "--ssl-certificate-file".into(),
            pki.server_cert.display().to_string(),
            "--ssl-key-file".into(),
            pki.server_key.display().to_string(),
        ],
        "ssl-client-ca-file",
    ));
    for (args, want) in cases {
        let out = std::process::Command::new(common::strata_bin())
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(&args)
            .env("NO_COLOR", "1")
            .output()
            .expect("run strata");
        assert!(!out.status.success(), "{args:?} started");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(want), "{args:?}: {text}");
    }
}

/// Runs `strata ARGS` against `bootstrap`; (success, stdout, stderr).
fn strata_cli(bootstrap: &str, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(common::strata_bin())
        .args(args)
        .args(["--bootstrap", bootstrap])
        .env("NO_COLOR", "1")
        .output()
        .expect("run strata");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scram_settings(
    protocol: &str,
    pki: &Pki,
    mechanism: &str,
    user: &str,
    pass: &str,
) -> Vec<(String, String)> {
    let mut s = settings(protocol, pki, Some((user, pass)));
    s.iter_mut()
        .filter(|(k, _)| k == "sasl.mechanism")
        .for_each(|(_, v)| *v = mechanism.to_string());
    s
}

#[test]
fn scram_users_created_with_the_cli_log_in_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut broker, pki) = secure_broker(
        dir.path(),
        "none",
        &[
            "--sasl-enabled-mechanisms",
            "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        ],
    );
    let admin = broker.bootstrap();
    let (ok, out, err) = strata_cli(
        &admin,
        &["user", "create", "carol", "--password", "carol-secret"],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("user carol created"), "{out}");
    let pw_file = dir.path().join("dave.pw");
    std::fs::write(&pw_file, "dave-secret\n").expect("write");
    let (ok, out, err) = strata_cli(
        &admin,
        &[
            "user",
            "create",
            "dave",
            "--password-file",
            pw_file.to_str().expect("utf8"),
            "--mechanism",
            "SCRAM-SHA-512",
            "--iterations",
            "4096",
        ],
    );
    assert!(ok, "{out}{err}");
    let (ok, out, _) = strata_cli(&admin, &["user", "list", "--output", "json"]);
    assert!(ok);
    let listed: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        listed,
        serde_json::json!([
            {"user": "carol", "credentials": [
                {"mechanism": "SCRAM-SHA-256", "iterations": 8192},
                {"mechanism": "SCRAM-SHA-512", "iterations": 8192}]},
            {"user": "dave", "credentials": [
                {"mechanism": "SCRAM-SHA-512", "iterations": 4096}]},
        ])
    );
    // Bad requests are refused with Kafka's codes, naming the user.
    let (ok, _, err) = strata_cli(
        &admin,
        &["user", "delete", "nobody", "--mechanism", "SCRAM-SHA-256"],
    );
    assert!(!ok);
    assert!(
        err.contains("RESOURCE_NOT_FOUND") || err.contains("RESOURCE"),
        "{err}"
    );

    let topic = common::topic_name("scram");
    clients::create_topic(&admin, &topic, 1, &[]);
    for listener in ["SASL_PLAINTEXT", "SASL_SSL"] {
        for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
            let s = scram_settings(listener, &pki, mechanism, "carol", "carol-secret");
            round_trip(&broker.listener(listener), &s, &topic, 5);
            let wrong = scram_settings(listener, &pki, mechanism, "carol", "wrong");
            refused(&broker.listener(listener), &wrong, "wrong password");
        }
    }
    // dave has SCRAM-SHA-512 only.
    let addr = broker.listener("SASL_SSL");
    metadata_with(
        &addr,
        &scram_settings("SASL_SSL", &pki, "SCRAM-SHA-512", "dave", "dave-secret"),
    )
    .expect("dave over SHA-512");
    refused(
        &addr,
        &scram_settings("SASL_SSL", &pki, "SCRAM-SHA-256", "dave", "dave-secret"),
        "dave has no SHA-256 credential",
    );

    // The CLI connects to secured listeners with Kafka-style properties.
    let props = |protocol: &str, mechanism: &str, password: &str| {
        let path = dir
            .path()
            .join(format!("{protocol}-{mechanism}-{password}.properties"));
        std::fs::write(
            &path,
            format!(
                "# client settings\nsecurity.protocol={protocol}\nssl.ca.location={}\nsasl.mechanism={mechanism}\nsasl.username=carol\nsasl.password={password}\n",
                pki.ca.display()
            ),
        )
        .expect("write properties");
        path.display().to_string()
    };
    for (protocol, mechanism) in [
        ("SASL_SSL", "SCRAM-SHA-512"),
        ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
    ] {
        let config = props(protocol, mechanism, "carol-secret");
        let (ok, out, err) = strata_cli(
            &broker.listener(protocol),
            &["topic", "list", "--command-config", &config],
        );
        assert!(ok, "{protocol} {mechanism}: {out}{err}");
        assert!(out.contains(&topic), "{out}");
        let config = props(protocol, mechanism, "wrong");
        let (ok, _, err) = strata_cli(
            &broker.listener(protocol),
            &[
                "topic",
                "list",
                "--command-config",
                &config,
                "--timeout",
                "5",
            ],
        );
        assert!(!ok);
        assert!(err.contains("SASL authentication"), "{err}");
    }
    let mut ssl_only = std::fs::File::create(dir.path().join("ssl.properties")).expect("create");
    std::io::Write::write_all(
        &mut ssl_only,
        format!(
            "security.protocol=SSL\nssl.ca.location={}\n",
            pki.ca.display()
        )
        .as_bytes(),
    )
    .expect("write");
    let ssl_config = dir.path().join("ssl.properties").display().to_string();
    let (ok, out, err) = strata_cli(
        &broker.listener("SSL"),
        &["topic", "list", "--command-config", &ssl_config],
    );
    assert!(ok, "{out}{err}");

    // Credentials live in cluster metadata: they survive a restart.
    broker.stop();
    broker.restart();
    let addr = broker.listener("SASL_SSL");
    let carol = scram_settings("SASL_SSL", &pki, "SCRAM-SHA-256", "carol", "carol-secret");
    metadata_with(&addr, &carol).expect("carol after restart");
    let (ok, out, err) = strata_cli(&broker.bootstrap(), &["user", "delete", "carol"]);
    assert!(ok, "{out}{err}");
    refused(&addr, &carol, "carol deleted");
    let (_, out, _) = strata_cli(&broker.bootstrap(), &["user", "list"]);
    assert!(!out.contains("carol") && out.contains("dave"), "{out}");
}

/// GET `path` over HTTPS from `addr`, trusting `ca`; the status line and
/// the body.
fn https_get(addr: &str, ca: &Path, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    use tokio_rustls::rustls;
    let conn = rustls::ClientConnection::new(
        common::pki::tls_client_config(ca),
        "localhost".try_into().expect("name"),
    )
    .expect("client");
    let tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(TIMEOUT))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => {}
        // A peer that closes without close_notify after the body.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
        Err(e) => return Err(e),
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn the_admin_listener_serves_https_with_the_brokers_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::create(dir.path());
    let broker = Broker::builder()
        .args([
            "--listeners",
            "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0",
            "--admin-ssl",
            "true",
        ])
        .args(pki.broker_args())
        .start();
    let admin = broker.admin_addr();
    let deadline = Instant::now() + TIMEOUT;
    let ready = loop {
        let r = https_get(&admin, &pki.ca, "/ready").expect("https");
        if r.starts_with("HTTP/1.1 200") || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        ready.starts_with("HTTP/1.1 200") && ready.contains("ready"),
        "{ready}"
    );
    let metrics = https_get(&admin, &pki.ca, "/metrics").expect("https");
    assert!(
        metrics.contains("strata_tls_handshake_failures_total"),
        "{metrics}"
    );
    // Plain HTTP gets no answer, and the failed handshake is counted.
    let plain = std::panic::catch_unwind(|| common::http_get(&admin, "/health"));
    assert!(
        !matches!(&plain, Ok((200, _))),
        "plain HTTP was served: {plain:?}"
    );
    let metrics = https_get(&admin, &pki.ca, "/metrics").expect("https");
    let failures = metrics
        .lines()
        .find(|l| l.starts_with("strata_tls_handshake_failures_total"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("the counter");
    assert!(failures >= 1.0, "{metrics}");
    // A client that does not trust the broker's CA is refused.
    assert!(https_get(&admin, &pki.other_ca, "/health").is_err());
}
