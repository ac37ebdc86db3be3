//! Writes through the real gateway, Kafka, batch-writer, Redis and PostgreSQL: a write is
//! readable at once as pending, then as committed; a poison row reaches the DLQ while its
//! neighbours are stored; bad input is refused with the column named and nothing published.

use std::time::Duration;

use prost::Message;
use sea_orm::ConnectionTrait;
use serde_json::json;
use spillway_core::{
    sinks,
    wire::{self, WriteEvent, WriteOperation},
};
use spillway_tests::{
    SAMPLE_SINKS, TestConfig, api::Api, db, eventually, kafka, redis_client, spawn_batch_writer,
    spawn_gateway, token,
};

fn config() -> TestConfig {
    TestConfig::new(SAMPLE_SINKS)
}

fn topic(config: &TestConfig) -> String {
    format!("{}.writes.playlists.v1", config.id)
}

#[tokio::test]
async fn a_write_is_pending_at_once_then_committed_and_its_marker_is_gone() {
    let config = config();
    let gateway = spawn_gateway(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    let (status, body) = api
        .write(
            "playlists",
            "alice",
            &json!({"title": "Road trip", "visibility": "public"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "pending");
    let id = body["id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok());

    // No batch-writer yet: the write can only be pending, read back from Redis.
    let (status, body) = api.read_write_as("playlists", &id, "alice").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "pending");
    assert_eq!(body["row"]["member_id"], "alice");
    assert_eq!(body["row"]["title"], "Road trip");

    let writer = spawn_batch_writer(&config).await;
    let committed = committed_as_alice(&api, &id).await;
    assert_eq!(committed["row"]["title"], "Road trip");
    assert_eq!(committed["row"]["visibility"], "public");
    let mut redis = redis_client::connect().await;
    let marker = format!("{}{{w:playlists:{id}}}", config.key_prefix);
    eventually(
        "the pending marker is cleared (a tombstone without a row is left)",
        Duration::from_secs(10),
        || {
            let (mut redis, marker) = (redis.clone(), marker.clone());
            async move {
                (!redis::cmd("HEXISTS")
                    .arg(&marker)
                    .arg("r")
                    .query_async::<bool>(&mut redis)
                    .await
                    .unwrap())
                .then_some(())
            }
        },
    )
    .await;
    let tombstone_ttl: i64 = redis::cmd("PTTL")
        .arg(&marker)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!((1..=60_000).contains(&tombstone_ttl), "{tombstone_ttl}");
    let _: () = redis::cmd("PING").query_async(&mut redis).await.unwrap();
    let (status, _) = api
        .read_write_as("playlists", &uuid::Uuid::now_v7().to_string(), "alice")
        .await;
    assert_eq!(status, 404, "an unknown id");
    writer.stop().await.unwrap();
    gateway.stop().await.unwrap();
}

fn row_event(sink: &str, row: serde_json::Value) -> WriteEvent {
    let row = row.as_object().unwrap().clone();
    WriteEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        accepted_at: Some(wire::now()),
        request_id: "outside".into(),
        sink: sink.into(),
        row_id: row["id"].as_str().unwrap().to_owned(),
        operation: WriteOperation::Upsert as i32,
        row: Some(sinks::to_struct(&row)),
        pending_marker: false,
    }
}

/// Alice's write `id` of the playlists sink once it reads as committed (its answer's body).
async fn committed_as_alice(api: &Api, id: &str) -> serde_json::Value {
    eventually(
        "the write is committed",
        Duration::from_secs(20),
        || async {
            let (_, body) = api.read_write_as("playlists", id, "alice").await;
            (body["status"] == "committed").then_some(body)
        },
    )
    .await
}

#[tokio::test]
async fn a_poison_row_goes_to_the_dlq_and_its_neighbours_are_stored() {
    let config = config();
    let writer = spawn_batch_writer(&config).await;
    let producer = kafka::producer();
    let ids: Vec<String> = (0..21).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    // A row only the database can reject: a constraint spillway's configuration does not
    // know (a NUL in text, which PostgreSQL refuses too, the batch-writer now refuses itself).
    let database = db::connect(&config).await;
    database
        .execute_unprepared(
            "ALTER TABLE playlists ADD CONSTRAINT no_poison CHECK (title NOT LIKE 'poison%')",
        )
        .await
        .unwrap();
    let sends = ids.iter().enumerate().map(|(i, id)| {
        let title = if i == 10 {
            "poison".to_owned()
        } else {
            format!("list {i}")
        };
        let event = row_event(
            "playlists",
            json!({"id": id, "member_id": "m", "title": title}),
        );
        let (producer, topic) = (producer.clone(), topic(&config));
        async move {
            kafka::publish(
                &producer,
                &topic,
                &event.row_id,
                &event.encode_to_vec(),
                &[],
            )
            .await
        }
    });
    futures::future::join_all(sends).await;
    eventually(
        "the 20 good rows are stored",
        Duration::from_secs(20),
        || async {
            (db::scalar(&database, "SELECT count(*) AS n FROM playlists", vec![]).await == 20)
                .then_some(())
        },
    )
    .await;
    let dead = kafka::read_topic(&config.dlq_topic, 1, Duration::from_secs(20));
    assert_eq!(dead.len(), 1);
    let reason = dead[0].header("spillway-dlq-reason").unwrap();
    assert!(reason.starts_with("database:"), "{reason}");
    assert_eq!(dead[0].key.as_deref(), Some(ids[10].as_bytes()));
    let stored_poison = db::scalar(
        &database,
        "SELECT count(*) AS n FROM playlists WHERE title LIKE 'poison%'",
        vec![],
    )
    .await;
    assert_eq!(stored_poison, 0);
    writer.stop().await.unwrap();
}

#[tokio::test]
async fn bad_writes_name_the_column_and_publish_nothing() {
    let config = config();
    let gateway = spawn_gateway(&config).await;
    let base = format!("http://127.0.0.1:{}", gateway.port);
    let client = reqwest::Client::new();
    let topic = topic(&config);
    let end_before = kafka::end_offsets(&topic);
    let cases: Vec<(reqwest::RequestBuilder, u16, Option<&str>, &str)> = vec![
        (
            client
                .post(format!("{base}/v1/writes/nowhere"))
                .bearer_auth(token("a"))
                .json(&json!({"title": "x"})),
            404,
            None,
            "unknown sink",
        ),
        (
            client
                .post(format!("{base}/v1/writes/playlists"))
                .bearer_auth(token("a"))
                .json(&json!({})),
            400,
            Some("title"),
            "missing required column",
        ),
        (
            client
                .post(format!("{base}/v1/writes/playlists"))
                .bearer_auth(token("a"))
                .json(&json!({"title": 7})),
            400,
            Some("title"),
            "wrong type",
        ),
        (
            client
                .post(format!("{base}/v1/writes/playlists"))
                .bearer_auth(token("a"))
                .json(&json!({"title": "x", "colour": "red"})),
            400,
            Some("colour"),
            "unknown column",
        ),
        (
            client
                .post(format!("{base}/v1/writes/playlists"))
                .bearer_auth(token("a"))
                .json(&json!({"title": "x".repeat(201)})),
            400,
            Some("title"),
            "too long",
        ),
        (
            client
                .post(format!("{base}/v1/writes/playlists"))
                .bearer_auth(token("a"))
                .json(&json!({"title": "x", "id": "nope"})),
            400,
            Some("id"),
            "bad id",
        ),
        (
            client
                .post(format!("{base}/v1/writes/playlists"))
                .bearer_auth(token("a"))
                .json(&json!({"title": "x", "member_id": "b"})),
            400,
            Some("member_id"),
            "member from the body",
        ),
        (
            client
                .post(format!("{base}/v1/writes/playlists"))
                .bearer_auth(token("a"))
                .json(&json!(["not", "an", "object"])),
            400,
            None,
            "not an object",
        ),
        (
            client
                .post(format!("{base}/v1/writes/playlists"))
                .bearer_auth(token("a"))
                .header("content-type", "application/json")
                .body("{oops"),
            400,
            None,
            "bad JSON",
        ),
        (
            client
                .post(format!("{base}/v1/writes/playlists"))
                .bearer_auth(token("a"))
                .json(&json!({"title": "x", "description": "d".repeat(70_000)})),
            413,
            None,
            "body over 64 KiB",
        ),
        (
            client
                .post(format!("{base}/v1/writes/playlists"))
                .json(&json!({"title": "x"})),
            401,
            None,
            "no token",
        ),
        (
            client
                .get(format!("{base}/v1/writes/playlists/not-a-uuid"))
                .bearer_auth(token("a")),
            400,
            Some("id"),
            "bad id on read",
        ),
        (
            client.get(format!("{base}/v1/writes/nowhere/x")),
            404,
            None,
            "unknown sink on read",
        ),
    ];
    for (request, expected, field, what) in cases {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert_eq!(status, expected, "{what}: {body}");
        if let Some(field) = field {
            assert_eq!(body["field"], field, "{what}: {body}");
        }
    }
    let end_after = kafka::end_offsets(&topic);
    assert_eq!(end_before, end_after, "a rejected write publishes nothing");
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn two_batch_writers_split_the_partitions_and_store_every_row_once() {
    let config = config();
    let gateway = spawn_gateway(&config).await;
    let first = spawn_batch_writer(&config).await;
    let second = spawn_batch_writer(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    let lanes = (0..10).map(|lane| {
        let api = api.clone();
        async move {
            for i in 0..300 {
                let (status, body) = api
                    .write(
                        "playlists",
                        &format!("m{lane}"),
                        &json!({"title": format!("{lane}-{i}")}),
                    )
                    .await;
                assert_eq!(status, 202, "{body}");
            }
        }
    });
    futures::future::join_all(lanes).await;
    let database = db::connect(&config).await;
    eventually("3,000 rows stored", Duration::from_secs(30), || async {
        (db::scalar(
            &database,
            "SELECT count(DISTINCT title) AS n FROM playlists",
            vec![],
        )
        .await
            == 3_000)
            .then_some(())
    })
    .await;
    assert_eq!(
        db::scalar(&database, "SELECT count(*) AS n FROM playlists", vec![]).await,
        3_000
    );
    for writer in [&first, &second] {
        let metrics = writer.metrics().await;
        let written: f64 = metrics
            .lines()
            .filter(|line| {
                line.starts_with("spillway_batch_writer_rows_total{")
                    && line.contains("outcome=\"written\"")
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(written > 0.0, "both instances wrote rows");
    }
    first.stop().await.unwrap();
    second.stop().await.unwrap();
    gateway.stop().await.unwrap();
}

/// A sink with a column of every type, upserting two of them: each value is stored as the
/// column reads it (text with quotes, braces, commas and backslashes; JSON objects and JSON
/// strings; null), and a second write of the same id updates only the upsert columns.
#[tokio::test]
async fn every_column_type_is_stored_as_written_and_an_upsert_updates_its_columns() {
    let config = TestConfig::new(
        r#"
[sinks.gadgets]
table = "gadgets"
on_conflict = "upsert"
upsert_columns = ["price", "spec"]
batch_max_delay_ms = 50
[sinks.gadgets.columns]
id = { type = "text" }
name = { type = "text" }
stock = { type = "bigint" }
shelf = { type = "integer" }
price = { type = "double" }
in_sale = { type = "boolean" }
spec = { type = "jsonb" }
made_at = { type = "timestamptz" }
serial = { type = "uuid" }
"#,
    );
    let gateway = spawn_gateway(&config).await;
    let writer = spawn_batch_writer(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    let first = json!({
        "id": "g-1",
        "name": "a \"quoted\", {braced} \\ name ünïcode",
        "stock": 8_999_999_999_999_999_i64,
        "shelf": -7,
        "price": 12.5,
        "in_sale": true,
        "spec": {"size": [1, 2], "note": "x,y"},
        "made_at": "2026-11-29T10:00:00.123456Z",
        "serial": "0190f2a4-5b6c-7d8e-9f00-112233445566",
    });
    let second = json!({"id": "g-2", "name": null, "spec": "just a string", "in_sale": false});
    for row in [&first, &second] {
        let (status, body) = api.write("gadgets", "alice", row).await;
        assert_eq!(status, 202, "{body}");
    }
    let committed = |id: &'static str| {
        let api = api.clone();
        async move {
            eventually(
                &format!("{id} committed"),
                Duration::from_secs(20),
                || async {
                    let (_, body) = api.read_write("gadgets", id).await;
                    (body["status"] == "committed").then_some(body["row"].clone())
                },
            )
            .await
        }
    };
    let stored = committed("g-1").await;
    for column in [
        "id", "name", "stock", "shelf", "price", "in_sale", "spec", "serial",
    ] {
        assert_eq!(stored[column], first[column], "{column}: {stored}");
    }
    assert!(
        stored["made_at"]
            .as_str()
            .is_some_and(|t| t.starts_with("2026-11-29T10:00:00.123456")),
        "{stored}"
    );
    let stored = committed("g-2").await;
    assert_eq!(stored["name"], serde_json::Value::Null, "{stored}");
    assert_eq!(stored["spec"], "just a string", "{stored}");
    assert_eq!(stored["in_sale"], false, "{stored}");
    assert_eq!(stored["stock"], serde_json::Value::Null, "{stored}");

    let update = json!({"id": "g-1", "name": "ignored", "price": 10.0, "spec": {"v": 2}});
    let (status, body) = api.write("gadgets", "alice", &update).await;
    assert_eq!(status, 202, "{body}");
    let updated = eventually(
        "the upsert is committed",
        Duration::from_secs(20),
        || async {
            let (_, body) = api.read_write("gadgets", "g-1").await;
            (body["status"] == "committed" && body["row"]["spec"] == json!({"v": 2}))
                .then_some(body["row"].clone())
        },
    )
    .await;
    assert_eq!(updated["price"], 10.0, "{updated}");
    assert_eq!(
        updated["name"], first["name"],
        "not an upsert column: {updated}"
    );
    assert_eq!(updated["stock"], first["stock"], "{updated}");
    writer.stop().await.unwrap();
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn an_id_taken_by_another_member_is_refused_and_a_resent_write_is_a_replay() {
    let config = config();
    let gateway = spawn_gateway(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    let id = uuid::Uuid::now_v7().to_string();
    let (status, body) = api
        .write("playlists", "alice", &json!({"id": id, "title": "Mine"}))
        .await;
    assert_eq!(status, 202, "{body}");
    // Another member, the same id: refused, nothing published, nothing shown.
    let (status, body) = api
        .write(
            "playlists",
            "mallory",
            &json!({"id": id, "title": "Stolen"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["type"], "https://spillway.dev/problems/id-taken");
    // The same member again on an ignore sink: the replay it is, nothing published.
    let (status, body) = api
        .write("playlists", "alice", &json!({"id": id, "title": "Mine"}))
        .await;
    assert_eq!(
        (status.as_u16(), &body["replayed"]),
        (202, &json!(true)),
        "{body}"
    );
    assert_eq!(kafka::end_offsets(&topic(&config)), 1);
    let writer = spawn_batch_writer(&config).await;
    let committed = committed_as_alice(&api, &id).await;
    assert_eq!(
        (&committed["row"]["title"], &committed["row"]["member_id"]),
        (&json!("Mine"), &json!("alice"))
    );
    let (status, _) = api
        .write(
            "playlists",
            "mallory",
            &json!({"id": id, "title": "Stolen"}),
        )
        .await;
    assert_eq!(status, 409);
    writer.stop().await.unwrap();
    gateway.stop().await.unwrap();
}
