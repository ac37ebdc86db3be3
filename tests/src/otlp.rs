//! A minimal OTLP/HTTP trace receiver on loopback, as a collector (Jaeger, Tempo, the
//! OpenTelemetry Collector) would be: `POST /v1/traces` with an `ExportTraceServiceRequest`
//! in protobuf, decoded with `opentelemetry-proto`, every span kept with its service's name.
//! It also counts the connections it accepted, so a test can tell that nothing connected.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::{AnyValue, KeyValue, any_value},
    trace::v1::span::SpanKind,
};
use prost::Message;
use tokio::{net::TcpListener, task::JoinHandle};

/// One span as the receiver got it; ids in hex, attributes as text.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The `service.name` of the resource that sent it.
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub kind: String,
    pub attributes: BTreeMap<String, String>,
    /// `(trace id, span id)` of each linked span.
    pub links: Vec<(String, String)>,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Default)]
struct Received {
    spans: Mutex<Vec<ReceivedSpan>>,
    connections: AtomicU64,
    requests: AtomicU64,
}

/// A receiver listening on 127.0.0.1 (a free port) until dropped.
pub struct OtlpReceiver {
    address: SocketAddr,
    received: Arc<Received>,
    task: JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OtlpReceiver {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let received = Arc::new(Received::default());
        let task = tokio::spawn(accept(listener, received.clone()));
        Ok(Self {
            address,
            received,
            task,
        })
    }

    /// The base URL to configure as `telemetry.otlp_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received.spans.lock().expect("spans").clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.received.connections.load(Ordering::Relaxed)
    }

    /// Export requests received so far.
    pub fn requests(&self) -> u64 {
        self.received.requests.load(Ordering::Relaxed)
    }
}

async fn accept(listener: TcpListener, received: Arc<Received>) {
    while let Ok((stream, _)) = listener.accept().await {
        received.connections.fetch_add(1, Ordering::Relaxed);
        let received = received.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let received = received.clone();
                async move { Ok::<_, Infallible>(answer(request, &received).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}

async fn answer(request: Request<Incoming>, received: &Received) -> Response<Full<Bytes>> {
    if request.uri().path() != "/v1/traces" {
        return status(StatusCode::NOT_FOUND);
    }
    received.requests.fetch_add(1, Ordering::Relaxed);
    let Ok(body) = request.into_body().collect().await else {
        return status(StatusCode::BAD_REQUEST);
    };
    let Ok(export) = ExportTraceServiceRequest::decode(body.to_bytes()) else {
        return status(StatusCode::BAD_REQUEST);
    };
    received
        .spans
        .lock()
        .expect("spans")
        .extend(spans_of(export));
    let mut response = Response::new(Full::new(Bytes::from(
        ExportTraceServiceResponse::default().encode_to_vec(),
    )));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-protobuf"),
    );
    response
}

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|value| value.value.as_ref()) {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::IntValue(number)) => number.to_string(),
        Some(any_value::Value::BoolValue(flag)) => flag.to_string(),
        Some(any_value::Value::DoubleValue(number)) => number.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(pairs: &[KeyValue]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|pair| (pair.key.clone(), text(&pair.value)))
        .collect()
}

fn kind(kind: i32) -> String {
    SpanKind::try_from(kind)
        .map(|kind| {
            kind.as_str_name()
                .trim_start_matches("SPAN_KIND_")
                .to_lowercase()
        })
        .unwrap_or_default()
}

fn spans_of(export: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut spans = Vec::new();
    for resource_spans in export.resource_spans {
        let resource = resource_spans
            .resource
            .map(|resource| attributes(&resource.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                spans.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    kind: kind(span.kind),
                    attributes: attributes(&span.attributes),
                    links: span
                        .links
                        .iter()
                        .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
                        .collect(),
                });
            }
        }
    }
    spans
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// One trace as an indented tree (service, name, span id), for a failure message or a report.
pub fn tree(spans: &[ReceivedSpan], trace_id: &str) -> String {
    let in_trace: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let mut out = String::new();
    let known = |id: &str| in_trace.iter().any(|s| s.span_id == id);
    let roots = in_trace
        .iter()
        .filter(|span| span.parent_span_id.is_empty() || !known(&span.parent_span_id));
    for root in roots {
        write_subtree(&mut out, &in_trace, root, 0);
    }
    out
}

fn write_subtree(out: &mut String, spans: &[&ReceivedSpan], span: &ReceivedSpan, depth: usize) {
    out.push_str(&format!(
        "{}{} [{}] {} span {}{}\n",
        "  ".repeat(depth),
        span.name,
        span.service,
        span.kind,
        span.span_id,
        if span.links.is_empty() {
            String::new()
        } else {
            format!(", {} link(s)", span.links.len())
        }
    ));
    for child in spans.iter().filter(|s| s.parent_span_id == span.span_id) {
        write_subtree(out, spans, child, depth + 1);
    }
}
