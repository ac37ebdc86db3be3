//! The S3-compatible server: MinIO, built once from its Go module into the cache (a few
//! minutes on an empty Go cache), run on port 19000 with its data in `.stack/s3`.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result};

use super::Component;
use crate::{paths::Paths, process};

pub const PORT: u16 = 19000;
pub const CONSOLE_PORT: u16 = 19001;
pub const ACCESS_KEY: &str = "spillway";
pub const SECRET_KEY: &str = "spillway-secret";
/// MinIO publishes no semver tags; this is the main-branch snapshot verified here.
const MINIO_MODULE: &str = "github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c";

pub struct MinIo;

fn ready() -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", PORT)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let request =
        "GET /minio/health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let mut reply = [0u8; 12];
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read(&mut reply).is_ok()
        && reply.starts_with(b"HTTP/1.1 200")
}

impl Component for MinIo {
    fn name(&self) -> &'static str {
        "s3"
    }

    fn port(&self) -> u16 {
        PORT
    }

    fn install(&self, paths: &Paths) -> Result<()> {
        if paths.cache.join("bin/minio").exists() {
            return Ok(());
        }
        eprintln!("building MinIO from its Go module (once; a few minutes)");
        process::run(
            Command::new("go")
                .args(["install", MINIO_MODULE])
                .env("GOBIN", paths.cache.join("bin"))
                .current_dir(&paths.cache),
        )
        .context("go install of MinIO")?;
        Ok(())
    }

    fn start(&self, paths: &Paths) -> Result<()> {
        let dir = paths.state.join("s3");
        std::fs::create_dir_all(&dir)?;
        process::spawn_detached(
            paths,
            self.name(),
            Command::new(paths.cache.join("bin/minio"))
                .arg("server")
                .arg(&dir)
                .args(["--address", &format!("127.0.0.1:{PORT}")])
                .args(["--console-address", &format!("127.0.0.1:{CONSOLE_PORT}")])
                .env("MINIO_ROOT_USER", ACCESS_KEY)
                .env("MINIO_ROOT_PASSWORD", SECRET_KEY),
        )?;
        process::wait_until(
            "MinIO",
            Duration::from_secs(30),
            Some(&paths.log(self.name())),
            ready,
        )
    }

    fn stop(&self, paths: &Paths) -> Result<bool> {
        let stopped = process::stop_recorded(paths, self.name())?;
        // MinIO keeps deleted objects in a trash folder for a while; do not let it grow.
        let _ = std::fs::remove_dir_all(paths.state.join("s3/.minio.sys/tmp/.trash"));
        Ok(stopped)
    }
}
