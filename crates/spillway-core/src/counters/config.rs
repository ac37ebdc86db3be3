//! What the user writes for a counter namespace (`[namespaces.<name>]`): how it counts and
//! which column of the user's own table mirrors its values.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::check::{ConfigError, NameRule, identifier, in_range, invalid};

/// Namespace names: they appear in URLs, Kafka keys and Redis hash tags.
pub const NAMESPACE_NAME: NameRule = NameRule {
    what: "a namespace name",
    max_len: 64,
    extra: "._-",
};

/// Entity ids (`/v1/counters/{namespace}/{entity_id}`).
pub const ENTITY_ID: NameRule = NameRule {
    what: "an entity id",
    max_len: 128,
    extra: "._:-",
};

/// How a namespace counts.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CounterKind {
    /// Each member counts at most once and can leave (likes).
    Distinct,
    /// Increments add up (views).
    Sum,
}

/// A counter namespace.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct NamespaceSettings {
    pub kind: CounterKind,
    /// A `sum` namespace whose increments need no token (view counts from visitors). Off by
    /// default: an increment then needs a member. Likes always need one.
    #[serde(default)]
    pub anonymous_increments: bool,
    /// Also keep a column of the user's own table current.
    #[serde(default)]
    pub mirror: Option<MirrorSettings>,
    /// How long an applied event's id is remembered: an event re-sent with the same id (an
    /// Idempotency-Key retried, an outside producer's retry) within it counts once. Each
    /// remembered id costs about 100 bytes in Redis and a few in PostgreSQL; 0 keeps none
    /// (only the consumer's own replays are then absorbed).
    #[serde(default = "default_dedupe_window_seconds")]
    pub dedupe_window_seconds: u64,
}

/// 24 hours, the window payment APIs give an Idempotency-Key.
fn default_dedupe_window_seconds() -> u64 {
    24 * 3_600
}

/// The longest dedupe window: 30 days.
const MAX_DEDUPE_WINDOW_SECONDS: u64 = 30 * 24 * 3_600;

/// `UPDATE <table> SET <column> = value WHERE <key_column> = entity_id::<key_type>`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MirrorSettings {
    pub table: String,
    pub column: String,
    #[serde(default = "default_key_column")]
    pub key_column: String,
    /// The SQL type of the key column: `text`, `bigint` or `uuid`.
    #[serde(default = "default_key_type")]
    pub key_type: String,
}

fn default_key_column() -> String {
    "id".into()
}

fn default_key_type() -> String {
    "text".into()
}

impl NamespaceSettings {
    pub fn dedupe_window(&self) -> Duration {
        Duration::from_secs(self.dedupe_window_seconds)
    }

    /// Checks one `[namespaces.<name>]` entry.
    pub fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let key = format!("namespaces.{name}");
        NAMESPACE_NAME.check(&key, name)?;
        if self.anonymous_increments && self.kind != CounterKind::Sum {
            return Err(invalid(
                &format!("{key}.anonymous_increments"),
                "only a `sum` namespace takes increments; a like always needs a member",
            ));
        }
        in_range(
            &format!("{key}.dedupe_window_seconds"),
            self.dedupe_window_seconds,
            0..=MAX_DEDUPE_WINDOW_SECONDS,
        )?;
        if let Some(mirror) = &self.mirror {
            identifier(&format!("{key}.mirror.table"), &mirror.table)?;
            identifier(&format!("{key}.mirror.column"), &mirror.column)?;
            identifier(&format!("{key}.mirror.key_column"), &mirror.key_column)?;
            if !["text", "bigint", "uuid"].contains(&mirror.key_type.as_str()) {
                return Err(invalid(
                    &format!("{key}.mirror.key_type"),
                    "must be text, bigint or uuid",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_ids_follow_the_documented_alphabet() {
        assert!(ENTITY_ID.accepts("video:42_a-b.c"));
        assert!(ENTITY_ID.accepts(&"a".repeat(128)));
        assert!(!ENTITY_ID.accepts(""));
        assert!(!ENTITY_ID.accepts(&"a".repeat(129)));
        assert!(!ENTITY_ID.accepts("a b"));
        assert!(!ENTITY_ID.accepts("é"));
        assert!(!ENTITY_ID.accepts("a/b"));
    }

    #[test]
    fn a_bad_namespace_names_its_key() {
        let namespace: NamespaceSettings = toml::from_str("kind = \"sum\"").unwrap();
        assert_eq!(namespace.dedupe_window(), Duration::from_secs(86_400));
        let error = namespace.validate("a b").unwrap_err().to_string();
        assert!(error.contains("`namespaces.a b`"), "{error}");
        namespace.validate("video-views").unwrap();
    }
}
