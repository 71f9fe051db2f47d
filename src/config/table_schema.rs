//! `strata.table.value.schema`: the typed columns a table topic's JSON
//! values are projected into (with `strata.table.value.format=json`).
//!
//! The schema is a JSON object of column name to Arrow type name:
//! `{"id": "int64", "name": "utf8", "price": "float64", "ok": "bool",
//! "at": "timestamp[ms]"}`. Every column is nullable. A column may not take
//! the name of one of the table's own columns.

use std::fmt;

/// The Arrow type of one projected column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Boolean,
    Int32,
    Int64,
    Float64,
    Utf8,
    /// Milliseconds since the epoch, UTC (a JSON integer).
    TimestampMs,
}

impl FieldType {
    fn parse(name: &str) -> Option<FieldType> {
        Some(match name {
            "bool" | "boolean" => FieldType::Boolean,
            "int32" => FieldType::Int32,
            "int64" => FieldType::Int64,
            "float64" | "double" => FieldType::Float64,
            "utf8" | "string" => FieldType::Utf8,
            "timestamp[ms]" | "timestamp_ms" => FieldType::TimestampMs,
            _ => return None,
        })
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FieldType::Boolean => "bool",
            FieldType::Int32 => "int32",
            FieldType::Int64 => "int64",
            FieldType::Float64 => "float64",
            FieldType::Utf8 => "utf8",
            FieldType::TimestampMs => "timestamp[ms]",
        })
    }
}

/// The table's own columns, which projected columns may not shadow (`dt`
/// is the Hive directory column).
pub const RESERVED: &[&str] = &[
    "partition",
    "offset",
    "timestamp",
    "timestamp_type",
    "key",
    "value",
    "headers",
    "producer_id",
    "value_error",
    "dt",
];

/// Projected columns, in name order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValueSchema {
    pub fields: Vec<(String, FieldType)>,
}

impl ValueSchema {
    /// Parses a schema; the error is the message of an INVALID_CONFIG.
    pub fn parse(text: &str) -> Result<ValueSchema, String> {
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
            .map_err(|e| format!("not a JSON object of column name to type: {e}"))?;
        let mut fields = Vec::with_capacity(map.len());
        for (name, ty) in map {
            if name.is_empty() || RESERVED.contains(&name.as_str()) {
                return Err(format!(
                    "column {name:?} is one of the table's own ({})",
                    RESERVED.join(", ")
                ));
            }
            let ty = ty.as_str().and_then(FieldType::parse).ok_or_else(|| {
                format!(
                    "column {name:?} has type {ty}; expected one of bool, int32, int64, float64, utf8, timestamp[ms]"
                )
            })?;
            fields.push((name, ty));
        }
        Ok(ValueSchema { fields })
    }
}

/// The projection of a topic whose `strata.table.value.format` is `format`
/// and `strata.table.value.schema` is `schema`: None unless the format is
/// `json`; a schema that no longer parses (it was checked when set)
/// projects nothing.
pub fn projection(format: &str, schema: &str) -> Option<std::sync::Arc<ValueSchema>> {
    (format == "json").then(|| std::sync::Arc::new(ValueSchema::parse(schema).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_parse_or_name_what_is_wrong() {
        let s = ValueSchema::parse(r#"{"name": "string", "id": "int64", "at": "timestamp[ms]"}"#)
            .expect("parses");
        assert_eq!(
            s.fields,
            vec![
                ("at".to_string(), FieldType::TimestampMs),
                ("id".to_string(), FieldType::Int64),
                ("name".to_string(), FieldType::Utf8),
            ]
        );
        assert_eq!(ValueSchema::parse("{}"), Ok(ValueSchema::default()));
        for (bad, says) in [
            ("[1]", "not a JSON object"),
            ("{", "not a JSON object"),
            (r#"{"offset": "int64"}"#, "table's own"),
            (r#"{"id": "int128"}"#, "expected one of"),
            (r#"{"id": 3}"#, "expected one of"),
        ] {
            let e = ValueSchema::parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
