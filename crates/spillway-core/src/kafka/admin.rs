//! Topic administration: spillway creates the topics it uses, with the configured partition
//! counts, replication factor and `min.insync.replicas`, at start. An existing topic is left
//! as it is (changing its partitions or replicas is an operator's decision: see
//! docs/operations.md, "Kafka with several brokers").

use std::time::Duration;

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    types::RDKafkaErrorCode,
};

use super::{KafkaError, base_config};
use crate::config::KafkaSettings;

/// How the topics spillway creates are replicated; `None` leaves it to the brokers'
/// defaults (`default.replication.factor`, `min.insync.replicas`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replication {
    pub factor: Option<i32>,
    pub min_insync_replicas: Option<i32>,
}

impl Replication {
    /// The brokers' defaults.
    pub const BROKER_DEFAULT: Self = Self {
        factor: None,
        min_insync_replicas: None,
    };

    pub fn from_settings(settings: &KafkaSettings) -> Self {
        Self {
            factor: settings.replication_factor,
            min_insync_replicas: settings.min_insync_replicas,
        }
    }

    /// The replication factor of a CreateTopics request: -1 asks for the brokers' default
    /// (KIP-464).
    fn factor_requested(&self) -> i32 {
        self.factor.unwrap_or(-1)
    }
}

/// Creates every `(name, partitions)` topic that does not exist yet, replicated as the
/// brokers' defaults say.
pub async fn ensure_topics(bootstrap: &str, topics: &[(String, i32)]) -> Result<(), KafkaError> {
    ensure_replicated_topics(bootstrap, topics, Replication::BROKER_DEFAULT).await
}

/// Creates every `(name, partitions)` topic that does not exist yet, with `replication`.
pub async fn ensure_replicated_topics(
    bootstrap: &str,
    topics: &[(String, i32)],
    replication: Replication,
) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> =
        base_config(bootstrap, "spillway-admin").create()?;
    let min_insync = replication.min_insync_replicas.map(|min| min.to_string());
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| {
            let topic = NewTopic::new(
                name,
                *partitions,
                TopicReplication::Fixed(replication.factor_requested()),
            );
            match &min_insync {
                Some(min) => topic.set("min.insync.replicas", min),
                None => topic,
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics(new_topics.iter(), &options).await?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::Admin(format!("creating topic {topic}: {code}")));
            }
        }
    }
    Ok(())
}
