//! The counter's spans, beside the consumer loop's `kafka.batch`:
//!
//! - `counter.apply`, one per counter of a batch (its events went to Redis in the batch's one
//!   pipeline): a child of the trace of its first sampled record, linked to the others, with
//!   the namespace, the entity, the request id and what the script did (applied, replayed,
//!   duplicates, value).
//! - `counter.flush`, one per write-behind flush: a child of the oldest sampled record among
//!   the counters it writes, linked to the next ones (up to [`MAX_LINKS`]), so one like's
//!   trace holds the request, its apply and the flush that made it durable.
//!
//! A counter without a sampled record (traces not exported, not sampled, or an outside
//! producer's event without a `traceparent`) gets a `debug` span instead, which the default
//! log level never creates, and [`wanted`] spares the batch even the list of them.

use std::sync::Mutex;

use spillway_core::{
    counters::{BatchOutcome, CounterBatch},
    kafka::consumer::Delivery,
    telemetry::{
        self, TraceParent,
        context::{self, MAX_LINKS},
    },
    wire::CounterEvent,
};
use tracing::{Level, Span, field::Empty};

/// Whether a batch's counters get spans at all: only when someone would see them.
pub fn wanted() -> bool {
    telemetry::exporting() || tracing::enabled!(Level::DEBUG)
}

/// The span of one counter's apply; `deliveries` are its records in the batch.
pub fn apply(batch: &CounterBatch, deliveries: &[(usize, &Delivery<CounterEvent>)]) -> Span {
    let sampled = || deliveries.iter().filter_map(|(_, d)| d.sampled_trace());
    let Some((_, first)) = deliveries.iter().find(|(_, d)| d.sampled_trace().is_some()) else {
        return tracing::debug_span!(
            "counter.apply",
            namespace = %batch.namespace,
            entity_id = %batch.entity_id,
            events = batch.events.len(),
        );
    };
    let span = tracing::info_span!(
        "counter.apply",
        namespace = %batch.namespace,
        entity_id = %batch.entity_id,
        events = batch.events.len(),
        request_id = %first.request_id,
        applied = Empty,
        replayed = Empty,
        duplicates = Empty,
        value = Empty,
        otel.status_code = Empty,
    );
    context::follow(&span, sampled());
    span
}

/// What the script did with each counter, on its span (a counter that was not applied, its
/// row corrupt, is marked as failed).
pub fn record_outcomes(spans: &[Span], outcomes: &[Option<BatchOutcome>]) {
    for (span, outcome) in spans.iter().zip(outcomes) {
        match outcome {
            Some(BatchOutcome::Done(applied)) => {
                span.record("applied", applied.applied);
                span.record("replayed", applied.replayed);
                span.record("duplicates", applied.duplicates);
                span.record("value", applied.value);
            }
            _ => {
                span.record("otel.status_code", "ERROR");
            }
        }
    }
}

/// The sampled records applied since the last flush, by source partition, oldest first: the
/// parent and the links of the next `counter.flush`.
#[derive(Default)]
pub struct FlushTraces {
    records: Mutex<Vec<(i32, TraceParent)>>,
}

impl FlushTraces {
    /// Keeps the sampled records of a batch (up to one parent and [`MAX_LINKS`] links).
    pub fn remember(&self, batch: &[Delivery<CounterEvent>]) {
        if !telemetry::exporting() {
            return;
        }
        let mut records = self.records.lock().expect("flush traces lock");
        for delivery in batch {
            if records.len() > MAX_LINKS {
                break;
            }
            if let Some(parent) = delivery.sampled_trace() {
                records.push((delivery.partition, parent.clone()));
            }
        }
    }

    /// Forgets the records of partitions this instance no longer owns (it flushes nothing
    /// of them).
    pub fn forget_partitions(&self, revoked: &[(String, i32)]) {
        let mut records = self.records.lock().expect("flush traces lock");
        records.retain(|(partition, _)| !revoked.iter().any(|(_, p)| p == partition));
    }

    /// The span of a flush of `entities` counters, and the records it continues (handed back
    /// with [`FlushTraces::restore`] when the flush fails, for its retry).
    pub fn flush_span(&self, entities: usize) -> (Span, Vec<(i32, TraceParent)>) {
        let records = std::mem::take(&mut *self.records.lock().expect("flush traces lock"));
        let span = tracing::info_span!(
            "counter.flush",
            entities,
            records = records.len(),
            otel.status_code = Empty,
        );
        context::follow(&span, records.iter().map(|(_, parent)| parent));
        (span, records)
    }

    /// Puts back the records of a failed flush, before those that arrived since.
    pub fn restore(&self, mut older: Vec<(i32, TraceParent)>) {
        if older.is_empty() {
            return;
        }
        let mut records = self.records.lock().expect("flush traces lock");
        older.append(&mut records);
        older.truncate(MAX_LINKS + 1);
        *records = older;
    }
}
