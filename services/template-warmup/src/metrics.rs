//! template-warmup's own metrics (the shared consumer metrics live in spillway-core). The
//! `template` label is a template id: templates are few and registered by operators.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts};
use spillway_core::metrics::Metrics;

#[derive(Clone)]
pub struct WarmupMetrics {
    /// Ready copies in each template's pool.
    pub pool_ready: IntGaugeVec,
    /// Each template's pool capacity.
    pub pool_capacity: IntGaugeVec,
    /// S3 calls this instance has in flight (never above `templates.max_s3_in_flight`).
    pub s3_calls_in_flight: IntGauge,
    /// Pool copies by outcome: `ready`, `failed`, `retired` (finished for an old version).
    pub copies: IntCounterVec,
    /// Seconds to copy every object of one pool copy.
    pub copy_duration: Histogram,
    /// Copies the sweeper removed, by reason: `ttl`, `retired`, `abandoned`.
    pub swept_copies: IntCounterVec,
}

impl WarmupMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        let gauge_vec = |what: &str, help: &str| {
            metrics.register(
                IntGaugeVec::new(Opts::new(metrics.name(what), help), &["template"])
                    .expect("valid metric"),
            )
        };
        let counter_vec = |what: &str, help: &str, label: &str| {
            metrics.register(
                IntCounterVec::new(Opts::new(metrics.name(what), help), &[label])
                    .expect("valid metric"),
            )
        };
        Self {
            pool_ready: gauge_vec("pool_ready", "Ready copies in the template's pool"),
            pool_capacity: gauge_vec("pool_capacity", "The template's pool capacity"),
            s3_calls_in_flight: metrics.register(
                IntGauge::with_opts(Opts::new(
                    metrics.name("s3_calls_in_flight"),
                    "S3 calls in flight",
                ))
                .expect("valid metric"),
            ),
            copies: counter_vec("copies_total", "Pool copies by outcome", "outcome"),
            copy_duration: metrics.register(
                Histogram::with_opts(
                    HistogramOpts::new(
                        metrics.name("copy_duration_seconds"),
                        "Time to copy every object of one pool copy",
                    )
                    .buckets(prometheus::exponential_buckets(0.01, 2.0, 14).expect("buckets")),
                )
                .expect("valid metric"),
            ),
            swept_copies: counter_vec(
                "swept_copies_total",
                "Copies the sweeper removed, by reason",
                "reason",
            ),
        }
    }

    /// Sets a template's pool gauges.
    pub fn report_pool(&self, template_id: &str, ready: u64, capacity: i32) {
        self.pool_ready
            .with_label_values(&[template_id])
            .set(ready as i64);
        self.pool_capacity
            .with_label_values(&[template_id])
            .set(capacity.into());
    }
}
