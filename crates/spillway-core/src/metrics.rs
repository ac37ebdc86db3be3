//! The Prometheus registry a service exports on `/metrics`, and the metrics every service
//! shares: consumer, dependency, process (`process_*`: CPU seconds, resident memory, open
//! file descriptors, on Linux) and build (`spillway_build_info{version,commit}`). Names follow
//! `spillway_<service>_<what>_<unit>`; labels come from a small known set (topic, outcome,
//! dependency, sink, namespace), never from ids nor from anything a client sends.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The version every spillway binary reports (the workspace's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit it was built from (`SPILLWAY_BUILD_COMMIT` at build time), or `unknown`.
pub const COMMIT: &str = env!("SPILLWAY_COMMIT");

/// The `reason` label values of `dlq_messages_total`: the decode error kinds
/// ([`crate::wire::DecodeError::kind`]) and `rejected` (a handler refused the message).
pub const DLQ_REASONS: [&str; 6] = [
    "empty",
    "protobuf",
    "json",
    "content_type",
    "invalid",
    "rejected",
];

/// Registers a metric, panicking only on a programming error (a duplicate name at start-up).
fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique per service");
    metric
}

/// The process metrics (Linux: `process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_open_fds`, ...) and `spillway_build_info{version,commit} 1`.
fn register_process_and_build(registry: &Registry) {
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("process metrics are registered once per registry");
    let build_info = register(
        registry,
        IntGaugeVec::new(
            Opts::new(
                "spillway_build_info",
                "1, labelled with the version and commit this binary was built from",
            ),
            &["version", "commit"],
        )
        .expect("valid metric"),
    );
    build_info.with_label_values(&[VERSION, COMMIT]).set(1);
}

/// A service's registry and the metrics shared by all services.
#[derive(Clone)]
pub struct Metrics {
    pub service: &'static str,
    pub registry: Registry,
    /// Messages a consumer finished, by topic and outcome (`ok`, `dlq`).
    pub consumed_messages: IntCounterVec,
    /// Messages sent to the DLQ, by source topic and reason kind.
    pub dlq_messages: IntCounterVec,
    /// Time a handler took for one batch, by topic.
    pub batch_duration: HistogramVec,
    /// Messages per handled batch, by topic.
    pub batch_size: HistogramVec,
    /// Handler failures that will be retried, by topic (the batch's topic, or the DLQ topic
    /// for a dead letter that could not be sent).
    pub handler_failures: IntCounterVec,
    /// Flushes (the handler's `flush`, e.g. the counter's write-behind) that failed and are
    /// retried.
    pub flush_failures: IntCounter,
    /// 1 when a dependency answered its last readiness check, by dependency.
    pub dependency_up: IntGaugeVec,
    /// Consumer lag (high watermark minus position) by topic and partition.
    pub consumer_lag: IntGaugeVec,
}

impl Metrics {
    pub fn new(service: &'static str) -> Self {
        let registry = Registry::new();
        let name = |what: &str| format!("spillway_{}_{what}", service.replace('-', "_"));
        let consumed_messages = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    name("consumed_messages_total"),
                    "Messages consumed and finished",
                ),
                &["topic", "outcome"],
            )
            .expect("valid metric"),
        );
        let dlq_messages = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    name("dlq_messages_total"),
                    "Messages sent to the dead-letter topic",
                ),
                &["topic", "reason"],
            )
            .expect("valid metric"),
        );
        let batch_duration = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(name("batch_duration_seconds"), "Time to handle one batch")
                    .buckets(prometheus::exponential_buckets(0.000_5, 2.0, 16).expect("buckets")),
                &["topic"],
            )
            .expect("valid metric"),
        );
        let batch_size = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(name("batch_messages"), "Messages per handled batch")
                    .buckets(prometheus::exponential_buckets(1.0, 2.0, 14).expect("buckets")),
                &["topic"],
            )
            .expect("valid metric"),
        );
        let handler_failures = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    name("handler_failures_total"),
                    "Batches that failed and are retried",
                ),
                &["topic"],
            )
            .expect("valid metric"),
        );
        let flush_failures = register(
            &registry,
            IntCounter::with_opts(Opts::new(
                name("flush_failures_total"),
                "Flushes that failed and are retried",
            ))
            .expect("valid metric"),
        );
        let dependency_up = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    name("dependency_up"),
                    "1 when the dependency answered its last check",
                ),
                &["dependency"],
            )
            .expect("valid metric"),
        );
        let consumer_lag = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    name("consumer_lag_messages"),
                    "High watermark minus consumer position",
                ),
                &["topic", "partition"],
            )
            .expect("valid metric"),
        );
        register_process_and_build(&registry);
        Self {
            service,
            registry,
            consumed_messages,
            dlq_messages,
            batch_duration,
            batch_size,
            handler_failures,
            flush_failures,
            dependency_up,
            consumer_lag,
        }
    }

    /// The metric name for this service: `spillway_<service>_<what>`.
    pub fn name(&self, what: &str) -> String {
        format!("spillway_{}_{what}", self.service.replace('-', "_"))
    }

    /// Exports a consumer's failure counters at 0 from the start: handler failures for its
    /// topics and its DLQ sends, and DLQ messages for its topics by every reason (flush
    /// failures have no label and are exported from the start anyway). A labelled counter
    /// that appears only with its first increment hides that increment from `rate` and
    /// `increase`, so dashboards and alerts would miss it.
    pub fn init_consumer_series(&self, topics: &[String], dlq_topic: &str) {
        for topic in topics.iter().map(String::as_str).chain([dlq_topic]) {
            self.handler_failures.with_label_values(&[topic]);
        }
        for topic in topics {
            for reason in DLQ_REASONS {
                self.dlq_messages
                    .with_label_values(&[topic.as_str(), reason]);
            }
        }
    }

    /// Registers a service-specific metric in this registry.
    pub fn register<M: prometheus::core::Collector + Clone + 'static>(&self, metric: M) -> M {
        register(&self.registry, metric)
    }

    /// The Prometheus text exposition of everything registered.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(error) = encoder.encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "encoding metrics failed");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}
