//! Topic administration: spillway creates the topics it uses, with the configured partition
//! counts, replication factor and `min.insync.replicas`, at start. An existing topic is left
//! as it is (changing its partitions or replicas is an operator's decision: see
//! docs/operations.md, "Scaling out", "Several Kafka brokers"). A topic created here is
//! waited for until every partition has a leader, so the service's first produce after its
//! start does not meet a topic the brokers are still setting up (on several brokers with
//! replication that takes a while, and the gateway's produce deadline is short).

use std::time::{Duration, Instant};

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    metadata::MetadataTopic,
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
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(topic) => created.push(topic),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::Admin(format!("creating topic {topic}: {code}")));
            }
        }
    }
    if !created.is_empty() {
        let bootstrap = bootstrap.to_owned();
        tokio::task::spawn_blocking(move || wait_for_leaders(&bootstrap, &created))
            .await
            .map_err(|error| KafkaError::Admin(format!("waiting for new topics: {error}")))?;
    }
    Ok(())
}

/// The longest a service waits at start for the topics it created to have their leaders;
/// past it the start goes on (a produce then waits for the leader within its own deadline).
const NEW_TOPIC_PATIENCE: Duration = Duration::from_secs(15);
const NEW_TOPIC_POLL: Duration = Duration::from_millis(100);

/// Waits (blocking: metadata requests) until every partition of each of `topics` has a
/// leader, or [`NEW_TOPIC_PATIENCE`] passed.
fn wait_for_leaders(bootstrap: &str, topics: &[String]) {
    let made: Result<AdminClient<DefaultClientContext>, _> =
        base_config(bootstrap, "spillway-admin").create();
    let Ok(client) = made else {
        return;
    };
    let deadline = Instant::now() + NEW_TOPIC_PATIENCE;
    let mut waiting: Vec<&String> = topics.iter().collect();
    while !waiting.is_empty() && Instant::now() < deadline {
        waiting.retain(|topic| {
            let metadata = client
                .inner()
                .fetch_metadata(Some(topic), NEW_TOPIC_POLL * 10);
            !matches!(metadata, Ok(metadata) if metadata.topics().iter().all(has_every_leader))
        });
        if !waiting.is_empty() {
            std::thread::sleep(NEW_TOPIC_POLL);
        }
    }
    if !waiting.is_empty() {
        tracing::warn!(
            topics = ?waiting,
            "new topics still without a leader for every partition after {} s; going on",
            NEW_TOPIC_PATIENCE.as_secs()
        );
    }
}

/// Whether the metadata shows the topic with partitions, each with a leader.
fn has_every_leader(topic: &MetadataTopic) -> bool {
    topic.error().is_none()
        && !topic.partitions().is_empty()
        && topic
            .partitions()
            .iter()
            .all(|partition| partition.error().is_none() && partition.leader() >= 0)
}
