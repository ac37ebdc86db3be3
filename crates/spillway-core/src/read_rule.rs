//! [`ReadRule`]: who may read a sink's rows or a view's results (`read = "public" |
//! "member" | "scope:<scope>"` under `[sinks.<name>]` and `[views.<name>]`). A leaf like
//! [`crate::secret`]: the sinks and the views use it, the gateway enforces it.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Who may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadRule {
    /// Anyone, without a token.
    Public,
    /// Only the member the row belongs to (a sink's `member_column`) or the member the key
    /// is (a view with `key_is_member = true`); a bearer token is required.
    Member,
    /// Any member whose token holds this scope (`scope:reports:read`).
    Scope(String),
}

impl FromStr for ReadRule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "public" => Ok(Self::Public),
            "member" => Ok(Self::Member),
            _ => match text.strip_prefix("scope:") {
                Some(scope) if !scope.is_empty() && scope.bytes().all(|b| b.is_ascii_graphic()) => {
                    Ok(Self::Scope(scope.to_owned()))
                }
                _ => Err(format!(
                    "`{text}` is not a read rule: use \"public\", \"member\" or \"scope:<scope>\""
                )),
            },
        }
    }
}

impl fmt::Display for ReadRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Public => f.write_str("public"),
            Self::Member => f.write_str("member"),
            Self::Scope(scope) => write!(f, "scope:{scope}"),
        }
    }
}

impl Serialize for ReadRule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ReadRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_and_print_as_written() {
        for text in ["public", "member", "scope:reports:read"] {
            let rule: ReadRule = text.parse().unwrap();
            assert_eq!(rule.to_string(), text);
        }
        assert_eq!(
            "scope:a".parse::<ReadRule>().unwrap(),
            ReadRule::Scope("a".into())
        );
        for bad in ["", "members", "scope:", "scope:a b"] {
            assert!(bad.parse::<ReadRule>().is_err(), "{bad}");
        }
    }
}
