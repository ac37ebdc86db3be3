//! Checks on what callers send, with the field named in the error.

use crate::error::ApiError;

/// Entity ids are 1-128 characters of `[A-Za-z0-9._:-]`.
pub fn entity_id(value: &str) -> Result<(), ApiError> {
    let valid = (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if valid {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_ids_follow_the_documented_alphabet() {
        assert!(entity_id("video:42_a-b.c").is_ok());
        assert!(entity_id(&"a".repeat(128)).is_ok());
        assert!(entity_id("").is_err());
        assert!(entity_id(&"a".repeat(129)).is_err());
        assert!(entity_id("a b").is_err());
        assert!(entity_id("é").is_err());
        assert!(entity_id("a/b").is_err());
    }
}
