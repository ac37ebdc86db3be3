//! The gateway's errors and the one place they become HTTP statuses (problem+json).

use actix_web::{HttpResponse, ResponseError, http::StatusCode};
use spillway_core::{
    counters::CounterStateError,
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

impl From<CounterStateError> for ApiError {
    fn from(error: CounterStateError) -> Self {
        match error {
            CounterStateError::Redis(error) => Self::Redis(error),
            CounterStateError::Database(error) => Self::Database(error),
        }
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(error: redis::RedisError) -> Self {
        Self::Redis(RedisError::Command(error))
    }
}

impl From<deadpool_redis::PoolError> for ApiError {
    fn from(error: deadpool_redis::PoolError) -> Self {
        Self::Redis(RedisError::Pool(error))
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
