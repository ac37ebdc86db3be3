//! The counter service: applies counter events (likes, views) to Redis exactly once and writes
//! the counters behind to the database in bulk.
//!
//! A request meets the modules in this order:
//! - [`handler`]: the consumer's batch handler; checks that Redis still holds what it wrote
//!   (the epoch), applies each event with one Lua script, loads counters Redis lost from the
//!   database, marks what changed as dirty, and flushes the dirty counters to PostgreSQL in
//!   one transaction, after which the consumer stores the offsets.
//! - [`spans`]: the spans of each counter's apply and of each flush, continuing the traces of
//!   the records (their `traceparent`) while traces are exported.
//!
//! The Redis and SQL of counters live in `spillway_core::counters` (the store shared with
//! the gateway).

pub mod handler;
mod metrics;
pub mod spans;

use std::sync::Arc;

use spillway_core::{
    config::Settings,
    counters::{self, CounterStore},
    service::{ConsumerService, ServiceBase},
};
use tokio_util::sync::CancellationToken;

use crate::handler::CounterHandler;

/// The counter service, built and bound, not yet running.
pub struct Application {
    service: ConsumerService<CounterHandler>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let mut base = ServiceBase::start("counter", settings).await?;
        let redis = base.with_redis()?;
        let db = base.with_database().await?;
        let settings = &base.settings;
        counters::sql::check_mirrors(&db, &settings.namespaces).await?;
        let store = CounterStore::new(redis, db);
        let handler = Arc::new(CounterHandler::new(
            store,
            settings.namespaces.clone(),
            handler::FlushRule::from_settings(&settings.counter),
            metrics::CounterMetrics::new(&base.metrics),
        ));
        let topics = vec![settings.kafka.counter_events.name.clone()];
        base.metrics
            .init_consumer_series(&topics, &settings.kafka.dlq.name);
        let mut consumer = base.consumer_settings(&settings.counter.group_id, topics);
        consumer.batch_size = settings.counter.batch_max_events;
        let consumer = base.consumer_with(consumer, handler)?;
        let service = ConsumerService::new(&base, &base.settings.counter.listen, vec![consumer])?;
        Ok(Self { service })
    }

    /// The port of the ops endpoints (`/healthz`, `/readyz`, `/metrics`).
    pub fn port(&self) -> u16 {
        self.service.port()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.service.run_until_stopped(shutdown).await
    }
}
