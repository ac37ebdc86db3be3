//! [`PendingWrites`]: the `{w:<sink>:<id>}` markers of writes acknowledged but not yet
//! committed, so a caller reads its own write back at once. The only code that knows the
//! marker's shape; the gateway sets and reads markers, the batch-writer clears them after
//! the commit.

use std::time::Duration;

use deadpool_redis::{Connection, Pool};
use serde_json::{Map, Value};

use crate::redis::{Keys, RedisError, with_timeout};

/// The pending-write markers of one deployment.
#[derive(Clone)]
pub struct PendingWrites {
    redis: Pool,
    keys: Keys,
    timeout: Duration,
}

impl PendingWrites {
    pub fn new(redis: Pool, keys: Keys, timeout: Duration) -> Self {
        Self {
            redis,
            keys,
            timeout,
        }
    }

    async fn connection(&self) -> Result<Connection, RedisError> {
        with_timeout(self.timeout, self.redis.get()).await
    }

    /// Marks a write of `sink` as pending, with the row the caller will read back.
    pub async fn mark(
        &self,
        sink: &str,
        id: &str,
        row: &Map<String, Value>,
    ) -> Result<(), RedisError> {
        let text = serde_json::to_string(row).unwrap_or_default();
        let mut connection = self.connection().await?;
        with_timeout(
            self.timeout,
            redis::cmd("SET")
                .arg(self.keys.pending_write(sink, id))
                .arg(text)
                .query_async::<()>(&mut connection),
        )
        .await
    }

    /// Removes one marker (a write Kafka did not take).
    pub async fn clear(&self, sink: &str, id: &str) -> Result<(), RedisError> {
        let mut connection = self.connection().await?;
        with_timeout(
            self.timeout,
            redis::cmd("DEL")
                .arg(self.keys.pending_write(sink, id))
                .query_async::<i64>(&mut connection),
        )
        .await?;
        Ok(())
    }

    /// Removes the markers of committed rows, in one pipeline.
    pub async fn clear_committed(&self, sink: &str, ids: &[String]) -> Result<(), RedisError> {
        let mut pipeline = redis::pipe();
        for id in ids {
            pipeline.del(self.keys.pending_write(sink, id));
        }
        let mut connection = self.connection().await?;
        with_timeout(self.timeout, pipeline.query_async::<()>(&mut connection)).await
    }

    /// The pending row of `id`, if a write of it is pending.
    pub async fn read(&self, sink: &str, id: &str) -> Result<Option<Value>, RedisError> {
        let mut connection = self.connection().await?;
        let pending: Option<String> = with_timeout(
            self.timeout,
            redis::cmd("GET")
                .arg(self.keys.pending_write(sink, id))
                .query_async(&mut connection),
        )
        .await?;
        Ok(pending.map(|text| serde_json::from_str(&text).unwrap_or(Value::Null)))
    }
}
