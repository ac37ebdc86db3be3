//! `cargo xtask bench scale`: what the cluster topology costs, the same load on each topology
//! one after the other in one run:
//!
//! - **single**: one Kafka broker, one Redis, one instance of each service (the default stack);
//! - **cluster, 1 instance**: three brokers (replication factor 3, `min.insync.replicas` 2,
//!   `acks=all`) and a Redis Cluster of 3 masters and 3 replicas;
//! - **cluster, 2 instances**: the same with two gateways (the load split round-robin), two
//!   counters and two batch-writers sharing their consumer groups.
//!
//! On each: likes at 100 clients (the 202s, then the rate until `counter_values` holds every
//! one), and playlist writes at 100 clients (the 202s, then the rate until the table holds
//! every row). Every server process's CPU (services, brokers, Redis nodes, PostgreSQL) is read
//! from `/proc` over each load.
//!
//! One 2-core box runs all of it (four brokers, seven Redis servers, the services and the load
//! generator): the figures say what the extra hops and the replication cost, not what a
//! cluster of machines can carry.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{Report, Samples, Summary, closed_loop_retrying, cpu::CpuMeter, cpu::CpuSplit};
use crate::{
    SAMPLE_NAMESPACES, SAMPLE_SINKS, TestConfig, api::Api, db, eventually, process::ServiceProcess,
    stack::Stack,
};

const CLIENTS: usize = 100;
const REQUESTS_PER_CLIENT: usize = 200;
const VIDEOS: usize = 1_000;
/// How long a client waits before sending again what was answered 503.
const RETRY_AFTER: Duration = Duration::from_millis(200);
/// The longest a load's effect may take to reach the database.
const SETTLE: Duration = Duration::from_secs(180);

/// One topology the load runs on.
struct Topology {
    label: &'static str,
    stack: Stack,
    instances: usize,
}

fn topologies() -> [Topology; 3] {
    [
        Topology {
            label: "single",
            stack: Stack::current(),
            instances: 1,
        },
        Topology {
            label: "cluster, 1 instance",
            stack: Stack::local_cluster(),
            instances: 1,
        },
        Topology {
            label: "cluster, 2 instances",
            stack: Stack::local_cluster(),
            instances: 2,
        },
    ]
}

/// What one load measured on one topology.
struct Load {
    /// The latencies of the answered attempts.
    accepted: Samples,
    /// Attempts answered 503 and tried again.
    retried: u64,
    /// Requests per second from the first request until the database held them all.
    settled_per_second: f64,
    cpu: CpuSplit,
}

pub async fn run() -> anyhow::Result<Report> {
    let mut report = Report::new("scale");
    let mut single: Option<(String, String)> = None;
    for topology in topologies() {
        Stack::choose(topology.stack.clone());
        let (likes, writes) = measure(&topology).await?;
        let likes_case = format!("{}: PUT like (202)", topology.label);
        let writes_case = format!("{}: POST write (202)", topology.label);
        let (likes_baseline, writes_baseline) = single
            .as_ref()
            .map(|(likes, writes)| (Some(likes.as_str()), Some(writes.as_str())))
            .unwrap_or((None, None));
        let likes_summary = report.add(
            &likes_case,
            likes_baseline,
            &likes.accepted,
            &load_note(&likes, "likes"),
        );
        let writes_summary = report.add(
            &writes_case,
            writes_baseline,
            &writes.accepted,
            &load_note(&writes, "rows"),
        );
        report.finding(
            &format!("{}: server CPU per like / per row", topology.label),
            format!(
                "{:.3} ms / {:.3} ms",
                cpu_ms_per_request(&likes, &likes_summary),
                cpu_ms_per_request(&writes, &writes_summary)
            ),
        );
        single.get_or_insert((likes_case, writes_case));
    }
    Ok(report)
}

fn load_note(load: &Load, what: &str) -> String {
    format!(
        "100 clients; {} answers 503 tried again; all in the database at {:.0} {what}/s; server CPU {}",
        load.retried, load.settled_per_second, load.cpu
    )
}

/// Milliseconds of server CPU (services, brokers, Redis, PostgreSQL) per acknowledged request.
fn cpu_ms_per_request(load: &Load, summary: &Summary) -> f64 {
    1e3 * load.cpu.stack_cores() * load.cpu.wall_seconds / summary.count.max(1) as f64
}

/// Starts the services on `topology`, runs the likes then the writes, stops them.
async fn measure(topology: &Topology) -> anyhow::Result<(Load, Load)> {
    let config = TestConfig::new(&format!("{SAMPLE_NAMESPACES}{SAMPLE_SINKS}"));
    let database = db::connect(&config).await;
    let videos: Vec<String> = (0..VIDEOS).map(|i| format!("video-{i}")).collect();
    db::create_videos(&database, &videos).await;
    let mut services = Vec::new();
    for name in ["gateway", "counter", "batch-writer"] {
        for _ in 0..topology.instances {
            services.push(ServiceProcess::start(name, &config).await);
        }
    }
    let gateways: Vec<Api> = services
        .iter()
        .filter(|service| service.name == "gateway")
        .map(|gateway| Api::new(gateway.url("")))
        .collect();
    for gateway in &gateways {
        warm_up(gateway).await;
    }
    let pids: Vec<u32> = services.iter().map(ServiceProcess::pid).collect();
    let likes = likes(&gateways, &database, &pids).await?;
    let writes = writes(&gateways, &database, &pids).await?;
    drop(services);
    Ok((likes, writes))
}

/// A first write and a first increment through `gateway` (on a topic the brokers have just
/// created the first produce may wait for metadata): neither is counted in the loads.
async fn warm_up(gateway: &Api) {
    eventually("a first increment", Duration::from_secs(30), || async {
        let (status, _) = gateway.increment("video-views", "warm-up", 1, None).await;
        status.is_success().then_some(())
    })
    .await;
    eventually("a first write", Duration::from_secs(30), || async {
        let row = serde_json::json!({"title": "warm-up"});
        let (status, _) = gateway.write("playlists", "warm-up", &row).await;
        status.is_success().then_some(())
    })
    .await;
}

/// The gateway the `i`-th request of `client` goes to: round-robin.
fn pick(gateways: &[Api], client: usize, i: usize) -> Api {
    gateways[(client + i) % gateways.len()].clone()
}

async fn likes(
    gateways: &[Api],
    database: &sea_orm::DatabaseConnection,
    pids: &[u32],
) -> anyhow::Result<Load> {
    let gateways = gateways.to_vec();
    run_load(
        database,
        pids,
        "SELECT COALESCE(sum(value), 0)::bigint AS n FROM counter_values WHERE namespace = 'video-likes'",
        move |client, i| {
            let api = pick(&gateways, client, i);
            async move {
                let video = format!("video-{}", i % VIDEOS);
                let member = format!("m{client}-{i}");
                api.like("video-likes", &video, &member).await.0.as_u16()
            }
        },
    )
    .await
}

async fn writes(
    gateways: &[Api],
    database: &sea_orm::DatabaseConnection,
    pids: &[u32],
) -> anyhow::Result<Load> {
    let gateways = gateways.to_vec();
    // Each row has its id (the uuid column), so a write tried again after a 503 (which may
    // have reached Kafka all the same) is the same row.
    let ids: Arc<Vec<String>> = Arc::new(
        (0..CLIENTS * REQUESTS_PER_CLIENT)
            .map(|_| uuid::Uuid::now_v7().to_string())
            .collect(),
    );
    run_load(
        database,
        pids,
        "SELECT count(*) AS n FROM playlists WHERE member_id <> 'warm-up'",
        move |client, i| {
            let api = pick(&gateways, client, i);
            let id = ids[client * REQUESTS_PER_CLIENT + i].clone();
            async move {
                let row = serde_json::json!({"id": id, "title": format!("list {i}"), "visibility": "public"});
                api.write("playlists", &format!("m{client}"), &row)
                    .await
                    .0
                    .as_u16()
            }
        },
    )
    .await
}

/// One load: [`CLIENTS`] clients sending [`REQUESTS_PER_CLIENT`] requests each, a 503 sent
/// again after [`RETRY_AFTER`], until `count_sql` counts every request in the database; the
/// CPU of `pids` and the stack's servers meanwhile.
async fn run_load<F, Fut>(
    database: &sea_orm::DatabaseConnection,
    pids: &[u32],
    count_sql: &str,
    request: F,
) -> anyhow::Result<Load>
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = u16> + Send,
{
    let meter = CpuMeter::start_for(pids.to_vec());
    let started = Instant::now();
    let (accepted, retried) =
        closed_loop_retrying(CLIENTS, REQUESTS_PER_CLIENT, Some(RETRY_AFTER), request).await;
    settle(database, count_sql).await?;
    Ok(Load {
        accepted,
        retried,
        settled_per_second: (CLIENTS * REQUESTS_PER_CLIENT) as f64
            / started.elapsed().as_secs_f64(),
        cpu: meter.stop(),
    })
}

/// Waits until `count_sql` counts every request of a load, at most [`SETTLE`].
async fn settle(database: &sea_orm::DatabaseConnection, count_sql: &str) -> anyhow::Result<()> {
    let expected = (CLIENTS * REQUESTS_PER_CLIENT) as i64;
    let started = Instant::now();
    loop {
        let stored = db::scalar(database, count_sql, vec![]).await;
        anyhow::ensure!(stored <= expected, "{stored} stored, {expected} sent");
        if stored == expected {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < SETTLE,
            "{stored} of {expected} in the database after {} s",
            SETTLE.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
