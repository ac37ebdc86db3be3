//! The counter's batch handler. Each batch: check the epoch (has Redis been emptied since we
//! last looked?), group the events by counter and apply each counter's events with one Lua
//! call, load counters Redis does not hold from the database and apply their events again,
//! check the epoch once more, and remember which counters, members and event ids changed. A
//! flush writes them to the database in one transaction; only then does the consumer store
//! the offsets.
//!
//! Replays (after a crash, a rebalance or a rewind) are absorbed by the per-partition applied
//! offsets in each counter, and still mark the counter dirty, so the database catches up.
//! Re-sent events (same event id within the namespace's window) are absorbed by the ids the
//! counter remembers in Redis and, through the flush, in the database.
//!
//! A counter with unflushed events that Redis no longer holds (Missing at an apply, absent
//! at a flush) also rewinds the consumer: on a Redis Cluster one master may lose its data
//! while the epoch, on another, stays.
//!
//! A counter whose database row is corrupt is not applied: its events go to the DLQ with the
//! reason, and `spillway_counter_corrupt_rows_total` counts it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Mutex,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use spillway_core::{
    config::CounterSettings,
    counters::{
        BatchOutcome, CounterBatch, CounterStore, CounterStoreError, EventToApply, Operation,
        config::{CounterKind, NamespaceSettings},
        sql::{self, CounterSqlError},
        store::CounterToFlush,
    },
    faults,
    kafka::consumer::{BatchHandler, Delivery, HandlerError, Rejection},
    wire::{CounterEvent, CounterOperation},
};

use tracing::{Instrument, Span};

use crate::{metrics::CounterMetrics, spans};

/// When to flush: enough dirty counters, or enough time.
#[derive(Debug, Clone, Copy)]
pub struct FlushRule {
    pub max_entities: usize,
    pub interval: Duration,
}

impl FlushRule {
    pub fn from_settings(settings: &CounterSettings) -> Self {
        Self {
            max_entities: settings.flush_max_entities,
            interval: Duration::from_millis(settings.flush_interval_ms),
        }
    }
}

type EntityKey = (String, String);

/// Counters (and their members) changed since the last flush, by source partition, so that a
/// lost partition's share can be dropped (its new owner replays it).
#[derive(Debug, Default)]
struct Dirty {
    by_partition: HashMap<i32, HashMap<EntityKey, DirtyCounter>>,
}

#[derive(Debug, Default)]
struct DirtyCounter {
    members: BTreeSet<String>,
    /// Ids remembered for the dedupe window, not yet in the database.
    event_ids: Vec<String>,
    /// Acceptance time (unix seconds) of the oldest event not yet flushed.
    oldest_accepted: Option<f64>,
}

/// What a flush writes of one counter, merged across partitions.
#[derive(Debug, Default)]
struct CounterChanges {
    members: BTreeSet<String>,
    event_ids: Vec<String>,
    oldest_accepted: Option<f64>,
}

fn earliest(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Dirty {
    fn counter(&mut self, partition: i32, key: EntityKey) -> &mut DirtyCounter {
        self.by_partition
            .entry(partition)
            .or_default()
            .entry(key)
            .or_default()
    }

    fn mark(&mut self, partition: i32, key: EntityKey, change: &DirtyCounter) {
        let counter = self.counter(partition, key);
        counter.members.extend(change.members.iter().cloned());
        counter.event_ids.extend(change.event_ids.iter().cloned());
        counter.oldest_accepted = earliest(counter.oldest_accepted, change.oldest_accepted);
    }

    fn entity_count(&self) -> usize {
        self.by_partition.values().map(HashMap::len).sum()
    }

    fn merge(&mut self, other: Dirty) {
        for (partition, counters) in other.by_partition {
            for (key, counter) in counters {
                self.mark(partition, key, &counter);
            }
        }
    }

    /// All dirty counters, merged across partitions, in key order (a stable lock order).
    fn counters(&self) -> BTreeMap<EntityKey, CounterChanges> {
        let mut merged: BTreeMap<EntityKey, CounterChanges> = BTreeMap::new();
        for counters in self.by_partition.values() {
            for (key, counter) in counters {
                let entry = merged.entry(key.clone()).or_default();
                entry.members.extend(counter.members.iter().cloned());
                entry.event_ids.extend(counter.event_ids.iter().cloned());
                entry.oldest_accepted = earliest(entry.oldest_accepted, counter.oldest_accepted);
            }
        }
        merged
    }
}

/// How often the flush deletes recorded event ids older than their namespace's window.
const EVENT_ID_CLEANUP_INTERVAL: Duration = Duration::from_secs(300);

/// One batch's events of one counter, with where each came from in the batch.
struct CounterEvents<'a> {
    batch: CounterBatch,
    deliveries: Vec<(usize, &'a Delivery<CounterEvent>)>,
}

/// The counter service's [`BatchHandler`].
pub struct CounterHandler {
    store: CounterStore,
    namespaces: BTreeMap<String, NamespaceSettings>,
    flush_rule: FlushRule,
    metrics: CounterMetrics,
    /// The epoch this instance applied under; `None` before the first batch.
    epoch: Mutex<Option<String>>,
    dirty: Mutex<Dirty>,
    /// Partitions taken from this instance by a rebalance and not given back: what it still
    /// applies of them (a batch in flight) is not its to flush; their new owner replays it.
    revoked: Mutex<HashSet<i32>>,
    last_cleanup: Mutex<Instant>,
    /// The traces the next flush continues.
    traces: spans::FlushTraces,
}

fn unix_seconds(event: &CounterEvent) -> Option<f64> {
    event
        .accepted_at
        .as_ref()
        .map(|t| t.seconds as f64 + f64::from(t.nanos) / 1e9)
}

fn now_unix_seconds() -> f64 {
    chrono::Utc::now().timestamp_micros() as f64 / 1e6
}

impl CounterHandler {
    pub fn new(
        store: CounterStore,
        namespaces: BTreeMap<String, NamespaceSettings>,
        flush_rule: FlushRule,
        metrics: CounterMetrics,
    ) -> Self {
        Self {
            store,
            namespaces,
            flush_rule,
            metrics,
            epoch: Mutex::new(None),
            dirty: Mutex::new(Dirty::default()),
            revoked: Mutex::new(HashSet::new()),
            last_cleanup: Mutex::new(Instant::now()),
            traces: spans::FlushTraces::default(),
        }
    }

    /// What an event does to its counter, or why it cannot be counted.
    fn operation(&self, event: &CounterEvent) -> Result<(&NamespaceSettings, Operation), String> {
        let namespace = self
            .namespaces
            .get(&event.namespace)
            .ok_or_else(|| format!("unknown namespace `{}`", event.namespace))?;
        let operation = match (namespace.kind, event.operation()) {
            (CounterKind::Distinct, CounterOperation::AddMember) => {
                Operation::AddMember(event.member.clone())
            }
            (CounterKind::Distinct, CounterOperation::RemoveMember) => {
                Operation::RemoveMember(event.member.clone())
            }
            (CounterKind::Sum, CounterOperation::Increment) => Operation::Increment(event.delta),
            (kind, operation) => {
                return Err(format!(
                    "{} is not allowed on the {kind:?} namespace `{}`",
                    operation.as_str_name(),
                    event.namespace
                ));
            }
        };
        Ok((namespace, operation))
    }

    /// Groups the batch by counter (in first-seen order, each counter's events in the order
    /// they were read); events that cannot be counted become rejections.
    fn group<'a>(
        &self,
        batch: &'a [Delivery<CounterEvent>],
        rejections: &mut Vec<Rejection>,
    ) -> Vec<CounterEvents<'a>> {
        let mut slots: HashMap<EntityKey, usize> = HashMap::new();
        let mut counters: Vec<CounterEvents<'a>> = Vec::new();
        let mut seen = HashSet::new();
        for (index, delivery) in batch.iter().enumerate() {
            if !seen.insert((delivery.partition, delivery.offset)) {
                continue; // the same record twice in one batch: it counts once
            }
            let event = &delivery.message;
            let (namespace, operation) = match self.operation(event) {
                Ok(found) => found,
                Err(reason) => {
                    rejections.push(Rejection { index, reason });
                    continue;
                }
            };
            let key = (event.namespace.clone(), event.entity_id.clone());
            let slot = *slots.entry(key).or_insert_with(|| {
                counters.push(CounterEvents {
                    batch: CounterBatch {
                        namespace: event.namespace.clone(),
                        entity_id: event.entity_id.clone(),
                        dedupe_window: namespace.dedupe_window(),
                        events: Vec::new(),
                    },
                    deliveries: Vec::new(),
                });
                counters.len() - 1
            });
            let counter = &mut counters[slot];
            counter.batch.events.push(EventToApply {
                partition: delivery.partition,
                offset: delivery.offset,
                operation,
                event_id: (!event.never_resent).then(|| event.event_id.clone()),
            });
            counter.deliveries.push((index, delivery));
        }
        counters
    }

    /// Compares Redis's epoch with ours. A changed or vanished epoch means Redis was emptied:
    /// everything not yet flushed is gone from it, so the consumer must rewind.
    async fn check_epoch(&self) -> Result<(), HandlerError> {
        let current = self.store.epoch().await.map_err(HandlerError::retry)?;
        self.observe_epoch(current)
    }

    /// Compares an epoch read from Redis with ours (see [`Self::check_epoch`]).
    fn observe_epoch(&self, current: String) -> Result<(), HandlerError> {
        let mut epoch = self.epoch.lock().expect("epoch lock");
        match epoch.as_deref() {
            Some(known) if known != current => {
                *epoch = Some(current);
                self.dirty.lock().expect("dirty lock").by_partition.clear();
                self.metrics.rebuilds.inc();
                Err(HandlerError::Rewind(
                    "Redis was emptied; rebuilding from the database".into(),
                ))
            }
            _ => {
                *epoch = Some(current);
                Ok(())
            }
        }
    }

    /// Whether this instance applied events to the counter that are not flushed yet.
    fn has_unflushed(&self, batch: &CounterBatch) -> bool {
        let key = (batch.namespace.clone(), batch.entity_id.clone());
        let dirty = self.dirty.lock().expect("dirty lock");
        dirty
            .by_partition
            .values()
            .any(|counters| counters.contains_key(&key))
    }

    /// A counter with unflushed events is gone from Redis (emptied, or on a Redis Cluster the
    /// master of its slot lost with its data, which the epoch in another slot cannot see):
    /// like an emptied Redis, the consumer must read again from the committed offsets.
    fn lost(&self, namespace: &str, entity_id: &str) -> HandlerError {
        self.dirty.lock().expect("dirty lock").by_partition.clear();
        self.metrics.rebuilds.inc();
        HandlerError::Rewind(format!(
            "Redis lost counter {namespace}/{entity_id} before its events were flushed; \
             rebuilding from the database"
        ))
    }

    /// Loads counters from the database into Redis; returns the ones whose row is corrupt
    /// (not loaded, so never applied on top of a state that would count events twice).
    async fn load_counters(
        &self,
        counters: &[&CounterBatch],
    ) -> Result<HashSet<EntityKey>, HandlerError> {
        let mut by_namespace: BTreeMap<&str, (BTreeSet<String>, Duration)> = BTreeMap::new();
        for counter in counters {
            by_namespace
                .entry(&counter.namespace)
                .or_insert_with(|| (BTreeSet::new(), counter.dedupe_window))
                .0
                .insert(counter.entity_id.clone());
        }
        let mut corrupt = HashSet::new();
        for (namespace, (entity_ids, window)) in by_namespace {
            let distinct = self
                .namespaces
                .get(namespace)
                .is_some_and(|n| n.kind == CounterKind::Distinct);
            let mut entity_ids: Vec<String> = entity_ids.into_iter().collect();
            while !entity_ids.is_empty() {
                match self
                    .store
                    .load(namespace, &entity_ids, distinct, window)
                    .await
                {
                    Ok(()) => {
                        self.metrics.loads.inc_by(entity_ids.len() as u64);
                        break;
                    }
                    Err(CounterStoreError::Sql(CounterSqlError::CorruptRow {
                        entity_id,
                        reason,
                        ..
                    })) => {
                        tracing::error!(%namespace, %entity_id, %reason,
                            "counter row is corrupt: its events go to the DLQ until it is repaired");
                        self.metrics
                            .corrupt_rows
                            .with_label_values(&[namespace])
                            .inc();
                        entity_ids.retain(|id| *id != entity_id);
                        corrupt.insert((namespace.to_owned(), entity_id));
                    }
                    Err(error) => return Err(HandlerError::retry(error)),
                }
            }
        }
        Ok(corrupt)
    }

    /// Applies every counter's events; counters Redis lacks are loaded, then applied again.
    /// A counter whose row is corrupt comes back `None`. Each round reads the epoch before
    /// and after: emptied before, nothing of this batch was applied on what we knew, so a
    /// rewind suffices; emptied during, the counters this batch touched may hold part of
    /// their events, so they are discarded first.
    async fn apply(
        &self,
        counters: &[CounterEvents<'_>],
    ) -> Result<Vec<Option<BatchOutcome>>, HandlerError> {
        let batches: Vec<&CounterBatch> = counters.iter().map(|c| &c.batch).collect();
        let mut outcomes: Vec<Option<BatchOutcome>> = self
            .apply_round(counters, &batches)
            .await?
            .into_iter()
            .map(Some)
            .collect();
        let missing: Vec<usize> = (0..outcomes.len())
            .filter(|&i| outcomes[i] == Some(BatchOutcome::Missing))
            .collect();
        if missing.is_empty() {
            return Ok(outcomes);
        }
        if let Some(&lost) = missing.iter().find(|&&i| self.has_unflushed(batches[i])) {
            return Err(self.lost(&batches[lost].namespace, &batches[lost].entity_id));
        }
        let to_load: Vec<&CounterBatch> = missing.iter().map(|&i| batches[i]).collect();
        let corrupt = self.load_counters(&to_load).await?;
        let again: Vec<usize> = missing
            .into_iter()
            .filter(|&i| {
                let key = (batches[i].namespace.clone(), batches[i].entity_id.clone());
                if corrupt.contains(&key) {
                    outcomes[i] = None;
                }
                !corrupt.contains(&key)
            })
            .collect();
        let retried_batches: Vec<&CounterBatch> = again.iter().map(|&i| batches[i]).collect();
        let retried = self.apply_round(counters, &retried_batches).await?;
        for (index, outcome) in again.into_iter().zip(retried) {
            if outcome == BatchOutcome::Missing {
                return Err(HandlerError::retry(CounterStoreError::Vanished));
            }
            outcomes[index] = Some(outcome);
        }
        Ok(outcomes)
    }

    /// One apply pipeline, with the epoch checked on both sides of it.
    async fn apply_round(
        &self,
        counters: &[CounterEvents<'_>],
        batches: &[&CounterBatch],
    ) -> Result<Vec<BatchOutcome>, HandlerError> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let round = self
            .store
            .apply(batches)
            .await
            .map_err(HandlerError::retry)?;
        self.observe_epoch(round.epoch_before)?;
        if let Err(rewind) = self.observe_epoch(round.epoch_after) {
            self.discard(counters).await;
            return Err(rewind);
        }
        Ok(round.outcomes)
    }

    /// After an epoch change seen at the end of a batch: forget the counters this batch wrote,
    /// since they may have been loaded into the emptied Redis with part of their events.
    async fn discard(&self, counters: &[CounterEvents<'_>]) {
        let keys: Vec<(&str, &str)> = counters
            .iter()
            .map(|c| (c.batch.namespace.as_str(), c.batch.entity_id.as_str()))
            .collect();
        if let Err(error) = self.store.discard(&keys).await {
            tracing::warn!(%error, "discarding counters after an epoch change failed");
        }
    }

    /// Records what changed, per partition, for the next flush, and the outcome metrics.
    fn mark_dirty(&self, counters: &[CounterEvents<'_>], outcomes: &[Option<BatchOutcome>]) {
        let now = now_unix_seconds();
        let revoked = self.revoked.lock().expect("revoked lock");
        let mut dirty = self.dirty.lock().expect("dirty lock");
        for (counter, outcome) in counters.iter().zip(outcomes) {
            let Some(BatchOutcome::Done(applied)) = outcome else {
                continue;
            };
            let namespace = counter.batch.namespace.as_str();
            for (outcome, count) in [
                ("applied", applied.applied),
                ("replayed", applied.replayed),
                ("duplicate", applied.duplicates),
            ] {
                self.metrics
                    .events
                    .with_label_values(&[namespace, outcome])
                    .inc_by(count);
            }
            let key = (
                counter.batch.namespace.clone(),
                counter.batch.entity_id.clone(),
            );
            for ((_, delivery), event) in counter.deliveries.iter().zip(&counter.batch.events) {
                if revoked.contains(&event.partition) {
                    continue;
                }
                let accepted = unix_seconds(&delivery.message);
                if applied.applied > 0
                    && let Some(accepted) = accepted
                {
                    self.metrics.apply_lag.observe((now - accepted).max(0.0));
                }
                let change = DirtyCounter {
                    members: event
                        .operation
                        .member()
                        .map(str::to_owned)
                        .into_iter()
                        .collect(),
                    event_ids: event.event_id.clone().into_iter().collect(),
                    oldest_accepted: accepted,
                };
                dirty.mark(event.partition, key.clone(), &change);
            }
        }
        self.metrics.dirty_entities.set(dirty.entity_count() as i64);
    }

    /// The events of counters that were not applied (their row is corrupt), for the DLQ.
    fn corrupt_rejections(
        counters: &[CounterEvents<'_>],
        outcomes: &[Option<BatchOutcome>],
    ) -> Vec<Rejection> {
        counters
            .iter()
            .zip(outcomes)
            .filter(|(_, outcome)| outcome.is_none())
            .flat_map(|(counter, _)| {
                let reason = format!(
                    "corrupt-state: the database row of counter {}/{} cannot be read; repair it, then replay this event",
                    counter.batch.namespace, counter.batch.entity_id
                );
                counter.deliveries.iter().map(move |(index, _)| Rejection {
                    index: *index,
                    reason: reason.clone(),
                })
            })
            .collect()
    }
}

#[async_trait]
impl BatchHandler for CounterHandler {
    type Message = CounterEvent;

    async fn handle(
        &self,
        batch: &[Delivery<CounterEvent>],
    ) -> Result<Vec<Rejection>, HandlerError> {
        let mut rejections = Vec::new();
        let counters = self.group(batch, &mut rejections);
        let spans: Vec<Span> = if spans::wanted() {
            counters
                .iter()
                .map(|c| spans::apply(&c.batch, &c.deliveries))
                .collect()
        } else {
            Vec::new()
        };
        let outcomes = self.apply(&counters).await?;
        spans::record_outcomes(&spans, &outcomes);
        self.traces.remember(batch);
        faults::point(faults::COUNTER_AFTER_APPLY);
        self.mark_dirty(&counters, &outcomes);
        rejections.extend(Self::corrupt_rejections(&counters, &outcomes));
        Ok(rejections)
    }

    async fn flush(&self) -> Result<(), HandlerError> {
        let snapshot = std::mem::take(&mut *self.dirty.lock().expect("dirty lock"));
        if snapshot.entity_count() == 0 {
            return Ok(());
        }
        let (span, traces) = self.traces.flush_span(snapshot.entity_count());
        let outcome = self
            .flush_snapshot(&snapshot)
            .instrument(span.clone())
            .await;
        if outcome.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        // A failed flush is tried again; after a rewind the replay marks what it applies.
        if let Err(HandlerError::Retry(_)) = outcome {
            self.traces.restore(traces);
            self.dirty.lock().expect("dirty lock").merge(snapshot);
        }
        self.metrics
            .dirty_entities
            .set(self.dirty.lock().expect("dirty lock").entity_count() as i64);
        if outcome.is_ok() {
            self.forget_old_event_ids().await;
        }
        outcome
    }

    fn on_revoke(&self, revoked: &[(String, i32)]) {
        self.traces.forget_partitions(revoked);
        let mut dirty = self.dirty.lock().expect("dirty lock");
        let mut lost = self.revoked.lock().expect("revoked lock");
        for (_, partition) in revoked {
            dirty.by_partition.remove(partition);
            lost.insert(*partition);
        }
        self.metrics.dirty_entities.set(dirty.entity_count() as i64);
    }

    fn on_assign(&self, assigned: &[(String, i32)]) {
        let mut lost = self.revoked.lock().expect("revoked lock");
        for (_, partition) in assigned {
            lost.remove(partition);
        }
    }

    fn flush_due(&self, since_last_flush: Duration) -> bool {
        since_last_flush >= self.flush_rule.interval
            || self.dirty.lock().expect("dirty lock").entity_count() >= self.flush_rule.max_entities
    }
}

impl CounterHandler {
    async fn flush_snapshot(&self, snapshot: &Dirty) -> Result<(), HandlerError> {
        let started = Instant::now();
        self.check_epoch().await?;
        let counters = snapshot.counters();
        let to_flush: Vec<CounterToFlush<'_>> = counters
            .iter()
            .map(|((namespace, entity_id), changes)| CounterToFlush {
                namespace,
                entity_id,
                members: &changes.members,
                event_ids: &changes.event_ids,
            })
            .collect();
        let batch = match self.store.read_for_flush(&to_flush).await {
            Err(CounterStoreError::Lost {
                namespace,
                entity_id,
            }) => return Err(self.lost(&namespace, &entity_id)),
            outcome => outcome.map_err(HandlerError::retry)?,
        };
        sql::write_flush(self.store.database(), &self.namespaces, &batch)
            .await
            .map_err(HandlerError::retry)?;
        let now = now_unix_seconds();
        if let Some(oldest) = counters
            .values()
            .filter_map(|changes| changes.oldest_accepted)
            .reduce(f64::min)
        {
            self.metrics.flush_lag.observe((now - oldest).max(0.0));
        }
        self.metrics
            .flush_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .flush_entities
            .observe(batch.values.len() as f64);
        Ok(())
    }

    /// Every few minutes: deletes recorded event ids older than their namespace's window.
    /// A failure only delays it (the rows are ignored by loads anyway).
    async fn forget_old_event_ids(&self) {
        {
            let mut last = self.last_cleanup.lock().expect("cleanup lock");
            if last.elapsed() < EVENT_ID_CLEANUP_INTERVAL {
                return;
            }
            *last = Instant::now();
        }
        for (name, namespace) in &self.namespaces {
            if let Err(error) =
                sql::forget_old_event_ids(self.store.database(), name, namespace.dedupe_window())
                    .await
            {
                tracing::warn!(%error, namespace = %name, "deleting old event ids failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(entity: &str) -> EntityKey {
        ("ns".into(), entity.into())
    }

    fn change(member: Option<&str>, event_id: Option<&str>, accepted: Option<f64>) -> DirtyCounter {
        DirtyCounter {
            members: member.map(str::to_owned).into_iter().collect(),
            event_ids: event_id.map(str::to_owned).into_iter().collect(),
            oldest_accepted: accepted,
        }
    }

    #[test]
    fn dirty_counters_merge_across_partitions_and_keep_the_oldest_time() {
        let mut dirty = Dirty::default();
        dirty.mark(0, key("a"), &change(Some("m1"), Some("e1"), Some(10.0)));
        dirty.mark(1, key("a"), &change(Some("m2"), Some("e2"), Some(5.0)));
        dirty.mark(1, key("b"), &change(None, None, None));
        let counters = dirty.counters();
        assert_eq!(counters.len(), 2);
        let a = &counters[&key("a")];
        assert_eq!(a.members.iter().collect::<Vec<_>>(), ["m1", "m2"]);
        let mut ids = a.event_ids.clone();
        ids.sort();
        assert_eq!(ids, ["e1", "e2"]);
        assert_eq!(a.oldest_accepted, Some(5.0));
        assert_eq!(dirty.entity_count(), 3);
    }

    #[test]
    fn a_failed_flush_puts_its_counters_back() {
        let mut dirty = Dirty::default();
        dirty.mark(0, key("a"), &change(Some("m1"), Some("e1"), Some(1.0)));
        let snapshot = std::mem::take(&mut dirty);
        dirty.mark(0, key("b"), &change(None, None, None));
        dirty.merge(snapshot);
        assert_eq!(dirty.counters().len(), 2);
        assert!(dirty.counters()[&key("a")].members.contains("m1"));
        assert_eq!(dirty.counters()[&key("a")].event_ids, ["e1"]);
    }
}
