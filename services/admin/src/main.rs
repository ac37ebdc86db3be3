//! `spillway-admin`: the operator commands shipped in the image beside the four services.
//!
//! - [`migrate`]: applies spillway's database migrations and creates the tables of owned
//!   sinks, with credentials that may change the schema; the Helm chart runs it as a
//!   pre-install/pre-upgrade Job so that the services themselves need only DML rights.
//! - [`healthcheck`]: exits 0 when an ops endpoint answers 2xx; the Compose file's
//!   healthchecks use it because the image has no curl or wget.
//! - [`dlq`]: list, show, replay and purge the dead letters of `kafka.dlq`.
//! - [`queue`]: show and lift a waiting room's hold after Redis lost its state.
//!
//! Each subcommand is one variant of [`Command`] and one module holding its arguments and
//! its `run`.

mod dlq;
mod healthcheck;
mod migrate;
mod queue;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "spillway-admin", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply spillway's database migrations to `database.schema` and create the tables of owned
    /// sinks (the configuration is loaded like the services load it: SPILLWAY_CONFIG, then
    /// SPILLWAY_* variables).
    Migrate,
    /// Exit 0 when URL answers 2xx, 1 otherwise (for container healthchecks).
    Healthcheck(healthcheck::Args),
    /// The dead-letter topic: list, show, replay to the source topic, purge.
    #[command(subcommand)]
    Dlq(dlq::Command),
    /// A waiting room's hold after Redis lost its state: show it, lift it.
    #[command(subcommand)]
    Queue(queue::Command),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Migrate => migrate::run().await,
        Command::Healthcheck(args) => healthcheck::run(&args),
        Command::Dlq(command) => dlq::run(command).await,
        Command::Queue(command) => queue::run(command).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("spillway-admin: {error:#}");
            ExitCode::FAILURE
        }
    }
}
