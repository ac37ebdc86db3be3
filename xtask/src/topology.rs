//! Which shape of the local stack runs: one node of each component (the default, what plain
//! `cargo xtask up` starts), or parts of the local cluster topology.
//!
//! - `--redis-cluster`: a 6-node Redis Cluster (3 masters, 3 replicas) beside the single Redis,
//!   which stays for clients that do not speak cluster (`REDIS_URL`).
//! - `--kafka-brokers 3`: three Kafka brokers instead of the single one.
//! - `--cluster`: both.
//!
//! Without a flag the topology comes from the environment `cargo xtask test --cluster` and
//! `cargo xtask env --cluster` export (`SPILLWAY_TEST_REDIS_CLUSTER=1`,
//! `SPILLWAY_TEST_KAFKA_BROKERS=3`), so a test that runs `cargo xtask stack up` to restart what
//! it stopped gets the same topology back. Flags only add to it.

use anyhow::{Result, bail};

use crate::stack::kafka_cluster;

/// Set to `1` when the Redis Cluster is part of the topology.
pub const REDIS_CLUSTER_VAR: &str = "SPILLWAY_TEST_REDIS_CLUSTER";
/// The number of Kafka brokers (`1` or `3`).
pub const KAFKA_BROKERS_VAR: &str = "SPILLWAY_TEST_KAFKA_BROKERS";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    pub redis_cluster: bool,
    pub kafka_brokers: usize,
}

impl Topology {
    /// One node of each component.
    pub const SINGLE: Self = Self {
        redis_cluster: false,
        kafka_brokers: 1,
    };

    /// The local cluster topology: the Redis Cluster and three brokers.
    pub const CLUSTER: Self = Self {
        redis_cluster: true,
        kafka_brokers: kafka_cluster::BROKERS,
    };

    pub fn kafka_cluster(&self) -> bool {
        self.kafka_brokers > 1
    }

    /// The topology the environment names (the single one when it names none).
    pub fn from_env() -> Result<Self> {
        let mut topology = Self::SINGLE;
        if let Ok(value) = std::env::var(REDIS_CLUSTER_VAR) {
            topology.redis_cluster = matches!(value.trim(), "1" | "true" | "yes");
        }
        if let Ok(value) = std::env::var(KAFKA_BROKERS_VAR) {
            topology.kafka_brokers = parse_brokers(&value)?;
        }
        Ok(topology)
    }

    /// Reads the topology flags at the front of `words` (on top of the environment's
    /// topology); returns it with the words that follow them.
    pub fn from_flags<'a>(words: &'a [&'a str]) -> Result<(Self, &'a [&'a str])> {
        let mut topology = Self::from_env()?;
        let mut rest = words;
        loop {
            match rest {
                ["--redis-cluster", tail @ ..] => {
                    topology.redis_cluster = true;
                    rest = tail;
                }
                ["--kafka-brokers", count, tail @ ..] => {
                    topology.kafka_brokers = parse_brokers(count)?;
                    rest = tail;
                }
                ["--cluster", tail @ ..] => {
                    topology.redis_cluster = true;
                    topology.kafka_brokers = kafka_cluster::BROKERS;
                    rest = tail;
                }
                _ => return Ok((topology, rest)),
            }
        }
    }

    /// Like [`Topology::from_flags`], for commands that take nothing but the flags.
    pub fn from_flags_only(words: &[&str]) -> Result<Self> {
        let (topology, rest) = Self::from_flags(words)?;
        if let [unknown, ..] = rest {
            bail!(
                "unknown argument `{unknown}` (topology flags: --redis-cluster, --kafka-brokers 3, --cluster)"
            );
        }
        Ok(topology)
    }

    /// The variables that name this topology to the tests and to nested `cargo xtask` runs;
    /// none for the single topology.
    pub fn variables(&self) -> Vec<(&'static str, String)> {
        let mut variables = Vec::new();
        if self.redis_cluster {
            variables.push((REDIS_CLUSTER_VAR, "1".to_owned()));
        }
        if self.kafka_cluster() {
            variables.push((KAFKA_BROKERS_VAR, self.kafka_brokers.to_string()));
        }
        variables
    }
}

fn parse_brokers(value: &str) -> Result<usize> {
    match value.trim().parse() {
        Ok(1) => Ok(1),
        Ok(kafka_cluster::BROKERS) => Ok(kafka_cluster::BROKERS),
        _ => bail!(
            "--kafka-brokers (or {KAFKA_BROKERS_VAR}) is 1 or {}, not `{value}`",
            kafka_cluster::BROKERS
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(words: &[&str]) -> Result<Topology> {
        Topology::from_flags(words).map(|(topology, _)| topology)
    }

    #[test]
    fn cluster_means_both_clusters_and_keeps_what_follows() {
        let words = ["--cluster", "--", "--nocapture"];
        let (topology, rest) = Topology::from_flags(&words).expect("parses");
        assert!(topology.redis_cluster);
        assert_eq!(topology.kafka_brokers, 3);
        assert_eq!(rest, ["--", "--nocapture"]);
    }

    #[test]
    fn flags_can_be_combined_in_any_order() {
        let topology = flags(&["--kafka-brokers", "3", "--redis-cluster"]).expect("parses");
        assert_eq!(
            topology,
            Topology {
                redis_cluster: true,
                kafka_brokers: 3
            }
        );
    }

    #[test]
    fn only_one_or_three_brokers_are_offered() {
        assert!(flags(&["--kafka-brokers", "2"]).is_err());
        assert!(flags(&["--kafka-brokers", "many"]).is_err());
    }

    #[test]
    fn a_stray_argument_is_refused_where_only_flags_belong() {
        assert!(Topology::from_flags_only(&["--redis-clusters"]).is_err());
    }
}
