//! The batch-writer service: turns bursts of acknowledged writes into a few bulk statements
//! per sink. One consumer loop per sink (`spillway.writes.<sink>.v1`), batching by the sink's
//! rule (rows, delay, bytes).
//!
//! A batch meets the modules in this order:
//! - [`handler`]: reduce the batch ([`reduce`]: one change per key, as the sink's conflict
//!   rule says), write each partition's share in its own transaction (several at once),
//!   bisect to find rows the database refuses (they go to the DLQ), then, once the consumer
//!   stored the offsets, clear the pending markers in Redis.
//! - [`refresh`]: after a commit, the cached views that depend on the sink are refreshed.
//! - [`spans`]: a span per partition's transaction and, while traces are exported, one per
//!   sampled record, continuing the trace of the request that wrote it.
//! - [`tables`]: the sink tables, checked at start (`spillway-admin migrate` creates the owned
//!   ones).

pub mod handler;
pub mod reduce;
pub mod refresh;
pub mod spans;
pub mod tables;

use std::sync::Arc;

use spillway_core::{
    config::Settings,
    service::{ConsumerService, ServiceBase},
    sinks::PendingWrites,
    views::store::ViewStore,
};
use tokio_util::sync::CancellationToken;

use crate::{
    handler::{SinkHandler, WriterMetrics},
    refresh::{RefreshMetrics, ViewRefresher},
};

/// The batch-writer, built and bound, not yet running.
pub struct Application {
    service: ConsumerService<SinkHandler>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let mut base = ServiceBase::start("batch-writer", settings).await?;
        let redis = base.with_redis()?;
        let db = base.with_database().await?;
        let settings = base.settings.clone();
        tables::check(&db, &settings.database.schema, &settings.sinks).await?;
        let metrics = WriterMetrics::new(&base.metrics);
        let view_store = ViewStore::new(redis.clone(), db.clone());
        let refresh_metrics = RefreshMetrics::new(&base.metrics);
        let mut consumers = Vec::new();
        for (name, sink) in &settings.sinks {
            let views = ViewRefresher::for_sink(
                name,
                &settings.views,
                view_store.clone(),
                refresh_metrics.clone(),
            );
            let handler = Arc::new(SinkHandler::new(
                name,
                sink.clone(),
                db.clone(),
                PendingWrites::new(redis.clone()),
                metrics.clone(),
                views,
                settings.batch_writer.write_concurrency,
            ));
            let topics = vec![settings.kafka.writes_topic(name)];
            base.metrics
                .init_consumer_series(&topics, &settings.kafka.dlq.name);
            let mut consumer = base.consumer_settings(&settings.batch_writer.group_id, topics);
            consumer.batch_size = sink.batch_max_rows;
            consumer.linger = std::time::Duration::from_millis(sink.batch_max_delay_ms);
            consumer.max_batch_bytes = sink.batch_max_bytes;
            consumers.push(base.consumer_with(consumer, handler)?);
        }
        let service = ConsumerService::new(&base, &settings.batch_writer.listen, consumers)?;
        Ok(Self { service })
    }

    pub fn port(&self) -> u16 {
        self.service.port()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.service.run_until_stopped(shutdown).await
    }
}
