//! `spillway-admin migrate`: everything that changes the database's schema, in one place and
//! with the one role allowed to: creates `database.schema` when missing, applies every pending
//! migration (under the advisory lock, so it is safe beside older pods during a Helm
//! pre-upgrade hook, or twice at once), then creates the tables of the sinks spillway owns
//! (`sinks.<name>.owned`, `CREATE TABLE IF NOT EXISTS`). The services then need DML rights
//! only; they check at start that the schema is at their version. The work itself is
//! `spillway_core::db::migrate_all`, which the tests and the local stack run too.

use anyhow::{Context, Result};
use spillway_core::{config::Settings, db, telemetry};

pub async fn run() -> Result<()> {
    let settings = Settings::load()?;
    telemetry::init(&settings.log);
    let schema = &settings.database.schema;
    let migrated = db::migrate_all(&settings)
        .await
        .with_context(|| format!("migrating schema `{schema}` (database.url)"))?;
    tracing::info!(
        schema = %schema,
        owned_tables = migrated.owned_tables,
        "database migrations applied"
    );
    Ok(())
}
