//! The Kafka Streams peer: `tests/peers/kafka-streams` (`groupByKey().reduce(sum)` under
//! `exactly_once_v2`) started on a topic that already holds the events; done when its
//! committed output adds up to the expected sum (it reports that itself, read_committed).

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::bench::cpu::CpuMeter;

use super::{
    Drain, Progress,
    jvm::{Artifacts, JavaProcess},
    workload,
};
use crate::stack::Stack;

const MAIN_CLASS: &str = "dev.spillway.peers.CounterPeer";
const CASE_TIMEOUT: Duration = Duration::from_secs(600);

/// One Kafka Streams run over `input`.
pub struct StreamsCase<'a> {
    pub artifacts: &'a Artifacts,
    pub input: &'a str,
    pub expected_sum: i64,
    pub threads: usize,
    /// Unique per run: the application id (its consumer group) and the output topic's name.
    pub application_id: String,
}

/// Runs the application until its committed counts are exact; the rates are measured from
/// the JVM's start.
pub async fn count(case: StreamsCase<'_>) -> anyhow::Result<Drain> {
    let output = format!("{}.out", case.application_id);
    workload::create_topic(&output).await?;
    let dir = tempfile::tempdir()?;
    let args = [
        format!("bootstrap={}", Stack::current().kafka),
        format!("input={}", case.input),
        format!("output={output}"),
        format!("application-id={}", case.application_id),
        format!("threads={}", case.threads),
        format!("expected-sum={}", case.expected_sum),
        format!("state-dir={}", dir.path().join("state").display()),
    ];
    let started = Instant::now();
    let mut peer = JavaProcess::spawn(
        "kafka-streams peer",
        &case.artifacts.streams_classpath,
        &["-Xms256m".into(), "-Xmx1g".into()],
        MAIN_CLASS,
        &args,
        &dir.path().join("kafka-streams.log"),
    )?;
    let meter = CpuMeter::start(peer.pid().unwrap_or(0));
    let mut progress = Progress::new(started);
    let deadline = started + CASE_TIMEOUT;
    let (finished, total) = loop {
        let (at, line) = peer.next_line(deadline).await?;
        match line.split_once(' ') {
            Some(("first", total)) => progress.observe(at, total.parse()?),
            Some(("exact", total)) => break (at, total.parse::<i64>()?),
            Some(("over", total)) => {
                bail!(
                    "Kafka Streams counted {total} of {} events",
                    case.expected_sum
                )
            }
            Some(("error", error)) => bail!("Kafka Streams failed: {error}"),
            _ => {}
        }
    };
    let cpu = meter.stop();
    peer.stop(Duration::from_secs(10)).await;
    if total != case.expected_sum {
        bail!(
            "Kafka Streams ended at {total}, expected {}",
            case.expected_sum
        );
    }
    Ok(progress.finish(finished, total as u64, cpu))
}
