//! `spillway-admin queue holds [<queue>]` and `queue lift <queue>`: a waiting room whose
//! Redis state vanished (Redis restarted empty) is held by the next gateway that served it
//! before, until every session it may have admitted has expired (`hold_until` in the room's
//! `{q:<queue>}:meta` hash, see `lua/queue_admit.lua`). `holds` shows that hold; `lift`
//! ends it now, or, for a room no gateway has touched since the loss, gives it a fresh state
//! so that none will hold it.
//!
//! Lifting lets new members in at once: sessions admitted before the loss that are still
//! alive are no longer counted, so the room may hold more than its capacity until they end.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use spillway_core::{config::Settings, queues::QUEUE_NAME, redis::RedisClient};

#[derive(clap::Subcommand)]
pub enum Command {
    /// The hold of `<queue>`, or of every room with state in Redis.
    Holds {
        /// A queue name (`concert-2026`), not a pattern.
        queue: Option<String>,
    },
    /// End the hold of `<queue>` now.
    Lift { queue: String },
}

/// A room's `meta` hash: its epoch and until when it is held (unix ms, 0 when not).
struct Meta {
    epoch: String,
    hold_until_ms: i64,
}

pub async fn run(command: Command) -> Result<()> {
    let settings = Settings::load()?;
    spillway_core::telemetry::init(&settings.log);
    let redis = RedisClient::from_settings(&settings.redis).context("redis")?;
    match command {
        Command::Holds { queue: Some(queue) } => {
            check_name(&queue)?;
            let meta = read_meta(&redis, &queue).await?;
            println!("{}", describe(&queue, meta.as_ref()));
        }
        Command::Holds { queue: None } => {
            for queue in rooms(&redis).await? {
                let meta = read_meta(&redis, &queue).await?;
                println!("{}", describe(&queue, meta.as_ref()));
            }
        }
        Command::Lift { queue } => {
            check_name(&queue)?;
            println!("{}", lift(&redis, &queue).await?);
        }
    }
    Ok(())
}

fn check_name(queue: &str) -> Result<()> {
    anyhow::ensure!(
        QUEUE_NAME.accepts(queue),
        "`{queue}` is not a queue name (the name a member joins, e.g. concert-2026)"
    );
    Ok(())
}

async fn read_meta(redis: &RedisClient, queue: &str) -> Result<Option<Meta>> {
    let (epoch, hold_until): (Option<String>, Option<i64>) = redis
        .command(
            redis::cmd("HMGET")
                .arg(redis.keys().queue(queue, "meta"))
                .arg("epoch")
                .arg("hold_until"),
        )
        .await?;
    Ok(epoch.map(|epoch| Meta {
        epoch,
        hold_until_ms: hold_until.unwrap_or(0),
    }))
}

fn describe(queue: &str, meta: Option<&Meta>) -> String {
    let now_ms = Utc::now().timestamp_millis();
    match meta {
        None => format!(
            "{queue}: no state in Redis (a gateway that served it before the loss holds it at \
             its next call; `lift` prevents that)"
        ),
        Some(meta) if meta.hold_until_ms > now_ms => format!(
            "{queue}: held until {} ({} s more), epoch {}",
            time(meta.hold_until_ms),
            (meta.hold_until_ms - now_ms).div_euclid(1_000) + 1,
            meta.epoch
        ),
        Some(meta) => format!("{queue}: not held, epoch {}", meta.epoch),
    }
}

fn time(unix_ms: i64) -> String {
    DateTime::from_timestamp_millis(unix_ms)
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| unix_ms.to_string())
}

/// Ends the hold, or gives a room without state a fresh epoch (`HSETNX`, so a gateway that
/// wrote one meanwhile keeps its own).
async fn lift(redis: &RedisClient, queue: &str) -> Result<String> {
    let key = redis.keys().queue(queue, "meta");
    let before = read_meta(redis, queue).await?;
    let created: bool = redis
        .replicated()
        .command(
            redis::cmd("HSETNX")
                .arg(&key)
                .arg("epoch")
                .arg(uuid::Uuid::now_v7().to_string()),
        )
        .await?;
    if created {
        let _: () = redis
            .command(
                redis::cmd("HSET")
                    .arg(&key)
                    .arg("hold_until")
                    .arg(0)
                    .arg("seq")
                    .arg(0),
            )
            .await?;
        return Ok(format!(
            "{queue}: had no state; given a fresh one, so no gateway will hold it"
        ));
    }
    let _: () = redis
        .command(redis::cmd("HSET").arg(&key).arg("hold_until").arg(0))
        .await?;
    Ok(match before {
        Some(meta) if meta.hold_until_ms > Utc::now().timestamp_millis() => format!(
            "{queue}: hold lifted (it was held until {}); sessions admitted before the loss may \
             still be active beside new ones",
            time(meta.hold_until_ms)
        ),
        _ => format!("{queue}: was not held"),
    })
}

/// The rooms with state in Redis (their `meta` keys), by name: `SCAN` in steps, each within
/// the client's deadline (on a Redis Cluster, on every master).
async fn rooms(redis: &RedisClient) -> Result<Vec<String>> {
    let pattern = redis.keys().queue("*", "meta");
    let prefix = redis.keys().queue("", "");
    let prefix = prefix.trim_end_matches("}:");
    let mut names: Vec<String> = redis
        .scan_keys(&pattern)
        .await?
        .iter()
        .filter_map(|key| {
            key.strip_prefix(prefix)?
                .strip_suffix("}:meta")
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}
