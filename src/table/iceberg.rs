//! The Apache Iceberg metadata of a table topic: a format-2 table over the
//! Parquet files the export wrote, kept in the table's own directory so
//! Iceberg readers (pyiceberg, Spark, Trino, DuckDB's iceberg extension)
//! read the topic as one consistent table, with no catalog service.
//!
//! # Layout (a Hadoop-style file catalog)
//!
//! ```text
//! tables/<topic>/metadata/v<N>.metadata.json     table metadata, version N
//! tables/<topic>/metadata/version-hint.text      N, for readers
//! tables/<topic>/metadata/snap-<ms>-<id>-<uuid>.avro   manifest lists
//! tables/<topic>/metadata/<ms>-<uuid>-m0.avro    manifests
//! ```
//!
//! The Parquet files carry no Iceberg field ids: the table maps columns by
//! name (`schema.name-mapping.default`), as for imported files.
//!
//! # Commits
//!
//! [`sync`] makes the current snapshot hold exactly the table's committed
//! files: every Parquet file whose range lies below its partition's
//! checkpoint (`exported_to`), less those the caller is about to delete.
//! It lists the store and compares with the current snapshot, so it is
//! idempotent: run after a crash, it commits what the crash left out and
//! nothing twice. A file beyond the checkpoint (an export that did not
//! finish) is never committed, and the next leader removes it.
//!
//! A commit writes its manifest and manifest list under fresh names, then
//! `v<N+1>.metadata.json` with a create-only put: of two writers (leaders
//! of two partitions, on two brokers) one wins; the other removes what it
//! wrote, reads the new version and tries again. Then the hint is
//! replaced; readers that find it behind look for the next versions.
//!
//! Only appends keep the earlier manifests; a commit that removes files
//! (retention, a backfill redone) writes one manifest of every file.
//!
//! # Collection
//!
//! A commit keeps the newest [`KEEP_SNAPSHOTS`] snapshots and
//! [`KEEP_VERSIONS`] metadata versions, and deletes older metadata
//! versions and every Avro file no kept snapshot names that is older than
//! [`ORPHAN_AGE_MS`] (the age keeps a concurrent writer's uncommitted
//! files; its name carries the time it was written).

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use iceberg::io::FileIO;
use iceberg::spec::{
    DataContentType, DataFile, DataFileBuilder, DataFileFormat, Datum, FormatVersion, ManifestFile,
    ManifestListWriter, ManifestWriterBuilder, MappedField, NameMapping, NestedField,
    NestedFieldRef, Operation, PartitionSpec, PrimitiveType, Schema, Snapshot, SnapshotReference,
    SnapshotRetention, SortOrder, StructType, Summary, TableMetadata, TableMetadataBuilder, Type,
    DEFAULT_SCHEMA_NAME_MAPPING, MAIN_BRANCH,
};
use tiering::{TierError, TierStore};

use super::{checkpoint_name, table_dir, Checkpoint, FileName};
use crate::config::table_schema::{FieldType, ValueSchema};

/// Snapshots a commit keeps (the current one among them).
pub const KEEP_SNAPSHOTS: usize = 5;
/// Metadata versions a commit keeps.
pub const KEEP_VERSIONS: u64 = 10;
/// How old an Avro file no snapshot names must be before it is deleted.
pub const ORPHAN_AGE_MS: i64 = 10 * 60 * 1000;
/// Create-only conflicts a commit retries before it gives up.
const ATTEMPTS: usize = 8;
/// The readers' pointer to the current metadata version.
pub const VERSION_HINT: &str = "version-hint.text";

/// Errors of the table's Iceberg metadata.
#[derive(Debug, thiserror::Error)]
pub enum IcebergError {
    #[error(transparent)]
    Tier(#[from] TierError),
    #[error("table of {topic}: {what}: {source}")]
    Iceberg {
        topic: String,
        what: &'static str,
        source: Box<iceberg::Error>,
    },
    #[error("table of {topic}: object {name} is damaged: {message}")]
    Damaged {
        topic: String,
        name: String,
        message: String,
    },
    #[error("table of {topic}: {ATTEMPTS} commits in a row lost to other writers")]
    Contended { topic: String },
}

/// The directory of `topic`'s Iceberg metadata.
pub fn metadata_dir(topic: &str) -> String {
    format!("{}/metadata", table_dir(topic))
}

fn version_name(topic: &str, version: u64) -> String {
    format!("{}/v{version}.metadata.json", metadata_dir(topic))
}

/// What one [`sync`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    /// The metadata version written; None when the table was current.
    pub version: Option<u64>,
    pub added: usize,
    pub removed: usize,
}

/// Reads `topic`'s `partition`'s checkpoint; None when there is none.
pub async fn read_checkpoint(
    tier: &TierStore,
    topic: &str,
    partition: i32,
) -> Result<Option<Checkpoint>, IcebergError> {
    let name = checkpoint_name(topic, partition);
    let Some(body) = tier.get_if_exists(&name).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| IcebergError::Damaged {
            topic: topic.to_string(),
            name,
            message: e.to_string(),
        })
}

/// Rows of a Parquet object, from its footer (two ranged reads).
pub async fn parquet_rows(
    tier: &TierStore,
    topic: &str,
    name: &str,
    size: u64,
) -> Result<u64, IcebergError> {
    use parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
    let damaged = |message: String| IcebergError::Damaged {
        topic: topic.to_string(),
        name: name.to_string(),
        message,
    };
    if size < 12 {
        return Err(damaged(format!("{size} bytes is no parquet file")));
    }
    let tail = tier.get_range(name, size - 8..size).await?;
    let tail: [u8; 8] = tail
        .as_ref()
        .try_into()
        .map_err(|_| damaged("short footer".into()))?;
    let len = FooterTail::try_new(&tail)
        .map_err(|e| damaged(e.to_string()))?
        .metadata_length() as u64;
    if len + 12 > size {
        return Err(damaged(format!("footer of {len} bytes in {size}")));
    }
    let footer = tier.get_range(name, size - 8 - len..size - 8).await?;
    let meta =
        ParquetMetaDataReader::decode_metadata(&footer).map_err(|e| damaged(e.to_string()))?;
    u64::try_from(meta.file_metadata().num_rows()).map_err(|_| damaged("negative row count".into()))
}

/// The current metadata of `topic`'s table: (version, metadata); None
/// before the first commit.
pub async fn load(
    tier: &TierStore,
    topic: &str,
) -> Result<Option<(u64, TableMetadata)>, IcebergError> {
    let hint = format!("{}/{VERSION_HINT}", metadata_dir(topic));
    let mut version = match tier.get_if_exists(&hint).await? {
        Some(body) => String::from_utf8_lossy(&body).trim().parse().unwrap_or(0),
        None => 0,
    };
    let mut body = None;
    // The hint is written after the version it names: look past it.
    while let Some(next) = tier
        .get_if_exists(&version_name(topic, version + 1))
        .await?
    {
        version += 1;
        body = Some(next);
    }
    if version == 0 {
        return Ok(None);
    }
    let body = match body {
        Some(b) => b,
        None => tier.get(&version_name(topic, version)).await?,
    };
    let metadata = serde_json::from_slice(&body).map_err(|e| IcebergError::Damaged {
        topic: topic.to_string(),
        name: version_name(topic, version),
        message: e.to_string(),
    })?;
    Ok(Some((version, metadata)))
}

/// The Iceberg type of a projected value field.
fn iceberg_type(ty: FieldType) -> PrimitiveType {
    match ty {
        FieldType::Boolean => PrimitiveType::Boolean,
        FieldType::Int32 => PrimitiveType::Int,
        FieldType::Int64 => PrimitiveType::Long,
        FieldType::Float64 => PrimitiveType::Double,
        FieldType::Utf8 => PrimitiveType::String,
        FieldType::TimestampMs => PrimitiveType::Timestamptz,
    }
}

/// The table's schema for the value projection `value`, in the column
/// order of `crate::table::schema`. Columns `current` has with the same
/// type keep their ids; others get ids after `current`'s last.
pub fn table_schema(
    value: Option<&ValueSchema>,
    current: Option<&TableMetadata>,
) -> Result<Schema, iceberg::Error> {
    let mut next = current.map_or(0, |m| m.last_column_id());
    let old = current.map(|m| m.current_schema().clone());
    let mut id = |path: &str, ty: &Type| -> i32 {
        let kept = old
            .as_ref()
            .and_then(|s| s.field_by_name(path))
            .filter(|f| f.field_type.as_ref() == ty);
        match kept {
            Some(f) => f.id,
            None => {
                next += 1;
                next
            }
        }
    };
    let prim = |p: PrimitiveType| Type::Primitive(p);
    let mut top: Vec<(String, Type, bool)> = vec![
        ("partition".into(), prim(PrimitiveType::Int), true),
        ("offset".into(), prim(PrimitiveType::Long), true),
        ("timestamp".into(), prim(PrimitiveType::Timestamptz), true),
        ("timestamp_type".into(), prim(PrimitiveType::String), true),
        ("key".into(), prim(PrimitiveType::Binary), false),
        ("value".into(), prim(PrimitiveType::Binary), false),
    ];
    // Ids of the top-level columns first, then the nested ones (the order
    // Iceberg assigns a new table's ids in).
    let headers_at = top.len();
    top.push(("producer_id".into(), prim(PrimitiveType::Long), true));
    if let Some(v) = value {
        for (name, ty) in &v.fields {
            top.push((name.clone(), prim(iceberg_type(*ty)), false));
        }
        top.push(("value_error".into(), prim(PrimitiveType::String), false));
    }
    let header_struct = |k: i32, v: i32| {
        Type::Struct(StructType::new(vec![
            NestedField::required(k, "key", prim(PrimitiveType::String)).into(),
            NestedField::optional(v, "value", prim(PrimitiveType::Binary)).into(),
        ]))
    };
    let list = |e: i32, k: i32, v: i32| {
        Type::List(iceberg::spec::ListType::new(
            NestedField::list_element(e, header_struct(k, v), false).into(),
        ))
    };
    // The headers column keeps its ids when the old schema has them all.
    let old_headers = old.as_ref().and_then(|s| {
        let f = s.field_by_name("headers")?;
        let e = s.field_by_name("headers.element")?.id;
        let k = s.field_by_name("headers.element.key")?.id;
        let v = s.field_by_name("headers.element.value")?.id;
        (f.field_type.as_ref() == &list(e, k, v)).then_some((f.id, e, k, v))
    });
    let mut fields: Vec<NestedFieldRef> = top
        .into_iter()
        .map(|(name, ty, required)| NestedField::new(id(&name, &ty), name, ty, required).into())
        .collect();
    let (h, e, k, v) = old_headers.unwrap_or((next + 1, next + 2, next + 3, next + 4));
    fields.insert(
        headers_at,
        NestedField::required(h, "headers", list(e, k, v)).into(),
    );
    Schema::builder().with_fields(fields).build()
}

/// The name mapping of `schema`: Parquet columns to field ids by name (the
/// list element under both names writers use).
pub fn name_mapping(schema: &Schema) -> NameMapping {
    fn map(f: &NestedField) -> MappedField {
        let children = match f.field_type.as_ref() {
            Type::Struct(s) => s.fields().iter().map(|c| map(c)).collect(),
            Type::List(l) => {
                let e = &l.element_field;
                let inner = match e.field_type.as_ref() {
                    Type::Struct(s) => s.fields().iter().map(|c| map(c)).collect(),
                    _ => vec![],
                };
                vec![MappedField::new(
                    Some(e.id),
                    vec!["element".into(), "item".into()],
                    inner,
                )]
            }
            _ => vec![],
        };
        MappedField::new(Some(f.id), vec![f.name.clone()], children)
    }
    NameMapping::new(schema.as_struct().fields().iter().map(|f| map(f)).collect())
}

/// A live file of the current snapshot, as its manifest has it.
#[derive(Debug, Clone)]
struct Entry {
    file: DataFile,
    snapshot_id: i64,
    sequence_number: i64,
    file_sequence_number: Option<i64>,
}

/// The live files of `meta`'s current snapshot by object name, and its
/// manifests.
async fn current_files(
    tier: &TierStore,
    topic: &str,
    meta: &TableMetadata,
) -> Result<(HashMap<String, Entry>, Vec<ManifestFile>), IcebergError> {
    let Some(snapshot) = meta.current_snapshot() else {
        return Ok((HashMap::new(), Vec::new()));
    };
    let root = tier.uri("");
    let damaged = |name: &str, e: iceberg::Error| IcebergError::Damaged {
        topic: topic.to_string(),
        name: name.to_string(),
        message: e.to_string(),
    };
    let list_name = object_of(&root, snapshot.manifest_list());
    let body = tier.get(&list_name).await?;
    let list = iceberg::spec::ManifestList::parse_with_version(&body, meta.format_version())
        .map_err(|e| damaged(&list_name, e))?;
    let manifests: Vec<ManifestFile> = list.entries().to_vec();
    let mut files = HashMap::new();
    for m in &manifests {
        let name = object_of(&root, &m.manifest_path);
        let body = tier.get(&name).await?;
        let manifest = iceberg::spec::Manifest::parse_avro(&body).map_err(|e| damaged(&name, e))?;
        for e in manifest.entries().iter().filter(|e| e.is_alive()) {
            files.insert(
                object_of(&root, e.file_path()),
                Entry {
                    file: e.data_file().clone(),
                    snapshot_id: e.snapshot_id().unwrap_or(m.added_snapshot_id),
                    sequence_number: e.sequence_number().unwrap_or(m.sequence_number),
                    file_sequence_number: e.file_sequence_number.or(Some(m.sequence_number)),
                },
            );
        }
    }
    Ok((files, manifests))
}

/// A file of the older layout, `dt=<day>/partition=<n>/<base>.parquet`
/// (progress on the leader's disk), with `to` unknown (`i64::MAX`).
fn older_name(topic: &str, name: &str) -> Option<FileName> {
    let rest = name.strip_prefix(&table_dir(topic))?.strip_prefix("/dt=")?;
    let (date, rest) = rest.split_once("/partition=")?;
    let (partition, file) = rest.split_once('/')?;
    Some(FileName {
        date: date.to_string(),
        partition: partition.parse().ok()?,
        from: file.strip_suffix(".parquet")?.parse().ok()?,
        to: i64::MAX,
    })
}

/// The object name of `uri` in the store whose root URI is `root`; a path
/// elsewhere stays whole (and matches no object).
fn object_of(root: &str, uri: &str) -> String {
    uri.strip_prefix(root).unwrap_or(uri).to_string()
}

/// Makes the current snapshot of `topic`'s table hold exactly its
/// committed files (see the module docs), less `dropping`; creates the
/// table on the first call. `value` is the topic's value projection.
pub async fn sync(
    tier: &TierStore,
    topic: &str,
    value: Option<&ValueSchema>,
    dropping: &HashSet<String>,
) -> Result<Synced, IcebergError> {
    for _ in 0..ATTEMPTS {
        if let Some(done) = try_sync(tier, topic, value, dropping).await? {
            return Ok(done);
        }
    }
    Err(IcebergError::Contended {
        topic: topic.to_string(),
    })
}

/// One attempt of [`sync`]; None when another writer committed first.
async fn try_sync(
    tier: &TierStore,
    topic: &str,
    value: Option<&ValueSchema>,
    dropping: &HashSet<String>,
) -> Result<Option<Synced>, IcebergError> {
    let ice = |what: &'static str| {
        let topic = topic.to_string();
        move |source| IcebergError::Iceberg {
            topic,
            what,
            source: Box::new(source),
        }
    };
    let current = load(tier, topic).await?;
    // The committed files: below their partition's checkpoint.
    let mut checkpoints: HashMap<i32, Option<Checkpoint>> = HashMap::new();
    let mut live: BTreeMap<String, (FileName, u64)> = BTreeMap::new();
    for (name, size) in tier.list(&table_dir(topic)).await? {
        let Some(f) = FileName::parse(topic, &name).or_else(|| older_name(topic, &name)) else {
            continue;
        };
        if dropping.contains(&name) {
            continue;
        }
        let checkpoint = match checkpoints.get(&f.partition) {
            Some(c) => *c,
            None => {
                let c = read_checkpoint(tier, topic, f.partition).await?;
                checkpoints.insert(f.partition, c);
                c
            }
        };
        let committed = checkpoint.is_some_and(|c| match f.to {
            // An older name: written before the checkpoint's start.
            i64::MAX => f.from < c.start,
            to => to <= c.exported_to,
        });
        if committed {
            live.insert(name, (f, size));
        }
    }
    let (existing, manifests) = match &current {
        Some((_, meta)) => current_files(tier, topic, meta).await?,
        None => (HashMap::new(), Vec::new()),
    };
    let schema = table_schema(value, current.as_ref().map(|(_, m)| m)).map_err(ice("schema"))?;
    let schema_changed = current
        .as_ref()
        .is_some_and(|(_, m)| m.current_schema().as_struct() != schema.as_struct());
    let added: Vec<&String> = live.keys().filter(|n| !existing.contains_key(*n)).collect();
    let removed = existing.keys().filter(|n| !live.contains_key(*n)).count();
    if current.is_some() && added.is_empty() && removed == 0 && !schema_changed {
        return Ok(Some(Synced::default()));
    }

    // The table (and schema) the snapshot is for.
    let location = tier.uri(&table_dir(topic));
    let (version, base) = match current {
        None => {
            let props = HashMap::from([
                (
                    "write.metadata.previous-versions-max".to_string(),
                    KEEP_VERSIONS.to_string(),
                ),
                ("strata.topic".to_string(), topic.to_string()),
            ]);
            let b = TableMetadataBuilder::new(
                schema,
                PartitionSpec::unpartition_spec().into_unbound(),
                SortOrder::unsorted_order(),
                location.clone(),
                FormatVersion::V2,
                props,
            )
            .map_err(ice("create the table"))?;
            (0, b.build().map_err(ice("create the table"))?.metadata)
        }
        Some((version, meta)) => {
            let b = TableMetadataBuilder::new_from_metadata(
                meta,
                Some(tier.uri(&version_name(topic, version))),
            );
            let b = if schema_changed {
                b.add_current_schema(schema)
                    .map_err(ice("evolve the schema"))?
            } else {
                b
            };
            (
                version,
                b.build().map_err(ice("evolve the schema"))?.metadata,
            )
        }
    };
    let schema = base.current_schema().clone();
    let spec = base.default_partition_spec().as_ref().clone();
    let snapshot_id = (uuid::Uuid::new_v4().as_u128() as i64) & i64::MAX;
    let sequence = base.next_sequence_number();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let io = FileIO::new_with_memory();
    let mut written: Vec<String> = Vec::new();

    let field = |name: &str| schema.field_by_name(name).map(|f| f.id);
    let new_file = |name: &str, f: &FileName, size: u64, rows: u64| {
        let (mut lower, mut upper) = (HashMap::new(), HashMap::new());
        if let Some(id) = field("partition") {
            lower.insert(id, Datum::int(f.partition));
            upper.insert(id, Datum::int(f.partition));
        }
        if let Some(id) = field("offset") {
            lower.insert(id, Datum::long(f.from));
            if f.to != i64::MAX {
                upper.insert(id, Datum::long(f.to - 1));
            }
        }
        let day = f.day_end_ms().and_then(|end| {
            let end_us = end.checked_mul(1000)?;
            Some((end_us - 86_400_000_000, end_us - 1))
        });
        if let (Some(id), Some((lo, hi))) = (field("timestamp"), day) {
            lower.insert(id, Datum::timestamptz_micros(lo));
            upper.insert(id, Datum::timestamptz_micros(hi));
        }
        DataFileBuilder::default()
            .content(DataContentType::Data)
            .file_path(tier.uri(name))
            .file_format(DataFileFormat::Parquet)
            .record_count(rows)
            .file_size_in_bytes(size)
            .partition_spec_id(spec.spec_id())
            .lower_bounds(lower)
            .upper_bounds(upper)
            .build()
    };
    let mut new_manifests = Vec::new();
    let mut added_rows = 0u64;
    let mut writer = None;
    let manifest_name = format!(
        "{}/{now:013}-{}-m0.avro",
        metadata_dir(topic),
        uuid::Uuid::new_v4()
    );
    let open = || {
        io.new_output(tier.uri(&manifest_name)).map(|out| {
            ManifestWriterBuilder::new(out, Some(snapshot_id), schema.clone(), spec.clone())
                .build_v2_data()
        })
    };
    // Appends carry the earlier manifests over; removals rewrite one.
    let rewrite = removed > 0 || schema_changed;
    if rewrite {
        let mut w = open().map_err(ice("write a manifest"))?;
        for (name, e) in &existing {
            if live.contains_key(name) {
                w.add_existing_file(
                    e.file.clone(),
                    e.snapshot_id,
                    e.sequence_number,
                    e.file_sequence_number,
                )
                .map_err(ice("write a manifest"))?;
            }
        }
        writer = Some(w);
    } else {
        new_manifests.extend(manifests);
    }
    let mut deleted_rows = 0u64;
    for (name, e) in &existing {
        if !live.contains_key(name) {
            deleted_rows += e.file.record_count();
        }
    }
    for name in &added {
        let (f, size) = &live[*name];
        let rows = parquet_rows(tier, topic, name, *size).await?;
        added_rows += rows;
        let file = new_file(name, f, *size, rows).map_err(|e| IcebergError::Damaged {
            topic: topic.to_string(),
            name: (*name).clone(),
            message: e.to_string(),
        })?;
        if writer.is_none() {
            writer = Some(open().map_err(ice("write a manifest"))?);
        }
        writer
            .as_mut()
            .expect("opened above")
            .add_file(file, sequence)
            .map_err(ice("write a manifest"))?;
    }
    if let Some(w) = writer {
        let m = w
            .write_manifest_file()
            .await
            .map_err(ice("write a manifest"))?;
        put_from(&io, tier, topic, &manifest_name, &mut written).await?;
        new_manifests.push(m);
    }
    let parent = base.current_snapshot_id();
    let list_name = format!(
        "{}/snap-{now:013}-{snapshot_id}-{}.avro",
        metadata_dir(topic),
        uuid::Uuid::new_v4()
    );
    let out = io
        .new_output(tier.uri(&list_name))
        .map_err(ice("write a manifest list"))?;
    let mut list = ManifestListWriter::v2(
        out.writer().await.map_err(ice("write a manifest list"))?,
        snapshot_id,
        parent,
        sequence,
    );
    list.add_manifests(new_manifests.into_iter())
        .map_err(ice("write a manifest list"))?;
    list.close().await.map_err(ice("write a manifest list"))?;
    put_from(&io, tier, topic, &list_name, &mut written).await?;

    let total_files = live.len() as u64;
    let total_rows = existing
        .iter()
        .filter(|(n, _)| live.contains_key(*n))
        .map(|(_, e)| e.file.record_count())
        .sum::<u64>()
        + added_rows;
    let operation = match (added.is_empty(), removed == 0) {
        (_, true) => Operation::Append,
        (true, false) => Operation::Delete,
        (false, false) => Operation::Overwrite,
    };
    let summary = Summary {
        operation,
        additional_properties: HashMap::from([
            ("added-data-files".into(), added.len().to_string()),
            ("deleted-data-files".into(), removed.to_string()),
            ("added-records".into(), added_rows.to_string()),
            ("deleted-records".into(), deleted_rows.to_string()),
            ("total-data-files".into(), total_files.to_string()),
            ("total-records".into(), total_rows.to_string()),
            ("total-delete-files".into(), "0".into()),
        ]),
    };
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(parent)
        .with_sequence_number(sequence)
        .with_timestamp_ms(now.max(base.last_updated_ms() + 1))
        .with_manifest_list(tier.uri(&list_name))
        .with_summary(summary)
        .with_schema_id(schema.schema_id())
        .build();
    let mut older: Vec<(i64, i64)> = base
        .snapshots()
        .map(|s| (s.timestamp_ms(), s.snapshot_id()))
        .collect();
    older.sort_unstable_by(|a, b| b.cmp(a));
    let expired: Vec<i64> = older
        .iter()
        .skip(KEEP_SNAPSHOTS - 1)
        .map(|(_, id)| *id)
        .collect();
    let mapping = serde_json::to_string(&name_mapping(&schema)).expect("a name mapping serializes");
    let meta = TableMetadataBuilder::new_from_metadata(base, None)
        .set_properties(HashMap::from([(
            DEFAULT_SCHEMA_NAME_MAPPING.to_string(),
            mapping,
        )]))
        .map_err(ice("commit"))?
        .add_snapshot(snapshot)
        .map_err(ice("commit"))?
        .set_ref(
            MAIN_BRANCH,
            SnapshotReference::new(snapshot_id, SnapshotRetention::branch(None, None, None)),
        )
        .map_err(ice("commit"))?
        .remove_snapshots(&expired)
        .build()
        .map_err(ice("commit"))?
        .metadata;
    let body = serde_json::to_vec_pretty(&meta).expect("table metadata serializes");
    let next = version + 1;
    if !tier
        .put_new(&version_name(topic, next), body.into())
        .await?
    {
        // Another writer committed this version: drop what this attempt
        // wrote and start again from theirs.
        for name in &written {
            tier.delete(name).await?;
        }
        return Ok(None);
    }
    tier.put(
        &format!("{}/{VERSION_HINT}", metadata_dir(topic)),
        Bytes::from(next.to_string()),
    )
    .await?;
    collect(tier, topic, &meta, next, now).await?;
    Ok(Some(Synced {
        version: Some(next),
        added: added.len(),
        removed,
    }))
}

/// Puts what `io` (in memory) holds at `name`'s URI into the store.
async fn put_from(
    io: &FileIO,
    tier: &TierStore,
    topic: &str,
    name: &str,
    written: &mut Vec<String>,
) -> Result<(), IcebergError> {
    let staged = match io.new_input(tier.uri(name)) {
        Ok(input) => input.read().await,
        Err(e) => Err(e),
    };
    let body = staged.map_err(|source| IcebergError::Iceberg {
        topic: topic.to_string(),
        what: "stage metadata",
        source: Box::new(source),
    })?;
    tier.put(name, body).await?;
    written.push(name.to_string());
    Ok(())
}

/// When an Avro file of the metadata directory was written, from its name.
fn written_ms(file: &str) -> Option<i64> {
    let rest = file.strip_prefix("snap-").unwrap_or(file);
    rest.split('-').next()?.parse().ok()
}

/// Deletes the metadata versions and Avro files `meta` (version `version`)
/// no longer needs (see the module docs).
async fn collect(
    tier: &TierStore,
    topic: &str,
    meta: &TableMetadata,
    version: u64,
    now: i64,
) -> Result<(), IcebergError> {
    let root = tier.uri("");
    let mut keep: HashSet<String> = HashSet::new();
    for s in meta.snapshots() {
        let list_name = object_of(&root, s.manifest_list());
        let Some(body) = tier.get_if_exists(&list_name).await? else {
            continue;
        };
        if let Ok(list) =
            iceberg::spec::ManifestList::parse_with_version(&body, meta.format_version())
        {
            keep.extend(
                list.entries()
                    .iter()
                    .map(|m| object_of(&root, &m.manifest_path)),
            );
        }
        keep.insert(list_name);
    }
    let dir = metadata_dir(topic);
    for (name, _) in tier.list(&dir).await? {
        let Some(file) = name.strip_prefix(&format!("{dir}/")) else {
            continue;
        };
        let old_version = file
            .strip_prefix('v')
            .and_then(|v| v.strip_suffix(".metadata.json"))
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|v| v + KEEP_VERSIONS <= version);
        let orphan = file.ends_with(".avro")
            && !keep.contains(&name)
            && written_ms(file).is_some_and(|ms| ms + ORPHAN_AGE_MS <= now);
        if old_version || orphan {
            tier.delete(&name).await?;
        }
    }
    Ok(())
}

/// Deletes `topic`'s Iceberg metadata (the topic was deleted).
pub async fn delete_table(tier: &TierStore, topic: &str) -> Result<usize, IcebergError> {
    let names = tier.list(&metadata_dir(topic)).await?;
    for (name, _) in &names {
        tier.delete(name).await?;
    }
    Ok(names.len())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int64Array, RecordBatch};
    use parquet::arrow::ArrowWriter;

    use super::*;
    use crate::table::object_name;

    const TOPIC: &str = "orders";

    /// A Parquet object of `rows` rows (the table only reads its footer).
    async fn put_parquet(tier: &TierStore, name: &str, rows: i64) {
        let batch = RecordBatch::try_from_iter([(
            "offset",
            Arc::new(Int64Array::from_iter_values(0..rows)) as _,
        )])
        .unwrap();
        let mut body = Vec::new();
        let mut w = ArrowWriter::try_new(&mut body, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        tier.put(name, body.into()).await.unwrap();
    }

    async fn checkpoint(tier: &TierStore, partition: i32, start: i64, exported_to: i64) {
        let c = Checkpoint { start, exported_to };
        let body = serde_json::to_vec(&c).unwrap();
        tier.put(&checkpoint_name(TOPIC, partition), body.into())
            .await
            .unwrap();
    }

    /// The current snapshot's files by name, and how many manifests it has.
    async fn files(tier: &TierStore) -> (Vec<String>, usize) {
        let (_, meta) = load(tier, TOPIC).await.unwrap().expect("a table");
        let (files, manifests) = current_files(tier, TOPIC, &meta).await.unwrap();
        let mut names: Vec<String> = files.into_keys().collect();
        names.sort();
        (names, manifests.len())
    }

    fn file(partition: i32, from: i64, to: i64) -> String {
        object_name(TOPIC, partition, "2026-12-01", from, to)
    }

    #[tokio::test]
    async fn the_snapshot_holds_exactly_the_files_below_each_checkpoint() {
        let tier = TierStore::from_url("memory://").unwrap();
        let none = HashSet::new();
        for (from, to) in [(0, 10), (10, 20), (20, 30)] {
            put_parquet(&tier, &file(0, from, to), to - from).await;
        }
        put_parquet(&tier, &file(1, 0, 5), 5).await;
        // Partition 1 has no checkpoint yet; partition 0 covers two files.
        checkpoint(&tier, 0, 0, 20).await;
        let done = sync(&tier, TOPIC, None, &none).await.unwrap();
        assert_eq!((done.version, done.added, done.removed), (Some(1), 2, 0));
        assert_eq!(files(&tier).await.0, vec![file(0, 0, 10), file(0, 10, 20)]);
        // Nothing new: no commit.
        assert_eq!(
            sync(&tier, TOPIC, None, &none).await.unwrap(),
            Synced::default()
        );
        // Appends carry the earlier manifest over.
        checkpoint(&tier, 0, 0, 30).await;
        checkpoint(&tier, 1, 0, 5).await;
        let done = sync(&tier, TOPIC, None, &none).await.unwrap();
        assert_eq!((done.version, done.added), (Some(2), 2));
        let (names, manifests) = files(&tier).await;
        assert_eq!(names.len(), 4);
        assert_eq!(manifests, 2);
        // Dropping rewrites one manifest without the file.
        let dropping = HashSet::from([file(0, 0, 10)]);
        let done = sync(&tier, TOPIC, None, &dropping).await.unwrap();
        assert_eq!((done.version, done.removed), (Some(3), 1));
        let (names, manifests) = files(&tier).await;
        assert!(!names.contains(&file(0, 0, 10)));
        assert_eq!((names.len(), manifests), (3, 1));
        let (_, meta) = load(&tier, TOPIC).await.unwrap().unwrap();
        let summary = &meta
            .current_snapshot()
            .unwrap()
            .summary()
            .additional_properties;
        assert_eq!(summary["total-records"], "25");
        assert_eq!(summary["total-data-files"], "3");
        assert_eq!(meta.snapshots().count(), 3);
        assert!(meta.properties().contains_key(DEFAULT_SCHEMA_NAME_MAPPING));
    }

    #[tokio::test]
    async fn a_reader_and_a_writer_look_past_a_hint_left_behind() {
        let tier = TierStore::from_url("memory://").unwrap();
        let none = HashSet::new();
        put_parquet(&tier, &file(0, 0, 10), 10).await;
        checkpoint(&tier, 0, 0, 10).await;
        sync(&tier, TOPIC, None, &none).await.unwrap();
        put_parquet(&tier, &file(0, 10, 20), 10).await;
        checkpoint(&tier, 0, 0, 20).await;
        sync(&tier, TOPIC, None, &none).await.unwrap();
        // A crash after version 2 but before its hint.
        let hint = format!("{}/{VERSION_HINT}", metadata_dir(TOPIC));
        tier.put(&hint, Bytes::from("1")).await.unwrap();
        assert_eq!(load(&tier, TOPIC).await.unwrap().unwrap().0, 2);
        put_parquet(&tier, &file(0, 20, 30), 10).await;
        checkpoint(&tier, 0, 0, 30).await;
        let done = sync(&tier, TOPIC, None, &none).await.unwrap();
        assert_eq!((done.version, done.added), (Some(3), 1));
        assert_eq!(files(&tier).await.0.len(), 3);
    }

    #[tokio::test]
    async fn old_versions_and_snapshots_are_collected() {
        let tier = TierStore::from_url("memory://").unwrap();
        let none = HashSet::new();
        let commits = KEEP_VERSIONS as i64 + 3;
        for i in 0..commits {
            put_parquet(&tier, &file(0, i * 10, i * 10 + 10), 10).await;
            checkpoint(&tier, 0, 0, i * 10 + 10).await;
            sync(&tier, TOPIC, None, &none).await.unwrap();
        }
        let names: Vec<String> = tier
            .list(&metadata_dir(TOPIC))
            .await
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let versions = names
            .iter()
            .filter(|n| n.ends_with(".metadata.json"))
            .count();
        assert_eq!(versions as u64, KEEP_VERSIONS);
        assert!(!names.contains(&version_name(TOPIC, 1)));
        let (_, meta) = load(&tier, TOPIC).await.unwrap().unwrap();
        assert_eq!(meta.snapshots().count(), KEEP_SNAPSHOTS);
        assert_eq!(files(&tier).await.0.len() as i64, commits);
    }

    #[tokio::test]
    async fn a_new_value_schema_keeps_the_ids_of_the_columns_it_keeps() {
        let tier = TierStore::from_url("memory://").unwrap();
        let none = HashSet::new();
        put_parquet(&tier, &file(0, 0, 10), 10).await;
        checkpoint(&tier, 0, 0, 10).await;
        let first = ValueSchema::parse(r#"{"id": "int64", "name": "utf8"}"#).unwrap();
        sync(&tier, TOPIC, Some(&first), &none).await.unwrap();
        let (_, before) = load(&tier, TOPIC).await.unwrap().unwrap();
        let ids =
            |m: &TableMetadata, name: &str| m.current_schema().field_by_name(name).map(|f| f.id);
        // `name` changes type, `price` is new, `id` stays.
        let second =
            ValueSchema::parse(r#"{"id": "int64", "name": "int32", "price": "float64"}"#).unwrap();
        let done = sync(&tier, TOPIC, Some(&second), &none).await.unwrap();
        assert_eq!(done.version, Some(2));
        let (_, after) = load(&tier, TOPIC).await.unwrap().unwrap();
        for kept in [
            "offset",
            "headers",
            "headers.element.key",
            "id",
            "value_error",
        ] {
            assert_eq!(ids(&before, kept), ids(&after, kept), "{kept}");
        }
        assert_ne!(ids(&before, "name"), ids(&after, "name"));
        assert!(ids(&after, "price").unwrap() > before.last_column_id());
        assert_eq!(after.schemas_iter().count(), 2);
        // The name mapping follows the current schema.
        let mapping: NameMapping =
            serde_json::from_str(&after.properties()[DEFAULT_SCHEMA_NAME_MAPPING]).unwrap();
        let price = mapping
            .fields()
            .iter()
            .find(|f| f.names() == ["price"])
            .unwrap();
        assert_eq!(price.field_id(), ids(&after, "price"));
        let headers = mapping
            .fields()
            .iter()
            .find(|f| f.names() == ["headers"])
            .unwrap();
        assert_eq!(headers.fields()[0].names(), ["element", "item"]);
    }

    #[tokio::test]
    async fn of_two_writers_one_commits_and_the_other_tries_again() {
        // The file store does its I/O on the blocking pool: the two syncs
        // interleave.
        let dir = tempfile::tempdir().unwrap();
        let tier = TierStore::from_url(&format!("file://{}", dir.path().display())).unwrap();
        let none = HashSet::new();
        for p in 0..2 {
            put_parquet(&tier, &file(p, 0, 10), 10).await;
            checkpoint(&tier, p, 0, 10).await;
        }
        sync(&tier, TOPIC, None, &none).await.unwrap();
        // Two leaders each add their partition's file at once.
        for p in 0..2 {
            put_parquet(&tier, &file(p, 10, 20), 10).await;
            checkpoint(&tier, p, 0, 20).await;
        }
        let (a, b) = tokio::join!(
            sync(&tier, TOPIC, None, &none),
            sync(&tier, TOPIC, None, &none)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        // One commits both files; the other finds the table current.
        assert_eq!(a.added + b.added, 2, "{a:?} {b:?}");
        assert_eq!(files(&tier).await.0.len(), 4);
        // The loser removed what it wrote: every Avro file is named.
        let (_, meta) = load(&tier, TOPIC).await.unwrap().unwrap();
        let avro = tier
            .list(&metadata_dir(TOPIC))
            .await
            .unwrap()
            .into_iter()
            .filter(|(n, _)| n.ends_with(".avro"))
            .count();
        let (_, manifests) = files(&tier).await;
        assert_eq!(avro, meta.snapshots().count() + manifests);
    }

    #[tokio::test]
    async fn files_of_the_older_layout_below_the_start_are_in_the_table() {
        let tier = TierStore::from_url("memory://").unwrap();
        let older = format!(
            "{}/dt=2026-12-01/partition=0/{:020}.parquet",
            table_dir(TOPIC),
            0
        );
        put_parquet(&tier, &older, 7).await;
        put_parquet(&tier, &file(0, 7, 10), 3).await;
        checkpoint(&tier, 0, 7, 10).await;
        sync(&tier, TOPIC, None, &HashSet::new()).await.unwrap();
        assert_eq!(files(&tier).await.0, vec![older, file(0, 7, 10)]);
    }
}
