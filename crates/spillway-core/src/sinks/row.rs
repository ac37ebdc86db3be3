//! What a row must look like: a caller's row checked and completed before anything is
//! published, a row from Kafka (any producer) checked before it is written, ids, and the
//! wire form of a row (a `google.protobuf.Struct`).

use serde_json::{Map, Value};

use super::config::{ColumnSettings, ColumnType, SinkSettings, WIRE_INTEGER_LIMIT};

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
    /// primary key when the body has none, `default_now` timestamps; a whole number written
    /// as a float (`5.0`, `1e3`) in an integer column becomes that integer.
    pub fn accept_row(
        &self,
        mut row: Map<String, Value>,
        member: Option<&str>,
    ) -> Result<Map<String, Value>, RowError> {
        if let Some(column) = row
            .keys()
            .find(|column| !self.columns.contains_key(*column))
        {
            return Err(row_error(
                column,
                "is not a column of this sink; send only its configured columns",
            ));
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
            if matches!(column.kind, ColumnType::Bigint | ColumnType::Integer)
                && let Some(value) = row.get_mut(name)
            {
                as_integer_if_whole(value);
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
            return Err(row_error(
                column,
                "is not a column of this sink; send only its configured columns",
            ));
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
}

/// A float whose fraction is zero, within the wire's exact range, as an integer: JSON does
/// not tell `5` from `5.0`, and JSON Schema's `integer` accepts both.
fn as_integer_if_whole(value: &mut Value) {
    if let Some(number) = value.as_f64()
        && value.is_f64()
        && number.fract() == 0.0
        && number.abs() < WIRE_INTEGER_LIMIT as f64
    {
        *value = Value::from(number as i64);
    }
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
    use crate::sinks::fixtures::{object, playlists};
    use serde_json::json;

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
    fn a_whole_float_in_an_integer_column_is_that_integer() {
        let mut sink = playlists();
        sink.columns.insert(
            "plays".into(),
            crate::sinks::config::ColumnSettings {
                kind: ColumnType::Bigint,
                required: false,
                max_length: None,
                default_now: false,
            },
        );
        let row = sink
            .accept_row(object(json!({"title": "Mix", "plays": 1e3})), Some("alice"))
            .unwrap();
        assert_eq!(row["plays"], json!(1000));
        assert!(row["plays"].is_i64());
        let error = sink
            .accept_row(object(json!({"title": "Mix", "plays": 1.5})), Some("alice"))
            .unwrap_err();
        assert_eq!(error.column, "plays");
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
    fn rows_survive_the_wire_form() {
        let row = object(
            json!({"a": "x", "b": 42, "c": true, "d": null, "e": 1.5, "f": {"g": [1, "h"]}}),
        );
        assert_eq!(from_struct(&to_struct(&row)), row);
    }
}
