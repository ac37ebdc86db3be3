//! HTTP pieces every service shares: the ops endpoints (`/healthz`, `/readyz`,
//! `/readyz?verbose`, `/metrics`), problem+json (RFC 9457) responses, [`resource`] (a path's
//! methods, any other answered 405 with `Allow`), and a server runner that stops on the
//! shutdown token.
//!
//! `/readyz` is 200 as soon as the ops server answers (start-up done, listener up), whatever
//! the dependencies do; `/readyz?verbose` checks each dependency and is 503 naming those that
//! are down ([`crate::readiness`] says why they differ).

use std::{net::TcpListener, time::Duration};

use actix_web::{
    App, HttpRequest, HttpResponse, HttpServer, Resource, ResponseError, Route, guard,
    http::{Method, StatusCode, header},
    web,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{metrics::Metrics, readiness::Readiness};

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";
/// How long in-flight HTTP requests get to finish once shutdown starts.
pub const HTTP_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Seconds a client should wait before retrying (sent as `Retry-After`).
    #[serde(skip)]
    pub retry_after_seconds: Option<u64>,
    /// Extra members, e.g. `{"column": "title"}` or the down dependencies.
    #[serde(flatten, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    /// `kind` is a short slug; the `type` member becomes `https://spillway.dev/problems/<kind>`.
    pub fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("https://spillway.dev/problems/{kind}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            retry_after_seconds: None,
            extensions: serde_json::Map::new(),
        }
    }

    /// A 503 for a dependency that is down, with `Retry-After`.
    pub fn unavailable(dependency: &str, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "dependency-unavailable",
            detail,
        )
        .with_retry_after(1)
        .with("dependency", dependency)
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_seconds = Some(seconds);
        self
    }

    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn to_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CONTENT_TYPE, PROBLEM_JSON));
        if let Some(seconds) = self.retry_after_seconds {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response.body(serde_json::to_string(self).unwrap_or_default())
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.title, self.detail)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        Problem::status_code(self)
    }
    fn error_response(&self) -> HttpResponse {
        self.to_response()
    }
}

/// What the ops endpoints need.
#[derive(Clone)]
pub struct OpsState {
    pub metrics: Metrics,
    pub readiness: Readiness,
}

impl OpsState {
    /// Runs the dependency monitor (the `dependency_up` gauge) until `shutdown`.
    pub fn spawn_dependency_monitor(&self, shutdown: CancellationToken) {
        let (readiness, metrics) = (self.readiness.clone(), self.metrics.clone());
        tokio::spawn(readiness.monitor(metrics, shutdown));
    }
}

/// What answers a method a resource does not have: the request and the `Allow` value.
pub type Refusal = fn(&HttpRequest, &str) -> HttpResponse;

/// One path and its methods, each with its handler (`web::to(handler)`, no method guard);
/// a GET route answers HEAD too. Any other method is answered by `refuse` (a 405 whose
/// `Allow` names these methods, RFC 9110), not by the app's 404: the path exists.
pub fn resource<const N: usize>(
    path: &str,
    routes: [(Method, Route); N],
    refuse: Refusal,
) -> Resource {
    let allow = allowed_methods(routes.iter().map(|(method, _)| method));
    let resource = routes
        .into_iter()
        .fold(web::resource(path), |resource, (method, route)| {
            let route = if method == Method::GET {
                route.guard(guard::Any(guard::Get()).or(guard::Head()))
            } else {
                route.method(method)
            };
            resource.route(route)
        });
    resource.default_service(web::to(move |request: HttpRequest| {
        let response = refuse(&request, &allow);
        async move { response }
    }))
}

/// The `Allow` value of a resource's methods: in their order, HEAD right after GET.
fn allowed_methods<'a>(methods: impl Iterator<Item = &'a Method>) -> String {
    let mut allow = Vec::new();
    for method in methods {
        allow.push(method.as_str());
        if *method == Method::GET {
            allow.push(Method::HEAD.as_str());
        }
    }
    allow.join(", ")
}

/// The ops endpoints' 405: problem+json with `Allow`.
pub fn method_not_allowed(request: &HttpRequest, allow: &str) -> HttpResponse {
    let mut response = Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!(
            "{} is not a method of {}; it answers {allow}",
            request.method(),
            request.path()
        ),
    )
    .to_response();
    if let Ok(value) = header::HeaderValue::from_str(allow) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

/// Adds `/healthz`, `/readyz` and `/metrics` to an app.
pub fn configure_ops(state: OpsState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |config| {
        let get = |path, route| resource(path, [(Method::GET, route)], method_not_allowed);
        config
            .app_data(web::Data::new(state))
            .service(get("/healthz", web::to(healthz)))
            .service(get("/readyz", web::to(readyz)))
            .service(get("/metrics", web::to(metrics)));
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Whether the query string asks for `verbose` (`?verbose`, `?verbose=1`, `?verbose=true`).
fn wants_verbose(query: &str) -> bool {
    query.split('&').any(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        key == "verbose" && !matches!(value, "0" | "false")
    })
}

async fn readyz(request: actix_web::HttpRequest, state: web::Data<OpsState>) -> HttpResponse {
    if !wants_verbose(request.query_string()) {
        return HttpResponse::Ok().json(serde_json::json!({"status": "ready"}));
    }
    dependencies(&state).await
}

/// Every dependency checked now: 200 when all are up, else 503 naming those that are down.
async fn dependencies(state: &OpsState) -> HttpResponse {
    let statuses = state.readiness.check_all(&state.metrics).await;
    let down: Vec<&str> = statuses
        .iter()
        .filter(|status| !status.up)
        .map(|status| status.name.as_str())
        .collect();
    if down.is_empty() {
        return HttpResponse::Ok()
            .json(serde_json::json!({"status": "ready", "dependencies": statuses}));
    }
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "dependency-down",
        format!("{} down", down.join(", ")),
    )
    .with_retry_after(1)
    .with("down", serde_json::json!(down))
    .with("dependencies", serde_json::json!(statuses))
    .to_response()
}

async fn metrics(state: web::Data<OpsState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

/// Binds a listener; port 0 picks a free one (tests).
pub fn bind(address: &str) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves only the ops endpoints until the token is cancelled (the consumer services).
pub async fn serve_ops(
    listener: TcpListener,
    state: OpsState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let server = HttpServer::new(move || App::new().configure(configure_ops(state.clone())))
        .workers(1)
        .disable_signals()
        .shutdown_timeout(HTTP_DRAIN_TIMEOUT.as_secs())
        .listen(listener)?
        .run();
    run_until_cancelled(server, shutdown).await
}

/// Runs an actix server until it ends or the token is cancelled, then stops it gracefully.
pub async fn run_until_cancelled(
    server: actix_web::dev::Server,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let handle = server.handle();
    let stopper = tokio::spawn(async move {
        shutdown.cancelled().await;
        handle.stop(true).await;
    });
    let outcome = server.await;
    stopper.abort();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_names_head_beside_get() {
        let methods = [Method::PUT, Method::GET, Method::DELETE];
        assert_eq!(allowed_methods(methods.iter()), "PUT, GET, HEAD, DELETE");
    }

    #[actix_web::test]
    async fn another_method_is_a_405_naming_the_allowed_ones() {
        use actix_web::test;
        let app = test::init_service(App::new().service(resource(
            "/healthz",
            [(Method::GET, web::to(healthz))],
            method_not_allowed,
        )))
        .await;
        let request = test::TestRequest::with_uri("/healthz")
            .method(Method::TRACE)
            .to_request();
        let response = test::call_service(&app, request).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers().get(header::ALLOW).unwrap(), "GET, HEAD");
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).unwrap(),
            PROBLEM_JSON
        );
        let request = test::TestRequest::with_uri("/healthz")
            .method(Method::HEAD)
            .to_request();
        assert_eq!(test::call_service(&app, request).await.status(), 200);
    }

    #[test]
    fn verbose_is_asked_for_with_or_without_a_value() {
        assert!(wants_verbose("verbose"));
        assert!(wants_verbose("a=1&verbose=1"));
        assert!(wants_verbose("verbose=true"));
        assert!(!wants_verbose(""));
        assert!(!wants_verbose("verbose=0"));
        assert!(!wants_verbose("verbosity"));
    }
}
