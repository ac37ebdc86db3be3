//! Scale-out: several instances of every service, and the faults of a real cluster under a
//! mixed load (likes, increments with keys, writes, template copies: `spillway_tests::chaos`),
//! each ending with every acknowledged count, write and copy checked against the stack.
//!
//! The instance test runs on whatever topology the tests run on; the fault tests need the
//! local cluster topology (`cargo xtask test --cluster`, see docs/operations.md) and say so
//! and pass without it. They run one at a time: each kills part of the shared cluster.

use std::time::Duration;

use spillway_tests::{
    chaos::{self, ChaosOptions, ChaosReport, Faults},
    stack::Stack,
};
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

/// Long enough for each fault to happen under load and be recovered from within it.
const LOAD: Duration = Duration::from_secs(36);

async fn run(instances: usize, faults: Faults) -> ChaosReport {
    let report = chaos::run(ChaosOptions {
        duration: LOAD,
        seed: 19,
        instances,
        faults,
    })
    .await;
    eprintln!("{report}");
    report
}

fn topology_lacks(what: &str, missing: bool) -> bool {
    if missing {
        eprintln!("skipped: needs {what} (cargo xtask test --cluster)");
    }
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_each_service_behind_a_round_robin_count_store_and_hand_out_exactly_once() {
    let _serial = SERIAL.lock().await;
    let report = run(2, Faults::Nothing).await;
    assert!(report.passed(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_masters_killed_under_load_lose_and_double_nothing() {
    let _serial = SERIAL.lock().await;
    if topology_lacks("the Redis Cluster", !Stack::current().redis_cluster()) {
        return;
    }
    let report = run(2, Faults::RedisMasterKills).await;
    assert!(report.passed(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_master_that_lost_its_data_is_rebuilt_exactly() {
    let _serial = SERIAL.lock().await;
    if topology_lacks("the Redis Cluster", !Stack::current().redis_cluster()) {
        return;
    }
    let report = run(1, Faults::RedisMasterFlush).await;
    assert!(report.passed(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_brokers_killed_under_load_and_restarted_lose_and_double_nothing() {
    let _serial = SERIAL.lock().await;
    if topology_lacks("three Kafka brokers", Stack::current().kafka_brokers < 3) {
        return;
    }
    let report = run(2, Faults::KafkaBrokerKills).await;
    assert!(report.passed(), "{report}");
}
