//! Several brokers in one process: each owns its sync rounds, write-back
//! setting and counters, so cluster and simulation tests can run brokers
//! side by side in one test binary.

mod common;

use std::path::Path;

use common::clients::{self, TestRecord};
use common::{free_addr, http_get, wait_ready};
use strata::config::{BrokerConfig, ServeArgs};
use tokio_util::sync::CancellationToken;

struct InProcess {
    kafka: String,
    admin: String,
}

fn config(dir: &Path, writeback_bytes: u64) -> (BrokerConfig, InProcess) {
    let (kafka, admin) = (free_addr(), free_addr());
    let args = ServeArgs {
        data_dir: Some(dir.join("data")),
        listen: Some(kafka.clone()),
        admin_listen: Some(admin.clone()),
        tier_url: Some(format!("file://{}", dir.join("tier").display())),
        log_writeback_bytes: Some(writeback_bytes),
        ..ServeArgs::default()
    };
    std::fs::create_dir_all(dir.join("tier")).expect("tier dir");
    let config = BrokerConfig::load(args).expect("valid config");
    (config, InProcess { kafka, admin })
}

/// One sample of `/metrics` (0 when absent).
fn metric(admin: &str, name: &str) -> f64 {
    let (code, body) = http_get(admin, "/metrics");
    assert_eq!(code, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn two_brokers_in_one_process_keep_separate_durability() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // A starts write-back after every KiB appended; B never does.
    let (config_a, a) = config(dir_a.path(), 1024);
    let (config_b, b) = config(dir_b.path(), 0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let shutdown = CancellationToken::new();
    let serving: Vec<_> = [config_a, config_b]
        .into_iter()
        .map(|c| rt.spawn(strata::run::serve_until(c, shutdown.clone())))
        .collect();
    wait_ready(&a.admin);
    wait_ready(&b.admin);

    // acks=all on both: three partitions on A, one on B.
    clients::create_topic(&a.kafka, "on-a", 3, &[]);
    clients::create_topic(&b.kafka, "on-b", 1, &[]);
    let big = |p: i32| TestRecord::value(vec![b'x'; 4096]).in_partition(p);
    clients::produce(&a.kafka, "on-a", &[big(0), big(1), big(2)]);
    clients::produce(&b.kafka, "on-b", &[big(0), big(0)]);

    // Each broker's rounds count its own partitions, and only A started
    // write-back. A round may cover several of one broker's partitions, so
    // A counts at least three; B's partition was synced per request.
    let rounds = "strata_sync_round_partitions_total";
    let started = "strata_log_writeback_started_bytes_total";
    assert!(
        metric(&a.admin, rounds) >= 3.0,
        "A: {}",
        metric(&a.admin, rounds)
    );
    let b_rounds = metric(&b.admin, rounds);
    assert!((1.0..=2.0).contains(&b_rounds), "B: {b_rounds}");
    assert!(metric(&a.admin, started) >= 3.0 * 4096.0);
    assert_eq!(metric(&b.admin, started), 0.0);

    // B's records are on B only.
    assert_eq!(clients::watermarks(&b.kafka, "on-b", 0).1, 2);
    assert_eq!(clients::partition_count(&a.kafka, "on-b"), None);

    shutdown.cancel();
    for s in serving {
        rt.block_on(s)
            .expect("broker task")
            .expect("broker stopped cleanly");
    }
}
