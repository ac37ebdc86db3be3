//! Exactly once at the edges, against the real gateway, Kafka, counter, batch-writer, Redis and
//! PostgreSQL: a gateway killed after the broker's ack and a retried Idempotency-Key, Redis
//! flushed under re-sent keys, an outside producer's event sent twice, counters killed at their
//! worst moments (made to happen by fail points, not by luck), partitions moving between
//! counters mid-load and while a flush stalls, a corrupt counter row, and pending-write markers that never show an older
//! write.

use std::time::Duration;

use prost::Message;
use rdkafka::producer::FutureProducer;
use serde_json::json;
use spillway_core::{
    faults,
    wire::{self, CounterEvent, CounterOperation},
};
use spillway_tests::{
    SAMPLE_NAMESPACES, SAMPLE_SINKS, TestConfig,
    api::Api,
    db, eventually, kafka, metric_sum,
    process::ServiceProcess,
    scenario::{LIKES, VIEWS, Workload},
    spawn_batch_writer, spawn_counter, spawn_gateway,
    views::{PrivateRedis, with_redis},
};

const SETTLE: Duration = Duration::from_secs(30);

/// Waits until the counter's value is `value` through the API and in `counter_values`, then
/// checks it stays so for a moment (nothing applied twice later).
async fn assert_settles_at(
    api: &Api,
    config: &TestConfig,
    namespace: &str,
    entity: &str,
    value: i64,
) {
    let database = db::connect(config).await;
    eventually(
        &format!("{namespace}/{entity} = {value} in Redis and the database"),
        SETTLE,
        || async {
            let cached = api.value(namespace, entity).await;
            let stored = db::counter_value(&database, namespace, entity).await;
            (cached == value && stored == value).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(api.value(namespace, entity).await, value);
    assert_eq!(db::counter_value(&database, namespace, entity).await, value);
}

/// A configuration whose services use a Redis of the test's own (so it may be flushed).
async fn with_private_redis(extra: &str) -> (TestConfig, PrivateRedis, tempfile::TempDir) {
    let redis = PrivateRedis::start("256mb", "noeviction").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = with_redis(&TestConfig::new(extra), &redis.url, &dir);
    (config, redis, dir)
}

/// The `videos` table the sample `video-likes` namespace mirrors into.
async fn create_videos(config: &TestConfig, ids: &[&str]) {
    let ids: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
    db::create_videos(&db::connect(config).await, &ids).await;
}

async fn flush_all(redis: &PrivateRedis) {
    let mut connection = redis.connect().await;
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut connection)
        .await
        .expect("FLUSHALL");
}

#[tokio::test]
async fn a_gateway_killed_after_the_brokers_ack_counts_the_retried_key_once() {
    let config = TestConfig::with_sample_namespaces();
    create_videos(&config, &[]).await;
    let counter = spawn_counter(&config).await;
    // This gateway stalls right after the broker acknowledged an event, before it answers.
    let stalled = ServiceProcess::start_with_env(
        "gateway",
        &config,
        &[("FAILPOINTS", "gateway::after_publish=sleep(60000)")],
    )
    .await;
    let before = kafka::end_offsets(&config.counter_topic);
    let url = stalled.url(&format!("/v1/counters/{VIEWS}/v1/increments"));
    let call = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .header("Idempotency-Key", "k1")
            .json(&json!({"delta": 7}))
            .timeout(Duration::from_secs(30))
            .send()
            .await
    });
    eventually(
        "the stalled gateway's event reached Kafka",
        Duration::from_secs(10),
        || async { (kafka::end_offsets(&config.counter_topic) > before).then_some(()) },
    )
    .await;
    stalled.kill_hard();
    assert!(
        call.await.unwrap().is_err(),
        "the killed gateway never answered"
    );

    let gateway = spawn_gateway(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    let (status, body) = api.increment(VIEWS, "v1", 7, Some("k1")).await;
    assert_eq!(status, 202, "{body}");
    assert_settles_at(&api, &config, VIEWS, "v1", 7).await;
    let (status, body) = api.increment(VIEWS, "v1", 7, Some("k1")).await;
    assert_eq!((status.as_u16(), &body["replayed"]), (202, &json!(true)));
    assert_eq!(kafka::end_offsets(&config.counter_topic), before + 2);
    gateway.stop().await.unwrap();
    counter.stop().await.unwrap();
}

#[tokio::test]
async fn a_hundred_keys_resent_after_redis_was_flushed_count_once() {
    let (config, redis, _dir) = with_private_redis(SAMPLE_NAMESPACES).await;
    create_videos(&config, &[]).await;
    let gateway = spawn_gateway(&config).await;
    let counter = spawn_counter(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    let key = |n: usize| format!("k{n}");
    let entity = |n: usize| format!("e{}", n % 10);
    let mut expected = [0i64; 10];
    for n in 0..100 {
        let delta = (n % 7 + 1) as i64;
        expected[n % 10] += delta;
        let (status, body) = api.increment(VIEWS, &entity(n), delta, Some(&key(n))).await;
        assert_eq!(status, 202, "{body}");
    }
    for (n, value) in expected.iter().enumerate() {
        assert_settles_at(&api, &config, VIEWS, &entity(n), *value).await;
    }
    flush_all(&redis).await;
    for n in 0..100 {
        let (status, body) = api
            .increment(VIEWS, &entity(n), (n % 7 + 1) as i64, Some(&key(n)))
            .await;
        assert_eq!(status, 202, "{body}");
        assert_ne!(
            body["replayed"], true,
            "Redis forgot the key: it was published again"
        );
    }
    for (n, value) in expected.iter().enumerate() {
        assert_settles_at(&api, &config, VIEWS, &entity(n), *value).await;
    }
    counter.stop().await.unwrap();
    gateway.stop().await.unwrap();
}

fn outside_view(event_id: &str, entity: &str, delta: i64) -> CounterEvent {
    CounterEvent {
        event_id: event_id.into(),
        accepted_at: Some(wire::now()),
        request_id: "outside".into(),
        namespace: VIEWS.into(),
        entity_id: entity.into(),
        member: String::new(),
        operation: CounterOperation::Increment as i32,
        delta,
        never_resent: false,
    }
}

async fn publish_json(producer: &FutureProducer, config: &TestConfig, event: &CounterEvent) {
    let key = format!("{}/{}", event.namespace, event.entity_id);
    let json = serde_json::to_vec(event).unwrap();
    kafka::publish(
        producer,
        &config.counter_topic,
        &key,
        &json,
        &[(wire::CONTENT_TYPE_HEADER, wire::JSON_CONTENT_TYPE)],
    )
    .await;
}

async fn publish_protobuf(producer: &FutureProducer, config: &TestConfig, event: &CounterEvent) {
    let key = format!("{}/{}", event.namespace, event.entity_id);
    kafka::publish(
        producer,
        &config.counter_topic,
        &key,
        &event.encode_to_vec(),
        &[],
    )
    .await;
}

#[tokio::test]
async fn an_outside_producers_event_sent_twice_as_json_and_protobuf_counts_once() {
    let (config, redis, _dir) = with_private_redis(SAMPLE_NAMESPACES).await;
    create_videos(&config, &[]).await;
    let gateway = spawn_gateway(&config).await;
    let counter = spawn_counter(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    let producer = kafka::producer();
    publish_json(&producer, &config, &outside_view("order-1", "v1", 3)).await;
    publish_protobuf(&producer, &config, &outside_view("order-1", "v1", 3)).await;
    publish_protobuf(&producer, &config, &outside_view("order-2", "v1", 4)).await;
    publish_json(&producer, &config, &outside_view("order-2", "v1", 4)).await;
    assert_settles_at(&api, &config, VIEWS, "v1", 7).await;
    // Redis lost: the ids come back from the database with the value.
    flush_all(&redis).await;
    publish_json(&producer, &config, &outside_view("order-1", "v1", 3)).await;
    publish_protobuf(&producer, &config, &outside_view("order-3", "v1", 1)).await;
    assert_settles_at(&api, &config, VIEWS, "v1", 8).await;
    counter.stop().await.unwrap();
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn an_idempotency_key_reused_with_another_delta_is_refused_and_changes_nothing() {
    let config = TestConfig::with_sample_namespaces();
    create_videos(&config, &[]).await;
    let gateway = spawn_gateway(&config).await;
    let counter = spawn_counter(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    let (status, _) = api.increment(VIEWS, "v1", 5, Some("pay-1")).await;
    assert_eq!(status, 202);
    let before = kafka::end_offsets(&config.counter_topic);
    let (status, body) = api.increment(VIEWS, "v1", 6, Some("pay-1")).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "Idempotency-Key");
    assert_eq!(kafka::end_offsets(&config.counter_topic), before);
    assert_settles_at(&api, &config, VIEWS, "v1", 5).await;
    counter.stop().await.unwrap();
    gateway.stop().await.unwrap();
}

/// Starts a counter process that stalls at `point` once, waits until `reached` says it got
/// there, kills it with `kill -9`, and starts a plain counter in its place.
async fn kill_counter_at(
    config: &TestConfig,
    point: &str,
    reached: impl AsyncFn() -> bool,
) -> ServiceProcess {
    let failpoints = format!("{point}=1*sleep(60000)");
    let counter =
        ServiceProcess::start_with_env("counter", config, &[("FAILPOINTS", &failpoints)]).await;
    eventually(
        &format!("the counter reached {point}"),
        Duration::from_secs(20),
        || async { reached().await.then_some(()) },
    )
    .await;
    counter.kill_hard();
    ServiceProcess::start("counter", config).await
}

#[tokio::test]
async fn a_counter_killed_after_its_redis_apply_or_after_its_flush_counts_once() {
    let config = TestConfig::with_sample_namespaces();
    let database = db::connect(&config).await;
    db::create_videos(&database, &["v1".to_owned()]).await;
    let gateway = spawn_gateway(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));

    // Applied in Redis, nothing in the database, offsets not stored: killed.
    api.increment(VIEWS, "v1", 3, Some("a")).await;
    api.like(LIKES, "v1", "ada").await;
    let counter = kill_counter_at(&config, "counter::after_apply", || async {
        api.value(VIEWS, "v1").await == 3 && api.value(LIKES, "v1").await == 1
    })
    .await;
    assert_settles_at(&api, &config, VIEWS, "v1", 3).await;
    assert_settles_at(&api, &config, LIKES, "v1", 1).await;
    drop(counter);

    // In the database, offsets not stored: killed; the restart replays what it flushed.
    api.increment(VIEWS, "v1", 4, Some("b")).await;
    api.like(LIKES, "v1", "grace").await;
    let counter = kill_counter_at(&config, "consumer::after_flush", || async {
        db::counter_value(&database, VIEWS, "v1").await == 7
            && db::counter_value(&database, LIKES, "v1").await == 2
    })
    .await;
    api.increment(VIEWS, "v1", 1, None).await;
    assert_settles_at(&api, &config, VIEWS, "v1", 8).await;
    assert_settles_at(&api, &config, LIKES, "v1", 2).await;
    let mirrored = db::scalar(
        &database,
        "SELECT like_count AS n FROM videos WHERE id = 'v1'",
        vec![],
    )
    .await;
    assert_eq!(mirrored, 2);
    drop(counter);
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn partitions_moved_between_counter_instances_mid_load_count_exactly() {
    let config = TestConfig::with_sample_namespaces();
    let database = db::connect(&config).await;
    let ids: Vec<String> = (0..200).map(|i| format!("e{i}")).collect();
    db::create_videos(&database, &ids).await;
    let gateway = spawn_gateway(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    let first = spawn_counter(&config).await;
    let workload = Workload::generate(31, 12_000, 200, 2_000, 20);
    let moves = {
        let config = config.clone();
        tokio::spawn(async move {
            // Half of the partitions move to a second counter, then all move back.
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            let second = spawn_counter(&config).await;
            tokio::time::sleep(Duration::from_millis(3_000)).await;
            second.stop().await.unwrap();
        })
    };
    workload.run(&api, &config).await;
    moves.await.unwrap();
    workload.assert_exact(&api, &config, SETTLE * 2).await;
    first.stop().await.unwrap();
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn partitions_reassigned_while_a_flush_stalls_lose_none_of_the_events_read_again() {
    let config = TestConfig::with_sample_namespaces();
    create_videos(&config, &[]).await;
    let gateway = spawn_gateway(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    let entities: Vec<String> = (0..24).map(|n| format!("r{n}")).collect();
    let producer = kafka::producer();
    let publish_round = |round: i64| {
        let (producer, config) = (&producer, &config);
        let sends = entities.iter().map(move |entity| async move {
            let event = outside_view(&format!("{round}/{entity}"), entity, round);
            publish_json(producer, config, &event).await;
        });
        futures::future::join_all(sends)
    };
    // The first counter's first flush, right after its first batch, stalls 12 s; its loop
    // goes on receiving meanwhile.
    let stall = format!("{}=1*return(12000)", faults::CONSUMER_BEFORE_FLUSH);
    let first = ServiceProcess::start_with_env("counter", &config, &[("FAILPOINTS", &stall)]).await;
    publish_round(1).await;
    eventually("a first batch applied", SETTLE, || async {
        for entity in &entities {
            if api.value(VIEWS, entity).await == 1 {
                return Some(());
            }
        }
        None
    })
    .await;
    // Received during the stall, ahead of the next batch.
    publish_round(2).await;
    // A second counter joins: every partition is revoked from the first (what it carried of
    // round 2 is stale), half come back to it and are read again from the committed offsets
    // (nothing committed yet), all while its flush still stalls. What it reads again must
    // not be dropped for the revoke it arrived after.
    let second = ServiceProcess::start("counter", &config).await;
    eventually("the second counter applied its share", SETTLE, || async {
        let applied = metric_sum(&second.url("/metrics"), "spillway_counter_events_total").await;
        (applied > 0.0).then_some(())
    })
    .await;
    let flushes = metric_sum(
        &first.url("/metrics"),
        "spillway_counter_flush_duration_seconds_count",
    )
    .await;
    assert_eq!(flushes, 0.0, "the rebalance came during the stalled flush");
    // Round 3 arrives after the revoke too: the first applies its share once the stall ends.
    publish_round(3).await;
    for entity in &entities {
        assert_settles_at(&api, &config, VIEWS, entity, 1 + 2 + 3).await;
    }
    drop((first, second));
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn a_corrupt_counter_row_sends_its_events_to_the_dlq_and_the_others_still_count() {
    let config = TestConfig::with_sample_namespaces();
    create_videos(&config, &[]).await;
    let database = db::connect(&config).await;
    let gateway = spawn_gateway(&config).await;
    spillway_core::db::migrate(&database, &config.schema)
        .await
        .unwrap();
    sea_orm::ConnectionTrait::execute_unprepared(
        &database,
        "INSERT INTO counter_values (namespace, entity_id, value, version, applied_offsets) \
         VALUES ('video-views', 'broken', 10, 3, '[\"not\", \"offsets\"]')",
    )
    .await
    .unwrap();
    let counter = spawn_counter(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    api.increment(VIEWS, "broken", 5, None).await;
    api.increment(VIEWS, "fine", 5, None).await;
    assert_settles_at(&api, &config, VIEWS, "fine", 5).await;
    let letters = kafka::read_topic(&config.dlq_topic, 1, Duration::from_secs(20));
    assert_eq!(letters.len(), 1);
    let reason = letters[0].header("spillway-dlq-reason").unwrap_or_default();
    assert!(reason.starts_with("corrupt-state"), "{reason}");
    assert_eq!(db::counter_value(&database, VIEWS, "broken").await, 10);
    let metrics = counter.metrics().await;
    assert!(
        metrics.contains("spillway_counter_corrupt_rows_total{namespace=\"video-views\"} 1"),
        "{metrics}"
    );
    counter.stop().await.unwrap();
    gateway.stop().await.unwrap();
}

fn playlist_sink_with_ttl(ttl_seconds: u64) -> String {
    SAMPLE_SINKS.replace(
        "batch_max_delay_ms = 100\n",
        &format!("batch_max_delay_ms = 100\npending_ttl_seconds = {ttl_seconds}\n"),
    )
}

#[tokio::test]
async fn a_marker_whose_clearing_failed_expires_and_the_read_shows_the_committed_row() {
    let config = TestConfig::new(&playlist_sink_with_ttl(3));
    let gateway = spawn_gateway(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    let id = uuid::Uuid::now_v7().to_string();
    let (status, body) = api
        .write("playlists", "ada", &json!({"id": id, "title": "First"}))
        .await;
    assert_eq!(status, 202, "{body}");
    // A batch-writer whose Redis is gone: it commits, but cannot clear the marker.
    let dir = tempfile::tempdir().unwrap();
    let unreachable = with_redis(&config, "redis://127.0.0.1:9", &dir);
    let writer = spawn_batch_writer(&unreachable).await;
    let database = db::connect(&config).await;
    eventually("the row is committed", SETTLE, || async {
        let n = db::scalar(
            &database,
            "SELECT count(*) AS n FROM playlists WHERE title = 'First'",
            vec![],
        )
        .await;
        (n == 1).then_some(())
    })
    .await;
    // The table moves on without the gateway (a row rewritten in the database).
    sea_orm::ConnectionTrait::execute_unprepared(
        &database,
        "UPDATE playlists SET title = 'Second'",
    )
    .await
    .unwrap();
    let (_, body) = api.read_write_as("playlists", &id, "ada").await;
    assert_eq!(
        (&body["status"], &body["row"]["title"]),
        (&json!("pending"), &json!("First"))
    );
    let body = eventually("the marker expired", Duration::from_secs(10), || async {
        let (_, body) = api.read_write_as("playlists", &id, "ada").await;
        (body["status"] == "committed").then_some(body)
    })
    .await;
    assert_eq!(body["row"]["title"], "Second");
    writer.stop().await.unwrap();
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn a_read_never_shows_an_older_body_after_a_newer_write_of_the_id_was_acknowledged() {
    // An upsert sink: the newer write of an id is the one the table ends with.
    let config = TestConfig::new(&SAMPLE_SINKS.replace(
        "batch_max_delay_ms = 100\n",
        "batch_max_delay_ms = 100\non_conflict = \"upsert\"\nupsert_columns = [\"title\"]\n",
    ));
    let gateway = spawn_gateway(&config).await;
    let writer = spawn_batch_writer(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    let rounds = (0..100).map(|n| {
        let api = api.clone();
        async move {
            let id = uuid::Uuid::now_v7().to_string();
            for title in ["older", "newer"] {
                let (status, body) = api
                    .write("playlists", "ada", &json!({"id": id, "title": title}))
                    .await;
                assert_eq!(status, 202, "{body}");
            }
            // Reads after the newer write's 202, while the older one commits.
            let deadline = tokio::time::Instant::now() + Duration::from_millis(1_500);
            while tokio::time::Instant::now() < deadline {
                let (status, body) = api.read_write_as("playlists", &id, "ada").await;
                assert_eq!(status, 200, "{body}");
                assert_eq!(body["row"]["title"], "newer", "round {n}: {body}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    futures::future::join_all(rounds).await;
    writer.stop().await.unwrap();
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn a_batch_overlapping_one_applied_before_a_crash_counts_each_event_once() {
    let config = TestConfig::with_sample_namespaces();
    create_videos(&config, &[]).await;
    let gateway = spawn_gateway(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    let producer = kafka::producer();
    let unkeyed = |n: usize| {
        let mut event = outside_view(&format!("u{n}"), "hot", 1);
        event.never_resent = true;
        event
    };
    for n in 0..50 {
        publish_protobuf(&producer, &config, &unkeyed(n)).await;
    }
    // Applies the 50 as one combined sum, then dies before flushing or storing offsets.
    let counter = kill_counter_at(&config, "counter::after_apply", || async {
        api.value(VIEWS, "hot").await == 50
    })
    .await;
    // The restart reads the 50 again with 50 more: one combined sum would straddle the
    // applied offset, so the events go one by one.
    for n in 50..100 {
        publish_protobuf(&producer, &config, &unkeyed(n)).await;
    }
    assert_settles_at(&api, &config, VIEWS, "hot", 100).await;
    drop(counter);
    gateway.stop().await.unwrap();
}
