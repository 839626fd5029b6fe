//! Aggregates, and the executor that runs a command against one.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::event::{DecodeError, DomainEvent, Metadata, NewEvent, RecordedEvent, StreamId};
use crate::position::Position;
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
    mut until: impl FnMut(&RecordedEvent) -> bool,
) -> Result<Loaded<A>, LoadError> {
    let mut state = A::default();
    let mut version = 0;
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
    max_attempts: u32,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A> fmt::Debug for CommandExecutor<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandExecutor")
            .field("store", &self.store)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

impl<A> Clone for CommandExecutor<A> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            max_attempts: self.max_attempts,
            _aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate> CommandExecutor<A> {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            max_attempts: 32,
            _aggregate: PhantomData,
        }
    }

    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    pub async fn load(&self, stream: &StreamId) -> Result<Loaded<A>, LoadError> {
        load_aggregate(self.store.as_ref(), stream, |_| true).await
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
            let loaded = self.load(stream).await?;
            let events = decide(&loaded.state, loaded.version).map_err(ExecuteError::Rejected)?;
            let now = now_micros();
            let new_events = events
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
                .collect();
            match self
                .store
                .append(stream, ExpectedVersion::Exact(loaded.version), new_events)
                .await
            {
                Ok(appended) => {
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
