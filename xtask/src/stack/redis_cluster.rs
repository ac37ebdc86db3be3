//! A Redis Cluster of six nodes on loopback (`--redis-cluster`), from Debian's
//! `redis-server` like the single Redis and beside it: three masters with one replica each,
//! made by `redis-cli --cluster create ... --cluster-replicas 1`.
//!
//! Node ports 17001 to 17006 (cluster bus on port + 10000: 27001 to 27006); node `P` keeps its
//! `nodes.conf` and append-only file in `.stack/redis-cluster/P`, logs to
//! `.stack/logs/redis-cluster-P.log`, and its pid is in `.stack/pids/redis-cluster-P.pid`.
//! Which node is a master changes with every failover: ask a node (`ROLE`, `CLUSTER NODES`)
//! rather than assume the initial layout. A node that was killed and started again (`stack
//! up`) rejoins from its `nodes.conf`, as a replica if its replica took over meanwhile.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    Component, redis,
    resp::{self, Reply},
};
use crate::{paths::Paths, process};

pub const PORTS: [u16; 6] = [17001, 17002, 17003, 17004, 17005, 17006];
const MASTERS: usize = 3;
/// How long a node may be unreachable before the others count it as failed and its replica
/// takes over: failover takes about this plus one second.
pub const NODE_TIMEOUT_MS: u64 = 2_000;
/// From the nodes' start to `cluster_state:ok` on every node.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// From a master's death to a replica serving its slots.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);

pub struct RedisCluster;

/// The name of node `port`'s pid file and log (`redis-cluster-17001`).
pub fn node_name(port: u16) -> String {
    format!("redis-cluster-{port}")
}

/// The seed nodes a cluster client starts from: every node, as `redis://` URLs.
pub fn seed_urls() -> Vec<String> {
    PORTS
        .iter()
        .map(|port| format!("redis://127.0.0.1:{port}"))
        .collect()
}

fn node_dir(paths: &Paths, port: u16) -> PathBuf {
    paths.state.join("redis-cluster").join(port.to_string())
}

fn start_node(paths: &Paths, port: u16) -> Result<()> {
    let dir = node_dir(paths, port);
    std::fs::create_dir_all(&dir)?;
    process::spawn_detached(
        paths,
        &node_name(port),
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            .args(["--appendonly", "yes", "--save", ""])
            // A replica that (re)joins syncs at once, not after the default 5 s wait for others.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&dir),
    )?;
    Ok(())
}

/// `CLUSTER INFO` of one node as `(field, value)` pairs.
fn cluster_info(port: u16) -> Result<Vec<(String, String)>> {
    let reply = resp::command(port, &["CLUSTER", "INFO"])?;
    let text = reply.text().context("CLUSTER INFO is not text")?;
    Ok(text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(field, value)| (field.to_owned(), value.trim().to_owned()))
        .collect())
}

fn info_field(port: u16, field: &str) -> Option<String> {
    cluster_info(port)
        .ok()?
        .into_iter()
        .find_map(|(name, value)| (name == field).then_some(value))
}

fn state_ok(port: u16) -> bool {
    info_field(port, "cluster_state").as_deref() == Some("ok")
}

/// A node that has never been part of a cluster: it knows only itself and serves no slot.
fn is_fresh(port: u16) -> bool {
    info_field(port, "cluster_known_nodes").as_deref() == Some("1")
        && info_field(port, "cluster_slots_assigned").as_deref() == Some("0")
}

fn create(paths: &Paths) -> Result<()> {
    let nodes: Vec<String> = PORTS.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let output = process::run(
        Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"]),
    )
    .context("redis-cli --cluster create")?;
    std::fs::write(paths.log("redis-cluster-create"), output)?;
    Ok(())
}

/// What a node is now, from `ROLE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A master and the ports of its replicas.
    Master { replicas: Vec<u16> },
    /// A replica, the port of its master, and whether its replication link is up.
    Replica { master: u16, connected: bool },
}

fn port_of(reply: &Reply) -> Option<u16> {
    match reply {
        Reply::Integer(port) => u16::try_from(*port).ok(),
        Reply::Text(port) => port.parse().ok(),
        _ => None,
    }
}

pub fn role(port: u16) -> Result<Role> {
    let reply = resp::command(port, &["ROLE"])?;
    let items = reply.items();
    match items.first().and_then(Reply::text) {
        Some("master") => Ok(Role::Master {
            replicas: items
                .get(2)
                .map(Reply::items)
                .unwrap_or_default()
                .iter()
                .filter_map(|replica| replica.items().get(1).and_then(port_of))
                .collect(),
        }),
        Some("slave") => Ok(Role::Replica {
            master: items.get(2).and_then(port_of).context("ROLE has no port")?,
            connected: items.get(3).and_then(Reply::text) == Some("connected"),
        }),
        _ => bail!("unexpected ROLE reply from {port}: {reply:?}"),
    }
}

/// Whether every node is up in its place: three masters, each with a replica whose link is up
/// (a restarted node reports `cluster_state:ok` before it has synced).
fn fully_replicated() -> bool {
    let roles: Vec<Role> = PORTS.iter().filter_map(|port| role(*port).ok()).collect();
    let masters = roles
        .iter()
        .filter(|role| matches!(role, Role::Master { replicas } if !replicas.is_empty()))
        .count();
    let synced_replicas = roles
        .iter()
        .filter(|role| {
            matches!(
                role,
                Role::Replica {
                    connected: true,
                    ..
                }
            )
        })
        .count();
    masters == MASTERS && synced_replicas == PORTS.len() - MASTERS
}

/// Kills node `port` with SIGKILL; when it was a master with a replica, waits until one of its
/// replicas is master and returns that replica's port and how long the takeover took.
pub fn kill_node(paths: &Paths, port: u16) -> Result<Option<(u16, Duration)>> {
    let replicas = match role(port) {
        Ok(Role::Master { replicas }) => replicas,
        _ => Vec::new(),
    };
    process::kill_recorded(paths, &node_name(port))?
        .with_context(|| format!("{} is not running", node_name(port)))?;
    if replicas.is_empty() {
        return Ok(None);
    }
    let killed = Instant::now();
    let mut promoted = None;
    process::wait_until(
        &format!("a replica of {port} promoted"),
        FAILOVER_TIMEOUT,
        None,
        || {
            promoted = replicas
                .iter()
                .copied()
                .find(|replica| matches!(role(*replica), Ok(Role::Master { .. })));
            promoted.is_some()
        },
    )?;
    Ok(promoted.map(|replica| (replica, killed.elapsed())))
}

impl Component for RedisCluster {
    fn name(&self) -> &'static str {
        "redis-cluster"
    }

    fn port(&self) -> u16 {
        PORTS[0]
    }

    fn ports(&self) -> Vec<u16> {
        PORTS.to_vec()
    }

    fn running(&self) -> bool {
        PORTS.iter().all(|port| state_ok(*port)) && fully_replicated()
    }

    fn install(&self, paths: &Paths) -> Result<()> {
        redis::Redis.install(paths)
    }

    fn start(&self, paths: &Paths) -> Result<()> {
        for port in PORTS {
            if !resp::answers_ping(port) {
                start_node(paths, port)?;
            }
        }
        let log = paths.log(&node_name(PORTS[0]));
        process::wait_until("redis cluster nodes", READY_TIMEOUT, Some(&log), || {
            PORTS.iter().all(|port| resp::answers_ping(*port))
        })?;
        let fresh = PORTS.iter().filter(|port| is_fresh(**port)).count();
        if fresh == PORTS.len() {
            create(paths)?;
        } else if fresh > 0 {
            bail!(
                "{fresh} of the Redis Cluster's nodes never joined it (a lost nodes.conf?): stop \
                 it with `cargo xtask stack stop redis-cluster`, remove .stack/redis-cluster \
                 and start it again"
            );
        }
        process::wait_until("redis cluster_state:ok", READY_TIMEOUT, Some(&log), || {
            self.running()
        })
    }

    fn describe_nodes(&self, paths: &Paths) -> Vec<String> {
        node_lines(paths)
    }

    fn stop(&self, paths: &Paths) -> Result<bool> {
        let names: Vec<String> = PORTS.iter().copied().map(node_name).collect();
        process::stop_all_recorded(paths, &names)
    }
}

/// One line per node: its address, its role now, and whether we started it.
fn node_lines(paths: &Paths) -> Vec<String> {
    PORTS
        .iter()
        .map(|port| {
            let name = node_name(*port);
            let ours = process::read_pid(paths, &name).is_some_and(process::alive);
            let role = match role(*port) {
                Ok(Role::Master { replicas }) => format!("master, replicas {replicas:?}"),
                Ok(Role::Replica { master, connected }) => {
                    let link = if connected { "" } else { ", not synced" };
                    format!("replica of {master}{link}")
                }
                Err(_) => return format!("{name:<20} 127.0.0.1:{port} down"),
            };
            let owner = if ours { "ours" } else { "not ours" };
            format!("{name:<20} 127.0.0.1:{port} {role} ({owner})")
        })
        .collect()
}
