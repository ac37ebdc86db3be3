//! The foundation's promises: every service starts on the real stack and answers health,
//! readiness and metrics; messages decode from protobuf or JSON and garbage goes to the DLQ
//! without stopping the partition; a bad configuration value stops a service naming the
//! key; SIGTERM drains, flushes and commits the work a consumer holds.

use std::time::Duration;

use prost::Message;
use spillway_core::wire::{self, CounterEvent, CounterOperation, DeadLetter};
use spillway_tests::{
    TestConfig, db, eventually, kafka, process::ServiceProcess, redis_client, spawn_batch_writer,
    spawn_counter, spawn_gateway, spawn_template_warmup,
};

fn view_event(entity_id: &str, delta: i64) -> CounterEvent {
    CounterEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        accepted_at: Some(wire::now()),
        request_id: "test".into(),
        namespace: "video-views".into(),
        entity_id: entity_id.into(),
        member: String::new(),
        operation: CounterOperation::Increment as i32,
        delta,
        never_resent: false,
    }
}

async fn prepare(config: &TestConfig) {
    let db = db::connect(config).await;
    db::create_videos(&db, &[]).await;
}

#[tokio::test]
async fn every_service_starts_and_answers_health_readiness_and_metrics() {
    let config = TestConfig::with_sample_namespaces();
    prepare(&config).await;
    let services = [
        ("gateway", spawn_gateway(&config).await),
        ("counter", spawn_counter(&config).await),
        ("batch_writer", spawn_batch_writer(&config).await),
        ("template_warmup", spawn_template_warmup(&config).await),
    ];
    let client = reqwest::Client::new();
    for (name, service) in &services {
        let health = client.get(service.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200, "{name} /healthz");
        let ready = client.get(service.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200, "{name} /readyz");
        let verbose = client
            .get(service.url("/readyz?verbose"))
            .send()
            .await
            .unwrap();
        let status = verbose.status();
        let body: serde_json::Value = verbose.json().await.unwrap();
        assert_eq!(status, 200, "{name} /readyz?verbose: {body}");
        let checked: Vec<&str> = body["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|dependency| dependency["name"].as_str())
            .collect();
        assert!(
            checked.contains(&"kafka") && checked.contains(&"redis"),
            "{name}: {body}"
        );
        let metrics = service.metrics().await;
        assert!(
            metrics.contains(&format!(
                "spillway_{name}_dependency_up{{dependency=\"redis\"}} 1"
            )),
            "{name} metrics:\n{metrics}"
        );
        assert_process_and_build_metrics(name, &metrics);
    }
    for (name, service) in services {
        service
            .stop()
            .await
            .unwrap_or_else(|e| panic!("{name} stops cleanly: {e}"));
    }
}

/// `process_*` and `spillway_build_info` from every service; the failure counters of a
/// consumer at 0 from the start (template-warmup's too), and no `flush` in a `topic` label.
fn assert_process_and_build_metrics(name: &str, metrics: &str) {
    for metric in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
    ] {
        assert!(metrics.contains(metric), "{name} exports {metric}");
    }
    let build_info = metrics
        .lines()
        .find(|line| line.starts_with("spillway_build_info{"))
        .unwrap_or_else(|| panic!("{name} exports spillway_build_info"));
    assert!(
        build_info.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && build_info.contains("commit=\"")
            && build_info.ends_with(" 1"),
        "{name}: {build_info}"
    );
    assert!(
        !metrics.contains("topic=\"flush\""),
        "{name}: `flush` is not a topic"
    );
    if name == "gateway" {
        return;
    }
    let flush = format!("spillway_{name}_flush_failures_total 0");
    assert!(metrics.contains(&flush), "{name} exports {flush}");
    // This deployment has no sink: the batch-writer consumes no topic.
    if name != "batch_writer" {
        for series in [
            format!("spillway_{name}_handler_failures_total{{topic=\""),
            format!("spillway_{name}_dlq_messages_total{{reason=\"protobuf\""),
        ] {
            assert!(metrics.contains(&series), "{name} exports {series}");
        }
    }
}

#[tokio::test]
async fn protobuf_and_json_decode_the_same_and_garbage_goes_to_the_dlq_without_stopping_the_partition()
 {
    let config = TestConfig::with_sample_namespaces();
    prepare(&config).await;
    let counter = spawn_counter(&config).await;
    let producer = kafka::producer();
    let key = "video-views/v1";
    let protobuf = view_event("v1", 2);
    kafka::publish(
        &producer,
        &config.counter_topic,
        key,
        &protobuf.encode_to_vec(),
        &[],
    )
    .await;
    let json = serde_json::to_vec(&view_event("v1", 3)).unwrap();
    kafka::publish(
        &producer,
        &config.counter_topic,
        key,
        &json,
        &[("content-type", "application/json")],
    )
    .await;
    kafka::publish(
        &producer,
        &config.counter_topic,
        key,
        b"\x08\xff garbage",
        &[],
    )
    .await;
    kafka::publish(
        &producer,
        &config.counter_topic,
        key,
        b"{\"not\": \"an event\"}",
        &[("content-type", "application/json")],
    )
    .await;
    // The partition keeps moving after the bad messages.
    kafka::publish(
        &producer,
        &config.counter_topic,
        key,
        &view_event("v1", 5).encode_to_vec(),
        &[],
    )
    .await;

    let redis = redis_client::connect().await;
    eventually("v1 counts 2 + 3 + 5", Duration::from_secs(20), || {
        let mut redis = redis.clone();
        let prefix = config.key_prefix.clone();
        async move {
            (redis_client::counter_value(&mut redis, &prefix, "video-views", "v1").await
                == Some(10))
            .then_some(())
        }
    })
    .await;

    let dead = kafka::read_topic(&config.dlq_topic, 2, Duration::from_secs(20));
    assert_eq!(dead.len(), 2, "both bad messages reach the DLQ");
    for record in &dead {
        assert_eq!(
            record.header("spillway-dlq-source-topic"),
            Some(config.counter_topic.as_str())
        );
        assert!(record.header("spillway-dlq-source-partition").is_some());
        assert!(record.header("spillway-dlq-source-offset").is_some());
        let reason = record.header("spillway-dlq-reason").unwrap();
        assert!(reason.starts_with("decode:"), "{reason}");
        let letter = DeadLetter::decode(record.payload.as_slice()).unwrap();
        assert_eq!(letter.source_topic, config.counter_topic);
        assert_eq!(letter.service, "counter");
    }
    let offsets: Vec<&str> = dead
        .iter()
        .filter_map(|r| r.header("spillway-dlq-source-offset"))
        .collect();
    assert_eq!(offsets, ["2", "3"]);
    counter.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_configuration_value_stops_a_service_naming_the_key() {
    let config = TestConfig::with_sample_namespaces();
    for (service, variable, value, key) in [
        (
            "counter",
            "SPILLWAY_KAFKA__CONSUMER_BATCH_SIZE",
            "many",
            "consumer_batch_size",
        ),
        (
            "gateway",
            "SPILLWAY_GATEWAY__LISTEN",
            "nowhere",
            "gateway.listen",
        ),
        (
            "batch-writer",
            "SPILLWAY_DATABASE__URL",
            "mysql://x",
            "database.url",
        ),
        (
            "template-warmup",
            "SPILLWAY_KAFKA__PRODUCE_TIMEOUT_MS",
            "5",
            "kafka.produce_timeout_ms",
        ),
    ] {
        let (status, stderr) =
            ServiceProcess::run_expecting_failure(service, &config, &[(variable, value)]);
        assert!(
            !status.success(),
            "{service} must refuse {variable}={value}"
        );
        assert!(
            stderr.contains(key),
            "{service}'s error names `{key}`:\n{stderr}"
        );
    }
}

#[tokio::test]
async fn sigterm_drains_flushes_and_commits_the_work_a_consumer_holds() {
    // A flush interval far longer than the test: the counter holds applied but unflushed,
    // uncommitted work when SIGTERM arrives.
    let config = TestConfig::with_sample_namespaces();
    prepare(&config).await;
    let counter = ServiceProcess::start_with_env(
        "counter",
        &config,
        &[
            ("SPILLWAY_COUNTER__FLUSH_INTERVAL_MS", "600000"),
            ("SPILLWAY_COUNTER__FLUSH_MAX_ENTITIES", "1000000"),
        ],
    )
    .await;
    let producer = kafka::producer();
    for i in 0..200 {
        let entity = format!("v{}", i % 10);
        kafka::publish(
            &producer,
            &config.counter_topic,
            &format!("video-views/{entity}"),
            &view_event(&entity, 1).encode_to_vec(),
            &[],
        )
        .await;
    }
    let redis = redis_client::connect().await;
    for i in 0..10 {
        let entity = format!("v{i}");
        eventually("all 200 applied in Redis", Duration::from_secs(30), || {
            let (mut redis, prefix, entity) =
                (redis.clone(), config.key_prefix.clone(), entity.clone());
            async move {
                (redis_client::counter_value(&mut redis, &prefix, "video-views", &entity).await
                    == Some(20))
                .then_some(())
            }
        })
        .await;
    }
    let group = config.consumer_group("counter");
    let (committed_before, end) = kafka::committed_and_end(&group, &config.counter_topic);
    assert_eq!(end, 200);
    assert!(
        committed_before < end,
        "work is held uncommitted before SIGTERM ({committed_before}/{end})"
    );

    let (status, took) = counter.terminate(Duration::from_secs(10));
    let status = status.expect("the counter exits within 10 s of SIGTERM");
    assert!(status.success(), "clean exit, got {status}");
    assert!(took < Duration::from_secs(10));

    let (committed_after, _) = kafka::committed_and_end(&group, &config.counter_topic);
    assert_eq!(
        committed_after, 200,
        "everything handled is committed at shutdown"
    );
    let db = db::connect(&config).await;
    for i in 0..10 {
        assert_eq!(
            db::counter_value(&db, "video-views", &format!("v{i}")).await,
            20
        );
    }
}
