//! Topics as tables on LocalStack S3: rdkafka produces keyed records with
//! headers to a `strata.table.enable` topic that tiers to S3; the Parquet
//! files under `tables/<topic>/` in the bucket hold exactly the produced
//! rows, each at the offset its producer was told. (pyarrow and DuckDB read
//! the `file://` tables in `tests/python/test_tables.py`.)

mod common;

use std::time::{Duration, Instant};

use common::clients::{self, TestRecord};
use common::table::{iceberg_files, parquet_rows, Rows};
use common::Broker;

#[test]
fn a_table_topic_on_s3_holds_exactly_the_produced_rows() {
    let Some(endpoint) = common::s3::s3_endpoint() else {
        eprintln!("STRATA_SKIP_S3=1: skipping the LocalStack test");
        return;
    };
    let s3 = common::s3::s3_client(&endpoint);
    let bucket = common::s3::new_bucket(&s3);
    let broker = common::s3::tiered_to(Broker::builder(), &endpoint, &bucket)
        .args(["--tier-interval-ms", "200"])
        .args(["--log-retention-check-interval-ms", "200"])
        .start();
    let bs = broker.bootstrap();
    let topic = common::topic_name("table");
    clients::create_topic(
        &bs,
        &topic,
        2,
        &[
            ("strata.table.enable", "true"),
            ("segment.bytes", "65536"),
            ("segment.ms", "500"),
        ],
    );
    let records: Vec<TestRecord> = (0..2000)
        .map(|i| {
            let mut r = TestRecord::keyed(format!("k{}", i % 37), format!("{{\"id\":{i}}}"));
            r.headers = vec![
                ("source".into(), Some(b"it".to_vec())),
                ("seq".into(), Some(i.to_string().into_bytes())),
            ];
            if i % 40 == 0 {
                r.value = None;
            }
            r
        })
        .collect();
    let producer = clients::producer(&bs, &[("linger.ms", "5")]);
    let at = clients::produce_all(&producer, &topic, &records);
    let want: Rows = at
        .iter()
        .zip(&records)
        .map(|(&at, r)| (at, (r.key.clone(), r.value.clone(), r.headers.len())))
        .collect();

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rows = broker
            .metrics()
            .get("strata_table_export_rows_total")
            .copied()
            .unwrap_or(0.0);
        if rows >= records.len() as f64 {
            break;
        }
        assert!(Instant::now() < deadline, "{rows} rows exported");
        std::thread::sleep(Duration::from_millis(200));
    }
    let prefix = format!("strata/tables/{topic}/");
    let keys = common::s3::list_keys(&s3, &bucket, &prefix);
    assert!(!keys.is_empty(), "no table files under {prefix}");
    let mut got = Rows::new();
    let checkpoints = keys.iter().filter(|k| k.contains("/_strata/")).count();
    assert_eq!(checkpoints, 2, "a checkpoint per partition: {keys:?}");
    for key in keys
        .iter()
        .filter(|k| !k.contains("/_strata/") && !k.contains("/metadata/"))
    {
        let rest = key.strip_prefix(&prefix).expect("under the prefix");
        let parts: Vec<&str> = rest.split('/').collect();
        assert!(
            parts.len() == 3
                && parts[0].starts_with("dt=")
                && parts[1].starts_with("partition=")
                && parts[2].ends_with(".parquet"),
            "{key}"
        );
        parquet_rows(common::s3::get_bytes(&s3, &bucket, key), &mut got);
    }
    assert_eq!(got.len(), want.len());
    assert!(
        got == want,
        "the table's rows differ from the produced ones"
    );

    // The Iceberg metadata in the bucket names every file once, at its
    // s3:// location, with its row count.
    let parquet: Vec<&String> = keys.iter().filter(|k| k.ends_with(".parquet")).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let files = loop {
        let get = |key: &str| common::s3::try_get_bytes(&s3, &bucket, key);
        let table = prefix.trim_end_matches('/');
        let files = iceberg_files(&get, &format!("s3://{bucket}/"), table);
        if files.len() == parquet.len() {
            break files;
        }
        assert!(Instant::now() < deadline, "iceberg names {files:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut total = 0;
    for key in parquet {
        let rows = files
            .get(&format!("s3://{bucket}/{key}"))
            .unwrap_or_else(|| panic!("{key} not in the iceberg table: {files:?}"));
        let mut one = Rows::new();
        parquet_rows(common::s3::get_bytes(&s3, &bucket, key), &mut one);
        assert_eq!(*rows, one.len() as u64, "{key}");
        total += rows;
    }
    assert_eq!(total, records.len() as u64);
    broker.assert_no_error_logs();
}
