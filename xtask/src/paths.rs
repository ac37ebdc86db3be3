//! Where things live: downloads and builds in a cache outside the clone
//! (`$SPILLWAY_CACHE_DIR`, default `~/.cache/spillway`), and the running stack's data, logs and
//! pid files in `<repo>/.stack` (git-ignored).

use std::path::PathBuf;

use anyhow::{Context, Result};

#[derive(Debug, Clone)]
pub struct Paths {
    pub repo: PathBuf,
    pub cache: PathBuf,
    pub state: PathBuf,
}

impl Paths {
    pub fn discover() -> Result<Self> {
        // `cargo run` sets CARGO_MANIFEST_DIR for the run: the clone that invoked us, even when
        // the binary was last linked for another clone sharing the target directory.
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
        let repo = manifest_dir
            .parent()
            .context("xtask/ has a parent")?
            .to_path_buf();
        let cache = match std::env::var_os("SPILLWAY_CACHE_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
                .join(".cache/spillway"),
        };
        let paths = Self {
            state: repo.join(".stack"),
            repo,
            cache,
        };
        for dir in [paths.cache.join("bin"), paths.logs(), paths.pids()] {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(paths)
    }

    pub fn logs(&self) -> PathBuf {
        self.state.join("logs")
    }

    pub fn pids(&self) -> PathBuf {
        self.state.join("pids")
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.logs().join(format!("{name}.log"))
    }

    pub fn pid_file(&self, name: &str) -> PathBuf {
        self.pids().join(format!("{name}.pid"))
    }
}
