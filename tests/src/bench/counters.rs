//! `cargo xtask bench counters`: spillway's likes against the seed's "before", in one run.
//!
//! - Likes at 100 concurrent clients through the real gateway (202 once Kafka holds the
//!   event) versus the naive baseline: an HTTP handler that, in one PostgreSQL transaction,
//!   inserts the like row and updates the count.
//! - Reading a count of 1,000,000 likes: `GET /v1/counters/...` versus the seed's
//!   `SELECT COUNT(*)` over a JOIN.
//! - Lag at 5,000 likes/s: from the 202 to the value visible in Redis, and to the row in
//!   the database (sampled entities, polled every 5 ms and 50 ms).
//! - The cost of the event-id dedupe: increments with an Idempotency-Key each, through the
//!   gateway, on a namespace that remembers ids for 24 h against one that remembers none
//!   (`dedupe_window_seconds = 0`): requests per second, and the rate until
//!   `counter_values` holds every one.
//!
//! Everything runs in this process against the real stack: the gateway and the counter
//! service (release build), the naive handler, and the load generator.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{App, HttpResponse, HttpServer, web};
use futures::future::join_all;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use tokio::sync::Semaphore;

use super::{Report, Samples, closed_loop, cpu::CpuMeter};
use crate::{TestConfig, api::Api, db, process::ServiceProcess, spawn_counter, spawn_gateway};

const CLIENTS: usize = 100;
const LIKES_PER_CLIENT: usize = 200;
const BIG_COUNT: i64 = 1_000_000;
const LAG_RATE_PER_SECOND: u64 = 5_000;
const LAG_SECONDS: u64 = 10;
const LAG_SAMPLE_EVERY: u64 = 10;

/// A sum namespace that remembers no event ids, beside the sample ones.
const NO_DEDUPE_NAMESPACE: &str = "
[namespaces.views-without-dedupe]
kind = \"sum\"
anonymous_increments = true
dedupe_window_seconds = 0
";

pub async fn run() -> anyhow::Result<Report> {
    let mut report = Report::new("counters");
    let config = TestConfig::new(&format!(
        "{}{NO_DEDUPE_NAMESPACE}",
        crate::SAMPLE_NAMESPACES
    ));
    let database = db::connect(&config).await;
    let videos: Vec<String> = (0..1_000).map(|i| format!("video-{i}")).collect();
    db::create_videos(&database, &videos).await;
    create_naive_tables(&database).await?;
    likes(&mut report, &config).await?;
    let gateway = spawn_gateway(&config).await;
    let counter = spawn_counter(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    seed_big_count(&config, &database).await?;
    let join_case = "naive: SELECT COUNT(*) over a JOIN, 1,000,000 likes";
    let join = read_load(30, || {
        let database = database.clone();
        async move {
            let sql = "SELECT count(*) AS n FROM naive_likes l JOIN naive_videos v ON v.id = l.video_id WHERE v.id = 'big'";
            db::scalar(&database, sql, vec![]).await;
        }
    })
    .await;
    let get = read_load(2_000, || {
        let api = api.clone();
        async move {
            assert_eq!(api.value("video-likes", "big").await, BIG_COUNT);
        }
    })
    .await;
    let join_summary = report.add(join_case, None, &join, "sequential");
    let get_summary = report.add(
        "spillway: GET /v1/counters/video-likes/big",
        Some(join_case),
        &get,
        "sequential, Redis HGET",
    );
    report.finding(
        "read of a 1,000,000-like count, JOIN p50 / GET p50",
        format!(
            "{:.0}x faster (target >= 1000x)",
            join_summary.p50_ms / get_summary.p50_ms.max(1e-9)
        ),
    );

    let (redis_lag, db_lag, achieved) = lag_at_rate(&api, &config, &database).await?;
    report.add(
        "lag: 202 -> visible in Redis",
        None,
        &redis_lag,
        &format!("{achieved:.0} likes/s offered, 1 in {LAG_SAMPLE_EVERY} sampled, 5 ms polls"),
    );
    report.add(
        "lag: 202 -> row in the database",
        None,
        &db_lag,
        "flush every 1 s (tests: 200 ms) or 20000 counters; 50 ms polls",
    );
    dedupe_cost(&mut report, &api, &database).await?;
    counter.stop().await?;
    gateway.stop().await?;
    Ok(report)
}

/// Keyed increments on a namespace without and with the dedupe window, one after the other.
async fn dedupe_cost(
    report: &mut Report,
    api: &Api,
    database: &DatabaseConnection,
) -> anyhow::Result<()> {
    let without_case = "keyed increments, dedupe_window_seconds = 0";
    let (without, without_applied) =
        keyed_increments(api, database, "views-without-dedupe").await?;
    let (with, with_applied) = keyed_increments(api, database, "video-views").await?;
    let without_summary = report.add(
        without_case,
        None,
        &without,
        &format!("100 clients; all in counter_values at {without_applied:.0}/s"),
    );
    let with_summary = report.add(
        "keyed increments, dedupe_window_seconds = 86400",
        Some(without_case),
        &with,
        &format!("100 clients; all in counter_values at {with_applied:.0}/s"),
    );
    report.finding(
        "dedupe cost, keyed increments/s with the window / without",
        format!(
            "{:.2}x through the gateway; {:.2}x until in the database",
            with_summary.per_second / without_summary.per_second.max(1e-9),
            with_applied / without_applied.max(1e-9)
        ),
    );
    Ok(())
}

/// 100 clients x 200 increments of 1, each with its own Idempotency-Key, on `namespace`;
/// returns the request samples and the rate from the first request until the database
/// holds them all.
async fn keyed_increments(
    api: &Api,
    database: &DatabaseConnection,
    namespace: &'static str,
) -> anyhow::Result<(Samples, f64)> {
    let started = Instant::now();
    let load_api = api.clone();
    let samples = closed_loop(CLIENTS, LIKES_PER_CLIENT, move |client, i| {
        let api = load_api.clone();
        async move {
            let key = format!("{namespace}-{client}-{i}");
            api.increment(namespace, &format!("video-{}", i % 1_000), 1, Some(&key))
                .await
                .0
                .as_u16()
        }
    })
    .await;
    let expected = (CLIENTS * LIKES_PER_CLIENT) as i64;
    loop {
        let stored = db::scalar(
            database,
            "SELECT COALESCE(sum(value), 0)::bigint AS n FROM counter_values WHERE namespace = $1",
            vec![namespace.into()],
        )
        .await;
        if stored == expected {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "{namespace}: {stored} of {expected} increments in the database after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((samples, expected as f64 / started.elapsed().as_secs_f64()))
}

async fn read_load<F, Fut>(count: usize, request: F) -> Samples
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    super::time_sequential(count, |_| request()).await
}

/// Likes at 100 concurrent clients, the naive handler and spillway each run as processes of
/// their own: throughput, latency, and the CPU seconds of every server process the path uses
/// (from `/proc`) per like acknowledged. Naive: the handler and PostgreSQL. spillway: the
/// gateway, the counter, the Kafka broker, Redis and PostgreSQL (which the counter's flushes
/// use). The load generator is this process, in neither.
async fn likes(report: &mut Report, config: &TestConfig) -> anyhow::Result<()> {
    let naive = NaiveProcess::start(config).await?;
    let meter = CpuMeter::start_for(vec![naive.pid()]);
    let base = naive.url.clone();
    let naive_likes = closed_loop(CLIENTS, LIKES_PER_CLIENT, move |client, i| {
        let url = format!(
            "{base}/naive/videos/video-{}/likes/m{client}-{i}",
            i % 1_000
        );
        async move {
            reqwest::Client::new()
                .put(url)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    })
    .await;
    let naive_cpu = meter.stop();
    drop(naive);

    let gateway = ServiceProcess::start("gateway", config).await;
    let counter = ServiceProcess::start("counter", config).await;
    let meter = CpuMeter::start_for(vec![gateway.pid(), counter.pid()]);
    let api = Api::new(gateway.url(""));
    let (status, body) = api.like("video-likes", "video-0", "probe").await;
    anyhow::ensure!(status == 202, "a first like answered {status}: {body}");
    let load_api = api.clone();
    let spillway_likes = closed_loop(CLIENTS, LIKES_PER_CLIENT, move |client, i| {
        let api = load_api.clone();
        async move {
            api.like(
                "video-likes",
                &format!("video-{}", i % 1_000),
                &format!("m{client}-{i}"),
            )
            .await
            .0
            .as_u16()
        }
    })
    .await;
    // Until the counter has applied and flushed them: its work belongs to the likes too.
    wait_for_likes_flushed(config).await?;
    let spillway_cpu = meter.stop();
    drop((gateway, counter));

    let naive_case = "naive: INSERT like + UPDATE count in one transaction";
    let naive_summary = report.add(
        naive_case,
        None,
        &naive_likes,
        &format!("100 clients, HTTP handler on PostgreSQL; server CPU {naive_cpu}"),
    );
    let spillway_summary = report.add(
        "spillway: PUT .../members/me (202)",
        Some(naive_case),
        &spillway_likes,
        &format!("100 clients, gateway -> Kafka acks=all; server CPU {spillway_cpu}"),
    );
    let per_like = |cores: f64, wall: f64, summary: &super::Summary| {
        1e3 * cores * wall / summary.count.max(1) as f64
    };
    let naive_ms = per_like(
        naive_cpu.consumer_cores + naive_cpu.postgres_cores,
        naive_cpu.wall_seconds,
        &naive_summary,
    );
    let spillway_ms = per_like(
        spillway_cpu.stack_cores(),
        spillway_cpu.wall_seconds,
        &spillway_summary,
    );
    report.finding(
        "server CPU per acknowledged like, spillway / naive",
        format!(
            "{spillway_ms:.3} ms / {naive_ms:.3} ms = {:.2} (target <= 0.25)",
            spillway_ms / naive_ms.max(1e-9)
        ),
    );
    report.finding(
        "likes throughput, spillway / naive",
        format!(
            "{:.1}x (target >= 5x)",
            spillway_summary.per_second / naive_summary.per_second.max(1e-9)
        ),
    );
    report.finding(
        "likes p99, spillway vs naive",
        format!(
            "{:.1} ms vs {:.1} ms (target: lower)",
            spillway_summary.p99_ms, naive_summary.p99_ms
        ),
    );

    Ok(())
}

/// Waits until `counter_values` holds every like of the likes phase.
async fn wait_for_likes_flushed(config: &TestConfig) -> anyhow::Result<()> {
    let database = db::connect(config).await;
    let expected = (CLIENTS * LIKES_PER_CLIENT) as i64;
    let started = Instant::now();
    loop {
        let stored = db::scalar(
            &database,
            "SELECT COALESCE(sum(value), 0)::bigint AS n FROM counter_values WHERE namespace = 'video-likes'",
            vec![],
        )
        .await;
        if stored >= expected {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "{stored} of {expected} likes in the database after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn create_naive_tables(database: &DatabaseConnection) -> anyhow::Result<()> {
    for sql in [
        "CREATE TABLE naive_videos (id TEXT PRIMARY KEY, like_count BIGINT NOT NULL DEFAULT 0)",
        "CREATE TABLE naive_likes (video_id TEXT NOT NULL REFERENCES naive_videos(id), member TEXT NOT NULL, PRIMARY KEY (video_id, member))",
        "INSERT INTO naive_videos (id) SELECT 'video-' || n FROM generate_series(0, 999) AS n",
    ] {
        database.execute_unprepared(sql).await?;
    }
    Ok(())
}

/// The naive handler as a process of its own: this bench binary, run as
/// `spillway-bench naive-likes-server <schema> <port>`.
struct NaiveProcess {
    url: String,
    child: tokio::process::Child,
}

impl NaiveProcess {
    async fn start(config: &TestConfig) -> anyhow::Result<Self> {
        let port = crate::process::free_port();
        let child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["naive-likes-server", &config.schema, &port.to_string()])
            .kill_on_drop(true)
            .spawn()?;
        let url = format!("http://127.0.0.1:{port}");
        let probe = format!("{url}/naive/ready");
        crate::eventually("the naive handler answers", Duration::from_secs(30), || {
            let probe = probe.clone();
            async move { reqwest::get(probe).await.ok().map(drop) }
        })
        .await;
        Ok(Self { url, child })
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or_default()
    }
}

/// The naive app (`spillway-bench naive-likes-server`): likes in PostgreSQL, counted in the
/// same transaction; serves until killed.
pub async fn serve_naive(schema: &str, port: u16) -> anyhow::Result<()> {
    let mut options = sea_orm::ConnectOptions::new(crate::stack::Stack::current().database_url);
    options
        .set_schema_search_path(schema.to_owned())
        .max_connections(20)
        .sqlx_logging(false);
    let pool = web::Data::new(sea_orm::Database::connect(options).await?);
    HttpServer::new(move || {
        App::new()
            .app_data(pool.clone())
            .route(
                "/naive/videos/{video}/likes/{member}",
                web::put().to(naive_like),
            )
            .route("/naive/ready", web::get().to(HttpResponse::Ok))
    })
    .bind(("127.0.0.1", port))?
    .run()
    .await?;
    Ok(())
}

async fn naive_like(
    pool: web::Data<DatabaseConnection>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (video, member) = path.into_inner();
    let outcome: Result<(), sea_orm::DbErr> = async {
        let transaction = pool.begin().await?;
        let inserted = transaction
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "INSERT INTO naive_likes (video_id, member) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                [video.clone().into(), member.into()],
            ))
            .await?;
        if inserted.rows_affected() == 1 {
            transaction
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "UPDATE naive_videos SET like_count = like_count + 1 WHERE id = $1",
                    [video.into()],
                ))
                .await?;
        }
        transaction.commit().await
    }
    .await;
    match outcome {
        Ok(()) => HttpResponse::Ok().finish(),
        Err(error) => HttpResponse::InternalServerError().body(error.to_string()),
    }
}

/// One video with 1,000,000 likes: rows for the JOIN, and spillway's counter.
async fn seed_big_count(config: &TestConfig, database: &DatabaseConnection) -> anyhow::Result<()> {
    database
        .execute_unprepared("INSERT INTO naive_videos (id) VALUES ('big')")
        .await?;
    database
        .execute_unprepared(&format!(
            "INSERT INTO naive_likes (video_id, member) SELECT 'big', 'm' || n FROM generate_series(1, {BIG_COUNT}) AS n"
        ))
        .await?;
    database.execute_unprepared("ANALYZE naive_likes").await?;
    let settings = config.settings();
    let store = spillway_core::counters::CounterStore::new(
        spillway_core::redis::RedisClient::from_settings(&settings.redis)?,
        database.clone(),
    );
    database
        .execute_unprepared(&format!(
            "INSERT INTO counter_values (namespace, entity_id, value, version) VALUES ('video-likes', 'big', {BIG_COUNT}, 1)"
        ))
        .await?;
    let big = ["big".to_owned()];
    store
        .load("video-likes", &big, false, std::time::Duration::ZERO)
        .await?;
    Ok(())
}

/// Offers likes on fresh entities at a fixed rate; measures 202 -> Redis and 202 -> database
/// on every `LAG_SAMPLE_EVERY`th. Returns the two samples and the achieved rate.
async fn lag_at_rate(
    api: &Api,
    config: &TestConfig,
    database: &DatabaseConnection,
) -> anyhow::Result<(Samples, Samples, f64)> {
    let acked: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let in_flight = Arc::new(Semaphore::new(1_000));
    let total = LAG_RATE_PER_SECOND * LAG_SECONDS;
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    let per_tick = LAG_RATE_PER_SECOND / 1_000;
    let started = Instant::now();
    let watcher = tokio::spawn(watch(
        acked.clone(),
        config.clone(),
        database.clone(),
        total / LAG_SAMPLE_EVERY,
    ));
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        if i % per_tick == 0 {
            ticker.tick().await;
        }
        let permit = in_flight.clone().acquire_owned().await?;
        let (api, acked) = (api.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let entity = format!("lag-{i}");
            let (status, _) = api.like("video-likes", &entity, "member").await;
            if status == 202 && i % LAG_SAMPLE_EVERY == 0 {
                acked.lock().expect("acked").insert(entity, Instant::now());
            }
            drop(permit);
        }));
    }
    join_all(tasks).await;
    let achieved = total as f64 / started.elapsed().as_secs_f64();
    let (redis_lag, db_lag) = watcher.await?;
    Ok((redis_lag, db_lag, achieved))
}

/// Polls Redis every 5 ms and the database every 50 ms for the acknowledged sample entities.
async fn watch(
    acked: Arc<Mutex<HashMap<String, Instant>>>,
    config: TestConfig,
    database: DatabaseConnection,
    expected: u64,
) -> (Samples, Samples) {
    let mut redis = crate::redis_client::connect().await;
    let mut redis_lag = Samples::default();
    let mut db_lag = Samples::default();
    let mut waiting_redis: Vec<(String, Instant)> = Vec::new();
    let mut waiting_db: Vec<(String, Instant)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(LAG_SECONDS + 60);
    let mut seen = 0u64;
    let mut last_db_poll = Instant::now();
    while (seen < expected || !waiting_db.is_empty()) && Instant::now() < deadline {
        waiting_redis.extend(acked.lock().expect("acked").drain());
        if !waiting_redis.is_empty() {
            let mut pipeline = redis::pipe();
            for (entity, _) in &waiting_redis {
                pipeline.hget(
                    format!("{}{{c:video-likes:{entity}}}", config.key_prefix),
                    "v",
                );
            }
            let values: Vec<Option<i64>> =
                pipeline.query_async(&mut redis).await.unwrap_or_default();
            let now = Instant::now();
            let mut still = Vec::new();
            for ((entity, acked_at), value) in waiting_redis.drain(..).zip(values) {
                if value == Some(1) {
                    redis_lag.record(now.saturating_duration_since(acked_at));
                    waiting_db.push((entity, acked_at));
                    seen += 1;
                } else {
                    still.push((entity, acked_at));
                }
            }
            waiting_redis = still;
        }
        if last_db_poll.elapsed() >= Duration::from_millis(50) && !waiting_db.is_empty() {
            last_db_poll = Instant::now();
            let ids: Vec<String> = waiting_db
                .iter()
                .map(|(entity, _)| entity.clone())
                .collect();
            let rows = spillway_core::counters::sql::load_values(&database, "video-likes", &ids)
                .await
                .unwrap_or_default();
            let now = Instant::now();
            waiting_db.retain(|(entity, acked_at)| {
                if rows.get(entity) == Some(&1) {
                    db_lag.record(now.saturating_duration_since(*acked_at));
                    false
                } else {
                    true
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (redis_lag, db_lag)
}
