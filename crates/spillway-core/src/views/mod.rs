//! Cached views: a named, parameterised SQL query whose JSON result the gateway serves from
//! Redis, falling back to the database on a miss (`GET /v1/views/{view}/{key}`).
//!
//! This module holds what the user writes (`[views.<name>]`), checks it at start, parses a
//! caller's key into the typed value bound as `$1`, and builds the SQL that turns the query's
//! rows into JSON. [`store`] is the cache itself (Redis values, reload locks, generations) and
//! the database load, shared by the gateway (reads) and the batch-writer (refreshes after a
//! commit). It is not the HTTP side nor the single-flight of one gateway: those live in the
//! gateway.

pub mod store;

use std::{collections::BTreeMap, time::Duration};

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{config::ConfigError, sinks::SinkSettings};

/// The column of the load query that carries the JSON result.
pub const BODY_COLUMN: &str = "body";
/// The column of a sink's `RETURNING` clause that carries the view keys of a changed row.
pub const RETURNED_KEYS_COLUMN: &str = "view_keys";

/// One view (`[views.<name>]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ViewSettings {
    /// One SELECT whose only parameter is the key, `$1`; values are always bound.
    pub sql: String,
    /// The SQL type `$1` is bound as: `text`, `bigint` or `uuid`.
    #[serde(default)]
    pub key_type: KeyType,
    /// Longest text key, in characters.
    #[serde(default = "default_key_max_length")]
    pub key_max_length: usize,
    /// `rows`: a JSON array of the rows; `one`: the first row as an object (404 when none).
    #[serde(default)]
    pub result: ResultShape,
    /// How long a loaded result is served as fresh ...
    #[serde(default = "default_ttl_seconds")]
    pub ttl_seconds: u64,
    /// ... give or take this share, so keys loaded together do not expire together.
    #[serde(default = "default_ttl_jitter_percent")]
    pub ttl_jitter_percent: u64,
    /// After that, the old result is still served for this long while one request reloads
    /// it (or while the database is down); then the key is gone.
    #[serde(default = "default_stale_seconds")]
    pub stale_seconds: u64,
    /// The longest one reload may take: the query's bound and the reload lock's lifetime.
    #[serde(default = "default_reload_timeout_ms")]
    pub reload_timeout_ms: u64,
    /// The sinks whose commits refresh this view, and the column that is the view's key.
    #[serde(default)]
    pub refreshed_by: Vec<RefreshSettings>,
}

fn default_key_max_length() -> usize {
    128
}
fn default_ttl_seconds() -> u64 {
    300
}
fn default_ttl_jitter_percent() -> u64 {
    10
}
fn default_stale_seconds() -> u64 {
    30
}
fn default_reload_timeout_ms() -> u64 {
    1_000
}

/// `refreshed_by = [{ sink = "playlists", key_column = "member_id" }]`: a committed row of
/// `sink` refreshes the view's key equal to the row's `key_column`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RefreshSettings {
    pub sink: String,
    pub key_column: String,
}

/// The type of a view's key, bound as `$1`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    #[default]
    Text,
    Bigint,
    Uuid,
}

/// What a view answers.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ResultShape {
    /// Every row, as a JSON array of objects (`[]` when none).
    #[default]
    Rows,
    /// The first row as a JSON object; no row is a 404.
    One,
}

/// A key a caller sent that the view refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("view key `{key}`: {reason}")]
pub struct KeyError {
    pub key: String,
    pub reason: String,
}

/// A checked key: its canonical text (the cache key) and the value bound as `$1`.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewKey {
    text: String,
    value: KeyValue,
}

#[derive(Debug, Clone, PartialEq)]
enum KeyValue {
    Text(String),
    Bigint(i64),
    Uuid(uuid::Uuid),
}

impl ViewKey {
    /// The canonical text (`007` and `7` are one bigint key).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value bound as `$1`, typed.
    pub fn bind_value(&self) -> sea_orm::Value {
        match &self.value {
            KeyValue::Text(text) => text.clone().into(),
            KeyValue::Bigint(number) => (*number).into(),
            KeyValue::Uuid(id) => (*id).into(),
        }
    }
}

/// Text keys are 1..=`key_max_length` of these (no `{`, `}` or `/`, so they sit safely in a
/// URL segment and inside a Redis hash tag).
fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-')
}

impl ViewSettings {
    /// Checks a caller's key against the view's type and pattern.
    pub fn parse_key(&self, raw: &str) -> Result<ViewKey, KeyError> {
        let refuse = |reason: String| KeyError {
            key: raw.chars().take(40).collect(),
            reason,
        };
        let value = match self.key_type {
            KeyType::Text => {
                let length = raw.chars().count();
                if !(1..=self.key_max_length).contains(&length) || !raw.chars().all(is_key_char) {
                    return Err(refuse(format!(
                        "must be 1-{} characters of [A-Za-z0-9._:@-]",
                        self.key_max_length
                    )));
                }
                KeyValue::Text(raw.to_owned())
            }
            KeyType::Bigint => KeyValue::Bigint(
                raw.parse()
                    .map_err(|_| refuse("must be a 64-bit integer".into()))?,
            ),
            KeyType::Uuid => KeyValue::Uuid(
                uuid::Uuid::parse_str(raw).map_err(|_| refuse("must be a UUID".into()))?,
            ),
        };
        let text = match &value {
            KeyValue::Text(text) => text.clone(),
            KeyValue::Bigint(number) => number.to_string(),
            KeyValue::Uuid(id) => id.hyphenated().to_string(),
        };
        Ok(ViewKey { text, value })
    }

    /// The key of the view a committed row maps to, when its `column` holds a valid key.
    pub fn key_of_row(&self, row: &Map<String, Value>, column: &str) -> Option<ViewKey> {
        let raw = match row.get(column)? {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            _ => return None,
        };
        self.parse_key(&raw).ok()
    }

    /// The statement a load runs: the view's query with its rows turned into one JSON text in
    /// column `body` (NULL for `one` without a row). `$1` is the key.
    pub fn load_sql(&self) -> String {
        let query = self.sql.trim();
        match self.result {
            ResultShape::Rows => format!(
                "SELECT coalesce(json_agg(v), '[]'::json)::text AS {BODY_COLUMN} FROM ({query}) AS v"
            ),
            ResultShape::One => format!(
                "SELECT (SELECT row_to_json(v) FROM ({query}) AS v LIMIT 1)::text AS {BODY_COLUMN}"
            ),
        }
    }

    /// How long a result just loaded is fresh: the TTL with its jitter.
    pub fn fresh_for(&self) -> Duration {
        let ttl_ms = self.ttl_seconds * 1_000;
        let spread = ttl_ms * self.ttl_jitter_percent / 100;
        let jittered = rand::rng().random_range(ttl_ms - spread..=ttl_ms + spread);
        Duration::from_millis(jittered.max(1))
    }

    /// How long stale results are kept after they stop being fresh.
    pub fn stale_for(&self) -> Duration {
        Duration::from_secs(self.stale_seconds)
    }

    pub fn reload_timeout(&self) -> Duration {
        Duration::from_millis(self.reload_timeout_ms)
    }
}

/// ` RETURNING json_build_object('c', "c", …)::text AS view_keys`: appended to a sink's
/// INSERT and DELETE so the batch-writer learns which view keys its commit changed.
pub fn returning_clause<'a>(columns: impl IntoIterator<Item = &'a str>) -> String {
    let pairs: Vec<String> = columns
        .into_iter()
        .map(|column| format!("'{column}', \"{column}\""))
        .collect();
    format!(
        " RETURNING json_build_object({})::text AS {RETURNED_KEYS_COLUMN}",
        pairs.join(", ")
    )
}

/// The views a sink's commits refresh, with the column that is each one's key.
pub fn refreshed_by_sink<'a>(
    views: &'a BTreeMap<String, ViewSettings>,
    sink: &str,
) -> Vec<(&'a str, &'a ViewSettings, &'a str)> {
    views
        .iter()
        .flat_map(|(name, view)| {
            view.refreshed_by
                .iter()
                .filter(move |refresh| refresh.sink == sink)
                .map(move |refresh| (name.as_str(), view, refresh.key_column.as_str()))
        })
        .collect()
}

/// Checks one `[views.<name>]` entry against the sinks and the gateway's request deadline.
pub fn validate_view(
    name: &str,
    view: &ViewSettings,
    sinks: &BTreeMap<String, SinkSettings>,
    request_deadline_ms: u64,
) -> Result<(), ConfigError> {
    let invalid = |field: &str, reason: String| ConfigError::Invalid {
        key: if field.is_empty() {
            format!("views.{name}")
        } else {
            format!("views.{name}.{field}")
        },
        reason,
    };
    let valid_name = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid_name {
        return Err(invalid("", "a view name is 1-64 of [A-Za-z0-9_-]".into()));
    }
    check_sql(&view.sql).map_err(|reason| invalid("sql", reason))?;
    for (field, value, min, max) in [
        ("key_max_length", view.key_max_length as u64, 1, 512),
        ("ttl_seconds", view.ttl_seconds, 1, 7 * 24 * 3_600),
        ("ttl_jitter_percent", view.ttl_jitter_percent, 0, 50),
        ("stale_seconds", view.stale_seconds, 0, 24 * 3_600),
        (
            "reload_timeout_ms",
            view.reload_timeout_ms,
            50,
            request_deadline_ms.saturating_sub(1),
        ),
    ] {
        if !(min..=max).contains(&value) {
            return Err(invalid(field, format!("{value} is outside {min}..={max}")));
        }
    }
    for refresh in &view.refreshed_by {
        let Some(sink) = sinks.get(&refresh.sink) else {
            return Err(invalid(
                "refreshed_by",
                format!("`{}` is not a configured sink", refresh.sink),
            ));
        };
        if !sink.columns.contains_key(&refresh.key_column) {
            return Err(invalid(
                "refreshed_by",
                format!(
                    "`{}` is not a column of sink `{}`",
                    refresh.key_column, refresh.sink
                ),
            ));
        }
    }
    Ok(())
}

/// One statement whose only parameter is `$1`.
fn check_sql(sql: &str) -> Result<(), String> {
    if sql.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if sql.contains(';') {
        return Err("one statement, without `;`".into());
    }
    let mut placeholders = Vec::new();
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        let digits: String = rest[at + 1..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if !digits.is_empty() {
            placeholders.push(digits);
        }
        rest = &rest[at + 1..];
    }
    if !placeholders.iter().any(|p| p == "1") {
        return Err("must use the key as `$1`".into());
    }
    if let Some(other) = placeholders.iter().find(|p| *p != "1") {
        return Err(format!("`${other}`: the key `$1` is the only parameter"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(extra: &str) -> ViewSettings {
        toml::from_str(&format!(
            "sql = \"SELECT id, title FROM playlists WHERE member_id = $1\"\n{extra}"
        ))
        .unwrap()
    }

    fn playlists_sink() -> BTreeMap<String, SinkSettings> {
        let sink: SinkSettings = toml::from_str(
            "table = \"playlists\"\n[columns]\nid = { type = \"uuid\" }\nmember_id = { type = \"text\" }\n",
        )
        .unwrap();
        BTreeMap::from([("playlists".to_owned(), sink)])
    }

    #[test]
    fn keys_are_checked_against_their_type_and_made_canonical() {
        let text = view("");
        assert_eq!(
            text.parse_key("ada@example.org").unwrap().as_str(),
            "ada@example.org"
        );
        assert!(text.parse_key("").is_err());
        assert!(text.parse_key("a b").is_err());
        assert!(text.parse_key("{x}").is_err());
        assert!(text.parse_key(&"a".repeat(129)).is_err());
        let number = view("key_type = \"bigint\"");
        assert_eq!(number.parse_key("007").unwrap().as_str(), "7");
        assert_eq!(
            number.parse_key("7").unwrap().bind_value(),
            sea_orm::Value::from(7i64)
        );
        assert!(number.parse_key("seven").is_err());
        let id = view("key_type = \"uuid\"");
        let upper = "0190A8E2-5C7B-7C3E-8B2A-0123456789AB";
        assert_eq!(id.parse_key(upper).unwrap().as_str(), upper.to_lowercase());
        assert!(id.parse_key("not-a-uuid").is_err());
    }

    #[test]
    fn a_row_maps_to_its_key_through_the_key_column() {
        let view = view("");
        let row = serde_json::json!({"member_id": "ada", "n": 5, "bad": "a b"});
        let row = row.as_object().unwrap();
        assert_eq!(view.key_of_row(row, "member_id").unwrap().as_str(), "ada");
        assert_eq!(view.key_of_row(row, "n").unwrap().as_str(), "5");
        assert!(view.key_of_row(row, "bad").is_none());
        assert!(view.key_of_row(row, "missing").is_none());
    }

    #[test]
    fn the_load_wraps_the_query_into_one_json_text() {
        let rows = view("").load_sql();
        assert!(
            rows.starts_with(
                "SELECT coalesce(json_agg(v), '[]'::json)::text AS body FROM (SELECT id"
            )
        );
        let one = view("result = \"one\"").load_sql();
        assert!(one.contains("row_to_json(v)") && one.contains("LIMIT 1"));
    }

    #[test]
    fn the_ttl_jitters_within_its_share() {
        let view = view("ttl_seconds = 100\nttl_jitter_percent = 10");
        for _ in 0..100 {
            let fresh = view.fresh_for().as_millis();
            assert!((90_000..=110_000).contains(&fresh), "{fresh}");
        }
    }

    #[test]
    fn bad_views_name_their_key() {
        let sinks = playlists_sink();
        let cases = [
            ("sql = \"SELECT 1\"", "views.v.sql"),
            (
                "sql = \"SELECT * FROM t WHERE a = $1 AND b = $2\"",
                "views.v.sql",
            ),
            (
                "sql = \"SELECT * FROM t WHERE a = $1; DROP TABLE t\"",
                "views.v.sql",
            ),
            (
                "sql = \"SELECT $1\"\nttl_seconds = 0",
                "views.v.ttl_seconds",
            ),
            (
                "sql = \"SELECT $1\"\nreload_timeout_ms = 5000",
                "views.v.reload_timeout_ms",
            ),
            (
                "sql = \"SELECT $1\"\nrefreshed_by = [{ sink = \"nope\", key_column = \"member_id\" }]",
                "views.v.refreshed_by",
            ),
            (
                "sql = \"SELECT $1\"\nrefreshed_by = [{ sink = \"playlists\", key_column = \"owner\" }]",
                "views.v.refreshed_by",
            ),
        ];
        for (text, key) in cases {
            let view: ViewSettings = toml::from_str(text).unwrap();
            let error = validate_view("v", &view, &sinks, 2_000)
                .unwrap_err()
                .to_string();
            assert!(error.contains(&format!("`{key}`")), "{text}: {error}");
        }
        let good = view("refreshed_by = [{ sink = \"playlists\", key_column = \"member_id\" }]");
        validate_view("member-playlists", &good, &sinks, 2_000).unwrap();
        let error = validate_view("a b", &good, &sinks, 2_000)
            .unwrap_err()
            .to_string();
        assert!(error.contains("`views.a b`"), "{error}");
    }

    #[test]
    fn the_sample_configuration_has_both_sample_views() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/spillway.toml");
        let settings = crate::config::Settings::load_from(Some(path)).unwrap();
        let attendance = &settings.views["lecture-attendance"];
        assert_eq!(attendance.key_type, KeyType::Bigint);
        assert_eq!(attendance.result, ResultShape::One);
        let playlists = refreshed_by_sink(&settings.views, "playlists");
        assert_eq!(playlists.len(), 1);
        assert_eq!(
            (playlists[0].0, playlists[0].2),
            ("member-playlists", "member_id")
        );
    }

    #[test]
    fn the_returning_clause_names_the_key_columns() {
        assert_eq!(
            returning_clause(["member_id"]),
            " RETURNING json_build_object('member_id', \"member_id\")::text AS view_keys"
        );
    }
}
