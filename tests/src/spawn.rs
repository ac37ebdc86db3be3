//! The services in-process, each on port 0, stopped through its shutdown token. Each helper
//! migrates the test's schema first, as `spillway-admin migrate` does before a deployment.
//! `SPILLWAY_TEST_LOG=<directive>` (e.g. `warn`) shows the in-process services' logs.

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::TestConfig;

/// A service running in this test process.
pub struct RunningService {
    pub port: u16,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningService {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The service's `/metrics` page (Prometheus text).
    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Cancels the token and waits for the service to drain and stop.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await?
    }
}

/// Installs a log subscriber when `SPILLWAY_TEST_LOG` names a level (once per process).
fn show_logs_when_asked() {
    if let Ok(level) = std::env::var("SPILLWAY_TEST_LOG") {
        spillway_core::telemetry::init(&spillway_core::config::LogSettings {
            format: spillway_core::config::LogFormat::Pretty,
            level,
        });
    }
}

fn run<F>(port: u16, run: impl FnOnce(CancellationToken) -> F) -> RunningService
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    show_logs_when_asked();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(shutdown.clone()));
    RunningService {
        port,
        shutdown,
        task,
    }
}

pub async fn spawn_gateway(config: &TestConfig) -> RunningService {
    config.migrate().await;
    let app = gateway::Application::build(config.settings())
        .await
        .expect("gateway starts");
    run(app.port(), |token| app.run_until_stopped(token))
}

pub async fn spawn_counter(config: &TestConfig) -> RunningService {
    config.migrate().await;
    let app = counter::Application::build(config.settings())
        .await
        .expect("counter starts");
    run(app.port(), |token| app.run_until_stopped(token))
}

pub async fn spawn_batch_writer(config: &TestConfig) -> RunningService {
    config.migrate().await;
    let app = batch_writer::Application::build(config.settings())
        .await
        .expect("batch-writer starts");
    run(app.port(), |token| app.run_until_stopped(token))
}

pub async fn spawn_template_warmup(config: &TestConfig) -> RunningService {
    config.migrate().await;
    let app = template_warmup::Application::build(config.settings())
        .await
        .expect("template-warmup starts");
    run(app.port(), |token| app.run_until_stopped(token))
}
