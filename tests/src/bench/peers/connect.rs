//! The Kafka Connect peer: `ConnectStandalone` with the Debezium JDBC sink connector
//! (3 tasks, batches of 5,000, upsert by `id`) reading the writes topic into a table of its
//! own. The value converter applies a fixed schema to spillway's JSON write event
//! (`schema.content`, Kafka 4) and the `ExtractField` transform keeps its `row`, so the
//! connector reads the very messages the batch-writer reads.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sea_orm::DatabaseConnection;

use super::{
    Drain, Progress, RowsTarget,
    jvm::{Artifacts, JavaProcess},
};
use crate::bench::cpu::CpuMeter;
use crate::stack::Stack;

const MAIN_CLASS: &str = "org.apache.kafka.connect.cli.ConnectStandalone";
const CONNECTOR_CLASS: &str = "io.debezium.connector.jdbc.JdbcSinkConnector";
const TASKS: usize = 3;
const BATCH_ROWS: usize = 5_000;
const CASE_TIMEOUT: Duration = Duration::from_secs(600);

/// The Connect schema of spillway's write event as it travels in JSON: the envelope's
/// fields, and the row of this benchmark's table.
const WRITE_EVENT_SCHEMA: &str = r#"{"type":"struct","optional":false,"fields":[{"field":"eventId","type":"string","optional":true},{"field":"sink","type":"string","optional":true},{"field":"rowId","type":"string","optional":true},{"field":"operation","type":"string","optional":true},{"field":"row","type":"struct","optional":false,"fields":[{"field":"id","type":"int64","optional":false},{"field":"member","type":"string","optional":false},{"field":"body","type":"string","optional":false},{"field":"created_ms","type":"int64","optional":false}]}]}"#;

/// One Connect run: `topic` into `target`'s table.
pub struct ConnectCase<'a> {
    pub artifacts: &'a Artifacts,
    pub topic: &'a str,
    pub schema: &'a str,
    pub target: RowsTarget<'a>,
    /// `dialect.postgres.unnest.insert.enabled`: one `INSERT ... SELECT FROM UNNEST` per
    /// batch instead of JDBC batching of one statement per row (off by default).
    pub unnest: bool,
    /// Unique per run: the connector's name (its consumer group is `connect-<name>`).
    pub name: String,
}

/// Runs a standalone worker with the connector until the table holds every row.
pub async fn sink(case: ConnectCase<'_>, database: &DatabaseConnection) -> anyhow::Result<Drain> {
    let dir = tempfile::tempdir()?;
    let rest_port = free_port()?;
    let worker = dir.path().join("worker.properties");
    let connector = dir.path().join("connector.properties");
    let log4j = dir.path().join("log4j2.properties");
    std::fs::write(&worker, worker_properties(&case, dir.path(), rest_port))?;
    std::fs::write(&connector, connector_properties(&case)?)?;
    std::fs::write(&log4j, LOG4J2)?;
    let started = Instant::now();
    let mut peer = JavaProcess::spawn(
        "kafka-connect peer",
        &case.artifacts.connect_classpath,
        &[
            "-Xms256m".into(),
            "-Xmx1g".into(),
            format!("-Dlog4j2.configurationFile={}", log4j.display()),
        ],
        MAIN_CLASS,
        &[
            worker.display().to_string(),
            connector.display().to_string(),
        ],
        &dir.path().join("kafka-connect.log"),
    )?;
    let meter = CpuMeter::start(peer.pid().unwrap_or(0));
    let status_url = format!(
        "http://127.0.0.1:{rest_port}/connectors/{}/status",
        case.name
    );
    let deadline = started + CASE_TIMEOUT;
    let outcome = super::wait_for_rows(
        database,
        &case.target,
        Progress::new(started),
        deadline,
        async || {
            peer.check_alive()?;
            check_tasks(&status_url).await
        },
    )
    .await;
    let cpu = meter.stop();
    peer.stop(Duration::from_secs(15)).await;
    let (progress, finished) = outcome?;
    Ok(progress.finish(finished, case.target.rows, cpu))
}

fn worker_properties(case: &ConnectCase<'_>, dir: &std::path::Path, rest_port: u16) -> String {
    format!(
        "bootstrap.servers={kafka}
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
value.converter.schemas.enable=true
value.converter.schema.content={WRITE_EVENT_SCHEMA}
offset.storage.file.filename={offsets}
offset.flush.interval.ms=10000
plugin.path={plugins}
listeners=http://127.0.0.1:{rest_port}
consumer.max.poll.records={BATCH_ROWS}
",
        kafka = Stack::current().kafka,
        offsets = dir.join("offsets").display(),
        plugins = case.artifacts.connect_plugin_path.display(),
    )
}

fn connector_properties(case: &ConnectCase<'_>) -> anyhow::Result<String> {
    let database =
        reqwest::Url::parse(&Stack::current().database_url).context("DATABASE_URL is not a URL")?;
    Ok(format!(
        "name={name}
connector.class={CONNECTOR_CLASS}
tasks.max={TASKS}
topics={topic}
connection.url=jdbc:postgresql://{host}:{port}{path}?currentSchema={schema}
connection.username={user}
connection.password={password}
insert.mode=upsert
primary.key.mode=record_value
primary.key.fields=id
batch.size={BATCH_ROWS}
schema.evolution=none
collection.name.format={schema}.{table}
dialect.postgres.unnest.insert.enabled={unnest}
transforms=row
transforms.row.type=org.apache.kafka.connect.transforms.ExtractField$Value
transforms.row.field=row
",
        name = case.name,
        topic = case.topic,
        host = database.host_str().unwrap_or("127.0.0.1"),
        port = database.port().unwrap_or(5432),
        path = database.path(),
        schema = case.schema,
        user = database.username(),
        password = database.password().unwrap_or_default(),
        table = case.target.table,
        unnest = case.unnest,
    ))
}

/// Fails when the connector or one of its tasks has FAILED (with its trace); a REST API
/// that does not answer yet is not a failure.
async fn check_tasks(status_url: &str) -> anyhow::Result<()> {
    let Ok(response) = reqwest::get(status_url).await else {
        return Ok(());
    };
    let Ok(status) = response.json::<serde_json::Value>().await else {
        return Ok(());
    };
    let failed = std::iter::once(&status["connector"])
        .chain(status["tasks"].as_array().into_iter().flatten())
        .find(|part| part["state"] == "FAILED");
    if let Some(part) = failed {
        bail!(
            "the Debezium JDBC sink failed: {}",
            part["trace"].as_str().unwrap_or("no trace")
        );
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Warnings to stderr (the log file), and the connector's own start and task lines.
const LOG4J2: &str = "status = error
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.err.ref = STDERR
logger.debezium.name = io.debezium.connector.jdbc
logger.debezium.level = info
";
