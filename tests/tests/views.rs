//! Cached views against the real stack: a key loaded once then served from Redis; a committed
//! write's refresh visible within a second, a refused one leaving the view alone; 500
//! concurrent reads of an expired hot key reaching the database a handful of times (counted
//! in PostgreSQL's statistics); a slow query answered 503 within the deadline; under
//! `maxmemory` pressure only view keys evicted.

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use spillway_tests::{
    SAMPLE_NAMESPACES, SAMPLE_SINKS, TestConfig,
    api::Api,
    db, eventually, spawn_batch_writer, spawn_counter, spawn_gateway,
    views::{
        PrivateRedis, ViewRead, load_sample_schema, read_view, read_view_as, sample_views_toml,
        settled_table_scans, with_redis,
    },
};

fn api_for(port: u16) -> Api {
    Api::new(format!("http://127.0.0.1:{port}"))
}

/// The sample sinks and views (member-playlists needs the playlists sink).
fn sample_config() -> TestConfig {
    TestConfig::new(&format!("{SAMPLE_SINKS}{}", sample_views_toml()))
}

#[tokio::test]
async fn a_view_is_loaded_once_then_served_from_redis() {
    let config = sample_config();
    let database = db::connect(&config).await;
    load_sample_schema(&database).await;
    let gateway = spawn_gateway(&config).await;
    let api = api_for(gateway.port);

    let first = read_view(&api, "lecture-attendance", "7").await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.cache_status, "spillway; fwd=miss; stored");
    assert_eq!(first.body["lecture_id"], 7);
    assert_eq!(first.body["open"], true);
    let may_attend = first.body["may_attend"].as_array().expect("may_attend");
    let approved = db::scalar(
        &database,
        "SELECT count(*) AS n FROM enrollments WHERE lecture_id = 7 AND status = 'approved'",
        vec![],
    )
    .await;
    assert_eq!(may_attend.len() as i64, approved);
    assert!(may_attend.contains(&json!("member-00006")), "approved");
    assert!(!may_attend.contains(&json!("member-00066")), "pending");

    let second = read_view(&api, "lecture-attendance", "007").await;
    assert_eq!(second.status, 200);
    assert!(
        second.cache_status.starts_with("spillway; hit; ttl="),
        "{second:?}"
    );
    assert_eq!(second.body, first.body, "`007` is the key `7`");

    let missing = read_view(&api, "lecture-attendance", "1000").await;
    assert_eq!(missing.status, 404, "no such lecture");
    assert_eq!(missing.cache_status, "spillway; fwd=miss; stored");
    let again = read_view(&api, "lecture-attendance", "1000").await;
    assert_eq!(
        (again.status, again.is_hit()),
        (404, true),
        "the miss is cached too"
    );

    let unknown = read_view(&api, "no-such-view", "7").await;
    assert_eq!(unknown.status, 404);
    let bad = read_view(&api, "lecture-attendance", "seven").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["field"], "key");
    let bad_text = read_view_as(&api, "member-playlists", "a%20b", "ann").await;
    assert_eq!(bad_text.status, 400);
    gateway.stop().await.unwrap();
}

/// Reads the view (keyed by member) as its key's member until `check` accepts it; the read
/// and when it came.
async fn read_until(
    api: &Api,
    view: &str,
    key: &str,
    check: impl Fn(&ViewRead) -> bool,
) -> (ViewRead, Instant) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let read = read_view_as(api, view, key, key).await;
        if check(&read) {
            return (read, Instant::now());
        }
        assert!(
            Instant::now() < deadline,
            "the view never showed it: {read:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn lists(read: &ViewRead, id: &str) -> bool {
    read.body
        .as_array()
        .is_some_and(|rows| rows.iter().any(|row| row["id"] == id))
}

#[tokio::test]
async fn a_committed_write_refreshes_its_view_within_a_second() {
    let config = sample_config();
    let _schema = db::connect(&config).await;
    let writer = spawn_batch_writer(&config).await;
    let gateway = spawn_gateway(&config).await;
    let api = api_for(gateway.port);
    let before = read_view_as(&api, "member-playlists", "alice", "alice").await;
    assert_eq!((before.status, before.body.clone()), (200, json!([])));
    assert_eq!(before.cache_status, "spillway; fwd=miss; stored");

    let (status, body) = api
        .write("playlists", "alice", &json!({"title": "Road trip"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let committed_at = eventually("the write is committed", Duration::from_secs(10), || {
        let (api, id) = (api.clone(), id.clone());
        async move {
            let (_, body) = api.read_write_as("playlists", &id, "alice").await;
            (body["status"] == "committed").then(Instant::now)
        }
    })
    .await;
    let (read, seen_at) =
        read_until(&api, "member-playlists", "alice", |read| lists(read, &id)).await;
    let lag = seen_at.saturating_duration_since(committed_at);
    assert!(
        lag < Duration::from_secs(1),
        "visible {lag:?} after the commit"
    );
    assert!(
        read.cache_status.starts_with("spillway; hit"),
        "refreshed in the cache by the batch-writer, not reloaded by a read: {read:?}"
    );
    assert_eq!(read.body[0]["title"], "Road trip");
    gateway.stop().await.unwrap();
    writer.stop().await.unwrap();
}

#[tokio::test]
async fn a_write_the_database_refuses_leaves_the_view_alone() {
    let config = sample_config();
    let database = db::connect(&config).await;
    let writer = spawn_batch_writer(&config).await;
    database
        .execute_unprepared(
            "ALTER TABLE playlists ADD CONSTRAINT no_refused CHECK (title <> 'refused')",
        )
        .await
        .unwrap();
    let gateway = spawn_gateway(&config).await;
    let api = api_for(gateway.port);
    let before = read_view_as(&api, "member-playlists", "bob", "bob").await;
    assert_eq!(before.body, json!([]));

    let (status, _) = api
        .write("playlists", "bob", &json!({"title": "refused"}))
        .await;
    assert_eq!(status, 202);
    // A later row of the same sink, committed after (or with) the refused one.
    let (_, later) = api
        .write("playlists", "carol", &json!({"title": "fine"}))
        .await;
    let later = later["id"].as_str().unwrap().to_owned();
    eventually(
        "the later write is committed",
        Duration::from_secs(10),
        || {
            let (api, id) = (api.clone(), later.clone());
            async move {
                (api.read_write_as("playlists", &id, "carol").await.1["status"] == "committed")
                    .then_some(())
            }
        },
    )
    .await;

    let after = read_view_as(&api, "member-playlists", "bob", "bob").await;
    assert_eq!(after.body, json!([]));
    assert!(
        after.cache_status.starts_with("spillway; hit; ttl="),
        "untouched: {after:?}"
    );
    let mut redis = spillway_tests::redis_client::connect().await;
    let generation = format!("{}{{v:member-playlists:bob}}:g", config.key_prefix);
    let claimed: bool = redis::cmd("EXISTS")
        .arg(&generation)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!claimed, "no commit claimed bob's key");
    gateway.stop().await.unwrap();
    writer.stop().await.unwrap();
}

/// A view over one row that expires after a second, and stays `stale_seconds` longer.
fn hot_config(stale_seconds: u64) -> TestConfig {
    TestConfig::new(&format!(
        "[views.hot]\nsql = \"SELECT id, payload FROM hot_items WHERE id = $1\"\n\
         result = \"one\"\nttl_seconds = 1\nttl_jitter_percent = 0\nstale_seconds = {stale_seconds}\n"
    ))
}

/// 500 concurrent reads, over two gateways, of the hot key once it has expired: their
/// answers, and the queries that reached the table meanwhile. A backend reports its
/// statistics when it exits (an idle one may hold them for up to 10 s), so the gateways whose
/// queries are counted are stopped before the count is read.
async fn read_expired_hot_key(stale_seconds: u64) -> (Vec<ViewRead>, i64) {
    let config = hot_config(stale_seconds);
    let database = db::connect(&config).await;
    database
        .execute_unprepared(
            "CREATE TABLE hot_items (id text PRIMARY KEY, payload text NOT NULL); \
             INSERT INTO hot_items VALUES ('k', 'the hot row')",
        )
        .await
        .unwrap();
    let warm = spawn_gateway(&config).await;
    let first = read_view(&api_for(warm.port), "hot", "k").await;
    assert_eq!(first.cache_status, "spillway; fwd=miss; stored");
    warm.stop().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let before = settled_table_scans(&database, "hot_items").await;

    let gateways = [spawn_gateway(&config).await, spawn_gateway(&config).await];
    let apis = [api_for(gateways[0].port), api_for(gateways[1].port)];
    let reads: Vec<ViewRead> = stream::iter(0..500)
        .map(|n| {
            let api = apis[n % 2].clone();
            async move { read_view(&api, "hot", "k").await }
        })
        .buffer_unordered(500)
        .collect()
        .await;
    eventually("the reload is stored", Duration::from_secs(5), || {
        let api = apis[0].clone();
        async move {
            let read = read_view(&api, "hot", "k").await;
            (read.is_hit() && !read.cache_status.contains("stale")).then_some(())
        }
    })
    .await;
    for gateway in gateways {
        gateway.stop().await.unwrap();
    }
    let queries = settled_table_scans(&database, "hot_items").await - before;
    eprintln!("stale_seconds {stale_seconds}: 500 reads, {queries} queries reached hot_items");
    (reads, queries)
}

fn count(reads: &[ViewRead], cache_status: &str) -> usize {
    reads
        .iter()
        .filter(|read| read.cache_status.starts_with(cache_status))
        .count()
}

#[tokio::test]
async fn five_hundred_reads_of_an_expired_hot_key_query_the_database_a_handful_of_times() {
    let (reads, queries) = read_expired_hot_key(0).await;
    for read in &reads {
        assert_eq!(read.status, 200, "{read:?}");
        assert_eq!(read.body["payload"], "the hot row");
    }
    assert!(
        (1..=3).contains(&queries),
        "{queries} queries for 500 reads"
    );
    let stored = count(&reads, "spillway; fwd=miss; stored");
    assert!((1..=3).contains(&stored), "{stored} reads loaded the key");
    assert_eq!(
        stored + count(&reads, "spillway; fwd=miss; collapsed") + count(&reads, "spillway; hit"),
        500,
        "every read loaded the key, waited for the load, or came after it"
    );
}

#[tokio::test]
async fn five_hundred_reads_of_a_stale_hot_key_are_answered_at_once_while_one_reloads() {
    let (reads, queries) = read_expired_hot_key(30).await;
    for read in &reads {
        assert_eq!(read.status, 200, "{read:?}");
        assert!(read.is_hit(), "served from the cache: {read:?}");
    }
    assert!(
        count(&reads, "spillway; hit; ttl=-") >= 1,
        "stale answers are marked"
    );
    assert!(
        (1..=2).contains(&queries),
        "{queries} queries for 500 reads"
    );
}

#[tokio::test]
async fn a_view_query_slower_than_its_reload_timeout_is_a_503_not_a_hang() {
    let config = TestConfig::new(
        "[views.slow]\nsql = \"SELECT $1::text AS key, pg_sleep(5) AS slept\"\nreload_timeout_ms = 300\n",
    );
    let gateway = spawn_gateway(&config).await;
    let api = api_for(gateway.port);
    let started = Instant::now();
    let read = read_view(&api, "slow", "k").await;
    assert_eq!(read.status, 503, "{read:?}");
    assert_eq!(read.body["dependency"], "database");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    gateway.stop().await.unwrap();
}

/// Waits for a Redis key to exist.
async fn until_exists(redis: &redis::aio::MultiplexedConnection, key: String) {
    eventually(&format!("{key} exists"), Duration::from_secs(20), || {
        let (mut redis, key) = (redis.clone(), key.clone());
        async move {
            let exists: bool = redis::cmd("EXISTS")
                .arg(&key)
                .query_async(&mut redis)
                .await
                .ok()?;
            exists.then_some(())
        }
    })
    .await;
}

/// Every key and its TTL (-1: none).
async fn keys_and_ttls(redis: &mut redis::aio::MultiplexedConnection) -> Vec<(String, i64)> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(redis)
        .await
        .unwrap();
    let mut out = Vec::new();
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(redis)
            .await
            .unwrap();
        out.push((key, ttl));
    }
    out
}

#[tokio::test]
async fn maxmemory_pressure_evicts_only_view_keys() {
    let redis = PrivateRedis::start("6mb", "volatile-ttl").await;
    let dir = tempfile::tempdir().unwrap();
    let config = with_redis(
        &TestConfig::new(&format!(
            "{SAMPLE_NAMESPACES}{SAMPLE_SINKS}\
             [queues.room]\npattern = \"room\"\ncapacity = 5\nadmit_per_minute = 60\n\
             [views.bulky]\nsql = \"SELECT $1::text AS key, repeat('x', 10000) AS filler\"\nresult = \"one\"\n"
        )),
        &redis.url,
        &dir,
    );
    let database = db::connect(&config).await;
    db::create_videos(
        &database,
        &(0..20).map(|n| format!("video-{n}")).collect::<Vec<_>>(),
    )
    .await;
    let gateway = spawn_gateway(&config).await;
    let counter = spawn_counter(&config).await;
    let api = api_for(gateway.port);
    let mut connection = redis.connect().await;

    // What spillway must keep: counters, pending writes (no batch-writer runs), a waiting room.
    for n in 0..20 {
        assert_eq!(
            api.like("video-likes", &format!("video-{n}"), "ada")
                .await
                .0,
            202
        );
    }
    for n in 0..100 {
        let (status, _) = api
            .write("playlists", "ada", &json!({"title": format!("list {n}")}))
            .await;
        assert_eq!(status, 202);
    }
    for n in 0..30 {
        assert_eq!(api.join_queue("room", &format!("fan-{n}")).await.0, 201);
    }
    until_exists(
        &connection,
        format!("{}{{c:video-likes:video-19}}", config.key_prefix),
    )
    .await;
    let kept = keys_and_ttls(&mut connection).await;
    let is_view = |key: &str| key.contains("{v:");
    // Counters and rooms never expire; pending markers do, but long after any view.
    let longest_view_ms = (300 * 110 / 100 + 30) * 1_000;
    assert!(
        kept.iter().all(|(key, ttl)| !is_view(key)
            && (*ttl == -1 || (key.contains("{w:") && *ttl > longest_view_ms))),
        "{kept:?}"
    );
    assert!(kept.len() > 100, "{} keys to keep", kept.len());

    // Views: 1,500 keys of 10 kB each, far more than 6 MB.
    let reads: Vec<u16> = stream::iter(0..1_500)
        .map(|n| {
            let api = api.clone();
            async move { read_view(&api, "bulky", &format!("k{n}")).await.status }
        })
        .buffer_unordered(20)
        .collect()
        .await;
    assert!(
        reads.iter().all(|status| *status == 200),
        "every view read answered"
    );
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut connection)
        .await
        .unwrap();
    let evicted: u64 = info
        .lines()
        .find_map(|line| line.strip_prefix("evicted_keys:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap();
    assert!(evicted > 0, "the views overflowed maxmemory");

    let now = keys_and_ttls(&mut connection).await;
    for (key, _) in &kept {
        assert!(now.iter().any(|(k, _)| k == key), "{key} was evicted");
    }
    assert!(
        now.iter()
            .filter(|(key, _)| is_view(key))
            .all(|(_, ttl)| *ttl > 0),
        "views carry a TTL"
    );
    let evicted = (0..1_500)
        .map(|n| format!("k{n}"))
        .find(|key| {
            !now.iter()
                .any(|(k, _)| k.contains(&format!("{{v:bulky:{key}}}")))
        })
        .expect("some view key was evicted");
    let again = read_view(&api, "bulky", &evicted).await;
    assert_eq!(again.status, 200);
    assert_eq!(
        again.cache_status, "spillway; fwd=miss; stored",
        "an evicted view reloads"
    );
    assert_eq!(again.body["key"], Value::from(evicted));
    gateway.stop().await.unwrap();
    counter.stop().await.unwrap();
}
