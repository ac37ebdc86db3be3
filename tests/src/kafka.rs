//! Kafka as an outside client sees it: publishing raw messages (protobuf, JSON, garbage),
//! reading a topic, and a consumer group's committed offsets.

use std::time::Duration;

use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    message::{Header, Headers, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
    util::Timeout,
};

use crate::stack::Stack;

/// A producer that is not spillway: idempotent, acks=all, Java-compatible partitioning.
pub fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", Stack::current().kafka)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        .create()
        .expect("test producer")
}

/// Publishes one record with headers and waits for the broker's acknowledgement.
pub async fn publish(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: &[(&str, &str)],
) {
    let mut owned = OwnedHeaders::new();
    for (name, value) in headers {
        owned = owned.insert(Header {
            key: name,
            value: Some(value.as_bytes()),
        });
    }
    producer
        .send(
            FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .headers(owned),
            Timeout::After(Duration::from_secs(10)),
        )
        .await
        .map_err(|(error, _)| error)
        .expect("publish to kafka");
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Reads every record of a topic from the beginning until `expected` are seen or `timeout`.
pub fn read_topic(topic: &str, expected: usize, timeout: Duration) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", Stack::current().kafka)
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("reader");
    consumer.subscribe(&[topic]).expect("subscribe");
    let started = std::time::Instant::now();
    let mut records = Vec::new();
    while records.len() < expected && started.elapsed() < timeout {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let headers = message
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
            records.push(Record {
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
    }
    records
}

/// Total committed offsets of `group` on `topic`, and the topic's total end offsets.
pub fn committed_and_end(group: &str, topic: &str) -> (i64, i64) {
    let consumer = offset_reader(group);
    let partitions = partitions_of(&consumer, topic);
    let committed_total: i64 = committed_offsets(&consumer, topic, &partitions)
        .elements()
        .iter()
        .map(|element| match element.offset() {
            Offset::Offset(offset) => offset,
            _ => 0,
        })
        .sum();
    (committed_total, end_total(&consumer, topic, &partitions))
}

/// The topic's total end offsets (how many records were ever written to it).
pub fn end_offsets(topic: &str) -> i64 {
    let consumer = offset_reader("spillway-tests-offset-reader");
    let partitions = partitions_of(&consumer, topic);
    end_total(&consumer, topic, &partitions)
}

const OFFSET_TIMEOUT: Duration = Duration::from_secs(10);

fn offset_reader(group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", Stack::current().kafka)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("offset reader")
}

fn partitions_of(consumer: &BaseConsumer, topic: &str) -> Vec<i32> {
    let metadata = consumer
        .fetch_metadata(Some(topic), OFFSET_TIMEOUT)
        .expect("metadata");
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect()
}

/// Committed offsets, retried while the group coordinator is still being
/// elected or loaded (a freshly started broker answers NotCoordinator for a
/// few seconds).
fn committed_offsets(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for partition in partitions {
        list.add_partition(topic, *partition);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match consumer.committed_offsets(list.clone(), OFFSET_TIMEOUT) {
            Ok(committed) => return committed,
            Err(error) if std::time::Instant::now() < deadline => {
                eprintln!("committed offsets not readable yet ({error}); retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(error) => panic!("committed offsets: {error}"),
        }
    }
}

fn end_total(consumer: &BaseConsumer, topic: &str, partitions: &[i32]) -> i64 {
    partitions
        .iter()
        .map(|partition| {
            consumer
                .fetch_watermarks(topic, *partition, OFFSET_TIMEOUT)
                .expect("watermarks")
                .1
        })
        .sum()
}
