//! The demo `cargo xtask up` ends with: a few likes and views through the gateway, then the
//! counts read back from the API and from the database's mirror column; a burst of writes
//! read back pending then committed; two cached views, a miss then a hit; a template registered and copies served from its pool.
//!
//! `spillway-demo sources KEY...` only puts those source objects into the bucket (64 KiB
//! each): `cargo xtask check-api` puts the ones its registrations name.

use std::time::Duration;

use anyhow::{Context, Result};
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use spillway_tests::{
    api::Api,
    views::{read_view, read_view_as},
};

const GATEWAY: &str = "http://127.0.0.1:8080";

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(("sources", keys)) = args.split_first().map(|(a, rest)| (a.as_str(), rest)) {
        return put_sources(keys).await;
    }
    let secret = std::env::var("SPILLWAY_JWT_SECRET").context("SPILLWAY_JWT_SECRET")?;
    let api = Api::new(GATEWAY).with_secret(&secret);
    println!("\ndemo: counters");
    for member in ["ada", "grace", "linus", "ada"] {
        let (status, body) = api.like("video-likes", "video-1", member).await;
        println!(
            "  PUT  /v1/counters/video-likes/video-1/members/me as {member:<6} -> {status} {body}"
        );
        // Give the counter a moment, so each answer shows the likes applied before it.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = api.unlike("video-likes", "video-1", "linus").await;
    println!("  DELETE .../video-1/members/me as linus  -> {status} {body}");
    for _ in 0..5 {
        api.increment("video-views", "video-1", 1, None).await;
    }
    println!("  POST /v1/counters/video-views/video-1/increments x5 (delta 1)");
    let expected = [("video-likes", 2), ("video-views", 5)];
    for _ in 0..100 {
        let mut done = true;
        for (namespace, value) in expected {
            done &= api.value(namespace, "video-1").await >= value;
        }
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (namespace, _) in expected {
        let (_, body) = api.get(namespace, "video-1", None).await;
        println!("  GET  /v1/counters/{namespace}/video-1 -> {body}");
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let db = Database::connect(std::env::var("DATABASE_URL").context("DATABASE_URL")?).await?;
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT like_count FROM videos WHERE id = 'video-1'",
        ))
        .await?
        .context("videos row")?;
    let like_count: i64 = row.try_get("", "like_count")?;
    println!(
        "  database: videos.like_count of video-1 = {like_count} (kept current by the counter service)"
    );
    demo_writes(&api).await?;
    demo_views(&api).await?;
    demo_templates(&api).await?;
    demo_waiting_room(&api).await
}

/// Cached views: a lecture and who may attend it, loaded once then served from Redis; the
/// member's playlists, refreshed by the batch-writer's commits of the writes above.
async fn demo_views(api: &Api) -> Result<()> {
    println!("\ndemo: cached views");
    for _ in 0..2 {
        let read = read_view(api, "lecture-attendance", "7").await;
        anyhow::ensure!(read.status == 200, "view read refused: {}", read.body);
        let attending = read.body["may_attend"].as_array().map_or(0, Vec::len);
        println!(
            "  GET  /v1/views/lecture-attendance/7 -> {} ({attending} may attend) Cache-Status: {}",
            read.status, read.cache_status
        );
    }
    let read = read_view_as(api, "member-playlists", "ada", "ada").await;
    let playlists = read.body.as_array().map_or(0, Vec::len);
    println!(
        "  GET  /v1/views/member-playlists/ada -> {} ({playlists} playlists) Cache-Status: {}",
        read.status, read.cache_status
    );
    Ok(())
}

/// A burst of playlist writes: pending at once, committed in bulk by the batch-writer.
async fn demo_writes(api: &Api) -> Result<()> {
    println!("\ndemo: writes");
    let mut ids = Vec::new();
    for i in 1..=20 {
        let row = serde_json::json!({"title": format!("Playlist {i}"), "visibility": "public"});
        let (status, body) = api.write("playlists", "ada", &row).await;
        anyhow::ensure!(status == 202, "write refused: {body}");
        ids.push(body["id"].as_str().context("id")?.to_owned());
    }
    let (_, first) = api.read_write_as("playlists", &ids[0], "ada").await;
    println!(
        "  POST /v1/writes/playlists x20 -> 202 each; GET the first at once -> {}",
        first["status"]
    );
    for _ in 0..100 {
        let (_, last) = api.read_write_as("playlists", &ids[19], "ada").await;
        if last["status"] == "committed" {
            println!("  GET  /v1/writes/playlists/{} -> {last}", ids[19]);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the playlists were not committed within 10 s")
}

/// A template of 30 objects registered, its pool warmed, copies handed out from it.
async fn demo_templates(api: &Api) -> Result<()> {
    println!("\ndemo: templates");
    let sources: Vec<String> = (0..30)
        .map(|n| format!("templates/welcome-kit/image-{n:02}.png"))
        .collect();
    put_sources(&sources).await?;
    let (status, body) = api.register_template("welcome-kit", &sources, 4).await;
    anyhow::ensure!(status.is_success(), "template refused: {body}");
    println!(
        "  PUT  /v1/templates/welcome-kit (30 objects of 64 KiB, pool of 4) -> {status} version {}",
        body["version"]
    );
    for _ in 0..300 {
        if api.pool("welcome-kit").await.0 == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ready, capacity) = api.pool("welcome-kit").await;
    println!("  GET  /v1/templates/welcome-kit/pool -> ready {ready} of {capacity}");
    for member in ["ada", "grace", "linus"] {
        let started = std::time::Instant::now();
        let (status, copy) = api.take_copy("welcome-kit", member).await;
        anyhow::ensure!(status == 201, "copy refused: {copy}");
        println!(
            "  POST /v1/templates/welcome-kit/copies as {member:<6} -> {status} from {} in {:.1} ms: {} objects under copies/welcome-kit/{}/",
            copy["source"],
            started.elapsed().as_secs_f64() * 1e3,
            copy["objects"].as_array().map_or(0, Vec::len),
            copy["copy_id"].as_str().unwrap_or("?"),
        );
    }
    Ok(())
}

/// Four members at a room for two: two admitted, two in line; one leaves, the next is in.
async fn demo_waiting_room(api: &Api) -> Result<()> {
    println!("\ndemo: waiting room (concert-2026: capacity 2)");
    let mut tokens = Vec::new();
    for member in ["ada", "grace", "linus", "barbara"] {
        let (status, body) = api.join_queue("concert-2026", member).await;
        anyhow::ensure!(status == 201, "join refused: {body}");
        println!(
            "  POST /v1/queues/concert-2026/tokens as {member:<7} -> {status} {} position {}",
            body["status"], body["position"]
        );
        tokens.push((member, body["token"].as_str().context("token")?.to_owned()));
    }
    let (first, first_token) = &tokens[0];
    let status = api.leave_queue("concert-2026", first_token, first).await;
    println!("  DELETE .../tokens/<{first}'s> -> {status} (the session ends, the place is free)");
    let (next, next_token) = &tokens[2];
    let (_, body) = api.poll_queue("concert-2026", next_token, next).await;
    println!(
        "  GET  .../tokens/<{next}'s> -> {} (admission JWT: {})",
        body["status"],
        if body["admission"].is_string() {
            "yes"
        } else {
            "no"
        }
    );
    for (member, token) in &tokens[1..] {
        api.leave_queue("concert-2026", token, member).await;
    }
    Ok(())
}

/// Puts a 64 KiB object at each key of the configured bucket (its bytes the key's position).
async fn put_sources(keys: &[String]) -> Result<()> {
    let settings = spillway_core::config::Settings::load()?;
    let client = spillway_core::s3::client(&settings.s3);
    for (n, key) in keys.iter().enumerate() {
        client
            .put_object()
            .bucket(&settings.s3.bucket)
            .key(key)
            .body(vec![n as u8; 64 * 1024].into())
            .send()
            .await
            .with_context(|| format!("uploading the source object {key}"))?;
    }
    Ok(())
}
