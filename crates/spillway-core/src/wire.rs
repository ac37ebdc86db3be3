//! The messages on spillway's Kafka topics (`proto/spillway/v1/*.proto`), compiled by prost,
//! with serde impls that follow the protobuf JSON mapping (pbjson).
//!
//! A message is protobuf unless its `content-type` header says `application/json`. Anything
//! that does not decode, or decodes to something invalid, is a [`DecodeError`]; the consumer
//! loop sends it to the DLQ and moves on.

use serde::{Serialize, de::DeserializeOwned};

/// The generated types, package `spillway.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/spillway.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/spillway.v1.serde.rs"));
}

pub use v1::{
    CounterEvent, CounterOperation, DeadLetter, WarmupRequest, WriteEvent, WriteOperation,
};

/// The Kafka header that selects the encoding.
pub const CONTENT_TYPE_HEADER: &str = "content-type";
pub const JSON_CONTENT_TYPE: &str = "application/json";
pub const PROTOBUF_CONTENT_TYPE: &str = "application/x-protobuf";
/// The Kafka header carrying the gateway's request id.
pub const REQUEST_ID_HEADER: &str = "request-id";
/// The W3C trace context of the span that produced a record (only while traces are exported):
/// `00-<trace id>-<span id>-<flags>`, and the trace's vendor state when it has one.
pub const TRACEPARENT_HEADER: &str = "traceparent";
pub const TRACESTATE_HEADER: &str = "tracestate";

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty message")]
    Empty,
    #[error("not valid protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("not valid JSON for this message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported content-type `{0}` (use application/json or protobuf)")]
    UnsupportedContentType(String),
    #[error("invalid message: {0}")]
    Invalid(String),
}

impl DecodeError {
    /// A short, low-cardinality label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::Protobuf(_) => "protobuf",
            DecodeError::Json(_) => "json",
            DecodeError::UnsupportedContentType(_) => "content_type",
            DecodeError::Invalid(_) => "invalid",
        }
    }
}

/// A message spillway puts on a topic: protobuf, JSON, and a check of its own fields.
pub trait WireMessage:
    prost::Message + Default + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// Rejects a message that decoded but cannot be applied (missing ids, unknown operation).
    fn validate(&self) -> Result<(), String>;
    fn event_id(&self) -> &str;
    fn request_id(&self) -> &str;
}

fn required(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        Err(format!("`{field}` is required"))
    } else {
        Ok(())
    }
}

/// The longest event id a counter records for its dedupe window.
pub const MAX_EVENT_ID_LENGTH: usize = 128;

impl WireMessage for CounterEvent {
    fn validate(&self) -> Result<(), String> {
        required("event_id", &self.event_id)?;
        if self.event_id.len() > MAX_EVENT_ID_LENGTH {
            return Err(format!(
                "`event_id` is longer than {MAX_EVENT_ID_LENGTH} bytes"
            ));
        }
        required("namespace", &self.namespace)?;
        required("entity_id", &self.entity_id)?;
        match self.operation() {
            CounterOperation::Unspecified => Err("`operation` is required".into()),
            CounterOperation::AddMember | CounterOperation::RemoveMember => {
                required("member", &self.member)
            }
            CounterOperation::Increment if !(1..=1_000_000).contains(&self.delta) => {
                Err(format!("`delta` {} is outside 1..=1000000", self.delta))
            }
            CounterOperation::Increment => Ok(()),
        }
    }
    fn event_id(&self) -> &str {
        &self.event_id
    }
    fn request_id(&self) -> &str {
        &self.request_id
    }
}

impl WireMessage for WriteEvent {
    fn validate(&self) -> Result<(), String> {
        required("event_id", &self.event_id)?;
        required("sink", &self.sink)?;
        required("row_id", &self.row_id)?;
        match self.operation() {
            WriteOperation::Unspecified => Err("`operation` is required".into()),
            WriteOperation::Upsert if self.row.is_none() => {
                Err("`row` is required for UPSERT".into())
            }
            _ => Ok(()),
        }
    }
    fn event_id(&self) -> &str {
        &self.event_id
    }
    fn request_id(&self) -> &str {
        &self.request_id
    }
}

impl WireMessage for WarmupRequest {
    fn validate(&self) -> Result<(), String> {
        required("template_id", &self.template_id)
    }
    fn event_id(&self) -> &str {
        &self.event_id
    }
    fn request_id(&self) -> &str {
        &self.request_id
    }
}

impl WireMessage for DeadLetter {
    fn validate(&self) -> Result<(), String> {
        required("source_topic", &self.source_topic)
    }
    fn event_id(&self) -> &str {
        &self.event_id
    }
    fn request_id(&self) -> &str {
        &self.request_id
    }
}

/// Whether a `content-type` value names JSON (parameters such as `charset` are ignored).
fn is_json(content_type: &str) -> bool {
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    media_type.eq_ignore_ascii_case(JSON_CONTENT_TYPE)
}

fn is_protobuf(content_type: &str) -> bool {
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    [
        "application/x-protobuf",
        "application/protobuf",
        "application/vnd.google.protobuf",
    ]
    .iter()
    .any(|known| media_type.eq_ignore_ascii_case(known))
}

/// Decodes a payload by its content type (protobuf when absent) and validates it.
pub fn decode<T: WireMessage>(
    payload: Option<&[u8]>,
    content_type: Option<&str>,
) -> Result<T, DecodeError> {
    let payload = payload
        .filter(|bytes| !bytes.is_empty())
        .ok_or(DecodeError::Empty)?;
    let message: T = match content_type {
        Some(content_type) if is_json(content_type) => serde_json::from_slice(payload)?,
        Some(content_type) if !is_protobuf(content_type) => {
            return Err(DecodeError::UnsupportedContentType(content_type.to_owned()));
        }
        _ => T::decode(payload)?,
    };
    message.validate().map_err(DecodeError::Invalid)?;
    Ok(message)
}

/// The protobuf bytes of a message.
pub fn encode<T: WireMessage>(message: &T) -> Vec<u8> {
    message.encode_to_vec()
}

/// The current time as a protobuf timestamp.
pub fn now() -> pbjson_types::Timestamp {
    let now = chrono::Utc::now();
    pbjson_types::Timestamp {
        seconds: now.timestamp(),
        nanos: now.timestamp_subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn like() -> CounterEvent {
        CounterEvent {
            event_id: "e1".into(),
            accepted_at: Some(now()),
            request_id: "r1".into(),
            namespace: "video-likes".into(),
            entity_id: "v1".into(),
            member: "alice".into(),
            operation: CounterOperation::AddMember as i32,
            delta: 0,
            never_resent: false,
        }
    }

    #[test]
    fn protobuf_and_json_decode_to_the_same_event() {
        let event = like();
        let from_protobuf: CounterEvent = decode(Some(&encode(&event)), None).unwrap();
        let json = serde_json::to_vec(&event).unwrap();
        let from_json: CounterEvent = decode(Some(&json), Some("application/json")).unwrap();
        assert_eq!(from_protobuf, event);
        assert_eq!(from_json, event);
    }

    #[test]
    fn json_follows_the_protobuf_mapping() {
        let json = serde_json::to_value(like()).unwrap();
        assert_eq!(json["eventId"], "e1");
        assert_eq!(json["operation"], "COUNTER_OPERATION_ADD_MEMBER");
        let accepted_at = json["acceptedAt"].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(accepted_at).is_ok(),
            "{accepted_at}"
        );
        let hand_written = r#"{"eventId":"e2","namespace":"video-views","entityId":"v9",
            "operation":"COUNTER_OPERATION_INCREMENT","delta":"5"}"#;
        let event: CounterEvent = decode(
            Some(hand_written.as_bytes()),
            Some("application/json; charset=utf-8"),
        )
        .unwrap();
        assert_eq!(event.delta, 5);
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        let garbage = b"\xff\xfe not a message";
        assert!(decode::<CounterEvent>(Some(garbage), None).is_err());
        let error = decode::<CounterEvent>(Some(b"{}"), Some("application/json")).unwrap_err();
        assert!(error.to_string().contains("event_id"), "{error}");
        assert!(matches!(
            decode::<CounterEvent>(Some(b"x"), Some("text/plain")),
            Err(DecodeError::UnsupportedContentType(_))
        ));
        assert!(matches!(
            decode::<CounterEvent>(None, None),
            Err(DecodeError::Empty)
        ));
    }

    #[test]
    fn an_increment_out_of_range_is_invalid() {
        let mut event = like();
        event.operation = CounterOperation::Increment as i32;
        event.delta = 0;
        assert!(event.validate().is_err());
        event.delta = 1_000_000;
        assert!(event.validate().is_ok());
    }
}
