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
