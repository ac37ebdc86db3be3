//! How a service starts outside the happy path: with a database role that has DML rights
//! only (the migrations are `spillway-admin migrate`'s, not the services'), on a schema that
//! is not migrated, and with the sample secrets outside the local stack.

use std::time::Duration;

use sea_orm::ConnectionTrait;
use serde_json::json;
use spillway_tests::{
    SAMPLE_NAMESPACES, SAMPLE_SINKS, TestConfig, api::Api, db, eventually, process::ServiceProcess,
    stack::Stack,
};

const SERVICES: [&str; 4] = ["gateway", "counter", "batch-writer", "template-warmup"];

/// The sample namespaces and sinks, and a view keyed by member (checked at gateway start).
fn deployment() -> TestConfig {
    TestConfig::new(&format!(
        "{SAMPLE_NAMESPACES}{SAMPLE_SINKS}
[views.member-playlists]
key_is_member = true
sql = \"SELECT id, title FROM playlists WHERE member_id = $1\"
"
    ))
}

/// `DATABASE_URL` with another user.
fn url_as(role: &str) -> String {
    let url = Stack::current().database_url;
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{role}@{host}")
}

/// A login role with USAGE on the test's schema and SELECT, INSERT, UPDATE, DELETE on its
/// tables: what a deployment gives the services.
async fn create_dml_role(database: &sea_orm::DatabaseConnection, role: &str, schema: &str) {
    for statement in [
        format!("CREATE ROLE \"{role}\" LOGIN"),
        format!("GRANT USAGE ON SCHEMA \"{schema}\" TO \"{role}\""),
        format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA \"{schema}\" TO \"{role}\""
        ),
    ] {
        database
            .execute_unprepared(&statement)
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
}

async fn drop_role(database: &sea_orm::DatabaseConnection, role: &str) {
    for statement in [
        format!("DROP OWNED BY \"{role}\""),
        format!("DROP ROLE \"{role}\""),
    ] {
        if let Err(error) = database.execute_unprepared(&statement).await {
            eprintln!("{statement}: {error}");
        }
    }
}

#[tokio::test]
async fn a_role_with_only_dml_rights_starts_every_service_and_they_work() {
    let config = deployment();
    config.migrate().await;
    let owner = db::connect(&config).await;
    db::create_videos(&owner, &["v1".to_owned()]).await;
    let role = format!("{}_app", config.id);
    create_dml_role(&owner, &role, &config.schema).await;
    let restricted = config.with_database_url(&url_as(&role));

    // The premise: this role cannot change the schema.
    let as_role = db::connect_as(&restricted, &url_as(&role)).await;
    let refused = as_role
        .execute_unprepared("CREATE TABLE not_allowed (id int)")
        .await
        .expect_err("a DML-only role cannot create tables");
    assert!(
        refused.to_string().contains("permission denied"),
        "{refused}"
    );
    drop(as_role);

    let mut running = Vec::new();
    for service in SERVICES {
        running.push(ServiceProcess::start_unmigrated(service, &restricted, &[]).await);
    }
    let gateway = &running[0];
    let api = Api::new(gateway.url(""));
    let (status, body) = api.like("video-likes", "v1", "ada").await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = api
        .write("playlists", "ada", &json!({"title": "with DML rights"}))
        .await;
    assert_eq!(status, 202, "{body}");
    eventually(
        "the like flushed and the write stored by DML-only services",
        Duration::from_secs(30),
        || async {
            let liked = db::counter_value(&owner, "video-likes", "v1").await == 1;
            let stored = db::scalar(&owner, "SELECT count(*) AS n FROM playlists", vec![]).await;
            (liked && stored == 1).then_some(())
        },
    )
    .await;
    drop(running);
    drop_role(&owner, &role).await;
}

#[tokio::test]
async fn a_schema_that_is_not_migrated_stops_every_service_naming_the_migration_command() {
    let config = deployment();
    for service in SERVICES {
        let (status, stderr) = ServiceProcess::run_expecting_failure(service, &config, &[]);
        assert!(!status.success(), "{service} must not start");
        assert!(
            stderr.contains(&format!(
                "database schema `{}` is not migrated",
                config.schema
            )) && stderr.contains("spillway-admin migrate"),
            "{service}'s error says what to run:\n{stderr}"
        );
    }
}

#[tokio::test]
async fn an_owned_sink_table_that_was_not_created_stops_the_batch_writer() {
    let config = deployment();
    // The migrations only, not the owned tables (an older `spillway-admin migrate`).
    let database = spillway_core::db::connect(&config.settings().database)
        .await
        .unwrap();
    spillway_core::db::migrate(&database, &config.schema)
        .await
        .unwrap();
    let (status, stderr) = ServiceProcess::run_expecting_failure("batch-writer", &config, &[]);
    assert!(!status.success());
    assert!(
        stderr.contains("sinks.playlists")
            && stderr.contains("`playlists` does not exist")
            && stderr.contains("spillway-admin migrate"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_sample_secrets_are_refused_outside_the_local_stack() {
    let config = TestConfig::new("");
    config.migrate().await;
    let own_secret = "an-operator-chosen-secret-of-forty-chars!";
    for (service, env, key) in [
        (
            "gateway",
            vec![("SPILLWAY_LOCAL_STACK", "0")],
            "`jwt_secret`",
        ),
        (
            "gateway",
            vec![
                ("SPILLWAY_LOCAL_STACK", "false"),
                ("SPILLWAY_JWT_SECRET", "dev-secret-change-me"),
            ],
            "`jwt_secret`",
        ),
        (
            "gateway",
            vec![
                ("SPILLWAY_LOCAL_STACK", "0"),
                ("SPILLWAY_JWT_SECRET", own_secret),
                ("SPILLWAY_ADMISSION__SECRET", "dev-secret-change-me"),
            ],
            "`admission.secret`",
        ),
        (
            "counter",
            vec![
                ("SPILLWAY_LOCAL_STACK", "0"),
                ("SPILLWAY_JWT_SECRET", "dev-secret-change-me"),
            ],
            "`jwt_secret`",
        ),
    ] {
        let (status, stderr) = ServiceProcess::run_expecting_failure(service, &config, &env);
        assert!(!status.success(), "{service} with {env:?} must not start");
        assert!(
            stderr.contains(key) && stderr.contains("sample secret"),
            "{service} with {env:?} names {key}:\n{stderr}"
        );
        assert!(
            !stderr.contains("dev-secret-change-me") && !stderr.contains("test-secret"),
            "the secret is not printed:\n{stderr}"
        );
    }
    // An operator's own secret starts outside the local stack.
    let gateway = ServiceProcess::start_with_env(
        "gateway",
        &config,
        &[
            ("SPILLWAY_LOCAL_STACK", "0"),
            ("SPILLWAY_JWT_SECRET", own_secret),
        ],
    )
    .await;
    let api = Api::new(gateway.url("")).with_secret(own_secret);
    let (status, body) = api.get("video-views", "v1", Some("ada")).await;
    assert_eq!(status, 404, "answers (no such namespace here): {body}");
}
