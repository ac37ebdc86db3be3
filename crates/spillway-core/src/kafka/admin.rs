//! Topic administration: spillway creates the topics it uses, with the configured partition
//! counts, at start. An existing topic is left as it is.

use std::time::Duration;

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    types::RDKafkaErrorCode,
};

use super::{KafkaError, base_config};

/// Creates every `(name, partitions)` topic that does not exist yet.
pub async fn ensure_topics(bootstrap: &str, topics: &[(String, i32)]) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> =
        base_config(bootstrap, "spillway-admin").create()?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
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
