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
