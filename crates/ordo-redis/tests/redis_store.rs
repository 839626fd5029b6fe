//! ordo-redis against real servers: the conformance suites twice (one Redis, a Redis
//! Cluster of three masters), the event store's and the key store's, and the properties
//! only this backend has.
//!
//! - One server: `ORDO_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`.
//! - Cluster: `ORDO_TEST_REDIS_CLUSTER_URL`, default
//!   `redis+cluster://127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003`, which is what
//!   `scripts/redis-cluster.sh start /tmp/ordo-redis-cluster 7000` starts.
//!
//! Every store gets its own prefix `t-<uuid>`, so runs never see each other's keys. A
//! missing server fails the tests with what to start: a green run that tested nothing
//! would be worse than a red one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ordo_domain::privacy::{EraseOutcome, KeyStore, KeyStoreError, Subject, WrappedKey};
use ordo_es::{
    Checkpoint, EventRewriter, EventStore, ExpectedVersion, Metadata, NewEvent, RecordedEvent,
    Rewrite, StoreError, StreamId, partition_of,
};
use ordo_redis::{RedisEventStore, RedisKeys, key_slot, log_key, stream_key};
use ordo_testkit::{error_chain, eventually};
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::{FromRedisValue, Value};
use uuid::Uuid;

#[derive(Clone, Copy, Debug)]
enum Target {
    Single,
    Cluster,
}

impl Target {
    fn url(self) -> String {
        let (var, default) = self.env();
        std::env::var(var).unwrap_or_else(|_| default.to_owned())
    }

    fn env(self) -> (&'static str, &'static str) {
        match self {
            Target::Single => ("ORDO_TEST_REDIS_URL", "redis://127.0.0.1:6379"),
            Target::Cluster => (
                "ORDO_TEST_REDIS_CLUSTER_URL",
                "redis+cluster://127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003",
            ),
        }
    }

    fn how_to_start(self) -> &'static str {
        match self {
            Target::Single => {
                "start one (`redis-server --port 6379 --save '' --appendonly no --daemonize yes`; \
                 `apt-get install redis-server` if missing) or point ORDO_TEST_REDIS_URL at one"
            }
            Target::Cluster => {
                "start one with `scripts/redis-cluster.sh start /tmp/ordo-redis-cluster 7000` \
                 (needs redis-server: `apt-get install redis-server`) or point \
                 ORDO_TEST_REDIS_CLUSTER_URL at one"
            }
        }
    }
}

fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

/// `t-<run>-<uuid>`: the run id (`ORDO_TEST_RUN`, set by scripts/test.sh) lets the test
/// command delete exactly this run's keys when it ends.
fn unique_prefix() -> String {
    let run = std::env::var("ORDO_TEST_RUN")
        .ok()
        .filter(|r| !r.is_empty() && r.len() <= 12 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or_else(|| "x".into());
    format!("t-{run}-{}", Uuid::now_v7())
}

async fn connect_with(target: Target, params: &str) -> RedisEventStore {
    let url = with_params(&target.url(), params);
    match RedisEventStore::connect(&url).await {
        Ok(store) => store,
        Err(err) => {
            let (var, _) = target.env();
            panic!(
                "cannot use the {target:?} Redis at {} ({var}): {}. This test needs a live \
                 server: {}",
                target.url(),
                error_chain(&err),
                target.how_to_start()
            )
        }
    }
}

async fn fresh_store(target: Target) -> RedisEventStore {
    connect_with(target, &format!("prefix={}", unique_prefix())).await
}

/// A plain connection for looking at the keys behind the store's back.
#[derive(Clone)]
enum Raw {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Raw {
    async fn open(target: Target) -> Raw {
        let url = target.url();
        let base = url.split('?').next().unwrap_or(&url).to_owned();
        let opened = match target {
            Target::Single => match redis::Client::open(base.as_str()) {
                Ok(client) => client
                    .get_multiplexed_async_connection()
                    .await
                    .map(Raw::Single),
                Err(e) => Err(e),
            },
            Target::Cluster => {
                let nodes: Vec<String> = base
                    .trim_start_matches("redis+cluster://")
                    .split(',')
                    .map(|n| format!("redis://{n}"))
                    .collect();
                match redis::cluster::ClusterClient::new(nodes) {
                    Ok(client) => client.get_async_connection().await.map(Raw::Cluster),
                    Err(e) => Err(e),
                }
            }
        };
        opened.unwrap_or_else(|e| {
            panic!(
                "cannot open a plain connection to {url}: {e}. {}",
                target.how_to_start()
            )
        })
    }

    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let result = match self.clone() {
            Raw::Single(mut c) => cmd.query_async(&mut c).await,
            Raw::Cluster(mut c) => cmd.query_async(&mut c).await,
        };
        result.unwrap_or_else(|e| panic!("raw command failed: {e}"))
    }

    /// `CLIENT LIST` of every master (one server: just that one).
    async fn client_lists(&self) -> Vec<String> {
        let mut cmd = redis::cmd("CLIENT");
        cmd.arg("LIST");
        match self.clone() {
            Raw::Single(_) => vec![self.query::<String>(&cmd).await],
            Raw::Cluster(mut c) => {
                let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                let reply = c.route_command(cmd, routing).await.expect("CLIENT LIST");
                let Value::Map(per_node) = reply else {
                    panic!("CLIENT LIST on all masters answered {reply:?}")
                };
                per_node
                    .into_iter()
                    .map(|(_, list)| String::from_redis_value(list).expect("text"))
                    .collect()
            }
        }
    }

    async fn xlen(&self, key: &str) -> u64 {
        self.query(redis::cmd("XLEN").arg(key)).await
    }
}

fn event(n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        aggregate_type: "Thing".into(),
        event_type: "ThingHappened".into(),
        schema_version: 1,
        occurred_at: time::OffsetDateTime::now_utc(),
        data: serde_json::json!({ "n": n }).into(),
        metadata: Metadata::default(),
    }
}

fn events(count: u64) -> Vec<NewEvent> {
    (0..count).map(event).collect()
}

fn seq_key(prefix: &str, partition: u32) -> String {
    // Documented layout: the counter sits beside the log, under the same hash tag.
    log_key(prefix, partition).replace(":log", ":seq")
}

// ---------------------------------------------------------------------------------------
// The conformance suite, twice.

mod single_conformance {
    use super::{Target, fresh_store};
    ordo_es::event_store_conformance!(async { fresh_store(Target::Single).await });
}

mod cluster_conformance {
    use super::{Target, fresh_store};
    ordo_es::event_store_conformance!(async { fresh_store(Target::Cluster).await });
}

mod single_rewriter_conformance {
    use super::{Target, fresh_store};
    ordo_es::event_rewriter_conformance!(async { fresh_store(Target::Single).await });
}

mod cluster_rewriter_conformance {
    use super::{Target, fresh_store};
    ordo_es::event_rewriter_conformance!(async { fresh_store(Target::Cluster).await });
}

mod single_snapshot_conformance {
    use super::{Target, fresh_store};
    ordo_es::snapshot_store_conformance!(async { fresh_store(Target::Single).await });
}

mod cluster_snapshot_conformance {
    use super::{Target, fresh_store};
    ordo_es::snapshot_store_conformance!(async { fresh_store(Target::Cluster).await });
}

// ---------------------------------------------------------------------------------------
// The key store: its conformance suite twice, each case under a prefix of its own.

async fn fresh_keys(target: Target) -> RedisKeys {
    let url = with_params(&target.url(), &format!("prefix={}", unique_prefix()));
    RedisKeys::connect(&url).await.unwrap_or_else(|err| {
        let (var, _) = target.env();
        panic!(
            "cannot use the {target:?} Redis at {} ({var}): {err}. This test needs a live \
             server: {}",
            target.url(),
            target.how_to_start()
        )
    })
}

mod single_key_store_conformance {
    use super::{Target, fresh_keys};
    ordo_domain::key_store_conformance!(async { fresh_keys(Target::Single).await });
}

mod cluster_key_store_conformance {
    use super::{Target, fresh_keys};
    ordo_domain::key_store_conformance!(async { fresh_keys(Target::Cluster).await });
}

/// The key store's keys as documented (`data_keys.rs`).
fn key_store_keys(prefix: &str) -> Vec<String> {
    ["wrapped", "subject", "created", "live", "ids", "erasures"]
        .iter()
        .map(|name| format!("{prefix}:{{{prefix}:keys}}:{name}"))
        .collect()
}

fn wrapped_key(subject: u8) -> WrappedKey {
    WrappedKey {
        id: Uuid::now_v7(),
        subject: Subject::from_bytes([subject; 32]),
        wrapped: (0..56u8).map(|i| i.wrapping_mul(29) ^ subject).collect(),
        created_at: ordo_es::now_micros(),
    }
}

/// Every key of the key store is in one slot by the server's count, so each script
/// runs on one node; and an erasure leaves the wrapped key in none of them.
async fn the_key_store_is_one_slot_and_an_erased_key_is_in_none_of_its_keys(target: Target) {
    let keys = fresh_keys(target).await;
    let raw = Raw::open(target).await;
    let names = key_store_keys(keys.prefix());
    let doomed = keys.create_key(wrapped_key(1)).await.expect("create");
    let kept = keys.create_key(wrapped_key(2)).await.expect("create");
    if matches!(target, Target::Cluster) {
        for name in &names {
            let server_slot: u16 = raw
                .query(redis::cmd("CLUSTER").arg("KEYSLOT").arg(name))
                .await;
            assert_eq!(server_slot, key_slot(&names[0]), "{name}");
        }
    }
    let stored: Vec<u8> = raw
        .query(redis::cmd("HGET").arg(&names[0]).arg(doomed.id.to_string()))
        .await;
    assert_eq!(stored, doomed.wrapped, "the layout is the documented one");
    let erased = keys
        .erase(&doomed.subject, ordo_es::now_micros(), "admin")
        .await
        .expect("erase");
    assert!(matches!(erased, EraseOutcome::Erased(_)), "{erased:?}");
    let mut everything: Vec<u8> = Vec::new();
    for name in &names {
        let kind: String = raw.query(redis::cmd("TYPE").arg(name)).await;
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "hash" => raw.query(redis::cmd("HGETALL").arg(name)).await,
            "zset" => {
                raw.query(redis::cmd("ZRANGE").arg(name).arg(0).arg(-1))
                    .await
            }
            other => panic!("{name} is a {other}"),
        };
        everything.extend(values.into_iter().flatten());
    }
    assert!(
        !everything
            .windows(doomed.wrapped.len())
            .any(|w| w == doomed.wrapped.as_slice()),
        "the erased key is still stored"
    );
    assert!(
        !everything
            .windows(36)
            .any(|w| w == doomed.id.to_string().as_bytes()),
        "the erased key's id is still stored"
    );
    assert_eq!(keys.keys(&[kept.id]).await.expect("keys"), vec![kept]);
}

/// The scripts' cache does not survive a restart or a failover: each script is loaded
/// again on NOSCRIPT.
async fn the_key_store_survives_a_flushed_script_cache(target: Target) {
    let keys = fresh_keys(target).await;
    let raw = Raw::open(target).await;
    let made = keys.create_key(wrapped_key(3)).await.expect("create");
    let mut flush = redis::cmd("SCRIPT");
    flush.arg("FLUSH");
    match raw.clone() {
        Raw::Single(_) => raw.query::<()>(&flush).await,
        Raw::Cluster(mut c) => {
            let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
            c.route_command(flush, routing)
                .await
                .expect("SCRIPT FLUSH on every master");
        }
    }
    assert_eq!(
        keys.live_key(&made.subject).await.expect("live"),
        Some(made)
    );
}

// ---------------------------------------------------------------------------------------
// Properties of this backend, on both targets.

async fn a_conflict_leaves_neither_the_stream_nor_the_log_changed(target: Target) {
    let store = fresh_store(target).await;
    let raw = Raw::open(target).await;
    let stream = StreamId::new(format!("order-{}", Uuid::now_v7()));
    let partition = partition_of(stream.as_str(), store.partitions());
    store
        .append(&stream, ExpectedVersion::NoStream, events(3))
        .await
        .expect("append");
    let stream_key = store.stream_key(&stream);
    let log_key = store.log_key(partition);
    let counter = seq_key(store.prefix(), partition);
    let before = (
        raw.xlen(&stream_key).await,
        raw.xlen(&log_key).await,
        raw.query::<u64>(redis::cmd("GET").arg(&counter)).await,
    );
    assert_eq!(before, (3, 3, 3));

    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(2),
        ExpectedVersion::Exact(4),
    ] {
        let err = store
            .append(&stream, expected, events(5))
            .await
            .expect_err("stale");
        assert!(
            matches!(
                err,
                StoreError::Conflict {
                    actual: Some(3),
                    ..
                }
            ),
            "expected a conflict reporting version 3, got {err:?}"
        );
    }
    let after = (
        raw.xlen(&stream_key).await,
        raw.xlen(&log_key).await,
        raw.query::<u64>(redis::cmd("GET").arg(&counter)).await,
    );
    assert_eq!(after, before, "a conflicting append wrote something");
}

async fn every_key_of_a_partition_is_in_one_slot_by_the_servers_count(target: Target) {
    let store = fresh_store(target).await;
    let raw = Raw::open(target).await;
    for id in ["order-1", "order-{braces}", "ünïcødé", "x}y{z"] {
        let stream = StreamId::new(id);
        let partition = partition_of(id, store.partitions());
        let keys = [
            stream_key(store.prefix(), store.partitions(), id),
            store.stream_key(&stream),
            log_key(store.prefix(), partition),
            seq_key(store.prefix(), partition),
        ];
        for key in &keys {
            let server_slot: u16 = raw
                .query(redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
                .await;
            assert_eq!(
                server_slot,
                key_slot(&keys[0]),
                "{key} is not in the slot of {}",
                keys[0]
            );
            assert_eq!(
                key_slot(key),
                server_slot,
                "key_slot disagrees with the server on {key}"
            );
        }
    }
}

async fn expected_any_appends_at_the_next_version(target: Target) {
    let store = fresh_store(target).await;
    let stream = StreamId::new("any-1");
    store
        .append(&stream, ExpectedVersion::Any, events(2))
        .await
        .expect("first");
    let appended = store
        .append(&stream, ExpectedVersion::Any, events(1))
        .await
        .expect("second");
    assert_eq!((appended.first_version, appended.last_version), (3, 3));
    let read = store.read_stream(&stream, 1, 10).await.expect("read");
    assert_eq!(
        read.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
}

async fn a_blocked_wait_uses_dedicated_connections_and_releases_them(target: Target) {
    let store = Arc::new(fresh_store(target).await);
    let raw = Raw::open(target).await;
    let name = format!("name=ordo-wait:{}", store.prefix());
    let blocked = |lists: Vec<String>| {
        lists
            .iter()
            .flat_map(|list| list.lines().map(str::to_owned).collect::<Vec<_>>())
            .filter(|line| line.split(' ').any(|f| f == name))
            .filter(|line| {
                line.contains(" cmd=xread")
                    && line
                        .split(' ')
                        .any(|f| f.starts_with("flags=") && f.contains('b'))
            })
            .count()
    };

    let waiter = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let origin = Checkpoint::origin(store.partitions());
            store
                .wait_for_events(&origin, Duration::from_secs(60))
                .await
        })
    };
    // Until the waiter has blocked: bounded, it only has to connect.
    let expected = match target {
        Target::Single => 1,
        Target::Cluster => store.partitions() as usize,
    };
    let seen = eventually(Duration::from_secs(5), || async {
        let seen = blocked(raw.client_lists().await);
        if seen >= expected {
            Ok(seen)
        } else {
            Err(seen)
        }
    })
    .await
    .unwrap_or_else(|seen| seen);
    assert_eq!(seen, expected, "blocked XREADs named {name}");
    // The command connection is not held up by the blocked reads.
    store.ping().await.expect("ping while a wait is blocked");
    assert!(!waiter.is_finished(), "the wait returned with nothing new");

    // An append ends the wait, and the other partitions' reads are released.
    store
        .append(&StreamId::new("wake"), ExpectedVersion::NoStream, events(1))
        .await
        .expect("append");
    tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the wait did not end after an append")
        .expect("task")
        .expect("wait");
    let left = eventually(Duration::from_secs(5), || async {
        let left = blocked(raw.client_lists().await);
        if left == 0 { Ok(left) } else { Err(left) }
    })
    .await
    .unwrap_or_else(|left| left);
    assert_eq!(left, 0, "blocked XREADs left behind after the wait ended");

    // The released connections stay open for the next wait, which reuses them.
    let named_ids = |lists: Vec<String>| {
        let mut ids: Vec<String> = lists
            .iter()
            .flat_map(|list| list.lines().map(str::to_owned).collect::<Vec<_>>())
            .filter(|line| line.split(' ').any(|f| f == name))
            .map(|line| {
                // Client ids are per server: qualify them with the server's address.
                let field = |key: &str| {
                    line.split(' ')
                        .find_map(|f| f.strip_prefix(key).map(str::to_owned))
                        .unwrap_or_default()
                };
                format!("{}#{}", field("laddr="), field("id="))
            })
            .collect();
        ids.sort();
        ids
    };
    let pooled = named_ids(raw.client_lists().await);
    // (More than one per partition on a cluster: the first wait guessed some nodes
    // wrong and followed MOVED; those connections are kept too.)
    assert!(
        pooled.len() >= expected,
        "connections kept for reuse: {pooled:?}"
    );
    let mut checkpoint = Checkpoint::origin(store.partitions());
    for e in store
        .read_all(&checkpoint.clone(), 100)
        .await
        .expect("read")
    {
        checkpoint.advance(&e.position);
    }
    let second = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .wait_for_events(&checkpoint, Duration::from_secs(60))
                .await
        })
    };
    eventually(Duration::from_secs(5), || async {
        let seen = blocked(raw.client_lists().await);
        if seen >= expected {
            Ok(seen)
        } else {
            Err(seen)
        }
    })
    .await
    .unwrap_or_else(|seen| seen);
    store
        .append(&StreamId::new("wake"), ExpectedVersion::Exact(1), events(1))
        .await
        .expect("append");
    tokio::time::timeout(Duration::from_secs(20), second)
        .await
        .expect("the second wait did not end after an append")
        .expect("task")
        .expect("wait");
    assert_eq!(
        named_ids(raw.client_lists().await),
        pooled,
        "the second wait did not reuse the first one's connections"
    );

    // A wait that is dropped mid-way closes its connections too.
    let origin_past = {
        let mut cp = Checkpoint::origin(store.partitions());
        for e in store.read_all(&cp.clone(), 100).await.expect("read") {
            cp.advance(&e.position);
        }
        cp
    };
    let dropped = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .wait_for_events(&origin_past, Duration::from_secs(60))
                .await
        })
    };
    eventually(Duration::from_secs(5), || async {
        let seen = blocked(raw.client_lists().await);
        if seen >= expected {
            Ok(seen)
        } else {
            Err(seen)
        }
    })
    .await
    .unwrap_or_else(|seen| seen);
    dropped.abort();
    let _ = dropped.await;
    let left = eventually(Duration::from_secs(5), || async {
        let left = blocked(raw.client_lists().await);
        if left == 0 { Ok(left) } else { Err(left) }
    })
    .await
    .unwrap_or_else(|left| left);
    assert_eq!(left, 0, "a dropped wait left blocked XREADs on the server");
}

async fn a_store_refuses_another_partition_count(target: Target) {
    let prefix = unique_prefix();
    let first = connect_with(target, &format!("prefix={prefix}&partitions=4")).await;
    assert_eq!(first.partitions(), 4);
    let again = connect_with(target, &format!("prefix={prefix}&partitions=4")).await;
    assert_eq!(again.partitions(), 4);
    let url = with_params(&target.url(), &format!("prefix={prefix}&partitions=8"));
    let err = RedisEventStore::connect(&url)
        .await
        .expect_err("8 partitions over 4");
    assert!(
        matches!(&err, StoreError::Invalid(m) if m.contains("4 partitions")),
        "{err:?}"
    );
}

/// A look at a store (`ordo status`) writes nothing: a prefix never used stays empty.
async fn connecting_to_an_existing_store_creates_none(target: Target) {
    let prefix = unique_prefix();
    let url = with_params(&target.url(), &format!("prefix={prefix}&partitions=4"));
    let err = RedisEventStore::connect_existing(&url)
        .await
        .expect_err("nothing under a new prefix");
    assert!(
        matches!(&err, StoreError::Invalid(m) if m.contains("no event store")),
        "{err:?}"
    );
    let err = RedisEventStore::connect_existing(&url)
        .await
        .expect_err("still nothing: the first look recorded no partition count");
    assert!(matches!(&err, StoreError::Invalid(_)), "{err:?}");
    let created = connect_with(target, &format!("prefix={prefix}&partitions=4")).await;
    created
        .append(
            &StreamId::new("looked-at"),
            ExpectedVersion::NoStream,
            events(2),
        )
        .await
        .expect("append");
    let existing = RedisEventStore::connect_existing(&url)
        .await
        .expect("an existing store");
    assert_eq!(existing.partitions(), 4);
    assert_eq!(
        existing
            .count_after(&Checkpoint::origin(4))
            .await
            .expect("count"),
        2
    );
}

/// EVAL's script cache does not survive a restart or a failover; the store loads the
/// script again on NOSCRIPT.
async fn appends_survive_a_flushed_script_cache(target: Target) {
    let store = fresh_store(target).await;
    let raw = Raw::open(target).await;
    let stream = StreamId::new("noscript");
    store
        .append(&stream, ExpectedVersion::NoStream, events(1))
        .await
        .expect("first");
    let mut flush = redis::cmd("SCRIPT");
    flush.arg("FLUSH");
    match raw.clone() {
        Raw::Single(_) => raw.query::<()>(&flush).await,
        Raw::Cluster(mut c) => {
            let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
            c.route_command(flush, routing)
                .await
                .expect("SCRIPT FLUSH on every master");
        }
    }
    let appended = store
        .append(&stream, ExpectedVersion::Exact(1), events(1))
        .await
        .expect("append after SCRIPT FLUSH");
    assert_eq!(appended.last_version, 2);
}

/// A retried append (same events, same expected version; the first reply was lost) gets
/// the first one's outcome instead of a conflict, and stores nothing twice.
async fn repeating_an_append_with_the_same_events_returns_the_first_outcome(target: Target) {
    let store = fresh_store(target).await;
    let stream = StreamId::new("retried");
    store
        .append(&stream, ExpectedVersion::NoStream, events(2))
        .await
        .expect("first");
    let batch = events(3);
    let first = store
        .append(&stream, ExpectedVersion::Exact(2), batch.clone())
        .await
        .expect("append");
    store
        .append(&stream, ExpectedVersion::Exact(5), events(1))
        .await
        .expect("a later append");
    let again = store
        .append(&stream, ExpectedVersion::Exact(2), batch.clone())
        .await
        .expect("the same append again");
    assert_eq!(again, first);
    assert_eq!(
        store
            .read_stream(&stream, 1, 100)
            .await
            .expect("read")
            .len(),
        6
    );

    // Not the same append: a conflict, as always.
    let mut other = batch.clone();
    other[2].event_id = Uuid::now_v7();
    let err = store
        .append(&stream, ExpectedVersion::Exact(2), other)
        .await
        .expect_err("different events");
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                actual: Some(6),
                ..
            }
        ),
        "{err:?}"
    );
    // The events at those versions are these events: stored already, whichever
    // append they came with.
    let part = store
        .append(&stream, ExpectedVersion::Exact(2), batch[..2].to_vec())
        .await
        .expect("events already stored at those versions");
    assert_eq!(part.positions, first.positions[..2].to_vec());
    let logged = store
        .read_all(&Checkpoint::origin(store.partitions()), 100)
        .await
        .expect("read_all");
    assert_eq!(logged.iter().filter(|e| e.stream_id == stream).count(), 6);
}

/// Events already stored that came from more than one append: their positions are the
/// ones they were stored at, not a made-up contiguous run.
async fn a_retry_reports_the_positions_the_events_were_stored_at(target: Target) {
    let store = connect_with(target, &format!("prefix={}&partitions=1", unique_prefix())).await;
    let stream = StreamId::new("split");
    let first = events(2);
    let second = events(1);
    store
        .append(&stream, ExpectedVersion::NoStream, first.clone())
        .await
        .expect("first");
    store
        .append(
            &StreamId::new("between"),
            ExpectedVersion::NoStream,
            events(1),
        )
        .await
        .expect("another stream, same partition");
    store
        .append(&stream, ExpectedVersion::Exact(2), second.clone())
        .await
        .expect("second");
    let stored = store.read_stream(&stream, 2, 10).await.expect("read");
    let again = store
        .append(
            &stream,
            ExpectedVersion::Exact(1),
            vec![first[1].clone(), second[0].clone()],
        )
        .await
        .expect("these events are stored at versions 2 and 3");
    assert_eq!(
        again.positions,
        stored.iter().map(|e| e.position).collect::<Vec<_>>()
    );
    assert_ne!(
        again.positions[0].cursor.major + 1,
        again.positions[1].cursor.major
    );
}

async fn reads_of_the_log_longer_than_one_chunk_are_whole_and_in_order(target: Target) {
    let store = connect_with(target, &format!("prefix={}&partitions=2", unique_prefix())).await;
    // Two streams, one in each partition; the first holds more events than one XRANGE
    // of the store asks for (1,000).
    let mut names = (0..).map(|n| format!("order-{n}"));
    let first = names
        .by_ref()
        .find(|n| partition_of(n, 2) == 0)
        .expect("a name in partition 0");
    let second = names
        .find(|n| partition_of(n, 2) == 1)
        .expect("a name in partition 1");
    for (name, appends) in [(&first, 5), (&second, 1)] {
        let stream = StreamId::new(name.clone());
        for _ in 0..appends {
            store
                .append(&stream, ExpectedVersion::Any, events(500))
                .await
                .expect("append");
        }
    }
    let origin = Checkpoint::origin(2);
    let read = store.read_all(&origin, 2_200).await.expect("read");
    assert_eq!(read.len(), 2_200);
    let versions: Vec<u64> = read.iter().map(|e| e.version).collect();
    assert_eq!(
        versions,
        (1..=2_200).collect::<Vec<_>>(),
        "the first stream, in order"
    );
    assert!(read.iter().all(|e| e.stream_id.as_str() == first));

    let mut after = origin.clone();
    for e in &read {
        after.advance(&e.position);
    }
    let rest = store.read_all(&after, 10_000).await.expect("read");
    assert_eq!(
        rest.len(),
        300 + 500,
        "the rest of the first, then the second"
    );
    assert_eq!(rest[0].version, 2_201);
    assert_eq!(rest[299].version, 2_500);
    assert!(rest[300..].iter().all(|e| e.stream_id.as_str() == second));
    assert_eq!(
        rest[300..].iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=500).collect::<Vec<_>>()
    );
}

/// The copy a rewrite builds of a partition's log (the documented key layout).
fn rewrite_log_key(prefix: &str, partition: u32) -> String {
    log_key(prefix, partition).replace(":log", ":rewrite:log")
}

fn legacy(n: u64) -> NewEvent {
    NewEvent {
        event_type: "OrderCreated".into(),
        data: serde_json::json!({ "n": n, "customerName": format!("Plain {n}") }).into(),
        ..event(n)
    }
}

fn sealed(event: &RecordedEvent) -> Rewrite {
    Rewrite::of(
        event,
        3,
        serde_json::json!({ "sealed": event.event_id.to_string() }).into(),
    )
}

/// Every legacy `OrderCreated` of the store, in one pass.
async fn all_legacy(store: &RedisEventStore) -> Vec<RecordedEvent> {
    let mut found = Vec::new();
    let mut after = None;
    loop {
        let (page, next) = store
            .legacy_events("OrderCreated", 3, after, 10_000)
            .await
            .expect("legacy events");
        found.extend(page);
        match next {
            Some(cursor) => after = Some(cursor),
            None => return found,
        }
    }
}

/// The stream and log keys of every partition agree as the append script requires: a
/// stream's length is its top version, a counter its log's length.
async fn assert_invariants(store: &RedisEventStore, raw: &Raw, streams: &[StreamId]) {
    for stream in streams {
        let read = store.read_stream(stream, 1, 100_000).await.expect("read");
        assert_eq!(
            raw.xlen(&store.stream_key(stream)).await,
            read.last().map_or(0, |e| e.version),
            "{stream}"
        );
    }
    for partition in 0..store.partitions() {
        let counter: Option<u64> = raw
            .query(redis::cmd("GET").arg(seq_key(store.prefix(), partition)))
            .await;
        assert_eq!(
            raw.xlen(&store.log_key(partition)).await,
            counter.unwrap_or(0)
        );
        let exists: u64 = raw
            .query(redis::cmd("EXISTS").arg(rewrite_log_key(store.prefix(), partition)))
            .await;
        assert_eq!(exists, 0, "a copy of partition {partition} was left behind");
    }
}

async fn a_rewrite_of_logs_longer_than_one_copy_chunk_keeps_every_entry(target: Target) {
    let store = connect_with(target, &format!("prefix={}&partitions=2", unique_prefix())).await;
    let raw = Raw::open(target).await;
    // 1,300 events in a few streams (more than two chunks of the copy in a partition),
    // every fifth legacy.
    let streams: Vec<StreamId> = (0..4)
        .map(|s| StreamId::new(format!("order-{s}")))
        .collect();
    for round in 0..13u64 {
        for (s, stream) in streams.iter().enumerate() {
            let batch = (0..25u64)
                .map(|i| {
                    let n = round * 1_000 + s as u64 * 100 + i;
                    if n.is_multiple_of(5) {
                        legacy(n)
                    } else {
                        event(n)
                    }
                })
                .collect();
            store
                .append(stream, ExpectedVersion::Any, batch)
                .await
                .expect("append");
        }
    }
    let before = store
        .read_all(&Checkpoint::origin(2), 10_000)
        .await
        .expect("read");
    assert_eq!(before.len(), 1_300);
    let legacy_events = all_legacy(&store).await;
    assert_eq!(legacy_events.len(), 260);
    let changes: Vec<Rewrite> = legacy_events.iter().map(sealed).collect();
    assert_eq!(store.rewrite(&changes).await.expect("rewrite"), 260);

    let after = store
        .read_all(&Checkpoint::origin(2), 10_000)
        .await
        .expect("read");
    let expected: Vec<RecordedEvent> = before
        .iter()
        .map(
            |e| match changes.iter().find(|c| c.event_id == e.event_id) {
                Some(change) => RecordedEvent {
                    schema_version: 3,
                    data: change.data.clone(),
                    ..e.clone()
                },
                None => e.clone(),
            },
        )
        .collect();
    assert_eq!(after, expected);
    assert!(all_legacy(&store).await.is_empty());
    assert_invariants(&store, &raw, &streams).await;
    let appended = store
        .append(&streams[0], ExpectedVersion::Exact(325), events(2))
        .await
        .expect("append after the rewrite");
    assert_eq!(appended.last_version, 327);
}

async fn appends_during_a_rewrite_are_never_lost(target: Target) {
    let store =
        Arc::new(connect_with(target, &format!("prefix={}&partitions=1", unique_prefix())).await);
    let raw = Raw::open(target).await;
    let streams: Vec<StreamId> = (0..3)
        .map(|s| StreamId::new(format!("order-{s}")))
        .collect();
    for stream in &streams {
        let batch = (0..300).map(|n: u64| {
            if n.is_multiple_of(2) {
                legacy(n)
            } else {
                event(n)
            }
        });
        store
            .append(stream, ExpectedVersion::NoStream, batch.collect())
            .await
            .expect("append");
    }
    // Appenders on every stream of the one partition, while the legacy events are
    // rewritten in small batches: each rewrite either swaps its copies in or gives up
    // (Unavailable); no append is lost either way.
    let done = Arc::new(AtomicBool::new(false));
    let appenders: Vec<_> = streams
        .iter()
        .cloned()
        .map(|stream| {
            let (store, done) = (Arc::clone(&store), Arc::clone(&done));
            tokio::spawn(async move {
                let mut acknowledged = 0u64;
                while !done.load(Ordering::SeqCst) {
                    store
                        .append(&stream, ExpectedVersion::Any, events(1))
                        .await
                        .expect("append during the rewrite");
                    acknowledged += 1;
                }
                acknowledged
            })
        })
        .collect();
    let (mut swapped, mut gave_up) = (0u64, 0u64);
    for batch in all_legacy(&store).await.chunks(50) {
        let changes: Vec<Rewrite> = batch.iter().map(sealed).collect();
        match store.rewrite(&changes).await {
            Ok(n) => swapped += n,
            Err(StoreError::Unavailable(_)) => gave_up += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    done.store(true, Ordering::SeqCst);
    let mut acknowledged = 0;
    for appender in appenders {
        acknowledged += appender.await.expect("appender");
    }
    // Quiet now: what is left is rewritten at once.
    let rest: Vec<Rewrite> = all_legacy(&store).await.iter().map(sealed).collect();
    swapped += store.rewrite(&rest).await.expect("rewrite without appends");
    assert_eq!(
        swapped, 450,
        "every legacy event rewritten once ({gave_up} gave up)"
    );
    let logged = store
        .read_all(&Checkpoint::origin(1), 100_000)
        .await
        .expect("read");
    assert_eq!(
        logged.len() as u64,
        900 + acknowledged,
        "an append was lost"
    );
    assert_eq!(
        logged
            .iter()
            .map(|e| e.position.cursor.major)
            .collect::<Vec<_>>(),
        (1..=900 + acknowledged).collect::<Vec<_>>()
    );
    assert!(all_legacy(&store).await.is_empty());
    assert_invariants(&store, &raw, &streams).await;
}

macro_rules! on_both_targets {
    ($($case:ident),+ $(,)?) => {
        mod single {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Target::Single).await;
                }
            )+
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Target::Cluster).await;
                }
            )+
        }
    };
}

on_both_targets!(
    a_conflict_leaves_neither_the_stream_nor_the_log_changed,
    expected_any_appends_at_the_next_version,
    a_blocked_wait_uses_dedicated_connections_and_releases_them,
    a_store_refuses_another_partition_count,
    connecting_to_an_existing_store_creates_none,
    appends_survive_a_flushed_script_cache,
    repeating_an_append_with_the_same_events_returns_the_first_outcome,
    a_retry_reports_the_positions_the_events_were_stored_at,
    reads_of_the_log_longer_than_one_chunk_are_whole_and_in_order,
    the_key_store_is_one_slot_and_an_erased_key_is_in_none_of_its_keys,
    the_key_store_survives_a_flushed_script_cache,
    a_rewrite_of_logs_longer_than_one_copy_chunk_keeps_every_entry,
    appends_during_a_rewrite_are_never_lost,
);

// ---------------------------------------------------------------------------------------
// One target only.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_every_key_of_a_partition_is_in_one_slot_by_the_servers_count() {
    every_key_of_a_partition_is_in_one_slot_by_the_servers_count(Target::Cluster).await;
}

/// The dual write is one script: no reader, and so no crash, can ever find the stream and
/// the log apart. Each snapshot is a MULTI/EXEC on keys of one slot, so it is atomic; a
/// crash can only freeze the keyspace between two commands, which is what a snapshot sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_no_snapshot_ever_sees_the_stream_and_the_log_apart() {
    let store = Arc::new(
        connect_with(
            Target::Single,
            &format!("prefix={}&partitions=1", unique_prefix()),
        )
        .await,
    );
    let raw = Raw::open(Target::Single).await;
    let stream = StreamId::new("contended");
    let keys = (
        store.stream_key(&stream),
        store.log_key(0),
        seq_key(store.prefix(), 0),
    );
    let done = Arc::new(AtomicBool::new(false));

    let mut writers = Vec::new();
    for _ in 0..4 {
        let store = Arc::clone(&store);
        let stream = stream.clone();
        writers.push(tokio::spawn(async move {
            for _ in 0..40 {
                store
                    .append(&stream, ExpectedVersion::Any, events(3))
                    .await
                    .expect("append");
            }
        }));
    }
    let checker = {
        let done = Arc::clone(&done);
        let keys = keys.clone();
        tokio::spawn(async move {
            let mut snapshots = 0u64;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .cmd("XLEN")
                    .arg(&keys.0)
                    .cmd("XLEN")
                    .arg(&keys.1)
                    .cmd("GET")
                    .arg(&keys.2);
                let (stream_len, log_len, counter): (u64, u64, Option<u64>) = match raw.clone() {
                    Raw::Single(mut c) => pipe.query_async(&mut c).await.expect("snapshot"),
                    Raw::Cluster(_) => unreachable!(),
                };
                let counter = counter.unwrap_or(0);
                assert!(
                    stream_len == log_len && log_len == counter && stream_len % 3 == 0,
                    "torn append: stream {stream_len}, log {log_len}, counter {counter}"
                );
                snapshots += 1;
                if finished {
                    return (snapshots, stream_len);
                }
            }
        })
    };
    for writer in writers {
        writer.await.expect("writer");
    }
    done.store(true, Ordering::SeqCst);
    let (snapshots, final_len) = checker.await.expect("checker");
    assert_eq!(final_len, 4 * 40 * 3);
    assert!(snapshots > 1);
}

/// Lua has no rollback, so the script checks everything before its first write: a
/// keyspace that breaks an invariant is refused whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_a_broken_invariant_is_refused_before_any_write() {
    let store = fresh_store(Target::Single).await;
    let raw = Raw::open(Target::Single).await;
    let stream = StreamId::new("tampered");
    let partition = partition_of(stream.as_str(), store.partitions());
    store
        .append(&stream, ExpectedVersion::NoStream, events(2))
        .await
        .expect("append");
    let _: () = raw
        .query(
            redis::cmd("SET")
                .arg(seq_key(store.prefix(), partition))
                .arg(99),
        )
        .await;
    let err = store
        .append(&stream, ExpectedVersion::Exact(2), events(3))
        .await
        .expect_err("the counter disagrees with the log");
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert_eq!(raw.xlen(&store.stream_key(&stream)).await, 2);
    assert_eq!(raw.xlen(&store.log_key(partition)).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_the_durability_check_matches_the_servers_settings() {
    let store = fresh_store(Target::Single).await;
    let raw = Raw::open(Target::Single).await;
    let config: Vec<String> = raw
        .query(redis::cmd("CONFIG").arg("GET").arg("append*"))
        .await;
    let get = |name: &str| {
        config
            .chunks_exact(2)
            .find(|kv| kv[0] == name)
            .map(|kv| kv[1].clone())
            .expect("setting")
    };
    let warnings = store.durability_warnings().await;
    match (get("appendonly").as_str(), get("appendfsync").as_str()) {
        ("yes", "always") => assert!(warnings.is_empty(), "{warnings:?}"),
        ("no", _) => assert!(
            warnings.iter().any(|w| w.contains("appendonly yes")),
            "{warnings:?}"
        ),
        _ => assert!(
            warnings.iter().any(|w| w.contains("appendfsync always")),
            "{warnings:?}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_the_durability_check_reaches_every_master() {
    let store = fresh_store(Target::Cluster).await;
    let warnings = store.durability_warnings().await;
    assert!(
        !warnings.iter().any(|w| w.contains("could not check")),
        "{warnings:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_unavailable() {
    // Port 1 on the loopback: nothing listens there.
    let err = RedisEventStore::connect("redis://127.0.0.1:1?prefix=nobody")
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        error_chain(&err).contains("127.0.0.1:1"),
        "{}",
        error_chain(&err)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_url_is_invalid() {
    let err = RedisEventStore::connect("redis://127.0.0.1:6379?partitions=0")
        .await
        .expect_err("zero partitions");
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_key_store_is_unavailable() {
    let err = RedisKeys::connect("redis://127.0.0.1:1?prefix=nobody")
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(err, KeyStoreError::Unavailable(_)), "{err:?}");
}
