//! `tracing` set-up: logs and, when `[telemetry] otlp_endpoint` is set, traces.
//!
//! - Logs: JSON lines for machines or a pretty form for people (`log.format = "auto"`, the
//!   default, picks pretty on a terminal and JSON otherwise; colours only on a terminal),
//!   filtered by the configured level (overridden by `RUST_LOG` when set). Known-harmless
//!   messages of the libraries are kept below `warn` by [`QUIET_DIRECTIVES`].
//! - Traces ([`export`]): spans at `info` and above (and `warn` events, as span events) go to
//!   the OTLP exporter through `tracing-opentelemetry`, with a filter of their own, so the log
//!   level does not decide what is traced. Log lines then carry `trace_id` and `span_id`
//!   ([`log_ids`]).
//! - [`context`]: the W3C `traceparent` of Kafka records, so a consumer's span continues the
//!   trace of the request that produced the record.
//!
//! Without an endpoint the subscriber is the logs alone, as it always was: no exporter, no
//! thread, no connection, and [`exporting`] is false.

pub mod context;
mod export;
mod log_ids;

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::{Level, Subscriber};
use tracing_subscriber::{
    EnvFilter, Layer, Registry,
    filter::filter_fn,
    fmt::{self, MakeWriter},
    prelude::*,
};

pub use context::{TraceHeaders, TraceParent};
pub use export::{TelemetryError, exporting, tracer_provider};

use crate::config::{LogFormat, LogSettings, Settings};
use log_ids::WithTraceIds;

/// Directives added to the configured level (unless `RUST_LOG` is set): PostgreSQL's notices
/// (`relation ... already exists, skipping` from an idempotent `CREATE ... IF NOT EXISTS`) and
/// actix-server's own start and stop lines (workers, runtime) are not worth an info line;
/// each service says once that it started (`service::announce`).
const QUIET_DIRECTIVES: [&str; 2] = ["sqlx::postgres::notice=warn", "actix_server=warn"];

/// The instrumentation scope of spillway's spans.
const TRACER_NAME: &str = "spillway";

/// The format `auto` stands for on this output.
fn effective_format(format: LogFormat, terminal: bool) -> LogFormat {
    match (format, terminal) {
        (LogFormat::Auto, true) => LogFormat::Pretty,
        (LogFormat::Auto, false) => LogFormat::Json,
        (other, _) => other,
    }
}

fn filter(level: &str) -> EnvFilter {
    if let Ok(filter) = EnvFilter::try_from_default_env() {
        return filter;
    }
    let mut filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    for directive in QUIET_DIRECTIVES {
        if let Ok(directive) = directive.parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// The log layer: the configured format, with the trace ids when traces are exported.
fn log_layer<W>(settings: &LogSettings, terminal: bool, traced: bool, writer: W) -> BoxedLayer
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let level = filter(&settings.level);
    match effective_format(settings.format, terminal) {
        LogFormat::Pretty => {
            let layer = fmt::layer()
                .pretty()
                .with_ansi(terminal)
                .with_writer(writer);
            if traced {
                let format = WithTraceIds::text(fmt::format().pretty());
                layer.event_format(format).with_filter(level).boxed()
            } else {
                layer.with_filter(level).boxed()
            }
        }
        _ => {
            let layer = fmt::layer()
                .json()
                .with_current_span(true)
                .with_writer(writer);
            if traced {
                let format = WithTraceIds::json(fmt::format().json().with_current_span(true));
                layer.event_format(format).with_filter(level).boxed()
            } else {
                layer.with_filter(level).boxed()
            }
        }
    }
}

/// The trace layer: spans at info and above, warnings and errors as their events, whatever
/// the log level.
fn trace_layer(tracer: SdkTracer) -> BoxedLayer {
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(filter_fn(|metadata| {
            let most_verbose = if metadata.is_span() {
                Level::INFO
            } else {
                Level::WARN
            };
            *metadata.level() <= most_verbose
        }))
        .boxed()
}

/// The whole subscriber: logs to `writer`, and traces to `tracer` when there is one.
fn subscriber<W>(
    settings: &LogSettings,
    terminal: bool,
    tracer: Option<SdkTracer>,
    writer: W,
) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let mut layers = vec![log_layer(settings, terminal, tracer.is_some(), writer)];
    layers.extend(tracer.map(trace_layer));
    tracing_subscriber::registry().with(layers)
}

/// Installs the global subscriber, logs only (spillway-admin); later calls (tests) are
/// ignored.
pub fn init(settings: &LogSettings) {
    let terminal = std::io::stdout().is_terminal();
    let _ = subscriber(settings, terminal, None, std::io::stdout).try_init();
}

/// A service's telemetry; dropping it sends the spans still queued (bounded in time) and
/// stops the exporter.
#[must_use = "dropping the telemetry stops the trace exporter"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown_with_timeout(export::SHUTDOWN_TIMEOUT)
        {
            tracing::warn!(%error, "the last spans were not all exported");
        }
    }
}

/// Installs the global subscriber of `service` (`gateway`, `counter`, ...): its logs, and its
/// traces when `telemetry.otlp_endpoint` is set. Later calls (tests) are ignored.
pub fn init_service(settings: &Settings, service: &str) -> Result<Telemetry, TelemetryError> {
    let provider = tracer_provider(&settings.telemetry, service)?;
    let tracer = provider
        .as_ref()
        .map(|provider| provider.tracer(TRACER_NAME));
    let terminal = std::io::stdout().is_terminal();
    let installed = subscriber(&settings.log, terminal, tracer, std::io::stdout)
        .try_init()
        .is_ok();
    if installed && provider.is_some() {
        export::set_exporting();
    }
    Ok(Telemetry { provider })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::*;

    #[test]
    fn auto_is_pretty_on_a_terminal_and_json_elsewhere() {
        assert_eq!(effective_format(LogFormat::Auto, true), LogFormat::Pretty);
        assert_eq!(effective_format(LogFormat::Auto, false), LogFormat::Json);
        assert_eq!(
            effective_format(LogFormat::Pretty, false),
            LogFormat::Pretty
        );
        assert_eq!(effective_format(LogFormat::Json, true), LogFormat::Json);
    }

    /// Log lines written into memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn json(&self) -> Vec<serde_json::Value> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect()
        }
    }

    fn json_settings(level: &str) -> LogSettings {
        LogSettings {
            format: LogFormat::Json,
            level: level.into(),
        }
    }

    #[test]
    fn json_lines_in_a_traced_span_carry_its_trace_and_span_ids() {
        let lines = Lines::default();
        // A provider without an exporter: spans get real ids, nothing is sent anywhere.
        let provider = SdkTracerProvider::builder().build();
        let writer = lines.clone();
        let subscriber = subscriber(
            &json_settings("info"),
            false,
            Some(provider.tracer("test")),
            move || writer.clone(),
        );
        let (trace_id, span_id) = tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside any span");
            let span = tracing::info_span!("request", request_id = "r1");
            let _entered = span.enter();
            tracing::warn!("inside the span");
            let context = span.context();
            let span_context = context.span().span_context().clone();
            (
                span_context.trace_id().to_string(),
                span_context.span_id().to_string(),
            )
        });
        let lines = lines.json();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].get("trace_id").is_none(), "{}", lines[0]);
        assert_eq!(lines[1]["trace_id"], trace_id.as_str());
        assert_eq!(lines[1]["span_id"], span_id.as_str());
        assert_eq!(lines[1]["span"]["request_id"], "r1");
        assert_eq!(lines[1]["fields"]["message"], "inside the span");
    }

    #[test]
    fn without_a_tracer_the_json_lines_are_as_before() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = subscriber(&json_settings("info"), false, None, move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", request_id = "r1");
            let _entered = span.enter();
            tracing::info!("inside the span");
        });
        let lines = lines.json();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].get("trace_id").is_none());
        assert_eq!(lines[0]["span"]["request_id"], "r1");
    }

    #[test]
    fn spans_are_traced_whatever_the_log_level() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = subscriber(
            &json_settings("error"),
            false,
            Some(provider.tracer("test")),
            std::io::sink,
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("batch");
            assert!(span.context().span().span_context().is_valid());
            let detail = tracing::debug_span!("per message");
            assert!(detail.is_disabled());
        });
    }
}
