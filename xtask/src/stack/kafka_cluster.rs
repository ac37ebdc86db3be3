//! Three Kafka 4.4 brokers in KRaft mode (`--kafka-brokers 3`), on the single node's jars and
//! beside it. Every node is broker and controller; the three controllers are a static voter
//! quorum (`controller.quorum.voters`), so with any one node down the other two keep both the
//! quorum and two in-sync replicas of every partition (replication factor 3,
//! `min.insync.replicas=2`: an `acks=all` produce still succeeds).
//!
//! Broker `N` (1 to 3) listens on 127.0.0.1:`29092 + 100 (N - 1)` (29092, 29192, 29292), its
//! controller on the next port (29093, 29193, 29293); data in `.stack/kafka-cluster/broker-N`,
//! log `.stack/logs/kafka-broker-N.log`, pid `.stack/pids/kafka-broker-N.pid`. The brokers
//! format and start in parallel; only the ones whose port is closed are started, so after a
//! broker is killed `stack up` starts just that one again.
//!
//! Three JVMs starting at once on two cores were the start time: the brokers run C1-compiled
//! only and on a class-data-sharing archive of the Kafka classes ([`kafka_cds`]).

use std::{
    ops::RangeInclusive,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::{Component, kafka, kafka_cds};
use crate::{paths::Paths, process};

pub const BROKERS: usize = 3;
const FIRST_PORT: u16 = 29092;
const PORT_STEP: u16 = 100;
/// Any valid Kafka UUID does (base64url of `spillway-cluster`); a fixed one spares the first
/// start a JVM run of `StorageTool random-uuid`.
const CLUSTER_ID: &str = "c3BpbGx3YXktY2x1c3Rlcg";
/// How long the controller waits for a silent broker before it fences it and moves its
/// partitions' leadership and in-sync replicas (Kafka's default is 9 s: produces to a killed
/// broker's partitions would stall that long).
const BROKER_SESSION_TIMEOUT_MS: u64 = 3_000;
/// From the brokers' start to every broker registered and unfenced.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

pub struct KafkaCluster;

pub fn broker_ids() -> RangeInclusive<usize> {
    1..=BROKERS
}

pub fn broker_port(id: usize) -> u16 {
    FIRST_PORT + PORT_STEP * (id as u16 - 1)
}

fn controller_port(id: usize) -> u16 {
    broker_port(id) + 1
}

/// The name of broker `id`'s pid file and log (`kafka-broker-2`).
pub fn node_name(id: usize) -> String {
    format!("kafka-broker-{id}")
}

/// `127.0.0.1:29092,127.0.0.1:29192,127.0.0.1:29292`.
pub fn bootstrap() -> String {
    broker_ids()
        .map(|id| format!("127.0.0.1:{}", broker_port(id)))
        .collect::<Vec<_>>()
        .join(",")
}

fn voters() -> String {
    broker_ids()
        .map(|id| format!("{id}@127.0.0.1:{}", controller_port(id)))
        .collect::<Vec<_>>()
        .join(",")
}

fn cluster_dir(paths: &Paths) -> PathBuf {
    paths.state.join("kafka-cluster")
}

fn broker_dir(paths: &Paths, id: usize) -> PathBuf {
    cluster_dir(paths).join(format!("broker-{id}"))
}

fn log4j_file(paths: &Paths) -> PathBuf {
    cluster_dir(paths).join("log4j2.properties")
}

fn server_properties(id: usize, data: &Path) -> String {
    format!(
        "process.roles=broker,controller
node.id={id}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.quorum.voters={voters}
log.dirs={data}
num.partitions=4
auto.create.topics.enable=true
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0
broker.heartbeat.interval.ms=500
broker.session.timeout.ms={BROKER_SESSION_TIMEOUT_MS}
",
        port = broker_port(id),
        controller = controller_port(id),
        voters = voters(),
        data = data.display()
    )
}

/// A short-lived tool JVM: the class archive, C1 only and the serial GC start it with the
/// least CPU.
fn tool(paths: &Paths, class: &str) -> Command {
    let mut command = kafka::java(paths, &log4j_file(paths));
    command
        .args(kafka_cds::jvm_flags(paths, false))
        .args(["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", class])
        .args(["--bootstrap-server", &bootstrap()]);
    command
}

/// Writes broker `id`'s configuration and formats its storage unless it already is.
fn prepare_broker(paths: &Paths, id: usize) -> Result<PathBuf> {
    let dir = broker_dir(paths, id);
    let data = dir.join("data");
    std::fs::create_dir_all(&dir)?;
    let properties = dir.join("server.properties");
    std::fs::write(&properties, server_properties(id, &data))?;
    if !data.join("meta.properties").exists() {
        process::run(
            kafka::java(paths, &log4j_file(paths))
                .args(["kafka.tools.StorageTool", "format", "--config"])
                .arg(&properties)
                .args(["--cluster-id", CLUSTER_ID]),
        )
        .with_context(|| format!("formatting the storage of {}", node_name(id)))?;
    }
    Ok(properties)
}

fn start_broker(paths: &Paths, id: usize) -> Result<()> {
    let properties = prepare_broker(paths, id)?;
    let mut broker = kafka::java(paths, &log4j_file(paths));
    // C1 only: on two cores the C2 compiler threads of three starting brokers cost seconds;
    // with the class archive the brokers open their ports in about a third of the time, and
    // ProducerPerformance measured no lower throughput.
    broker
        .args(kafka_cds::jvm_flags(paths, id == 1))
        .args([
            "-XX:TieredStopAtLevel=1",
            "-Xms256m",
            "-Xmx512m",
            "kafka.Kafka",
        ])
        .arg(&properties);
    process::spawn_detached(paths, &node_name(id), &mut broker)?;
    Ok(())
}

/// How many brokers the cluster's metadata holds as registered and unfenced (0 when no broker
/// answers yet).
fn unfenced_brokers(paths: &Paths) -> usize {
    let Ok(listing) = process::run(&mut tool(
        paths,
        "org.apache.kafka.tools.BrokerApiVersionsCommand",
    )) else {
        return 0;
    };
    listing
        .lines()
        .filter(|line| line.contains("isFenced: false"))
        .count()
}

/// The quorum as `MetadataQuorumCommand describe --status` sees it: its leader and voters.
fn quorum(paths: &Paths) -> Result<(i64, usize)> {
    let status = process::run(
        tool(paths, "org.apache.kafka.tools.MetadataQuorumCommand").args(["describe", "--status"]),
    )?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
            .with_context(|| format!("no {name} in:\n{status}"))
    };
    let leader = field("LeaderId:")?.parse()?;
    let voters = field("CurrentVoters:")?.matches("\"id\":").count();
    Ok((leader, voters))
}

fn wait_until_ready(paths: &Paths) -> Result<()> {
    let first_log = paths.log(&node_name(1));
    process::wait_until(
        "kafka brokers' ports",
        READY_TIMEOUT,
        Some(&first_log),
        || broker_ids().all(|id| process::port_open(broker_port(id))),
    )?;
    process::wait_until(
        "every kafka broker registered and unfenced",
        READY_TIMEOUT,
        Some(&first_log),
        || unfenced_brokers(paths) == BROKERS,
    )?;
    let (leader, voters) = quorum(paths)?;
    if leader < 0 || voters != BROKERS {
        bail!("the controller quorum has leader {leader} and {voters} voters");
    }
    Ok(())
}

impl Component for KafkaCluster {
    fn name(&self) -> &'static str {
        "kafka-cluster"
    }

    fn port(&self) -> u16 {
        FIRST_PORT
    }

    fn ports(&self) -> Vec<u16> {
        broker_ids().map(broker_port).collect()
    }

    /// `stack stop kafka` in this topology stops the brokers that replace the single one.
    fn answers_to(&self, name: &str) -> bool {
        name == self.name() || name == "kafka"
    }

    fn running(&self) -> bool {
        broker_ids().all(|id| process::port_open(broker_port(id)))
    }

    fn install(&self, paths: &Paths) -> Result<()> {
        kafka::Kafka.install(paths)
    }

    fn start(&self, paths: &Paths) -> Result<()> {
        std::fs::create_dir_all(cluster_dir(paths))?;
        std::fs::write(log4j_file(paths), kafka::LOG4J2)?;
        let missing: Vec<usize> = broker_ids()
            .filter(|id| !process::port_open(broker_port(*id)))
            .collect();
        // Formatting is a JVM run of its own: do the three side by side too.
        std::thread::scope(|scope| {
            let starts: Vec<_> = missing
                .iter()
                .map(|id| scope.spawn(move || start_broker(paths, *id)))
                .collect();
            starts
                .into_iter()
                .try_for_each(|start| start.join().expect("a broker start panicked"))
        })?;
        wait_until_ready(paths)
    }

    fn describe_nodes(&self, paths: &Paths) -> Vec<String> {
        node_lines(paths)
    }

    fn stop(&self, paths: &Paths) -> Result<bool> {
        let names: Vec<String> = broker_ids().map(node_name).collect();
        let stopped = process::stop_all_recorded(paths, &names)?;
        kafka_cds::keep_recorded(paths)?;
        Ok(stopped)
    }
}

/// One line per broker: its address, whether it runs and whether we started it.
fn node_lines(paths: &Paths) -> Vec<String> {
    broker_ids()
        .map(|id| {
            let name = node_name(id);
            let ours = process::read_pid(paths, &name).is_some_and(process::alive);
            let state = match (process::port_open(broker_port(id)), ours) {
                (true, true) => "running (ours)",
                (true, false) => "running (not ours)",
                (false, _) => "down",
            };
            format!(
                "{name:<20} 127.0.0.1:{} (controller {}) {state}",
                broker_port(id),
                controller_port(id)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_listen_a_hundred_ports_apart_with_their_controller_next_door() {
        assert_eq!(
            bootstrap(),
            "127.0.0.1:29092,127.0.0.1:29192,127.0.0.1:29292"
        );
        assert_eq!(
            voters(),
            "1@127.0.0.1:29093,2@127.0.0.1:29193,3@127.0.0.1:29293"
        );
    }

    #[test]
    fn every_broker_replicates_three_ways_and_needs_two_in_sync() {
        let properties = server_properties(2, Path::new("/data"));
        for line in [
            "node.id=2",
            "listeners=PLAINTEXT://127.0.0.1:29192,CONTROLLER://127.0.0.1:29193",
            "default.replication.factor=3",
            "min.insync.replicas=2",
            "offsets.topic.replication.factor=3",
            "transaction.state.log.replication.factor=3",
        ] {
            assert!(properties.lines().any(|l| l == line), "{line}");
        }
    }
}
