//! The infrastructure and per-service sections of the configuration (`[kafka]`, `[redis]`,
//! `[database]`, `[s3]`, `[log]`, `[gateway]`, `[counter]`, ...), each with its defaults and
//! its own checks. Settings that cross sections are checked by [`super::Settings`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    check::{ConfigError, in_range, invalid, non_empty, url_scheme},
    secret::Secret,
};

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `pretty` when the output is a terminal, `json` otherwise (files, containers).
    #[default]
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `info,counter=debug`.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            level: "info".into(),
        }
    }
}

/// `[telemetry]`: traces exported over OTLP/HTTP (protobuf). Off while `otlp_endpoint` is
/// empty (the default): then no exporter, thread or connection exists, and no record carries
/// a `traceparent` header.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct TelemetrySettings {
    /// The collector's OTLP/HTTP base URL (`http://jaeger:4318`); spans go to
    /// `<otlp_endpoint>/v1/traces`. Empty: no traces are exported.
    pub otlp_endpoint: String,
    /// The `service.name` of the spans; `{service}` stands for the service (`gateway`,
    /// `counter`, ...), so one file serves all four.
    pub service_name: String,
    /// The share of new traces kept (0 to 1); a span whose parent came with a trace context
    /// (a `traceparent` header, a Kafka record's) follows its parent's decision.
    pub sample_ratio: f64,
}

/// What `{service}` in `telemetry.service_name` stands for.
pub const SERVICE_PLACEHOLDER: &str = "{service}";

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            service_name: format!("spillway-{SERVICE_PLACEHOLDER}"),
            sample_ratio: 1.0,
        }
    }
}

impl TelemetrySettings {
    /// Whether traces are exported.
    pub fn exports(&self) -> bool {
        !self.otlp_endpoint.trim().is_empty()
    }

    /// The `service.name` of `service`'s spans.
    pub fn service_name_of(&self, service: &str) -> String {
        self.service_name.replace(SERVICE_PLACEHOLDER, service)
    }

    /// Where spans are sent: the base URL with the OTLP traces path.
    pub fn traces_url(&self) -> String {
        let base = self.otlp_endpoint.trim().trim_end_matches('/');
        if base.ends_with("/v1/traces") {
            base.to_owned()
        } else {
            format!("{base}/v1/traces")
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.exports() {
            url_scheme(
                "telemetry.otlp_endpoint",
                self.otlp_endpoint.trim(),
                &["http", "https"],
            )?;
        }
        non_empty("telemetry.service_name", &self.service_name)?;
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(crate::check::invalid(
                "telemetry.sample_ratio",
                format!("{} must be between 0 and 1", self.sample_ratio),
            ));
        }
        Ok(())
    }
}

/// A topic and the partition count it is created with.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TopicSettings {
    pub name: String,
    pub partitions: i32,
}

impl TopicSettings {
    fn new(name: &str, partitions: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
        }
    }

    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        non_empty(&format!("{key}.name"), &self.name)?;
        in_range(
            &format!("{key}.partitions"),
            self.partitions as u64,
            1..=1_000,
        )
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct KafkaSettings {
    pub bootstrap: String,
    /// How long a produce may wait for `acks=all` before the caller gets a 503.
    pub produce_timeout_ms: u64,
    /// Most messages handed to a consumer's handler at once.
    pub consumer_batch_size: usize,
    /// Longest a consumer waits to fill a batch.
    pub consumer_linger_ms: u64,
    pub counter_events: TopicSettings,
    pub warmup_requests: TopicSettings,
    pub dlq: TopicSettings,
    /// Sink topics are `<writes_prefix><sink>.v1`.
    pub writes_prefix: String,
    pub writes_partitions: i32,
    /// Copies of each partition of the topics spillway creates; unset: the brokers'
    /// `default.replication.factor`. Topics that exist are left as they are.
    pub replication_factor: Option<i32>,
    /// `min.insync.replicas` of the topics spillway creates: with `acks=all` a write is
    /// acknowledged once this many copies hold it; unset: the brokers' default.
    pub min_insync_replicas: Option<i32>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap: "127.0.0.1:19092".into(),
            produce_timeout_ms: 1_000,
            consumer_batch_size: 1_000,
            consumer_linger_ms: 50,
            counter_events: TopicSettings::new("spillway.counter-events.v1", 6),
            warmup_requests: TopicSettings::new("spillway.warmup-requests.v1", 3),
            dlq: TopicSettings::new("spillway.dlq.v1", 1),
            writes_prefix: "spillway.writes.".into(),
            writes_partitions: 3,
            replication_factor: None,
            min_insync_replicas: None,
        }
    }
}

impl KafkaSettings {
    pub fn produce_timeout(&self) -> Duration {
        Duration::from_millis(self.produce_timeout_ms)
    }
    pub fn consumer_linger(&self) -> Duration {
        Duration::from_millis(self.consumer_linger_ms)
    }
    /// The topic a sink's rows travel on.
    pub fn writes_topic(&self, sink: &str) -> String {
        format!("{}{sink}.v1", self.writes_prefix)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        non_empty("kafka.bootstrap", &self.bootstrap)?;
        self.counter_events.validate("kafka.counter_events")?;
        self.warmup_requests.validate("kafka.warmup_requests")?;
        self.dlq.validate("kafka.dlq")?;
        in_range(
            "kafka.writes_partitions",
            self.writes_partitions as u64,
            1..=1_000,
        )?;
        in_range(
            "kafka.produce_timeout_ms",
            self.produce_timeout_ms,
            100..=300_000,
        )?;
        in_range(
            "kafka.consumer_batch_size",
            self.consumer_batch_size as u64,
            1..=100_000,
        )?;
        in_range(
            "kafka.consumer_linger_ms",
            self.consumer_linger_ms,
            0..=60_000,
        )?;
        self.validate_replication()
    }

    fn validate_replication(&self) -> Result<(), ConfigError> {
        if let Some(factor) = self.replication_factor {
            in_range("kafka.replication_factor", factor as u64, 1..=16)?;
        }
        if let Some(min) = self.min_insync_replicas {
            in_range("kafka.min_insync_replicas", min as u64, 1..=16)?;
            if let Some(factor) = self.replication_factor
                && min > factor
            {
                return Err(invalid(
                    "kafka.min_insync_replicas",
                    format!(
                        "{min} is above kafka.replication_factor ({factor}): no write could be \
                         acknowledged"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Which kind of Redis deployment `[redis]` names.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One Redis at `redis.url`.
    #[default]
    Single,
    /// A Redis Cluster reached through the seed nodes `redis.nodes`.
    Cluster,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct RedisSettings {
    pub mode: RedisMode,
    /// The Redis of `mode = "single"`.
    pub url: Secret,
    /// `mode = "cluster"`: seed nodes (`redis://host:port` URLs); the client learns the
    /// others, and the slots, from whichever answers.
    pub nodes: Vec<Secret>,
    pub pool_size: usize,
    /// Prepended to every key (outside the hash tag), so tests can share one Redis.
    pub key_prefix: String,
    pub timeout_ms: u64,
    /// How many replicas must hold a write that has to survive a failover (a counter's
    /// apply, a template copy handed out, a pending-write marker, a waiting-room step) before
    /// the call counts as done; unset: 1 in cluster mode, 0 for a single Redis.
    pub wait_replicas: Option<u32>,
    /// The longest such a call waits for its replicas (then it fails, and is retried).
    pub wait_timeout_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            mode: RedisMode::Single,
            url: Secret::new("redis://127.0.0.1:16379"),
            nodes: Vec::new(),
            pool_size: 32,
            key_prefix: String::new(),
            timeout_ms: 1_000,
            wait_replicas: None,
            wait_timeout_ms: 500,
        }
    }
}

impl RedisSettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn wait_timeout(&self) -> Duration {
        Duration::from_millis(self.wait_timeout_ms)
    }

    /// The replicas a replicated write waits for ([`Self::wait_replicas`] or its default).
    pub fn replicas_to_wait_for(&self) -> u32 {
        self.wait_replicas.unwrap_or(match self.mode {
            RedisMode::Single => 0,
            RedisMode::Cluster => 1,
        })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        const SCHEMES: &[&str] = &["redis", "rediss"];
        match self.mode {
            RedisMode::Single => url_scheme("redis.url", self.url.expose(), SCHEMES)?,
            RedisMode::Cluster => {
                if self.nodes.is_empty() {
                    return Err(invalid(
                        "redis.nodes",
                        "mode = \"cluster\" needs at least one seed node (redis://host:port)",
                    ));
                }
                for node in &self.nodes {
                    url_scheme("redis.nodes", node.expose(), SCHEMES)?;
                }
            }
        }
        if self.key_prefix.contains(['{', '}']) {
            return Err(invalid(
                "redis.key_prefix",
                "may not contain `{` or `}`: it would become the hash tag of every key, \
                 putting them all on one Redis Cluster slot",
            ));
        }
        in_range("redis.pool_size", self.pool_size as u64, 1..=10_000)?;
        in_range("redis.timeout_ms", self.timeout_ms, 10..=60_000)?;
        in_range(
            "redis.wait_replicas",
            self.replicas_to_wait_for().into(),
            0..=5,
        )?;
        in_range(
            "redis.wait_timeout_ms",
            self.wait_timeout_ms,
            1..=self.timeout_ms.saturating_sub(1).max(1),
        )
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct DatabaseSettings {
    pub url: Secret,
    /// The PostgreSQL schema spillway's tables live in (tests use one each).
    pub schema: String,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: Secret::new("postgres://spillway@127.0.0.1:15432/spillway"),
            schema: "public".into(),
            max_connections: 16,
            acquire_timeout_ms: 2_000,
        }
    }
}

impl DatabaseSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        url_scheme(
            "database.url",
            self.url.expose(),
            &["postgres", "postgresql"],
        )?;
        crate::check::identifier("database.schema", &self.schema)?;
        in_range(
            "database.max_connections",
            u64::from(self.max_connections),
            1..=1_000,
        )
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct S3Settings {
    pub endpoint: String,
    pub region: String,
    pub access_key: Secret,
    pub secret_key: Secret,
    pub bucket: String,
    pub timeout_ms: u64,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:19000".into(),
            region: "us-east-1".into(),
            access_key: Secret::new("spillway"),
            secret_key: Secret::new("spillway-secret"),
            bucket: "spillway".into(),
            timeout_ms: 5_000,
        }
    }
}

impl S3Settings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        url_scheme("s3.endpoint", &self.endpoint, &["http", "https"])?;
        non_empty("s3.bucket", &self.bucket)
    }
}

/// Checks a `listen = "host:port"` value.
fn listen_address(key: &str, listen: &str) -> Result<(), ConfigError> {
    listen
        .parse::<std::net::SocketAddr>()
        .map(|_| ())
        .map_err(|e| crate::check::invalid(key, format!("`{listen}` is not host:port ({e})")))
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct GatewaySettings {
    pub listen: String,
    /// No request is answered later than this.
    pub request_deadline_ms: u64,
    /// The deadline of requests that copy S3 objects inside the request (a template copy
    /// when the pool is empty, a template registration checking its objects).
    pub copy_deadline_ms: u64,
    /// Browser origins allowed to call the API (CORS), e.g. `["https://app.example"]`;
    /// empty (the default): no CORS headers, browsers refuse cross-origin calls.
    pub cors_origins: Vec<String>,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            request_deadline_ms: 2_000,
            copy_deadline_ms: 15_000,
            cors_origins: Vec::new(),
        }
    }
}

impl GatewaySettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        listen_address("gateway.listen", &self.listen)?;
        in_range(
            "gateway.request_deadline_ms",
            self.request_deadline_ms,
            100..=60_000,
        )?;
        in_range(
            "gateway.copy_deadline_ms",
            self.copy_deadline_ms,
            self.request_deadline_ms..=600_000,
        )?;
        for origin in &self.cors_origins {
            cors_origin(origin)?;
        }
        Ok(())
    }
}

/// An origin as a browser sends it: `scheme://host[:port]`, nothing after.
fn cors_origin(origin: &str) -> Result<(), ConfigError> {
    let refuse = |reason: &str| {
        Err(crate::check::invalid(
            "gateway.cors_origins",
            format!("`{origin}` {reason}; write an origin as `https://app.example[:port]`"),
        ))
    };
    let Some((scheme, host)) = origin.split_once("://") else {
        return refuse("has no scheme");
    };
    if !["http", "https"].contains(&scheme) {
        return refuse("is not http or https");
    }
    if host.is_empty() || host.contains(['/', '?', '#', '*', ' ']) {
        return refuse("is not an origin (no path, query, wildcard or trailing slash)");
    }
    Ok(())
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct CounterSettings {
    pub listen: String,
    pub group_id: String,
    /// Events per consumer batch at most (instead of `kafka.consumer_batch_size`): a larger
    /// batch combines more events per counter and costs fewer round trips per event.
    pub batch_max_events: usize,
    /// Flush to the database once this many counters are dirty (a backlog over many keys
    /// then writes in transactions of this many rows instead of one per batch) ...
    pub flush_max_entities: usize,
    /// ... or this long after the last flush, whichever comes first.
    pub flush_interval_ms: u64,
}

impl Default for CounterSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".into(),
            group_id: "spillway-counter".into(),
            batch_max_events: 10_000,
            flush_max_entities: 20_000,
            flush_interval_ms: 1_000,
        }
    }
}

impl CounterSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        consumer_service("counter", &self.listen, &self.group_id)?;
        in_range(
            "counter.batch_max_events",
            self.batch_max_events as u64,
            1..=100_000,
        )?;
        in_range(
            "counter.flush_max_entities",
            self.flush_max_entities as u64,
            1..=1_000_000,
        )?;
        in_range(
            "counter.flush_interval_ms",
            self.flush_interval_ms,
            10..=600_000,
        )
    }
}

/// Checks a consumer service's own section: its listen address and consumer group.
fn consumer_service(section: &str, listen: &str, group_id: &str) -> Result<(), ConfigError> {
    listen_address(&format!("{section}.listen"), listen)?;
    non_empty(&format!("{section}.group_id"), group_id)
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct BatchWriterSettings {
    pub listen: String,
    pub group_id: String,
    /// A sink's partitions written at once, each in its own transaction (one database
    /// connection each).
    pub write_concurrency: usize,
}

impl Default for BatchWriterSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8082".into(),
            group_id: "spillway-batch-writer".into(),
            write_concurrency: 3,
        }
    }
}

impl BatchWriterSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        consumer_service("batch_writer", &self.listen, &self.group_id)?;
        in_range(
            "batch_writer.write_concurrency",
            self.write_concurrency as u64,
            1..=64,
        )
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct TemplateWarmupSettings {
    pub listen: String,
    pub group_id: String,
}

impl Default for TemplateWarmupSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8083".into(),
            group_id: "spillway-template-warmup".into(),
        }
    }
}

impl TemplateWarmupSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        consumer_service("template_warmup", &self.listen, &self.group_id)
    }
}
