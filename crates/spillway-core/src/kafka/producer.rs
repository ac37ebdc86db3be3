//! The idempotent producer: `acks=all`, `enable.idempotence=true`, and a delivery timeout equal
//! to the produce deadline, so a caller never waits longer than that for an answer.
//!
//! Its librdkafka log lines go through `tracing` ([`ProducerLog`]), where the one known to be
//! harmless at start is not a warning: the first attempts to get a producer id while the
//! broker's transaction coordinator is still loading (`GETPID ... retrying`).
//!
//! While traces are exported, [`EventProducer::publish`] (the one place spillway's messages are
//! produced) sends each record in a `kafka.publish` span, a child of the caller's (the
//! gateway's request), and writes that span's W3C `traceparent` into the record's headers, so
//! the consumer's span continues the trace. Otherwise it adds neither span nor header.

use std::time::{Duration, Instant};

use rdkafka::{
    ClientContext,
    config::RDKafkaLogLevel,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer},
    util::Timeout,
};

use tracing::{Instrument, Span};

use super::{KafkaError, base_config};
use crate::{
    telemetry::{self, context},
    wire::{self, WireMessage},
};

/// How long a stopping service waits for its queued records to be delivered.
const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Slack beyond the delivery timeout before a send is reported as timed out.
const OUTER_GUARD: Duration = Duration::from_millis(100);

/// How long after the producer's creation a failed producer-id attempt is expected (a broker
/// that just started loads its coordinator first); later ones are warnings.
const PID_GRACE: Duration = Duration::from_secs(30);

/// librdkafka's log lines as `tracing` events (target `librdkafka`), the producer-id retries
/// of the first [`PID_GRACE`] at info.
pub struct ProducerLog {
    created: Instant,
}

impl ProducerLog {
    fn new() -> Self {
        Self {
            created: Instant::now(),
        }
    }

    /// Whether a line is the expected start-up producer-id retry.
    fn is_harmless(&self, facility: &str, message: &str) -> bool {
        facility == "GETPID" && message.ends_with("retrying") && self.created.elapsed() < PID_GRACE
    }
}

impl ClientContext for ProducerLog {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        use RDKafkaLogLevel::*;
        match level {
            _ if self.is_harmless(facility, message) => {
                tracing::info!(target: "librdkafka", facility, "{message}");
            }
            Emerg | Alert | Critical | Error => {
                tracing::error!(target: "librdkafka", facility, "{message}");
            }
            Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
            Notice | Info => tracing::info!(target: "librdkafka", facility, "{message}"),
            Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }
}

/// The span of one publish while traces are exported (none otherwise: the caller's span, if
/// any, is all a log line needs).
fn publish_span(topic: &str, request_id: &str) -> Span {
    if !telemetry::exporting() {
        return Span::none();
    }
    tracing::info_span!(
        "kafka.publish",
        otel.name = %format!("publish {topic}"),
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.destination.name = topic,
        messaging.destination.partition.id = tracing::field::Empty,
        messaging.kafka.offset = tracing::field::Empty,
        request_id,
    )
}

/// Where the broker stored a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// A cloneable handle on one idempotent producer.
#[derive(Clone)]
pub struct EventProducer {
    producer: FutureProducer<ProducerLog>,
    timeout: Duration,
}

impl EventProducer {
    /// Builds the producer; records not acknowledged within `timeout` fail.
    pub fn new(bootstrap: &str, client_id: &str, timeout: Duration) -> Result<Self, KafkaError> {
        let producer: FutureProducer<ProducerLog> = base_config(bootstrap, client_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("compression.type", "lz4")
            .set("message.timeout.ms", timeout.as_millis().to_string())
            .set("request.timeout.ms", timeout.as_millis().max(1).to_string())
            .create_with_context(ProducerLog::new())?;
        Ok(Self { producer, timeout })
    }

    /// Sends one record as it is and waits until the broker acknowledged it (`acks=all`).
    /// spillway's own messages go through [`EventProducer::publish`].
    pub async fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<Delivered, KafkaError> {
        let mut owned_headers = OwnedHeaders::new_with_capacity(headers.len());
        for (name, value) in headers {
            owned_headers = owned_headers.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(owned_headers);
        let delivery = self.producer.send(record, Timeout::After(self.timeout));
        // Queueing and delivery each end by `timeout`; one outer bound keeps their sum there too.
        match tokio::time::timeout(self.timeout + OUTER_GUARD, delivery).await {
            Ok(Ok(delivery)) => Ok(Delivered {
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Ok(Err((error, _))) => Err(KafkaError::Client(error)),
            Err(_) => Err(KafkaError::Timeout(self.timeout.as_millis() as u64)),
        }
    }

    /// Publishes one spillway message (protobuf, with its `content-type` and `request-id`
    /// headers, the W3C trace context while traces are exported, then `extra_headers`) and
    /// waits until the broker acknowledged it.
    pub async fn publish<M: WireMessage>(
        &self,
        topic: &str,
        key: &[u8],
        message: &M,
        extra_headers: &[(&str, &str)],
    ) -> Result<Delivered, KafkaError> {
        let span = publish_span(topic, message.request_id());
        let trace = context::headers_of(&span);
        let mut headers = Vec::with_capacity(4 + extra_headers.len());
        headers.push((wire::CONTENT_TYPE_HEADER, wire::PROTOBUF_CONTENT_TYPE));
        headers.push((wire::REQUEST_ID_HEADER, message.request_id()));
        if let Some(trace) = &trace {
            headers.push((wire::TRACEPARENT_HEADER, trace.traceparent.as_str()));
            if let Some(state) = &trace.tracestate {
                headers.push((wire::TRACESTATE_HEADER, state.as_str()));
            }
        }
        headers.extend_from_slice(extra_headers);
        let delivered = self
            .send(topic, key, &wire::encode(message), &headers)
            .instrument(span.clone())
            .await;
        if let Ok(delivered) = &delivered {
            span.record("messaging.destination.partition.id", delivered.partition);
            span.record("messaging.kafka.offset", delivered.offset);
        }
        delivered
    }

    /// Whether the broker answers a metadata request (readiness).
    pub async fn check(&self) -> Result<(), String> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Timeout::After(Duration::from_millis(1_000)))
                .map(|_| ())
                .map_err(|error| error.to_string())
        })
        .await
        .map_err(|error| error.to_string())?
    }

    /// Waits (a bounded time) for queued records to be delivered: the last step of every
    /// service's stop.
    pub fn flush_at_shutdown(&self) {
        if let Err(error) = self.producer.flush(Timeout::After(SHUTDOWN_FLUSH_TIMEOUT)) {
            tracing::warn!(%error, "producer flush at shutdown did not finish");
        }
    }
}
