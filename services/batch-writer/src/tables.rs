//! The sink tables, checked at start: an owned table must exist (`spillway-admin migrate`
//! creates it; the batch-writer has DML rights only), and every table must have every
//! configured column.

use std::collections::BTreeMap;

use sea_orm::DatabaseConnection;
use spillway_core::{db::DbError, sinks::SinkSettings};

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("configuration key `sinks.{sink}`: column {table}.{column} does not exist")]
    MissingColumn {
        sink: String,
        table: String,
        column: String,
    },
    #[error(transparent)]
    NotMigrated(#[from] DbError),
    #[error("checking sink tables: {0}")]
    Database(#[from] sea_orm::DbErr),
}

pub async fn check(
    db: &DatabaseConnection,
    schema: &str,
    sinks: &BTreeMap<String, SinkSettings>,
) -> Result<(), TableError> {
    for (name, sink) in sinks {
        if sink.owned && !spillway_core::db::table_exists(db, &sink.table).await? {
            return Err(DbError::MissingOwnedTable {
                sink: name.clone(),
                table: sink.table.clone(),
                schema: schema.to_owned(),
            }
            .into());
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
