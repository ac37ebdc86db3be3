//! The counter service binary: load the configuration, start, run until SIGTERM.

use spillway_core::{config::Settings, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _faults = spillway_core::faults::enable_from_env();
    let settings = Settings::load()?;
    let _telemetry = telemetry::init_service(&settings, "counter")?;
    let application = counter::Application::build(settings).await?;
    application.run_until_stopped(shutdown::on_signals()).await
}
