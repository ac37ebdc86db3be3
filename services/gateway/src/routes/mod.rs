//! The REST API, one module per resource.

pub mod counters;
pub mod queues;
pub mod templates;
pub mod views;
pub mod writes;

use actix_web::{
    HttpRequest, HttpResponse,
    error::{JsonPayloadError, QueryPayloadError},
    http::StatusCode,
    web,
};
use spillway_core::http::Problem;

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
    let problem = match &error {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                format!("the body is over {MAX_BODY_BYTES} bytes"),
            )
        }
        _ => Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-json",
            format!("the body is not valid JSON for this call: {error}"),
        ),
    };
    problem.into()
}

fn query_error(error: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "bad-query",
        format!("bad query string: {error}"),
    )
    .into()
}

/// Any path that is not a route.
pub async fn not_found(request: HttpRequest) -> HttpResponse {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        format!("no route for {} {}", request.method(), request.path()),
    )
    .to_response()
}
