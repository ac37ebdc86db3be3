//! Redis as the tests read it: the Redis the tests' services use, that is the Redis Cluster
//! when the topology has one (`SPILLWAY_TEST_REDIS_CLUSTER=1`), else the single Redis. A
//! pipeline spanning slots is split per slot as the services' client does
//! (`spillway_core::redis::ClusterConnection`); `FLUSHALL` reaches every master.

use std::time::Duration;

use redis::{
    Cmd, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, MultiplexedConnection},
};
use spillway_core::redis::ClusterConnection;

use crate::stack::Stack;

/// A connection to the tests' Redis.
#[derive(Clone)]
pub enum TestRedis {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for TestRedis {
    fn req_packed_command<'a>(&'a mut self, command: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(command),
            Self::Cluster(connection) => connection.req_packed_command(command),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}

pub async fn connect() -> TestRedis {
    let stack = Stack::current();
    match stack.redis_cluster_nodes {
        Some(nodes) => TestRedis::Cluster(
            ClusterConnection::connect(&nodes, Duration::from_secs(5))
                .await
                .expect("connect to the redis cluster"),
        ),
        None => TestRedis::Single(
            redis::Client::open(stack.redis_url)
                .expect("redis url")
                // redis-rs gives up on an answer after 500 ms by default; a FLUSHALL of a
                // well-filled Redis takes longer than that.
                .get_multiplexed_async_connection_with_config(
                    &redis::AsyncConnectionConfig::new()
                        .set_response_timeout(Some(Duration::from_secs(10))),
                )
                .await
                .expect("connect to redis"),
        ),
    }
}

/// A counter's value in Redis (`None` when Redis does not hold it).
pub async fn counter_value(
    connection: &mut impl ConnectionLike,
    prefix: &str,
    namespace: &str,
    entity_id: &str,
) -> Option<i64> {
    redis::cmd("HGET")
        .arg(format!("{prefix}{{c:{namespace}:{entity_id}}}"))
        .arg("v")
        .query_async(connection)
        .await
        .expect("HGET")
}

/// Samples `ZCARD key` every few milliseconds until `stop` is set; returns the largest seen
/// (a waiting room's active set, checked continuously while a test or benchmark runs).
pub fn sample_largest_zset(
    key: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut redis = connect().await;
        let mut most = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let size: u64 = redis::cmd("ZCARD")
                .arg(&key)
                .query_async(&mut redis)
                .await
                .unwrap_or(0);
            most = most.max(size);
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        most
    })
}
