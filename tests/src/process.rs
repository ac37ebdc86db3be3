//! The service binaries as child processes: for tests that send SIGTERM or `kill -9`.
//! `cargo xtask test` builds the binaries before the tests run.

use std::{
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::TestConfig;

/// A service binary running as a child process.
pub struct ServiceProcess {
    pub name: String,
    pub port: u16,
    child: Child,
}

/// `target/debug` (or wherever this test binary's profile directory is).
fn binary_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/debug/deps/<test> (a test) or target/debug/<bin> (the chaos run) -> target/debug
    let dir = exe.parent().expect("the binary has a directory");
    match dir.file_name() {
        Some(name) if name == "deps" => dir.parent().unwrap_or(dir).to_path_buf(),
        _ => dir.to_path_buf(),
    }
}

/// A command that does not inherit the `SPILLWAY_*` settings of the shell the tests run in
/// (`cargo xtask env` exports the local stack's secret and configuration): a service process
/// reads the test's file and what the test passes, nothing else.
fn hermetic(mut command: Command) -> Command {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("SPILLWAY_") && !name.starts_with("SPILLWAY_TEST_") {
            command.env_remove(name.as_ref());
        }
    }
    command
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

impl ServiceProcess {
    /// Starts `name` (`counter`, `gateway`, ...) with the test's configuration and waits until
    /// its `/healthz` answers.
    pub async fn start(name: &str, config: &TestConfig) -> Self {
        Self::start_with_env(name, config, &[]).await
    }

    /// Like [`ServiceProcess::start`], with extra environment variables.
    pub async fn start_with_env(name: &str, config: &TestConfig, env: &[(&str, &str)]) -> Self {
        Self::start_at(name, config, free_port(), env).await
    }

    /// Like [`ServiceProcess::start_with_env`], listening on `port` (a restarted gateway keeps
    /// its address, as behind a Service).
    pub async fn start_at(
        name: &str,
        config: &TestConfig,
        port: u16,
        env: &[(&str, &str)],
    ) -> Self {
        config.migrate().await;
        Self::start_unmigrated_at(name, config, port, env).await
    }

    /// Starts the binary without migrating the schema first (the migration role's work).
    pub async fn start_unmigrated(name: &str, config: &TestConfig, env: &[(&str, &str)]) -> Self {
        Self::start_unmigrated_at(name, config, free_port(), env).await
    }

    async fn start_unmigrated_at(
        name: &str,
        config: &TestConfig,
        port: u16,
        env: &[(&str, &str)],
    ) -> Self {
        let binary = binary_dir().join(name);
        assert!(
            binary.exists(),
            "{} is missing: run `cargo build --workspace --bins` (cargo xtask test does)",
            binary.display()
        );
        let section = name.replace('-', "_").to_uppercase();
        let child = hermetic(Command::new(&binary))
            .env("SPILLWAY_CONFIG", &config.file)
            .env(
                format!("SPILLWAY_{section}__LISTEN"),
                format!("127.0.0.1:{port}"),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn service binary");
        let process = Self {
            name: name.to_owned(),
            port,
            child,
        };
        process.wait_healthy().await;
        process
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The names of the process's threads (`/proc/<pid>/task/*/comm`, at most 15 bytes each).
    pub fn thread_names(&self) -> Vec<String> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.child.id()));
        tasks
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
            .map(|name| name.trim_end().to_owned())
            .collect()
    }

    async fn wait_healthy(&self) {
        let url = self.url("/healthz");
        crate::eventually(
            &format!("{} /healthz", self.name),
            Duration::from_secs(60),
            || async {
                reqwest::get(&url)
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            },
        )
        .await;
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal the service");
    }

    /// `kill -9`: no drain, no commit.
    pub fn kill_hard(mut self) {
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `timeout` for the exit; returns the status and the time it took.
    pub fn terminate(mut self, timeout: Duration) -> (Option<ExitStatus>, Duration) {
        let started = Instant::now();
        self.signal(Signal::SIGTERM);
        while started.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (Some(status), started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
        (None, started.elapsed())
    }

    /// Runs the binary with a bad environment and returns its exit status and stderr.
    pub fn run_expecting_failure(
        name: &str,
        config: &TestConfig,
        env: &[(&str, &str)],
    ) -> (ExitStatus, String) {
        let output = hermetic(Command::new(binary_dir().join(name)))
            .env("SPILLWAY_CONFIG", &config.file)
            .envs(env.iter().copied())
            .output()
            .expect("run service binary");
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

/// `spillway-admin <args>` with the test's configuration; its exit status, stdout and stderr.
pub fn run_admin(config: &TestConfig, args: &[&str]) -> (ExitStatus, String, String) {
    let binary = binary_dir().join("spillway-admin");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --workspace --bins`",
        binary.display()
    );
    let output = hermetic(Command::new(binary))
        .env("SPILLWAY_CONFIG", &config.file)
        .args(args)
        .output()
        .expect("run spillway-admin");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
