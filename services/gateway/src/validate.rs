//! Checks on what callers send, with the field named in the error.

use spillway_core::counters::config::ENTITY_ID;

use crate::error::ApiError;

/// Entity ids are 1-128 characters of `[A-Za-z0-9._:-]`.
pub fn entity_id(value: &str) -> Result<(), ApiError> {
    if ENTITY_ID.accepts(value) {
        Ok(())
    } else {
        Err(ApiError::InvalidField {
            field: "entity_id".into(),
            detail: format!(
                "entity id `{}` must be 1-128 characters of [A-Za-z0-9._:-]",
                truncate(value)
            ),
        })
    }
}

/// An Idempotency-Key: 1-128 visible ASCII characters.
pub fn idempotency_key(value: &str) -> Result<(), ApiError> {
    if (1..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(ApiError::InvalidField {
            field: "Idempotency-Key".into(),
            detail: "the Idempotency-Key header must be 1-128 visible ASCII characters".into(),
        })
    }
}

fn truncate(value: &str) -> String {
    value.chars().take(40).collect()
}
