//! The REST API, one module per resource.

pub mod counters;
pub mod queues;
pub mod templates;
pub mod views;
pub mod writes;

use actix_web::{
    HttpRequest, HttpResponse,
    error::{JsonPayloadError, QueryPayloadError},
    web,
};

use crate::error::ApiError;

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Every `/v1` route.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .app_data(json_config())
        .app_data(web::QueryConfig::default().error_handler(query_error))
        .configure(counters::configure)
        .configure(queues::configure)
        .configure(templates::configure)
        .configure(views::configure)
        .configure(writes::configure);
}

fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(MAX_BODY_BYTES)
        .error_handler(json_error)
}

fn json_error(error: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    match &error {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::BodyTooLarge {
                limit: MAX_BODY_BYTES,
            }
        }
        _ => ApiError::BadJson(error.to_string()),
    }
    .into()
}

fn query_error(error: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::BadQuery(error.to_string()).into()
}

/// Any path that is not a route.
pub async fn not_found(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NoRoute {
        method: request.method().to_string(),
        path: request.path().to_owned(),
    })
}
