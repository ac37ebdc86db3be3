//! The database (PostgreSQL first) through sea-orm: the connection pool on the configured
//! schema, and spillway's own tables, migrated at start under an advisory lock so several
//! services starting at once do not race.

pub mod migrations;

use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
    TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

use crate::config::DatabaseSettings;

pub use sea_orm::DatabaseConnection as Db;

/// Key of the advisory lock that serialises migrations across processes.
const MIGRATION_LOCK_KEY: i64 = 0x5350_494c_4c57_4159; // "SPILLWAY"

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sea(#[from] sea_orm::DbErr),
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
