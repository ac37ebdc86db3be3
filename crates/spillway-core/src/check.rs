//! The checks every configuration section shares, and the error they return. This module
//! depends on nothing else in the crate: the sections of `config` and the
//! features' own settings (`counters::config`, `sinks::config`, ...) all build on it.

use std::{ops::RangeInclusive, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(Box<figment::Error>),
    #[error("configuration key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    #[error("configuration file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// A yes/no setting that may come from an environment variable: `true`/`false`, `1`/`0`,
/// or the strings `yes`/`no`, `on`/`off` (`SPILLWAY_LOCAL_STACK=1`).
pub fn flag<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Number(i64),
        Text(String),
    }
    match serde::Deserialize::deserialize(deserializer)? {
        Flag::Bool(value) => Ok(value),
        Flag::Number(0) => Ok(false),
        Flag::Number(1) => Ok(true),
        Flag::Text(text) => match text.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" | "" => Ok(false),
            other => Err(serde::de::Error::custom(format!(
                "`{other}` is not a yes/no value (use true or false)"
            ))),
        },
        Flag::Number(other) => Err(serde::de::Error::custom(format!(
            "{other} is not a yes/no value (use 1 or 0)"
        ))),
    }
}

/// "configuration key `key`: reason".
pub fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// A figment error as "configuration key `a.b`: what is wrong (where it came from)".
pub fn parse_error(error: figment::Error) -> ConfigError {
    if error.path.is_empty() {
        return ConfigError::Parse(Box::new(error));
    }
    let key = error.path.join(".").to_lowercase();
    let source = error
        .metadata
        .as_ref()
        .map(|metadata| format!(" (from {})", metadata.name))
        .unwrap_or_default();
    invalid(&key, format!("{}{source}", error.kind))
}

pub fn non_empty(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(invalid(key, "must not be empty"));
    }
    Ok(())
}

pub fn in_range(key: &str, value: u64, range: RangeInclusive<u64>) -> Result<(), ConfigError> {
    if !range.contains(&value) {
        return Err(invalid(
            key,
            format!("{value} is outside {}..={}", range.start(), range.end()),
        ));
    }
    Ok(())
}

pub fn url_scheme(key: &str, url: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some(scheme) if schemes.contains(&scheme) => Ok(()),
        _ => Err(invalid(
            key,
            format!("must be a URL starting with {}://", schemes.join(":// or ")),
        )),
    }
}

/// A SQL identifier we may interpolate (schema, table and column names cannot be bound).
pub fn identifier(key: &str, value: &str) -> Result<(), ConfigError> {
    let valid = !value.is_empty()
        && value.len() <= 63
        && value.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("`{value}` must be a lowercase identifier ([a-z_][a-z0-9_]*, at most 63)"),
        ))
    }
}

/// The shape of a name that travels in URLs, Kafka keys and Redis hash tags: 1 to `max_len`
/// ASCII letters and digits, plus the characters of `extra`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameRule {
    /// What is named, for messages: "a sink name", "an entity id".
    pub what: &'static str,
    pub max_len: usize,
    /// The punctuation allowed besides letters and digits, e.g. `"._-"`.
    pub extra: &'static str,
}

impl NameRule {
    pub fn accepts(&self, value: &str) -> bool {
        (1..=self.max_len).contains(&value.len())
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || self.extra.contains(c))
    }

    /// The rule as an anchored regular expression (ECMA-262, for JSON Schema's `pattern`):
    /// `^[A-Za-z0-9._-]{1,64}$`.
    pub fn pattern(&self) -> String {
        format!("^{}{{1,{}}}$", self.class(), self.max_len)
    }

    /// The characters of a name as a regular expression class: `[A-Za-z0-9._-]`.
    pub fn class(&self) -> String {
        // `-` last, so that it is a character and not a range.
        let (dash, others): (String, String) = self.extra.chars().partition(|c| *c == '-');
        format!("[A-Za-z0-9{others}{dash}]")
    }

    /// "a sink name is 1-64 of [A-Za-z0-9_-]".
    pub fn describe(&self) -> String {
        format!(
            "{} is 1-{} of [A-Za-z0-9{}]",
            self.what, self.max_len, self.extra
        )
    }

    /// The configuration check: `key` names the entry whose name this is.
    pub fn check(&self, key: &str, value: &str) -> Result<(), ConfigError> {
        if self.accepts(value) {
            Ok(())
        } else {
            Err(invalid(key, self.describe()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_rule_is_its_pattern() {
        let rule = NameRule {
            what: "an entity id",
            max_len: 128,
            extra: "._:-",
        };
        assert_eq!(rule.pattern(), "^[A-Za-z0-9._:-]{1,128}$");
        let rule = NameRule {
            what: "x",
            max_len: 8,
            extra: "-_",
        };
        assert_eq!(rule.pattern(), "^[A-Za-z0-9_-]{1,8}$");
    }

    #[test]
    fn schema_names_are_checked() {
        assert!(identifier("k", "test_abc_1").is_ok());
        assert!(identifier("k", "Robert'); DROP").is_err());
        assert!(identifier("k", "").is_err());
    }

    #[test]
    fn a_name_rule_accepts_its_alphabet_and_length_only() {
        let rule = NameRule {
            what: "a sink name",
            max_len: 4,
            extra: "_-",
        };
        assert!(rule.accepts("a_-1"));
        assert!(!rule.accepts(""));
        assert!(!rule.accepts("abcde"));
        assert!(!rule.accepts("a.b"));
        assert!(!rule.accepts("é"));
        let error = rule.check("sinks.x y", "x y").unwrap_err().to_string();
        assert!(error.contains("`sinks.x y`") && error.contains("1-4 of [A-Za-z0-9_-]"));
    }

    #[test]
    fn ranges_name_their_bounds() {
        let error = in_range("k", 0, 1..=5).unwrap_err().to_string();
        assert!(error.contains("0 is outside 1..=5"), "{error}");
        assert!(in_range("k", 5, 1..=5).is_ok());
    }
}
