//! [`RedisEventStore`]: the [`EventStore`] contract on Redis Streams.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use ordo_es::{
    Appended, Checkpoint, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent,
    StoreError, StreamId, partition_of,
};
use redis::{ErrorKind, RedisError, Script, ServerErrorKind, Value};
use uuid::Uuid;

use crate::append::{self, Outcome};
use crate::codec::{self, ARGS_PER_EVENT, Source};
use crate::durability;
use crate::keys;
use crate::link::Link;
use crate::url::StoreUrl;
use crate::wait::Waiter;

/// An event store on one Redis server or a Redis Cluster.
///
/// Durability: an append is acknowledged once the Redis master has applied it; whether it
/// survives a crash depends on the server's `appendonly`/`appendfsync` settings
/// ([`connect`](Self::connect) warns about risky ones), and on a cluster a failover can
/// lose acknowledged appends that had not reached the replica (see the README).
pub struct RedisEventStore {
    url: StoreUrl,
    link: Link,
    /// The connection of reads of the global log (projections catching up, rebuilds),
    /// opened at the first one. Their replies run to thousands of events; on the command
    /// connection every append's reply would wait behind such a reply being received and
    /// parsed (a rebuild then cut the command rate by more than half, see
    /// docs/benchmarks-history.md).
    log_reads: tokio::sync::OnceCell<Link>,
    waiter: Waiter,
    append: Script,
}

/// The most entries one XRANGE of a partition's log asks for.
const LOG_READ_CHUNK: usize = 1_000;

/// A Redis failure, with what the store was doing.
#[derive(Debug, thiserror::Error)]
#[error("{context}")]
pub(crate) struct RedisFailure {
    context: String,
    #[source]
    source: RedisError,
}

impl RedisEventStore {
    /// Connects to the store named by `url`:
    ///
    /// - `redis://HOST:PORT[/DB]`: one server;
    /// - `redis+cluster://HOST:PORT[,HOST:PORT...]`: a Redis Cluster, from one or more seeds;
    ///
    /// either with optional `?prefix=NAME` (default `ordo`; every key starts with it) and
    /// `&partitions=N` (default 16). Credentials go before the host (`USER:PASSWORD@`).
    ///
    /// The partition count is recorded under the prefix on first use; a later connect with
    /// another count is refused ([`StoreError::Invalid`]), because it would move streams to
    /// other partitions. An unreachable server is [`StoreError::Unavailable`].
    pub async fn connect(url: &str) -> Result<RedisEventStore, StoreError> {
        Self::connect_with(url, true).await
    }

    /// [`connect`](Self::connect) to a store that exists, writing nothing (for tools that
    /// look, such as `ordo status`): [`StoreError::Invalid`] when no store was ever
    /// recorded under the prefix.
    pub async fn connect_existing(url: &str) -> Result<RedisEventStore, StoreError> {
        Self::connect_with(url, false).await
    }

    async fn connect_with(url: &str, create: bool) -> Result<RedisEventStore, StoreError> {
        let url = StoreUrl::parse(url)
            .map_err(|e| StoreError::Invalid(format!("bad Redis store URL: {e}")))?;
        let link = Link::open(&url)
            .await
            .map_err(|e| failure(format!("cannot connect to Redis at {url}"), e))?;

        let key = keys::partitions_key(&url.prefix);
        let query = |cmd: redis::Cmd| {
            let link = link.clone();
            async move { link.query::<Option<String>>(&cmd).await }
        };
        if create {
            let mut set = redis::cmd("SET");
            set.arg(&key).arg(url.partitions).arg("NX");
            query(set)
                .await
                .map_err(|e| failure(format!("cannot record the partition count at {url}"), e))?;
        }
        let mut get = redis::cmd("GET");
        get.arg(&key);
        let recorded = query(get)
            .await
            .map_err(|e| failure(format!("cannot read the partition count at {url}"), e))?;
        if recorded.is_none() && !create {
            return Err(StoreError::Invalid(format!(
                "no event store under prefix {:?} at {url} (no key {key})",
                url.prefix
            )));
        }
        if recorded.as_deref() != Some(url.partitions.to_string().as_str()) {
            return Err(StoreError::Invalid(format!(
                "the store under prefix {:?} has {} partitions (key {key}); this process asked \
                 for {}: the count is fixed for the life of a store",
                url.prefix,
                recorded.as_deref().unwrap_or("an unknown number of"),
                url.partitions
            )));
        }

        let store = RedisEventStore {
            log_reads: tokio::sync::OnceCell::new(),
            waiter: Waiter::new(url.clone()),
            append: append::script(),
            url,
            link,
        };
        if create {
            for warning in store.durability_warnings().await {
                tracing::warn!(store = %store.url, "{warning}");
            }
        }
        Ok(store)
    }

    /// The key prefix of this store.
    pub fn prefix(&self) -> &str {
        &self.url.prefix
    }

    /// The key of `stream`'s aggregate stream (for `redis-cli XRANGE <key> - +`).
    pub fn stream_key(&self, stream: &StreamId) -> String {
        keys::stream_key(&self.url.prefix, self.url.partitions, stream.as_str())
    }

    /// The key of one partition's log.
    pub fn log_key(&self, partition: u32) -> String {
        keys::log_key(&self.url.prefix, partition)
    }

    /// What the servers' persistence settings risk, one sentence per finding (empty when
    /// every master runs with `appendonly yes` and `appendfsync always`).
    pub async fn durability_warnings(&self) -> Vec<String> {
        durability::warnings(&self.link, &self.url.nodes[0]).await
    }

    pub(crate) fn partitions_count(&self) -> u32 {
        self.url.partitions
    }

    /// The command connection.
    pub(crate) fn link(&self) -> &Link {
        &self.link
    }

    /// Sends one command, classifying a failure with `context`.
    pub(crate) async fn send<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        context: impl FnOnce() -> String,
    ) -> Result<T, StoreError> {
        self.query(cmd, context).await
    }

    /// Runs a script (loading it on NOSCRIPT), classifying a failure with `context`.
    pub(crate) async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
        context: impl FnOnce() -> String,
    ) -> Result<T, StoreError> {
        let mut link = self.link.clone();
        invocation
            .invoke_async(&mut link)
            .await
            .map_err(|e| failure(context(), e))
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        context: impl FnOnce() -> String,
    ) -> Result<T, StoreError> {
        self.link
            .query(cmd)
            .await
            .map_err(|e| failure(context(), e))
    }
}

#[async_trait]
impl EventStore for RedisEventStore {
    fn partitions(&self) -> u32 {
        self.url.partitions
    }

    #[tracing::instrument(skip(self, events), fields(events = events.len()), err(level = "debug"))]
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        if events.is_empty() {
            return Err(StoreError::empty_append());
        }
        let partition = partition_of(stream.as_str(), self.url.partitions);
        let prefix = &self.url.prefix;
        let mut invocation = self.append.prepare_invoke();
        invocation
            .key(keys::stream_key(
                prefix,
                self.url.partitions,
                stream.as_str(),
            ))
            .key(keys::log_key(prefix, partition))
            .key(keys::seq_key(prefix, partition))
            .arg(
                expected
                    .as_number()
                    .map_or_else(|| "any".to_owned(), |v| v.to_string()),
            )
            .arg(ARGS_PER_EVENT);
        for event in &events {
            for arg in codec::encode(stream, event)? {
                invocation.arg(&arg[..]);
            }
        }
        let mut link = self.link.clone();
        let reply: Vec<i64> = invocation
            .invoke_async(&mut link)
            .await
            .map_err(|e| failure(format!("append to stream {stream}"), e))?;
        match Outcome::from_reply(&reply) {
            Some(Outcome::Conflict { actual }) => Err(StoreError::Conflict {
                stream: stream.clone(),
                expected,
                actual: Some(actual),
            }),
            Some(Outcome::Appended {
                first_version,
                first_seq,
            }) => {
                let count = events.len() as u64;
                Ok(Appended {
                    first_version,
                    last_version: first_version + count - 1,
                    positions: (0..count)
                        .map(|i| Position::new(partition, first_seq + i, 0))
                        .collect(),
                })
            }
            Some(Outcome::AlreadyAppended {
                first_version,
                seqs,
            }) if seqs.len() == events.len() => {
                tracing::debug!(%stream, first_version, "append was already stored (a retry)");
                Ok(Appended {
                    first_version,
                    last_version: first_version + seqs.len() as u64 - 1,
                    positions: seqs
                        .into_iter()
                        .map(|seq| Position::new(partition, seq, 0))
                        .collect(),
                })
            }
            Some(Outcome::AlreadyAppended { .. }) | None => Err(StoreError::Other(
                format!("the append script answered {reply:?}").into(),
            )),
        }
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(self.stream_key(stream))
            .arg(format!("{}-0", from_version.max(1)))
            .arg("+")
            .arg("COUNT")
            .arg(limit);
        let reply: Value = self.query(&cmd, || format!("read stream {stream}")).await?;
        codec::decode_entries(reply, Source::Stream, self.url.partitions)
    }

    async fn read_all(
        &self,
        after: &Checkpoint,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let link = self
            .log_reads
            .get_or_try_init(|| Link::open(&self.url))
            .await
            .map_err(|e| failure(format!("cannot connect to Redis at {}", self.url), e))?;
        let mut out = Vec::new();
        for partition in 0..self.url.partitions {
            let mut start = match after.cursor(partition).major.checked_add(1) {
                Some(start) => start,
                None => continue,
            };
            // In chunks: Redis serves nothing else while it builds one reply, appends
            // included.
            loop {
                let remaining = limit.saturating_sub(out.len());
                if remaining == 0 {
                    return Ok(out);
                }
                let count = remaining.min(LOG_READ_CHUNK);
                let mut cmd = redis::cmd("XRANGE");
                cmd.arg(self.log_key(partition))
                    .arg(format!("{start}-0"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(count);
                let reply: Value = link
                    .query(&cmd)
                    .await
                    .map_err(|e| failure(format!("read partition {partition} of the log"), e))?;
                let chunk = codec::decode_entries(reply, Source::Log, self.url.partitions)?;
                let got = chunk.len();
                let last = chunk.last().map(|e| e.position.cursor.major);
                out.extend(chunk);
                match last.and_then(|major| major.checked_add(1)) {
                    Some(next) if got == count => start = next,
                    _ => break,
                }
            }
        }
        Ok(out)
    }

    async fn wait_for_events(
        &self,
        after: &Checkpoint,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        self.waiter
            .wait(after, timeout)
            .await
            .map_err(|e| failure("wait for new events".into(), e))
    }

    async fn count_after(&self, after: &Checkpoint) -> Result<u64, StoreError> {
        let mut total = 0;
        for partition in (0..self.url.partitions).filter(|p| !after.is_pinned(*p)) {
            let mut cmd = redis::cmd("XLEN");
            cmd.arg(self.log_key(partition));
            let len: u64 = self
                .query(&cmd, || format!("count partition {partition} of the log"))
                .await?;
            // Seqs are 1..=len (never trimmed), so the entries after cursor c are len - c.
            total += len.saturating_sub(after.cursor(partition).major);
        }
        Ok(total)
    }

    /// Each partition's newest log entry id (`<seq>-0`), one XREVRANGE per partition,
    /// all in flight at once; on a cluster each goes to the node that owns the partition.
    async fn head(&self) -> Result<Checkpoint, StoreError> {
        let newest = (0..self.url.partitions).map(|partition| async move {
            let mut cmd = redis::cmd("XREVRANGE");
            cmd.arg(self.log_key(partition))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1);
            let reply: Value = self
                .query(&cmd, || {
                    format!("read the head of partition {partition} of the log")
                })
                .await?;
            codec::decode_entries(reply, Source::Log, self.url.partitions)
        });
        let mut head = Checkpoint::origin(self.url.partitions);
        for entries in futures_util::future::try_join_all(newest).await? {
            for event in &entries {
                head.advance(&event.position);
            }
        }
        Ok(head)
    }

    /// One XRANGE of the single entry `<seq>-0` of the partition's log.
    async fn event_id_at(&self, position: &Position) -> Result<Option<Uuid>, StoreError> {
        if position.partition >= self.url.partitions || position.cursor.minor != 0 {
            return Ok(None);
        }
        let id = format!("{}-0", position.cursor.major);
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(self.log_key(position.partition)).arg(&id).arg(&id);
        let reply: Value = self
            .query(&cmd, || format!("read the log entry at {position}"))
            .await?;
        let entries = codec::decode_entries(reply, Source::Log, self.url.partitions)?;
        Ok(entries.first().map(|event| event.event_id))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.query::<Value>(&redis::cmd("PING"), || "ping".into())
            .await
            .map(drop)
    }
}

impl fmt::Debug for RedisEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisEventStore")
            .field("url", &self.url.to_string())
            .finish_non_exhaustive()
    }
}

/// Classifies a Redis error by the store's error contract.
pub(crate) fn failure(context: String, source: RedisError) -> StoreError {
    match source.code() {
        Some("ORDO_CORRUPT") => {
            return StoreError::Corrupt(source.detail().unwrap_or("append refused").to_owned());
        }
        Some("ORDO_INVALID") => {
            return StoreError::Invalid(source.detail().unwrap_or("append refused").to_owned());
        }
        _ => {}
    }
    let transient = source.is_io_error()
        || source.is_timeout()
        || source.is_connection_refusal()
        || source.is_connection_dropped()
        || matches!(
            source.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                )
        );
    let failure = Box::new(RedisFailure { context, source });
    if transient {
        StoreError::Unavailable(failure)
    } else {
        StoreError::Other(failure)
    }
}
