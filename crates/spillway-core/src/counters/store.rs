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

use deadpool_redis::{Connection, Pool};
use sea_orm::DatabaseConnection;

use super::{
    AppliedOffsets,
    sql::{self, CounterRow, CounterSqlError, FlushBatch, MemberRow, ValueRow},
};
use crate::redis::{Keys, RedisError, query_with_scripts, with_timeout};

/// The counter's value.
pub const VALUE_FIELD: &str = "v";
/// Increases with every applied event; the database never takes a lower one.
pub const VERSION_FIELD: &str = "ver";
/// `o:<partition>`: the last offset of that partition the value includes.
pub const OFFSET_FIELD_PREFIX: &str = "o:";

/// Members added to Redis per SADD while loading a large set.
const MEMBER_LOAD_CHUNK: usize = 5_000;

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
}

impl From<sea_orm::DbErr> for CounterStoreError {
    fn from(error: sea_orm::DbErr) -> Self {
        Self::Sql(CounterSqlError::Database(error))
    }
}

/// One event, ready for the apply script.
#[derive(Debug, Clone)]
pub struct ApplyCommand {
    pub namespace: String,
    pub entity_id: String,
    pub partition: i32,
    pub offset: i64,
    pub operation: Operation,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    AddMember(String),
    RemoveMember(String),
    Increment(i64),
}

impl Operation {
    fn script_args(&self) -> (&'static str, &str, i64) {
        match self {
            Operation::AddMember(member) => ("add", member, 0),
            Operation::RemoveMember(member) => ("remove", member, 0),
            Operation::Increment(delta) => ("incr", "", *delta),
        }
    }

    pub fn member(&self) -> Option<&str> {
        match self {
            Operation::AddMember(member) | Operation::RemoveMember(member) => Some(member),
            Operation::Increment(_) => None,
        }
    }
}

/// What the apply script did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyStatus {
    /// Redis does not hold this counter: load it from the database, then apply again.
    Missing,
    /// Applied now; the value after it.
    Applied(i64),
    /// Applied before (a replay); nothing changed.
    Replayed(i64),
}

fn status(code: i64, value: i64) -> ApplyStatus {
    match code {
        0 => ApplyStatus::Missing,
        1 => ApplyStatus::Applied(value),
        _ => ApplyStatus::Replayed(value),
    }
}

/// A dirty counter to read for a flush, with the members whose membership changed.
#[derive(Debug, Clone)]
pub struct CounterToFlush<'a> {
    pub namespace: &'a str,
    pub entity_id: &'a str,
    pub members: &'a BTreeSet<String>,
}

/// Counters in Redis, the database behind them.
#[derive(Clone)]
pub struct CounterStore {
    redis: Pool,
    db: DatabaseConnection,
    keys: Keys,
    timeout: Duration,
}

impl CounterStore {
    pub fn new(redis: Pool, db: DatabaseConnection, keys: Keys, timeout: Duration) -> Self {
        Self {
            redis,
            db,
            keys,
            timeout,
        }
    }

    pub fn database(&self) -> &DatabaseConnection {
        &self.db
    }

    async fn connection(&self) -> Result<Connection, RedisError> {
        with_timeout(self.timeout, self.redis.get()).await
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
        pipeline.hget(self.keys.counter(namespace, entity_id), VALUE_FIELD);
        pipeline.sismember(
            self.keys.counter_members(namespace, entity_id),
            member.unwrap_or(""),
        );
        let mut connection = self.connection().await?;
        let (value, is_member): (Option<i64>, bool) =
            with_timeout(self.timeout, pipeline.query_async(&mut connection)).await?;
        drop(connection);
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
    /// ones Redis does not hold; one never counted is 0.
    pub async fn read_values(
        &self,
        namespace: &str,
        entity_ids: &[String],
    ) -> Result<HashMap<String, i64>, CounterStoreError> {
        let mut pipeline = redis::pipe();
        for entity_id in entity_ids {
            pipeline.hget(self.keys.counter(namespace, entity_id), VALUE_FIELD);
        }
        let mut connection = self.connection().await?;
        let cached: Vec<Option<i64>> =
            with_timeout(self.timeout, pipeline.query_async(&mut connection)).await?;
        drop(connection);
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

    /// Claims an Idempotency-Key of one counter; false when an earlier request with it was
    /// accepted.
    pub async fn claim_idempotency_key(
        &self,
        namespace: &str,
        entity_id: &str,
        key: &str,
        ttl: Duration,
    ) -> Result<bool, CounterStoreError> {
        let mut connection = self.connection().await?;
        let claimed: Option<String> = with_timeout(
            self.timeout,
            redis::cmd("SET")
                .arg(self.keys.counter_idempotency(namespace, entity_id, key))
                .arg("accepted")
                .arg("NX")
                .arg("EX")
                .arg(ttl.as_secs())
                .query_async(&mut connection),
        )
        .await?;
        Ok(claimed.is_some())
    }

    /// Frees a key whose request was not accepted (Kafka refused it), so a retry counts.
    pub async fn release_idempotency_key(
        &self,
        namespace: &str,
        entity_id: &str,
        key: &str,
    ) -> Result<(), CounterStoreError> {
        let mut connection = self.connection().await?;
        with_timeout(
            self.timeout,
            redis::cmd("DEL")
                .arg(self.keys.counter_idempotency(namespace, entity_id, key))
                .query_async::<i64>(&mut connection),
        )
        .await?;
        Ok(())
    }

    /// Applies the commands in order, in one pipeline; counters Redis does not hold come
    /// back [`ApplyStatus::Missing`]. A Redis that lost the script (restarted) gets it
    /// loaded again and the pipeline re-sent: replays change nothing.
    pub async fn apply(
        &self,
        commands: &[&ApplyCommand],
    ) -> Result<Vec<ApplyStatus>, CounterStoreError> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.apply_pipeline(commands);
        let mut connection = self.connection().await?;
        let replies: Vec<(i64, i64)> = with_timeout(
            self.timeout,
            query_with_scripts(&mut connection, &pipeline, &[&COUNTER_APPLY]),
        )
        .await?;
        Ok(replies
            .into_iter()
            .map(|(code, value)| status(code, value))
            .collect())
    }

    fn apply_pipeline(&self, commands: &[&ApplyCommand]) -> redis::Pipeline {
        let mut pipeline = redis::pipe();
        for command in commands {
            let (operation, member, delta) = command.operation.script_args();
            pipeline
                .cmd("EVALSHA")
                .arg(COUNTER_APPLY.get_hash())
                .arg(2)
                .arg(self.keys.counter(&command.namespace, &command.entity_id))
                .arg(
                    self.keys
                        .counter_members(&command.namespace, &command.entity_id),
                )
                .arg(command.partition)
                .arg(command.offset)
                .arg(operation)
                .arg(member)
                .arg(delta);
        }
        pipeline
    }

    /// Puts the database state of some counters of one namespace into Redis, for each one
    /// that Redis does not hold already: two queries and one Redis pipeline, whatever the
    /// number. Members are staged, then swapped in by `counter_load.lua` with the hash,
    /// atomically.
    pub async fn load(
        &self,
        namespace: &str,
        entity_ids: &[String],
        distinct: bool,
    ) -> Result<(), CounterStoreError> {
        let rows = sql::load_rows(&self.db, namespace, entity_ids).await?;
        let with_rows: Vec<String> = entity_ids
            .iter()
            .filter(|id| rows.contains_key(*id))
            .cloned()
            .collect();
        let members = if distinct && !with_rows.is_empty() {
            sql::load_members(&self.db, namespace, &with_rows).await?
        } else {
            HashMap::new()
        };
        let mut pipeline = redis::pipe();
        let default_row = CounterRow::default();
        for entity_id in entity_ids {
            let staging_key = format!("{}:load", self.keys.counter(namespace, entity_id));
            for chunk in members
                .get(entity_id)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .chunks(MEMBER_LOAD_CHUNK)
            {
                pipeline.sadd(&staging_key, chunk).ignore();
            }
            let row = rows.get(entity_id).unwrap_or(&default_row);
            let command = pipeline
                .cmd("EVALSHA")
                .arg(COUNTER_LOAD.get_hash())
                .arg(3)
                .arg(self.keys.counter(namespace, entity_id))
                .arg(self.keys.counter_members(namespace, entity_id))
                .arg(&staging_key)
                .arg(row.value)
                .arg(row.version);
            for (partition, offset) in &row.applied_offsets {
                command.arg(partition).arg(offset);
            }
            command.ignore();
        }
        let mut connection = self.connection().await?;
        with_timeout(
            self.timeout,
            query_with_scripts::<()>(&mut connection, &pipeline, &[&COUNTER_LOAD]),
        )
        .await?;
        Ok(())
    }

    /// The value identifying "this Redis, since it was last found empty", created when
    /// Redis has none (a new or emptied Redis).
    pub async fn epoch(&self) -> Result<String, CounterStoreError> {
        let key = self.keys.counter_epoch();
        let fresh = uuid::Uuid::new_v4().to_string();
        let mut connection = self.connection().await?;
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("SET")
            .arg(&key)
            .arg(&fresh)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(&key);
        let (epoch,): (String,) =
            with_timeout(self.timeout, pipeline.query_async(&mut connection)).await?;
        Ok(epoch)
    }

    /// Forgets counters (after an epoch change: they may have been loaded into the emptied
    /// Redis with part of their events).
    pub async fn discard(&self, counters: &[(&str, &str)]) -> Result<(), CounterStoreError> {
        let mut pipeline = redis::pipe();
        for (namespace, entity_id) in counters {
            pipeline
                .del(self.keys.counter(namespace, entity_id))
                .del(self.keys.counter_members(namespace, entity_id));
        }
        let mut connection = self.connection().await?;
        with_timeout(self.timeout, pipeline.query_async::<()>(&mut connection)).await?;
        Ok(())
    }

    /// Reads the current state of dirty counters from Redis, for a flush. Counters Redis
    /// does not hold (emptied) are left out: the rewind rebuilds them.
    pub async fn read_for_flush(
        &self,
        counters: &[CounterToFlush<'_>],
    ) -> Result<FlushBatch, CounterStoreError> {
        let mut pipeline = redis::pipe();
        for counter in counters {
            pipeline.hgetall(self.keys.counter(counter.namespace, counter.entity_id));
            for member in counter.members {
                pipeline.sismember(
                    self.keys
                        .counter_members(counter.namespace, counter.entity_id),
                    member,
                );
            }
        }
        let mut connection = self.connection().await?;
        let replies: Vec<redis::Value> =
            with_timeout(self.timeout, pipeline.query_async(&mut connection)).await?;
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
                continue;
            }
            batch
                .values
                .push(value_row(counter.namespace, counter.entity_id, &fields));
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
    fn script_arguments_say_what_to_do() {
        assert_eq!(
            Operation::AddMember("a".into()).script_args(),
            ("add", "a", 0)
        );
        assert_eq!(
            Operation::RemoveMember("a".into()).script_args(),
            ("remove", "a", 0)
        );
        assert_eq!(Operation::Increment(7).script_args(), ("incr", "", 7));
        assert_eq!(status(0, 0), ApplyStatus::Missing);
        assert_eq!(status(1, 5), ApplyStatus::Applied(5));
        assert_eq!(status(2, 5), ApplyStatus::Replayed(5));
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
