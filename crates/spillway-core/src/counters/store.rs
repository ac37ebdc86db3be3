//! [`CounterStore`]: counters in Redis with the database behind them. The only code that
//! knows a counter's Redis hash fields and its scripts (`lua/counter_*.lua`); the gateway
//! reads through it and the counter service applies and flushes through it.
//!
//! A counter is the hash `{c:<namespace>:<entity_id>}` with the fields [`VALUE_FIELD`],
//! [`VERSION_FIELD`] and one [`OFFSET_FIELD_PREFIX`]`<partition>` per source partition,
//! and, for distinct namespaces, the member set `{c:<namespace>:<entity_id>}:m`.

use std::{
    collections::{BTreeSet, HashMap},
    sync::LazyLock,
    time::Duration,
};

use sea_orm::{AccessMode, DatabaseConnection, IsolationLevel, TransactionTrait};

use super::{
    AppliedOffsets,
    combine::{Entry, combine, one_per_event},
    sql::{self, CounterRow, CounterSqlError, EventIdsRow, FlushBatch, MemberRow, ValueRow},
};
use crate::redis::{RedisClient, RedisError};

/// The counter's value.
pub const VALUE_FIELD: &str = "v";
/// Increases with every applied event; the database never takes a lower one.
pub const VERSION_FIELD: &str = "ver";
/// `o:<partition>`: the last offset of that partition the value includes.
pub const OFFSET_FIELD_PREFIX: &str = "o:";

/// Members or ids added to Redis per command while loading a large set.
const LOAD_CHUNK: usize = 5_000;

/// Applies one counter event exactly once (see the script's header).
static COUNTER_APPLY: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../../lua/counter_apply.lua")));
/// Creates a counter hash from its database row unless it exists.
static COUNTER_LOAD: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../../lua/counter_load.lua")));

#[derive(Debug, thiserror::Error)]
pub enum CounterStoreError {
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error(transparent)]
    Sql(#[from] CounterSqlError),
    #[error("a counter vanished from Redis while it was being loaded")]
    Vanished,
    /// A counter with events not yet flushed is gone from Redis (emptied, or the master of
    /// its slot lost with its data): those events are only in Kafka now.
    #[error("Redis lost counter {namespace}/{entity_id} before its events were flushed")]
    Lost {
        namespace: String,
        entity_id: String,
    },
}

impl From<sea_orm::DbErr> for CounterStoreError {
    fn from(error: sea_orm::DbErr) -> Self {
        Self::Sql(CounterSqlError::Database(error))
    }
}

/// What an event does to its counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    AddMember(String),
    RemoveMember(String),
    Increment(i64),
}

impl Operation {
    pub fn member(&self) -> Option<&str> {
        match self {
            Operation::AddMember(member) | Operation::RemoveMember(member) => Some(member),
            Operation::Increment(_) => None,
        }
    }
}

/// One event of a counter, ready for the apply script.
#[derive(Debug, Clone)]
pub struct EventToApply {
    pub partition: i32,
    pub offset: i64,
    pub operation: Operation,
    /// The id to remember for the dedupe window; `None` when the producer never re-sends it.
    pub event_id: Option<String>,
}

/// The events of one consumer batch for one counter, in the order they were read: applied
/// in one script call.
#[derive(Debug, Clone)]
pub struct CounterBatch {
    pub namespace: String,
    pub entity_id: String,
    pub dedupe_window: Duration,
    pub events: Vec<EventToApply>,
}

/// What the apply script did with one counter's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Redis does not hold this counter (nothing changed): load it, then apply again.
    Missing,
    /// Combined events straddle the applied offset (nothing changed): sent again one by one
    /// by [`CounterStore::apply`], never returned by it.
    Split,
    Done(Applied),
}

/// How a counter's events fared, and its value after them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub value: i64,
    /// Applied now.
    pub applied: u64,
    /// Re-deliveries of records applied before (a consumer's replay): nothing changed.
    pub replayed: u64,
    /// Events whose id the dedupe window holds (re-sent): only the offset moved.
    pub duplicates: u64,
}

/// The outcome of each counter of an apply, and Redis's epoch just before and just after
/// (a change means Redis was emptied meanwhile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyRound {
    pub epoch_before: String,
    pub outcomes: Vec<BatchOutcome>,
    pub epoch_after: String,
}

fn outcome(reply: (i64, i64, u64, u64, u64)) -> BatchOutcome {
    let (code, value, applied, replayed, duplicates) = reply;
    match code {
        0 => BatchOutcome::Missing,
        2 => BatchOutcome::Split,
        _ => BatchOutcome::Done(Applied {
            value,
            applied,
            replayed,
            duplicates,
        }),
    }
}

fn parse_reply<T: redis::FromRedisValue>(value: redis::Value) -> Result<T, RedisError> {
    redis::from_redis_value(value).map_err(RedisError::Parse)
}

/// Reads the epoch (`SET NX` a fresh one first, so a new or emptied Redis gets one).
fn add_epoch_read(pipeline: &mut redis::Pipeline, key: &str) {
    let fresh = uuid::Uuid::new_v4().to_string();
    pipeline
        .cmd("SET")
        .arg(key)
        .arg(fresh)
        .arg("NX")
        .ignore()
        .cmd("GET")
        .arg(key);
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis().try_into().unwrap_or(u64::MAX)
}

/// What the database holds of some counters, read for a load.
#[derive(Debug, Default)]
struct StoredCounters {
    rows: HashMap<String, CounterRow>,
    members: HashMap<String, Vec<String>>,
    /// Entity -> (recorded at, unix ms; event id).
    event_ids: HashMap<String, Vec<(i64, String)>>,
}

/// A dirty counter to read for a flush, with the members whose membership changed.
#[derive(Debug, Clone)]
pub struct CounterToFlush<'a> {
    pub namespace: &'a str,
    pub entity_id: &'a str,
    pub members: &'a BTreeSet<String>,
    /// The ids recorded for the dedupe window since the last flush.
    pub event_ids: &'a [String],
}

/// Counters in Redis, the database behind them.
#[derive(Clone)]
pub struct CounterStore {
    redis: RedisClient,
    db: DatabaseConnection,
}

impl CounterStore {
    pub fn new(redis: RedisClient, db: DatabaseConnection) -> Self {
        Self { redis, db }
    }

    pub fn database(&self) -> &DatabaseConnection {
        &self.db
    }

    /// A counter's value and whether `member` is counted: Redis first, the database while
    /// Redis does not hold the counter (never a wrong zero while Redis rebuilds).
    pub async fn value_and_membership(
        &self,
        namespace: &str,
        entity_id: &str,
        member: Option<&str>,
    ) -> Result<(i64, bool), CounterStoreError> {
        let mut pipeline = redis::pipe();
        pipeline.hget(self.redis.keys().counter(namespace, entity_id), VALUE_FIELD);
        pipeline.sismember(
            self.redis.keys().counter_members(namespace, entity_id),
            member.unwrap_or(""),
        );
        let (value, is_member): (Option<i64>, bool) = self.redis.pipeline(&pipeline).await?;
        match value {
            Some(value) => Ok((value, is_member)),
            None => {
                Ok(
                    sql::value_and_membership(&self.db, namespace, entity_id, member.unwrap_or(""))
                        .await?,
                )
            }
        }
    }

    /// Current values of some counters of one namespace: Redis first, the database for the
    /// ones Redis does not hold; one never counted is 0. On a Redis Cluster the pipeline (one
    /// HGET per counter, each its own hash tag) is split per slot; plain reads need no order.
    pub async fn read_values(
        &self,
        namespace: &str,
        entity_ids: &[String],
    ) -> Result<HashMap<String, i64>, CounterStoreError> {
        let mut pipeline = redis::pipe();
        for entity_id in entity_ids {
            pipeline.hget(self.redis.keys().counter(namespace, entity_id), VALUE_FIELD);
        }
        let cached: Vec<Option<i64>> = self.redis.pipeline(&pipeline).await?;
        let mut values = HashMap::with_capacity(entity_ids.len());
        let mut missing = Vec::new();
        for (entity_id, value) in entity_ids.iter().zip(cached) {
            match value {
                Some(value) => {
                    values.insert(entity_id.clone(), value);
                }
                None => missing.push(entity_id.clone()),
            }
        }
        if !missing.is_empty() {
            let stored = sql::load_values(&self.db, namespace, &missing).await?;
            for entity_id in missing {
                let value = stored.get(&entity_id).copied().unwrap_or(0);
                values.insert(entity_id, value);
            }
        }
        Ok(values)
    }

    /// A sum counter's value, and the delta an earlier increment with this Idempotency-Key
    /// was acknowledged with, if this gateway or another remembers one (one round trip).
    pub async fn value_and_remembered_increment(
        &self,
        namespace: &str,
        entity_id: &str,
        idempotency_key: &str,
    ) -> Result<(i64, Option<i64>), CounterStoreError> {
        let mut pipeline = redis::pipe();
        pipeline.hget(self.redis.keys().counter(namespace, entity_id), VALUE_FIELD);
        pipeline.get(
            self.redis
                .keys()
                .counter_idempotency(namespace, entity_id, idempotency_key),
        );
        let (value, remembered): (Option<i64>, Option<i64>) =
            self.redis.pipeline(&pipeline).await?;
        let value = match value {
            Some(value) => value,
            None => {
                sql::value_and_membership(&self.db, namespace, entity_id, "")
                    .await?
                    .0
            }
        };
        Ok((value, remembered))
    }

    /// Remembers, after the broker acknowledged it, that an increment with this
    /// Idempotency-Key was accepted with `delta`: a retry is then answered without publishing
    /// again. Only a shortcut: the counter's dedupe by event id is what counts it once.
    pub async fn remember_increment(
        &self,
        namespace: &str,
        entity_id: &str,
        idempotency_key: &str,
        delta: i64,
        window: Duration,
    ) -> Result<(), CounterStoreError> {
        if window.is_zero() {
            return Ok(());
        }
        let key = self
            .redis
            .keys()
            .counter_idempotency(namespace, entity_id, idempotency_key);
        self.redis
            .command::<()>(
                redis::cmd("SET")
                    .arg(key)
                    .arg(delta)
                    .arg("PX")
                    .arg(millis(window)),
            )
            .await?;
        Ok(())
    }

    /// Applies each counter's batch with one script call carrying its events combined
    /// ([`super::combine`]), all in one pipeline that also reads the epoch before and after;
    /// a counter Redis does not hold comes back [`BatchOutcome::Missing`], unchanged. A
    /// counter whose combined events straddle its applied offset is sent again event by
    /// event. A Redis that lost the script gets it loaded again and the pipeline re-sent:
    /// replays change nothing. Each call touches the keys of one counter only (one hash
    /// tag, one slot).
    ///
    /// On a Redis Cluster the pipeline is split per slot (`redis::cluster`), and it is a
    /// replicated call: it returns once each touched master's replica holds the applied
    /// events, so a failover cannot take back what the counter goes on to flush and commit.
    /// The epoch key, in a slot of its own, is then read in its own sub-pipeline, not
    /// around the script calls: a FLUSHALL of every master is still seen, in this round or
    /// the next (and a counter it emptied comes back [`BatchOutcome::Missing`]); the loss of
    /// one master is seen per counter, by the handler (a counter with unflushed events that
    /// is Missing, or [`CounterStoreError::Lost`] at the flush).
    pub async fn apply(&self, batches: &[&CounterBatch]) -> Result<ApplyRound, CounterStoreError> {
        let entries: Vec<Vec<Entry>> = batches.iter().map(|b| combine(&b.events)).collect();
        let mut round = self.apply_entries(batches, &entries).await?;
        let split: Vec<usize> = (0..batches.len())
            .filter(|&i| round.outcomes[i] == BatchOutcome::Split)
            .collect();
        if split.is_empty() {
            return Ok(round);
        }
        let again: Vec<&CounterBatch> = split.iter().map(|&i| batches[i]).collect();
        let singles: Vec<Vec<Entry>> = again.iter().map(|b| one_per_event(&b.events)).collect();
        let retried = self.apply_entries(&again, &singles).await?;
        for (index, outcome) in split.into_iter().zip(retried.outcomes) {
            round.outcomes[index] = outcome;
        }
        round.epoch_after = retried.epoch_after;
        Ok(round)
    }

    async fn apply_entries(
        &self,
        batches: &[&CounterBatch],
        entries: &[Vec<Entry>],
    ) -> Result<ApplyRound, CounterStoreError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let epoch = self.redis.keys().counter_epoch();
        let mut pipeline = redis::pipe();
        add_epoch_read(&mut pipeline, &epoch);
        for (batch, entries) in batches.iter().zip(entries) {
            self.add_apply_call(&mut pipeline, batch, entries, now_ms);
        }
        pipeline.cmd("GET").arg(&epoch);
        let replies: Vec<redis::Value> = self
            .redis
            .replicated()
            .pipeline_with_scripts(&pipeline, &[&COUNTER_APPLY])
            .await?;
        let mut replies = replies.into_iter();
        let mut next = || replies.next().unwrap_or(redis::Value::Nil);
        let epoch_before: String = parse_reply(next())?;
        let mut outcomes = Vec::with_capacity(batches.len());
        for _ in batches {
            outcomes.push(outcome(parse_reply(next())?));
        }
        Ok(ApplyRound {
            epoch_before,
            outcomes,
            epoch_after: parse_reply(next())?,
        })
    }

    fn add_apply_call(
        &self,
        pipeline: &mut redis::Pipeline,
        batch: &CounterBatch,
        entries: &[Entry],
        now_ms: i64,
    ) {
        let (namespace, entity_id) = (batch.namespace.as_str(), batch.entity_id.as_str());
        let call = pipeline
            .cmd("EVALSHA")
            .arg(COUNTER_APPLY.get_hash())
            .arg(3)
            .arg(self.redis.keys().counter(namespace, entity_id))
            .arg(self.redis.keys().counter_members(namespace, entity_id))
            .arg(self.redis.keys().counter_event_ids(namespace, entity_id))
            .arg(now_ms)
            .arg(millis(batch.dedupe_window));
        for entry in entries {
            call.arg(entry.partition)
                .arg(entry.first_offset)
                .arg(entry.last_offset)
                .arg(entry.operation)
                .arg(&entry.argument)
                .arg(&entry.event_id)
                .arg(entry.count);
        }
    }

    /// Puts the database state of some counters of one namespace into Redis, for each one
    /// that Redis does not hold already: one read-only snapshot of the database (value,
    /// members, recent event ids, consistent with each other) and one Redis pipeline,
    /// whatever the number. Members and ids are staged, then swapped in by
    /// `counter_load.lua` with the hash, atomically. A counter whose row is corrupt fails
    /// the whole load with [`CounterSqlError::CorruptRow`] naming it. On a Redis Cluster the
    /// pipeline is split per slot: each counter's calls keep to its hash tag and its order, and
    /// a load that finds the counter there already changes nothing, so the split is safe to
    /// send again.
    pub async fn load(
        &self,
        namespace: &str,
        entity_ids: &[String],
        distinct: bool,
        dedupe_window: Duration,
    ) -> Result<(), CounterStoreError> {
        let stored = self
            .read_stored(namespace, entity_ids, distinct, dedupe_window)
            .await?;
        let mut pipeline = redis::pipe();
        for entity_id in entity_ids {
            self.add_load_calls(&mut pipeline, namespace, entity_id, &stored);
        }
        self.redis
            .pipeline_with_scripts::<()>(&pipeline, &[&COUNTER_LOAD])
            .await?;
        Ok(())
    }

    /// The database state of some counters, read in one repeatable-read snapshot, so the
    /// ids and members never include an event the value does not (that would drop it).
    async fn read_stored(
        &self,
        namespace: &str,
        entity_ids: &[String],
        distinct: bool,
        dedupe_window: Duration,
    ) -> Result<StoredCounters, CounterStoreError> {
        let snapshot = self
            .db
            .begin_with_config(
                Some(IsolationLevel::RepeatableRead),
                Some(AccessMode::ReadOnly),
            )
            .await?;
        let rows = sql::load_rows(&snapshot, namespace, entity_ids).await?;
        let with_rows: Vec<String> = entity_ids
            .iter()
            .filter(|id| rows.contains_key(*id))
            .cloned()
            .collect();
        let mut stored = StoredCounters {
            rows,
            ..StoredCounters::default()
        };
        if !with_rows.is_empty() {
            if distinct {
                stored.members = sql::load_members(&snapshot, namespace, &with_rows).await?;
            }
            if !dedupe_window.is_zero() {
                stored.event_ids =
                    sql::load_recent_event_ids(&snapshot, namespace, &with_rows, dedupe_window)
                        .await?;
            }
        }
        snapshot.commit().await?;
        Ok(stored)
    }

    fn add_load_calls(
        &self,
        pipeline: &mut redis::Pipeline,
        namespace: &str,
        entity_id: &str,
        stored: &StoredCounters,
    ) {
        let staged_members = self.redis.keys().counter_loading(namespace, entity_id, "m");
        let staged_ids = self.redis.keys().counter_loading(namespace, entity_id, "e");
        let members = stored.members.get(entity_id).map(Vec::as_slice);
        for chunk in members.unwrap_or_default().chunks(LOAD_CHUNK) {
            pipeline.sadd(&staged_members, chunk).ignore();
        }
        let event_ids = stored.event_ids.get(entity_id).map(Vec::as_slice);
        for chunk in event_ids.unwrap_or_default().chunks(LOAD_CHUNK) {
            pipeline.zadd_multiple(&staged_ids, chunk).ignore();
        }
        let default_row = CounterRow::default();
        let row = stored.rows.get(entity_id).unwrap_or(&default_row);
        let call = pipeline
            .cmd("EVALSHA")
            .arg(COUNTER_LOAD.get_hash())
            .arg(5)
            .arg(self.redis.keys().counter(namespace, entity_id))
            .arg(self.redis.keys().counter_members(namespace, entity_id))
            .arg(&staged_members)
            .arg(self.redis.keys().counter_event_ids(namespace, entity_id))
            .arg(&staged_ids)
            .arg(row.value)
            .arg(row.version);
        for (partition, offset) in &row.applied_offsets {
            call.arg(partition).arg(offset);
        }
        call.ignore();
    }

    /// The value identifying "this Redis, since it was last found empty", created when
    /// Redis has none (a new or emptied Redis).
    pub async fn epoch(&self) -> Result<String, CounterStoreError> {
        let mut pipeline = redis::pipe();
        add_epoch_read(&mut pipeline, &self.redis.keys().counter_epoch());
        let (epoch,): (String,) = self.redis.pipeline(&pipeline).await?;
        Ok(epoch)
    }

    /// Forgets counters (after an epoch change: they may have been loaded into the emptied
    /// Redis with part of their events). On a Redis Cluster the pipeline is split per slot
    /// (a counter's three keys share its hash tag); each DEL is safe to repeat.
    pub async fn discard(&self, counters: &[(&str, &str)]) -> Result<(), CounterStoreError> {
        let mut pipeline = redis::pipe();
        for (namespace, entity_id) in counters {
            pipeline
                .del(self.redis.keys().counter(namespace, entity_id))
                .del(self.redis.keys().counter_members(namespace, entity_id))
                .del(self.redis.keys().counter_event_ids(namespace, entity_id));
        }
        self.redis.replicated().pipeline::<()>(&pipeline).await?;
        Ok(())
    }

    /// Reads the current state of dirty counters from Redis, for a flush. A counter Redis
    /// does not hold any more is [`CounterStoreError::Lost`]: its events since the last flush
    /// must be read again from Kafka, never flushed without them. On a Redis Cluster the
    /// pipeline is split per slot: a counter's HGETALL and SISMEMBERs share its hash tag, so
    /// they stay together and in order; reads of different counters need no order.
    pub async fn read_for_flush(
        &self,
        counters: &[CounterToFlush<'_>],
    ) -> Result<FlushBatch, CounterStoreError> {
        let mut pipeline = redis::pipe();
        for counter in counters {
            pipeline.hgetall(
                self.redis
                    .keys()
                    .counter(counter.namespace, counter.entity_id),
            );
            for member in counter.members {
                pipeline.sismember(
                    self.redis
                        .keys()
                        .counter_members(counter.namespace, counter.entity_id),
                    member,
                );
            }
        }
        let replies: Vec<redis::Value> = self.redis.pipeline(&pipeline).await?;
        let mut replies = replies.into_iter();
        let mut next = || -> redis::Value { replies.next().unwrap_or(redis::Value::Nil) };
        let mut batch = FlushBatch::default();
        for counter in counters {
            let fields: HashMap<String, i64> =
                redis::from_redis_value(next()).map_err(RedisError::Parse)?;
            let memberships: Vec<bool> = counter
                .members
                .iter()
                .map(|_| redis::from_redis_value(next()))
                .collect::<Result<_, _>>()
                .map_err(RedisError::Parse)?;
            if fields.is_empty() {
                return Err(CounterStoreError::Lost {
                    namespace: counter.namespace.to_owned(),
                    entity_id: counter.entity_id.to_owned(),
                });
            }
            batch
                .values
                .push(value_row(counter.namespace, counter.entity_id, &fields));
            if !counter.event_ids.is_empty() {
                batch.event_ids.push(EventIdsRow {
                    namespace: counter.namespace.to_owned(),
                    entity_id: counter.entity_id.to_owned(),
                    event_ids: counter.event_ids.to_vec(),
                });
            }
            for (member, is_member) in counter.members.iter().zip(memberships) {
                let row = MemberRow {
                    namespace: counter.namespace.to_owned(),
                    entity_id: counter.entity_id.to_owned(),
                    member: member.clone(),
                };
                if is_member {
                    batch.members_in.push(row);
                } else {
                    batch.members_out.push(row);
                }
            }
        }
        Ok(batch)
    }
}

/// A counter's hash fields as the row the database stores.
fn value_row(namespace: &str, entity_id: &str, fields: &HashMap<String, i64>) -> ValueRow {
    let applied_offsets: AppliedOffsets = fields
        .iter()
        .filter_map(|(field, offset)| {
            let partition = field.strip_prefix(OFFSET_FIELD_PREFIX)?.parse().ok()?;
            Some((partition, *offset))
        })
        .collect();
    ValueRow {
        namespace: namespace.to_owned(),
        entity_id: entity_id.to_owned(),
        value: fields.get(VALUE_FIELD).copied().unwrap_or(0),
        version: fields.get(VERSION_FIELD).copied().unwrap_or(0),
        applied_offsets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_replies_become_outcomes() {
        assert_eq!(outcome((0, 0, 0, 0, 0)), BatchOutcome::Missing);
        assert_eq!(outcome((2, 0, 0, 0, 0)), BatchOutcome::Split);
        assert_eq!(
            outcome((1, 5, 2, 1, 1)),
            BatchOutcome::Done(Applied {
                value: 5,
                applied: 2,
                replayed: 1,
                duplicates: 1
            })
        );
    }

    #[test]
    fn value_rows_carry_the_applied_offsets() {
        let fields: HashMap<String, i64> = [("v".into(), 3), ("ver".into(), 7), ("o:2".into(), 41)]
            .into_iter()
            .collect();
        let row = value_row("ns", "e", &fields);
        assert_eq!((row.value, row.version), (3, 7));
        assert_eq!(row.applied_offsets.get(&2), Some(&41));
    }

    #[test]
    fn the_hash_fields_are_the_ones_the_scripts_use() {
        let apply = include_str!("../../lua/counter_apply.lua");
        let load = include_str!("../../lua/counter_load.lua");
        for script in [apply, load] {
            assert!(script.contains(&format!("'{VALUE_FIELD}'")));
            assert!(script.contains(&format!("'{VERSION_FIELD}'")));
            assert!(script.contains(&format!("'{OFFSET_FIELD_PREFIX}'")));
        }
    }
}
