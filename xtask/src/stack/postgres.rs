//! PostgreSQL from Debian's packages, as our own cluster on port 15432. `initdb` and `pg_ctl`
//! refuse to run as root, so as root they run as the `postgres` user, on a data directory that
//! user owns: `.stack/postgres`, or, when the clone sits under a directory `postgres` cannot
//! enter (a mode-700 temp dir, /root), `/var/tmp/spillway-<hash of the repo path>/postgres`.

use std::{
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::Component;
use crate::{paths::Paths, process};

pub const PORT: u16 = 15432;
pub const USER: &str = "spillway";
pub const DATABASE: &str = "spillway";

pub struct Postgres;

/// Where `initdb`, `pg_ctl` and `psql` live.
fn bin_dir() -> Option<PathBuf> {
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if dir.join("initdb").exists() {
            return Some(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|dir| dir.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

/// Runs a shell command line as the `postgres` user when we are root.
fn as_postgres(command_line: &str) -> Command {
    if process::is_root() {
        let mut command = Command::new("su");
        command.args(["postgres", "-s", "/bin/sh", "-c", command_line]);
        command
    } else {
        let mut command = Command::new("sh");
        command.args(["-c", command_line]);
        command
    }
}

fn postgres_can_enter(dir: &Path) -> bool {
    !process::is_root()
        || as_postgres(&format!("test -x '{}'", dir.display()))
            .status()
            .is_ok_and(|status| status.success())
}

/// The directory holding the data dir, socket and log (owned by `postgres` when root).
fn root_dir(paths: &Paths) -> Result<PathBuf> {
    let recorded = paths.state.join("postgres.path");
    if let Ok(dir) = std::fs::read_to_string(&recorded) {
        return Ok(PathBuf::from(dir.trim()));
    }
    let local = paths.state.join("postgres");
    std::fs::create_dir_all(&local)?;
    let dir = if postgres_can_enter(&paths.state) {
        local
    } else {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        paths.repo.hash(&mut hasher);
        let dir = PathBuf::from(format!("/var/tmp/spillway-{:x}/postgres", hasher.finish()));
        eprintln!(
            "  postgres cannot enter {}; its data goes to {}",
            paths.state.display(),
            dir.display()
        );
        dir
    };
    std::fs::create_dir_all(&dir)?;
    if process::is_root() {
        process::run(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir),
        )?;
        if let Some(parent) = dir.parent() {
            process::run(Command::new("chmod").arg("755").arg(parent))?;
        }
    }
    std::fs::write(&recorded, dir.display().to_string())?;
    Ok(dir)
}

fn psql(bin: &Path, sql: &str) -> Result<String> {
    process::run(Command::new(bin.join("psql")).args([
        "-h",
        "127.0.0.1",
        "-p",
        &PORT.to_string(),
        "-U",
        USER,
        "-d",
        "postgres",
        "-tAc",
        sql,
    ]))
}

/// Runs a SQL file against the spillway database (the sample schema of `up`).
pub fn run_sql_file(file: &Path) -> Result<()> {
    let bin = bin_dir().context("psql not found")?;
    process::run(
        Command::new(bin.join("psql"))
            .args([
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &PORT.to_string(),
            ])
            .args(["-U", USER, "-d", DATABASE, "-f"])
            .arg(file),
    )?;
    Ok(())
}

impl Component for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn port(&self) -> u16 {
        PORT
    }

    fn install(&self, _: &Paths) -> Result<()> {
        if bin_dir().is_none() {
            process::apt_install(&["postgresql"])?;
        }
        Ok(())
    }

    fn start(&self, paths: &Paths) -> Result<()> {
        let bin = bin_dir().context("PostgreSQL's initdb not found after installing")?;
        let root = root_dir(paths)?;
        let data = root.join("data");
        if !data.join("PG_VERSION").exists() {
            process::run(&mut as_postgres(&format!(
                "'{}' -D '{}' -U {USER} --auth=trust -E UTF8",
                bin.join("initdb").display(),
                data.display()
            )))
            .context("initdb")?;
        }
        let options = format!(
            "-p {PORT} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=300",
            root = root.display()
        );
        let log = root.join("postgres.log");
        process::run(&mut as_postgres(&format!(
            "'{}' -D '{}' -l '{}' -o '{options}' -w -t 60 start",
            bin.join("pg_ctl").display(),
            data.display(),
            log.display()
        )))
        .with_context(|| process::log_tail(&log))?;
        let pid = std::fs::read_to_string(data.join("postmaster.pid"))?
            .lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .context("reading postmaster.pid")?;
        process::write_pid(paths, self.name(), pid)?;
        process::wait_until("postgres", Duration::from_secs(30), Some(&log), || {
            psql(&bin, "SELECT 1").is_ok()
        })?;
        if psql(
            &bin,
            &format!("SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"),
        )?
        .trim()
            != "1"
        {
            psql(&bin, &format!("CREATE DATABASE {DATABASE}"))?;
        }
        Ok(())
    }

    fn stop(&self, paths: &Paths) -> Result<bool> {
        if process::read_pid(paths, self.name()).is_none() {
            return Ok(false);
        }
        let bin = bin_dir().context("pg_ctl not found")?;
        let data = root_dir(paths)?.join("data");
        let stopped = process::run(&mut as_postgres(&format!(
            "'{}' -D '{}' -m fast -w stop",
            bin.join("pg_ctl").display(),
            data.display()
        )));
        std::fs::remove_file(paths.pid_file(self.name()))?;
        if let Err(error) = stopped
            && process::port_open(PORT)
        {
            bail!("stopping postgres: {error}");
        }
        Ok(true)
    }
}
