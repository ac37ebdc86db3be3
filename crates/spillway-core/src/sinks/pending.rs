//! [`PendingWrites`]: the `{w:<sink>:<id>}` markers of writes acknowledged but not yet
//! committed, so a caller reads its own write back at once. The only code that knows the
//! marker's shape (a hash: partition, offset, event id, row) and its scripts.
//!
//! A marker cannot lie: the gateway sets it after the broker's acknowledgement, stamped with
//! the record's partition and offset, and never over a newer write of the same id
//! (`lua/pending_mark.lua`); the batch-writer clears it after the commit only when the commit
//! holds that write or a newer one (`lua/pending_clear.lua`), so a later write's marker
//! survives an earlier write's commit; and every marker expires after its sink's
//! `pending_ttl_seconds`, so one whose clearing failed stops shadowing the table (reads
//! then fall back to the database). A cleared marker leaves a tombstone for a minute (the
//! committed offset, no row), so a gateway whose marker comes after the commit (its Redis
//! call was slow) leaves none behind.
//!
//! Setting and clearing are replicated calls ([`RedisClient::replicated`]): a marker a
//! failover lost would hide an acknowledged write from its writer's read, one whose clearing
//! it lost could come back over a newer commit.

use std::{sync::LazyLock, time::Duration};

use serde_json::{Map, Value};

use crate::{
    kafka::producer::Delivered,
    redis::{RedisClient, RedisError},
};

static PENDING_MARK: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../../lua/pending_mark.lua")));
static PENDING_CLEAR: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../../lua/pending_clear.lua")));
/// How long a cleared marker's tombstone refuses a late marker of the same write.
const TOMBSTONE_LIFETIME_MS: u64 = 60_000;

static PENDING_READ: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../../lua/pending_read.lua")));

/// A write the batch-writer committed: the newest record of its id in the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedWrite {
    pub id: String,
    pub partition: i32,
    pub offset: i64,
}

/// An acknowledged write, as its marker records it.
#[derive(Debug, Clone, Copy)]
pub struct MarkedWrite<'a> {
    pub delivered: Delivered,
    pub event_id: &'a str,
    pub row: &'a Map<String, Value>,
    /// The sink keeps the first write of an id (`on_conflict = "ignore"`).
    pub first_wins: bool,
}

/// The pending-write markers of one deployment.
#[derive(Clone)]
pub struct PendingWrites {
    redis: RedisClient,
}

impl PendingWrites {
    pub fn new(redis: RedisClient) -> Self {
        Self { redis }
    }

    /// Marks an acknowledged write of `sink` as pending, with the row the caller will read
    /// back, for at most `ttl`. Returns false when a newer write of the id holds the marker,
    /// or, for a sink that keeps the first write of an id (`first_wins`), any earlier one.
    pub async fn mark(
        &self,
        sink: &str,
        id: &str,
        write: MarkedWrite<'_>,
        ttl: Duration,
    ) -> Result<bool, RedisError> {
        let MarkedWrite {
            delivered,
            event_id,
            row,
            first_wins,
        } = write;
        let text = serde_json::to_string(row).unwrap_or_default();
        let mut call = redis::pipe();
        call.cmd("EVALSHA")
            .arg(PENDING_MARK.get_hash())
            .arg(1)
            .arg(self.redis.keys().pending_write(sink, id))
            .arg(delivered.partition)
            .arg(delivered.offset)
            .arg(event_id)
            .arg(text)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .arg(if first_wins { "1" } else { "0" });
        let (set,): (i64,) = self
            .redis
            .replicated()
            .pipeline_with_scripts(&call, &[&PENDING_MARK])
            .await?;
        Ok(set == 1)
    }

    /// Clears the markers of committed writes that no newer write holds, in one pipeline of
    /// one script call per id (each on its own key, so on one Redis Cluster slot).
    pub async fn clear_committed(
        &self,
        sink: &str,
        committed: &[CommittedWrite],
    ) -> Result<(), RedisError> {
        if committed.is_empty() {
            return Ok(());
        }
        let mut pipeline = redis::pipe();
        for write in committed {
            pipeline
                .cmd("EVALSHA")
                .arg(PENDING_CLEAR.get_hash())
                .arg(1)
                .arg(self.redis.keys().pending_write(sink, &write.id))
                .arg(write.partition)
                .arg(write.offset)
                .arg(TOMBSTONE_LIFETIME_MS)
                .ignore();
        }
        self.redis
            .replicated()
            .pipeline_with_scripts(&pipeline, &[&PENDING_CLEAR])
            .await
    }

    /// The pending row of `id`, if a write of it is pending.
    pub async fn read(&self, sink: &str, id: &str) -> Result<Option<Value>, RedisError> {
        let mut call = redis::pipe();
        call.cmd("EVALSHA")
            .arg(PENDING_READ.get_hash())
            .arg(1)
            .arg(self.redis.keys().pending_write(sink, id));
        let (pending,): (Option<String>,) = self
            .redis
            .pipeline_with_scripts(&call, &[&PENDING_READ])
            .await?;
        Ok(pending.map(|text| serde_json::from_str(&text).unwrap_or(Value::Null)))
    }
}
