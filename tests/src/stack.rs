//! The local stack's addresses (from the environment `cargo xtask test` exports, or the
//! defaults), and stopping or starting one of its components for fault tests. Stopping goes
//! through `cargo xtask stack stop <component>`, which stops the process the stack started;
//! `cargo xtask stack up` starts it again.

use std::process::Command;

/// Where the stack listens.
#[derive(Debug, Clone)]
pub struct Stack {
    pub kafka: String,
    pub redis_url: String,
    pub database_url: String,
    pub s3_endpoint: String,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

impl Stack {
    pub fn from_env() -> Self {
        Self {
            kafka: env_or("KAFKA_BOOTSTRAP", "127.0.0.1:19092"),
            redis_url: env_or("REDIS_URL", "redis://127.0.0.1:16379"),
            database_url: env_or(
                "DATABASE_URL",
                "postgres://spillway@127.0.0.1:15432/spillway",
            ),
            s3_endpoint: env_or("S3_ENDPOINT", "http://127.0.0.1:19000"),
        }
    }
}

fn xtask(args: &[&str]) {
    let status = Command::new(env_or("CARGO", "cargo"))
        .args(["xtask", "stack"])
        .args(args)
        .current_dir(workspace_root())
        .status()
        .expect("running cargo xtask");
    assert!(status.success(), "cargo xtask stack {args:?} failed");
}

/// Stops one component (`kafka`, `redis`, `postgres`, `s3`) of the running stack.
pub fn stop(component: &str) {
    xtask(&["stop", component]);
}

/// Starts whatever part of the stack is not running.
pub fn start_all() {
    xtask(&["up"]);
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}
