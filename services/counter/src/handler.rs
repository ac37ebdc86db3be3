//! The counter's batch handler. Each batch: check the epoch (has Redis been emptied since we
//! last looked?), apply every event with the Lua script, load counters Redis does not hold
//! from the database and apply their events again, check the epoch once more, and remember
//! which counters and members changed. A flush writes them to the database; only then does
//! the consumer store the offsets.
//!
//! Replays (after a crash, a rebalance or a rewind) are absorbed by the per-partition applied
//! offsets in each counter, and still mark the counter dirty, so the database catches up.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use spillway_core::{
    config::CounterSettings,
    counters::{
        ApplyCommand, ApplyStatus, CounterStore, CounterStoreError, Operation,
        config::{CounterKind, NamespaceSettings},
        sql,
        store::CounterToFlush,
    },
    kafka::consumer::{BatchHandler, Delivery, HandlerError, Rejection},
    wire::{CounterEvent, CounterOperation},
};

use crate::metrics::CounterMetrics;

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
    /// Acceptance time (unix seconds) of the oldest event not yet flushed.
    oldest_accepted: Option<f64>,
}

impl Dirty {
    fn mark(
        &mut self,
        partition: i32,
        key: EntityKey,
        member: Option<&str>,
        accepted: Option<f64>,
    ) {
        let counter = self
            .by_partition
            .entry(partition)
            .or_default()
            .entry(key)
            .or_default();
        if let Some(member) = member {
            counter.members.insert(member.to_owned());
        }
        if let Some(accepted) = accepted {
            let oldest = counter.oldest_accepted.get_or_insert(accepted);
            *oldest = oldest.min(accepted);
        }
    }

    fn entity_count(&self) -> usize {
        self.by_partition.values().map(HashMap::len).sum()
    }

    fn merge(&mut self, other: Dirty) {
        for (partition, counters) in other.by_partition {
            for (key, counter) in counters {
                for member in &counter.members {
                    self.mark(
                        partition,
                        key.clone(),
                        Some(member),
                        counter.oldest_accepted,
                    );
                }
                if counter.members.is_empty() {
                    self.mark(partition, key, None, counter.oldest_accepted);
                }
            }
        }
    }

    /// All dirty counters, merged across partitions, in key order (a stable lock order).
    fn counters(&self) -> BTreeMap<EntityKey, (BTreeSet<String>, Option<f64>)> {
        let mut merged: BTreeMap<EntityKey, (BTreeSet<String>, Option<f64>)> = BTreeMap::new();
        for counters in self.by_partition.values() {
            for (key, counter) in counters {
                let entry = merged.entry(key.clone()).or_default();
                entry.0.extend(counter.members.iter().cloned());
                entry.1 = match (entry.1, counter.oldest_accepted) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        merged
    }
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
        }
    }

    /// Turns an event into an apply command, or says why it cannot be counted.
    fn command(&self, delivery: &Delivery<CounterEvent>) -> Result<ApplyCommand, String> {
        let event = &delivery.message;
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
        Ok(ApplyCommand {
            namespace: event.namespace.clone(),
            entity_id: event.entity_id.clone(),
            partition: delivery.partition,
            offset: delivery.offset,
            operation,
        })
    }

    /// Compares Redis's epoch with ours. A changed or vanished epoch means Redis was emptied:
    /// everything not yet flushed is gone from it, so the consumer must rewind.
    async fn check_epoch(&self) -> Result<(), HandlerError> {
        let current = self.store.epoch().await.map_err(HandlerError::retry)?;
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

    /// Loads the counters of these commands from the database into Redis.
    async fn load_counters(&self, commands: &[&ApplyCommand]) -> Result<(), HandlerError> {
        let mut by_namespace: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for command in commands {
            by_namespace
                .entry(&command.namespace)
                .or_default()
                .insert(command.entity_id.clone());
        }
        for (namespace, entity_ids) in by_namespace {
            let entity_ids: Vec<String> = entity_ids.into_iter().collect();
            let distinct = self
                .namespaces
                .get(namespace)
                .is_some_and(|n| n.kind == CounterKind::Distinct);
            self.store
                .load(namespace, &entity_ids, distinct)
                .await
                .map_err(HandlerError::retry)?;
            self.metrics.loads.inc_by(entity_ids.len() as u64);
        }
        Ok(())
    }

    /// Applies the commands; counters Redis lacks are loaded, then their events applied again.
    async fn apply(&self, commands: &[&ApplyCommand]) -> Result<Vec<ApplyStatus>, HandlerError> {
        let mut statuses = self
            .store
            .apply(commands)
            .await
            .map_err(HandlerError::retry)?;
        let missing: Vec<usize> = (0..statuses.len())
            .filter(|&i| statuses[i] == ApplyStatus::Missing)
            .collect();
        if missing.is_empty() {
            return Ok(statuses);
        }
        let again: Vec<&ApplyCommand> = missing.iter().map(|&i| commands[i]).collect();
        self.load_counters(&again).await?;
        let retried = self
            .store
            .apply(&again)
            .await
            .map_err(HandlerError::retry)?;
        for (index, status) in missing.into_iter().zip(retried) {
            if status == ApplyStatus::Missing {
                return Err(HandlerError::retry(CounterStoreError::Vanished));
            }
            statuses[index] = status;
        }
        Ok(statuses)
    }

    /// After an epoch change seen at the end of a batch: forget the counters this batch wrote,
    /// since they may have been loaded into the emptied Redis with part of their events.
    async fn discard(&self, commands: &[&ApplyCommand]) {
        let counters: Vec<(&str, &str)> = commands
            .iter()
            .map(|command| (command.namespace.as_str(), command.entity_id.as_str()))
            .collect();
        if let Err(error) = self.store.discard(&counters).await {
            tracing::warn!(%error, "discarding counters after an epoch change failed");
        }
    }

    fn mark_dirty(
        &self,
        deliveries: &[&Delivery<CounterEvent>],
        commands: &[&ApplyCommand],
        statuses: &[ApplyStatus],
    ) {
        let now = now_unix_seconds();
        let mut dirty = self.dirty.lock().expect("dirty lock");
        for ((delivery, command), status) in deliveries.iter().zip(commands).zip(statuses) {
            let accepted = unix_seconds(&delivery.message);
            let outcome = match status {
                ApplyStatus::Applied(_) => {
                    if let Some(accepted) = accepted {
                        self.metrics.apply_lag.observe((now - accepted).max(0.0));
                    }
                    "applied"
                }
                _ => "replayed",
            };
            self.metrics
                .events
                .with_label_values(&[&command.namespace, outcome])
                .inc();
            let key = (command.namespace.clone(), command.entity_id.clone());
            dirty.mark(command.partition, key, command.operation.member(), accepted);
        }
        self.metrics.dirty_entities.set(dirty.entity_count() as i64);
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
        let mut accepted = Vec::with_capacity(batch.len());
        let mut commands = Vec::with_capacity(batch.len());
        for (index, delivery) in batch.iter().enumerate() {
            match self.command(delivery) {
                Ok(command) => {
                    accepted.push(delivery);
                    commands.push(command);
                }
                Err(reason) => rejections.push(Rejection { index, reason }),
            }
        }
        self.check_epoch().await?;
        let commands: Vec<&ApplyCommand> = commands.iter().collect();
        let statuses = self.apply(&commands).await?;
        if let Err(rewind) = self.check_epoch().await {
            self.discard(&commands).await;
            return Err(rewind);
        }
        self.mark_dirty(&accepted, &commands, &statuses);
        Ok(rejections)
    }

    async fn flush(&self) -> Result<(), HandlerError> {
        let snapshot = std::mem::take(&mut *self.dirty.lock().expect("dirty lock"));
        if snapshot.entity_count() == 0 {
            return Ok(());
        }
        let outcome = self.flush_snapshot(&snapshot).await;
        if outcome.is_err() {
            self.dirty.lock().expect("dirty lock").merge(snapshot);
        }
        self.metrics
            .dirty_entities
            .set(self.dirty.lock().expect("dirty lock").entity_count() as i64);
        outcome
    }

    fn on_assignment(&self, assigned: &[(String, i32)]) {
        let owned: BTreeSet<i32> = assigned.iter().map(|(_, partition)| *partition).collect();
        self.dirty
            .lock()
            .expect("dirty lock")
            .by_partition
            .retain(|partition, _| owned.contains(partition));
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
            .map(|((namespace, entity_id), (members, _))| CounterToFlush {
                namespace,
                entity_id,
                members,
            })
            .collect();
        let batch = self
            .store
            .read_for_flush(&to_flush)
            .await
            .map_err(HandlerError::retry)?;
        sql::write_flush(self.store.database(), &self.namespaces, &batch)
            .await
            .map_err(HandlerError::retry)?;
        let now = now_unix_seconds();
        if let Some(oldest) = counters
            .values()
            .filter_map(|(_, accepted)| *accepted)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(entity: &str) -> EntityKey {
        ("ns".into(), entity.into())
    }

    #[test]
    fn dirty_counters_merge_across_partitions_and_keep_the_oldest_time() {
        let mut dirty = Dirty::default();
        dirty.mark(0, key("a"), Some("m1"), Some(10.0));
        dirty.mark(1, key("a"), Some("m2"), Some(5.0));
        dirty.mark(1, key("b"), None, None);
        let counters = dirty.counters();
        assert_eq!(counters.len(), 2);
        let (members, oldest) = &counters[&key("a")];
        assert_eq!(members.iter().collect::<Vec<_>>(), ["m1", "m2"]);
        assert_eq!(*oldest, Some(5.0));
        assert_eq!(dirty.entity_count(), 3);
    }

    #[test]
    fn a_failed_flush_puts_its_counters_back() {
        let mut dirty = Dirty::default();
        dirty.mark(0, key("a"), Some("m1"), Some(1.0));
        let snapshot = std::mem::take(&mut dirty);
        dirty.mark(0, key("b"), None, None);
        dirty.merge(snapshot);
        assert_eq!(dirty.counters().len(), 2);
        assert!(dirty.counters()[&key("a")].0.contains("m1"));
    }
}
