//! The template-warmup service: keeps a pool of ready-made S3 copies per template so that
//! the gateway can hand one out in milliseconds.
//!
//! - [`refill`]: consumes `spillway.warmup-requests.v1` and tops pools up to capacity,
//!   coalescing requests, with a bound on S3 calls in flight across the service.
//! - [`sweeper`]: removes expired, retired and abandoned copies from pools and S3, repairs
//!   pools after a crash or a lost Redis, and asks for refills of short pools.
//! - [`metrics`]: pool fill, copies, S3 calls in flight.

pub mod metrics;
pub mod refill;
pub mod sweeper;

use std::{sync::Arc, time::Duration};

use spillway_core::{
    config::Settings,
    service::{ConsumerService, ServiceBase},
    templates::{CopyMaker, S3Copier, TemplatePool},
};
use tokio_util::sync::CancellationToken;

use crate::{metrics::WarmupMetrics, refill::RefillHandler, sweeper::Sweeper};

/// The template-warmup service, built and bound, not yet running.
pub struct Application {
    service: ConsumerService<RefillHandler>,
    sweeper: Sweeper,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let mut base = ServiceBase::start("template-warmup", settings).await?;
        let redis = base.with_redis()?;
        let db = base.with_database().await?;
        let s3 = base.with_s3().await?;
        let settings = base.settings.clone();
        let metrics = WarmupMetrics::new(&base.metrics);
        let copier = S3Copier::new(s3, &settings.s3.bucket, &settings.templates)
            .with_in_flight_gauge(metrics.s3_calls_in_flight.clone());
        let pool = TemplatePool::new(redis);
        let maker = CopyMaker::new(db, pool, copier);
        let templates = &settings.templates;
        let handler = Arc::new(RefillHandler::new(
            maker.clone(),
            metrics.clone(),
            templates.copy_parallelism,
            templates.copy_timeout(),
        ));
        let topics = vec![settings.kafka.warmup_requests.name.clone()];
        base.metrics
            .init_consumer_series(&topics, &settings.kafka.dlq.name);
        let consumer = base.consumer(&settings.template_warmup.group_id, topics, handler)?;
        let sweeper = Sweeper {
            maker,
            metrics,
            producer: base.producer.clone(),
            warmup_topic: settings.kafka.warmup_requests.name.clone(),
            interval: templates.sweep_interval(),
            ready_ttl: templates.ready_ttl(),
            abandoned_after: templates.copy_timeout()
                + Duration::from_millis(settings.s3.timeout_ms),
        };
        let service =
            ConsumerService::new(&base, &settings.template_warmup.listen, vec![consumer])?;
        Ok(Self { service, sweeper })
    }

    pub fn port(&self) -> u16 {
        self.service.port()
    }

    /// Serves and refills until the token is cancelled; the sweeper stops between passes.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let sweeper = tokio::spawn(self.sweeper.run(shutdown.clone()));
        let outcome = self.service.run_until_stopped(shutdown).await;
        sweeper.await?;
        outcome
    }
}
