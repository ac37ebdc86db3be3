//! The local stack: Kafka (KRaft, jars from Maven Central on the machine's JDK), Redis and
//! PostgreSQL (Debian's packages) and MinIO (built from its Go module), each installed when
//! missing, started only when its port does not answer, and stopped only when we started it.

pub mod kafka;
pub mod postgres;
pub mod redis;
pub mod s3;

use std::time::Instant;

use anyhow::Result;

use crate::{paths::Paths, process};

/// One component of the stack.
pub trait Component {
    fn name(&self) -> &'static str;
    fn port(&self) -> u16;
    /// Installs or fetches what is missing (cached outside the clone).
    fn install(&self, paths: &Paths) -> Result<()>;
    /// Starts it and waits until it serves; records the pid under `.stack/pids`.
    fn start(&self, paths: &Paths) -> Result<()>;
    /// Stops what `start` started.
    fn stop(&self, paths: &Paths) -> Result<bool> {
        process::stop_recorded(paths, self.name())
    }
}

pub fn components() -> Vec<Box<dyn Component>> {
    vec![
        Box::new(kafka::Kafka),
        Box::new(redis::Redis),
        Box::new(postgres::Postgres),
        Box::new(s3::MinIo),
    ]
}

/// Starts every component that is not running; returns the names of those it started.
pub fn up(paths: &Paths) -> Result<Vec<&'static str>> {
    let mut started = Vec::new();
    for component in components() {
        let clock = Instant::now();
        let state = if process::port_open(component.port()) {
            "already running"
        } else {
            component.install(paths)?;
            component.start(paths)?;
            started.push(component.name());
            "started"
        };
        eprintln!(
            "  {:<9} 127.0.0.1:{:<6} {:<16} {:>6.1} s",
            component.name(),
            component.port(),
            state,
            clock.elapsed().as_secs_f64()
        );
    }
    Ok(started)
}

/// Stops the named components (all when `names` is empty) that this stack started.
pub fn down(paths: &Paths, names: &[&str]) -> Result<()> {
    for component in components().into_iter().rev() {
        if names.is_empty() || names.contains(&component.name()) {
            let stopped = component.stop(paths)?;
            eprintln!(
                "  {:<9} {}",
                component.name(),
                if stopped { "stopped" } else { "not ours" }
            );
        }
    }
    Ok(())
}

pub fn status(paths: &Paths) {
    for component in components() {
        let ours = process::read_pid(paths, component.name()).is_some_and(process::alive);
        let state = match (process::port_open(component.port()), ours) {
            (true, true) => "running (ours)",
            (true, false) => "running (not ours)",
            (false, _) => "down",
        };
        println!(
            "  {:<9} 127.0.0.1:{:<6} {state}",
            component.name(),
            component.port()
        );
    }
}
