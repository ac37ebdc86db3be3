//! The benchmark harness behind `cargo xtask bench <name>`: latency samples summarised as
//! percentiles, every case reported beside a baseline measured in the same run, the machine
//! noted, a table printed and the JSON written to `target/bench/<name>-<unix time>.json`.

pub mod counters;
pub mod cpu;
pub mod peers;
pub mod queues;
pub mod scale;
pub mod stack;
pub mod templates;
pub mod views;
pub mod writes;

use std::time::{Duration, Instant};

use serde::Serialize;

/// Latencies of one case.
#[derive(Debug, Default)]
pub struct Samples {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Samples {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            latencies: Vec::with_capacity(capacity),
            elapsed: Duration::ZERO,
        }
    }

    pub fn record(&mut self, latency: Duration) {
        self.latencies.push(latency);
    }

    /// The wall time the whole case took (for throughput).
    pub fn set_elapsed(&mut self, elapsed: Duration) {
        self.elapsed = elapsed;
    }

    pub fn summary(&self) -> Summary {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let at = |quantile: f64| -> f64 {
            if sorted.is_empty() {
                return 0.0;
            }
            let index = ((sorted.len() as f64 - 1.0) * quantile).round() as usize;
            sorted[index].as_secs_f64() * 1e3
        };
        let total: Duration = sorted.iter().sum();
        Summary {
            count: sorted.len(),
            p50_ms: at(0.50),
            p75_ms: at(0.75),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            mean_ms: if sorted.is_empty() {
                0.0
            } else {
                total.as_secs_f64() * 1e3 / sorted.len() as f64
            },
            per_second: if self.elapsed.is_zero() {
                0.0
            } else {
                sorted.len() as f64 / self.elapsed.as_secs_f64()
            },
        }
    }
}

/// Times `run` `count` times, one after another.
pub async fn time_sequential<F, Fut>(count: usize, mut run: F) -> Samples
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut samples = Samples::with_capacity(count);
    let started = Instant::now();
    for i in 0..count {
        let one = Instant::now();
        run(i).await;
        samples.record(one.elapsed());
    }
    samples.set_elapsed(started.elapsed());
    samples
}

/// `clients` concurrent clients, each sending `per_client` requests one after another;
/// `request(client, i)` returns the HTTP status, which must be a success (2xx).
pub async fn closed_loop<F, Fut>(clients: usize, per_client: usize, request: F) -> Samples
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = u16> + Send,
{
    closed_loop_retrying(clients, per_client, None, request)
        .await
        .0
}

/// [`closed_loop`] whose clients, given `retry_after`, send a request answered 503 again
/// after that wait (the request must be the same one again: the same like, the same row id);
/// the latencies are those of the answered attempts, and the count is of the 503s sent
/// again. Any other status but a success stops the benchmark.
pub async fn closed_loop_retrying<F, Fut>(
    clients: usize,
    per_client: usize,
    retry_after: Option<Duration>,
    request: F,
) -> (Samples, u64)
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = u16> + Send,
{
    let started = Instant::now();
    let tasks = (0..clients).map(|client| {
        let request = request.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_client);
            let mut retried = 0;
            for i in 0..per_client {
                loop {
                    let attempt = Instant::now();
                    let status = request(client, i).await;
                    if (200..300).contains(&status) {
                        latencies.push(attempt.elapsed());
                        break;
                    }
                    match retry_after {
                        Some(wait) if status == 503 => {
                            retried += 1;
                            tokio::time::sleep(wait).await;
                        }
                        _ => panic!("a request failed with {status}"),
                    }
                }
            }
            (latencies, retried)
        })
    });
    let mut samples = Samples::with_capacity(clients * per_client);
    let mut retried = 0;
    for outcome in futures::future::join_all(tasks).await {
        let (latencies, client_retried) = outcome.expect("client task");
        for latency in latencies {
            samples.record(latency);
        }
        retried += client_retried;
    }
    samples.set_elapsed(started.elapsed());
    (samples, retried)
}

/// The answers of an [`open_loop`], in the order sent, each with its latency.
pub struct Answers<T> {
    pub answers: Vec<(T, Duration)>,
    /// The wall time of the whole loop.
    pub elapsed: Duration,
}

impl<T> Answers<T> {
    /// The latencies of the answers `keep` accepts (per second: over the whole loop).
    pub fn samples(&self, keep: impl Fn(&T) -> bool) -> Samples {
        let mut samples = Samples::with_capacity(self.answers.len());
        for (answer, latency) in &self.answers {
            if keep(answer) {
                samples.record(*latency);
            }
        }
        samples.set_elapsed(self.elapsed);
        samples
    }
}

/// Sends `request(n)` at `per_second` for `duration`, each on its own task (an open loop: a
/// slow answer does not slow the rate).
pub async fn open_loop<F, Fut, T>(per_second: u64, duration: Duration, request: F) -> Answers<T>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let interval = Duration::from_secs(1) / per_second as u32;
    let total = (duration.as_secs_f64() * per_second as f64) as u64;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        let due = started + interval * n as u32;
        tokio::time::sleep_until(due.into()).await;
        let call = request(n);
        tasks.push(tokio::spawn(async move {
            let one = Instant::now();
            let answer = call.await;
            (answer, one.elapsed())
        }));
    }
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(task.await.expect("request task"));
    }
    Answers {
        answers,
        elapsed: started.elapsed(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub count: usize,
    pub p50_ms: f64,
    pub p75_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub per_second: f64,
}

/// One line of a report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub case: String,
    /// The case this one is compared with (measured in the same run).
    pub baseline: Option<String>,
    pub summary: Summary,
    pub note: String,
}

/// What machine produced the figures.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
}

impl Machine {
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| {
                line.strip_prefix("model name")
                    .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0.0);
        Self {
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model,
            memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
        }
    }
}

/// A benchmark's result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub name: String,
    pub started_at: String,
    pub machine: Machine,
    pub rows: Vec<Row>,
    /// Named figures that are not latency rows (ratios, targets met).
    pub findings: Vec<(String, String)>,
    /// Rates of the same work done by another system and by spillway (`bench peers`).
    pub comparisons: Vec<Comparison>,
}

/// The same work done by a peer (what users would pick instead) and by spillway, in one run.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub work: String,
    pub peer: String,
    /// Units of work per second (events, rows), the peer and spillway.
    pub peer_rate: f64,
    pub spillway_rate: f64,
    pub unit: String,
    pub note: String,
}

impl Comparison {
    /// How many times the peer's rate spillway's is.
    pub fn ratio(&self) -> f64 {
        self.spillway_rate / self.peer_rate.max(1e-9)
    }
}

impl Report {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            started_at: chrono::Utc::now().to_rfc3339(),
            machine: Machine::detect(),
            rows: Vec::new(),
            findings: Vec::new(),
            comparisons: Vec::new(),
        }
    }

    pub fn add(
        &mut self,
        case: &str,
        baseline: Option<&str>,
        samples: &Samples,
        note: &str,
    ) -> Summary {
        let summary = samples.summary();
        self.rows.push(Row {
            case: case.to_owned(),
            baseline: baseline.map(str::to_owned),
            summary: summary.clone(),
            note: note.to_owned(),
        });
        summary
    }

    pub fn finding(&mut self, name: &str, value: impl std::fmt::Display) {
        self.findings.push((name.to_owned(), value.to_string()));
    }

    pub fn compare(&mut self, comparison: Comparison) {
        self.comparisons.push(comparison);
    }

    fn row(&self, case: &str) -> Option<&Row> {
        self.rows.iter().find(|row| row.case == case)
    }

    /// The table, as Markdown (so it pastes into docs/benchmarks.md).
    pub fn table(&self) -> String {
        let machine = &self.machine;
        let mut out = format!(
            "benchmark `{}` at {} on {} CPUs ({}), {} GiB, Linux {}\n\n",
            self.name,
            self.started_at,
            machine.cpus,
            machine.cpu_model,
            machine.memory_gib,
            machine.kernel
        );
        if !self.rows.is_empty() {
            out.push_str(&self.latency_table());
        }
        if !self.comparisons.is_empty() {
            out.push_str(&self.comparison_table());
        }
        for (name, value) in &self.findings {
            out.push_str(&format!("\n- {name}: {value}"));
        }
        out.push('\n');
        out
    }

    fn latency_table(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "| case | n | p50 ms | p75 ms | p95 ms | p99 ms | per s | p50 vs baseline | note |\n",
        );
        out.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |\n");
        for row in &self.rows {
            let s = &row.summary;
            let versus = match row.baseline.as_deref().and_then(|b| self.row(b)) {
                Some(base) if base.summary.p50_ms > 0.0 => {
                    format!("{:.2}x `{}`", s.p50_ms / base.summary.p50_ms, base.case)
                }
                _ => "baseline".into(),
            };
            out.push_str(&format!(
                "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} | {} | {} |\n",
                row.case,
                s.count,
                s.p50_ms,
                s.p75_ms,
                s.p95_ms,
                s.p99_ms,
                s.per_second,
                versus,
                row.note
            ));
        }
        out
    }

    fn comparison_table(&self) -> String {
        let mut out = String::from(
            "| work | peer | peer rate | spillway rate | spillway / peer | note |\n\
             | --- | --- | ---: | ---: | ---: | --- |\n",
        );
        for c in &self.comparisons {
            out.push_str(&format!(
                "| {} | {} | {:.0} {unit}/s | {:.0} {unit}/s | {:.2}x | {} |\n",
                c.work,
                c.peer,
                c.peer_rate,
                c.spillway_rate,
                c.ratio(),
                c.note,
                unit = c.unit,
            ));
        }
        out
    }

    /// Prints the table and writes the JSON; returns the JSON's path.
    pub fn publish(&self) -> anyhow::Result<std::path::PathBuf> {
        println!("{}", self.table());
        let dir = crate::stack::workspace_root().join("target/bench");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!(
            "{}-{}.json",
            self.name,
            chrono::Utc::now().timestamp()
        ));
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)?;
        println!("written: {}", path.display());
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_sorted_samples() {
        let mut samples = Samples::default();
        for ms in (1..=100).rev() {
            samples.record(Duration::from_millis(ms));
        }
        samples.set_elapsed(Duration::from_secs(1));
        let summary = samples.summary();
        assert_eq!(summary.count, 100);
        assert!((summary.p50_ms - 51.0).abs() < 1.01, "{summary:?}");
        assert!((summary.p75_ms - 75.0).abs() < 1.01, "{summary:?}");
        assert!((summary.p99_ms - 99.0).abs() < 1.01, "{summary:?}");
        assert!((summary.per_second - 100.0).abs() < 1e-9);
    }
}
