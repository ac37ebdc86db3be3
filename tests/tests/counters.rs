//! Counters end to end through the real gateway, Kafka, counter service, Redis and
//! PostgreSQL: likes count once per member, increments with a repeated Idempotency-Key count
//! once, bad input changes nothing, and a concurrent mixed load (gateway plus an outside
//! producer) ends exact, also while the counter is killed with `kill -9`.

use std::time::Duration;

use rand::Rng;
use spillway_tests::{
    RunningService, TestConfig,
    api::Api,
    db, eventually, kafka,
    process::ServiceProcess,
    scenario::{LIKES, VIEWS, Workload},
    spawn_counter, spawn_gateway, token,
};

struct Deployment {
    config: TestConfig,
    api: Api,
    gateway: RunningService,
    counter: Option<RunningService>,
}

/// The sample namespaces, a `videos` table with e0..e199 and v1, the gateway, and
/// (optionally) the counter, all in-process.
async fn deploy(with_counter: bool) -> Deployment {
    let config = TestConfig::with_sample_namespaces();
    let database = db::connect(&config).await;
    let mut ids: Vec<String> = (0..200).map(|i| format!("e{i}")).collect();
    ids.push("v1".into());
    db::create_videos(&database, &ids).await;
    let gateway = spawn_gateway(&config).await;
    let counter = if with_counter {
        Some(spawn_counter(&config).await)
    } else {
        None
    };
    Deployment {
        api: Api::new(format!("http://127.0.0.1:{}", gateway.port)),
        config,
        gateway,
        counter,
    }
}

impl Deployment {
    async fn stop(self) {
        if let Some(counter) = self.counter {
            counter.stop().await.unwrap();
        }
        self.gateway.stop().await.unwrap();
    }

    async fn wait_for(&self, namespace: &str, entity: &str, value: i64) {
        let api = self.api.clone();
        eventually(
            &format!("{namespace}/{entity} = {value}"),
            Duration::from_secs(20),
            || {
                let api = api.clone();
                async move { (api.value(namespace, entity).await == value).then_some(()) }
            },
        )
        .await;
    }
}

#[tokio::test]
async fn like_twice_counts_once_and_unlike_then_like_counts_once() {
    let deployment = deploy(true).await;
    let api = &deployment.api;
    let (status, body) = api.like(LIKES, "v1", "alice").await;
    assert_eq!(
        (
            status.as_u16(),
            body["value"].as_i64(),
            body["member"].as_bool()
        ),
        (202, Some(1), Some(true))
    );
    deployment.wait_for(LIKES, "v1", 1).await;
    let (status, body) = api.like(LIKES, "v1", "alice").await;
    assert_eq!(
        (status.as_u16(), body["value"].as_i64()),
        (202, Some(1)),
        "a second like changes nothing"
    );
    api.like(LIKES, "v1", "bob").await;
    deployment.wait_for(LIKES, "v1", 2).await;

    let (status, body) = api.unlike(LIKES, "v1", "alice").await;
    assert_eq!(
        (
            status.as_u16(),
            body["value"].as_i64(),
            body["member"].as_bool()
        ),
        (202, Some(1), Some(false))
    );
    deployment.wait_for(LIKES, "v1", 1).await;
    api.like(LIKES, "v1", "alice").await;
    deployment.wait_for(LIKES, "v1", 2).await;
    let (_, body) = api.unlike(LIKES, "v1", "carol").await;
    assert_eq!(
        body["value"].as_i64(),
        Some(2),
        "unlike of a non-member changes nothing"
    );

    let (_, body) = api.get(LIKES, "v1", Some("alice")).await;
    assert_eq!(body["member"], true);
    let (_, body) = api.get(LIKES, "v1", Some("carol")).await;
    assert_eq!(body["member"], false);
    let (_, body) = api.get(LIKES, "never-liked", None).await;
    assert_eq!(body["value"], 0);
    assert!(body.get("member").is_none());

    // The database catches up: the value, the members and the mirror column.
    let database = db::connect(&deployment.config).await;
    eventually(
        "likes flushed to the database",
        Duration::from_secs(10),
        || async {
            let value = db::counter_value(&database, LIKES, "v1").await;
            let mirror = db::scalar(
                &database,
                "SELECT like_count AS n FROM videos WHERE id = 'v1'",
                vec![],
            )
            .await;
            let members = db::scalar(
                &database,
                "SELECT count(*) AS n FROM counter_members WHERE entity_id = 'v1'",
                vec![],
            )
            .await;
            (value == 2 && mirror == 2 && members == 2).then_some(())
        },
    )
    .await;
    deployment.stop().await;
}

#[tokio::test]
async fn increments_with_a_repeated_idempotency_key_count_once() {
    let deployment = deploy(true).await;
    let api = &deployment.api;
    let (status, body) = api.increment(VIEWS, "v1", 5, Some("request-1")).await;
    assert_eq!((status.as_u16(), body["value"].as_i64()), (202, Some(5)));
    let (status, body) = api.increment(VIEWS, "v1", 5, Some("request-1")).await;
    assert_eq!(status, 202);
    assert_eq!(body["replayed"], true, "{body}");
    api.increment(VIEWS, "v1", 2, Some("request-2")).await;
    api.increment(VIEWS, "v1", 1, None).await;
    api.increment(VIEWS, "v1", 1, None).await;
    deployment.wait_for(VIEWS, "v1", 9).await;
    let (_, body) = deployment
        .api
        .client
        .get(format!(
            "{}/v1/counters/{VIEWS}?ids=v1,v2",
            deployment.api.base_url
        ))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .map(|b| ((), b))
        .unwrap();
    assert_eq!(body["values"], serde_json::json!({"v1": 9, "v2": 0}));
    deployment.stop().await;
}

#[tokio::test]
async fn bad_input_gets_its_documented_status_and_publishes_nothing() {
    let deployment = deploy(false).await;
    let (api, base, client) = (
        &deployment.api,
        &deployment.api.base_url,
        &deployment.api.client,
    );
    let topic = deployment.config.counter_topic.clone();
    let end_before = kafka::end_offsets(&topic);
    let long_id = "x".repeat(129);
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            client
                .put(format!("{base}/v1/counters/no-such/v1/members/me"))
                .bearer_auth(token("a")),
            404,
            "unknown namespace",
        ),
        (
            client
                .put(format!("{base}/v1/counters/{VIEWS}/v1/members/me"))
                .bearer_auth(token("a")),
            409,
            "like on a sum",
        ),
        (
            client
                .post(format!("{base}/v1/counters/{LIKES}/v1/increments"))
                .json(&serde_json::json!({"delta": 1})),
            409,
            "increment on a distinct",
        ),
        (
            client
                .put(format!("{base}/v1/counters/{LIKES}/bad%20id/members/me"))
                .bearer_auth(token("a")),
            400,
            "entity id with a space",
        ),
        (
            client
                .put(format!("{base}/v1/counters/{LIKES}/{long_id}/members/me"))
                .bearer_auth(token("a")),
            400,
            "entity id too long",
        ),
        (
            client.put(format!("{base}/v1/counters/{LIKES}/v1/members/me")),
            401,
            "no token",
        ),
        (
            client
                .put(format!("{base}/v1/counters/{LIKES}/v1/members/me"))
                .bearer_auth("not-a-jwt"),
            401,
            "bad token",
        ),
        (
            client
                .put(format!("{base}/v1/counters/{LIKES}/v1/members/me"))
                .bearer_auth(gateway::auth::issue_token("wrong-secret", "a", &[], 60)),
            401,
            "token signed with another secret",
        ),
        (
            client
                .post(format!("{base}/v1/counters/{VIEWS}/v1/increments"))
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "bad JSON",
        ),
        (
            client
                .post(format!("{base}/v1/counters/{VIEWS}/v1/increments"))
                .json(&serde_json::json!({"delta": 0})),
            400,
            "delta 0",
        ),
        (
            client
                .post(format!("{base}/v1/counters/{VIEWS}/v1/increments"))
                .json(&serde_json::json!({"delta": 1_000_001})),
            400,
            "delta too big",
        ),
        (
            client
                .post(format!("{base}/v1/counters/{VIEWS}/v1/increments"))
                .json(&serde_json::json!({"delta": 1.5})),
            400,
            "fractional delta",
        ),
        (
            client
                .post(format!("{base}/v1/counters/{VIEWS}/v1/increments"))
                .json(&serde_json::json!({"delta": 1, "extra": true})),
            400,
            "unknown field",
        ),
        (
            client
                .post(format!("{base}/v1/counters/{VIEWS}/v1/increments"))
                .header("content-type", "application/json")
                .body(format!(
                    "{{\"delta\": 1, \"pad\": \"{}\"}}",
                    "x".repeat(70_000)
                )),
            413,
            "body over 64 KiB",
        ),
        (
            client.get(format!("{base}/v1/counters/{VIEWS}")),
            400,
            "no ids",
        ),
        (
            client.get(format!(
                "{base}/v1/counters/{VIEWS}?ids={}",
                vec!["a"; 1001].join(",")
            )),
            400,
            "over 1000 ids",
        ),
        (
            client.get(format!("{base}/v1/counters/{VIEWS}/bad%20id")),
            400,
            "bad id on read",
        ),
        (
            client.get(format!("{base}/v1/nothing-here")),
            404,
            "unknown route",
        ),
    ];
    for (request, expected, what) in cases {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert_eq!(status, expected, "{what}: {body}");
        assert_eq!(
            content_type.as_deref(),
            Some("application/problem+json"),
            "{what}"
        );
        assert_eq!(body["status"], expected, "{what}: {body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}: {body}"
        );
    }
    let _ = api;
    let end_after = kafka::end_offsets(&topic);
    assert_eq!(end_before, end_after, "a rejected call publishes nothing");
    deployment.stop().await;
}

#[tokio::test]
async fn twenty_thousand_events_from_the_gateway_and_an_outside_producer_end_exact() {
    let deployment = deploy(true).await;
    let workload = Workload::generate(7, 20_000, 200, 2_000, 20);
    assert_eq!(workload.event_count(), 20_000);
    workload.run(&deployment.api, &deployment.config).await;
    workload
        .assert_exact(&deployment.api, &deployment.config, Duration::from_secs(60))
        .await;
    deployment.stop().await;
}

#[tokio::test]
async fn a_counter_killed_three_times_still_counts_every_event_exactly_once() {
    let deployment = deploy(false).await;
    let workload = Workload::generate(11, 20_000, 200, 2_000, 20);
    let config = deployment.config.clone();
    let killer = tokio::spawn(async move {
        let mut counter = ServiceProcess::start("counter", &config).await;
        for _ in 0..3 {
            let pause = rand::rng().random_range(500..2_500);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            counter.kill_hard();
            counter = ServiceProcess::start("counter", &config).await;
        }
        counter
    });
    workload.run(&deployment.api, &deployment.config).await;
    let counter = killer.await.unwrap();
    workload
        .assert_exact(&deployment.api, &deployment.config, Duration::from_secs(90))
        .await;
    drop(counter);
    deployment.stop().await;
}

#[tokio::test]
async fn two_counter_instances_split_the_partitions_and_still_count_exactly() {
    let deployment = deploy(true).await;
    let second = spawn_counter(&deployment.config).await;
    let workload = Workload::generate(13, 10_000, 200, 2_000, 20);
    workload.run(&deployment.api, &deployment.config).await;
    workload
        .assert_exact(&deployment.api, &deployment.config, Duration::from_secs(60))
        .await;
    let mut applied_by_each = Vec::new();
    for port in [deployment.counter.as_ref().unwrap().port, second.port] {
        let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let applied: f64 = metrics
            .lines()
            .filter(|line| {
                line.starts_with("spillway_counter_events_total{")
                    && line.contains("outcome=\"applied\"")
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        applied_by_each.push(applied);
    }
    assert!(
        applied_by_each.iter().all(|applied| *applied > 0.0),
        "both instances applied events: {applied_by_each:?}"
    );
    second.stop().await.unwrap();
    deployment.stop().await;
}
