//! `cargo xtask chaos [--minutes N] [--seed S]`: the chaos run (see `spillway_tests::chaos`).
//! Prints its table and exits non-zero when anything acknowledged was lost or doubled.

use std::{process::ExitCode, time::Duration};

use spillway_tests::chaos::{self, ChaosOptions};

fn options() -> anyhow::Result<ChaosOptions> {
    let mut options = ChaosOptions::chaos(Duration::from_secs(120), 1);
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        match pair {
            [flag, value] if flag == "--minutes" => {
                options.duration = Duration::from_secs_f64(value.parse::<f64>()? * 60.0);
            }
            [flag, value] if flag == "--seed" => options.seed = value.parse()?,
            _ => anyhow::bail!("usage: spillway-chaos [--minutes N] [--seed S]"),
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let options = options()?;
    eprintln!(
        "chaos: {:.1} minutes of load while every service is killed in turn and Redis is flushed once",
        options.duration.as_secs_f64() / 60.0
    );
    let report = chaos::run(options).await;
    println!("{report}");
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
