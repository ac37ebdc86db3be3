//! The environment a client of the local stack needs, in one place: printed by `up` and
//! `env`, exported to the tests, the benchmarks and the services `up` starts.
//!
//! The local cluster topology changes or adds:
//! - `KAFKA_BOOTSTRAP`: the three brokers (`127.0.0.1:29092,127.0.0.1:29192,127.0.0.1:29292`).
//! - `REDIS_CLUSTER_NODES`: the Redis Cluster's seed nodes, comma-separated `redis://` URLs of
//!   all six nodes. `REDIS_URL` still names the single Redis, which keeps running.
//! - `SPILLWAY_TEST_REDIS_CLUSTER=1`, `SPILLWAY_TEST_KAFKA_BROKERS=3`: which topology runs
//!   (read by the tests, and by `cargo xtask` itself when a test restarts the stack).
//! - For the services: `SPILLWAY_KAFKA__BOOTSTRAP`, and `SPILLWAY_REDIS__MODE=cluster` with
//!   `SPILLWAY_REDIS__NODES` (a TOML array of the seed URLs) for the `[redis] mode` and `nodes`
//!   keys the services are to read.

use crate::{
    paths::Paths,
    stack::{kafka, kafka_cluster, postgres, redis, redis_cluster, s3},
    topology::Topology,
};

/// A fixed secret for the local stack only: the services refuse it unless
/// [`LOCAL_STACK_VAR`] is set.
pub const DEV_JWT_SECRET: &str = "dev-secret-change-me";

/// Tells the services they run on the local stack, where the published sample secret is
/// accepted (`local_stack` in the configuration).
pub const LOCAL_STACK_VAR: &str = "SPILLWAY_LOCAL_STACK";

fn kafka_bootstrap(topology: Topology) -> String {
    if topology.kafka_cluster() {
        kafka_cluster::bootstrap()
    } else {
        format!("127.0.0.1:{}", kafka::PORT)
    }
}

/// What a client of the stack needs: its addresses and credentials.
pub fn stack_variables(topology: Topology) -> Vec<(&'static str, String)> {
    let mut variables = vec![
        ("KAFKA_BOOTSTRAP", kafka_bootstrap(topology)),
        ("REDIS_URL", format!("redis://127.0.0.1:{}", redis::PORT)),
    ];
    if topology.redis_cluster {
        variables.push(("REDIS_CLUSTER_NODES", redis_cluster::seed_urls().join(",")));
    }
    variables.extend([
        (
            "DATABASE_URL",
            format!(
                "postgres://{}@127.0.0.1:{}/{}",
                postgres::USER,
                postgres::PORT,
                postgres::DATABASE
            ),
        ),
        ("S3_ENDPOINT", format!("http://127.0.0.1:{}", s3::PORT)),
        ("S3_ACCESS_KEY", s3::ACCESS_KEY.to_owned()),
        ("S3_SECRET_KEY", s3::SECRET_KEY.to_owned()),
        ("S3_BUCKET", "spillway".to_owned()),
    ]);
    variables.extend(topology.variables());
    variables
}

/// The local cluster topology's addresses under names that leave the single nodes' in place,
/// for `cargo xtask bench scale`, which runs on both: `CLUSTER_KAFKA_BOOTSTRAP` (the three
/// brokers) and `REDIS_CLUSTER_NODES`.
pub fn cluster_beside() -> Vec<(&'static str, String)> {
    vec![
        ("CLUSTER_KAFKA_BOOTSTRAP", kafka_cluster::bootstrap()),
        ("REDIS_CLUSTER_NODES", redis_cluster::seed_urls().join(",")),
    ]
}

/// The overrides that point the services at the cluster topology (the sample configuration
/// names the single nodes).
fn service_overrides(topology: Topology) -> Vec<(&'static str, String)> {
    let mut overrides = Vec::new();
    if topology.kafka_cluster() {
        overrides.push(("SPILLWAY_KAFKA__BOOTSTRAP", kafka_bootstrap(topology)));
    }
    if topology.redis_cluster {
        let seeds: Vec<String> = redis_cluster::seed_urls()
            .iter()
            .map(|url| format!("\"{url}\""))
            .collect();
        overrides.push(("SPILLWAY_REDIS__MODE", "cluster".to_owned()));
        overrides.push(("SPILLWAY_REDIS__NODES", format!("[{}]", seeds.join(","))));
    }
    overrides
}

/// The stack's variables plus what the services started by `up` read: the sample
/// configuration, the development JWT secret with the local-stack marker that lets the
/// services accept it, and the topology's overrides.
pub fn variables(paths: &Paths, topology: Topology) -> Vec<(&'static str, String)> {
    let mut variables = stack_variables(topology);
    variables.push(("SPILLWAY_JWT_SECRET", DEV_JWT_SECRET.to_owned()));
    variables.push((LOCAL_STACK_VAR, "1".to_owned()));
    let config = paths.repo.join("config/spillway.toml");
    variables.push(("SPILLWAY_CONFIG", config.display().to_string()));
    variables.extend(service_overrides(topology));
    variables
}

pub fn print_exports(paths: &Paths, topology: Topology) {
    for (name, value) in variables(paths, topology) {
        println!("export {name}='{value}'");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(variables: &[(&str, String)], name: &str) -> Option<String> {
        variables
            .iter()
            .find_map(|(key, value)| (*key == name).then(|| value.clone()))
    }

    #[test]
    fn the_single_topology_exports_what_it_always_did() {
        let variables = stack_variables(Topology::SINGLE);
        let names: Vec<&str> = variables.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "KAFKA_BOOTSTRAP",
                "REDIS_URL",
                "DATABASE_URL",
                "S3_ENDPOINT",
                "S3_ACCESS_KEY",
                "S3_SECRET_KEY",
                "S3_BUCKET"
            ]
        );
        assert_eq!(
            value(&variables, "KAFKA_BOOTSTRAP").as_deref(),
            Some("127.0.0.1:19092")
        );
    }

    #[test]
    fn the_cluster_topology_names_every_broker_and_every_seed_node() {
        let cluster = Topology {
            redis_cluster: true,
            kafka_brokers: 3,
        };
        let variables = stack_variables(cluster);
        assert_eq!(
            value(&variables, "KAFKA_BOOTSTRAP").as_deref(),
            Some("127.0.0.1:29092,127.0.0.1:29192,127.0.0.1:29292")
        );
        let seeds = value(&variables, "REDIS_CLUSTER_NODES").expect("seed nodes");
        assert_eq!(seeds.split(',').count(), 6);
        assert!(seeds.starts_with("redis://127.0.0.1:17001,"));
        assert_eq!(
            value(&variables, "SPILLWAY_TEST_REDIS_CLUSTER").as_deref(),
            Some("1")
        );
        assert_eq!(
            value(&variables, "SPILLWAY_TEST_KAFKA_BROKERS").as_deref(),
            Some("3")
        );
    }
}
