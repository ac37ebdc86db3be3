//! Redis Cluster behind [`super::RedisClient`]: a pool of `redis::cluster_async` connections
//! (redirections, failovers and reconnecting are the client library's), pipelines split per
//! slot, and `WAIT` for the writes that must survive a failover.
//!
//! **Pipelines are split per slot.** redis-rs sends a non-atomic pipeline to one node, the
//! one of its first key, and refuses a pipeline whose keys span slots (CROSSSLOT); on a
//! redirection or a dropped connection it sends the *whole* pipeline again, to the new node.
//! Grouped per node, a pipeline would re-run the commands of the slots that had succeeded
//! whenever the topology changed under it; grouped per slot, a redirection moves exactly the
//! commands it concerns. So [`ClusterConnection`] sends a pipeline that spans slots as one
//! sub-pipeline per slot (each keeping its commands' order), all at once (a node's share
//! travels over the one multiplexed connection to it, so their round trips overlap), and
//! puts the replies back in the pipeline's order, so `Pipeline::query_async` decodes them as
//! if one node had answered. Commands of different slots have no order between them (see
//! `counters::store` for the epoch reads of the apply pipeline). When one slot fails, the
//! call fails although other slots' commands ran: every pipeline spillway sends is safe to
//! send again (so is every `EVALSHA` pipeline, which a NOSCRIPT re-sends anyway). An atomic
//! pipeline (`MULTI`) is sent as it is, and must keep to one slot.
//!
//! **Replicated writes.** Replication is asynchronous: a master may acknowledge a write and
//! die before its replica has it, and the replica promoted in its place then lacks it (a
//! counter that lost applied events, a template copy back in its pool after it was handed
//! out). A replicated call ([`super::RedisClient::replicated`]) therefore ends with `WAIT
//! <replicas> <timeout>` to the master of every slot it touched, on the connections its
//! commands went over: the pooled connection is the call's alone while it runs, and on each
//! node the first `WAIT` covers everything written before it (the others return at once).
//! A `WAIT` that finds too few replicas fails the call, which is retried: its writes happened
//! on the master and are safe to repeat. The call's deadline (`redis.timeout_ms`) stays below
//! the cluster's `cluster-node-timeout`, so no failover can complete between a write and its
//! `WAIT` without the call timing out first.
//!
//! The pool is spillway's own deadpool manager rather than deadpool-redis's cluster pool,
//! whose recycle check PINGs every master on every checkout: three round trips per call, and
//! every call failing while any one master is down.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use futures::future::join_all;
use redis::{
    Arg, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value,
    aio::ConnectionLike,
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr},
};

/// Retries of one request inside the client (a redirection counts as one); our own deadline
/// bounds the whole call anyway.
const CLIENT_RETRIES: u32 = 3;
const CLIENT_MIN_RETRY_WAIT_MS: u64 = 50;
const CLIENT_MAX_RETRY_WAIT_MS: u64 = 400;

/// Commands without a key (routed by the client to one node, or to all masters).
const KEYLESS: [&[u8]; 14] = [
    b"PING",
    b"WAIT",
    b"INFO",
    b"ECHO",
    b"TIME",
    b"ROLE",
    b"DBSIZE",
    b"FLUSHALL",
    b"FLUSHDB",
    b"KEYS",
    b"SCAN",
    b"SCRIPT",
    b"CLUSTER",
    b"CONFIG",
];

/// The client for the seed nodes `nodes`, with per-request timeouts of `timeout`.
pub fn client(nodes: &[String], timeout: Duration) -> RedisResult<ClusterClient> {
    ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(CLIENT_RETRIES)
        .min_retry_wait(CLIENT_MIN_RETRY_WAIT_MS)
        .max_retry_wait(CLIENT_MAX_RETRY_WAIT_MS)
        .build()
}

/// The key a command routes by, if it has one (`EVALSHA`'s first key, else its first
/// argument).
fn key_of(command: &Cmd) -> Option<&[u8]> {
    let mut args = command.args_iter().filter_map(|arg| match arg {
        Arg::Simple(bytes) => Some(bytes),
        _ => None,
    });
    let name = args.next()?;
    let upper = name.to_ascii_uppercase();
    if matches!(
        upper.as_slice(),
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO"
    ) {
        let _script = args.next()?;
        let keys: usize = std::str::from_utf8(args.next()?).ok()?.parse().ok()?;
        return if keys == 0 { None } else { args.next() };
    }
    if KEYLESS.contains(&upper.as_slice()) {
        return None;
    }
    args.next()
}

/// The slot a command goes to, if it has a key.
pub fn slot_of(command: &Cmd) -> Option<Slot> {
    key_of(command).map(Slot::for_key)
}

/// Whether a failed call may have left the connection with a stale view of the cluster:
/// I/O failures and timeouts (a node gone or wedged), redirections and cluster-down
/// answers that reached us (the client did not follow them), a write or `WAIT` refused by a
/// node that is a replica now. A script's or command's own error (NOSCRIPT, WRONGTYPE, a
/// Lua error) leaves it as it was.
fn leaves_connection_stale(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_cluster_error()
        || error.is_unrecoverable_error()
        || error.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
        || error.to_string().contains("replica")
}

/// The commands of `pipeline` grouped by slot, in the order each slot first appears; each
/// group lists its commands' positions in order. Keyless commands form one group.
fn group_by_slot(pipeline: &Pipeline) -> Vec<(Option<Slot>, Vec<usize>)> {
    let mut groups: Vec<(Option<Slot>, Vec<usize>)> = Vec::new();
    let mut group_of: HashMap<Option<Slot>, usize> = HashMap::new();
    for (index, command) in pipeline.cmd_iter().enumerate() {
        let slot = slot_of(command);
        let group = *group_of.entry(slot).or_insert_with(|| {
            groups.push((slot, Vec::new()));
            groups.len() - 1
        });
        groups[group].1.push(index);
    }
    groups
}

/// One cluster connection, checked out of the pool for one call: it splits pipelines per
/// slot and remembers the slots it touched, for [`ClusterConnection::wait_for_replicas`].
#[derive(Clone)]
pub struct ClusterConnection {
    inner: redis::cluster_async::ClusterConnection,
    touched: HashSet<Slot>,
    /// Set when a call failed in a way that can leave the connection stale, or ran past its
    /// deadline (then the pool replaces it: [`ClusterConnection::discard`]).
    broken: Arc<AtomicBool>,
}

impl ClusterConnection {
    pub fn new(inner: redis::cluster_async::ClusterConnection) -> Self {
        Self {
            inner,
            touched: HashSet::new(),
            broken: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A connection of its own to the cluster at `nodes` (tests, tools).
    pub async fn connect(nodes: &[String], timeout: Duration) -> RedisResult<Self> {
        Ok(Self::new(
            client(nodes, timeout)?.get_async_connection().await?,
        ))
    }

    /// Forgets the slots touched so far.
    pub fn forget_touched(&mut self) {
        self.touched.clear();
    }

    fn note(&mut self, slot: Option<Slot>) {
        if let Some(slot) = slot {
            self.touched.insert(slot);
        }
    }

    /// Marks the connection for replacement when `outcome` failed in a way that may leave
    /// its slot map or its node connections stale (see [`leaves_connection_stale`]).
    fn note_failure<T>(&self, outcome: &RedisResult<T>) {
        if let Err(error) = outcome
            && leaves_connection_stale(error)
        {
            self.discard();
        }
    }

    /// Has the pool replace this connection instead of handing it out again: a call on it
    /// ran past its deadline, or failed on the cluster's topology. After a master was killed
    /// and its replica promoted, a connection that kept its old view could time out on every
    /// call for minutes (seen on the local cluster: one counter's partitions stuck); a new one
    /// reads the slots afresh.
    pub fn discard(&self) {
        self.broken.store(true, Ordering::Relaxed);
    }

    /// `WAIT replicas timeout` on the master of every slot touched since the last call of
    /// this (or since checkout); returns the fewest replicas any of them confirmed (`None`
    /// when nothing was touched).
    pub async fn wait_for_replicas(
        &mut self,
        replicas: u32,
        timeout: Duration,
    ) -> RedisResult<Option<u32>> {
        let slots: Vec<Slot> = self.touched.drain().collect();
        if slots.is_empty() {
            return Ok(None);
        }
        let timeout_ms = timeout.as_millis().max(1) as u64;
        let waits = slots.into_iter().map(|slot| {
            let mut connection = self.inner.clone();
            let mut wait = redis::cmd("WAIT");
            wait.arg(replicas).arg(timeout_ms);
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                Route::with_slot(slot, SlotAddr::Master),
            ));
            async move { connection.route_command(wait, route).await }
        });
        let mut fewest = u32::MAX;
        for reply in join_all(waits).await {
            // A node that is no longer the slot's master answers with an error, as it should.
            let confirmed = reply
                .and_then(|value| value.extract_error())
                .and_then(|value| redis::from_redis_value::<u32>(value).map_err(Into::into));
            self.note_failure(&confirmed);
            fewest = fewest.min(confirmed?);
        }
        Ok(Some(fewest))
    }

    /// The masters' addresses (`host`, `port`), from `CLUSTER NODES` (any node's view).
    pub async fn masters(&mut self) -> RedisResult<Vec<(String, u16)>> {
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut self.inner)
            .await?;
        Ok(masters_in(&nodes))
    }

    /// One `SCAN` step on the node at `address`.
    pub async fn scan_step(
        &mut self,
        address: &(String, u16),
        cursor: u64,
        pattern: &str,
    ) -> RedisResult<(u64, Vec<String>)> {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: address.0.clone(),
            port: address.1,
        });
        redis::from_redis_value(self.inner.route_command(scan, route).await?).map_err(Into::into)
    }

    /// Sends a pipeline spanning several slots as one sub-pipeline per slot (see the module
    /// documentation); the replies in the pipeline's order.
    async fn split(
        &mut self,
        pipeline: &Pipeline,
        groups: Vec<(Option<Slot>, Vec<usize>)>,
    ) -> RedisResult<Vec<Value>> {
        let commands: Vec<&Cmd> = pipeline.cmd_iter().collect();
        let sends = groups.iter().map(|(_, indices)| {
            let mut part = Pipeline::with_capacity(indices.len());
            for &index in indices {
                part.add_command(commands[index].clone());
            }
            let mut connection = self.inner.clone();
            async move { connection.req_packed_commands(&part, 0, part.len()).await }
        });
        let outcomes = join_all(sends).await;
        let mut replies = vec![Value::Nil; commands.len()];
        for ((slot, indices), outcome) in groups.iter().zip(outcomes) {
            self.note_failure(&outcome);
            self.note(*slot);
            for (&index, value) in indices.iter().zip(outcome?) {
                replies[index] = value;
            }
        }
        Ok(replies)
    }
}

impl ConnectionLike for ClusterConnection {
    fn req_packed_command<'a>(&'a mut self, command: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let outcome = self.inner.req_packed_command(command).await;
            self.note_failure(&outcome);
            self.note(slot_of(command));
            outcome
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let whole = !pipeline.is_transaction() && offset == 0 && count == pipeline.len();
            if whole {
                let groups = group_by_slot(pipeline);
                if groups.len() > 1 {
                    return self.split(pipeline, groups).await;
                }
            }
            let outcome = self
                .inner
                .req_packed_commands(pipeline, offset, count)
                .await;
            self.note_failure(&outcome);
            self.note(pipeline.cmd_iter().find_map(slot_of));
            outcome
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// Keys a `SCAN` step looks at.
pub const SCAN_COUNT: usize = 1_000;

/// The masters of a `CLUSTER NODES` reply that are not failing: `<id> <ip:port@bus>
/// <flags> ...`.
fn masters_in(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, address, flags) = (fields.next()?, fields.next()?, fields.next()?);
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master") || flags.iter().any(|f| f.starts_with("fail")) {
                return None;
            }
            let (host, port) = address.split('@').next()?.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

/// Makes the pool's cluster connections. A checked-in connection is not pinged: the client
/// reconnects to nodes by itself, and a ping would go to every master.
pub struct ClusterManager {
    client: ClusterClient,
}

impl ClusterManager {
    pub fn new(client: ClusterClient) -> Self {
        Self { client }
    }
}

impl managed::Manager for ClusterManager {
    type Type = ClusterConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<ClusterConnection, RedisError> {
        Ok(ClusterConnection::new(
            self.client.get_async_connection().await?,
        ))
    }

    async fn recycle(
        &self,
        connection: &mut ClusterConnection,
        _: &Metrics,
    ) -> RecycleResult<RedisError> {
        if connection.broken.load(Ordering::Relaxed) {
            return Err(RecycleError::message(
                "the cluster connection failed in a way that can leave it stale; replaced",
            ));
        }
        connection.forget_touched();
        Ok(())
    }
}

pub type ClusterPool = managed::Pool<ClusterManager>;

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline_of(commands: &[Cmd]) -> Pipeline {
        let mut pipeline = redis::pipe();
        for command in commands {
            pipeline.add_command(command.clone());
        }
        pipeline
    }

    #[test]
    fn a_script_call_routes_by_its_first_key_and_a_keyless_one_by_none() {
        let mut call = redis::cmd("EVALSHA");
        call.arg("abc")
            .arg(2)
            .arg("t:{c:ns:e1}")
            .arg("t:{c:ns:e1}:m")
            .arg(7);
        assert_eq!(slot_of(&call), Some(Slot::for_key("{c:ns:e1}")));
        let mut keyless = redis::cmd("EVALSHA");
        keyless.arg("abc").arg(0).arg("not-a-key");
        assert_eq!(slot_of(&keyless), None);
        assert_eq!(slot_of(redis::cmd("PING").arg("x")), None);
        assert_eq!(
            slot_of(redis::cmd("HGET").arg("{w:s:1}").arg("v")),
            Some(Slot::for_key("w:s:1"))
        );
    }

    #[test]
    fn the_masters_are_read_from_cluster_nodes() {
        let nodes = "a1 127.0.0.1:17001@27001 myself,master - 0 0 1 connected 0-5460\n\
                     b2 127.0.0.1:17004@27004 slave a1 0 0 1 connected\n\
                     c3 127.0.0.1:17002@27002 master,fail - 0 0 2 connected\n\
                     d4 127.0.0.1:17005@27005 master - 0 0 4 connected 5461-10922\n";
        assert_eq!(
            masters_in(nodes),
            vec![
                ("127.0.0.1".to_owned(), 17001),
                ("127.0.0.1".to_owned(), 17005)
            ]
        );
    }

    #[test]
    fn commands_are_grouped_per_slot_in_order_of_first_appearance() {
        let get = |key: &str| {
            let mut command = redis::cmd("GET");
            command.arg(key);
            command
        };
        let pipeline = pipeline_of(&[
            get("p:epoch"),
            get("p:{c:a}"),
            get("p:{c:b}"),
            get("p:{c:a}:m"),
            get("p:epoch"),
        ]);
        let groups: Vec<Vec<usize>> = group_by_slot(&pipeline)
            .into_iter()
            .map(|(_, indices)| indices)
            .collect();
        assert_eq!(groups, vec![vec![0, 4], vec![1, 3], vec![2]]);
    }
}
