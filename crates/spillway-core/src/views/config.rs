//! What the user writes for a cached view (`[views.<name>]`): the query, its key, the
//! shape of its answer, how long results stay fresh and stale, and which sinks refresh it;
//! checked at start against the sinks and the gateway's request deadline.

use std::{collections::BTreeMap, time::Duration};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::{
    check::{ConfigError, NameRule},
    read_rule::ReadRule,
    sinks::config::SinkSettings,
};

/// View names: they appear in URLs and Redis hash tags.
pub const VIEW_NAME: NameRule = NameRule {
    what: "a view name",
    max_len: 64,
    extra: "_-",
};

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
    /// The key is a member id (`sub`): the view shows that member's data, so by default only
    /// that member may read it.
    #[serde(default)]
    pub key_is_member: bool,
    /// Who may read: `public`, `member` (only the member the key is; needs
    /// `key_is_member`) or `scope:<scope>`; unset: `member` when `key_is_member`, else
    /// `public`. See [`ViewSettings::read_rule`].
    #[serde(default)]
    pub read: Option<ReadRule>,
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

impl ViewSettings {
    /// The read rule in force: the configured one, else `member` for a view keyed by
    /// member and `public` for any other.
    pub fn read_rule(&self) -> ReadRule {
        match (&self.read, self.key_is_member) {
            (Some(rule), _) => rule.clone(),
            (None, true) => ReadRule::Member,
            (None, false) => ReadRule::Public,
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

    /// Checks one `[views.<name>]` entry against the sinks and the gateway's request deadline.
    pub fn validate(
        &self,
        name: &str,
        sinks: &BTreeMap<String, SinkSettings>,
        request_deadline_ms: u64,
    ) -> Result<(), ConfigError> {
        let view = self;
        let invalid = |field: &str, reason: String| ConfigError::Invalid {
            key: if field.is_empty() {
                format!("views.{name}")
            } else {
                format!("views.{name}.{field}")
            },
            reason,
        };
        VIEW_NAME.check(&format!("views.{name}"), name)?;
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
        if view.read == Some(ReadRule::Member) && !view.key_is_member {
            return Err(invalid(
                "read",
                "\"member\" needs `key_is_member = true` (the key is the member who may read)"
                    .into(),
            ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::fixtures::{playlists_sink, view};

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
            ("sql = \"SELECT $1\"\nread = \"member\"", "views.v.read"),
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
            let error = view.validate("v", &sinks, 2_000).unwrap_err().to_string();
            assert!(error.contains(&format!("`{key}`")), "{text}: {error}");
        }
        let good = view("refreshed_by = [{ sink = \"playlists\", key_column = \"member_id\" }]");
        good.validate("member-playlists", &sinks, 2_000).unwrap();
        let error = good.validate("a b", &sinks, 2_000).unwrap_err().to_string();
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
        assert_eq!(attendance.read_rule(), ReadRule::Public);
        assert_eq!(
            settings.views["member-playlists"].read_rule(),
            ReadRule::Member
        );
        assert_eq!(settings.sinks["playlists"].read_rule(), ReadRule::Member);
        let playlists = refreshed_by_sink(&settings.views, "playlists");
        assert_eq!(playlists.len(), 1);
        assert_eq!(
            (playlists[0].0, playlists[0].2),
            ("member-playlists", "member_id")
        );
    }
}
