//! The document's entries for the endpoints that are not `/v1` routes: the ops endpoints
//! every service serves (`/healthz`, `/readyz`, `/metrics`, in spillway-core's `http`, which
//! knows nothing of OpenAPI: they are described here, on functions that are never called)
//! and the document itself (`/openapi.json`, `/docs`).

#![allow(dead_code)]

use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::problems::Problem;

/// `/healthz`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(pattern = "^ok$")]
    status: String,
}

/// One dependency checked by `/readyz?verbose`.
#[derive(Serialize, ToSchema)]
pub struct DependencyStatus {
    /// `kafka`, `redis`, `database` or `s3`.
    name: String,
    up: bool,
    /// Why it is down.
    #[schema(value_type = String, required = false)]
    error: Option<String>,
}

/// `/readyz`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Ready {
    #[schema(pattern = "^ready$")]
    status: String,
    /// With `?verbose`: every dependency, each up.
    #[schema(value_type = Vec<DependencyStatus>, required = false)]
    dependencies: Option<Vec<DependencyStatus>>,
}

/// `?verbose`: check every dependency now.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadyQuery {
    /// Present (`?verbose`, `?verbose=1`) to check every dependency now; `0` or `false`
    /// does not.
    verbose: Option<String>,
}

/// The process is alive.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    operation_id = "healthz",
    responses((status = 200, description = "Alive.", body = Health))
)]
pub fn healthz() {}

/// This gateway can answer (its start-up is done); with `?verbose`, every dependency checked.
///
/// Plain `/readyz` does not look at the dependencies: a gateway whose Kafka is down still
/// answers (503 with Retry-After for what needs Kafka). `/readyz?verbose` checks each
/// dependency now and is 503 (`dependency-down`, with `down` and `dependencies`) when one is
/// down.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    operation_id = "readyz",
    params(ReadyQuery),
    responses(
        (status = 200, description = "Ready (with `?verbose`: every dependency up, listed in `dependencies`).", body = Ready),
        (status = 503, description = "With `?verbose` only: a dependency is down (`down` names them, `dependencies` has each one's error).", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = i64, description = "Seconds to wait before asking again."))),
    )
)]
pub fn readyz() {}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    operation_id = "metrics",
    responses((status = 200, description = "The Prometheus text format.", body = String, content_type = "text/plain"))
)]
pub fn metrics() {}

/// This document: the API as this gateway's configuration makes it.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "ops",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document.", body = Object, content_type = "application/json"))
)]
pub fn openapi() {}

/// A page that shows this document: its operations, parameters, bodies and answers.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "ops",
    operation_id = "docs",
    responses((status = 200, description = "An HTML page (no script from elsewhere).", body = String, content_type = "text/html"))
)]
pub fn docs() {}
