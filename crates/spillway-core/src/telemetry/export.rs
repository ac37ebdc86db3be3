//! The OTLP exporter: spans go over OTLP/HTTP (protobuf) to `<telemetry.otlp_endpoint>/v1/traces`,
//! in batches from the SDK's own thread (a blocking HTTP client, so no task on the service's
//! runtime), sampled `ParentBased(TraceIdRatioBased(sample_ratio))`.
//!
//! Without an endpoint [`tracer_provider`] builds nothing: no thread, no client, no connection,
//! and [`exporting`] stays false, which is what every hot path asks before it spends anything on
//! traces.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    trace::{Sampler, SdkTracerProvider},
};

use crate::config::TelemetrySettings;

/// Longest one export waits for the collector: a collector that is down costs the exporter's
/// thread this much per batch, and a stopping service at most this much more.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a stopping service waits for its last spans to be sent.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports traces: the tracer is installed in the global subscriber.
/// False by default, and in every process without `telemetry.otlp_endpoint`.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Called once the tracing layer of a provider is the global subscriber.
pub(super) fn set_exporting() {
    EXPORTING.store(true, Ordering::Relaxed);
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("configuration key `telemetry.otlp_endpoint`: the OTLP exporter cannot be built: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The tracer provider for `service` (`gateway`, `counter`, ...), or `None` when no endpoint is
/// configured.
pub fn tracer_provider(
    settings: &TelemetrySettings,
    service: &str,
) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    if !settings.exports() {
        return Ok(None);
    }
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(settings.traces_url())
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    let resource = Resource::builder()
        .with_service_name(settings.service_name_of(service))
        .with_attribute(KeyValue::new("service.version", crate::metrics::VERSION))
        .build();
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sample_ratio)));
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(sampler)
            .with_resource(resource)
            .build(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_endpoint_nothing_is_built() {
        let settings = TelemetrySettings::default();
        assert!(tracer_provider(&settings, "counter").unwrap().is_none());
        assert!(!exporting());
    }

    #[test]
    fn the_service_name_defaults_to_spillway_and_the_service() {
        let settings = TelemetrySettings::default();
        assert_eq!(settings.service_name_of("counter"), "spillway-counter");
        let custom = TelemetrySettings {
            service_name: "shop-{service}".into(),
            ..TelemetrySettings::default()
        };
        assert_eq!(custom.service_name_of("gateway"), "shop-gateway");
    }

    #[test]
    fn the_traces_path_is_added_to_the_base_url_once() {
        let mut settings = TelemetrySettings {
            otlp_endpoint: "http://jaeger:4318".into(),
            ..TelemetrySettings::default()
        };
        assert_eq!(settings.traces_url(), "http://jaeger:4318/v1/traces");
        settings.otlp_endpoint = "http://tempo:4318/v1/traces".into();
        assert_eq!(settings.traces_url(), "http://tempo:4318/v1/traces");
        settings.otlp_endpoint = "https://otlp.example/".into();
        assert_eq!(settings.traces_url(), "https://otlp.example/v1/traces");
    }
}
