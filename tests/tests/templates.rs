//! Template warm-up against the real stack: copies handed to exactly one caller each and
//! whole, pools refilled, crashes mid-refill leaving nothing half-made or untracked, new
//! versions retiring old copies, and the sweeper deleting expired ones.

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use futures::future::join_all;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use serde_json::Value;
use spillway_tests::{
    TestConfig, api::Api, db, eventually, objects, process::ServiceProcess, spawn_gateway,
    spawn_template_warmup,
};

/// Fast sweeps and a short copy timeout, so abandoned copies are cleaned within seconds.
const QUICK_SWEEPS: &str = r#"
[templates]
sweep_interval_ms = 300
copy_timeout_ms = 3000
"#;

fn gateway_api(port: u16) -> Api {
    Api::new(format!("http://127.0.0.1:{port}"))
}

/// The states of a template's copies, by state.
async fn copy_states(db: &DatabaseConnection, template_id: &str) -> BTreeMap<String, i64> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT state, count(*) AS n FROM template_copies WHERE template_id = $1 GROUP BY state",
            [template_id.into()],
        ))
        .await
        .expect("copy states");
    rows.iter()
        .map(|row| {
            (
                row.try_get::<String>("", "state").unwrap(),
                row.try_get::<i64>("", "n").unwrap(),
            )
        })
        .collect()
}

/// Every copy of a template: id, state, version.
async fn copies(db: &DatabaseConnection, template_id: &str) -> Vec<(String, String, i64)> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT copy_id::text AS id, state, version FROM template_copies WHERE template_id = $1",
            [template_id.into()],
        ))
        .await
        .expect("copies");
    rows.iter()
        .map(|row| {
            (
                row.try_get("", "id").unwrap(),
                row.try_get("", "state").unwrap(),
                row.try_get("", "version").unwrap(),
            )
        })
        .collect()
}

async fn wait_for_full_pool(api: &Api, template_id: &str, capacity: i64) {
    api.wait_for_pool(template_id, capacity, Duration::from_secs(30))
        .await;
}

/// Checks that every object of a handed-out copy exists and equals its source.
async fn assert_whole(client: &aws_sdk_s3::Client, bucket: &str, copy: &Value) {
    for object in copy["objects"].as_array().expect("objects") {
        let source = objects::get(client, bucket, object["source"].as_str().unwrap()).await;
        let copied = objects::get(client, bucket, object["key"].as_str().unwrap()).await;
        assert!(copied.is_some(), "copied object missing: {object}");
        assert_eq!(copied, source, "copy differs from its source: {object}");
    }
}

/// The copy ids that have objects in the bucket under the template's folder.
async fn copy_ids_in_bucket(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    template_id: &str,
) -> BTreeMap<String, usize> {
    let mut folders = BTreeMap::new();
    for key in objects::list(client, bucket, &format!("copies/{template_id}/")).await {
        let copy_id = key
            .split('/')
            .nth(2)
            .expect("copies/<template>/<copy>/<name>");
        *folders.entry(copy_id.to_owned()).or_insert(0) += 1;
    }
    folders
}

/// How many times a caller of the 200 tries again after a 503.
const TRIES_AFTER_503: usize = 4;

// Two worker threads, as the services have: on one, the gateway and template-warmup running
// in this process, 200 callers and the S3 client's signing (a debug build) share a thread,
// and a pooled database connection waits so long to be handed back that acquires pass
// their 2 s timeout (503) while the database itself idles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_callers_each_get_a_distinct_whole_copy_and_the_pool_refills() {
    let config = TestConfig::new(QUICK_SWEEPS);
    let warmup = spawn_template_warmup(&config).await;
    let gateway = spawn_gateway(&config).await;
    let api = gateway_api(gateway.port);
    let (client, bucket) = objects::bucket(&config).await;
    let sources = objects::put_sources(&client, &bucket, "templates/welcome", 5, 2_048).await;

    let (status, body) = api.register_template("welcome", &sources, 4).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["version"], 1);
    wait_for_full_pool(&api, "welcome", 4).await;

    // Each caller is a client as documented: a 503 (a dependency past its deadline: here
    // the 8-connection database pool of the tests, under 200 callers at once on this box)
    // is tried again after its Retry-After; what is checked is what every caller ends with.
    let answers = join_all((0..200).map(|n| {
        let api = api.clone();
        async move {
            let member = format!("member-{n}");
            for _ in 0..TRIES_AFTER_503 {
                let answer = api.take_copy("welcome", &member).await;
                if answer.0 != 503 {
                    return answer;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            api.take_copy("welcome", &member).await
        }
    }))
    .await;
    let mut copy_ids = HashSet::new();
    let mut keys = HashSet::new();
    let mut from_pool = 0;
    for (status, copy) in &answers {
        assert_eq!(*status, 201, "{copy}");
        assert!(
            copy_ids.insert(copy["copy_id"].as_str().unwrap().to_owned()),
            "copy handed out twice: {copy}"
        );
        for object in copy["objects"].as_array().unwrap() {
            assert!(
                keys.insert(object["key"].as_str().unwrap().to_owned()),
                "key shared: {object}"
            );
        }
        from_pool += usize::from(copy["source"] == "pool");
    }
    assert!(
        from_pool >= 4,
        "the 4 pooled copies were handed out ({from_pool} pool hits)"
    );
    for (_, copy) in &answers {
        assert_whole(&client, &bucket, copy).await;
    }

    wait_for_full_pool(&api, "welcome", 4).await;
    let db = db::connect(&config).await;
    let states = copy_states(&db, "welcome").await;
    assert_eq!(states.get("taken"), Some(&200), "{states:?}");
    assert_eq!(states.get("ready"), Some(&4), "{states:?}");
    gateway.stop().await.unwrap();
    warmup.stop().await.unwrap();
}

#[tokio::test]
async fn bad_requests_are_refused_and_change_nothing() {
    let config = TestConfig::new(QUICK_SWEEPS);
    let warmup = spawn_template_warmup(&config).await;
    let gateway = spawn_gateway(&config).await;
    let api = gateway_api(gateway.port);
    let (client, bucket) = objects::bucket(&config).await;
    let sources = objects::put_sources(&client, &bucket, "templates/t", 2, 64).await;

    let (status, body) = api.take_copy("nothing-here", "alice").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = api.register_template("bad/id", &sources, 4).await;
    assert_eq!(status, 404, "a slash is another route: {body}");
    let (status, body) = api.register_template("t", &[], 4).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api.register_template("t", &sources, 5_000).await;
    assert_eq!(status, 400, "{body}");
    let missing = vec![sources[0].clone(), "templates/t/absent.bin".to_owned()];
    let (status, body) = api.register_template("t", &missing, 4).await;
    assert_eq!(
        status, 422,
        "a well-formed registration naming an absent object: {body}"
    );
    assert_eq!(body["field"], "objects", "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("absent.bin"),
        "{body}"
    );
    let url = format!("{}/v1/templates/t", api.base_url);
    let member_only = spillway_tests::token("alice");
    let response = api
        .client
        .put(&url)
        .bearer_auth(member_only)
        .json(&serde_json::json!({ "objects": sources, "pool_capacity": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403, "registering needs templates:write");
    let response = api
        .client
        .post(format!("{url}/copies"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "taking a copy needs a member");
    let db = db::connect(&config).await;
    let templates = db::scalar(&db, "SELECT count(*) AS n FROM templates", vec![]).await;
    assert_eq!(templates, 0, "nothing was registered");
    gateway.stop().await.unwrap();
    warmup.stop().await.unwrap();
}

#[tokio::test]
async fn a_new_version_retires_the_old_copies() {
    let config = TestConfig::new(QUICK_SWEEPS);
    let warmup = spawn_template_warmup(&config).await;
    let gateway = spawn_gateway(&config).await;
    let api = gateway_api(gateway.port);
    let (client, bucket) = objects::bucket(&config).await;
    let first = objects::put_sources(&client, &bucket, "templates/v1", 3, 256).await;
    let second = objects::put_sources(&client, &bucket, "templates/v2", 2, 256).await;

    assert_eq!(api.register_template("card", &first, 2).await.0, 201);
    wait_for_full_pool(&api, "card", 2).await;
    let db = db::connect(&config).await;
    let old: Vec<String> = copies(&db, "card")
        .await
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();

    let (status, body) = api.register_template("card", &second, 2).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 2);
    let (status, copy) = api.take_copy("card", "alice").await;
    assert_eq!(status, 201, "{copy}");
    assert_eq!(
        copy["version"], 2,
        "no old copy is handed out after the new version: {copy}"
    );
    assert_eq!(copy["objects"].as_array().unwrap().len(), 2);

    eventually("old copies deleted", Duration::from_secs(15), || async {
        let rows = copies(&db, "card").await;
        let in_bucket = copy_ids_in_bucket(&client, &bucket, "card").await;
        let all_gone = old.iter().all(|id| {
            !in_bucket.contains_key(id)
                && rows
                    .iter()
                    .any(|(row, state, _)| row == id && state == "deleted")
        });
        all_gone.then_some(())
    })
    .await;
    wait_for_full_pool(&api, "card", 2).await;
    for (_, state, version) in copies(&db, "card").await {
        if state == "ready" {
            assert_eq!(version, 2, "the pool holds only the new version");
        }
    }
    gateway.stop().await.unwrap();
    warmup.stop().await.unwrap();
}

#[tokio::test]
async fn the_sweeper_deletes_copies_past_their_ttl_and_refills() {
    let config = TestConfig::new(&format!("{QUICK_SWEEPS}ready_ttl_seconds = 2\n"));
    let warmup = spawn_template_warmup(&config).await;
    let gateway = spawn_gateway(&config).await;
    let api = gateway_api(gateway.port);
    let (client, bucket) = objects::bucket(&config).await;
    let sources = objects::put_sources(&client, &bucket, "templates/ttl", 2, 128).await;

    assert_eq!(
        api.register_template("short-lived", &sources, 2).await.0,
        201
    );
    wait_for_full_pool(&api, "short-lived", 2).await;
    let db = db::connect(&config).await;
    let first: Vec<String> = copies(&db, "short-lived")
        .await
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();

    eventually(
        "expired copies deleted and replaced",
        Duration::from_secs(20),
        || async {
            let rows = copies(&db, "short-lived").await;
            let in_bucket = copy_ids_in_bucket(&client, &bucket, "short-lived").await;
            let expired_gone = first.iter().all(|id| {
                !in_bucket.contains_key(id)
                    && rows
                        .iter()
                        .any(|(row, state, _)| row == id && state == "deleted")
            });
            let replaced = rows
                .iter()
                .filter(|(id, state, _)| state == "ready" && !first.contains(id))
                .count()
                > 0;
            (expired_gone && replaced).then_some(())
        },
    )
    .await;
    let reasons = db::scalar(
        &db,
        "SELECT count(*) AS n FROM template_copies WHERE reason = 'ttl' AND state = 'deleted'",
        vec![],
    )
    .await;
    assert!(reasons >= 2, "the first copies left for their TTL");
    gateway.stop().await.unwrap();
    warmup.stop().await.unwrap();
}

#[tokio::test]
async fn kill_9_mid_refill_leaves_only_whole_copies_and_no_untracked_object() {
    let config = TestConfig::new(&format!(
        "{QUICK_SWEEPS}copy_parallelism = 1\nmax_s3_in_flight = 1\n"
    ));
    let gateway = spawn_gateway(&config).await;
    let api = gateway_api(gateway.port);
    let (client, bucket) = objects::bucket(&config).await;
    let sources = objects::put_sources(&client, &bucket, "templates/big", 60, 1_024).await;
    let warmup = ServiceProcess::start("template-warmup", &config).await;
    let db = db::connect(&config).await;

    assert_eq!(api.register_template("big", &sources, 4).await.0, 201);
    // Wait until a copy is under way and some of its objects exist, then kill -9.
    eventually("a refill under way", Duration::from_secs(30), || async {
        let copying = copy_states(&db, "big")
            .await
            .get("copying")
            .copied()
            .unwrap_or(0);
        let objects = objects::list(&client, &bucket, "copies/big/").await.len();
        (copying > 0 && objects > 0).then_some(())
    })
    .await;
    warmup.kill_hard();
    let half_made = copy_ids_in_bucket(&client, &bucket, "big").await;
    assert!(
        half_made.values().any(|&count| count < sources.len()),
        "the kill caught a copy half made: {half_made:?}"
    );

    let warmup = ServiceProcess::start("template-warmup", &config).await;
    eventually(
        "pool full again with nothing left copying",
        Duration::from_secs(60),
        || async {
            let states = copy_states(&db, "big").await;
            let full = api.pool("big").await.0 == 4;
            (full && !states.contains_key("copying")).then_some(())
        },
    )
    .await;
    let rows = copies(&db, "big").await;
    let in_bucket = copy_ids_in_bucket(&client, &bucket, "big").await;
    for (copy_id, count) in &in_bucket {
        let state = rows
            .iter()
            .find(|(id, _, _)| id == copy_id)
            .map(|(_, s, _)| s.as_str());
        assert_eq!(
            state,
            Some("ready"),
            "object of copy {copy_id} not accounted for"
        );
        assert_eq!(*count, sources.len(), "copy {copy_id} is whole");
    }
    let ready = rows.iter().filter(|(_, state, _)| state == "ready").count();
    assert_eq!(ready, 4);
    assert_eq!(
        in_bucket.len(),
        4,
        "the bucket holds exactly the pooled copies"
    );
    let members: Vec<String> = (0..4).map(|n| format!("m{n}")).collect();
    let taken = join_all(members.iter().map(|member| api.take_copy("big", member))).await;
    for (status, copy) in taken {
        assert_eq!(status, 201, "{copy}");
        assert_eq!(copy["source"], "pool");
        assert_whole(&client, &bucket, &copy).await;
    }
    drop(warmup);
    gateway.stop().await.unwrap();
}
