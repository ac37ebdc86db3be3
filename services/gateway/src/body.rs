//! The JSON bodies of calls, read so that every refusal is in the API's words: a body that
//! is not JSON, or not sent as JSON, is refused by [`crate::routes`]' JSON configuration; a
//! body of the wrong shape by [`Json`], naming the field (`field`) and what to send instead.
//!
//! A JSON number is a number, however it is spelled: `1000000.0` and `1e6` are the integer
//! a field of type `integer` asks for (JSON Schema's `integer` is any number whose fraction
//! is zero), so [`Json`] reads them as integers.

use std::{future::Future, pin::Pin};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON object body deserialized into `T`; the first field that does not fit is named in a
/// 400.
pub struct Json<T>(pub T);

impl<T> Json<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let value = web::Json::<serde_json::Value>::from_request(request, payload);
        Box::pin(async move {
            let mut value = value.await?.into_inner();
            whole_numbers_as_integers(&mut value);
            if !value.is_object() {
                // serde would read an array into a struct's fields, in order.
                return Err(ApiError::BadJson(
                    "the body must be a JSON object of this call's fields".into(),
                )
                .into());
            }
            serde_path_to_error::deserialize(value)
                .map(Json)
                .map_err(|error| refusal(&error).into())
        })
    }
}

/// Every number in `value` whose fraction is zero (`1000000.0`, `1e6`) made an integer, when
/// it fits one; serde refuses a float where the field is an integer.
pub fn whole_numbers_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(number) => {
            if let Some(integer) = number.as_f64().and_then(whole_integer)
                && number.is_f64()
            {
                *number = integer.into();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(whole_numbers_as_integers),
        _ => {}
    }
}

/// `number` as an integer when its fraction is zero and it fits an `i64` exactly.
pub fn whole_integer(number: f64) -> Option<i64> {
    // 2^63 is the first float past i64::MAX; below it every whole float converts exactly.
    const I64_END: f64 = 9_223_372_036_854_775_808.0;
    (number.fract() == 0.0 && (-I64_END..I64_END).contains(&number)).then_some(number as i64)
}

/// The field a shape error is about and what to send instead.
fn refusal(error: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let message = error.inner().to_string();
    let path = error.path().to_string();
    let at = (path != ".").then_some(path);
    if let Some(field) = quoted_after(&message, "missing field `") {
        return ApiError::InvalidField {
            detail: format!("`{field}` is required"),
            field,
        };
    }
    if let Some(field) = quoted_after(&message, "unknown field `") {
        let expected = message
            .split_once(", expected ")
            .map(|(_, expected)| expected.replace("one of ", ""))
            .unwrap_or_default();
        return ApiError::InvalidField {
            detail: format!("`{field}` is not a field of this call; send only {expected}"),
            field,
        };
    }
    match at {
        Some(field) => ApiError::InvalidField {
            detail: format!("`{field}`: {}", shape_words(&message)),
            field,
        },
        None => ApiError::BadJson(format!(
            "the body must be a JSON object: {}",
            shape_words(&message)
        )),
    }
}

/// The text between `prefix` and the next backtick.
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.split_once(prefix)?.1;
    Some(rest.split('`').next()?.to_owned())
}

/// serde's "invalid type: floating point `1.5`, expected i64" as "expected an integer, got
/// floating point `1.5`".
fn shape_words(message: &str) -> String {
    let Some((got, expected)) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
        .and_then(|rest| rest.split_once(", expected "))
    else {
        return message.to_owned();
    };
    let expected = match expected {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" | "isize" => {
            "an integer"
        }
        "f32" | "f64" => "a number",
        "a sequence" => "an array",
        "a boolean" | "a string" => expected,
        other if other.starts_with("struct ") || other == "a map" => "an object",
        other => other,
    };
    format!("expected {expected}, got {got}")
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        delta: i64,
        #[serde(default)]
        objects: Vec<String>,
    }

    fn refused(value: serde_json::Value) -> ApiError {
        let error = serde_path_to_error::deserialize::<_, Body>(value).unwrap_err();
        refusal(&error)
    }

    fn field_and_detail(error: ApiError) -> (String, String) {
        match error {
            ApiError::InvalidField { field, detail } => (field, detail),
            other => panic!("not a field error: {other:?}"),
        }
    }

    #[test]
    fn a_wrong_type_names_the_field_and_the_type_to_send() {
        let (field, detail) = field_and_detail(refused(serde_json::json!({"delta": 1.5})));
        assert_eq!(field, "delta");
        assert_eq!(
            detail,
            "`delta`: expected an integer, got floating point `1.5`"
        );
        let (field, _) = field_and_detail(refused(serde_json::json!({"delta": 1, "objects": [1]})));
        assert_eq!(field, "objects[0]");
    }

    #[test]
    fn missing_and_unknown_fields_are_named() {
        let (field, detail) = field_and_detail(refused(serde_json::json!({})));
        assert_eq!(
            (field.as_str(), detail.as_str()),
            ("delta", "`delta` is required")
        );
        let (field, detail) = field_and_detail(refused(serde_json::json!({"delta": 1, "x": 2})));
        assert_eq!(field, "x");
        assert!(
            detail.contains("send only `delta` or `objects`"),
            "{detail}"
        );
    }

    #[test]
    fn whole_numbers_are_integers_however_they_are_spelled() {
        let mut value: serde_json::Value = serde_json::from_str(
            r#"{"a": 1000000.0, "b": [1e3, 1.5], "c": {"d": -0.0}, "e": 1e300}"#,
        )
        .unwrap();
        whole_numbers_as_integers(&mut value);
        assert_eq!(
            value,
            serde_json::json!({"a": 1_000_000, "b": [1000, 1.5], "c": {"d": 0}, "e": 1e300})
        );
        assert!(value["a"].is_i64());
    }

    #[test]
    fn a_value_that_is_not_an_object_says_so() {
        let error = refused(serde_json::json!({"delta": {"a": 1}}));
        let (field, detail) = field_and_detail(error);
        assert_eq!(field, "delta");
        assert!(detail.contains("expected an integer, got map"), "{detail}");
    }
}
