//! kcat (Debian's, librdkafka 2.0.2) against the broker: metadata listing,
//! produce in every codec with keys from a file, consume back, headers.
//! kcat is required: `bash tests/run.sh` installs it.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::clients;
use common::{segments, Broker};

const KCAT_TIMEOUT: Duration = Duration::from_secs(90);

fn kcat_bin() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("kcat"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "kcat is not on PATH. It is required for these tests: run `bash tests/run.sh` \
                 (it installs kcat with apt-get) or `apt-get install -y kcat`."
            )
        })
}

struct Output {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

/// Run kcat with a timeout; stdin from `input` if given.
fn kcat(args: &[&str], input: Option<&Path>) -> Output {
    let mut cmd = Command::new(kcat_bin());
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    match input {
        Some(p) => cmd.stdin(std::fs::File::open(p).expect("open kcat input")),
        None => cmd.stdin(Stdio::null()),
    };
    let mut child = cmd.spawn().expect("spawn kcat");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + KCAT_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait kcat") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = t_err.join().unwrap_or_default();
            panic!("kcat {args:?} did not finish within {KCAT_TIMEOUT:?}; stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

fn ok(args: &[&str], input: Option<&Path>) -> String {
    let o = kcat(args, input);
    assert!(
        o.status.success(),
        "kcat {args:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        o.stdout,
        o.stderr
    );
    o.stdout
}

#[test]
fn kcat_metadata_list() {
    let broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = common::topic_name("kcat-list");
    clients::create_topic(&bs, &topic, 4, &[]);
    let out = ok(&["-b", &bs, "-m", "30", "-L"], None);
    let port = bs.rsplit(':').next().unwrap();
    assert!(out.contains(" brokers:"), "kcat -L output:\n{out}");
    assert!(
        out.contains(&format!("at 127.0.0.1:{port}")),
        "kcat -L does not list the broker at {bs}:\n{out}"
    );
    assert!(
        out.contains(&format!("topic \"{topic}\" with 4 partitions")),
        "kcat -L does not list {topic}:\n{out}"
    );
    broker.assert_no_error_logs();
}

#[test]
fn kcat_produce_consume_every_codec() {
    let broker = Broker::start();
    let bs = broker.bootstrap();
    let dir = tempfile::tempdir().unwrap();
    for (codec, id) in [
        ("none", 0),
        ("gzip", 1),
        ("snappy", 2),
        ("lz4", 3),
        ("zstd", 4),
    ] {
        // The topic is created implicitly by producing to it.
        let topic = common::topic_name(&format!("kcat-{codec}"));
        let lines: Vec<String> = (0..500)
            .map(|i| format!("key-{i}:value {i} {codec} {}", "abc".repeat(i % 40)))
            .collect();
        let file = dir.path().join(format!("{codec}.txt"));
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();

        let mut args = vec!["-b", &bs, "-m", "30", "-P", "-t", &topic, "-K:"];
        if codec != "none" {
            args.extend(["-z", codec]);
        }
        let file_s = file.to_str().unwrap();
        args.extend(["-l", file_s]);
        ok(&args, None);

        let out = ok(
            &[
                "-b",
                &bs,
                "-m",
                "30",
                "-q",
                "-C",
                "-t",
                &topic,
                "-e",
                "-o",
                "beginning",
                "-f",
                "%k:%s\\n",
            ],
            None,
        );
        let got: Vec<&str> = out.lines().collect();
        assert_eq!(
            got.len(),
            lines.len(),
            "{codec}: kcat consumed {} of {} lines",
            got.len(),
            lines.len()
        );
        for (i, (g, w)) in got.iter().zip(&lines).enumerate() {
            assert_eq!(g, w, "{codec}: line {i}");
        }

        // librdkafka 2.0.2 really compressed, and the broker kept it so.
        let batches = segments::partition_batches(broker.data_dir(), &topic, 0);
        assert!(!batches.is_empty(), "{codec}: no batches on disk");
        // (librdkafka may send a tiny batch uncompressed; ours are 500 lines.)
        assert!(
            batches
                .iter()
                .all(|b| b.compression() == id || (b.record_count < 20 && b.compression() == 0)),
            "{codec}: stored batches (records, codec) {:?}, want codec {id}",
            batches
                .iter()
                .map(|b| (b.record_count, b.compression()))
                .collect::<Vec<_>>()
        );
        let n = clients::partition_count(&bs, &topic);
        assert_eq!(n, Some(1), "{codec}: auto-created topic partitions");
    }
    broker.assert_no_error_logs();
}

#[test]
fn kcat_headers() {
    let broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = common::topic_name("kcat-headers");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.txt");
    std::fs::write(&file, "k1:v1\nk2:v2\nk3:v3\n").unwrap();
    ok(
        &[
            "-b",
            &bs,
            "-m",
            "30",
            "-P",
            "-t",
            &topic,
            "-K:",
            "-H",
            "trace=abc123",
            "-H",
            "source=kcat",
            "-z",
            "gzip",
            "-l",
            file.to_str().unwrap(),
        ],
        None,
    );
    let out = ok(
        &[
            "-b",
            &bs,
            "-m",
            "30",
            "-q",
            "-C",
            "-t",
            &topic,
            "-e",
            "-o",
            "beginning",
            "-f",
            "%k:%s|%h\\n",
        ],
        None,
    );
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(
        got,
        [
            "k1:v1|trace=abc123,source=kcat",
            "k2:v2|trace=abc123,source=kcat",
            "k3:v3|trace=abc123,source=kcat"
        ],
        "kcat consume with headers"
    );

    // The same headers, byte for byte, through rdkafka.
    let recs = clients::consume_ranges(&bs, &topic, &[(0, 0, 3)], clients::OP_TIMEOUT);
    for r in &recs {
        assert_eq!(
            r.record.headers,
            vec![
                ("trace".to_owned(), Some(b"abc123".to_vec())),
                ("source".to_owned(), Some(b"kcat".to_vec())),
            ]
        );
    }
    broker.assert_no_error_logs();
}

#[test]
fn kcat_over_sasl_ssl_and_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::pki::Pki::create(dir.path());
    let users = dir.path().join("users.toml");
    std::fs::write(&users, "[users]\nalice = \"alice-secret\"\n").unwrap();
    let broker = Broker::builder()
        .args([
            "--listeners",
            "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0,SASL_SSL://127.0.0.1:0",
            "--ssl-client-auth",
            "required",
            "--sasl-plain-users-file",
            users.to_str().unwrap(),
        ])
        .args(pki.broker_args())
        .start();
    let ca = pki.ca.display().to_string();
    let cert = format!("ssl.certificate.location={}", pki.client_cert.display());
    let key = format!("ssl.key.location={}", pki.client_key.display());
    let sasl_ssl = broker.listener("SASL_SSL");
    let login = |password: &str| -> Vec<String> {
        [
            "-b",
            &sasl_ssl,
            "-m",
            "30",
            "-X",
            "security.protocol=SASL_SSL",
            "-X",
            &format!("ssl.ca.location={ca}"),
            "-X",
            "sasl.mechanisms=PLAIN",
            "-X",
            "sasl.username=alice",
            "-X",
            &format!("sasl.password={password}"),
            // Client certificates are required on every TLS listener.
            "-X",
            &cert,
            "-X",
            &key,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let with = |base: &[String], more: &[&str]| -> Vec<String> {
        base.iter()
            .cloned()
            .chain(more.iter().map(|s| s.to_string()))
            .collect()
    };
    let topic = common::topic_name("kcat-sasl-ssl");
    clients::create_topic(&broker.bootstrap(), &topic, 1, &[]);
    let lines: Vec<String> = (0..300)
        .map(|i| format!("key-{i}:secure value {i} {}", "xyz".repeat(i % 50)))
        .collect();
    let file = dir.path().join("in.txt");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let good = login("alice-secret");
    let args = with(
        &good,
        &["-P", "-t", &topic, "-K:", "-l", file.to_str().unwrap()],
    );
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>(), None);
    let args = with(
        &good,
        &["-C", "-t", &topic, "-o", "beginning", "-e", "-f", "%k:%s\n"],
    );
    let out = ok(&args.iter().map(String::as_str).collect::<Vec<_>>(), None);
    assert_eq!(out.lines().collect::<Vec<_>>(), lines);
    // The SASL_SSL listener advertises itself.
    let args = with(&good, &["-L"]);
    let out = ok(&args.iter().map(String::as_str).collect::<Vec<_>>(), None);
    assert!(out.contains(&format!("at {sasl_ssl}")), "{out}");

    // A wrong password fails with an authentication error.
    let bad = with(&login("wrong"), &["-L", "-m", "5"]);
    let o = kcat(&bad.iter().map(String::as_str).collect::<Vec<_>>(), None);
    assert!(!o.status.success(), "kcat with a wrong password succeeded");
    assert!(
        o.stderr.contains("Authentication failed") || o.stderr.contains("SASL"),
        "{}",
        o.stderr
    );

    // The SSL listener requires a client certificate signed by the CA.
    let ssl = broker.listener("SSL");
    let base = [
        "-b",
        &ssl,
        "-m",
        "5",
        "-X",
        "security.protocol=SSL",
        "-X",
        &format!("ssl.ca.location={ca}"),
        "-L",
    ];
    assert!(!kcat(&base, None).status.success(), "no client certificate");
    let mut with_cert = base.to_vec();
    with_cert.extend(["-X", &cert, "-X", &key]);
    let out = ok(&with_cert, None);
    assert!(out.contains(&format!("at {ssl}")), "{out}");
    assert!(broker.logs().contains("TLS handshake failed"));
}

#[test]
fn kcat_over_sasl_plaintext_with_plain_and_both_scram_mechanisms() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    std::fs::write(&users, "[users]\nalice = \"alice-secret\"\n").unwrap();
    let broker = Broker::builder()
        .args([
            "--listeners",
            "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
            "--sasl-enabled-mechanisms",
            "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
            "--sasl-plain-users-file",
            users.to_str().unwrap(),
        ])
        .start();
    let created = Command::new(common::strata_bin())
        .args(["user", "create", "carol", "--password", "carol-secret"])
        .args(["--bootstrap", &broker.bootstrap()])
        .output()
        .expect("strata user create");
    assert!(created.status.success(), "{created:?}");
    let topic = common::topic_name("kcat-sasl");
    clients::create_topic(&broker.bootstrap(), &topic, 1, &[]);
    let addr = broker.listener("SASL_PLAINTEXT");
    let login = |mechanism: &str, user: &str, password: &str| -> Vec<String> {
        [
            "-b",
            &addr,
            "-m",
            "10",
            "-X",
            "security.protocol=SASL_PLAINTEXT",
            "-X",
            &format!("sasl.mechanisms={mechanism}"),
            "-X",
            &format!("sasl.username={user}"),
            "-X",
            &format!("sasl.password={password}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let input = dir.path().join("in.txt");
    for (mechanism, user, password) in [
        ("PLAIN", "alice", "alice-secret"),
        ("SCRAM-SHA-256", "carol", "carol-secret"),
        ("SCRAM-SHA-512", "carol", "carol-secret"),
    ] {
        std::fs::write(&input, format!("{mechanism}:by {user}\n")).unwrap();
        let mut args = login(mechanism, user, password);
        args.extend(["-P", "-t", &topic, "-K:", "-l", input.to_str().unwrap()].map(String::from));
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>(), None);
        let mut wrong = login(mechanism, user, "wrong");
        wrong.extend(["-L", "-m", "5"].map(String::from));
        let o = kcat(&wrong.iter().map(String::as_str).collect::<Vec<_>>(), None);
        assert!(
            !o.status.success(),
            "{mechanism}: a wrong password succeeded"
        );
    }
    let mut args = login("SCRAM-SHA-512", "carol", "carol-secret");
    args.extend(["-C", "-t", &topic, "-o", "beginning", "-e", "-f", "%k:%s\n"].map(String::from));
    let out = ok(&args.iter().map(String::as_str).collect::<Vec<_>>(), None);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "PLAIN:by alice",
            "SCRAM-SHA-256:by carol",
            "SCRAM-SHA-512:by carol"
        ]
    );
    assert!(broker.logs().contains("SASL authentication failed"));
}
