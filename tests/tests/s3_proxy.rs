//! The latency-injecting S3 proxy against the real MinIO: signed calls pass through it
//! unchanged, each one later by the configured latency, with the calls in flight counted;
//! paused, it refuses connections as S3 down would, and serves again when resumed.

use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use futures::future::join_all;
use spillway_tests::{TestConfig, objects, s3_proxy::S3Proxy, stack::Stack};

const LATENCY_MS: u64 = 100;

#[tokio::test]
async fn calls_through_the_proxy_are_delayed_counted_and_refused_when_paused() {
    let config = TestConfig::new("");
    let (_, bucket) = objects::bucket(&config).await;
    let latency = Duration::from_millis(LATENCY_MS)..=Duration::from_millis(LATENCY_MS + 20);
    let proxy = S3Proxy::start(&Stack::current().s3_endpoint, latency)
        .await
        .expect("proxy starts");
    let settings = config.with_s3_endpoint(&proxy.endpoint()).settings();
    let client = spillway_core::s3::client(&settings.s3);

    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let started = Instant::now();
    client
        .put_object()
        .bucket(&bucket)
        .key("through/proxy.bin")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .expect("a signed PUT passes through the proxy");
    assert!(started.elapsed() >= Duration::from_millis(LATENCY_MS));
    assert_eq!(proxy.calls(), 1);

    let started = Instant::now();
    let gets = join_all((0..4).map(|_| objects::get(&client, &bucket, "through/proxy.bin"))).await;
    let elapsed = started.elapsed();
    for got in gets {
        assert_eq!(
            got.as_deref(),
            Some(&body[..]),
            "the object read back whole"
        );
    }
    assert!(elapsed >= Duration::from_millis(LATENCY_MS), "{elapsed:?}");
    assert_eq!(proxy.calls(), 5);
    // The GETs overlapped in the proxy (counted, not timed: a timed bound could flake).
    assert!(proxy.max_in_flight() >= 2, "{}", proxy.max_in_flight());
    assert!(proxy.max_in_flight() <= 4, "{}", proxy.max_in_flight());
    assert_eq!(proxy.in_flight(), 0);

    proxy.pause();
    let head = client.head_bucket().bucket(&bucket).send().await;
    assert!(head.is_err(), "S3 answered through a paused proxy");
    assert_eq!(proxy.calls(), 5, "no call reached the paused proxy");
    proxy.resume().expect("proxy listens again");
    client
        .head_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("S3 answers after the proxy resumed");
    proxy.stop().await;
}
