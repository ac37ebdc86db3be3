//! The local stack: Kafka (KRaft, jars from Maven Central on the machine's JDK), Redis and
//! PostgreSQL (Debian's packages) and MinIO (built from its Go module), each installed when
//! missing, started only when its port does not answer, and stopped only when we started it.
//!
//! The [`Topology`] says which components make the stack: by default one node of each; the
//! local cluster topology adds a Redis Cluster ([`redis_cluster`]) and replaces the single
//! Kafka with three brokers ([`kafka_cluster`]). `down` stops whatever of all of them we
//! started, whichever topology started it.

pub mod kafka;
mod kafka_cds;
pub mod kafka_cluster;
pub mod postgres;
pub mod redis;
pub mod redis_cluster;
mod resp;
pub mod s3;

use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{paths::Paths, process, topology::Topology};

/// One component of the stack.
pub trait Component {
    fn name(&self) -> &'static str;
    fn port(&self) -> u16;
    /// Every client port, for a component of several nodes.
    fn ports(&self) -> Vec<u16> {
        vec![self.port()]
    }
    /// Whether `stack stop <name>` means this component.
    fn answers_to(&self, name: &str) -> bool {
        name == self.name()
    }
    /// Whether it serves already (then `up` leaves it alone).
    fn running(&self) -> bool {
        process::port_open(self.port())
    }
    /// Installs or fetches what is missing (cached outside the clone).
    fn install(&self, paths: &Paths) -> Result<()>;
    /// Starts it and waits until it serves; records the pid under `.stack/pids`.
    fn start(&self, paths: &Paths) -> Result<()>;
    /// Stops what `start` started.
    fn stop(&self, paths: &Paths) -> Result<bool> {
        process::stop_recorded(paths, self.name())
    }
    /// For a component of several nodes, one line per node for `stack status`.
    fn describe_nodes(&self, _: &Paths) -> Vec<String> {
        Vec::new()
    }
}

/// The components of `topology`, in start order.
pub fn components(topology: Topology) -> Vec<Box<dyn Component>> {
    let mut components: Vec<Box<dyn Component>> = Vec::new();
    if topology.kafka_cluster() {
        components.push(Box::new(kafka_cluster::KafkaCluster));
    } else {
        components.push(Box::new(kafka::Kafka));
    }
    components.push(Box::new(redis::Redis));
    if topology.redis_cluster {
        components.push(Box::new(redis_cluster::RedisCluster));
    }
    components.push(Box::new(postgres::Postgres));
    components.push(Box::new(s3::MinIo));
    components
}

/// Every component of every topology, in start order.
fn all_components() -> Vec<Box<dyn Component>> {
    let mut components = components(Topology::CLUSTER);
    components.insert(1, Box::new(kafka::Kafka));
    components
}

fn ports_label(component: &dyn Component) -> String {
    let ports: Vec<String> = component.ports().iter().map(u16::to_string).collect();
    format!("127.0.0.1:{}", ports.join(","))
}

/// Starts every component of `topology` that is not running; returns the names of those it
/// started.
pub fn up(paths: &Paths, topology: Topology) -> Result<Vec<&'static str>> {
    start_components(paths, components(topology))
}

/// `stack start <component>`: that component alone (all its nodes), of whichever topology.
pub fn start(paths: &Paths, name: &str) -> Result<()> {
    let component = all_components()
        .into_iter()
        .find(|component| component.name() == name)
        .with_context(|| {
            format!(
                "no component `{name}` (kafka, kafka-cluster, redis, redis-cluster, postgres, s3)"
            )
        })?;
    start_components(paths, vec![component]).map(drop)
}

fn start_components(
    paths: &Paths,
    components: Vec<Box<dyn Component>>,
) -> Result<Vec<&'static str>> {
    let mut started = Vec::new();
    for component in components {
        let clock = Instant::now();
        let state = if component.running() {
            "already running"
        } else {
            component.install(paths)?;
            component.start(paths)?;
            started.push(component.name());
            "started"
        };
        eprintln!(
            "  {:<9} {:<16} {:<16} {:>6.1} s",
            component.name(),
            ports_label(component.as_ref()),
            state,
            clock.elapsed().as_secs_f64()
        );
    }
    Ok(started)
}

/// Stops the named components (all when `names` is empty) that this stack started, of any
/// topology; one outside `topology` is only reported when there was something to stop.
pub fn down(paths: &Paths, topology: Topology, names: &[&str]) -> Result<()> {
    let in_topology: Vec<&str> = components(topology).iter().map(|c| c.name()).collect();
    for component in all_components().into_iter().rev() {
        if names.is_empty() || names.iter().any(|name| component.answers_to(name)) {
            let stopped = component.stop(paths)?;
            if stopped || in_topology.contains(&component.name()) {
                eprintln!(
                    "  {:<9} {}",
                    component.name(),
                    if stopped { "stopped" } else { "not ours" }
                );
            }
        }
    }
    Ok(())
}

/// The names `stack stop` and `stack kill` accept for one node of a cluster.
fn node_names() -> Vec<String> {
    let redis = redis_cluster::PORTS
        .iter()
        .copied()
        .map(redis_cluster::node_name);
    let kafka = kafka_cluster::broker_ids().map(kafka_cluster::node_name);
    redis.chain(kafka).collect()
}

fn check_node_name(name: &str) -> Result<()> {
    if !node_names().iter().any(|node| node == name) {
        bail!(
            "no component or cluster node `{name}`; components: kafka, kafka-cluster, redis, \
             redis-cluster, postgres, s3; nodes: {}",
            node_names().join(", ")
        );
    }
    Ok(())
}

/// `stack stop <name>`: a component (all its nodes), or one node of a cluster (SIGTERM).
pub fn stop(paths: &Paths, topology: Topology, name: &str) -> Result<()> {
    if all_components().iter().any(|c| c.answers_to(name)) {
        return down(paths, topology, &[name]);
    }
    check_node_name(name)?;
    let stopped = process::stop_recorded(paths, name)?;
    eprintln!("  {name} {}", if stopped { "stopped" } else { "not ours" });
    Ok(())
}

/// `stack kill <node>`: SIGKILL to one node of a cluster, as a crash would. For a Redis
/// master, waits until its replica took over and says which one.
pub fn kill(paths: &Paths, name: &str) -> Result<()> {
    check_node_name(name)?;
    let redis_port = redis_cluster::PORTS
        .iter()
        .copied()
        .find(|port| redis_cluster::node_name(*port) == name);
    if let Some(port) = redis_port {
        match redis_cluster::kill_node(paths, port)? {
            Some((replica, took)) => eprintln!(
                "  {name} killed; replica 127.0.0.1:{replica} took over its slots in {:.1} s",
                took.as_secs_f64()
            ),
            None => eprintln!("  {name} killed (it was a replica)"),
        }
        return Ok(());
    }
    let pid =
        process::kill_recorded(paths, name)?.with_context(|| format!("{name} is not running"))?;
    eprintln!("  {name} (pid {pid}) killed");
    Ok(())
}

/// How `stack status` sums a component up; a cluster's nodes say whose they are in their
/// own lines.
fn state_of(paths: &Paths, component: &dyn Component, nodes: &[String]) -> &'static str {
    let running = component.running();
    if !nodes.is_empty() {
        return if running {
            "running"
        } else {
            "not every node is up"
        };
    }
    let ours = process::read_pid(paths, component.name()).is_some_and(process::alive);
    match (running, ours) {
        (true, true) => "running (ours)",
        (true, false) => "running (not ours)",
        (false, _) => "down",
    }
}

pub fn status(paths: &Paths, topology: Topology) {
    for component in components(topology) {
        let nodes = component.describe_nodes(paths);
        println!(
            "  {:<9} {:<16} {}",
            component.name(),
            ports_label(component.as_ref()),
            state_of(paths, component.as_ref(), &nodes)
        );
        for node in nodes {
            println!("    {node}");
        }
    }
}
