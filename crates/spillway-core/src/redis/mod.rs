//! Redis: the connection pool, deadlines on every call, scripts re-loaded when Redis lost
//! them, and (in [`keys`]) the key shapes, hash-tagged so Redis Cluster keeps the keys a
//! script touches together on one slot.
//!
//! The Lua scripts live as files in `crates/spillway-core/lua/`; each feature's store loads
//! its own with `include_str!` (counters, views, queues, templates).

pub mod keys;

use std::time::Duration;

use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};

use crate::config::RedisSettings;

pub use deadpool_redis::Pool as RedisPool;
pub use keys::Keys;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis pool: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("redis pool set-up: {0}")]
    Create(#[from] deadpool_redis::CreatePoolError),
    #[error("redis: {0}")]
    Command(#[from] redis::RedisError),
    #[error("redis: unexpected reply: {0}")]
    Parse(#[source] redis::ParsingError),
    #[error("redis: no answer within {0} ms")]
    Timeout(u64),
}

/// Builds the pool; connections are made lazily, so a down Redis does not stop the start.
pub fn pool(settings: &RedisSettings) -> Result<Pool, RedisError> {
    let timeout = Duration::from_millis(settings.timeout_ms);
    let mut config = Config::from_url(settings.url.expose());
    config.pool = Some(PoolConfig {
        max_size: settings.pool_size,
        timeouts: Timeouts {
            wait: Some(timeout),
            create: Some(timeout),
            recycle: Some(timeout),
        },
        ..PoolConfig::default()
    });
    Ok(config.create_pool(Some(Runtime::Tokio1))?)
}

/// One deployment's Redis as the stores use it: the pool, the key shapes, and the deadline
/// of every call. Every store talks to Redis through it, so no call goes without a deadline
/// and the kind of client is chosen in one place.
#[derive(Clone)]
pub struct RedisClient {
    pool: Pool,
    keys: Keys,
    timeout: Duration,
}

impl RedisClient {
    pub fn new(pool: Pool, keys: Keys, timeout: Duration) -> Self {
        Self {
            pool,
            keys,
            timeout,
        }
    }

    /// The client the settings describe (connections are made lazily).
    pub fn from_settings(settings: &RedisSettings) -> Result<Self, RedisError> {
        Ok(Self::new(
            pool(settings)?,
            Keys::new(settings.key_prefix.clone()),
            settings.timeout(),
        ))
    }

    /// The pool, for readiness checks.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The key shapes, with the deployment's prefix.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A pooled connection, within the deadline.
    pub async fn connection(&self) -> Result<deadpool_redis::Connection, RedisError> {
        with_timeout(self.timeout, self.pool.get()).await
    }

    /// One command, within the deadline.
    pub async fn command<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, RedisError> {
        let mut connection = self.connection().await?;
        with_timeout(self.timeout, command.query_async(&mut connection)).await
    }

    /// One pipeline, within the deadline.
    pub async fn pipeline<T: redis::FromRedisValue>(
        &self,
        pipeline: &redis::Pipeline,
    ) -> Result<T, RedisError> {
        let mut connection = self.connection().await?;
        with_timeout(self.timeout, pipeline.query_async(&mut connection)).await
    }

    /// A pipeline of `EVALSHA` calls of `scripts`, loading them when Redis lost them
    /// ([`query_with_scripts`]), within the deadline.
    pub async fn pipeline_with_scripts<T: redis::FromRedisValue>(
        &self,
        pipeline: &redis::Pipeline,
        scripts: &[&redis::Script],
    ) -> Result<T, RedisError> {
        let mut connection = self.connection().await?;
        with_timeout(
            self.timeout,
            query_with_scripts(&mut connection, pipeline, scripts),
        )
        .await
    }

    /// One script call (loaded when Redis lost it), within the deadline.
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        let mut connection = self.connection().await?;
        with_timeout(self.timeout, invocation.invoke_async(&mut connection)).await
    }
}

/// Runs a Redis future under a deadline, so a hung Redis cannot hang a request.
pub async fn with_timeout<T, E>(
    timeout: Duration,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, RedisError>
where
    RedisError: From<E>,
{
    match tokio::time::timeout(timeout, future).await {
        Ok(outcome) => outcome.map_err(RedisError::from),
        Err(_) => Err(RedisError::Timeout(timeout.as_millis() as u64)),
    }
}

/// Runs a pipeline of `EVALSHA` calls; when Redis has lost the scripts (a restart or a new
/// Redis) it loads them and sends the pipeline once more. The calls must be safe to repeat.
pub async fn query_with_scripts<T: redis::FromRedisValue>(
    connection: &mut deadpool_redis::Connection,
    pipeline: &redis::Pipeline,
    scripts: &[&redis::Script],
) -> redis::RedisResult<T> {
    match pipeline.query_async(connection).await {
        Err(error) if is_missing_script(&error) => {
            for script in scripts {
                script.prepare_invoke().load_async(connection).await?;
            }
            pipeline.query_async(connection).await
        }
        outcome => outcome,
    }
}

/// Whether Redis answered NOSCRIPT, alone or for any command of a pipeline.
fn is_missing_script(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        || error.to_string().to_ascii_lowercase().contains("noscript")
}

/// Readiness: a PING answered.
pub async fn check(pool: &Pool) -> Result<(), String> {
    let mut connection = pool.get().await.map_err(|error| error.to_string())?;
    redis::cmd("PING")
        .query_async::<String>(&mut connection)
        .await
        .map(|_| ())
        .map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_error_naming_noscript_is_a_missing_script() {
        let error = redis::RedisError::from((
            redis::ErrorKind::Io,
            "pipeline failed",
            "Index 0: NOSCRIPT No matching script".to_owned(),
        ));
        assert!(is_missing_script(&error));
    }
}
