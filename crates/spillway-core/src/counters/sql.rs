//! The database side of counters: reading counters and their members back (the gateway's
//! fallback while Redis does not hold a counter, and the rebuild after Redis lost one), and
//! the write-behind, which writes the counters and members that changed in one transaction
//! of a few bulk statements (never one statement per row).
//!
//! A value is written only over an older version, and a mirror column of the user's table
//! is updated only for the counters whose value was written, so an older value never lands
//! over a newer one.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait};
use serde::Serialize;

use super::{
    AppliedOffsets,
    config::{MirrorSettings, NamespaceSettings},
};

/// Why a counter's database state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CounterSqlError {
    #[error("database: {0}")]
    Database(#[from] DbErr),
    /// A row whose stored state cannot be trusted: applying on top of it could count events
    /// twice, so that counter is not applied until an operator repairs the row.
    #[error(
        "counter {namespace}/{entity_id}: corrupt `applied_offsets` in counter_values: {reason}"
    )]
    CorruptRow {
        namespace: String,
        entity_id: String,
        reason: String,
    },
}

/// A counter as the database holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterRow {
    pub value: i64,
    pub version: i64,
    /// Partition -> the last offset of that partition the value includes.
    pub applied_offsets: AppliedOffsets,
}

fn json_list(items: &[String]) -> sea_orm::Value {
    serde_json::Value::from(items.to_vec()).into()
}

fn statement(sql: &str, values: impl IntoIterator<Item = sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// Reads `applied_offsets` as stored (`{"<partition>": offset}`); anything else is corrupt.
fn parse_applied_offsets(text: &str) -> Result<AppliedOffsets, String> {
    serde_json::from_str(text).map_err(|error| error.to_string())
}

/// The database rows of some counters of one namespace (absent ones are missing from the
/// map). A row whose applied offsets do not parse is an error, never read as "none": that
/// would apply every event again.
pub async fn load_rows(
    db: &impl ConnectionTrait,
    namespace: &str,
    entity_ids: &[String],
) -> Result<HashMap<String, CounterRow>, CounterSqlError> {
    let query = statement(
        "SELECT entity_id, value, version, applied_offsets::text AS applied_offsets \
         FROM counter_values \
         WHERE namespace = $1 AND entity_id IN (SELECT jsonb_array_elements_text($2::jsonb))",
        [namespace.into(), json_list(entity_ids)],
    );
    let mut rows = HashMap::with_capacity(entity_ids.len());
    for row in db.query_all_raw(query).await? {
        let entity_id: String = row.try_get("", "entity_id")?;
        let offsets_text: String = row.try_get("", "applied_offsets")?;
        let applied_offsets =
            parse_applied_offsets(&offsets_text).map_err(|reason| CounterSqlError::CorruptRow {
                namespace: namespace.to_owned(),
                entity_id: entity_id.clone(),
                reason,
            })?;
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

/// The values of some counters of one namespace (the gateway's reads while Redis does not
/// hold them); absent ones are missing from the map.
pub async fn load_values(
    db: &impl ConnectionTrait,
    namespace: &str,
    entity_ids: &[String],
) -> Result<HashMap<String, i64>, DbErr> {
    let query = statement(
        "SELECT entity_id, value FROM counter_values \
         WHERE namespace = $1 AND entity_id IN (SELECT jsonb_array_elements_text($2::jsonb))",
        [namespace.into(), json_list(entity_ids)],
    );
    let mut values = HashMap::with_capacity(entity_ids.len());
    for row in db.query_all_raw(query).await? {
        values.insert(row.try_get("", "entity_id")?, row.try_get("", "value")?);
    }
    Ok(values)
}

/// The members of some distinct counters of one namespace, as the database holds them.
pub async fn load_members(
    db: &impl ConnectionTrait,
    namespace: &str,
    entity_ids: &[String],
) -> Result<HashMap<String, Vec<String>>, DbErr> {
    let query = statement(
        "SELECT entity_id, member FROM counter_members \
         WHERE namespace = $1 AND entity_id IN (SELECT jsonb_array_elements_text($2::jsonb))",
        [namespace.into(), json_list(entity_ids)],
    );
    let mut members: HashMap<String, Vec<String>> = HashMap::new();
    for row in db.query_all_raw(query).await? {
        members
            .entry(row.try_get("", "entity_id")?)
            .or_default()
            .push(row.try_get("", "member")?);
    }
    Ok(members)
}

/// The event ids some counters of one namespace applied within the last `window`, with
/// when each was recorded (unix ms).
pub async fn load_recent_event_ids(
    db: &impl ConnectionTrait,
    namespace: &str,
    entity_ids: &[String],
    window: Duration,
) -> Result<HashMap<String, Vec<(i64, String)>>, DbErr> {
    let query = statement(
        "SELECT entity_id, (extract(epoch FROM recorded_at) * 1000)::bigint AS recorded_ms, \
                unnest(event_ids) AS event_id \
         FROM counter_recent_events \
         WHERE namespace = $1 AND entity_id IN (SELECT jsonb_array_elements_text($2::jsonb)) \
           AND recorded_at > now() - make_interval(secs => $3)",
        [
            namespace.into(),
            json_list(entity_ids),
            window.as_secs_f64().into(),
        ],
    );
    let mut ids: HashMap<String, Vec<(i64, String)>> = HashMap::new();
    for row in db.query_all_raw(query).await? {
        ids.entry(row.try_get("", "entity_id")?).or_default().push((
            row.try_get("", "recorded_ms")?,
            row.try_get("", "event_id")?,
        ));
    }
    Ok(ids)
}

/// Deletes the recorded event ids of a namespace older than its window; returns how many
/// rows went.
pub async fn forget_old_event_ids(
    db: &DatabaseConnection,
    namespace: &str,
    window: Duration,
) -> Result<u64, DbErr> {
    let deleted = db
        .execute_raw(statement(
            "DELETE FROM counter_recent_events \
             WHERE namespace = $1 AND recorded_at < now() - make_interval(secs => $2)",
            [namespace.into(), window.as_secs_f64().into()],
        ))
        .await?;
    Ok(deleted.rows_affected())
}

/// A counter's value and whether `member` is counted, by the database in one query (the
/// fallback while Redis does not hold the counter). A counter never counted is 0.
pub async fn value_and_membership(
    db: &DatabaseConnection,
    namespace: &str,
    entity_id: &str,
    member: &str,
) -> Result<(i64, bool), DbErr> {
    let query = statement(
        "SELECT COALESCE((SELECT value FROM counter_values WHERE namespace = $1 AND entity_id = $2), 0) AS value, \
                EXISTS (SELECT 1 FROM counter_members WHERE namespace = $1 AND entity_id = $2 AND member = $3) AS member",
        [namespace.into(), entity_id.into(), member.into()],
    );
    match db.query_one_raw(query).await? {
        Some(row) => Ok((row.try_get("", "value")?, row.try_get("", "member")?)),
        None => Ok((0, false)),
    }
}

/// A counter's state read from Redis, to be written.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ValueRow {
    pub namespace: String,
    pub entity_id: String,
    pub value: i64,
    pub version: i64,
    /// Stored as `{"<partition>": offset}`.
    pub applied_offsets: AppliedOffsets,
}

/// One member of one distinct counter.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemberRow {
    pub namespace: String,
    pub entity_id: String,
    pub member: String,
}

/// The event ids one counter applied since its last flush.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EventIdsRow {
    pub namespace: String,
    pub entity_id: String,
    pub event_ids: Vec<String>,
}

/// What one flush writes.
#[derive(Debug, Default)]
pub struct FlushBatch {
    pub values: Vec<ValueRow>,
    pub members_in: Vec<MemberRow>,
    pub members_out: Vec<MemberRow>,
    pub event_ids: Vec<EventIdsRow>,
}

const UPSERT_VALUES: &str = "\
WITH input AS (
    SELECT * FROM jsonb_to_recordset($1::jsonb)
        AS x(namespace text, entity_id text, value bigint, version bigint, applied_offsets jsonb)
)
INSERT INTO counter_values AS current (namespace, entity_id, value, version, applied_offsets, updated_at)
SELECT namespace, entity_id, value, version, applied_offsets, now() FROM input
ON CONFLICT (namespace, entity_id) DO UPDATE
    SET value = EXCLUDED.value, version = EXCLUDED.version,
        applied_offsets = EXCLUDED.applied_offsets, updated_at = now()
    WHERE current.version < EXCLUDED.version
RETURNING namespace, entity_id, value";

const INSERT_MEMBERS: &str = "\
INSERT INTO counter_members (namespace, entity_id, member)
SELECT namespace, entity_id, member FROM jsonb_to_recordset($1::jsonb)
    AS x(namespace text, entity_id text, member text)
ON CONFLICT DO NOTHING";

const DELETE_MEMBERS: &str = "\
DELETE FROM counter_members AS m
USING jsonb_to_recordset($1::jsonb) AS x(namespace text, entity_id text, member text)
WHERE m.namespace = x.namespace AND m.entity_id = x.entity_id AND m.member = x.member";

const INSERT_EVENT_IDS: &str = "\
INSERT INTO counter_recent_events (namespace, entity_id, event_ids)
SELECT x.namespace, x.entity_id, ARRAY(SELECT jsonb_array_elements_text(x.event_ids))
FROM jsonb_to_recordset($1::jsonb) AS x(namespace text, entity_id text, event_ids jsonb)";

fn json_param<T: Serialize>(rows: &[T]) -> sea_orm::Value {
    serde_json::to_value(rows).unwrap_or_default().into()
}

/// The mirror UPDATE for one namespace; identifiers were validated with the configuration.
fn mirror_sql(mirror: &MirrorSettings) -> String {
    format!(
        "UPDATE \"{table}\" AS t SET \"{column}\" = x.value \
         FROM jsonb_to_recordset($1::jsonb) AS x(entity_id text, value bigint) \
         WHERE t.\"{key}\" = x.entity_id::{key_type}",
        table = mirror.table,
        column = mirror.column,
        key = mirror.key_column,
        key_type = mirror.key_type,
    )
}

#[derive(Serialize)]
struct MirrorRow {
    entity_id: String,
    value: i64,
}

/// Writes one flush in one transaction: values (over older versions only), mirrors, members
/// and the flush's new event ids, so the database's dedupe state is as durable as its
/// values.
pub async fn write_flush(
    db: &DatabaseConnection,
    namespaces: &BTreeMap<String, NamespaceSettings>,
    batch: &FlushBatch,
) -> Result<(), DbErr> {
    let transaction = db.begin().await?;
    let written = if batch.values.is_empty() {
        Vec::new()
    } else {
        transaction
            .query_all_raw(statement(UPSERT_VALUES, [json_param(&batch.values)]))
            .await?
    };
    let mut mirrored: BTreeMap<String, Vec<MirrorRow>> = BTreeMap::new();
    for row in written {
        let namespace: String = row.try_get("", "namespace")?;
        if namespaces
            .get(&namespace)
            .is_some_and(|n| n.mirror.is_some())
        {
            mirrored.entry(namespace).or_default().push(MirrorRow {
                entity_id: row.try_get("", "entity_id")?,
                value: row.try_get("", "value")?,
            });
        }
    }
    for (namespace, rows) in &mirrored {
        if let Some(mirror) = namespaces.get(namespace).and_then(|n| n.mirror.as_ref()) {
            transaction
                .execute_raw(statement(&mirror_sql(mirror), [json_param(rows)]))
                .await?;
        }
    }
    if !batch.members_in.is_empty() {
        transaction
            .execute_raw(statement(INSERT_MEMBERS, [json_param(&batch.members_in)]))
            .await?;
    }
    if !batch.members_out.is_empty() {
        transaction
            .execute_raw(statement(DELETE_MEMBERS, [json_param(&batch.members_out)]))
            .await?;
    }
    if !batch.event_ids.is_empty() {
        transaction
            .execute_raw(statement(INSERT_EVENT_IDS, [json_param(&batch.event_ids)]))
            .await?;
    }
    transaction.commit().await
}

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(
        "configuration key `namespaces.{namespace}.mirror`: column {table}.{column} does not exist in the database schema"
    )]
    MissingColumn {
        namespace: String,
        table: String,
        column: String,
    },
    #[error("checking mirror tables: {0}")]
    Database(#[from] DbErr),
}

/// At start: every mirror's table and columns exist, so a flush cannot fail on them forever.
pub async fn check_mirrors(
    db: &DatabaseConnection,
    namespaces: &BTreeMap<String, NamespaceSettings>,
) -> Result<(), MirrorError> {
    for (name, namespace) in namespaces {
        let Some(mirror) = &namespace.mirror else {
            continue;
        };
        for column in [&mirror.column, &mirror.key_column] {
            if !crate::db::column_exists(db, &mirror.table, column).await? {
                return Err(MirrorError::MissingColumn {
                    namespace: name.clone(),
                    table: mirror.table.clone(),
                    column: column.clone(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirror_update_casts_the_entity_id_to_the_key_type() {
        let mirror = MirrorSettings {
            table: "videos".into(),
            column: "like_count".into(),
            key_column: "id".into(),
            key_type: "bigint".into(),
        };
        let sql = mirror_sql(&mirror);
        assert!(sql.starts_with("UPDATE \"videos\" AS t SET \"like_count\" = x.value"));
        assert!(sql.ends_with("WHERE t.\"id\" = x.entity_id::bigint"));
    }

    #[test]
    fn applied_offsets_are_stored_by_partition_and_a_bad_value_is_corrupt() {
        let offsets: AppliedOffsets = [(2, 41), (0, 7)].into_iter().collect();
        let text = serde_json::to_string(&offsets).unwrap();
        assert_eq!(text, r#"{"0":7,"2":41}"#);
        assert_eq!(parse_applied_offsets(&text).unwrap(), offsets);
        assert_eq!(parse_applied_offsets("{}").unwrap(), AppliedOffsets::new());
        assert!(parse_applied_offsets(r#"{"x":1}"#).is_err());
        assert!(parse_applied_offsets(r#"[1,2]"#).is_err());
        assert!(parse_applied_offsets("null").is_err());
    }
}
