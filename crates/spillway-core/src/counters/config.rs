//! What the user writes for a counter namespace (`[namespaces.<name>]`): how it counts and
//! which column of the user's own table mirrors its values.

use serde::{Deserialize, Serialize};

use crate::config::check::{ConfigError, NameRule, identifier, invalid};

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
}

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
        let namespace = NamespaceSettings {
            kind: CounterKind::Sum,
            anonymous_increments: false,
            mirror: None,
        };
        let error = namespace.validate("a b").unwrap_err().to_string();
        assert!(error.contains("`namespaces.a b`"), "{error}");
        namespace.validate("video-views").unwrap();
    }
}
