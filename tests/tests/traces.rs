//! Traces across the services, against the real stack: the services run as processes with
//! `[telemetry] otlp_endpoint` pointing at an OTLP/HTTP receiver inside the test, and a like
//! through the gateway ends up as one trace: the gateway's request span, its publish, and the
//! counter's apply and flush spans, continued through the record's `traceparent` header.
//! Without an endpoint no exporter runs: no thread, no connection, no header.

use std::time::Duration;

use reqwest::StatusCode;
use spillway_tests::{
    SAMPLE_NAMESPACES, SAMPLE_SINKS, TestConfig, db, eventually, kafka,
    otlp::{self, OtlpReceiver, ReceivedSpan},
    process::ServiceProcess,
    scenario::LIKES,
    token,
};

/// Spans leave a service 100 ms after they end (the SDK's default is 5 s).
const EXPORT_DELAY: (&str, &str) = ("OTEL_BSP_SCHEDULE_DELAY", "100");
/// The prefix of the SDK's exporter thread's name (`OpenTelemetry.Traces.BatchProcessor`).
const EXPORTER_THREAD: &str = "OpenTelemetry";
/// The blocking HTTP client's runtime thread (`reqwest-internal-sync-runtime`).
const HTTP_CLIENT_THREAD: &str = "reqwest-interna";

fn traced_config(receiver: &OtlpReceiver, extra: &str) -> TestConfig {
    TestConfig::new(&format!(
        "{SAMPLE_NAMESPACES}{extra}\n[telemetry]\notlp_endpoint = \"{}\"\n",
        receiver.endpoint()
    ))
}

/// A like with our own request id; the gateway's answer status.
async fn like(
    gateway: &ServiceProcess,
    entity: &str,
    member: &str,
    request_id: &str,
) -> StatusCode {
    reqwest::Client::new()
        .put(gateway.url(&format!("/v1/counters/{LIKES}/{entity}/members/me")))
        .bearer_auth(token(member))
        .header("x-request-id", request_id)
        .send()
        .await
        .expect("PUT like")
        .status()
}

/// The span of one name in a trace.
fn named<'a>(spans: &'a [ReceivedSpan], trace_id: &str, name: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|span| span.trace_id == trace_id && span.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no `{name}` span in the trace:\n{}",
                otlp::tree(spans, trace_id)
            )
        })
}

/// Waits until the receiver holds the trace of the request `request_id` with a span named
/// `last`; returns every span received and the trace id.
async fn trace_with(
    receiver: &OtlpReceiver,
    request_id: &str,
    last: &str,
) -> (Vec<ReceivedSpan>, String) {
    eventually(
        &format!("the trace of request {request_id} with a `{last}` span"),
        Duration::from_secs(30),
        || async {
            let spans = receiver.spans();
            let request = spans.iter().find(|span| {
                span.kind == "server" && span.attribute("request_id") == Some(request_id)
            })?;
            let trace_id = request.trace_id.clone();
            spans
                .iter()
                .any(|span| span.trace_id == trace_id && span.name == last)
                .then_some((spans, trace_id))
        },
    )
    .await
}

#[tokio::test]
async fn one_like_is_one_trace_from_the_gateway_request_to_the_counters_apply_and_flush() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let config = traced_config(&receiver, "");
    db::create_videos(&db::connect(&config).await, &["v1".into()]).await;
    let gateway = ServiceProcess::start_with_env("gateway", &config, &[EXPORT_DELAY]).await;
    let counter = ServiceProcess::start_with_env("counter", &config, &[EXPORT_DELAY]).await;
    for service in [&gateway, &counter] {
        let threads = service.thread_names();
        assert!(
            threads.iter().any(|name| name.starts_with(EXPORTER_THREAD)),
            "{}: no exporter thread in {threads:?}",
            service.name
        );
    }

    let request_id = format!("{}-like", config.id);
    assert_eq!(
        like(&gateway, "v1", "alice", &request_id).await,
        StatusCode::ACCEPTED
    );
    let (spans, trace_id) = trace_with(&receiver, &request_id, "counter.flush").await;
    println!("{}", otlp::tree(&spans, &trace_id));

    let route = "PUT /v1/counters/{namespace}/{entity_id}/members/me";
    let request = named(&spans, &trace_id, route);
    assert_eq!(request.service, "spillway-gateway");
    assert_eq!(request.parent_span_id, "", "the request starts the trace");
    assert_eq!(
        request.attribute("http.route"),
        Some("/v1/counters/{namespace}/{entity_id}/members/me")
    );
    assert_eq!(request.attribute("http.request.method"), Some("PUT"));
    assert_eq!(request.attribute("http.response.status_code"), Some("202"));

    let publish_name = format!("publish {}", config.counter_topic);
    let publish = named(&spans, &trace_id, &publish_name);
    assert_eq!(
        (publish.service.as_str(), publish.kind.as_str()),
        ("spillway-gateway", "producer")
    );
    assert_eq!(publish.parent_span_id, request.span_id);
    assert_eq!(publish.attribute("request_id"), Some(request_id.as_str()));

    // The counter continues the trace from the record's traceparent: the publish span.
    let apply = named(&spans, &trace_id, "counter.apply");
    assert_eq!(apply.service, "spillway-counter");
    assert_eq!(apply.parent_span_id, publish.span_id);
    assert_eq!(apply.attribute("namespace"), Some(LIKES));
    assert_eq!(apply.attribute("entity_id"), Some("v1"));
    assert_eq!(apply.attribute("request_id"), Some(request_id.as_str()));
    assert_eq!(apply.attribute("applied"), Some("1"));
    let flush = named(&spans, &trace_id, "counter.flush");
    assert_eq!(flush.service, "spillway-counter");
    assert_eq!(flush.parent_span_id, publish.span_id);
    assert!(flush.attribute("entities").is_some_and(|n| n != "0"));

    // The batch span is the consumer's own trace, linked to the record's.
    let batch_name = format!("process {}", config.counter_topic);
    let linked = spans.iter().find(|span| {
        span.name == batch_name
            && span
                .links
                .contains(&(trace_id.clone(), publish.span_id.clone()))
    });
    let batch = linked.unwrap_or_else(|| panic!("no `{batch_name}` span links to the record"));
    assert_eq!(
        (batch.service.as_str(), batch.kind.as_str()),
        ("spillway-counter", "consumer")
    );
    assert_eq!(batch.attribute("messaging.batch.message_count"), Some("1"));
    println!(
        "{batch_name} [{}] {} span {} (trace {}), linked to the publish span",
        batch.service, batch.kind, batch.span_id, batch.trace_id
    );
    drop((gateway, counter));
}

#[tokio::test]
async fn a_write_and_a_warmup_request_continue_their_traces_in_the_batch_writer_and_template_warmup()
 {
    let receiver = OtlpReceiver::start().await.unwrap();
    let config = traced_config(&receiver, SAMPLE_SINKS);
    let env = [EXPORT_DELAY];
    let gateway = ServiceProcess::start_with_env("gateway", &config, &env).await;
    let writer = ServiceProcess::start_with_env("batch-writer", &config, &env).await;
    let warmup = ServiceProcess::start_with_env("template-warmup", &config, &env).await;

    let request_id = format!("{}-write", config.id);
    let status = reqwest::Client::new()
        .post(gateway.url("/v1/writes/playlists"))
        .bearer_auth(token("alice"))
        .header("x-request-id", &request_id)
        .json(&serde_json::json!({ "title": "traced" }))
        .send()
        .await
        .expect("POST write")
        .status();
    assert_eq!(status, StatusCode::ACCEPTED);
    let (spans, trace_id) = trace_with(&receiver, &request_id, "write playlists").await;
    println!("{}", otlp::tree(&spans, &trace_id));
    let publish_name = format!("publish {}.writes.playlists.v1", config.id);
    let publish = named(&spans, &trace_id, &publish_name);
    let write = named(&spans, &trace_id, "write playlists");
    assert_eq!(write.service, "spillway-batch-writer");
    assert_eq!(write.parent_span_id, publish.span_id);
    assert_eq!(write.attribute("outcome"), Some("stored"));
    assert_eq!(write.attribute("request_id"), Some(request_id.as_str()));

    // An outside producer's warm-up request with a traceparent of its own: the refill is its
    // child.
    let parent_span = "00f067aa0ba902b7";
    let outside_trace = uuid::Uuid::new_v4().simple().to_string();
    let traceparent = format!("00-{outside_trace}-{parent_span}-01");
    let request = spillway_core::wire::WarmupRequest {
        template_id: format!("{}-template", config.id),
        ..Default::default()
    };
    kafka::publish(
        &kafka::producer(),
        &config.warmup_topic,
        &request.template_id,
        &spillway_core::wire::encode(&request),
        &[("traceparent", &traceparent)],
    )
    .await;
    let refill = eventually("the refill's span", Duration::from_secs(30), || async {
        receiver
            .spans()
            .into_iter()
            .find(|span| span.trace_id == outside_trace && span.name == "template.refill")
    })
    .await;
    assert_eq!(refill.service, "spillway-template-warmup");
    assert_eq!(refill.parent_span_id, parent_span);
    assert_eq!(
        refill.attribute("template_id"),
        Some(request.template_id.as_str())
    );
    drop((gateway, writer, warmup));
}

#[tokio::test]
async fn without_an_endpoint_no_exporter_runs_and_records_carry_no_traceparent() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let config = TestConfig::with_sample_namespaces();
    db::create_videos(&db::connect(&config).await, &["v1".into()]).await;
    // The SDK's own variables, as a platform may set them for every pod, do not turn the
    // exporter on: only `telemetry.otlp_endpoint` does.
    let endpoint = receiver.endpoint();
    let traces_endpoint = format!("{endpoint}/v1/traces");
    let env = [
        EXPORT_DELAY,
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            traces_endpoint.as_str(),
        ),
    ];
    let gateway = ServiceProcess::start_with_env("gateway", &config, &env).await;
    let counter = ServiceProcess::start_with_env("counter", &config, &env).await;

    let request_id = format!("{}-untraced", config.id);
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let status = reqwest::Client::new()
        .put(gateway.url(&format!("/v1/counters/{LIKES}/v1/members/me")))
        .bearer_auth(token("alice"))
        .header("x-request-id", &request_id)
        .header("traceparent", traceparent)
        .send()
        .await
        .expect("PUT like")
        .status();
    assert_eq!(status, StatusCode::ACCEPTED);
    let database = db::connect(&config).await;
    eventually("the like flushed", Duration::from_secs(20), || async {
        (db::counter_value(&database, LIKES, "v1").await == 1).then_some(())
    })
    .await;

    let records = kafka::read_topic(&config.counter_topic, 1, Duration::from_secs(10));
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].header("request-id"), Some(request_id.as_str()));
    assert_eq!(
        records[0].header("traceparent"),
        None,
        "{:?}",
        records[0].headers
    );
    for service in [&gateway, &counter] {
        let threads = service.thread_names();
        assert!(
            !threads.iter().any(|name| {
                name.starts_with(EXPORTER_THREAD) || name.starts_with(HTTP_CLIENT_THREAD)
            }),
            "{}: {threads:?}",
            service.name
        );
    }
    // Long past the export delay an exporter would have used.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.connections(), 0);
    drop((gateway, counter));
}
