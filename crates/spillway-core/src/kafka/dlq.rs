//! The dead-letter topic. A message that cannot be decoded, or that the database rejects, is
//! wrapped in a [`DeadLetter`] and sent here with headers naming its source topic, partition,
//! offset and the reason, so the source partition never stops.

use crate::wire::{self, DeadLetter};

use super::{KafkaError, producer::EventProducer};

pub const SOURCE_TOPIC_HEADER: &str = "spillway-dlq-source-topic";
pub const SOURCE_PARTITION_HEADER: &str = "spillway-dlq-source-partition";
pub const SOURCE_OFFSET_HEADER: &str = "spillway-dlq-source-offset";
pub const REASON_HEADER: &str = "spillway-dlq-reason";
pub const SERVICE_HEADER: &str = "spillway-dlq-service";

/// Where a failed message came from.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub content_type: Option<&'a str>,
    pub request_id: Option<&'a str>,
}

/// Sends failed messages to the DLQ topic.
#[derive(Clone)]
pub struct DeadLetterQueue {
    producer: EventProducer,
    topic: String,
    service: &'static str,
}

impl DeadLetterQueue {
    pub fn new(producer: EventProducer, topic: String, service: &'static str) -> Self {
        Self {
            producer,
            topic,
            service,
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends one dead letter and waits for the broker's acknowledgement.
    pub async fn send(&self, source: &Source<'_>, reason: &str) -> Result<(), KafkaError> {
        let letter = DeadLetter {
            event_id: uuid::Uuid::now_v7().to_string(),
            accepted_at: Some(wire::now()),
            request_id: source.request_id.unwrap_or_default().to_owned(),
            service: self.service.to_owned(),
            source_topic: source.topic.to_owned(),
            source_partition: source.partition,
            source_offset: source.offset,
            reason: reason.to_owned(),
            key: source.key.unwrap_or_default().to_vec(),
            payload: source.payload.unwrap_or_default().to_vec(),
            content_type: source.content_type.unwrap_or_default().to_owned(),
        };
        let partition = source.partition.to_string();
        let offset = source.offset.to_string();
        let headers = [
            (SOURCE_TOPIC_HEADER, source.topic),
            (SOURCE_PARTITION_HEADER, partition.as_str()),
            (SOURCE_OFFSET_HEADER, offset.as_str()),
            (REASON_HEADER, reason),
            (SERVICE_HEADER, self.service),
        ];
        let key = source.key.unwrap_or_default();
        self.producer
            .publish(&self.topic, key, &letter, &headers)
            .await?;
        Ok(())
    }
}
