#!/usr/bin/env python3
"""Writes spillway's Grafana dashboards (deploy/grafana/*.json) from the panel lists below.

One dashboard per concern; every panel's query uses only metrics the services export (see
docs/operations.md, "Dashboards"). Run it after changing a panel:

    python3 deploy/grafana/generate.py            # rewrites the JSON files
    python3 deploy/grafana/generate.py --check    # fails when a JSON file is out of date

`cargo xtask check-deploy` runs the --check form, and `--live` runs every query against a
Prometheus scraping the local stack.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"

# Selectors over every service's shared consumer metrics (one name per service).
LAG = '{__name__=~"spillway_.+_consumer_lag_messages"}'
DLQ = '{__name__=~"spillway_.+_dlq_messages_total"}'
CONSUMED = '{__name__=~"spillway_.+_consumed_messages_total"}'
FAILURES = '{__name__=~"spillway_.+_handler_failures_total"}'
FLUSH_FAILURES = '{__name__=~"spillway_.+_flush_failures_total"}'
# The spillway jobs (process_* metrics come from every process Prometheus scrapes).
SPILLWAY_JOBS = 'job=~".*(gateway|counter|batch-writer|template-warmup).*"'
DEPENDENCY_UP = '{__name__=~"spillway_.+_dependency_up"}'
REQUESTS = "spillway_gateway_http_requests_total"


def rate(selector, by=None):
    inner = f"rate({selector}[{RATE}])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def quantile(q, bucket, by=""):
    labels = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({bucket}[{RATE}])))"


def zero_when_none(expr, fallback):
    """`expr`, or 0 for each series of `fallback` while `expr` has none (no 503 yet, no sweep
    yet: a labelled counter appears with its first increment)."""
    return f"({expr}) or ({fallback} * 0)"


def target(expr, legend=""):
    return {"expr": expr, "legendFormat": legend}


def panel(title, targets, unit="short", kind="timeseries", description=""):
    return {"title": title, "targets": targets, "unit": unit, "type": kind, "description": description}


def quantiles(bucket, by="", legend_prefix=""):
    prefix = f"{legend_prefix} " if legend_prefix else ""
    return [
        target(quantile(0.5, bucket, by), f"{prefix}p50"),
        target(quantile(0.99, bucket, by), f"{prefix}p99"),
    ]


OVERVIEW = [
    panel("Gateway requests/s by status", [target(rate(REQUESTS, "status"), "{{status}}")], "reqps"),
    panel("Gateway latency", quantiles("spillway_gateway_http_request_duration_seconds_bucket"), "s"),
    panel("Counter events/s", [target(rate("spillway_counter_events_total", "namespace, outcome"), "{{namespace}} {{outcome}}")], "ops"),
    panel("Batch-writer rows/s", [target(rate("spillway_batch_writer_rows_total", "sink, outcome"), "{{sink}} {{outcome}}")], "rowsps"),
    panel("Consumer lag by service", [target(f"sum by (job) ({LAG})", "{{job}}")], "short"),
    panel("DLQ messages/s", [target(rate(DLQ, "job, topic"), "{{job}} {{topic}}")], "short"),
    panel("Dependencies up (1) or down (0)", [target(f"min by (job, dependency) ({DEPENDENCY_UP})", "{{job}} {{dependency}}")], "short", "stat"),
    panel("Warm copies ready by template", [target("sum by (template) (spillway_template_warmup_pool_ready)", "{{template}}")]),
    panel("Targets up", [target('up{job=~".*(gateway|counter|batch-writer|template-warmup).*"}', "{{job}} {{instance}}")], "short", "stat"),
    panel("CPU by service", [target(rate(f"process_cpu_seconds_total{{{SPILLWAY_JOBS}}}", "job"), "{{job}}")], "percentunit"),
    panel("Resident memory by service", [target(f"max by (job) (process_resident_memory_bytes{{{SPILLWAY_JOBS}}})", "{{job}}")], "bytes"),
    panel("Open file descriptors by service", [target(f"max by (job) (process_open_fds{{{SPILLWAY_JOBS}}})", "{{job}}")]),
    panel("Versions running", [target("count by (job, version, commit) (spillway_build_info)", "{{job}} {{version}} {{commit}}")], "short", "stat",
          description="Instances per version and commit (spillway_build_info); two rows for one job during a rolling upgrade."),
]

COUNTERS = [
    panel("Events/s by namespace and outcome", [target(rate("spillway_counter_events_total", "namespace, outcome"), "{{namespace}} {{outcome}}")], "ops",
          description="applied: changed a counter; replayed: already applied (a replay after a crash or rebalance)."),
    panel("Apply latency (acceptance to Redis)", quantiles("spillway_counter_apply_lag_seconds_bucket"), "s"),
    panel("Consumer batch duration", quantiles("spillway_counter_batch_duration_seconds_bucket"), "s"),
    panel("Flush batch size (counters per flush)", quantiles("spillway_counter_flush_entities_bucket")),
    panel("Flush lag (acceptance to database commit)", quantiles("spillway_counter_flush_lag_seconds_bucket"), "s"),
    panel("Flush duration", quantiles("spillway_counter_flush_duration_seconds_bucket"), "s"),
    panel("Flushes/s", [target("sum(rate(spillway_counter_flush_duration_seconds_count[$__rate_interval]))", "flushes")], "ops"),
    panel("Dirty counters (not yet flushed)", [target("sum(spillway_counter_dirty_entities)", "dirty")]),
    panel("Counters loaded from the database/s", [target("sum(rate(spillway_counter_redis_loads_total[$__rate_interval]))", "loads")], "ops"),
    panel("Redis rebuilds (last hour)", [target("sum(increase(spillway_counter_redis_rebuilds_total[1h]))", "rebuilds")], "short", "stat",
          description="Redis found emptied: the consumer rewound to its committed offsets and reloads counters from the database."),
    panel("Flush failures/s", [target(rate('spillway_counter_flush_failures_total', "job"), "{{job}}")], "ops"),
    panel("DLQ messages/s", [target(rate("spillway_counter_dlq_messages_total", "topic, reason"), "{{topic}} {{reason}}")], "ops"),
]

BATCH_WRITER = [
    panel("Rows/s by sink", [target(rate("spillway_batch_writer_rows_total", "sink, outcome"), "{{sink}} {{outcome}}")], "rowsps"),
    panel("Rows per transaction", quantiles("spillway_batch_writer_batch_rows_bucket")),
    panel("Messages per batch by sink topic", [target(quantile(0.99, "spillway_batch_writer_batch_messages_bucket", "topic"), "{{topic}} p99")]),
    panel("Batch delay (acceptance to commit)", quantiles("spillway_batch_writer_commit_lag_seconds_bucket"), "s"),
    panel("Commit latency (one bulk transaction)", quantiles("spillway_batch_writer_commit_duration_seconds_bucket"), "s"),
    panel("Commits/s", [target("sum(rate(spillway_batch_writer_commit_duration_seconds_count[$__rate_interval]))", "commits")], "ops"),
    panel("DLQ messages/s", [target(rate("spillway_batch_writer_dlq_messages_total", "topic, reason"), "{{topic}} {{reason}}")], "ops"),
    panel("Commit failures/s", [target(rate("spillway_batch_writer_handler_failures_total", "topic"), "{{topic}}")], "ops",
          description="Failed bulk transactions (retried with backoff while the partitions are paused)."),
]

COPIES = "spillway_gateway_template_copies_total"
TEMPLATE_WARMUP = [
    panel("Pool fill by template", [target("sum by (template) (spillway_template_warmup_pool_ready) / sum by (template) (spillway_template_warmup_pool_capacity)", "{{template}}")], "percentunit"),
    panel("Ready copies and capacity", [
        target("sum by (template) (spillway_template_warmup_pool_ready)", "{{template}} ready"),
        target("sum by (template) (spillway_template_warmup_pool_capacity)", "{{template}} capacity"),
    ]),
    panel("Pool hit ratio (gateway copies served from the pool)", [target(
        rate(COPIES + '{source="pool"}') + " / " + rate(COPIES), "hit ratio")], "percentunit"),
    panel("Gateway copies/s by source and outcome", [target(rate(COPIES, "source, outcome"), "{{source}} {{outcome}}")], "ops"),
    panel("Gateway copy latency by source", quantiles("spillway_gateway_template_copy_duration_seconds_bucket", "source", "{{source}}"), "s"),
    panel("Warm-up copies/s by outcome", [target(rate("spillway_template_warmup_copies_total", "outcome"), "{{outcome}}")], "ops"),
    panel("Warm-up copy latency", quantiles("spillway_template_warmup_copy_duration_seconds_bucket"), "s"),
    panel("S3 calls in flight", [target("sum(spillway_template_warmup_s3_calls_in_flight)", "in flight")]),
    panel("Swept copies/s by reason", [target(zero_when_none(
        rate("spillway_template_warmup_swept_copies_total", "reason"), rate("spillway_template_warmup_copies_total")), "{{reason}}")], "ops",
          description="Copies the sweeper removed (ttl, retired, abandoned); 0 until the first sweep."),
    panel("Warm-up requests consumed/s", [target(rate("spillway_template_warmup_consumed_messages_total", "topic, outcome"), "{{topic}} {{outcome}}")], "ops"),
]

GATEWAY = [
    panel("Requests/s by route and status", [target(rate(REQUESTS, "route, method, status"), "{{method}} {{route}} {{status}}")], "reqps"),
    panel("Latency p99 by route", [target(quantile(0.99, "spillway_gateway_http_request_duration_seconds_bucket", "route, method"), "{{method}} {{route}}")], "s"),
    panel("Latency p50 by route", [target(quantile(0.5, "spillway_gateway_http_request_duration_seconds_bucket", "route, method"), "{{method}} {{route}}")], "s"),
    panel("Latency heatmap", [target("sum by (le) (increase(spillway_gateway_http_request_duration_seconds_bucket[$__rate_interval]))", "{{le}}")], "s", "heatmap"),
    panel("503s/s by route", [target(zero_when_none(
        rate(REQUESTS + '{status="503"}', "route"), rate(REQUESTS, "route")), "{{route}}")], "reqps",
          description="503: a dependency is down or the request deadline passed (Retry-After is set)."),
    panel("5xx ratio", [target(
        "(" + zero_when_none(rate(REQUESTS + '{status=~"5.."}'), rate(REQUESTS)) + ") / " + rate(REQUESTS), "5xx")], "percentunit"),
    panel("4xx/s by route and status", [target(zero_when_none(
        rate(REQUESTS + '{status=~"4.."}', "route, status"), rate(REQUESTS, "route")), "{{route}} {{status}}")], "reqps"),
    panel("Dependencies up", [target("min by (dependency) (spillway_gateway_dependency_up)", "{{dependency}}")], "short", "stat"),
]

VIEWS = "spillway_gateway_view_requests_total"
QUEUE_ROUTES = REQUESTS + '{route=~"/v1/queues/.*"}'
READS = [
    panel("View reads/s by view and cache outcome", [target(rate(VIEWS, "view, cache"), "{{view}} {{cache}}")], "reqps",
          description="hit: fresh from Redis; stale: served while one request reloads; miss: loaded by this request; collapsed: answered by another request's load; bypass: Redis down, read from the database."),
    panel("View hit ratio by view", [target(
        rate(VIEWS + '{cache=~"hit|stale"}', "view") + " / " + rate(VIEWS, "view"), "{{view}}")], "percentunit"),
    panel("View database loads/s by outcome", [target(rate("spillway_gateway_view_reloads_total", "view, outcome"), "{{view}} {{outcome}}")], "ops",
          description="One per key per reload whatever the load (single flight per gateway, a Redis lock across gateways); failed: the query failed or timed out."),
    panel("View load latency (query and store)", quantiles("spillway_gateway_view_reload_duration_seconds_bucket", "view", "{{view}}"), "s"),
    panel("View keys refreshed after commits/s", [target(rate("spillway_batch_writer_view_refreshes_total", "view, outcome"), "{{view}} {{outcome}}")], "ops",
          description="Keys of a view changed by a batch-writer commit: refreshed (reloaded), not_cached (a new generation only), superseded, failed (the write itself stood)."),
    panel("Waiting rooms: waiting and active by room", [
        target("max by (room) (spillway_gateway_queue_waiting)", "{{room}} waiting"),
        target("max by (room) (spillway_gateway_queue_active)", "{{room}} active"),
    ], description="As the last call on each gateway saw them; the room is the configured pattern (concert-*)."),
    panel("Waiting rooms: admitted in the last minute", [target("max by (room) (spillway_gateway_queue_admitted_last_minute)", "{{room}}")],
          description="Never above the room's admit_per_minute; the ETA given to waiters is computed from it."),
    panel("Waiting-room calls/s by route and status", [target(rate(QUEUE_ROUTES, "route, method, status"), "{{method}} {{route}} {{status}}")], "reqps",
          description="POST joins, GET polls (the heartbeat), DELETE leaves; 503 while a room is held after a Redis loss."),
    panel("Waiting-room call latency p99", [target(quantile(0.99, "spillway_gateway_http_request_duration_seconds_bucket" + '{route=~"/v1/queues/.*"}', "route, method"), "{{method}} {{route}}")], "s"),
]

KAFKA = [
    panel("Lag by group, topic and partition", [target(f"sum by (job, topic, partition) ({LAG})", "{{job}} {{topic}}/{{partition}}")],
          description="Each service consumes in its own group (spillway-counter, spillway-batch-writer, spillway-template-warmup by default)."),
    panel("Lag by group", [target(f"sum by (job) ({LAG})", "{{job}}")]),
    panel("Consumed messages/s by group and topic", [target(rate(CONSUMED, "job, topic, outcome"), "{{job}} {{topic}} {{outcome}}")], "ops"),
    panel("Handler failures/s by group", [target(rate(FAILURES, "job, topic"), "{{job}} {{topic}}")], "ops"),
    panel("Flush failures/s by group", [target(rate(FLUSH_FAILURES, "job"), "{{job}}")], "ops",
          description="A handler's flush (the counter's write-behind to the database) failed and is retried."),
    panel("DLQ messages/s by group", [target(rate(DLQ, "job, topic, reason"), "{{job}} {{topic}} {{reason}}")], "ops"),
    panel("Messages per batch by group (p50)", [target(quantile(0.5, '{__name__=~"spillway_.+_batch_messages_bucket"}', "job, topic"), "{{job}} {{topic}}")]),
    panel("Batch duration by group (p99)", [target(quantile(0.99, '{__name__=~"spillway_.+_batch_duration_seconds_bucket"}', "job, topic"), "{{job}} {{topic}}")], "s"),
]

DASHBOARDS = [
    ("spillway-overview", "spillway: overview", OVERVIEW),
    ("spillway-counters", "spillway: counters", COUNTERS),
    ("spillway-batch-writer", "spillway: batch-writer", BATCH_WRITER),
    ("spillway-template-warmup", "spillway: template warm-up", TEMPLATE_WARMUP),
    ("spillway-gateway", "spillway: gateway", GATEWAY),
    ("spillway-reads", "spillway: cached views and waiting rooms", READS),
    ("spillway-kafka-lag", "spillway: Kafka consumers", KAFKA),
]


def grafana_panel(index, spec):
    width, height = 12, 8
    body = {
        "id": index + 1,
        "type": spec["type"],
        "title": spec["title"],
        "description": spec["description"],
        "datasource": DS,
        "gridPos": {"h": height, "w": width, "x": (index % 2) * width, "y": (index // 2) * height},
        "fieldConfig": {"defaults": {"unit": spec["unit"]}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
        "targets": [
            {"refId": chr(ord("A") + n), "datasource": DS, "expr": t["expr"], "legendFormat": t["legendFormat"], "range": True}
            for n, t in enumerate(spec["targets"])
        ],
    }
    if spec["type"] == "heatmap":
        body["targets"][0]["format"] = "heatmap"
        body["options"] = {"calculate": False, "yAxis": {"unit": spec["unit"]}}
    return body


def dashboard(uid, title, panels):
    return {
        "uid": uid,
        "title": title,
        "tags": ["spillway"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{
            "name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": [],
        }]},
        "annotations": {"list": []},
        "links": [{"title": "spillway", "type": "dashboards", "tags": ["spillway"], "asDropdown": True}],
        "panels": [grafana_panel(i, p) for i, p in enumerate(panels)],
    }


def rendered():
    return {f"{uid}.json": json.dumps(dashboard(uid, title, panels), indent=2) + "\n" for uid, title, panels in DASHBOARDS}


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, text in rendered().items():
        path = HERE / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        sys.exit(f"out of date (run python3 deploy/grafana/generate.py): {', '.join(stale)}")
    print(("checked" if check else "wrote"), len(DASHBOARDS), "dashboards")


if __name__ == "__main__":
    main()
