//! [`EventRewriter`] on Redis Streams: a migration's rewrite of stored payloads in place.
//!
//! A stream entry cannot be edited, and deleting one (XDEL) only flags it: its bytes stay
//! in the stream's memory, and so in every RDB file of it (AOF base files included). So a
//! rewrite builds each affected key anew and swaps it in. Per partition touched (all of
//! its keys share one slot, so one script may touch them all):
//!
//! 1. find which of the changes name an event the partition holds where and as the change
//!    expects (in the log at its seq, in its stream at its version, with its id and
//!    schema version): one read-only script; the others are left alone;
//! 2. copy the partition's log, then each affected aggregate stream, into a temporary
//!    key of the same slot (`<prefix>:{<prefix>:p<N>}:rewrite:log`, `...:rewrite:stream:<id>`),
//!    entry by entry with the same entry ids, the events found getting their new
//!    `schema_version` and `data` on the way: one script per chunk of 500 entries, so
//!    that Redis serves other clients between chunks;
//! 3. one script swaps every copy in (RENAME over the original) after checking that no
//!    key changed since it was copied (its last entry id and length) and that no other
//!    rewrite committed in the partition since step 1 (a generation counter): so the log
//!    and the streams of a partition change together, and an append that came in
//!    between is never lost. When one did come in, the copies are dropped and the
//!    partition is done again, up to three times; then the rewrite gives up with
//!    [`StoreError::Unavailable`], having changed nothing more in that partition.
//!
//! Atomicity: per partition. Partitions already swapped stay swapped when a later one
//! fails; the call can simply be made again (events rewritten already are not found as
//! they were read, and are skipped).
//!
//! It is meant to run with no concurrent writers (at the start of a lone process): appends
//! are never lost, but a partition that keeps receiving them may never be swapped. What it
//! costs: every call copies the whole log of each partition it touches (Redis has no way
//! to change part of a stream), so a migration should hand it large batches, one
//! partition's at a time ([`legacy_events`](EventRewriter::legacy_events) returns them
//! partition by partition); memory for a second copy of that log and of the streams
//! while they are built; and the copies' writes in the AOF, until it is rewritten. A
//! copy left behind by a process that died in between is dropped by the next rewrite of
//! its partition or stream (a migration run again to its end rewrites them all).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::{Script, Value};
use tokio::time::Instant;
use uuid::Uuid;

use ordo_es::rewrite::{check_rewrites, scan_legacy_events};
use ordo_es::{
    EventRewriter, RecordedEvent, Rewrite, RewriteCursor, StoreError, StreamId, partition_of,
};

use crate::RedisEventStore;
use crate::durability::{settings, text};
use crate::keys;
use crate::link::Link;

/// Entries one copy script copies: short enough for Redis to serve other clients between
/// chunks (a chunk takes about a millisecond).
const CHUNK: u64 = 500;
/// Copies of a partition made before the rewrite gives up on it (each spoilt by an
/// append or another rewrite that came in meanwhile).
const ATTEMPTS: usize = 3;
/// How long `purge_old_versions` waits for one node's background rewrite of its files.
const PURGE_PATIENCE: Duration = Duration::from_secs(600);
const PURGE_POLL: Duration = Duration::from_millis(100);

/// Which of the changes name an event that the partition holds where and as the change
/// expects: in the log at its seq and in its stream at its version, with its id and
/// schema version. Only those are rewritten.
const PROBE: &str = r#"#!lua flags=no-writes
-- ordo-redis rewrite: find the events to rewrite.
-- KEYS[1] the partition log; KEYS[2..] aggregate streams.
-- ARGV: five per change: the number of its stream in KEYS, seq, version, event id, schema
-- version expected.
-- Returns the numbers (from 1) of the changes whose event is there.
local function holds(key, id, event_id, schema_version)
  local entry = redis.call('XRANGE', key, id, id)[1]
  if not entry then return false end
  local fields = entry[2]
  local found_id, found_version
  for j = 1, #fields - 1, 2 do
    if fields[j] == 'event_id' then
      found_id = fields[j + 1]
    elseif fields[j] == 'schema_version' then
      found_version = fields[j + 1]
    end
  end
  return found_id == event_id and found_version == schema_version
end
local found = {}
for i = 1, #ARGV, 5 do
  local event_id, schema_version = ARGV[i + 3], ARGV[i + 4]
  if holds(KEYS[1], ARGV[i + 1] .. '-0', event_id, schema_version)
    and holds(KEYS[tonumber(ARGV[i])], ARGV[i + 2] .. '-0', event_id, schema_version) then
    found[#found + 1] = (i - 1) / 5 + 1
  end
end
return found
"#;

/// One chunk of a copy. Entries of the chunk named in the arguments get their new schema
/// version and data when they still hold that event at that schema version.
const COPY: &str = r#"#!lua
-- ordo-redis rewrite: copy one chunk of a stream into its temporary copy.
-- KEYS[1] the stream, KEYS[2] its copy.
-- ARGV[1] '1' on the first chunk (the copy starts afresh); ARGV[2], ARGV[3] the first and
-- last entry id of the chunk; then five per entry to rewrite: entry id, event id, schema
-- version expected, new schema version, new data.
-- Returns {entries copied, last entry id copied or '', the stream's length, entry ids
-- rewritten...}.
local source, copy = KEYS[1], KEYS[2]
if ARGV[1] == '1' then
  redis.call('DEL', copy)
end
local changes = {}
for i = 4, #ARGV, 5 do
  changes[ARGV[i]] = {ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]}
end
local entries = redis.call('XRANGE', source, ARGV[2], ARGV[3])
local reply = {tostring(#entries), '', tostring(redis.call('XLEN', source))}
for _, entry in ipairs(entries) do
  local id, fields = entry[1], entry[2]
  local change = changes[id]
  if change then
    local event_id, schema_version
    for j = 1, #fields - 1, 2 do
      if fields[j] == 'event_id' then
        event_id = fields[j + 1]
      elseif fields[j] == 'schema_version' then
        schema_version = fields[j + 1]
      end
    end
    if event_id == change[1] and schema_version == change[2] then
      for j = 1, #fields - 1, 2 do
        if fields[j] == 'schema_version' then
          fields[j + 1] = change[3]
        elseif fields[j] == 'data' then
          fields[j + 1] = change[4]
        end
      end
      reply[#reply + 1] = id
    end
  end
  redis.call('XADD', copy, id, unpack(fields))
  reply[2] = id
end
return reply
"#;

/// The swap: every copy over its original, or none.
const COMMIT: &str = r#"#!lua
-- ordo-redis rewrite: swap the copies of one partition's keys in.
-- KEYS[1] the partition's rewrite generation; then pairs of keys: a stream, its copy.
-- ARGV[1] the generation when the copies were begun; then, per pair, the stream's last
-- entry id when it was copied.
-- Returns 1 when swapped; 0 when a stream changed or another rewrite committed since
-- (the copies are dropped).
local unchanged = (redis.call('GET', KEYS[1]) or '0') == ARGV[1]
for i = 2, #KEYS, 2 do
  if not unchanged then break end
  local top = redis.call('XREVRANGE', KEYS[i], '+', '-', 'COUNT', 1)
  local last = ''
  if top[1] then last = top[1][1] end
  unchanged = last == ARGV[i / 2 + 1]
    and redis.call('XLEN', KEYS[i]) == redis.call('XLEN', KEYS[i + 1])
end
if not unchanged then
  for i = 3, #KEYS, 2 do
    redis.call('DEL', KEYS[i])
  end
  return 0
end
for i = 2, #KEYS, 2 do
  redis.call('RENAME', KEYS[i + 1], KEYS[i])
end
redis.call('INCR', KEYS[1])
return 1
"#;

/// A stream and the copy being built of it.
#[derive(Debug)]
struct Copy {
    source: String,
    copy: String,
    /// The last entry id copied ('' for an empty stream, of which nothing was copied).
    last_id: String,
    /// The entries rewritten, by the first part of their id.
    rewritten: Vec<u64>,
}

/// Legacy events are found by reading the log ([`scan_legacy_events`]): Redis keeps no
/// index by type. See the module docs for how a rewrite works and what it costs.
#[async_trait]
impl EventRewriter for RedisEventStore {
    async fn legacy_events(
        &self,
        event_type: &str,
        below: u32,
        after: Option<RewriteCursor>,
        limit: usize,
    ) -> Result<(Vec<RecordedEvent>, Option<RewriteCursor>), StoreError> {
        scan_legacy_events(self, event_type, below, after, limit).await
    }

    async fn rewrite(&self, changes: &[Rewrite]) -> Result<u64, StoreError> {
        check_rewrites(changes)?;
        let partitions = self.partitions_count();
        let mut by_partition: BTreeMap<u32, Vec<&Rewrite>> = BTreeMap::new();
        for change in changes {
            let partition = partition_of(change.stream_id.as_str(), partitions);
            // Anywhere else, no event of this store can be.
            let position = change.position;
            if position.partition == partition
                && position.cursor.minor == 0
                && position.cursor.major > 0
                && change.version > 0
            {
                by_partition.entry(partition).or_default().push(change);
            }
        }
        let mut rewritten = 0;
        for (partition, changes) in by_partition {
            rewritten += self.rewrite_partition(partition, &changes).await?;
        }
        Ok(rewritten)
    }

    /// Has every node that keeps files write them afresh from the data as it is now:
    /// where AOF is on, `BGREWRITEAOF` (the new base file holds the current data only and
    /// the older files are deleted); where RDB snapshots are configured (`save`), a
    /// `BGSAVE` (a new dump replaces the old one). It waits until each has finished, one
    /// at a time (Redis runs one such child at a time); a node with neither keeps
    /// nothing on disk, and nothing is done there. On a cluster, every node, replicas
    /// included (they keep files of their own).
    ///
    /// What it cannot reach: copies of those files made before (backups), a replica not
    /// known to the cluster client, the disk blocks of the deleted files (the file system
    /// frees them without wiping), and the server's memory: freed memory is not wiped,
    /// so the old bytes may linger there until reused (a core dump would show them).
    async fn purge_old_versions(&self) -> Result<(), StoreError> {
        for node in self.file_keeping_nodes().await? {
            for files in [Files::Aof, Files::Rdb] {
                if node.keeps(files) {
                    self.write_afresh(&node, files).await?;
                }
            }
        }
        Ok(())
    }
}

impl RedisEventStore {
    /// Rewrites the events of one partition, copying it again when an append or
    /// another rewrite spoilt a copy (see the module docs).
    async fn rewrite_partition(
        &self,
        partition: u32,
        changes: &[&Rewrite],
    ) -> Result<u64, StoreError> {
        for _ in 0..ATTEMPTS {
            match self.try_rewrite_partition(partition, changes).await {
                Ok(Some(rewritten)) => return Ok(rewritten),
                Ok(None) => {
                    tracing::info!(
                        partition,
                        "partition changed while it was copied for a rewrite; copying again"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(
            format!(
                "partition {partition} kept changing while it was copied for a rewrite \
                 (appends, or another rewrite): run the migration with no other writer"
            )
            .into(),
        ))
    }

    /// One attempt: the copies, the check, the swap. `None` when the swap found a key
    /// changed (the copies are dropped).
    async fn try_rewrite_partition(
        &self,
        partition: u32,
        changes: &[&Rewrite],
    ) -> Result<Option<u64>, StoreError> {
        let prefix = self.prefix();
        let partitions = self.partitions_count();
        let generation_key = keys::rewrite_generation_key(prefix, partition);
        let generation: Option<String> = self
            .send(redis::cmd("GET").arg(&generation_key), || {
                format!("read the rewrite generation of partition {partition}")
            })
            .await?;

        let changes = self.probe(partition, changes).await?;
        if changes.is_empty() {
            return Ok(Some(0));
        }
        let by_seq: BTreeMap<u64, &Rewrite> = changes
            .iter()
            .map(|c| (c.position.cursor.major, *c))
            .collect();
        let mut by_stream: BTreeMap<&StreamId, BTreeMap<u64, &Rewrite>> = BTreeMap::new();
        for change in &changes {
            by_stream
                .entry(&change.stream_id)
                .or_default()
                .insert(change.version, *change);
        }

        let mut copies = Vec::with_capacity(1 + by_stream.len());
        let copied = async {
            let log = self
                .copy_stream(
                    keys::log_key(prefix, partition),
                    keys::rewrite_log_key(prefix, partition),
                    &by_seq,
                )
                .await?;
            let in_log: HashSet<Uuid> = log
                .rewritten
                .iter()
                .filter_map(|seq| by_seq.get(seq).map(|c| c.event_id))
                .collect();
            copies.push(log);
            let mut in_streams = HashSet::new();
            for (stream, by_version) in &by_stream {
                let copy = self
                    .copy_stream(
                        keys::stream_key(prefix, partitions, stream.as_str()),
                        keys::rewrite_stream_key(prefix, partitions, stream.as_str()),
                        by_version,
                    )
                    .await?;
                in_streams.extend(
                    copy.rewritten
                        .iter()
                        .filter_map(|version| by_version.get(version).map(|c| c.event_id)),
                );
                copies.push(copy);
            }
            // What the probe found, nothing else: entries are never edited, and another
            // rewrite committed since would fail the swap.
            let probed: HashSet<Uuid> = changes.iter().map(|c| c.event_id).collect();
            if in_log != probed || in_streams != probed {
                return Err(StoreError::Corrupt(format!(
                    "partition {partition}: of {} events found to rewrite, the copy of the \
                     log met {} and the copies of their streams {}",
                    probed.len(),
                    in_log.len(),
                    in_streams.len()
                )));
            }
            Ok(probed.len() as u64)
        }
        .await;
        let rewritten = match copied {
            Ok(n) if n > 0 => n,
            other => {
                self.drop_copies(&copies).await;
                return other.map(Some);
            }
        };

        let script = Script::new(COMMIT);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&generation_key)
            .arg(generation.as_deref().unwrap_or("0"));
        for copy in copies.iter().filter(|c| !c.last_id.is_empty()) {
            invocation
                .key(&copy.source)
                .key(&copy.copy)
                .arg(&copy.last_id);
        }
        let swapped: i64 = self
            .invoke(&invocation, || {
                format!("swap the rewritten keys of partition {partition} in")
            })
            .await?;
        Ok((swapped == 1).then_some(rewritten))
    }

    /// The changes whose event the partition holds where and as they expect it.
    async fn probe<'a>(
        &self,
        partition: u32,
        changes: &[&'a Rewrite],
    ) -> Result<Vec<&'a Rewrite>, StoreError> {
        let prefix = self.prefix();
        let partitions = self.partitions_count();
        let script = Script::new(PROBE);
        let mut invocation = script.prepare_invoke();
        invocation.key(keys::log_key(prefix, partition));
        let mut stream_keys: HashMap<&StreamId, usize> = HashMap::new();
        for change in changes {
            let next = stream_keys.len() + 2;
            let number = *stream_keys.entry(&change.stream_id).or_insert_with(|| {
                invocation.key(keys::stream_key(
                    prefix,
                    partitions,
                    change.stream_id.as_str(),
                ));
                next
            });
            invocation
                .arg(number)
                .arg(change.position.cursor.major)
                .arg(change.version)
                .arg(change.event_id.hyphenated().to_string())
                .arg(change.expected_schema_version.to_string());
        }
        let found: Vec<usize> = self
            .invoke(&invocation, || {
                format!("find the events to rewrite in partition {partition}")
            })
            .await?;
        Ok(found
            .into_iter()
            .filter_map(|n| n.checked_sub(1).and_then(|i| changes.get(i).copied()))
            .collect())
    }

    /// Copies the stream at `source` into `copy`, chunk by chunk, the entries in
    /// `changes` (by the first part of their id) rewritten on the way.
    async fn copy_stream(
        &self,
        source: String,
        copy: String,
        changes: &BTreeMap<u64, &Rewrite>,
    ) -> Result<Copy, StoreError> {
        let script = Script::new(COPY);
        let mut done = Copy {
            source,
            copy,
            last_id: String::new(),
            rewritten: Vec::new(),
        };
        let mut copied = 0u64;
        let mut from = 1u64;
        loop {
            let to = from.saturating_add(CHUNK - 1);
            let mut invocation = script.prepare_invoke();
            invocation
                .key(&done.source)
                .key(&done.copy)
                .arg(if from == 1 { "1" } else { "0" })
                .arg(format!("{from}-0"))
                .arg(format!("{to}-0"));
            for (n, change) in changes.range(from..=to) {
                invocation
                    .arg(format!("{n}-0"))
                    .arg(change.event_id.hyphenated().to_string())
                    .arg(change.expected_schema_version.to_string())
                    .arg(change.schema_version.to_string())
                    .arg(change.data.as_str());
            }
            let reply: Vec<String> = self
                .invoke(&invocation, || {
                    format!("copy {} for a rewrite", done.source)
                })
                .await?;
            let [count, last, length, rewritten @ ..] = reply.as_slice() else {
                return Err(StoreError::Other(
                    format!("the copy script answered {reply:?}").into(),
                ));
            };
            let number = |text: &str| {
                text.split('-')
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .ok_or_else(|| {
                        StoreError::Other(format!("the copy script answered {reply:?}").into())
                    })
            };
            let count = number(count)?;
            copied += count;
            if !last.is_empty() {
                done.last_id.clone_from(last);
            }
            for id in rewritten {
                done.rewritten.push(number(id)?);
            }
            if count < CHUNK {
                if copied != number(length)? {
                    return Err(StoreError::Corrupt(format!(
                        "{} holds {length} entries, but not with the ids 1-0 to {length}-0",
                        done.source
                    )));
                }
                return Ok(done);
            }
            from = to + 1;
        }
    }

    /// Drops the copies of a rewrite that will not be swapped in. Best effort: a copy
    /// left behind is dropped by the next rewrite of its key.
    async fn drop_copies(&self, copies: &[Copy]) {
        if copies.is_empty() {
            return;
        }
        let mut del = redis::cmd("DEL");
        for copy in copies {
            del.arg(&copy.copy);
        }
        if let Err(e) = self
            .send::<i64>(&del, || "drop the copies of a rewrite".into())
            .await
        {
            tracing::warn!(error = %e, "could not drop the copies of a rewrite");
        }
    }

    /// Every node with what it keeps on disk: the server, or every node of a cluster.
    async fn file_keeping_nodes(&self) -> Result<Vec<Node>, StoreError> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg("appendonly").arg("save");
        let context = || "read the persistence settings".to_owned();
        match self.link() {
            Link::Single(_) => {
                let reply: Value = self.send(&cmd, context).await?;
                Ok(vec![Node::from_settings(None, &reply)])
            }
            Link::Cluster(conn) => {
                let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllNodes, None));
                let reply = conn
                    .clone()
                    .route_command(cmd, routing)
                    .await
                    .map_err(|e| crate::store::failure(context(), e))?;
                let Value::Map(per_node) = reply else {
                    return Err(StoreError::Other(
                        format!("CONFIG GET on every node answered {reply:?}").into(),
                    ));
                };
                per_node
                    .into_iter()
                    .map(|(address, settings)| {
                        let address = text(&address).and_then(|a| {
                            let (host, port) = a.rsplit_once(':')?;
                            Some((host.to_owned(), port.parse::<u16>().ok()?))
                        });
                        match address {
                            Some(address) => Ok(Node::from_settings(Some(address), &settings)),
                            None => Err(StoreError::Other(
                                "CONFIG GET on every node named a node without HOST:PORT".into(),
                            )),
                        }
                    })
                    .collect()
            }
        }
    }

    /// Sends `cmd` (named `what`, for errors) to `node`.
    async fn ask(&self, node: &Node, cmd: redis::Cmd, what: &str) -> Result<Value, StoreError> {
        let context = || format!("{what} on {}", node.name());
        match (&node.address, self.link()) {
            (Some((host, port)), Link::Cluster(conn)) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                let reply = conn.clone().route_command(cmd.clone(), routing).await;
                let reply = reply.map_err(|e| crate::store::failure(context(), e))?;
                match reply {
                    Value::ServerError(e) => {
                        Err(StoreError::Other(format!("{}: {e:?}", context()).into()))
                    }
                    other => Ok(other),
                }
            }
            _ => self.send(&cmd, context).await,
        }
    }

    /// Has `node` write `files` afresh, and waits until it has (see
    /// [`purge_old_versions`](EventRewriter::purge_old_versions)): one started after
    /// this call, not one that was under way already (its data is older).
    async fn write_afresh(&self, node: &Node, files: Files) -> Result<(), StoreError> {
        let deadline = Instant::now() + PURGE_PATIENCE;
        let mut started_after = None;
        loop {
            let info = self.persistence(node).await?;
            let busy = info.busy(files);
            match started_after {
                None if !busy => {
                    let done = info.count(files);
                    let command = files.command();
                    match self.ask(node, redis::cmd(command), command).await {
                        Ok(_) => started_after = Some(done),
                        // Another one started in between: wait for it, then ask again.
                        Err(e) if self.persistence(node).await?.busy(files) => {
                            tracing::debug!(error = %e, "a background write was under way");
                        }
                        Err(e) => return Err(e),
                    }
                }
                Some(before) if !busy && info.count(files) > before => {
                    return if info.succeeded(files) {
                        Ok(())
                    } else {
                        Err(StoreError::Other(
                            format!(
                                "{} on {} failed: see the server's log",
                                files.command(),
                                node.name()
                            )
                            .into(),
                        ))
                    };
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Unavailable(
                    format!(
                        "{} on {} did not finish within {} s",
                        files.command(),
                        node.name(),
                        PURGE_PATIENCE.as_secs()
                    )
                    .into(),
                ));
            }
            tokio::time::sleep(PURGE_POLL).await;
        }
    }

    async fn persistence(&self, node: &Node) -> Result<Persistence, StoreError> {
        let mut cmd = redis::cmd("INFO");
        cmd.arg("persistence");
        let reply = self.ask(node, cmd, "INFO persistence").await?;
        let info = text(&reply).ok_or_else(|| {
            StoreError::Other(format!("INFO persistence answered {reply:?}").into())
        })?;
        Ok(Persistence::parse(&info))
    }
}

/// What a node keeps on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Files {
    Aof,
    Rdb,
}

impl Files {
    fn command(self) -> &'static str {
        match self {
            Files::Aof => "BGREWRITEAOF",
            Files::Rdb => "BGSAVE",
        }
    }
}

/// A node, and whether it keeps an AOF and RDB snapshots.
#[derive(Debug)]
struct Node {
    /// `None`: the one server of a single-server store.
    address: Option<(String, u16)>,
    aof: bool,
    rdb: bool,
}

impl Node {
    fn from_settings(address: Option<(String, u16)>, reply: &Value) -> Self {
        let settings = settings(reply);
        let get = |name: &str| {
            settings
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_owned())
        };
        Node {
            address,
            aof: get("appendonly").is_some_and(|v| v.eq_ignore_ascii_case("yes")),
            rdb: get("save").is_some_and(|v| !v.is_empty()),
        }
    }

    fn keeps(&self, files: Files) -> bool {
        match files {
            Files::Aof => self.aof,
            Files::Rdb => self.rdb,
        }
    }

    fn name(&self) -> String {
        match &self.address {
            Some((host, port)) => format!("Redis {host}:{port}"),
            None => "Redis".to_owned(),
        }
    }
}

/// The fields of `INFO persistence` that tell whether a background write is under way,
/// how many have finished, and how the last one went.
#[derive(Debug, Default)]
struct Persistence(HashMap<String, String>);

impl Persistence {
    fn parse(info: &str) -> Self {
        Self(
            info.lines()
                .filter_map(|line| line.trim().split_once(':'))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> &str {
        self.0.get(name).map_or("", String::as_str)
    }

    fn busy(&self, files: Files) -> bool {
        match files {
            Files::Aof => {
                self.get("aof_rewrite_in_progress") == "1"
                    || self.get("aof_rewrite_scheduled") == "1"
            }
            Files::Rdb => self.get("rdb_bgsave_in_progress") == "1",
        }
    }

    /// How many have finished since the server started.
    fn count(&self, files: Files) -> u64 {
        let name = match files {
            Files::Aof => "aof_rewrites",
            Files::Rdb => "rdb_saves",
        };
        self.get(name).parse().unwrap_or(0)
    }

    fn succeeded(&self, files: Files) -> bool {
        let name = match files {
            Files::Aof => "aof_last_bgrewrite_status",
            Files::Rdb => "rdb_last_bgsave_status",
        };
        self.get(name) == "ok"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persistence_fields_are_read_from_info() {
        let info = Persistence::parse(
            "# Persistence\r\nloading:0\r\nrdb_bgsave_in_progress:0\r\nrdb_saves:3\r\n\
             rdb_last_bgsave_status:ok\r\naof_rewrite_in_progress:0\r\n\
             aof_rewrite_scheduled:1\r\naof_rewrites:7\r\naof_last_bgrewrite_status:err\r\n",
        );
        assert!(info.busy(Files::Aof), "a scheduled rewrite is under way");
        assert!(!info.busy(Files::Rdb));
        assert_eq!((info.count(Files::Aof), info.count(Files::Rdb)), (7, 3));
        assert!(info.succeeded(Files::Rdb));
        assert!(!info.succeeded(Files::Aof));
    }

    #[test]
    fn a_node_keeps_what_its_settings_say() {
        let reply = |aof: &str, save: &str| {
            Value::Array(
                ["appendonly", aof, "save", save]
                    .iter()
                    .map(|s| Value::BulkString(s.as_bytes().to_vec()))
                    .collect(),
            )
        };
        let node = Node::from_settings(None, &reply("yes", ""));
        assert!(node.keeps(Files::Aof) && !node.keeps(Files::Rdb));
        let node = Node::from_settings(None, &reply("no", "3600 1 300 100"));
        assert!(!node.keeps(Files::Aof) && node.keeps(Files::Rdb));
    }

    #[test]
    fn every_write_of_the_swap_comes_after_every_check() {
        let first_write = COMMIT.find("redis.call('RENAME'").expect("a write");
        for check in ["'GET'", "XREVRANGE", "XLEN"] {
            let last = COMMIT.rfind(check).expect("the check is there");
            assert!(last < first_write, "{check} comes after the first write");
        }
        assert!(COMMIT.starts_with("#!lua\n") && COPY.starts_with("#!lua\n"));
    }
}
