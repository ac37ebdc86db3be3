//! Cached views: a named, parameterised SQL query whose JSON result the gateway serves from
//! Redis, falling back to the database on a miss (`GET /v1/views/{view}/{key}`).
//!
//! - [`config`]: what the user writes (`[views.<name>]`), checked at start.
//! - [`key`]: a caller's key parsed into the typed value bound as `$1`.
//! - [`sql`]: the statement that turns the query's rows into JSON, and the `RETURNING`
//!   clause through which a sink's commit names the view keys it changed.
//! - [`store`]: the cache itself (Redis values, reload locks, generations) and the database
//!   load, shared by the gateway (reads) and the batch-writer (refreshes after a commit).
//!
//! The HTTP side and the single-flight of one gateway live in the gateway.

pub mod config;
pub mod key;
pub mod sql;
pub mod store;

pub use config::{KeyType, RefreshSettings, ResultShape, ViewSettings, refreshed_by_sink};
pub use key::{KeyError, ViewKey};
pub use sql::{BODY_COLUMN, RETURNED_KEYS_COLUMN, returning_clause};

#[cfg(test)]
pub(crate) mod fixtures {
    use std::collections::BTreeMap;

    use super::ViewSettings;
    use crate::sinks::SinkSettings;

    /// A view of the sample playlists by member, with `extra` TOML lines.
    pub fn view(extra: &str) -> ViewSettings {
        toml::from_str(&format!(
            "sql = \"SELECT id, title FROM playlists WHERE member_id = $1\"\n{extra}"
        ))
        .unwrap()
    }

    pub fn playlists_sink() -> BTreeMap<String, SinkSettings> {
        let sink: SinkSettings = toml::from_str(
            "table = \"playlists\"\n[columns]\nid = { type = \"uuid\" }\nmember_id = { type = \"text\" }\n",
        )
        .unwrap();
        BTreeMap::from([("playlists".to_owned(), sink)])
    }
}
