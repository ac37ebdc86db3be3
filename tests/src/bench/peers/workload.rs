//! The events both sides of `bench peers` read: generated once from a seed, published once
//! to a fresh topic, then consumed by the peer and by spillway in turn (each its own group),
//! so the keys, the order and the bytes are the same for both.
//!
//! - Counter events: the protobuf JSON mapping of `spillway.v1.CounterEvent` (increments of
//!   1, key `namespace/entity_id`), with `content-type: application/json` so spillway's
//!   counter reads them as an outside producer's; Kafka Streams ignores the header.
//! - Write events: the protobuf JSON mapping of `spillway.v1.WriteEvent`, the row in `row`;
//!   Kafka Connect reads the same message with a fixed schema (`schema.content`) and keeps
//!   only `row` (the `ExtractField` transform).

use std::time::Duration;

use futures::future::join_all;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
    util::Timeout,
};

use crate::stack::Stack;

const SEED: u64 = 20_261_201;
const BODY_BYTES: usize = 120;
const PUBLISH_CHUNK: usize = 5_000;
const TOPIC_PARTITIONS: i32 = 3;

/// How the events' keys are drawn.
#[derive(Debug, Clone, Copy)]
pub enum KeyDistribution {
    /// Zipf with exponent 1 (the discrete Pareto law): key `k` drawn in proportion to
    /// `1 / (k + 1)`; over 10,000 keys the hottest has about 10% of the events and the
    /// hottest fifth about 84%.
    Zipf,
    Uniform,
}

/// One Kafka record, as published.
pub struct Record {
    pub key: String,
    pub payload: Vec<u8>,
}

/// A counter workload: `events` increments of 1 spread over `keys` entities of `namespace`.
#[derive(Debug, Clone)]
pub struct CounterWorkload {
    pub namespace: String,
    pub keys: usize,
    pub events: usize,
    pub distribution: KeyDistribution,
}

impl CounterWorkload {
    /// The events, in the order they are published; every run draws the same ones.
    pub fn records(&self) -> Vec<Record> {
        let mut rng = StdRng::seed_from_u64(SEED);
        let zipf = ZipfKeys::new(self.keys);
        (0..self.events)
            .map(|i| {
                let entity = format!("e{}", self.entity_index(&mut rng, &zipf));
                let event = serde_json::json!({
                    "eventId": format!("peers-{SEED}-{i}"),
                    "namespace": self.namespace,
                    "entityId": entity,
                    "operation": "COUNTER_OPERATION_INCREMENT",
                    "delta": "1",
                });
                Record {
                    key: format!("{}/{entity}", self.namespace),
                    payload: event.to_string().into_bytes(),
                }
            })
            .collect()
    }

    /// The sum every consumer must end with (every delta is 1).
    pub fn expected_sum(&self) -> i64 {
        self.events as i64
    }

    fn entity_index(&self, rng: &mut StdRng, zipf: &ZipfKeys) -> usize {
        match self.distribution {
            KeyDistribution::Uniform => rng.random_range(0..self.keys),
            KeyDistribution::Zipf => zipf.draw(rng),
        }
    }
}

/// Draws key indexes with Zipf's law (exponent 1) by inverting its cumulative weights.
struct ZipfKeys {
    cumulative: Vec<f64>,
}

impl ZipfKeys {
    fn new(keys: usize) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=keys)
            .map(|rank| {
                total += 1.0 / rank as f64;
                total
            })
            .collect();
        Self { cumulative }
    }

    /// An index in `0..keys`; index 0 is the hottest key.
    fn draw(&self, rng: &mut StdRng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let target = rng.random::<f64>() * total;
        self.cumulative
            .partition_point(|&weight| weight < target)
            .min(self.cumulative.len().saturating_sub(1))
    }
}

/// The share of the events on the hottest key (reported, so the skew is visible).
pub fn hottest_key_share(records: &[Record]) -> f64 {
    let mut per_key: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for record in records {
        *per_key.entry(record.key.as_str()).or_default() += 1;
    }
    let hottest = per_key.values().copied().max().unwrap_or(0);
    hottest as f64 / records.len().max(1) as f64
}

/// One row of the writes workload: `(id, member, body, created_ms)`.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub member: String,
    pub body: String,
    pub created_ms: i64,
}

/// `rows` rows with distinct ids, a 120-byte body each; every run draws the same ones.
pub fn rows(rows: usize) -> Vec<Row> {
    let mut rng = StdRng::seed_from_u64(SEED);
    let started_ms = 1_764_547_200_000_i64;
    (0..rows)
        .map(|i| Row {
            id: i as i64 + 1,
            member: format!("m{}", rng.random_range(0..10_000)),
            body: (0..BODY_BYTES)
                .map(|_| char::from(rng.random_range(b'a'..=b'z')))
                .collect(),
            created_ms: started_ms + i as i64,
        })
        .collect()
}

/// The write events of `rows` for `sink`, keyed by the row's id.
pub fn write_records(sink: &str, rows: &[Row]) -> Vec<Record> {
    rows.iter()
        .map(|row| {
            let event = serde_json::json!({
                "eventId": format!("peers-{SEED}-{}", row.id),
                "sink": sink,
                "rowId": row.id.to_string(),
                "operation": "WRITE_OPERATION_UPSERT",
                "row": {
                    "id": row.id,
                    "member": row.member,
                    "body": row.body,
                    "created_ms": row.created_ms,
                },
            });
            Record {
                key: row.id.to_string(),
                payload: event.to_string().into_bytes(),
            }
        })
        .collect()
}

/// The rows as CSV for `COPY (id, member, body, created_ms)`.
pub fn rows_csv(rows: &[Row]) -> String {
    let mut csv = String::with_capacity(rows.len() * (BODY_BYTES + 40));
    for row in rows {
        csv.push_str(&format!(
            "{},{},{},{}\n",
            row.id, row.member, row.body, row.created_ms
        ));
    }
    csv
}

/// A fresh topic of three partitions for one workload.
pub async fn create_topic(name: &str) -> anyhow::Result<()> {
    spillway_core::kafka::admin::ensure_topics(
        &Stack::current().kafka,
        &[(name.to_owned(), TOPIC_PARTITIONS)],
    )
    .await?;
    Ok(())
}

/// What publishing left: the last key written to each partition (a consumer that commits
/// each partition in order has everything once it has these).
pub struct Published {
    pub last_key_per_partition: Vec<String>,
}

/// Publishes `records` in order (JSON content type), in chunks sent concurrently.
pub async fn publish(topic: &str, records: &[Record]) -> anyhow::Result<Published> {
    let producer = crate::kafka::producer();
    let mut last: std::collections::BTreeMap<i32, (i64, String)> = Default::default();
    for chunk in records.chunks(PUBLISH_CHUNK) {
        let sends = chunk.iter().map(|record| send(&producer, topic, record));
        for (record, delivered) in chunk.iter().zip(join_all(sends).await) {
            let (partition, offset) = delivered?;
            let entry = last
                .entry(partition)
                .or_insert((offset, record.key.clone()));
            if offset >= entry.0 {
                *entry = (offset, record.key.clone());
            }
        }
    }
    Ok(Published {
        last_key_per_partition: last.into_values().map(|(_, key)| key).collect(),
    })
}

async fn send(
    producer: &FutureProducer,
    topic: &str,
    record: &Record,
) -> anyhow::Result<(i32, i64)> {
    let headers = OwnedHeaders::new().insert(Header {
        key: spillway_core::wire::CONTENT_TYPE_HEADER,
        value: Some(spillway_core::wire::JSON_CONTENT_TYPE.as_bytes()),
    });
    let delivery = producer
        .send(
            FutureRecord::to(topic)
                .key(&record.key)
                .payload(&record.payload)
                .headers(headers),
            Timeout::After(Duration::from_secs(30)),
        )
        .await
        .map_err(|(error, _)| error)?;
    Ok((delivery.partition, delivery.offset))
}

#[cfg(test)]
mod tests {
    use spillway_core::wire::{self, CounterEvent, WireMessage, WriteEvent};

    use super::*;

    #[test]
    fn counter_events_are_valid_json_counter_events() {
        let workload = CounterWorkload {
            namespace: "peer-skewed".into(),
            keys: 100,
            events: 50,
            distribution: KeyDistribution::Zipf,
        };
        for record in workload.records() {
            let event: CounterEvent =
                wire::decode(Some(&record.payload), Some(wire::JSON_CONTENT_TYPE)).unwrap();
            event.validate().unwrap();
            assert_eq!(record.key, format!("peer-skewed/{}", event.entity_id));
            assert_eq!(event.delta, 1);
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_events() {
        let workload = CounterWorkload {
            namespace: "n".into(),
            keys: 1_000,
            events: 1_000,
            distribution: KeyDistribution::Zipf,
        };
        let keys = |records: Vec<Record>| records.into_iter().map(|r| r.key).collect::<Vec<_>>();
        assert_eq!(keys(workload.records()), keys(workload.records()));
    }

    #[test]
    fn zipf_keys_are_skewed_and_in_range() {
        let mut rng = StdRng::seed_from_u64(1);
        let zipf = ZipfKeys::new(10_000);
        let mut hits = vec![0usize; 10_000];
        for _ in 0..100_000 {
            hits[zipf.draw(&mut rng)] += 1;
        }
        let top_fifth: usize = hits[..2_000].iter().sum();
        assert!(
            (80_000..88_000).contains(&top_fifth),
            "top 20% of keys got {top_fifth} of 100000"
        );
        assert!((8_000..12_000).contains(&hits[0]), "hottest: {}", hits[0]);
    }

    #[test]
    fn write_events_are_valid_json_write_events() {
        let rows = rows(10);
        for (row, record) in rows.iter().zip(write_records("peer_rows", &rows)) {
            let event: WriteEvent =
                wire::decode(Some(&record.payload), Some(wire::JSON_CONTENT_TYPE)).unwrap();
            event.validate().unwrap();
            assert_eq!(event.row_id, row.id.to_string());
            assert_eq!(record.key, row.id.to_string());
            assert_eq!(row.body.len(), BODY_BYTES);
        }
    }
}
