//! The REST API, one module per resource. Each path is one [`resource`]: its methods, and a
//! 405 naming them (`Allow`) for any other; a path that is not a route is [`not_found`].

pub mod counters;
pub mod queues;
pub mod templates;
pub mod views;
pub mod writes;

use actix_web::{
    HttpRequest, HttpResponse, Resource, ResponseError, Route,
    error::{JsonPayloadError, PathError, QueryPayloadError},
    http::Method,
    web,
};
use spillway_core::http;

use crate::error::ApiError;

/// The largest request body accepted (but see [`templates::MAX_BODY_BYTES`]).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A path and its methods (`web::to(handler)` each; GET answers HEAD too); any other method
/// is a 405 naming them.
pub fn resource<const N: usize>(path: &str, routes: [(Method, Route); N]) -> Resource {
    http::resource(path, routes, method_not_allowed)
}

fn method_not_allowed(request: &HttpRequest, allow: &str) -> HttpResponse {
    ApiError::MethodNotAllowed {
        method: request.method().to_string(),
        path: request.path().to_owned(),
        allow: allow.to_owned(),
    }
    .error_response()
}

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
    json_config_up_to(MAX_BODY_BYTES)
}

/// The JSON bodies of a route that takes up to `limit` bytes.
pub fn json_config_up_to(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(json_error)
}

/// A body that is too large, not sent as JSON, or not JSON, in the API's words (the
/// library's own words go to the log only).
fn json_error(error: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    tracing::debug!(%error, "request body refused");
    match &error {
        JsonPayloadError::Overflow { limit } => ApiError::BodyTooLarge { limit: *limit },
        JsonPayloadError::OverflowKnownLength { limit, .. } => {
            ApiError::BodyTooLarge { limit: *limit }
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
