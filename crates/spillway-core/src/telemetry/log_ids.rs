//! Trace and span ids in log lines: while a traced span is active, a JSON line gets
//! `"trace_id"` and `"span_id"` fields and a pretty one a last line with both, so a log line
//! leads to its trace (and a trace's span to its log lines).
//!
//! Installed only while traces are exported: the format of everybody else's logs is the one
//! `tracing-subscriber` writes, unchanged.

use std::{cell::RefCell, fmt};

use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use tracing::{Event, Subscriber};
use tracing_subscriber::{
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

thread_local! {
    /// One JSON line being written, reused by every line of the thread.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// An event format that adds the ids of the active OpenTelemetry span to `inner`'s lines.
pub struct WithTraceIds<F> {
    inner: F,
    json: bool,
}

impl<F> WithTraceIds<F> {
    /// Around a JSON format: the ids become two fields of the line's object.
    pub fn json(inner: F) -> Self {
        Self { inner, json: true }
    }

    /// Around a text format: the ids follow the event's lines.
    pub fn text(inner: F) -> Self {
        Self { inner, json: false }
    }
}

/// The ids of the span whose context is active on this thread (a span entered by the tracing
/// layer), if it is a valid one.
fn active_ids() -> Option<(TraceId, SpanId)> {
    opentelemetry::Context::map_current(|context| {
        let span = context.span();
        let span_context = span.span_context();
        span_context
            .is_valid()
            .then(|| (span_context.trace_id(), span_context.span_id()))
    })
}

/// Writes a JSON object line with the two fields added before its closing brace (any other
/// line as it is).
fn write_with_ids(
    out: &mut impl fmt::Write,
    line: &str,
    trace_id: TraceId,
    span_id: SpanId,
) -> fmt::Result {
    match line.strip_suffix("}\n") {
        Some(object) => writeln!(
            out,
            "{object},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
        ),
        None => out.write_str(line),
    }
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some((trace_id, span_id)) = active_ids() else {
            return self.inner.format_event(ctx, writer, event);
        };
        if !self.json {
            self.inner.format_event(ctx, writer.by_ref(), event)?;
            return writeln!(writer, "    trace_id: {trace_id}, span_id: {span_id}");
        }
        LINE.with(|line| {
            // A line written while another is (a Debug impl that logs) gets a buffer of its own.
            let mut own = String::new();
            let mut reused = line.try_borrow_mut();
            let buffer = match reused.as_deref_mut() {
                Ok(buffer) => buffer,
                Err(_) => &mut own,
            };
            buffer.clear();
            self.inner.format_event(ctx, Writer::new(buffer), event)?;
            write_with_ids(&mut writer, buffer, trace_id, span_id)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ids_close_the_json_object() {
        let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let span_id = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        let mut line = String::new();
        write_with_ids(&mut line, "{\"message\":\"hi\"}\n", trace_id, span_id).unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(value["span_id"], "00f067aa0ba902b7");
        assert_eq!(value["message"], "hi");
        assert!(line.ends_with("}\n"));
        let mut other = String::new();
        write_with_ids(&mut other, "not json\n", trace_id, span_id).unwrap();
        assert_eq!(other, "not json\n");
    }
}
