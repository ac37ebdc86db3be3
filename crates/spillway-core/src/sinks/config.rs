//! What the user writes for a write sink (`[sinks.<name>]`): the table, its columns and
//! their types, the primary key, what a duplicate key does and the batching rule; and the
//! checks of it at start. What a row must look like is in [`super::row`], the SQL built from
//! it in [`super::sql`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    check::{ConfigError, NameRule, identifier, in_range},
    read_rule::ReadRule,
};

/// Sink names: they appear in URLs, topic names and Redis hash tags.
pub const SINK_NAME: NameRule = NameRule {
    what: "a sink name",
    max_len: 64,
    extra: "_-",
};

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
    /// Who may read a row (`GET /v1/writes/<sink>/<id>`): `public`, `member` (only the
    /// member in `member_column`) or `scope:<scope>`; unset: `member` when the sink has a
    /// member column, else `public`. See [`SinkSettings::read_rule`].
    #[serde(default)]
    pub read: Option<ReadRule>,
    pub columns: BTreeMap<String, ColumnSettings>,
    #[serde(default = "default_batch_rows")]
    pub batch_max_rows: usize,
    #[serde(default = "default_batch_delay_ms")]
    pub batch_max_delay_ms: u64,
    #[serde(default = "default_batch_bytes")]
    pub batch_max_bytes: usize,
    /// The longest a pending-write marker lives (default 1 hour): after it, a read shows the
    /// table even if the batch-writer has not committed the write yet. Keep it above the
    /// views' `ttl_seconds + stale_seconds`: under `maxmemory-policy volatile-ttl` Redis
    /// evicts the keys nearest to expiry first, and those should be views.
    #[serde(default = "default_pending_ttl_seconds")]
    pub pending_ttl_seconds: u64,
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
fn default_pending_ttl_seconds() -> u64 {
    3_600
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

    pub(crate) fn accepts(self, value: &Value) -> Result<(), String> {
        let fits = match self {
            // PostgreSQL's text cannot hold U+0000: the row would fail in the batch-writer.
            ColumnType::Text => value.as_str().is_some_and(|text| !text.contains('\0')),
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

    pub(crate) fn describe(self) -> &'static str {
        match self {
            ColumnType::Text => "a string without U+0000",
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

impl SinkSettings {
    /// The read rule in force: the configured one, else `member` for a sink with a member
    /// column and `public` for one without.
    pub fn read_rule(&self) -> ReadRule {
        match (&self.read, &self.member_column) {
            (Some(rule), _) => rule.clone(),
            (None, Some(_)) => ReadRule::Member,
            (None, None) => ReadRule::Public,
        }
    }

    pub fn pending_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.pending_ttl_seconds)
    }

    pub fn primary_key_type(&self) -> Option<ColumnType> {
        self.columns
            .get(&self.primary_key)
            .map(|column| column.kind)
    }

    /// Checks a sink's configuration: identifiers, the key, the upsert and member columns.
    pub fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let sink = self;
        let key = format!("sinks.{name}");
        let invalid = |what: &str, reason: String| ConfigError::Invalid {
            key: format!("{key}.{what}"),
            reason,
        };
        SINK_NAME.check(&key, name)?;
        identifier(&format!("{key}.table"), &sink.table)?;
        for column in sink.columns.keys() {
            identifier(&format!("{key}.columns.{column}"), column)?;
        }
        match sink.primary_key_type() {
            Some(
                ColumnType::Uuid | ColumnType::Text | ColumnType::Bigint | ColumnType::Integer,
            ) => {}
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
        if sink.read == Some(ReadRule::Member) && sink.member_column.is_none() {
            return Err(invalid(
                "read",
                "\"member\" needs a `member_column` saying whose each row is".into(),
            ));
        }
        if !(1..=100_000).contains(&sink.batch_max_rows) {
            return Err(invalid("batch_max_rows", "must be 1..=100000".into()));
        }
        in_range(
            &format!("{key}.pending_ttl_seconds"),
            sink.pending_ttl_seconds,
            1..=86_400,
        )?;
        if !(1..=60_000).contains(&sink.batch_max_delay_ms) {
            return Err(invalid("batch_max_delay_ms", "must be 1..=60000".into()));
        }
        Ok(())
    }
}
