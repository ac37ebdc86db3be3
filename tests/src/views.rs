//! Cached views in the tests and the benchmark: the sample views and tables loaded into a
//! test's own schema, view reads with their `Cache-Status`, a table's scans counted in
//! PostgreSQL's statistics (how many queries reached it), and a private Redis with a small
//! `maxmemory` so eviction can be provoked without touching the shared one.

use std::{path::PathBuf, time::Duration};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use serde_json::Value;

use crate::{TestConfig, api::Api, stack::workspace_root};

/// The `[views.*]` sections of `config/spillway.toml`, so tests and benchmarks run the very
/// views the sample ships (they follow the sinks in that file, up to its end).
pub fn sample_views_toml() -> String {
    let text = std::fs::read_to_string(workspace_root().join("config/spillway.toml"))
        .expect("read config/spillway.toml");
    let start = text
        .find("\n[views.")
        .expect("config/spillway.toml configures views");
    text[start..].to_owned()
}

/// Runs `config/sample-schema.sql` (videos, lectures, 100,000 enrollments) in the
/// connection's schema.
pub async fn load_sample_schema(db: &DatabaseConnection) {
    let sql = std::fs::read_to_string(workspace_root().join("config/sample-schema.sql"))
        .expect("read config/sample-schema.sql");
    db.execute_unprepared(&sql)
        .await
        .expect("load the sample schema");
}

/// One answer of `GET /v1/views/{view}/{key}`.
#[derive(Debug, Clone)]
pub struct ViewRead {
    pub status: u16,
    pub cache_status: String,
    pub body: Value,
}

impl ViewRead {
    /// Served from the cache (fresh or stale), not loaded for this request.
    pub fn is_hit(&self) -> bool {
        self.cache_status.starts_with("spillway; hit")
    }
}

/// `GET /v1/views/{view}/{key}` without a token (a `public` view).
pub async fn read_view(api: &Api, view: &str, key: &str) -> ViewRead {
    read(api, view, key, None).await
}

/// `GET /v1/views/{view}/{key}` as `member` (a view keyed by member answers its own key).
pub async fn read_view_as(api: &Api, view: &str, key: &str, member: &str) -> ViewRead {
    read(api, view, key, Some(member)).await
}

async fn read(api: &Api, view: &str, key: &str, member: Option<&str>) -> ViewRead {
    let url = format!("{}/v1/views/{view}/{key}", api.base_url);
    let mut request = api.client.get(url);
    if let Some(member) = member {
        request = request.bearer_auth(api.member_token(member));
    }
    let response = request.send().await.expect("GET view");
    let status = response.status().as_u16();
    let cache_status = response
        .headers()
        .get("cache-status")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.json().await.unwrap_or(Value::Null);
    ViewRead {
        status,
        cache_status,
        body,
    }
}

/// Sequential plus index scans of `table` (in the connection's schema) so far.
async fn table_scans_now(db: &DatabaseConnection, table: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT (coalesce(seq_scan, 0) + coalesce(idx_scan, 0))::bigint AS n \
             FROM pg_stat_user_tables WHERE relid = to_regclass($1)",
            [table.into()],
        ))
        .await
        .expect("read table statistics")
        .expect("the table has statistics");
    row.try_get("", "n").expect("column n")
}

/// The scans of `table` once every backend has reported its own: a backend flushes its
/// statistics at most once a second, and within a second of going idle, so the count is
/// read until it stays the same across more than that.
pub async fn settled_table_scans(db: &DatabaseConnection, table: &str) -> i64 {
    let mut last = table_scans_now(db, table).await;
    loop {
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        let now = table_scans_now(db, table).await;
        if now == last {
            return now;
        }
        last = now;
    }
}

/// A redis-server of this test's own on a free port, without persistence, stopped on drop.
pub struct PrivateRedis {
    pub url: String,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl PrivateRedis {
    /// Starts one holding at most `maxmemory` (e.g. `4mb`), evicting by `policy`.
    pub async fn start(maxmemory: &str, policy: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("temp dir");
        let child = tokio::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--maxmemory", maxmemory, "--maxmemory-policy", policy])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server");
        let url = format!("redis://127.0.0.1:{port}");
        let client = redis::Client::open(url.as_str()).expect("redis url");
        crate::eventually(
            "the private redis-server answers",
            Duration::from_secs(10),
            || {
                let client = client.clone();
                async move { client.get_multiplexed_async_connection().await.ok() }
            },
        )
        .await;
        Self {
            url,
            _child: child,
            _dir: dir,
        }
    }

    pub async fn connect(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the private redis")
    }
}

/// `config` with its services pointed at the single Redis at `url` (the file lives in
/// `dir`), also when the topology has a Redis Cluster: the tests that flush Redis or fill it
/// to its `maxmemory` do it on a private Redis of their own ([`PrivateRedis`]).
pub fn with_redis(config: &TestConfig, url: &str, dir: &tempfile::TempDir) -> TestConfig {
    let shared = crate::stack::Stack::current().redis_url;
    let text = std::fs::read_to_string(&config.file).expect("read test config");
    let mut moved = config.clone();
    moved.file = PathBuf::from(dir.path()).join("spillway.toml");
    let single = text
        .replace(&format!("{}\n", crate::CLUSTER_MODE_LINE), "")
        .replace(&format!("url = \"{shared}\""), &format!("url = \"{url}\""));
    std::fs::write(&moved.file, single).expect("write test config");
    moved
}
