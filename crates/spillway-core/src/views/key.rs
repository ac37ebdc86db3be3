//! A caller's key of a view: checked against the view's key type and made canonical (the
//! cache key), with the typed value bound as `$1`.

use serde_json::{Map, Value};

use super::config::{KeyType, ViewSettings};

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
}

#[cfg(test)]
mod tests {
    use crate::views::fixtures::view;

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
}
