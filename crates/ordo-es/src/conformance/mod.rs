//! The conformance suite every [`EventStore`] must pass, written once.
//!
//! A store crate runs it with one line in a test module:
//!
//! ```text
//! ordo_es::event_store_conformance!(async { make_a_fresh_isolated_store().await });
//! // or, when something must live as long as the store (a temporary directory):
//! ordo_es::event_store_conformance!(guarded async { (store, temp_dir) });
//! ```
//!
//! The expression is evaluated once per case and must give a store that shares nothing
//! with the others (a new file, key prefix or schema): cases read the global log.
//! Each case is a public function here, so a store can also call one directly.

mod lease;
mod rewrite;
pub use lease::*;
pub use rewrite::*;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::event::{Metadata, NewEvent, RecordedEvent, StreamId};
use crate::position::{Checkpoint, Cursor, Position};
use crate::snapshot::{Snapshot, SnapshotStore};
use crate::store::{EventStore, ExpectedVersion, StoreError};

/// Expands to one `#[tokio::test]` per conformance case. The caller needs tokio with the
/// `macros` and `rt-multi-thread` features among its dev-dependencies.
#[macro_export]
macro_rules! event_store_conformance {
    // `$make` gives `(store, guard)`: the guard (a temporary directory, say) lives until
    // the case ends.
    (guarded $make:expr) => {
        $crate::event_store_conformance!(@all guarded $make);
    };
    ($make:expr) => {
        $crate::event_store_conformance!(@all plain $make);
    };
    (@all $kind:ident $make:expr) => {
        $crate::event_store_conformance!(@cases $kind $make;
            a_new_stream_starts_at_version_one,
            events_read_back_in_version_order_from_any_version,
            a_stale_expected_version_is_a_conflict_and_stores_nothing,
            no_stream_on_an_existing_stream_is_a_conflict,
            a_multi_event_append_is_all_or_nothing,
            an_empty_append_is_invalid,
            concurrent_appenders_on_one_stream_never_share_a_version,
            concurrent_appenders_on_many_streams_lose_nothing,
            reading_the_log_in_small_batches_sees_each_event_once,
            a_checkpoint_covers_exactly_what_was_read,
            the_head_covers_every_position_an_append_returned,
            waiting_wakes_up_when_an_event_is_appended,
            payloads_and_metadata_round_trip_exactly,
            unknown_streams_read_as_empty,
            the_event_at_a_position_is_the_one_the_append_stored_there,
            a_reader_of_one_partition_sees_only_that_partition,
        );
    };
    (@cases $kind:ident $make:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (store, _guard) = $crate::event_store_conformance!(@make $kind $make);
                $crate::conformance::$case(::std::sync::Arc::new(store)).await;
            }
        )+
    };
    (@make guarded $make:expr) => { $make.await };
    (@make plain $make:expr) => { ($make.await, ()) };
}

/// Expands to one `#[tokio::test]` per snapshot-store case.
#[macro_export]
macro_rules! snapshot_store_conformance {
    (guarded $make:expr) => {
        $crate::snapshot_store_conformance!(@all guarded $make);
    };
    ($make:expr) => {
        $crate::snapshot_store_conformance!(@all plain $make);
    };
    (@all $kind:ident $make:expr) => {
        $crate::event_store_conformance!(@cases $kind $make;
            a_saved_snapshot_loads_back_exactly,
            only_the_newest_snapshot_is_kept,
            deleting_snapshots_removes_them_all,
        );
    };
}

/// Generous bound for liveness checks (not a performance assertion).
const PATIENCE: Duration = Duration::from_secs(20);

fn new_event(n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        aggregate_type: "ConformanceThing".into(),
        event_type: "ThingHappened".into(),
        schema_version: 1,
        occurred_at: OffsetDateTime::now_utc(),
        data: json!({ "n": n }).into(),
        metadata: Metadata::default(),
    }
}

fn events(from: u64, count: u64) -> Vec<NewEvent> {
    (from..from + count).map(new_event).collect()
}

fn unique_stream(label: &str) -> StreamId {
    StreamId::new(format!("{label}-{}", Uuid::now_v7()))
}

fn payload_n(event: &RecordedEvent) -> u64 {
    event.data.to_value().expect("stored payloads are JSON")["n"]
        .as_u64()
        .expect("conformance payloads carry n")
}

async fn read_everything(store: &dyn EventStore) -> Vec<RecordedEvent> {
    read_everything_covering(store, []).await
}

/// The whole log, read until it covers every position in `expected` (events the test
/// was told were stored). The contract lets a log withhold a committed event for a while
/// (PostgreSQL's gap-safe log holds back events newer than the oldest transaction still
/// in flight anywhere on the server), so an empty read is not the end while an expected
/// event is missing: the reader waits for the log, as the projections do, up to a bound.
async fn read_everything_covering(
    store: &dyn EventStore,
    expected: impl IntoIterator<Item = Position>,
) -> Vec<RecordedEvent> {
    const PATIENCE: Duration = Duration::from_secs(60);
    let expected: Vec<Position> = expected.into_iter().collect();
    let mut checkpoint = Checkpoint::origin(store.partitions());
    let mut all = Vec::new();
    let started = std::time::Instant::now();
    loop {
        let batch = store.read_all(&checkpoint, 1_000).await.expect("read_all");
        if batch.is_empty() {
            let missing: Vec<_> = expected.iter().filter(|p| !checkpoint.covers(p)).collect();
            if missing.is_empty() {
                return all;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "the log never showed the stored events at {missing:?}"
            );
            store
                .wait_for_events(&checkpoint, Duration::from_millis(200))
                .await
                .expect("wait_for_events");
            continue;
        }
        for event in &batch {
            checkpoint.advance(&event.position);
        }
        all.extend(batch);
    }
}

pub async fn a_new_stream_starts_at_version_one(store: Arc<dyn EventStore>) {
    let stream = unique_stream("new");
    let appended = store
        .append(&stream, ExpectedVersion::NoStream, events(1, 1))
        .await
        .expect("first append");
    assert_eq!(appended.first_version, 1);
    assert_eq!(appended.last_version, 1);
    assert_eq!(appended.positions.len(), 1);
    let read = store.read_stream(&stream, 1, 10).await.expect("read");
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].version, 1);
    assert_eq!(read[0].position, appended.positions[0]);
    assert_eq!(read[0].stream_id, stream);
}

pub async fn events_read_back_in_version_order_from_any_version(store: Arc<dyn EventStore>) {
    let stream = unique_stream("order");
    store
        .append(&stream, ExpectedVersion::NoStream, events(1, 3))
        .await
        .expect("append 1..=3");
    store
        .append(&stream, ExpectedVersion::Exact(3), events(4, 4))
        .await
        .expect("append 4..=7");
    let all = store.read_stream(&stream, 1, 100).await.expect("read");
    assert_eq!(
        all.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(
        all.iter().map(payload_n).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    let tail = store
        .read_stream(&stream, 5, 100)
        .await
        .expect("read from 5");
    assert_eq!(
        tail.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
    let page = store.read_stream(&stream, 2, 2).await.expect("read a page");
    assert_eq!(
        page.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert!(
        store
            .read_stream(&stream, 8, 100)
            .await
            .expect("read past end")
            .is_empty()
    );
}

pub async fn a_stale_expected_version_is_a_conflict_and_stores_nothing(store: Arc<dyn EventStore>) {
    let stream = unique_stream("stale");
    let stored = store
        .append(&stream, ExpectedVersion::NoStream, events(1, 2))
        .await
        .expect("append");
    for stale in [0, 1, 3, 99] {
        let err = store
            .append(&stream, ExpectedVersion::Exact(stale), events(100, 1))
            .await
            .expect_err("a stale version must not append");
        assert!(
            matches!(&err, StoreError::Conflict { stream: s, expected: ExpectedVersion::Exact(e), .. } if *s == stream && *e == stale),
            "expected a Conflict, got {err:?}"
        );
    }
    let read = store.read_stream(&stream, 1, 100).await.expect("read");
    assert_eq!(read.len(), 2, "a conflicting append stored something");
    assert_eq!(
        read_everything_covering(store.as_ref(), stored.positions)
            .await
            .iter()
            .filter(|e| e.stream_id == stream)
            .count(),
        2
    );
}

pub async fn no_stream_on_an_existing_stream_is_a_conflict(store: Arc<dyn EventStore>) {
    let stream = unique_stream("exists");
    store
        .append(&stream, ExpectedVersion::NoStream, events(1, 1))
        .await
        .expect("append");
    let err = store
        .append(&stream, ExpectedVersion::NoStream, events(2, 1))
        .await
        .expect_err("the stream exists");
    assert!(err.is_conflict(), "expected a Conflict, got {err:?}");
}

pub async fn a_multi_event_append_is_all_or_nothing(store: Arc<dyn EventStore>) {
    let stream = unique_stream("atomic");
    let appended = store
        .append(&stream, ExpectedVersion::NoStream, events(1, 10))
        .await
        .expect("append ten");
    assert_eq!((appended.first_version, appended.last_version), (1, 10));
    assert_eq!(appended.positions.len(), 10);
    let unique: HashSet<_> = appended.positions.iter().collect();
    assert_eq!(unique.len(), 10, "each event has its own position");
    let err = store
        .append(&stream, ExpectedVersion::Exact(5), events(11, 10))
        .await
        .expect_err("stale");
    assert!(err.is_conflict());
    let read = store.read_stream(&stream, 1, 100).await.expect("read");
    assert_eq!(
        read.len(),
        10,
        "a failed multi-event append left some events behind"
    );
    let logged = read_everything_covering(store.as_ref(), appended.positions.clone()).await;
    let ours: Vec<_> = logged.iter().filter(|e| e.stream_id == stream).collect();
    assert_eq!(ours.len(), 10);
    assert_eq!(
        ours.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
}

pub async fn an_empty_append_is_invalid(store: Arc<dyn EventStore>) {
    let stream = unique_stream("empty");
    let err = store
        .append(&stream, ExpectedVersion::NoStream, Vec::new())
        .await
        .expect_err("empty append");
    assert!(
        matches!(err, StoreError::Invalid(_)),
        "expected Invalid, got {err:?}"
    );
    assert!(
        store
            .read_stream(&stream, 1, 10)
            .await
            .expect("read")
            .is_empty()
    );
}

pub async fn concurrent_appenders_on_one_stream_never_share_a_version(store: Arc<dyn EventStore>) {
    const WRITERS: u64 = 16;
    const PER_WRITER: u64 = 10;
    let stream = unique_stream("contended");
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&store);
        let stream = stream.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            let mut conflicts = 0u64;
            while (won.len() as u64) < PER_WRITER {
                let current = store
                    .read_stream(&stream, 1, 100_000)
                    .await
                    .expect("read")
                    .last()
                    .map_or(0, |e| e.version);
                let n = writer * 1_000 + won.len() as u64;
                match store
                    .append(&stream, ExpectedVersion::Exact(current), vec![new_event(n)])
                    .await
                {
                    Ok(appended) => won.push((appended.last_version, n)),
                    Err(StoreError::Conflict { .. }) => conflicts += 1,
                    Err(other) => panic!("unexpected error under contention: {other:?}"),
                }
            }
            (won, conflicts)
        }));
    }
    let mut won_versions = HashMap::new();
    for task in tasks {
        let (won, _) = task.await.expect("writer task");
        for (version, n) in won {
            assert!(
                won_versions.insert(version, n).is_none(),
                "version {version} acknowledged twice"
            );
        }
    }
    let read = store.read_stream(&stream, 1, 100_000).await.expect("read");
    assert_eq!(read.len() as u64, WRITERS * PER_WRITER);
    for event in &read {
        assert_eq!(
            won_versions.get(&event.version),
            Some(&payload_n(event)),
            "version {} holds an event nobody was told was stored there",
            event.version
        );
    }
    let logged: Vec<_> = read_everything_covering(store.as_ref(), read.iter().map(|e| e.position))
        .await
        .into_iter()
        .filter(|e| e.stream_id == stream)
        .collect();
    assert_eq!(
        logged.len() as u64,
        WRITERS * PER_WRITER,
        "the global log disagrees with the stream"
    );
    assert!(
        logged.windows(2).all(|w| w[0].version + 1 == w[1].version),
        "the log has the stream out of order"
    );
}

pub async fn concurrent_appenders_on_many_streams_lose_nothing(store: Arc<dyn EventStore>) {
    const STREAMS: u64 = 24;
    const PER_STREAM: u64 = 8;
    let prefix = Uuid::now_v7();
    let mut tasks = Vec::new();
    for s in 0..STREAMS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let stream = StreamId::new(format!("many-{prefix}-{s}"));
            let mut positions = Vec::new();
            for v in 0..PER_STREAM {
                let count = 1 + (v % 3);
                let appended = store
                    .append(
                        &stream,
                        ExpectedVersion::Exact(current_version(&positions)),
                        events(s * 100 + v * 10, count),
                    )
                    .await
                    .expect("append without contention");
                positions.extend(appended.positions);
            }
            positions
        }));
    }
    let mut acknowledged = HashSet::new();
    for task in tasks {
        for position in task.await.expect("task") {
            assert!(
                acknowledged.insert(position),
                "position {position} handed out twice"
            );
        }
    }
    let logged = read_everything_covering(store.as_ref(), acknowledged.iter().copied()).await;
    let ours: Vec<_> = logged
        .iter()
        .filter(|e| e.stream_id.as_str().starts_with(&format!("many-{prefix}-")))
        .collect();
    let seen: HashSet<Position> = ours.iter().map(|e| e.position).collect();
    assert_eq!(ours.len(), seen.len(), "an event was read twice");
    assert_eq!(seen, acknowledged, "the log lost or invented events");
    let mut last_version: HashMap<&StreamId, u64> = HashMap::new();
    for event in ours {
        let previous = last_version
            .insert(&event.stream_id, event.version)
            .unwrap_or(0);
        assert_eq!(
            previous + 1,
            event.version,
            "stream {} out of order in the log",
            event.stream_id
        );
    }
}

fn current_version(positions: &[Position]) -> u64 {
    positions.len() as u64
}

pub async fn reading_the_log_in_small_batches_sees_each_event_once(store: Arc<dyn EventStore>) {
    let mut expected = HashSet::new();
    for s in 0..7u64 {
        let stream = unique_stream("batches");
        let appended = store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                events(s * 10, 1 + s % 4),
            )
            .await
            .expect("append");
        expected.extend(appended.positions);
    }
    for batch_size in [1, 2, 3, 5] {
        let mut checkpoint = Checkpoint::origin(store.partitions());
        let mut seen = HashSet::new();
        loop {
            let batch = store
                .read_all(&checkpoint, batch_size)
                .await
                .expect("read_all");
            assert!(
                batch.len() <= batch_size,
                "read_all returned more than its limit"
            );
            if batch.is_empty() {
                break;
            }
            for event in &batch {
                assert!(
                    !checkpoint.covers(&event.position),
                    "read_all returned an event the checkpoint covers"
                );
                assert!(
                    seen.insert(event.position),
                    "event seen twice with batch size {batch_size}"
                );
                checkpoint.advance(&event.position);
            }
        }
        assert!(
            expected.is_subset(&seen),
            "batch size {batch_size} skipped events"
        );
        assert_eq!(store.count_after(&checkpoint).await.expect("count"), 0);
    }
}

pub async fn a_checkpoint_covers_exactly_what_was_read(store: Arc<dyn EventStore>) {
    let stream = unique_stream("covers");
    let first = store
        .append(&stream, ExpectedVersion::NoStream, events(1, 1))
        .await
        .expect("append");
    let everything = read_everything_covering(store.as_ref(), first.positions.clone()).await;
    let mut checkpoint = Checkpoint::origin(store.partitions());
    for event in &everything {
        checkpoint.advance(&event.position);
    }
    assert!(checkpoint.covers(&first.last_position()));
    let total_before = store
        .count_after(&Checkpoint::origin(store.partitions()))
        .await
        .expect("count");
    assert!(total_before >= 1);
    let second = store
        .append(&stream, ExpectedVersion::Exact(1), events(2, 2))
        .await
        .expect("append");
    assert!(
        !checkpoint.covers(&second.last_position()),
        "a new event is covered before it was read"
    );
    assert_eq!(store.count_after(&checkpoint).await.expect("count"), 2);
    let rest = store.read_all(&checkpoint, 100).await.expect("read rest");
    assert_eq!(
        rest.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![2, 3]
    );
    let token = second.last_position().to_string();
    assert_eq!(
        token.parse::<Position>(),
        Ok(second.last_position()),
        "positions must round-trip as tokens"
    );
}

pub async fn the_head_covers_every_position_an_append_returned(store: Arc<dyn EventStore>) {
    let empty = store.head().await.expect("head of the empty store");
    assert_eq!(
        empty,
        Checkpoint::origin(store.partitions()),
        "an empty store's head is the origin"
    );

    // Concurrent appenders, each asking for the head as soon as its append returned:
    // a position handed out is never ahead of the head, however the commits interleave.
    let appenders: Vec<_> = (0..8u64)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let stream = unique_stream("head");
                let mut positions = Vec::new();
                let mut version = 0;
                for _ in 0..3 {
                    let appended = store
                        .append(
                            &stream,
                            ExpectedVersion::Exact(version),
                            events(version + 1, 1 + i % 3),
                        )
                        .await
                        .expect("append");
                    version = appended.last_version;
                    let head = store.head().await.expect("head");
                    for position in &appended.positions {
                        assert!(
                            head.covers(position),
                            "the head {} does not cover {position}, which an append returned",
                            head.encode()
                        );
                    }
                    positions.extend(appended.positions);
                }
                positions
            })
        })
        .collect();
    let mut positions = Vec::new();
    for appender in appenders {
        positions.extend(appender.await.expect("appender task"));
    }

    let head = store.head().await.expect("head");
    assert_eq!(head.partitions(), store.partitions());
    for position in &positions {
        assert!(
            head.covers(position),
            "{position} is past the head {}",
            head.encode()
        );
    }
    let mut read = Checkpoint::origin(store.partitions());
    for event in read_everything(store.as_ref()).await {
        read.advance(&event.position);
    }
    assert!(
        head.is_at_or_past(&read),
        "the head {} is behind what the log holds ({})",
        head.encode(),
        read.encode()
    );
}

pub async fn waiting_wakes_up_when_an_event_is_appended(store: Arc<dyn EventStore>) {
    let everything = read_everything(store.as_ref()).await;
    let mut checkpoint = Checkpoint::origin(store.partitions());
    for event in &everything {
        checkpoint.advance(&event.position);
    }
    let waiter = {
        let store = Arc::clone(&store);
        let checkpoint = checkpoint.clone();
        tokio::spawn(async move {
            // Keep waiting until something is there: a wait may return early.
            loop {
                store
                    .wait_for_events(&checkpoint, Duration::from_secs(600))
                    .await
                    .expect("wait");
                let found = store.read_all(&checkpoint, 10).await.expect("read");
                if !found.is_empty() {
                    return found;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stream = unique_stream("wake");
    store
        .append(&stream, ExpectedVersion::NoStream, events(1, 1))
        .await
        .expect("append");
    let found = tokio::time::timeout(PATIENCE, waiter)
        .await
        .expect("the waiter was never woken by the append")
        .expect("waiter task");
    assert!(found.iter().any(|e| e.stream_id == stream));
}

pub async fn payloads_and_metadata_round_trip_exactly(store: Arc<dyn EventStore>) {
    let stream = unique_stream("roundtrip");
    let occurred_at = OffsetDateTime::now_utc()
        .replace_nanosecond(123_456_000)
        .expect("valid nanos");
    let data = serde_json::from_str::<serde_json::Value>(
        r#"{"price": 19.90, "big": 12345678901234567890, "text": "ünïcødé \u0000 \"quoted\" 🚀", "nested": {"list": [1, 2.50, null, true]}}"#,
    )
    .expect("fixture json");
    let metadata = Metadata {
        correlation_id: Some("corr-1".into()),
        causation_id: Some("cause-1".into()),
        idempotency_key: Some("key ✓".into()),
        request_hash: Some("abc".into()),
        user_agent: Some("conformance/1.0".into()),
    };
    let event = NewEvent {
        event_id: Uuid::now_v7(),
        aggregate_type: "ConformanceThing".into(),
        event_type: "ThingHappened".into(),
        schema_version: 7,
        occurred_at,
        data: data.clone().into(),
        metadata: metadata.clone(),
    };
    let event_id = event.event_id;
    store
        .append(&stream, ExpectedVersion::NoStream, vec![event])
        .await
        .expect("append");
    let read = store
        .read_stream(&stream, 1, 1)
        .await
        .expect("read")
        .remove(0);
    assert_eq!(read.event_id, event_id);
    assert_eq!(read.aggregate_type, "ConformanceThing");
    assert_eq!(read.event_type, "ThingHappened");
    assert_eq!(read.schema_version, 7);
    assert_eq!(
        read.occurred_at, occurred_at,
        "occurredAt must keep microseconds"
    );
    assert_eq!(read.data, data);
    assert_eq!(
        read.data.to_value().expect("stored payloads are JSON")["price"].to_string(),
        "19.90",
        "numbers must keep their exact text"
    );
    assert_eq!(read.metadata, metadata);
    let logged = read_everything_covering(store.as_ref(), [read.position]).await;
    let from_log = logged
        .iter()
        .find(|e| e.event_id == event_id)
        .expect("in the log");
    assert_eq!(from_log, &read);
}

pub async fn unknown_streams_read_as_empty(store: Arc<dyn EventStore>) {
    let stream = unique_stream("unknown");
    assert!(
        store
            .read_stream(&stream, 1, 10)
            .await
            .expect("read")
            .is_empty()
    );
    store.ping().await.expect("ping");
}

pub async fn the_event_at_a_position_is_the_one_the_append_stored_there(
    store: Arc<dyn EventStore>,
) {
    let stream = unique_stream("at");
    let sent = events(1, 3);
    let ids: Vec<Uuid> = sent.iter().map(|e| e.event_id).collect();
    let appended = store
        .append(&stream, ExpectedVersion::NoStream, sent)
        .await
        .expect("append");
    for (position, id) in appended.positions.iter().zip(&ids) {
        assert_eq!(
            store.event_id_at(position).await.expect("event at"),
            Some(*id),
            "the event at {position}"
        );
    }
    // Positions no append handed out: past the head, and in a partition beyond the log.
    let last = appended.last_position();
    let past = Position {
        cursor: crate::position::Cursor::new(last.cursor.major + 1_000_000, last.cursor.minor),
        ..last
    };
    assert_eq!(store.event_id_at(&past).await.expect("event at"), None);
    let nowhere = Position {
        partition: store.partitions() + 3,
        ..last
    };
    assert_eq!(store.event_id_at(&nowhere).await.expect("event at"), None);
}

/// A projection shard's reads: with every other partition pinned at [`Cursor::END`], a
/// reader gets exactly its partition's events, counts only what is left of them, and
/// is not held in a wait by appends elsewhere. On one partition, that is the whole log.
pub async fn a_reader_of_one_partition_sees_only_that_partition(store: Arc<dyn EventStore>) {
    let partitions = store.partitions();
    // Streams in every partition (very likely), by the partition their appends went to.
    let mut expected: HashMap<u32, HashSet<Position>> = HashMap::new();
    let mut streams: HashMap<u32, Vec<(StreamId, u64)>> = HashMap::new();
    for s in 0..u64::from(partitions * 8).max(16) {
        let stream = unique_stream("pinned");
        let appended = store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                events(s * 10, 1 + s % 3),
            )
            .await
            .expect("append");
        let partition = appended.positions[0].partition;
        assert!(partition < partitions, "{partition} is not a partition");
        assert!(
            appended.positions.iter().all(|p| p.partition == partition),
            "one append went to several partitions"
        );
        expected
            .entry(partition)
            .or_default()
            .extend(appended.positions.iter().copied());
        streams
            .entry(partition)
            .or_default()
            .push((stream, appended.last_version));
    }

    for p in 0..partitions {
        let mut checkpoint = Checkpoint::only(p, Cursor::ORIGIN, partitions);
        let mut seen = HashSet::new();
        let started = std::time::Instant::now();
        loop {
            let wanted = expected.get(&p).map_or(0, HashSet::len);
            assert_eq!(
                store.count_after(&checkpoint).await.expect("count"),
                (wanted - seen.len()) as u64,
                "count_after of a reader of partition {p} is what is left of it"
            );
            let batch = store.read_all(&checkpoint, 3).await.expect("read_all");
            assert!(batch.len() <= 3, "read_all returned more than its limit");
            if batch.is_empty() {
                if seen.len() == wanted {
                    break;
                }
                // A log may withhold committed events for a while (see
                // `read_everything_covering`).
                assert!(
                    started.elapsed() < PATIENCE,
                    "partition {p} never showed all of its events"
                );
                store
                    .wait_for_events(&checkpoint, Duration::from_millis(200))
                    .await
                    .expect("wait_for_events");
                continue;
            }
            for event in &batch {
                assert_eq!(
                    event.position.partition, p,
                    "a reader of partition {p} got an event of another"
                );
                assert!(
                    !checkpoint.covers(&event.position),
                    "read_all returned an event the checkpoint covers"
                );
                assert!(seen.insert(event.position), "event seen twice");
                checkpoint.advance(&event.position);
            }
        }
        let none = HashSet::new();
        assert_eq!(
            &seen,
            expected.get(&p).unwrap_or(&none),
            "partition {p} read alone is not what was appended to it"
        );
        for q in (0..partitions).filter(|q| *q != p) {
            assert!(checkpoint.is_pinned(q), "the reader moved in partition {q}");
        }

        // Nothing of p is left; an append to another partition does not keep the wait
        // from ending (at its timeout, or earlier) and gives the reader nothing.
        let other = (0..partitions)
            .filter(|q| *q != p)
            .find(|q| streams.contains_key(q));
        let wait = {
            let store = Arc::clone(&store);
            let checkpoint = checkpoint.clone();
            tokio::spawn(async move {
                store
                    .wait_for_events(&checkpoint, Duration::from_millis(200))
                    .await
            })
        };
        if let Some(q) = other {
            let (stream, version) = streams
                .get_mut(&q)
                .and_then(|s| s.last_mut())
                .expect("a stream");
            let appended = store
                .append(stream, ExpectedVersion::Exact(*version), events(1_000, 1))
                .await
                .expect("append to another partition");
            *version = appended.last_version;
            assert_eq!(appended.positions[0].partition, q);
            expected
                .entry(q)
                .or_default()
                .extend(appended.positions.iter().copied());
        }
        tokio::time::timeout(PATIENCE, wait)
            .await
            .expect("a wait with a timeout of 200 ms did not end")
            .expect("wait task")
            .expect("wait_for_events");
        if other.is_some() {
            assert!(
                store
                    .read_all(&checkpoint, 10)
                    .await
                    .expect("read_all")
                    .is_empty(),
                "a reader of partition {p} got an event of another"
            );
            assert_eq!(store.count_after(&checkpoint).await.expect("count"), 0);
        }
    }
}

fn snapshot(stream: &StreamId, version: u64) -> Snapshot {
    Snapshot {
        stream_id: stream.clone(),
        aggregate_type: "ConformanceThing".into(),
        version,
        schema_version: 3,
        state: serde_json::from_str(r#"{"count": 12.50, "name": "ünï \u0000"}"#).expect("json"),
        taken_at: OffsetDateTime::now_utc()
            .replace_nanosecond(5_000)
            .expect("nanos"),
    }
}

pub async fn a_saved_snapshot_loads_back_exactly(store: Arc<dyn SnapshotStore>) {
    let stream = unique_stream("snap");
    assert_eq!(store.load_snapshot(&stream).await.expect("load"), None);
    let saved = snapshot(&stream, 7);
    store.save_snapshot(saved.clone()).await.expect("save");
    let loaded = store
        .load_snapshot(&stream)
        .await
        .expect("load")
        .expect("present");
    assert_eq!(loaded, saved);
    assert_eq!(loaded.state["count"].to_string(), "12.50");
}

pub async fn only_the_newest_snapshot_is_kept(store: Arc<dyn SnapshotStore>) {
    let stream = unique_stream("snap-newest");
    store
        .save_snapshot(snapshot(&stream, 10))
        .await
        .expect("save 10");
    store
        .save_snapshot(snapshot(&stream, 4))
        .await
        .expect("save 4");
    assert_eq!(
        store
            .load_snapshot(&stream)
            .await
            .expect("load")
            .expect("present")
            .version,
        10
    );
    store
        .save_snapshot(snapshot(&stream, 20))
        .await
        .expect("save 20");
    assert_eq!(
        store
            .load_snapshot(&stream)
            .await
            .expect("load")
            .expect("present")
            .version,
        20
    );
}

pub async fn deleting_snapshots_removes_them_all(store: Arc<dyn SnapshotStore>) {
    let a = unique_stream("snap-a");
    let b = unique_stream("snap-b");
    store.save_snapshot(snapshot(&a, 1)).await.expect("save");
    store.save_snapshot(snapshot(&b, 1)).await.expect("save");
    assert!(store.delete_snapshots().await.expect("delete") >= 2);
    assert_eq!(store.load_snapshot(&a).await.expect("load"), None);
    assert_eq!(store.load_snapshot(&b).await.expect("load"), None);
}
