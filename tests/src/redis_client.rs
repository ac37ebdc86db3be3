//! Redis as the tests read it.

use redis::aio::MultiplexedConnection;

use crate::stack::Stack;

pub async fn connect() -> MultiplexedConnection {
    redis::Client::open(Stack::from_env().redis_url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis")
}

/// A counter's value in Redis (`None` when Redis does not hold it).
pub async fn counter_value(
    connection: &mut MultiplexedConnection,
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
