//! The counting workload of the counter tests: likes, unlikes and views over many entities
//! and members, half through the gateway and half published straight to Kafka by an outside
//! producer, with the exact values they must end at.
//!
//! Each (entity, member) pair's events come from one sequential client, so their order (and
//! so the final membership) is known; sums do not depend on order.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::join_all;
use prost::Message;
use rand::{Rng, SeedableRng, rngs::StdRng};
use spillway_core::wire::{self, CounterEvent, CounterOperation};

use crate::{TestConfig, api::Api, db, kafka, redis_client};

pub const LIKES: &str = "video-likes";
pub const VIEWS: &str = "video-views";

#[derive(Debug, Clone)]
pub enum Op {
    Like { entity: String, member: String },
    Unlike { entity: String, member: String },
    View { entity: String, delta: i64 },
}

/// The events of one run and the values they must produce.
pub struct Workload {
    /// Sequential lanes of gateway calls (run concurrently with each other).
    pub gateway_lanes: Vec<Vec<Op>>,
    /// Events for the outside producer, in order.
    pub producer_ops: Vec<Op>,
    pub entities: Vec<String>,
    pub expected_likes: BTreeMap<String, i64>,
    pub expected_members: BTreeSet<(String, String)>,
    pub expected_views: BTreeMap<String, i64>,
}

impl Workload {
    /// `events` in all, over `entities` entities and `members` members, from a fixed seed.
    pub fn generate(
        seed: u64,
        events: usize,
        entities: usize,
        members: usize,
        lanes: usize,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let entity_ids: Vec<String> = (0..entities).map(|i| format!("e{i}")).collect();
        let mut liked: BTreeMap<(String, String), bool> = BTreeMap::new();
        let mut views: BTreeMap<String, i64> = BTreeMap::new();
        let mut gateway_lanes = vec![Vec::new(); lanes];
        let mut producer_ops = Vec::new();
        for _ in 0..events {
            let entity = entity_ids[rng.random_range(0..entities)].clone();
            let member_index = rng.random_range(0..members);
            let through_gateway = member_index < members / 2;
            let op = if rng.random_bool(0.3) {
                let delta = rng.random_range(1..=5);
                *views.entry(entity.clone()).or_default() += delta;
                Op::View { entity, delta }
            } else {
                let member = format!("m{member_index}");
                let like = rng.random_bool(0.7);
                liked.insert((entity.clone(), member.clone()), like);
                if like {
                    Op::Like { entity, member }
                } else {
                    Op::Unlike { entity, member }
                }
            };
            if through_gateway {
                gateway_lanes[member_index % lanes].push(op);
            } else {
                producer_ops.push(op);
            }
        }
        let expected_members: BTreeSet<(String, String)> = liked
            .into_iter()
            .filter(|(_, like)| *like)
            .map(|(pair, _)| pair)
            .collect();
        let mut expected_likes: BTreeMap<String, i64> =
            entity_ids.iter().map(|e| (e.clone(), 0)).collect();
        for (entity, _) in &expected_members {
            *expected_likes.entry(entity.clone()).or_default() += 1;
        }
        let expected_views = entity_ids
            .iter()
            .map(|e| (e.clone(), views.get(e).copied().unwrap_or(0)))
            .collect();
        Self {
            gateway_lanes,
            producer_ops,
            entities: entity_ids,
            expected_likes,
            expected_members,
            expected_views,
        }
    }

    pub fn event_count(&self) -> usize {
        self.producer_ops.len() + self.gateway_lanes.iter().map(Vec::len).sum::<usize>()
    }

    /// Runs the gateway lanes and the outside producer at once. Gateway calls that fail
    /// (503 while a dependency restarts) are retried: an unacknowledged call did not count.
    pub async fn run(&self, api: &Api, config: &TestConfig) {
        let lanes = self.gateway_lanes.iter().map(|lane| run_lane(api, lane));
        let producer = publish_all(config, &self.producer_ops);
        let (_, ()) = futures::join!(join_all(lanes), producer);
    }

    /// Waits until Redis (through the API) and the database hold exactly the expected values.
    pub async fn assert_exact(&self, api: &Api, config: &TestConfig, timeout: std::time::Duration) {
        let database = db::connect(config).await;
        let redis = redis_client::connect().await;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mismatch = self
                .mismatch(api, config, &database, &mut redis.clone())
                .await;
            match mismatch {
                None => return,
                Some(mismatch) if tokio::time::Instant::now() > deadline => {
                    panic!("not exact after {timeout:?}: {mismatch}")
                }
                Some(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
            }
        }
    }

    /// The first difference from the expected state, if any.
    pub async fn mismatch(
        &self,
        api: &Api,
        config: &TestConfig,
        database: &sea_orm::DatabaseConnection,
        redis: &mut impl redis::aio::ConnectionLike,
    ) -> Option<String> {
        for (namespace, expected) in [(LIKES, &self.expected_likes), (VIEWS, &self.expected_views)]
        {
            for (entity, value) in expected {
                let in_redis =
                    redis_client::counter_value(redis, &config.key_prefix, namespace, entity)
                        .await
                        .unwrap_or(0);
                if in_redis != *value {
                    return Some(format!(
                        "Redis {namespace}/{entity}: {in_redis}, expected {value}"
                    ));
                }
                let in_db = db::counter_value(database, namespace, entity).await;
                if in_db != *value {
                    return Some(format!(
                        "database {namespace}/{entity}: {in_db}, expected {value}"
                    ));
                }
            }
        }
        let members = db::scalar(
            database,
            "SELECT count(*) AS n FROM counter_members WHERE namespace = 'video-likes'",
            vec![],
        )
        .await;
        if members != self.expected_members.len() as i64 {
            return Some(format!(
                "counter_members rows: {members}, expected {}",
                self.expected_members.len()
            ));
        }
        let mirrored = db::scalar(
            database,
            "SELECT COALESCE(sum(like_count), 0)::bigint AS n FROM videos",
            vec![],
        )
        .await;
        if mirrored != self.expected_members.len() as i64 {
            return Some(format!(
                "videos.like_count total: {mirrored}, expected {}",
                self.expected_members.len()
            ));
        }
        let sample = &self.entities[0];
        let via_api = api.value(LIKES, sample).await;
        if via_api != self.expected_likes[sample] {
            return Some(format!(
                "API {LIKES}/{sample}: {via_api}, expected {}",
                self.expected_likes[sample]
            ));
        }
        None
    }
}

async fn run_lane(api: &Api, lane: &[Op]) {
    for op in lane {
        // The same key on every attempt makes a retry after an unclear failure count once.
        let key = uuid::Uuid::new_v4().to_string();
        for attempt in 0.. {
            let (status, body) = match op {
                Op::Like { entity, member } => api.like(LIKES, entity, member).await,
                Op::Unlike { entity, member } => api.unlike(LIKES, entity, member).await,
                Op::View { entity, delta } => {
                    api.increment(VIEWS, entity, *delta, Some(&key)).await
                }
            };
            if status == 202 {
                break;
            }
            assert_eq!(
                status, 503,
                "only a dependency outage may refuse a valid call: {body}"
            );
            assert!(attempt < 600, "the gateway kept refusing: {body}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

fn event(op: &Op) -> CounterEvent {
    let (namespace, entity, member, operation, delta) = match op {
        Op::Like { entity, member } => (
            LIKES,
            entity,
            member.as_str(),
            CounterOperation::AddMember,
            0,
        ),
        Op::Unlike { entity, member } => (
            LIKES,
            entity,
            member.as_str(),
            CounterOperation::RemoveMember,
            0,
        ),
        Op::View { entity, delta } => (VIEWS, entity, "", CounterOperation::Increment, *delta),
    };
    CounterEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        accepted_at: Some(wire::now()),
        request_id: "outside-producer".into(),
        namespace: namespace.into(),
        entity_id: entity.clone(),
        member: member.into(),
        operation: operation as i32,
        delta,
        never_resent: false,
    }
}

/// Publishes in order (idempotent producer: order kept per partition), half as JSON.
async fn publish_all(config: &TestConfig, ops: &[Op]) {
    let producer = kafka::producer();
    for chunk in ops.chunks(500) {
        let sends = chunk.iter().enumerate().map(|(i, op)| {
            let event = event(op);
            let key = format!("{}/{}", event.namespace, event.entity_id);
            let producer = producer.clone();
            let topic = config.counter_topic.clone();
            async move {
                if i % 2 == 0 {
                    kafka::publish(&producer, &topic, &key, &event.encode_to_vec(), &[]).await;
                } else {
                    let json = serde_json::to_vec(&event).expect("json");
                    kafka::publish(
                        &producer,
                        &topic,
                        &key,
                        &json,
                        &[("content-type", "application/json")],
                    )
                    .await;
                }
            }
        });
        join_all(sends).await;
    }
}
