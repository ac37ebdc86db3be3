//! Faults of the shared stack: a dependency stopped for real, Redis emptied mid-run. These
//! tests stop components everyone uses, so they run one at a time (a lock) in a test binary
//! of their own (cargo runs test binaries one after another).

use std::time::{Duration, Instant};

use spillway_tests::{
    TestConfig, api::Api, db, eventually, redis_client, scenario::Workload, spawn_counter,
    spawn_gateway, stack,
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

#[tokio::test]
async fn readiness_turns_503_naming_the_stopped_dependency_and_recovers_when_it_returns() {
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
    for (component, dependency) in [
        ("redis", "redis"),
        ("postgres", "database"),
        ("kafka", "kafka"),
    ] {
        stack::stop(component);
        let stopped = Instant::now();
        for service in [&gateway, &counter] {
            let url = service.url("/readyz");
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
            let health = client.get(service.url("/healthz")).send().await.unwrap();
            assert_eq!(
                health.status(),
                200,
                "the service stays alive without {component}"
            );
        }
        if component != "postgres" {
            // A call that needs the missing dependency is refused quickly, never hung.
            let started = Instant::now();
            let (status, body) = api.like("video-likes", "v1", "alice").await;
            assert_eq!(status, 503, "{body}");
            assert!(
                started.elapsed() < Duration::from_millis(2_500),
                "answered within the deadline"
            );
            assert_eq!(body["dependency"], dependency, "{body}");
        }
        stack::start_all();
        for service in [&gateway, &counter] {
            let url = service.url("/readyz");
            eventually(
                &format!("{url} ready again after {component}"),
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
