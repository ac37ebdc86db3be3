//! The local stack's addresses (from the environment `cargo xtask test` exports, or the
//! defaults), and stopping or starting one of its components for fault tests. Stopping goes
//! through `cargo xtask stack stop <component>`, which stops the process the stack started;
//! `cargo xtask stack up` starts it again.
//!
//! The topology is the one `cargo xtask test --cluster` (or `env --cluster`) names:
//! `SPILLWAY_TEST_REDIS_CLUSTER=1` with `REDIS_CLUSTER_NODES`, `SPILLWAY_TEST_KAFKA_BROKERS=3`
//! with the three brokers in `KAFKA_BOOTSTRAP`. A benchmark that compares topologies in one
//! run ([`crate::bench::scale`]) chooses one after the other with [`Stack::choose`].

use std::{process::Command, sync::RwLock};

/// Where the stack listens.
#[derive(Debug, Clone)]
pub struct Stack {
    pub kafka: String,
    pub redis_url: String,
    pub database_url: String,
    pub s3_endpoint: String,
    /// The Redis Cluster's seed nodes, when the topology has one (the services then use it).
    pub redis_cluster_nodes: Option<Vec<String>>,
    /// How many Kafka brokers `kafka` names (1 or 3).
    pub kafka_brokers: usize,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The stack [`Stack::choose`] set for the rest of this process, if any.
static CHOSEN: RwLock<Option<Stack>> = RwLock::new(None);

impl Stack {
    /// The stack every helper of this crate talks to: the one chosen last, or the
    /// environment's.
    pub fn current() -> Self {
        let chosen = CHOSEN.read().expect("chosen stack").clone();
        chosen.unwrap_or_else(Self::from_env)
    }

    /// Points every later [`TestConfig`](crate::TestConfig), Kafka, Redis and database helper
    /// of this process at `stack`.
    pub fn choose(stack: Self) {
        *CHOSEN.write().expect("chosen stack") = Some(stack);
    }

    /// The local cluster topology beside the environment's single nodes, as
    /// `cargo xtask bench scale` exports it: the three brokers in `CLUSTER_KAFKA_BOOTSTRAP`,
    /// the Redis Cluster's seeds in `REDIS_CLUSTER_NODES`.
    pub fn local_cluster() -> Self {
        let seeds = std::env::var("REDIS_CLUSTER_NODES").expect(
            "REDIS_CLUSTER_NODES names the Redis Cluster (cargo xtask bench scale sets it)",
        );
        Self {
            kafka: std::env::var("CLUSTER_KAFKA_BOOTSTRAP").expect(
                "CLUSTER_KAFKA_BOOTSTRAP names the three brokers (cargo xtask bench scale sets it)",
            ),
            redis_cluster_nodes: Some(seeds.split(',').map(str::to_owned).collect()),
            kafka_brokers: 3,
            ..Self::from_env()
        }
    }

    fn from_env() -> Self {
        Self {
            kafka: env_or("KAFKA_BOOTSTRAP", "127.0.0.1:19092"),
            redis_url: env_or("REDIS_URL", "redis://127.0.0.1:16379"),
            database_url: env_or(
                "DATABASE_URL",
                "postgres://spillway@127.0.0.1:15432/spillway",
            ),
            s3_endpoint: env_or("S3_ENDPOINT", "http://127.0.0.1:19000"),
            redis_cluster_nodes: redis_cluster_nodes(),
            kafka_brokers: env_or("SPILLWAY_TEST_KAFKA_BROKERS", "1")
                .trim()
                .parse()
                .unwrap_or(1),
        }
    }

    /// Whether the services of the tests use a Redis Cluster.
    pub fn redis_cluster(&self) -> bool {
        self.redis_cluster_nodes.is_some()
    }
}

fn redis_cluster_nodes() -> Option<Vec<String>> {
    let on = env_or("SPILLWAY_TEST_REDIS_CLUSTER", "");
    if !matches!(on.trim(), "1" | "true" | "yes") {
        return None;
    }
    let nodes = std::env::var("REDIS_CLUSTER_NODES")
        .expect("SPILLWAY_TEST_REDIS_CLUSTER=1 needs REDIS_CLUSTER_NODES (cargo xtask test --cluster sets both)");
    Some(nodes.split(',').map(str::to_owned).collect())
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

/// Starts whatever part of the stack is not running (of the topology the environment
/// names).
pub fn start_all() {
    xtask(&["up"]);
}

/// SIGKILLs one node of the cluster topology (`redis-cluster-17002`, `kafka-broker-2`); for
/// a Redis master, returns once its replica has taken over.
pub fn kill(node: &str) {
    xtask(&["kill", node]);
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}
