//! Apache Kafka 4.4 in KRaft mode, single node, on the machine's JDK: the jars come from Maven
//! Central (`xtask/kafka/pom.xml`) into the cache; the storage in `.stack/kafka/data` is
//! formatted on first start. Broker on 19092, controller on 19093.

use std::{process::Command, time::Duration};

use anyhow::{Context, Result};

use super::Component;
use crate::{paths::Paths, process};

pub const PORT: u16 = 19092;
const CONTROLLER_PORT: u16 = 19093;
const KAFKA_VERSION: &str = "4.4.0";

pub struct Kafka;

pub(super) fn lib_dir(paths: &Paths) -> std::path::PathBuf {
    paths.cache.join(format!("kafka-{KAFKA_VERSION}/lib"))
}

/// The classpath of the Kafka jars (the broker and its command-line tools).
pub fn classpath(paths: &Paths) -> String {
    format!("{}/*", lib_dir(paths).display())
}

fn server_properties(data: &std::path::Path) -> String {
    format!(
        "process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:{PORT},CONTROLLER://127.0.0.1:{CONTROLLER_PORT}
advertised.listeners=PLAINTEXT://127.0.0.1:{PORT}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.quorum.bootstrap.servers=127.0.0.1:{CONTROLLER_PORT}
log.dirs={data}
num.partitions=4
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
",
        data = data.display()
    )
}

/// Logs to stderr (so tools' stdout stays clean), quiet below WARN; no shutdown hook, so the
/// broker's own shutdown log is not cut.
pub(super) const LOG4J2: &str = "status = error
shutdownHook = disable
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.err.ref = STDERR
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = info
";

pub(super) fn java(paths: &Paths, log4j: &std::path::Path) -> Command {
    let mut command = Command::new("java");
    command
        .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
        .arg("-cp")
        .arg(classpath(paths));
    command
}

impl Component for Kafka {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn port(&self) -> u16 {
        PORT
    }

    fn install(&self, paths: &Paths) -> Result<()> {
        if !process::on_path("java") || !process::on_path("mvn") {
            process::apt_install(&["openjdk-17-jre-headless", "maven"])?;
        }
        let lib = lib_dir(paths);
        if lib.exists() {
            return Ok(());
        }
        eprintln!("fetching the Kafka {KAFKA_VERSION} jars from Maven Central (once)");
        let partial = lib.with_extension("partial");
        let _ = std::fs::remove_dir_all(&partial);
        process::run(
            Command::new("mvn")
                .args(["-q", "-B", "-f"])
                .arg(paths.repo.join("xtask/kafka/pom.xml"))
                .arg("dependency:copy-dependencies")
                .arg(format!("-DoutputDirectory={}", partial.display())),
        )
        .context("fetching the Kafka jars with Maven")?;
        std::fs::rename(&partial, &lib)?;
        Ok(())
    }

    fn start(&self, paths: &Paths) -> Result<()> {
        let dir = paths.state.join("kafka");
        let data = dir.join("data");
        std::fs::create_dir_all(&dir)?;
        let properties = dir.join("server.properties");
        let log4j = dir.join("log4j2.properties");
        std::fs::write(&properties, server_properties(&data))?;
        std::fs::write(&log4j, LOG4J2)?;
        if !data.join("meta.properties").exists() {
            let cluster_id =
                process::run(java(paths, &log4j).args(["kafka.tools.StorageTool", "random-uuid"]))?;
            process::run(
                java(paths, &log4j)
                    .args([
                        "kafka.tools.StorageTool",
                        "format",
                        "--standalone",
                        "--config",
                    ])
                    .arg(&properties)
                    .args(["--cluster-id", cluster_id.trim()]),
            )
            .context("formatting the Kafka storage")?;
        }
        let mut broker = java(paths, &log4j);
        broker
            .args(["-Xms256m", "-Xmx512m", "kafka.Kafka"])
            .arg(&properties);
        process::spawn_detached(paths, self.name(), &mut broker)?;
        let log = paths.log(self.name());
        process::wait_until("kafka port", Duration::from_secs(90), Some(&log), || {
            process::port_open(PORT)
        })?;
        // The port opens before the broker serves metadata: wait until a client can list topics.
        process::wait_until(
            "kafka metadata",
            Duration::from_secs(90),
            Some(&log),
            || {
                java(paths, &log4j)
                    .args(["org.apache.kafka.tools.TopicCommand", "--bootstrap-server"])
                    .arg(format!("127.0.0.1:{PORT}"))
                    .arg("--list")
                    .output()
                    .is_ok_and(|output| output.status.success())
            },
        )
    }
}
