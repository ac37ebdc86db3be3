//! What the user writes for waiting rooms: queues are configured by name pattern
//! (`concert-*`, `[queues.<name>]`), each with a capacity, an admission rate, a session TTL
//! and a heartbeat timeout; and how admissions are signed (`[admission]`).

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    check::{ConfigError, NameRule, in_range, invalid},
    secret::Secret,
};

/// Queue names: they appear in URLs and Redis hash tags.
pub const QUEUE_NAME: NameRule = NameRule {
    what: "a queue name",
    max_len: 128,
    extra: "._-",
};

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

    /// Checks one `[queues.<name>]` entry.
    pub fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let key = |field: &str| format!("queues.{name}.{field}");
        let stem = self.pattern.strip_suffix('*').unwrap_or(&self.pattern);
        if !(stem.is_empty() || QUEUE_NAME.accepts(stem)) {
            return Err(invalid(
                &key("pattern"),
                "a queue name, or a prefix of [A-Za-z0-9._-] ending in `*`",
            ));
        }
        in_range(&key("capacity"), u64::from(self.capacity), 1..=10_000_000)?;
        in_range(
            &key("admit_per_minute"),
            u64::from(self.admit_per_minute),
            1..=10_000_000,
        )?;
        in_range(
            &key("session_ttl_seconds"),
            self.session_ttl_seconds,
            1..=7 * 24 * 3_600,
        )?;
        in_range(
            &key("heartbeat_timeout_seconds"),
            self.heartbeat_timeout_seconds,
            1..=3_600,
        )
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

impl AdmissionSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        in_range("admission.ttl_seconds", self.ttl_seconds, 1..=3_600)
    }
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
        let error = settings.validate("concerts").unwrap_err().to_string();
        assert!(error.contains("queues.concerts.capacity"), "{error}");
        let error = family("a b*").validate("x").unwrap_err().to_string();
        assert!(error.contains("queues.x.pattern"), "{error}");
    }
}
