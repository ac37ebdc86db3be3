//! A class-data-sharing archive of the Kafka classes (JDK 17's dynamic AppCDS), so the three
//! brokers of the cluster topology and its tool runs start faster: on two cores, three JVMs
//! loading and verifying the same ~10,000 classes at once were most of the start time.
//!
//! JDK 17 records an archive only when a JVM started with `-XX:ArchiveClassesAtExit` exits
//! cleanly: broker 1 is started that way while no archive exists, writes it when it is stopped
//! (not when it is killed), and [`keep_recorded`] moves it into the cache, named after the JDK
//! it was made with (`~/.cache/spillway/kafka-4.4.0/cds/`), where every later start finds it.
//! An archive the JVM cannot use is ignored by the JVM itself (`-Xshare:auto`, the default).

use std::{
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

use anyhow::Result;

use super::kafka;
use crate::paths::Paths;

/// The `java` on PATH, resolved, and when it was installed: a JDK upgrade makes a new archive.
fn jdk_fingerprint() -> Option<u64> {
    let path = std::env::var_os("PATH")?;
    let java = std::env::split_paths(&path)
        .map(|dir| dir.join("java"))
        .find(|candidate| candidate.is_file())?
        .canonicalize()
        .ok()?;
    let installed = std::fs::metadata(&java).and_then(|m| m.modified()).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    java.hash(&mut hasher);
    installed
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_secs()
        .hash(&mut hasher);
    Some(hasher.finish())
}

/// Where the archive for this JDK lives in the cache (whether or not it exists yet).
fn archive(paths: &Paths) -> Option<PathBuf> {
    let lib = kafka::lib_dir(paths);
    let dir = lib.parent().unwrap_or(&paths.cache).join("cds");
    Some(dir.join(format!("broker-classes-{:x}.jsa", jdk_fingerprint()?)))
}

/// Where broker 1 records a new archive in this clone, before it is kept.
fn recording(paths: &Paths) -> PathBuf {
    paths.state.join("kafka-cluster/broker-classes.jsa")
}

/// The JVM flags that use the archive when there is one; `record` asks for one to be recorded
/// when there is none (for one JVM only: two would write the same file).
pub fn jvm_flags(paths: &Paths, record: bool) -> Vec<String> {
    // Archive warnings (classes it cannot hold, an archive of another JDK) would go to stdout.
    let mut flags = vec!["-Xlog:cds*=off".to_owned()];
    match archive(paths) {
        Some(archive) if archive.exists() => {
            flags.push(format!("-XX:SharedArchiveFile={}", archive.display()));
        }
        Some(_) if record => flags.push(format!(
            "-XX:ArchiveClassesAtExit={}",
            recording(paths).display()
        )),
        _ => {}
    }
    flags
}

/// Whether the JVM can map `file` with the Kafka classpath. A broker killed while it wrote the
/// archive (the stop's grace period ran out) leaves half of one, and half an archive crashes
/// the JVM (SIGBUS) even with `-Xshare:auto`: it must never reach the cache.
fn usable(paths: &Paths, file: &Path) -> bool {
    Command::new("java")
        .arg("-Xshare:on")
        .arg(format!(
            "-XX:ErrorFile={}",
            paths.log("kafka-cds-check-crash").display()
        ))
        .arg(format!("-XX:SharedArchiveFile={}", file.display()))
        .arg("-cp")
        .arg(kafka::classpath(paths))
        .arg("-version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// After the brokers stopped: moves an archive broker 1 recorded into the cache (copy, then
/// rename, so a JVM starting meanwhile never reads half a file).
pub fn keep_recorded(paths: &Paths) -> Result<()> {
    let recorded = recording(paths);
    if !recorded.exists() {
        return Ok(());
    }
    if let Some(archive) = archive(paths)
        && !archive.exists()
        && usable(paths, &recorded)
        && let Some(dir) = archive.parent()
    {
        std::fs::create_dir_all(dir)?;
        let partial = archive.with_extension(format!("partial-{}", std::process::id()));
        std::fs::copy(&recorded, &partial)?;
        std::fs::rename(&partial, &archive)?;
        eprintln!("  kept the brokers' class archive: {}", archive.display());
    }
    std::fs::remove_file(&recorded)?;
    Ok(())
}
