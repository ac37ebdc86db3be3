//! The gateway's errors and the one place they become HTTP statuses (problem+json).

use actix_web::{HttpResponse, ResponseError, http::StatusCode};
use spillway_core::{
    counters::{CounterStoreError, sql::CounterSqlError},
    http::Problem,
    kafka::KafkaError,
    redis::RedisError,
    templates::{CopyError, LifecycleError},
};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
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
    #[error("the body is not valid JSON for this call: {0}")]
    BadJson(String),
    #[error("bad query string: {0}")]
    BadQuery(String),
    #[error("no route for {method} {path}")]
    NoRoute { method: String, path: String },
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

impl ApiError {
    pub fn problem(&self) -> Problem {
        let detail = self.to_string();
        match self {
            Self::Unauthorized(_) => Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail),
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
            Self::BadQuery(_) => Problem::new(StatusCode::BAD_REQUEST, "bad-query", detail),
            Self::NoRoute { .. } => Problem::new(StatusCode::NOT_FOUND, "not-found", detail),
            Self::DeadlineExceeded { request_id, .. } => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "deadline-exceeded", detail)
                    .with_retry_after(1)
                    .with("request_id", request_id.as_str())
            }
            Self::Kafka(_) => Problem::unavailable("kafka", detail),
            Self::Redis(_) => Problem::unavailable("redis", detail),
            Self::Database(_) => Problem::unavailable("database", detail),
            Self::S3(_) => Problem::unavailable("s3", detail),
            Self::CopyFailed(_) => Problem::new(StatusCode::BAD_GATEWAY, "copy-failed", detail),
            Self::QueueHeld {
                retry_after_seconds,
            } => Problem::unavailable("redis", detail).with_retry_after(*retry_after_seconds),
            Self::View(error) => Problem::unavailable(error.dependency(), detail),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.problem().status_code()
    }

    fn error_response(&self) -> HttpResponse {
        if self.status_code().is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        self.problem().to_response()
    }
}
