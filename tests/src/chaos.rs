//! The chaos run behind `cargo xtask chaos`: a mixed load from this process (likes and
//! unlikes, increments with Idempotency-Keys, some re-sent on purpose, writes with and without
//! a client id, template copies) against the four services run as their own processes, while
//! each service in turn is killed with `kill -9` and restarted and Redis is flushed once. The
//! load retries every call that got no answer with the same key or id, as a client would.
//!
//! The same load drives the scale-out tests (`tests/tests/cluster.rs`), with other
//! [`Faults`]: several instances of every service, each call sent to the next gateway in
//! turn (a retried call may reach another one), on the topology the tests run on, while a
//! Redis Cluster master is killed or flushed, or Kafka brokers are killed.
//!
//! At the end every counter is compared (Redis, the API, `counter_values`, the mirror column)
//! with what the load computed from its acknowledged calls, every acknowledged write with the
//! table, and every handed-out copy with the others; [`ChaosReport`] prints one table whose
//! "lost" and "doubled" rows must be 0.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use reqwest::StatusCode;
use serde_json::{Value, json};
use spillway_core::redis::ClusterConnection;

use crate::{
    SAMPLE_NAMESPACES, SAMPLE_SINKS, TestConfig,
    api::Api,
    db, objects,
    process::{self, ServiceProcess},
    redis_client,
    scenario::{LIKES, VIEWS},
    stack,
    views::{PrivateRedis, with_redis},
};

const SERVICES: [&str; 4] = ["gateway", "counter", "batch-writer", "template-warmup"];
const ENTITIES: usize = 50;
const MEMBERS: usize = 400;
const LANES: usize = 24;
/// A call that got no answer is retried for this long before the run gives up on it.
const CALL_PATIENCE: Duration = Duration::from_secs(120);
/// How long the services get after the load to apply and flush everything.
const SETTLE: Duration = Duration::from_secs(180);
const TEMPLATE: &str = "chaos-kit";

#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub duration: Duration,
    pub seed: u64,
    /// Processes of each service; the gateways get the calls in turn.
    pub instances: usize,
    pub faults: Faults,
}

impl ChaosOptions {
    /// The chaos run: one instance of each service, killed in turn, Redis flushed once.
    pub fn chaos(duration: Duration, seed: u64) -> Self {
        Self {
            duration,
            seed,
            instances: 1,
            faults: Faults::ServicesAndRedisFlush,
        }
    }
}

/// What happens to the stack while the load runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Faults {
    /// `kill -9` to every service in turn, and a `FLUSHALL` half-way, of a private single
    /// Redis the services use instead of the stack's ([`PrivateRedis`]).
    ServicesAndRedisFlush,
    /// None: the load alone, on the stack's Redis (the cluster when it runs).
    Nothing,
    /// Two Redis Cluster masters killed in turn (`cargo xtask stack kill`: SIGKILL, then its
    /// replica takes over), each started again (it rejoins as a replica) a few seconds later.
    RedisMasterKills,
    /// One Redis Cluster master's data emptied (`FLUSHALL` on that node alone, as a master
    /// lost with its replica would be).
    RedisMasterFlush,
    /// Two of the three Kafka brokers killed in turn (SIGKILL), each started again.
    KafkaBrokerKills,
}

impl Faults {
    fn title(self) -> &'static str {
        match self {
            Self::ServicesAndRedisFlush => "chaos run",
            Self::Nothing => "scale-out run, no faults",
            Self::RedisMasterKills => "scale-out run, Redis masters killed",
            Self::RedisMasterFlush => "scale-out run, one Redis master emptied",
            Self::KafkaBrokerKills => "scale-out run, Kafka brokers killed",
        }
    }

    /// Whether the services use a private single Redis of the run's own.
    fn private_redis(self) -> bool {
        self == Self::ServicesAndRedisFlush
    }
}

/// What the load was acknowledged, and what the stack ended with.
#[derive(Debug, Default)]
pub struct ChaosReport {
    /// What ran: "chaos run", or the scale-out run's faults.
    pub title: String,
    pub duration: Duration,
    pub acknowledged: BTreeMap<&'static str, u64>,
    pub resent: u64,
    pub instances: usize,
    pub kills: BTreeMap<&'static str, u64>,
    pub redis_flushes: u64,
    /// Redis Cluster nodes and Kafka brokers killed, or a master flushed, by name.
    pub node_faults: BTreeMap<String, u64>,
    /// Rewinds of the counters running at the end (`spillway_counter_redis_rebuilds_total`):
    /// Redis found emptied, or a counter with unflushed events found gone.
    pub counter_rebuilds: u64,
    pub lost: u64,
    pub doubled: u64,
    /// Rows stored by a retried write without a client id whose first try got no answer.
    pub unacknowledged_rows: u64,
    pub mismatches: Vec<String>,
}

impl ChaosReport {
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.doubled == 0 && self.mismatches.is_empty()
    }
}

impl fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "| {} ({:.0} s) | count |",
            self.title,
            self.duration.as_secs_f64()
        )?;
        writeln!(f, "| --- | ---: |")?;
        for (what, count) in &self.acknowledged {
            writeln!(f, "| acknowledged: {what} | {count} |")?;
        }
        writeln!(
            f,
            "| re-sent on purpose (same key or id) | {} |",
            self.resent
        )?;
        if self.instances > 1 {
            writeln!(f, "| instances of each service | {} |", self.instances)?;
        }
        for (service, count) in &self.kills {
            writeln!(f, "| kill -9: {service} | {count} |")?;
        }
        writeln!(f, "| Redis FLUSHALL | {} |", self.redis_flushes)?;
        for (fault, count) in &self.node_faults {
            writeln!(f, "| {fault} | {count} |")?;
        }
        writeln!(
            f,
            "| counter rewinds to rebuild from the database (counters running at the end) | {} |",
            self.counter_rebuilds
        )?;
        writeln!(
            f,
            "| rows of unanswered writes without a client id (not acknowledged) | {} |",
            self.unacknowledged_rows
        )?;
        writeln!(f, "| **lost** | **{}** |", self.lost)?;
        writeln!(f, "| **doubled** | **{}** |", self.doubled)?;
        for mismatch in &self.mismatches {
            writeln!(f, "\nmismatch: {mismatch}")?;
        }
        Ok(())
    }
}

/// What the load computed from its acknowledged calls.
#[derive(Default)]
struct Expected {
    likes: BTreeMap<(String, String), bool>,
    views: BTreeMap<String, i64>,
    /// Write id -> title, for every acknowledged write.
    writes: BTreeMap<String, String>,
    /// Titles of writes without a client id whose first try got no answer.
    retried_server_ids: BTreeSet<String>,
    copies: Vec<String>,
    acknowledged: BTreeMap<&'static str, u64>,
    resent: u64,
}

impl Expected {
    fn count(&mut self, what: &'static str) {
        *self.acknowledged.entry(what).or_default() += 1;
    }
}

/// The services as processes, `instances` of each; a gateway keeps its port across restarts.
struct Services {
    config: TestConfig,
    gateway_ports: Vec<u16>,
    running: BTreeMap<(&'static str, usize), ServiceProcess>,
}

impl Services {
    async fn start(config: TestConfig, instances: usize) -> Self {
        let mut services = Self {
            gateway_ports: (0..instances).map(|_| process::free_port()).collect(),
            config,
            running: BTreeMap::new(),
        };
        for name in SERVICES {
            for instance in 0..instances {
                services.restart(name, instance).await;
            }
        }
        services
    }

    fn instances(&self) -> usize {
        self.gateway_ports.len()
    }

    async fn restart(&mut self, name: &'static str, instance: usize) {
        let process = if name == "gateway" {
            let port = self.gateway_ports[instance];
            ServiceProcess::start_at(name, &self.config, port, &[]).await
        } else {
            ServiceProcess::start(name, &self.config).await
        };
        self.running.insert((name, instance), process);
    }

    /// The sum of a metric over the running instances of `name`.
    async fn metric_sum(&self, name: &str, metric: &str) -> u64 {
        let mut sum = 0.0;
        for ((service, _), process) in &self.running {
            if *service == name {
                sum += crate::metric_sum(&process.url("/metrics"), metric).await;
            }
        }
        sum as u64
    }

    fn kill(&mut self, name: &'static str, instance: usize) {
        if let Some(process) = self.running.remove(&(name, instance)) {
            process.kill_hard();
        }
    }

    /// The gateways, each call sent to the next.
    fn gateways(&self) -> Gateways {
        Gateways {
            apis: Arc::new(
                self.gateway_ports
                    .iter()
                    .map(|port| Api::new(format!("http://127.0.0.1:{port}")))
                    .collect(),
            ),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// Every gateway of the run behind a round-robin split of the calls, as a load balancer
/// in front of them would do; each attempt of a retried call goes to the next one.
#[derive(Clone)]
pub struct Gateways {
    apis: Arc<Vec<Api>>,
    next: Arc<AtomicUsize>,
}

impl Gateways {
    /// The gateway the next call goes to.
    fn next(&self) -> &Api {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.apis.len();
        &self.apis[index]
    }

    /// `path` on the next gateway.
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.next().base_url)
    }

    fn client(&self) -> &reqwest::Client {
        &self.apis[0].client
    }
}

/// One call, retried until it is answered 2xx (or 4xx, which is a bug of the run and
/// recorded); `None` when it never was.
async fn call_until_answered<F, Fut>(send: F) -> Option<(StatusCode, Value)>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<(StatusCode, Value)>>,
{
    let deadline = Instant::now() + CALL_PATIENCE;
    loop {
        if let Some((status, body)) = send().await
            && !status.is_server_error()
        {
            return Some((status, body));
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn send(request: reqwest::RequestBuilder) -> Option<(StatusCode, Value)> {
    let response = request.timeout(Duration::from_secs(5)).send().await.ok()?;
    let status = response.status();
    Some((status, response.json().await.unwrap_or(Value::Null)))
}

/// The load of one lane until `stop`: its own members' likes, keyed increments, writes and
/// the odd template copy.
async fn run_lane(
    api: Gateways,
    lane: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
    expected: Arc<Mutex<Expected>>,
    failures: Arc<Mutex<Vec<String>>>,
) {
    let mut rng = StdRng::seed_from_u64(seed + lane as u64);
    let member_of = |n: usize| format!("m{}", n * LANES + lane);
    let members = MEMBERS / LANES;
    let mut step = 0u64;
    while !stop.load(Ordering::Relaxed) {
        step += 1;
        let entity = format!("e{}", rng.random_range(0..ENTITIES));
        let outcome = match rng.random_range(0..100) {
            0..45 => {
                let member = member_of(rng.random_range(0..members));
                like_or_unlike(&api, &entity, &member, rng.random_bool(0.7), &expected).await
            }
            45..80 => {
                let key = format!("l{lane}-s{step}");
                let resend = rng.random_bool(0.1);
                increment(
                    &api,
                    &entity,
                    rng.random_range(1..=5),
                    &key,
                    resend,
                    &expected,
                )
                .await
            }
            80..98 => {
                let client_id = rng.random_bool(0.5);
                write(&api, lane, step, client_id, &expected).await
            }
            _ => take_copy(&api, &format!("m{lane}"), &expected).await,
        };
        if let Err(failure) = outcome {
            failures.lock().expect("failures lock").push(failure);
        }
    }
}

async fn like_or_unlike(
    api: &Gateways,
    entity: &str,
    member: &str,
    like: bool,
    expected: &Mutex<Expected>,
) -> Result<(), String> {
    let path = format!("/v1/counters/{LIKES}/{entity}/members/me");
    let token = crate::token(member);
    let answer = call_until_answered(|| {
        let url = api.url(&path);
        let request = if like {
            api.client().put(url)
        } else {
            api.client().delete(url)
        };
        send(request.bearer_auth(&token))
    })
    .await;
    match answer {
        Some((status, _)) if status == 202 => {
            let mut expected = expected.lock().expect("expected lock");
            expected
                .likes
                .insert((entity.to_owned(), member.to_owned()), like);
            expected.count(if like { "likes" } else { "unlikes" });
            Ok(())
        }
        other => Err(format!("like {entity} as {member}: {other:?}")),
    }
}

async fn increment(
    api: &Gateways,
    entity: &str,
    delta: i64,
    key: &str,
    resend: bool,
    expected: &Mutex<Expected>,
) -> Result<(), String> {
    let path = format!("/v1/counters/{VIEWS}/{entity}/increments");
    let post = || {
        send(
            api.client()
                .post(api.url(&path))
                .header("Idempotency-Key", key)
                .json(&json!({ "delta": delta })),
        )
    };
    match call_until_answered(post).await {
        Some((status, _)) if status == 202 => {}
        other => return Err(format!("increment {entity} with {key}: {other:?}")),
    }
    {
        let mut expected = expected.lock().expect("expected lock");
        *expected.views.entry(entity.to_owned()).or_default() += delta;
        expected.count("increments");
    }
    if resend {
        match call_until_answered(post).await {
            Some((status, _)) if status == 202 => {
                expected.lock().expect("expected lock").resent += 1;
            }
            other => return Err(format!("re-sent increment {key}: {other:?}")),
        }
    }
    Ok(())
}

async fn write(
    api: &Gateways,
    lane: usize,
    step: u64,
    client_id: bool,
    expected: &Mutex<Expected>,
) -> Result<(), String> {
    let title = format!("l{lane}-s{step}");
    let mut row = json!({ "title": title });
    if client_id {
        row["id"] = json!(uuid::Uuid::now_v7().to_string());
    }
    let token = crate::token(&format!("m{lane}"));
    let attempts = AtomicU64::new(0);
    let answer = call_until_answered(|| {
        attempts.fetch_add(1, Ordering::Relaxed);
        let url = api.url("/v1/writes/playlists");
        send(api.client().post(url).bearer_auth(&token).json(&row))
    })
    .await;
    match answer {
        Some((status, body)) if status == 202 => {
            let id = body["id"].as_str().unwrap_or_default().to_owned();
            let mut expected = expected.lock().expect("expected lock");
            if !client_id && attempts.load(Ordering::Relaxed) > 1 {
                expected.retried_server_ids.insert(title.clone());
            }
            expected.writes.insert(id, title);
            expected.count(if client_id {
                "writes with a client id"
            } else {
                "writes without an id"
            });
            Ok(())
        }
        other => Err(format!("write {title}: {other:?}")),
    }
}

async fn take_copy(api: &Gateways, member: &str, expected: &Mutex<Expected>) -> Result<(), String> {
    let path = format!("/v1/templates/{TEMPLATE}/copies");
    let token = crate::token(member);
    let answer = call_until_answered(|| {
        let url = api.url(&path);
        send(api.client().post(url).bearer_auth(&token))
    })
    .await;
    match answer {
        Some((status, body)) if status == 201 => {
            let copy = body["copy_id"].as_str().unwrap_or_default().to_owned();
            let mut expected = expected.lock().expect("expected lock");
            expected.copies.push(copy);
            expected.count("template copies");
            Ok(())
        }
        other => Err(format!("template copy: {other:?}")),
    }
}

/// Kills each service in turn, restarts it, and flushes the private Redis once half-way.
async fn kill_services_and_flush(
    services: &mut Services,
    redis: &PrivateRedis,
    duration: Duration,
    report: &mut ChaosReport,
) {
    let started = Instant::now();
    let rounds = (duration.as_secs() / 20).max(1) as usize * SERVICES.len();
    let pause = duration / (rounds as u32 + 1);
    let mut flushed = false;
    for round in 0..rounds {
        tokio::time::sleep(pause).await;
        let name = SERVICES[round % SERVICES.len()];
        let instance = (round / SERVICES.len()) % services.instances();
        services.kill(name, instance);
        *report.kills.entry(name).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(500 + (round as u64 * 137) % 1_000)).await;
        services.restart(name, instance).await;
        if !flushed && started.elapsed() >= duration / 2 {
            let mut connection = redis.connect().await;
            let _: () = redis::cmd("FLUSHALL")
                .query_async(&mut connection)
                .await
                .expect("FLUSHALL");
            report.redis_flushes += 1;
            flushed = true;
        }
    }
}

/// `cargo xtask stack <args>` off the runtime's threads (the load goes on meanwhile).
async fn xtask_stack(what: impl FnOnce() + Send + 'static) {
    tokio::task::spawn_blocking(what)
        .await
        .expect("cargo xtask stack");
}

/// The Redis Cluster's masters now (`host`, `port`).
async fn cluster_masters() -> Vec<(String, u16)> {
    let nodes = stack::Stack::current()
        .redis_cluster_nodes
        .expect("this fault needs the Redis Cluster (cargo xtask test --cluster)");
    let mut connection = ClusterConnection::connect(&nodes, Duration::from_secs(5))
        .await
        .expect("connect to the redis cluster");
    connection.masters().await.expect("CLUSTER NODES")
}

/// Waits until every node of the Redis Cluster is up again and each master has a replica
/// in sync (a master without one refuses the writes that wait for a replica).
async fn wait_for_whole_cluster() {
    crate::eventually(
        "every Redis Cluster master has its replica again",
        Duration::from_secs(60),
        || async {
            let masters = cluster_masters().await;
            let mut whole = masters.len() == 3;
            for (host, port) in &masters {
                let client = redis::Client::open(format!("redis://{host}:{port}")).ok()?;
                let mut connection = client.get_multiplexed_async_connection().await.ok()?;
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut connection)
                    .await
                    .ok()?;
                whole &= info.contains("state=online");
            }
            whole.then_some(())
        },
    )
    .await;
}

/// Kills two masters in turn (each time the first of the masters then); each comes back
/// as its replica's replica.
async fn kill_redis_masters(duration: Duration, report: &mut ChaosReport) {
    let started = Instant::now();
    for round in 1..=2u32 {
        tokio::time::sleep((duration * round / 3).saturating_sub(started.elapsed())).await;
        let (_, port) = cluster_masters().await[0].clone();
        let node = format!("redis-cluster-{port}");
        xtask_stack({
            let node = node.clone();
            move || stack::kill(&node)
        })
        .await;
        *report
            .node_faults
            .entry(format!(
                "kill -9: Redis master (then replica took over) {node}"
            ))
            .or_default() += 1;
        tokio::time::sleep(Duration::from_secs(3)).await;
        xtask_stack(stack::start_all).await;
        wait_for_whole_cluster().await;
    }
}

/// Empties one master (its replica follows), a third of the way in.
async fn flush_a_redis_master(duration: Duration, report: &mut ChaosReport) {
    tokio::time::sleep(duration / 3).await;
    let (host, port) = cluster_masters().await[0].clone();
    let client = redis::Client::open(format!("redis://{host}:{port}")).expect("node url");
    let mut node = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the master");
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut node)
        .await
        .expect("FLUSHALL on one master");
    *report
        .node_faults
        .entry(format!("FLUSHALL of one Redis master ({port}) alone"))
        .or_default() += 1;
    tokio::time::sleep(duration.saturating_sub(duration / 3)).await;
}

/// Kills broker 2, starts it again after a while; then broker 3 likewise.
async fn kill_kafka_brokers(duration: Duration, report: &mut ChaosReport) {
    let started = Instant::now();
    for (round, broker) in [(1u32, "kafka-broker-2"), (2, "kafka-broker-3")] {
        tokio::time::sleep((duration * round / 3).saturating_sub(started.elapsed())).await;
        xtask_stack(move || stack::kill(broker)).await;
        *report
            .node_faults
            .entry(format!("kill -9: Kafka {broker} (then started again)"))
            .or_default() += 1;
        tokio::time::sleep(Duration::from_secs(6)).await;
        xtask_stack(stack::start_all).await;
    }
}

async fn run_faults(
    options: &ChaosOptions,
    services: &mut Services,
    redis: Option<&PrivateRedis>,
    report: &mut ChaosReport,
) {
    let duration = options.duration;
    match (options.faults, redis) {
        (Faults::ServicesAndRedisFlush, Some(redis)) => {
            kill_services_and_flush(services, redis, duration, report).await
        }
        (Faults::ServicesAndRedisFlush, None) => unreachable!("the chaos run has its Redis"),
        (Faults::Nothing, _) => tokio::time::sleep(duration).await,
        (Faults::RedisMasterKills, _) => kill_redis_masters(duration, report).await,
        (Faults::RedisMasterFlush, _) => flush_a_redis_master(duration, report).await,
        (Faults::KafkaBrokerKills, _) => kill_kafka_brokers(duration, report).await,
    }
}

/// The run's configuration: the sample namespaces and sink, quick template sweeps; on a
/// private Redis for the chaos run.
fn chaos_config(
    faults: Faults,
    redis: Option<&PrivateRedis>,
    dir: &tempfile::TempDir,
) -> TestConfig {
    let extra =
        format!("{SAMPLE_NAMESPACES}{SAMPLE_SINKS}\n[templates]\nsweep_interval_ms = 2000\n");
    let mut config = TestConfig::new(&extra);
    if faults == Faults::RedisMasterFlush {
        // Counters stay unflushed for seconds, so the emptied master holds some.
        config = config.with_counter_flush_interval_ms(4_000);
    }
    match redis {
        Some(redis) => with_redis(&config, &redis.url, dir),
        None => config,
    }
}

async fn register_template(api: &Api, config: &TestConfig) {
    let (client, bucket) = objects::bucket(config).await;
    let sources = objects::put_sources(&client, &bucket, "templates/chaos", 3, 1_024).await;
    let (status, body) = api.register_template(TEMPLATE, &sources, 4).await;
    assert_eq!(status, 201, "registering the chaos template: {body}");
}

/// A connection to the Redis the run's services use.
async fn connect_redis(redis: Option<&PrivateRedis>) -> redis_client::TestRedis {
    match redis {
        Some(redis) => redis_client::TestRedis::Single(redis.connect().await),
        None => redis_client::connect().await,
    }
}

/// Runs the load and the faults for `options.duration`, then checks the end state.
pub async fn run(options: ChaosOptions) -> ChaosReport {
    let private = match options.faults.private_redis() {
        true => Some(PrivateRedis::start("1gb", "volatile-ttl").await),
        false => None,
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let config = chaos_config(options.faults, private.as_ref(), &dir);
    let database = db::connect(&config).await;
    let ids: Vec<String> = (0..ENTITIES).map(|i| format!("e{i}")).collect();
    db::create_videos(&database, &ids).await;
    let mut services = Services::start(config.clone(), options.instances.max(1)).await;
    let gateways = services.gateways();
    register_template(&gateways.apis[0], &config).await;

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let expected = Arc::new(Mutex::new(Expected::default()));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let lanes: Vec<_> = (0..LANES)
        .map(|lane| {
            tokio::spawn(run_lane(
                gateways.clone(),
                lane,
                options.seed,
                stop.clone(),
                expected.clone(),
                failures.clone(),
            ))
        })
        .collect();
    let mut report = ChaosReport {
        title: options.faults.title().to_owned(),
        instances: services.instances(),
        ..ChaosReport::default()
    };
    run_faults(&options, &mut services, private.as_ref(), &mut report).await;
    stop.store(true, Ordering::Relaxed);
    for lane in lanes {
        lane.await.expect("a load lane panicked");
    }
    report.duration = started.elapsed();
    report.counter_rebuilds = services
        .metric_sum("counter", "spillway_counter_redis_rebuilds_total")
        .await;
    let expected = std::mem::take(&mut *expected.lock().expect("expected lock"));
    report.mismatches = std::mem::take(&mut *failures.lock().expect("failures lock"));
    report.acknowledged = expected.acknowledged.clone();
    report.resent = expected.resent;
    let mut redis = connect_redis(private.as_ref()).await;
    settle_and_compare(
        &gateways,
        &config,
        &mut redis,
        &database,
        &expected,
        &mut report,
    )
    .await;
    report
}

/// Waits until the stack holds what the load was acknowledged (or `SETTLE` passed), then
/// counts what is lost or doubled.
async fn settle_and_compare(
    gateways: &Gateways,
    config: &TestConfig,
    redis: &mut redis_client::TestRedis,
    database: &sea_orm::DatabaseConnection,
    expected: &Expected,
    report: &mut ChaosReport,
) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let mut trial = ChaosReport::default();
        compare_counters(gateways, config, redis, database, expected, &mut trial).await;
        compare_writes(database, expected, &mut trial).await;
        let exact = trial.lost == 0 && trial.doubled == 0 && trial.mismatches.is_empty();
        if exact || Instant::now() > deadline {
            report.lost = trial.lost;
            report.doubled = trial.doubled;
            report.unacknowledged_rows = trial.unacknowledged_rows;
            report.mismatches.extend(trial.mismatches);
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let distinct: HashSet<&String> = expected.copies.iter().collect();
    if distinct.len() != expected.copies.len() {
        report.doubled += (expected.copies.len() - distinct.len()) as u64;
        report
            .mismatches
            .push("a template copy was handed out twice".into());
    }
}

/// Adds `actual - expected` to lost (below) or doubled (above), naming where.
fn tally(report: &mut ChaosReport, place: &str, actual: i64, expected: i64) {
    if actual < expected {
        report.lost += (expected - actual) as u64;
        report
            .mismatches
            .push(format!("{place}: {actual}, expected {expected}"));
    } else if actual > expected {
        report.doubled += (actual - expected) as u64;
        report
            .mismatches
            .push(format!("{place}: {actual}, expected {expected}"));
    }
}

async fn compare_counters(
    gateways: &Gateways,
    config: &TestConfig,
    redis: &mut impl redis::aio::ConnectionLike,
    database: &sea_orm::DatabaseConnection,
    expected: &Expected,
    report: &mut ChaosReport,
) {
    let mut likes: BTreeMap<String, i64> = (0..ENTITIES).map(|i| (format!("e{i}"), 0)).collect();
    for ((entity, _), liked) in &expected.likes {
        if *liked {
            *likes.entry(entity.clone()).or_default() += 1;
        }
    }
    let mut views: BTreeMap<String, i64> = likes.keys().map(|e| (e.clone(), 0)).collect();
    views.extend(expected.views.clone());
    for (namespace, values) in [(LIKES, &likes), (VIEWS, &views)] {
        for (entity, value) in values {
            // Redis may not hold a counter no event touched since the flush: a cache.
            if let Some(cached) =
                redis_client::counter_value(redis, &config.key_prefix, namespace, entity).await
            {
                tally(
                    report,
                    &format!("Redis {namespace}/{entity}"),
                    cached,
                    *value,
                );
            }
            let via_api = gateways.next().value(namespace, entity).await;
            tally(
                report,
                &format!("GET {namespace}/{entity}"),
                via_api,
                *value,
            );
            let stored = db::counter_value(database, namespace, entity).await;
            tally(
                report,
                &format!("counter_values {namespace}/{entity}"),
                stored,
                *value,
            );
            if namespace == LIKES {
                let mirrored = db::scalar(
                    database,
                    "SELECT like_count AS n FROM videos WHERE id = $1",
                    vec![entity.as_str().into()],
                )
                .await;
                tally(
                    report,
                    &format!("videos.like_count {entity}"),
                    mirrored,
                    *value,
                );
            }
        }
    }
}

async fn compare_writes(
    database: &sea_orm::DatabaseConnection,
    expected: &Expected,
    report: &mut ChaosReport,
) {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    let rows = database
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT id::text AS id, title FROM playlists",
        ))
        .await
        .unwrap_or_default();
    let mut stored: BTreeMap<String, String> = BTreeMap::new();
    let mut titles: BTreeMap<String, u64> = BTreeMap::new();
    for row in rows {
        let (Ok(id), Ok(title)) = (
            row.try_get::<String>("", "id"),
            row.try_get::<String>("", "title"),
        ) else {
            continue;
        };
        *titles.entry(title.clone()).or_default() += 1;
        stored.insert(id, title);
    }
    for (id, title) in &expected.writes {
        match stored.get(id) {
            Some(found) if found == title => {}
            Some(found) => report
                .mismatches
                .push(format!("write {id}: title {found}, expected {title}")),
            None => {
                report.lost += 1;
                report
                    .mismatches
                    .push(format!("write {id} ({title}) missing"));
            }
        }
    }
    for (title, count) in titles {
        if count > 1 && !expected.retried_server_ids.contains(&title) {
            report.doubled += count - 1;
            report
                .mismatches
                .push(format!("write {title} stored {count} times"));
        } else if count > 1 {
            report.unacknowledged_rows += count - 1;
        }
    }
}
