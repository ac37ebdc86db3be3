//! What wraps every gateway request: a request id (taken from `X-Request-Id` or made), the
//! request deadline (a 503 instead of a hang), and the request metrics labelled by route
//! pattern, never by raw path.

use std::time::{Duration, Instant};

use actix_web::{
    Error, HttpMessage,
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::header::{HeaderName, HeaderValue},
    middleware::Next,
    web,
};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use spillway_core::metrics::Metrics;

use crate::error::ApiError;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of the request being served; it travels into Kafka headers and logs.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

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
    let method = request.method().to_string();
    let id = request_id(&request);
    request.extensions_mut().insert(RequestId(id.clone()));
    let started = Instant::now();
    let deadline = observer.deadline_for(&method, &route);
    let mut response = match tokio::time::timeout(deadline, next.call(request)).await {
        Ok(outcome) => outcome?.map_into_boxed_body(),
        Err(_) => {
            // The request was moved into the handler; answer through the error path.
            observer
                .requests
                .with_label_values(&[&route, &method, "503"])
                .inc();
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
    let status = response.status().as_u16().to_string();
    observer
        .requests
        .with_label_values(&[&route, &method, &status])
        .inc();
    observer
        .duration
        .with_label_values(&[&route, &method])
        .observe(started.elapsed().as_secs_f64());
    Ok(response)
}
