//! Where the CPU went during one case, read from `/proc`: the consumer's process (the JVM
//! peer, or this bench process for spillway, which runs the services in-process), the Kafka
//! broker, and the rest of the box (PostgreSQL, Redis, and whatever else runs on it).

use std::time::Instant;

use serde::Serialize;

/// Linux reports process and system times in clock ticks of 1/100 s on every platform
/// spillway runs on (`getconf CLK_TCK`).
const TICKS_PER_SECOND: f64 = 100.0;

/// Average cores busy over a case.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct CpuSplit {
    pub consumer_cores: f64,
    pub broker_cores: f64,
    pub rest_cores: f64,
}

impl std::fmt::Display for CpuSplit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "consumer {:.2}, broker {:.2}, rest {:.2} cores",
            self.consumer_cores, self.broker_cores, self.rest_cores
        )
    }
}

/// CPU times at the start of a case.
pub struct CpuMeter {
    consumer_pid: u32,
    broker_pid: Option<u32>,
    consumer_start: f64,
    broker_start: f64,
    box_start: f64,
    started: Instant,
}

impl CpuMeter {
    pub fn start(consumer_pid: u32) -> Self {
        let broker_pid = kafka_broker_pid();
        Self {
            consumer_pid,
            broker_pid,
            consumer_start: process_seconds(consumer_pid),
            broker_start: broker_pid.map_or(0.0, process_seconds),
            box_start: box_busy_seconds(),
            started: Instant::now(),
        }
    }

    pub fn stop(&self) -> CpuSplit {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let consumer = process_seconds(self.consumer_pid) - self.consumer_start;
        let broker = self.broker_pid.map_or(0.0, process_seconds) - self.broker_start;
        let whole = box_busy_seconds() - self.box_start;
        CpuSplit {
            consumer_cores: consumer / wall,
            broker_cores: broker / wall,
            rest_cores: (whole - consumer - broker).max(0.0) / wall,
        }
    }
}

/// utime + stime of a process (0 once it is gone).
fn process_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| fields.get(index).and_then(|v| v.parse::<f64>().ok());
    // Fields 14 and 15 of the whole line are 12 and 13 after the command name.
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / TICKS_PER_SECOND,
        _ => 0.0,
    }
}

/// Busy time of every CPU: user, nice, system, irq, softirq, steal.
fn box_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|line| line.starts_with("cpu ")) else {
        return 0.0;
    };
    let values: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy: f64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| values.get(i))
        .sum();
    busy / TICKS_PER_SECOND
}

/// The local stack's broker: the JVM whose command line runs `kafka.Kafka` (read only).
fn kafka_broker_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        cmdline
            .split(|&byte| byte == 0)
            .any(|arg| arg == b"kafka.Kafka")
            .then_some(pid)
    })
}
