//! `spillway-admin migrate`: creates `database.schema` when missing and applies every pending
//! migration, under the same advisory lock the services take, so it is safe to run while
//! older pods are still serving (a Helm pre-upgrade hook) or twice at once.

use anyhow::{Context, Result};
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
    tracing::info!(schema = %schema, "database migrations applied");
    Ok(())
}
