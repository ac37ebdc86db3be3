//! The counter service's own metrics (the shared consumer metrics live in spillway-core).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};
use spillway_core::metrics::Metrics;

#[derive(Clone)]
pub struct CounterMetrics {
    /// Events by namespace and outcome: applied, replayed (the record applied before),
    /// duplicate (its event id applied before).
    pub events: IntCounterVec,
    /// Seconds from the event's acceptance to its apply in Redis.
    pub apply_lag: Histogram,
    /// Counters loaded back from the database into Redis.
    pub loads: IntCounter,
    /// Counters not applied because their database row is corrupt, by namespace.
    pub corrupt_rows: IntCounterVec,
    /// Times Redis was found emptied and the consumer rewound to its committed offsets.
    pub rebuilds: IntCounter,
    pub dirty_entities: IntGauge,
    pub flush_duration: Histogram,
    pub flush_entities: Histogram,
    /// Seconds from the oldest event's acceptance in a flush to the flush's commit.
    pub flush_lag: Histogram,
}

impl CounterMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        let seconds = prometheus::exponential_buckets(0.001, 2.0, 16).expect("buckets");
        let histogram = |what: &str, help: &str, buckets: Vec<f64>| {
            metrics.register(
                Histogram::with_opts(HistogramOpts::new(metrics.name(what), help).buckets(buckets))
                    .expect("valid metric"),
            )
        };
        let counter = |what: &str, help: &str| {
            metrics.register(
                IntCounter::with_opts(Opts::new(metrics.name(what), help)).expect("valid metric"),
            )
        };
        Self {
            events: metrics.register(
                IntCounterVec::new(
                    Opts::new(metrics.name("events_total"), "Counter events by outcome"),
                    &["namespace", "outcome"],
                )
                .expect("valid metric"),
            ),
            apply_lag: histogram(
                "apply_lag_seconds",
                "Acceptance to Redis apply",
                seconds.clone(),
            ),
            loads: counter(
                "redis_loads_total",
                "Counters loaded from the database into Redis",
            ),
            corrupt_rows: metrics.register(
                IntCounterVec::new(
                    Opts::new(
                        metrics.name("corrupt_rows_total"),
                        "Counters whose database row could not be read (their events went to the DLQ)",
                    ),
                    &["namespace"],
                )
                .expect("valid metric"),
            ),
            rebuilds: counter(
                "redis_rebuilds_total",
                "Redis found emptied: consumer rewound",
            ),
            dirty_entities: metrics.register(
                IntGauge::with_opts(Opts::new(
                    metrics.name("dirty_entities"),
                    "Counters not yet flushed",
                ))
                .expect("valid metric"),
            ),
            flush_duration: histogram(
                "flush_duration_seconds",
                "One write-behind flush",
                seconds.clone(),
            ),
            flush_entities: histogram(
                "flush_entities",
                "Counters per flush",
                prometheus::exponential_buckets(1.0, 2.0, 14).expect("buckets"),
            ),
            flush_lag: histogram(
                "flush_lag_seconds",
                "Acceptance to database commit",
                seconds,
            ),
        }
    }
}
