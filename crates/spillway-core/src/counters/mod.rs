//! Counter state shared by the counter service (which writes it) and the gateway (which reads
//! it): reading values from Redis with the database behind a miss, and loading a counter's
//! database row back into Redis after Redis lost it.

pub mod config;

use std::collections::{BTreeMap, HashMap};

use deadpool_redis::Pool;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

use crate::redis::{Keys, RedisError, scripts};

#[derive(Debug, thiserror::Error)]
pub enum CounterStateError {
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
}

impl From<redis::RedisError> for CounterStateError {
    fn from(error: redis::RedisError) -> Self {
        Self::Redis(RedisError::Command(error))
    }
}

impl From<deadpool_redis::PoolError> for CounterStateError {
    fn from(error: deadpool_redis::PoolError) -> Self {
        Self::Redis(RedisError::Pool(error))
    }
}

/// A counter as the database holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterRow {
    pub value: i64,
    pub version: i64,
    /// Partition -> the last offset of that partition the value includes.
    pub applied_offsets: BTreeMap<i32, i64>,
}

fn json_list(items: &[String]) -> sea_orm::Value {
    serde_json::Value::from(items.to_vec()).into()
}

/// The database rows of some counters of one namespace (absent ones are missing from the map).
pub async fn load_rows(
    db: &DatabaseConnection,
    namespace: &str,
    entity_ids: &[String],
) -> Result<HashMap<String, CounterRow>, sea_orm::DbErr> {
    let statement = Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT entity_id, value, version, applied_offsets::text AS applied_offsets \
         FROM counter_values \
         WHERE namespace = $1 AND entity_id IN (SELECT jsonb_array_elements_text($2::jsonb))",
        [namespace.into(), json_list(entity_ids)],
    );
    let mut rows = HashMap::with_capacity(entity_ids.len());
    for row in db.query_all_raw(statement).await? {
        let entity_id: String = row.try_get("", "entity_id")?;
        let offsets_text: String = row.try_get("", "applied_offsets")?;
        let offsets: BTreeMap<String, i64> =
            serde_json::from_str(&offsets_text).unwrap_or_default();
        let applied_offsets = offsets
            .into_iter()
            .filter_map(|(partition, offset)| Some((partition.parse().ok()?, offset)))
            .collect();
        rows.insert(
            entity_id,
            CounterRow {
                value: row.try_get("", "value")?,
                version: row.try_get("", "version")?,
                applied_offsets,
            },
        );
    }
    Ok(rows)
}

/// The members of some distinct counters of one namespace, as the database holds them.
pub async fn load_members(
    db: &DatabaseConnection,
    namespace: &str,
    entity_ids: &[String],
) -> Result<HashMap<String, Vec<String>>, sea_orm::DbErr> {
    let statement = Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT entity_id, member FROM counter_members \
         WHERE namespace = $1 AND entity_id IN (SELECT jsonb_array_elements_text($2::jsonb))",
        [namespace.into(), json_list(entity_ids)],
    );
    let mut members: HashMap<String, Vec<String>> = HashMap::new();
    for row in db.query_all_raw(statement).await? {
        members
            .entry(row.try_get("", "entity_id")?)
            .or_default()
            .push(row.try_get("", "member")?);
    }
    Ok(members)
}

/// A counter's value and whether `member` is counted, by the database in one query (the
/// fallback while Redis does not hold the counter). A counter never counted is 0.
pub async fn value_and_membership_in_db(
    db: &DatabaseConnection,
    namespace: &str,
    entity_id: &str,
    member: &str,
) -> Result<(i64, bool), sea_orm::DbErr> {
    let statement = Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT COALESCE((SELECT value FROM counter_values WHERE namespace = $1 AND entity_id = $2), 0) AS value, \
                EXISTS (SELECT 1 FROM counter_members WHERE namespace = $1 AND entity_id = $2 AND member = $3) AS member",
        [namespace.into(), entity_id.into(), member.into()],
    );
    match db.query_one_raw(statement).await? {
        Some(row) => Ok((row.try_get("", "value")?, row.try_get("", "member")?)),
        None => Ok((0, false)),
    }
}

/// Members added to Redis per SADD while loading a large set.
const MEMBER_LOAD_CHUNK: usize = 5_000;

/// Puts the database state of some counters of one namespace into Redis, for each one that
/// Redis does not hold already: two queries and one Redis pipeline, whatever the number.
/// Members are staged, then swapped in by `counter_load.lua` with the hash, atomically.
pub async fn load_into_redis(
    pool: &Pool,
    db: &DatabaseConnection,
    keys: &Keys,
    namespace: &str,
    entity_ids: &[String],
    distinct: bool,
) -> Result<(), CounterStateError> {
    let rows = load_rows(db, namespace, entity_ids).await?;
    let with_rows: Vec<String> = entity_ids
        .iter()
        .filter(|id| rows.contains_key(*id))
        .cloned()
        .collect();
    let members = if distinct && !with_rows.is_empty() {
        load_members(db, namespace, &with_rows).await?
    } else {
        HashMap::new()
    };
    let mut pipeline = redis::pipe();
    let default_row = CounterRow::default();
    for entity_id in entity_ids {
        let staging_key = format!("{}:load", keys.counter(namespace, entity_id));
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
            .arg(scripts::COUNTER_LOAD.get_hash())
            .arg(3)
            .arg(keys.counter(namespace, entity_id))
            .arg(keys.counter_members(namespace, entity_id))
            .arg(&staging_key)
            .arg(row.value)
            .arg(row.version);
        for (partition, offset) in &row.applied_offsets {
            command.arg(partition).arg(offset);
        }
        command.ignore();
    }
    let mut connection = pool.get().await?;
    crate::redis::query_with_scripts::<()>(&mut connection, &pipeline, &[&scripts::COUNTER_LOAD])
        .await?;
    Ok(())
}

/// Current values of some counters: Redis first; a counter Redis does not hold is read from
/// the database (never a wrong zero while Redis rebuilds); one never counted is 0.
pub async fn read_values(
    pool: &Pool,
    db: &DatabaseConnection,
    keys: &Keys,
    namespace: &str,
    entity_ids: &[String],
) -> Result<HashMap<String, i64>, CounterStateError> {
    let mut connection = pool.get().await?;
    let mut pipeline = redis::pipe();
    for entity_id in entity_ids {
        pipeline.hget(keys.counter(namespace, entity_id), "v");
    }
    let cached: Vec<Option<i64>> = pipeline.query_async(&mut connection).await?;
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
        let rows = load_rows(db, namespace, &missing).await?;
        for entity_id in missing {
            let value = rows.get(&entity_id).map_or(0, |row| row.value);
            values.insert(entity_id, value);
        }
    }
    Ok(values)
}
