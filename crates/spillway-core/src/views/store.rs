//! The view cache: results in Redis under `{v:<view>:<key>}`, the database load behind them,
//! and the two ways a result gets (re)written.
//!
//! - A reader that misses (or finds a stale value) takes the key's reload lock
//!   (`{v:…}:l`, `SET NX PX`), so one caller of all gateways queries the database; the
//!   others wait for the value or keep serving the stale one.
//! - After a commit, the batch-writer *claims* the key: a new generation (`{v:…}:g`), and,
//!   when the key is cached, the value marked stale and the lock taken by the refresher,
//!   which then reloads it.
//!
//! A reload stores its result only if the generation is still the one it read when it took
//! the lock, so a reload that began before a commit never overwrites the refreshed result.
//! Every one of these keys carries a TTL: they are what Redis may evict under `maxmemory`.
//! Single-flight inside one process is the gateway's business, not this module's.

use std::{sync::LazyLock, time::Duration};

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};

use super::{BODY_COLUMN, ViewKey, ViewSettings};
use crate::{
    db::Db,
    redis::{RedisClient, RedisError},
};

/// How long a key's generation outlives the last commit that changed it: longer than any
/// reload (a reload is bounded by its view's reload timeout, at most the request deadline).
const GENERATION_TTL: Duration = Duration::from_secs(60);

static VIEW_LOCK: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../../lua/view_lock.lua")));
static VIEW_STORE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../../lua/view_store.lua")));
static VIEW_RELEASE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../../lua/view_release.lua")));
static VIEW_CLAIM: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../../lua/view_claim.lua")));

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("the view's query failed: {0}")]
    Database(#[from] DbErr),
    #[error("the view's query took longer than its reload timeout ({0} ms)")]
    Timeout(u64),
}

/// A cached result: its JSON text and until when it is fresh (unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    pub body: String,
    pub fresh_until_ms: i64,
}

impl Cached {
    /// The stored form, `<fresh until>:<JSON>`: one `GET` reads both.
    fn encode(body: &str, fresh_until_ms: i64) -> String {
        format!("{fresh_until_ms}:{body}")
    }

    fn decode(value: &str) -> Option<Self> {
        let (fresh_until, body) = value.split_once(':')?;
        Some(Self {
            body: body.to_owned(),
            fresh_until_ms: fresh_until.parse().ok()?,
        })
    }

    /// Milliseconds it stays fresh (negative: stale for that long).
    pub fn fresh_for_ms(&self, now_ms: i64) -> i64 {
        self.fresh_until_ms - now_ms
    }
}

/// The right to (re)write one key: the lock token and the generation read when it was taken.
#[derive(Debug, Clone)]
pub struct Lease {
    token: String,
    generation: String,
}

/// What a caller asking for the reload lock got.
#[derive(Debug, Clone)]
pub enum LockOutcome {
    /// The lock: this caller reloads.
    Taken(Lease),
    /// Another caller holds it.
    Held,
    /// Nothing to reload: the key is fresh (stored since the caller looked).
    Fresh(Cached),
}

/// What a reload produced.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub body: String,
    /// False when a commit changed the key meanwhile (the refreshed result stays).
    pub stored: bool,
}

/// The cache's Redis keys and the database behind them.
#[derive(Clone)]
pub struct ViewStore {
    redis: RedisClient,
    db: Db,
}

/// The three Redis keys of one view key, sharing its hash tag.
struct KeyNames {
    value: String,
    generation: String,
    lock: String,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl ViewStore {
    pub fn new(redis: RedisClient, db: Db) -> Self {
        Self { redis, db }
    }

    fn names(&self, view: &str, key: &ViewKey) -> KeyNames {
        let value = self.redis.keys().view(view, key.as_str());
        KeyNames {
            generation: format!("{value}:g"),
            lock: format!("{value}:l"),
            value,
        }
    }

    /// The cached result, fresh or stale; `None` when Redis does not hold the key.
    pub async fn get(&self, view: &str, key: &ViewKey) -> Result<Option<Cached>, RedisError> {
        let value: Option<String> = self
            .redis
            .command(redis::cmd("GET").arg(self.names(view, key).value))
            .await?;
        Ok(value.as_deref().and_then(Cached::decode))
    }

    /// Takes the key's reload lock, unless another caller holds it or the key is fresh.
    pub async fn try_lock(
        &self,
        view: &str,
        settings: &ViewSettings,
        key: &ViewKey,
    ) -> Result<LockOutcome, RedisError> {
        let names = self.names(view, key);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut invocation = VIEW_LOCK.prepare_invoke();
        invocation
            .key(&names.lock)
            .key(&names.generation)
            .key(&names.value)
            .arg(&token)
            .arg(settings.reload_timeout_ms)
            .arg(now_ms());
        let (outcome, generation, value): (String, String, String) =
            self.redis.invoke(&invocation).await?;
        Ok(match (outcome.as_str(), Cached::decode(&value)) {
            ("taken", _) => LockOutcome::Taken(Lease { token, generation }),
            ("fresh", Some(cached)) => LockOutcome::Fresh(cached),
            _ => LockOutcome::Held,
        })
    }

    /// After a commit changed the key: a new generation, and, when the key is cached, the
    /// value marked stale and the lock taken; returns the lease to refresh it with.
    pub async fn claim(
        &self,
        view: &str,
        settings: &ViewSettings,
        key: &ViewKey,
    ) -> Result<Option<Lease>, RedisError> {
        let names = self.names(view, key);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut invocation = VIEW_CLAIM.prepare_invoke();
        invocation
            .key(&names.value)
            .key(&names.generation)
            .key(&names.lock)
            .arg(&token)
            .arg(settings.reload_timeout_ms)
            .arg(GENERATION_TTL.as_millis() as u64);
        let (cached, generation): (i64, String) = self.redis.invoke(&invocation).await?;
        Ok((cached == 1).then_some(Lease { token, generation }))
    }

    /// Queries the database under `lease`, stores the result unless superseded, and frees
    /// the lock; on failure the lock is freed and nothing is stored.
    pub async fn reload(
        &self,
        view: &str,
        settings: &ViewSettings,
        key: &ViewKey,
        lease: &Lease,
    ) -> Result<Loaded, ViewError> {
        let body = match self.query(settings, key).await {
            Ok(body) => body,
            Err(error) => {
                self.release(view, key, lease).await;
                return Err(error);
            }
        };
        let stored = self.store(view, settings, key, lease, &body).await?;
        Ok(Loaded { body, stored })
    }

    /// Runs the view's query for `key`, bounded by its reload timeout; the JSON text
    /// (`null` for a `one` view without a row).
    pub async fn query(&self, settings: &ViewSettings, key: &ViewKey) -> Result<String, ViewError> {
        let statement = Statement::from_sql_and_values(
            DbBackend::Postgres,
            settings.load_sql(),
            [key.bind_value()],
        );
        let row = tokio::time::timeout(settings.reload_timeout(), self.db.query_one_raw(statement))
            .await
            .map_err(|_| ViewError::Timeout(settings.reload_timeout_ms))??;
        let body: Option<String> = match row {
            Some(row) => row.try_get("", BODY_COLUMN)?,
            None => None,
        };
        Ok(body.unwrap_or_else(|| "null".to_owned()))
    }

    async fn store(
        &self,
        view: &str,
        settings: &ViewSettings,
        key: &ViewKey,
        lease: &Lease,
        body: &str,
    ) -> Result<bool, RedisError> {
        let names = self.names(view, key);
        let fresh_for = settings.fresh_for();
        let lifetime = fresh_for + settings.stale_for();
        let fresh_until = now_ms() + fresh_for.as_millis() as i64;
        let mut invocation = VIEW_STORE.prepare_invoke();
        invocation
            .key(&names.value)
            .key(&names.generation)
            .key(&names.lock)
            .arg(&lease.generation)
            .arg(Cached::encode(body, fresh_until))
            .arg(lifetime.as_millis() as u64)
            .arg(&lease.token);
        let stored: i64 = self.redis.invoke(&invocation).await?;
        Ok(stored == 1)
    }

    /// Frees the lock after a failed reload, so the next reader may try (best effort: the
    /// lock expires anyway).
    async fn release(&self, view: &str, key: &ViewKey, lease: &Lease) {
        let mut invocation = VIEW_RELEASE.prepare_invoke();
        invocation.key(self.names(view, key).lock).arg(&lease.token);
        let released = self.redis.invoke::<i64>(&invocation).await;
        if let Err(error) = released {
            tracing::debug!(view, %error, "a view's reload lock was left to expire");
        }
    }

    /// Start-up check: plans the view's query (EXPLAIN, nothing runs); the database's
    /// complaint when it cannot (a missing table, a `$1` of another type).
    pub async fn check_query(&self, settings: &ViewSettings) -> Result<(), DbErr> {
        let probe = settings
            .parse_key(match settings.key_type {
                super::KeyType::Text => "probe",
                super::KeyType::Bigint => "0",
                super::KeyType::Uuid => "00000000-0000-0000-0000-000000000000",
            })
            .map_err(|error| DbErr::Custom(error.to_string()))?;
        let statement = Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!("EXPLAIN {}", settings.load_sql()),
            [probe.bind_value()],
        );
        self.db.query_all_raw(statement).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_keeps_its_freshness_beside_the_json() {
        let body = r#"{"a":"x:y"}"#;
        let cached = Cached::decode(&Cached::encode(body, 1_700_000_000_000)).unwrap();
        assert_eq!(cached.body, body);
        assert_eq!(cached.fresh_for_ms(1_700_000_000_500), -500);
        assert!(Cached::decode("garbage").is_none());
    }
}
