//! The gateway's errors and the one place they become HTTP statuses (problem+json).
//!
//! Two texts per error: its `Display` is for the log (it keeps the source, a library's own
//! words included), and [`ApiError::problem`]'s `detail` is for the caller, in the API's
//! words: what was wrong and what to send instead. A dependency's error never reaches the
//! caller; it is logged with the request id by the middleware.

use actix_web::{
    HttpResponse, ResponseError,
    http::{StatusCode, header},
};
use spillway_core::{
    counters::{CounterStoreError, sql::CounterSqlError},
    http::Problem,
    kafka::KafkaError,
    redis::RedisError,
    templates::{CopyError, LifecycleError},
};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No bearer token where the call needs one (`WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthorized(String),
    /// A token was sent and refused (`WWW-Authenticate: Bearer error="invalid_token"`).
    #[error("{0}")]
    InvalidToken(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{detail}")]
    InvalidField { field: String, detail: String },
    #[error("{0}")]
    IdempotencyKeyReused(String),
    #[error("{0}")]
    IdTaken(String),
    #[error("the body is over {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("{0}")]
    BadJson(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    BadQuery(String),
    #[error("no route for {method} {path}")]
    NoRoute { method: String, path: String },
    /// A path that exists, with a method it does not have (`Allow` names those it has).
    #[error("{method} is not a method of {path}")]
    MethodNotAllowed {
        method: String,
        path: String,
        allow: String,
    },
    /// A template's source objects that are not in the bucket: well-formed, but nothing to
    /// copy until they are uploaded.
    #[error("{0}")]
    SourcesMissing(String),
    #[error("no answer within the {deadline_ms} ms request deadline")]
    DeadlineExceeded {
        deadline_ms: u64,
        request_id: String,
    },
    #[error("kafka is unavailable: {0}")]
    Kafka(#[from] KafkaError),
    #[error("redis is unavailable: {0}")]
    Redis(#[from] RedisError),
    #[error("the database is unavailable: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("s3 is unavailable: {0}")]
    S3(String),
    #[error("the copy failed and was removed: {0}")]
    CopyFailed(String),
    #[error(
        "the waiting room's state was lost (Redis restarted empty); admissions resume once \
         every session it may have admitted has expired"
    )]
    QueueHeld { retry_after_seconds: u64 },
    #[error(transparent)]
    View(#[from] crate::views::ReadError),
}

impl From<LifecycleError> for ApiError {
    fn from(error: LifecycleError) -> Self {
        match error {
            LifecycleError::Database(error) => Self::Database(error),
            LifecycleError::Redis(error) => Self::Redis(error),
            LifecycleError::Copy(error) => error.into(),
        }
    }
}

impl From<CopyError> for ApiError {
    fn from(error: CopyError) -> Self {
        match error {
            CopyError::Refused(_) => Self::CopyFailed(error.to_string()),
            CopyError::Unavailable(_) | CopyError::TimedOut(_) => Self::S3(error.to_string()),
        }
    }
}

impl From<CounterStoreError> for ApiError {
    fn from(error: CounterStoreError) -> Self {
        match error {
            CounterStoreError::Redis(error) => Self::Redis(error),
            CounterStoreError::Sql(CounterSqlError::Database(error)) => Self::Database(error),
            // Only the counter service's apply meets these; answered as a database fault.
            other => Self::Database(sea_orm::DbErr::Custom(other.to_string())),
        }
    }
}

/// The caller's words for a dependency that is down.
fn unavailable(dependency: &str) -> Problem {
    Problem::unavailable(
        dependency,
        format!("{dependency} is unavailable right now; retry after the Retry-After seconds"),
    )
}

impl ApiError {
    pub fn problem(&self) -> Problem {
        let detail = self.to_string();
        match self {
            Self::Unauthorized(_) | Self::InvalidToken(_) => {
                Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
            }
            Self::Forbidden(_) => Problem::new(StatusCode::FORBIDDEN, "forbidden", detail),
            Self::NotFound(_) => Problem::new(StatusCode::NOT_FOUND, "not-found", detail),
            Self::Conflict(_) => Problem::new(StatusCode::CONFLICT, "wrong-kind", detail),
            Self::BadRequest(_) => Problem::new(StatusCode::BAD_REQUEST, "bad-request", detail),
            Self::InvalidField { field, .. } => {
                Problem::new(StatusCode::BAD_REQUEST, "invalid-field", detail)
                    .with("field", field.as_str())
            }
            Self::IdempotencyKeyReused(_) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                detail,
            )
            .with("field", "Idempotency-Key"),
            Self::IdTaken(_) => Problem::new(StatusCode::CONFLICT, "id-taken", detail),
            Self::BodyTooLarge { .. } => {
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", detail)
            }
            Self::BadJson(_) => Problem::new(StatusCode::BAD_REQUEST, "bad-json", detail),
            Self::UnsupportedMediaType(_) => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                detail,
            ),
            Self::BadQuery(_) => Problem::new(StatusCode::BAD_REQUEST, "bad-query", detail),
            Self::NoRoute { method, path } => Problem::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("no route for {method} {path}; the API is described at GET /openapi.json"),
            ),
            Self::MethodNotAllowed { allow, .. } => Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                format!("{detail}; it answers {allow}"),
            ),
            Self::SourcesMissing(_) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "sources-missing", detail)
                    .with("field", "objects")
            }
            Self::DeadlineExceeded { request_id, .. } => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "deadline-exceeded", detail)
                    .with_retry_after(1)
                    .with("request_id", request_id.as_str())
            }
            Self::Kafka(_) => unavailable("kafka"),
            Self::Redis(_) => unavailable("redis"),
            Self::Database(_) => unavailable("database"),
            Self::S3(_) => unavailable("s3"),
            Self::CopyFailed(_) => Problem::new(
                StatusCode::BAD_GATEWAY,
                "copy-failed",
                "the copy failed (the storage refused it) and was removed; ask the template's \
                 operator to check its objects",
            ),
            Self::QueueHeld {
                retry_after_seconds,
            } => Problem::unavailable("redis", detail).with_retry_after(*retry_after_seconds),
            Self::View(error) => unavailable(error.dependency()),
        }
    }

    /// The `WWW-Authenticate` challenge of a 401 (RFC 6750): `Bearer` when no token was
    /// sent, with `error="invalid_token"` when one was sent and refused.
    fn challenge(&self) -> Option<String> {
        match self {
            Self::Unauthorized(_) => Some("Bearer".into()),
            Self::InvalidToken(detail) => Some(format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                detail.replace(['"', '\\'], "'")
            )),
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.problem().status_code()
    }

    /// The problem document; the failure is logged by the middleware, which knows the
    /// request id and the route.
    fn error_response(&self) -> HttpResponse {
        let mut response = self.problem().to_response();
        if let Some(challenge) = self.challenge()
            && let Ok(value) = header::HeaderValue::from_str(&challenge)
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        if let Self::MethodNotAllowed { allow, .. } = self
            && let Ok(value) = header::HeaderValue::from_str(allow)
        {
            response.headers_mut().insert(header::ALLOW, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dependency_error_keeps_its_source_out_of_the_detail() {
        let error = ApiError::Kafka(KafkaError::Timeout(1000));
        let problem = error.problem();
        assert_eq!(problem.status, 503);
        assert!(!problem.detail.contains("acknowledgement"), "{problem}");
        assert!(error.to_string().contains("1000 ms"), "the log keeps it");
    }

    #[test]
    fn a_refused_token_is_challenged_with_invalid_token() {
        let response = ApiError::InvalidToken("the token has expired".into()).error_response();
        let challenge = response.headers().get(header::WWW_AUTHENTICATE).unwrap();
        assert!(
            challenge
                .to_str()
                .unwrap()
                .starts_with("Bearer error=\"invalid_token\""),
            "{challenge:?}"
        );
        let response = ApiError::Unauthorized("a bearer token is required".into()).error_response();
        assert_eq!(
            response.headers().get(header::WWW_AUTHENTICATE).unwrap(),
            "Bearer"
        );
    }
}
