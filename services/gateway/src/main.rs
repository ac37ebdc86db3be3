//! The gateway binary: load the configuration, start, run until SIGTERM. `gateway openapi
//! [--json|--yaml]` prints the OpenAPI document of the configuration instead (`--config
//! <file>` reads that file alone, without the `SPILLWAY_*` variables), connecting to nothing.

use anyhow::{Context, bail};
use spillway_core::{config::Settings, shutdown, telemetry};

const USAGE: &str = "usage: gateway [openapi [--json|--yaml] [--config <file>]]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => serve().await,
        Some("openapi") => print_document(&args[1..]),
        Some(_) => bail!("{USAGE}"),
    }
}

async fn serve() -> anyhow::Result<()> {
    let _faults = spillway_core::faults::enable_from_env();
    let settings = Settings::load()?;
    let _telemetry = telemetry::init_service(&settings, "gateway")?;
    let application = gateway::Application::build(settings).await?;
    application.run_until_stopped(shutdown::on_signals()).await
}

/// `gateway openapi [--json|--yaml] [--config <file>]`: the document on stdout (JSON unless
/// `--yaml`).
fn print_document(args: &[String]) -> anyhow::Result<()> {
    let (mut yaml, mut file) = (false, None);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--yaml" => yaml = true,
            "--json" => yaml = false,
            "--config" => file = Some(args.next().context(USAGE)?),
            _ => bail!("{USAGE}"),
        }
    }
    let settings = match file {
        Some(file) => Settings::load_file(std::path::Path::new(file))?,
        None => Settings::load()?,
    };
    let document = gateway::openapi::document(&settings);
    let text = if yaml {
        document.to_yaml()?
    } else {
        document.to_pretty_json()?
    };
    println!("{}", text.trim_end());
    Ok(())
}
