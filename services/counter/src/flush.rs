//! The write-behind: counters and distinct members that changed are written to PostgreSQL in
//! one transaction of a few bulk statements (never one statement per row). A value is written
//! only over an older version, and a mirror column of the user's table is updated only for
//! the counters whose value was written, so an older value never lands over a newer one.

use std::collections::BTreeMap;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use serde::Serialize;
use spillway_core::counters::config::{MirrorSettings, NamespaceSettings};

/// A counter's state read from Redis, to be written.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ValueRow {
    pub namespace: String,
    pub entity_id: String,
    pub value: i64,
    pub version: i64,
    /// `{"<partition>": offset}`
    pub applied_offsets: BTreeMap<String, i64>,
}

/// One member of one distinct counter.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemberRow {
    pub namespace: String,
    pub entity_id: String,
    pub member: String,
}

/// What one flush writes.
#[derive(Debug, Default)]
pub struct FlushBatch {
    pub values: Vec<ValueRow>,
    pub members_in: Vec<MemberRow>,
    pub members_out: Vec<MemberRow>,
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

/// Writes one flush in one transaction.
pub async fn write(
    db: &DatabaseConnection,
    namespaces: &BTreeMap<String, NamespaceSettings>,
    batch: &FlushBatch,
) -> Result<(), sea_orm::DbErr> {
    let transaction = db.begin().await?;
    let statement =
        |sql: &str, param| Statement::from_sql_and_values(DbBackend::Postgres, sql, [param]);
    let written = if batch.values.is_empty() {
        Vec::new()
    } else {
        transaction
            .query_all_raw(statement(UPSERT_VALUES, json_param(&batch.values)))
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
                .execute_raw(statement(&mirror_sql(mirror), json_param(rows)))
                .await?;
        }
    }
    if !batch.members_in.is_empty() {
        transaction
            .execute_raw(statement(INSERT_MEMBERS, json_param(&batch.members_in)))
            .await?;
    }
    if !batch.members_out.is_empty() {
        transaction
            .execute_raw(statement(DELETE_MEMBERS, json_param(&batch.members_out)))
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
    Database(#[from] sea_orm::DbErr),
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
            if !spillway_core::db::column_exists(db, &mirror.table, column).await? {
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
}
