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
//! `{key: utf8, value: binary}`), `producer_id` (int64, -1 without one).
//! Control batches are not rows. Files are zstd-compressed, with row groups
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
    BinaryBuilder, Int32Builder, Int64Builder, ListBuilder, StringBuilder, StructBuilder,
    TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use kafka_protocol::records::TimestampType;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::log::batch::decode_records;
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

/// The schema of every table file.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
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
    ]))
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
    count: usize,
    bytes: usize,
}

impl Rows {
    fn new() -> Rows {
        Rows {
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            timestamp: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            timestamp_type: StringBuilder::new(),
            key: BinaryBuilder::new(),
            value: BinaryBuilder::new(),
            headers: ListBuilder::new(StructBuilder::from_fields(header_fields(), 0)),
            producer_id: Int64Builder::new(),
            count: 0,
            bytes: 0,
        }
    }

    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch, TableError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.timestamp_type.finish()),
            Arc::new(self.key.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.headers.finish()),
            Arc::new(self.producer_id.finish()),
        ];
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

/// Writes the records at offsets `[from, to)` of the segment file `log`
/// (of `topic`'s `partition`) as Parquet files in `out_dir`, one per UTC
/// day of their timestamps. Blocking.
pub fn export_segment(
    log: &Path,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
    out_dir: &Path,
) -> Result<Vec<TableFile>, TableError> {
    let io = |op: &'static str, path: &Path| {
        let path = path.display().to_string();
        move |source| TableError::Io { op, path, source }
    };
    std::fs::create_dir_all(out_dir).map_err(io("create", out_dir))?;
    let file = File::open(log).map_err(io("open", log))?;
    let size = file.metadata().map_err(io("stat", log))?.len();
    let schema = schema();
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
        let records = decode_records(&bytes).map_err(|message| TableError::Damaged {
            path: log.display().to_string(),
            position: at,
            message,
        })?;
        for r in records
            .iter()
            .filter(|r| !r.control && r.offset >= from && r.offset < to)
        {
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
                        rows: Rows::new(),
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
            rows.timestamp_type.append_value(match r.timestamp_type {
                TimestampType::Creation => "CreateTime",
                TimestampType::LogAppend => "LogAppendTime",
            });
            rows.key.append_option(r.key.as_deref());
            rows.value.append_option(r.value.as_deref());
            for (k, v) in &r.headers {
                let s = rows.headers.values();
                s.field_builder::<StringBuilder>(0)
                    .expect("header key column")
                    .append_value(k.as_str());
                s.field_builder::<BinaryBuilder>(1)
                    .expect("header value column")
                    .append_option(v.as_deref());
                s.append(true);
            }
            rows.headers.append(true);
            rows.producer_id.append_value(r.producer_id);
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

    #[test]
    fn a_segment_becomes_one_file_per_day_with_every_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 40 batches of 5 records, timestamps from 1,000,000 ms (1970-01-01).
        let seg = tiering::testkit::TestSegment::write(dir.path(), 100, 40, 5, 20, 1_000_000)
            .expect("segment");
        let log = dir.path().join(format!("{:020}.log", 100));
        let to = seg.last_offset + 1;
        let files =
            export_segment(&log, "orders", 3, 100, to, &dir.path().join("out")).expect("export");
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
        let part = export_segment(&log, "orders", 3, 103, 157, &dir.path().join("part"))
            .expect("export part");
        let offsets: Vec<i64> = read_back(&part).iter().map(|r| r.0).collect();
        assert_eq!(offsets, (103..157).collect::<Vec<_>>());
        // A cut-short segment is refused, naming the file.
        let bytes = std::fs::read(&log).expect("read");
        let cut = dir.path().join("cut.log");
        std::fs::write(&cut, &bytes[..bytes.len() - 7]).expect("write");
        let e = export_segment(&cut, "orders", 3, 100, to, &dir.path().join("out2"))
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
