//! Topics as tables: the records of an uploaded segment written as Parquet
//! beside the tier, so that DuckDB, pyarrow, Spark and other engines read
//! a topic's history without a Kafka consumer.
//!
//! # Layout
//!
//! `<tier prefix>/tables/<topic>/dt=YYYY-MM-DD/partition=N/<from:020>-<to:020>.parquet`
//! (Hive-style): one file per exported offset range `[from, to)` and UTC
//! day of its records' timestamps (a range that spans midnight gives two
//! files of the same name under two days). Names are deterministic, so
//! exporting a range again (after a crash) overwrites its files with the
//! same rows.
//!
//! Progress is the partition's [`Checkpoint`], an object in the store
//! beside the files (`tables/<topic>/_strata/partition=N.json`; engines
//! skip directories that begin with `_`): every file of a range whose `to`
//! is at most its `exported_to` is complete. A file with `from` at or after
//! it is left over from an export that did not finish and is removed before
//! the export goes on (see `broker::table_export`), so after a crash or a
//! leader change (whose segments end at other offsets) the table never
//! holds an offset twice.
//!
//! # Columns
//!
//! `partition` (int32), `offset` (int64), `timestamp` (timestamp ms, UTC),
//! `timestamp_type` (`CreateTime` or `LogAppendTime`), `key` and `value`
//! (binary, null for a null key or value), `headers` (list of
//! `{key: utf8, value: binary}`, in the record's order, headers that share
//! a key each kept: records are read with `log::batch::stored_records`),
//! `producer_id` (int64, -1 without one).
//! Control batches are not rows.
//!
//! With `strata.table.value.format=json`, each value is also parsed as a
//! JSON object and its fields projected into the typed columns of
//! `strata.table.value.schema` (`crate::config::table_schema`), after the
//! fixed ones, plus `value_error` (utf8): null when the value matched, else
//! why not (not JSON, not an object, a field of another type). A field that
//! does not match is null in its row; a missing field is null without an
//! error; the export never stops on a value. Files are zstd-compressed, with row groups
//! of at most [`ROW_GROUP_ROWS`] rows and page statistics, so engines skip by
//! offset and time.
//!
//! # Memory
//!
//! A segment is read batch by batch; rows are handed to the Parquet writer
//! every [`FLUSH_ROWS`] rows or [`FLUSH_BYTES`] bytes, and a row group is
//! closed once it reaches [`ROW_GROUP_BYTES`].

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, ListBuilder,
    StringBuilder, StructBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::config::table_schema::{FieldType, ValueSchema};
use crate::log::batch::stored_records;
use crate::log::{file_batches, LogError};

/// The partition file holding a copy of the checkpoint's `exported_to`, for
/// local retention (which keeps a table topic's segments until exported).
pub const CHECKPOINT_FILE: &str = "table-export-checkpoint";

/// The local copy of the offset up to which the partition in `dir` is
/// exported; None before the first export.
pub fn exported_to(dir: &Path) -> Option<i64> {
    std::fs::read_to_string(dir.join(CHECKPOINT_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub use tiering::TABLES_DIR;

pub mod iceberg;

/// Most rows in one row group.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;
/// A row group is closed once its size reaches this.
pub const ROW_GROUP_BYTES: usize = 64 << 20;
/// Rows handed to the writer at a time.
pub const FLUSH_ROWS: usize = 8192;
/// Key and value bytes handed to the writer at a time.
pub const FLUSH_BYTES: usize = 8 << 20;

/// Errors of an export.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("table export: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("table export: {path} is damaged at byte {position}: {message}")]
    Damaged {
        path: String,
        position: u64,
        message: String,
    },
    #[error("table export: writing parquet {path}: {source}")]
    Parquet {
        path: String,
        source: parquet::errors::ParquetError,
    },
    #[error("table export: building rows: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

impl From<LogError> for TableError {
    /// A segment that does not read as whole batches is damaged; a read
    /// that fails is I/O.
    fn from(e: LogError) -> Self {
        match e {
            LogError::Corrupt {
                path,
                position,
                source,
            } => TableError::Damaged {
                path: path.display().to_string(),
                position,
                message: source.to_string(),
            },
            LogError::Io { op, path, source } => TableError::Io {
                op,
                path: path.display().to_string(),
                source,
            },
            other => TableError::Io {
                op: "read",
                path: String::new(),
                source: std::io::Error::other(other.to_string()),
            },
        }
    }
}

/// A partition's export progress, kept in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// The first offset the export took (a backfill adds the history
    /// before it).
    pub start: i64,
    /// Every offset below this is in the table.
    pub exported_to: i64,
}

/// The object name of `topic`'s `partition`'s [`Checkpoint`].
pub fn checkpoint_name(topic: &str, partition: i32) -> String {
    format!("{TABLES_DIR}/{topic}/_strata/partition={partition}.json")
}

/// The directory of `topic`'s table.
pub fn table_dir(topic: &str) -> String {
    format!("{TABLES_DIR}/{topic}")
}

/// A table file named by [`object_name`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName {
    pub date: String,
    pub partition: i32,
    pub from: i64,
    pub to: i64,
}

impl FileName {
    /// Parses an object name of `topic`'s table; None for any other name.
    pub fn parse(topic: &str, name: &str) -> Option<FileName> {
        let rest = name.strip_prefix(&table_dir(topic))?.strip_prefix("/dt=")?;
        let (date, rest) = rest.split_once("/partition=")?;
        let (partition, file) = rest.split_once('/')?;
        let (from, to) = file.strip_suffix(".parquet")?.split_once('-')?;
        Some(FileName {
            date: date.to_string(),
            partition: partition.parse().ok()?,
            from: from.parse().ok()?,
            to: to.parse().ok()?,
        })
    }

    /// The first millisecond after the file's day.
    pub fn day_end_ms(&self) -> Option<i64> {
        let mut parts = self.date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
        let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
        Some((days_from_civil(y, m, d) + 1) * 86_400_000)
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One Parquet file an export wrote.
#[derive(Debug, Clone)]
pub struct TableFile {
    /// Object name under the tier prefix.
    pub name: String,
    /// The local file.
    pub path: PathBuf,
    pub rows: u64,
}

/// The schema of a table's files: the fixed columns, then with a value
/// schema its typed columns and `value_error`.
pub fn schema(value: Option<&ValueSchema>) -> SchemaRef {
    let mut fields = vec![
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("timestamp_type", DataType::Utf8, false),
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, true),
        Field::new(
            "headers",
            DataType::List(Arc::new(Field::new(
                "item",
                DataType::Struct(header_fields()),
                true,
            ))),
            false,
        ),
        Field::new("producer_id", DataType::Int64, false),
    ];
    if let Some(value) = value {
        for (name, ty) in &value.fields {
            fields.push(Field::new(name, arrow_type(*ty), true));
        }
        fields.push(Field::new("value_error", DataType::Utf8, true));
    }
    Arc::new(Schema::new(fields))
}

fn arrow_type(ty: FieldType) -> DataType {
    match ty {
        FieldType::Boolean => DataType::Boolean,
        FieldType::Int32 => DataType::Int32,
        FieldType::Int64 => DataType::Int64,
        FieldType::Float64 => DataType::Float64,
        FieldType::Utf8 => DataType::Utf8,
        FieldType::TimestampMs => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
    }
}

/// The builder of one typed column.
enum Typed {
    Boolean(BooleanBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Utf8(StringBuilder),
    TimestampMs(TimestampMillisecondBuilder),
}

impl Typed {
    fn new(ty: FieldType) -> Typed {
        match ty {
            FieldType::Boolean => Typed::Boolean(BooleanBuilder::new()),
            FieldType::Int32 => Typed::Int32(Int32Builder::new()),
            FieldType::Int64 => Typed::Int64(Int64Builder::new()),
            FieldType::Float64 => Typed::Float64(Float64Builder::new()),
            FieldType::Utf8 => Typed::Utf8(StringBuilder::new()),
            FieldType::TimestampMs => {
                Typed::TimestampMs(TimestampMillisecondBuilder::new().with_timezone("UTC"))
            }
        }
    }

    fn append_null(&mut self) {
        match self {
            Typed::Boolean(b) => b.append_null(),
            Typed::Int32(b) => b.append_null(),
            Typed::Int64(b) => b.append_null(),
            Typed::Float64(b) => b.append_null(),
            Typed::Utf8(b) => b.append_null(),
            Typed::TimestampMs(b) => b.append_null(),
        }
    }

    /// Appends `v` if it has the column's type (JSON null counts); false,
    /// with a null appended, when it does not.
    fn append(&mut self, v: &serde_json::Value) -> bool {
        use serde_json::Value as J;
        match (self, v) {
            (b, J::Null) => {
                b.append_null();
                return true;
            }
            (Typed::Boolean(b), J::Bool(x)) => b.append_value(*x),
            (Typed::Int32(b), J::Number(n))
                if n.as_i64().and_then(|x| i32::try_from(x).ok()).is_some() =>
            {
                b.append_value(n.as_i64().unwrap_or_default() as i32)
            }
            (Typed::Int64(b), J::Number(n)) if n.as_i64().is_some() => {
                b.append_value(n.as_i64().unwrap_or_default())
            }
            (Typed::Float64(b), J::Number(n)) if n.as_f64().is_some() => {
                b.append_value(n.as_f64().unwrap_or_default())
            }
            (Typed::Utf8(b), J::String(x)) => b.append_value(x),
            (Typed::TimestampMs(b), J::Number(n)) if n.as_i64().is_some() => {
                b.append_value(n.as_i64().unwrap_or_default())
            }
            (b, _) => {
                b.append_null();
                return false;
            }
        }
        true
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Typed::Boolean(b) => Arc::new(b.finish()),
            Typed::Int32(b) => Arc::new(b.finish()),
            Typed::Int64(b) => Arc::new(b.finish()),
            Typed::Float64(b) => Arc::new(b.finish()),
            Typed::Utf8(b) => Arc::new(b.finish()),
            Typed::TimestampMs(b) => Arc::new(TimestampMillisecondBuilder::finish(b)),
        }
    }
}

/// The typed columns of a value schema and the error column.
struct Projection {
    schema: Arc<ValueSchema>,
    columns: Vec<Typed>,
    error: StringBuilder,
}

impl Projection {
    fn new(schema: Arc<ValueSchema>) -> Projection {
        Projection {
            columns: schema.fields.iter().map(|(_, t)| Typed::new(*t)).collect(),
            schema,
            error: StringBuilder::new(),
        }
    }

    /// Projects one record's value into the typed columns.
    fn append(&mut self, value: Option<&[u8]>) {
        let fail = |p: &mut Projection, why: String| {
            p.columns.iter_mut().for_each(Typed::append_null);
            p.error.append_value(why);
        };
        let Some(bytes) = value else {
            self.columns.iter_mut().for_each(Typed::append_null);
            self.error.append_null();
            return;
        };
        let map = match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(other) => return fail(self, format!("not a JSON object: {}", json_kind(&other))),
            Err(e) => return fail(self, format!("not JSON: {e}")),
        };
        let mut error = None;
        for ((name, ty), column) in self.schema.fields.iter().zip(&mut self.columns) {
            match map.get(name) {
                None => column.append_null(),
                Some(v) => {
                    if !column.append(v) && error.is_none() {
                        error = Some(format!(
                            "field {name:?}: expected {ty}, got {}",
                            json_kind(v)
                        ));
                    }
                }
            }
        }
        self.error.append_option(error);
    }

    fn finish(&mut self, into: &mut Vec<ArrayRef>) {
        into.extend(self.columns.iter_mut().map(Typed::finish));
        into.push(Arc::new(self.error.finish()));
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    use serde_json::Value as J;
    match v {
        J::Null => "null",
        J::Bool(_) => "a boolean",
        J::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        J::Number(_) => "a number",
        J::String(_) => "a string",
        J::Array(_) => "an array",
        J::Object(_) => "an object",
    }
}

fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Binary, true),
    ])
}

/// The object name of the file of `topic`'s `partition` offsets
/// `[from, to)` for the UTC day `date` (`YYYY-MM-DD`).
pub fn object_name(topic: &str, partition: i32, date: &str, from: i64, to: i64) -> String {
    format!("{TABLES_DIR}/{topic}/dt={date}/partition={partition}/{from:020}-{to:020}.parquet")
}

/// The UTC day of a timestamp in ms, `YYYY-MM-DD`.
pub fn utc_date(ms: i64) -> String {
    // Howard Hinnant's days-to-civil.
    let z = ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Builders of the rows not yet handed to the writer.
struct Rows {
    partition: Int32Builder,
    offset: Int64Builder,
    timestamp: TimestampMillisecondBuilder,
    timestamp_type: StringBuilder,
    key: BinaryBuilder,
    value: BinaryBuilder,
    headers: ListBuilder<StructBuilder>,
    producer_id: Int64Builder,
    projection: Option<Projection>,
    count: usize,
    bytes: usize,
}

impl Rows {
    fn new(value: Option<&Arc<ValueSchema>>) -> Rows {
        Rows {
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            timestamp: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            timestamp_type: StringBuilder::new(),
            key: BinaryBuilder::new(),
            value: BinaryBuilder::new(),
            headers: ListBuilder::new(StructBuilder::from_fields(header_fields(), 0)),
            producer_id: Int64Builder::new(),
            projection: value.map(|v| Projection::new(v.clone())),
            count: 0,
            bytes: 0,
        }
    }

    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch, TableError> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.timestamp_type.finish()),
            Arc::new(self.key.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.headers.finish()),
            Arc::new(self.producer_id.finish()),
        ];
        if let Some(p) = &mut self.projection {
            p.finish(&mut columns);
        }
        self.count = 0;
        self.bytes = 0;
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

/// The file of one day being written.
struct DayFile {
    writer: ArrowWriter<File>,
    rows: Rows,
    total: u64,
    path: PathBuf,
    name: String,
}

impl DayFile {
    fn flush(&mut self, schema: &SchemaRef) -> Result<(), TableError> {
        if self.rows.count == 0 {
            return Ok(());
        }
        let batch = self.rows.finish(schema)?;
        let path = self.path.display().to_string();
        let err = |source| TableError::Parquet {
            path: path.clone(),
            source,
        };
        self.writer.write(&batch).map_err(err)
    }
}

/// What to export: the table's topic and partition, the offsets `[from,
/// to)`, and the value schema of a JSON projection.
#[derive(Debug, Clone)]
pub struct Range {
    pub topic: String,
    pub partition: i32,
    pub from: i64,
    pub to: i64,
    pub value: Option<Arc<ValueSchema>>,
}

/// Writes the records of `range` in the segment file `log` as Parquet
/// files in `out_dir`, one per UTC day of their timestamps. Blocking.
pub fn export_segment(
    log: &Path,
    range: &Range,
    out_dir: &Path,
) -> Result<Vec<TableFile>, TableError> {
    let Range {
        topic,
        partition,
        from,
        to,
        value,
    } = range;
    let (partition, from, to) = (*partition, *from, *to);
    let io = |op: &'static str, path: &Path| {
        let path = path.display().to_string();
        move |source| TableError::Io { op, path, source }
    };
    std::fs::create_dir_all(out_dir).map_err(io("create", out_dir))?;
    let file = File::open(log).map_err(io("open", log))?;
    let size = file.metadata().map_err(io("stat", log))?.len();
    let schema = schema(value.as_deref());
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
        .set_statistics_enabled(EnabledStatistics::Page)
        .build();
    let mut days: BTreeMap<String, DayFile> = BTreeMap::new();
    let mut pos = 0u64;
    for batch in file_batches(&file, log, size) {
        let (h, bytes) = batch?;
        let at = pos;
        pos += bytes.len() as u64;
        if h.is_control() || h.last_offset() < from || h.base_offset >= to {
            continue;
        }
        let records = stored_records(&bytes, &h).map_err(|message| TableError::Damaged {
            path: log.display().to_string(),
            position: at,
            message,
        })?;
        for r in records.iter().filter(|r| r.offset >= from && r.offset < to) {
            let date = utc_date(r.timestamp);
            let day = match days.get_mut(&date) {
                Some(d) => d,
                None => {
                    let name = object_name(topic, partition, &date, from, to);
                    let path = out_dir.join(format!("{date}-{from:020}-{to:020}.parquet"));
                    let f = File::create(&path).map_err(io("create", &path))?;
                    let writer = ArrowWriter::try_new(f, schema.clone(), Some(props.clone()))
                        .map_err(|source| TableError::Parquet {
                            path: path.display().to_string(),
                            source,
                        })?;
                    days.entry(date).or_insert(DayFile {
                        writer,
                        rows: Rows::new(value.as_ref()),
                        total: 0,
                        path,
                        name,
                    })
                }
            };
            let rows = &mut day.rows;
            rows.partition.append_value(partition);
            rows.offset.append_value(r.offset);
            rows.timestamp.append_value(r.timestamp);
            rows.timestamp_type.append_value(if h.is_log_append_time() {
                "LogAppendTime"
            } else {
                "CreateTime"
            });
            rows.key.append_option(r.key.as_deref());
            rows.value.append_option(r.value.as_deref());
            for (k, v) in &r.headers {
                let s = rows.headers.values();
                s.field_builder::<StringBuilder>(0)
                    .expect("header key column")
                    .append_value(String::from_utf8_lossy(k));
                s.field_builder::<BinaryBuilder>(1)
                    .expect("header value column")
                    .append_option(v.as_deref());
                s.append(true);
            }
            rows.headers.append(true);
            rows.producer_id.append_value(h.producer_id);
            if let Some(p) = &mut rows.projection {
                p.append(r.value.as_deref());
            }
            rows.count += 1;
            rows.bytes +=
                r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len());
            day.total += 1;
            if rows.count >= FLUSH_ROWS || rows.bytes >= FLUSH_BYTES {
                day.flush(&schema)?;
            }
        }
    }
    let mut out = Vec::with_capacity(days.len());
    for (_, mut day) in days {
        day.flush(&schema)?;
        let path = day.path.display().to_string();
        day.writer.close().map_err(|source| TableError::Parquet {
            path: path.clone(),
            source,
        })?;
        out.push(TableFile {
            name: day.name,
            path: day.path,
            rows: day.total,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_back(files: &[TableFile]) -> Vec<(i64, Option<Vec<u8>>, usize)> {
        use arrow_array::cast::AsArray;
        use arrow_array::types::Int64Type;
        use arrow_array::Array;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let mut rows = Vec::new();
        for f in files {
            let file = File::open(&f.path).expect("open");
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .expect("parquet")
                .build()
                .expect("reader");
            for batch in reader {
                let batch = batch.expect("batch");
                let offsets = batch.column(1).as_primitive::<Int64Type>();
                let values = batch.column(5).as_binary::<i32>();
                let headers = batch.column(6).as_list::<i32>();
                for i in 0..batch.num_rows() {
                    let value = (!values.is_null(i)).then(|| values.value(i).to_vec());
                    rows.push((offsets.value(i), value, headers.value(i).len()));
                }
            }
        }
        rows
    }

    fn orders(from: i64, to: i64) -> Range {
        Range {
            topic: "orders".into(),
            partition: 3,
            from,
            to,
            value: None,
        }
    }

    #[test]
    fn json_values_project_into_typed_columns_and_mismatches_into_the_error_column() {
        use arrow_array::cast::AsArray;
        use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
        use arrow_array::Array;
        let schema = ValueSchema::parse(
            r#"{"id": "int64", "name": "utf8", "score": "float64", "ok": "bool", "at": "timestamp[ms]"}"#,
        )
        .expect("schema");
        let mut p = Projection::new(Arc::new(schema));
        for value in [
            Some(
                &br#"{"id": 7, "name": "a", "score": 1.5, "ok": true, "at": 1000, "extra": [1]}"#[..],
            ),
            Some(br#"{"id": "seven", "name": "b", "score": 2}"#),
            Some(b"not json"),
            Some(b"[1, 2]"),
            None,
            Some(br#"{"id": null}"#),
        ] {
            p.append(value);
        }
        let mut columns = Vec::new();
        p.finish(&mut columns);
        // Columns in name order: at, id, name, ok, score, then value_error.
        assert_eq!(columns.len(), 6);
        let at = columns[0].as_primitive::<TimestampMillisecondType>();
        let id = columns[1].as_primitive::<Int64Type>();
        let name = columns[2].as_string::<i32>();
        let ok = columns[3].as_boolean();
        let score = columns[4].as_primitive::<Float64Type>();
        let error = columns[5].as_string::<i32>();
        assert_eq!(
            (
                at.value(0),
                id.value(0),
                name.value(0),
                ok.value(0),
                score.value(0)
            ),
            (1000, 7, "a", true, 1.5)
        );
        assert!(error.is_null(0));
        // A field of another type is null, named in the error; the rest stay.
        assert!(id.is_null(1) && name.value(1) == "b" && score.value(1) == 2.0);
        assert_eq!(
            error.value(1),
            r#"field "id": expected int64, got a string"#
        );
        assert!(error.value(2).starts_with("not JSON"), "{}", error.value(2));
        assert_eq!(error.value(3), "not a JSON object: an array");
        for row in [2, 3, 4, 5] {
            assert!((0..5).all(|c| columns[c].is_null(row)), "row {row}");
        }
        // A null value (a tombstone) or a JSON null is no error.
        assert!(error.is_null(4) && error.is_null(5));
    }

    #[test]
    fn a_segment_becomes_one_file_per_day_with_every_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 40 batches of 5 records, timestamps from 1,000,000 ms (1970-01-01).
        let seg = tiering::testkit::TestSegment::write(dir.path(), 100, 40, 5, 20, 1_000_000)
            .expect("segment");
        let log = dir.path().join(format!("{:020}.log", 100));
        let to = seg.last_offset + 1;
        let files =
            export_segment(&log, &orders(100, to), &dir.path().join("out")).expect("export");
        assert_eq!(files.len(), 1);
        assert_eq!(
            files[0].name,
            "tables/orders/dt=1970-01-01/partition=3/00000000000000000100-00000000000000000300.parquet"
        );
        assert_eq!(
            FileName::parse("orders", &files[0].name),
            Some(FileName {
                date: "1970-01-01".into(),
                partition: 3,
                from: 100,
                to: 300
            })
        );
        assert_eq!(files[0].rows, 200);
        let rows = read_back(&files);
        let offsets: Vec<i64> = rows.iter().map(|r| r.0).collect();
        assert_eq!(offsets, (100..to).collect::<Vec<_>>());
        assert!(rows
            .iter()
            .all(|r| r.1.as_ref().is_some_and(|v| v.len() == 20) && r.2 == 0));
        // A range inside the segment takes only its offsets, even those in
        // the middle of a batch.
        let part =
            export_segment(&log, &orders(103, 157), &dir.path().join("part")).expect("export part");
        let offsets: Vec<i64> = read_back(&part).iter().map(|r| r.0).collect();
        assert_eq!(offsets, (103..157).collect::<Vec<_>>());
        // A cut-short segment is refused, naming the file.
        let bytes = std::fs::read(&log).expect("read");
        let cut = dir.path().join("cut.log");
        std::fs::write(&cut, &bytes[..bytes.len() - 7]).expect("write");
        let e = export_segment(&cut, &orders(100, to), &dir.path().join("out2"))
            .expect_err("cut short");
        assert!(matches!(e, TableError::Damaged { .. }), "{e}");
        assert!(e.to_string().contains("cut.log"), "{e}");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(-1), "1969-12-31");
        assert_eq!(utc_date(951_782_400_000), "2000-02-29");
        assert_eq!(utc_date(1_700_000_000_000), "2023-11-14");
        assert_eq!(utc_date(4_102_444_800_000), "2100-01-01");
        for ms in [0, 951_782_400_000, 1_700_000_000_000, 4_102_444_800_000] {
            let name = FileName {
                date: utc_date(ms),
                partition: 0,
                from: 0,
                to: 1,
            };
            assert_eq!(name.day_end_ms(), Some(ms - ms % 86_400_000 + 86_400_000));
        }
        assert_eq!(
            FileName::parse("orders", "tables/orders/_strata/partition=0.json"),
            None
        );
        assert_eq!(
            FileName::parse(
                "orders",
                "tables/order/dt=1970-01-01/partition=0/1-2.parquet"
            ),
            None
        );
    }
}
