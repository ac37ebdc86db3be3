//! Layered configuration: defaults, then a TOML file (`SPILLWAY_CONFIG`, default
//! `config/spillway.toml` when it exists), then `SPILLWAY_`-prefixed environment variables
//! where `__` separates sections (`SPILLWAY_KAFKA__BOOTSTRAP`, `SPILLWAY_JWT_SECRET`).
//!
//! Everything is parsed once into typed structs and validated before a service connects to
//! anything; a bad value stops the service with an error that names the key.
//!
//! [`Settings`] only aggregates: the infrastructure and service sections live in
//! [`sections`], each feature's settings in the feature (`counters::config`,
//! `sinks::config`, `views::config`, `queues::config`, `templates::config`), and the
//! checks and leaf types they share in [`crate::check`], [`crate::secret`] and
//! [`crate::read_rule`], which depend on nothing in the crate. Imports go one way: `config` ->
//! feature -> `check`.

pub mod sections;

use std::{collections::BTreeMap, path::PathBuf};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use serde::{Deserialize, Serialize};

pub use crate::{
    check::{ConfigError, identifier},
    read_rule::ReadRule,
    secret::Secret,
};
pub use sections::{
    BatchWriterSettings, CounterSettings, DatabaseSettings, GatewaySettings, KafkaSettings,
    LogFormat, LogSettings, RedisMode, RedisSettings, S3Settings, TelemetrySettings,
    TemplateWarmupSettings, TopicSettings,
};

use crate::{
    counters::config::NamespaceSettings,
    queues::config::{AdmissionSettings, QueueSettings},
    sinks::config::SinkSettings,
    templates::config::TemplatesSettings,
    views::config::ViewSettings,
};

/// The environment variable naming the TOML file.
pub const CONFIG_PATH_VAR: &str = "SPILLWAY_CONFIG";
const DEFAULT_CONFIG_PATH: &str = "config/spillway.toml";

/// All settings of all services; each service reads the sections it needs.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Settings {
    /// HS256 secret for member JWTs (`SPILLWAY_JWT_SECRET`).
    pub jwt_secret: Secret,
    /// The service runs on the local stack (`SPILLWAY_LOCAL_STACK=1`, set by `cargo xtask`
    /// for what it starts, and by the tests): only then are the published sample secrets
    /// accepted.
    #[serde(deserialize_with = "crate::check::flag")]
    pub local_stack: bool,
    pub log: LogSettings,
    /// Traces over OTLP (off unless `otlp_endpoint` is set).
    pub telemetry: TelemetrySettings,
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
    pub sinks: BTreeMap<String, SinkSettings>,
    /// Waiting rooms by name (`[queues.concerts]`, each with a name `pattern`).
    pub queues: BTreeMap<String, QueueSettings>,
    /// How waiting rooms sign admissions.
    pub admission: AdmissionSettings,
    /// Cached views by name (`[views.member-playlists]`).
    pub views: BTreeMap<String, ViewSettings>,
}

impl Settings {
    /// Loads the layered configuration from the process environment and validates it.
    pub fn load() -> Result<Self, ConfigError> {
        let path = std::env::var_os(CONFIG_PATH_VAR).map(PathBuf::from);
        Self::load_from(path)
    }

    /// Loads a file alone, without the process environment (the tests: their environment is
    /// the developer's shell, which may export a stack's `SPILLWAY_*` variables).
    pub fn load_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let settings: Settings = Figment::new()
            .merge(Toml::file(path))
            .extract()
            .map_err(crate::check::parse_error)?;
        settings.validate()?;
        Ok(settings)
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
        let settings: Settings = figment
            .merge(env)
            .extract()
            .map_err(crate::check::parse_error)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what serde cannot: each section checks itself, then the rules that cross
    /// sections.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.telemetry.validate()?;
        self.kafka.validate()?;
        self.redis.validate()?;
        self.database.validate()?;
        self.s3.validate()?;
        self.gateway.validate()?;
        self.counter.validate()?;
        self.batch_writer.validate()?;
        self.template_warmup.validate()?;
        self.templates.validate()?;
        self.admission.validate()?;
        self.check_produce_timeout()?;
        self.refuse_sample_secrets()?;
        for (name, namespace) in &self.namespaces {
            namespace.validate(name)?;
        }
        for (name, sink) in &self.sinks {
            sink.validate(name)?;
        }
        for (name, queue) in &self.queues {
            queue.validate(name)?;
        }
        for (name, view) in &self.views {
            view.validate(name, &self.sinks, self.gateway.request_deadline_ms)?;
        }
        Ok(())
    }

    /// A Kafka outage must be answered as such before the gateway's request deadline.
    fn check_produce_timeout(&self) -> Result<(), ConfigError> {
        if self.kafka.produce_timeout_ms + 250 > self.gateway.request_deadline_ms {
            return Err(crate::check::invalid(
                "kafka.produce_timeout_ms",
                format!(
                    "{} must stay at least 250 ms below gateway.request_deadline_ms ({}) so a \
                     Kafka outage is answered as such before the request deadline",
                    self.kafka.produce_timeout_ms, self.gateway.request_deadline_ms
                ),
            ));
        }
        Ok(())
    }

    /// The secrets published with spillway are refused outside the local stack: whoever
    /// holds one can sign a token for any member, any scope, or an admission.
    fn refuse_sample_secrets(&self) -> Result<(), ConfigError> {
        if self.local_stack {
            return Ok(());
        }
        for (key, variable, secret) in [
            ("jwt_secret", "SPILLWAY_JWT_SECRET", &self.jwt_secret),
            (
                "admission.secret",
                "SPILLWAY_ADMISSION__SECRET",
                &self.admission.secret,
            ),
        ] {
            if secret.is_sample() {
                return Err(crate::check::invalid(
                    key,
                    format!(
                        "this is a sample secret published with spillway, accepted on the local \
                         stack only (SPILLWAY_LOCAL_STACK=1); set {variable} to a secret of \
                         your own (at least 32 random characters)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The effective configuration as pretty JSON, secrets masked, for the start-up log.
    pub fn to_masked_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("<unprintable: {e}>"))
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
    fn a_counter_batch_of_no_events_is_refused_naming_its_key() {
        let mut settings = Settings::default();
        assert_eq!(settings.counter.batch_max_events, 10_000);
        settings.counter.batch_max_events = 0;
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("counter.batch_max_events"), "{error}");
    }

    #[test]
    fn a_produce_timeout_reaching_the_request_deadline_is_refused() {
        let mut settings = Settings::default();
        settings.kafka.produce_timeout_ms = settings.gateway.request_deadline_ms;
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("kafka.produce_timeout_ms"), "{error}");
    }

    #[test]
    fn telemetry_is_off_by_default_and_a_bad_value_names_its_key() {
        let settings = Settings::default();
        assert!(!settings.telemetry.exports());
        let mut bad_ratio = Settings::default();
        bad_ratio.telemetry.sample_ratio = 1.5;
        let error = bad_ratio.validate().unwrap_err().to_string();
        assert!(error.contains("telemetry.sample_ratio"), "{error}");
        let mut bad_endpoint = Settings::default();
        bad_endpoint.telemetry.otlp_endpoint = "jaeger:4318".into();
        let error = bad_endpoint.validate().unwrap_err().to_string();
        assert!(error.contains("telemetry.otlp_endpoint"), "{error}");
    }

    #[test]
    fn a_whole_sample_ratio_is_read_as_a_ratio() {
        // The Helm chart writes 1.0 as 1.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("telemetry.toml");
        std::fs::write(
            &path,
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nsample_ratio = 1\n",
        )
        .unwrap();
        let settings = Settings::load_file(&path).unwrap();
        assert_eq!(settings.telemetry.sample_ratio, 1.0);
        assert!(settings.telemetry.exports());
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
    fn cors_origins_are_origins() {
        let mut settings = Settings::default();
        settings.gateway.cors_origins = vec!["https://app.example".into(), "http://a:8000".into()];
        settings.validate().unwrap();
        for bad in [
            "*",
            "https://app.example/",
            "app.example",
            "ftp://a",
            "https://*.example",
        ] {
            settings.gateway.cors_origins = vec![bad.into()];
            let error = settings.validate().unwrap_err().to_string();
            assert!(error.contains("`gateway.cors_origins`"), "{bad}: {error}");
        }
    }

    #[test]
    fn sample_secrets_are_refused_outside_the_local_stack() {
        for sample in crate::secret::SAMPLE_SECRETS {
            let mut settings = Settings {
                jwt_secret: Secret::new(sample),
                ..Settings::default()
            };
            let error = settings.validate().unwrap_err().to_string();
            assert!(error.contains("`jwt_secret`"), "{error}");
            assert!(!error.contains(sample), "the value is not printed: {error}");
            settings.local_stack = true;
            settings.validate().unwrap();
        }
        let mut settings = Settings::default();
        settings.admission.secret = Secret::new("dev-secret-change-me");
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("`admission.secret`"), "{error}");
    }

    #[test]
    fn the_local_stack_flag_reads_like_an_environment_variable() {
        let dir = tempfile::tempdir().unwrap();
        for (text, expected) in [("1", true), ("true", true), ("0", false), ("\"yes\"", true)] {
            let path = dir.path().join("flag.toml");
            std::fs::write(&path, format!("local_stack = {text}\n")).unwrap();
            let settings = Settings::load_from(Some(path)).unwrap();
            assert_eq!(settings.local_stack, expected, "{text}");
        }
    }

    #[test]
    fn a_topic_with_no_partitions_names_its_key() {
        let mut settings = Settings::default();
        settings.kafka.dlq.partitions = 0;
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("`kafka.dlq.partitions`"), "{error}");
    }

    #[test]
    fn a_redis_cluster_is_named_by_its_seed_nodes_as_the_environment_gives_them() {
        use figment::providers::Serialized;
        // What `cargo xtask env --cluster` exports, parsed as the `SPILLWAY_` provider does.
        let nodes: figment::value::Value =
            r#"["redis://127.0.0.1:17001","redis://127.0.0.1:17002"]"#
                .parse()
                .unwrap();
        let settings: Settings = Figment::new()
            .merge(Serialized::default("redis.mode", "cluster"))
            .merge(Serialized::default("redis.nodes", nodes))
            .extract()
            .unwrap();
        settings.validate().unwrap();
        assert_eq!(settings.redis.mode, RedisMode::Cluster);
        assert_eq!(settings.redis.nodes.len(), 2);
        assert_eq!(settings.redis.replicas_to_wait_for(), 1);
        assert_eq!(Settings::default().redis.replicas_to_wait_for(), 0);
    }

    /// A change that spoils one Redis setting.
    type SpoilRedis = fn(&mut RedisSettings);

    #[test]
    fn bad_redis_settings_name_their_key() {
        let cases: [(&str, SpoilRedis); 5] = [
            ("`redis.nodes`", |redis| redis.mode = RedisMode::Cluster),
            ("`redis.nodes`", |redis| {
                redis.mode = RedisMode::Cluster;
                redis.nodes = vec![Secret::new("127.0.0.1:17001")];
            }),
            ("`redis.key_prefix`", |redis| {
                redis.key_prefix = "{t1}:".into()
            }),
            ("`redis.wait_timeout_ms`", |redis| {
                redis.wait_timeout_ms = 1_000
            }),
            ("`redis.wait_replicas`", |redis| {
                redis.wait_replicas = Some(9)
            }),
        ];
        for (key, spoil) in cases {
            let mut settings = Settings::default();
            spoil(&mut settings.redis);
            let error = settings.validate().unwrap_err().to_string();
            assert!(error.contains(key), "{key}: {error}");
        }
    }

    #[test]
    fn topics_cannot_ask_for_more_in_sync_replicas_than_copies() {
        let mut settings = Settings::default();
        settings.kafka.replication_factor = Some(3);
        settings.kafka.min_insync_replicas = Some(2);
        settings.validate().unwrap();
        settings.kafka.min_insync_replicas = Some(4);
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("`kafka.min_insync_replicas`"), "{error}");
        settings.kafka.replication_factor = Some(0);
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("`kafka.replication_factor`"), "{error}");
    }
}
