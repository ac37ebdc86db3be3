//! Write sinks: a Kafka topic of rows (`spillway.writes.<sink>.v1`) mapped to one table.
//!
//! - [`config`]: what the user writes (`[sinks.<name>]`): the table, its columns and types,
//!   the primary key, what a duplicate key does, the batching rule; checked at start.
//! - [`row`]: a row checked against its sink (the gateway refuses a bad row before anything
//!   is published; the batch-writer checks rows from any producer) and its wire form.
//! - [`sql`]: the bulk SQL the batch-writer runs and the read of one stored row.
//! - [`pending`]: [`PendingWrites`], the Redis markers of writes acknowledged but not yet
//!   committed.
//!
//! Identifiers come from the validated configuration, values are always bound.

pub mod config;
pub mod pending;
pub mod row;
pub mod sql;

pub use config::{ColumnSettings, ColumnType, ConflictRule, SinkSettings, WIRE_INTEGER_LIMIT};
pub use pending::{CommittedWrite, PendingWrites};
pub use row::{RowError, from_struct, to_struct};

#[cfg(test)]
pub(crate) mod fixtures {
    use serde_json::{Map, Value};

    use super::SinkSettings;

    /// A sink like the sample `playlists`, with a short title.
    pub fn playlists() -> SinkSettings {
        toml::from_str(
            r#"
            table = "playlists"
            member_column = "member_id"
            [columns]
            id = { type = "uuid" }
            member_id = { type = "text", max_length = 128 }
            title = { type = "text", required = true, max_length = 10 }
            visibility = { type = "text" }
            created_at = { type = "timestamptz", default_now = true }
            "#,
        )
        .unwrap()
    }

    pub fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }
}
