//! Write sinks: a Kafka topic of rows (`spillway.writes.<sink>.v1`) mapped to one table.
//! The configuration says the table, its columns and types, the primary key, what a
//! duplicate key does and the batching rule. This module checks rows against it (the gateway
//! rejects a bad row before anything is published) and builds the bulk SQL the batch-writer
//! runs. Identifiers come from the validated configuration, values are always bound.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{ConfigError, identifier};

/// A sink's configuration (`[sinks.<name>]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SinkSettings {
    pub table: String,
    /// spillway creates the table at start (`CREATE TABLE IF NOT EXISTS`); otherwise the
    /// table is the user's and must exist.
    #[serde(default = "default_true")]
    pub owned: bool,
    #[serde(default = "default_primary_key")]
    pub primary_key: String,
    #[serde(default)]
    pub on_conflict: ConflictRule,
    /// With `on_conflict = "upsert"`: the columns a later write overwrites.
    #[serde(default)]
    pub upsert_columns: Vec<String>,
    /// A text column filled from the caller's JWT `sub` by the gateway.
    #[serde(default)]
    pub member_column: Option<String>,
    pub columns: BTreeMap<String, ColumnSettings>,
    #[serde(default = "default_batch_rows")]
    pub batch_max_rows: usize,
    #[serde(default = "default_batch_delay_ms")]
    pub batch_max_delay_ms: u64,
    #[serde(default = "default_batch_bytes")]
    pub batch_max_bytes: usize,
}

fn default_true() -> bool {
    true
}
fn default_primary_key() -> String {
    "id".into()
}
fn default_batch_rows() -> usize {
    5_000
}
fn default_batch_delay_ms() -> u64 {
    200
}
fn default_batch_bytes() -> usize {
    8 * 1024 * 1024
}

/// What a write whose key exists already does.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConflictRule {
    /// Keep the stored row (replays and duplicates change nothing).
    #[default]
    Ignore,
    /// Overwrite `upsert_columns`.
    Upsert,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ColumnSettings {
    #[serde(rename = "type")]
    pub kind: ColumnType,
    #[serde(default)]
    pub required: bool,
    /// Longest text value, in characters.
    #[serde(default)]
    pub max_length: Option<usize>,
    /// A missing timestamptz value becomes the time the gateway accepted the write.
    #[serde(default)]
    pub default_now: bool,
}

/// Integers travel in the protobuf `Struct` of a write event as doubles, exact below 2^53;
/// a `bigint` value must stay below this bound (checked when the write is accepted).
pub const WIRE_INTEGER_LIMIT: u64 = 9_000_000_000_000_000;

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Text,
    Bigint,
    Integer,
    Double,
    Boolean,
    Uuid,
    Timestamptz,
    Jsonb,
}

impl ColumnType {
    pub fn sql(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Bigint => "bigint",
            ColumnType::Integer => "integer",
            ColumnType::Double => "double precision",
            ColumnType::Boolean => "boolean",
            ColumnType::Uuid => "uuid",
            ColumnType::Timestamptz => "timestamptz",
            ColumnType::Jsonb => "jsonb",
        }
    }

    fn accepts(self, value: &Value) -> Result<(), String> {
        let fits = match self {
            ColumnType::Text => value.is_string(),
            ColumnType::Bigint => value
                .as_i64()
                .is_some_and(|v| v.unsigned_abs() < WIRE_INTEGER_LIMIT),
            ColumnType::Integer => value.as_i64().is_some_and(|v| i32::try_from(v).is_ok()),
            ColumnType::Double => value.is_number(),
            ColumnType::Boolean => value.is_boolean(),
            ColumnType::Uuid => value
                .as_str()
                .is_some_and(|v| uuid::Uuid::parse_str(v).is_ok()),
            ColumnType::Timestamptz => value
                .as_str()
                .is_some_and(|v| chrono::DateTime::parse_from_rfc3339(v).is_ok()),
            ColumnType::Jsonb => true,
        };
        if fits {
            Ok(())
        } else {
            Err(format!("expected {}", self.describe()))
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ColumnType::Text => "a string",
            ColumnType::Bigint => "an integer of magnitude below 9e15",
            ColumnType::Integer => "a 32-bit integer",
            ColumnType::Double => "a number",
            ColumnType::Boolean => "true or false",
            ColumnType::Uuid => "a UUID string",
            ColumnType::Timestamptz => "an RFC 3339 timestamp string",
            ColumnType::Jsonb => "any JSON",
        }
    }
}

/// A row the sink refuses, naming the column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column `{column}`: {reason}")]
pub struct RowError {
    pub column: String,
    pub reason: String,
}

fn row_error(column: &str, reason: impl Into<String>) -> RowError {
    RowError {
        column: column.to_owned(),
        reason: reason.into(),
    }
}

impl SinkSettings {
    /// Checks a caller's row and completes it: the member column from the token, a UUIDv7
    /// primary key when the body has none, `default_now` timestamps.
    pub fn accept_row(
        &self,
        mut row: Map<String, Value>,
        member: Option<&str>,
    ) -> Result<Map<String, Value>, RowError> {
        if let Some(column) = row
            .keys()
            .find(|column| !self.columns.contains_key(*column))
        {
            return Err(row_error(column, "unknown column"));
        }
        if let Some(member_column) = &self.member_column {
            if row.contains_key(member_column) {
                return Err(row_error(member_column, "is set from the caller's token"));
            }
            let member =
                member.ok_or_else(|| row_error(member_column, "needs an authenticated caller"))?;
            row.insert(member_column.clone(), Value::String(member.to_owned()));
        }
        if !row.contains_key(&self.primary_key) && self.primary_key_type() == Some(ColumnType::Uuid)
        {
            row.insert(
                self.primary_key.clone(),
                Value::String(uuid::Uuid::now_v7().to_string()),
            );
        }
        for (name, column) in &self.columns {
            if column.default_now && row.get(name).is_none_or(Value::is_null) {
                row.insert(name.clone(), Value::String(chrono::Utc::now().to_rfc3339()));
            }
            match row.get(name) {
                None | Some(Value::Null) if column.required || *name == self.primary_key => {
                    return Err(row_error(name, "is required"));
                }
                None | Some(Value::Null) => {}
                Some(value) => self.check_value(name, column, value)?,
            }
        }
        Ok(row)
    }

    /// Checks a row as it arrives from Kafka (from any producer): known columns, types,
    /// lengths, required values. Nothing is filled in.
    pub fn check_row(&self, row: &Map<String, Value>) -> Result<(), RowError> {
        if let Some(column) = row
            .keys()
            .find(|column| !self.columns.contains_key(*column))
        {
            return Err(row_error(column, "unknown column"));
        }
        for (name, column) in &self.columns {
            match row.get(name) {
                None | Some(Value::Null) if column.required || *name == self.primary_key => {
                    return Err(row_error(name, "is required"));
                }
                None | Some(Value::Null) => {}
                Some(value) => self.check_value(name, column, value)?,
            }
        }
        Ok(())
    }

    fn check_value(
        &self,
        name: &str,
        column: &ColumnSettings,
        value: &Value,
    ) -> Result<(), RowError> {
        column
            .kind
            .accepts(value)
            .map_err(|reason| row_error(name, reason))?;
        if let (Some(max), Some(text)) = (column.max_length, value.as_str())
            && text.chars().count() > max
        {
            return Err(row_error(name, format!("is longer than {max} characters")));
        }
        Ok(())
    }

    pub fn primary_key_type(&self) -> Option<ColumnType> {
        self.columns
            .get(&self.primary_key)
            .map(|column| column.kind)
    }

    /// The primary key of a row, as text (the Kafka key and the Redis marker's id).
    pub fn row_id(&self, row: &Map<String, Value>) -> Option<String> {
        match row.get(&self.primary_key)? {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        }
    }

    /// Checks an id given in a URL against the primary key's type.
    pub fn parse_id(&self, id: &str) -> Result<(), RowError> {
        let value = match self.primary_key_type() {
            Some(ColumnType::Bigint | ColumnType::Integer) => match id.parse::<i64>() {
                Ok(number) => Value::from(number),
                Err(_) => return Err(row_error(&self.primary_key, "expected an integer id")),
            },
            _ => Value::String(id.to_owned()),
        };
        let column = self
            .columns
            .get(&self.primary_key)
            .ok_or_else(|| row_error(&self.primary_key, "no such column"))?;
        self.check_value(&self.primary_key, column, &value)
    }

    fn column_list(&self) -> String {
        self.columns
            .keys()
            .map(|name| format!("\"{name}\""))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `CREATE TABLE IF NOT EXISTS` for a sink spillway owns.
    pub fn create_table_sql(&self) -> String {
        let columns: Vec<String> = self
            .columns
            .iter()
            .map(|(name, column)| {
                let not_null = if column.required || *name == self.primary_key {
                    " NOT NULL"
                } else {
                    ""
                };
                format!("\"{name}\" {}{not_null}", column.kind.sql())
            })
            .collect();
        format!(
            "CREATE TABLE IF NOT EXISTS \"{}\" ({}, PRIMARY KEY (\"{}\"))",
            self.table,
            columns.join(", "),
            self.primary_key
        )
    }

    /// One statement inserting a batch of rows given as one text array per column (`$1` is
    /// the first column in [`SinkSettings::columns`] order, see
    /// [`SinkSettings::column_arrays`]), each element cast to its column's type. Measured
    /// 1.4x faster here than one `jsonb_to_recordset` parameter (docs/benchmarks.md).
    pub fn insert_sql(&self) -> String {
        let conflict = match self.on_conflict {
            ConflictRule::Ignore => "DO NOTHING".to_owned(),
            ConflictRule::Upsert => format!(
                "DO UPDATE SET {}",
                self.upsert_columns
                    .iter()
                    .map(|column| format!("\"{column}\" = EXCLUDED.\"{column}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let arrays: Vec<String> = (1..=self.columns.len())
            .map(|n| format!("${n}::text[]"))
            .collect();
        let casts: Vec<String> = self
            .columns
            .iter()
            .map(|(name, column)| format!("x.\"{name}\"::{}", column.kind.sql()))
            .collect();
        format!(
            "INSERT INTO \"{table}\" ({columns}) SELECT {casts} FROM UNNEST({arrays}) AS x({columns}) \
             ON CONFLICT (\"{key}\") {conflict}",
            table = self.table,
            columns = self.column_list(),
            casts = casts.join(", "),
            arrays = arrays.join(", "),
            key = self.primary_key,
        )
    }

    /// The parameters of [`SinkSettings::insert_sql`]: for each column, every row's value as
    /// text (`None` for null or absent; JSON text for `jsonb`).
    pub fn column_arrays(&self, rows: &[&Map<String, Value>]) -> Vec<Vec<Option<String>>> {
        self.columns
            .iter()
            .map(|(name, column)| {
                rows.iter()
                    .map(|row| column_text(column.kind, row.get(name)))
                    .collect()
            })
            .collect()
    }

    /// One statement deleting every id of `$1` (a JSON array of ids as text).
    pub fn delete_sql(&self) -> String {
        let key_type = self.primary_key_type().map_or("text", ColumnType::sql);
        format!(
            "DELETE FROM \"{}\" WHERE \"{}\" IN (SELECT (jsonb_array_elements_text($1::jsonb))::{key_type})",
            self.table, self.primary_key
        )
    }

    /// The stored row with this id, as JSON text in column `row`.
    pub fn select_sql(&self) -> String {
        let key_type = self.primary_key_type().map_or("text", ColumnType::sql);
        format!(
            "SELECT row_to_json(t)::text AS row FROM \"{}\" AS t WHERE \"{}\" = $1::{key_type}",
            self.table, self.primary_key
        )
    }
}

/// A value as the text its column's type reads: strings as they are, `jsonb` as JSON
/// text, numbers and booleans in their JSON spelling, null as `None`.
fn column_text(kind: ColumnType, value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(text) if kind != ColumnType::Jsonb => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

/// Checks a sink's configuration: identifiers, the key, the upsert and member columns.
pub fn validate_sink(name: &str, sink: &SinkSettings) -> Result<(), ConfigError> {
    let key = format!("sinks.{name}");
    let invalid = |what: &str, reason: String| ConfigError::Invalid {
        key: format!("{key}.{what}"),
        reason,
    };
    let valid_name = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid_name {
        return Err(invalid("", "a sink name is 1-64 of [A-Za-z0-9_-]".into()));
    }
    identifier(&format!("{key}.table"), &sink.table)?;
    for column in sink.columns.keys() {
        identifier(&format!("{key}.columns.{column}"), column)?;
    }
    match sink.primary_key_type() {
        Some(ColumnType::Uuid | ColumnType::Text | ColumnType::Bigint | ColumnType::Integer) => {}
        Some(other) => {
            return Err(invalid(
                "primary_key",
                format!("a {} key is not supported", other.sql()),
            ));
        }
        None => {
            return Err(invalid(
                "primary_key",
                format!("`{}` is not one of the columns", sink.primary_key),
            ));
        }
    }
    for column in &sink.upsert_columns {
        if !sink.columns.contains_key(column) {
            return Err(invalid(
                "upsert_columns",
                format!("`{column}` is not one of the columns"),
            ));
        }
    }
    if sink.on_conflict == ConflictRule::Upsert && sink.upsert_columns.is_empty() {
        return Err(invalid(
            "upsert_columns",
            "name the columns an upsert overwrites".into(),
        ));
    }
    if let Some(member) = &sink.member_column
        && sink.columns.get(member).map(|c| c.kind) != Some(ColumnType::Text)
    {
        return Err(invalid(
            "member_column",
            format!("`{member}` must be a text column"),
        ));
    }
    if !(1..=100_000).contains(&sink.batch_max_rows) {
        return Err(invalid("batch_max_rows", "must be 1..=100000".into()));
    }
    if !(1..=60_000).contains(&sink.batch_max_delay_ms) {
        return Err(invalid("batch_max_delay_ms", "must be 1..=60000".into()));
    }
    Ok(())
}

/// A `google.protobuf.Struct` (the wire form of a row) from a JSON object.
pub fn to_struct(row: &Map<String, Value>) -> pbjson_types::Struct {
    pbjson_types::Struct {
        fields: row
            .iter()
            .map(|(name, value)| (name.clone(), to_proto_value(value)))
            .collect(),
    }
}

fn to_proto_value(value: &Value) -> pbjson_types::Value {
    use pbjson_types::value::Kind;
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(flag) => Kind::BoolValue(*flag),
        Value::Number(number) => Kind::NumberValue(number.as_f64().unwrap_or_default()),
        Value::String(text) => Kind::StringValue(text.clone()),
        Value::Array(items) => Kind::ListValue(pbjson_types::ListValue {
            values: items.iter().map(to_proto_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(to_struct(map)),
    };
    pbjson_types::Value { kind: Some(kind) }
}

/// A JSON object from a `google.protobuf.Struct`; whole numbers come back as integers.
pub fn from_struct(row: &pbjson_types::Struct) -> Map<String, Value> {
    row.fields
        .iter()
        .map(|(name, value)| (name.clone(), from_proto_value(value)))
        .collect()
}

fn from_proto_value(value: &pbjson_types::Value) -> Value {
    use pbjson_types::value::Kind;
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(flag)) => Value::Bool(*flag),
        Some(Kind::NumberValue(number))
            if number.fract() == 0.0 && number.abs() < WIRE_INTEGER_LIMIT as f64 =>
        {
            Value::from(*number as i64)
        }
        Some(Kind::NumberValue(number)) => Value::from(*number),
        Some(Kind::StringValue(text)) => Value::String(text.clone()),
        Some(Kind::ListValue(list)) => {
            Value::Array(list.values.iter().map(from_proto_value).collect())
        }
        Some(Kind::StructValue(inner)) => Value::Object(from_struct(inner)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn playlists() -> SinkSettings {
        toml::from_str(
            r#"
            table = "playlists"
            member_column = "member_id"
            [columns]
            id = { type = "uuid" }
            member_id = { type = "text", max_length = 128 }
            title = { type = "text", required = true, max_length = 10 }
            visibility = { type = "text" }
            created_at = { type = "timestamptz", default_now = true }
            "#,
        )
        .unwrap()
    }

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn a_row_is_completed_from_the_token_with_a_fresh_id() {
        let row = playlists()
            .accept_row(object(json!({"title": "Mix"})), Some("alice"))
            .unwrap();
        assert_eq!(row["member_id"], "alice");
        assert!(uuid::Uuid::parse_str(row["id"].as_str().unwrap()).is_ok());
        assert!(row["created_at"].is_string());
    }

    #[test]
    fn bad_rows_name_their_column() {
        let sink = playlists();
        let cases = [
            (json!({"title": "Mix", "colour": "red"}), "colour"),
            (json!({}), "title"),
            (json!({"title": 5}), "title"),
            (json!({"title": "far too long a title"}), "title"),
            (json!({"title": "Mix", "member_id": "mallory"}), "member_id"),
            (json!({"title": "Mix", "id": "not-a-uuid"}), "id"),
            (
                json!({"title": "Mix", "created_at": "yesterday"}),
                "created_at",
            ),
        ];
        for (row, column) in cases {
            let error = sink
                .accept_row(object(row.clone()), Some("alice"))
                .unwrap_err();
            assert_eq!(error.column, column, "{row}: {error}");
        }
    }

    #[test]
    fn the_sql_binds_values_and_quotes_identifiers() {
        let sink = playlists();
        assert!(
            sink.insert_sql()
                .contains("FROM UNNEST($1::text[], $2::text[]")
        );
        assert!(sink.insert_sql().contains("x.\"id\"::uuid"));
        assert!(
            sink.insert_sql()
                .ends_with("ON CONFLICT (\"id\") DO NOTHING")
        );
        assert!(sink.create_table_sql().contains("\"title\" text NOT NULL"));
        assert!(sink.delete_sql().contains("::uuid"));
        validate_sink("playlists", &sink).unwrap();
    }

    #[test]
    fn column_arrays_hold_each_value_as_its_column_reads_it() {
        let sink = playlists();
        let first = object(json!({"id": "0190", "title": "a \"b\"", "member_id": null}));
        let second = object(json!({"id": "0191", "title": "c"}));
        let arrays = sink.column_arrays(&[&first, &second]);
        assert_eq!(arrays.len(), sink.columns.len());
        let column = |name: &str| {
            let index = sink.columns.keys().position(|key| key == name).unwrap();
            arrays[index].clone()
        };
        assert_eq!(
            column("title"),
            [Some("a \"b\"".to_owned()), Some("c".to_owned())]
        );
        assert_eq!(column("member_id"), [None, None]);
        assert_eq!(
            column("id"),
            [Some("0190".to_owned()), Some("0191".to_owned())]
        );
    }

    #[test]
    fn a_bigint_must_survive_the_wire_form_exactly() {
        let limit = WIRE_INTEGER_LIMIT as i64;
        assert!(ColumnType::Bigint.accepts(&json!(limit - 1)).is_ok());
        assert!(ColumnType::Bigint.accepts(&json!(-(limit - 1))).is_ok());
        assert!(ColumnType::Bigint.accepts(&json!(limit)).is_err());
        assert!(ColumnType::Bigint.accepts(&json!(i64::MIN)).is_err());
        let row = object(json!({"n": limit - 1}));
        assert_eq!(from_struct(&to_struct(&row)), row);
    }

    #[test]
    fn column_text_spells_numbers_booleans_and_json() {
        assert_eq!(
            column_text(ColumnType::Bigint, Some(&json!(42))),
            Some("42".into())
        );
        assert_eq!(
            column_text(ColumnType::Double, Some(&json!(1.5))),
            Some("1.5".into())
        );
        assert_eq!(
            column_text(ColumnType::Boolean, Some(&json!(true))),
            Some("true".into())
        );
        assert_eq!(
            column_text(ColumnType::Jsonb, Some(&json!("s"))),
            Some("\"s\"".into())
        );
        assert_eq!(
            column_text(ColumnType::Jsonb, Some(&json!({"a": [1]}))),
            Some("{\"a\":[1]}".into())
        );
        assert_eq!(column_text(ColumnType::Text, Some(&Value::Null)), None);
        assert_eq!(column_text(ColumnType::Text, None), None);
    }

    #[test]
    fn rows_survive_the_wire_form() {
        let row = object(
            json!({"a": "x", "b": 42, "c": true, "d": null, "e": 1.5, "f": {"g": [1, "h"]}}),
        );
        assert_eq!(from_struct(&to_struct(&row)), row);
    }
}
