//! What the user writes for template pools (`[templates]`): where copies go, how long they
//! stay ready, and how hard S3 is pushed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::check::{ConfigError, NameRule, in_range, invalid};

/// Template ids: they appear in URLs, S3 keys, Kafka keys and Redis hash tags.
pub const TEMPLATE_ID: NameRule = NameRule {
    what: "a template id",
    max_len: 128,
    extra: "._-",
};

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

    pub fn validate(&self) -> Result<(), ConfigError> {
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
            1..=365 * 24 * 3_600,
        )?;
        in_range(
            "templates.sweep_interval_ms",
            self.sweep_interval_ms,
            100..=86_400_000,
        )?;
        in_range(
            "templates.copy_timeout_ms",
            self.copy_timeout_ms,
            100..=3_600_000,
        )?;
        in_range(
            "templates.max_s3_in_flight",
            self.max_s3_in_flight as u64,
            1..=10_000,
        )?;
        in_range(
            "templates.copy_parallelism",
            self.copy_parallelism as u64,
            1..=1_000,
        )
    }
}
