//! Kafka through rdkafka (bundled librdkafka):
//!
//! - [`producer`]: idempotent, `acks=all`; a send returns only once the broker holds the record.
//! - [`consumer`]: a consumer-group member that hands batches to a [`consumer::BatchHandler`],
//!   stores offsets only after the handler made the effect durable, and commits synchronously
//!   on revoke and on shutdown.
//! - [`dlq`]: the dead-letter topic, with headers saying where a message came from and why.
//! - [`admin`]: creates topics with their configured partition counts.

pub mod admin;
pub mod consumer;
pub mod dlq;
pub mod producer;

use rdkafka::ClientConfig;

/// The settings every client shares.
pub fn base_config(bootstrap: &str, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("client.id", client_id)
        .set("socket.keepalive.enable", "true")
        // A down broker should surface quickly instead of hiding behind long retries.
        .set("reconnect.backoff.max.ms", "1000")
        .set("topic.metadata.refresh.interval.ms", "10000");
    config
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("kafka: no acknowledgement within {0} ms")]
    Timeout(u64),
    #[error("kafka admin: {0}")]
    Admin(String),
}
