//! The gateway's own promises, against the real stack: refusals in the API's words (the
//! field named, what to send instead, a `WWW-Authenticate` challenge on a 401); reads under
//! each sink's and view's read rule; CORS for the configured origins only; and no metric
//! series that a client's method or path could add.

use std::{collections::BTreeSet, time::Duration};

use rand::{Rng, distr::Alphanumeric};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use spillway_tests::{
    SAMPLE_NAMESPACES, SAMPLE_SINKS, TestConfig,
    api::Api,
    eventually, spawn_batch_writer, spawn_gateway, token,
    views::{read_view, read_view_as},
};

/// A status, the `WWW-Authenticate` header and the body.
async fn call(request: reqwest::RequestBuilder) -> (StatusCode, Option<String>, Value) {
    let response = request.send().await.expect("the gateway answers");
    let status = response.status();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    (status, challenge, response.json().await.unwrap_or_default())
}

fn detail(body: &Value) -> &str {
    body["detail"].as_str().unwrap_or_default()
}

/// Words that belong to libraries, not to the API.
const INTERNALS: [&str; 8] = [
    "Json deserialize",
    "Content type error",
    "InvalidSignature",
    "Base64",
    "expected i64",
    " is Sum",
    " is Distinct",
    "invalid type:",
];

fn assert_own_words(what: &str, body: &Value) {
    for word in INTERNALS {
        assert!(!detail(body).contains(word), "{what}: `{word}` in {body}");
    }
    assert!(!detail(body).is_empty(), "{what}: {body}");
}

#[tokio::test]
async fn refusals_say_what_was_wrong_and_what_to_send_instead() {
    let config = TestConfig::new(&format!("{SAMPLE_NAMESPACES}{SAMPLE_SINKS}"));
    let gateway = spawn_gateway(&config).await;
    let base = gateway.url("");
    let client = reqwest::Client::new();
    let views_url = format!("{base}/v1/counters/video-views/v1/increments");
    let likes_url = format!("{base}/v1/counters/video-likes/v1/members/me");
    let wrong_secret = gateway::auth::issue_token("another-secret", "ada", &[], 60);

    let (status, _, body) = call(client.post(&views_url).json(&json!({"delta": 1.5}))).await;
    assert_eq!(
        (status.as_u16(), body["field"].as_str()),
        (400, Some("delta"))
    );
    assert!(detail(&body).contains("expected an integer"), "{body}");
    assert_own_words("a fractional delta", &body);

    let (status, _, body) = call(client.post(&views_url).json(&json!({"delta": 1, "by": 2}))).await;
    assert_eq!((status.as_u16(), body["field"].as_str()), (400, Some("by")));
    assert!(detail(&body).contains("send only `delta`"), "{body}");

    let (status, _, body) = call(client.post(&views_url).body("{\"delta\": 1}")).await;
    assert_eq!(status, 415, "{body}");
    assert!(
        detail(&body).contains("Content-Type: application/json"),
        "{body}"
    );
    assert_own_words("no content type", &body);

    let (status, _, body) = call(
        client
            .post(&views_url)
            .header("content-type", "application/json")
            .body("{oops"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(detail(&body).contains("not valid JSON"), "{body}");

    let (status, challenge, body) = call(client.put(&likes_url)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(challenge.as_deref(), Some("Bearer"), "no token sent");
    assert!(detail(&body).contains("Authorization: Bearer"), "{body}");

    for (what, token) in [
        ("wrong secret", wrong_secret.as_str()),
        ("not a JWT", "abc.def"),
    ] {
        let (status, challenge, body) = call(client.put(&likes_url).bearer_auth(token)).await;
        assert_eq!(status, 401, "{what}: {body}");
        let challenge = challenge.unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\""),
            "{what}: {challenge}"
        );
        assert_own_words(what, &body);
    }

    let (status, _, body) = call(
        client
            .post(format!("{base}/v1/counters/video-likes/v1/increments"))
            .bearer_auth(token("ada"))
            .json(&json!({"delta": 1})),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(detail(&body).contains("/members/me"), "{body}");
    assert_own_words("increments of likes", &body);
    let (status, _, body) = call(
        client
            .put(format!("{base}/v1/counters/video-views/v1/members/me"))
            .bearer_auth(token("ada")),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(detail(&body).contains("/increments"), "{body}");
    assert_own_words("a like of views", &body);

    let (status, _, body) = call(
        client
            .post(format!("{base}/v1/writes/playlists"))
            .bearer_auth(token("ada"))
            .json(&json!({"title": 7})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["field"].as_str()),
        (400, Some("title"))
    );
    assert_own_words("a number as title", &body);

    let (status, _, body) = call(
        client
            .put(format!("{base}/v1/templates/t1"))
            .bearer_auth(gateway::auth::issue_token(
                spillway_tests::JWT_SECRET,
                "ops",
                &["templates:write"],
                60,
            ))
            .json(&json!({"objects": ["a"], "pool_capacity": "four"})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["field"].as_str()),
        (400, Some("pool_capacity")),
        "{body}"
    );
    assert_own_words("a capacity in words", &body);
    gateway.stop().await.unwrap();
}

/// A public sink, a sink read by scope, a view keyed by member, a public view and a
/// namespace without anonymous increments, beside the sample ones.
const READ_RULES: &str = r#"
[sinks.notices]
table = "notices"
batch_max_delay_ms = 50
[sinks.notices.columns]
id = { type = "uuid" }
text = { type = "text" }
[sinks.audits]
table = "audits"
member_column = "member_id"
read = "scope:audits:read"
batch_max_delay_ms = 50
[sinks.audits.columns]
id = { type = "uuid" }
member_id = { type = "text" }
what = { type = "text" }
[views.member-playlists]
key_is_member = true
sql = "SELECT id, title FROM playlists WHERE member_id = $1 ORDER BY id"
[views.echo]
sql = "SELECT $1::text AS echo"
result = "one"
[namespaces.clicks]
kind = "sum"
"#;

#[tokio::test]
async fn reads_follow_each_sink_and_views_read_rule() {
    let config = TestConfig::new(&format!("{SAMPLE_NAMESPACES}{SAMPLE_SINKS}{READ_RULES}"));
    let gateway = spawn_gateway(&config).await;
    let api = Api::new(gateway.url(""));
    let (status, body) = api
        .write("playlists", "ada", &json!({"title": "ada's"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();

    // A member sink, pending: no token is 401, another member is 404, the member sees it.
    let url = gateway.url(&format!("/v1/writes/playlists/{id}"));
    let client = reqwest::Client::new();
    let (status, challenge, _) = call(client.get(&url)).await;
    assert_eq!(
        (status.as_u16(), challenge.as_deref()),
        (401, Some("Bearer"))
    );
    let (status, _, bob_sees) = call(client.get(&url).bearer_auth(token("bob"))).await;
    let (missing, _, nothing) = call(
        client
            .get(gateway.url(&format!("/v1/writes/playlists/{}", uuid::Uuid::now_v7())))
            .bearer_auth(token("bob")),
    )
    .await;
    assert_eq!(
        (status, missing),
        (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND)
    );
    assert_eq!(
        bob_sees["type"], nothing["type"],
        "another member's row looks like no row"
    );
    let (status, body) = api.read_write_as("playlists", &id, "ada").await;
    assert_eq!(
        (status.as_u16(), body["status"].as_str()),
        (200, Some("pending"))
    );

    // Committed: the same rule.
    let writer = spawn_batch_writer(&config).await;
    eventually("ada's row committed", Duration::from_secs(20), || async {
        let (_, body) = api.read_write_as("playlists", &id, "ada").await;
        (body["status"] == "committed").then_some(())
    })
    .await;
    let (status, _, _) = call(client.get(&url).bearer_auth(token("bob"))).await;
    assert_eq!(status, 404, "committed rows are no more visible to others");

    // A public sink needs no token; a scoped one needs the scope.
    let (status, body) = api.write("notices", "ada", &json!({"text": "hello"})).await;
    assert_eq!(status, 202, "{body}");
    let notice = body["id"].as_str().unwrap().to_owned();
    let (status, body) = api.read_write("notices", &notice).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api.write("audits", "ada", &json!({"what": "login"})).await;
    assert_eq!(status, 202, "{body}");
    let audit_url = gateway.url(&format!(
        "/v1/writes/audits/{}",
        body["id"].as_str().unwrap()
    ));
    let (status, _, _) = call(client.get(&audit_url)).await;
    assert_eq!(status, 401);
    let (status, _, body) = call(client.get(&audit_url).bearer_auth(token("ada"))).await;
    assert_eq!(status, 403, "ada's own row, but no scope: {body}");
    let auditor =
        gateway::auth::issue_token(spillway_tests::JWT_SECRET, "eve", &["audits:read"], 60);
    let (status, _, body) = call(client.get(&audit_url).bearer_auth(auditor)).await;
    assert_eq!(status, 200, "{body}");

    // A view keyed by member: 401 without a token, 403 for another member's key.
    let anonymous = read_view(&api, "member-playlists", "ada").await;
    assert_eq!(anonymous.status, 401, "{:?}", anonymous.body);
    let other = read_view_as(&api, "member-playlists", "ada", "bob").await;
    assert_eq!(other.status, 403, "{:?}", other.body);
    let own = read_view_as(&api, "member-playlists", "ada", "ada").await;
    assert_eq!(own.status, 200, "{:?}", own.body);
    assert_eq!(own.body[0]["title"], "ada's");
    let public = read_view(&api, "echo", "hi").await;
    assert_eq!(
        (public.status, public.body["echo"].as_str()),
        (200, Some("hi"))
    );

    // Increments: anonymous where the namespace says so, a member elsewhere.
    let (status, body) = api.increment("video-views", "v1", 1, None).await;
    assert_eq!(
        status, 202,
        "video-views takes anonymous increments: {body}"
    );
    let clicks = gateway.url("/v1/counters/clicks/c1/increments");
    let (status, challenge, _) = call(client.post(&clicks).json(&json!({"delta": 1}))).await;
    assert_eq!(
        (status.as_u16(), challenge.as_deref()),
        (401, Some("Bearer"))
    );
    let (status, _, body) = call(
        client
            .post(&clicks)
            .bearer_auth(token("ada"))
            .json(&json!({"delta": 1})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    writer.stop().await.unwrap();
    gateway.stop().await.unwrap();
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test]
async fn cors_answers_preflights_for_the_configured_origins_only() {
    let plain = TestConfig::new(SAMPLE_NAMESPACES);
    let config = plain.with_gateway_line(r#"cors_origins = ["https://app.example"]"#);
    let gateway = spawn_gateway(&config).await;
    let client = reqwest::Client::new();
    let likes = gateway.url("/v1/counters/video-likes/v1/members/me");
    let preflight = |origin: &'static str| {
        client
            .request(Method::OPTIONS, &likes)
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("https://app.example").await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        header(&allowed, "access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    let methods = header(&allowed, "access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("PUT"), "{methods}");
    let headers = header(&allowed, "access-control-allow-headers").unwrap_or_default();
    assert!(
        headers.to_lowercase().contains("authorization"),
        "{headers}"
    );
    let other = preflight("https://elsewhere.example").await.unwrap();
    assert_eq!(header(&other, "access-control-allow-origin"), None);

    let read = client
        .get(gateway.url("/v1/counters/video-likes/v1"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(
        header(&read, "access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    let exposed = header(&read, "access-control-expose-headers").unwrap_or_default();
    assert!(exposed.to_lowercase().contains("x-request-id"), "{exposed}");
    gateway.stop().await.unwrap();

    // Off by default.
    let gateway = spawn_gateway(&plain).await;
    let response = client
        .request(
            Method::OPTIONS,
            gateway.url("/v1/counters/video-likes/v1/members/me"),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "PUT")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    gateway.stop().await.unwrap();
}

fn random_word(rng: &mut impl Rng, length: usize) -> String {
    rng.sample_iter(&Alphanumeric)
        .take(length)
        .map(char::from)
        .collect()
}

/// A request a client could make up: a random or known method on a random path, some of
/// them under real route patterns.
fn random_request(client: &reqwest::Client, base: &str) -> reqwest::RequestBuilder {
    let mut rng = rand::rng();
    let method = match rng.random_range(0..4) {
        0 => Method::GET,
        1 => Method::POST,
        _ => {
            let length = rng.random_range(3..12);
            let word = random_word(&mut rng, length).to_uppercase();
            Method::from_bytes(word.as_bytes()).expect("a token is a method")
        }
    };
    let word = random_word(&mut rng, 12);
    let path = match rng.random_range(0..5) {
        0 => format!("/{word}"),
        1 => format!("/v1/{word}/{}", random_word(&mut rng, 6)),
        2 => format!("/v1/counters/video-views/{word}"),
        3 => format!("/v1/views/{word}/{}", random_word(&mut rng, 6)),
        _ => format!("/v1/writes/{word}/{}?{word}=1", uuid::Uuid::new_v4()),
    };
    client.request(method, format!("{base}{path}"))
}

/// The series on a /metrics page, by name and labels.
fn series(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' ').map(|(series, _)| series.to_owned()))
        .collect()
}

async fn send_random_requests(client: &reqwest::Client, base: &str, count: usize) {
    use futures::StreamExt;
    futures::stream::iter(0..count)
        .for_each_concurrent(16, |_| async {
            random_request(client, base)
                .send()
                .await
                .expect("the gateway answers");
        })
        .await;
}

#[tokio::test]
async fn a_thousand_requests_with_random_methods_and_paths_add_no_metric_series() {
    let config = TestConfig::new(SAMPLE_NAMESPACES);
    let gateway = spawn_gateway(&config).await;
    let client = reqwest::Client::new();
    let base = gateway.url("");
    // The first round meets each (route, method, status) the generator can reach, and
    // reading /metrics once counts that call too.
    gateway.metrics().await;
    send_random_requests(&client, &base, 1_000).await;
    let before = series(&gateway.metrics().await);
    send_random_requests(&client, &base, 1_000).await;
    let metrics = gateway.metrics().await;
    let after = series(&metrics);
    let added: Vec<&String> = after.difference(&before).collect();
    assert!(added.is_empty(), "new series: {added:?}");
    for line in metrics
        .lines()
        .filter(|line| line.starts_with("spillway_gateway_http_"))
    {
        let method = line
            .split("method=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default();
        assert!(
            ["GET", "POST", "other"].contains(&method),
            "method label `{method}` in {line}"
        );
        assert!(
            line.contains("route=\"/") || line.contains("route=\"unmatched\""),
            "{line}"
        );
    }
    gateway.stop().await.unwrap();
}

/// Readiness without the fault tests' stack restarts: the gateway and the counter on a Redis
/// of their own, which is then stopped. The pods stay ready; the verbose check, the gauge and
/// the answers say Redis is down; what the database can answer is still answered.
#[tokio::test]
async fn readiness_stays_200_when_redis_dies_while_answers_say_503_or_come_from_the_database() {
    use spillway_tests::views::{PrivateRedis, sample_views_toml, with_redis};
    let redis = PrivateRedis::start("64mb", "volatile-ttl").await;
    let dir = tempfile::tempdir().unwrap();
    let config = with_redis(
        &TestConfig::new(&format!(
            "{SAMPLE_NAMESPACES}{SAMPLE_SINKS}{}",
            sample_views_toml()
        )),
        &redis.url,
        &dir,
    );
    let database = spillway_tests::db::connect(&config).await;
    spillway_tests::views::load_sample_schema(&database).await;
    let gateway = spawn_gateway(&config).await;
    let counter = spillway_tests::spawn_counter(&config).await;
    let client = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    drop(redis);

    for (name, service) in [("gateway", &gateway), ("counter", &counter)] {
        let body = eventually(
            &format!("{name} /readyz?verbose names redis"),
            Duration::from_secs(10),
            || async {
                let response = client
                    .get(service.url("/readyz?verbose"))
                    .send()
                    .await
                    .ok()?;
                (response.status() == 503).then_some(())?;
                response.json::<Value>().await.ok()
            },
        )
        .await;
        assert_eq!(body["down"], json!(["redis"]), "{body}");
        let ready = client.get(service.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200, "{name} can still answer");
        let gauge = format!("spillway_{name}_dependency_up{{dependency=\"redis\"}} 0");
        assert!(service.metrics().await.contains(&gauge), "{gauge}");
    }

    // A view is read from the database; a like, which needs Redis, is a quick 503.
    let api = Api::new(gateway.url(""));
    let view = read_view(&api, "lecture-attendance", "7").await;
    assert_eq!(view.status, 200, "{:?}", view.body);
    assert_eq!(
        view.cache_status,
        "spillway; fwd=miss; detail=redis-unavailable"
    );
    let started = std::time::Instant::now();
    let response = client
        .put(gateway.url("/v1/counters/video-likes/v1/members/me"))
        .bearer_auth(token("ada"))
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "within the deadline"
    );
    assert_eq!(response.status(), 503);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["dependency"], "redis", "{body}");
    assert_own_words("redis down", &body);
    assert!(!detail(&body).contains("redis pool"), "{body}");
    counter.stop().await.unwrap();
    gateway.stop().await.unwrap();
}
