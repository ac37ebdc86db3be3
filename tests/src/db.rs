//! The test's own database schema, read directly to check what the services wrote.

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};

use crate::{TestConfig, stack::Stack};

/// A connection whose `search_path` is the test's schema (created if needed).
pub async fn connect(config: &TestConfig) -> DatabaseConnection {
    let mut options = sea_orm::ConnectOptions::new(Stack::current().database_url);
    options
        .set_schema_search_path(config.schema.clone())
        .sqlx_logging(false)
        .max_connections(4);
    let db = Database::connect(options)
        .await
        .expect("connect to the test database");
    db.execute_unprepared(&format!(
        "CREATE SCHEMA IF NOT EXISTS \"{}\"",
        config.schema
    ))
    .await
    .expect("create the test schema");
    db
}

/// The sample `videos` table the `video-likes` namespace mirrors into, with `ids` rows.
pub async fn create_videos(db: &DatabaseConnection, ids: &[String]) {
    db.execute_unprepared("CREATE TABLE IF NOT EXISTS videos (id TEXT PRIMARY KEY, title TEXT, like_count BIGINT NOT NULL DEFAULT 0)")
        .await
        .expect("create videos");
    for chunk in ids.chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|id| format!("('{id}', 'video {id}')"))
            .collect();
        db.execute_unprepared(&format!(
            "INSERT INTO videos (id, title) VALUES {} ON CONFLICT DO NOTHING",
            values.join(",")
        ))
        .await
        .expect("insert videos");
    }
}

/// Runs a query returning one bigint column named `n`.
pub async fn scalar(db: &DatabaseConnection, sql: &str, values: Vec<sea_orm::Value>) -> i64 {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        ))
        .await
        .expect("query")
        .expect("one row");
    row.try_get::<i64>("", "n").expect("column n")
}

/// `counter_values.value` of one counter (0 when it has no row).
pub async fn counter_value(db: &DatabaseConnection, namespace: &str, entity_id: &str) -> i64 {
    scalar(
        db,
        "SELECT COALESCE((SELECT value FROM counter_values WHERE namespace = $1 AND entity_id = $2), 0) AS n",
        vec![namespace.into(), entity_id.into()],
    )
    .await
}

/// A connection to the test's schema as another database user (`url`).
pub async fn connect_as(config: &TestConfig, url: &str) -> DatabaseConnection {
    let mut options = sea_orm::ConnectOptions::new(url.to_owned());
    options
        .set_schema_search_path(config.schema.clone())
        .sqlx_logging(false)
        .max_connections(1);
    Database::connect(options)
        .await
        .expect("connect as another role")
}
