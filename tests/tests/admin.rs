//! `spillway-admin` against the real stack: a poison row fixed in the database and replayed
//! from the DLQ lands exactly once; purged letters are no longer selected; a waiting room
//! held after Redis lost its state is shown and lifted.

use std::time::Duration;

use sea_orm::ConnectionTrait;
use serde_json::json;
use spillway_tests::{
    TestConfig, api::Api, db, eventually, kafka, process::run_admin, redis_client,
    spawn_batch_writer, spawn_gateway,
};

/// A sink whose owned table the test changes under it.
const SCORES: &str = r#"
[sinks.scores]
table = "scores"
batch_max_delay_ms = 50
[sinks.scores.columns]
id = { type = "uuid" }
player = { type = "text" }
points = { type = "bigint" }
"#;

/// Runs `spillway-admin`, expecting success; its stdout lines.
fn admin(config: &TestConfig, args: &[&str]) -> Vec<String> {
    let (status, stdout, stderr) = run_admin(config, args);
    assert!(status.success(), "spillway-admin {args:?}:\n{stderr}");
    stdout.lines().map(str::to_owned).collect()
}

async fn count(database: &sea_orm::DatabaseConnection, sql: &str) -> i64 {
    db::scalar(database, sql, vec![]).await
}

#[tokio::test]
async fn a_poison_row_fixed_in_the_schema_and_replayed_from_the_dlq_lands_exactly_once() {
    let config = TestConfig::new(SCORES);
    config.migrate().await;
    let database = db::connect(&config).await;
    // The table no longer fits the configuration: 100000 points do not fit a smallint.
    database
        .execute_unprepared("ALTER TABLE scores ALTER COLUMN points TYPE smallint")
        .await
        .unwrap();
    let gateway = spawn_gateway(&config).await;
    let writer = spawn_batch_writer(&config).await;
    let api = Api::new(gateway.url(""));
    let poison = uuid::Uuid::now_v7().to_string();
    for (id, points) in [
        (uuid::Uuid::now_v7().to_string(), 10),
        (poison.clone(), 100_000),
        (uuid::Uuid::now_v7().to_string(), 20),
    ] {
        let row = json!({"id": id, "player": "ada", "points": points});
        let (status, body) = api.write("scores", "ada", &row).await;
        assert_eq!(status, 202, "{body}");
    }
    eventually(
        "the two good rows stored",
        Duration::from_secs(20),
        || async {
            (count(&database, "SELECT count(*) AS n FROM scores").await == 2).then_some(())
        },
    )
    .await;
    let source = format!("{}.writes.scores.v1", config.id);
    let dead = kafka::read_topic(&config.dlq_topic, 1, Duration::from_secs(60));
    assert_eq!(dead.len(), 1, "the poison row reaches the DLQ");
    let listed = admin(&config, &["dlq", "list", "--source-topic", &source]);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].starts_with("0:0 "), "{listed:?}");
    assert!(listed[0].contains("database"), "{listed:?}");
    let shown = admin(&config, &["dlq", "show", "0:0"]).join("\n");
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        shown["payload"]["decoded"]["rowId"],
        poison.as_str(),
        "{shown}"
    );
    let other = admin(&config, &["dlq", "list", "--reason", "decode"]);
    assert!(other.is_empty(), "no decode failure: {other:?}");

    // The fix, then the replay.
    database
        .execute_unprepared("ALTER TABLE scores ALTER COLUMN points TYPE bigint")
        .await
        .unwrap();
    let replayed = admin(
        &config,
        &[
            "dlq",
            "replay",
            "--source-topic",
            &source,
            "--reason",
            "database",
        ],
    );
    assert_eq!(replayed.len(), 1, "one line per record: {replayed:?}");
    let from = format!("{}/0/0", config.dlq_topic);
    assert!(
        replayed[0].starts_with(&format!("replayed {from} -> {source}/")),
        "{replayed:?}"
    );
    eventually("the fixed row stored", Duration::from_secs(20), || async {
        (count(&database, "SELECT count(*) AS n FROM scores").await == 3).then_some(())
    })
    .await;
    let sent = kafka::read_topic(&source, 4, Duration::from_secs(20));
    let republished: Vec<_> = sent
        .iter()
        .filter(|record| record.header("spillway-dlq-replayed-from") == Some(from.as_str()))
        .collect();
    assert_eq!(republished.len(), 1, "the replay is marked on the record");
    assert_eq!(republished[0].key.as_deref(), Some(poison.as_bytes()));
    assert_eq!(
        republished[0].header("content-type"),
        Some("application/x-protobuf")
    );

    // A second replay changes nothing (the row's key), and a purge hides the letter.
    admin(&config, &["dlq", "replay", "--source-topic", &source]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stored = count(
        &database,
        &format!("SELECT count(*) AS n FROM scores WHERE id = '{poison}' AND points = 100000"),
    )
    .await;
    assert_eq!(stored, 1, "the poison row landed exactly once");
    assert_eq!(
        count(&database, "SELECT count(*) AS n FROM scores").await,
        3
    );
    admin(&config, &["dlq", "purge"]);
    assert!(admin(&config, &["dlq", "list"]).is_empty());
    assert_eq!(admin(&config, &["dlq", "list", "--all"]).len(), 1);
    assert_eq!(
        kafka::read_topic(&config.dlq_topic, 2, Duration::from_secs(3)).len(),
        1,
        "no new dead letter"
    );
    writer.stop().await.unwrap();
    gateway.stop().await.unwrap();
}

/// Deletes a room's keys under this test's prefix, as a Redis restarted empty would.
async fn lose_room_state(config: &TestConfig, queue: &str) {
    let mut redis = redis_client::connect().await;
    let pattern = format!("{}{{q:{queue}}}:*", config.key_prefix);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "the room had state");
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut redis)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_waiting_room_held_after_redis_lost_its_state_is_shown_and_lifted() {
    let config = TestConfig::new(
        "[queues.rooms]\npattern = \"room-*\"\ncapacity = 1\nadmit_per_minute = 60\nsession_ttl_seconds = 600\n",
    );
    let gateway = spawn_gateway(&config).await;
    let api = Api::new(gateway.url(""));
    for room in ["room-a", "room-b"] {
        let (status, body) = api.join_queue(room, "ann").await;
        assert_eq!(
            (status.as_u16(), body["status"].as_str()),
            (201, Some("active"))
        );
        lose_room_state(&config, room).await;
    }

    // room-a: the gateway notices the loss and holds the room.
    let (status, body) = api.join_queue("room-a", "cid").await;
    assert_eq!(status, 503, "{body}");
    let holds = admin(&config, &["queue", "holds", "room-a"]);
    assert!(holds[0].starts_with("room-a: held until "), "{holds:?}");
    let all = admin(&config, &["queue", "holds"]);
    assert_eq!(all.len(), 1, "only room-a has state: {all:?}");
    let lifted = admin(&config, &["queue", "lift", "room-a"]);
    assert!(lifted[0].contains("hold lifted"), "{lifted:?}");
    let (status, body) = api.join_queue("room-a", "cid").await;
    assert_eq!(
        (status.as_u16(), body["status"].as_str()),
        (201, Some("active")),
        "{body}"
    );
    let holds = admin(&config, &["queue", "holds", "room-a"]);
    assert!(holds[0].starts_with("room-a: not held"), "{holds:?}");

    // room-b: lifted before any gateway noticed; it is never held.
    let holds = admin(&config, &["queue", "holds", "room-b"]);
    assert!(holds[0].contains("no state in Redis"), "{holds:?}");
    let lifted = admin(&config, &["queue", "lift", "room-b"]);
    assert!(lifted[0].contains("fresh"), "{lifted:?}");
    let (status, body) = api.join_queue("room-b", "dan").await;
    assert_eq!(
        (status.as_u16(), body["status"].as_str()),
        (201, Some("active")),
        "{body}"
    );
    gateway.stop().await.unwrap();
}
