//! The refill handler: a batch of warm-up requests becomes at most one refill per template
//! (a thousand requests for one template coalesce into one), and a refill tops the pool up to
//! its capacity, never beyond, counting copies already in progress.
//!
//! Requests are keyed by template, so one template's refills run in one partition, one batch
//! at a time: never twice at once. S3 being unavailable retries the batch after a backoff;
//! S3 refusing a template's objects (a source deleted) is logged and skipped.
//!
//! Each refill runs in a `template.refill` span (the template, how many requests it answers,
//! how many copies it made), a child of the trace of the first sampled request and linked to
//! the others' while traces are exported.

use std::{collections::BTreeMap, time::Instant};

use async_trait::async_trait;
use futures::StreamExt;
use spillway_core::{
    kafka::consumer::{BatchHandler, Delivery, HandlerError, Rejection},
    telemetry::context,
    templates::{
        CopyError, CopyMaker, CopyOrigin, CopyState, LifecycleError, Pooled, Template, store,
    },
    wire::WarmupRequest,
};
use tracing::{Instrument, Span, field::Empty};

use crate::metrics::WarmupMetrics;

/// Templates refilled at once within one batch.
const TEMPLATES_AT_ONCE: usize = 4;

pub struct RefillHandler {
    maker: CopyMaker,
    metrics: WarmupMetrics,
    /// Copies of one template made at once.
    copies_at_once: usize,
    /// A copy in progress for longer than this is abandoned and does not count.
    copy_timeout: std::time::Duration,
}

impl RefillHandler {
    pub fn new(
        maker: CopyMaker,
        metrics: WarmupMetrics,
        copies_at_once: usize,
        copy_timeout: std::time::Duration,
    ) -> Self {
        Self {
            maker,
            metrics,
            copies_at_once,
            copy_timeout,
        }
    }

    /// Tops one template's pool up to its capacity.
    async fn refill(&self, template_id: &str) -> Result<(), LifecycleError> {
        let Some(template) = store::load_template(&self.maker.db, template_id).await? else {
            tracing::warn!(template_id, "refill for an unknown template skipped");
            return Ok(());
        };
        let missing = self.missing(&template).await?;
        Span::current().record("copies", missing);
        let copies: Vec<_> = (0..missing).map(|_| self.make_one(&template)).collect();
        let outcomes: Vec<Result<(), LifecycleError>> = futures::stream::iter(copies)
            .buffer_unordered(self.copies_at_once)
            .collect()
            .await;
        let ready = self.maker.pool.ready(&template.id).await?;
        self.metrics
            .report_pool(&template.id, ready, template.pool_capacity);
        outcomes.into_iter().collect()
    }

    /// How many copies the pool lacks, counting those still being made.
    async fn missing(&self, template: &Template) -> Result<usize, LifecycleError> {
        let ready = self.maker.pool.ready(&template.id).await? as i64;
        let in_progress =
            store::count_pool_copies_in_progress(&self.maker.db, &template.id, self.copy_timeout)
                .await?;
        let missing = i64::from(template.pool_capacity) - ready - in_progress;
        Ok(missing.max(0) as usize)
    }

    async fn make_one(&self, template: &Template) -> Result<(), LifecycleError> {
        let started = Instant::now();
        let record = match self.maker.copy(template, CopyOrigin::Pool).await {
            Ok(record) => record,
            Err(error) => {
                self.metrics.copies.with_label_values(&["failed"]).inc();
                return Err(error);
            }
        };
        self.metrics
            .copy_duration
            .observe(started.elapsed().as_secs_f64());
        let outcome = match self.maker.pool(&record, CopyState::Copying).await? {
            Pooled::Ready => "ready",
            Pooled::Retired => "retired",
            Pooled::Abandoned => "abandoned",
        };
        self.metrics.copies.with_label_values(&[outcome]).inc();
        Ok(())
    }
}

/// The span of one template's refill, continuing the traces of the requests it answers.
fn refill_span(template_id: &str, requests: &[&Delivery<WarmupRequest>]) -> Span {
    let span = tracing::info_span!(
        "template.refill",
        template_id,
        requests = requests.len(),
        copies = Empty,
        otel.status_code = Empty,
    );
    context::follow(&span, requests.iter().filter_map(|d| d.sampled_trace()));
    span
}

/// Whether a failure is worth retrying the batch for.
fn retryable(error: &LifecycleError) -> bool {
    !matches!(error, LifecycleError::Copy(CopyError::Refused(_)))
}

#[async_trait]
impl BatchHandler for RefillHandler {
    type Message = WarmupRequest;

    async fn handle(
        &self,
        batch: &[Delivery<WarmupRequest>],
    ) -> Result<Vec<Rejection>, HandlerError> {
        let mut templates: BTreeMap<String, Vec<&Delivery<WarmupRequest>>> = BTreeMap::new();
        for delivery in batch {
            templates
                .entry(delivery.message.template_id.clone())
                .or_default()
                .push(delivery);
        }
        let refills: Vec<_> = templates
            .into_iter()
            .map(|(template_id, requests)| {
                let span = refill_span(&template_id, &requests);
                async move {
                    let outcome = self.refill(&template_id).instrument(span.clone()).await;
                    if outcome.is_err() {
                        span.record("otel.status_code", "ERROR");
                    }
                    (template_id, outcome)
                }
            })
            .collect();
        let outcomes: Vec<(String, Result<(), LifecycleError>)> = futures::stream::iter(refills)
            .buffer_unordered(TEMPLATES_AT_ONCE)
            .collect()
            .await;
        for (template_id, outcome) in outcomes {
            match outcome {
                Ok(()) => {}
                Err(error) if retryable(&error) => return Err(HandlerError::retry(error)),
                Err(error) => {
                    tracing::error!(%template_id, %error, "refill refused by S3; skipped");
                }
            }
        }
        Ok(Vec::new())
    }
}
