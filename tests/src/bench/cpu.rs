//! Where the CPU went during one case, read from `/proc`: the processes under test (a JVM
//! peer, this bench process when it runs the services in-process, or service processes), the Kafka
//! broker, Redis, PostgreSQL (every `postgres` process: the server and all its backends,
//! other clients' included) and the rest of the box (whatever else runs on it).

use std::{collections::HashMap, time::Instant};

use serde::Serialize;

/// Linux reports process and system times in clock ticks of 1/100 s on every platform
/// spillway runs on (`getconf CLK_TCK`).
const TICKS_PER_SECOND: f64 = 100.0;

/// Average cores busy over a case.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct CpuSplit {
    pub consumer_cores: f64,
    pub broker_cores: f64,
    pub redis_cores: f64,
    pub postgres_cores: f64,
    pub rest_cores: f64,
    /// How long the case was measured.
    pub wall_seconds: f64,
}

impl CpuSplit {
    /// The consumer and the stack it uses (broker, Redis, PostgreSQL), not the rest.
    pub fn stack_cores(&self) -> f64 {
        self.consumer_cores + self.broker_cores + self.redis_cores + self.postgres_cores
    }
}

impl std::fmt::Display for CpuSplit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "consumer {:.2}, broker {:.2}, Redis {:.2}, PostgreSQL {:.2}, rest {:.2} cores",
            self.consumer_cores,
            self.broker_cores,
            self.redis_cores,
            self.postgres_cores,
            self.rest_cores
        )
    }
}

/// The processes one figure adds up.
#[derive(Debug, Clone)]
enum Group {
    /// The processes under test (the consumer, or the services of a case).
    Consumer(Vec<u32>),
    /// The local stack's broker: the JVM whose command line runs `kafka.Kafka`.
    Broker,
    Redis,
    Postgres,
}

impl Group {
    fn contains(&self, process: &Process) -> bool {
        match self {
            Group::Consumer(pids) => pids.contains(&process.pid),
            Group::Broker => process.args.iter().any(|arg| arg == "kafka.Kafka"),
            Group::Redis => process.name == "redis-server",
            Group::Postgres => process.name == "postgres",
        }
    }
}

const GROUPS: usize = 4;

/// CPU times at the start of a case.
pub struct CpuMeter {
    groups: [Group; GROUPS],
    /// Each process's CPU seconds at the start (a process started later began at 0).
    at_start: HashMap<u32, f64>,
    box_start: f64,
    started: Instant,
}

impl CpuMeter {
    pub fn start(consumer_pid: u32) -> Self {
        Self::start_for(vec![consumer_pid])
    }

    /// A meter whose "consumer" is the sum of `pids` (the services of a case).
    pub fn start_for(pids: Vec<u32>) -> Self {
        Self {
            groups: [
                Group::Consumer(pids),
                Group::Broker,
                Group::Redis,
                Group::Postgres,
            ],
            at_start: processes().map(|p| (p.pid, p.cpu_seconds)).collect(),
            box_start: box_busy_seconds(),
            started: Instant::now(),
        }
    }

    pub fn stop(&self) -> CpuSplit {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let mut used = [0.0; GROUPS];
        for process in processes() {
            let since_start =
                process.cpu_seconds - self.at_start.get(&process.pid).copied().unwrap_or(0.0);
            if let Some(index) = self.groups.iter().position(|g| g.contains(&process)) {
                used[index] += since_start.max(0.0);
            }
        }
        let whole = box_busy_seconds() - self.box_start;
        let cores = |seconds: f64| seconds / wall;
        CpuSplit {
            consumer_cores: cores(used[0]),
            broker_cores: cores(used[1]),
            redis_cores: cores(used[2]),
            postgres_cores: cores(used[3]),
            rest_cores: cores((whole - used.iter().sum::<f64>()).max(0.0)),
            wall_seconds: wall,
        }
    }
}

/// One process as `/proc` shows it (read only).
struct Process {
    pid: u32,
    name: String,
    args: Vec<String>,
    cpu_seconds: f64,
}

fn processes() -> impl Iterator<Item = Process> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(read_process)
}

fn read_process(pid: u32) -> Option<Process> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12th and 13th after the name.
    let ticks = |index: usize| fields.get(index).and_then(|v| v.parse::<f64>().ok());
    let cpu_seconds = (ticks(11)? + ticks(12)?) / TICKS_PER_SECOND;
    let args = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&byte| byte == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    Some(Process {
        pid,
        name,
        args,
        cpu_seconds,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_read_and_counted_as_the_consumer() {
        let me = read_process(std::process::id()).expect("/proc/self");
        assert!(me.cpu_seconds >= 0.0);
        assert!(Group::Consumer(vec![std::process::id()]).contains(&me));
        let meter = CpuMeter::start(std::process::id());
        let spin = Instant::now();
        while spin.elapsed().as_millis() < 300 {
            std::hint::black_box(0u64);
        }
        let split = meter.stop();
        // A busy loop is seen, however busy the box (ticks are 10 ms).
        assert!(split.consumer_cores > 0.0, "{split}");
    }
}
