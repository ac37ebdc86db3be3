//! Layered configuration: defaults, then a TOML file (`SPILLWAY_CONFIG`, default
//! `config/spillway.toml` when it exists), then `SPILLWAY_`-prefixed environment variables
//! where `__` separates sections (`SPILLWAY_KAFKA__BOOTSTRAP`, `SPILLWAY_JWT_SECRET`).
//!
//! Everything is parsed once into typed structs and validated before a service connects to
//! anything; a bad value stops the service with an error that names the key.

use std::{collections::BTreeMap, fmt, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use serde::{Deserialize, Serialize, Serializer};

/// The environment variable naming the TOML file.
pub const CONFIG_PATH_VAR: &str = "SPILLWAY_CONFIG";
const DEFAULT_CONFIG_PATH: &str = "config/spillway.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(Box<figment::Error>),
    #[error("configuration key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    #[error("configuration file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// A figment error as "configuration key `a.b`: what is wrong (where it came from)".
fn parse_error(error: figment::Error) -> ConfigError {
    if error.path.is_empty() {
        return ConfigError::Parse(Box::new(error));
    }
    let key = error.path.join(".").to_lowercase();
    let source = error
        .metadata
        .as_ref()
        .map(|metadata| format!(" (from {})", metadata.name))
        .unwrap_or_default();
    invalid(&key, format!("{}{source}", error.kind))
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// A value that never appears in logs or printed configuration.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.is_empty() {
            serializer.serialize_str("")
        } else {
            serializer.serialize_str("***")
        }
    }
}

/// All settings of all services; each service reads the sections it needs.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Settings {
    /// HS256 secret for member JWTs (`SPILLWAY_JWT_SECRET`).
    pub jwt_secret: Secret,
    pub log: LogSettings,
    pub kafka: KafkaSettings,
    pub redis: RedisSettings,
    pub database: DatabaseSettings,
    pub s3: S3Settings,
    pub gateway: GatewaySettings,
    pub counter: CounterSettings,
    pub batch_writer: BatchWriterSettings,
    pub template_warmup: TemplateWarmupSettings,
    /// Template pools: where copies go, how long they stay ready, how hard S3 is pushed.
    pub templates: TemplatesSettings,
    /// Counter namespaces by name (`[namespaces.video-likes]`).
    pub namespaces: BTreeMap<String, NamespaceSettings>,
    /// Write sinks by name (`[sinks.playlists]`).
    pub sinks: BTreeMap<String, crate::sinks::SinkSettings>,
    /// Waiting rooms by name (`[queues.concerts]`, each with a name `pattern`).
    pub queues: BTreeMap<String, crate::queues::QueueSettings>,
    /// How waiting rooms sign admissions.
    pub admission: crate::queues::AdmissionSettings,
    /// Cached views by name (`[views.member-playlists]`).
    pub views: BTreeMap<String, crate::views::ViewSettings>,
}

/// How a namespace counts.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CounterKind {
    /// Each member counts at most once and can leave (likes).
    Distinct,
    /// Increments add up (views).
    Sum,
}

/// A counter namespace.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct NamespaceSettings {
    pub kind: CounterKind,
    /// Also keep a column of the user's own table current.
    #[serde(default)]
    pub mirror: Option<MirrorSettings>,
}

/// `UPDATE <table> SET <column> = value WHERE <key_column> = entity_id::<key_type>`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MirrorSettings {
    pub table: String,
    pub column: String,
    #[serde(default = "default_key_column")]
    pub key_column: String,
    /// The SQL type of the key column: `text`, `bigint` or `uuid`.
    #[serde(default = "default_key_type")]
    pub key_type: String,
}

fn default_key_column() -> String {
    "id".into()
}

fn default_key_type() -> String {
    "text".into()
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
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
            format: LogFormat::Json,
            level: "info".into(),
        }
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
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct RedisSettings {
    pub url: Secret,
    pub pool_size: usize,
    /// Prepended to every key (outside the hash tag), so tests can share one Redis.
    pub key_prefix: String,
    pub timeout_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: Secret::new("redis://127.0.0.1:16379"),
            pool_size: 32,
            key_prefix: String::new(),
            timeout_ms: 1_000,
        }
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct GatewaySettings {
    pub listen: String,
    /// No request is answered later than this.
    pub request_deadline_ms: u64,
    /// The deadline of requests that copy S3 objects inside the request (a template copy
    /// when the pool is empty, a template registration checking its objects).
    pub copy_deadline_ms: u64,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            request_deadline_ms: 2_000,
            copy_deadline_ms: 15_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct CounterSettings {
    pub listen: String,
    pub group_id: String,
    /// Flush to the database once this many counters are dirty ...
    pub flush_max_entities: usize,
    /// ... or this long after the last flush, whichever comes first.
    pub flush_interval_ms: u64,
}

impl Default for CounterSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".into(),
            group_id: "spillway-counter".into(),
            flush_max_entities: 1_000,
            flush_interval_ms: 1_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct BatchWriterSettings {
    pub listen: String,
    pub group_id: String,
}

impl Default for BatchWriterSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8082".into(),
            group_id: "spillway-batch-writer".into(),
        }
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

/// Template copies and their pools (`[templates]`), read by the gateway and template-warmup.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct TemplatesSettings {
    /// Copies go under `<copy_prefix>/<template_id>/<copy_id>/` in the bucket.
    pub copy_prefix: String,
    /// A ready copy older than this is taken out of its pool and deleted (default 30 days).
    pub ready_ttl_seconds: u64,
    /// How often template-warmup sweeps expired, retired and abandoned copies.
    pub sweep_interval_ms: u64,
    /// A copy not finished by then is abandoned and cleaned up by the sweeper.
    pub copy_timeout_ms: u64,
    /// S3 calls in flight at most, across one service instance.
    pub max_s3_in_flight: usize,
    /// S3 calls in flight at most for one copy (a direct copy in the gateway, one refill copy).
    pub copy_parallelism: usize,
}

impl Default for TemplatesSettings {
    fn default() -> Self {
        Self {
            copy_prefix: "copies".into(),
            ready_ttl_seconds: 30 * 24 * 3_600,
            sweep_interval_ms: 30_000,
            copy_timeout_ms: 60_000,
            max_s3_in_flight: 32,
            copy_parallelism: 8,
        }
    }
}

impl TemplatesSettings {
    pub fn copy_timeout(&self) -> Duration {
        Duration::from_millis(self.copy_timeout_ms)
    }
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms)
    }
    pub fn ready_ttl(&self) -> Duration {
        Duration::from_secs(self.ready_ttl_seconds)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let prefix_ok = !self.copy_prefix.is_empty()
            && self.copy_prefix.len() <= 128
            && !self.copy_prefix.starts_with('/')
            && !self.copy_prefix.ends_with('/');
        if !prefix_ok {
            return Err(invalid(
                "templates.copy_prefix",
                "1-128 characters, neither starting nor ending with `/`",
            ));
        }
        in_range(
            "templates.ready_ttl_seconds",
            self.ready_ttl_seconds,
            1,
            365 * 24 * 3_600,
        )?;
        in_range(
            "templates.sweep_interval_ms",
            self.sweep_interval_ms,
            100,
            86_400_000,
        )?;
        in_range(
            "templates.copy_timeout_ms",
            self.copy_timeout_ms,
            100,
            3_600_000,
        )?;
        in_range(
            "templates.max_s3_in_flight",
            self.max_s3_in_flight as u64,
            1,
            10_000,
        )?;
        in_range(
            "templates.copy_parallelism",
            self.copy_parallelism as u64,
            1,
            1_000,
        )
    }
}

impl Settings {
    /// Loads the layered configuration from the process environment and validates it.
    pub fn load() -> Result<Self, ConfigError> {
        let path = std::env::var_os(CONFIG_PATH_VAR).map(PathBuf::from);
        Self::load_from(path)
    }

    /// Loads from an explicit file (or none: defaults and environment only).
    pub fn load_from(path: Option<PathBuf>) -> Result<Self, ConfigError> {
        // Defaults come from `#[serde(default)]` on each struct (not from serializing
        // `Settings::default()`, which would mask the default secrets).
        let mut figment = Figment::new();
        match path {
            Some(path) if !path.exists() => {
                return Err(ConfigError::File {
                    path,
                    reason: "no such file".into(),
                });
            }
            Some(path) => figment = figment.merge(Toml::file(path)),
            None if PathBuf::from(DEFAULT_CONFIG_PATH).exists() => {
                figment = figment.merge(Toml::file(DEFAULT_CONFIG_PATH));
            }
            None => {}
        }
        let env = Env::prefixed("SPILLWAY_")
            .split("__")
            .ignore(&["config"])
            .lowercase(true);
        let settings: Settings = figment.merge(env).extract().map_err(parse_error)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what serde cannot: ranges, non-empty strings, addresses.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, listen) in [
            ("gateway.listen", &self.gateway.listen),
            ("counter.listen", &self.counter.listen),
            ("batch_writer.listen", &self.batch_writer.listen),
            ("template_warmup.listen", &self.template_warmup.listen),
        ] {
            listen
                .parse::<std::net::SocketAddr>()
                .map_err(|e| invalid(key, format!("`{listen}` is not host:port ({e})")))?;
        }
        non_empty("kafka.bootstrap", &self.kafka.bootstrap)?;
        non_empty("kafka.counter_events.name", &self.kafka.counter_events.name)?;
        non_empty(
            "kafka.warmup_requests.name",
            &self.kafka.warmup_requests.name,
        )?;
        non_empty("kafka.dlq.name", &self.kafka.dlq.name)?;
        for (key, topic) in [
            (
                "kafka.counter_events.partitions",
                &self.kafka.counter_events,
            ),
            (
                "kafka.warmup_requests.partitions",
                &self.kafka.warmup_requests,
            ),
            ("kafka.dlq.partitions", &self.kafka.dlq),
        ] {
            in_range(key, topic.partitions as u64, 1, 1_000)?;
        }
        in_range(
            "kafka.writes_partitions",
            self.kafka.writes_partitions as u64,
            1,
            1_000,
        )?;
        in_range(
            "kafka.produce_timeout_ms",
            self.kafka.produce_timeout_ms,
            100,
            300_000,
        )?;
        in_range(
            "kafka.consumer_batch_size",
            self.kafka.consumer_batch_size as u64,
            1,
            100_000,
        )?;
        in_range(
            "kafka.consumer_linger_ms",
            self.kafka.consumer_linger_ms,
            0,
            60_000,
        )?;
        url_scheme("redis.url", self.redis.url.expose(), &["redis", "rediss"])?;
        in_range("redis.pool_size", self.redis.pool_size as u64, 1, 10_000)?;
        url_scheme(
            "database.url",
            self.database.url.expose(),
            &["postgres", "postgresql"],
        )?;
        identifier("database.schema", &self.database.schema)?;
        in_range(
            "database.max_connections",
            self.database.max_connections as u64,
            1,
            1_000,
        )?;
        url_scheme("s3.endpoint", &self.s3.endpoint, &["http", "https"])?;
        non_empty("s3.bucket", &self.s3.bucket)?;
        in_range(
            "gateway.request_deadline_ms",
            self.gateway.request_deadline_ms,
            100,
            60_000,
        )?;
        in_range(
            "gateway.copy_deadline_ms",
            self.gateway.copy_deadline_ms,
            self.gateway.request_deadline_ms,
            600_000,
        )?;
        if self.kafka.produce_timeout_ms + 250 > self.gateway.request_deadline_ms {
            return Err(invalid(
                "kafka.produce_timeout_ms",
                format!(
                    "{} must stay at least 250 ms below gateway.request_deadline_ms ({}) so a \
                     Kafka outage is answered as such before the request deadline",
                    self.kafka.produce_timeout_ms, self.gateway.request_deadline_ms
                ),
            ));
        }
        for (key, group) in [
            ("counter.group_id", &self.counter.group_id),
            ("batch_writer.group_id", &self.batch_writer.group_id),
            ("template_warmup.group_id", &self.template_warmup.group_id),
        ] {
            non_empty(key, group)?;
        }
        in_range(
            "counter.flush_max_entities",
            self.counter.flush_max_entities as u64,
            1,
            1_000_000,
        )?;
        in_range(
            "counter.flush_interval_ms",
            self.counter.flush_interval_ms,
            10,
            600_000,
        )?;
        self.templates.validate()?;
        for (name, namespace) in &self.namespaces {
            validate_namespace(name, namespace)?;
        }
        for (name, sink) in &self.sinks {
            crate::sinks::validate_sink(name, sink)?;
        }
        for (name, queue) in &self.queues {
            crate::queues::validate_queue(name, queue)?;
        }
        for (name, view) in &self.views {
            crate::views::validate_view(name, view, &self.sinks, self.gateway.request_deadline_ms)?;
        }
        in_range(
            "admission.ttl_seconds",
            self.admission.ttl_seconds,
            1,
            3_600,
        )?;
        Ok(())
    }

    /// The effective configuration as pretty JSON, secrets masked, for the start-up log.
    pub fn to_masked_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("<unprintable: {e}>"))
    }
}

fn validate_namespace(name: &str, namespace: &NamespaceSettings) -> Result<(), ConfigError> {
    let key = format!("namespaces.{name}");
    let valid_name = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid_name {
        return Err(invalid(&key, "a namespace name is 1-64 of [A-Za-z0-9._-]"));
    }
    if let Some(mirror) = &namespace.mirror {
        identifier(&format!("{key}.mirror.table"), &mirror.table)?;
        identifier(&format!("{key}.mirror.column"), &mirror.column)?;
        identifier(&format!("{key}.mirror.key_column"), &mirror.key_column)?;
        if !["text", "bigint", "uuid"].contains(&mirror.key_type.as_str()) {
            return Err(invalid(
                &format!("{key}.mirror.key_type"),
                "must be text, bigint or uuid",
            ));
        }
    }
    Ok(())
}

fn non_empty(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(invalid(key, "must not be empty"));
    }
    Ok(())
}

fn in_range(key: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if !(min..=max).contains(&value) {
        return Err(invalid(key, format!("{value} is outside {min}..={max}")));
    }
    Ok(())
}

fn url_scheme(key: &str, url: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some(scheme) if schemes.contains(&scheme) => Ok(()),
        _ => Err(invalid(
            key,
            format!("must be a URL starting with {}://", schemes.join(":// or "),),
        )),
    }
}

/// A SQL identifier we may interpolate (schema names cannot be bound parameters).
pub fn identifier(key: &str, value: &str) -> Result<(), ConfigError> {
    let valid = !value.is_empty()
        && value.len() <= 63
        && value.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("`{value}` must be a lowercase identifier ([a-z_][a-z0-9_]*, at most 63)"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Settings::default().validate().unwrap();
    }

    #[test]
    fn a_bad_listen_address_names_its_key() {
        let mut settings = Settings::default();
        settings.counter.listen = "nowhere".into();
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("counter.listen"), "{error}");
    }

    #[test]
    fn a_produce_timeout_reaching_the_request_deadline_is_refused() {
        let mut settings = Settings::default();
        settings.kafka.produce_timeout_ms = settings.gateway.request_deadline_ms;
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("kafka.produce_timeout_ms"), "{error}");
    }

    #[test]
    fn a_file_value_of_the_wrong_type_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[kafka]\nconsumer_batch_size = \"many\"\n").unwrap();
        let error = Settings::load_from(Some(path)).unwrap_err().to_string();
        assert!(error.contains("`kafka.consumer_batch_size`"), "{error}");
    }

    #[test]
    fn defaults_keep_their_secrets_when_loaded() {
        let settings = Settings::load_from(None).unwrap();
        assert_eq!(settings.s3.secret_key.expose(), "spillway-secret");
        assert!(settings.redis.url.expose().starts_with("redis://"));
    }

    #[test]
    fn secrets_are_masked_when_printed() {
        let settings = Settings {
            jwt_secret: Secret::new("hunter2"),
            ..Settings::default()
        };
        let printed = settings.to_masked_json();
        assert!(!printed.contains("hunter2"));
        assert!(!printed.contains("spillway-secret"));
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn schema_names_are_checked() {
        assert!(identifier("k", "test_abc_1").is_ok());
        assert!(identifier("k", "Robert'); DROP").is_err());
        assert!(identifier("k", "").is_err());
    }
}
