//! Reading the DLQ topic from the consumer group's committed offsets (or the beginning) up to
//! its end at the time of the call, and moving the group's offsets (`purge`). The group only
//! stores offsets: the reader assigns partitions itself and never joins a rebalance.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use prost::Message as _;
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer},
    message::Headers,
};
use serde_json::{Value, json};
use spillway_core::{
    config::KafkaSettings,
    kafka::dlq,
    wire::{self, CounterEvent, DeadLetter, WarmupRequest, WriteEvent},
};

const TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a read of the topic may take.
const READ_DEADLINE: Duration = Duration::from_secs(60);

/// One dead letter and where it is.
pub struct Letter {
    pub partition: i32,
    pub offset: i64,
    /// When the letter was made (its `accepted_at`, else the record's timestamp).
    pub made_at: DateTime<Utc>,
    pub headers: Vec<(String, String)>,
    pub letter: DeadLetter,
}

impl Letter {
    /// The reason, from the header (or the letter).
    pub fn reason(&self) -> &str {
        self.header(dlq::REASON_HEADER)
            .unwrap_or(self.letter.reason.as_str())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// `<partition>:<offset>  <time>  <source>/<partition>/<offset>  <service>  <reason>`.
    pub fn summary(&self) -> String {
        let letter = &self.letter;
        format!(
            "{}:{}  {}  {}/{}/{}  {}  {}",
            self.partition,
            self.offset,
            self.made_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            letter.source_topic,
            letter.source_partition,
            letter.source_offset,
            letter.service,
            self.reason()
        )
    }

    /// The letter as JSON, with the payload decoded when the source topic is spillway's.
    pub fn describe(&self, kafka: &KafkaSettings) -> Value {
        let letter = &self.letter;
        json!({
            "dlq_partition": self.partition,
            "dlq_offset": self.offset,
            "made_at": self.made_at.to_rfc3339(),
            "headers": self
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), Value::String(value.clone())))
                .collect::<serde_json::Map<_, _>>(),
            "service": letter.service,
            "source_topic": letter.source_topic,
            "source_partition": letter.source_partition,
            "source_offset": letter.source_offset,
            "reason": letter.reason,
            "request_id": letter.request_id,
            "content_type": letter.content_type,
            "key": String::from_utf8_lossy(&letter.key),
            "payload": decoded_payload(kafka, letter),
        })
    }
}

/// The payload as the message it should have been, or as text, or as bytes.
fn decoded_payload(kafka: &KafkaSettings, letter: &DeadLetter) -> Value {
    let content_type = Some(letter.content_type.as_str()).filter(|c| !c.is_empty());
    let payload = Some(letter.payload.as_slice());
    let topic = letter.source_topic.as_str();
    let decoded = if topic == kafka.counter_events.name {
        wire::decode::<CounterEvent>(payload, content_type).map(|m| json!(m))
    } else if topic == kafka.warmup_requests.name {
        wire::decode::<WarmupRequest>(payload, content_type).map(|m| json!(m))
    } else if topic.starts_with(&kafka.writes_prefix) {
        wire::decode::<WriteEvent>(payload, content_type).map(|m| json!(m))
    } else {
        return json!({ "text": String::from_utf8_lossy(&letter.payload) });
    };
    match decoded {
        Ok(message) => json!({ "decoded": message }),
        Err(error) => json!({
            "undecodable": error.to_string(),
            "text": String::from_utf8_lossy(&letter.payload),
        }),
    }
}

/// The DLQ topic, read for one consumer group.
pub struct Reader {
    consumer: BaseConsumer,
    topic: String,
}

impl Reader {
    pub fn new(bootstrap: &str, topic: &str, group: &str) -> Result<Self> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("client.id", "spillway-admin")
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .context("creating the DLQ reader")?;
        Ok(Self {
            consumer,
            topic: topic.to_owned(),
        })
    }

    fn partitions(&self) -> Result<Vec<i32>> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), TIMEOUT)
            .context("reading the DLQ topic's metadata")?;
        let topic = metadata
            .topics()
            .first()
            .filter(|topic| topic.error().is_none())
            .with_context(|| format!("no topic {}", self.topic))?;
        Ok(topic.partitions().iter().map(|p| p.id()).collect())
    }

    /// Per partition: where reading starts (the group's committed offset, or the low
    /// watermark with `all`) and the end.
    fn ranges(&self, all: bool) -> Result<Vec<(i32, i64, i64)>> {
        let partitions = self.partitions()?;
        let committed = self.committed(&partitions)?;
        let mut ranges = Vec::new();
        for partition in partitions {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&self.topic, partition, TIMEOUT)?;
            let start = match (all, committed.get(&partition)) {
                (false, Some(offset)) => (*offset).max(low),
                _ => low,
            };
            ranges.push((partition, start, high));
        }
        Ok(ranges)
    }

    fn committed(&self, partitions: &[i32]) -> Result<std::collections::HashMap<i32, i64>> {
        let mut list = TopicPartitionList::new();
        for partition in partitions {
            list.add_partition(&self.topic, *partition);
        }
        let committed = self.consumer.committed_offsets(list, TIMEOUT)?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|element| match element.offset() {
                Offset::Offset(offset) => Some((element.partition(), offset)),
                _ => None,
            })
            .collect())
    }

    /// Every letter from the group's offsets (or the beginning) to the end, in order.
    pub fn read(&self, all: bool) -> Result<Vec<Letter>> {
        let ranges: Vec<_> = self
            .ranges(all)?
            .into_iter()
            .filter(|(_, start, end)| start < end)
            .collect();
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let mut assignment = TopicPartitionList::new();
        for (partition, start, _) in &ranges {
            assignment.add_partition_offset(&self.topic, *partition, Offset::Offset(*start))?;
        }
        self.consumer.assign(&assignment)?;
        let mut remaining: std::collections::HashMap<i32, i64> =
            ranges.iter().map(|(p, _, end)| (*p, *end)).collect();
        let mut letters = Vec::new();
        let started = Instant::now();
        while !remaining.is_empty() {
            anyhow::ensure!(
                started.elapsed() < READ_DEADLINE,
                "reading {} took longer than {READ_DEADLINE:?}",
                self.topic
            );
            let Some(message) = self.consumer.poll(Duration::from_millis(500)) else {
                continue;
            };
            let message = message?;
            let (partition, offset) = (message.partition(), message.offset());
            if let Some(letter) = letter(&message) {
                letters.push(letter);
            } else {
                eprintln!(
                    "{}:{partition}:{offset} is not a DeadLetter; skipped",
                    self.topic
                );
            }
            if remaining
                .get(&partition)
                .is_some_and(|end| offset + 1 >= *end)
            {
                remaining.remove(&partition);
            }
        }
        self.consumer.unassign()?;
        letters.sort_by_key(|letter| (letter.partition, letter.offset));
        Ok(letters)
    }

    /// Commits the group's offsets past every letter made until `until` (all of them when
    /// `None`); returns how many letters that marks.
    pub fn advance_group(&self, until: Option<DateTime<Utc>>) -> Result<usize> {
        let ranges = self.ranges(false)?;
        let letters = match until {
            Some(_) => self.read(false)?,
            None => Vec::new(),
        };
        let mut offsets = TopicPartitionList::new();
        let mut marked = 0;
        for (partition, start, end) in ranges {
            let next = match until {
                None => end,
                Some(until) => letters
                    .iter()
                    .filter(|l| l.partition == partition && l.made_at > until)
                    .map(|l| l.offset)
                    .min()
                    .unwrap_or(end),
            };
            marked += (next - start).max(0) as usize;
            offsets.add_partition_offset(&self.topic, partition, Offset::Offset(next))?;
        }
        self.consumer
            .commit(&offsets, CommitMode::Sync)
            .context("committing the group's offsets")?;
        Ok(marked)
    }
}

fn letter(message: &rdkafka::message::BorrowedMessage<'_>) -> Option<Letter> {
    let letter = DeadLetter::decode(message.payload()?).ok()?;
    let headers: Vec<(String, String)> = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let made_at = letter
        .accepted_at
        .as_ref()
        .and_then(|at| DateTime::from_timestamp(at.seconds, at.nanos.max(0) as u32))
        .or_else(|| {
            message
                .timestamp()
                .to_millis()
                .and_then(DateTime::from_timestamp_millis)
        })
        .unwrap_or_default();
    Some(Letter {
        partition: message.partition(),
        offset: message.offset(),
        made_at,
        headers,
        letter,
    })
}
