//! The REST API, one module per resource.

pub mod counters;
pub mod queues;
pub mod templates;
pub mod views;
pub mod writes;

use actix_web::{
    HttpRequest, HttpResponse,
    error::{JsonPayloadError, PathError, QueryPayloadError},
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
        .app_data(web::PathConfig::default().error_handler(path_error))
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

/// A body that is too large, not sent as JSON, or not JSON, in the API's words (the
/// library's own words go to the log only).
fn json_error(error: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    tracing::debug!(%error, "request body refused");
    match &error {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::BodyTooLarge {
                limit: MAX_BODY_BYTES,
            }
        }
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType(
            "send the body as JSON, with `Content-Type: application/json`".into(),
        ),
        JsonPayloadError::Deserialize(json) if json.is_syntax() || json.is_eof() => {
            ApiError::BadJson(format!(
                "the body is not valid JSON (line {}, column {}): send a JSON object",
                json.line(),
                json.column()
            ))
        }
        _ => ApiError::BadJson("the body could not be read as JSON: send a JSON object".into()),
    }
    .into()
}

fn query_error(error: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    tracing::debug!(%error, "query string refused");
    ApiError::BadQuery(
        "the query string could not be read: send `name=value` pairs joined by `&`, values \
         percent-encoded (e.g. `?ids=a,b`)"
            .into(),
    )
    .into()
}

fn path_error(error: PathError, request: &HttpRequest) -> actix_web::Error {
    tracing::debug!(%error, "path refused");
    ApiError::BadRequest(format!(
        "the path `{}` could not be read: percent-encode each segment as UTF-8",
        request.path()
    ))
    .into()
}

/// Any path that is not a route.
pub async fn not_found(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NoRoute {
        method: request.method().to_string(),
        path: request.path().to_owned(),
    })
}
