//! Redis: the connection pool (of one Redis, or of a Redis Cluster: [`cluster`]), deadlines
//! on every call, scripts re-loaded when Redis lost them, `WAIT` for the writes that must
//! survive a failover, and (in [`keys`]) the key shapes, hash-tagged so Redis Cluster keeps
//! the keys a script touches together on one slot.
//!
//! The Lua scripts live as files in `crates/spillway-core/lua/`; each feature's store loads
//! its own with `include_str!` (counters, views, queues, templates).

pub mod cluster;
pub mod keys;

use std::time::Duration;

use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};
use redis::{RedisFuture, Value, aio::ConnectionLike};

use crate::config::{RedisMode, RedisSettings};

pub use cluster::ClusterConnection;
pub use keys::Keys;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// Either pool's (the single one's and the cluster's are the same deadpool type).
    #[error("redis pool: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("redis pool set-up: {0}")]
    Create(#[from] deadpool_redis::CreatePoolError),
    #[error("redis cluster pool set-up: {0}")]
    ClusterCreate(#[from] deadpool::managed::BuildError),
    #[error("redis: {0}")]
    Command(#[from] redis::RedisError),
    #[error("redis: unexpected reply: {0}")]
    Parse(#[source] redis::ParsingError),
    #[error("redis: no answer within {0} ms")]
    Timeout(u64),
    #[error(
        "redis: written, but {confirmed} of the {wanted} replicas asked for (redis.wait_replicas) \
         confirmed it within {timeout_ms} ms"
    )]
    NotReplicated {
        wanted: u32,
        confirmed: u32,
        timeout_ms: u64,
    },
}

fn timeouts(timeout: Duration) -> Timeouts {
    Timeouts {
        wait: Some(timeout),
        create: Some(timeout),
        recycle: Some(timeout),
    }
}

/// The single-node pool; connections are made lazily, so a down Redis does not stop the
/// start.
fn single_pool(settings: &RedisSettings) -> Result<Pool, RedisError> {
    let mut config = Config::from_url(settings.url.expose());
    config.pool = Some(PoolConfig {
        max_size: settings.pool_size,
        timeouts: timeouts(settings.timeout()),
        ..PoolConfig::default()
    });
    Ok(config.create_pool(Some(Runtime::Tokio1))?)
}

/// The pool of cluster connections (each reaches every node); made lazily, like the other.
fn cluster_pool(settings: &RedisSettings) -> Result<cluster::ClusterPool, RedisError> {
    let nodes: Vec<String> = settings
        .nodes
        .iter()
        .map(|node| node.expose().to_owned())
        .collect();
    let client = cluster::client(&nodes, settings.timeout())?;
    Ok(
        cluster::ClusterPool::builder(cluster::ClusterManager::new(client))
            .max_size(settings.pool_size)
            .timeouts(timeouts(settings.timeout()))
            .runtime(Runtime::Tokio1)
            .build()?,
    )
}

#[derive(Clone)]
enum Backend {
    Single(Pool),
    Cluster(cluster::ClusterPool),
}

/// What a replicated call waits for.
#[derive(Debug, Clone, Copy)]
struct WaitRule {
    replicas: u32,
    timeout: Duration,
}

/// A connection checked out for one call: to the single Redis, or to the whole cluster
/// (pipelines split per slot: [`cluster`]).
pub enum RedisConnection {
    Single(deadpool_redis::Connection),
    Cluster(deadpool::managed::Object<cluster::ClusterManager>),
}

impl RedisConnection {
    /// On a cluster: has the pool replace this connection (a call on it ran past its
    /// deadline, so it may be wedged on a node that is gone: [`ClusterConnection::discard`]).
    /// A single Redis's connection is checked by its pool as it is.
    fn discard(&self) {
        if let Self::Cluster(connection) = self {
            connection.discard();
        }
    }

    /// `WAIT` for what this connection wrote (on a cluster: on the master of every slot it
    /// touched); the fewest replicas that confirmed, `None` when it touched nothing.
    async fn wait_for_replicas(
        &mut self,
        rule: WaitRule,
    ) -> Result<Option<u32>, redis::RedisError> {
        match self {
            Self::Single(connection) => {
                let confirmed: u32 = redis::cmd("WAIT")
                    .arg(rule.replicas)
                    .arg(rule.timeout.as_millis().max(1) as u64)
                    .query_async(connection)
                    .await?;
                Ok(Some(confirmed))
            }
            Self::Cluster(connection) => {
                connection
                    .wait_for_replicas(rule.replicas, rule.timeout)
                    .await
            }
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, command: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(command),
            Self::Cluster(connection) => connection.req_packed_command(command),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

/// One deployment's Redis as the stores use it: the pool (of a single Redis or of a
/// cluster), the key shapes, and the deadline of every call. Every store talks to Redis
/// through it, so no call goes without a deadline and the kind of client is chosen in one
/// place; the stores' keys and scripts are the same for both kinds (each script touches one
/// hash tag; a pipeline spanning slots is split per slot on a cluster: [`cluster`]).
#[derive(Clone)]
pub struct RedisClient {
    backend: Backend,
    keys: Keys,
    timeout: Duration,
    /// Set on the handle [`RedisClient::replicated`] returns, when replicas are asked for.
    wait: Option<WaitRule>,
    replicas: WaitRule,
}

impl RedisClient {
    /// The client the settings describe (connections are made lazily).
    pub fn from_settings(settings: &RedisSettings) -> Result<Self, RedisError> {
        let backend = match settings.mode {
            RedisMode::Single => Backend::Single(single_pool(settings)?),
            RedisMode::Cluster => Backend::Cluster(cluster_pool(settings)?),
        };
        Ok(Self {
            backend,
            keys: Keys::new(settings.key_prefix.clone()),
            timeout: settings.timeout(),
            wait: None,
            replicas: WaitRule {
                replicas: settings.replicas_to_wait_for(),
                timeout: settings.wait_timeout(),
            },
        })
    }

    /// The same Redis, for calls whose writes must survive a failover: each returns only
    /// once `redis.wait_replicas` replicas hold what it wrote (`WAIT`), and fails otherwise
    /// (the writes stay on the master; every such call is safe to repeat). For a counter's
    /// apply, a template copy handed out, a pending-write marker set or cleared, a waiting
    /// room's step; not for caches and locks, which a failover may lose.
    pub fn replicated(&self) -> Self {
        let mut replicated = self.clone();
        replicated.wait = (self.replicas.replicas > 0).then_some(self.replicas);
        replicated
    }

    /// The key shapes, with the deployment's prefix.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.backend, Backend::Cluster(_))
    }

    /// A pooled connection, within the deadline.
    pub async fn connection(&self) -> Result<RedisConnection, RedisError> {
        match &self.backend {
            Backend::Single(pool) => with_timeout(self.timeout, pool.get())
                .await
                .map(RedisConnection::Single),
            Backend::Cluster(pool) => with_timeout(self.timeout, pool.get())
                .await
                .map(RedisConnection::Cluster),
        }
    }

    /// For a replicated handle: the replicas confirm what `connection` wrote, or the call
    /// fails.
    async fn confirm_replicated(&self, connection: &mut RedisConnection) -> Result<(), RedisError> {
        let Some(rule) = self.wait else {
            return Ok(());
        };
        match connection.wait_for_replicas(rule).await? {
            Some(confirmed) if confirmed < rule.replicas => Err(RedisError::NotReplicated {
                wanted: rule.replicas,
                confirmed,
                timeout_ms: rule.timeout.as_millis() as u64,
            }),
            _ => Ok(()),
        }
    }

    /// One command, within the deadline.
    pub async fn command<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, RedisError> {
        let mut connection = self.connection().await?;
        let outcome = with_timeout(self.timeout, async {
            let value = command.query_async(&mut connection).await?;
            self.confirm_replicated(&mut connection).await?;
            Ok::<T, RedisError>(value)
        })
        .await;
        discard_after_timeout(&connection, outcome)
    }

    /// One pipeline, within the deadline (split per slot on a cluster, so it must be safe to
    /// send again: [`cluster`]).
    pub async fn pipeline<T: redis::FromRedisValue>(
        &self,
        pipeline: &redis::Pipeline,
    ) -> Result<T, RedisError> {
        let mut connection = self.connection().await?;
        let outcome = with_timeout(self.timeout, async {
            let value = pipeline.query_async(&mut connection).await?;
            self.confirm_replicated(&mut connection).await?;
            Ok::<T, RedisError>(value)
        })
        .await;
        discard_after_timeout(&connection, outcome)
    }

    /// A pipeline of `EVALSHA` calls of `scripts`, loading them when Redis lost them
    /// ([`query_with_scripts`]), within the deadline.
    pub async fn pipeline_with_scripts<T: redis::FromRedisValue>(
        &self,
        pipeline: &redis::Pipeline,
        scripts: &[&redis::Script],
    ) -> Result<T, RedisError> {
        let mut connection = self.connection().await?;
        let outcome = with_timeout(self.timeout, async {
            let value = query_with_scripts(&mut connection, pipeline, scripts).await?;
            self.confirm_replicated(&mut connection).await?;
            Ok::<T, RedisError>(value)
        })
        .await;
        discard_after_timeout(&connection, outcome)
    }

    /// One script call (loaded when Redis lost it), within the deadline.
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        let mut connection = self.connection().await?;
        let outcome = with_timeout(self.timeout, async {
            let value = invocation.invoke_async(&mut connection).await?;
            self.confirm_replicated(&mut connection).await?;
            Ok::<T, RedisError>(value)
        })
        .await;
        discard_after_timeout(&connection, outcome)
    }

    /// Every key matching `pattern`: `SCAN` in steps, each within the deadline; on a
    /// cluster, on every master. May list a key twice (as `SCAN` may).
    pub async fn scan_keys(&self, pattern: &str) -> Result<Vec<String>, RedisError> {
        let mut keys = Vec::new();
        let mut connection = self.connection().await?;
        match &mut connection {
            RedisConnection::Single(single) => {
                let mut cursor = 0;
                loop {
                    let mut scan = redis::cmd("SCAN");
                    scan.arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(cluster::SCAN_COUNT);
                    let (next, found): (u64, Vec<String>) =
                        with_timeout(self.timeout, scan.query_async(single)).await?;
                    keys.extend(found);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            RedisConnection::Cluster(cluster) => {
                let masters = with_timeout(self.timeout, cluster.masters()).await?;
                for master in &masters {
                    let mut cursor = 0;
                    loop {
                        let (next, found) =
                            with_timeout(self.timeout, cluster.scan_step(master, cursor, pattern))
                                .await?;
                        keys.extend(found);
                        if next == 0 {
                            break;
                        }
                        cursor = next;
                    }
                }
            }
        }
        Ok(keys)
    }

    /// Readiness: a PING answered (on a cluster, by every master).
    pub async fn check(&self) -> Result<(), String> {
        self.command::<String>(&redis::cmd("PING"))
            .await
            .map(drop)
            .map_err(|error| error.to_string())
    }
}

/// A call's outcome; a connection whose call ran past the deadline is not handed out again
/// (on a cluster).
fn discard_after_timeout<T>(
    connection: &RedisConnection,
    outcome: Result<T, RedisError>,
) -> Result<T, RedisError> {
    if let Err(RedisError::Timeout(_)) = &outcome {
        connection.discard();
    }
    outcome
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
    connection: &mut impl ConnectionLike,
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
