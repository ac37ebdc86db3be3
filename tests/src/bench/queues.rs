//! The waiting-room part of `cargo xtask bench reads`: 50,000 members waiting in one room,
//! polled at a steady 2,000 polls/s while members admitted leave at once (so admission keeps
//! running at its configured rate), the size of the active set sampled throughout.
//! Baseline: the gateway's `/healthz` at the same rate, same run (HTTP without Redis).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use rand::Rng;

use super::{Report, Samples};
use crate::{TestConfig, api::Api, redis_client, spawn_gateway};

const QUEUE: &str = "bench-room";
const WAITERS: usize = 50_000;
const CAPACITY: u64 = 1_000;
const ADMIT_PER_MINUTE: u64 = 6_000;
const POLLS_PER_SECOND: u64 = 2_000;
const RUN: Duration = Duration::from_secs(20);
const BASELINE: &str = "gateway GET /healthz at 2,000/s";

fn config() -> TestConfig {
    TestConfig::new(&format!(
        "[queues.bench]\npattern = \"{QUEUE}\"\ncapacity = {CAPACITY}\n\
         admit_per_minute = {ADMIT_PER_MINUTE}\nsession_ttl_seconds = 600\n\
         heartbeat_timeout_seconds = 600\n"
    ))
}

/// Adds the waiting-room rows and findings to `report`.
pub async fn run(report: &mut Report) -> anyhow::Result<()> {
    let config = config();
    let gateway = spawn_gateway(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    let joined = Instant::now();
    let tokens = join_all_waiters(&api).await?;
    report.finding(
        "waiting room: joins",
        format!(
            "{WAITERS} members joined in {:.1} s",
            joined.elapsed().as_secs_f64()
        ),
    );

    let healthz = health_url(&api);
    let baseline = open_loop(RUN / 2, {
        let api = api.clone();
        move |_| {
            let (api, url) = (api.clone(), healthz.clone());
            async move {
                api.client
                    .get(url)
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16())
            }
        }
    })
    .await;
    report.add(BASELINE, None, &baseline, "same HTTP stack, no Redis");

    let stop = Arc::new(AtomicBool::new(false));
    let active_key = format!("{}{{q:{QUEUE}}}:a", config.key_prefix);
    let most_active = redis_client::sample_largest_zset(active_key, stop.clone());
    let admitted = Arc::new(AtomicU64::new(0));
    let tokens = Arc::new(tokens);
    let polls = open_loop(RUN, {
        let (api, tokens, admitted) = (api.clone(), tokens.clone(), admitted.clone());
        move |_| poll_random(api.clone(), tokens.clone(), admitted.clone())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let most = most_active.await?;
    let summary = report.add(
        "queue poll, 50,000 waiting, at 2,000/s",
        Some(BASELINE),
        &polls,
        "one Lua step per poll (expire, heartbeat, admit, ZRANK)",
    );
    let admitted = admitted.load(Ordering::Relaxed);
    let per_minute = admitted as f64 * 60.0 / RUN.as_secs_f64();
    report.finding(
        "waiting room: poll p99 (target under 20 ms at 2,000 polls/s)",
        format!(
            "{:.2} ms at {:.0} polls/s: {}",
            summary.p99_ms,
            summary.per_second,
            if summary.p99_ms < 20.0 {
                "met"
            } else {
                "missed"
            }
        ),
    );
    report.finding(
        "waiting room: most active at once (capacity 1,000)",
        format!(
            "{most}: {}",
            if most <= CAPACITY {
                "never above capacity"
            } else {
                "ABOVE CAPACITY"
            }
        ),
    );
    let admissions_key = format!("{}{{q:{QUEUE}}}:adm", config.key_prefix);
    let mut redis = redis_client::connect().await;
    let last_minute: u64 = redis::cmd("ZCARD")
        .arg(admissions_key)
        .query_async(&mut redis)
        .await?;
    report.finding(
        "waiting room: admissions in the last minute (the room's own log)",
        format!(
            "{last_minute}: {} the configured {ADMIT_PER_MINUTE}/min; pollers saw {admitted} admitted \
             in {} s ({per_minute:.0}/min: a place frees only when its member, polled at random, leaves)",
            if last_minute <= ADMIT_PER_MINUTE { "within" } else { "ABOVE" },
            RUN.as_secs()
        ),
    );
    gateway.stop().await?;
    Ok(())
}

fn health_url(api: &Api) -> String {
    format!("{}/healthz", api.base_url)
}

/// Joins every waiter (200 at a time); returns (member, token) pairs.
async fn join_all_waiters(api: &Api) -> anyhow::Result<Vec<(String, String)>> {
    let joins: Vec<Option<(String, String)>> = futures::stream::iter(0..WAITERS)
        .map(|n| {
            let api = api.clone();
            async move {
                let member = format!("waiter-{n}");
                let (status, body) = api.join_queue(QUEUE, &member).await;
                let token = body["token"].as_str()?.to_owned();
                (status == 201).then_some((member, token))
            }
        })
        .buffer_unordered(200)
        .collect()
        .await;
    let tokens: Vec<(String, String)> = joins.into_iter().flatten().collect();
    anyhow::ensure!(
        tokens.len() == WAITERS,
        "only {} joins succeeded",
        tokens.len()
    );
    Ok(tokens)
}

/// Polls a random waiter; an admitted one leaves at once (freeing its place).
async fn poll_random(
    api: Api,
    tokens: Arc<Vec<(String, String)>>,
    admitted: Arc<AtomicU64>,
) -> u16 {
    let index = rand::rng().random_range(0..tokens.len());
    let (member, token) = &tokens[index];
    let (status, body) = api.poll_queue(QUEUE, token, member).await;
    if body["status"] == "active" {
        admitted.fetch_add(1, Ordering::Relaxed);
        api.leave_queue(QUEUE, token, member).await;
    }
    // A token polled after its member left is gone: that is an answer too.
    if status == 404 { 200 } else { status.as_u16() }
}

/// Sends `request` at POLLS_PER_SECOND for `duration` in an open loop; every answer must be
/// 200.
async fn open_loop<F, Fut>(duration: Duration, request: F) -> Samples
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = u16> + Send + 'static,
{
    let answers = super::open_loop(POLLS_PER_SECOND, duration, request).await;
    assert!(
        answers.answers.iter().all(|(status, _)| *status == 200),
        "a request failed"
    );
    answers.samples(|_| true)
}
