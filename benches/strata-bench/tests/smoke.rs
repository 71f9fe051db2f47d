//! Smoke test: `strata-bench --quick` against a broker it starts itself
//! (target/debug/strata, built by `cargo build --workspace`) completes and
//! writes JSON with every expected figure. Never asserts on timings. With
//! `STRATA_TEST_S3_ENDPOINT` set (tests/run.sh starts LocalStack) the
//! s3:// tier runs too.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn strata_bin() -> PathBuf {
    // target/<profile>/deps/smoke-<hash> -> target/<profile>/strata
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>")
        .join("strata");
    assert!(
        bin.is_file(),
        "{} is missing: build it first (cargo build --workspace)",
        bin.display()
    );
    bin
}

fn number(v: &Value, path: &str) -> f64 {
    let mut cur = v;
    for k in path.split('.') {
        cur = &cur[k];
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number: {cur}"))
}

#[test]
fn quick_run_writes_every_figure() {
    let dir = std::env::temp_dir().join(format!("strata-bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("work dir");
    let json_path = dir.join("bench.json");
    let s3 = std::env::var("STRATA_TEST_S3_ENDPOINT")
        .ok()
        .filter(|s| !s.is_empty());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata-bench"));
    cmd.arg("--quick")
        .arg("--strata-bin")
        .arg(strata_bin())
        .arg("--json")
        .arg(&json_path)
        .arg("--work-dir")
        .arg(&dir);
    if let Some(endpoint) = &s3 {
        cmd.args(["--s3-endpoint", endpoint]);
    }
    let out = cmd.output().expect("run strata-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "strata-bench failed\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for heading in [
        "Produce at maximum throughput",
        "Consume",
        "End to end",
        "Targets",
    ] {
        assert!(stdout.contains(heading), "no {heading:?} table:\n{stdout}");
    }

    let v: Value =
        serde_json::from_slice(&std::fs::read(&json_path).expect("json file")).expect("valid JSON");
    let produce = v["produce"].as_array().expect("produce runs");
    assert_eq!(produce.len(), 12, "3 sizes x 2 acks x 2 partition counts");
    for r in produce {
        for k in [
            "records_per_sec",
            "mb_per_sec",
            "latency.p50_ms",
            "latency.p99_ms",
            "latency.p999_ms",
        ] {
            number(r, k);
        }
    }
    let e2e = v["e2e"].as_array().expect("end-to-end runs");
    assert_eq!(e2e.len(), 2, "acks=1 and acks=all");
    for r in e2e {
        for k in [
            "e2e_latency.p99_ms",
            "produce.latency.p99_ms",
            "target_records_per_sec",
        ] {
            number(r, k);
        }
    }
    for k in [
        "references.fdatasync_4kib_latency.p99_ms",
        "consume.hot.mb_per_sec",
        "consume.file.first_read.mb_per_sec",
        "consume.file.warm.mb_per_sec",
        "consume.file.cold.mb_per_sec",
        "consume.file.cold_broker_peak_rss_bytes",
        "references.loopback_tcp.mb_per_sec",
        "references.loopback_sendfile.mb_per_sec",
        "references.consume_mock_broker.mb_per_sec",
        "references.disk_fdatasync_1mib.mb_per_sec",
        "references.disk_fdatasync_end.mb_per_sec",
        "references.file_tier_reads.mb_per_sec",
        "rss.file_broker_peak_bytes",
    ] {
        number(&v, k);
    }
    if s3.is_some() {
        number(&v, "consume.s3.cold.mb_per_sec");
        number(&v, "references.s3_ranged_gets.mb_per_sec");
    }
    let targets = v["targets"].as_array().expect("targets");
    assert!(targets.len() >= 5, "{targets:?}");
    for t in targets {
        number(t, "ratio");
        assert!(t["name"].is_string());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `strata-bench --quick` with `args` against a broker it starts,
/// in a work dir named after `name`; returns its stdout and JSON report
/// (the work dir removed).
fn run_quick(name: &str, args: &[&str]) -> (String, Value) {
    let dir =
        std::env::temp_dir().join(format!("strata-bench-smoke-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("work dir");
    let json_path = dir.join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_strata-bench"))
        .arg("--quick")
        .args(args)
        .arg("--strata-bin")
        .arg(strata_bin())
        .arg("--json")
        .arg(&json_path)
        .arg("--work-dir")
        .arg(&dir)
        .output()
        .expect("run strata-bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "strata-bench {args:?} failed\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value =
        serde_json::from_slice(&std::fs::read(&json_path).expect("json file")).expect("valid JSON");
    let _ = std::fs::remove_dir_all(&dir);
    (stdout, v)
}

#[test]
fn quick_cluster_run_compares_replication_factors() {
    let (stdout, v) = run_quick("cluster", &["--brokers", "3"]);
    assert!(stdout.contains("## Replication: 3 brokers"), "{stdout}");
    let runs = v["replication"].as_array().expect("replication runs");
    let mut got: Vec<(String, i64)> = runs
        .iter()
        .map(|r| {
            number(r, "mb_per_sec");
            number(r, "latency.p99_ms");
            (
                r["acks"].as_str().expect("acks").to_string(),
                r["replication_factor"].as_i64().expect("factor"),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("1".to_string(), 1),
            ("1".to_string(), 3),
            ("all".to_string(), 1),
            ("all".to_string(), 3)
        ]
    );
    for acks in ["1", "all"] {
        number(&v["overhead"][acks], "mb_per_sec_ratio");
        number(&v["overhead"][acks], "p99_ratio");
    }
}

#[test]
fn quick_tls_run_compares_ssl_with_plaintext() {
    let (stdout, v) = run_quick("tls", &["--tls"]);
    assert!(stdout.contains("## TLS against PLAINTEXT"), "{stdout}");
    let runs = v["tls"].as_array().expect("tls runs");
    for listener in ["PLAINTEXT", "SSL"] {
        for workload in ["hot consume", "produce acks=1"] {
            let n = runs
                .iter()
                .filter(|r| r["listener"] == listener && r["workload"] == workload)
                .inspect(|r| {
                    number(r, "mb_per_sec");
                })
                .count();
            assert_eq!(n, 2, "{listener} {workload}: {runs:?}");
        }
    }
    number(&v["ssl_over_plaintext"], "hot consume");
    number(&v["ssl_over_plaintext"], "produce acks=1");
}

#[test]
fn quick_compaction_run_measures_the_cleaner() {
    let (stdout, v) = run_quick("compaction", &["--compaction"]);
    assert!(stdout.contains("## Log cleaner"), "{stdout}");
    number(&v, "cleaner_mb_per_sec");
    number(&v, "disk_copy_mb_per_sec");
    // Updates over 10,000 keys: the cleaned log is a fraction of the dirty one.
    assert!(
        number(&v, "cleaned_bytes") < number(&v, "dirty_bytes"),
        "{v}"
    );
    let runs = v["produce"].as_array().expect("produce runs");
    assert_eq!(runs.len(), 6, "3 kinds x 2 rounds: {runs:?}");
    number(&v, "produce_compact_over_delete");
    number(&v, "produce_compact_idle_over_delete");
}

#[test]
fn quick_raw_run_sets_each_driver_beside_its_reference() {
    let (stdout, v) = run_quick("raw", &["--raw"]);
    assert!(stdout.contains("## Raw protocol drivers"), "{stdout}");
    let ratios = v["ratios"].as_array().expect("ratios");
    let names: Vec<&str> = ratios
        .iter()
        .map(|r| {
            number(r, "value");
            number(r, "reference");
            number(r, "ratio");
            r["name"].as_str().expect("name")
        })
        .collect();
    for want in [
        "raw hot fetch",
        "raw produce acks=1",
        "raw produce acks=all",
        "librdkafka consumer",
    ] {
        assert!(names.contains(&want), "{want} missing: {names:?}");
    }
    let rounds = v["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 3, "{rounds:?}");
    for r in rounds {
        for driver in ["produce_acks_1", "produce_acks_all", "fetch"] {
            assert!(number(&r[driver], "bytes") > 0.0, "{driver}: {r}");
            assert!(number(&r[driver], "requests") > 0.0, "{driver}: {r}");
            number(&r[driver], "request_latency.p99_ms");
        }
        // The fetch driver reads back at least what acks=1 wrote.
        assert!(
            number(&r["fetch"], "bytes") >= number(&r["produce_acks_1"], "bytes"),
            "{r}"
        );
        // acks=all paced at half the round's maximum, with the broker's
        // histograms over it and the disk's group commit at that rate.
        let paced = &r["produce_acks_all_paced"];
        assert!(number(paced, "driver.bytes") > 0.0, "{paced}");
        let asked = number(paced, "rate_mb_per_sec");
        let max = number(&r["produce_acks_all"], "mb_per_sec");
        assert!(asked > 0.0 && asked <= max * 0.5 + 1e-9, "{asked} of {max}");
        assert!(
            number(paced, "broker.produce_request.samples") > 0.0,
            "{paced}"
        );
        assert!(number(paced, "broker.sync_round.samples") > 0.0, "{paced}");
        assert!(
            number(paced, "disk_group_commit_latency.p99_ms") > 0.0,
            "{paced}"
        );
    }
    let tail = ratios
        .iter()
        .find(|r| {
            r["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("raw produce acks=all p99"))
        })
        .expect("the acks=all tail ratio");
    assert_eq!(tail["unit"], "ms", "{tail}");
    assert_eq!(tail["target"], "<= 2", "{tail}");
}

#[test]
fn quick_partition_scaling_run_measures_each_count() {
    let (stdout, v) = run_quick(
        "partitions",
        &["--partition-scaling", "--partition-counts", "4,40"],
    );
    assert!(stdout.contains("## Partition scaling"), "{stdout}");
    let scales = v["scales"].as_array().expect("scales");
    let counts: Vec<i64> = scales
        .iter()
        .map(|s| {
            for figure in [
                "create_seconds",
                "rss_bytes_per_partition",
                "fds_per_partition",
                "produce_p99_ms",
                "mock_broker_produce_p99_ms",
                "clean_stop_seconds",
                "ready_after_stop_seconds",
                "ready_after_kill_seconds",
            ] {
                assert!(number(s, figure) >= 0.0, "{figure}: {s}");
            }
            assert!(number(s, "produce_mb_per_sec") > 0.0, "{s}");
            // Every partition's active segment was written to.
            let partitions = number(s, "partitions");
            assert!(number(s, "open_segment_files") >= partitions, "{s}");
            s["partitions"].as_i64().expect("partitions")
        })
        .collect();
    assert_eq!(counts, vec![4, 40]);
}

#[test]
fn quick_long_replay_reads_the_set_from_the_tier_alone() {
    let s3 = std::env::var("STRATA_TEST_S3_ENDPOINT")
        .ok()
        .filter(|s| !s.is_empty());
    let mut args = vec!["--long-replay"];
    if let Some(endpoint) = &s3 {
        args.extend(["--s3-endpoint", endpoint]);
    }
    let (stdout, v) = run_quick("replay", &args);
    assert!(stdout.contains("## Long replay from the tier"), "{stdout}");
    let tiers = v["tiers"].as_array().expect("tiers");
    let backends: Vec<&str> = tiers
        .iter()
        .map(|t| t["backend"].as_str().expect("backend"))
        .collect();
    let want: &[&str] = if s3.is_some() {
        &["file", "s3"]
    } else {
        &["file"]
    };
    assert_eq!(backends, want, "{v}");
    for t in tiers {
        let r = &t["replay"];
        // The whole quick set (16 MiB) came back cold, through GETs.
        assert!(number(r, "cold.bytes") >= (16 << 20) as f64, "{r}");
        assert!(number(r, "cold_gets") > 0.0, "{r}");
        assert!(number(r, "raw_reads.mb_per_sec") > 0.0, "{r}");
        number(r, "cold_broker_peak_rss_bytes");
    }
    let names: Vec<&str> = v["ratios"]
        .as_array()
        .expect("ratios")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert!(names.contains(&"cold replay (file)"), "{names:?}");
}

/// A broker process the test started; killed when dropped.
struct Peer(std::process::Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts another Strata as the peer (any Kafka-compatible broker would
/// do) on a fresh data dir; returns it and its Kafka address.
fn start_peer(dir: &std::path::Path) -> (Peer, String) {
    use std::io::BufRead;
    let mut child = Command::new(strata_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the peer");
    let stdout = child.stdout.take().expect("stdout");
    let peer = Peer(child);
    let mut lines = std::io::BufReader::new(stdout).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("kafka listener bound to ")
                .map(str::to_string)
        })
        .expect("the peer's Kafka address");
    // Keep reading its stdout so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (peer, addr)
}

#[test]
fn quick_raw_run_against_a_peer_gives_ratios_of_its_figures() {
    let dir = tempfile_dir("peer");
    let (_peer, addr) = start_peer(&dir);
    let (stdout, v) = run_quick("raw-peer", &["--raw", "--peer", &format!("other={addr}")]);
    assert!(stdout.contains("## Strata against other"), "{stdout}");
    assert_eq!(v["peer"]["name"], "other", "{}", v["peer"]);
    let ratios = v["peer"]["ratios"].as_array().expect("peer ratios");
    let names: Vec<&str> = ratios
        .iter()
        .map(|r| {
            assert!(number(r, "value") > 0.0, "{r}");
            assert!(number(r, "reference") > 0.0, "{r}");
            assert_eq!(r["reference_name"], "other", "{r}");
            r["name"].as_str().expect("name")
        })
        .collect();
    for want in [
        "raw produce acks=1",
        "raw produce acks=all",
        "raw fetch",
        "librdkafka consumer",
    ] {
        assert!(names.contains(&want), "{want} missing: {names:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "strata-bench-smoke-{name}-data-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("peer data dir");
    dir
}
