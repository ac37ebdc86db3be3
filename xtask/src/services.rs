//! The four spillway services as local processes: built with cargo, the database migrated by
//! `spillway-admin migrate` (the services only check the schema), started detached with the
//! sample configuration, ready when `/readyz` answers 200.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result};

use crate::{env, paths::Paths, process, topology::Topology};

/// Name and ops port of each service.
pub const SERVICES: [(&str, u16); 4] = [
    ("gateway", 8080),
    ("counter", 8081),
    ("batch-writer", 8082),
    ("template-warmup", 8083),
];

/// `cargo build --workspace --bins`; returns the directory holding the binaries.
pub fn build(paths: &Paths) -> Result<PathBuf> {
    build_bins(paths, &["--workspace"], "debug")
}

/// `cargo build --release` of the four services and the benchmark harness in one call;
/// the directory that holds the binaries.
pub fn build_release_with_bench(paths: &Paths) -> Result<PathBuf> {
    let args = [
        "--release",
        "-p",
        "gateway",
        "-p",
        "counter",
        "-p",
        "batch-writer",
        "-p",
        "template-warmup",
        "-p",
        "spillway-tests",
    ];
    build_bins(paths, &args, "release")
}

/// `cargo build --bins <args>`; the directory of `profile` that holds the binaries.
fn build_bins(paths: &Paths, args: &[&str], profile: &str) -> Result<PathBuf> {
    let status = cargo()
        .args(["build", "--bins"])
        .args(args)
        .current_dir(&paths.repo)
        .status()?;
    anyhow::ensure!(status.success(), "cargo build {} failed", args.join(" "));
    Ok(target_dir(paths)?.join(profile))
}

/// The cargo that runs xtask (`CARGO`), else the one on the PATH.
pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The directory cargo builds into (`CARGO_TARGET_DIR` when set).
pub fn target_dir(paths: &Paths) -> Result<PathBuf> {
    let metadata = process::run(
        cargo()
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .current_dir(&paths.repo),
    )?;
    let metadata: serde_json::Value = serde_json::from_str(&metadata)?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")
}

/// A GET answered with this status (plain HTTP/1.1, no client library needed).
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// `spillway-admin migrate` with the services' environment: the migrations and the owned
/// sinks' tables, what the Helm chart's migration Job does before a deployment.
pub fn migrate(paths: &Paths, binaries: &std::path::Path, topology: Topology) -> Result<()> {
    let status = Command::new(binaries.join("spillway-admin"))
        .arg("migrate")
        .current_dir(&paths.repo)
        .envs(env::variables(paths, topology))
        .status()
        .context("running spillway-admin migrate")?;
    anyhow::ensure!(status.success(), "spillway-admin migrate failed");
    eprintln!("  {:<16} database migrated", "spillway-admin");
    Ok(())
}

/// The services not listening yet: the ones [`start`] will start, so a caller can stop
/// exactly those afterwards (also when starting fails half-way).
pub fn not_running() -> Vec<&'static str> {
    SERVICES
        .iter()
        .filter(|(_, port)| !process::port_open(*port))
        .map(|(name, _)| *name)
        .collect()
}

/// Migrates the database, then starts every service whose port is free and waits until each
/// is ready.
pub fn start(paths: &Paths, binaries: &std::path::Path, topology: Topology) -> Result<()> {
    migrate(paths, binaries, topology)?;
    for (name, port) in SERVICES {
        if process::port_open(port) {
            eprintln!("  {name:<16} :{port} already running");
            continue;
        }
        let mut command = Command::new(binaries.join(name));
        command
            .current_dir(&paths.repo)
            .envs(env::variables(paths, topology));
        process::spawn_detached(paths, name, &mut command)?;
    }
    for (name, port) in SERVICES {
        process::wait_until(
            &format!("{name} /readyz"),
            Duration::from_secs(90),
            Some(&paths.log(name)),
            || http_status(port, "/readyz") == Some(200),
        )?;
        eprintln!("  {name:<16} http://127.0.0.1:{port}  ready");
    }
    Ok(())
}

pub fn stop(paths: &Paths) -> Result<()> {
    for (name, _) in SERVICES.iter().rev() {
        if process::stop_recorded(paths, name)? {
            eprintln!("  {name:<16} stopped");
        }
    }
    Ok(())
}
