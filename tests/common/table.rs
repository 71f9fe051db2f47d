//! Reading the Parquet files of a table topic back.

use std::collections::BTreeMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::Array;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// (key, value, header count) by (partition, offset).
pub type Rows = BTreeMap<(i32, i64), (Option<Vec<u8>>, Option<Vec<u8>>, usize)>;

/// Adds the rows of one table file to `rows`; an offset met twice fails.
pub fn parquet_rows(body: bytes::Bytes, rows: &mut Rows) {
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

/// The data files of the current snapshot of the Iceberg table whose
/// directory is object `table` (`.../tables/<topic>`), as (location, row
/// count), read with the `iceberg` crate's spec types; empty before the
/// first commit. `get` reads an object by name (None when missing);
/// `root` is the location prefix of names (`s3://bucket/`, `file:///dir/`).
pub fn iceberg_files(
    get: &dyn Fn(&str) -> Option<bytes::Bytes>,
    root: &str,
    table: &str,
) -> BTreeMap<String, u64> {
    use iceberg::spec::{FormatVersion, Manifest, ManifestList, TableMetadata};
    let mut out = BTreeMap::new();
    let Some(version) = get(&format!("{table}/metadata/version-hint.text")) else {
        return out;
    };
    let version = String::from_utf8(version.to_vec()).expect("a utf-8 hint");
    let meta = get(&format!(
        "{table}/metadata/v{}.metadata.json",
        version.trim()
    ))
    .expect("the version the hint names");
    let meta: TableMetadata = serde_json::from_slice(&meta).expect("table metadata parses");
    let Some(snapshot) = meta.current_snapshot() else {
        return out;
    };
    let name = |uri: &str| -> String {
        uri.strip_prefix(root)
            .unwrap_or_else(|| panic!("{uri} is not under {root}"))
            .to_string()
    };
    let list = get(&name(snapshot.manifest_list())).expect("the manifest list");
    let list = ManifestList::parse_with_version(&list, FormatVersion::V2).expect("manifest list");
    for m in list.entries() {
        let body = get(&name(&m.manifest_path)).expect("a manifest");
        let manifest = Manifest::parse_avro(&body).expect("manifest");
        for e in manifest.entries().iter().filter(|e| e.is_alive()) {
            let again = out.insert(e.file_path().to_string(), e.record_count());
            assert!(again.is_none(), "{} twice", e.file_path());
        }
    }
    out
}
