//! The sink tables: spillway creates the ones it owns (`CREATE TABLE IF NOT EXISTS`, in the
//! configured schema) and checks at start that the others exist with every configured column.

use std::collections::BTreeMap;

use sea_orm::{ConnectionTrait, DatabaseConnection};
use spillway_core::sinks::SinkSettings;

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("configuration key `sinks.{sink}`: column {table}.{column} does not exist")]
    MissingColumn {
        sink: String,
        table: String,
        column: String,
    },
    #[error("preparing sink tables: {0}")]
    Database(#[from] sea_orm::DbErr),
}

pub async fn prepare(
    db: &DatabaseConnection,
    sinks: &BTreeMap<String, SinkSettings>,
) -> Result<(), TableError> {
    for (name, sink) in sinks {
        if sink.owned {
            db.execute_unprepared(&sink.create_table_sql()).await?;
        }
        for column in sink.columns.keys() {
            if !spillway_core::db::column_exists(db, &sink.table, column).await? {
                return Err(TableError::MissingColumn {
                    sink: name.clone(),
                    table: sink.table.clone(),
                    column: column.clone(),
                });
            }
        }
    }
    Ok(())
}
