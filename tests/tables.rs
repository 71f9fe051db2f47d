//! Topics as tables on LocalStack S3: rdkafka produces keyed records with
//! headers to a `strata.table.enable` topic that tiers to S3; the Parquet
//! files under `tables/<topic>/` in the bucket hold exactly the produced
//! rows, each at the offset its producer was told. (pyarrow and DuckDB read
//! the `file://` tables in `tests/python/test_tables.py`.)

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::Array;
use common::clients::{self, TestRecord};
use common::Broker;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// (key, value, header count) by (partition, offset).
type Rows = BTreeMap<(i32, i64), (Option<Vec<u8>>, Option<Vec<u8>>, usize)>;

fn parquet_rows(body: bytes::Bytes, rows: &mut Rows) {
    let reader = ParquetRecordBatchReaderBuilder::try_new(body)
        .expect("a parquet file")
        .build()
        .expect("reader");
    for batch in reader {
        let batch = batch.expect("row batch");
        let partitions = batch.column(0).as_primitive::<Int32Type>();
        let offsets = batch.column(1).as_primitive::<Int64Type>();
        let keys = batch.column(4).as_binary::<i32>();
        let values = batch.column(5).as_binary::<i32>();
        let headers = batch.column(6).as_list::<i32>();
        for i in 0..batch.num_rows() {
            let bin = |a: &arrow_array::BinaryArray| (!a.is_null(i)).then(|| a.value(i).to_vec());
            let at = (partitions.value(i), offsets.value(i));
            let row = (bin(keys), bin(values), headers.value(i).len());
            assert!(rows.insert(at, row).is_none(), "offset {at:?} twice");
        }
    }
}

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
    for key in &keys {
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
    broker.assert_no_error_logs();
}
