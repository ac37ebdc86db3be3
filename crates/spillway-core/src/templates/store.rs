//! The template tables: `templates` and `template_objects` (what a template copies, per
//! version) and `template_copies` (the state of every copy). State changes are conditional
//! updates (`WHERE state = <from>`), so two parties racing on one copy never both win.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait};
use uuid::Uuid;

/// A template at its current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub id: String,
    pub version: i64,
    pub pool_capacity: i32,
    /// Source keys, in order.
    pub objects: Vec<String>,
}

/// What a registration changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// The template did not exist.
    Created,
    /// The object list changed: a new version, whose pool starts empty.
    NewVersion,
    /// Only the pool capacity changed.
    CapacityChanged,
    /// Nothing changed.
    Unchanged,
}

/// The states of a copy (see the module docs of [`super`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyState {
    Copying,
    Ready,
    Taken,
    Expired,
    Deleted,
}

impl CopyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Copying => "copying",
            Self::Ready => "ready",
            Self::Taken => "taken",
            Self::Expired => "expired",
            Self::Deleted => "deleted",
        }
    }

    /// The column that records when a copy entered this state.
    fn time_column(self) -> &'static str {
        match self {
            Self::Copying => "created_at",
            Self::Ready => "ready_at",
            Self::Taken => "taken_at",
            Self::Expired => "expired_at",
            Self::Deleted => "deleted_at",
        }
    }
}

/// Who made a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyOrigin {
    /// template-warmup, for the pool.
    Pool,
    /// The gateway, inside a request that found the pool empty.
    Direct,
}

impl CopyOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pool => "pool",
            Self::Direct => "direct",
        }
    }
}

/// A copy's row, as the sweeper reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRow {
    pub copy_id: Uuid,
    pub version: i64,
    /// When it entered its current state.
    pub since: DateTime<Utc>,
}

fn statement(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

fn json_list(items: &[String]) -> sea_orm::Value {
    serde_json::Value::from(items.to_vec()).into()
}

fn uuid_list(ids: &[Uuid]) -> sea_orm::Value {
    let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    json_list(&ids)
}

/// The template with its current objects, if it exists.
pub async fn load_template(db: &impl ConnectionTrait, id: &str) -> Result<Option<Template>, DbErr> {
    let row = db
        .query_one_raw(statement(
            "SELECT version, pool_capacity FROM templates WHERE id = $1",
            vec![id.into()],
        ))
        .await?;
    let Some(row) = row else { return Ok(None) };
    let version: i64 = row.try_get("", "version")?;
    Ok(Some(Template {
        id: id.to_owned(),
        version,
        pool_capacity: row.try_get("", "pool_capacity")?,
        objects: load_objects(db, id, version).await?,
    }))
}

/// The source keys of one version of a template, in order.
pub async fn load_objects(
    db: &impl ConnectionTrait,
    id: &str,
    version: i64,
) -> Result<Vec<String>, DbErr> {
    let rows = db
        .query_all_raw(statement(
            "SELECT source_key FROM template_objects \
             WHERE template_id = $1 AND version = $2 ORDER BY position",
            vec![id.into(), version.into()],
        ))
        .await?;
    rows.iter()
        .map(|row| row.try_get("", "source_key"))
        .collect()
}

/// Every template id with its version and capacity (objects not loaded).
pub async fn list_templates(db: &DatabaseConnection) -> Result<Vec<Template>, DbErr> {
    let rows = db
        .query_all_raw(statement(
            "SELECT id, version, pool_capacity FROM templates ORDER BY id",
            vec![],
        ))
        .await?;
    rows.iter()
        .map(|row| {
            Ok(Template {
                id: row.try_get("", "id")?,
                version: row.try_get("", "version")?,
                pool_capacity: row.try_get("", "pool_capacity")?,
                objects: Vec::new(),
            })
        })
        .collect()
}

/// Creates or updates a template in one transaction; a changed object list is a new version.
pub async fn register(
    db: &DatabaseConnection,
    id: &str,
    objects: &[String],
    pool_capacity: i32,
) -> Result<(Template, Registration), DbErr> {
    let transaction = db.begin().await?;
    let current = transaction
        .query_one_raw(statement(
            "SELECT version, pool_capacity FROM templates WHERE id = $1 FOR UPDATE",
            vec![id.into()],
        ))
        .await?;
    let (version, registration) = match current {
        None => {
            transaction
                .execute_raw(statement(
                    "INSERT INTO templates (id, version, pool_capacity) VALUES ($1, 1, $2)",
                    vec![id.into(), pool_capacity.into()],
                ))
                .await?;
            (1, Registration::Created)
        }
        Some(row) => {
            let version: i64 = row.try_get("", "version")?;
            let capacity: i32 = row.try_get("", "pool_capacity")?;
            let same_objects = load_objects(&transaction, id, version).await? == objects;
            let (version, registration) = match (same_objects, capacity == pool_capacity) {
                (true, true) => (version, Registration::Unchanged),
                (true, false) => (version, Registration::CapacityChanged),
                (false, _) => (version + 1, Registration::NewVersion),
            };
            transaction
                .execute_raw(statement(
                    "UPDATE templates SET version = $2, pool_capacity = $3, updated_at = now() \
                     WHERE id = $1",
                    vec![id.into(), version.into(), pool_capacity.into()],
                ))
                .await?;
            (version, registration)
        }
    };
    if matches!(
        registration,
        Registration::Created | Registration::NewVersion
    ) {
        transaction
            .execute_raw(statement(
                "INSERT INTO template_objects (template_id, version, position, source_key) \
                 SELECT $1, $2, (ordinality - 1)::int, key \
                 FROM jsonb_array_elements_text($3::jsonb) WITH ORDINALITY AS o(key, ordinality)",
                vec![id.into(), version.into(), json_list(objects)],
            ))
            .await?;
    }
    transaction.commit().await?;
    let template = Template {
        id: id.to_owned(),
        version,
        pool_capacity,
        objects: objects.to_vec(),
    };
    Ok((template, registration))
}

/// Records a copy before its first S3 call.
pub async fn insert_copy(
    db: &DatabaseConnection,
    copy_id: Uuid,
    template: &Template,
    origin: CopyOrigin,
) -> Result<(), DbErr> {
    db.execute_raw(statement(
        "INSERT INTO template_copies (copy_id, template_id, version, state, origin) \
         VALUES ($1, $2, $3, 'copying', $4)",
        vec![
            copy_id.into(),
            template.id.clone().into(),
            template.version.into(),
            origin.as_str().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Moves the copies that are in `from` to `to` (with `reason` when given); returns the ids
/// that moved. Copies in another state are left alone.
pub async fn transition(
    db: &DatabaseConnection,
    copy_ids: &[Uuid],
    from: CopyState,
    to: CopyState,
    reason: Option<&str>,
) -> Result<Vec<Uuid>, DbErr> {
    if copy_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "UPDATE template_copies SET state = $3, {time} = now(), reason = COALESCE($4, reason) \
         WHERE state = $2 AND copy_id IN (SELECT value::uuid FROM jsonb_array_elements_text($1::jsonb)) \
         RETURNING copy_id",
        time = to.time_column()
    );
    let rows = db
        .query_all_raw(statement(
            &sql,
            vec![
                uuid_list(copy_ids),
                from.as_str().into(),
                to.as_str().into(),
                reason.map(str::to_owned).into(),
            ],
        ))
        .await?;
    rows.iter().map(|row| row.try_get("", "copy_id")).collect()
}

/// The copies of a template in `state` that entered it at least `older_than` ago.
pub async fn copies_in_state(
    db: &DatabaseConnection,
    template_id: &str,
    state: CopyState,
    older_than: Duration,
) -> Result<Vec<CopyRow>, DbErr> {
    let sql = format!(
        "SELECT copy_id, version, {time} AS since FROM template_copies \
         WHERE template_id = $1 AND state = $2 \
           AND {time} <= now() - make_interval(secs => $3) \
         ORDER BY {time}",
        time = state.time_column()
    );
    let rows = db
        .query_all_raw(statement(
            &sql,
            vec![
                template_id.into(),
                state.as_str().into(),
                older_than.as_secs_f64().into(),
            ],
        ))
        .await?;
    rows.iter()
        .map(|row| {
            Ok(CopyRow {
                copy_id: row.try_get("", "copy_id")?,
                version: row.try_get("", "version")?,
                since: row.try_get("", "since")?,
            })
        })
        .collect()
}

/// A copy's state, version and readiness time, by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyInfo {
    pub copy_id: Uuid,
    pub version: i64,
    pub state: String,
    pub ready_at: Option<DateTime<Utc>>,
}

/// The rows of some copies (absent ids are missing from the answer).
pub async fn copy_infos(
    db: &DatabaseConnection,
    copy_ids: &[Uuid],
) -> Result<Vec<CopyInfo>, DbErr> {
    if copy_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = db
        .query_all_raw(statement(
            "SELECT copy_id, version, state, ready_at FROM template_copies \
             WHERE copy_id IN (SELECT value::uuid FROM jsonb_array_elements_text($1::jsonb))",
            vec![uuid_list(copy_ids)],
        ))
        .await?;
    rows.iter()
        .map(|row| {
            Ok(CopyInfo {
                copy_id: row.try_get("", "copy_id")?,
                version: row.try_get("", "version")?,
                state: row.try_get("", "state")?,
                ready_at: row.try_get("", "ready_at")?,
            })
        })
        .collect()
}

/// Copies of a template made for its pool that are still being copied and were started
/// within `window` (older ones are abandoned, whatever their row says).
pub async fn count_pool_copies_in_progress(
    db: &DatabaseConnection,
    template_id: &str,
    window: Duration,
) -> Result<i64, DbErr> {
    let row = db
        .query_one_raw(statement(
            "SELECT count(*) AS n FROM template_copies \
             WHERE template_id = $1 AND state = 'copying' AND origin = 'pool' \
               AND created_at > now() - make_interval(secs => $2)",
            vec![template_id.into(), window.as_secs_f64().into()],
        ))
        .await?;
    match row {
        Some(row) => row.try_get("", "n"),
        None => Ok(0),
    }
}
