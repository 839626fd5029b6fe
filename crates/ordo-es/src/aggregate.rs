//! Aggregates, and the executor that runs a command against one.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::event::{DecodeError, DomainEvent, Metadata, NewEvent, RecordedEvent, StreamId};
use crate::position::Position;
use crate::snapshot::{NoSnapshots, Snapshot, SnapshotStore};
use crate::store::{EventStore, ExpectedVersion, StoreError};

/// A consistency boundary whose state is a fold of its events.
///
/// `handle` decides: it checks the rules against the current state and returns the events
/// that record the decision (or an error); it never changes state. `apply` folds one
/// event into the state; it holds no business rule and cannot fail, because the event
/// is already a fact.
pub trait Aggregate: Default + Send + Sync + fmt::Debug + 'static {
    /// The stored aggregate type name, e.g. `Order`.
    const TYPE: &'static str;
    type Command;
    type Event: DomainEvent;
    type Error: std::error::Error + Send + Sync + 'static;

    fn handle(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    fn apply(&mut self, event: &Self::Event);

    /// The shape of this aggregate's snapshots; 0 means it takes none. Bump it whenever
    /// the state's shape or meaning changes: older snapshots are then ignored.
    const SNAPSHOT_VERSION: u32 = 0;

    /// The state as a snapshot payload.
    fn to_snapshot(&self) -> Option<serde_json::Value> {
        None
    }

    /// The state back from a payload of this `SNAPSHOT_VERSION`; None when unreadable.
    fn from_snapshot(_state: &serde_json::Value) -> Option<Self> {
        None
    }
}

/// The current time, truncated to microseconds: the precision every store keeps, so an
/// event reads back exactly as it was written.
pub fn now_micros() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .unwrap_or(now)
}

/// An aggregate's state and the stream version it reflects (0: no events).
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    pub state: A,
    pub version: u64,
}

/// Events are read from a stream in pages of this many.
const LOAD_PAGE: usize = 1_000;

/// Loads an aggregate by folding its whole stream, or its stream up to `until`
/// (inclusive), whichever ends first.
pub async fn load_aggregate<A: Aggregate>(
    store: &dyn EventStore,
    stream: &StreamId,
    until: impl FnMut(&RecordedEvent) -> bool,
) -> Result<Loaded<A>, LoadError> {
    fold_from(
        store,
        stream,
        Loaded {
            state: A::default(),
            version: 0,
        },
        until,
    )
    .await
}

/// Folds the events after `start.version` into `start`.
async fn fold_from<A: Aggregate>(
    store: &dyn EventStore,
    stream: &StreamId,
    start: Loaded<A>,
    mut until: impl FnMut(&RecordedEvent) -> bool,
) -> Result<Loaded<A>, LoadError> {
    let Loaded {
        mut state,
        mut version,
    } = start;
    loop {
        let page = store.read_stream(stream, version + 1, LOAD_PAGE).await?;
        let full = page.len() == LOAD_PAGE;
        for recorded in &page {
            if !until(recorded) {
                return Ok(Loaded { state, version });
            }
            let event = A::Event::decode(
                &recorded.event_type,
                recorded.schema_version,
                &recorded.data,
            )?;
            state.apply(&event);
            version = recorded.version;
        }
        if !full {
            return Ok(Loaded { state, version });
        }
    }
}

/// Loading failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored event cannot be decoded")]
    Decode(#[from] DecodeError),
}

/// What a successful command stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The stream version after the command.
    pub version: u64,
    /// The global position of the command's last event: the consistency token.
    pub position: Position,
}

/// Why a command did not store anything.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E: std::error::Error + 'static> {
    /// The decision said no.
    #[error(transparent)]
    Rejected(E),
    /// Concurrent writers kept winning the race, `attempts` times in a row.
    #[error("gave up after {attempts} attempts lost to concurrent writers")]
    Contended { attempts: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored event cannot be decoded")]
    Decode(#[from] DecodeError),
}

impl<E: std::error::Error + 'static> From<LoadError> for ExecuteError<E> {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Store(s) => ExecuteError::Store(s),
            LoadError::Decode(d) => ExecuteError::Decode(d),
        }
    }
}

/// Runs commands against one aggregate type: load, decide, append with the version it
/// loaded, and on a lost race decide again on fresh state.
pub struct CommandExecutor<A> {
    store: Arc<dyn EventStore>,
    snapshots: Arc<dyn SnapshotStore>,
    /// Take a snapshot each time a stream's version crosses a multiple of this (0: never).
    snapshot_every: u64,
    max_attempts: u32,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A> fmt::Debug for CommandExecutor<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandExecutor")
            .field("store", &self.store)
            .field("snapshots", &self.snapshots)
            .field("snapshot_every", &self.snapshot_every)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

impl<A> Clone for CommandExecutor<A> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            snapshots: Arc::clone(&self.snapshots),
            snapshot_every: self.snapshot_every,
            max_attempts: self.max_attempts,
            _aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate> CommandExecutor<A> {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            snapshots: Arc::new(NoSnapshots),
            snapshot_every: 0,
            max_attempts: 32,
            _aggregate: PhantomData,
        }
    }

    /// Loads from the latest snapshot in `snapshots`, and takes one whenever a stream's
    /// version crosses a multiple of `every` (0: only on demand).
    pub fn with_snapshots(mut self, snapshots: Arc<dyn SnapshotStore>, every: u64) -> Self {
        self.snapshots = snapshots;
        self.snapshot_every = every;
        self
    }

    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// The current state: the latest usable snapshot plus the events after it.
    pub async fn load(&self, stream: &StreamId) -> Result<Loaded<A>, LoadError> {
        let start = self.load_snapshot(stream).await;
        fold_from(self.store.as_ref(), stream, start, |_| true).await
    }

    /// The snapshot's state when there is one this code can read; else the empty state.
    /// A snapshot is a cache: any failure to read it means folding from the start.
    async fn load_snapshot(&self, stream: &StreamId) -> Loaded<A> {
        let empty = || Loaded {
            state: A::default(),
            version: 0,
        };
        if A::SNAPSHOT_VERSION == 0 {
            return empty();
        }
        let snapshot = match self.snapshots.load_snapshot(stream).await {
            Ok(Some(s)) => s,
            Ok(None) => return empty(),
            Err(e) => {
                tracing::warn!(%stream, error = %e, "cannot read snapshot; folding all events");
                return empty();
            }
        };
        if snapshot.aggregate_type != A::TYPE || snapshot.schema_version != A::SNAPSHOT_VERSION {
            tracing::debug!(%stream, schema = snapshot.schema_version, "ignoring a snapshot of another shape");
            return empty();
        }
        match A::from_snapshot(&snapshot.state) {
            Some(state) => Loaded {
                state,
                version: snapshot.version,
            },
            None => {
                tracing::warn!(%stream, "unreadable snapshot ignored");
                empty()
            }
        }
    }

    /// Takes a snapshot of `stream` now. None when the stream is empty or the aggregate
    /// takes no snapshots.
    pub async fn take_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, LoadError> {
        let loaded = self.load(stream).await?;
        if loaded.version == 0 {
            return Ok(None);
        }
        let Some(snapshot) = self.snapshot_of(stream, &loaded) else {
            return Ok(None);
        };
        self.snapshots.save_snapshot(snapshot.clone()).await?;
        Ok(Some(snapshot))
    }

    fn snapshot_of(&self, stream: &StreamId, loaded: &Loaded<A>) -> Option<Snapshot> {
        if A::SNAPSHOT_VERSION == 0 {
            return None;
        }
        Some(Snapshot {
            stream_id: stream.clone(),
            aggregate_type: A::TYPE.to_string(),
            version: loaded.version,
            schema_version: A::SNAPSHOT_VERSION,
            state: loaded.state.to_snapshot()?,
            taken_at: now_micros(),
        })
    }

    /// Like [`execute`](Self::execute) for a stream that is expected not to exist yet
    /// (a new id): decides on the empty state and appends with
    /// [`ExpectedVersion::NoStream`] without reading anything first. If the stream does
    /// exist, the conflict sends it down the normal path, which loads and decides again,
    /// so the outcome is the same as `execute`'s, one read cheaper in the common case.
    pub async fn execute_new<E, F>(
        &self,
        stream: &StreamId,
        metadata: &Metadata,
        mut decide: F,
    ) -> Result<Committed, ExecuteError<E>>
    where
        E: std::error::Error + 'static,
        F: FnMut(&A, u64) -> Result<Vec<A::Event>, E>,
    {
        let events = decide(&A::default(), 0).map_err(ExecuteError::Rejected)?;
        match self
            .store
            .append(
                stream,
                ExpectedVersion::NoStream,
                Self::new_events(&events, metadata),
            )
            .await
        {
            Ok(appended) => Ok(Committed {
                version: appended.last_version,
                position: appended.last_position(),
            }),
            Err(StoreError::Conflict { .. }) => self.execute(stream, metadata, decide).await,
            Err(other) => Err(other.into()),
        }
    }

    fn new_events(events: &[A::Event], metadata: &Metadata) -> Vec<NewEvent> {
        let now = now_micros();
        events
            .iter()
            .map(|e| NewEvent {
                event_id: Uuid::now_v7(),
                aggregate_type: A::TYPE.to_string(),
                event_type: e.event_type().to_string(),
                schema_version: e.schema_version(),
                occurred_at: now,
                data: e.encode(),
                metadata: metadata.clone(),
            })
            .collect()
    }

    /// Runs `decide` on the current state and version and appends what it returns,
    /// expecting the version it was given. When another writer appended first, it loads
    /// again and calls `decide` again, so a decision is always made on the state it is
    /// stored after. `decide` may itself compare the version (HTTP If-Match).
    pub async fn execute<E, F>(
        &self,
        stream: &StreamId,
        metadata: &Metadata,
        mut decide: F,
    ) -> Result<Committed, ExecuteError<E>>
    where
        E: std::error::Error + 'static,
        F: FnMut(&A, u64) -> Result<Vec<A::Event>, E>,
    {
        for attempt in 1..=self.max_attempts {
            let mut loaded = self.load(stream).await?;
            let events = decide(&loaded.state, loaded.version).map_err(ExecuteError::Rejected)?;
            let new_events = Self::new_events(&events, metadata);
            match self
                .store
                .append(stream, ExpectedVersion::Exact(loaded.version), new_events)
                .await
            {
                Ok(appended) => {
                    let every = self.snapshot_every;
                    if every > 0 && appended.last_version / every > loaded.version / every {
                        for event in &events {
                            loaded.state.apply(event);
                        }
                        loaded.version = appended.last_version;
                        if let Some(snapshot) = self.snapshot_of(stream, &loaded)
                            && let Err(e) = self.snapshots.save_snapshot(snapshot).await
                        {
                            tracing::warn!(%stream, error = %e, "cannot save snapshot (a cache; carrying on)");
                        }
                    }
                    return Ok(Committed {
                        version: appended.last_version,
                        position: appended.last_position(),
                    });
                }
                Err(StoreError::Conflict { .. }) => {
                    tracing::debug!(%stream, attempt, "lost an append race; deciding again");
                    tokio::task::yield_now().await;
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(ExecuteError::Contended {
            attempts: self.max_attempts,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::event::{DecodeError, Payload};
    use crate::memory::InMemoryStore;

    #[derive(Debug, Default)]
    struct Counter(u64);

    #[derive(Debug, Clone, PartialEq)]
    struct Incremented;

    impl DomainEvent for Incremented {
        fn event_type(&self) -> &'static str {
            "Incremented"
        }
        fn schema_version(&self) -> u32 {
            1
        }
        fn encode(&self) -> Payload {
            json!({}).into()
        }
        fn decode(_: &str, _: u32, _: &Payload) -> Result<Self, DecodeError> {
            Ok(Incremented)
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    struct Never;

    impl Aggregate for Counter {
        const TYPE: &'static str = "Counter";
        type Command = ();
        type Event = Incremented;
        type Error = Never;
        const SNAPSHOT_VERSION: u32 = 1;

        fn handle(&self, (): ()) -> Result<Vec<Incremented>, Never> {
            Ok(vec![Incremented])
        }
        fn apply(&mut self, _: &Incremented) {
            self.0 += 1;
        }
        fn to_snapshot(&self) -> Option<Value> {
            Some(json!({ "count": self.0 }))
        }
        fn from_snapshot(state: &Value) -> Option<Self> {
            state["count"].as_u64().map(Counter)
        }
    }

    async fn increment(executor: &CommandExecutor<Counter>, stream: &StreamId, times: u64) {
        for _ in 0..times {
            executor
                .execute(stream, &Metadata::default(), |c: &Counter, _| c.handle(()))
                .await
                .expect("increment");
        }
    }

    #[tokio::test]
    async fn snapshots_are_taken_every_n_events_and_used_when_loading() {
        let store = Arc::new(InMemoryStore::new());
        let executor =
            CommandExecutor::<Counter>::new(store.clone()).with_snapshots(store.clone(), 10);
        let stream = StreamId::new("counter-1");
        increment(&executor, &stream, 25).await;
        let snapshot = store
            .load_snapshot(&stream)
            .await
            .expect("load")
            .expect("taken");
        assert_eq!(
            (snapshot.version, snapshot.state.clone()),
            (20, json!({"count": 20}))
        );
        assert_eq!(executor.load(&stream).await.expect("load").state.0, 25);

        // Prove the snapshot is what loading starts from: a doctored one shows through.
        store
            .save_snapshot(Snapshot {
                version: 21,
                state: json!({"count": 1000}),
                ..snapshot.clone()
            })
            .await
            .expect("save");
        let loaded = executor.load(&stream).await.expect("load");
        assert_eq!((loaded.state.0, loaded.version), (1004, 25));
    }

    #[tokio::test]
    async fn execute_new_on_an_existing_stream_decides_on_its_real_state() {
        let store = Arc::new(InMemoryStore::new());
        let executor = CommandExecutor::<Counter>::new(store.clone());
        let stream = StreamId::new("counter-new");
        let seen = std::sync::Mutex::new(Vec::new());
        let decide = |c: &Counter, v: u64| {
            seen.lock().expect("lock").push((c.0, v));
            c.handle(())
        };
        assert_eq!(
            executor
                .execute_new(&stream, &Metadata::default(), decide)
                .await
                .expect("new")
                .version,
            1
        );
        let decide = |c: &Counter, v: u64| {
            seen.lock().expect("lock").push((c.0, v));
            c.handle(())
        };
        assert_eq!(
            executor
                .execute_new(&stream, &Metadata::default(), decide)
                .await
                .expect("falls back")
                .version,
            2
        );
        // First call: one optimistic decision. Second: the optimistic one, then one on
        // the real state after the conflict.
        assert_eq!(*seen.lock().expect("lock"), vec![(0, 0), (0, 0), (1, 1)]);
    }

    #[tokio::test]
    async fn a_snapshot_of_another_shape_is_ignored_and_deleting_snapshots_changes_nothing() {
        let store = Arc::new(InMemoryStore::new());
        let executor =
            CommandExecutor::<Counter>::new(store.clone()).with_snapshots(store.clone(), 0);
        let stream = StreamId::new("counter-2");
        increment(&executor, &stream, 5).await;
        assert_eq!(
            store.load_snapshot(&stream).await.expect("load"),
            None,
            "every = 0 takes none"
        );
        let taken = executor
            .take_snapshot(&stream)
            .await
            .expect("take")
            .expect("snapshot");
        assert_eq!(taken.version, 5);
        store
            .save_snapshot(Snapshot {
                version: 6,
                schema_version: 99,
                state: json!({"count": 1000}),
                ..taken
            })
            .await
            .expect("save");
        assert_eq!(
            executor.load(&stream).await.expect("load").state.0,
            5,
            "a foreign snapshot must be ignored"
        );
        store.delete_snapshots().await.expect("delete");
        assert_eq!(executor.load(&stream).await.expect("load").state.0, 5);
        assert!(
            executor
                .take_snapshot(&StreamId::new("empty"))
                .await
                .expect("take")
                .is_none()
        );
    }
}
