//! Waiting-room configuration: queues are configured by name pattern (`concert-*`), each
//! with a capacity, an admission rate, a session TTL and a heartbeat timeout; the gateway
//! runs them over Redis (see `lua/queue_admit.lua`).

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Secret};

/// One family of queues (`[queues.<name>]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// Queue names this applies to: an exact name, or a prefix ending in `*`.
    pub pattern: String,
    /// Members active at once, at most.
    pub capacity: u32,
    /// New members admitted per minute, at most.
    pub admit_per_minute: u32,
    /// How long an admitted member's session lasts (default 10 minutes).
    #[serde(default = "default_session_ttl")]
    pub session_ttl_seconds: u64,
    /// A waiter who has not polled for this long leaves the line (default 60 s).
    #[serde(default = "default_heartbeat_timeout")]
    pub heartbeat_timeout_seconds: u64,
}

fn default_session_ttl() -> u64 {
    600
}

fn default_heartbeat_timeout() -> u64 {
    60
}

impl QueueSettings {
    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_seconds)
    }

    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_secs(self.heartbeat_timeout_seconds)
    }

    /// Whether `queue` is one of this family's queues.
    pub fn matches(&self, queue: &str) -> bool {
        match self.pattern.strip_suffix('*') {
            Some(prefix) => queue.starts_with(prefix),
            None => queue == self.pattern,
        }
    }
}

/// How admissions are signed (`[admission]`): a short-lived HS256 JWT that the protected
/// backend verifies offline.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct AdmissionSettings {
    /// The HS256 secret (`SPILLWAY_ADMISSION__SECRET`); empty means the member JWT secret.
    pub secret: Secret,
    /// Lifetime of one admission token (it never outlives the session).
    pub ttl_seconds: u64,
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        Self {
            secret: Secret::default(),
            ttl_seconds: 120,
        }
    }
}

/// The settings of `queue`: the matching family with the longest pattern.
pub fn settings_for<'a>(
    queues: &'a BTreeMap<String, QueueSettings>,
    queue: &str,
) -> Option<&'a QueueSettings> {
    queues
        .values()
        .filter(|settings| settings.matches(queue))
        .max_by_key(|settings| settings.pattern.len())
}

/// Whether a queue name is acceptable in a URL and a Redis hash tag.
pub fn valid_queue_name(queue: &str) -> bool {
    (1..=128).contains(&queue.len())
        && queue
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Checks one `[queues.<name>]` entry.
pub fn validate_queue(name: &str, settings: &QueueSettings) -> Result<(), ConfigError> {
    let key = |field: &str| format!("queues.{name}.{field}");
    let stem = settings
        .pattern
        .strip_suffix('*')
        .unwrap_or(&settings.pattern);
    if !(stem.is_empty() || valid_queue_name(stem)) {
        return Err(ConfigError::Invalid {
            key: key("pattern"),
            reason: "a queue name, or a prefix of [A-Za-z0-9._-] ending in `*`".into(),
        });
    }
    for (field, value, max) in [
        ("capacity", u64::from(settings.capacity), 10_000_000),
        (
            "admit_per_minute",
            u64::from(settings.admit_per_minute),
            10_000_000,
        ),
        (
            "session_ttl_seconds",
            settings.session_ttl_seconds,
            7 * 24 * 3_600,
        ),
        (
            "heartbeat_timeout_seconds",
            settings.heartbeat_timeout_seconds,
            3_600,
        ),
    ] {
        if !(1..=max).contains(&value) {
            return Err(ConfigError::Invalid {
                key: key(field),
                reason: format!("{value} is outside 1..={max}"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(pattern: &str) -> QueueSettings {
        QueueSettings {
            pattern: pattern.into(),
            capacity: 10,
            admit_per_minute: 60,
            session_ttl_seconds: 600,
            heartbeat_timeout_seconds: 60,
        }
    }

    #[test]
    fn the_longest_matching_pattern_wins() {
        let queues = BTreeMap::from([
            ("all".to_owned(), family("*")),
            ("concerts".to_owned(), family("concert-*")),
            ("vip".to_owned(), family("concert-vip")),
        ]);
        let pattern = |queue| settings_for(&queues, queue).map(|s| s.pattern.as_str());
        assert_eq!(pattern("concert-vip"), Some("concert-vip"));
        assert_eq!(pattern("concert-2026"), Some("concert-*"));
        assert_eq!(pattern("sale"), Some("*"));
        let only_concerts = BTreeMap::from([("c".to_owned(), family("concert-*"))]);
        assert_eq!(settings_for(&only_concerts, "sale"), None);
    }

    #[test]
    fn bad_entries_name_their_key() {
        let mut settings = family("concert-*");
        settings.capacity = 0;
        let error = validate_queue("concerts", &settings)
            .unwrap_err()
            .to_string();
        assert!(error.contains("queues.concerts.capacity"), "{error}");
        let error = validate_queue("x", &family("a b*"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("queues.x.pattern"), "{error}");
    }
}
