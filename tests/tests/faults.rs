//! Faults of the shared stack: a dependency stopped for real, Redis emptied mid-run. These
//! tests stop components everyone uses, so they run one at a time (a lock) in a test binary
//! of their own (cargo runs test binaries one after another).

use std::time::{Duration, Instant};

use spillway_tests::{
    TestConfig, api::Api, db, eventually, objects, redis_client, scenario::Workload, spawn_counter,
    spawn_gateway, spawn_template_warmup, stack,
};
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

async fn readyz(client: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    match client.get(url).timeout(Duration::from_secs(4)).send().await {
        Ok(response) => (
            response.status().as_u16(),
            response.json().await.unwrap_or_default(),
        ),
        Err(error) => panic!("{url} did not answer: {error:?}"),
    }
}

/// Readiness means "this pod can answer": `/readyz` stays 200 while a dependency is down
/// (the gateway keeps answering, 503 with Retry-After for what needs it), while
/// `/readyz?verbose` and the `dependency_up` gauge name the dependency that is down.
#[tokio::test]
async fn readiness_stays_200_while_a_dependency_is_down_and_the_verbose_check_names_it() {
    let _serial = SERIAL.lock().await;
    let config = TestConfig::with_sample_namespaces();
    db::create_videos(&db::connect(&config).await, &[]).await;
    let gateway = spawn_gateway(&config).await;
    let counter = spawn_counter(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    eprintln!("gateway on {}, counter on {}", gateway.port, counter.port);
    // Idle connections are dropped before the server's keep-alive closes them (5 s), since
    // the stack restarts leave long pauses between calls.
    let client = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    // On the cluster topology the services' Redis is the Redis Cluster (all six nodes are
    // stopped); `kafka` names the three brokers there.
    let redis = match stack::Stack::current().redis_cluster() {
        true => "redis-cluster",
        false => "redis",
    };
    for (component, dependency) in [
        (redis, "redis"),
        ("postgres", "database"),
        ("kafka", "kafka"),
    ] {
        stack::stop(component);
        let stopped = Instant::now();
        for (name, service) in [("gateway", &gateway), ("counter", &counter)] {
            let url = service.url("/readyz?verbose");
            let body = eventually(
                &format!("{url} 503 without {component}"),
                Duration::from_secs(5),
                || async {
                    let (status, body) = readyz(&client, &url).await;
                    (status == 503).then_some(body)
                },
            )
            .await;
            assert!(stopped.elapsed() < Duration::from_secs(5) + Duration::from_millis(500));
            assert_eq!(body["down"], serde_json::json!([dependency]), "{body}");
            let (status, body) = readyz(&client, &service.url("/readyz")).await;
            assert_eq!(status, 200, "still ready without {component}: {body}");
            let health = client.get(service.url("/healthz")).send().await.unwrap();
            assert_eq!(
                health.status(),
                200,
                "the service stays alive without {component}"
            );
            let gauge = format!("spillway_{name}_dependency_up{{dependency=\"{dependency}\"}} 0");
            assert!(service.metrics().await.contains(&gauge), "{gauge}");
        }
        if component != "postgres" {
            // A call that needs the missing dependency is refused quickly, never hung.
            let started = Instant::now();
            let response = client
                .put(format!(
                    "http://127.0.0.1:{}/v1/counters/video-likes/v1/members/me",
                    gateway.port
                ))
                .bearer_auth(spillway_tests::token("alice"))
                .send()
                .await
                .unwrap();
            assert!(
                started.elapsed() < Duration::from_millis(2_500),
                "answered within the deadline"
            );
            assert_eq!(response.status(), 503);
            assert_eq!(
                response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()),
                Some("1")
            );
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["dependency"], dependency, "{body}");
        }
        stack::start_all();
        for service in [&gateway, &counter] {
            let url = service.url("/readyz?verbose");
            eventually(
                &format!("{url} 200 again after {component}"),
                Duration::from_secs(30),
                || async { (readyz(&client, &url).await.0 == 200).then_some(()) },
            )
            .await;
        }
    }
    // Everything works again end to end.
    let (status, _) = api.like("video-likes", "v1", "alice").await;
    assert_eq!(status, 202);
    eventually(
        "the like is counted after the outages",
        Duration::from_secs(30),
        || async { (api.value("video-likes", "v1").await == 1).then_some(()) },
    )
    .await;
    counter.stop().await.unwrap();
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn counters_are_rebuilt_exactly_after_redis_is_emptied_mid_run() {
    let _serial = SERIAL.lock().await;
    let config = TestConfig::with_sample_namespaces();
    let ids: Vec<String> = (0..200).map(|i| format!("e{i}")).collect();
    db::create_videos(&db::connect(&config).await, &ids).await;
    let gateway = spawn_gateway(&config).await;
    let counter = spawn_counter(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    let workload = Workload::generate(23, 20_000, 200, 2_000, 20);
    let flusher = tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let mut redis = redis_client::connect().await;
        let _: () = redis::cmd("FLUSHALL")
            .query_async(&mut redis)
            .await
            .unwrap();
    });
    workload.run(&api, &config).await;
    flusher.await.unwrap();
    workload
        .assert_exact(&api, &config, Duration::from_secs(90))
        .await;
    counter.stop().await.unwrap();
    gateway.stop().await.unwrap();
}

/// Writes through the gateway (ids chosen by the client, so a retried call is the same
/// write) and straight to Kafka, while the batch-writer is killed three times and
/// PostgreSQL is stopped for 10 s.
#[tokio::test]
async fn a_hundred_thousand_writes_survive_three_kills_and_a_database_outage() {
    use std::collections::HashMap;

    use prost::Message;
    use spillway_core::{sinks, wire};
    use spillway_tests::{kafka, process::ServiceProcess};

    const THROUGH_GATEWAY: usize = 50_000;
    const THROUGH_KAFKA: usize = 50_000;
    const LANES: usize = 25;

    let _serial = SERIAL.lock().await;
    let config = TestConfig::new(spillway_tests::SAMPLE_SINKS);
    let gateway = spawn_gateway(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    let writer = ServiceProcess::start("batch-writer", &config).await;

    let gateway_rows: Vec<(String, String)> = (0..THROUGH_GATEWAY)
        .map(|i| (uuid::Uuid::now_v7().to_string(), format!("gateway {i}")))
        .collect();
    let kafka_rows: Vec<(String, String)> = (0..THROUGH_KAFKA)
        .map(|i| (uuid::Uuid::now_v7().to_string(), format!("kafka {i}")))
        .collect();

    let chaos_config = config.clone();
    let chaos = tokio::spawn(async move {
        let mut writer = writer;
        for round in 0..3 {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            writer.kill_hard();
            if round == 1 {
                stack::stop("postgres");
                tokio::time::sleep(Duration::from_secs(10)).await;
                stack::start_all();
            }
            writer = ServiceProcess::start("batch-writer", &chaos_config).await;
        }
        writer
    });
    let lanes = gateway_rows.chunks(THROUGH_GATEWAY / LANES).map(|lane| {
        let api = api.clone();
        async move {
            for (id, title) in lane {
                let row = serde_json::json!({"id": id, "title": title});
                for attempt in 0.. {
                    let (status, body) = api.write("playlists", "writer", &row).await;
                    if status == 202 {
                        break;
                    }
                    assert_eq!(status, 503, "{body}");
                    assert!(attempt < 300, "the gateway kept refusing: {body}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    let topic = format!("{}.writes.playlists.v1", config.id);
    let producer = kafka::producer();
    let direct = async {
        for chunk in kafka_rows.chunks(1_000) {
            let sends =
                chunk.iter().map(|(id, title)| {
                    let row = serde_json::json!({"id": id, "member_id": "outside", "title": title});
                    let event = wire::WriteEvent {
                        event_id: uuid::Uuid::new_v4().to_string(),
                        accepted_at: Some(wire::now()),
                        request_id: "outside".into(),
                        sink: "playlists".into(),
                        row_id: id.clone(),
                        operation: wire::WriteOperation::Upsert as i32,
                        row: Some(sinks::to_struct(row.as_object().unwrap())),
                        pending_marker: false,
                    };
                    let (producer, topic) = (producer.clone(), topic.clone());
                    async move {
                        kafka::publish(&producer, &topic, id, &event.encode_to_vec(), &[]).await
                    }
                });
            futures::future::join_all(sends).await;
        }
    };
    futures::join!(futures::future::join_all(lanes), direct);
    let writer = chaos.await.unwrap();

    let database = db::connect(&config).await;
    let total = (THROUGH_GATEWAY + THROUGH_KAFKA) as i64;
    eventually(
        "all 100,000 rows stored",
        Duration::from_secs(120),
        || async {
            (db::scalar(&database, "SELECT count(*) AS n FROM playlists", vec![]).await == total)
                .then_some(())
        },
    )
    .await;
    let expected: HashMap<&str, &str> = gateway_rows
        .iter()
        .chain(&kafka_rows)
        .map(|(id, title)| (id.as_str(), title.as_str()))
        .collect();
    use sea_orm::ConnectionTrait;
    let rows = database
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT id::text AS id, title, member_id FROM playlists",
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), expected.len());
    for row in rows {
        let id: String = row.try_get("", "id").unwrap();
        let title: String = row.try_get("", "title").unwrap();
        let member: String = row.try_get("", "member_id").unwrap();
        assert_eq!(
            expected.get(id.as_str()),
            Some(&title.as_str()),
            "row {id} as sent"
        );
        assert_eq!(
            member,
            if title.starts_with("gateway") {
                "writer"
            } else {
                "outside"
            }
        );
    }
    let mut redis = redis_client::connect().await;
    let pattern = format!("{}{{w:playlists:*", config.key_prefix);
    let pending = eventually("no write stays pending", Duration::from_secs(30), || {
        let (mut redis, pattern) = (redis.clone(), pattern.clone());
        async move {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut redis)
                .await
                .unwrap();
            // A cleared marker stays a minute as a tombstone, without a row.
            let mut pending = Vec::new();
            for key in keys {
                let has_row: bool = redis::cmd("HEXISTS")
                    .arg(&key)
                    .arg("r")
                    .query_async(&mut redis)
                    .await
                    .unwrap();
                if has_row {
                    pending.push(key);
                }
            }
            pending.is_empty().then_some(pending)
        }
    })
    .await;
    assert!(pending.is_empty());
    let _: () = redis::cmd("PING").query_async(&mut redis).await.unwrap();
    drop(writer);
    gateway.stop().await.unwrap();
}

/// S3 stopped for real: a direct copy answers 503 naming S3 (and leaves nothing behind),
/// a pool hit still succeeds, template-warmup reports S3 down, and refills resume when S3 is
/// back.
#[tokio::test]
async fn with_s3_down_direct_copies_answer_503_pool_hits_succeed_and_refills_resume() {
    let _serial = SERIAL.lock().await;
    let config = TestConfig::new("[templates]\nsweep_interval_ms = 300\ncopy_timeout_ms = 2000\n");
    let warmup = spawn_template_warmup(&config).await;
    let gateway = spawn_gateway(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    let (client, bucket) = objects::bucket(&config).await;
    let sources = objects::put_sources(&client, &bucket, "templates/s3down", 3, 512).await;
    assert_eq!(api.register_template("pooled", &sources, 2).await.0, 201);
    assert_eq!(
        api.register_template("direct-only", &sources, 0).await.0,
        201
    );
    let full = || async { (api.pool("pooled").await.0 == 2).then_some(()) };
    eventually("pool full", Duration::from_secs(30), full).await;

    stack::stop("s3");
    let started = Instant::now();
    let (status, body) = api.take_copy("direct-only", "alice").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["dependency"], "s3", "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "answered, not hung"
    );
    let (status, copy) = api.take_copy("pooled", "bob").await;
    assert_eq!(status, 201, "a pool hit needs no S3: {copy}");
    assert_eq!(copy["source"], "pool");
    let client_http = reqwest::Client::new();
    let (status, body) = readyz(&client_http, &warmup.url("/readyz?verbose")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["down"], serde_json::json!(["s3"]), "{body}");
    let (status, _) = readyz(&client_http, &warmup.url("/readyz")).await;
    assert_eq!(status, 200, "template-warmup can still answer");

    stack::start_all();
    eventually(
        "pool refilled after S3 returned",
        Duration::from_secs(60),
        full,
    )
    .await;
    let db = db::connect(&config).await;
    eventually(
        "the failed direct copy cleaned up",
        Duration::from_secs(30),
        || async {
            let left = db::scalar(
                &db,
                "SELECT count(*) AS n FROM template_copies WHERE state = 'copying'",
                vec![],
            )
            .await;
            (left == 0).then_some(())
        },
    )
    .await;
    let taken = db::scalar(
        &db,
        "SELECT count(*) AS n FROM template_copies WHERE state = 'taken' AND origin = 'direct'",
        vec![],
    )
    .await;
    assert_eq!(taken, 0, "no direct copy was handed out while S3 was down");
    gateway.stop().await.unwrap();
    warmup.stop().await.unwrap();
}

/// A waiting room whose Redis state vanished (Redis emptied, as after a restart without its
/// data) answers 503 until every session it may have admitted has expired, then starts
/// afresh; it never lets everyone in.
#[tokio::test]
async fn a_waiting_room_that_lost_its_state_holds_with_503_until_old_sessions_expire() {
    let _serial = SERIAL.lock().await;
    let config = TestConfig::new(
        "[queues.drop]\npattern = \"drop\"\ncapacity = 1\nadmit_per_minute = 60\nsession_ttl_seconds = 3\n",
    );
    let gateway = spawn_gateway(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    let (_, ann) = api.join_queue("drop", "ann").await;
    assert_eq!(ann["status"], "active", "{ann}");
    let (_, bob) = api.join_queue("drop", "bob").await;
    assert_eq!(bob["status"], "waiting", "{bob}");

    let mut redis = redis_client::connect().await;
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut redis)
        .await
        .unwrap();
    let emptied = Instant::now();
    let (status, body) = api.join_queue("drop", "cid").await;
    assert_eq!(status, 503, "a newcomer is not let in: {body}");
    assert_eq!(body["dependency"], "redis", "{body}");
    let bob_token = bob["token"].as_str().unwrap();
    let (status, _) = api.poll_queue("drop", bob_token, "bob").await;
    assert_eq!(status, 503, "nor is the old line admitted");

    let cid = eventually("the room opens again", Duration::from_secs(10), || async {
        let (status, body) = api.join_queue("drop", "cid").await;
        (status == 201).then_some(body)
    })
    .await;
    assert!(
        emptied.elapsed() >= Duration::from_secs(2),
        "held for the session TTL"
    );
    assert_eq!(cid["status"], "active", "a fresh room admits: {cid}");
    gateway.stop().await.unwrap();
}
