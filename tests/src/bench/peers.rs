//! `cargo xtask bench peers`: what users would pick instead of spillway, run side by side
//! with spillway's consumers on the same broker, the same PostgreSQL and the same events.
//!
//! - Counting: 500,000 increments of 1 on 10,000 Pareto-skewed keys (Zipf, exponent 1),
//!   then on 100,000 uniform keys, each in a fresh topic of 3 partitions. The peer is a Kafka Streams application of
//!   ours (`tests/peers/kafka-streams`: `groupByKey().reduce(sum)`, `exactly_once_v2`), done
//!   when its committed output adds up to the events; spillway's counter is done when
//!   `counter_values` does.
//! - Landing rows: 600,000 rows (id, member, 120-byte body, created_ms) into PostgreSQL,
//!   upserted by `id`. The peer is Kafka Connect with the Debezium JDBC sink (3 tasks,
//!   batches of 5,000), once with its defaults and once with its PostgreSQL UNNEST insert;
//!   spillway's batch-writer has batches of 5,000 too. Done when the table holds every row.
//!   Bare `COPY` of the same rows is the baseline.
//!
//! Every consumer starts on a topic that already holds all its events (a backlog), one after
//! the other, never two at once, the peer first. Two rates each: from the consumer's start
//! (JVM, group join and first commit included) to exact, and steady, from the first durable
//! output to exact. Both sides must end exact (sum == events; rows == sent, same checksum),
//! else the benchmark fails. The JVM peers are fetched and built by Maven into the cache
//! once ([`jvm`]); the CPU each case used is read from `/proc` ([`cpu`]).

mod connect;

mod jvm;
mod streams;
mod workload;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sea_orm::{ConnectionTrait, DatabaseConnection};

use self::workload::{CounterWorkload, KeyDistribution};
use super::cpu::{CpuMeter, CpuSplit};
use super::{Comparison, Report};
use crate::{TestConfig, db, spawn_batch_writer, spawn_counter};

const COUNTER_EVENTS: usize = 500_000;
const SKEWED_KEYS: usize = 10_000;
const UNIFORM_KEYS: usize = 100_000;
const WRITE_ROWS: usize = 600_000;
const DEFAULT_STREAMS_THREADS: usize = 2;
const SINK: &str = "peer_rows";
const SPILLWAY_TABLE: &str = "spillway_rows";
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const CASE_TIMEOUT: Duration = Duration::from_secs(600);

/// The command line after `bench peers`.
#[derive(Debug, Clone)]
struct Options {
    /// Multiplies every workload's size (a quick try: `--scale 0.05`).
    scale: f64,
    streams_threads: usize,
    /// The cases to run (`--only zipf,uniform,writes`; all by default).
    cases: Vec<Case>,
    /// `--peers skip`: spillway's side only, to try a change of spillway's quickly.
    with_peers: bool,
    /// `--counter-flush MS,ENTITIES`: the counter's write-behind tuning instead of the
    /// shipped one (`counter.flush_interval_ms`, `counter.flush_max_entities`).
    counter_flush: Option<(u64, usize)>,
    /// `--counter-batch N`: the counter's consumer batch size instead of the shipped one
    /// (`counter.batch_max_events`).
    counter_batch: Option<usize>,
}

/// One case of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Zipf,
    Uniform,
    Writes,
}

impl Case {
    const ALL: [Case; 3] = [Case::Zipf, Case::Uniform, Case::Writes];

    fn parse(word: &str) -> anyhow::Result<Self> {
        match word {
            "zipf" => Ok(Case::Zipf),
            "uniform" => Ok(Case::Uniform),
            "writes" => Ok(Case::Writes),
            other => bail!("unknown case {other}; known: zipf, uniform, writes"),
        }
    }
}

impl Options {
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut options = Self {
            scale: 1.0,
            streams_threads: DEFAULT_STREAMS_THREADS,
            cases: Case::ALL.to_vec(),
            with_peers: true,
            counter_flush: None,
            counter_batch: None,
        };
        let mut words = args.iter();
        while let Some(word) = words.next() {
            let value = words
                .next()
                .with_context(|| format!("{word} needs a value"))?;
            match word.as_str() {
                "--scale" => options.scale = value.parse().context("--scale")?,
                "--streams-threads" => {
                    options.streams_threads = value.parse().context("--streams-threads")?
                }
                "--only" => {
                    options.cases = value
                        .split(',')
                        .map(Case::parse)
                        .collect::<Result<_, _>>()?
                }
                "--counter-flush" => {
                    let (ms, entities) = value
                        .split_once(',')
                        .context("--counter-flush takes MS,ENTITIES")?;
                    options.counter_flush = Some((
                        ms.parse().context("--counter-flush MS")?,
                        entities.parse().context("--counter-flush ENTITIES")?,
                    ));
                }
                "--counter-batch" => {
                    options.counter_batch = Some(value.parse().context("--counter-batch N")?)
                }
                "--peers" => match value.as_str() {
                    "run" => options.with_peers = true,
                    "skip" => options.with_peers = false,
                    other => bail!("--peers {other}: known: run, skip"),
                },
                other => bail!(
                    "unknown option {other}; known: --scale F, --streams-threads N, --only zipf,uniform,writes, --peers run|skip, --counter-flush MS,ENTITIES, --counter-batch N"
                ),
            }
        }
        Ok(options)
    }

    fn scaled(&self, size: usize) -> usize {
        ((size as f64 * self.scale) as usize).max(1_000)
    }
}

pub async fn run(args: &[String]) -> anyhow::Result<Report> {
    let options = Options::parse(args)?;
    let mut report = Report::new("peers");
    report.finding(
        "load average before the run (1, 5, 15 min)",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    let artifacts = if options.with_peers {
        Some(tokio::task::spawn_blocking(jvm::prepare).await??)
    } else {
        None
    };
    for (case, distribution, keys) in [
        (Case::Zipf, KeyDistribution::Zipf, SKEWED_KEYS),
        (Case::Uniform, KeyDistribution::Uniform, UNIFORM_KEYS),
    ] {
        if !options.cases.contains(&case) {
            continue;
        }
        let workload = CounterWorkload {
            namespace: format!("peer-{}", distribution_name(distribution)),
            keys: options.scaled(keys),
            events: options.scaled(COUNTER_EVENTS),
            distribution,
        };
        counters(&mut report, artifacts.as_ref(), &options, &workload).await?;
    }
    if options.cases.contains(&Case::Writes) {
        writes(&mut report, artifacts.as_ref(), options.scaled(WRITE_ROWS)).await?;
    }
    Ok(report)
}

fn distribution_name(distribution: KeyDistribution) -> &'static str {
    match distribution {
        KeyDistribution::Zipf => "zipf",
        KeyDistribution::Uniform => "uniform",
    }
}

/// Kafka Streams then spillway's counter on the same topic of `workload`'s events.
async fn counters(
    report: &mut Report,
    artifacts: Option<&jvm::Artifacts>,
    options: &Options,
    workload: &CounterWorkload,
) -> anyhow::Result<()> {
    let mut config = TestConfig::new(&format!(
        "[namespaces.{}]\nkind = \"sum\"\n",
        workload.namespace
    ))
    .with_shipped_tuning();
    if let Some((interval_ms, max_entities)) = options.counter_flush {
        config = config.with_counter_flush(interval_ms, max_entities);
    }
    if let Some(batch_size) = options.counter_batch {
        config = config.with_counter_batch(batch_size);
    }
    let records = workload.records();
    let keys_used = records
        .iter()
        .map(|record| record.key.as_str())
        .collect::<std::collections::HashSet<_>>()
        .len();
    let work = format!(
        "{} increments, {} keys ({}), start to exact",
        thousands(workload.events),
        thousands(workload.keys),
        distribution_name(workload.distribution)
    );
    eprintln!("peers: publishing {work}");
    workload::create_topic(&config.counter_topic).await?;
    workload::publish(&config.counter_topic, &records).await?;

    let peer = match artifacts {
        Some(artifacts) => {
            eprintln!("peers: Kafka Streams counting");
            let case = streams::StreamsCase {
                artifacts,
                input: &config.counter_topic,
                expected_sum: workload.expected_sum(),
                threads: options.streams_threads,
                application_id: format!("{}-streams", config.id),
            };
            Some(streams::count(case).await?)
        }
        None => None,
    };
    eprintln!("peers: spillway's counter counting");
    let (spillway, split) = spillway_counter(&config, workload, keys_used).await?;
    // Kafka Streams' exactly-once is by offsets only: an event published twice counts twice.
    // spillway also remembers every event id for a day by default; without that window it
    // gives the peer's guarantee, on the same topic from the start.
    eprintln!("peers: spillway's counter counting, dedupe_window_seconds = 0");
    let offsets_only = config.with_namespace_line_apart(
        &workload.namespace,
        "dedupe_window_seconds = 0",
        "offsets-only",
    );
    forget_counts(&config).await?;
    let (spillway_offsets_only, split_offsets_only) =
        spillway_counter(&offsets_only, workload, keys_used).await?;

    let peer_name = format!(
        "Kafka Streams 4.4, exactly_once_v2, {} stream threads",
        options.streams_threads
    );
    compare(
        report,
        &work,
        &peer_name,
        peer.as_ref(),
        &spillway,
        "events",
    );
    compare(
        report,
        &format!("{work}, spillway without the event-id window (offsets only, as the peer)"),
        &peer_name,
        peer.as_ref(),
        &spillway_offsets_only,
        "events",
    );
    report.finding(
        &format!("{work}: spillway's counter time"),
        split.describe(&spillway),
    );
    report.finding(
        &format!("{work}: spillway's counter time, offsets only"),
        split_offsets_only.describe(&spillway_offsets_only),
    );
    report.finding(
        &format!("{work}: hottest key's share of the events"),
        format!(
            "{:.1}% ({keys_used} keys drawn)",
            100.0 * workload::hottest_key_share(&records)
        ),
    );
    Ok(())
}

/// Empties the counter tables of `config`'s schema, for a second counter run on the same
/// events.
async fn forget_counts(config: &TestConfig) -> anyhow::Result<()> {
    let database = db::connect(config).await;
    database
        .execute_unprepared("TRUNCATE counter_values, counter_members, counter_recent_events")
        .await?;
    Ok(())
}

/// spillway's counter, in this process, from its build until `counter_values` is exact.
async fn spillway_counter(
    config: &TestConfig,
    workload: &CounterWorkload,
    keys_used: usize,
) -> anyhow::Result<(Drain, TimeSplit)> {
    let database = db::connect(config).await;
    let started = Instant::now();
    let meter = CpuMeter::start(std::process::id());
    let counter = spawn_counter(config).await;
    let outcome = wait_for_sum(
        &database,
        &workload.namespace,
        workload.expected_sum(),
        Progress::new(started),
    )
    .await;
    let cpu = meter.stop();
    let split = TimeSplit::of(&counter.metrics().await, "counter", "flush", "flushes");
    counter.stop().await?;
    let (progress, finished) = outcome?;
    let rows = db::scalar(
        &database,
        "SELECT count(*) AS n FROM counter_values WHERE namespace = $1",
        vec![workload.namespace.clone().into()],
    )
    .await;
    if rows != keys_used as i64 {
        bail!("counter_values has {rows} counters, the events named {keys_used}");
    }
    let drain = progress.finish(finished, workload.expected_sum() as u64, cpu);
    Ok((drain, split))
}

/// Where a consumer's time went, from its own metrics, in seconds: handling batches (decode
/// excluded; the counter's apply to Redis and loads of cold counters, the batch-writer's
/// whole write) and the part of it (batch-writer: the commits) or after it (counter: the
/// flushes to PostgreSQL) that its `<stage>_duration_seconds` histogram times.
#[derive(Debug, Clone)]
struct TimeSplit {
    /// What the stage's calls are called: `flushes`, `commits`.
    calls: &'static str,
    batches: f64,
    stage_seconds: f64,
    stage_count: f64,
}

impl TimeSplit {
    fn of(metrics: &str, service: &str, stage: &str, calls: &'static str) -> Self {
        let sum = |name: &str| -> f64 {
            metrics
                .lines()
                .filter(|line| line.starts_with(name))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        Self {
            calls,
            batches: sum(&format!("spillway_{service}_batch_duration_seconds_sum")),
            stage_seconds: sum(&format!("spillway_{service}_{stage}_duration_seconds_sum")),
            stage_count: sum(&format!(
                "spillway_{service}_{stage}_duration_seconds_count"
            )),
        }
    }

    fn describe(&self, drain: &Drain) -> String {
        format!(
            "of {:.1} s from start: {:.1} s handling batches, {:.1} s in {:.0} {}",
            drain.from_start.as_secs_f64(),
            self.batches,
            self.stage_seconds,
            self.stage_count,
            self.calls
        )
    }
}

/// The table of a rows case and what it must hold at the end.
pub struct RowsTarget<'a> {
    pub table: &'a str,
    pub rows: u64,
    /// The last id published to each partition: present means done for an in-order
    /// consumer, so polls look up three keys instead of counting the table.
    pub tail_ids: &'a [String],
    pub created_ms_sum: i64,
}

/// The Debezium JDBC sink (defaults, then UNNEST), the batch-writer and `COPY`, each into
/// its own table of the same shape, on the same topic.
async fn writes(
    report: &mut Report,
    artifacts: Option<&jvm::Artifacts>,
    row_count: usize,
) -> anyhow::Result<()> {
    let config = TestConfig::new(&sink_toml()).with_shipped_tuning();
    let database = db::connect(&config).await;
    let topic = config.settings().kafka.writes_topic(SINK);
    let rows = workload::rows(row_count);
    let work = format!("{} rows upserted into PostgreSQL", thousands(row_count));
    eprintln!("peers: publishing {work}");
    workload::create_topic(&topic).await?;
    let published = workload::publish(&topic, &workload::write_records(SINK, &rows)).await?;
    let created_ms_sum = rows.iter().map(|row| row.created_ms).sum();
    let target = |table| RowsTarget {
        table,
        rows: row_count as u64,
        tail_ids: &published.last_key_per_partition,
        created_ms_sum,
    };
    let sink = &config.settings().sinks[SINK];
    for table in ["connect_rows", "connect_unnest_rows", "copy_rows"] {
        database
            .execute_unprepared(
                &sink
                    .create_table_sql()
                    .replace(&format!("\"{SPILLWAY_TABLE}\""), &format!("\"{table}\"")),
            )
            .await?;
    }

    let mut peers = Vec::new();
    for (table, unnest) in [("connect_rows", false), ("connect_unnest_rows", true)] {
        let Some(artifacts) = artifacts else { break }; // --peers skip
        eprintln!("peers: Kafka Connect + Debezium JDBC sink (unnest {unnest})");
        let drain = connect::sink(
            connect::ConnectCase {
                artifacts,
                topic: &topic,
                schema: &config.schema,
                target: target(table),
                unnest,
                name: format!("{}-{table}", config.id),
            },
            &database,
        )
        .await?;
        peers.push((unnest, drain));
    }
    eprintln!("peers: spillway's batch-writer");
    let (spillway, split) =
        spillway_batch_writer(&config, &database, target(SPILLWAY_TABLE)).await?;
    report.finding(
        &format!("{work}: the batch-writer's time"),
        split.describe(&spillway),
    );
    if peers.is_empty() {
        compare(report, &work, "", None, &spillway, "rows");
    }
    for (unnest, peer) in &peers {
        let peer_name = format!(
            "Kafka Connect 4.4 + Debezium JDBC sink 3.6, 3 tasks, batch 5,000, {}",
            if *unnest {
                "dialect.postgres.unnest.insert.enabled"
            } else {
                "defaults (JDBC batches)"
            }
        );
        compare(report, &work, &peer_name, Some(peer), &spillway, "rows");
    }

    let took = super::writes::copy_in(
        &database,
        "COPY copy_rows (id, member, body, created_ms) FROM STDIN (FORMAT csv)",
        workload::rows_csv(&rows).as_bytes(),
    )
    .await?;
    check_rows(&database, &target("copy_rows")).await?;
    report.compare(Comparison {
        work: format!("{work}, steady"),
        peer: "bare COPY into an empty table (baseline: no Kafka, no upsert)".into(),
        peer_rate: row_count as f64 / took.as_secs_f64(),
        spillway_rate: spillway.steady_rate(),
        unit: "rows".into(),
        note: "spillway: the batch-writer's steady rate".into(),
    });
    Ok(())
}

fn sink_toml() -> String {
    format!(
        r#"
[sinks.{SINK}]
table = "{SPILLWAY_TABLE}"
primary_key = "id"
on_conflict = "upsert"
upsert_columns = ["member", "body", "created_ms"]
batch_max_rows = 5000
batch_max_delay_ms = 100
[sinks.{SINK}.columns]
id = {{ type = "bigint" }}
member = {{ type = "text" }}
body = {{ type = "text" }}
created_ms = {{ type = "bigint" }}
"#
    )
}

/// spillway's batch-writer, in this process, from its build until its table holds every row.
async fn spillway_batch_writer(
    config: &TestConfig,
    database: &DatabaseConnection,
    target: RowsTarget<'_>,
) -> anyhow::Result<(Drain, TimeSplit)> {
    let started = Instant::now();
    let meter = CpuMeter::start(std::process::id());
    let writer = spawn_batch_writer(config).await;
    let outcome = wait_for_rows(
        database,
        &target,
        Progress::new(started),
        started + CASE_TIMEOUT,
        async || Ok(()),
    )
    .await;
    let cpu = meter.stop();
    let split = TimeSplit::of(&writer.metrics().await, "batch_writer", "commit", "commits");
    writer.stop().await?;
    let (progress, finished) = outcome?;
    Ok((progress.finish(finished, target.rows, cpu), split))
}

/// Two comparison lines (from start, steady) and the case's start-up and CPU as findings.
fn compare(
    report: &mut Report,
    work: &str,
    peer_name: &str,
    peer: Option<&Drain>,
    spillway: &Drain,
    unit: &str,
) {
    let Some(peer) = peer else {
        report.finding(
            &format!("{work}: spillway alone (peers skipped)"),
            format!(
                "{:.0} {unit}/s from start, {:.0} {unit}/s steady, first output after {:.1} s; CPU, average cores busy: {}",
                spillway.rate_from_start(),
                spillway.steady_rate(),
                spillway.to_first.as_secs_f64(),
                spillway.cpu
            ),
        );
        return;
    };
    let note = |what: &str| {
        format!(
            "{what}; first output after {:.1} s (peer) / {:.1} s (spillway)",
            peer.to_first.as_secs_f64(),
            spillway.to_first.as_secs_f64()
        )
    };
    report.compare(Comparison {
        work: work.to_owned(),
        peer: peer_name.to_owned(),
        peer_rate: peer.rate_from_start(),
        spillway_rate: spillway.rate_from_start(),
        unit: unit.to_owned(),
        note: note("from the consumer's start to exact"),
    });
    report.compare(Comparison {
        work: format!("{work}, steady"),
        peer: peer_name.to_owned(),
        peer_rate: peer.steady_rate(),
        spillway_rate: spillway.steady_rate(),
        unit: unit.to_owned(),
        note: "from the first durable output to exact".into(),
    });
    report.finding(
        &format!("{work} / {peer_name}: CPU, average cores busy"),
        format!("peer: {}; spillway: {}", peer.cpu, spillway.cpu),
    );
    report.finding(
        &format!("{work} / {peer_name}: CPU seconds per 100,000 {unit}, consumer + broker + Redis + PostgreSQL"),
        format!(
            "peer {:.2} s, spillway {:.2} s",
            peer.stack_cpu_seconds_per(100_000),
            spillway.stack_cpu_seconds_per(100_000)
        ),
    );
}

/// How one consumer drained its backlog.
#[derive(Debug, Clone)]
pub struct Drain {
    pub total: u64,
    /// From the consumer's start to exact.
    pub from_start: Duration,
    /// From the consumer's start to its first durable output.
    pub to_first: Duration,
    /// Units done between the first durable output and exact, and how long that took.
    pub after_first: u64,
    pub first_to_exact: Duration,
    pub cpu: CpuSplit,
}

impl Drain {
    pub fn rate_from_start(&self) -> f64 {
        self.total as f64 / self.from_start.as_secs_f64().max(1e-9)
    }

    /// CPU seconds the consumer and its stack spent per `units` units, start-up included.
    pub fn stack_cpu_seconds_per(&self, units: u64) -> f64 {
        self.cpu.stack_cores() * self.from_start.as_secs_f64() * units as f64
            / self.total.max(1) as f64
    }

    pub fn steady_rate(&self) -> f64 {
        self.after_first as f64 / self.first_to_exact.as_secs_f64().max(1e-9)
    }
}

/// What a poller has seen of one consumer so far.
pub struct Progress {
    started: Instant,
    first: Option<(Instant, u64)>,
}

impl Progress {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            first: None,
        }
    }

    /// Keeps the first time any output was seen, and how much was done then.
    pub fn observe(&mut self, at: Instant, done: u64) {
        if self.first.is_none() && done > 0 {
            self.first = Some((at, done));
        }
    }

    fn has_first(&self) -> bool {
        self.first.is_some()
    }

    pub fn finish(self, finished: Instant, total: u64, cpu: CpuSplit) -> Drain {
        let (first_at, first_done) = self.first.unwrap_or((finished, total));
        Drain {
            total,
            from_start: finished - self.started,
            to_first: first_at - self.started,
            after_first: total.saturating_sub(first_done),
            first_to_exact: finished - first_at,
            cpu,
        }
    }
}

/// Polls `counter_values` until the namespace's values add up to `expected`; fails if they
/// ever add up to more. Returns the progress and when it was exact.
async fn wait_for_sum(
    database: &DatabaseConnection,
    namespace: &str,
    expected: i64,
    mut progress: Progress,
) -> anyhow::Result<(Progress, Instant)> {
    let deadline = Instant::now() + CASE_TIMEOUT;
    loop {
        let sum = db::scalar(
            database,
            "SELECT COALESCE(sum(value), 0)::bigint AS n FROM counter_values WHERE namespace = $1",
            vec![namespace.into()],
        )
        .await;
        let now = Instant::now();
        progress.observe(now, sum as u64);
        if sum == expected {
            return Ok((progress, now));
        }
        if sum > expected {
            bail!("spillway counted {sum} of {expected} events");
        }
        if now > deadline {
            bail!("spillway's counter reached {sum} of {expected} in {CASE_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls `target`'s table until it holds every row (then checks them); `check` runs about
/// once a second to fail fast when the consumer has died. Returns the progress and when the
/// table was complete.
async fn wait_for_rows(
    database: &DatabaseConnection,
    target: &RowsTarget<'_>,
    mut progress: Progress,
    deadline: Instant,
    mut check: impl AsyncFnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(Progress, Instant)> {
    let table = target.table;
    let tails_present = format!(
        "SELECT count(*) AS n FROM {table} WHERE id IN ({})",
        target.tail_ids.join(", ")
    );
    let mut last_check = Instant::now();
    loop {
        if !progress.has_first() {
            let any = format!("SELECT count(*) AS n FROM (SELECT 1 FROM {table} LIMIT 1) AS x");
            if db::scalar(database, &any, vec![]).await > 0 {
                let now = Instant::now();
                progress.observe(now, row_count(database, table).await);
            }
        }
        if progress.has_first()
            && db::scalar(database, &tails_present, vec![]).await == target.tail_ids.len() as i64
        {
            let now = Instant::now();
            if row_count(database, table).await == target.rows {
                check_rows(database, target).await?;
                return Ok((progress, now));
            }
        }
        if last_check.elapsed() >= Duration::from_secs(1) {
            check().await?;
            last_check = Instant::now();
        }
        if Instant::now() > deadline {
            bail!(
                "{table} holds {} of {} rows after {CASE_TIMEOUT:?}",
                row_count(database, table).await,
                target.rows
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn row_count(database: &DatabaseConnection, table: &str) -> u64 {
    db::scalar(
        database,
        &format!("SELECT count(*) AS n FROM {table}"),
        vec![],
    )
    .await as u64
}

/// Every row once, with the rows' own values (their `created_ms` add up).
async fn check_rows(database: &DatabaseConnection, target: &RowsTarget<'_>) -> anyhow::Result<()> {
    let table = target.table;
    let rows = row_count(database, table).await;
    let sum = db::scalar(
        database,
        &format!("SELECT COALESCE(sum(created_ms), 0)::bigint AS n FROM {table}"),
        vec![],
    )
    .await;
    if rows != target.rows || sum != target.created_ms_sum {
        bail!(
            "{table}: {rows} rows with created_ms summing to {sum}; sent {} rows summing to {}",
            target.rows,
            target.created_ms_sum
        );
    }
    Ok(())
}

/// 500000 -> "500,000".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(500_000), "500,000");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(999), "999");
    }

    #[test]
    fn options_read_scale_and_threads() {
        let args: Vec<String> = ["--scale", "0.1", "--streams-threads", "1"]
            .map(String::from)
            .into();
        let options = Options::parse(&args).unwrap();
        assert!((options.scale - 0.1).abs() < 1e-9);
        assert_eq!(options.streams_threads, 1);
        assert!(Options::parse(&["--what".to_owned(), "1".to_owned()]).is_err());
        assert!(Options::parse(&["--scale".to_owned()]).is_err());
    }

    #[test]
    fn options_read_cases_peers_and_counter_flush() {
        let args: Vec<String> = [
            "--only",
            "uniform,writes",
            "--peers",
            "skip",
            "--counter-flush",
            "5000,100000",
        ]
        .map(String::from)
        .into();
        let options = Options::parse(&args).unwrap();
        assert_eq!(options.cases, [Case::Uniform, Case::Writes]);
        assert!(!options.with_peers);
        assert_eq!(options.counter_flush, Some((5_000, 100_000)));
        let defaults = Options::parse(&[]).unwrap();
        assert_eq!(defaults.cases, Case::ALL);
        assert!(defaults.with_peers);
        for bad in [
            ["--only", "zipf,both"],
            ["--peers", "maybe"],
            ["--counter-flush", "5000"],
        ] {
            assert!(Options::parse(&bad.map(String::from)).is_err(), "{bad:?}");
        }
    }
}
