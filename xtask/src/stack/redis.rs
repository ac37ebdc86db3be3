//! Redis from Debian's `redis-server` package, as our own process on port 16379 with its data
//! in `.stack/redis` (append-only file on: acknowledged counters survive a restart), with the
//! memory policy docs/operations.md recommends ("Redis settings"): once full, only keys with a
//! TTL (cached views) are evicted, never counters, pending writes, pools or rooms.

use std::{process::Command, time::Duration};

use anyhow::Result;

use super::{Component, resp};
use crate::{paths::Paths, process};

pub const PORT: u16 = 16379;
/// A limit far above what the stack holds: without one the eviction policy never applies, and
/// only a runaway should reach it.
const MAX_MEMORY: &str = "2gb";
pub const MAX_MEMORY_POLICY: &str = "volatile-ttl";

pub struct Redis;

impl Component for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn port(&self) -> u16 {
        PORT
    }

    fn install(&self, _: &Paths) -> Result<()> {
        if !process::on_path("redis-server") {
            process::apt_install(&["redis-server"])?;
        }
        Ok(())
    }

    fn start(&self, paths: &Paths) -> Result<()> {
        let dir = paths.state.join("redis");
        std::fs::create_dir_all(&dir)?;
        let port = PORT.to_string();
        process::spawn_detached(
            paths,
            self.name(),
            Command::new("redis-server")
                .args([
                    "--port",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                    "--save",
                    "",
                    "--maxmemory",
                    MAX_MEMORY,
                    "--maxmemory-policy",
                    MAX_MEMORY_POLICY,
                ])
                .arg("--dir")
                .arg(&dir),
        )?;
        process::wait_until(
            "redis",
            Duration::from_secs(20),
            Some(&paths.log(self.name())),
            || resp::answers_ping(PORT),
        )
    }
}
