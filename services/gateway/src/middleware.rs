//! What wraps every gateway request: a request id (taken from `X-Request-Id` or made), the
//! request's span (`http.request`: route pattern, method, status, request id; a child of the
//! client's `traceparent` while traces are exported), the request deadline (a 503 instead of a
//! hang), the request metrics, and the warning of a failed request (its id, route pattern and
//! status).
//!
//! Nothing a client sends can add a metric series: the route is the matched pattern or
//! `unmatched`, never the raw path; the method is one of [`METHODS`] or `other`; the status
//! is the one the gateway answered.

use std::time::{Duration, Instant};

use actix_web::{
    Error, HttpMessage,
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{
        StatusCode,
        header::{HeaderName, HeaderValue},
    },
    middleware::Next,
    web,
};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use spillway_core::{
    metrics::Metrics,
    telemetry::{self, TraceParent, context},
    wire,
};
use tracing::{Instrument, Span};

use crate::error::ApiError;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of the request being served; it travels into Kafka headers and logs.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The methods counted by name; any other (a client may send `FOOBAR`) is `other`.
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// The `method` label of a request.
pub fn method_label(method: &actix_web::http::Method) -> &'static str {
    METHODS
        .into_iter()
        .find(|known| *known == method.as_str())
        .unwrap_or("other")
}

/// Routes that call S3 inside the request (a direct copy, checking a template's objects):
/// they get `gateway.copy_deadline_ms` instead of the request deadline.
const S3_ROUTES: [(&str, &str); 2] = [
    ("POST", "/v1/templates/{template_id}/copies"),
    ("PUT", "/v1/templates/{template_id}"),
];

/// Request metrics and the deadlines.
#[derive(Clone)]
pub struct RequestObserver {
    deadline: Duration,
    copy_deadline: Duration,
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl RequestObserver {
    pub fn new(metrics: &Metrics, deadline: Duration, copy_deadline: Duration) -> Self {
        let requests = metrics.register(
            IntCounterVec::new(
                Opts::new(
                    metrics.name("http_requests_total"),
                    "HTTP requests by route and status",
                ),
                &["route", "method", "status"],
            )
            .expect("valid metric"),
        );
        let duration = metrics.register(
            HistogramVec::new(
                HistogramOpts::new(
                    metrics.name("http_request_duration_seconds"),
                    "HTTP request latency",
                )
                .buckets(prometheus::exponential_buckets(0.000_25, 2.0, 16).expect("buckets")),
                &["route", "method"],
            )
            .expect("valid metric"),
        );
        Self {
            deadline,
            copy_deadline,
            requests,
            duration,
        }
    }

    /// The deadline of a route.
    fn deadline_for(&self, method: &str, route: &str) -> Duration {
        if S3_ROUTES.contains(&(method, route)) {
            self.copy_deadline
        } else {
            self.deadline
        }
    }
}

fn request_id(request: &ServiceRequest) -> String {
    request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty() && value.len() <= 128 && value.is_ascii())
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned)
}

/// The probes and the scrape have no span: a trace per Prometheus scrape is noise.
const UNTRACED_ROUTES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The client's W3C trace context (`traceparent` header), while traces are exported.
fn client_trace(request: &ServiceRequest) -> Option<TraceParent> {
    if !telemetry::exporting() {
        return None;
    }
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    TraceParent::parse(
        header(wire::TRACEPARENT_HEADER)?,
        header(wire::TRACESTATE_HEADER),
    )
}

/// The span of one request; its status is recorded by [`record_status`].
fn request_span(request: &ServiceRequest, route: &str, method: &str, request_id: &str) -> Span {
    if UNTRACED_ROUTES.contains(&route) {
        return Span::none();
    }
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        request_id,
    );
    if let Some(parent) = client_trace(request) {
        context::follow(&span, [&parent]);
    }
    span
}

/// The answer's status on the request's span; a server error marks the span as failed.
fn record_status(span: &Span, status: StatusCode) {
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}

/// Logs a failed request with its id, route pattern, method and status: a warning for a
/// server error (with the error's own words, which the caller never sees), debug for a
/// refused request (the caller's fault, answered in problem+json).
fn warn_failed(
    response: &ServiceResponse<BoxBody>,
    request_id: &str,
    route: &str,
    method: &str,
    status: StatusCode,
) {
    let error = response
        .response()
        .error()
        .map(ToString::to_string)
        .unwrap_or_default();
    if status.is_server_error() {
        tracing::warn!(
            request_id, route, method, status = status.as_u16(), %error, "request failed"
        );
    } else {
        tracing::debug!(
            request_id, route, method, status = status.as_u16(), %error, "request refused"
        );
    }
}

/// The middleware function (`actix_web::middleware::from_fn`).
pub async fn observe(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let observer = request
        .app_data::<web::Data<RequestObserver>>()
        .cloned()
        .expect("RequestObserver is registered");
    let route = request
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(request.method());
    let id = request_id(&request);
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = request_span(&request, &route, method, &id);
    let started = Instant::now();
    let deadline = observer.deadline_for(method, &route);
    let handled = next.call(request).instrument(span.clone());
    let outcome = tokio::time::timeout(deadline, handled).await;
    let _entered = span.enter();
    let mut response = match outcome {
        Ok(outcome) => outcome?.map_into_boxed_body(),
        Err(_) => {
            record_status(&span, StatusCode::SERVICE_UNAVAILABLE);
            // The request was moved into the handler; answer through the error path.
            observer
                .requests
                .with_label_values(&[&route, method, "503"])
                .inc();
            tracing::warn!(
                request_id = %id, route = %route, method, status = 503,
                deadline_ms = deadline.as_millis() as u64, "request failed: deadline exceeded"
            );
            return Err(ApiError::DeadlineExceeded {
                deadline_ms: deadline.as_millis() as u64,
                request_id: id,
            }
            .into());
        }
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    let status = response.status();
    record_status(&span, status);
    if status.is_client_error() || status.is_server_error() {
        warn_failed(&response, &id, &route, method, status);
    }
    let status = status.as_u16().to_string();
    observer
        .requests
        .with_label_values(&[&route, method, &status])
        .inc();
    observer
        .duration
        .with_label_values(&[&route, method])
        .observe(started.elapsed().as_secs_f64());
    Ok(response)
}

#[cfg(test)]
mod tests {
    use actix_web::http::Method;

    use super::*;

    #[test]
    fn methods_outside_the_fixed_set_are_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::OPTIONS), "OPTIONS");
        assert_eq!(
            method_label(&Method::from_bytes(b"FOOBAR").unwrap()),
            "other"
        );
        assert_eq!(method_label(&Method::TRACE), "other");
    }
}
