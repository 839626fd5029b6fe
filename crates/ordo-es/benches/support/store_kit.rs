//! The event-store benchmarks every backend runs: one append of 1 and of 10 events,
//! N concurrent appends, and loading an aggregate of 1,000 events with and without a
//! snapshot. Shared by the benches of ordo-es (in memory), ordo-sqlite, ordo-postgres
//! and ordo-redis through `#[path]`, so every store is measured the same way.
//!
//! The order domain allows only a handful of events per order, so the load benchmarks use
//! a benchmark-local aggregate, [`Tally`]: it sums `Added` events and snapshots itself.

// Each bench binary uses a different part of this module.
#![allow(dead_code)]

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use uuid::Uuid;

use ordo_es::{
    Aggregate, CommandExecutor, DecodeError, DomainEvent, EventStore, ExpectedVersion, Loaded,
    Metadata, NewEvent, Payload, SnapshotStore, StreamId, now_micros,
};

/// A running total: the benchmark-local aggregate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: u64,
    pub total: u64,
    pub last: u64,
}

/// The one event of a [`Tally`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Added {
    pub amount: u64,
}

impl DomainEvent for Added {
    fn event_type(&self) -> &'static str {
        "Added"
    }
    fn schema_version(&self) -> u32 {
        1
    }
    fn encode(&self) -> Payload {
        json!({ "amount": self.amount }).into()
    }
    fn decode(event_type: &str, schema_version: u32, data: &Payload) -> Result<Self, DecodeError> {
        if event_type != "Added" {
            return Err(DecodeError::UnknownType {
                event_type: event_type.to_string(),
            });
        }
        if schema_version != 1 {
            return Err(DecodeError::UnsupportedVersion {
                event_type: event_type.to_string(),
                schema_version,
            });
        }
        let amount = data
            .to_value()
            .and_then(|v: Value| serde_json::from_value(v["amount"].clone()))
            .map_err(|source| DecodeError::Malformed {
                event_type: event_type.to_string(),
                source,
            })?;
        Ok(Added { amount })
    }
}

impl Aggregate for Tally {
    const TYPE: &'static str = "BenchTally";
    type Command = u64;
    type Event = Added;
    type Error = Infallible;
    const SNAPSHOT_VERSION: u32 = 1;

    fn handle(&self, amount: u64) -> Result<Vec<Added>, Infallible> {
        Ok(vec![Added { amount }])
    }

    fn apply(&mut self, event: &Added) {
        self.count += 1;
        self.total += event.amount;
        self.last = event.amount;
    }

    fn to_snapshot(&self) -> Option<Value> {
        Some(json!({ "count": self.count, "total": self.total, "last": self.last }))
    }

    fn from_snapshot(state: &Value) -> Option<Self> {
        Some(Tally {
            count: state["count"].as_u64()?,
            total: state["total"].as_u64()?,
            last: state["last"].as_u64()?,
        })
    }
}

/// A runtime on the bench thread: one core stays free for the store (SQLite's writer
/// thread, the database server).
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// `n` new events for a [`Tally`], amounts `first..first + n`, each with a fresh id.
pub fn added_events(first: u64, n: u64) -> Vec<NewEvent> {
    let now = now_micros();
    (first..first + n)
        .map(|amount| {
            let e = Added { amount };
            NewEvent {
                event_id: Uuid::now_v7(),
                aggregate_type: Tally::TYPE.to_string(),
                event_type: e.event_type().to_string(),
                schema_version: e.schema_version(),
                occurred_at: now,
                data: e.encode(),
                metadata: Metadata {
                    correlation_id: Some(Uuid::now_v7().to_string()),
                    ..Metadata::default()
                },
            }
        })
        .collect()
}

/// A stream id no run has used.
pub fn new_stream(tag: &str) -> StreamId {
    StreamId::new(format!("bench-{tag}-{}", Uuid::now_v7()))
}

/// Appends prepared per chunk, so the untimed part (ids, events) is never in the figure
/// and a store that keeps everything in memory can be replaced between chunks.
const CHUNK: u64 = 10_000;

/// How the store under test behaves, for sampling.
#[derive(Clone, Copy, Debug)]
pub struct Profile {
    /// Criterion samples per benchmark (10 at least). Fewer for slow (durable) stores.
    pub sample_size: usize,
    /// How many concurrent appends the concurrency benchmark runs at once.
    pub concurrency: usize,
}

impl Profile {
    pub const IN_MEMORY: Profile = Profile {
        sample_size: 100,
        concurrency: 64,
    };
    pub const DURABLE: Profile = Profile {
        sample_size: 20,
        concurrency: 64,
    };
}

/// `<name>/append/{1,10}`: one append of 1 and of 10 events, one after the other, each to
/// a new stream (ExpectedVersion::NoStream); `<name>/append_concurrent/N`: N appends of
/// one event each to N new streams, all in flight at once (throughput: appends/s).
///
/// `store` is called once per chunk of iterations: a backend that keeps events in
/// memory gives a fresh store each time; the others give the same one.
pub fn bench_appends<S, F>(c: &mut Criterion, name: &str, rt: &Runtime, profile: Profile, store: F)
where
    S: EventStore,
    F: Fn() -> Arc<S>,
{
    let mut g = c.benchmark_group(format!("{name}/append"));
    g.sample_size(profile.sample_size);
    for n in [1_u64, 10] {
        g.throughput(Throughput::Elements(n));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut timed = Duration::ZERO;
                    let mut done = 0;
                    while done < iters {
                        let chunk = CHUNK.min(iters - done);
                        let store = store();
                        let work: Vec<_> = (0..chunk)
                            .map(|i| (new_stream("a"), added_events(i, n)))
                            .collect();
                        let start = Instant::now();
                        for (stream, events) in work {
                            let appended = store
                                .append(&stream, ExpectedVersion::NoStream, events)
                                .await
                                .expect("append");
                            black_box(appended);
                        }
                        timed += start.elapsed();
                        done += chunk;
                    }
                    timed
                })
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group(format!("{name}/append_concurrent"));
    g.sample_size(profile.sample_size);
    let n = profile.concurrency;
    g.throughput(Throughput::Elements(n as u64));
    g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut timed = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let rounds = (CHUNK / n as u64).max(1).min(iters - done);
                    let store = store();
                    for _ in 0..rounds {
                        let work: Vec<_> = (0..n)
                            .map(|i| (new_stream("c"), added_events(i as u64, 1)))
                            .collect();
                        let start = Instant::now();
                        let mut tasks = tokio::task::JoinSet::new();
                        for (stream, events) in work {
                            let store = Arc::clone(&store);
                            tasks.spawn(async move {
                                store
                                    .append(&stream, ExpectedVersion::NoStream, events)
                                    .await
                                    .expect("append")
                            });
                        }
                        while let Some(joined) = tasks.join_next().await {
                            black_box(joined.expect("append task"));
                        }
                        timed += start.elapsed();
                    }
                    done += rounds;
                }
                timed
            })
        })
    });
    g.finish();
}

/// Appends `events` events to `stream` (from version `from + 1`) in appends of 100.
async fn seed(store: &dyn EventStore, stream: &StreamId, from: u64, events: u64) {
    let mut version = from;
    while version < from + events {
        let n = 100.min(from + events - version);
        store
            .append(
                stream,
                ExpectedVersion::Exact(version),
                added_events(version + 1, n),
            )
            .await
            .expect("seed the stream");
        version += n;
    }
}

/// What the load benchmarks read: three streams of the same 1,000 events.
#[derive(Debug)]
pub struct LoadStreams {
    /// No snapshot: every load folds 1,000 events.
    pub no_snapshot: StreamId,
    /// A snapshot at version 1,000: a load reads it and finds no event after it.
    pub snapshot_at_end: StreamId,
    /// A snapshot at version 900 and 100 events after it (a snapshot taken every 100
    /// events leaves at most 99 to fold).
    pub snapshot_at_900: StreamId,
}

pub const LOAD_EVENTS: u64 = 1_000;

/// Seeds the streams of [`bench_loads`] and checks that all three load the same state.
pub async fn seed_load_streams<S>(store: &Arc<S>) -> LoadStreams
where
    S: EventStore + SnapshotStore,
{
    let executor = executor(store);
    let streams = LoadStreams {
        no_snapshot: new_stream("load-plain"),
        snapshot_at_end: new_stream("load-snap1000"),
        snapshot_at_900: new_stream("load-snap900"),
    };
    seed(store.as_ref(), &streams.no_snapshot, 0, LOAD_EVENTS).await;
    seed(store.as_ref(), &streams.snapshot_at_end, 0, LOAD_EVENTS).await;
    let taken = executor
        .take_snapshot(&streams.snapshot_at_end)
        .await
        .expect("take a snapshot")
        .expect("a snapshot");
    assert_eq!(taken.version, LOAD_EVENTS);
    seed(store.as_ref(), &streams.snapshot_at_900, 0, 900).await;
    let taken = executor
        .take_snapshot(&streams.snapshot_at_900)
        .await
        .expect("take a snapshot")
        .expect("a snapshot");
    assert_eq!(taken.version, 900);
    seed(
        store.as_ref(),
        &streams.snapshot_at_900,
        900,
        LOAD_EVENTS - 900,
    )
    .await;

    let expected = Loaded {
        state: Tally {
            count: LOAD_EVENTS,
            total: (1..=LOAD_EVENTS).sum(),
            last: LOAD_EVENTS,
        },
        version: LOAD_EVENTS,
    };
    for stream in [
        &streams.no_snapshot,
        &streams.snapshot_at_end,
        &streams.snapshot_at_900,
    ] {
        let loaded = executor.load(stream).await.expect("load");
        assert_eq!(
            (&loaded.state, loaded.version),
            (&expected.state, expected.version),
            "{stream}: a snapshot must not change the state"
        );
    }
    // And the snapshot is really used: without snapshots the same state is folded.
    let plain = CommandExecutor::<Tally>::new(Arc::clone(store) as Arc<dyn EventStore>)
        .load(&streams.snapshot_at_end)
        .await
        .expect("load");
    assert_eq!(plain.state, expected.state);
    streams
}

/// The executor the loads use: snapshots from the same store, taken only on demand.
pub fn executor<S>(store: &Arc<S>) -> CommandExecutor<Tally>
where
    S: EventStore + SnapshotStore,
{
    CommandExecutor::<Tally>::new(Arc::clone(store) as Arc<dyn EventStore>)
        .with_snapshots(Arc::clone(store) as Arc<dyn SnapshotStore>, 0)
}

/// `<name>/load_1000/{no_snapshot,snapshot_at_1000,snapshot_at_900}`: loading a
/// [`Tally`] whose stream has 1,000 events (`CommandExecutor::load`).
pub fn bench_loads<S>(c: &mut Criterion, name: &str, rt: &Runtime, profile: Profile, store: &Arc<S>)
where
    S: EventStore + SnapshotStore,
{
    let streams = rt.block_on(seed_load_streams(store));
    let executor = executor(store);
    let mut g = c.benchmark_group(format!("{name}/load_1000"));
    g.sample_size(profile.sample_size);
    for (label, stream) in [
        ("no_snapshot", &streams.no_snapshot),
        ("snapshot_at_1000", &streams.snapshot_at_end),
        ("snapshot_at_900", &streams.snapshot_at_900),
    ] {
        g.bench_function(label, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(executor.load(black_box(stream)).await.expect("load"));
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}
