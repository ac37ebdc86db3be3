//! Redis: the connection pool, the key shapes (hash-tagged so Redis Cluster keeps the keys a
//! script touches together on one slot), and the Lua scripts, which live as files in
//! `crates/spillway-core/lua/` and are loaded with `include_str!`.

use std::time::Duration;

use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};

use crate::config::RedisSettings;

pub use deadpool_redis::Pool as RedisPool;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis pool: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("redis pool set-up: {0}")]
    Create(#[from] deadpool_redis::CreatePoolError),
    #[error("redis: {0}")]
    Command(#[from] redis::RedisError),
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

/// The Lua scripts, loaded from `crates/spillway-core/lua/`.
pub mod scripts {
    use std::sync::LazyLock;

    /// Applies one counter event exactly once (see the script's header).
    pub static COUNTER_APPLY: LazyLock<redis::Script> =
        LazyLock::new(|| redis::Script::new(include_str!("../lua/counter_apply.lua")));
    /// Creates a counter hash from its database row unless it exists.
    pub static COUNTER_LOAD: LazyLock<redis::Script> =
        LazyLock::new(|| redis::Script::new(include_str!("../lua/counter_load.lua")));
    /// Hands one ready template copy to exactly one caller.
    pub static POOL_TAKE: LazyLock<redis::Script> =
        LazyLock::new(|| redis::Script::new(include_str!("../lua/pool_take.lua")));
    /// Puts a finished copy into its pool unless it is there or was handed out.
    pub static POOL_PUSH: LazyLock<redis::Script> =
        LazyLock::new(|| redis::Script::new(include_str!("../lua/pool_push.lua")));
    /// One step of a waiting room: expire, apply the caller's operation, admit, describe.
    pub static QUEUE_ADMIT: LazyLock<redis::Script> =
        LazyLock::new(|| redis::Script::new(include_str!("../lua/queue_admit.lua")));
    /// Takes copies out of a pool before they are deleted.
    pub static POOL_REMOVE: LazyLock<redis::Script> =
        LazyLock::new(|| redis::Script::new(include_str!("../lua/pool_remove.lua")));
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

/// The key shapes of DESIGN.md, behind an optional prefix (outside the hash tag) that lets
/// tests share one Redis.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// `{c:<namespace>:<entity_id>}`: a counter's value, applied offset and version.
    pub fn counter(&self, namespace: &str, entity_id: &str) -> String {
        format!("{}{{c:{namespace}:{entity_id}}}", self.prefix)
    }

    /// `{c:<namespace>:<entity_id>}:m`: a distinct counter's members.
    pub fn counter_members(&self, namespace: &str, entity_id: &str) -> String {
        format!("{}:m", self.counter(namespace, entity_id))
    }

    /// `{w:<sink>:<id>}`: a write acknowledged but not yet committed.
    pub fn pending_write(&self, sink: &str, id: &str) -> String {
        format!("{}{{w:{sink}:{id}}}", self.prefix)
    }

    /// `{p:<template_id>}`: the ids of a template's ready copies, oldest at the right.
    pub fn template_pool(&self, template_id: &str) -> String {
        format!("{}{{p:{template_id}}}", self.prefix)
    }

    /// `{p:<template_id>}:r`: the records of the copies in the pool, by copy id.
    pub fn template_pool_records(&self, template_id: &str) -> String {
        format!("{}:r", self.template_pool(template_id))
    }

    /// `{p:<template_id>}:t`: copies handed out whose database row may still say ready.
    pub fn template_pool_taken(&self, template_id: &str) -> String {
        format!("{}:t", self.template_pool(template_id))
    }

    /// `{q:<queue>}:<part>`: one of a waiting room's keys (see `lua/queue_admit.lua`).
    pub fn queue(&self, queue: &str, part: &str) -> String {
        format!("{}{{q:{queue}}}:{part}", self.prefix)
    }

    /// `{v:<view>:<key>}`: a view's cached result (`:l` its reload lock, `:g` its
    /// generation); all carry a TTL.
    pub fn view(&self, view: &str, key: &str) -> String {
        format!("{}{{v:{view}:{key}}}", self.prefix)
    }

    /// Any other key of this deployment, under the same prefix.
    pub fn other(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
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

    #[test]
    fn keys_share_their_hash_tag() {
        let keys = Keys::new("t1:");
        assert_eq!(keys.counter("video-likes", "v1"), "t1:{c:video-likes:v1}");
        assert_eq!(
            keys.counter_members("video-likes", "v1"),
            "t1:{c:video-likes:v1}:m"
        );
        assert_eq!(keys.pending_write("playlists", "x"), "t1:{w:playlists:x}");
        assert_eq!(keys.template_pool("tpl"), "t1:{p:tpl}");
    }
}
