//! Waiting rooms against the real stack: first come, first admitted under 2,000 concurrent
//! joiners with never more than the capacity active; expired sessions and silent waiters
//! freeing their places; tokens that only their member may use; signed admissions.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::{StreamExt, stream};
use reqwest::StatusCode;
use serde_json::Value;
use spillway_tests::{JWT_SECRET, TestConfig, api::Api, eventually, redis_client, spawn_gateway};

fn queue_config(pattern: &str, capacity: u32, ttl: u64, heartbeat: u64) -> TestConfig {
    TestConfig::new(&format!(
        "[queues.test]\npattern = \"{pattern}\"\ncapacity = {capacity}\nadmit_per_minute = 1000000\n\
         session_ttl_seconds = {ttl}\nheartbeat_timeout_seconds = {heartbeat}\n"
    ))
}

fn token_of(body: &Value) -> String {
    body["token"].as_str().expect("token").to_owned()
}

/// The tokens waiting in a queue, in arrival order, read straight from Redis.
async fn waiting_in_order(config: &TestConfig, queue: &str) -> Vec<String> {
    let mut redis = redis_client::connect().await;
    let key = format!("{}{{q:{queue}}}:w", config.key_prefix);
    redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .unwrap()
}

#[tokio::test]
async fn two_thousand_joiners_are_admitted_in_arrival_order_never_above_capacity() {
    let config = queue_config("concert-*", 100, 300, 300);
    let gateway = spawn_gateway(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    let stop = Arc::new(AtomicBool::new(false));
    let active_key = format!("{}{{q:concert-fifo}}:a", config.key_prefix);
    let most_active = redis_client::sample_largest_zset(active_key, stop.clone());

    let joins: Vec<(String, StatusCode, Value)> = stream::iter(0..2_000)
        .map(|n| {
            let api = api.clone();
            async move {
                let member = format!("fan-{n}");
                let (status, body) = api.join_queue("concert-fifo", &member).await;
                (member, status, body)
            }
        })
        .buffer_unordered(500)
        .collect()
        .await;
    let mut active: Vec<(String, String)> = Vec::new();
    let mut waiting: Vec<(String, String)> = Vec::new();
    for (member, status, body) in joins {
        assert_eq!(status, 201, "{body}");
        let entry = (member, token_of(&body));
        match body["status"].as_str() {
            Some("active") => active.push(entry),
            _ => waiting.push(entry),
        }
    }
    assert_eq!(active.len(), 100, "the first 100 are admitted at once");
    let distinct: HashSet<&String> = active.iter().chain(&waiting).map(|(_, t)| t).collect();
    assert_eq!(distinct.len(), 2_000, "every joiner has a token of its own");
    let arrival = waiting_in_order(&config, "concert-fifo").await;
    assert_eq!(arrival.len(), 1_900);

    let (member, token) = &waiting[0];
    let (_, again) = api.join_queue("concert-fifo", member).await;
    assert_eq!(&token_of(&again), token, "asking twice keeps the place");

    let mut admitted = 0;
    while !waiting.is_empty() {
        for (member, token) in active.drain(..) {
            assert_eq!(api.leave_queue("concert-fifo", &token, &member).await, 204);
        }
        let polls: Vec<((String, String), Value)> = stream::iter(waiting.drain(..))
            .map(|(member, token)| {
                let api = api.clone();
                async move {
                    let (status, body) = api.poll_queue("concert-fifo", &token, &member).await;
                    assert_eq!(status, 200, "{body}");
                    ((member, token), body)
                }
            })
            .buffer_unordered(500)
            .collect()
            .await;
        for (entry, body) in polls {
            if body["status"] == "active" {
                active.push(entry);
            } else {
                waiting.push(entry);
            }
        }
        admitted += active.len();
        let still_waiting = waiting_in_order(&config, "concert-fifo").await;
        assert_eq!(
            still_waiting,
            arrival[admitted..],
            "after {admitted} admissions the line is the rest of the arrival order"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let most = most_active.await.unwrap();
    assert!(
        most <= 100,
        "at most the capacity was active at once (saw {most})"
    );
    assert!(most >= 90, "the sampler saw the room full ({most})");
    let metrics = gateway.metrics().await;
    let mut redis = redis_client::connect().await;
    for (gauge, part) in [("queue_waiting", "w"), ("queue_active", "a")] {
        let in_redis: i64 = redis::cmd("ZCARD")
            .arg(format!("{}{{q:concert-fifo}}:{part}", config.key_prefix))
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(
            gauge_value(&metrics, gauge),
            Some(in_redis),
            "{gauge} is the room's count after the last step"
        );
    }
    gateway.stop().await.unwrap();
}

/// The value of `spillway_gateway_<name>{room="concert-*"}` in a metrics exposition.
fn gauge_value(metrics: &str, name: &str) -> Option<i64> {
    let prefix = format!("spillway_gateway_{name}{{room=\"concert-*\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test]
async fn expired_sessions_and_silent_waiters_free_their_places() {
    let config = queue_config("sale", 1, 1, 1);
    let gateway = spawn_gateway(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    let (_, a) = api.join_queue("sale", "ann").await;
    assert_eq!(a["status"], "active", "{a}");
    let (_, b) = api.join_queue("sale", "bob").await;
    assert_eq!(
        (b["status"].as_str(), b["position"].as_u64()),
        (Some("waiting"), Some(1))
    );
    let (_, c) = api.join_queue("sale", "cid").await;
    assert_eq!(c["position"], 2, "{c}");

    // Bob keeps polling; Cid goes silent; Ann's session runs out.
    let bob = eventually(
        "bob admitted after ann's session",
        Duration::from_secs(5),
        || async {
            let (_, body) = api.poll_queue("sale", &token_of(&b), "bob").await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            (body["status"] == "active").then_some(body)
        },
    )
    .await;
    assert!(bob["admission"].is_string(), "{bob}");
    let (status, _) = api.poll_queue("sale", &token_of(&a), "ann").await;
    assert_eq!(status, 404, "an expired session is gone");
    let (status, _) = api.poll_queue("sale", &token_of(&c), "cid").await;
    assert_eq!(status, 404, "a silent waiter left the line");
    let (_, d) = api.join_queue("sale", "dan").await;
    assert_eq!(d["position"], 1, "nobody silent stands in front: {d}");
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn tokens_are_their_members_and_admissions_verify_offline() {
    let config = queue_config("vip-*", 1, 60, 60);
    let gateway = spawn_gateway(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    let (status, a) = api.join_queue("vip-night", "ann").await;
    assert_eq!(
        (status.as_u16(), a["status"].as_str()),
        (201, Some("active")),
        "{a}"
    );
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    let admission = jsonwebtoken::decode::<Value>(
        a["admission"].as_str().unwrap(),
        &jsonwebtoken::DecodingKey::from_secret(JWT_SECRET.as_bytes()),
        &validation,
    )
    .expect("the admission verifies with the secret alone");
    assert_eq!(admission.claims["sub"], "ann");
    assert_eq!(admission.claims["queue"], "vip-night");

    let (_, b) = api.join_queue("vip-night", "bob").await;
    assert_eq!(b["status"], "waiting");
    let (status, body) = api.poll_queue("vip-night", &token_of(&b), "ann").await;
    assert_eq!(status, 403, "another member's token: {body}");
    let (status, _) = api.poll_queue("vip-night", "no-such-token", "ann").await;
    assert_eq!(status, 404);
    let (status, _) = api.join_queue("elsewhere", "ann").await;
    assert_eq!(status, 404, "no waiting room configured for that name");
    let anonymous = api
        .client
        .post(format!("{}/v1/queues/vip-night/tokens", api.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        api.leave_queue("vip-night", &token_of(&b), "ann").await,
        403
    );

    assert_eq!(
        api.leave_queue("vip-night", &token_of(&a), "ann").await,
        204
    );
    let (_, bob) = api.poll_queue("vip-night", &token_of(&b), "bob").await;
    assert_eq!(
        bob["status"], "active",
        "leaving frees the slot at once: {bob}"
    );
    let (status, _) = api.poll_queue("vip-night", &token_of(&a), "ann").await;
    assert_eq!(status, 404);
    gateway.stop().await.unwrap();
}
