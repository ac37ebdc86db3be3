//! [`Secret`]: a configuration value that never appears in logs or printed configuration.

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// Secrets published with spillway: the local stack's (`cargo xtask env`) and the tests'.
/// Anyone can sign member tokens and admissions with them, so the configuration refuses them
/// unless `local_stack` says the service runs on the local stack.
pub const SAMPLE_SECRETS: [&str; 2] = ["dev-secret-change-me", "test-secret"];

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

    /// Whether this is one of the [`SAMPLE_SECRETS`].
    pub fn is_sample(&self) -> bool {
        SAMPLE_SECRETS.contains(&self.0.as_str())
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
