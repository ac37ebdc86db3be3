//! The problem+json (RFC 9457) answers as the document names them: the [`Problem`] schema
//! and the answers many operations share, as response components (401 with its
//! `WWW-Authenticate` challenge, 413, 415, 422, 503 with `Retry-After`). Answers whose words
//! differ per operation (400, 403, 404, 409) are written at the operation.

use utoipa::{
    ToResponse, ToSchema,
    openapi::{
        ContentBuilder, Object, RefOr, Response, ResponseBuilder, Type, header::HeaderBuilder,
    },
};

/// The media type of every error answer.
pub const PROBLEM_JSON: &str = spillway_core::http::PROBLEM_JSON;

/// An RFC 9457 problem: what was wrong (`detail`, in the API's words) and, for a refused
/// input, which one (`field`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Problem {
    /// `https://spillway.dev/problems/<kind>`: `invalid-field`, `bad-json`, `unauthorized`,
    /// `dependency-unavailable`, ...
    #[schema(rename = "type")]
    kind: String,
    /// The status's reason phrase.
    title: String,
    /// The HTTP status.
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    /// What was wrong and what to send instead.
    detail: String,
    /// The input at fault (a body field, a path or query parameter, a header, a column).
    #[schema(value_type = String, required = false)]
    field: Option<String>,
    /// The dependency that is down (503): `kafka`, `redis`, `database` or `s3`.
    #[schema(value_type = String, required = false)]
    dependency: Option<String>,
    /// The request's id, when the deadline passed.
    #[schema(value_type = String, required = false)]
    request_id: Option<String>,
}

/// A problem+json answer described as `description`.
pub fn problem(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        PROBLEM_JSON,
        ContentBuilder::new()
            .schema(Some(utoipa::openapi::Ref::from_schema_name("Problem")))
            .build(),
    )
}

/// A header whose value is a `kind`.
fn header(kind: Type, description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Some(Object::with_type(kind)))
        .description(Some(description))
        .build()
}

/// 401: no bearer token where one is needed, or one that was refused.
pub struct Unauthorized;

impl<'s> ToResponse<'s> for Unauthorized {
    fn response() -> (&'s str, RefOr<Response>) {
        let response = problem(
            "No bearer token where the call needs one, or one that was refused (expired, \
             wrongly signed, not a JWT, a claim missing): `detail` says which.",
        )
        .header(
            "WWW-Authenticate",
            header(
                Type::String,
                "`Bearer` when no token was sent; `Bearer error=\"invalid_token\", \
                 error_description=\"...\"` when one was sent and refused (RFC 6750).",
            ),
        )
        .build();
        ("Unauthorized", response.into())
    }
}

/// 413: a body over the 64 KiB limit.
pub struct PayloadTooLarge;

impl<'s> ToResponse<'s> for PayloadTooLarge {
    fn response() -> (&'s str, RefOr<Response>) {
        let response = problem("The body is over 64 KiB.").build();
        ("PayloadTooLarge", response.into())
    }
}

/// 415: a body not sent as JSON.
pub struct UnsupportedMediaType;

impl<'s> ToResponse<'s> for UnsupportedMediaType {
    fn response() -> (&'s str, RefOr<Response>) {
        let response =
            problem("The body was not sent as `Content-Type: application/json`.").build();
        ("UnsupportedMediaType", response.into())
    }
}

/// 503: a dependency is down, or the deadline passed.
pub struct Unavailable;

impl<'s> ToResponse<'s> for Unavailable {
    fn response() -> (&'s str, RefOr<Response>) {
        let response = problem(
            "Kafka, Redis, the database or S3 (`dependency`) is down, or the request deadline \
             passed (`deadline-exceeded`, with `request_id`). Nothing was changed that was not \
             acknowledged; retry after `Retry-After` seconds.",
        )
        .header(
            "Retry-After",
            header(Type::Integer, "Seconds to wait before retrying."),
        )
        .build();
        ("Unavailable", response.into())
    }
}
