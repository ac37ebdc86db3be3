//! `cargo xtask`: spillway's project tasks.
//!
//! - `up` / `down`: the local stack, the four services and a demo; everything it starts it
//!   stops again, by pid.
//! - `stack up|down|start <component>|stop <name>|kill <node>|status`: only the infrastructure ([`stack`]).
//! - `env`: the client environment as shell exports.
//! - `token --sub <member>`: a member JWT the local stack's gateway accepts ([`token`]).
//! - `test [args]`: start what is not running, build, run every test and the short chaos run,
//!   stop what it started.
//! - `chaos [--minutes N]`: every service killed in turn and Redis flushed under a mixed load.
//! - `bench <name>`: a benchmark against the running stack (`spillway-bench`).
//! - `check-deploy [--live]`: the Helm chart, alerts, dashboards, Compose file and Dockerfile
//!   checked by the real tools ([`check_deploy`]).
//! - `openapi [--check]`: docs/openapi.yaml written (or checked) from the gateway's generated
//!   document; `check-api`: schemathesis against the running gateway ([`check_api`]).
//!
//! `up`, `stack up|stop|status`, `env` and `test` take the topology flags of [`topology`]
//! (`--redis-cluster`, `--kafka-brokers 3`, `--cluster`) before any other argument.

mod check_api;
mod check_deploy;
mod demo;
mod env;
mod paths;
mod process;
mod services;
mod stack;
mod token;
mod topology;

use std::process::{Command, ExitCode};

use anyhow::{Result, bail};

use crate::{paths::Paths, topology::Topology};

const USAGE: &str = "usage: cargo xtask <command>
  up [topology]            install and start the stack and the services, run the demo
  down                     stop the services and the stack (what `up` started, any topology)
  env [topology]           print the client environment as shell exports
  token --sub <member> [--scope \"<scopes>\"] [--ttl 1h]
                           print a member JWT signed with the stack's secret
  test [topology] [cargo test args]
                           start what is missing, run every test, stop what it started
  chaos [--minutes N] [--seed S]
                           kill every service in turn and flush Redis under a mixed load,
                           then check nothing acknowledged was lost or doubled (default 2)
  bench <name> [args]      run a benchmark against the stack (stack, counters,
                           batch-writer, templates, reads, views, queues, peers,
                           scale: single nodes, then the cluster topology)
  stack up|down|status [topology]
                           the infrastructure only
  stack start <component>  start one component alone (its nodes that are down, for a cluster)
  stack stop <name>        stop one of kafka, redis, postgres, s3, kafka-cluster,
                           redis-cluster, or one cluster node (kafka-broker-2, redis-cluster-17003)
  stack kill <node>        SIGKILL one cluster node; for a Redis master, wait for its replica
                           to take over and name it
  check-deploy             check the Helm chart, alert rules, dashboards, Compose file, Dockerfile
  check-deploy --live      run every dashboard and alert query against a Prometheus scraping the stack
  openapi [--check]        write docs/openapi.yaml, the gateway's document of config/spillway.toml
                           (--check: fail when the file differs)
  check-api                schemathesis against the gateway's served document (starts what is
                           missing, stops what it started)
topology (default: one node each, or what SPILLWAY_TEST_REDIS_CLUSTER / SPILLWAY_TEST_KAFKA_BROKERS name):
  --redis-cluster          add a 3-master, 3-replica Redis Cluster on 17001-17006
  --kafka-brokers 3        three Kafka brokers on 29092, 29192, 29292 instead of one
  --cluster                both";

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
        ["up", flags @ ..] => up(&paths, Topology::from_flags_only(flags)?),
        ["down", flags @ ..] => {
            services::stop(&paths)?;
            stack::down(&paths, Topology::from_flags_only(flags)?, &[])?;
            Ok(ExitCode::SUCCESS)
        }
        ["env", flags @ ..] => {
            env::print_exports(&paths, Topology::from_flags_only(flags)?);
            Ok(ExitCode::SUCCESS)
        }
        ["token", rest @ ..] => {
            println!(
                "{}",
                token::TokenRequest::parse(rest)?.sign(&token::secret())?
            );
            Ok(ExitCode::SUCCESS)
        }
        ["test", rest @ ..] => {
            let (topology, cargo_args) = Topology::from_flags(rest)?;
            test(&paths, topology, cargo_args)
        }
        ["bench", name, rest @ ..] => bench(&paths, name, rest),
        ["chaos", rest @ ..] => chaos(&paths, rest),
        ["check-deploy"] => check_deploy::run(&paths, false),
        ["check-deploy", "--live"] => check_deploy::run(&paths, true),
        ["openapi"] => check_api::openapi(&paths, false),
        ["openapi", "--check"] => check_api::openapi(&paths, true),
        ["check-api"] => check_api::run(&paths),
        ["stack", command, rest @ ..] => {
            stack_command(&paths, command, rest)?;
            Ok(ExitCode::SUCCESS)
        }
        _ => bail!("{USAGE}"),
    }
}

fn stack_command(paths: &Paths, command: &str, rest: &[&str]) -> Result<()> {
    match (command, rest) {
        ("up", flags) => stack::up(paths, Topology::from_flags_only(flags)?).map(drop),
        ("start", [name]) => stack::start(paths, name),
        ("down", flags) => stack::down(paths, Topology::from_flags_only(flags)?, &[]),
        ("stop", [name, flags @ ..]) => stack::stop(paths, Topology::from_flags_only(flags)?, name),
        ("kill", [node]) => stack::kill(paths, node),
        ("status", flags) => {
            stack::status(paths, Topology::from_flags_only(flags)?);
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}

fn up(paths: &Paths, topology: Topology) -> Result<ExitCode> {
    eprintln!("stack:");
    stack::up(paths, topology)?;
    stack::postgres::run_sql_file(&paths.repo.join("config/sample-schema.sql"))?;
    eprintln!("services:");
    let binaries = services::build(paths)?;
    services::start(paths, &binaries, topology)?;
    demo::run(paths, topology)?;
    println!(
        "\nspillway is up. Gateway http://127.0.0.1:8080 (API: /openapi.json, shown at /docs);"
    );
    println!("ops endpoints /healthz /readyz /metrics on :8080-8083. Client environment:");
    env::print_exports(paths, topology);
    println!("Stop everything with `cargo xtask down`.");
    Ok(ExitCode::SUCCESS)
}

fn test(paths: &Paths, topology: Topology, extra: &[&str]) -> Result<ExitCode> {
    eprintln!("stack:");
    let started = stack::up(paths, topology)?;
    let outcome = (|| -> Result<bool> {
        let binaries = services::build(paths)?;
        let status = services::cargo()
            .args(["test", "--workspace"])
            .args(extra)
            .current_dir(&paths.repo)
            // Tests write their own configuration; they only need the stack's addresses.
            .envs(env::stack_variables(topology))
            .status()?;
        if !status.success() {
            return Ok(false);
        }
        // The whole suite ends with the short chaos run; a filtered run does not.
        if extra.is_empty() {
            return run_chaos(&binaries, topology, &["--minutes", SHORT_CHAOS_MINUTES]);
        }
        Ok(true)
    })();
    if !started.is_empty() {
        eprintln!("stopping what this run started:");
        stack::down(paths, topology, &started)?;
    }
    Ok(if outcome? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The chaos run's length inside `cargo xtask test`.
const SHORT_CHAOS_MINUTES: &str = "2";

/// `spillway-chaos` (built with the services) against the stack; true when nothing
/// acknowledged was lost or doubled.
fn run_chaos(binaries: &std::path::Path, topology: Topology, args: &[&str]) -> Result<bool> {
    eprintln!("chaos run {}:", args.join(" "));
    let status = Command::new(binaries.join("spillway-chaos"))
        .args(args)
        .envs(env::stack_variables(topology))
        .status()?;
    Ok(status.success())
}

/// `cargo xtask chaos [--minutes N] [--seed S]`: start what is missing, run the chaos run,
/// stop what it started.
fn chaos(paths: &Paths, args: &[&str]) -> Result<ExitCode> {
    let topology = Topology::from_env()?;
    let started = stack::up(paths, topology)?;
    let outcome = services::build(paths).and_then(|binaries| run_chaos(&binaries, topology, args));
    if !started.is_empty() {
        stack::down(paths, topology, &started)?;
    }
    Ok(if outcome? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn bench(paths: &Paths, name: &str, extra: &[&str]) -> Result<ExitCode> {
    // `scale` runs on the single nodes, then on the local cluster topology beside them.
    let scale = name == "scale";
    let topology = if scale {
        Topology::SINGLE
    } else {
        Topology::from_env()?
    };
    stack::up(paths, topology)?;
    let mut variables = env::stack_variables(topology);
    if scale {
        stack::up(paths, Topology::CLUSTER)?;
        variables.extend(env::cluster_beside());
    }
    // One release build of the services (benchmarks run them as processes of their own)
    // and the bench binary: two cargo calls with different package sets would unify the
    // features differently and rebuild spillway-core and its dependents each time.
    let binaries = services::build_release_with_bench(paths)?;
    let status = Command::new(binaries.join("spillway-bench"))
        .arg(name)
        .args(extra)
        .current_dir(&paths.repo)
        .envs(variables)
        .status()?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
