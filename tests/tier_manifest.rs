//! Tier failures against the real broker. A lost or damaged manifest and a
//! local segment damaged before its upload, on a `file://` tier: the tier
//! is never read as empty, nothing is trimmed or collected, the partition
//! keeps its true log start and answers KAFKA_STORAGE_ERROR for tiered
//! offsets, and `strata tier repair` brings every record back. An object
//! store that refuses connections or stops answering (a fault proxy in
//! front of LocalStack): the broker starts and serves its local data, and
//! tiered fetches answer REQUEST_TIMED_OUT instead of empty data.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::clients::{self, TestRecord};
use common::raw::RawConn;
use common::Broker;

const RECORDS: usize = 6000;

fn value(i: usize) -> Vec<u8> {
    let mut v = format!("record-{i:06}-").into_bytes();
    v.resize(1000, b'a' + (i % 26) as u8);
    v
}

/// Names of the objects under a tier partition directory.
fn objects(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("tier partition dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

fn metric(broker: &Broker, name: &str) -> f64 {
    broker.metrics().get(name).copied().unwrap_or(0.0)
}

/// Waits until `f` holds, failing with `what` after 60 s.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for `n` more passes of the tier loop.
fn wait_passes(broker: &Broker, n: f64) {
    let start = metric(broker, "strata_tier_passes_total");
    wait_until("tier passes", || {
        metric(broker, "strata_tier_passes_total") >= start + n
    });
}

/// The error code of a Fetch of `topic`-0 at `offset`.
fn fetch_error(broker: &Broker, topic: &str, offset: i64) -> i16 {
    fetch_at(broker, topic, offset).0
}

/// A Fetch of `topic`-0 at `offset`: (error code, record bytes).
fn fetch_at(broker: &Broker, topic: &str, offset: i64) -> (i16, usize) {
    let mut c = RawConn::connect(&broker.bootstrap());
    let (code, records) = c.fetch(topic, &[(0, offset)], 1 << 20).remove(0);
    (code, records.len())
}

/// A topic of 1 MiB segments keeping 1 MiB locally, with `records` values
/// acknowledged (acks=all) in partition 0.
fn tiered_topic(broker: &Broker, prefix: &str, records: usize) -> String {
    let topic = common::topic_name(prefix);
    clients::create_topic(
        &broker.bootstrap(),
        &topic,
        1,
        &[
            ("segment.bytes", "1048576"),
            ("local.retention.bytes", "1048576"),
        ],
    );
    let producer = clients::producer(&broker.bootstrap(), &[("acks", "all")]);
    let records: Vec<TestRecord> = (0..records)
        .map(|i| TestRecord::value(value(i)).in_partition(0))
        .collect();
    clients::produce_all(&producer, &topic, &records);
    topic
}

fn tiered_broker(data: Option<&Path>, url: &str) -> Broker {
    let mut b = Broker::builder()
        .args(["--tier-interval-ms", "100", "--tier-url", url])
        .args(["--tier-orphan-grace-ms", "1"]);
    if let Some(d) = data {
        b = b.data_dir(d.to_path_buf());
    }
    b.start()
}

fn repair(data: &Path, url: &str, topic: &str) -> String {
    let out = std::process::Command::new(common::strata_bin())
        .args(["tier", "repair", topic, "--tier-url", url, "--data-dir"])
        .arg(data)
        .output()
        .expect("run strata tier repair");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "repair failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn consume_everything(broker: &Broker, topic: &str) {
    let got = clients::consume_ranges(
        &broker.bootstrap(),
        topic,
        &[(0, 0, RECORDS as i64)],
        clients::OP_TIMEOUT,
    );
    assert_eq!(got.len(), RECORDS);
    for (i, c) in got.iter().enumerate() {
        assert_eq!(c.offset, i as i64);
        assert_eq!(c.record.value.as_deref(), Some(&value(i)[..]), "offset {i}");
    }
}

#[test]
fn lost_or_damaged_manifest_never_loses_the_tier_and_repair_restores_it() {
    let tier = tempfile::tempdir().expect("tier dir");
    let url = format!("file://{}", tier.path().display());
    let mut broker = tiered_broker(None, &url);
    let data = broker.data_dir().to_path_buf();
    let topic = tiered_topic(&broker, "lostmanifest", RECORDS);
    let dir = common::tier_partition_dir(tier.path(), &topic);
    // Offloaded and trimmed: the first offsets are only in the tier.
    wait_until("the local log to be trimmed", || {
        let lag = format!("strata_tier_copy_lag_segments{{topic=\"{topic}\",partition=\"0\"}}");
        let start =
            format!("strata_partition_log_start_offset{{topic=\"{topic}\",partition=\"0\"}}");
        metric(&broker, &lag) == 0.0
            && {
                let (low, _) = clients::watermarks(&broker.bootstrap(), &topic, 0);
                low == 0 && metric(&broker, &start) == 0.0
            }
            && objects(&dir).len() > 20
    });
    broker.stop();
    let manifest = dir.join("manifest.json");

    for damage in ["delete", "flip", "truncate"] {
        let before = objects(&dir);
        let good = std::fs::read(&manifest).expect("manifest");
        match damage {
            "delete" => std::fs::remove_file(&manifest).expect("delete manifest"),
            "flip" => {
                let mut b = good.clone();
                let at = b.len() / 2;
                b[at] ^= 0x04;
                std::fs::write(&manifest, b).expect("damage manifest");
            }
            _ => std::fs::write(&manifest, &good[..good.len() / 2]).expect("truncate"),
        }
        let mut broker = tiered_broker(Some(&data), &url);
        broker.expect_error("tier manifest unusable");
        let gauge = if damage == "delete" {
            "strata_tier_manifests_missing"
        } else {
            "strata_tier_manifests_unreadable"
        };
        wait_until("the manifest gauge", || metric(&broker, gauge) == 1.0);
        // Orphan collection runs on the first pass: a few passes in, with a
        // grace of 1 ms, nothing of the tier has been touched.
        wait_passes(&broker, 3.0);
        let mut now = objects(&dir);
        now.retain(|n| n != "manifest.json");
        let mut expected = before.clone();
        expected.retain(|n| n != "manifest.json");
        assert_eq!(now, expected, "{damage}: tier objects changed");
        // The true log start, and an error for tiered offsets.
        let (low, high) = clients::watermarks(&broker.bootstrap(), &topic, 0);
        assert_eq!((low, high), (0, RECORDS as i64), "{damage}");
        assert_eq!(
            fetch_error(&broker, &topic, 0),
            56,
            "{damage}: KAFKA_STORAGE_ERROR"
        );
        let errors = broker.error_log_lines();
        assert!(
            errors
                .iter()
                .any(|l| l.contains("tier manifest unusable") && l.contains("manifest.json")),
            "{damage}: {errors:?}"
        );
        broker.stop();

        let report = repair(&data, &url, &topic);
        assert!(report.contains("repaired"), "{report}");
        let repaired = std::fs::read(&manifest).expect("repaired manifest");
        let json: serde_json::Value = serde_json::from_slice(&repaired).expect("json");
        assert_eq!(json["log_start_offset"], 0);

        let broker = tiered_broker(Some(&data), &url);
        wait_until("the manifest to be usable", || {
            metric(&broker, gauge) == 0.0 && fetch_error(&broker, &topic, 0) == 0
        });
        consume_everything(&broker, &topic);
        broker.assert_no_error_logs();
    }
}

#[test]
fn a_segment_damaged_before_upload_is_refused_and_the_tier_stops_there() {
    let tier = tempfile::tempdir().expect("tier dir");
    let url = format!("file://{}", tier.path().display());
    // One tier pass at start, then none for an hour, and no upload at the
    // clean stop: the segments stay local.
    let mut broker = Broker::builder()
        .args(["--tier-interval-ms", "3600000", "--tier-url", url.as_str()])
        .args(["--tier-shutdown-upload-timeout-ms", "0"])
        .start();
    let data = broker.data_dir().to_path_buf();
    let topic = tiered_topic(&broker, "bitrot", 3000);
    broker.stop();
    // Flip one byte in the middle of the second segment's records.
    let part_dir = data.join(format!("{topic}-0"));
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&part_dir)
        .expect("partition dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    assert!(logs.len() >= 3, "{logs:?}");
    let damaged = &logs[1];
    let mut bytes = std::fs::read(damaged).expect("segment");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(damaged, bytes).expect("damage");
    let damaged_base: i64 = damaged
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("base offset");

    let broker = Broker::builder()
        .data_dir(data.clone())
        .args(["--tier-interval-ms", "100", "--tier-url", url.as_str()])
        .expect_error("segment refused for upload")
        .start();
    wait_until("the refusal", || {
        metric(&broker, "strata_tier_segments_refused_total") >= 1.0
    });
    wait_passes(&broker, 3.0);
    let dir = common::tier_partition_dir(tier.path(), &topic);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest"))
            .expect("json");
    let segments = json["segments"].as_array().expect("segments");
    assert_eq!(
        segments.len(),
        1,
        "only the segment before the damage: {json}"
    );
    assert_eq!(segments[0]["last_offset"].as_i64(), Some(damaged_base - 1));
    // Nothing local was trimmed past what the tier holds.
    assert!(damaged.exists());
    let errors = broker.error_log_lines();
    assert!(
        errors
            .iter()
            .any(|l| l.contains("segment refused for upload")),
        "{errors:?}"
    );
}

/// A TCP proxy that can stop answering: while paused it forwards nothing in
/// either direction (connections stay open, as a hanging object store's).
struct FaultProxy {
    addr: String,
    paused: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    fn start(upstream: String) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("addr").to_string();
        let paused = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (paused.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ] {
                    let (Ok(from), Ok(to)) = (from, to) else {
                        continue;
                    };
                    let (p, s) = (p.clone(), s.clone());
                    std::thread::spawn(move || pump(from, to, &p, &s));
                }
            }
        });
        FaultProxy { addr, paused, stop }
    }

    fn pause(&self, on: bool) {
        self.paused.store(on, Ordering::Relaxed);
    }
}

/// Forwards `from` to `to` until either closes or the proxy stops; holds
/// everything while paused.
fn pump(mut from: TcpStream, mut to: TcpStream, paused: &AtomicBool, stop: &AtomicBool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = vec![0u8; 64 << 10];
    while !stop.load(Ordering::Relaxed) {
        if paused.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.paused.store(false, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn s3_broker(endpoint: &str, bucket: &str, extra: &[&str]) -> Broker {
    let builder = Broker::builder()
        .args(["--tier-interval-ms", "100"])
        .args(extra.iter().copied());
    common::s3::tiered_to(builder, endpoint, bucket).start()
}

/// An object store that refuses connections at start: the broker starts,
/// says so in /ready and the metrics, and serves its local data.
#[test]
fn the_broker_starts_and_serves_local_data_while_the_object_store_refuses() {
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let mut broker = s3_broker(&endpoint, "nowhere", &[]);
    broker.expect_error("tier is unusable");
    wait_until("ready", || broker.admin_get("/ready").0 == 200);
    let (status, body) = broker.admin_get("/ready");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("tier: unavailable"), "{body}");
    assert_eq!(metric(&broker, "strata_tier_available"), 0.0);
    let topic = common::topic_name("local-only");
    clients::create_topic(&broker.bootstrap(), &topic, 1, &[]);
    let records: Vec<TestRecord> = (0..100)
        .map(|i| TestRecord::value(value(i)).in_partition(0))
        .collect();
    clients::produce(&broker.bootstrap(), &topic, &records);
    let got = clients::consume_ranges(
        &broker.bootstrap(),
        &topic,
        &[(0, 0, 100)],
        clients::OP_TIMEOUT,
    );
    assert_eq!(got.len(), 100);
    assert!(
        broker
            .error_log_lines()
            .iter()
            .any(|l| l.contains("tier is unusable")),
        "{:?}",
        broker.error_log_lines()
    );
}

/// An object store that stops answering mid-way: fetches of tiered offsets
/// answer nothing for a while, then REQUEST_TIMED_OUT (which clients
/// report), and data again once the store answers.
#[test]
fn tiered_fetches_answer_request_timed_out_while_the_object_store_hangs() {
    let Some(endpoint) = common::s3::s3_endpoint() else {
        eprintln!("STRATA_SKIP_S3=1: skipping the LocalStack test");
        return;
    };
    let s3 = common::s3::s3_client(&endpoint);
    let bucket = common::s3::new_bucket(&s3);
    let upstream = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let proxy = FaultProxy::start(upstream);
    let broker = s3_broker(
        &format!("http://{}", proxy.addr),
        &bucket,
        &["--tier-read-timeout-ms", "2000"],
    );
    let topic = tiered_topic(&broker, "hang", 3000);
    let part_dir = broker.data_dir().join(format!("{topic}-0"));
    wait_until("the local log to be trimmed", || {
        std::fs::read_dir(&part_dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                    .count()
            })
            .unwrap_or(0)
            <= 2
    });
    proxy.pause(true);
    let mut empty_answers = 0;
    wait_until("REQUEST_TIMED_OUT", || {
        let (code, bytes) = fetch_at(&broker, &topic, 0);
        assert!(code == 0 || code == 7, "error {code}");
        if code == 0 {
            assert_eq!(bytes, 0, "no data while the store hangs");
            empty_answers += 1;
        }
        code == 7
    });
    assert!(empty_answers > 0, "answered empty first, within the wait");
    proxy.pause(false);
    wait_until("data again", || {
        let (code, bytes) = fetch_at(&broker, &topic, 0);
        code == 0 && bytes > 0
    });
    let got = clients::consume_ranges(
        &broker.bootstrap(),
        &topic,
        &[(0, 0, 3000)],
        clients::OP_TIMEOUT,
    );
    assert_eq!(got.len(), 3000);
}

/// `strata tier scrub` on the bucket, with the broker's tier settings.
fn scrub(data: &Path, url: &str, topic: &str) -> (bool, serde_json::Value) {
    let out = std::process::Command::new(common::strata_bin())
        .args([
            "tier",
            "scrub",
            topic,
            "--output",
            "json",
            "--tier-url",
            url,
        ])
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("run strata tier scrub");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "scrub printed no json ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

/// A flipped byte in a tiered segment whose local copy is gone, and
/// another in one the local log still holds: `strata tier scrub` reports
/// both (exit code 1), fetches of the first answer an error, never the
/// damaged bytes, and the broker's background scrub uploads the second
/// again from its local copy, after which it is clean.
#[test]
fn the_scrub_finds_damaged_tier_objects_and_reuploads_what_is_still_local() {
    let tier = tempfile::tempdir().expect("tier dir");
    let url = format!("file://{}", tier.path().display());
    let broker = Broker::builder()
        .args(["--tier-interval-ms", "100", "--tier-url", &url])
        .args(["--tier-scrub-interval-ms", "500"])
        .expect_error("tier scrub: a segment object is damaged")
        .expect_error("damaged tier segment has no local copy")
        .start();
    let data = broker.data_dir().to_path_buf();
    let topic = tiered_topic(&broker, "scrub", RECORDS);
    let dir = common::tier_partition_dir(tier.path(), &topic);
    let local_dir = data.join(format!("{topic}-0"));
    let local_bases = || -> Vec<i64> {
        let mut v: Vec<i64> = std::fs::read_dir(&local_dir)
            .expect("partition dir")
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                n.strip_suffix(".log")?.parse().ok()
            })
            .collect();
        v.sort_unstable();
        v
    };
    let manifest = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest"))
            .expect("json")
    };
    // Some tiered segments only in the tier, one still local too.
    wait_until("tiered segments, local and not", || {
        let m = manifest();
        let bases: Vec<i64> = m["segments"]
            .as_array()
            .map(|s| s.iter().filter_map(|s| s["base_offset"].as_i64()).collect())
            .unwrap_or_default();
        let local = local_bases();
        bases.len() >= 3 && bases.iter().any(|b| local.contains(b)) && local[0] > bases[0]
    });
    // Local retention must not take the local copy the scrub re-uploads
    // from: keep everything local from here on.
    clients::alter_topic_configs(
        &broker.bootstrap(),
        &topic,
        &[
            ("segment.bytes", "1048576"),
            ("local.retention.bytes", "1099511627776"),
        ],
    );
    wait_passes(&broker, 2.0);
    let m = manifest();
    let segments = m["segments"].as_array().expect("segments").clone();
    let local = local_bases();
    let gone = segments
        .iter()
        .find(|s| !local.contains(&s["base_offset"].as_i64().unwrap()))
        .expect("a segment only in the tier")
        .clone();
    let kept = segments
        .iter()
        .find(|s| local.contains(&s["base_offset"].as_i64().unwrap()))
        .expect("a segment also local")
        .clone();
    let flip = |seg: &serde_json::Value| {
        let name = seg["objects"]["log"]["name"].as_str().expect("log object");
        let path = dir.join(name);
        let mut b = std::fs::read(&path).expect("log object");
        let at = b.len() / 2;
        b[at] ^= 0x10;
        std::fs::write(&path, b).expect("damage");
        name.to_string()
    };
    let gone_name = flip(&gone);
    let kept_name = flip(&kept);

    // On demand, from the bucket alone.
    let (ok, report) = scrub(&data, &url, &topic);
    assert!(!ok, "a damaged tier exits non-zero: {report}");
    let problems = report["partitions"][0]["problems"]
        .as_array()
        .expect("problems")
        .clone();
    let named: Vec<&str> = problems
        .iter()
        .filter_map(|p| p["object"].as_str())
        .collect();
    assert!(named.contains(&gone_name.as_str()), "{report}");
    assert!(named.contains(&kept_name.as_str()), "{report}");

    // Never the damaged bytes: the damaged offsets answer an error.
    let offset = gone["base_offset"].as_i64().unwrap();
    let (code, _) = fetch_at(&broker, &topic, offset);
    assert_ne!(code, 0, "a fetch at {offset} of a damaged segment");

    // The background scrub uploads the local one again; the other stays
    // damaged, shown per partition.
    let damaged =
        format!("strata_tier_scrub_damaged_segments{{topic=\"{topic}\",partition=\"0\"}}");
    wait_until("a re-upload", || {
        metric(&broker, "strata_tier_scrub_reuploads_total") >= 1.0
            && metric(&broker, &damaged) == 1.0
    });
    let now = manifest();
    let replaced = now["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["base_offset"] == kept["base_offset"])
        .expect("the segment is still in the manifest");
    assert_eq!(replaced["last_offset"], kept["last_offset"]);
    assert_ne!(replaced["id"], kept["id"], "new objects");
    let (_, report) = scrub(&data, &url, &topic);
    let named: Vec<String> = report["partitions"][0]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["object"].as_str().map(String::from))
        .collect();
    assert_eq!(named, vec![gone_name], "{report}");
    // `strata tier status` shows what the broker's last scrub left damaged.
    let out = std::process::Command::new(common::strata_bin())
        .args([
            "tier",
            "status",
            &topic,
            "--output",
            "json",
            "-b",
            &broker.bootstrap(),
        ])
        .arg("--metrics")
        .arg(format!("http://{}/metrics", broker.admin_addr()))
        .output()
        .expect("strata tier status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(status[0]["scrub_damaged_segments"], 1.0, "{status}");
    drop(broker);
}
