//! Waiting for new events without polling: blocking XREAD on dedicated connections.
//!
//! A blocked XREAD holds its connection until it returns, so it must never run on the
//! multiplexed command connection (every other command of the process would queue behind
//! it). The waiter keeps its own pool of connections, named `ordo-wait:<prefix>` in
//! `CLIENT LIST`.
//!
//! - One server: one `XREAD BLOCK <ms> STREAMS <log 0> .. <log P-1> <cursor 0> ..` returns
//!   as soon as any partition log has an entry past the checkpoint.
//! - Partitions the checkpoint pins at `Cursor::END` (a projection shard reads one) are
//!   left out of the XREAD, or get no XREAD of their own on a cluster.
//! - Redis Cluster: keys in different slots cannot share a command (CROSSSLOT), so one
//!   XREAD per partition, each on its own connection to the node that owns the partition's
//!   slot (learnt from MOVED replies and remembered), all at once. The first to return
//!   data ends the wait; the others are released with `CLIENT UNBLOCK <id>` (sent on a
//!   small per-node control connection), so that their connections go back to the pool
//!   instead of being closed and opened again at the next wait.
//!
//! A connection whose XREAD returned normally goes back to the pool; one dropped in the
//! middle of a blocked read (the caller gave up on the wait, or a read could not be
//! released in time) is closed, which also ends its XREAD on the server; it is never
//! reused.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use ordo_es::Checkpoint;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError, RedisResult, Value};

use crate::keys::log_key;
use crate::link::CONNECT_TIMEOUT;
use crate::url::StoreUrl;

/// Extra time granted past the XREAD's own BLOCK before giving up on the server.
const GRACE: Duration = Duration::from_secs(5);
/// Idle connections kept per node.
const MAX_IDLE_PER_NODE: usize = 64;
/// MOVED replies followed before a partition's wait gives up and returns early.
const MAX_REDIRECTS: usize = 5;
/// How long the end of a cluster wait spends releasing the other partitions' reads.
const RELEASE_PATIENCE: Duration = Duration::from_secs(1);
const RELEASE_ROUND: Duration = Duration::from_millis(50);

/// A connection for blocking reads, with its server-side client id (for CLIENT UNBLOCK).
struct Dedicated {
    conn: MultiplexedConnection,
    client_id: i64,
}

impl fmt::Debug for Dedicated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dedicated(client {})", self.client_id)
    }
}

/// The reads of one wait that are blocked right now: (node, client id).
type InFlight = Mutex<Vec<(String, i64)>>;

#[derive(Debug)]
pub(crate) struct Waiter {
    url: StoreUrl,
    client_name: String,
    idle: Mutex<HashMap<String, Vec<Dedicated>>>,
    /// Per node, a connection that never blocks: it sends CLIENT UNBLOCK.
    control: Mutex<HashMap<String, MultiplexedConnection>>,
    /// Cluster only: the node (`host:port`) that owned each partition's slot last time.
    routes: Mutex<Vec<Option<String>>>,
}

enum Read {
    /// The XREAD returned entries.
    Data,
    /// The BLOCK timeout passed with nothing new.
    Nothing,
    /// The key lives on another node.
    Redirect(String),
}

impl Waiter {
    pub(crate) fn new(url: StoreUrl) -> Self {
        let partitions = url.partitions as usize;
        Self {
            client_name: format!("ordo-wait:{}", url.prefix),
            url,
            idle: Mutex::new(HashMap::new()),
            control: Mutex::new(HashMap::new()),
            routes: Mutex::new(vec![None; partitions]),
        }
    }

    /// Returns when a partition log has an entry not covered by `after` (at once if one is
    /// already there), or after `timeout`. Partitions `after` pins at `Cursor::END` are not
    /// read (no blocked read is spent on them); when it pins every one, this sleeps out
    /// the timeout.
    pub(crate) async fn wait(&self, after: &Checkpoint, timeout: Duration) -> RedisResult<()> {
        let partitions: Vec<u32> = (0..self.url.partitions)
            .filter(|p| !after.is_pinned(*p))
            .collect();
        if partitions.is_empty() {
            tokio::time::sleep(timeout).await;
            return Ok(());
        }
        let block_ms = if timeout.is_zero() {
            None
        } else {
            Some(
                u64::try_from(timeout.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            )
        };
        let cursor_id = |p: u32| format!("{}-0", after.cursor(p).major);
        let work = async {
            let in_flight = InFlight::default();
            if !self.url.cluster {
                let keys: Vec<String> = partitions
                    .iter()
                    .map(|p| log_key(&self.url.prefix, *p))
                    .collect();
                let ids: Vec<String> = partitions.iter().copied().map(cursor_id).collect();
                let node = self.url.nodes[0].clone();
                self.read(&node, &keys, &ids, block_ms, &in_flight).await?;
                return Ok(());
            }
            let mut reads: FuturesUnordered<_> = partitions
                .iter()
                .map(|&p| self.read_partition(p, cursor_id(p), block_ms, &in_flight))
                .collect();
            let mut outcome = Ok(());
            while let Some(found) = reads.next().await {
                match found {
                    Ok(false) => {}
                    Ok(true) => break,
                    Err(err) => {
                        outcome = Err(err);
                        break;
                    }
                }
            }
            // Release the reads still blocked, so that their connections are reused.
            // A read that was not blocked yet when its round's UNBLOCK went out is caught
            // by the next round; whatever is left at the end is dropped (and so closed).
            let deadline = tokio::time::Instant::now() + RELEASE_PATIENCE;
            while !reads.is_empty() && tokio::time::Instant::now() < deadline {
                let blocked = std::mem::take(&mut *lock(&in_flight));
                self.unblock(&blocked).await;
                let round = async { while reads.next().await.is_some() {} };
                let _ = tokio::time::timeout(RELEASE_ROUND, round).await;
            }
            outcome
        };
        match tokio::time::timeout(timeout.saturating_add(GRACE), work).await {
            Ok(result) => result,
            // The server did not answer a BLOCK in time: the contract allows returning.
            Err(_elapsed) => Ok(()),
        }
    }

    /// One partition's blocking read on a cluster, following MOVED. True when something
    /// may be new (data, or a topology change cut the wait short).
    async fn read_partition(
        &self,
        partition: u32,
        id: String,
        block_ms: Option<u64>,
        in_flight: &InFlight,
    ) -> RedisResult<bool> {
        let key = [log_key(&self.url.prefix, partition)];
        let ids = [id];
        for _ in 0..MAX_REDIRECTS {
            let node = self.route(partition);
            match self.read(&node, &key, &ids, block_ms, in_flight).await? {
                Read::Data => return Ok(true),
                Read::Nothing => return Ok(false),
                Read::Redirect(to) => self.set_route(partition, to),
            }
        }
        // The slot is moving (resharding or failover): let the caller look again soon.
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(true)
    }

    /// One XREAD on a dedicated connection to `node`.
    async fn read(
        &self,
        node: &str,
        keys: &[String],
        ids: &[String],
        block_ms: Option<u64>,
        in_flight: &InFlight,
    ) -> RedisResult<Read> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(1);
        if let Some(ms) = block_ms {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS").arg(keys).arg(ids);

        let (mut dedicated, pooled) = self.connection(node).await?;
        let mut reply = self
            .blocking_query(node, &cmd, &mut dedicated, in_flight)
            .await;
        if pooled && reply.as_ref().is_err_and(is_stale_connection) {
            // A pooled connection may have died while idle (server restart): once more
            // on a fresh one.
            dedicated = self.fresh_connection(node).await?;
            reply = self
                .blocking_query(node, &cmd, &mut dedicated, in_flight)
                .await;
        }
        match reply {
            Ok(value) => {
                self.put_back(node, dedicated);
                Ok(if has_entries(&value) {
                    Read::Data
                } else {
                    Read::Nothing
                })
            }
            Err(err) => match err.redirect_node() {
                // `MOVED <slot> <host>:<port>`; the host is empty when the server does
                // not know its own address: then it is the host we asked.
                Some((addr, _slot)) => {
                    let to = match addr.strip_prefix(':') {
                        Some(port) => {
                            let host = node.rsplit_once(':').map_or(node, |(h, _)| h);
                            format!("{host}:{port}")
                        }
                        None => addr.to_owned(),
                    };
                    self.put_back(node, dedicated);
                    Ok(Read::Redirect(to))
                }
                None => Err(err),
            },
        }
    }

    /// Runs `cmd` on `dedicated`, listed in `in_flight` while it may be blocked.
    async fn blocking_query(
        &self,
        node: &str,
        cmd: &redis::Cmd,
        dedicated: &mut Dedicated,
        in_flight: &InFlight,
    ) -> RedisResult<Value> {
        let entry = (node.to_owned(), dedicated.client_id);
        lock(in_flight).push(entry.clone());
        let reply = cmd.query_async(&mut dedicated.conn).await;
        lock(in_flight).retain(|e| *e != entry);
        reply
    }

    async fn connection(&self, node: &str) -> RedisResult<(Dedicated, bool)> {
        let pooled = lock(&self.idle).get_mut(node).and_then(Vec::pop);
        match pooled {
            Some(dedicated) => Ok((dedicated, true)),
            None => Ok((self.fresh_connection(node).await?, false)),
        }
    }

    async fn fresh_connection(&self, node: &str) -> RedisResult<Dedicated> {
        let client = redis::Client::open(self.url.node_url(node))?;
        // No response timeout: the reply to a BLOCK comes when the server decides.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(None);
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(&self.client_name)
            .exec_async(&mut conn)
            .await?;
        let client_id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn)
            .await?;
        Ok(Dedicated { conn, client_id })
    }

    fn put_back(&self, node: &str, dedicated: Dedicated) {
        let mut idle = lock(&self.idle);
        let conns = idle.entry(node.to_owned()).or_default();
        if conns.len() < MAX_IDLE_PER_NODE {
            conns.push(dedicated);
        }
    }

    /// Best effort: `CLIENT UNBLOCK` each blocked read, on its node's control connection.
    /// A read that cannot be released is dropped later, which ends it too.
    async fn unblock(&self, blocked: &[(String, i64)]) {
        let releases: FuturesUnordered<_> = blocked
            .iter()
            .map(|(node, client_id)| async move {
                let Ok(mut conn) = self.control_connection(node).await else {
                    return;
                };
                let mut cmd = redis::cmd("CLIENT");
                cmd.arg("UNBLOCK").arg(*client_id);
                if cmd.query_async::<i64>(&mut conn).await.is_err() {
                    lock(&self.control).remove(node);
                }
            })
            .collect();
        releases.collect::<Vec<()>>().await;
    }

    async fn control_connection(&self, node: &str) -> RedisResult<MultiplexedConnection> {
        if let Some(conn) = lock(&self.control).get(node) {
            return Ok(conn.clone());
        }
        let client = redis::Client::open(self.url.node_url(node))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CONNECT_TIMEOUT));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        lock(&self.control).insert(node.to_owned(), conn.clone());
        Ok(conn)
    }

    fn route(&self, partition: u32) -> String {
        let routes = lock(&self.routes);
        routes
            .get(partition as usize)
            .cloned()
            .flatten()
            .unwrap_or_else(|| {
                // No route known yet: spread the first guesses over the seeds.
                self.url.nodes[partition as usize % self.url.nodes.len()].clone()
            })
    }

    fn set_route(&self, partition: u32, node: String) {
        let mut routes = lock(&self.routes);
        if let Some(slot) = routes.get_mut(partition as usize) {
            *slot = Some(node);
        }
    }
}

/// The guarded data stays consistent even if a holder panicked (each critical section is
/// one push, pop or insert), so a poisoned lock is still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn has_entries(value: &Value) -> bool {
    match value {
        Value::Nil => false,
        Value::Array(items) | Value::Set(items) => !items.is_empty(),
        Value::Map(items) => !items.is_empty(),
        _ => true,
    }
}

fn is_stale_connection(err: &RedisError) -> bool {
    err.is_connection_dropped() || err.is_io_error()
}
