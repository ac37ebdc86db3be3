//! The batch-writer's spans, beside the consumer loop's `kafka.batch`:
//!
//! - `sink.transaction`, one per partition's share of a batch (one transaction, bisected when
//!   the database refuses a row): the sink, the partition and the rows.
//! - `sink.write`, one per sampled record of a batch: a child of the trace the record was
//!   produced in (the gateway's request), from the start of the batch's write to its commit,
//!   with the sink, the row id, the request id and the outcome (`stored` or `rejected`).
//!
//! Records without a sampled trace context get no `sink.write` span at all, so a batch costs
//! nothing more while traces are not exported.

use spillway_core::{
    kafka::consumer::{Delivery, Rejection},
    telemetry::context,
    wire::WriteEvent,
};
use tracing::{Span, field::Empty};

/// The span of one partition's transaction.
pub fn transaction(sink: &str, partition: i32, rows: usize) -> Span {
    tracing::info_span!("sink.transaction", sink, partition, rows)
}

/// The spans of a batch's sampled records, with their index in the batch.
pub fn writes(sink: &str, batch: &[Delivery<WriteEvent>]) -> Vec<(usize, Span)> {
    batch
        .iter()
        .enumerate()
        .filter_map(|(index, delivery)| {
            let parent = delivery.sampled_trace()?;
            let span = tracing::info_span!(
                "sink.write",
                otel.name = %format!("write {sink}"),
                otel.status_code = Empty,
                sink,
                row_id = %delivery.message.row_id,
                request_id = %delivery.request_id,
                outcome = Empty,
            );
            context::follow(&span, [parent]);
            Some((index, span))
        })
        .collect()
}

/// Each record's outcome on its span: rejected (to the DLQ) or stored.
pub fn record_outcomes(spans: &[(usize, Span)], rejections: &[Rejection]) {
    for (index, span) in spans {
        if rejections.iter().any(|rejection| rejection.index == *index) {
            span.record("outcome", "rejected");
            span.record("otel.status_code", "ERROR");
        } else {
            span.record("outcome", "stored");
        }
    }
}
