//! `cargo xtask bench templates`: a template of 30 objects of 200 KiB (random bytes) with the
//! S3 latency of a cloud store: a proxy in front of the local MinIO ([`S3Proxy`]) adds
//! 50-150 ms, uniform, to every call. The gateway and template-warmup run in this process,
//! each with a proxy of its own, so each one's S3 calls in flight are counted apart.
//!
//! - direct copies (the baseline, what a caller waits without a pool): `POST .../copies` on a
//!   template with `pool_capacity` 0, one caller at a time; then 16 callers at once, who ask
//!   for 128 calls at once against the gateway's bound of 32.
//! - pool hits: a template with a pool of 4, at a steady 2 copies/s for 60 s (an open loop);
//!   the hit ratio. A refill copy makes 30 calls, 8 at once, ~100 ms each: ~0.4-0.5 s, plus
//!   the Kafka hop. At 2/s one or two copies are taken while one is being refilled, so 4
//!   covers a refill twice over; template-warmup makes 8 copies at once under its bound of
//!   32 calls (~8 copies/s), four times the rate.
//! - a pool of 16 filled from empty: template-warmup asks for 64 calls at once against its
//!   bound of 32.

use std::{
    ops::RangeInclusive,
    time::{Duration, Instant},
};

use super::{Report, closed_loop, open_loop, time_sequential};
use crate::{
    TestConfig, api::Api, objects, s3_proxy::S3Proxy, spawn_gateway, spawn_template_warmup,
    stack::Stack,
};

const OBJECTS: usize = 30;
const OBJECT_BYTES: usize = 200 * 1024;
/// Added to every S3 call, drawn uniformly.
const LATENCY: RangeInclusive<Duration> = Duration::from_millis(50)..=Duration::from_millis(150);
const MAX_S3_IN_FLIGHT: usize = 32;
const COPY_PARALLELISM: usize = 8;
const DIRECT_COPIES: usize = 40;
const BURST_CALLERS: usize = 16;
const BURST_COPIES_PER_CALLER: usize = 2;
const POOL_CAPACITY: i64 = 4;
const RATE_PER_SECOND: u64 = 2;
const STEADY: Duration = Duration::from_secs(60);
const FILL_CAPACITY: i64 = 16;
const POOL_WAIT: Duration = Duration::from_secs(120);
const DIRECT: &str = "direct copy, one caller at a time";

fn config() -> TestConfig {
    TestConfig::new(&format!(
        "[templates]\nmax_s3_in_flight = {MAX_S3_IN_FLIGHT}\ncopy_parallelism = {COPY_PARALLELISM}\n"
    ))
}

pub async fn run() -> anyhow::Result<Report> {
    let mut report = Report::new("templates");
    let config = config();
    let upstream = Stack::current().s3_endpoint;
    let gateway_s3 = S3Proxy::start(&upstream, LATENCY).await?;
    let warmup_s3 = S3Proxy::start(&upstream, LATENCY).await?;
    let (client, bucket) = objects::bucket(&config).await;
    let sources = objects::put_numbered(&client, &bucket, "sources", OBJECTS, |_| {
        let mut body = vec![0u8; OBJECT_BYTES];
        rand::Rng::fill(&mut rand::rng(), &mut body[..]);
        body
    })
    .await;
    let warmup = spawn_template_warmup(&config.with_s3_endpoint(&warmup_s3.endpoint())).await;
    let gateway = spawn_gateway(&config.with_s3_endpoint(&gateway_s3.endpoint())).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    register(&api, "direct", &sources, 0).await?;
    register(&api, "pooled", &sources, POOL_CAPACITY).await?;
    api.wait_for_pool("pooled", POOL_CAPACITY, POOL_WAIT).await;
    let registering = gateway_s3.reset_max_in_flight();

    let direct = time_sequential(DIRECT_COPIES, |n| take_direct(&api, n as u64)).await;
    let one_at_a_time = gateway_s3.reset_max_in_flight();
    let burst = closed_loop(BURST_CALLERS, BURST_COPIES_PER_CALLER, {
        let api = api.clone();
        move |caller, _| {
            let api = api.clone();
            async move {
                take_direct(&api, caller as u64).await;
                201
            }
        }
    })
    .await;
    let steady = open_loop(RATE_PER_SECOND, STEADY, {
        let api = api.clone();
        move |n| {
            let api = api.clone();
            async move { take_copy(&api, "pooled", n).await }
        }
    })
    .await;
    let filling = Instant::now();
    register(&api, "fill", &sources, FILL_CAPACITY).await?;
    api.wait_for_pool("fill", FILL_CAPACITY, POOL_WAIT).await;
    let fill = filling.elapsed();

    let direct = report.add(
        DIRECT,
        None,
        &direct,
        &format!(
            "pool_capacity 0: {OBJECTS} CopyObject in the request, {COPY_PARALLELISM} at once"
        ),
    );
    report.add(
        &format!("direct copy, {BURST_CALLERS} callers at once"),
        Some(DIRECT),
        &burst,
        &format!(
            "{} calls wanted at once, the gateway's bound is {MAX_S3_IN_FLIGHT}",
            BURST_CALLERS * COPY_PARALLELISM
        ),
    );
    let hits = report.add(
        &format!("pool hit at {RATE_PER_SECOND}/s"),
        Some(DIRECT),
        &steady.samples(|source| source == "pool"),
        &format!(
            "open loop {} s, pool of {POOL_CAPACITY}; answers with source `pool`",
            STEADY.as_secs()
        ),
    );
    let misses = steady.samples(|source| source != "pool");
    if misses.summary().count > 0 {
        report.add(
            &format!("pool miss (direct) at {RATE_PER_SECOND}/s"),
            Some(DIRECT),
            &misses,
            "same loop; answers with source `direct`",
        );
    }

    let ratio = direct.p95_ms / hits.p95_ms.max(1e-9);
    report.finding(
        "pool-hit p95 vs direct p95 (target: at most 1/20)",
        format!(
            "{:.1} ms vs {:.1} ms, 1/{ratio:.0}: {}",
            hits.p95_ms,
            direct.p95_ms,
            verdict(ratio >= 20.0)
        ),
    );
    let total = steady.answers.len();
    let hit_ratio = hits.count as f64 / total.max(1) as f64;
    report.finding(
        &format!(
            "pool hit ratio at {RATE_PER_SECOND}/s for {} s, pool of {POOL_CAPACITY} (target >= 95%)",
            STEADY.as_secs()
        ),
        format!(
            "{}/{total} = {:.1}%: {}",
            hits.count,
            hit_ratio * 100.0,
            verdict(hit_ratio >= 0.95)
        ),
    );
    let gateway_most = registering
        .max(one_at_a_time)
        .max(gateway_s3.max_in_flight());
    report.finding(
        &format!("gateway: S3 calls in flight at most (bound {MAX_S3_IN_FLIGHT})"),
        format!(
            "{} over {} calls ({one_at_a_time} while copying one at a time): {}",
            gateway_most,
            gateway_s3.calls(),
            within(gateway_most)
        ),
    );
    report.finding(
        &format!("template-warmup: S3 calls in flight at most (bound {MAX_S3_IN_FLIGHT})"),
        format!(
            "{} over {} calls: {}",
            warmup_s3.max_in_flight(),
            warmup_s3.calls(),
            within(warmup_s3.max_in_flight())
        ),
    );
    report.finding(
        &format!("pool of {FILL_CAPACITY} filled from empty by template-warmup"),
        format!(
            "{:.1} s (GET .../pool polled every 100 ms)",
            fill.as_secs_f64()
        ),
    );
    report.finding(
        "S3 latency",
        format!(
            "{}-{} ms per call, uniform, added by a proxy in front of MinIO (one per service); \
             copies answer within gateway.copy_deadline_ms (default 15,000), not the 2,000 ms \
             request deadline",
            LATENCY.start().as_millis(),
            LATENCY.end().as_millis()
        ),
    );

    gateway.stop().await?;
    warmup.stop().await?;
    gateway_s3.stop().await;
    warmup_s3.stop().await;
    objects::remove_bucket(&client, &bucket).await?;
    Ok(report)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}

fn within(most: usize) -> &'static str {
    if most <= MAX_S3_IN_FLIGHT {
        "never above the bound"
    } else {
        "ABOVE THE BOUND"
    }
}

async fn register(
    api: &Api,
    template: &str,
    sources: &[String],
    capacity: i64,
) -> anyhow::Result<()> {
    let (status, body) = api.register_template(template, sources, capacity).await;
    anyhow::ensure!(status == 201, "registering {template}: {status} {body}");
    Ok(())
}

/// `POST /v1/templates/{template}/copies` as member `n`; the answer's `source`.
async fn take_copy(api: &Api, template: &str, n: u64) -> String {
    let (status, body) = api.take_copy(template, &format!("member-{n}")).await;
    assert_eq!(status, 201, "{body}");
    body["source"].as_str().unwrap_or_default().to_owned()
}

/// A copy of the template without a pool, which is always made in the request.
async fn take_direct(api: &Api, n: u64) {
    assert_eq!(take_copy(api, "direct", n).await, "direct");
}
