//! spillway's own tables, as plain PostgreSQL DDL run by sea-orm-migration. A new table or
//! column is a new migration appended to [`Migrator::migrations`]; applied ones never change.

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CounterTables),
            Box::new(TemplateTables),
            Box::new(CounterRecentEvents),
        ]
    }
}

/// Runs each statement of a SQL script (statements end with `;` at a line end).
async fn run_script(manager: &SchemaManager<'_>, script: &str) -> Result<(), DbErr> {
    let connection = manager.get_connection();
    for statement in script.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
        connection.execute_unprepared(statement).await?;
    }
    Ok(())
}

/// `counter_values` (the write-behind copy of every counter) and `counter_members` (who is
/// counted in a distinct counter), from which Redis can be rebuilt.
struct CounterTables;

impl MigrationName for CounterTables {
    fn name(&self) -> &str {
        "m0001_counter_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CounterTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            include_str!("../../sql/m0001_counter_tables.up.sql"),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "DROP TABLE counter_members;\nDROP TABLE counter_values;\n",
        )
        .await
    }
}

/// `templates` and `template_objects` (what a template copies) and `template_copies` (every
/// copy from its first S3 call to its deletion or hand-out).
struct TemplateTables;

impl MigrationName for TemplateTables {
    fn name(&self) -> &str {
        "m0002_template_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for TemplateTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            include_str!("../../sql/m0002_template_tables.up.sql"),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "DROP TABLE template_copies;\nDROP TABLE template_objects;\nDROP TABLE templates;\n",
        )
        .await
    }
}

/// `counter_recent_events`: the event ids each counter applied within its dedupe window, so
/// the dedupe survives the loss of Redis.
struct CounterRecentEvents;

impl MigrationName for CounterRecentEvents {
    fn name(&self) -> &str {
        "m0003_counter_recent_events"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CounterRecentEvents {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            include_str!("../../sql/m0003_counter_recent_events.up.sql"),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, "DROP TABLE counter_recent_events;\n").await
    }
}
