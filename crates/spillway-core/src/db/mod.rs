//! The database (PostgreSQL first) through sea-orm: the connection pool on the configured
//! schema, and spillway's own tables.
//!
//! Schema changes are not the services' business: [`migrate_all`] (what `spillway-admin
//! migrate` runs, with a role that may change the schema) applies the migrations under an
//! advisory lock and creates the tables of owned sinks. A service only checks at start that
//! the schema is at the version it was built for ([`check_schema`]), so it needs DML rights
//! only.

pub mod migrations;

use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
    TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

use crate::config::{DatabaseSettings, Settings};

pub use sea_orm::DatabaseConnection as Db;

/// Key of the advisory lock that serialises migrations across processes.
const MIGRATION_LOCK_KEY: i64 = 0x5350_494c_4c57_4159; // "SPILLWAY"

/// The command that migrates a schema, named in every error that asks for it.
pub const MIGRATE_COMMAND: &str = "spillway-admin migrate";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sea(#[from] sea_orm::DbErr),
    #[error(
        "database schema `{schema}` is not migrated: {missing} missing; run \
         `{MIGRATE_COMMAND}` (with the migration role) before starting the services"
    )]
    NotMigrated { schema: String, missing: String },
    #[error(
        "configuration key `sinks.{sink}`: the owned table `{table}` does not exist in schema \
         `{schema}`; run `{MIGRATE_COMMAND}` (it creates the tables of owned sinks)"
    )]
    MissingOwnedTable {
        sink: String,
        table: String,
        schema: String,
    },
}

/// Connects to the configured database with `search_path` set to the configured schema.
pub async fn connect(settings: &DatabaseSettings) -> Result<DatabaseConnection, DbError> {
    let mut options = ConnectOptions::new(settings.url.expose());
    options
        .max_connections(settings.max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .set_schema_search_path(settings.schema.clone())
        .sqlx_logging(false);
    Ok(Database::connect(options).await?)
}

/// What [`migrate_all`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// Owned sink tables created or found.
    pub owned_tables: usize,
}

/// Everything that changes the schema, in one place: connects with `settings.database`,
/// creates the schema when missing, applies every pending migration, then creates the tables
/// of owned sinks (`CREATE TABLE IF NOT EXISTS`). `spillway-admin migrate` runs it, and the
/// tests and the local stack before they start a service.
pub async fn migrate_all(settings: &Settings) -> Result<Migrated, DbError> {
    let connection = connect(&settings.database).await?;
    migrate(&connection, &settings.database.schema).await?;
    let mut owned_tables = 0;
    for sink in settings.sinks.values().filter(|sink| sink.owned) {
        connection
            .execute_unprepared(&sink.create_table_sql())
            .await?;
        owned_tables += 1;
    }
    connection.close().await?;
    Ok(Migrated { owned_tables })
}

/// The migrations this build expects, in order.
pub fn expected_migrations() -> Vec<String> {
    migrations::Migrator::migrations()
        .iter()
        .map(|migration| migration.name().to_owned())
        .collect()
}

/// The start-up check of every service: the schema holds every migration this build expects
/// (a newer schema is fine: migrations only add, so older pods run beside it during an
/// upgrade). Reads only; never creates the migration table.
pub async fn check_schema(db: &DatabaseConnection, schema: &str) -> Result<(), DbError> {
    let applied = applied_migrations(db).await?;
    let missing: Vec<String> = expected_migrations()
        .into_iter()
        .filter(|name| !applied.contains(name))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let missing = if applied.is_empty() {
        "every migration".to_owned()
    } else {
        missing.join(", ")
    };
    Err(DbError::NotMigrated {
        schema: schema.to_owned(),
        missing,
    })
}

/// The names of the migrations applied to the connection's schema (none when it has no
/// migration table).
async fn applied_migrations(db: &DatabaseConnection) -> Result<Vec<String>, DbError> {
    let table = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT to_regclass('seaql_migrations')::text AS found",
        ))
        .await?
        .and_then(|row| row.try_get::<Option<String>>("", "found").ok().flatten());
    if table.is_none() {
        return Ok(Vec::new());
    }
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT version FROM seaql_migrations",
        ))
        .await?;
    Ok(rows
        .iter()
        .filter_map(|row| row.try_get::<String>("", "version").ok())
        .collect())
}

/// Whether `table` exists in the connection's schema.
pub async fn table_exists(db: &DatabaseConnection, table: &str) -> Result<bool, sea_orm::DbErr> {
    let statement = Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT 1 AS found FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_name = $1",
        [table.into()],
    );
    Ok(db.query_one_raw(statement).await?.is_some())
}

/// Creates the schema if needed and applies every pending migration, one process at a time.
pub async fn migrate(db: &DatabaseConnection, schema: &str) -> Result<(), DbError> {
    crate::config::identifier("database.schema", schema)
        .map_err(|error| sea_orm::DbErr::Custom(error.to_string()))?;
    let transaction = db.begin().await?;
    transaction
        .execute_unprepared(&format!(
            "SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
        ))
        .await?;
    transaction
        .execute_unprepared(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .await?;
    migrations::Migrator::up(&transaction, None).await?;
    transaction.commit().await?;
    Ok(())
}

/// Whether `table.column` exists in the connection's schema (start-up checks of tables
/// spillway writes into but does not own).
pub async fn column_exists(
    db: &DatabaseConnection,
    table: &str,
    column: &str,
) -> Result<bool, sea_orm::DbErr> {
    let statement = Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT 1 AS found FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2",
        [table.into(), column.into()],
    );
    Ok(db.query_one_raw(statement).await?.is_some())
}

/// Readiness: `SELECT 1` answered.
pub async fn check(db: &DatabaseConnection) -> Result<(), String> {
    db.execute_unprepared("SELECT 1")
        .await
        .map(|_| ())
        .map_err(|error| error.to_string())
}
