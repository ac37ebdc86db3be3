//! One Redis pool per template, three keys under one hash tag: the ids of ready copies (a
//! list, oldest at the right), their records (a hash: a copy is in the pool iff it has a
//! record) and the ids handed out whose database row may still say ready (a set). Taking,
//! pushing and removing are Lua scripts, so a copy goes to exactly one caller. Taking and
//! removing are replicated calls ([`RedisClient::replicated`]): a failover that lost either
//! would put the copy back in the pool, to be handed out again (or after its deletion).

use std::sync::LazyLock;

use uuid::Uuid;

use super::CopyRecord;
use crate::redis::{RedisClient, RedisError};

/// Hands one ready template copy to exactly one caller.
static POOL_TAKE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../../lua/pool_take.lua")));
/// Puts a finished copy into its pool unless it is there or was handed out.
static POOL_PUSH: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../../lua/pool_push.lua")));
/// Takes copies out of a pool before they are deleted.
static POOL_REMOVE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../../lua/pool_remove.lua")));

/// The pools of all templates of one deployment.
#[derive(Clone)]
pub struct TemplatePool {
    redis: RedisClient,
}

/// The ids in a pool and the ids handed out but not yet recorded as taken, read together.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PoolSnapshot {
    pub pooled: Vec<Uuid>,
    pub taken: Vec<Uuid>,
}

fn parse_ids(ids: Vec<String>) -> Vec<Uuid> {
    ids.iter().filter_map(|id| id.parse().ok()).collect()
}

impl TemplatePool {
    pub fn new(redis: RedisClient) -> Self {
        Self { redis }
    }

    fn keys_of(&self, template_id: &str) -> [String; 3] {
        [
            self.redis.keys().template_pool(template_id),
            self.redis.keys().template_pool_records(template_id),
            self.redis.keys().template_pool_taken(template_id),
        ]
    }

    /// Hands out the oldest ready copy, or `None` when the pool is empty.
    pub async fn take(&self, template_id: &str) -> Result<Option<CopyRecord>, RedisError> {
        let mut invocation = POOL_TAKE.prepare_invoke();
        for key in self.keys_of(template_id) {
            invocation.key(key);
        }
        let record: Option<String> = self.redis.replicated().invoke(&invocation).await?;
        Ok(
            record.and_then(|record| match serde_json::from_str(&record) {
                Ok(record) => Some(record),
                Err(error) => {
                    tracing::error!(%error, template_id, "unreadable pool record dropped");
                    None
                }
            }),
        )
    }

    /// Puts a finished copy into its pool; false when it was there already or handed out.
    pub async fn push(&self, record: &CopyRecord) -> Result<bool, RedisError> {
        let json = serde_json::to_string(record).expect("a copy record serializes");
        let mut invocation = POOL_PUSH.prepare_invoke();
        for key in self.keys_of(&record.template_id) {
            invocation.key(key);
        }
        invocation.arg(record.copy_id.to_string()).arg(json);
        let pushed: i64 = self.redis.invoke(&invocation).await?;
        Ok(pushed == 1)
    }

    /// Takes copies out of the pool; returns those that were in it (and now nobody can get).
    pub async fn remove(&self, template_id: &str, ids: &[Uuid]) -> Result<Vec<Uuid>, RedisError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let [list, records, _] = self.keys_of(template_id);
        let mut invocation = POOL_REMOVE.prepare_invoke();
        invocation.key(list).key(records);
        for id in ids {
            invocation.arg(id.to_string());
        }
        let removed: Vec<String> = self.redis.replicated().invoke(&invocation).await?;
        Ok(parse_ids(removed))
    }

    /// How many copies the pool holds.
    pub async fn ready(&self, template_id: &str) -> Result<u64, RedisError> {
        let records = self.redis.keys().template_pool_records(template_id);
        self.redis.command(redis::cmd("HLEN").arg(records)).await
    }

    /// The pooled and the handed-out ids, read atomically (a copy is in one list or none).
    pub async fn snapshot(&self, template_id: &str) -> Result<PoolSnapshot, RedisError> {
        let [_, records, taken] = self.keys_of(template_id);
        let (pooled, taken): (Vec<String>, Vec<String>) = self
            .redis
            .pipeline(
                redis::pipe()
                    .atomic()
                    .cmd("HKEYS")
                    .arg(records)
                    .cmd("SMEMBERS")
                    .arg(taken),
            )
            .await?;
        Ok(PoolSnapshot {
            pooled: parse_ids(pooled),
            taken: parse_ids(taken),
        })
    }

    /// Forgets handed-out ids once the database records them as taken.
    pub async fn forget_taken(&self, template_id: &str, ids: &[Uuid]) -> Result<(), RedisError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut command = redis::cmd("SREM");
        command.arg(self.redis.keys().template_pool_taken(template_id));
        for id in ids {
            command.arg(id.to_string());
        }
        self.redis.command(&command).await
    }
}
