//! `cargo xtask`: spillway's project tasks.
//!
//! - `up` / `down`: the local stack, the four services and a demo; everything it starts it
//!   stops again, by pid.
//! - `stack up|down|stop <component>|status`: only the infrastructure ([`stack`]).
//! - `env`: the client environment as shell exports.
//! - `test [args]`: start what is not running, build, run every test, stop what it started.
//! - `bench <name>`: a benchmark against the running stack (`spillway-bench`).
//! - `check-deploy [--live]`: the Helm chart, alerts, dashboards, Compose file and Dockerfile
//!   checked by the real tools ([`check_deploy`]).

mod check_deploy;
mod demo;
mod env;
mod paths;
mod process;
mod services;
mod stack;

use std::process::{Command, ExitCode};

use anyhow::{Result, bail};

use crate::paths::Paths;

const USAGE: &str = "usage: cargo xtask <command>
  up                       install and start the stack and the services, run the demo
  down                     stop the services and the stack (what `up` started)
  env                      print the client environment as shell exports
  test [cargo test args]   start what is missing, run every test, stop what it started
  bench <name> [args]      run a benchmark against the stack (stack, counters,
                           batch-writer, templates, reads, views, queues, peers)
  stack up|down|status     the infrastructure only
  stack stop <component>   stop one of kafka, redis, postgres, s3
  check-deploy             check the Helm chart, alert rules, dashboards, Compose file, Dockerfile
  check-deploy --live      run every dashboard and alert query against a Prometheus scraping the stack";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<ExitCode> {
    let paths = Paths::discover()?;
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["up"] => up(&paths),
        ["down"] => {
            services::stop(&paths)?;
            stack::down(&paths, &[])?;
            Ok(ExitCode::SUCCESS)
        }
        ["env"] => {
            env::print_exports(&paths);
            Ok(ExitCode::SUCCESS)
        }
        ["test", rest @ ..] => test(&paths, rest),
        ["bench", name, rest @ ..] => bench(&paths, name, rest),
        ["check-deploy"] => check_deploy::run(&paths, false),
        ["check-deploy", "--live"] => check_deploy::run(&paths, true),
        ["stack", "up"] => {
            stack::up(&paths)?;
            Ok(ExitCode::SUCCESS)
        }
        ["stack", "down"] => {
            stack::down(&paths, &[])?;
            Ok(ExitCode::SUCCESS)
        }
        ["stack", "stop", component] => {
            stack::down(&paths, &[component])?;
            Ok(ExitCode::SUCCESS)
        }
        ["stack", "status"] => {
            stack::status(&paths);
            Ok(ExitCode::SUCCESS)
        }
        _ => bail!("{USAGE}"),
    }
}

fn up(paths: &Paths) -> Result<ExitCode> {
    eprintln!("stack:");
    stack::up(paths)?;
    stack::postgres::run_sql_file(&paths.repo.join("config/sample-schema.sql"))?;
    eprintln!("services:");
    let binaries = services::build(paths)?;
    services::start(paths, &binaries)?;
    demo::run(paths)?;
    println!("\nspillway is up. Gateway http://127.0.0.1:8080 (API: docs/openapi.yaml);");
    println!("ops endpoints /healthz /readyz /metrics on :8080-8083. Client environment:");
    env::print_exports(paths);
    println!("Stop everything with `cargo xtask down`.");
    Ok(ExitCode::SUCCESS)
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn test(paths: &Paths, extra: &[&str]) -> Result<ExitCode> {
    eprintln!("stack:");
    let started = stack::up(paths)?;
    let outcome = (|| -> Result<bool> {
        services::build(paths)?;
        let status = cargo()
            .args(["test", "--workspace"])
            .args(extra)
            .current_dir(&paths.repo)
            // Tests write their own configuration; they only need the stack's addresses.
            .envs(env::stack_variables())
            .status()?;
        Ok(status.success())
    })();
    if !started.is_empty() {
        eprintln!("stopping what this run started:");
        stack::down(paths, &started)?;
    }
    Ok(if outcome? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn bench(paths: &Paths, name: &str, extra: &[&str]) -> Result<ExitCode> {
    stack::up(paths)?;
    let status = cargo()
        .args([
            "run",
            "--release",
            "-p",
            "spillway-tests",
            "--bin",
            "spillway-bench",
            "--",
        ])
        .arg(name)
        .args(extra)
        .current_dir(&paths.repo)
        .envs(env::stack_variables())
        .status()?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
