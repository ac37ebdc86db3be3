//! `spillway-admin migrate`: everything that changes the database's schema, in one place and
//! with the one role allowed to: creates `database.schema` when missing, applies every pending
//! migration (under the advisory lock the services take, so it is safe beside older pods
//! during a Helm pre-upgrade hook, or twice at once), then creates the tables of the sinks
//! spillway owns (`sinks.<name>.owned`, `CREATE TABLE IF NOT EXISTS`). The services then need
//! DML rights only.

use anyhow::{Context, Result};
use sea_orm::ConnectionTrait;
use spillway_core::{config::Settings, db, telemetry};

pub async fn run() -> Result<()> {
    let settings = Settings::load()?;
    telemetry::init(&settings.log);
    let schema = &settings.database.schema;
    let connection = db::connect(&settings.database)
        .await
        .context("connecting to the database (database.url)")?;
    db::migrate(&connection, schema)
        .await
        .with_context(|| format!("migrating schema `{schema}`"))?;
    let mut owned_tables = 0;
    for (name, sink) in settings.sinks.iter().filter(|(_, sink)| sink.owned) {
        connection
            .execute_unprepared(&sink.create_table_sql())
            .await
            .with_context(|| format!("creating the table of sink `{name}` ({})", sink.table))?;
        owned_tables += 1;
    }
    tracing::info!(schema = %schema, owned_tables, "database migrations applied");
    Ok(())
}
