//! W3C trace context across Kafka (and into the gateway from a client): the `traceparent` and
//! `tracestate` headers of a record are its [`TraceParent`]; a consumer's span for the record
//! is made its child ([`follow`]), and a batch span links to its records ([`link`]).
//!
//! Only sampled, valid contexts are worth a parent or a link; records are read for them only
//! while this process exports traces ([`super::exporting`]), so none of this runs otherwise.

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{SpanContext, TraceContextExt},
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::wire::{TRACEPARENT_HEADER, TRACESTATE_HEADER};

/// Links one span carries at most (the SDK's default span limit; more would be dropped).
pub const MAX_LINKS: usize = 128;

/// The trace context a record (or a request) arrived with.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceParent(SpanContext);

impl TraceParent {
    /// Reads a `traceparent` value (and its `tracestate`); `None` unless it is a valid W3C
    /// trace context.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        let carrier = Carrier {
            traceparent,
            tracestate,
        };
        let context = TraceContextPropagator::new().extract(&carrier);
        let span_context = context.span().span_context().clone();
        span_context.is_valid().then_some(Self(span_context))
    }

    /// Whether the trace is recorded (the `sampled` flag): only then is it a parent or a link.
    pub fn is_sampled(&self) -> bool {
        self.0.is_sampled()
    }

    pub fn span_context(&self) -> &SpanContext {
        &self.0
    }

    /// The trace id as 32 hex digits.
    pub fn trace_id(&self) -> String {
        self.0.trace_id().to_string()
    }
}

/// The two headers of a parsed record, for the propagator.
struct Carrier<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT_HEADER => Some(self.traceparent),
            TRACESTATE_HEADER => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT_HEADER, TRACESTATE_HEADER]
    }
}

/// The W3C headers that carry a span's context to the next process.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TraceHeaders {
    pub traceparent: String,
    /// Only when the trace has vendor state to pass on.
    pub tracestate: Option<String>,
}

impl Injector for TraceHeaders {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT_HEADER => self.traceparent = value,
            TRACESTATE_HEADER if !value.is_empty() => self.tracestate = Some(value),
            _ => {}
        }
    }
}

/// The headers of `span`'s context; `None` when this process does not export traces or the
/// span has no valid context (it was filtered out).
pub fn headers_of(span: &Span) -> Option<TraceHeaders> {
    if !super::exporting() || span.is_none() {
        return None;
    }
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut headers = TraceHeaders::default();
    TraceContextPropagator::new().inject_context(&context, &mut headers);
    (!headers.traceparent.is_empty()).then_some(headers)
}

/// Makes `span` a child of the first of `parents` and links it to the others (up to
/// [`MAX_LINKS`]). Call it right after creating the span, before it is entered.
pub fn follow<'a>(span: &Span, parents: impl IntoIterator<Item = &'a TraceParent>) {
    let mut parents = parents.into_iter();
    if let Some(first) = parents.next() {
        // Fails only for a span the tracing layer does not see (filtered out): nothing to do.
        let _ = span.set_parent(Context::new().with_remote_span_context(first.0.clone()));
    }
    link(span, parents);
}

/// Links `span` to `parents` (up to [`MAX_LINKS`]).
pub fn link<'a>(span: &Span, parents: impl IntoIterator<Item = &'a TraceParent>) {
    if span.is_none() {
        return;
    }
    for parent in parents.into_iter().take(MAX_LINKS) {
        span.add_link(parent.0.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_w3c_traceparent_is_read_with_its_flags() {
        let parent = TraceParent::parse(SAMPLED, None).unwrap();
        assert!(parent.is_sampled());
        assert_eq!(parent.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let unsampled = TraceParent::parse(&SAMPLED.replace("-01", "-00"), None).unwrap();
        assert!(!unsampled.is_sampled());
    }

    #[test]
    fn anything_else_is_no_parent() {
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert_eq!(TraceParent::parse(bad, None), None, "{bad}");
        }
    }

    #[test]
    fn tracestate_travels_with_the_parent() {
        let parent = TraceParent::parse(SAMPLED, Some("vendor=value")).unwrap();
        assert_eq!(
            parent.span_context().trace_state().get("vendor"),
            Some("value")
        );
    }

    #[test]
    fn no_headers_while_not_exporting() {
        let span = tracing::info_span!("anything");
        assert_eq!(headers_of(&span), None);
    }
}
