//! `cargo xtask bench batch-writer`: rows from Kafka into PostgreSQL, against two baselines
//! measured in the same run: the seed's "before" (one INSERT per request, in the handler)
//! and the physical ceiling (`COPY` of the same rows straight into PostgreSQL).
//!
//! - per-row baseline: 100 clients, an HTTP handler doing one INSERT per request.
//! - spillway through the gateway: 100 clients POST, 202 once Kafka holds the row; the
//!   batch-writer commits in bulk. 202 -> committed is measured on sampled rows (20 ms polls).
//! - backlog drain: rows already in Kafka, written by a starting batch-writer (rows/s).
//! - COPY ceiling: the same number of rows by `COPY ... FROM STDIN`.
//! - bulk statements: which one statement per batch is faster here, on PostgreSQL alone, in
//!   transactions of 5,000 rows: the sink's `INSERT ... SELECT FROM UNNEST` of one text
//!   array per column, `INSERT ... SELECT FROM jsonb_to_recordset($1)` of one JSON
//!   parameter, or `COPY` into a temporary staging table then `INSERT ... SELECT`; all
//!   `ON CONFLICT DO NOTHING`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{App, HttpResponse, HttpServer, web};
use futures::future::join_all;
use prost::Message;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

use super::{Report, Samples, closed_loop};
use crate::{SAMPLE_SINKS, TestConfig, api::Api, db, kafka, spawn_batch_writer, spawn_gateway};

const CLIENTS: usize = 100;
const WRITES_PER_CLIENT: usize = 200;
const BACKLOG_ROWS: usize = 100_000;
const SAMPLE_EVERY: usize = 20;

pub async fn run() -> anyhow::Result<Report> {
    let mut report = Report::new("batch-writer");
    let config = TestConfig::new(SAMPLE_SINKS);
    let database = db::connect(&config).await;
    let gateway = spawn_gateway(&config).await;
    let writer = spawn_batch_writer(&config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));

    let naive = naive_server(&config).await?;
    let per_row = closed_loop(CLIENTS, WRITES_PER_CLIENT, move |client, i| {
        let url = format!("{naive}/naive/playlists");
        async move {
            let body = serde_json::json!({"member_id": format!("m{client}"), "title": format!("list {i}")});
            reqwest::Client::new().post(url).json(&body).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
        }
    })
    .await;
    let per_row_case = "per-row: one INSERT per request, in the handler";
    let per_row_summary = report.add(per_row_case, None, &per_row, "100 clients");

    let (accepted, committed, rows_per_second) = through_gateway(&api, &database).await?;
    let accept_summary = report.add(
        "spillway: POST /v1/writes/playlists (202)",
        Some(per_row_case),
        &accepted,
        "100 clients",
    );
    report.add(
        "spillway: 202 -> committed",
        None,
        &committed,
        &format!("1 in {SAMPLE_EVERY} rows sampled, 20 ms polls; batch 5000 rows or 100 ms"),
    );
    report.finding(
        "rows committed per second through the gateway (100 clients)",
        format!("{rows_per_second:.0}"),
    );
    let _ = accept_summary;

    drop(writer.stop().await);
    let drain = backlog_drain(&config, &database).await?;
    let drained = drain.steady_rows_per_second;
    let copy = copy_ceiling(&database).await?;
    report.finding(
        "backlog drain: Kafka -> PostgreSQL by the batch-writer",
        format!(
            "{drained:.0} rows/s from the first commit to the last ({BACKLOG_ROWS} rows); \
             {:.0} rows/s counting the start-up ({:.2} s to the first commit)",
            drain.with_start_rows_per_second, drain.start_seconds
        ),
    );
    report.finding("COPY ceiling, same rows", format!("{copy:.0} rows/s"));
    let statements = bulk_statements(&config, &database).await?;
    let versus_sink = |rate: f64| rate / statements.unnest.max(1e-9);
    report.finding(
        "bulk statement, 5,000-row transactions on PostgreSQL alone",
        format!(
            "INSERT ... SELECT FROM UNNEST(one text[] per column) ON CONFLICT (the sink's): {:.0} rows/s; \
             INSERT ... SELECT FROM jsonb_to_recordset($1) ON CONFLICT: {:.0} rows/s ({:.2}x); \
             COPY into a staging table then INSERT ... SELECT ... ON CONFLICT: {:.0} rows/s ({:.2}x)",
            statements.unnest,
            statements.json,
            versus_sink(statements.json),
            statements.staged,
            versus_sink(statements.staged),
        ),
    );
    report.finding(
        "batch-writer vs per-row baseline (rows/s)",
        format!(
            "{:.1}x (target >= 20x)",
            drained / per_row_summary.per_second.max(1e-9)
        ),
    );
    report.finding(
        "batch-writer vs COPY ceiling",
        format!("{:.0}% (target >= 50%)", 100.0 * drained / copy.max(1e-9)),
    );
    gateway.stop().await?;
    Ok(report)
}

/// The seed's before: a handler that inserts each playlist synchronously.
async fn naive_server(config: &TestConfig) -> anyhow::Result<String> {
    let database = db::connect(config).await;
    database
        .execute_unprepared(
            "CREATE TABLE naive_playlists (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), member_id text NOT NULL, \
             title text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let mut options = sea_orm::ConnectOptions::new(crate::stack::Stack::current().database_url);
    options
        .set_schema_search_path(config.schema.clone())
        .max_connections(20)
        .sqlx_logging(false);
    let pool = web::Data::new(sea_orm::Database::connect(options).await?);
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let address = format!("http://{}", listener.local_addr()?);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(pool.clone())
            .route("/naive/playlists", web::post().to(naive_insert))
    })
    .listen(listener)?
    .run();
    tokio::spawn(server);
    Ok(address)
}

async fn naive_insert(
    pool: web::Data<DatabaseConnection>,
    body: web::Json<serde_json::Value>,
) -> HttpResponse {
    let statement = Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO naive_playlists (member_id, title) VALUES ($1, $2)",
        [
            body["member_id"].as_str().unwrap_or("").into(),
            body["title"].as_str().unwrap_or("").into(),
        ],
    );
    match pool.execute_raw(statement).await {
        Ok(_) => HttpResponse::Ok().finish(),
        Err(error) => HttpResponse::InternalServerError().body(error.to_string()),
    }
}

/// 100 clients POST; returns the 202 latencies, the sampled 202 -> committed latencies and
/// the committed rows per second.
async fn through_gateway(
    api: &Api,
    database: &DatabaseConnection,
) -> anyhow::Result<(Samples, Samples, f64)> {
    let acked: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watcher = tokio::spawn(watch_commits(
        acked.clone(),
        database.clone(),
        CLIENTS * WRITES_PER_CLIENT / SAMPLE_EVERY,
    ));
    let started = Instant::now();
    let load_api = api.clone();
    let accepted = closed_loop(CLIENTS, WRITES_PER_CLIENT, move |client, i| {
        let (api, acked) = (load_api.clone(), acked.clone());
        async move {
            let body = serde_json::json!({"title": format!("list {i}"), "visibility": "public"});
            let (status, answer) = api.write("playlists", &format!("m{client}"), &body).await;
            if (client * WRITES_PER_CLIENT + i).is_multiple_of(SAMPLE_EVERY)
                && let Some(id) = answer["id"].as_str()
            {
                acked
                    .lock()
                    .expect("acked")
                    .insert(id.to_owned(), Instant::now());
            }
            status.as_u16()
        }
    })
    .await;
    let total = (CLIENTS * WRITES_PER_CLIENT) as i64;
    while db::scalar(database, "SELECT count(*) AS n FROM playlists", vec![]).await < total {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows_per_second = total as f64 / started.elapsed().as_secs_f64();
    let committed = watcher.await?;
    Ok((accepted, committed, rows_per_second))
}

async fn watch_commits(
    acked: Arc<Mutex<HashMap<String, Instant>>>,
    database: DatabaseConnection,
    expected: usize,
) -> Samples {
    let mut samples = Samples::default();
    let mut waiting: Vec<(String, Instant)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut seen = 0;
    while seen < expected && Instant::now() < deadline {
        waiting.extend(acked.lock().expect("acked").drain());
        if !waiting.is_empty() {
            let ids: Vec<String> = waiting.iter().map(|(id, _)| id.clone()).collect();
            let statement = Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT id::text AS id FROM playlists WHERE id IN (SELECT (jsonb_array_elements_text($1::jsonb))::uuid)",
                [serde_json::Value::from(ids).into()],
            );
            let found: std::collections::HashSet<String> = database
                .query_all_raw(statement)
                .await
                .map(|rows| {
                    rows.iter()
                        .filter_map(|row| row.try_get::<String>("", "id").ok())
                        .collect()
                })
                .unwrap_or_default();
            let now = Instant::now();
            waiting.retain(|(id, acked_at)| {
                if found.contains(id) {
                    samples.record(now.saturating_duration_since(*acked_at));
                    seen += 1;
                    false
                } else {
                    true
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    samples
}

/// Rows put in Kafka first; a fresh batch-writer writes them; rows per second.
/// How fast a backlog drained: steadily, and counting the batch-writer's start-up.
struct Drain {
    steady_rows_per_second: f64,
    with_start_rows_per_second: f64,
    start_seconds: f64,
}

async fn backlog_drain(
    config: &TestConfig,
    database: &DatabaseConnection,
) -> anyhow::Result<Drain> {
    database.execute_unprepared("TRUNCATE playlists").await?;
    let topic = format!("{}.writes.playlists.v1", config.id);
    let producer = kafka::producer();
    let ids: Vec<String> = (0..BACKLOG_ROWS)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    for chunk in ids.chunks(5_000) {
        let sends = chunk.iter().enumerate().map(|(i, id)| {
            let row = serde_json::json!({"id": id, "member_id": "bench", "title": format!("backlog {i}"), "visibility": "public"});
            let event = spillway_core::wire::WriteEvent {
                event_id: uuid::Uuid::new_v4().to_string(),
                accepted_at: Some(spillway_core::wire::now()),
                request_id: "bench".into(),
                sink: "playlists".into(),
                row_id: id.clone(),
                operation: spillway_core::wire::WriteOperation::Upsert as i32,
                row: Some(spillway_core::sinks::to_struct(row.as_object().expect("object"))),
                pending_marker: false,
            };
            let (producer, topic) = (producer.clone(), topic.clone());
            async move { kafka::publish(&producer, &topic, id, &event.encode_to_vec(), &[]).await }
        });
        join_all(sends).await;
    }
    // A new consumer group so the backlog is read from the start.
    let fresh = config.with_group_suffix("drain");
    let started = Instant::now();
    let writer = spawn_batch_writer(&fresh).await;
    let mut first_commit: Option<(Instant, i64)> = None;
    loop {
        let rows = db::scalar(database, "SELECT count(*) AS n FROM playlists", vec![]).await;
        if rows > 0 && first_commit.is_none() {
            first_commit = Some((Instant::now(), rows));
        }
        if rows >= BACKLOG_ROWS as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let finished = Instant::now();
    writer.stop().await?;
    let (first_at, first_rows) = first_commit.expect("rows were committed");
    Ok(Drain {
        steady_rows_per_second: (BACKLOG_ROWS as i64 - first_rows) as f64
            / (finished - first_at).as_secs_f64(),
        with_start_rows_per_second: BACKLOG_ROWS as f64 / (finished - started).as_secs_f64(),
        start_seconds: (first_at - started).as_secs_f64(),
    })
}

/// `COPY` of the same number of rows into a copy of the table.
async fn copy_ceiling(database: &DatabaseConnection) -> anyhow::Result<f64> {
    database
        .execute_unprepared("CREATE TABLE copy_playlists (LIKE playlists INCLUDING ALL)")
        .await?;
    let mut csv = String::with_capacity(BACKLOG_ROWS * 80);
    for i in 0..BACKLOG_ROWS {
        csv.push_str(&format!(
            "{},bench,backlog {i},public\n",
            uuid::Uuid::now_v7()
        ));
    }
    let took = copy_in(
        database,
        "COPY copy_playlists (id, member_id, title, visibility) FROM STDIN (FORMAT csv)",
        csv.as_bytes(),
    )
    .await?;
    Ok(BACKLOG_ROWS as f64 / took.as_secs_f64())
}

/// Runs one `COPY ... FROM STDIN` statement with `data`; how long it took, connecting
/// included (also the baseline of `bench peers`).
pub(super) async fn copy_in(
    database: &DatabaseConnection,
    statement: &str,
    data: &[u8],
) -> anyhow::Result<Duration> {
    let pool = database.get_postgres_connection_pool();
    let started = Instant::now();
    let mut connection = pool.acquire().await?;
    let mut copy = connection.copy_in_raw(statement).await?;
    copy.send(data).await?;
    copy.finish().await?;
    Ok(started.elapsed())
}

const STATEMENT_BATCH_ROWS: usize = 5_000;

/// Rows per second of each bulk statement over the same `BACKLOG_ROWS` rows, each batch one
/// transaction into its own copy of the sink's table.
struct StatementRates {
    /// The sink's own statement: `INSERT ... SELECT FROM UNNEST` of one text array per column.
    unnest: f64,
    json: f64,
    staged: f64,
}

type BenchRow = serde_json::Map<String, serde_json::Value>;
type PgConnection = sea_orm::sqlx::pool::PoolConnection<sea_orm::sqlx::Postgres>;

async fn bulk_statements(
    config: &TestConfig,
    database: &DatabaseConnection,
) -> anyhow::Result<StatementRates> {
    for table in ["stmt_unnest", "stmt_json", "stmt_staged"] {
        database
            .execute_unprepared(&format!(
                "CREATE TABLE {table} (LIKE playlists INCLUDING ALL)"
            ))
            .await?;
    }
    let sink = &config.settings().sinks["playlists"];
    let rows: Vec<BenchRow> = (0..BACKLOG_ROWS)
        .map(|i| {
            let row = serde_json::json!({"id": uuid::Uuid::now_v7(), "member_id": "bench",
                "title": format!("backlog {i}"), "visibility": "public",
                "created_at": "2026-11-25T00:00:00Z"});
            row.as_object().cloned().unwrap_or_default()
        })
        .collect();
    let pool = database.get_postgres_connection_pool();
    let mut connection = pool.acquire().await?;
    Ok(StatementRates {
        unnest: rate(sink_statement(&mut connection, sink, &rows)).await?,
        json: rate(json_statement(&mut connection, &rows)).await?,
        staged: rate(staged_statement(&mut connection, &rows)).await?,
    })
}

/// Rows per second of `BACKLOG_ROWS` rows written by `write`.
async fn rate(write: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<f64> {
    let started = Instant::now();
    write.await?;
    Ok(BACKLOG_ROWS as f64 / started.elapsed().as_secs_f64())
}

/// The sink's own statement and parameters, as the batch-writer builds them.
async fn sink_statement(
    connection: &mut PgConnection,
    sink: &spillway_core::sinks::SinkSettings,
    rows: &[BenchRow],
) -> anyhow::Result<()> {
    let insert = sink
        .insert_sql()
        .replace("\"playlists\"", "\"stmt_unnest\"");
    for batch in rows.chunks(STATEMENT_BATCH_ROWS) {
        let batch: Vec<&BenchRow> = batch.iter().collect();
        let mut transaction = sea_orm::sqlx::Connection::begin(&mut **connection).await?;
        let mut query = sea_orm::sqlx::query(sea_orm::sqlx::AssertSqlSafe(insert.as_str()));
        for column in sink.column_arrays(&batch) {
            query = query.bind(column);
        }
        query.execute(&mut *transaction).await?;
        transaction.commit().await?;
    }
    Ok(())
}

/// One JSON parameter: `INSERT ... SELECT FROM jsonb_to_recordset($1) ON CONFLICT` (the
/// sink's statement until 2026-11-29).
async fn json_statement(connection: &mut PgConnection, rows: &[BenchRow]) -> anyhow::Result<()> {
    for batch in rows.chunks(STATEMENT_BATCH_ROWS) {
        let mut transaction = sea_orm::sqlx::Connection::begin(&mut **connection).await?;
        sea_orm::sqlx::query(
            "INSERT INTO stmt_json (id, member_id, title, visibility, created_at) \
             SELECT id, member_id, title, visibility, created_at FROM jsonb_to_recordset($1::jsonb) \
             AS x(id uuid, member_id text, title text, visibility text, created_at timestamptz) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(serde_json::to_value(batch)?)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
    }
    Ok(())
}

/// `COPY` into a temporary staging table, then `INSERT ... SELECT ... ON CONFLICT`.
async fn staged_statement(connection: &mut PgConnection, rows: &[BenchRow]) -> anyhow::Result<()> {
    for batch in rows.chunks(STATEMENT_BATCH_ROWS) {
        let mut csv = String::with_capacity(batch.len() * 80);
        for row in batch {
            let (id, title) = (&row["id"], &row["title"]);
            csv.push_str(&format!(
                "{},bench,{},public,2026-11-25T00:00:00Z\n",
                id.as_str().unwrap_or_default(),
                title.as_str().unwrap_or_default()
            ));
        }
        let mut transaction = sea_orm::sqlx::Connection::begin(&mut **connection).await?;
        sea_orm::sqlx::query(
            "CREATE TEMP TABLE staging (LIKE stmt_staged INCLUDING DEFAULTS) ON COMMIT DROP",
        )
        .execute(&mut *transaction)
        .await?;
        let mut copy = transaction
            .copy_in_raw(
                "COPY staging (id, member_id, title, visibility, created_at) FROM STDIN (FORMAT csv)",
            )
            .await?;
        copy.send(csv.as_bytes()).await?;
        copy.finish().await?;
        sea_orm::sqlx::query(
            "INSERT INTO stmt_staged SELECT * FROM staging ON CONFLICT (id) DO NOTHING",
        )
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
    }
    Ok(())
}
