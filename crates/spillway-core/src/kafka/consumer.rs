//! The at-least-once consumer loop every spillway consumer runs.
//!
//! It fetches a batch (up to `batch_size` messages or `linger`), decoding each message as it
//! arrives (bad ones go to the DLQ), hands the batch to a [`BatchHandler`], and, once the
//! handler's [`BatchHandler::flush`] has made the effect durable, stores the offsets.
//! Auto-commit then commits only stored offsets (`enable.auto.offset.store=false`), so an
//! offset is never committed before its effect. The handler runs in a task of its own while
//! the loop already receives and decodes the next batch (up to a batch), so the fetch and the
//! decode overlap the handler's work and its waits on Redis or PostgreSQL, on the other core;
//! offsets are still recorded batch by batch, in order, after each batch's handling. A
//! failing handler is retried with backoff while the partitions are paused. On a partition
//! revoke the stored offsets are committed synchronously; what was received of the revoked
//! partitions before the revoke (messages carried ahead, the batch in flight, pending offsets)
//! is stale and dropped once, when the loop first sees the revoke (their next owner, perhaps
//! this consumer again, reads them from the committed offset), while what arrives after it is
//! kept. On shutdown the loop finishes its batch,
//! flushes, stores and commits synchronously.
//!
//! Each batch is handled in a `kafka.batch` span (topic, partitions, size). While traces are
//! exported, each record's W3C `traceparent` header is read into [`Delivery::trace_parent`]:
//! the batch span links to the sampled ones, and a handler makes its span for a message (or a
//! counter, a template) their child.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use rdkafka::{
    ClientContext, Message, Offset, Statistics, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    message::{Headers, OwnedMessage},
};
use tokio_util::{sync::CancellationToken, task::AbortOnDropHandle};
use tracing::{Instrument, Span};

use super::{KafkaError, base_config, dlq};
use crate::{
    faults,
    metrics::Metrics,
    telemetry::{self, TraceParent, context},
    wire::{self, WireMessage},
};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a handler could not finish a batch or a flush.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// A dependency failed: the same call is retried after a backoff, partitions paused.
    #[error("{0}")]
    Retry(BoxError),
    /// The handler's state was lost (e.g. Redis flushed): pending work is forgotten and every
    /// assigned partition is read again from its committed offset.
    #[error("rewind: {0}")]
    Rewind(String),
}

impl HandlerError {
    pub fn retry(error: impl Into<BoxError>) -> Self {
        Self::Retry(error.into())
    }
}

/// How long an idle loop waits for a message before it checks timers and shutdown.
const IDLE_POLL: Duration = Duration::from_millis(100);
const RETRY_BACKOFF_START: Duration = Duration::from_millis(100);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long the final flush may retry at shutdown before giving up (the data is replayed).
const SHUTDOWN_FLUSH_DEADLINE: Duration = Duration::from_secs(8);
const REWIND_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages librdkafka keeps fetched ahead per partition: two of the largest batches (the
/// counter's 10,000 events).
const QUEUED_MIN_MESSAGES: &str = "20000";
/// How soon librdkafka fetches again once that queue was full.
const FETCH_QUEUE_BACKOFF_MS: &str = "10";
/// How many times a rewind is tried before the consumer stops with an error.
const REWIND_ATTEMPTS: u32 = 6;
/// What [`ConsumerLoop::retry`] is told for the handler's flush: counted in `flush_failures`,
/// while every other `what` is a topic (`handler_failures{topic}`).
const FLUSH: &str = "flush";

/// One decoded message with where it came from.
#[derive(Debug, Clone)]
pub struct Delivery<T> {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub request_id: String,
    /// The trace context the record was produced in (its `traceparent` header); read only
    /// while this process exports traces.
    pub trace_parent: Option<TraceParent>,
    pub message: T,
}

impl<T> Delivery<T> {
    /// The record's trace context when its trace is recorded: the parent (or a link) of the
    /// spans that apply it.
    pub fn sampled_trace(&self) -> Option<&TraceParent> {
        self.trace_parent
            .as_ref()
            .filter(|parent| parent.is_sampled())
    }
}

/// A message of a batch the handler refuses for good (it goes to the DLQ).
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Index into the batch handed to [`BatchHandler::handle`].
    pub index: usize,
    pub reason: String,
}

/// What a consumer service does with its messages.
#[async_trait]
pub trait BatchHandler: Send + Sync + 'static {
    type Message: WireMessage;

    /// Applies a batch. An error retries the same batch after a backoff; rejections go to the
    /// DLQ. Replays must change nothing (the loop is at-least-once).
    async fn handle(
        &self,
        batch: &[Delivery<Self::Message>],
    ) -> Result<Vec<Rejection>, HandlerError>;

    /// Makes everything handled so far durable; offsets are stored only after it returns Ok.
    /// The default does nothing: `handle` was durable already.
    async fn flush(&self) -> Result<(), HandlerError> {
        Ok(())
    }

    /// Called once the offsets of everything flushed are stored (e.g. to clear markers that
    /// must outlive the commit). Failures here must not matter for correctness.
    async fn after_store(&self) {}

    /// Called inside the rebalance, before `revoked` are given up: the handler drops what it
    /// holds of them and does not make it durable later (their next owner replays it from the
    /// committed offset). The loop drops their buffered messages and pending offsets too.
    fn on_revoke(&self, _revoked: &[(String, i32)]) {}

    /// Called inside the rebalance with the partitions this consumer now owns (again).
    fn on_assign(&self, _assigned: &[(String, i32)]) {}

    /// Whether to flush now, given the time since the last flush. Default: after every batch.
    fn flush_due(&self, _since_last_flush: Duration) -> bool {
        true
    }
}

/// How a consumer joins its group.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub bootstrap: String,
    pub group_id: String,
    pub client_id: String,
    pub topics: Vec<String>,
    pub batch_size: usize,
    pub linger: Duration,
    /// A batch also ends once its payloads reach this many bytes (memory stays bounded).
    pub max_batch_bytes: usize,
}

/// The handler's side of a rebalance, called from the consumer's poll.
type PartitionsHook = Box<dyn Fn(&[(String, i32)]) + Send + Sync>;

/// Tracks rebalances (telling the handler at once) and exports lag from librdkafka's
/// statistics.
pub struct LoopContext {
    /// Partitions revoked since the loop last looked: what was received of them before the
    /// revoke is stale (its pending offsets and buffered messages must go) even when the same
    /// rebalance assigned them back; what arrives after it is fresh (fetched again from the
    /// committed offset).
    revoked: std::sync::Mutex<Vec<(String, i32)>>,
    rebalanced: AtomicBool,
    metrics: Metrics,
    on_revoke: PartitionsHook,
    on_assign: PartitionsHook,
}

fn partitions(list: &TopicPartitionList) -> Vec<(String, i32)> {
    list.elements()
        .iter()
        .map(|element| (element.topic().to_owned(), element.partition()))
        .collect()
}

impl ClientContext for LoopContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, topic_stats) in &statistics.topics {
            for (partition, partition_stats) in &topic_stats.partitions {
                if *partition >= 0 && partition_stats.consumer_lag >= 0 {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[topic.as_str(), &partition.to_string()])
                        .set(partition_stats.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for LoopContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            tracing::info!(
                count = list.count(),
                "partitions revoked: committing stored offsets"
            );
            commit_stored(consumer);
            let revoked = partitions(list);
            (self.on_revoke)(&revoked);
            self.revoked.lock().expect("revoked lock").extend(revoked);
        }
        self.rebalanced.store(true, Ordering::SeqCst);
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            (self.on_assign)(&partitions(list));
        }
    }
}

/// Commits stored offsets synchronously; "nothing to commit" is not an error.
fn commit_stored<C: Consumer<LoopContext>>(consumer: &C) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {}
        Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::NoOffset,
        )) => {}
        Err(error) => tracing::warn!(%error, "synchronous offset commit failed"),
    }
}

/// Next offsets to store, per partition, once the handler's flush succeeds.
#[derive(Default)]
struct PendingOffsets(HashMap<(String, i32), i64>);

impl PendingOffsets {
    fn record(&mut self, topic: &str, partition: i32, offset: i64) {
        let last = self
            .0
            .entry((topic.to_owned(), partition))
            .or_insert(offset);
        *last = (*last).max(offset);
    }

    /// Forgets the offsets of revoked partitions: what was handled of them before the revoke
    /// is no longer this consumer's to make durable.
    fn forget(&mut self, revoked: &[(String, i32)]) {
        if !revoked.is_empty() {
            self.0
                .retain(|(topic, partition), _| !is_revoked(revoked, topic, *partition));
        }
    }
}

/// A message received ahead of its batch, decoded as it arrived (while the handler worked on
/// the batch before), with the record itself for its offset and the DLQ.
struct Received<M> {
    message: OwnedMessage,
    decoded: Result<Delivery<M>, wire::DecodeError>,
}

impl<M> Received<M> {
    fn partition_of(&self) -> (&str, i32) {
        (self.message.topic(), self.message.partition())
    }
}

/// Messages received ahead of the batch they will be in (while the handler worked on the one
/// before, or while a call was retrying), in the order received, with their payload bytes.
struct Carried<M> {
    received: Vec<Received<M>>,
    bytes: usize,
}

impl<M> Default for Carried<M> {
    fn default() -> Self {
        Self {
            received: Vec::new(),
            bytes: 0,
        }
    }
}

impl<M> Carried<M> {
    fn push(&mut self, received: Received<M>) {
        self.bytes += payload_len(&received.message);
        self.received.push(received);
    }

    fn is_empty(&self) -> bool {
        self.received.is_empty()
    }

    /// Whether they make a whole batch already (`max_messages`, or `max_bytes` of payload).
    fn holds_a_batch(&self, max_messages: usize, max_bytes: usize) -> bool {
        self.received.len() >= max_messages || self.bytes >= max_bytes
    }

    /// Drops the messages of revoked partitions: received before the revoke, they are stale.
    fn forget(&mut self, revoked: &[(String, i32)]) {
        if revoked.is_empty() {
            return;
        }
        self.received.retain(|received| {
            let (topic, partition) = received.partition_of();
            !is_revoked(revoked, topic, partition)
        });
        self.bytes = self
            .received
            .iter()
            .map(|received| payload_len(&received.message))
            .sum();
    }

    fn clear(&mut self) {
        *self = Self::default();
    }

    /// The first messages that make a batch, as [`ConsumerLoop::collect_batch`] fills one (up
    /// to `max_messages`, and messages are added while the payload is under `max_bytes`); the
    /// rest stay, in order.
    fn take_batch(&mut self, max_messages: usize, max_bytes: usize) -> Vec<Received<M>> {
        let (mut bytes, mut count) = (0, 0);
        for received in self.received.iter().take(max_messages) {
            if count > 0 && bytes >= max_bytes {
                break;
            }
            bytes += payload_len(&received.message);
            count += 1;
        }
        let rest = self.received.split_off(count);
        self.bytes -= bytes;
        std::mem::replace(&mut self.received, rest)
    }
}

/// The consumer loop for one handler.
pub struct ConsumerLoop<H: BatchHandler> {
    consumer: StreamConsumer<LoopContext>,
    /// Partitions revoked since the batch in flight was received (noted by
    /// [`Self::note_revokes`]): its messages of them, and their pending offsets, cannot be
    /// stored (the handler forgot its share).
    revoked_in_flight: std::sync::Mutex<Vec<(String, i32)>>,
    handler: Arc<H>,
    dlq: dlq::DeadLetterQueue,
    metrics: Metrics,
    settings: ConsumerSettings,
}

/// Why a batch was not finished.
enum Interrupted {
    Shutdown,
    Rewind,
}

impl<H: BatchHandler> ConsumerLoop<H> {
    pub fn new(
        settings: ConsumerSettings,
        handler: Arc<H>,
        dlq: dlq::DeadLetterQueue,
        metrics: Metrics,
    ) -> Result<Self, KafkaError> {
        let (revoking, assigning) = (handler.clone(), handler.clone());
        let context = LoopContext {
            revoked: std::sync::Mutex::new(Vec::new()),
            rebalanced: AtomicBool::new(false),
            metrics: metrics.clone(),
            on_revoke: Box::new(move |revoked| revoking.on_revoke(revoked)),
            on_assign: Box::new(move |assigned| assigning.on_assign(assigned)),
        };
        let consumer: StreamConsumer<LoopContext> =
            base_config(&settings.bootstrap, &settings.client_id)
                .set("group.id", &settings.group_id)
                .set("enable.auto.commit", "true")
                .set("auto.commit.interval.ms", "1000")
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest")
                .set("session.timeout.ms", "6000")
                .set("heartbeat.interval.ms", "1500")
                .set("statistics.interval.ms", "5000")
                // librdkafka stops fetching a partition once its local queue holds
                // `queued.min.messages` (default 100,000) and then waits
                // `fetch.queue.backoff.ms` (default 1 s) before it looks again: under a
                // backlog the loop drained that queue in under a second and then waited for the
                // backoff, capping the batch-writer's drain at about 100k rows/s. A queue of two
                // batches, looked at again every 10 ms, keeps the next batch fetched
                // (docs/benchmarks.md).
                .set("queued.min.messages", QUEUED_MIN_MESSAGES)
                .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
                .create_with_context(context)?;
        Ok(Self {
            consumer,
            revoked_in_flight: std::sync::Mutex::new(Vec::new()),
            handler,
            dlq,
            metrics,
            settings,
        })
    }

    /// Consumes until the token is cancelled, then drains, flushes and commits.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), KafkaError> {
        let topics: Vec<&str> = self.settings.topics.iter().map(String::as_str).collect();
        self.consumer.subscribe(&topics)?;
        tracing::debug!(group = %self.settings.group_id, ?topics, "consumer started");
        let mut pending = PendingOffsets::default();
        let mut carried = Carried::default();
        let mut last_flush = Instant::now();
        while !shutdown.is_cancelled() {
            let mut messages = self
                .collect_batch(&shutdown, &mut carried, &mut pending)
                .await;
            self.forget_unassigned(&mut messages, &mut pending);
            let mut outcome = Ok(());
            if !messages.is_empty() {
                outcome = self
                    .process(messages, &mut pending, &mut carried, &shutdown)
                    .await;
            }
            if outcome.is_ok()
                && !pending.0.is_empty()
                && self.handler.flush_due(last_flush.elapsed())
            {
                outcome = self.flush(&mut pending, &mut carried, &shutdown).await;
                last_flush = Instant::now();
            }
            match outcome {
                Ok(()) => {}
                Err(Interrupted::Shutdown) => break,
                Err(Interrupted::Rewind) => {
                    pending = PendingOffsets::default();
                    carried.clear();
                    // Everything is read again from the committed offsets: revokes noted so
                    // far concern nothing any more.
                    self.take_revoked_in_flight(&mut carried);
                    self.rewind_with_retries(&shutdown).await?;
                }
            }
        }
        self.drain(pending).await;
        Ok(())
    }

    /// Receives into `carried` until it holds a batch (`batch_size` messages or
    /// `max_batch_bytes`) or `linger` has passed since its first message (waiting up to
    /// [`IDLE_POLL`] for one), and takes the batch from it: a long retry may have carried more,
    /// kept for the next batches. Pending offsets of partitions revoked meanwhile go.
    async fn collect_batch(
        &self,
        shutdown: &CancellationToken,
        carried: &mut Carried<H::Message>,
        pending: &mut PendingOffsets,
    ) -> Vec<Received<H::Message>> {
        let (batch_size, max_bytes) = (self.settings.batch_size, self.settings.max_batch_bytes);
        let mut deadline = (!carried.is_empty()).then(|| Instant::now() + self.settings.linger);
        while !carried.holds_a_batch(batch_size, max_bytes) {
            let wait = match deadline {
                None => IDLE_POLL,
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                received = tokio::time::timeout(wait, self.consumer.recv()) => match received {
                    Ok(received) => {
                        let failed = received.is_err();
                        self.carry(received, carried);
                        if failed && carried.is_empty() { break; }
                        deadline.get_or_insert_with(|| Instant::now() + self.settings.linger);
                    }
                    Err(_) => break,
                },
            }
        }
        let revoked = self.take_revoked_in_flight(carried);
        pending.forget(&revoked);
        carried.take_batch(batch_size, max_bytes)
    }

    /// After a rebalance, drops buffered messages and pending offsets of partitions this
    /// consumer no longer owns.
    fn forget_unassigned(
        &self,
        messages: &mut Vec<Received<H::Message>>,
        pending: &mut PendingOffsets,
    ) {
        if !self
            .consumer
            .context()
            .rebalanced
            .swap(false, Ordering::SeqCst)
        {
            return;
        }
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let assigned =
            |topic: &str, partition: i32| assignment.find_partition(topic, partition).is_some();
        messages.retain(|received| {
            let (topic, partition) = received.partition_of();
            assigned(topic, partition)
        });
        pending
            .0
            .retain(|(topic, partition), _| assigned(topic, *partition));
    }

    /// The partitions revoked since the last call.
    fn take_revoked(&self) -> Vec<(String, i32)> {
        std::mem::take(
            &mut *self
                .consumer
                .context()
                .revoked
                .lock()
                .expect("revoked lock"),
        )
    }

    /// Takes note of the partitions revoked since it last looked (the rebalance runs inside a
    /// poll, and a `select!` may have dropped that poll since): what was carried of them goes
    /// (it was received before the revoke), and they are remembered for the batch in flight
    /// and the pending offsets. A revoke is noted once, so a message carried after it (fresh
    /// from the committed offset) is never dropped for it: the fetch position is past it.
    fn note_revokes(&self, carried: &mut Carried<H::Message>) {
        let revoked = self.take_revoked();
        if revoked.is_empty() {
            return;
        }
        carried.forget(&revoked);
        self.revoked_in_flight
            .lock()
            .expect("revoked lock")
            .extend(revoked);
    }

    /// The partitions revoked since the last call (noted now or earlier): the batch in
    /// flight's messages of them and their pending offsets are stale.
    fn take_revoked_in_flight(&self, carried: &mut Carried<H::Message>) -> Vec<(String, i32)> {
        self.note_revokes(carried);
        std::mem::take(&mut *self.revoked_in_flight.lock().expect("revoked lock"))
    }

    /// Dead-letters what did not decode, hands the rest to the handler (retrying),
    /// dead-letters its rejections, and records the offsets as pending.
    async fn process(
        &self,
        batch: Vec<Received<H::Message>>,
        pending: &mut PendingOffsets,
        carried: &mut Carried<H::Message>,
        shutdown: &CancellationToken,
    ) -> Result<(), Interrupted> {
        let mut messages = Vec::with_capacity(batch.len());
        let mut deliveries = Vec::with_capacity(batch.len());
        let mut sources = Vec::with_capacity(batch.len());
        for Received { message, decoded } in batch {
            match decoded {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    sources.push(messages.len());
                }
                Err(error) => {
                    let reason = format!("decode: {error}");
                    self.dead_letter(&message, &reason, error.kind(), carried, shutdown)
                        .await?;
                }
            }
            messages.push(message);
        }
        if !deliveries.is_empty() {
            let topic = deliveries[0].topic.clone();
            let started = Instant::now();
            let span = self.batch_span(&deliveries);
            let deliveries = Arc::new(deliveries);
            let rejections = self
                .retry(&topic, carried, shutdown, || {
                    let (handler, deliveries) = (self.handler.clone(), deliveries.clone());
                    in_own_task(async move { handler.handle(&deliveries).await })
                })
                .instrument(span.clone())
                .await?;
            span.record("rejected", rejections.len());
            self.metrics
                .batch_duration
                .with_label_values(&[&topic])
                .observe(started.elapsed().as_secs_f64());
            self.metrics
                .batch_size
                .with_label_values(&[&topic])
                .observe(deliveries.len() as f64);
            for rejection in rejections {
                if let Some(&source) = sources.get(rejection.index) {
                    let message = &messages[source];
                    self.dead_letter(message, &rejection.reason, "rejected", carried, shutdown)
                        .await?;
                }
            }
        }
        let revoked = self.take_revoked_in_flight(carried);
        pending.forget(&revoked);
        for message in &messages {
            if is_revoked(&revoked, message.topic(), message.partition()) {
                continue; // received before its partition was revoked: replayed by its owner
            }
            pending.record(message.topic(), message.partition(), message.offset());
            self.metrics
                .consumed_messages
                .with_label_values(&[message.topic(), "ok"])
                .inc();
        }
        Ok(())
    }

    /// The span of one batch, linked to its records' traces.
    fn batch_span(&self, deliveries: &[Delivery<H::Message>]) -> Span {
        let topic = deliveries[0].topic.as_str();
        let span = tracing::info_span!(
            "kafka.batch",
            otel.name = %format!("process {topic}"),
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.destination.name = topic,
            messaging.destination.partition.id = %batch_partitions(deliveries),
            messaging.batch.message_count = deliveries.len(),
            messaging.consumer.group.name = %self.settings.group_id,
            rejected = tracing::field::Empty,
        );
        context::link(&span, deliveries.iter().filter_map(Delivery::sampled_trace));
        span
    }

    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        reason: &str,
        reason_kind: &str,
        carried: &mut Carried<H::Message>,
        shutdown: &CancellationToken,
    ) -> Result<(), Interrupted> {
        let content_type = header(message, wire::CONTENT_TYPE_HEADER);
        let request_id = header(message, wire::REQUEST_ID_HEADER);
        let source = dlq::Source {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key(),
            payload: message.payload(),
            content_type: content_type.as_deref(),
            request_id: request_id.as_deref(),
        };
        tracing::warn!(
            topic = message.topic(), partition = message.partition(), offset = message.offset(),
            %reason, "sending message to the DLQ"
        );
        self.retry(self.dlq.topic(), carried, shutdown, || async {
            self.dlq
                .send(&source, reason)
                .await
                .map_err(HandlerError::retry)
        })
        .await?;
        self.metrics
            .dlq_messages
            .with_label_values(&[message.topic(), reason_kind])
            .inc();
        Ok(())
    }

    /// Flushes the handler (retrying), then stores the pending offsets.
    async fn flush(
        &self,
        pending: &mut PendingOffsets,
        carried: &mut Carried<H::Message>,
        shutdown: &CancellationToken,
    ) -> Result<(), Interrupted> {
        self.retry(FLUSH, carried, shutdown, || {
            let handler = self.handler.clone();
            in_own_task(async move {
                faults::stall(faults::CONSUMER_BEFORE_FLUSH).await;
                handler.flush().await
            })
        })
        .await?;
        faults::point(faults::CONSUMER_AFTER_FLUSH);
        // Not `carried`: what it holds of partitions revoked during the flush arrived after
        // the revoke (`carry` dropped the rest), from the committed offset.
        let revoked = self.take_revoked_in_flight(carried);
        pending.forget(&revoked);
        self.store(std::mem::take(pending));
        self.handler.after_store().await;
        Ok(())
    }

    fn store(&self, pending: PendingOffsets) {
        for ((topic, partition), offset) in pending.0 {
            // store_offset stores `offset + 1`: the next message to read.
            if let Err(error) = self.consumer.store_offset(&topic, partition, offset) {
                tracing::debug!(%error, %topic, partition, "offset not stored (partition revoked?)");
            }
        }
    }

    /// Runs `attempt` until it succeeds; meanwhile the partitions are paused and anything that
    /// still arrives is carried into the next batch. Shutdown interrupts the retries.
    async fn retry<T, F, Fut>(
        &self,
        what: &str,
        carried: &mut Carried<H::Message>,
        shutdown: &CancellationToken,
        mut attempt: F,
    ) -> Result<T, Interrupted>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, HandlerError>>,
    {
        let mut backoff = RETRY_BACKOFF_START;
        let mut paused: Option<TopicPartitionList> = None;
        let outcome = loop {
            match self.receive_while(attempt(), carried, shutdown).await {
                Ok(value) => break Ok(value),
                Err(HandlerError::Rewind(reason)) => {
                    tracing::warn!(%reason, "handler state lost: re-reading from committed offsets");
                    break Err(Interrupted::Rewind);
                }
                Err(HandlerError::Retry(error)) => {
                    if what == FLUSH {
                        self.metrics.flush_failures.inc();
                    } else {
                        self.metrics
                            .handler_failures
                            .with_label_values(&[what])
                            .inc();
                    }
                    tracing::warn!(%error, %what, backoff_ms = backoff.as_millis() as u64, "failed; retrying");
                    if paused.is_none() {
                        paused = self.pause();
                    }
                    if self.wait_polling(backoff, carried, shutdown).await.is_err() {
                        break Err(Interrupted::Shutdown);
                    }
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                }
            }
        };
        if let Some(partitions) = paused
            && let Err(error) = self.consumer.resume(&partitions)
        {
            tracing::warn!(%error, "resuming partitions failed");
        }
        outcome
    }

    /// Rewinds, retrying a few times. If the committed offsets stay unreadable the consumer
    /// stops with an error rather than carry on from where it was: the messages since the
    /// last commit must be applied again to the rebuilt state, and a restarted process
    /// starts from the committed offsets anyway.
    async fn rewind_with_retries(&self, shutdown: &CancellationToken) -> Result<(), KafkaError> {
        let mut attempt = 1;
        loop {
            match self.rewind_to_committed() {
                Ok(()) => return Ok(()),
                Err(error) if attempt < REWIND_ATTEMPTS && !shutdown.is_cancelled() => {
                    tracing::warn!(%error, attempt, "rewind to the committed offsets failed; retrying");
                    tokio::time::sleep(RETRY_BACKOFF_MAX).await;
                    attempt += 1;
                }
                Err(error) => {
                    tracing::error!(%error, "rewind to the committed offsets failed; stopping the consumer");
                    return Err(error.into());
                }
            }
        }
    }

    /// Seeks every assigned partition back to its committed offset (or the beginning).
    fn rewind_to_committed(&self) -> Result<(), rdkafka::error::KafkaError> {
        let assignment = self.consumer.assignment()?;
        let committed = self
            .consumer
            .committed_offsets(assignment, REWIND_TIMEOUT)?;
        for element in committed.elements() {
            let offset = match element.offset() {
                Offset::Offset(offset) => Offset::Offset(offset),
                _ => Offset::Beginning,
            };
            self.consumer
                .seek(element.topic(), element.partition(), offset, REWIND_TIMEOUT)?;
        }
        Ok(())
    }

    fn pause(&self) -> Option<TopicPartitionList> {
        let assignment = self.consumer.assignment().ok()?;
        match self.consumer.pause(&assignment) {
            Ok(()) => Some(assignment),
            Err(error) => {
                tracing::warn!(%error, "pausing partitions failed");
                None
            }
        }
    }

    /// Sleeps for `duration` while still polling (group membership stays alive).
    async fn wait_polling(
        &self,
        duration: Duration,
        carried: &mut Carried<H::Message>,
        shutdown: &CancellationToken,
    ) -> Result<(), Interrupted> {
        let deadline = tokio::time::Instant::now() + duration;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Err(Interrupted::Shutdown),
                _ = tokio::time::sleep_until(deadline) => return Ok(()),
                received = self.consumer.recv() => self.carry(received, carried),
            }
        }
    }

    /// Runs `work` (a handler call) to its end while receiving the next batch into `carried`,
    /// up to a batch's size: the next batch is fetched while the handler waits on its
    /// dependencies, and [`Self::collect_batch`] starts from it. Shutdown stops the receiving,
    /// never the work.
    async fn receive_while<T>(
        &self,
        work: impl std::future::Future<Output = T>,
        carried: &mut Carried<H::Message>,
        shutdown: &CancellationToken,
    ) -> T {
        tokio::pin!(work);
        loop {
            let full =
                carried.holds_a_batch(self.settings.batch_size, self.settings.max_batch_bytes);
            if full || shutdown.is_cancelled() {
                return work.await;
            }
            tokio::select! {
                biased;
                output = &mut work => return output,
                _ = shutdown.cancelled() => {}
                received = self.consumer.recv() => self.carry(received, carried),
            }
        }
    }

    /// Keeps a received message for a next batch, decoded now (while the handler works in its
    /// own task, or nothing is in flight), after noting the revokes the poll that
    /// received it may have run ([`Self::note_revokes`]).
    fn carry(
        &self,
        received: Result<rdkafka::message::BorrowedMessage<'_>, rdkafka::error::KafkaError>,
        carried: &mut Carried<H::Message>,
    ) {
        self.note_revokes(carried);
        match received {
            Ok(message) => carried.push(decode(message.detach())),
            Err(error) => tracing::warn!(%error, "consumer error"),
        }
    }

    /// At shutdown: flush what was handled (bounded in time), store and commit synchronously.
    async fn drain(self, mut pending: PendingOffsets) {
        if !pending.0.is_empty() {
            let deadline = CancellationToken::new();
            let timer = deadline.clone();
            tokio::spawn(async move {
                tokio::time::sleep(SHUTDOWN_FLUSH_DEADLINE).await;
                timer.cancel();
            });
            let mut carried = Carried::default();
            if self
                .flush(&mut pending, &mut carried, &deadline)
                .await
                .is_err()
            {
                // A rewind or the deadline: nothing is stored, the batch is replayed later.
                tracing::warn!("final flush did not succeed in time; the batch will be replayed");
            }
        }
        commit_stored(&self.consumer);
        self.consumer.unsubscribe();
        tracing::info!(group = %self.settings.group_id, "consumer stopped and committed");
    }
}

/// Runs a handler call in a task of its own, so that its CPU work (building and encoding
/// statements) runs on another core than the loop, which meanwhile receives and decodes the
/// next batch. A panic in it goes on in the loop as it would have; dropping the returned
/// future aborts the task.
async fn in_own_task<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, HandlerError>> + Send + 'static,
) -> Result<T, HandlerError> {
    match AbortOnDropHandle::new(tokio::spawn(work.in_current_span())).await {
        Ok(outcome) => outcome,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => Err(HandlerError::retry(error)),
    }
}

/// Decodes a record by its `content-type` into a [`Delivery`].
fn decode<M: WireMessage>(message: OwnedMessage) -> Received<M> {
    let content_type = header(&message, wire::CONTENT_TYPE_HEADER);
    let decoded =
        wire::decode::<M>(message.payload(), content_type.as_deref()).map(|decoded| Delivery {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            request_id: header(&message, wire::REQUEST_ID_HEADER)
                .unwrap_or_else(|| decoded.request_id().to_owned()),
            trace_parent: trace_parent(&message),
            message: decoded,
        });
    Received { message, decoded }
}

/// A message's payload bytes.
fn payload_len(message: &OwnedMessage) -> usize {
    message.payload().map_or(0, <[u8]>::len)
}

fn is_revoked(revoked: &[(String, i32)], topic: &str, partition: i32) -> bool {
    revoked
        .iter()
        .any(|(t, p)| t.as_str() == topic && *p == partition)
}

/// The partitions of a batch, in order: `0,2,3`.
fn batch_partitions<T>(deliveries: &[Delivery<T>]) -> String {
    let partitions: std::collections::BTreeSet<i32> = deliveries
        .iter()
        .map(|delivery| delivery.partition)
        .collect();
    let listed: Vec<String> = partitions.iter().map(i32::to_string).collect();
    listed.join(",")
}

/// A record's W3C trace context, while this process exports traces (nothing is read
/// otherwise); headers are compared in place, without copies.
fn trace_parent(message: &impl Message) -> Option<TraceParent> {
    if !telemetry::exporting() {
        return None;
    }
    let headers = message.headers()?;
    let (mut traceparent, mut tracestate) = (None, None);
    for header in headers.iter() {
        if header.key.eq_ignore_ascii_case(wire::TRACEPARENT_HEADER) {
            traceparent = header.value;
        } else if header.key.eq_ignore_ascii_case(wire::TRACESTATE_HEADER) {
            tracestate = header.value;
        }
    }
    let traceparent = std::str::from_utf8(traceparent?).ok()?;
    let tracestate = tracestate.and_then(|value| std::str::from_utf8(value).ok());
    TraceParent::parse(traceparent, tracestate)
}

/// A header's value as text.
fn header(message: &impl Message, name: &str) -> Option<String> {
    message.headers().and_then(|headers| {
        headers
            .iter()
            .find(|header| header.key.eq_ignore_ascii_case(name))
            .and_then(|header| header.value)
            .map(|value| String::from_utf8_lossy(value).into_owned())
    })
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;

    use super::*;

    fn message(partition: i32, offset: i64, payload_bytes: usize) -> OwnedMessage {
        OwnedMessage::new(
            Some(vec![b'x'; payload_bytes]),
            None,
            "topic".into(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    fn carried(messages: impl IntoIterator<Item = OwnedMessage>) -> Carried<()> {
        let mut carried = Carried::default();
        for message in messages {
            carried.push(Received {
                message,
                decoded: Err(wire::DecodeError::Empty),
            });
        }
        carried
    }

    fn offsets<M>(received: &[Received<M>]) -> Vec<i64> {
        received.iter().map(|r| r.message.offset()).collect()
    }

    #[test]
    fn a_batch_taken_from_carried_messages_keeps_to_the_batch_size_and_leaves_the_rest() {
        let mut carried = carried((0..7).map(|offset| message(0, offset, 10)));
        let batch = carried.take_batch(3, 1_000);
        assert_eq!(offsets(&batch), [0, 1, 2]);
        assert_eq!(offsets(&carried.received), [3, 4, 5, 6]);
        assert_eq!(carried.bytes, 40);
        let batch = carried.take_batch(10, 1_000);
        assert_eq!(offsets(&batch), [3, 4, 5, 6]);
        assert!(carried.is_empty());
        assert_eq!(carried.bytes, 0);
        assert!(carried.take_batch(10, 1_000).is_empty());
    }

    #[test]
    fn a_batch_taken_from_carried_messages_ends_once_its_payload_reaches_the_byte_limit() {
        let mut carried = carried((0..5).map(|offset| message(0, offset, 40)));
        assert!(carried.holds_a_batch(10, 200));
        assert!(!carried.holds_a_batch(10, 201));
        // 40 and 80 are under 100: a third message is added, then the batch is full.
        let batch = carried.take_batch(10, 100);
        assert_eq!(offsets(&batch), [0, 1, 2]);
        assert_eq!(carried.bytes, 80);
        // A message larger than the limit still makes a batch of its own.
        let mut carried = self::carried([message(0, 0, 500), message(0, 1, 1)]);
        assert_eq!(offsets(&carried.take_batch(10, 100)), [0]);
        assert_eq!(offsets(&carried.received), [1]);
    }

    #[test]
    fn a_revoke_drops_the_carried_messages_and_pending_offsets_of_its_partitions_only() {
        let mut carried = carried([
            message(0, 10, 5),
            message(1, 20, 7),
            message(0, 11, 5),
            message(2, 30, 9),
        ]);
        let mut pending = PendingOffsets::default();
        pending.record("topic", 0, 9);
        pending.record("topic", 2, 29);
        let revoked = vec![("topic".to_owned(), 0), ("other".to_owned(), 2)];
        carried.forget(&revoked);
        pending.forget(&revoked);
        assert_eq!(offsets(&carried.received), [20, 30]);
        assert_eq!(carried.bytes, 16);
        assert_eq!(pending.0.len(), 1);
        assert_eq!(pending.0[&("topic".to_owned(), 2)], 29);
    }
}
