//! Helpers for spillway's cross-service tests, which run the real services against the real
//! local stack (`cargo xtask test` starts it).
//!
//! - [`TestConfig`]: a configuration of its own for each test (topics, consumer groups,
//!   Redis key prefix, database schema), so tests run in parallel without seeing each other.
//! - [`spawn`]: the services in-process on port 0, stopped by their shutdown token.
//! - [`process`]: the service binaries as child processes, for SIGTERM and `kill -9`.
//! - [`stack`]: the local stack's addresses, and stopping/starting a component (fault tests).
//! - [`kafka`], [`db`] and [`objects`]: reading and writing the stack directly, as an outside
//!   client would.
//! - [`views`]: the sample views and tables, view reads, queries counted in PostgreSQL's
//!   statistics, a private Redis with a small `maxmemory`.
//! - [`s3_proxy`]: S3 with a cloud store's latency, its calls in flight counted, or down.
//! - [`otlp`]: an OTLP/HTTP trace receiver on loopback, keeping every span it is sent.
//! - [`chaos`]: the chaos run behind `cargo xtask chaos` (every service killed in turn under
//!   a mixed load, Redis flushed once, then nothing acknowledged lost or doubled).

pub mod api;
pub mod bench;
pub mod chaos;
pub mod db;
pub mod kafka;
pub mod objects;
pub mod otlp;
pub mod process;
pub mod redis_client;
pub mod s3_proxy;
pub mod scenario;
pub mod spawn;
pub mod stack;
pub mod views;

use std::{path::PathBuf, time::Duration};

use spillway_core::config::Settings;

pub use spawn::{
    RunningService, spawn_batch_writer, spawn_counter, spawn_gateway, spawn_template_warmup,
};

/// The JWT secret every test configuration uses.
pub const JWT_SECRET: &str = "test-secret";

/// One test's private names on the shared stack, and the configuration built from them.
#[derive(Debug, Clone)]
pub struct TestConfig {
    pub id: String,
    pub counter_topic: String,
    pub warmup_topic: String,
    pub dlq_topic: String,
    pub key_prefix: String,
    pub schema: String,
    /// Extra TOML appended to the generated file (namespaces, tuning).
    pub extra_toml: String,
    pub file: PathBuf,
    _dir: std::sync::Arc<tempfile::TempDir>,
}

impl TestConfig {
    /// Fresh names for a test; `extra_toml` adds sections such as namespaces.
    pub fn new(extra_toml: &str) -> Self {
        let id = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("spillway.toml");
        let config = Self {
            counter_topic: format!("{id}.counter-events"),
            warmup_topic: format!("{id}.warmup-requests"),
            dlq_topic: format!("{id}.dlq"),
            key_prefix: format!("{id}:"),
            schema: id.clone(),
            extra_toml: extra_toml.to_owned(),
            file,
            id,
            _dir: std::sync::Arc::new(dir),
        };
        std::fs::write(&config.file, config.toml()).expect("write test config");
        config
    }

    /// The two sample namespaces, with the mirror into this test's own `videos` table.
    pub fn with_sample_namespaces() -> Self {
        Self::new(SAMPLE_NAMESPACES)
    }

    pub fn consumer_group(&self, service: &str) -> String {
        format!("{}-{service}", self.id)
    }

    /// The TOML file every service of this test reads.
    pub fn toml(&self) -> String {
        let stack = stack::Stack::current();
        format!(
            r#"jwt_secret = "{JWT_SECRET}"
# The tests' secret is a published sample one: accepted on the local stack only.
local_stack = true
[log]
format = "json"
level = "warn"
[kafka]
bootstrap = "{kafka}"
consumer_linger_ms = 20
counter_events = {{ name = "{counter_topic}", partitions = 4 }}
warmup_requests = {{ name = "{warmup_topic}", partitions = 2 }}
dlq = {{ name = "{dlq_topic}", partitions = 1 }}
writes_prefix = "{id}.writes."
{replication}[redis]
{cluster}url = "{redis}"
key_prefix = "{key_prefix}"
[database]
url = "{database}"
schema = "{schema}"
max_connections = 8
[s3]
endpoint = "{s3}"
bucket = "{id}"
[gateway]
listen = "127.0.0.1:0"
[counter]
listen = "127.0.0.1:0"
group_id = "{id}-counter"
flush_interval_ms = 200
[batch_writer]
listen = "127.0.0.1:0"
group_id = "{id}-batch-writer"
[template_warmup]
listen = "127.0.0.1:0"
group_id = "{id}-template-warmup"
{extra}
"#,
            kafka = stack.kafka,
            replication = replication_lines(&stack),
            cluster = cluster_lines(&stack),
            redis = stack.redis_url,
            database = stack.database_url,
            s3 = stack.s3_endpoint,
            counter_topic = self.counter_topic,
            warmup_topic = self.warmup_topic,
            dlq_topic = self.dlq_topic,
            key_prefix = self.key_prefix,
            schema = self.schema,
            id = self.id,
            extra = self.extra_toml,
        )
    }

    /// The same deployment with other consumer group ids (a consumer that starts from the
    /// beginning of the topics).
    pub fn with_group_suffix(&self, suffix: &str) -> Self {
        self.rewritten(|toml| {
            toml.replace(
                &format!("group_id = \"{}-", self.id),
                &format!("group_id = \"{}-{suffix}-", self.id),
            )
        })
    }

    /// The same deployment reaching S3 at `endpoint` (a [`s3_proxy::S3Proxy`]), same bucket.
    pub fn with_s3_endpoint(&self, endpoint: &str) -> Self {
        let direct = stack::Stack::current().s3_endpoint;
        self.rewritten(|toml| {
            toml.replace(
                &format!("endpoint = \"{direct}\""),
                &format!("endpoint = \"{endpoint}\""),
            )
        })
    }

    /// The same deployment with `line` (`key = value`) added to its `[gateway]` section
    /// (the generated file has one already, so `extra_toml` cannot add it).
    pub fn with_gateway_line(&self, line: &str) -> Self {
        self.rewritten(|toml| toml.replacen("[gateway]\n", &format!("[gateway]\n{line}\n"), 1))
    }

    /// The same deployment with `line` (`key = value`) added to namespace `namespace`'s
    /// section, its consumers in groups of their own (`suffix`) and its Redis keys under a
    /// prefix of their own: a second counter that counts the same topic from the start.
    pub fn with_namespace_line_apart(&self, namespace: &str, line: &str, suffix: &str) -> Self {
        let apart = self.with_group_suffix(suffix);
        apart.rewritten(|toml| {
            toml.replacen(
                &format!("[namespaces.{namespace}]\n"),
                &format!("[namespaces.{namespace}]\n{line}\n"),
                1,
            )
            .replacen(
                &format!("key_prefix = \"{}\"", self.key_prefix),
                &format!("key_prefix = \"{}{suffix}:\"", self.key_prefix),
                1,
            )
        })
    }

    /// The same deployment with the counter flushing every `ms` milliseconds (200 otherwise).
    pub fn with_counter_flush_interval_ms(&self, ms: u64) -> Self {
        self.rewritten(|toml| {
            toml.replacen(
                "flush_interval_ms = 200\n",
                &format!("flush_interval_ms = {ms}\n"),
                1,
            )
        })
    }

    /// The same deployment with the shipped consumer and pool tuning instead of the tests'
    /// quicker one (linger 20 ms, flush every 200 ms, 8 database connections): what a
    /// benchmark against another product should run.
    pub fn with_shipped_tuning(&self) -> Self {
        self.rewritten(|toml| {
            toml.replace("consumer_linger_ms = 20\n", "")
                .replace("flush_interval_ms = 200\n", "")
                .replace("max_connections = 8\n", "")
        })
    }

    /// The same deployment with the counter's write-behind flushing every `interval_ms` or
    /// `max_entities` dirty counters, whichever comes first (after
    /// [`Self::with_shipped_tuning`], which drops the tests' interval).
    pub fn with_counter_flush(&self, interval_ms: u64, max_entities: usize) -> Self {
        self.with_counter_lines(&format!(
            "flush_interval_ms = {interval_ms}\nflush_max_entities = {max_entities}\n"
        ))
    }

    /// The same deployment with the counter taking batches of up to `batch_max_events`.
    pub fn with_counter_batch(&self, batch_max_events: usize) -> Self {
        self.with_counter_lines(&format!("batch_max_events = {batch_max_events}\n"))
    }

    /// A copy with `lines` at the top of its `[counter]` section.
    fn with_counter_lines(&self, lines: &str) -> Self {
        self.rewritten(|toml| toml.replacen("[counter]\n", &format!("[counter]\n{lines}"), 1))
    }

    /// A copy whose file is this one's, rewritten by `rewrite`.
    fn rewritten(&self, rewrite: impl FnOnce(String) -> String) -> Self {
        let mut config = self.clone();
        let dir = tempfile::tempdir().expect("temp dir");
        config.file = dir.path().join("spillway.toml");
        config._dir = std::sync::Arc::new(dir);
        let text = std::fs::read_to_string(&self.file).expect("read test config");
        std::fs::write(&config.file, rewrite(text)).expect("write test config");
        config
    }

    /// The settings of the file alone: a `SPILLWAY_*` variable of the shell the tests run in
    /// does not reach them.
    pub fn settings(&self) -> Settings {
        Settings::load_file(&self.file).expect("test configuration is valid")
    }

    /// What `spillway-admin migrate` does, for this test's schema: the migrations and the
    /// tables of owned sinks. The services only check the schema at start (they may have DML
    /// rights only), so every `spawn_*` helper and [`process::ServiceProcess::start`] run this
    /// first; it is idempotent.
    pub async fn migrate(&self) {
        spillway_core::db::migrate_all(&self.settings())
            .await
            .expect("migrating the test schema");
    }

    /// The same deployment connecting to the database as `url` (another role).
    pub fn with_database_url(&self, url: &str) -> Self {
        let shared = stack::Stack::current().database_url;
        self.rewritten(|toml| {
            toml.replace(&format!("url = \"{shared}\""), &format!("url = \"{url}\""))
        })
    }
}

/// On three brokers, the topics a test creates are replicated as a deployment's would be.
fn replication_lines(stack: &stack::Stack) -> String {
    if stack.kafka_brokers < 3 {
        return String::new();
    }
    "replication_factor = 3\nmin_insync_replicas = 2\n".to_owned()
}

/// With the Redis Cluster in the topology, the services use it (`url` stays, for tests that
/// move a deployment to a private single Redis: [`views::with_redis`]).
fn cluster_lines(stack: &stack::Stack) -> String {
    let Some(nodes) = &stack.redis_cluster_nodes else {
        return String::new();
    };
    let nodes: Vec<String> = nodes.iter().map(|node| format!("\"{node}\"")).collect();
    format!("{CLUSTER_MODE_LINE}\nnodes = [{}]\n", nodes.join(", "))
}

/// The line that puts a test's services on the Redis Cluster.
pub const CLUSTER_MODE_LINE: &str = "mode = \"cluster\"";

/// `video-likes` (distinct, mirrored into `videos.like_count`) and `video-views` (sum,
/// anonymous increments allowed), as in the sample configuration.
pub const SAMPLE_NAMESPACES: &str = r#"
[namespaces.video-likes]
kind = "distinct"
mirror = { table = "videos", column = "like_count", key_column = "id", key_type = "text" }
[namespaces.video-views]
kind = "sum"
anonymous_increments = true
"#;

/// The sample `playlists` sink, batching at 5000 rows or 100 ms.
pub const SAMPLE_SINKS: &str = r#"
[sinks.playlists]
table = "playlists"
member_column = "member_id"
batch_max_rows = 5000
batch_max_delay_ms = 100
[sinks.playlists.columns]
id = { type = "uuid" }
member_id = { type = "text", max_length = 128 }
title = { type = "text", required = true, max_length = 200 }
description = { type = "text", max_length = 2000 }
visibility = { type = "text", max_length = 16 }
created_at = { type = "timestamptz", default_now = true }
"#;

/// The sum of a metric's samples on a `/metrics` page: every line starting with `prefix`
/// (`spillway_counter_events_total` or `spillway_counter_events_total{namespace="views"`);
/// 0 when the page cannot be read (a process that is down).
pub async fn metric_sum(metrics_url: &str, prefix: &str) -> f64 {
    let Ok(response) = reqwest::get(metrics_url).await else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A member token signed with the tests' secret.
pub fn token(member: &str) -> String {
    gateway::auth::issue_token(JWT_SECRET, member, &[], 3600)
}
